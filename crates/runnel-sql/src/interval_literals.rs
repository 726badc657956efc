//! `INTERVAL '...'` literals and `'...'::interval` casts read as Postgres reads interval text.
//!
//! DataFusion plans such literals with Arrow's interval parser, which knows `<number> <unit>`
//! pairs only: `INTERVAL '1 day 02:00:00'`, the form Postgres (and Runnel) prints, would be a
//! planning error. Each such literal is read with Runnel's own parser
//! ([`runnel_common::interval_text`]) and written back in the form Arrow reads exactly, so the
//! rest of planning (window sizes, watermark delays, constant folding) sees the same
//! interval value. Literals with a unit after the string (`INTERVAL '5' MINUTE`) are left to
//! DataFusion. Casts of other expressions are planned by the query layer.
//!
//! A string literal compared with an interval (`d > '1 day 02:00:00'`) is read as an interval,
//! as Postgres types an unknown literal from the other operand; DataFusion has no coercion
//! between text and intervals, so [`IntervalComparisons`] plans such comparisons. It also
//! compares intervals as Postgres does, by their length with a month of 30 days and a day of
//! 24 hours (`'36 hours' > '1 day'`, `'25 hours' = '1 day 1 hour'`, `end - start > '1 day'`):
//! Arrow compares months, then days, then nanoseconds, each on its own.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes as arrow;
use datafusion::common::{DFSchema, DataFusionError, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, ExprSchemable, Operator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, DataType, Expr, Statement, Value, VisitMut, VisitorMut,
};
use runnel_common::interval_text::{arrow_interval_text, interval_from_text};
use runnel_common::{Result, RunnelError};

/// Registers [`IntervalComparisons`] and [`INTERVAL_ORDER_FUNCTION`] on `ctx`.
pub fn register(ctx: &SessionContext) -> datafusion::common::Result<()> {
    ctx.register_udf(interval_order().as_ref().clone());
    ctx.state_ref()
        .write()
        .register_expr_planner(Arc::new(IntervalComparisons))
}

/// The function an interval is compared by: its length in nanoseconds, a month counting 30
/// days and a day 24 hours (Postgres's `interval_cmp_value`), as a `Decimal128(38, 0)`.
pub const INTERVAL_ORDER_FUNCTION: &str = "runnel_interval_order";

const NANOS_PER_DAY: i128 = 86_400_000_000_000;

/// [`INTERVAL_ORDER_FUNCTION`], as plans call it.
fn interval_order() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(IntervalOrder {
        signature: Signature::any(1, Volatility::Immutable),
    }))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct IntervalOrder {
    signature: Signature,
}

