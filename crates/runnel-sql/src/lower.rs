//! Lowering: a DataFusion `LogicalPlan` (analysed and optimised) becomes a [`StreamPlan`], the
//! operator graph the runtime maintains incrementally. Every construct without an incremental
//! operator is refused here with a message that names it.

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, DFSchemaRef, NullEquality};
use datafusion::logical_expr::utils::{conjunction, split_conjunction, split_conjunction_owned};
use datafusion::logical_expr::{
    expr::AggregateFunction as DfAggregate, Distinct, Expr, JoinType as DfJoinType, LogicalPlan,
    Volatility,
};
use runnel_common::{Result, RunnelError, SqlState};
use runnel_plan::{
    AggregateCall, AggregateFunction, EventTime, JoinType, NodeKind, ObjectId, PlanNode,
    RelationKind, StreamPlan, TemporalBound, WindowReach,
};

use crate::asof::asof_condition;
use crate::event_time::derive_event_time;
use crate::temporal::{
    expand_between, is_event_time_now, mentions_event_time_now, temporal_conjunct,
};

/// What the lowering needs to know about a relation a view reads.
#[derive(Debug, Clone)]
pub struct RelationInfo {
    pub id: ObjectId,
    pub kind: RelationKind,
    /// A stream's watermark column (bound with lag 0), or a view's output bounds.
    pub event_time: EventTime,
}

/// Finds a relation by name for the lowering.
pub trait RelationResolver {
    fn resolve_relation(&self, name: &str) -> Result<RelationInfo>;
}

