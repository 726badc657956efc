//! The streaming plan IR: the operator graph a materialized view compiles to.
//!
//! `runnel-sql` lowers a DataFusion `LogicalPlan` into a [`StreamPlan`]; `runnel-runtime`
//! instantiates one operator per [`PlanNode`]. Nodes are stored in topological order (inputs
//! before consumers) and the last node is the view's output. Scalar expressions are DataFusion
//! logical `Expr`s over the node's input schema, compiled to physical expressions at runtime.
//!
//! The plan is not persisted: the catalog stores each view's SQL and re-plans it on start,
//! which is deterministic, so node ids (which key operator state) are stable across restarts.

use std::fmt;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::Expr;

/// Identifies a persisted catalog object (stream, table or view).
pub type ObjectId = u32;

/// The number of virtual partitions (vnodes) of every view's operator state: each state key
/// starts with the vnode of its partitioning key (`runnel_state::vnode`). Recorded in each
/// view's catalog entry, since changing it moves every key.
pub const VNODE_COUNT: u16 = 256;

/// What kind of relation a source node reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationKind {
    /// Append-only: every change is an insert.
    Stream,
    /// Keyed by a primary key: inserts, updates and deletes.
    Table,
    /// Another materialized view: any changes.
    View,
}

/// A lower bound on a column's future values in terms of the event-time clock: once the
/// clock (the watermark reaching the node) is at `W`, every change the node still emits has
/// `column >= W - lag_micros`. So a group whose value in `column` is below `W - lag_micros`
/// is closed: nothing can change it any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimeBound {
    pub column: usize,
    pub lag_micros: i64,
}

/// What a relation or plan node knows about event time.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventTime {
    /// An event-time clock reaches this node: some stream it reads has a watermark.
    pub timed: bool,
    /// Columns bounded by the clock (see [`TimeBound`]).
    pub bounds: Vec<TimeBound>,
}

impl EventTime {
    /// The bound on `column`, if it has one.
    pub fn lag_of(&self, column: usize) -> Option<i64> {
        self.bounds
            .iter()
            .find(|b| b.column == column)
            .map(|b| b.lag_micros)
    }
}

#[derive(Debug, Clone)]
pub struct StreamPlan {
    pub nodes: Vec<PlanNode>,
    /// How many nodes lowering built that now read another's equal computation
    /// (`runnel_sql::share`): nonzero means node ids, and so state keys, differ from what a
    /// Runnel before sharing (state layout 7) gave this view.
    pub shared_nodes: usize,
}

impl StreamPlan {
    pub fn output(&self) -> &PlanNode {
        // A plan always ends with its output node; lowering never builds an empty plan.
        self.nodes
            .last()
            .expect("a stream plan has at least one node")
    }

    /// Output columns of `node` whose values identify at most one row in its output (which
    /// is then a set, each row with weight 1), when the plan's structure guarantees it: the
    /// group columns of an aggregate (none for a global aggregate: at most one row), kept
    /// through filters and through projections that pass every key column on unchanged.
    pub fn unique_key(&self, node: usize) -> Option<Vec<usize>> {
        unique_key(&self.nodes, node)
    }

    /// The storage key of the view this plan materializes.
    pub fn view_key(&self) -> Option<&[usize]> {
        match &self.output().kind {
            NodeKind::Materialize { key, .. } => key.as_deref(),
            _ => None,
        }
    }

    /// Whether the view is stored as blocks of appended rows.
    pub fn view_appended(&self) -> bool {
        matches!(
            self.output().kind,
            NodeKind::Materialize { appended: true, .. }
        )
    }

    /// Sets whether the view is stored as appended blocks (see [`Self::set_view_key`]).
    pub fn set_view_appended(&mut self, view_appended: bool) {
        if let Some(PlanNode {
            kind: NodeKind::Materialize { appended, .. },
            ..
        }) = self.nodes.last_mut()
        {
            *appended = view_appended;
        }
    }

