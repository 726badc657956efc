//! Postgres's JSON operators and basic functions over JSON text: `->`, `->>`, `#>`, `#>>`,
//! `json[b]_extract_path[_text]`, `json[b]_typeof`, `json[b]_array_length`, and jsonb's
//! containment and existence operators `@>`, `<@`, `?`, `?|`, `?&` (`jsonb_contains`,
//! `jsonb_contained`, `jsonb_exists`, `jsonb_exists_any`, `jsonb_exists_all`).
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
        JsonKind::Contains,
        JsonKind::ContainedBy,
        JsonKind::Exists,
        JsonKind::ExistsAny,
        JsonKind::ExistsAll,
    ] {
        for name in kind.names().iter().chain(kind.operator_name().as_ref()) {
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
    /// `a @> b`: `a` contains `b` (structure and values; a top-level array also contains a
    /// scalar it has as an element).
    Contains,
    /// `a <@ b`: `b` contains `a`.
    ContainedBy,
    /// `doc ? key`: `key` is a top-level key, or a string element of a top-level array.
    Exists,
    /// `doc ?| keys`: any of them exists.
    ExistsAny,
    /// `doc ?& keys`: all of them exist.
    ExistsAll,
}

impl JsonKind {
    fn names(self) -> &'static [&'static str] {
        match self {
            Self::Get | Self::GetText => &[],
            Self::Path => &["json_extract_path", "jsonb_extract_path"],
            Self::PathText => &["json_extract_path_text", "jsonb_extract_path_text"],
            Self::TypeOf => &["json_typeof", "jsonb_typeof"],
            Self::ArrayLength => &["json_array_length", "jsonb_array_length"],
            Self::Contains => &["jsonb_contains"],
            Self::ContainedBy => &["jsonb_contained"],
            Self::Exists => &["jsonb_exists"],
            Self::ExistsAny => &["jsonb_exists_any"],
            Self::ExistsAll => &["jsonb_exists_all"],
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
            JsonKind::Get
            | JsonKind::GetText
            | JsonKind::Contains
            | JsonKind::ContainedBy
            | JsonKind::Exists
            | JsonKind::ExistsAny
            | JsonKind::ExistsAll => Signature::any(2, Volatility::Immutable),
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
            kind if kind.is_predicate() => DataType::Boolean,
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
        if self.kind.is_predicate() {
            return predicate(self.kind, &documents_and_operand(&arrays)?, rows);
        }
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

impl JsonKind {
    /// The function an operator is planned as. Its name is Runnel's own, so the result column
    /// is `?column?` as for any operator in Postgres, and `->`/`#>` give their input's JSON
    /// type whatever the function's name says.
    fn operator_name(self) -> Option<&'static str> {
        Some(match self {
            Self::Get => "runnel_json_get",
            Self::GetText => "runnel_json_get_text",
            Self::Path => "runnel_json_path",
            Self::PathText => "runnel_json_path_text",
            Self::Contains => "runnel_jsonb_contains",
            Self::ContainedBy => "runnel_jsonb_contained",
            Self::Exists => "runnel_jsonb_exists",
            Self::ExistsAny => "runnel_jsonb_exists_any",
            Self::ExistsAll => "runnel_jsonb_exists_all",
            Self::TypeOf | Self::ArrayLength => return None,
        })
    }

    fn is_predicate(self) -> bool {
        matches!(
            self,
            Self::Contains | Self::ContainedBy | Self::Exists | Self::ExistsAny | Self::ExistsAll
        )
    }
}

/// A predicate's two arguments: the document as text, and the other operand (a document, a
/// key, or a text array).
fn documents_and_operand(arrays: &[ArrayRef]) -> Result<(ArrayRef, ArrayRef)> {
    match arrays {
        [document, operand] => Ok((cast(document, &DataType::Utf8)?, operand.clone())),
        _ => Err(exec_datafusion_err!("a jsonb operator takes two operands")),
    }
}

/// A JSON document as a value, or 22P02.
fn document_value(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|_| {
        user_error(
            SqlState::INVALID_TEXT_REPRESENTATION,
            format!("invalid input syntax for type json: \"{text}\""),
        )
    })
}

/// Whether `container` contains `contained`, as jsonb's `@>` decides it.
fn contains(container: &serde_json::Value, contained: &serde_json::Value, top: bool) -> bool {
    use serde_json::Value;
    match (container, contained) {
        (Value::Object(outer), Value::Object(inner)) => inner.iter().all(|(key, value)| {
            outer
                .get(key)
                .is_some_and(|found| contains(found, value, false))
        }),
        (Value::Array(outer), Value::Array(inner)) => inner
            .iter()
            .all(|wanted| outer.iter().any(|have| contains(have, wanted, false))),
        // Only a top-level array contains a bare scalar.
        (Value::Array(outer), scalar) if top && !scalar.is_object() => {
            outer.iter().any(|have| same_scalar(have, scalar))
        }
        (a, b) => same_scalar(a, b),
    }
}

/// Scalars equal as jsonb compares them (numbers by value: `1` and `1.0` are equal).
fn same_scalar(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => false,
        _ => a == b,
    }
}

