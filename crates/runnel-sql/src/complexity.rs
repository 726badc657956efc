//! How deeply a parsed statement nests, and the bound above which Runnel refuses it (54001,
//! "statement too complex", where Postgres says "stack depth limit exceeded").
//!
//! The parser's recursion limit bounds what nests through brackets, but chains it reads in a
//! loop have no bound: `1 + 1 + ... + 1` is a left-deep tree as deep as it has terms, `SELECT 1
//! UNION ALL SELECT 1 ...` a left-deep set operation, `FROM a JOIN b JOIN c ...` a left-deep
//! join. Planning, optimising, lowering and evaluating such trees recurses once per level; with
//! nothing bounding it, ~900 terms overflowed a thread's stack and aborted the server. This
//! bound, together with the stack size the server gives the threads that plan and run
//! statements (see `docs/architecture.md`), keeps every statement to a result or an error.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, Query, Select, SetExpr, Visit, Visitor};
use runnel_common::{Result, RunnelError, SqlState};

/// The deepest nesting Runnel plans: expressions inside expressions, subqueries, and each
/// set operation and join of a chain count one level.
pub const MAX_NESTING: usize = 1000;

/// Refuses `tree` if it nests deeper than [`MAX_NESTING`].
pub fn check_nesting<T: Visit>(tree: &T) -> Result<()> {
    let mut depth = Depth::default();
    match tree.visit(&mut depth) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(RunnelError::plan(
            SqlState::STATEMENT_TOO_COMPLEX,
            format!(
                "statement too complex: it nests more than {MAX_NESTING} levels deep \
                 (each nested expression, subquery, set operation and join is a level)"
            ),
        )),
    }
}

#[derive(Default)]
struct Depth {
    current: usize,
}

impl Depth {
    fn enter(&mut self, levels: usize) -> ControlFlow<()> {
        self.current += levels;
        if self.current > MAX_NESTING {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn leave(&mut self, levels: usize) -> ControlFlow<()> {
        self.current -= levels;
        ControlFlow::Continue(())
    }
}

/// The set operations down the left side of a query body (`a UNION b UNION c` is two): the
/// right side of each is a single term unless parenthesised, and then it is a query of its own.
fn set_operation_chain(body: &SetExpr) -> usize {
    let mut chain = 0;
    let mut side = body;
    while let SetExpr::SetOperation { left, .. } = side {
        chain += 1;
        side = left;
    }
    chain
}

/// The joins a SELECT's FROM makes (`a, b JOIN c` is two): each is planned on top of the last.
fn joins(select: &Select) -> usize {
    let tables: usize = select.from.iter().map(|from| 1 + from.joins.len()).sum();
    tables.saturating_sub(1)
}

impl Visitor for Depth {
    type Break = ();

    fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
        self.enter(1)
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
        self.leave(1)
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        self.enter(1 + set_operation_chain(&query.body))
    }

    fn post_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        self.leave(1 + set_operation_chain(&query.body))
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        self.enter(joins(select))
    }

    fn post_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        self.leave(joins(select))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse_one;

    /// What the parser, which checks every statement's nesting, says of `sql`.
    fn nesting_error(sql: &str) -> Option<SqlState> {
        parse_one(sql).err().map(|e| e.sqlstate())
    }

    #[test]
    fn chains_count_one_level_per_link() {
        let terms = |n: usize| format!("SELECT {}1", "1 + ".repeat(n));
        assert_eq!(nesting_error(&terms(990)), None);
        assert_eq!(
            nesting_error(&terms(1000)),
            Some(SqlState::STATEMENT_TOO_COMPLEX)
        );
        let union = |n: usize| vec!["SELECT 1"; n].join(" UNION ALL ");
        assert_eq!(nesting_error(&union(990)), None);
        assert_eq!(
            nesting_error(&union(1001)),
            Some(SqlState::STATEMENT_TOO_COMPLEX)
        );
        let joined = |n: usize| format!("SELECT 1 FROM t{}", " JOIN t USING (a)".repeat(n));
        assert_eq!(nesting_error(&joined(990)), None);
        assert_eq!(
            nesting_error(&joined(1001)),
            Some(SqlState::STATEMENT_TOO_COMPLEX)
        );
    }

    #[test]
    fn levels_are_counted_along_one_path_not_summed() {
        // 600 terms twice, side by side: 600 deep, not 1200.
        let half = format!("{}1", "1 + ".repeat(600));
        let sql = format!("SELECT {half}, {half} UNION ALL SELECT {half}, {half}");
        assert_eq!(nesting_error(&sql), None);
    }
}
