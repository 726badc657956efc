//! `SESSION(relation, time_column, gap[, key, ...])` as a logical plan node of its own.
//!
//! Per key, rows less than `gap` apart share a session; each row gets its session's
//! `window_start` (first time) and `window_end` (last time plus `gap`). A row with a NULL time
//! is a session of its own with NULL bounds.
//!
//! A view lowers the node to the streaming session operator, which closes sessions on the
//! event-time clock. Ad-hoc queries run it as the equivalent chain of OVER windows
//! ([`SessionWindow::expand`]: `lag`, a running count of session starts, then `min`/`max` per
//! session), planned by [`SessionWindowPlanner`] inside [`RunnelQueryPlanner`], so both give
//! the same answer.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::Field;
use datafusion::common::{plan_err, Column, DFSchema, DFSchemaRef, Result as DfResult};
use datafusion::execution::context::{QueryPlanner, SessionState};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{
    lit, Expr, ExprSchemable, Extension, LogicalPlan, LogicalPlanBuilder, UserDefinedLogicalNode,
    UserDefinedLogicalNodeCore,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};

use crate::windows::interval_expr;

/// The SESSION window node: the input's columns plus `window_start` and `window_end`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionWindow {
    pub input: LogicalPlan,
    /// A timestamp column of the input.
    pub time: Expr,
    /// Sessions are per distinct value of these input columns.
    pub keys: Vec<Expr>,
    pub gap_micros: i64,
    schema: DFSchemaRef,
}

impl SessionWindow {
    pub fn try_new(
        input: LogicalPlan,
        time: Expr,
        keys: Vec<Expr>,
        gap_micros: i64,
    ) -> DfResult<Self> {
        if gap_micros <= 0 {
            return plan_err!("a session gap must be positive");
        }
        let time_type = time.get_type(input.schema())?;
        let mut fields: Vec<_> = input
            .schema()
            .iter()
            .map(|(q, f)| (q.cloned(), f.clone()))
            .collect();
        for name in ["window_start", "window_end"] {
            fields.push((None, Arc::new(Field::new(name, time_type.clone(), true))));
        }
        let schema = Arc::new(DFSchema::new_with_metadata(
            fields,
            input.schema().metadata().clone(),
        )?);
        Ok(SessionWindow {
            input,
            time,
            keys,
            gap_micros,
            schema,
        })
    }

    /// The node as a logical plan.
    pub fn into_plan(self) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(self),
        })
    }

    /// The same rows computed by OVER windows over `input` (batch execution).
    pub fn expand(&self, input: LogicalPlan) -> DfResult<LogicalPlan> {
        use datafusion::functions_aggregate::min_max::{max_udaf, min_udaf};
        use datafusion::functions_aggregate::sum::sum_udaf;
        use datafusion::functions_window::expr_fn::lag;
        use datafusion::logical_expr::expr::WindowFunction;
        use datafusion::logical_expr::{when, ExprFunctionExt};
        let gap = interval_expr(self.gap_micros);
        let time = &self.time;
        let keys = &self.keys;
        let over = |udaf: Arc<datafusion::logical_expr::AggregateUDF>, arg: Expr| -> Expr {
            Expr::from(WindowFunction::new(udaf, vec![arg]))
        };
        let column = |name: &str| Expr::Column(Column::from_name(name));
        let columns: Vec<Expr> = input
            .schema()
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        let order = vec![time.clone().sort(true, false)];
        let previous = lag(time.clone(), Some(1), None)
            .partition_by(keys.clone())
            .order_by(order.clone())
            .build()?
            .alias("__session_previous");
        let with_previous = LogicalPlanBuilder::from(input)
            .window(vec![previous])?
            .build()?;
        // NULL times sort last, so they never precede a row with a time.
        let starts = when(time.clone().is_null(), lit(1i64))
            .when(column("__session_previous").is_null(), lit(1i64))
            .when(
                time.clone()
                    .gt_eq(column("__session_previous") + gap.clone()),
                lit(1i64),
            )
            .otherwise(lit(0i64))?
            .alias("__session_starts");
        let mut exprs = columns.clone();
        exprs.push(starts);
        let flagged = LogicalPlanBuilder::from(with_previous)
            .project(exprs)?
            .build()?;
        let number = over(sum_udaf(), column("__session_starts"))
            .partition_by(keys.clone())
            .order_by(order)
            .build()?
            .alias("__session");
        let numbered = LogicalPlanBuilder::from(flagged)
            .window(vec![number])?
            .build()?;
        let mut session_keys = keys.clone();
        session_keys.push(column("__session"));
        let first = over(min_udaf(), time.clone())
            .partition_by(session_keys.clone())
            .build()?
            .alias("__session_first");
        let last = over(max_udaf(), time.clone())
            .partition_by(session_keys)
            .build()?
            .alias("__session_last");
        let bounded = LogicalPlanBuilder::from(numbered)
            .window(vec![first, last])?
            .build()?;
        let mut exprs = columns;
        exprs.push(column("__session_first").alias("window_start"));
        exprs.push((column("__session_last") + gap).alias("window_end"));
        LogicalPlanBuilder::from(bounded).project(exprs)?.build()
    }
}

impl PartialOrd for SessionWindow {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        // The schema follows from the rest.
        (&self.input, &self.time, &self.keys, self.gap_micros).partial_cmp(&(
            &other.input,
            &other.time,
            &other.keys,
            other.gap_micros,
        ))
    }
}

impl UserDefinedLogicalNodeCore for SessionWindow {
    fn name(&self) -> &str {
        "SessionWindow"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        std::iter::once(self.time.clone())
            .chain(self.keys.iter().cloned())
            .collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|k| k.to_string()).collect();
        write!(
            f,
            "SessionWindow: time={} gap={}us keys=[{}]",
            self.time,
            self.gap_micros,
            keys.join(", ")
        )
    }

    fn with_exprs_and_inputs(
        &self,
        mut exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> DfResult<Self> {
        if exprs.is_empty() || inputs.len() != 1 {
            return plan_err!("SessionWindow takes one input and at least a time expression");
        }
        let time = exprs.remove(0);
        SessionWindow::try_new(inputs.remove(0), time, exprs, self.gap_micros)
    }
}

/// Plans [`SessionWindow`] nodes for batch execution as their OVER-window expansion.
#[derive(Debug, Default)]
pub struct SessionWindowPlanner;

#[async_trait]
impl ExtensionPlanner for SessionWindowPlanner {
    async fn plan_extension(
        &self,
        planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        logical_inputs: &[&LogicalPlan],
        _physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn datafusion::catalog::Session,
        _planning_ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let Some(session_window) = node.as_any().downcast_ref::<SessionWindow>() else {
            return Ok(None);
        };
        let expanded = session_window.expand(logical_inputs[0].clone())?;
        Ok(Some(
            planner.create_physical_plan(&expanded, session).await?,
        ))
    }
}

/// DataFusion's query planner plus Runnel's logical nodes.
#[derive(Debug, Default)]
pub struct RunnelQueryPlanner;

#[async_trait]
impl QueryPlanner for RunnelQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn datafusion::catalog::Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(SessionWindowPlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

/// `state` with [`RunnelQueryPlanner`].
pub fn with_runnel_planner(state: SessionState) -> SessionState {
    SessionStateBuilder::new_from_existing(state)
        .with_query_planner(Arc::new(RunnelQueryPlanner))
        .build()
}
