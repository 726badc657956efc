//! Window table functions in FROM: `TUMBLE(relation, time_column, size)`,
//! `HOP(relation, time_column, slide, size)` and `SESSION(relation, time_column, gap[, key,
//! ...])`, a DataFusion relation-planner extension.
//!
//! Each returns the relation's columns plus `window_start` and `window_end` (of the time
//! column's type; windows are aligned to the Unix epoch and include their start, not their
//! end). TUMBLE and HOP are planned as ordinary relational algebra, so ad-hoc queries and
//! views get the same answer and the lowering needs nothing new:
//! - TUMBLE is a projection: `window_start = epoch_bin(size, t)`, `window_end = window_start + size`;
//! - HOP is a UNION ALL of `ceil(size / slide)` such projections, the k-th placing each row in
//!   the window starting `k` slides before its latest one (filtered to windows that contain
//!   the row when the size is not a multiple of the slide).
//! - SESSION is a logical node of its own ([`crate::session_window`]): views run it as the
//!   session operator, ad-hoc queries as an equivalent chain of OVER windows.
//!
//! Watermark derivation (see [`crate::event_time`]) recognises the TUMBLE and HOP
//! expressions and the session node's `window_end`, so a window over a stream's watermark
//! column knows when each window is closed.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano};
use datafusion::common::{plan_err, Column, DFSchema, Result as DfResult, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::planner::{
    PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning,
};
use datafusion::logical_expr::{
    lit, Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder, TableSource,
};
use datafusion::sql::sqlparser::ast::{
    self, FunctionArg, FunctionArgExpr, Ident, ObjectName, TableAlias, TableFactor,
};
use runnel_common::{RunnelError, SqlState};

use crate::event_time::interval_literal;

/// The most windows a HOP may place one row in (its size over its slide).
pub const MAX_HOP_WINDOWS_PER_ROW: i64 = 1000;

/// Finds a relation by name. DataFusion resolves a statement's tables before planning it and
/// does not see a relation named only as a table function's argument, so the planner looks
/// such relations up itself.
pub type TableLookup = dyn Fn(&str) -> Option<Arc<dyn TableSource>> + Send + Sync;

/// Plans TUMBLE, HOP and SESSION in FROM clauses.
pub struct WindowTableFunctions {
    lookup: Arc<TableLookup>,
}

impl WindowTableFunctions {
    pub fn new(lookup: Arc<TableLookup>) -> Self {
        WindowTableFunctions { lookup }
    }
}

impl std::fmt::Debug for WindowTableFunctions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WindowTableFunctions")
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum WindowKind {
    Tumble,
    Hop,
    Session,
}

impl RelationPlanner for WindowTableFunctions {
    fn plan_relation(
        &self,
        relation: TableFactor,
        context: &mut dyn RelationPlannerContext,
    ) -> DfResult<RelationPlanning> {
        let TableFactor::Table {
            name,
            alias,
            args: Some(args),
            ..
        } = &relation
        else {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        };
        let kind = match name.to_string().to_ascii_lowercase().as_str() {
            "tumble" => WindowKind::Tumble,
            "hop" => WindowKind::Hop,
            "session" => WindowKind::Session,
            _ => return Ok(RelationPlanning::Original(Box::new(relation))),
        };
        let usage = match kind {
            WindowKind::Tumble => "TUMBLE(relation, time_column, INTERVAL 'size')",
            WindowKind::Hop => "HOP(relation, time_column, INTERVAL 'slide', INTERVAL 'size')",
            WindowKind::Session => {
                "SESSION(relation, time_column, INTERVAL 'gap'[, key_column, ...])"
            }
        };
        let exprs: Vec<&ast::Expr> = args
            .args
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
                _ => plan_err!("{usage}: arguments are positional"),
            })
            .collect::<DfResult<_>>()?;
        let arity_ok = match kind {
            WindowKind::Tumble => exprs.len() == 3,
            WindowKind::Hop => exprs.len() == 4,
            WindowKind::Session => exprs.len() >= 3,
        };
        if !arity_ok {
            return plan_err!("{usage}: wrong number of arguments ({})", exprs.len());
        }
        let source_name = match exprs[0] {
            ast::Expr::Identifier(i) => ObjectName::from(vec![i.clone()]),
            ast::Expr::CompoundIdentifier(parts) => ObjectName::from(parts.clone()),
            other => {
                return plan_err!("{usage}: the first argument must name a relation, got {other}")
            }
        };
        let time_name = match exprs[1] {
            ast::Expr::Identifier(i) => context.normalize_ident(i.clone()),
            other => {
                return plan_err!("{usage}: the second argument must be a column, got {other}")
            }
        };
        let mut interval = |e: &ast::Expr, what: &str| -> DfResult<(Expr, i64)> {
            let expr = context.sql_to_expr(e.clone(), &DFSchema::empty())?;
            match interval_literal(&expr) {
                Some(us) if us > 0 => Ok((expr, us)),
                _ => plan_err!("{usage}: the {what} must be a positive fixed interval such as INTERVAL '1 minute', got {e}"),
            }
        };
        let (slide, size) = match kind {
            WindowKind::Tumble | WindowKind::Session => {
                let size = interval(
                    exprs[2],
                    if kind == WindowKind::Tumble {
                        "size"
                    } else {
                        "gap"
                    },
                )?;
                (size.clone(), size)
            }
            WindowKind::Hop => (interval(exprs[2], "slide")?, interval(exprs[3], "size")?),
        };
        let session_keys: Vec<String> = match kind {
            WindowKind::Session => exprs[3..]
                .iter()
                .map(|e| match e {
                    ast::Expr::Identifier(i) => Ok(context.normalize_ident(i.clone())),
                    other => plan_err!("{usage}: key arguments must be columns, got {other}"),
                })
                .collect::<DfResult<_>>()?,
            _ => Vec::new(),
        };

        let mut source = relation.clone();
        if let TableFactor::Table {
            name, args, alias, ..
        } = &mut source
        {
            *name = source_name.clone();
            *args = None;
            *alias = None;
        }
        // A CTE or a relation DataFusion resolved already; otherwise the catalog.
        let input = match context.plan(source) {
            Ok(plan) => plan,
            Err(err) => {
                let name = source_name.to_string();
                match (self.lookup)(&name) {
                    Some(table) => LogicalPlanBuilder::scan(name, table, None)?.build()?,
                    None => return Err(err),
                }
            }
        };
        let time_column = match input
            .schema()
            .qualified_field_with_unqualified_name(&time_name)
        {
            Ok((qualifier, field)) => {
                if !matches!(field.data_type(), DataType::Timestamp(_, _)) {
                    return plan_err!(
                        "{usage}: time column {time_name} must be a timestamp, not {}",
                        field.data_type()
                    );
                }
                Expr::Column(Column::new(qualifier.cloned(), field.name()))
            }
            Err(_) => {
                return plan_err!("{usage}: column {time_name} does not exist in {source_name}")
            }
        };
        for reserved in ["window_start", "window_end"] {
            if input.schema().has_column_with_unqualified_name(reserved) {
                return plan_err!("{usage}: {source_name} already has a column {reserved}");
            }
        }
        let plan = match kind {
            WindowKind::Session => {
                let keys = session_keys
                    .iter()
                    .map(
                        |k| match input.schema().qualified_field_with_unqualified_name(k) {
                            Ok((q, f)) => Ok(Expr::Column(Column::new(q.cloned(), f.name()))),
                            Err(_) => {
                                plan_err!("{usage}: column {k} does not exist in {source_name}")
                            }
                        },
                    )
                    .collect::<DfResult<Vec<_>>>()?;
                crate::session_window::SessionWindow::try_new(input, time_column, keys, size.1)?
                    .into_plan()
            }
            _ => window_plan(input, &time_column, slide, size)?,
        };
        let alias = alias.clone().or_else(|| {
            source_name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(|i| TableAlias {
                    explicit: false,
                    name: Ident::new(i.value.clone()),
                    columns: vec![],
                    at: None,
                })
        });
        Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(
            plan, alias,
        ))))
    }
}

