//! Postgres spellings that DataFusion's planner does not know, rewritten on the parsed statement
//! into what it does, before planning. Client tools (psql's meta-commands, SQLAlchemy, pgjdbc)
//! send catalog queries full of them:
//!
//! - schema-qualified function names (`pg_catalog.format_type(...)`): the `pg_catalog.` prefix
//!   is dropped, since every function Runnel has lives there;
//! - `OPERATOR(pg_catalog.~)`: the operator itself;
//! - `COLLATE pg_catalog.default` and other collations: dropped (Runnel compares bytes, as the
//!   `C` collation does);
//! - casts to Postgres's object-identifier types: `::oid` becomes an unsigned 32-bit integer
//!   (the type Runnel reports as `oid`), `::regclass`, `::regtype`, `::regproc`,
//!   `::regnamespace` and `::regrole` become calls of the `to_*_oid` functions (a name is looked
//!   up, a number passes through), and a reg-type cast to text becomes the object's name;
//! - casts to `bytea`: `bytea_in(x)`, which reads Postgres's hex and escape formats;
//! - casts to catalog-only types (`name`, `"char"`, `int2vector`, `pg_node_tree`, ...): text;
//! - `generate_subscripts(a, 1)`: `unnest(generate_series(1, cardinality(a)))`, the subscripts
//!   of a one-dimensional array;
//! - `ARRAY(SELECT x ... [ORDER BY ...])`: `coalesce((SELECT array_agg(x [ORDER BY ...])
//!   ...), make_array())`;
//! - a correlated scalar subquery over catalog tables that is not aggregated (psql's
//!   `(SELECT collname FROM pg_collation c WHERE c.oid = a.attcollation)`): its value is
//!   aggregated with `first_value`, which DataFusion needs to decorrelate it. Catalog rows are
//!   unique by their keys, so this changes no answer; user queries are left alone;
//! - unnamed SELECT items with the same text (`SELECT name, NULL, NULL`): DataFusion needs
//!   distinct names, so the repeats are aliased [`UNNAMED_ALIAS`]`n`, which the server reports
//!   as `?column?` as Postgres would;
//! - `LIKE`/`ILIKE` with an `ESCAPE` other than backslash: a call of `like_escape(value,
//!   pattern, escape, case_insensitive)`;
//! - `information_schema._pg_expandarray(a)`: `unnest(_pg_expandarray(a))`, records of
//!   `x` and `n`;
//! - `pg_catalog.`-qualified table functions in FROM (`pg_catalog.generate_series(1, 32)`).
//!
//! The functions named here are registered by the server (see `runnel::system_catalog`).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    AccessExpr, ArrayElemTypeDef, BinaryOperator, CastKind, DataType, ExactNumberInfo, Expr,
    Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, GroupByExpr,
    Ident, JoinOperator, LambdaFunction, LambdaFunctionParameter, LambdaSyntax, ObjectName,
    ObjectNamePart, OneOrManyWithParens, OrderBy, OrderByKind, Query, Select, SelectItem, SetExpr,
    Statement, TableAlias, TableAliasColumnDef, TableFactor, TableWithJoins, UnaryOperator, Value,
    VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// The function a cast to each reg-type becomes, and the one that names an object of it.
const REG_TYPES: &[(&str, &str, &str)] = &[
    ("regclass", "to_regclass_oid", "regclass_name"),
    ("regtype", "to_regtype_oid", "format_type"),
    ("regproc", "to_regproc_oid", "regproc_name"),
    ("regprocedure", "to_regproc_oid", "regproc_name"),
    ("regnamespace", "to_regnamespace_oid", "regnamespace_name"),
    ("regrole", "to_regrole_oid", "pg_get_userbyid"),
];

/// Catalog types that Runnel represents as text.
const TEXT_TYPES: &[&str] = &[
    "name",
    "char",
    "int2vector",
    "oidvector",
    "pg_node_tree",
    "aclitem",
    "xid",
    "cid",
    "tid",
    "regconfig",
    "regdictionary",
    "pg_lsn",
    "anyarray",
];

/// The alias prefix of repeated unnamed SELECT items; a column with such a name is reported
/// as `?column?`.
pub const UNNAMED_ALIAS: &str = "__runnel_unnamed_";

/// The prefix of an alias Runnel gives a SELECT item whose Postgres name may repeat another
/// item's (DataFusion needs distinct names): `__runnel_as_<n>_<name>`, reported as `<name>`.
pub const NAMED_ALIAS: &str = "__runnel_as_";

/// The name a client is told for a column aliased `alias` by Runnel's rewrites (`None`: the
/// alias is the user's, or not one of these).
pub fn reported_alias(alias: &str) -> Option<&str> {
    if alias.starts_with(UNNAMED_ALIAS) {
        return Some("?column?");
    }
    let rest = alias.strip_prefix(NAMED_ALIAS)?;
    Some(rest.split_once('_').map_or(rest, |(_, name)| name))
}

/// Rewrites Postgres-only spellings in `statement` (see the module docs). `always_empty`
/// says which catalog tables (by name, lower case) never have rows: a SELECT that inner-joins
/// one returns no rows whatever its expressions say, so they are not planned at all (client
/// tools compare columns of such tables in ways DataFusion cannot type, `polroles = '{0}'`).
pub fn rewrite_postgres_spellings(statement: &mut Statement, always_empty: &dyn Fn(&str) -> bool) {
    let _ = statement.visit(&mut Rewriter { always_empty });
    if let Statement::Query(query) = statement {
        if let SetExpr::Select(select) = query.body.as_mut() {
            name_reg_type_results(select);
        }
    }
}

