//! Instantiates the operators of a stream plan: compiles each node's expressions against its
//! input schema and gives every stateful operator its own key prefix in the store.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::logical_expr::ExprSchemable;
use runnel_common::change::nullable_schema;
use runnel_common::{Result, RunnelError};
use runnel_plan::{NodeKind, ObjectId, PlanNode, StreamPlan};
use runnel_state::codec::check_supported;
use runnel_state::vnode::{vnode_of, VnodeSet};
use runnel_state::{keys, KeyedState, SharedBudget, Store, TimeIndex};

use crate::exchange;
use crate::expr::{compile, compile_all};
use crate::operator::Operator;
use crate::operators::aggregate::{AggregateSlot, GroupClosing};
use crate::operators::asof_join::AsofSide;
use crate::operators::join::Expiry;
use crate::operators::materialize::ViewOutput;
use crate::operators::window::OrderColumn;
use crate::operators::{
    AggregateOp, AsofJoinOp, FilterOp, JoinOp, MaterializeOp, ProjectOp, RelabelOp,
    SessionWindowOp, TemporalFilterOp, WindowOp,
};
use crate::view_rows::ViewLayout;

/// The clock's lag on `expr` when it is a column of `node`'s input on `port` that the clock
/// bounds.
fn input_column_lag(
    plan: &StreamPlan,
    node: &PlanNode,
    port: usize,
    expr: &datafusion::logical_expr::Expr,
    schema: &DFSchema,
) -> Option<i64> {
    let datafusion::logical_expr::Expr::Column(c) = expr else {
        return None;
    };
    let input = &plan.nodes[*node.inputs.get(port)?];
    input.event_time.lag_of(schema.index_of_column(c).ok()?)
}

/// The Arrow schema a node's batches carry: DataFusion's field names, every field nullable.
pub fn node_arrow_schema(schema: &DFSchema) -> SchemaRef {
    nullable_schema(schema.as_arrow())
}

/// A join side's expiry rule compiled against that side's input.
fn expiry_of(
    rule: &Option<(datafusion::logical_expr::Expr, i64)>,
    schema: &DFSchema,
    by_time: impl FnOnce() -> Result<TimeIndex>,
) -> Result<Option<Expiry>> {
    rule.as_ref()
        .map(|(time, lag)| Ok(Expiry::new(compile(time, schema)?, *lag, by_time()?)))
        .transpose()
}

/// Where the operators of one worker are built.
pub struct BuildContext {
    pub store: Arc<Store>,
    /// The memory of every operator's state cache together.
    pub budget: SharedBudget,
    /// The vnodes the worker owns: the keys its operators hold, what their time indexes read.
    pub vnodes: VnodeSet,
    /// The worker and the number of workers.
    pub shard: (usize, usize),
    /// What the replicas of the view's materialize step share (`None`: build none).
    pub view_output: Option<Arc<ViewOutput>>,
}

