//! Watermark derivation: which plan nodes an event-time clock reaches, and which of their
//! output columns it bounds (see [`runnel_plan::TimeBound`]).
//!
//! A stream with `WATERMARK FOR ts` bounds `ts` with lag 0: once the clock is at `W`, every
//! row still to come has `ts >= W` (earlier rows are dropped as late). Bounds pass through
//! filters and unions (the weakest lag wins), and through projections whose expression is
//! monotone in a bounded column: the column itself, a cast, `± INTERVAL`, and `date_bin`
//! (the window columns TUMBLE and HOP compute). An aggregate keeps the bounds of its group
//! columns: a group only changes when one of its rows arrives. A SESSION window bounds its
//! `window_end` as its time column is bounded. Joins keep none, since a
//! join's output can pair a new row with an arbitrarily old one.

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{DFSchemaRef, ScalarValue};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use runnel_common::time::interval_micros;
use runnel_plan::{EventTime, NodeKind, TimeBound};

/// The event time of a node of `kind` over inputs with `inputs` event times (sources get
/// theirs from the catalog instead).
pub fn derive_event_time(
    kind: &NodeKind,
    inputs: &[&EventTime],
    input_schemas: &[DFSchemaRef],
) -> EventTime {
    let timed = inputs.iter().any(|t| t.timed);
    let bounds_of = |exprs: &[Expr]| -> Vec<TimeBound> {
        exprs
            .iter()
            .enumerate()
            .filter_map(|(column, e)| {
                expr_lag(e, &input_schemas[0], inputs[0])
                    .map(|lag_micros| TimeBound { column, lag_micros })
            })
            .collect()
    };
    let bounds = match kind {
        NodeKind::Source { .. } | NodeKind::Join { .. } | NodeKind::AsofJoin { .. } => Vec::new(),
        NodeKind::Filter { .. }
        | NodeKind::TemporalFilter { .. }
        | NodeKind::Materialize { .. } => inputs[0].bounds.clone(),
        // A change to a window's input changes output rows at or after it in ORDER BY order,
        // so only an ascending bounded ORDER BY column stays bounded.
        NodeKind::Window { order_by, .. } => match order_by.first() {
            Some(sort) if sort.asc => match &sort.expr {
                Expr::Column(c) => input_schemas[0]
                    .index_of_column(c)
                    .ok()
                    .and_then(|column| {
                        inputs[0]
                            .lag_of(column)
                            .map(|lag_micros| TimeBound { column, lag_micros })
                    })
                    .into_iter()
                    .collect(),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        },
        // Every change touches a session holding a row at or after the clock's bound on
        // `time`: a new row's session, or one it merges, ends strictly after that row, so
        // one tick (a microsecond, unless the column is finer) less lag.
        NodeKind::SessionWindow { time, .. } => {
            use datafusion::logical_expr::ExprSchemable;
            let tick = match time.get_type(&input_schemas[0]) {
                Ok(DataType::Timestamp(TimeUnit::Nanosecond, _)) | Err(_) => 0,
                Ok(_) => 1,
            };
            expr_lag(time, &input_schemas[0], inputs[0])
                .map(|lag| TimeBound {
                    column: input_schemas[0].fields().len() + 1,
                    lag_micros: lag - tick,
                })
                .into_iter()
                .collect()
        }
        NodeKind::Project { exprs } => bounds_of(exprs),
        NodeKind::Aggregate { group_exprs, .. } => bounds_of(group_exprs),
        NodeKind::Union => inputs[0]
            .bounds
            .iter()
            .filter_map(|b| {
                let lags: Option<Vec<i64>> = inputs.iter().map(|t| t.lag_of(b.column)).collect();
                lags.and_then(|l| l.into_iter().max())
                    .map(|lag_micros| TimeBound {
                        column: b.column,
                        lag_micros,
                    })
            })
            .collect(),
    };
    EventTime { timed, bounds }
}

/// The lag of `expr`'s value behind the clock, when `expr` is monotone in a bounded column.
pub fn expr_lag(expr: &Expr, schema: &DFSchemaRef, input: &EventTime) -> Option<i64> {
    match expr {
        Expr::Alias(alias) => expr_lag(&alias.expr, schema, input),
        Expr::Column(c) => input.lag_of(schema.index_of_column(c).ok()?),
        Expr::Cast(cast) if matches!(cast.field.data_type(), DataType::Timestamp(_, _)) => {
            expr_lag(&cast.expr, schema, input)
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let shift = interval_literal(right)?;
            let lag = expr_lag(left, schema, input)?;
            match op {
                Operator::Plus => lag.checked_sub(shift),
                Operator::Minus => lag.checked_add(shift),
                _ => None,
            }
        }
        Expr::ScalarFunction(f)
            if f.func.name() == "date_bin" || f.func.name() == crate::epoch_bin::EPOCH_BIN =>
        {
            // date_bin(stride, t[, origin]) > t - stride: the lag grows by the stride (less
            // one microsecond, as the bin start is at most stride - 1µs behind t).
            let stride = interval_literal(f.args.first()?)?;
            if f.args.len() > 2 && !matches!(f.args[2], Expr::Literal(..)) {
                return None;
            }
            expr_lag(f.args.get(1)?, schema, input)?.checked_add(stride - 1)
        }
        _ => None,
    }
}

/// A fixed-length interval literal, in microseconds.
pub fn interval_literal(expr: &Expr) -> Option<i64> {
    match expr {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) => interval_micros(*v),
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
            Some(v.days as i64 * 86_400_000_000 + v.milliseconds as i64 * 1_000)
        }
        Expr::Literal(ScalarValue::DurationMicrosecond(Some(v)), _) => Some(*v),
        Expr::Literal(ScalarValue::DurationNanosecond(Some(v)), _) => {
            (v % 1_000 == 0).then_some(v / 1_000)
        }
        Expr::Cast(cast) => interval_literal(&cast.expr),
        _ => None,
    }
}
