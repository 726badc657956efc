//! Why DataFusion could not plan a statement, found by Runnel's own checks so the error has a
//! type, a Postgres SQLSTATE and a position. DataFusion reports these mistakes as
//! `DataFusionError::Plan` with only a message; Runnel never reads that message. When planning
//! fails, the statement is examined here, in the order a reader would look:
//!
//! 1. a relation that does not exist (42P01);
//! 2. a function that does not exist (42883);
//! 3. an aggregate in WHERE (42803);
//! 4. a WHERE clause that is not boolean (42804);
//! 5. an ungrouped column beside GROUP BY or aggregates (42803);
//! 6. an operator that does not exist for its operand types (42883).
//!
//! The checks only ever run on a statement DataFusion already refused, so a check that is
//! coarser than Postgres's analysis can at worst name the wrong cause of a real error; when
//! none applies, the DataFusion error is reported by its variant.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::TableReference;
use datafusion::execution::session_state::SessionState;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{self, Spanned, Visit, Visitor};
use runnel_common::{RunnelError, SqlState};

/// Names DataFusion's SQL planner turns into expressions itself, not through a registry.
const PLANNER_FUNCTIONS: &[&str] = &["unnest", "unnest_outer", "map", "make_map"];

/// The cause of a planning failure, when Runnel can name it.
pub async fn diagnose(
    state: &SessionState,
    statement: &ast::Statement,
    sql: &str,
) -> Option<RunnelError> {
    if let Some(err) = unknown_relation(state, statement, sql) {
        return Some(err);
    }
    if let Some(err) = unknown_function(state, statement, sql) {
        return Some(err);
    }
    let ast::Statement::Query(query) = statement else {
        return None;
    };
    let mut found = Vec::new();
    selects(query, None, &mut found);
    for (with, select) in &found {
        let with = with.as_ref();
        if let Some(err) = aggregate_in_where(state, select, sql) {
            return Some(err);
        }
        if let Some(err) = non_boolean_where(state, with, select, sql).await {
            return Some(err);
        }
        if let Some(err) = ungrouped_column(state, select, sql) {
            return Some(err);
        }
        if let Some(err) = undefined_operator(state, with, select, sql).await {
            return Some(err);
        }
    }
    None
}

/// Every SELECT of `query` in the order a reader meets it (common table expressions first,
/// then both sides of set operations and the subqueries of FROM clauses), each with the
/// common table expressions it can refer to (`visible`).
fn selects(
    query: &ast::Query,
    visible: Option<&ast::With>,
    out: &mut Vec<(Option<ast::With>, ast::Select)>,
) {
    let mut scope = visible.cloned();
    if let Some(with) = &query.with {
        for cte in &with.cte_tables {
            selects(&cte.query, scope.as_ref(), out);
            let scope = scope.get_or_insert_with(|| ast::With {
                with_token: with.with_token.clone(),
                recursive: with.recursive,
                cte_tables: Vec::new(),
            });
            scope.recursive |= with.recursive;
            scope.cte_tables.push(cte.clone());
        }
    }
    set_expression_selects(&query.body, scope.as_ref(), out);
}

fn set_expression_selects(
    body: &ast::SetExpr,
    visible: Option<&ast::With>,
    out: &mut Vec<(Option<ast::With>, ast::Select)>,
) {
    match body {
        ast::SetExpr::Select(select) => {
            out.push((visible.cloned(), select.as_ref().clone()));
            for from in &select.from {
                let factors =
                    std::iter::once(&from.relation).chain(from.joins.iter().map(|j| &j.relation));
                for factor in factors {
                    if let ast::TableFactor::Derived { subquery, .. } = factor {
                        selects(subquery, visible, out);
                    }
                }
            }
        }
        ast::SetExpr::SetOperation { left, right, .. } => {
            set_expression_selects(left, visible, out);
            set_expression_selects(right, visible, out);
        }
        ast::SetExpr::Query(query) => selects(query, visible, out),
        _ => {}
    }
}

fn position(sql: &str, node: &impl Spanned) -> Option<u32> {
    let start = node.span().start;
    (start.line > 0).then(|| runnel_sql::parser::char_position(sql, start.line, start.column))
}

fn plan_error(state: SqlState, message: String, position: Option<u32>) -> RunnelError {
    RunnelError::Plan {
        state,
        message,
        position,
    }
}

/// A name as the planner looks it up: unquoted identifiers fold to lower case.
fn normalized(ident: &ast::Ident) -> String {
    runnel_sql::statement::ident_name(ident)
}

/// Table functions in FROM (`generate_series(1, 3)`, `TUMBLE(s, ...)`): DataFusion lists them
/// with the relations it resolves.
#[derive(Default)]
struct TableFunctionNames(HashSet<String>);