/// A reg-type value in a query's result is printed as the object's name, as Postgres prints
/// it (`SELECT 'items'::regclass` is `items`, `typ::regtype` is `integer`); inside an
/// expression (`c.oid = 'items'::regclass`) it stays the OID. The column keeps the type's
/// name. Not done where the SELECT groups or is DISTINCT, whose items must match their
/// GROUP BY expressions as written.
fn name_reg_type_results(select: &mut Select) {
    let grouped =
        !matches!(&select.group_by, GroupByExpr::Expressions(exprs, _) if exprs.is_empty());
    if grouped || select.distinct.is_some() || select.having.is_some() {
        return;
    }
    for (index, item) in select.projection.iter_mut().enumerate() {
        let (SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. }) = item else {
            continue;
        };
        let Some((name_fn, oid)) = reg_oid_call(expr) else {
            continue;
        };
        let Expr::Function(function) = &oid else {
            continue;
        };
        let Some((type_name, _, _)) = REG_TYPES
            .iter()
            .find(|(_, to_oid, _)| function.name.to_string() == *to_oid)
        else {
            continue;
        };
        let mut arguments = vec![oid.clone()];
        if name_fn == "format_type" {
            arguments.push(Expr::value(Value::Null));
        }
        let named = call(name_fn, arguments);
        *item = match item {
            SelectItem::ExprWithAlias { alias, .. } => SelectItem::ExprWithAlias {
                expr: named,
                alias: alias.clone(),
            },
            _ => SelectItem::ExprWithAlias {
                expr: named,
                alias: Ident::new(format!("{NAMED_ALIAS}{index}_{type_name}")),
            },
        };
    }
}

struct Rewriter<'a> {
    always_empty: &'a dyn Fn(&str) -> bool,
}

impl VisitorMut for Rewriter<'_> {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        rewrite_expr(expr);
        ControlFlow::Continue(())
    }

    fn post_visit_select(&mut self, select: &mut Select) -> ControlFlow<()> {
        if reads_empty_catalog_table(select, self.always_empty) {
            select_nothing(select);
        }
        name_repeated_items(select);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        order_by_subqueries_as_columns(query);
        ControlFlow::Continue(())
    }

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            args: Some(_),
            alias,
            ..
        } = factor
        {
            strip_pg_catalog(name);
            name_single_column(name, alias.as_mut());
        }
        ControlFlow::Continue(())
    }
}

