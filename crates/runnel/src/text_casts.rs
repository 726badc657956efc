//! Casts between text and the types whose text Postgres and Arrow write differently, planned
//! as Postgres's input and output functions, for ad-hoc queries and materialized views alike.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{Expr, LogicalPlan};
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
                Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) => {
                    let from = type_of(expr);
                    let to = field.data_type();
                    let is_text = |t: &DataType| {
                        matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
                    };
                    if let (
                        Some(DataType::Utf8),
                        DataType::Timestamp(_, None),
                        Expr::Literal(ScalarValue::Utf8(Some(text)), metadata),
                    ) = (&from, to, expr.as_ref())
                    {
                        // `timestamp '2026-03-01 10:00'`: Arrow's parser wants the seconds.
                        let spelled = arrow_timestamp_text(text);
                        if spelled == *text {
                            return Ok(Transformed::no(e));
                        }
                        let mut cast = e.clone();
                        if let Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. }) =
                            &mut cast
                        {
                            **expr =
                                Expr::Literal(ScalarValue::Utf8(Some(spelled)), metadata.clone());
                        }
                        return Ok(Transformed::yes(cast));
                    }
                    let function = match from {
                        Some(ref from) if is_text(from) && matches!(to, DataType::Interval(_)) => {
                            if let Expr::Literal(ScalarValue::Utf8(Some(text)), metadata) =
                                expr.as_ref()
                            {
                                let canonical = arrow_interval_text(interval_literal(text)?);
                                let mut cast = e.clone();
                                if let Expr::Cast(Cast { expr, .. })
                                | Expr::TryCast(TryCast { expr, .. }) = &mut cast
                                {
                                    **expr = Expr::Literal(
                                        ScalarValue::Utf8(Some(canonical)),
                                        metadata.clone(),
                                    );
                                }
                                return Ok(Transformed::yes(cast));
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
                    let mut cast = e.clone();
                    if let Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. }) =
                        &mut cast
                    {
                        **expr = call;
                    }
                    Ok(Transformed::yes(cast))
                }
                _ => Ok(Transformed::no(e)),
            })?;
            Ok(rewritten.update_data(|e| name.restore(e)))
        })
    })?;
    Ok(transformed.data)
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