impl Visitor for TableFunctionNames {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &ast::TableFactor) -> ControlFlow<()> {
        if let ast::TableFactor::Table {
            name,
            args: Some(_),
            ..
        } = factor
        {
            self.0.insert(runnel_sql::statement::object_name(name));
        }
        ControlFlow::Continue(())
    }
}

fn unknown_relation(
    state: &SessionState,
    statement: &ast::Statement,
    sql: &str,
) -> Option<RunnelError> {
    let references = state
        .resolve_table_references(&DfStatement::Statement(Box::new(statement.clone())))
        .ok()?;
    let mut table_functions = TableFunctionNames::default();
    let _ = statement.visit(&mut table_functions);
    let missing: TableReference = references.into_iter().find(|reference| {
        if table_functions.0.contains(reference.table()) {
            return false;
        }
        match state.schema_for_ref(reference.clone()) {
            Ok(schema) => !schema.table_exist(reference.table()),
            Err(_) => true,
        }
    })?;
    let mut at = None;
    let _ = ast::visit_relations(statement, |name: &ast::ObjectName| {
        let last = name.0.last().and_then(|part| part.as_ident());
        if last.is_some_and(|ident| normalized(ident) == missing.table()) {
            at = position(sql, name);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    Some(plan_error(
        SqlState::UNDEFINED_TABLE,
        format!("relation \"{missing}\" does not exist"),
        at,
    ))
}

fn is_function(state: &SessionState, name: &str) -> bool {
    state.scalar_functions().contains_key(name)
        || state.aggregate_functions().contains_key(name)
        || state.window_functions().contains_key(name)
        || PLANNER_FUNCTIONS.contains(&name)
}

fn is_aggregate(state: &SessionState, function: &ast::Function) -> bool {
    function.over.is_none()
        && single_name(function).is_some_and(|name| state.aggregate_functions().contains_key(&name))
}

/// A one-part function name, normalised; `None` for qualified names (`pg_catalog.f`).
fn single_name(function: &ast::Function) -> Option<String> {
    match function.name.0.as_slice() {
        [part] => part.as_ident().map(normalized),
        _ => None,
    }
}

fn unknown_function(
    state: &SessionState,
    statement: &ast::Statement,
    sql: &str,
) -> Option<RunnelError> {
    let mut found = None;
    let _ = ast::visit_expressions(statement, |expr: &ast::Expr| {
        if let ast::Expr::Function(function) = expr {
            // Without parentheses (`current_user`) the planner reads a name, not a call.
            let called = !matches!(function.args, ast::FunctionArguments::None);
            if let Some(name) = single_name(function).filter(|_| called) {
                if !is_function(state, &name) {
                    found = Some(plan_error(
                        SqlState::UNDEFINED_FUNCTION,
                        format!("function {name} does not exist"),
                        position(sql, &function.name),
                    ));
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    });
    found
}

/// The first aggregate call in `node` outside its subqueries (whose aggregates are their own).
fn outer_aggregate<V: Visit>(state: &SessionState, node: &V) -> Option<ast::ObjectName> {
    struct Finder<'a> {
        state: &'a SessionState,
        subquery_depth: usize,
    }
    impl Visitor for Finder<'_> {
        type Break = ast::ObjectName;

        fn pre_visit_expr(&mut self, expr: &ast::Expr) -> ControlFlow<ast::ObjectName> {
            match expr {
                ast::Expr::Subquery(_)
                | ast::Expr::Exists { .. }
                | ast::Expr::InSubquery { .. } => self.subquery_depth += 1,
                ast::Expr::Function(f)
                    if self.subquery_depth == 0 && is_aggregate(self.state, f) =>
                {
                    return ControlFlow::Break(f.name.clone())
                }
                _ => {}
            }
            ControlFlow::Continue(())
        }

        fn post_visit_expr(&mut self, expr: &ast::Expr) -> ControlFlow<ast::ObjectName> {
            if matches!(
                expr,
                ast::Expr::Subquery(_) | ast::Expr::Exists { .. } | ast::Expr::InSubquery { .. }
            ) {
                self.subquery_depth -= 1;
            }
            ControlFlow::Continue(())
        }
    }
    match node.visit(&mut Finder {
        state,
        subquery_depth: 0,
    }) {
        ControlFlow::Break(name) => Some(name),
        ControlFlow::Continue(()) => None,
    }
}

fn aggregate_in_where(
    state: &SessionState,
    select: &ast::Select,
    sql: &str,
) -> Option<RunnelError> {
    let name = outer_aggregate(state, select.selection.as_ref()?)?;
    Some(plan_error(
        SqlState::GROUPING_ERROR,
        "aggregate functions are not allowed in WHERE".to_string(),
        position(sql, &name),
    ))
}

/// The types of `exprs` evaluated over `select`'s FROM clause, if that plans.
async fn types_over_from(
    state: &SessionState,
    with: Option<&ast::With>,
    select: &ast::Select,
    exprs: Vec<ast::Expr>,
) -> Option<Vec<DataType>> {
    let mut probe = select.clone();
    probe.projection = exprs
        .into_iter()
        .map(ast::SelectItem::UnnamedExpr)
        .collect();
    probe.selection = None;
    probe.group_by = ast::GroupByExpr::Expressions(vec![], vec![]);
    probe.having = None;
    probe.distinct = None;
    let query = ast::Query {
        with: with.cloned(),
        body: Box::new(ast::SetExpr::Select(Box::new(probe))),
        order_by: None,
        limit_clause: None,
        fetch: None,
        locks: vec![],
        for_clause: None,
        settings: None,
        format_clause: None,
        pipe_operators: vec![],
    };
    let statement = DfStatement::Statement(Box::new(ast::Statement::Query(Box::new(query))));
    let plan = state.statement_to_plan(statement).await.ok()?;
    Some(
        plan.schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect(),
    )
}

fn sql_type_name(data_type: &DataType) -> String {
    let oid = runnel_pgwire::pg_type(data_type).oid;
    crate::system_catalog::types::format_type(oid, None).unwrap_or_else(|| data_type.to_string())
}

async fn non_boolean_where(
    state: &SessionState,
    with: Option<&ast::With>,
    select: &ast::Select,
    sql: &str,
) -> Option<RunnelError> {
    let selection = select.selection.as_ref()?;
    let types = types_over_from(state, with, select, vec![selection.clone()]).await?;
    match types.as_slice() {
        [DataType::Boolean | DataType::Null] => None,
        [other] => Some(plan_error(
            SqlState::DATATYPE_MISMATCH,
            format!(
                "argument of WHERE must be type boolean, not type {}",
                sql_type_name(other)
            ),
            position(sql, selection),
        )),
        _ => None,
    }
}

/// The column a select item or GROUP BY expression names, if it is just a column.
fn column_name(expr: &ast::Expr) -> Option<String> {
    match expr {
        ast::Expr::Identifier(ident) => Some(normalized(ident)),
        ast::Expr::CompoundIdentifier(parts) => parts.last().map(normalized),
        ast::Expr::Nested(inner) => column_name(inner),
        _ => None,
    }
}

fn ungrouped_column(state: &SessionState, select: &ast::Select, sql: &str) -> Option<RunnelError> {
    let ast::GroupByExpr::Expressions(group_by, _) = &select.group_by else {
        return None;
    };
    let aggregated = !group_by.is_empty() || outer_aggregate(state, &select.projection).is_some();
    if !aggregated {
        return None;
    }
    let grouped: HashSet<String> = group_by.iter().filter_map(column_name).collect();
    select.projection.iter().find_map(|item| {
        let expr = match item {
            ast::SelectItem::UnnamedExpr(expr) | ast::SelectItem::ExprWithAlias { expr, .. } => {
                expr
            }
            _ => return None,
        };
        let column = column_name(expr)?;
        (!grouped.contains(&column)).then(|| {
            plan_error(
                SqlState::GROUPING_ERROR,
                format!(
                    "column \"{expr}\" must appear in the GROUP BY clause or be used in an \
                     aggregate function"
                ),
                position(sql, expr),
            )
        })
    })
}

/// The innermost binary operation whose operands plan but which does not.
async fn undefined_operator(
    state: &SessionState,
    with: Option<&ast::With>,
    select: &ast::Select,
    sql: &str,
) -> Option<RunnelError> {
    let mut operations = Vec::new();
    let mut collect = |expr: &ast::Expr| {
        if let ast::Expr::BinaryOp { .. } = expr {
            operations.push(expr.clone());
        }
        ControlFlow::<()>::Continue(())
    };
    let _ = ast::visit_expressions(&select.projection, &mut collect);
    let _ = ast::visit_expressions(&select.selection, &mut collect);
    // Visited parents first: the last ones are the innermost.
    for operation in operations.iter().rev() {
        let ast::Expr::BinaryOp { left, op, right } = operation else {
            continue;
        };
        if types_over_from(state, with, select, vec![operation.clone()])
            .await
            .is_some()
        {
            continue;
        }
        let Some(types) = types_over_from(
            state,
            with,
            select,
            vec![(**left).clone(), (**right).clone()],
        )
        .await
        else {
            continue;
        };
        return Some(plan_error(
            SqlState::UNDEFINED_FUNCTION,
            format!(
                "operator does not exist: {} {op} {}",
                sql_type_name(&types[0]),
                sql_type_name(&types[1])
            ),
            position(sql, operation),
        ));
    }
    None
}
