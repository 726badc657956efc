//! Postgres's JSON operators and basic functions over JSON text: `->`, `->>`, `#>`, `#>>`,
//! `json[b]_extract_path[_text]`, `json[b]_typeof`, `json[b]_array_length`.
//!
//! JSON and JSONB columns hold their text (Arrow `Utf8`, tagged with its type); these functions
//! parse it where they are called, and `->`/`#>` results keep the input's type. The operators are planned by an [`ExprPlanner`] (DataFusion does not know
//! them), so they work in ad-hoc queries and materialized views alike. As in Postgres, a key
//! or index that is not there gives NULL, not an error; text that is not JSON is an error
//! (22P02).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Builder, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{exec_datafusion_err, DFSchema, DataFusionError, Result};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::BinaryOperator;
use runnel_common::text_types::{json_parts, JsonParts};
use runnel_common::{RunnelError, SqlState, TextType};

/// Registers the functions and the operators' planner on `ctx`.
pub fn register(ctx: &SessionContext) -> Result<()> {
    for kind in [
        JsonKind::Get,
        JsonKind::GetText,
        JsonKind::Path,
        JsonKind::PathText,
        JsonKind::TypeOf,
        JsonKind::ArrayLength,
    ] {
        for name in kind.names() {
            ctx.register_udf(ScalarUDF::new_from_impl(JsonFunction::new(name, kind)));
        }
    }
    ctx.state_ref()
        .write()
        .register_expr_planner(Arc::new(JsonOperators))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum JsonKind {
    /// `json -> key_or_index`: the element, as JSON.
    Get,
    /// `json ->> key_or_index`: the element, as text.
    GetText,
    /// `json #> path` / `json_extract_path(json, VARIADIC keys)`.
    Path,
    /// `json #>> path` / `json_extract_path_text(json, VARIADIC keys)`.
    PathText,
    TypeOf,
    ArrayLength,
}

impl JsonKind {
    fn names(self) -> &'static [&'static str] {
        match self {
            Self::Get => &["runnel_json_get"],
            Self::GetText => &["runnel_json_get_text"],
            Self::Path => &["json_extract_path", "jsonb_extract_path"],
            Self::PathText => &["json_extract_path_text", "jsonb_extract_path_text"],
            Self::TypeOf => &["json_typeof", "jsonb_typeof"],
            Self::ArrayLength => &["json_array_length", "jsonb_array_length"],
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonFunction {
    name: &'static str,
    kind: JsonKind,
    signature: Signature,
}

impl JsonFunction {
    fn new(name: &'static str, kind: JsonKind) -> Self {
        let signature = match kind {
            JsonKind::Get | JsonKind::GetText => Signature::any(2, Volatility::Immutable),
            JsonKind::Path | JsonKind::PathText => Signature::variadic_any(Volatility::Immutable),
            JsonKind::TypeOf | JsonKind::ArrayLength => Signature::any(1, Volatility::Immutable),
        };
        Self {
            name,
            kind,
            signature,
        }
    }
}

/// One step into a JSON value: an object's key or an array's index (negative from the end).
enum Step {
    Key(String),
    Index(i64),
}

/// The raw text of the value `step` leads to from the JSON text `raw` (`None` when there is
/// none); the last of duplicate keys, as jsonb keeps it.
fn step<'a>(raw: &'a str, step: &Step) -> Result<Option<&'a str>> {
    Ok(match (parts(raw)?, step) {
        (JsonParts::Object(members), Step::Key(key)) => members
            .into_iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value),
        (JsonParts::Array(items), Step::Index(index)) => {
            let at = if *index < 0 {
                items.len().checked_sub(index.unsigned_abs() as usize)
            } else {
                usize::try_from(*index).ok()
            };
            at.and_then(|at| items.get(at).copied())
        }
        // A path's text step into an array is an index, as in Postgres.
        (JsonParts::Array(_), Step::Key(key)) => match key.parse::<i64>() {
            Ok(index) => self::step(raw, &Step::Index(index))?,
            Err(_) => None,
        },
        _ => None,
    })
}

/// `'{a,b,0}'`, the text form of a path (`#>` and `#>>`), as its steps.
fn path_steps(path: &str) -> Vec<Step> {
    let inner = path.trim().trim_start_matches('{').trim_end_matches('}');
    if inner.is_empty() {
        return Vec::new();
    }
    inner
        .split(',')
        .map(|part| Step::Key(part.trim().trim_matches('"').to_string()))
        .collect()
}

/// A value as `->>` gives it: a string's contents, NULL for `null`, else its JSON text.
fn as_text(raw: &str) -> Option<String> {
    match raw {
        "null" => None,
        string if string.starts_with('"') => serde_json::from_str::<String>(string).ok(),
        other => Some(other.to_string()),
    }
}

/// JSON text taken apart one level, or 22P02.
fn parts(text: &str) -> Result<JsonParts<'_>> {
    json_parts(text).ok_or_else(|| {
        user_error(
            SqlState::INVALID_TEXT_REPRESENTATION,
            format!("invalid input syntax for type json: \"{text}\""),
        )
    })
}

/// An error of the user's data, with its SQLSTATE (DataFusion carries it to the client).
fn user_error(state: SqlState, message: String) -> DataFusionError {
    DataFusionError::External(Box::new(RunnelError::execution(state, message)))
}