/// `SELECT a AS x FROM t ORDER BY CASE WHEN b IN (SELECT ...) THEN 0 ELSE 1 END, 1`, which
/// DataFusion does not plan (it takes subqueries in projections, filters and joins only), as
/// `SELECT x FROM (SELECT a AS x, CASE ... END AS __runnel_order_0 FROM t) ORDER BY
/// __runnel_order_0, 1`: each ORDER BY expression becomes a hidden column of the query, which
/// an outer query sorts by. Grafana's table picker sorts so. Only done where every output
/// column has a name the outer query can use.
fn order_by_subqueries_as_columns(query: &mut Query) {
    let Some(OrderBy {
        kind: OrderByKind::Expressions(order),
        ..
    }) = query.order_by.as_mut()
    else {
        return;
    };
    if !order.iter().any(|o| has_subquery(&o.expr)) {
        return;
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    if select.distinct.is_some() {
        return;
    }
    let mut names = Vec::new();
    for item in &select.projection {
        let name = match item {
            SelectItem::ExprWithAlias { alias, .. } => alias.clone(),
            SelectItem::UnnamedExpr(Expr::Identifier(ident)) => ident.clone(),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => match parts.last() {
                Some(last) => last.clone(),
                None => return,
            },
            _ => return,
        };
        names.push(name);
    }
    let is_output = |e: &Expr| match e {
        // A position, or an output column's name: the outer query has them as they are.
        Expr::Value(v) => matches!(v.value, Value::Number(..)),
        Expr::Identifier(ident) => names.iter().any(|n| n.value == ident.value),
        _ => false,
    };
    for (index, item) in order.iter_mut().enumerate() {
        if is_output(&item.expr) {
            continue;
        }
        let alias = Ident::new(format!("__runnel_order_{index}"));
        let expr = std::mem::replace(&mut item.expr, Expr::Identifier(alias.clone()));
        select
            .projection
            .push(SelectItem::ExprWithAlias { expr, alias });
    }
    let Some(Statement::Query(mut outer)) = Parser::parse_sql(
        &PostgreSqlDialect {},
        "SELECT 1 FROM (SELECT 1) AS __runnel_ordered",
    )
    .ok()
    .and_then(|mut statements| statements.pop()) else {
        return;
    };
    let SetExpr::Select(outer_select) = outer.body.as_mut() else {
        return;
    };
    outer_select.projection = names
        .into_iter()
        .map(|name| SelectItem::UnnamedExpr(Expr::Identifier(name)))
        .collect();
    let Some(TableWithJoins {
        relation: TableFactor::Derived { subquery, .. },
        ..
    }) = outer_select.from.first_mut()
    else {
        return;
    };
    // The query's own select goes inside; the outer select takes its place. Its WITH, ORDER
    // BY and LIMIT stay on the query (a CTE is visible in the nested select).
    std::mem::swap(&mut subquery.body, &mut query.body);
    std::mem::swap(&mut query.body, &mut outer.body);
}

/// `WHEN x IN (SELECT v ...)` as `WHEN (SELECT count(*) FROM (SELECT v ...) AS
/// __runnel_in (__runnel_v) WHERE __runnel_v = x) > 0`: DataFusion runs an IN subquery in a
/// filter only, and a correlated count anywhere. The two differ only where IN is NULL (no
/// match, and a NULL on either side), which a WHEN treats as false, like the count.
fn membership_as_count(condition: &Expr) -> Option<Expr> {
    let Expr::InSubquery {
        expr,
        subquery,
        negated: false,
    } = condition
    else {
        return None;
    };
    let mut count = parse_expr(
        "(SELECT count(*) FROM (SELECT 1) AS __runnel_in (__runnel_v) WHERE __runnel_v = 1) > 0",
    )?;
    let Expr::BinaryOp { left, .. } = &mut count else {
        return None;
    };
    let Expr::Subquery(query) = left.as_mut() else {
        return None;
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    if let Some(Expr::BinaryOp { right, .. }) = select.selection.as_mut() {
        *right = expr.clone();
    }
    let Some(TableWithJoins {
        relation: TableFactor::Derived {
            subquery: inner, ..
        },
        ..
    }) = select.from.first_mut()
    else {
        return None;
    };
    *inner = subquery.clone();
    Some(count)
}

/// Whether `expr` holds a subquery.
fn has_subquery(expr: &Expr) -> bool {
    use datafusion::sql::sqlparser::ast::visit_expressions;
    visit_expressions(expr, |e| match e {
        Expr::Subquery(_) | Expr::InSubquery { .. } | Expr::Exists { .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// Set-returning functions in FROM whose rows are one value of a base type.
const SINGLE_COLUMN_FUNCTIONS: &[&str] = &[
    "generate_series",
    "generate_subscripts",
    "string_to_array",
    "unnest",
];

/// `FROM generate_series(1, 3) AS i`: as in Postgres, the one column of a function returning
/// a base type is named by the table alias (`i`), so `SELECT i` and `s[i]` find it.
fn name_single_column(name: &ObjectName, alias: Option<&mut TableAlias>) {
    let Some(alias) = alias else {
        return;
    };
    let function = name
        .0
        .last()
        .and_then(|part| part.as_ident())
        .map(|ident| ident.value.to_lowercase());
    let single = function.is_some_and(|f| SINGLE_COLUMN_FUNCTIONS.contains(&f.as_str()));
    if single && alias.columns.is_empty() {
        alias.columns = vec![TableAliasColumnDef {
            name: alias.name.clone(),
            data_type: None,
        }];
    }
}

/// The catalog table a FROM item names (`pg_catalog.x`, `information_schema.x`, or an
/// unqualified `pg_x`), lower case.
fn catalog_table(factor: &TableFactor) -> Option<String> {
    let TableFactor::Table {
        name, args: None, ..
    } = factor
    else {
        return None;
    };
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(|i| i.value.to_ascii_lowercase()))
        .collect();
    match parts.as_slice() {
        [schema, table] if schema == "pg_catalog" || schema == "information_schema" => {
            Some(table.clone())
        }
        [table] if table.starts_with("pg_") => Some(table.clone()),
        _ => None,
    }
}

/// Whether the SELECT inner-joins an always-empty catalog table and computes no aggregate
/// (an aggregate over no rows still gives a row).
fn reads_empty_catalog_table(select: &Select, always_empty: &dyn Fn(&str) -> bool) -> bool {
    let empty = |factor: &TableFactor| catalog_table(factor).is_some_and(|t| always_empty(&t));
    let inner = |op: &JoinOperator| {
        matches!(
            op,
            JoinOperator::Join(_) | JoinOperator::Inner(_) | JoinOperator::CrossJoin(_)
        )
    };
    let found = select.from.iter().any(|from| {
        empty(&from.relation)
            || from
                .joins
                .iter()
                .any(|join| inner(&join.join_operator) && empty(&join.relation))
    });
    if !found || !matches!(select.group_by, GroupByExpr::Expressions(ref e, _) if e.is_empty()) {
        return false;
    }
    !select.projection.iter().any(calls_aggregate)
}

/// Whether a SELECT item calls an aggregate function itself (subqueries in it aside).
fn calls_aggregate(item: &SelectItem) -> bool {
    struct WithoutSubqueries;
    impl VisitorMut for WithoutSubqueries {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            if matches!(
                expr,
                Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. }
            ) {
                *expr = Expr::value(Value::Null);
            }
            ControlFlow::Continue(())
        }
    }
    let mut item = item.clone();
    let _ = item.visit(&mut WithoutSubqueries);
    let text = item.to_string().to_ascii_lowercase();
    AGGREGATES
        .iter()
        .any(|name| text.contains(&format!("{name}(")))
}

/// Turns a SELECT into one that returns no rows, with the same column names.
fn select_nothing(select: &mut Select) {
    let mut names: Vec<String> = Vec::new();
    for (index, item) in select.projection.iter_mut().enumerate() {
        let name = match item {
            SelectItem::ExprWithAlias { alias, .. } => alias.value.clone(),
            SelectItem::UnnamedExpr(Expr::Identifier(ident)) => ident.value.clone(),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => {
                parts.last().map_or_else(String::new, |i| i.value.clone())
            }
            SelectItem::UnnamedExpr(Expr::Function(f)) => f.name.to_string(),
            SelectItem::UnnamedExpr(_) => format!("{UNNAMED_ALIAS}{index}"),
            // `*` stays: its columns come from the FROM tables, which are unchanged.
            _ => continue,
        };
        // DataFusion needs distinct names; a repeat is reported as `?column?`.
        let name = if names.contains(&name) {
            format!("{UNNAMED_ALIAS}{index}")
        } else {
            name
        };
        names.push(name.clone());
        *item = SelectItem::ExprWithAlias {
            expr: Expr::value(Value::Null),
            alias: Ident::with_quote('"', name),
        };
    }
    select.selection = Some(Expr::value(Value::Boolean(false)));
    select.having = None;
}

/// Aliases every unnamed SELECT item whose text repeats an earlier one.
fn name_repeated_items(select: &mut Select) {
    let mut seen: Vec<String> = Vec::new();
    for (index, item) in select.projection.iter_mut().enumerate() {
        if let SelectItem::UnnamedExpr(expr) = item {
            // DataFusion names a cast after what it casts: `k` and `k::int` collide too.
            let mut named = &*expr;
            while let Expr::Cast { expr: inner, .. } | Expr::Nested(inner) = named {
                named = inner;
            }
            let text = named.to_string();
            if seen.contains(&text) {
                let expr = std::mem::replace(expr, Expr::value(Value::Null));
                *item = SelectItem::ExprWithAlias {
                    expr,
                    alias: Ident::new(format!("{UNNAMED_ALIAS}{index}")),
                };
            } else {
                seen.push(text);
            }
        }
    }
}

/// Parses an expression Runnel generated; `None` if it does not parse (then the original
/// stays, and DataFusion reports what it cannot plan).
fn parse_expr(text: &str) -> Option<Expr> {
    crate::parser::parse_expression(text).ok()
}

/// `ARRAY(subquery)` as a scalar subquery aggregating its one column with `array_agg`, the
/// subquery's ORDER BY moved into the aggregate.
fn array_subquery(function: &Function) -> Option<Expr> {
    let [ObjectNamePart::Identifier(ident)] = function.name.0.as_slice() else {
        return None;
    };
    if !ident.value.eq_ignore_ascii_case("array") {
        return None;
    }
    let FunctionArguments::Subquery(query) = &function.args else {
        return None;
    };
    if let Some(transform) = array_over_unnest(query) {
        return Some(transform);
    }
    let mut query = query.as_ref().clone();
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    let [SelectItem::UnnamedExpr(item) | SelectItem::ExprWithAlias { expr: item, .. }] =
        select.projection.as_slice()
    else {
        return None;
    };
    let order = match query.order_by.take() {
        Some(OrderBy {
            kind: OrderByKind::Expressions(exprs),
            ..
        }) => exprs
            .iter()
            .map(|o| {
                // `ORDER BY 1` names the one column.
                let key = match &o.expr {
                    Expr::Value(v) if v.value == Value::Number("1".to_string(), false) => {
                        item.to_string()
                    }
                    other => other.to_string(),
                };
                format!("{key}{}", o.options)
            })
            .collect::<Vec<_>>(),
        Some(_) => return None,
        None => Vec::new(),
    };
    let aggregate = if order.is_empty() {
        format!("array_agg({item})")
    } else {
        format!("array_agg({item} ORDER BY {})", order.join(", "))
    };
    select.projection = vec![SelectItem::UnnamedExpr(parse_expr(&aggregate)?)];
    // No rows make an empty array, not NULL.
    Some(call(
        "coalesce",
        vec![Expr::Subquery(Box::new(query)), call("make_array", vec![])],
    ))
}

/// `ARRAY(SELECT f(x) FROM unnest(a) x)` (psql's `\d+` reads a table's options so) as
/// `coalesce(array_transform(a, x -> f(x)), [])`: DataFusion cannot unnest a column of the
/// outer query in FROM, but maps an array with a lambda.
fn array_over_unnest(query: &Query) -> Option<Expr> {
    if query.with.is_some() || query.order_by.is_some() || query.limit_clause.is_some() {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let [SelectItem::UnnamedExpr(item) | SelectItem::ExprWithAlias { expr: item, .. }] =
        select.projection.as_slice()
    else {
        return None;
    };
    if select.selection.is_some() || select.having.is_some() || select.distinct.is_some() {
        return None;
    }
    let [from] = select.from.as_slice() else {
        return None;
    };
    if !from.joins.is_empty() {
        return None;
    }
    // `unnest(a) x` is sqlparser's UNNEST factor; `pg_catalog.unnest(a) x` a table function.
    let (array, alias) = match &from.relation {
        TableFactor::UNNEST {
            alias: Some(alias),
            array_exprs,
            with_offset: false,
            with_ordinality: false,
            ..
        } => match array_exprs.as_slice() {
            [array] => (array, alias),
            _ => return None,
        },
        TableFactor::Table {
            name,
            args: Some(args),
            alias: Some(alias),
            ..
        } => {
            let is_unnest = name
                .0
                .last()
                .and_then(|part| part.as_ident())
                .is_some_and(|ident| ident.value.eq_ignore_ascii_case("unnest"));
            match args.args.as_slice() {
                [FunctionArg::Unnamed(FunctionArgExpr::Expr(array))] if is_unnest => (array, alias),
                _ => return None,
            }
        }
        _ => return None,
    };
    // The element is named by the alias, or by its one column (`unnest(a) x(x)`).
    let element = match alias.columns.as_slice() {
        [] => alias.name.clone(),
        [column] => column.name.clone(),
        _ => return None,
    };
    let lambda = Expr::Lambda(LambdaFunction {
        params: OneOrManyWithParens::One(LambdaFunctionParameter {
            name: element,
            data_type: None,
        }),
        body: Box::new(item.clone()),
        syntax: LambdaSyntax::Arrow,
    });
    Some(call(
        "coalesce",
        vec![
            call("array_transform", vec![array.clone(), lambda]),
            call("make_array", vec![]),
        ],
    ))
}

/// Names of aggregate functions a catalog subquery may already use.
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "first_value",
    "last_value",
];

/// A scalar subquery over catalog tables whose one value is not aggregated, with its value
/// wrapped in `first_value` (see the module docs).
fn aggregate_catalog_subquery(query: &mut Query) {
    if query.limit_clause.is_some() || query.order_by.is_some() {
        return;
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    if select.from.is_empty()
        || !matches!(select.group_by, GroupByExpr::Expressions(ref e, _) if e.is_empty())
        || select.having.is_some()
        || select.distinct.is_some()
        || !select.from.iter().all(reads_catalog)
    {
        return;
    }
    let [SelectItem::UnnamedExpr(item) | SelectItem::ExprWithAlias { expr: item, .. }] =
        select.projection.as_mut_slice()
    else {
        return;
    };
    let text = item.to_string().to_ascii_lowercase();
    if AGGREGATES
        .iter()
        .any(|name| text.contains(&format!("{name}(")))
    {
        return;
    }
    if let Some(aggregated) = parse_expr(&format!("first_value({item})")) {
        *item = aggregated;
    }
}

/// Whether a FROM item reads only `pg_catalog` / `information_schema` tables.
fn reads_catalog(from: &TableWithJoins) -> bool {
    let is_catalog = |factor: &TableFactor| match factor {
        TableFactor::Table {
            name, args: None, ..
        } => {
            let parts: Vec<String> = name
                .0
                .iter()
                .filter_map(|p| p.as_ident().map(|i| i.value.to_ascii_lowercase()))
                .collect();
            match parts.as_slice() {
                [schema, _] => schema == "pg_catalog" || schema == "information_schema",
                [table] => table.starts_with("pg_"),
                _ => false,
            }
        }
        _ => false,
    };
    is_catalog(&from.relation) && from.joins.iter().all(|j| is_catalog(&j.relation))
}

/// `expr [NOT] [I]LIKE pattern ESCAPE 'c'` with an escape other than backslash, as a call.
fn like_with_escape(expr: &Expr) -> Option<Expr> {
    let (negated, value, pattern, escape, insensitive) = match expr {
        Expr::Like {
            negated,
            any: false,
            expr,
            pattern,
            escape_char: Some(escape),
        } => (*negated, expr, pattern, escape, false),
        Expr::ILike {
            negated,
            any: false,
            expr,
            pattern,
            escape_char: Some(escape),
        } => (*negated, expr, pattern, escape, true),
        _ => return None,
    };
    if matches!(&escape.value, Value::SingleQuotedString(s) if s == "\\") {
        return None;
    }
    let call = format!(
        "like_escape({value}, {pattern}, {escape}, {insensitive})",
        escape = escape.value
    );
    let call = parse_expr(&call)?;
    Some(if negated {
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr: Box::new(Expr::Nested(Box::new(call))),
        }
    } else {
        call
    })
}

fn rewrite_expr(expr: &mut Expr) {
    if let Some(call) = like_with_escape(expr) {
        *expr = call;
        return;
    }
    if let Expr::Case {
        operand: None,
        conditions,
        ..
    } = expr
    {
        for when in conditions.iter_mut() {
            if let Some(count) = membership_as_count(&when.condition) {
                when.condition = count;
            }
        }
    }
    match expr {
        Expr::Function(function) => {
            strip_pg_catalog(&mut function.name);
            if let Some(record) = row_constructor(function) {
                *expr = record;
            } else if let Some(expanded) = expand_array(function) {
                *expr = expanded;
            } else if let Some(subscripts) = generate_subscripts(function) {
                *expr = subscripts;
            } else if let Some(subquery) = array_subquery(function) {
                *expr = subquery;
            }
        }
        Expr::Subquery(query) => aggregate_catalog_subquery(query),
        // `alias.column[i]`: a qualified column then a subscript (a record's field would be
        // written `(record).field` in Postgres).
        Expr::CompoundFieldAccess { root, access_chain }
            if matches!(
                root.as_ref(),
                Expr::Identifier(_) | Expr::CompoundIdentifier(_)
            ) && matches!(
                access_chain.first(),
                Some(AccessExpr::Dot(Expr::Identifier(_)))
            ) =>
        {
            let mut parts = match std::mem::replace(root.as_mut(), Expr::value(Value::Null)) {
                Expr::Identifier(ident) => vec![ident],
                Expr::CompoundIdentifier(idents) => idents,
                _ => unreachable!("matched above"),
            };
            let mut rest = Vec::new();
            for access in std::mem::take(access_chain) {
                match access {
                    AccessExpr::Dot(Expr::Identifier(field)) if rest.is_empty() => {
                        parts.push(field)
                    }
                    other => rest.push(other),
                }
            }
            let column = Expr::CompoundIdentifier(parts);
            *expr = if rest.is_empty() {
                column
            } else {
                Expr::CompoundFieldAccess {
                    root: Box::new(Expr::Nested(Box::new(column))),
                    access_chain: rest,
                }
            };
        }
        // `(record).field`: `get_field(record, 'field')`, one access at a time.
        Expr::CompoundFieldAccess { root, access_chain }
            if matches!(
                access_chain.first(),
                Some(AccessExpr::Dot(Expr::Identifier(_)))
            ) =>
        {
            let mut current = std::mem::replace(root.as_mut(), Expr::value(Value::Null));
            let mut rest = Vec::new();
            for access in std::mem::take(access_chain) {
                match access {
                    AccessExpr::Dot(Expr::Identifier(field)) if rest.is_empty() => {
                        let name = Expr::value(Value::SingleQuotedString(
                            field.value.to_ascii_lowercase(),
                        ));
                        current = call("get_field", vec![current, name]);
                    }
                    other => rest.push(other),
                }
            }
            *expr = if rest.is_empty() {
                current
            } else {
                Expr::CompoundFieldAccess {
                    root: Box::new(current),
                    access_chain: rest,
                }
            };
        }
        Expr::BinaryOp { op, .. } => {
            if let BinaryOperator::PGCustomBinaryOperator(parts) = op {
                if let Some(plain) = plain_operator(parts) {
                    *op = plain;
                }
            }
        }
        Expr::Collate { expr: inner, .. } => {
            let inner = std::mem::replace(inner.as_mut(), Expr::value(Value::Null));
            *expr = inner;
        }
        Expr::Cast {
            kind,
            expr: inner,
            data_type,
            ..
        } => {
            if let Some(text_type) = crate::ddl::text_type(data_type) {
                // Runnel keeps JSON, JSONB and UUID values as tagged text; the input function
                // checks and normalises it.
                let argument = std::mem::replace(inner.as_mut(), Expr::value(Value::Null));
                *expr = call(
                    crate::text_type_casts::function_name(text_type),
                    vec![argument],
                );
            } else if matches!(
                data_type,
                DataType::Numeric(ExactNumberInfo::None)
                    | DataType::Decimal(ExactNumberInfo::None)
                    | DataType::Dec(ExactNumberInfo::None)
            ) && matches!(inner.as_ref(), Expr::Value(v)
                if matches!(&v.value, Value::Number(n, _) if n.contains(['.', 'e', 'E'])))
            {
                // A decimal literal is already an exact numeric of its own precision and
                // scale; DataFusion's bare NUMERIC is (38, 10) and would round
                // `1.123456789012345::numeric`, which Postgres keeps whole.
                let literal = std::mem::replace(inner.as_mut(), Expr::value(Value::Null));
                *expr = Expr::Nested(Box::new(literal));
            } else if is_float_type(data_type)
                && matches!(inner.as_ref(), Expr::Value(v) if matches!(&v.value, Value::Number(..)))
            {
                // `1e100::float8` reads the digits as a float, exactly as Postgres does; planned
                // as a numeric first, it would round twice (or not fit a decimal at all).
                if let Expr::Value(v) = inner.as_mut() {
                    if let Value::Number(digits, _) = &v.value {
                        v.value = Value::SingleQuotedString(digits.clone());
                    }
                }
            } else if matches!(data_type, DataType::Bytea) {
                // Postgres reads `'\\x...'::bytea` as hex; Arrow's cast keeps the text's bytes.
                let argument = std::mem::replace(inner.as_mut(), Expr::value(Value::Null));
                *expr = call("bytea_in", vec![argument]);
            } else if let Some(function) = reg_type_function(data_type) {
                let argument = std::mem::replace(inner.as_mut(), Expr::value(Value::Null));
                *expr = call(function, vec![argument]);
            } else if let Some((name_fn, argument)) = reg_oid_call(inner).filter(|_| {
                is_text_type(data_type) && matches!(kind, CastKind::DoubleColon | CastKind::Cast)
            }) {
                // `'t'::regclass::text` and `typ::regtype::text` give the object's name.
                let mut arguments = vec![argument];
                if name_fn == "format_type" {
                    arguments.push(Expr::value(Value::Null));
                }
                *expr = call(name_fn, arguments);
            } else {
                normalise_type(data_type);
            }
        }
        _ => {}
    }
}

/// `real`, `double precision` and their other spellings.
pub fn is_float_type(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Float(_)
            | DataType::Float4
            | DataType::Float8
            | DataType::Float32
            | DataType::Float64
            | DataType::Real
            | DataType::Double(_)
            | DataType::DoublePrecision
    )
}

/// `ROW(a, b)`, a record whose fields Postgres names `f1`, `f2`, ... (what `row_to_json`
/// shows), as `runnel_row('f1', a, 'f2', b)`.
fn row_constructor(function: &Function) -> Option<Expr> {
    if function.name.0.len() != 1 || !function.name.to_string().eq_ignore_ascii_case("row") {
        return None;
    }
    let FunctionArguments::List(list) = &function.args else {
        return None;
    };
    let mut arguments = Vec::with_capacity(list.args.len() * 2);
    for (index, argument) in list.args.iter().enumerate() {
        let FunctionArg::Unnamed(FunctionArgExpr::Expr(value)) = argument else {
            return None;
        };
        arguments.push(Expr::value(Value::SingleQuotedString(format!(
            "f{}",
            index + 1
        ))));
        arguments.push(value.clone());
    }
    Some(call(crate::whole_row::ROW_FUNCTION, arguments))
}

/// `information_schema._pg_expandarray(a)`, the set of (element `x`, subscript `n`) records
/// pgjdbc reads key columns with, as `unnest(_pg_expandarray(a))` over a list of structs.
fn expand_array(function: &mut Function) -> Option<Expr> {
    let [ObjectNamePart::Identifier(schema), ObjectNamePart::Identifier(ident)] =
        function.name.0.as_slice()
    else {
        return None;
    };
    if !schema.value.eq_ignore_ascii_case("information_schema")
        || !ident.value.eq_ignore_ascii_case("_pg_expandarray")
    {
        return None;
    }
    function.name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new(
        "_pg_expandarray",
    ))]);
    Some(call("unnest", vec![Expr::Function(function.clone())]))
}