/// Whether `key` exists in `document` as `?` decides it.
fn key_exists(document: &serde_json::Value, key: &str) -> bool {
    use serde_json::Value;
    match document {
        Value::Object(members) => members.contains_key(key),
        Value::Array(items) => items.iter().any(|item| item.as_str() == Some(key)),
        Value::String(text) => text == key,
        _ => false,
    }
}

/// The keys of a `?|`/`?&` operand: a text array, or its text form `'{a,b}'`.
fn operand_keys(operand: &ArrayRef, row: usize) -> Result<Option<Vec<String>>> {
    if operand.is_null(row) {
        return Ok(None);
    }
    match operand.data_type() {
        DataType::List(_) | DataType::LargeList(_) => {
            let element = match operand.data_type() {
                DataType::List(_) => operand.as_list::<i32>().value(row),
                _ => operand.as_list::<i64>().value(row),
            };
            let element = cast(&element, &DataType::Utf8)?;
            Ok(Some(
                element
                    .as_string::<i32>()
                    .iter()
                    .flatten()
                    .map(str::to_string)
                    .collect(),
            ))
        }
        _ => {
            let text = cast(operand, &DataType::Utf8)?;
            Ok(Some(
                path_steps(text.as_string::<i32>().value(row))
                    .into_iter()
                    .filter_map(|step| match step {
                        Step::Key(key) => Some(key),
                        Step::Index(_) => None,
                    })
                    .collect(),
            ))
        }
    }
}

/// `@>`, `<@`, `?`, `?|`, `?&` over every row; NULL where an operand is NULL.
fn predicate(
    kind: JsonKind,
    (documents, operand): &(ArrayRef, ArrayRef),
    rows: usize,
) -> Result<ColumnarValue> {
    let documents = documents.as_string::<i32>();
    let operand_text = match kind {
        JsonKind::Contains | JsonKind::ContainedBy | JsonKind::Exists => {
            Some(cast(operand, &DataType::Utf8)?)
        }
        _ => None,
    };
    let mut out = datafusion::arrow::array::BooleanBuilder::with_capacity(rows);
    for row in 0..rows {
        if documents.is_null(row) || operand.is_null(row) {
            out.append_null();
            continue;
        }
        let document = document_value(documents.value(row))?;
        let value = match (kind, &operand_text) {
            (JsonKind::Contains | JsonKind::ContainedBy, Some(text)) => {
                let other = document_value(text.as_string::<i32>().value(row))?;
                if kind == JsonKind::Contains {
                    contains(&document, &other, true)
                } else {
                    contains(&other, &document, true)
                }
            }
            (JsonKind::Exists, Some(text)) => {
                key_exists(&document, text.as_string::<i32>().value(row))
            }
            _ => match operand_keys(operand, row)? {
                None => {
                    out.append_null();
                    continue;
                }
                Some(keys) if kind == JsonKind::ExistsAny => {
                    keys.iter().any(|key| key_exists(&document, key))
                }
                Some(keys) => keys.iter().all(|key| key_exists(&document, key)),
            },
        };
        out.append_value(value);
    }
    Ok(ColumnarValue::Array(Arc::new(out.finish())))
}

/// Plans `->`, `->>`, `#>` and `#>>` as calls of the functions above.
#[derive(Debug)]
struct JsonOperators;

impl ExprPlanner for JsonOperators {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        // `@>` and `<@` are also array operators: they are jsonb's when neither side is an
        // array.
        let is_list = |e: &Expr| {
            matches!(
                datafusion::logical_expr::ExprSchemable::get_type(e, schema),
                Ok(DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..))
            )
        };
        let kind = match expr.op {
            BinaryOperator::Arrow => JsonKind::Get,
            BinaryOperator::LongArrow => JsonKind::GetText,
            BinaryOperator::HashArrow => JsonKind::Path,
            BinaryOperator::HashLongArrow => JsonKind::PathText,
            BinaryOperator::AtArrow | BinaryOperator::ArrowAt
                if is_list(&expr.left) || is_list(&expr.right) =>
            {
                return Ok(PlannerResult::Original(expr));
            }
            BinaryOperator::AtArrow => JsonKind::Contains,
            BinaryOperator::ArrowAt => JsonKind::ContainedBy,
            BinaryOperator::Question => JsonKind::Exists,
            BinaryOperator::QuestionPipe => JsonKind::ExistsAny,
            BinaryOperator::QuestionAnd => JsonKind::ExistsAll,
            _ => return Ok(PlannerResult::Original(expr)),
        };
        let Some(name) = kind.operator_name() else {
            return Ok(PlannerResult::Original(expr));
        };
        let function = Arc::new(ScalarUDF::new_from_impl(JsonFunction::new(name, kind)));
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(function, vec![expr.left, expr.right]),
        )))
    }
}