impl ScalarUDFImpl for IntervalOrder {
    fn name(&self) -> &str {
        INTERVAL_ORDER_FUNCTION
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(
        &self,
        _args: &[arrow::DataType],
    ) -> datafusion::common::Result<arrow::DataType> {
        Ok(arrow::DataType::Decimal128(38, 0))
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        use datafusion::arrow::array::{Array, AsArray, Decimal128Array};
        use datafusion::arrow::datatypes::{
            DurationMicrosecondType, DurationMillisecondType, DurationNanosecondType,
            DurationSecondType, IntervalDayTimeType, IntervalMonthDayNanoType,
            IntervalYearMonthType,
        };
        let array = args.args[0].to_array(args.number_rows)?;
        let keys: Decimal128Array = match array.data_type() {
            arrow::DataType::Interval(arrow::IntervalUnit::MonthDayNano) => array
                .as_primitive::<IntervalMonthDayNanoType>()
                .iter()
                .map(|v| {
                    v.map(|v| {
                        (i128::from(v.months) * 30 + i128::from(v.days)) * NANOS_PER_DAY
                            + i128::from(v.nanoseconds)
                    })
                })
                .collect(),
            arrow::DataType::Interval(arrow::IntervalUnit::DayTime) => array
                .as_primitive::<IntervalDayTimeType>()
                .iter()
                .map(|v| {
                    v.map(|v| {
                        i128::from(v.days) * NANOS_PER_DAY + i128::from(v.milliseconds) * 1_000_000
                    })
                })
                .collect(),
            arrow::DataType::Interval(arrow::IntervalUnit::YearMonth) => array
                .as_primitive::<IntervalYearMonthType>()
                .iter()
                .map(|v| v.map(|months| i128::from(months) * 30 * NANOS_PER_DAY))
                .collect(),
            arrow::DataType::Duration(unit) => {
                let (values, per) = match unit {
                    arrow::TimeUnit::Second => (
                        array
                            .as_primitive::<DurationSecondType>()
                            .clone()
                            .into_parts()
                            .1,
                        1_000_000_000,
                    ),
                    arrow::TimeUnit::Millisecond => (
                        array
                            .as_primitive::<DurationMillisecondType>()
                            .clone()
                            .into_parts()
                            .1,
                        1_000_000,
                    ),
                    arrow::TimeUnit::Microsecond => (
                        array
                            .as_primitive::<DurationMicrosecondType>()
                            .clone()
                            .into_parts()
                            .1,
                        1_000,
                    ),
                    arrow::TimeUnit::Nanosecond => (
                        array
                            .as_primitive::<DurationNanosecondType>()
                            .clone()
                            .into_parts()
                            .1,
                        1,
                    ),
                };
                values
                    .iter()
                    .enumerate()
                    .map(|(row, v)| array.is_valid(row).then(|| i128::from(*v) * per))
                    .collect()
            }
            other => {
                return Err(datafusion::common::exec_datafusion_err!(
                    "{INTERVAL_ORDER_FUNCTION} takes an interval, not {other}"
                ))
            }
        };
        Ok(ColumnarValue::Array(Arc::new(
            keys.with_precision_and_scale(38, 0)?,
        )))
    }
}

/// Makes ORDER BY of an interval order by length, as comparisons do (`'36 hours'` after
/// `'1 day'`): each sort key of interval type is sorted by [`INTERVAL_ORDER_FUNCTION`] of it.
pub fn sort_intervals_by_length(
    plan: datafusion::logical_expr::LogicalPlan,
) -> datafusion::common::Result<datafusion::logical_expr::LogicalPlan> {
    use datafusion::common::tree_node::Transformed;
    use datafusion::logical_expr::LogicalPlan;
    let order = interval_order();
    plan.transform_up_with_subqueries(|node| {
        let LogicalPlan::Sort(mut sort) = node else {
            return Ok(Transformed::no(node));
        };
        let schema = sort.input.schema().clone();
        let mut changed = false;
        for key in &mut sort.expr {
            if matches!(
                key.expr.get_type(&schema),
                Ok(arrow::DataType::Interval(_) | arrow::DataType::Duration(_))
            ) {
                key.expr = datafusion::logical_expr::Expr::ScalarFunction(ScalarFunction::new_udf(
                    order.clone(),
                    vec![key.expr.clone()],
                ));
                changed = true;
            }
        }
        let node = LogicalPlan::Sort(sort);
        Ok(if changed {
            Transformed::yes(node)
        } else {
            Transformed::no(node)
        })
    })
    .map(|t| t.data)
}

/// Plans `interval <op> 'text'` (and `'text' <op> interval`) with the text read as an interval.
#[derive(Debug)]
pub struct IntervalComparisons;

impl ExprPlanner for IntervalComparisons {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> datafusion::common::Result<PlannerResult<RawBinaryExpr>> {
        let op = match expr.op {
            BinaryOperator::Eq => Operator::Eq,
            BinaryOperator::NotEq => Operator::NotEq,
            BinaryOperator::Lt => Operator::Lt,
            BinaryOperator::LtEq => Operator::LtEq,
            BinaryOperator::Gt => Operator::Gt,
            BinaryOperator::GtEq => Operator::GtEq,
            _ => return Ok(PlannerResult::Original(expr)),
        };
        let is_interval = |e: &datafusion::logical_expr::Expr| {
            matches!(
                e.get_type(schema),
                Ok(arrow::DataType::Interval(_) | arrow::DataType::Duration(_))
            )
        };
        let as_interval = |e: &datafusion::logical_expr::Expr| {
            let datafusion::logical_expr::Expr::Literal(ScalarValue::Utf8(Some(text)), _) = e
            else {
                return Ok(None);
            };
            interval_from_text(text)
                .map(|v| {
                    Some(datafusion::logical_expr::Expr::Literal(
                        ScalarValue::IntervalMonthDayNano(Some(v)),
                        None,
                    ))
                })
                .map_err(|e| DataFusionError::External(Box::new(e)))
        };
        let (left, right) = match (is_interval(&expr.left), is_interval(&expr.right)) {
            (true, true) => (expr.left.clone(), expr.right.clone()),
            (true, false) => match as_interval(&expr.right)? {
                Some(right) => (expr.left.clone(), right),
                None => return Ok(PlannerResult::Original(expr)),
            },
            (false, true) => match as_interval(&expr.left)? {
                Some(left) => (left, expr.right.clone()),
                None => return Ok(PlannerResult::Original(expr)),
            },
            (false, false) => return Ok(PlannerResult::Original(expr)),
        };
        let order = interval_order();
        let key = |e: datafusion::logical_expr::Expr| {
            Box::new(datafusion::logical_expr::Expr::ScalarFunction(
                ScalarFunction::new_udf(order.clone(), vec![e]),
            ))
        };
        Ok(PlannerResult::Planned(
            datafusion::logical_expr::Expr::BinaryExpr(BinaryExpr::new(key(left), op, key(right))),
        ))
    }
}

/// Rewrites every interval string literal of `statement` to Arrow's exact form; an invalid one
/// is an error (22007) as in Postgres.
pub fn read_interval_literals(statement: &mut Statement) -> Result<()> {
    match statement.visit(&mut IntervalLiterals) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(error) => Err(error),
    }
}