/// `generate_subscripts(array, 1)` as `unnest(generate_series(1, cardinality(array)))`.
fn generate_subscripts(function: &Function) -> Option<Expr> {
    let [ObjectNamePart::Identifier(ident)] = function.name.0.as_slice() else {
        return None;
    };
    if !ident.value.eq_ignore_ascii_case("generate_subscripts") {
        return None;
    }
    let FunctionArguments::List(list) = &function.args else {
        return None;
    };
    let array = match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(array)), FunctionArg::Unnamed(_)] => array,
        _ => return None,
    };
    let length = Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(call("cardinality", vec![array.clone()])),
        data_type: DataType::BigInt(None),
        array: false,
        format: None,
    };
    let one = Expr::value(Value::Number("1".to_string(), false));
    Some(call(
        "unnest",
        vec![call("generate_series", vec![one, length])],
    ))
}

/// Drops a leading `pg_catalog.` from a function name.
fn strip_pg_catalog(name: &mut ObjectName) {
    if name.0.len() == 2 {
        let is_pg_catalog = matches!(&name.0[0], ObjectNamePart::Identifier(ident)
            if ident.value.eq_ignore_ascii_case("pg_catalog"));
        if is_pg_catalog {
            name.0.remove(0);
        }
    }
}

/// The built-in operator that `OPERATOR(pg_catalog.op)` names.
fn plain_operator(parts: &[String]) -> Option<BinaryOperator> {
    let (op, schema) = parts.split_last()?;
    let in_pg_catalog = match schema {
        [] => true,
        [schema] => schema.eq_ignore_ascii_case("pg_catalog"),
        _ => false,
    };
    if !in_pg_catalog {
        return None;
    }
    Some(match op.as_str() {
        "~" => BinaryOperator::PGRegexMatch,
        "~*" => BinaryOperator::PGRegexIMatch,
        "!~" => BinaryOperator::PGRegexNotMatch,
        "!~*" => BinaryOperator::PGRegexNotIMatch,
        "~~" => BinaryOperator::PGLikeMatch,
        "~~*" => BinaryOperator::PGILikeMatch,
        "!~~" => BinaryOperator::PGNotLikeMatch,
        "!~~*" => BinaryOperator::PGNotILikeMatch,
        "=" => BinaryOperator::Eq,
        "<>" => BinaryOperator::NotEq,
        "<" => BinaryOperator::Lt,
        "<=" => BinaryOperator::LtEq,
        ">" => BinaryOperator::Gt,
        ">=" => BinaryOperator::GtEq,
        "+" => BinaryOperator::Plus,
        "-" => BinaryOperator::Minus,
        "*" => BinaryOperator::Multiply,
        "/" => BinaryOperator::Divide,
        "||" => BinaryOperator::StringConcat,
        _ => return None,
    })
}

