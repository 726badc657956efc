//! `NOW()` inside a materialized view: the event-time clock, not the wall clock.
//!
//! Before DataFusion's optimiser can fold `now()` into a constant, [`bind_event_time_now`]
//! replaces it with [`EventTimeNow`], a volatile function that nothing evaluates. The
//! lowering then turns each `WHERE` conjunct comparing a row's time with `NOW() ± INTERVAL`
//! into a temporal filter (see [`temporal_conjunct`]); `NOW()` anywhere else is refused.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{exec_err, Result as DfResult};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, LogicalPlan, Operator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use runnel_common::Result;
use runnel_plan::TemporalBound;

use crate::event_time::interval_literal;

/// `now()` in a view: the event-time clock of the view's inputs (their watermark).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct EventTimeNow {
    signature: Signature,
}

impl Default for EventTimeNow {
    fn default() -> Self {
        EventTimeNow {
            signature: Signature::nullary(Volatility::Volatile),
        }
    }
}

impl ScalarUDFImpl for EventTimeNow {
    fn name(&self) -> &str {
        "now"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Timestamp(
            TimeUnit::Microsecond,
            Some(crate::ddl::UTC.into()),
        ))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        exec_err!("now() in a materialized view is the event-time clock and is never evaluated as a function")
    }
}

/// Whether `expr` is the event-time `now()`.
pub fn is_event_time_now(expr: &Expr) -> bool {
    matches!(expr, Expr::ScalarFunction(f) if f.func.inner().is::<EventTimeNow>())
}

/// Whether `expr` mentions the event-time `now()` anywhere.
pub fn mentions_event_time_now(expr: &Expr) -> bool {
    let mut found = false;
    let _ = expr.apply(|e| {
        found = is_event_time_now(e);
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// Replaces every `now()` (and `current_timestamp`) in a view's plan with [`EventTimeNow`].
pub fn bind_event_time_now(plan: LogicalPlan) -> Result<LogicalPlan> {
    let udf = Arc::new(ScalarUDF::new_from_impl(EventTimeNow::default()));
    let rewritten = plan.transform_up_with_subqueries(|node| {
        node.map_expressions(|e| {
            e.transform_up(|e| match &e {
                Expr::ScalarFunction(f) if f.func.name() == "now" && f.args.is_empty() => {
                    Ok(Transformed::yes(Expr::ScalarFunction(
                        ScalarFunction::new_udf(udf.clone(), vec![]),
                    )))
                }
                _ => Ok(Transformed::no(e)),
            })
        })
    })?;
    Ok(rewritten.data)
}

/// One `WHERE` conjunct over the clock, as `time + offset_micros` against the clock.
#[derive(Debug, Clone)]
pub struct TemporalCondition {
    pub time: Expr,
    pub offset_micros: i64,
    pub bound: TemporalBound,
}

/// Splits `BETWEEN` conjuncts that mention `now()` into their two comparisons.
pub fn expand_between(conjunct: Expr) -> Vec<Expr> {
    match conjunct {
        Expr::Between(between)
            if !between.negated && mentions_event_time_now(&Expr::Between(between.clone())) =>
        {
            vec![
                Expr::BinaryExpr(BinaryExpr::new(
                    between.expr.clone(),
                    Operator::GtEq,
                    between.low,
                )),
                Expr::BinaryExpr(BinaryExpr::new(between.expr, Operator::LtEq, between.high)),
            ]
        }
        other => vec![other],
    }
}

/// `time_expr OP now() ± INTERVAL` (either way round) as a temporal condition; `None` when
/// the conjunct has another shape.
pub fn temporal_conjunct(conjunct: &Expr) -> Option<TemporalCondition> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = conjunct else {
        return None;
    };
    let (time, op, clock) = match (
        mentions_event_time_now(left),
        mentions_event_time_now(right),
    ) {
        (false, true) => (left.as_ref(), *op, right.as_ref()),
        (true, false) => (right.as_ref(), op.swap()?, left.as_ref()),
        _ => return None,
    };
    // The clock side: now(), now() + interval, now() - interval (possibly cast).
    let shift = clock_shift(clock)?;
    // time OP W + shift, with threshold T = time - shift:
    //   >  : visible while W <  T        >= : visible while W <= T (W < T + 1us)
    //   <  : visible once  W >  T        <= : visible once  W >= T
    let (offset, bound) = match op {
        Operator::Gt => (-shift, TemporalBound::Until),
        Operator::GtEq => (1 - shift, TemporalBound::Until),
        Operator::Lt => (1 - shift, TemporalBound::From),
        Operator::LtEq => (-shift, TemporalBound::From),
        _ => return None,
    };
    Some(TemporalCondition {
        time: time.clone(),
        offset_micros: offset,
        bound,
    })
}

/// How far `expr` (a form of `now()`) is ahead of the clock, in microseconds.
fn clock_shift(expr: &Expr) -> Option<i64> {
    match expr {
        e if is_event_time_now(e) => Some(0),
        Expr::Cast(cast) => clock_shift(&cast.expr),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let base = clock_shift(left)?;
            let shift = interval_literal(right)?;
            match op {
                Operator::Plus => base.checked_add(shift),
                Operator::Minus => base.checked_sub(shift),
                _ => None,
            }
        }
        _ => None,
    }
}