    /// Sets the storage key of the view (a restored view keeps the layout it was stored in).
    pub fn set_view_key(&mut self, view_key: Option<Vec<usize>>) {
        if let Some(PlanNode {
            kind: NodeKind::Materialize { key, .. },
            ..
        }) = self.nodes.last_mut()
        {
            *key = view_key;
        }
    }

    /// The relations this plan reads, without duplicates.
    pub fn dependencies(&self) -> Vec<ObjectId> {
        let mut deps = Vec::new();
        for node in &self.nodes {
            if let NodeKind::Source { relation, .. } = &node.kind {
                if !deps.contains(relation) {
                    deps.push(*relation);
                }
            }
        }
        deps
    }
}

/// [`StreamPlan::unique_key`] over plan nodes still being built (the lowering's).
pub fn unique_key(nodes: &[PlanNode], node: usize) -> Option<Vec<usize>> {
    let n = &nodes[node];
    match &n.kind {
        NodeKind::Aggregate { group_exprs, .. } => Some((0..group_exprs.len()).collect()),
        NodeKind::Filter { .. }
        | NodeKind::TemporalFilter { .. }
        | NodeKind::Materialize { .. } => unique_key(nodes, n.inputs[0]),
        NodeKind::Project { exprs } => {
            let input_key = unique_key(nodes, n.inputs[0])?;
            let input_schema = &n.input_schemas[0];
            let passes_through = |expr: &Expr, column: usize| {
                let mut expr = expr;
                while let Expr::Alias(alias) = expr {
                    expr = &alias.expr;
                }
                match expr {
                    Expr::Column(c) => input_schema.index_of_column(c).ok() == Some(column),
                    _ => false,
                }
            };
            input_key
                .iter()
                .map(|&column| exprs.iter().position(|e| passes_through(e, column)))
                .collect()
        }
        NodeKind::Source { .. }
        | NodeKind::Join { .. }
        | NodeKind::AsofJoin { .. }
        | NodeKind::SessionWindow { .. }
        | NodeKind::Union
        | NodeKind::Window { .. } => None,
    }
}

