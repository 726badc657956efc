//! ASOF JOIN in materialized views: `FROM events e ASOF JOIN prices p
//! MATCH_CONDITION (e.ts >= p.ts) ON e.k = p.k` attaches to every left row the right row with
//! the same key and the latest time at or before its own (strictly before with `>`), or NULLs
//! when there is none: the point-in-time join that builds training sets without leaking
//! the future.
//!
//! DataFusion has no ASOF join, so before planning [`rewrite_asof_joins`] turns each one into
//! `LEFT JOIN ... ON <keys> AND asof_match(<match condition>)`, where [`AsofMatch`] is a
//! marker function nothing evaluates; the lowering recognises the marker and builds an ASOF
//! join node instead of a left join.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::{
    JoinConstraint, JoinOperator, Query, SetExpr, TableFactor, TableWithJoins,
};
use runnel_common::{Result, RunnelError, SqlState};

/// The marker's name in rewritten SQL.
pub const ASOF_MATCH: &str = "runnel_asof_match";

/// `runnel_asof_match(condition)`: marks an ASOF join's match condition.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AsofMatch {
    signature: Signature,
}

impl Default for AsofMatch {
    fn default() -> Self {
        AsofMatch {
            signature: Signature::exact(vec![DataType::Boolean], Volatility::Volatile),
        }
    }
}

impl ScalarUDFImpl for AsofMatch {
    fn name(&self) -> &str {
        ASOF_MATCH
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        exec_err!("ASOF JOIN is supported in materialized views, not in ad-hoc queries")
    }
}

/// The marker's argument, if `expr` is the marker.
pub fn asof_condition(expr: &Expr) -> Option<&Expr> {
    match expr {
        Expr::ScalarFunction(f) if f.func.inner().is::<AsofMatch>() => f.args.first(),
        _ => None,
    }
}

/// Whether `expr` contains the marker anywhere.
pub fn mentions_asof(expr: &Expr) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut found = false;
    let _ = expr.apply(|e| {
        found = asof_condition(e).is_some();
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// The marker function, for registering with a session.
pub fn asof_match_udf() -> Arc<datafusion::logical_expr::ScalarUDF> {
    Arc::new(datafusion::logical_expr::ScalarUDF::new_from_impl(
        AsofMatch::default(),
    ))
}

/// Rewrites every ASOF JOIN of `query` (and its subqueries in FROM and CTEs) into a LEFT
/// JOIN carrying the marked match condition.
pub fn rewrite_asof_joins(query: &mut Query) -> Result<()> {
    if let Some(with) = &mut query.with {
        for cte in &mut with.cte_tables {
            rewrite_asof_joins(&mut cte.query)?;
        }
    }
    rewrite_set_expr(&mut query.body)
}

fn rewrite_set_expr(body: &mut SetExpr) -> Result<()> {
    match body {
        SetExpr::Select(select) => {
            for from in &mut select.from {
                rewrite_from(from)?;
            }
            Ok(())
        }
        SetExpr::Query(q) => rewrite_asof_joins(q),
        SetExpr::SetOperation { left, right, .. } => {
            rewrite_set_expr(left)?;
            rewrite_set_expr(right)
        }
        _ => Ok(()),
    }
}

fn rewrite_factor(factor: &mut TableFactor) -> Result<()> {
    match factor {
        TableFactor::Derived { subquery, .. } => rewrite_asof_joins(subquery),
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => rewrite_from(table_with_joins),
        _ => Ok(()),
    }
}

fn rewrite_from(from: &mut TableWithJoins) -> Result<()> {
    rewrite_factor(&mut from.relation)?;
    for join in &mut from.joins {
        rewrite_factor(&mut join.relation)?;
        let JoinOperator::AsOf {
            match_condition,
            constraint,
        } = &join.join_operator
        else {
            continue;
        };
        let JoinConstraint::On(on) = constraint else {
            return Err(RunnelError::plan(
                SqlState::SYNTAX_ERROR,
                "ASOF JOIN needs ON with the equality keys: ASOF JOIN r MATCH_CONDITION (l.ts >= r.ts) ON l.k = r.k",
            ));
        };
        let text = format!("({on}) AND {ASOF_MATCH}({match_condition})");
        let condition = crate::parser::parse_expression(&text)?;
        join.join_operator = JoinOperator::LeftOuter(JoinConstraint::On(condition));
    }
    Ok(())
}
