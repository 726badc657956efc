//! Casts between text and the types whose text Postgres and Arrow write differently, planned
//! as Postgres's input and output functions, for ad-hoc queries and materialized views alike.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{Expr, LogicalPlan};
use runnel_common::date_text::{iso_date_text, FieldOrder};
use runnel_common::Result;

/// The functions a cast is planned as here; a result column keeps the name of the cast (see
/// `convert::postgres_column_names`).
pub const PLANNED_CAST_FUNCTIONS: &[&str] =
    &["interval_in", "bare_numeric", "text_out", "text_out_utc"];

/// Casts between text and the types whose text Postgres and Arrow write differently, planned
/// as Postgres's input and output functions:
/// - a string cast to `interval` anywhere in the plan (the VALUES of an INSERT, `text_column
///   ::interval`) is read by `interval_in`, Postgres's interval input (Arrow's cast knows
///   `<number> <unit>` pairs only); a literal is rewritten to text Arrow reads exactly (a
///   string compared with an interval is read by `runnel_sql::interval_literals`' planner);
/// - a decimal or a string cast to a bare `NUMERIC` (what an INSERT into such a column does)
///   goes through `bare_numeric`, which refuses a value it would have to round;
/// - a date, time, timestamp, interval, float or bytea cast to text is written by
///   `text_out_function`, as Runnel sends it to clients (`interval '1 day'::text` is `1 day`),
///   not in Arrow's display form: `text_out` in the session's TimeZone and styles for queries,
///   `text_out_utc` (UTC, ISO, `postgres` intervals) for materialized views, whose rows must
///   not depend on who created them.
///
/// The cast node stays (around the function call), so the column keeps the name Postgres
/// gives a cast.
pub fn plan_postgres_text_casts(
    ctx: &SessionContext,
    plan: LogicalPlan,
    text_out_function: &str,
    order: FieldOrder,
) -> Result<LogicalPlan> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::error::DataFusionError;
    use datafusion::execution::FunctionRegistry;
    use datafusion::logical_expr::expr::ScalarFunction;
    use datafusion::logical_expr::expr_rewriter::NamePreserver;
    use datafusion::logical_expr::{Cast, ExprSchemable, TryCast};
    use runnel_common::interval_text::{arrow_interval_text, interval_from_text};

    let interval_in = ctx.udf("interval_in")?;
    let text_out = ctx.udf(text_out_function)?;
    let bare_numeric = ctx.udf("bare_numeric")?;
    let interval_literal = |text: &str| -> datafusion::error::Result<_> {
        interval_from_text(text).map_err(|e| DataFusionError::External(Box::new(e)))
    };
    let transformed = plan.transform_up_with_subqueries(|node| {
        let schema = match node.inputs().as_slice() {
            [input] => input.schema().clone(),
            _ => return Ok(Transformed::no(node)),
        };
        let type_of = |e: &Expr| e.get_type(schema.as_ref()).ok();
        // Nodes above refer to this node's columns by name: a rewritten expression keeps it.
        let names = NamePreserver::new(&node);
        node.map_expressions(|expr| {
            let name = names.save(&expr);
            let rewritten = expr.transform_up(|e| match &e {
                // A string compared with a date or timestamp is read as one, in the forms
                // Postgres reads (`day = '03/01/2026'`); DataFusion casts it with Arrow later.
                Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr { left, op, right })
                    if crate::handlers::query::is_comparison(op) =>
                {
                    let spell = |side: &Expr, other: &Expr| match (side, type_of(other)) {
                        (
                            Expr::Literal(ScalarValue::Utf8(Some(text)), metadata),
                            Some(target @ (DataType::Date32 | DataType::Timestamp(_, None))),
                        ) => {
                            let spelled = postgres_date_text(text, &target, order);
                            (spelled != *text).then(|| {
                                Box::new(Expr::Literal(
                                    ScalarValue::Utf8(Some(spelled)),
                                    metadata.clone(),
                                ))
                            })
                        }
                        _ => None,
                    };
                    match (spell(left, right), spell(right, left)) {
                        (None, None) => Ok(Transformed::no(e)),
                        (new_left, new_right) => Ok(Transformed::yes(Expr::BinaryExpr(
                            datafusion::logical_expr::BinaryExpr::new(
                                new_left.unwrap_or_else(|| left.clone()),
                                *op,
                                new_right.unwrap_or_else(|| right.clone()),
                            ),
                        ))),
                    }
                }
                Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) => {
                    let from = type_of(expr);
                    let to = field.data_type();
                    let is_text = |t: &DataType| {
                        matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
                    };
                    if let (
                        Some(DataType::Utf8),
                        DataType::Timestamp(..) | DataType::Date32,
                        Expr::Literal(ScalarValue::Utf8(Some(text)), metadata),
                    ) = (&from, to, expr.as_ref())
                    {
                        // `timestamp '2026-03-01 10:00'`, `'03/01/2026'::date`: spelled so
                        // Arrow's parser reads them as Postgres does.
                        let spelled = postgres_date_text(text, to, order);
                        if spelled == *text {
                            return Ok(Transformed::no(e));
                        }
                        let literal =
                            Expr::Literal(ScalarValue::Utf8(Some(spelled)), metadata.clone());
                        return Ok(Transformed::yes(with_cast_input(&e, literal)));
                    }
                    let function = match from {
                        Some(ref from) if is_text(from) && matches!(to, DataType::Interval(_)) => {
                            if let Expr::Literal(ScalarValue::Utf8(Some(text)), metadata) =
                                expr.as_ref()
                            {
                                let canonical = arrow_interval_text(interval_literal(text)?);
                                let literal = Expr::Literal(
                                    ScalarValue::Utf8(Some(canonical)),
                                    metadata.clone(),
                                );
                                return Ok(Transformed::yes(with_cast_input(&e, literal)));
                            }
                            &interval_in
                        }
                        Some(
                            DataType::Date32
                            | DataType::Date64
                            | DataType::Time32(_)
                            | DataType::Time64(_)
                            | DataType::Timestamp(..)
                            | DataType::Interval(_)
                            | DataType::Duration(_)
                            | DataType::Float32
                            | DataType::Float64
                            | DataType::Binary,
                        ) if is_text(to) => &text_out,
                        Some(DataType::Utf8) | Some(DataType::Decimal128(_, 11..))
                            if to == &DataType::Decimal128(38, 10) =>
                        {
                            &bare_numeric
                        }
                        _ => return Ok(Transformed::no(e)),
                    };
                    let call = Expr::ScalarFunction(ScalarFunction::new_udf(
                        function.clone(),
                        vec![expr.as_ref().clone()],
                    ));
                    Ok(Transformed::yes(with_cast_input(&e, call)))
                }
                _ => Ok(Transformed::no(e)),
            })?;
            Ok(rewritten.update_data(|e| name.restore(e)))
        })
    })?;
    Ok(transformed.data)
}