#[derive(Debug, Clone)]
pub struct PlanNode {
    /// Index of this node in [`StreamPlan::nodes`].
    pub id: usize,
    pub kind: NodeKind,
    /// Input node ids, in port order.
    pub inputs: Vec<usize>,
    /// Schemas the node's expressions are written against, one per input (DataFusion's
    /// schemas of the logical inputs, qualifiers included).
    pub input_schemas: Vec<DFSchemaRef>,
    /// The node's output schema.
    pub schema: DFSchemaRef,
    /// True when every change this node emits is an insert (lets min/max skip retraction state).
    pub append_only: bool,
    /// Whether an event-time clock reaches this node, and which output columns it bounds.
    pub event_time: EventTime,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// Reads the changes of a stream, table or view.
    Source {
        relation: ObjectId,
        relation_kind: RelationKind,
        name: String,
    },
    /// Computes one output column per expression.
    Project { exprs: Vec<Expr> },
    /// Keeps rows where the predicate is true.
    Filter { predicate: Expr },
    /// A condition on the event-time clock (`NOW()` in a view): each row has a threshold
    /// `time + offset_micros` (microseconds) and is in the output while the clock is before
    /// it ([`TemporalBound::Until`], `ts > NOW() - INTERVAL ...`) or once the clock reaches
    /// it ([`TemporalBound::From`], `ts <= NOW() - INTERVAL ...`).
    TemporalFilter {
        time: Expr,
        offset_micros: i64,
        bound: TemporalBound,
    },
    /// GROUP BY: group expressions first, then one column per aggregate. A group whose
    /// time-bounded column (see [`EventTime`]) falls behind the clock is closed and its state
    /// freed; with `emit_on_close` (EMIT ON WINDOW CLOSE) its only output is its final row,
    /// emitted then.
    Aggregate {
        group_exprs: Vec<Expr>,
        aggregates: Vec<AggregateCall>,
        emit_on_close: bool,
    },
    /// Equi-join; output is the left columns then the right columns.
    Join {
        join_type: JoinType,
        left_keys: Vec<Expr>,
        right_keys: Vec<Expr>,
        /// Extra non-equi condition over the joined row (inner joins only).
        filter: Option<Expr>,
        /// Per side (left, right): rows whose `time` (an expression over that side's input)
        /// is below the clock minus the lag can match no future row of the other side (an
        /// interval join's time condition), so they are freed.
        expire: [Option<(Expr, i64)>; 2],
    },
    /// OVER: the input's columns plus one column per window function (`window_exprs`, DataFusion
    /// `Expr::WindowFunction`s sharing one PARTITION BY / ORDER BY). Frames only look back
    /// (`... PRECEDING AND CURRENT ROW`), so a change can only affect rows at or after it.
    Window {
        window_exprs: Vec<Expr>,
        partition_by: Vec<Expr>,
        order_by: Vec<datafusion::logical_expr::SortExpr>,
        /// How far back the frames reach (and so how far forward a change reaches).
        reach: WindowReach,
        /// Top-N: only rows among the first `n` of their partition (and their ORDER BY peers)
        /// are wanted downstream (`WHERE row_number() ... <= n`).
        rank_limit: Option<u64>,
    },
    /// ASOF JOIN (left): each left row with the right row of equal keys whose time is the
    /// latest at or before the left row's (before it, when `strict`), or NULLs. Output is
    /// the left columns then the right columns.
    AsofJoin {
        left_keys: Vec<Expr>,
        right_keys: Vec<Expr>,
        left_time: Expr,
        right_time: Expr,
        strict: bool,
    },
    /// SESSION windows: each input row plus its session's `window_start` (first `time`) and
    /// `window_end` (last `time` plus the gap); per `keys`, rows less than the gap apart share
    /// a session.
    SessionWindow {
        time: Expr,
        keys: Vec<Expr>,
        gap_micros: i64,
    },
    /// UNION ALL of inputs with identical column types.
    Union,
    /// The view's output: writes its contents to state. With a `key` (output columns that
    /// identify a row, see [`StreamPlan::unique_key`]) the view is stored one row per key;
    /// without, as blocks of appended rows when `appended` (the view only ever gets
    /// inserts), else as a multiset of whole rows with their counts.
    Materialize {
        view: ObjectId,
        key: Option<Vec<usize>>,
        appended: bool,
    },
}

