//! Sharing equal subplans: a view that computes the same thing twice gets one operator for
//! it, whose output feeds every reader, instead of two replicas each holding a copy of the
//! same state and doing the same work.
//!
//! DataFusion inlines a CTE or subquery at every place it is named, and windowed queries
//! often restate their window (Nexmark q5 counts bids per auction and window once for the
//! counts and once more for each window's maximum). Lowering turns each copy into its own
//! nodes; [`share_equal_nodes`] then keeps one node of each set of equal ones: equal kind
//! and expressions over the same (already shared) inputs with the same schemas. An
//! aggregate equal to another but for the order of its group columns is shared too: its
//! readers get the other's output through a projection that puts the columns in their order
//! (the group's state and its updates do not depend on the order).
//!
//! Node ids key operator state, so a view planned before this pass existed has state under
//! other ids when the pass shares anything in it (`StreamPlan::shared_nodes`); the catalog's
//! state layout 8 says the pass ran (see `catalog::STATE_LAYOUT`).

use datafusion::common::Column;
use datafusion::logical_expr::Expr;
use runnel_plan::{NodeKind, PlanNode};

use crate::event_time::derive_event_time;

/// `nodes` (in topological order) with each set of equal nodes made one, and per old node
/// id the id of the node that now computes its output. Also returns how many nodes were
/// shared (0: the plan is what lowering built, renumbered identically).
pub fn share_equal_nodes(nodes: Vec<PlanNode>) -> (Vec<PlanNode>, Vec<usize>, usize) {
    let mut kept: Vec<PlanNode> = Vec::with_capacity(nodes.len());
    let mut new_id = Vec::with_capacity(nodes.len());
    let mut shared = 0;
    for mut node in nodes {
        for input in &mut node.inputs {
            *input = new_id[*input];
        }
        if let Some(same) = equal_kept(&kept, &node) {
            new_id.push(same);
            shared += 1;
            continue;
        }
        if let Some(reordered) = reordered_aggregate(&kept, &node) {
            let id = equal_kept(&kept, &reordered).unwrap_or_else(|| push(&mut kept, reordered));
            new_id.push(id);
            shared += 1;
            continue;
        }
        new_id.push(push(&mut kept, node));
    }
    (kept, new_id, shared)
}

/// The id of a kept node equal to `node`.
fn equal_kept(kept: &[PlanNode], node: &PlanNode) -> Option<usize> {
    kept.iter()
        .find(|k| same_computation(k, node))
        .map(|k| k.id)
}

/// Appends `node` to `kept` as its next id.
fn push(kept: &mut Vec<PlanNode>, mut node: PlanNode) -> usize {
    let id = kept.len();
    node.id = id;
    kept.push(node);
    id
}

/// Whether `a` and `b` output the same changes: the same operator with the same
/// expressions, over the same inputs, read through the same schemas. A view's output
/// (`Materialize`) is never shared: each view has one.
fn same_computation(a: &PlanNode, b: &PlanNode) -> bool {
    !matches!(a.kind, NodeKind::Materialize { .. })
        && a.kind == b.kind
        && a.inputs == b.inputs
        && a.input_schemas == b.input_schemas
        && a.schema == b.schema
        && a.append_only == b.append_only
        && a.event_time == b.event_time
}