/// The `to_*_oid` function a cast to this reg-type becomes.
fn reg_type_function(data_type: &DataType) -> Option<&'static str> {
    let name = custom_type_name(data_type)?;
    REG_TYPES
        .iter()
        .find(|(reg, _, _)| *reg == name)
        .map(|(_, to_oid, _)| *to_oid)
}

/// Replaces catalog-only and schema-qualified types, also as array elements, by types
/// DataFusion plans: `oid` as an unsigned 32-bit integer, `name` and friends as text,
/// `pg_catalog.int4` as `int4`; a reg-type inside an array is its OID.
fn normalise_type(data_type: &mut DataType) {
    if let DataType::Array(
        ArrayElemTypeDef::SquareBracket(element, _)
        | ArrayElemTypeDef::AngleBracket(element)
        | ArrayElemTypeDef::Parenthesis(element),
    ) = data_type
    {
        normalise_type(element);
        return;
    }
    if let Some(builtin) = pg_catalog_builtin_type(data_type) {
        *data_type = builtin;
        return;
    }
    let Some(name) = custom_type_name(data_type) else {
        return;
    };
    if name == "oid" || REG_TYPES.iter().any(|(reg, _, _)| *reg == name) {
        *data_type = DataType::IntUnsigned(None);
    } else if TEXT_TYPES.contains(&name.as_str()) {
        *data_type = DataType::Text;
    }
}