pub(crate) fn interval_expr(micros: i64) -> Expr {
    lit(ScalarValue::IntervalMonthDayNano(Some(
        IntervalMonthDayNano::new(0, 0, micros * 1_000),
    )))
}

/// A shift of a timestamp of type `time_type` by `micros`: a duration of the same unit when
/// there is one (Arrow adds it as plain integers; an interval goes through calendar
/// arithmetic per row, a tenth of a HOP's cost), else an interval.
pub(crate) fn shift_expr(time_type: &DataType, micros: i64) -> Expr {
    use datafusion::arrow::datatypes::TimeUnit;
    match time_type {
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            lit(ScalarValue::DurationMicrosecond(Some(micros)))
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => match micros.checked_mul(1_000) {
            Some(nanos) => lit(ScalarValue::DurationNanosecond(Some(nanos))),
            None => interval_expr(micros),
        },
        _ => interval_expr(micros),
    }
}

/// The input's columns plus `window_start`/`window_end`: one projection per window a row
/// falls in (one for tumbling windows), unioned.
fn window_plan(
    input: LogicalPlan,
    time: &Expr,
    (_, slide): (Expr, i64),
    (_, size): (Expr, i64),
) -> DfResult<LogicalPlan> {
    // In the time column's own type and unit (date_bin's nanoseconds end in 2262).
    let time_type = time.get_type(input.schema())?;
    let latest_start = crate::epoch_bin::epoch_bin(slide, time.clone());
    let windows_per_row = (size + slide - 1) / slide;
    // One UNION ALL branch per window a row falls in: `HOP(..., '1 microsecond', '5
    // minutes')` would plan 300 million of them and never answer.
    if windows_per_row > MAX_HOP_WINDOWS_PER_ROW {
        return Err(DataFusionError::External(Box::new(RunnelError::plan(
            SqlState::PROGRAM_LIMIT_EXCEEDED,
            format!(
                "HOP places each row in {windows_per_row} windows (size / slide); at most \
                 {MAX_HOP_WINDOWS_PER_ROW} are supported: use a larger slide"
            ),
        ))));
    }
    let columns: Vec<Expr> = input
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    let input = Arc::new(input);
    let mut branches = Vec::with_capacity(windows_per_row as usize);
    for k in 0..windows_per_row {
        let start = match k {
            0 => latest_start.clone(),
            k => latest_start.clone() - shift_expr(&time_type, k * slide),
        };
        let end = start.clone() + shift_expr(&time_type, size);
        let mut builder = LogicalPlanBuilder::from(input.clone());
        if size % slide != 0 && k == windows_per_row - 1 {
            // The oldest candidate window may end before the row.
            builder = builder.filter(time.clone().lt(end.clone()))?;
        }
        let mut exprs = columns.clone();
        exprs.push(start.alias("window_start"));
        exprs.push(end.alias("window_end"));
        branches.push(builder.project(exprs)?.build()?);
    }
    let mut branches = branches.into_iter();
    let mut builder = LogicalPlanBuilder::from(branches.next().expect("at least one window"));
    for branch in branches {
        builder = builder.union(branch)?;
    }
    builder.build()
}