/// Refuses, before optimisation folds them into constants, functions whose value depends on
/// when they run (`now()`, `random()`, ...) anywhere in a view's plan.
pub fn check_view_plan(plan: &LogicalPlan) -> Result<()> {
    let mut result = Ok(());
    plan.apply(|node| {
        node.apply_expressions(|e| {
            // The lowering decides where the event-time now() may appear.
            result = match mentions_event_time_now(e) || crate::asof::mentions_asof(e) {
                true => Ok(()),
                false => check_expr(e),
            };
            Ok(if result.is_err() {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Continue
            })
        })?;
        Ok(if result.is_err() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    result
}

/// Lowers `plan` into a stream plan whose last node materializes `view`.
/// With `emit_on_window_close`, the aggregate nearest the output emits each group once, when
/// its window closes.
pub fn lower_view(
    plan: &LogicalPlan,
    view: ObjectId,
    resolver: &dyn RelationResolver,
    emit_on_window_close: bool,
) -> Result<StreamPlan> {
    let mut lowering = Lowering {
        nodes: Vec::new(),
        resolver,
    };
    let output = lowering.lower(plan)?;
    if emit_on_window_close {
        lowering.emit_on_window_close(output)?;
    }
    let schema = plan.schema().clone();
    let append_only = lowering.nodes[output].append_only;
    lowering.push(
        NodeKind::Materialize {
            view,
            key: None,
            appended: false,
        },
        vec![output],
        vec![schema.clone()],
        schema,
        append_only,
    );
    // Subplans the query states twice (a CTE or subquery named twice) are computed once.
    let (nodes, new_id, shared_nodes) = crate::share::share_equal_nodes(lowering.nodes);
    let mut plan = StreamPlan {
        nodes,
        shared_nodes,
    };
    let key = plan.unique_key(new_id[output]);
    // Rows that are never retracted are stored as appended blocks, not one entry per row.
    plan.set_view_appended(key.is_none() && append_only);
    plan.set_view_key(key);
    Ok(plan)
}

struct Lowering<'a> {
    nodes: Vec<PlanNode>,
    resolver: &'a dyn RelationResolver,
}

impl Lowering<'_> {
    fn push(
        &mut self,
        kind: NodeKind,
        inputs: Vec<usize>,
        input_schemas: Vec<DFSchemaRef>,
        schema: DFSchemaRef,
        append_only: bool,
    ) -> usize {
        let id = self.nodes.len();
        let input_times: Vec<&EventTime> =
            inputs.iter().map(|&i| &self.nodes[i].event_time).collect();
        let event_time = derive_event_time(&kind, &input_times, &input_schemas);
        self.nodes.push(PlanNode {
            id,
            kind,
            inputs,
            input_schemas,
            schema,
            append_only,
            event_time,
        });
        id
    }

    /// Makes the aggregate that `output` reads (through filters and projections) emit each
    /// group once, final, when the clock closes it. Its output is then append-only.
    fn emit_on_window_close(&mut self, output: usize) -> Result<()> {
        let refuse = |why: &str| {
            Err(RunnelError::plan(
                SqlState::INVALID_PARAMETER_VALUE,
                format!("EMIT ON WINDOW CLOSE {why}"),
            ))
        };
        let mut node = output;
        let mut path = vec![node];
        loop {
            match &self.nodes[node].kind {
                NodeKind::Project { .. } | NodeKind::Filter { .. } => {
                    node = self.nodes[node].inputs[0];
                    path.push(node);
                }
                NodeKind::Aggregate { group_exprs, .. } => {
                    let windowed = self.nodes[node]
                        .event_time
                        .bounds
                        .iter()
                        .any(|b| b.column < group_exprs.len());
                    if !windowed {
                        return refuse("needs GROUP BY a window column (window_start or window_end of TUMBLE/HOP over a stream with a WATERMARK, or the watermark column itself)");
                    }
                    break;
                }
                _ => return refuse("applies to a view whose result is a GROUP BY over windows (optionally filtered or projected)"),
            }
        }
        if let NodeKind::Aggregate { emit_on_close, .. } = &mut self.nodes[node].kind {
            *emit_on_close = true;
        }
        for &n in path.iter().rev() {
            let input_append_only = match n == node {
                true => true,
                false => self.nodes[self.nodes[n].inputs[0]].append_only,
            };
            self.nodes[n].append_only = input_append_only;
        }
        Ok(())
    }

    /// ASOF JOIN (rewritten by [`crate::asof`] into a left join whose filter is the marked
    /// match condition).
    fn lower_asof_join(&mut self, join: &datafusion::logical_expr::Join) -> Result<usize> {
        use datafusion::logical_expr::{BinaryExpr, Operator};
        let filter = join.filter.as_ref().expect("checked by the caller");
        let conjuncts = split_conjunction(filter);
        let [only] = conjuncts.as_slice() else {
            return Err(RunnelError::not_implemented(
                "ASOF JOIN with conditions besides the equality keys and MATCH_CONDITION in a materialized view",
            ));
        };
        let condition = asof_condition(only)
            .ok_or_else(|| RunnelError::internal("ASOF marker missing from the join filter"))?;
        let shape = || {
            RunnelError::plan(
                SqlState::SYNTAX_ERROR,
                format!("ASOF JOIN's MATCH_CONDITION must compare a left time with a right time using >= or > (left first), got {condition}"),
            )
        };
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = condition else {
            return Err(shape());
        };
        let refers_to = |e: &Expr, schema: &DFSchemaRef| {
            e.column_refs().iter().all(|c| schema.has_column(c)) && !e.column_refs().is_empty()
        };
        let (left_schema, right_schema) = (join.left.schema(), join.right.schema());
        let (left_time, right_time, strict) =
            if refers_to(left, left_schema) && refers_to(right, right_schema) {
                match op {
                    Operator::GtEq => (left.as_ref(), right.as_ref(), false),
                    Operator::Gt => (left.as_ref(), right.as_ref(), true),
                    _ => return Err(shape()),
                }
            } else if refers_to(left, right_schema) && refers_to(right, left_schema) {
                match op {
                    Operator::LtEq => (right.as_ref(), left.as_ref(), false),
                    Operator::Lt => (right.as_ref(), left.as_ref(), true),
                    _ => return Err(shape()),
                }
            } else {
                return Err(shape());
            };
        if join.on.is_empty() {
            return Err(RunnelError::not_implemented(
                "ASOF JOIN without equality keys in ON in a materialized view",
            ));
        }
        let (left_keys, right_keys): (Vec<Expr>, Vec<Expr>) = join.on.iter().cloned().unzip();
        for e in left_keys
            .iter()
            .chain(&right_keys)
            .chain([left_time, right_time])
        {
            check_expr(e)?;
        }
        let left_node = self.lower(&join.left)?;
        let right_node = self.lower(&join.right)?;
        Ok(self.push(
            NodeKind::AsofJoin {
                left_keys,
                right_keys,
                left_time: left_time.clone(),
                right_time: right_time.clone(),
                strict,
            },
            vec![left_node, right_node],
            vec![left_schema.clone(), right_schema.clone()],
            join.schema.clone(),
            false,
        ))
    }

    /// A semi join (the optimiser's form of joining a subquery whose rows are unique on the
    /// join keys, or of `IN`/`EXISTS`) whose right side is unique on its join keys: then
    /// each left row matches at most one right row and the semi join is the inner join
    /// projected to the left columns.
    fn lower_semi_join(&mut self, join: &datafusion::logical_expr::Join) -> Result<usize> {
        if join.null_equality == NullEquality::NullEqualsNull || join.on.is_empty() {
            return Err(RunnelError::not_implemented(
                "this IN/EXISTS subquery (a semi join without equality keys) in a materialized view",
            ));
        }
        let (left_keys, right_keys): (Vec<Expr>, Vec<Expr>) = join.on.iter().cloned().unzip();
        for e in left_keys.iter().chain(&right_keys).chain(&join.filter) {
            check_expr(e)?;
        }
        let left = self.lower(&join.left)?;
        let right = self.lower(&join.right)?;
        let right_schema = join.right.schema();
        let key_columns: Option<Vec<usize>> = right_keys
            .iter()
            .map(|e| match e {
                Expr::Column(c) => right_schema.index_of_column(c).ok(),
                _ => None,
            })
            .collect();
        let unique = runnel_plan::unique_key(&self.nodes, right);
        let covered = match (&key_columns, &unique) {
            (Some(keys), Some(unique)) => unique.iter().all(|u| keys.contains(u)),
            _ => false,
        };
        if !covered {
            return Err(RunnelError::not_implemented(
                "IN/EXISTS subqueries in a materialized view (unless the subquery's rows are unique on the matched columns, e.g. it GROUPs BY them)",
            ));
        }
        let joined_schema = Arc::new(join.left.schema().join(right_schema)?);
        let append_only = self.append_only(left) && self.append_only(right);
        let joined = self.push(
            NodeKind::Join {
                join_type: JoinType::Inner,
                left_keys,
                right_keys,
                filter: join.filter.clone(),
                expire: [None, None],
            },
            vec![left, right],
            vec![join.left.schema().clone(), right_schema.clone()],
            joined_schema.clone(),
            append_only,
        );
        let exprs = join
            .left
            .schema()
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        Ok(self.push(
            NodeKind::Project { exprs },
            vec![joined],
            vec![joined_schema],
            join.schema.clone(),
            append_only,
        ))
    }

    /// `rank_column <= n` (or `< n`, `= 1`) over a ranking window function: only the first
    /// rows of each partition matter, so the window node need not compute the rest.
    fn limit_ranking(&mut self, node: usize, schema: &DFSchemaRef, conjunct: &Expr) {
        let Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr { left, op, right }) = conjunct
        else {
            return;
        };
        let (Expr::Column(c), Expr::Literal(value, _)) = (left.as_ref(), right.as_ref()) else {
            return;
        };
        let Some(n) = value
            .cast_to(&datafusion::arrow::datatypes::DataType::Int64)
            .ok()
            .and_then(|v| match v {
                datafusion::common::ScalarValue::Int64(Some(n)) => Some(n),
                _ => None,
            })
        else {
            return;
        };
        let limit = match op {
            datafusion::logical_expr::Operator::LtEq => n,
            // `rn < i64::MIN` keeps nothing; no limit is pushed for it.
            datafusion::logical_expr::Operator::Lt => match n.checked_sub(1) {
                Some(limit) => limit,
                None => return,
            },
            datafusion::logical_expr::Operator::Eq if n == 1 => 1,
            _ => return,
        };
        let Ok(mut column) = schema.index_of_column(c) else {
            return;
        };
        // Follow the column down through projections and filters to the window node.
        let mut at = node;
        loop {
            let n = &self.nodes[at];
            match &n.kind {
                NodeKind::Filter { .. } | NodeKind::TemporalFilter { .. } => at = n.inputs[0],
                NodeKind::Project { exprs } => {
                    let mut e = &exprs[column];
                    while let Expr::Alias(a) = e {
                        e = &a.expr;
                    }
                    let Expr::Column(inner) = e else { return };
                    let Ok(i) = n.input_schemas[0].index_of_column(inner) else {
                        return;
                    };
                    column = i;
                    at = n.inputs[0];
                }
                NodeKind::Window { window_exprs, .. } => {
                    let inputs = n.input_schemas[0].fields().len();
                    let Some(expr) = column.checked_sub(inputs).and_then(|i| window_exprs.get(i))
                    else {
                        return;
                    };
                    if !is_ranking(expr) || limit < 1 {
                        return;
                    }
                    if let NodeKind::Window { rank_limit, .. } = &mut self.nodes[at].kind {
                        let limit = limit as u64;
                        *rank_limit = Some(rank_limit.map_or(limit, |l| l.min(limit)));
                    }
                    return;
                }
                _ => return,
            }
        }
    }

    fn append_only(&self, node: usize) -> bool {
        self.nodes[node].append_only
    }

    fn lower(&mut self, plan: &LogicalPlan) -> Result<usize> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                if !scan.filters.is_empty() || scan.fetch.is_some() {
                    return Err(RunnelError::internal(
                        "a table scan with pushed-down filters or limit reached the lowering",
                    ));
                }
                let name = scan.table_name.table().to_string();
                let info = self.resolver.resolve_relation(&name)?;
                let (relation, relation_kind) = (info.id, info.kind);
                let full = Arc::new(DFSchema::try_from_qualified_schema(
                    scan.table_name.clone(),
                    &scan.source.schema(),
                )?);
                let source = self.push(
                    NodeKind::Source {
                        relation,
                        relation_kind,
                        name,
                    },
                    vec![],
                    vec![],
                    full.clone(),
                    relation_kind == RelationKind::Stream,
                );
                self.nodes[source].event_time = info.event_time;
                match &scan.projection {
                    None => Ok(source),
                    Some(indices) => {
                        let exprs = indices
                            .iter()
                            .map(|&i| {
                                let (qualifier, field) = full.qualified_field(i);
                                Expr::Column(Column::new(qualifier.cloned(), field.name()))
                            })
                            .collect();
                        let append_only = self.append_only(source);
                        Ok(self.push(
                            NodeKind::Project { exprs },
                            vec![source],
                            vec![full],
                            scan.projected_schema.clone(),
                            append_only,
                        ))
                    }
                }
            }
            LogicalPlan::Projection(projection) => {
                for expr in &projection.expr {
                    check_expr(expr)?;
                }
                let input = self.lower(&projection.input)?;
                let append_only = self.append_only(input);
                Ok(self.push(
                    NodeKind::Project {
                        exprs: projection.expr.clone(),
                    },
                    vec![input],
                    vec![projection.input.schema().clone()],
                    projection.schema.clone(),
                    append_only,
                ))
            }
            LogicalPlan::Filter(filter) => {
                // Conjuncts over the event-time clock become temporal filters after the rest.
                let (temporal, plain): (Vec<Expr>, Vec<Expr>) =
                    split_conjunction_owned(filter.predicate.clone())
                        .into_iter()
                        .flat_map(expand_between)
                        .partition(mentions_event_time_now);
                let conditions = temporal
                    .iter()
                    .map(|c| {
                        temporal_conjunct(c).ok_or_else(|| {
                            RunnelError::not_implemented(format!(
                                "the condition {c} in a materialized view: NOW() is supported in WHERE conditions of the form time_column > NOW() - INTERVAL '...' (or <, >=, <=, BETWEEN)"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                for c in &plain {
                    check_expr(c)?;
                }
                for c in &conditions {
                    check_expr(&c.time)?;
                }
                let schema = filter.input.schema().clone();
                let mut node = self.lower(&filter.input)?;
                for c in &plain {
                    self.limit_ranking(node, &schema, c);
                }
                if let Some(predicate) = conjunction(plain) {
                    let append_only = self.append_only(node);
                    node = self.push(
                        NodeKind::Filter { predicate },
                        vec![node],
                        vec![schema.clone()],
                        schema.clone(),
                        append_only,
                    );
                }
                for c in conditions {
                    if !self.nodes[node].event_time.timed {
                        return Err(RunnelError::plan(
                            SqlState::INVALID_PARAMETER_VALUE,
                            "NOW() in a materialized view is the event-time clock, and no stream this view reads has a WATERMARK (declare one in CREATE STREAM: WATERMARK FOR ts AS ts - INTERVAL '5 seconds')",
                        ));
                    }
                    let append_only = c.bound == TemporalBound::From && self.append_only(node);
                    node = self.push(
                        NodeKind::TemporalFilter {
                            time: c.time,
                            offset_micros: c.offset_micros,
                            bound: c.bound,
                        },
                        vec![node],
                        vec![schema.clone()],
                        schema.clone(),
                        append_only,
                    );
                }
                Ok(node)
            }
            LogicalPlan::Aggregate(aggregate) => {
                for expr in &aggregate.group_expr {
                    if matches!(expr, Expr::GroupingSet(_)) {
                        return Err(RunnelError::not_implemented(
                            "GROUPING SETS / ROLLUP / CUBE in a materialized view",
                        ));
                    }
                    check_expr(expr)?;
                }
                let group_count = aggregate.group_expr.len();
                let aggregates = aggregate
                    .aggr_expr
                    .iter()
                    .enumerate()
                    .map(|(i, expr)| {
                        let output_type =
                            aggregate.schema.field(group_count + i).data_type().clone();
                        aggregate_call(expr, output_type)
                    })
                    .collect::<Result<Vec<_>>>()?;
                let input = self.lower(&aggregate.input)?;
                Ok(self.push(
                    NodeKind::Aggregate {
                        group_exprs: aggregate.group_expr.clone(),
                        aggregates,
                        emit_on_close: false,
                    },
                    vec![input],
                    vec![aggregate.input.schema().clone()],
                    aggregate.schema.clone(),
                    false,
                ))
            }
            LogicalPlan::Distinct(Distinct::All(input)) => {
                let schema = input.schema().clone();
                let group_exprs = schema.columns().into_iter().map(Expr::Column).collect();
                let input_node = self.lower(input)?;
                Ok(self.push(
                    NodeKind::Aggregate {
                        group_exprs,
                        aggregates: vec![],
                        emit_on_close: false,
                    },
                    vec![input_node],
                    vec![schema.clone()],
                    schema,
                    false,
                ))
            }
            LogicalPlan::Distinct(Distinct::On(_)) => Err(RunnelError::not_implemented(
                "DISTINCT ON in a materialized view",
            )),
            LogicalPlan::Join(join) if join.join_type == DfJoinType::LeftSemi => {
                self.lower_semi_join(join)
            }
            LogicalPlan::Join(join)
                if join.join_type == DfJoinType::Left
                    && join.filter.as_ref().is_some_and(|f| {
                        split_conjunction(f)
                            .iter()
                            .any(|c| asof_condition(c).is_some())
                    }) =>
            {
                self.lower_asof_join(join)
            }
            LogicalPlan::Join(join) => {
                let join_type = match join.join_type {
                    DfJoinType::Inner => JoinType::Inner,
                    DfJoinType::Left => JoinType::Left,
                    DfJoinType::Right => {
                        return Err(RunnelError::not_implemented(
                            "RIGHT JOIN in a materialized view (write it as a LEFT JOIN)",
                        ))
                    }
                    DfJoinType::Full => {
                        return Err(RunnelError::not_implemented(
                            "FULL OUTER JOIN in a materialized view",
                        ))
                    }
                    other => {
                        return Err(RunnelError::not_implemented(format!(
                            "{other} join (IN/EXISTS subqueries) in a materialized view"
                        )))
                    }
                };
                if join.null_equality == NullEquality::NullEqualsNull {
                    return Err(RunnelError::not_implemented(
                        "joins where NULL keys match (INTERSECT/EXCEPT) in a materialized view",
                    ));
                }
                if join.on.is_empty() {
                    return Err(RunnelError::not_implemented(
                        "joins without an equality condition (cross joins) in a materialized view",
                    ));
                }
                if join_type == JoinType::Left && join.filter.is_some() {
                    return Err(RunnelError::not_implemented(
                        "LEFT JOIN with a non-equality condition in ON in a materialized view",
                    ));
                }
                let (left_keys, right_keys): (Vec<Expr>, Vec<Expr>) =
                    join.on.iter().cloned().unzip();
                for e in left_keys.iter().chain(&right_keys).chain(&join.filter) {
                    check_expr(e)?;
                }
                let left = self.lower(&join.left)?;
                let right = self.lower(&join.right)?;
                let append_only = join_type == JoinType::Inner
                    && self.append_only(left)
                    && self.append_only(right);
                let expire = match (join_type, &join.filter) {
                    (JoinType::Inner, Some(filter)) => interval_join_expiry(
                        filter,
                        join.left.schema(),
                        join.right.schema(),
                        [&self.nodes[left].event_time, &self.nodes[right].event_time],
                    ),
                    _ => [None, None],
                };
                Ok(self.push(
                    NodeKind::Join {
                        join_type,
                        left_keys,
                        right_keys,
                        filter: join.filter.clone(),
                        expire,
                    },
                    vec![left, right],
                    vec![join.left.schema().clone(), join.right.schema().clone()],
                    join.schema.clone(),
                    append_only,
                ))
            }
            LogicalPlan::Union(union) => {
                let mut inputs = Vec::new();
                for input in &union.inputs {
                    inputs.push(self.lower(input)?);
                }
                let append_only = inputs.iter().all(|&i| self.append_only(i));
                Ok(self.push(
                    NodeKind::Union,
                    inputs,
                    union.inputs.iter().map(|i| i.schema().clone()).collect(),
                    union.schema.clone(),
                    append_only,
                ))
            }
            LogicalPlan::SubqueryAlias(alias) => self.lower(&alias.input),
            LogicalPlan::Sort(sort) if sort.fetch.is_none() => self.lower(&sort.input),
            LogicalPlan::Sort(_) | LogicalPlan::Limit(_) => Err(RunnelError::not_implemented(
                "LIMIT in a materialized view (top-N views come with windows)",
            )),
            LogicalPlan::Window(window) => {
                let (partition_by, order_by, reach) = window_spec(&window.window_expr)?;
                for e in partition_by.iter().chain(order_by.iter().map(|s| &s.expr)) {
                    check_expr(e)?;
                }
                let input = self.lower(&window.input)?;
                Ok(self.push(
                    NodeKind::Window {
                        window_exprs: window.window_expr.clone(),
                        partition_by,
                        order_by,
                        reach,
                        rank_limit: None,
                    },
                    vec![input],
                    vec![window.input.schema().clone()],
                    window.schema.clone(),
                    false,
                ))
            }
            LogicalPlan::Extension(extension) => {
                let Some(session) = extension
                    .node
                    .as_any()
                    .downcast_ref::<crate::session_window::SessionWindow>()
                else {
                    return Err(RunnelError::not_implemented(format!(
                        "{} in a materialized view",
                        extension.node.name()
                    )));
                };
                for e in std::iter::once(&session.time).chain(&session.keys) {
                    check_expr(e)?;
                }
                let input = self.lower(&session.input)?;
                Ok(self.push(
                    NodeKind::SessionWindow {
                        time: session.time.clone(),
                        keys: session.keys.clone(),
                        gap_micros: session.gap_micros,
                    },
                    vec![input],
                    vec![session.input.schema().clone()],
                    extension.node.schema().clone(),
                    false,
                ))
            }
            LogicalPlan::Values(_) => Err(RunnelError::not_implemented(
                "VALUES in a materialized view",
            )),
            LogicalPlan::EmptyRelation(_) => Err(RunnelError::not_implemented(
                "a materialized view without FROM (or whose filter is always false)",
            )),
            LogicalPlan::RecursiveQuery(_) => Err(RunnelError::not_implemented(
                "WITH RECURSIVE in a materialized view",
            )),
            LogicalPlan::Unnest(_) => Err(RunnelError::not_implemented(
                "UNNEST in a materialized view",
            )),
            other => Err(RunnelError::not_implemented(format!(
                "{} in a materialized view",
                other.display()
            ))),
        }
    }
}

/// An interval join's state expiry, from its time conditions. A conjunct
/// `small <= big + c` (after moving `± INTERVAL` shifts across), where `small` is a column of
/// one side bounded by the clock with lag `L`, means rows of the other side with
/// `big < W - L - c` can match no future row (whose `small` is at least `W - L`): they are
/// freed. Per side, the rule freeing most is kept.
fn interval_join_expiry(
    filter: &Expr,
    left: &DFSchemaRef,
    right: &DFSchemaRef,
    times: [&EventTime; 2],
) -> [Option<(Expr, i64)>; 2] {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    // A column of one side plus a constant shift.
    let shifted = |e: &Expr| -> Option<(usize, Expr, i64)> {
        let (base, shift) = match e {
            Expr::BinaryExpr(BinaryExpr {
                left: l,
                op,
                right: r,
            }) => {
                let c = crate::event_time::interval_literal(r)?;
                match op {
                    Operator::Plus => (l.as_ref(), c),
                    Operator::Minus => (l.as_ref(), -c),
                    _ => return None,
                }
            }
            other => (other, 0),
        };
        let mut column = base;
        while let Expr::Cast(c) = column {
            column = &c.expr;
        }
        let Expr::Column(c) = column else { return None };
        let side = if left.has_column(c) {
            0
        } else if right.has_column(c) {
            1
        } else {
            return None;
        };
        Some((side, Expr::Column(c.clone()), shift))
    };
    let mut rules: [Option<(Expr, i64)>; 2] = [None, None];
    for conjunct in split_conjunction_owned(filter.clone())
        .into_iter()
        .flat_map(|c| match c {
            Expr::Between(b) if !b.negated => vec![
                Expr::BinaryExpr(BinaryExpr::new(b.expr.clone(), Operator::GtEq, b.low)),
                Expr::BinaryExpr(BinaryExpr::new(b.expr, Operator::LtEq, b.high)),
            ],
            other => vec![other],
        })
    {
        let Expr::BinaryExpr(BinaryExpr {
            left: a,
            op,
            right: b,
        }) = &conjunct
        else {
            continue;
        };
        let (small, big) = match op {
            Operator::Lt | Operator::LtEq => (a.as_ref(), b.as_ref()),
            Operator::Gt | Operator::GtEq => (b.as_ref(), a.as_ref()),
            _ => continue,
        };
        let (Some((small_side, small_col, small_shift)), Some((big_side, big_col, big_shift))) =
            (shifted(small), shifted(big))
        else {
            continue;
        };
        if small_side == big_side {
            continue;
        }
        let schema = if small_side == 0 { left } else { right };
        let Expr::Column(c) = &small_col else {
            continue;
        };
        let Some(lag) = schema
            .index_of_column(c)
            .ok()
            .and_then(|i| times[small_side].lag_of(i))
        else {
            continue;
        };
        // small_col + small_shift <= big_col + big_shift  =>  small_col <= big_col + c.
        let Some(c) = big_shift.checked_sub(small_shift) else {
            continue;
        };
        let Some(rule_lag) = lag.checked_add(c) else {
            continue;
        };
        let better = rules[big_side]
            .as_ref()
            .is_none_or(|(_, existing)| rule_lag < *existing);
        if better {
            rules[big_side] = Some((big_col, rule_lag));
        }
    }
    rules
}

/// A literal as a non-negative integer (a frame's or lag's row count).
fn literal_u64(value: &datafusion::common::ScalarValue) -> Option<u64> {
    match value.cast_to(&datafusion::arrow::datatypes::DataType::UInt64) {
        Ok(datafusion::common::ScalarValue::UInt64(Some(k))) => Some(k),
        _ => None,
    }
}

/// row_number() / rank(), whose value for the first rows of a partition depends only on them.
fn is_ranking(expr: &Expr) -> bool {
    let mut e = expr;
    while let Expr::Alias(a) = e {
        e = &a.expr;
    }
    matches!(e, Expr::WindowFunction(w) if matches!(w.fun.name(), "row_number" | "rank"))
}

/// The shared PARTITION BY / ORDER BY of a window node's functions, and how far back their
/// frames reach. Frames must end at the current row (or take the whole partition).
fn window_spec(
    exprs: &[Expr],
) -> Result<(
    Vec<Expr>,
    Vec<datafusion::logical_expr::SortExpr>,
    WindowReach,
)> {
    use datafusion::logical_expr::{WindowFrameBound, WindowFrameUnits};
    let mut spec: Option<(Vec<Expr>, Vec<datafusion::logical_expr::SortExpr>)> = None;
    let mut reach: Option<WindowReach> = None;
    let widest = |a: WindowReach, b: WindowReach| -> WindowReach {
        use WindowReach::*;
        match (a, b) {
            (Partition, _) | (_, Partition) => Partition,
            (Unbounded, _) | (_, Unbounded) => Unbounded,
            (Rows(x), Rows(y)) => Rows(x.max(y)),
            (RangeMicros(x), RangeMicros(y)) => RangeMicros(x.max(y)),
            // Rows against a time range: nothing tighter is known.
            _ => Unbounded,
        }
    };
    for expr in exprs {
        let mut e = expr;
        while let Expr::Alias(a) = e {
            e = &a.expr;
        }
        let Expr::WindowFunction(w) = e else {
            return Err(RunnelError::not_implemented(format!(
                "window expression {e} in a materialized view"
            )));
        };
        let name = w.fun.name().to_ascii_lowercase();
        let p = &w.params;
        for a in p.args.iter().chain(p.filter.as_deref()) {
            check_expr(a)?;
        }
        if p.distinct {
            return Err(RunnelError::not_implemented(format!(
                "{name}(DISTINCT ...) OVER in a materialized view"
            )));
        }
        match &spec {
            None => spec = Some((p.partition_by.clone(), p.order_by.clone())),
            Some((pb, ob)) if *pb == p.partition_by && *ob == p.order_by => {}
            Some(_) => {
                return Err(RunnelError::not_implemented(
                    "window functions with different PARTITION BY / ORDER BY in one SELECT of a materialized view (use a subquery per window)",
                ))
            }
        }
        let frame = &p.window_frame;
        let unbounded = |b: &WindowFrameBound| match b {
            WindowFrameBound::Preceding(v) | WindowFrameBound::Following(v) => v.is_null(),
            WindowFrameBound::CurrentRow => false,
        };
        let this = match name.as_str() {
            "row_number" | "rank" | "dense_rank" => WindowReach::Unbounded,
            "lag" => {
                let k = match p.args.get(1) {
                    None => 1,
                    Some(Expr::Literal(v, _)) => literal_u64(v).ok_or_else(|| {
                            RunnelError::not_implemented("lag with a non-constant offset")
                        })?,
                    Some(_) => {
                        return Err(RunnelError::not_implemented(
                            "lag with a non-constant offset in a materialized view",
                        ))
                    }
                };
                WindowReach::Rows(k)
            }
            "count" | "sum" | "avg" | "min" | "max" => {
                match (&frame.start_bound, &frame.end_bound) {
                    (_, WindowFrameBound::Following(v)) if v.is_null() => WindowReach::Partition,
                    (_, WindowFrameBound::Following(_)) => {
                        return Err(RunnelError::not_implemented(
                            "window frames ending after the current row (n FOLLOWING) in a materialized view",
                        ))
                    }
                    (start, _) if unbounded(start) => WindowReach::Unbounded,
                    (WindowFrameBound::CurrentRow, _) => match frame.units {
                        WindowFrameUnits::Rows => WindowReach::Rows(0),
                        _ => WindowReach::RangeMicros(0),
                    },
                    (WindowFrameBound::Preceding(v), _) => match frame.units {
                        WindowFrameUnits::Rows => WindowReach::Rows(
                            literal_u64(v).ok_or_else(|| {
                                    RunnelError::not_implemented(format!("ROWS frame {v} PRECEDING"))
                                })?,
                        ),
                        WindowFrameUnits::Range => {
                            let micros = crate::event_time::interval_literal(&Expr::Literal(
                                v.clone(),
                                None,
                            ))
                            .ok_or_else(|| {
                                RunnelError::not_implemented(
                                    "RANGE frames in a materialized view take an INTERVAL over a timestamp ORDER BY (e.g. RANGE BETWEEN INTERVAL '30 minutes' PRECEDING AND CURRENT ROW)",
                                )
                            })?;
                            WindowReach::RangeMicros(micros)
                        }
                        WindowFrameUnits::Groups => {
                            return Err(RunnelError::not_implemented(
                                "GROUPS frames in a materialized view",
                            ))
                        }
                    },
                    (WindowFrameBound::Following(_), _) => {
                        return Err(RunnelError::not_implemented(
                            "window frames starting after the current row in a materialized view",
                        ))
                    }
                }
            }
            other => {
                return Err(RunnelError::not_implemented(format!(
                    "window function {other} in a materialized view (supported: count, sum, avg, min, max, row_number, rank, dense_rank, lag)"
                )))
            }
        };
        reach = Some(match reach {
            None => this,
            Some(r) => widest(r, this),
        });
    }
    let (partition_by, order_by) = spec.unwrap_or_default();
    let mut reach = reach.unwrap_or(WindowReach::Partition);
    if order_by.is_empty() {
        reach = WindowReach::Partition;
    }
    if let WindowReach::RangeMicros(_) = reach {
        if order_by.len() != 1 {
            return Err(RunnelError::not_implemented(
                "RANGE frames over several ORDER BY columns in a materialized view",
            ));
        }
    }
    Ok((partition_by, order_by, reach))
}

fn aggregate_call(
    expr: &Expr,
    output_type: datafusion::arrow::datatypes::DataType,
) -> Result<AggregateCall> {
    let expr = match expr {
        Expr::Alias(alias) => alias.expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(DfAggregate { func, params }) = expr else {
        return Err(RunnelError::not_implemented(format!(
            "aggregate expression {expr} in a materialized view"
        )));
    };
    if !params.order_by.is_empty() {
        return Err(RunnelError::not_implemented(
            "ORDER BY inside an aggregate in a materialized view",
        ));
    }
    let name = func.name().to_ascii_lowercase();
    let arg = params.args.first().cloned();
    if params.args.len() > 1 {
        return Err(RunnelError::not_implemented(format!(
            "{name} with several arguments in a materialized view"
        )));
    }
    for e in arg.iter().chain(params.filter.as_deref()) {
        check_expr(e)?;
    }
    let filter = params.filter.as_deref().cloned();
    let is_count_star = |arg: &Option<Expr>| match arg {
        None => true,
        Some(Expr::Literal(v, _)) => !v.is_null(),
        _ => false,
    };
    let (function, distinct) = match name.as_str() {
        "count" if !params.distinct && is_count_star(&arg) => (AggregateFunction::CountStar, false),
        "count" => (AggregateFunction::Count, params.distinct),
        "sum" => (AggregateFunction::Sum, params.distinct),
        "avg" | "mean" => (AggregateFunction::Avg, params.distinct),
        // min/max are the same with or without DISTINCT.
        "min" => (AggregateFunction::Min, false),
        "max" => (AggregateFunction::Max, false),
        other => {
            return Err(RunnelError::not_implemented(format!(
                "aggregate function {other} in a materialized view (supported: count, sum, avg, min, max)"
            )))
        }
    };
    if distinct && function != AggregateFunction::Count {
        return Err(RunnelError::not_implemented(format!(
            "{name}(DISTINCT ...) in a materialized view (count(DISTINCT ...) is supported)"
        )));
    }
    let arg =
        if function == AggregateFunction::CountStar {
            None
        } else {
            Some(arg.ok_or_else(|| {
                RunnelError::not_implemented(format!("{name}() without an argument"))
            })?)
        };
    Ok(AggregateCall {
        function,
        distinct,
        arg,
        filter,
        output_type,
    })
}

/// Refuses expressions a view cannot maintain: subqueries left after decorrelation, and
/// functions whose value depends on when they run (the wall clock, randomness).
fn check_expr(expr: &Expr) -> Result<()> {
    let mut problem: Option<String> = None;
    expr.apply(|e| {
        match e {
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_) => {
                problem = Some("this subquery".to_string());
            }
            Expr::Placeholder(p) => {
                problem = Some(format!("parameter {}", p.id));
            }
            e if is_event_time_now(e) => {
                problem = Some(
                    "NOW() outside a WHERE condition on a time column (the event-time clock can only filter rows)"
                        .to_string(),
                );
            }
            Expr::ScalarFunction(f) if f.func.signature().volatility != Volatility::Immutable => {
                problem = Some(format!(
                    "{}() (its value depends on when it runs; event-time NOW() comes with watermarks)",
                    f.func.name()
                ));
            }
            _ => {}
        }
        Ok(if problem.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    match problem {
        Some(p) => Err(RunnelError::not_implemented(format!(
            "{p} in a materialized view"
        ))),
        None => Ok(()),
    }
}