/// A standard type spelled with its schema (`pg_catalog.text`, `pg_catalog.int4`), as the
/// type sqlparser knows it.
fn pg_catalog_builtin_type(data_type: &DataType) -> Option<DataType> {
    let DataType::Custom(name, modifiers) = data_type else {
        return None;
    };
    let [ObjectNamePart::Identifier(schema), ObjectNamePart::Identifier(ident)] = name.0.as_slice()
    else {
        return None;
    };
    if !modifiers.is_empty() || !schema.value.eq_ignore_ascii_case("pg_catalog") {
        return None;
    }
    let parsed = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&ident.value)
        .and_then(|mut p| p.parse_data_type())
        .ok()?;
    (!matches!(parsed, DataType::Custom(..) | DataType::Regclass)).then_some(parsed)
}

/// The lower-cased name of a user-defined (non-SQL-standard) type, without `pg_catalog.`.
fn custom_type_name(data_type: &DataType) -> Option<String> {
    if matches!(data_type, DataType::Regclass) {
        return Some("regclass".to_string());
    }
    let DataType::Custom(name, modifiers) = data_type else {
        return None;
    };
    if !modifiers.is_empty() {
        return None;
    }
    let last = match name.0.as_slice() {
        [ObjectNamePart::Identifier(ident)] => ident,
        [ObjectNamePart::Identifier(schema), ObjectNamePart::Identifier(ident)]
            if schema.value.eq_ignore_ascii_case("pg_catalog") =>
        {
            ident
        }
        _ => return None,
    };
    Some(last.value.to_ascii_lowercase())
}