impl ScalarUDFImpl for JsonFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            JsonKind::ArrayLength => DataType::Int64,
            _ => DataType::Utf8,
        })
    }

    /// `->` and `#>` give their input's JSON type (`json_extract_path` json, `jsonb_...`
    /// jsonb); over plain text they give text.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let json_type = match self.kind {
            JsonKind::Get | JsonKind::Path => {
                if self.name.starts_with("jsonb_") {
                    Some(TextType::Jsonb)
                } else if self.name.starts_with("json_") {
                    Some(TextType::Json)
                } else {
                    args.arg_fields
                        .first()
                        .and_then(|f| TextType::of(f))
                        .filter(|t| *t != TextType::Uuid)
                }
            }
            _ => None,
        };
        Ok(Arc::new(match json_type {
            Some(json_type) => json_type.field(self.name, true),
            None => Field::new(self.name, self.return_type(&[])?, true),
        }))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let jsonb_result = TextType::of(&args.return_field) == Some(TextType::Jsonb);
        let rows = args.number_rows;
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<Result<Vec<_>>>()?;
        let Some(first) = arrays.first() else {
            return Err(exec_datafusion_err!("{} needs a JSON argument", self.name));
        };
        let documents = cast(first, &DataType::Utf8)?;
        let documents = documents.as_string::<i32>();
        // Steps as text, and as integers where the argument is an integer (`-> 0`).
        let keys: Vec<(ArrayRef, bool)> = arrays[1..]
            .iter()
            .map(|a| {
                let integer = a.data_type().is_integer();
                cast(a, &DataType::Utf8).map(|text| (text, integer))
            })
            .collect::<std::result::Result<_, _>>()?;
        let steps_of = |row: usize| -> Option<Vec<Step>> {
            let mut steps = Vec::new();
            for (keys, integer) in &keys {
                let keys = keys.as_string::<i32>();
                if keys.is_null(row) {
                    return None;
                }
                let key = keys.value(row);
                match self.kind {
                    JsonKind::Get | JsonKind::GetText if *integer => {
                        steps.push(Step::Index(key.parse().ok()?));
                    }
                    JsonKind::Get | JsonKind::GetText => steps.push(Step::Key(key.to_string())),
                    // One argument holding a whole path (`#>`), or one key per argument.
                    _ if key.trim_start().starts_with('{') => steps.extend(path_steps(key)),
                    _ => steps.push(Step::Key(key.to_string())),
                }
            }
            Some(steps)
        };
        if self.kind == JsonKind::ArrayLength {
            let mut out = Int64Builder::with_capacity(rows);
            for row in 0..rows {
                if documents.is_null(row) {
                    out.append_null();
                    continue;
                }
                match parts(documents.value(row))? {
                    JsonParts::Array(items) => out.append_value(items.len() as i64),
                    _ => {
                        return Err(user_error(
                            SqlState("22023"),
                            "cannot get array length of a non-array".to_string(),
                        ))
                    }
                }
            }
            return Ok(ColumnarValue::Array(Arc::new(out.finish())));
        }
        let mut out = StringBuilder::with_capacity(rows, rows * 8);
        for row in 0..rows {
            if documents.is_null(row) {
                out.append_null();
                continue;
            }
            let document = documents.value(row);
            let found = match self.kind {
                JsonKind::TypeOf => Some(
                    match parts(document)? {
                        JsonParts::Object(_) => "object",
                        JsonParts::Array(_) => "array",
                        JsonParts::Scalar(scalar) => match scalar.as_bytes().first() {
                            Some(b'"') => "string",
                            Some(b't' | b'f') => "boolean",
                            Some(b'n') => "null",
                            _ => "number",
                        },
                    }
                    .to_string(),
                ),
                _ => match steps_of(row) {
                    None => None,
                    Some(steps) => {
                        // The whole document is checked, as Postgres parses it whole.
                        parts(document)?;
                        let mut at = Some(document.trim());
                        for s in &steps {
                            at = match at {
                                Some(raw) => step(raw, s)?,
                                None => None,
                            };
                        }
                        match (at, self.kind) {
                            (None, _) => None,
                            (Some(raw), JsonKind::GetText | JsonKind::PathText) => as_text(raw),
                            // Printed as Postgres prints jsonb; json keeps its text.
                            (Some(raw), _) if jsonb_result => TextType::Jsonb
                                .normalize(raw)
                                .ok()
                                .map(|text| text.into_owned()),
                            (Some(raw), _) => Some(raw.to_string()),
                        }
                    }
                },
            };
            out.append_option(found);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// Plans `->`, `->>`, `#>` and `#>>` as calls of the functions above.
#[derive(Debug)]
struct JsonOperators;

impl ExprPlanner for JsonOperators {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        _schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        let kind = match expr.op {
            BinaryOperator::Arrow => JsonKind::Get,
            BinaryOperator::LongArrow => JsonKind::GetText,
            BinaryOperator::HashArrow => JsonKind::Path,
            BinaryOperator::HashLongArrow => JsonKind::PathText,
            _ => return Ok(PlannerResult::Original(expr)),
        };
        let function = Arc::new(ScalarUDF::new_from_impl(JsonFunction::new(
            kind.names()[0],
            kind,
        )));
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(function, vec![expr.left, expr.right]),
        )))
    }
}
