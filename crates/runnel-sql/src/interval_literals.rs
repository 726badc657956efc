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
//! between text and intervals, so [`IntervalComparisons`] plans such comparisons.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::common::{DFSchema, DataFusionError, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{BinaryExpr, ExprSchemable, Operator};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, DataType, Expr, Statement, Value, VisitMut, VisitorMut,
};
use runnel_common::interval_text::{arrow_interval_text, interval_from_text};
use runnel_common::{Result, RunnelError};

/// Registers [`IntervalComparisons`] on `ctx`.
pub fn register(ctx: &SessionContext) -> datafusion::common::Result<()> {
    ctx.state_ref()
        .write()
        .register_expr_planner(Arc::new(IntervalComparisons))
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
                Ok(datafusion::arrow::datatypes::DataType::Interval(_))
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
        let (left, right) = if is_interval(&expr.left) {
            match as_interval(&expr.right)? {
                Some(right) => (expr.left.clone(), right),
                None => return Ok(PlannerResult::Original(expr)),
            }
        } else if is_interval(&expr.right) {
            match as_interval(&expr.left)? {
                Some(left) => (left, expr.right.clone()),
                None => return Ok(PlannerResult::Original(expr)),
            }
        } else {
            return Ok(PlannerResult::Original(expr));
        };
        Ok(PlannerResult::Planned(
            datafusion::logical_expr::Expr::BinaryExpr(BinaryExpr::new(
                Box::new(left),
                op,
                Box::new(right),
            )),
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