fn is_text_type(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Text | DataType::Varchar(_) | DataType::CharacterVarying(_) | DataType::String(_)
    ) || custom_type_name(data_type).is_some_and(|name| name == "name")
}

/// For a call made from a reg-type cast, the function naming its object and its argument.
fn reg_oid_call(expr: &Expr) -> Option<(&'static str, Expr)> {
    let Expr::Function(function) = expr else {
        return None;
    };
    let [ObjectNamePart::Identifier(ident)] = function.name.0.as_slice() else {
        return None;
    };
    let (_, _, name_fn) = REG_TYPES
        .iter()
        .find(|(_, to_oid, _)| *to_oid == ident.value)?;
    let FunctionArguments::List(list) = &function.args else {
        return None;
    };
    match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(argument))] => {
            Some((name_fn, call(ident.value.as_str(), vec![argument.clone()])))
        }
        _ => None,
    }
}

/// A plain call `name(arguments)`.
/// `name(arguments...)`.
pub fn call(name: &str, arguments: Vec<Expr>) -> Expr {
    Expr::Function(Function {
        name: ObjectName(vec![ObjectNamePart::Identifier(Ident::new(name))]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: arguments
                .into_iter()
                .map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a)))
                .collect(),
            clauses: Vec::new(),
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    #[test]
    fn subscripts_of_qualified_columns() {
        assert_eq!(
            rewritten("SELECT tmp.a[tmp.b - 1], con.confkey[pos.n] FROM t"),
            "SELECT (tmp.a)[tmp.b - 1], (con.confkey)[pos.n] FROM t"
        );
    }

    #[test]
    fn array_over_unnest_of_an_outer_column_is_array_transform() {
        assert_eq!(
            rewritten(
                "SELECT array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x) \
                 FROM pg_class tc"
            ),
            "SELECT coalesce(array_transform(tc.reloptions, x -> 'toast.' || x), make_array()) \
             FROM pg_class tc"
        );
    }

    fn rewritten(sql: &str) -> String {
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .expect("test SQL parses")
            .remove(0);
        rewrite_postgres_spellings(&mut statement, &|table| table == "pg_policy");
        statement.to_string()
    }

    #[test]
    fn membership_in_a_case_becomes_a_count() {
        assert_eq!(
            rewritten("SELECT CASE WHEN a IN (SELECT c FROM u) THEN 0 ELSE 1 END FROM t"),
            "SELECT CASE WHEN (SELECT count(*) FROM (SELECT c FROM u) AS __runnel_in (__runnel_v) \
             WHERE __runnel_v = a) > 0 THEN 0 ELSE 1 END FROM t"
        );
    }

    #[test]
    fn order_by_subqueries_become_hidden_columns() {
        assert_eq!(
            rewritten(
                "SELECT a AS x, b FROM t ORDER BY CASE WHEN a IN (SELECT c FROM u) THEN 0 ELSE 1 \
                 END, 1, x DESC LIMIT 3"
            ),
            "SELECT x, b FROM (SELECT a AS x, b, CASE WHEN (SELECT count(*) FROM (SELECT c FROM u) \
             AS __runnel_in (__runnel_v) WHERE __runnel_v = a) > 0 THEN 0 ELSE 1 END AS \
             __runnel_order_0 FROM t) AS __runnel_ordered ORDER BY __runnel_order_0, 1, x DESC \
             LIMIT 3"
        );
        // Without a subquery in ORDER BY nothing changes.
        assert_eq!(
            rewritten("SELECT a AS x FROM t ORDER BY a + 1"),
            "SELECT a AS x FROM t ORDER BY a + 1"
        );
    }

    #[test]
    fn single_column_functions_in_from_are_named_by_their_alias() {
        assert_eq!(
            rewritten("SELECT s[i] FROM generate_series(1, 2) AS i, string_to_array('a,b', ',') s"),
            "SELECT s[i] FROM generate_series(1, 2) AS i (i), string_to_array('a,b', ',') s (s)"
        );
        // Column aliases given are kept, and other relations keep their columns.
        assert_eq!(
            rewritten("SELECT v FROM generate_series(1, 2) AS t(v), items AS i"),
            "SELECT v FROM generate_series(1, 2) AS t (v), items AS i"
        );
    }

    #[test]
    fn rewrites_catalog_spellings() {
        assert_eq!(
            rewritten(
                "SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_class c \
                 WHERE c.relname OPERATOR(pg_catalog.~) '^(items)$' COLLATE pg_catalog.default"
            ),
            "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_class c \
             WHERE c.relname ~ '^(items)$'"
        );
        assert_eq!(
            rewritten("SELECT 'items'::regclass, c.oid::pg_catalog.regclass::text, t::regtype::text, x::oid, n::name"),
            // A reg-type result column prints the name, under the type's name.
            "SELECT regclass_name(to_regclass_oid('items')) AS __runnel_as_0_regclass, \
             regclass_name(to_regclass_oid(c.oid)), format_type(to_regtype_oid(t), NULL), \
             x::INT UNSIGNED, n::TEXT"
        );
        assert_eq!(
            rewritten("SELECT c.relname FROM pg_class c WHERE c.oid = 'items'::regclass"),
            "SELECT c.relname FROM pg_class c WHERE c.oid = to_regclass_oid('items')"
        );
    }

    #[test]
    fn selects_from_empty_catalog_tables_select_nothing() {
        assert_eq!(
            rewritten("SELECT pol.polname, pol.polroles = '{0}' FROM pg_catalog.pg_policy pol WHERE pol.polrelid = '1'"),
            "SELECT NULL AS \"polname\", NULL AS \"__runnel_unnamed_1\" FROM pg_catalog.pg_policy pol WHERE false"
        );
        // A LEFT JOIN of an empty table keeps the rows of the other side.
        let left = "SELECT c.relname FROM pg_catalog.pg_class AS c LEFT JOIN pg_catalog.pg_policy AS p ON p.polrelid = c.oid";
        assert_eq!(rewritten(left), left);
    }

    #[test]
    fn array_subqueries_aggregate() {
        assert_eq!(
            rewritten("SELECT ARRAY(SELECT b.rolname FROM pg_roles b WHERE b.oid = r.oid ORDER BY 1) FROM pg_roles r"),
            "SELECT coalesce((SELECT array_agg(b.rolname ORDER BY b.rolname) FROM pg_roles b WHERE b.oid = r.oid), make_array()) FROM pg_roles r"
        );
    }
}