/// The cast (or try-cast) `cast` of `input` instead of its own input: the cast node stays, so
/// the column keeps the name Postgres gives a cast.
fn with_cast_input(cast: &Expr, input: Expr) -> Expr {
    use datafusion::logical_expr::{Cast, TryCast};
    let mut cast = cast.clone();
    if let Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. }) = &mut cast {
        **expr = input;
    }
    cast
}

/// Timestamp text as Postgres takes it, spelled so Arrow's parser takes it too: seconds added
/// to a time without them (`10:00` → `10:00:00`) and minutes to an offset without them
/// (`+02` → `+02:00`).
pub(crate) fn arrow_timestamp_text(text: &str) -> String {
    let text = text.trim();
    let (date_time, offset) = match text.rfind(['+', '-']) {
        // A sign after the time (not one of the date's dashes) starts the offset.
        Some(at) if at > 10 => text.split_at(at),
        _ => (text, ""),
    };
    let mut out = date_time.to_string();
    let time = date_time.get(11..).unwrap_or("");
    if time.len() == 5 && time.as_bytes()[2] == b':' {
        out.push_str(":00");
    }
    out.push_str(offset);
    if offset.len() == 3 {
        out.push_str(":00");
    }
    out
}

/// Date or timestamp text as Postgres reads it, spelled so Arrow's parser reads it too: text
/// Arrow reads already is kept; otherwise numeric dates in the session's field `order`, month
/// names, `AM`/`PM`, zone abbreviations and times without seconds are respelled as ISO 8601
/// (see [`runnel_common::date_text`]). Text neither reads is kept for the cast to refuse.
pub(crate) fn postgres_date_text(text: &str, target: &DataType, order: FieldOrder) -> String {
    use datafusion::arrow::compute::kernels::cast_utils::{string_to_datetime, Parser};
    use datafusion::arrow::datatypes::Date32Type;
    let readable = |text: &str| match target {
        DataType::Date32 => Date32Type::parse(text).is_some(),
        _ => string_to_datetime(&chrono::Utc, text).is_ok(),
    };
    if readable(text) {
        return text.to_string();
    }
    let spelled = arrow_timestamp_text(text);
    if readable(&spelled) {
        return spelled;
    }
    let Some(iso) = iso_date_text(text, order) else {
        return text.to_string();
    };
    match target {
        // A date is its date part (`'March 1, 2026 10:00'::date`).
        DataType::Date32 => iso.get(..10).unwrap_or(&iso).to_string(),
        _ => iso,
    }
}

/// [`postgres_date_text`] over a column of text (what COPY FROM reads), for a date or timestamp
/// column.
pub(crate) fn postgres_date_column(
    text: &datafusion::arrow::array::ArrayRef,
    target: &DataType,
    order: FieldOrder,
) -> Result<datafusion::arrow::array::ArrayRef> {
    use datafusion::arrow::array::{AsArray, StringArray};
    let strings = datafusion::arrow::compute::cast(text, &DataType::Utf8)?;
    let strings = strings.as_string::<i32>();
    let spelled: StringArray = strings
        .iter()
        .map(|value| value.map(|v| postgres_date_text(v, target, order)))
        .collect();
    Ok(std::sync::Arc::new(spelled))
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamp_text_gets_seconds_and_offset_minutes() {
        use super::arrow_timestamp_text as fix;
        assert_eq!(fix("2026-06-10 10:00"), "2026-06-10 10:00:00");
        assert_eq!(fix("2026-06-10 10:00+00"), "2026-06-10 10:00:00+00:00");
        assert_eq!(fix("2026-06-10T10:00-05"), "2026-06-10T10:00:00-05:00");
        assert_eq!(
            fix("2026-06-10 10:00:30.5+02:00"),
            "2026-06-10 10:00:30.5+02:00"
        );
        assert_eq!(fix("2026-06-10"), "2026-06-10");
    }
}
