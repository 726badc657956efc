//! Casts to the Postgres types Runnel keeps as tagged text (`json`, `jsonb`, `uuid`; see
//! [`runnel_common::text_types`]). `x::jsonb` and `CAST(x AS uuid)` are rewritten to
//! `jsonb_in(x)` and `uuid_in(x)` (in `pg_compat`), which check and normalise the text as
//! Postgres's input functions do (22P02 otherwise) and return a field tagged with the type, so
//! the result is described to clients as that type. A cast to a string type (`::text`,
//! `::varchar`) drops the tag, as `doc::text` is text in Postgres: [`TextTypePlanner`] plans
//! those types as an explicit untagged field (DataFusion would carry the input's tag over).

use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::planner::TypePlanner;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast;
use runnel_common::TextType;

/// Plans SQL string types as untagged `Utf8` fields (see the module docs), and `TIMESTAMP`
/// and `TIMESTAMPTZ` as microseconds, the unit of Runnel's columns and of Postgres: DataFusion
/// plans them in nanoseconds, whose range ends in 2262, so `'2300-01-01'::timestamptz` failed.
#[derive(Debug)]
pub struct TextTypePlanner;

impl TypePlanner for TextTypePlanner {
    fn plan_type_field(&self, sql_type: &ast::DataType) -> Result<Option<FieldRef>> {
        if crate::ddl::is_string_type(sql_type) {
            return Ok(Some(Arc::new(Field::new("text", DataType::Utf8, true))));
        }
        let is_timestamp = match sql_type {
            ast::DataType::Timestamp(..) => true,
            ast::DataType::Custom(name, _) => name.to_string().eq_ignore_ascii_case("timestamptz"),
            _ => false,
        };
        if is_timestamp {
            if let Ok(data_type) = crate::ddl::sql_to_arrow_type(sql_type) {
                return Ok(Some(Arc::new(Field::new("timestamp", data_type, true))));
            }
        }
        Ok(None)
    }
}

/// `state` with [`TextTypePlanner`].
pub fn with_type_planner(state: SessionState) -> SessionState {
    SessionStateBuilder::new_from_existing(state)
        .with_type_planner(Arc::new(TextTypePlanner))
        .build()
}

/// The input function that casts to `text_type`.
pub fn function_name(text_type: TextType) -> &'static str {
    match text_type {
        TextType::Json => "json_in",
        TextType::Jsonb => "jsonb_in",
        TextType::Uuid => "uuid_in",
    }
}

/// Registers `json_in`, `jsonb_in` and `uuid_in` on `ctx`.
pub fn register(ctx: &SessionContext) {
    for text_type in [TextType::Json, TextType::Jsonb, TextType::Uuid] {
        ctx.register_udf(ScalarUDF::new_from_impl(TextTypeInput {
            text_type,
            signature: Signature::any(1, Volatility::Immutable),
        }));
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TextTypeInput {
    text_type: TextType,
    signature: Signature,
}

impl ScalarUDFImpl for TextTypeInput {
    fn name(&self) -> &str {
        function_name(self.text_type)
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let nullable = args.arg_fields.first().is_none_or(|f| f.is_nullable());
        Ok(Arc::new(self.text_type.field(self.name(), nullable)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [argument] = args.args.as_slice() else {
            return Err(DataFusionError::Plan(format!(
                "{} takes one argument",
                self.name()
            )));
        };
        let array = argument.to_array(args.number_rows)?;
        let text = cast(&array, &DataType::Utf8)?;
        let normalized = self
            .text_type
            .normalize_array(text.as_ref())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(match argument {
            ColumnarValue::Scalar(_) if normalized.len() == 1 => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&normalized, 0)?)
            }
            _ => ColumnarValue::Array(normalized),
        })
    }
}