struct IntervalLiterals;

impl VisitorMut for IntervalLiterals {
    type Break = RunnelError;

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<RunnelError> {
        let literal = match expr {
            Expr::Interval(interval)
                if interval.leading_field.is_none() && interval.last_field.is_none() =>
            {
                interval.value.as_mut()
            }
            Expr::Cast {
                expr: inner,
                data_type: DataType::Interval { fields: None, .. },
                ..
            } => inner.as_mut(),
            _ => return ControlFlow::Continue(()),
        };
        let Expr::Value(value) = literal else {
            return ControlFlow::Continue(());
        };
        let (Value::SingleQuotedString(text) | Value::EscapedStringLiteral(text)) =
            &mut value.value
        else {
            return ControlFlow::Continue(());
        };
        match interval_from_text(text) {
            Ok(interval) => {
                *text = arrow_interval_text(interval);
                ControlFlow::Continue(())
            }
            Err(error) => ControlFlow::Break(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn parse(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0)
    }

    fn rewritten(sql: &str) -> String {
        let mut statement = parse(sql);
        read_interval_literals(&mut statement).unwrap();
        statement.to_string()
    }

    #[test]
    fn postgres_forms_become_arrow_text() {
        assert_eq!(
            rewritten("SELECT INTERVAL '1 day 02:00:00', '-1 days +01:00:00'::interval"),
            "SELECT INTERVAL '0 months 1 days 7200000000 microseconds', \
             '0 months -1 days 3600000000 microseconds'::INTERVAL"
        );
        assert_eq!(
            rewritten("SELECT INTERVAL '5' MINUTE"),
            "SELECT INTERVAL '5' MINUTE"
        );
    }

    #[test]
    fn invalid_text_is_an_error() {
        let mut statement = parse("SELECT INTERVAL '1 fortnight'");
        let error = read_interval_literals(&mut statement).unwrap_err();
        assert_eq!(error.sqlstate().0, "22007");
    }
}