/// Builds the operator for one node of `view`'s plan.
pub fn build_operator(
    context: &BuildContext,
    view: ObjectId,
    plan: &StreamPlan,
    node: &PlanNode,
    output_schema: SchemaRef,
) -> Result<Box<dyn Operator>> {
    let store = &context.store;
    let budget = &context.budget;
    let vnodes = &context.vnodes;
    let prefix = keys::operator_prefix(view, node.id as u32);
    let input_schema = |port: usize| -> Result<&DFSchema> {
        node.input_schemas
            .get(port)
            .map(|s| s.as_ref())
            .ok_or_else(|| RunnelError::internal("plan node lacks an input schema"))
    };
    Ok(match &node.kind {
        NodeKind::Source { .. } | NodeKind::Union => Box::new(RelabelOp::new(output_schema)),
        NodeKind::Project { exprs } => Box::new(ProjectOp::new(
            compile_all(exprs, input_schema(0)?)?,
            output_schema,
        )),
        NodeKind::Filter { predicate } => {
            Box::new(FilterOp::new(compile(predicate, input_schema(0)?)?))
        }
        NodeKind::TemporalFilter {
            time,
            offset_micros,
            bound,
        } => Box::new(TemporalFilterOp::new(
            TimeIndex::open(store.clone(), prefix, budget.clone())?.owning(vnodes),
            *vnodes,
            compile(time, input_schema(0)?)?,
            *offset_micros,
            *bound,
            output_schema,
        )?),
        NodeKind::Aggregate {
            group_exprs,
            aggregates,
            emit_on_close,
        } => {
            let schema = input_schema(0)?;
            for field in output_schema.fields().iter().take(group_exprs.len()) {
                check_supported(field.data_type())?;
            }
            let input_append_only = node
                .inputs
                .first()
                .map(|&i| plan.nodes[i].append_only)
                .unwrap_or(false);
            let slots = aggregates
                .iter()
                .map(|call| {
                    let arg_type = match &call.arg {
                        Some(e) => Some(e.get_type(schema)?),
                        None => None,
                    };
                    AggregateSlot::new(
                        call,
                        call.arg.as_ref().map(|e| compile(e, schema)).transpose()?,
                        call.filter
                            .as_ref()
                            .map(|e| compile(e, schema))
                            .transpose()?,
                        arg_type.as_ref(),
                        input_append_only,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            // Groups close on the first time-bounded group column (window_start and
            // window_end close together).
            let closing = node
                .event_time
                .bounds
                .iter()
                .find(|b| b.column < group_exprs.len())
                .map(|b| GroupClosing {
                    column: b.column,
                    lag_micros: b.lag_micros,
                    emit_on_close: *emit_on_close,
                });
            // Groups under `prefix ‖ 0`, the open windows' time index under `prefix ‖ 1`.
            let sub = |tag: u8| runnel_state::keys::sub_table(&prefix, tag);
            let closing = match closing {
                Some(closing) => Some((
                    closing,
                    TimeIndex::open(store.clone(), sub(1), budget.clone())?.owning(vnodes),
                )),
                None => None,
            };
            // A global aggregate's one group is pinned by every replica (only its owner's
            // ever changes).
            let groups_vnodes = match group_exprs.is_empty() {
                true => VnodeSet::all(),
                false => *vnodes,
            };
            Box::new(
                AggregateOp::new(
                    KeyedState::open(store.clone(), sub(0), budget.clone())?.owning(&groups_vnodes),
                    compile_all(group_exprs, schema)?,
                    slots,
                    output_schema,
                    closing,
                )?
                // A global aggregate's one group (key: nothing) is on one worker.
                .owning_global(vnodes.contains(vnode_of(&[])))
                .consolidating(exchange::groups_are_whole_rows(group_exprs, schema)),
            )
        }
        NodeKind::Join {
            join_type,
            left_keys,
            right_keys,
            filter,
            expire,
        } => {
            let left = input_schema(0)?;
            let right = input_schema(1)?;
            let key_types = left_keys
                .iter()
                .zip(right_keys)
                .map(|(l, r)| {
                    let lt = l.get_type(left)?;
                    let rt = r.get_type(right)?;
                    let t = if lt == rt {
                        lt
                    } else {
                        datafusion::logical_expr::type_coercion::binary::comparison_coercion(
                            &lt, &rt,
                        )
                        .ok_or_else(|| {
                            RunnelError::not_implemented(format!(
                                "join keys of types {lt} and {rt}"
                            ))
                        })?
                    };
                    check_supported(&t)?;
                    Ok(t)
                })
                .collect::<Result<Vec<DataType>>>()?;
            let types = |s: &DFSchema| -> Vec<DataType> {
                s.fields().iter().map(|f| f.data_type().clone()).collect()
            };
            for t in types(left).iter().chain(types(right).iter()) {
                check_supported(t)?;
            }
            let filter = match filter {
                Some(f) => Some(compile(f, &node.schema)?),
                None => None,
            };
            // Each side's rows under `prefix ‖ side`, its expiry index under
            // `prefix ‖ 2 + side`.
            let sub = |tag: u8| runnel_state::keys::sub_table(&prefix, tag);
            let side_state = |side: u8| {
                KeyedState::open(store.clone(), sub(side), budget.clone()).map(|s| s.owning(vnodes))
            };
            let side_index = |side: u8| {
                move || {
                    TimeIndex::open(store.clone(), sub(2 + side), budget.clone())
                        .map(|t| t.owning(vnodes))
                }
            };
            Box::new(JoinOp::new(
                [side_state(0)?, side_state(1)?],
                *join_type,
                compile_all(left_keys, left)?,
                compile_all(right_keys, right)?,
                key_types,
                types(left),
                types(right),
                filter,
                output_schema,
                [
                    expiry_of(&expire[0], left, side_index(0))?,
                    expiry_of(&expire[1], right, side_index(1))?,
                ],
            )?)
        }
        NodeKind::Window {
            window_exprs,
            partition_by,
            order_by,
            reach,
            rank_limit,
        } => {
            use datafusion::logical_expr::execution_props::ExecutionProps;
            use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
            let schema = input_schema(0)?;
            let order = order_by
                .iter()
                .map(|s| {
                    Ok(OrderColumn {
                        expr: compile(&s.expr, schema)?,
                        options: datafusion::arrow::compute::SortOptions {
                            descending: !s.asc,
                            nulls_first: s.nulls_first,
                        },
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let windows = window_exprs
                .iter()
                .map(|e| {
                    Ok(datafusion::physical_planner::create_window_expr(
                        e,
                        schema,
                        &ExecutionProps::new(),
                        &PhysicalPlanningContext::default(),
                    )?)
                })
                .collect::<Result<Vec<_>>>()?;
            let range_type = match reach {
                runnel_plan::WindowReach::RangeMicros(r) if *r > 0 => {
                    let sort = &order_by[0];
                    let t = sort.expr.get_type(schema)?;
                    if !matches!(t, DataType::Timestamp(_, _)) || !sort.asc {
                        return Err(RunnelError::not_implemented(
                            "RANGE frames with an INTERVAL need one ascending timestamp ORDER BY column",
                        ));
                    }
                    Some(t)
                }
                _ => None,
            };
            let order_lag = order_by
                .first()
                .and_then(|s| input_column_lag(plan, node, 0, &s.expr, schema));
            Box::new(WindowOp::new(
                store,
                budget,
                vnodes,
                prefix,
                compile_all(partition_by, schema)?,
                order,
                windows,
                *reach,
                *rank_limit,
                node_arrow_schema(schema),
                output_schema,
                range_type,
                order_lag,
            )?)
        }
        NodeKind::SessionWindow {
            time,
            keys: session_keys,
            gap_micros,
        } => {
            let schema = input_schema(0)?;
            let time_type = time.get_type(schema)?;
            if !matches!(time_type, DataType::Timestamp(_, _)) {
                return Err(RunnelError::not_implemented(format!(
                    "SESSION windows over a time column of type {time_type}"
                )));
            }
            let time_lag = input_column_lag(plan, node, 0, time, schema);
            Box::new(SessionWindowOp::new(
                store,
                budget,
                vnodes,
                prefix,
                compile(time, schema)?,
                time_type,
                compile_all(session_keys, schema)?,
                *gap_micros,
                time_lag,
                node_arrow_schema(schema),
                output_schema,
            )?)
        }
        NodeKind::AsofJoin {
            left_keys,
            right_keys,
            left_time,
            right_time,
            strict,
        } => {
            let side = |keys: &[datafusion::logical_expr::Expr],
                        time: &datafusion::logical_expr::Expr,
                        schema: &DFSchema|
             -> Result<AsofSide> {
                let t = time.get_type(schema)?;
                if !matches!(t, DataType::Timestamp(_, _)) {
                    return Err(RunnelError::not_implemented(format!(
                        "ASOF JOIN's MATCH_CONDITION compares timestamps, not {t}"
                    )));
                }
                Ok(AsofSide {
                    keys: compile_all(keys, schema)?,
                    time: compile(time, schema)?,
                    types: schema
                        .fields()
                        .iter()
                        .map(|f| f.data_type().clone())
                        .collect(),
                })
            };
            let left = side(left_keys, left_time, input_schema(0)?)?;
            let right = side(right_keys, right_time, input_schema(1)?)?;
            // The clock frees state when both sides only insert and it bounds both times.
            let append_only = node.inputs.iter().all(|&i| plan.nodes[i].append_only);
            let lags = (
                input_column_lag(plan, node, 0, left_time, input_schema(0)?),
                input_column_lag(plan, node, 1, right_time, input_schema(1)?),
            );
            let frontier_lag = match lags {
                (Some(l), Some(r)) if append_only => Some(l.max(r)),
                _ => None,
            };
            Box::new(AsofJoinOp::new(
                store,
                budget,
                vnodes,
                prefix,
                left,
                right,
                *strict,
                output_schema,
                frontier_lag,
            )?)
        }
        NodeKind::Materialize { key, appended, .. } => {
            for field in output_schema.fields() {
                check_supported(field.data_type())?;
            }
            let output = context
                .view_output
                .clone()
                .ok_or_else(|| RunnelError::internal("a view built without its output"))?;
            let layout = ViewLayout::new(key.as_deref(), *appended, output_schema.fields().len());
            Box::new(MaterializeOp::new(
                store.clone(),
                keys::view_prefix(view),
                output_schema,
                layout,
                budget.clone(),
                output,
                context.shard,
            )?)
        }
    })
}