/// How far back an OVER window's frames reach from the current row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowReach {
    /// No ORDER BY (or `... AND UNBOUNDED FOLLOWING`): every row's value depends on the whole
    /// partition.
    Partition,
    /// UNBOUNDED PRECEDING and ranking functions: everything before the row.
    Unbounded,
    /// `ROWS BETWEEN n PRECEDING AND CURRENT ROW` (and `lag(x, n)`).
    Rows(u64),
    /// `RANGE BETWEEN INTERVAL ... PRECEDING AND CURRENT ROW` over a timestamp ORDER BY.
    RangeMicros(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemporalBound {
    /// Visible while the clock is before the threshold, then retracted.
    Until,
    /// Held back until the clock reaches the threshold, then visible for good.
    From,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinType {
    Inner,
    Left,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateFunction {
    CountStar,
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AggregateCall {
    pub function: AggregateFunction,
    pub distinct: bool,
    /// The argument (none for `count(*)`).
    pub arg: Option<Expr>,
    /// `FILTER (WHERE ...)`.
    pub filter: Option<Expr>,
    /// Output type, as DataFusion typed the aggregate.
    pub output_type: DataType,
}

impl fmt::Display for StreamPlan {
    /// The operator graph as EXPLAIN prints it: one line per node, output first, inputs indented.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn write_node(
            plan: &StreamPlan,
            id: usize,
            depth: usize,
            f: &mut fmt::Formatter<'_>,
        ) -> fmt::Result {
            let node = &plan.nodes[id];
            let indent = "  ".repeat(depth);
            let detail = match &node.kind {
                NodeKind::Source {
                    name,
                    relation_kind,
                    ..
                } => format!("Source: {name} ({relation_kind:?})"),
                NodeKind::Project { exprs } => format!("Project: {}", list(exprs)),
                NodeKind::Filter { predicate } => format!("Filter: {predicate}"),
                NodeKind::TemporalFilter {
                    time,
                    offset_micros,
                    bound,
                } => {
                    let shift = match offset_micros {
                        0 => String::new(),
                        o if *o > 0 => format!(" + {o}us"),
                        o => format!(" - {}us", -o),
                    };
                    let test = match bound {
                        TemporalBound::Until => "visible while now() <",
                        TemporalBound::From => "visible once now() >=",
                    };
                    format!("TemporalFilter: {test} {time}{shift}")
                }
                NodeKind::Aggregate {
                    group_exprs,
                    aggregates,
                    emit_on_close,
                } => {
                    let aggs: Vec<String> = aggregates
                        .iter()
                        .map(|a| {
                            let arg = a.arg.as_ref().map_or("*".to_string(), |e| e.to_string());
                            let distinct = if a.distinct { "DISTINCT " } else { "" };
                            let filter = a
                                .filter
                                .as_ref()
                                .map_or(String::new(), |e| format!(" FILTER (WHERE {e})"));
                            format!("{:?}({distinct}{arg}){filter}", a.function)
                        })
                        .collect();
                    let emit = if *emit_on_close {
                        " emit=on window close"
                    } else {
                        ""
                    };
                    format!(
                        "Aggregate: group=[{}] aggregates=[{}]{emit}",
                        list(group_exprs),
                        aggs.join(", ")
                    )
                }
                NodeKind::Join {
                    join_type,
                    left_keys,
                    right_keys,
                    filter,
                    ..
                } => {
                    let on: Vec<String> = left_keys
                        .iter()
                        .zip(right_keys)
                        .map(|(l, r)| format!("{l} = {r}"))
                        .collect();
                    let filter = filter
                        .as_ref()
                        .map_or(String::new(), |e| format!(" filter={e}"));
                    format!("{join_type:?}Join: on=[{}]{filter}", on.join(", "))
                }
                NodeKind::Window {
                    window_exprs,
                    reach,
                    rank_limit,
                    ..
                } => {
                    let limit = rank_limit.map_or(String::new(), |n| format!(" limit={n}"));
                    format!("Window: {} reach={reach:?}{limit}", list(window_exprs))
                }
                NodeKind::AsofJoin {
                    left_keys,
                    right_keys,
                    left_time,
                    right_time,
                    strict,
                } => {
                    let on: Vec<String> = left_keys
                        .iter()
                        .zip(right_keys)
                        .map(|(l, r)| format!("{l} = {r}"))
                        .collect();
                    let op = if *strict { ">" } else { ">=" };
                    format!(
                        "AsofJoin: on=[{}] match={left_time} {op} {right_time}",
                        on.join(", ")
                    )
                }
                NodeKind::SessionWindow {
                    time,
                    keys,
                    gap_micros,
                } => format!(
                    "SessionWindow: time={time} gap={} keys=[{}]",
                    runnel_common::time::format_duration_micros(*gap_micros),
                    list(keys)
                ),
                NodeKind::Union => "Union".to_string(),
                NodeKind::Materialize { key: None, .. } => "Materialize".to_string(),
                NodeKind::Materialize { key: Some(key), .. } => {
                    let names: Vec<&str> = key
                        .iter()
                        .map(|&i| node.schema.field(i).name().as_str())
                        .collect();
                    format!("Materialize: key=[{}]", names.join(", "))
                }
            };
            let append = if node.append_only {
                " [append-only]"
            } else {
                ""
            };
            writeln!(f, "{indent}{detail}{append}")?;
            for &input in &node.inputs {
                write_node(plan, input, depth + 1, f)?;
            }
            Ok(())
        }
        fn list(exprs: &[Expr]) -> String {
            exprs
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
        if self.nodes.is_empty() {
            return Ok(());
        }
        write_node(self, self.nodes.len() - 1, 0, f)
    }
}