/// When `node` is an aggregate equal to a kept one but for the order of its group columns:
/// a projection of the kept aggregate's output into `node`'s column order and schema.
fn reordered_aggregate(kept: &[PlanNode], node: &PlanNode) -> Option<PlanNode> {
    let NodeKind::Aggregate {
        group_exprs,
        aggregates,
        emit_on_close,
    } = &node.kind
    else {
        return None;
    };
    kept.iter().find_map(|k| {
        let NodeKind::Aggregate {
            group_exprs: kept_groups,
            aggregates: kept_aggregates,
            emit_on_close: kept_emit,
        } = &k.kind
        else {
            return None;
        };
        if k.inputs != node.inputs
            || k.input_schemas != node.input_schemas
            || kept_aggregates != aggregates
            || kept_emit != emit_on_close
            || k.append_only != node.append_only
            || kept_groups.len() != group_exprs.len()
        {
            return None;
        }
        // Output column of `k` for each of `node`'s columns: its groups found in `k`'s
        // (each at most once, so a repeated group expression is not mistaken), then the
        // aggregates in the same order.
        let mut taken = vec![false; kept_groups.len()];
        let mut order = Vec::with_capacity(node.schema.fields().len());
        for group in group_exprs {
            let at = (0..kept_groups.len()).find(|&i| !taken[i] && kept_groups[i] == *group)?;
            taken[at] = true;
            order.push(at);
        }
        order.extend(group_exprs.len()..node.schema.fields().len());
        if order.len() != k.schema.fields().len() {
            return None;
        }
        let exprs: Vec<Expr> = order
            .iter()
            .enumerate()
            .map(|(to, &from)| {
                let (qualifier, field) = k.schema.qualified_field(from);
                let (to_qualifier, to_field) = node.schema.qualified_field(to);
                let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
                column.alias_qualified(to_qualifier.cloned(), to_field.name())
            })
            .collect();
        let kind = NodeKind::Project { exprs };
        let event_time =
            derive_event_time(&kind, &[&k.event_time], std::slice::from_ref(&k.schema));
        // The readers were planned against `node`'s clock bounds (which windows close when):
        // share only when the projection gives them the same ones.
        let bounds = |t: &runnel_plan::EventTime| {
            let mut b: Vec<_> = t.bounds.iter().map(|b| (b.column, b.lag_micros)).collect();
            b.sort_unstable();
            (t.timed, b)
        };
        if bounds(&event_time) != bounds(&node.event_time) {
            return None;
        }
        Some(PlanNode {
            id: 0,
            kind,
            inputs: vec![k.id],
            input_schemas: vec![k.schema.clone()],
            schema: node.schema.clone(),
            append_only: k.append_only,
            event_time,
        })
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;
    use runnel_common::Result;
    use runnel_plan::{EventTime, NodeKind, RelationKind, StreamPlan, TimeBound};

    use crate::lower::{lower_view, RelationInfo, RelationResolver};

    /// `t`, with a clock bounding its column `j` (a watermark on `j`) when `timed`.
    struct OneStream {
        timed: bool,
    }

    impl RelationResolver for OneStream {
        fn resolve_relation(&self, _name: &str) -> Result<RelationInfo> {
            let event_time = if self.timed {
                EventTime {
                    timed: true,
                    bounds: vec![TimeBound {
                        column: 1,
                        lag_micros: 0,
                    }],
                }
            } else {
                EventTime::default()
            };
            Ok(RelationInfo {
                id: 1,
                kind: RelationKind::Stream,
                event_time,
            })
        }
    }

    /// The stream plan of a view `sql` over `t (k BIGINT, j BIGINT, v BIGINT)`.
    fn plan(sql: &str) -> StreamPlan {
        plan_over(sql, false)
    }

    fn plan_over(sql: &str, timed: bool) -> StreamPlan {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let logical = runtime.block_on(async {
            let ctx = SessionContext::new();
            let schema = Arc::new(Schema::new(
                ["k", "j", "v"]
                    .map(|name| Field::new(name, DataType::Int64, true))
                    .to_vec(),
            ));
            let table = MemTable::try_new(schema, vec![vec![]]).expect("table");
            ctx.register_table("t", Arc::new(table)).expect("register");
            let df = ctx.sql(sql).await.expect("plan");
            df.into_optimized_plan().expect("optimize")
        });
        lower_view(&logical, 2, &OneStream { timed }, false).expect("lower")
    }

    fn count(plan: &StreamPlan, kind: fn(&NodeKind) -> bool) -> usize {
        plan.nodes.iter().filter(|n| kind(&n.kind)).count()
    }

    fn is_aggregate(kind: &NodeKind) -> bool {
        matches!(kind, NodeKind::Aggregate { .. })
    }

    fn is_source(kind: &NodeKind) -> bool {
        matches!(kind, NodeKind::Source { .. })
    }

    #[test]
    fn a_subquery_stated_twice_is_computed_once() {
        let plan = plan(
            "SELECT a.k, a.n FROM (SELECT k, count(*) AS n FROM t GROUP BY k) a \
             JOIN (SELECT k, count(*) AS n FROM t GROUP BY k) b ON a.k = b.k AND a.n = b.n",
        );
        assert_eq!(count(&plan, is_aggregate), 1, "{plan}");
        assert_eq!(count(&plan, is_source), 1, "{plan}");
        assert!(plan.shared_nodes > 0);
        // Both sides of the join read the one aggregate (through what lies between).
        let join = plan
            .nodes
            .iter()
            .find(|n| matches!(n.kind, NodeKind::Join { .. }))
            .expect("a join");
        assert_eq!(join.inputs[0], join.inputs[1], "{plan}");
        for (i, node) in plan.nodes.iter().enumerate() {
            assert_eq!(node.id, i);
            assert!(node.inputs.iter().all(|&input| input < i), "{plan}");
        }
    }

    #[test]
    fn an_aggregate_grouped_in_another_order_is_computed_once() {
        for timed in [false, true] {
            an_aggregate_grouped_in_another_order_is_computed_once_over(timed);
        }
    }

    /// With `timed`, `j` is the clock's column (as q5's window is): the reordering keeps its
    /// bound, at the reader's position of `j`.
    fn an_aggregate_grouped_in_another_order_is_computed_once_over(timed: bool) {
        // Nexmark q5's shape: counts per (k, j), and per k the largest of the counts per (j, k).
        let plan = plan_over(
            "SELECT x.k, x.j, x.n FROM (SELECT k, j, count(*) AS n FROM t GROUP BY k, j) x \
             JOIN (SELECT k, max(n) AS m FROM \
                   (SELECT j, k, count(*) AS n FROM t GROUP BY j, k) c GROUP BY k) y \
             ON x.k = y.k AND x.n = y.m",
            timed,
        );
        assert_eq!(count(&plan, is_aggregate), 2, "{plan}");
        let counts: Vec<_> = plan
            .nodes
            .iter()
            .filter(|n| matches!(&n.kind, NodeKind::Aggregate { group_exprs, .. } if group_exprs.len() == 2))
            .collect();
        assert_eq!(counts.len(), 1, "{plan}");
        let (kept_schema, count_id) = (&counts[0].schema, counts[0].id);
        // Its readers: one through a projection that swaps the group columns back.
        let reorder = plan
            .nodes
            .iter()
            .find(|n| n.inputs == [count_id] && n.schema.field(0).name() == "j")
            .expect("a projection into the other order");
        assert!(matches!(reorder.kind, NodeKind::Project { .. }), "{plan}");
        assert_eq!(kept_schema.field(0).name(), "k");
        assert_eq!(reorder.schema.fields().len(), kept_schema.fields().len());
        assert!(plan.shared_nodes > 0);
        if timed {
            assert_eq!(reorder.event_time.lag_of(0), Some(0), "{plan}");
            assert_eq!(counts[0].event_time.lag_of(1), Some(0), "{plan}");
        }
    }

    #[test]
    fn different_computations_are_kept_apart() {
        let plan = plan(
            "SELECT a.k, a.n, b.s FROM (SELECT k, count(*) AS n FROM t GROUP BY k) a \
             JOIN (SELECT k, sum(v) AS s FROM t GROUP BY k) b ON a.k = b.k",
        );
        assert_eq!(count(&plan, is_aggregate), 2, "{plan}");
        // The scan is still shared; the aggregates are not.
        assert_eq!(count(&plan, is_source), 1, "{plan}");
        let once = super::tests::plan("SELECT k, count(*) AS n FROM t WHERE v > 0 GROUP BY k");
        assert_eq!(once.shared_nodes, 0, "{once}");
    }
}
