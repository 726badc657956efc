//! Queries and DML planned by DataFusion: SELECT, EXPLAIN, and INSERT/UPDATE/DELETE (whose
//! plans are intercepted and applied to Runnel's streams and tables), with `$n` parameters.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::{Expr, LogicalPlan, WriteOp};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast;
use runnel_common::{Result, RunnelError, SqlState, TextType};
use runnel_pgwire::{BatchStream, ParamValue, QueryResponse, StatementDescription};

use super::dml;
use crate::session::RunnelSession;

async fn plan(
    session: &RunnelSession,
    statement: &ast::Statement,
    sql: &str,
) -> Result<LogicalPlan> {
    session.follow_search_path();
    let state = session.ctx.state();
    let mut statement = statement.clone();
    runnel_sql::pg_compat::rewrite_postgres_spellings(
        &mut statement,
        &crate::system_catalog::is_always_empty,
    );
    read_typed_literals(session, &mut statement);
    runnel_sql::whole_row::expand_whole_row_references(
        &mut statement,
        &session.shared.catalog.snapshot(),
    );
    runnel_sql::interval_literals::read_interval_literals(&mut statement)?;
    if let ast::Statement::Query(query) = &mut statement {
        // Planned, so that running it says ASOF JOIN belongs in a view.
        runnel_sql::asof::rewrite_asof_joins(query)?;
    }
    let plan = match state
        .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
        .await
    {
        Ok(plan) => plan,
        Err(error) => return Err(planning_failed(&state, &statement, sql, error).await),
    };
    let plan = runnel_sql::pg_numbers::plan_postgres_aggregates(plan)?;
    let plan = read_timestamptz_strings(
        plan,
        &session.settings().time_zone(),
        session.settings().date_order(),
    )?;
    let plan = crate::text_casts::plan_postgres_text_casts(
        &session.ctx,
        plan,
        "text_out",
        session.settings().date_order(),
    )?;
    let plan = runnel_sql::interval_literals::sort_intervals_by_length(plan)?;
    session.check_reads(&plan)?;
    crate::privileges::check_plan(session, &statement, &plan)?;
    match &plan {
        LogicalPlan::Ddl(_) | LogicalPlan::Copy(_) => Err(RunnelError::not_implemented(format!(
            "statement {}",
            first_words(&statement.to_string())
        ))),
        LogicalPlan::Statement(_) => Err(RunnelError::not_implemented(format!(
            "statement {}",
            first_words(&statement.to_string())
        ))),
        _ => Ok(plan),
    }
}

/// `=`, `<>`, `<`, `<=`, `>`, `>=` and `IS [NOT] DISTINCT FROM`: where Postgres types a string
/// literal from the other side.
pub(crate) fn is_comparison(op: &datafusion::logical_expr::Operator) -> bool {
    use datafusion::logical_expr::Operator;
    matches!(
        op,
        Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
            | Operator::IsDistinctFrom
            | Operator::IsNotDistinctFrom
    )
}

/// A string read as a `timestamptz` is read in the session's `TimeZone`, as Postgres reads it
/// (DataFusion would read it in UTC): a literal or cast without an offset (`TIMESTAMPTZ
/// '2026-06-10 10:00'`, `'...'::timestamptz`, `CAST('...' AS timestamptz)`, the VALUES of an
/// INSERT into a `timestamptz` column) and a string compared with a `timestamptz` value (`WHERE
/// ts > '2026-06-10 10:00'`, `ts BETWEEN '...' AND '...'`) are given their offset there.
/// Strings that do not parse (`'now'`, `'infinity'`) stay as they are.
fn read_timestamptz_strings(
    plan: LogicalPlan,
    zone: &str,
    order: runnel_common::date_text::FieldOrder,
) -> Result<LogicalPlan> {
    use std::str::FromStr;

    use datafusion::arrow::array::timezone::Tz;
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::logical_expr::{Between, BinaryExpr, Cast, ExprSchemable};

    let Ok(tz) = Tz::from_str(zone) else {
        return Ok(plan);
    };
    let zoned = |e: &Expr| -> Option<Expr> {
        let Expr::Literal(ScalarValue::Utf8(Some(text)), metadata) = e else {
            return None;
        };
        let at = timestamp_in_zone(&tz, text, order)?;
        Some(Expr::Literal(ScalarValue::Utf8(Some(at)), metadata.clone()))
    };
    let transformed = plan.transform_up_with_subqueries(|node| {
        // The schema the node's expressions are written against (none for VALUES).
        let schema = match &node {
            LogicalPlan::Join(join) => join
                .left
                .schema()
                .join(join.right.schema())
                .ok()
                .map(std::sync::Arc::new),
            _ => match node.inputs().as_slice() {
                [input] => Some(input.schema().clone()),
                _ => None,
            },
        };
        let with_zone = |e: &Expr| {
            schema.as_ref().is_some_and(|schema| {
                matches!(
                    e.get_type(schema.as_ref()),
                    Ok(DataType::Timestamp(_, Some(_)))
                )
            })
        };
        node.map_expressions(|expr| {
            expr.transform_up(|e| {
                let rewritten = match &e {
                    Expr::BinaryExpr(BinaryExpr { left, op, right }) if is_comparison(op) => {
                        if with_zone(left) {
                            zoned(right).map(|right| {
                                Expr::BinaryExpr(BinaryExpr::new(
                                    left.clone(),
                                    *op,
                                    Box::new(right),
                                ))
                            })
                        } else if with_zone(right) {
                            zoned(left).map(|left| {
                                Expr::BinaryExpr(BinaryExpr::new(
                                    Box::new(left),
                                    *op,
                                    right.clone(),
                                ))
                            })
                        } else {
                            None
                        }
                    }
                    // A string cast to timestamptz: a literal, a cast, or the VALUES of an
                    // INSERT into a timestamptz column.
                    Expr::Cast(Cast { expr, field })
                        if matches!(field.data_type(), DataType::Timestamp(_, Some(_))) =>
                    {
                        zoned(expr).map(|literal| {
                            Expr::Cast(Cast {
                                expr: Box::new(literal),
                                field: field.clone(),
                            })
                        })
                    }
                    Expr::Between(between) if with_zone(&between.expr) => {
                        let low = zoned(&between.low);
                        let high = zoned(&between.high);
                        (low.is_some() || high.is_some()).then(|| {
                            Expr::Between(Between::new(
                                between.expr.clone(),
                                between.negated,
                                Box::new(low.unwrap_or_else(|| between.low.as_ref().clone())),
                                Box::new(high.unwrap_or_else(|| between.high.as_ref().clone())),
                            ))
                        })
                    }
                    _ => None,
                };
                Ok(match rewritten {
                    Some(new) => Transformed::yes(new),
                    None => Transformed::no(e),
                })
            })
        })
    })?;
    Ok(transformed.data)
}

/// A column of timestamp text with each value that names no offset read as a time in `zone`
/// (what COPY FROM does with `timestamptz` text); values that do not parse stay for the cast
/// to report.
pub(crate) fn timestamps_in_zone(
    text: &ArrayRef,
    zone: &str,
    order: runnel_common::date_text::FieldOrder,
) -> Result<ArrayRef> {
    use std::str::FromStr;

    use datafusion::arrow::array::timezone::Tz;
    use datafusion::arrow::array::{Array, StringArray};

    let Ok(tz) = Tz::from_str(zone) else {
        return Ok(text.clone());
    };
    let strings = text
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| RunnelError::internal("timestamp text is not Utf8"))?;
    let converted: StringArray = strings
        .iter()
        .map(|value| {
            value.map(|v| timestamp_in_zone(&tz, v, order).unwrap_or_else(|| v.to_string()))
        })
        .collect();
    Ok(Arc::new(converted))
}

/// `text` read as a time in `tz` (unless it names its own offset), as RFC 3339 text; text in
/// any form Postgres reads (see [`crate::text_casts::postgres_date_text`]: `03/01/2026 10:00`
/// in the session's `order`).
fn timestamp_in_zone(
    tz: &datafusion::arrow::array::timezone::Tz,
    text: &str,
    order: runnel_common::date_text::FieldOrder,
) -> Option<String> {
    use datafusion::arrow::compute::kernels::cast_utils::string_to_datetime;
    let timestamp = DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None);
    string_to_datetime(tz, text)
        .or_else(|_| {
            let spelled = crate::text_casts::postgres_date_text(text, &timestamp, order);
            string_to_datetime(tz, &spelled)
        })
        .ok()
        .map(|at| at.to_rfc3339())
}

/// How a literal written into a column is read (see [`read_typed_literals`]).
#[derive(Debug, Clone, Copy)]
enum ColumnLiteral {
    /// A string (for `bare_numeric` a number too) goes through this input function.
    Input(&'static str),
    /// A number is written as its digits, which the cast to a float reads exactly.
    FloatDigits,
    /// Date or timestamp text is respelled for Arrow's parser (into a timestamp column, or a
    /// date one).
    DateText { timestamp: bool },
}

impl ColumnLiteral {
    fn of(data_type: &DataType) -> Option<ColumnLiteral> {
        Some(match data_type {
            DataType::Binary => ColumnLiteral::Input("bytea_in"),
            DataType::Interval(_) => ColumnLiteral::Input("interval_in"),
            DataType::Decimal128(38, 10) => ColumnLiteral::Input("bare_numeric"),
            DataType::Float32 | DataType::Float64 => ColumnLiteral::FloatDigits,
            DataType::Timestamp(_, None) => ColumnLiteral::DateText { timestamp: true },
            DataType::Date32 => ColumnLiteral::DateText { timestamp: false },
            _ => return None,
        })
    }

    /// Rewrites `e` when it is a literal this column reads its own way.
    fn read(self, e: &mut ast::Expr, date_order: runnel_common::date_text::FieldOrder) {
        let is_string = matches!(e, ast::Expr::Value(v) if matches!(
            v.value,
            ast::Value::SingleQuotedString(_) | ast::Value::EscapedStringLiteral(_)
        ));
        match self {
            ColumnLiteral::Input(function)
                if is_string || (function == "bare_numeric" && number_digits(e).is_some()) =>
            {
                let literal = std::mem::replace(e, ast::Expr::value(ast::Value::Null));
                *e = runnel_sql::pg_compat::call(function, vec![literal]);
            }
            // Planned as a numeric first, `1e100` would round twice.
            ColumnLiteral::FloatDigits => {
                if let Some(digits) = number_digits(e) {
                    *e = ast::Expr::value(ast::Value::SingleQuotedString(digits));
                }
            }
            // `'2026-03-01 10:00'`, `'03/01/2026'`: Arrow's parser, which reads them while
            // planning, wants ISO text with seconds.
            ColumnLiteral::DateText { timestamp } => {
                let target = if timestamp {
                    DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None)
                } else {
                    DataType::Date32
                };
                if let ast::Expr::Value(v) = e {
                    if let ast::Value::SingleQuotedString(text) = &mut v.value {
                        *text = crate::text_casts::postgres_date_text(text, &target, date_order);
                    }
                }
            }
            ColumnLiteral::Input(_) => {}
        }
    }
}

/// The digits of a number literal, with its sign (`-1e100`).
fn number_digits(e: &ast::Expr) -> Option<String> {
    let digits = |e: &ast::Expr| match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Number(digits, _) => Some(digits.clone()),
            _ => None,
        },
        _ => None,
    };
    match e {
        ast::Expr::UnaryOp {
            op: ast::UnaryOperator::Minus,
            expr,
        } => digits(expr).map(|d| format!("-{d}")),
        other => digits(other),
    }
}

/// String literals written into BYTEA and INTERVAL columns by INSERT ... VALUES and UPDATE
/// ... SET are read as Postgres reads their text (`'\\xdeadbeef'` is four bytes, `'1 day
/// 02:00:00'` an interval): they are wrapped in `bytea_in` / `interval_in`, since DataFusion
/// would cast them with Arrow (keeping the text's bytes, or refusing Postgres's interval forms)
/// while planning. Literals written into a bare NUMERIC go through `bare_numeric`, which
/// refuses one with more decimal places than Runnel keeps instead of rounding it, numbers
/// written into a float column are read from their digits, and timestamps without seconds get
/// them.
fn read_typed_literals(session: &RunnelSession, statement: &mut ast::Statement) {
    let catalog = session.shared.catalog.snapshot();
    let date_order = session.settings().date_order();
    let typed_columns = |name: &ast::ObjectName| -> HashMap<String, ColumnLiteral> {
        let name = runnel_sql::statement::object_name(name);
        catalog.get(&name).map_or_else(HashMap::new, |entry| {
            entry
                .schema
                .fields()
                .iter()
                .filter_map(|f| Some((f.name().clone(), ColumnLiteral::of(f.data_type())?)))
                .collect()
        })
    };
    match statement {
        ast::Statement::Insert(insert) => {
            let ast::TableObject::TableName(table) = &insert.table else {
                return;
            };
            let typed = typed_columns(table);
            if typed.is_empty() {
                return;
            }
            let columns: Vec<String> = if insert.columns.is_empty() {
                let name = runnel_sql::statement::object_name(table);
                catalog.get(&name).map_or_else(Vec::new, |entry| {
                    entry
                        .schema
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .collect()
                })
            } else {
                insert
                    .columns
                    .iter()
                    .map(runnel_sql::statement::object_name)
                    .collect()
            };
            let Some(source) = insert.source.as_mut() else {
                return;
            };
            let ast::SetExpr::Values(values) = source.body.as_mut() else {
                return;
            };
            for row in &mut values.rows {
                for (expr, column) in row.iter_mut().zip(&columns) {
                    if let Some(reading) = typed.get(column) {
                        reading.read(expr, date_order);
                    }
                }
            }
        }
        ast::Statement::Update(update) => {
            let ast::TableFactor::Table { name, .. } = &update.table.relation else {
                return;
            };
            let typed = typed_columns(name);
            for assignment in &mut update.assignments {
                if let ast::AssignmentTarget::ColumnName(column) = &assignment.target {
                    let column = runnel_sql::statement::object_name(column);
                    if let Some(reading) = typed.get(&column) {
                        reading.read(&mut assignment.value, date_order);
                    }
                }
            }
        }
        _ => {}
    }
}

/// The error for a statement DataFusion could not plan: the cause Runnel names itself
/// ([`crate::plan_diagnosis`]) when the failure is a planning one, else DataFusion's error by
/// its variant, with the position its diagnostic points at (as Postgres reports one).
pub async fn planning_failed(
    state: &datafusion::execution::session_state::SessionState,
    statement: &ast::Statement,
    sql: &str,
    error: datafusion::error::DataFusionError,
) -> RunnelError {
    let position = error
        .diagnostic()
        .and_then(|d| d.span)
        .filter(|span| span.start.line > 0)
        .map(|span| runnel_sql::parser::char_position(sql, span.start.line, span.start.column));
    let error = RunnelError::from(error).with_position(position);
    // Only DataFusion's untyped planning errors need a cause named.
    if error.sqlstate() != SqlState::STATEMENT_ERROR {
        return error;
    }
    crate::plan_diagnosis::diagnose(state, statement, sql)
        .await
        .unwrap_or(error)
}

fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Parameter types by position (`$1` first); `None` where DataFusion could not infer one. A
/// field, so a parameter written into a json/jsonb/uuid column, or cast to one, has that type.
fn parameter_types(plan: &LogicalPlan) -> Result<Vec<Option<FieldRef>>> {
    let mut types: HashMap<String, Option<FieldRef>> = plan.get_parameter_fields()?;
    // A parameter DataFusion could not type from its use is typed by a cast of it, as
    // Postgres does (`$1::int` is an int4): clients bind typed values from the description.
    for (name, cast) in cast_parameter_types(plan) {
        let known = types.entry(name).or_insert(None);
        if known.is_none() {
            *known = Some(cast);
        }
    }
    let mut out = Vec::new();
    for (name, t) in types {
        let idx: usize = name
            .trim_start_matches('$')
            .parse()
            .map_err(|_| RunnelError::not_implemented(format!("parameter {name}")))?;
        if idx == 0 {
            return Err(RunnelError::plan(
                SqlState::SYNTAX_ERROR,
                "there is no parameter $0",
            ));
        }
        if out.len() < idx {
            out.resize(idx, None);
        }
        out[idx - 1] = t;
    }
    Ok(out)
}

/// The type each parameter is first cast to (`$1::int8`, `$1::uuid`), or compared with as an
/// array (`x = ANY($1)` is `array_has($1, x)`: `$1` is an array of `x`'s type), anywhere in
/// the plan.
fn cast_parameter_types(plan: &LogicalPlan) -> HashMap<String, FieldRef> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::ExprSchemable;
    let mut found: HashMap<String, FieldRef> = HashMap::new();
    let _ = plan.apply_with_subqueries(|node| {
        // The schema a node's expressions are written against.
        let mut input_schema = datafusion::common::DFSchema::empty();
        for input in node.inputs() {
            input_schema.merge(input.schema());
        }
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                let cast = match e {
                    Expr::ScalarFunction(f) if f.func.name() == "array_has" => {
                        match f.args.as_slice() {
                            [array @ Expr::Placeholder(_), element] => element
                                .get_type(&input_schema)
                                .ok()
                                .filter(|t| !t.is_null())
                                .map(|t| {
                                    let list =
                                        DataType::List(Arc::new(Field::new_list_field(t, true)));
                                    (array, Arc::new(Field::new("", list, true)))
                                }),
                            _ => None,
                        }
                    }
                    Expr::Cast(c) => Some((c.expr.as_ref(), c.field.clone())),
                    Expr::TryCast(c) => Some((c.expr.as_ref(), c.field.clone())),
                    // `$1::jsonb` is planned as `jsonb_in($1)`.
                    Expr::ScalarFunction(f) => {
                        let text_type = [TextType::Json, TextType::Jsonb, TextType::Uuid]
                            .into_iter()
                            .find(|&t| {
                                f.func.name() == runnel_sql::text_type_casts::function_name(t)
                            });
                        match (text_type, f.args.as_slice()) {
                            (Some(text_type), [argument]) => {
                                Some((argument, Arc::new(text_type.field("", true))))
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                };
                if let Some((Expr::Placeholder(p), field)) = cast {
                    found.entry(p.id.clone()).or_insert(field);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

pub async fn describe(
    session: &mut RunnelSession,
    statement: &ast::Statement,
    sql: &str,
    declared: &[u32],
) -> Result<StatementDescription> {
    let plan = plan(session, statement, sql).await?;
    let types = parameter_types(&plan)?;
    let count = types.len().max(declared.len());
    let param_oids = (0..count)
        .map(|i| match declared.get(i) {
            Some(&oid) if oid != 0 => oid,
            _ => types
                .get(i)
                .cloned()
                .flatten()
                .map_or(25, |field| runnel_pgwire::pg_type_of(&field).oid),
        })
        .collect();
    let fields = match &plan {
        LogicalPlan::Dml(_) => None,
        other => Some(crate::convert::result_schema(other)),
    };
    Ok(StatementDescription { param_oids, fields })
}

/// Turns bound parameters into typed values, parsing their text as the inferred type.
fn bind(plan: &LogicalPlan, params: &[ParamValue]) -> Result<ParamValues> {
    let types = parameter_types(plan)?;
    let values = params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let target = types
                .get(i)
                .cloned()
                .flatten()
                .map(|field| field.data_type().clone())
                .or_else(|| crate::convert::oid_type(p.type_oid))
                .unwrap_or(DataType::Utf8);
            let text = ScalarValue::Utf8(p.text.clone());
            crate::convert::check_bare_numeric(
                &datafusion::arrow::array::StringArray::from(vec![p.text.clone()]),
                &target,
                &format!("parameter ${}", i + 1),
            )?;
            if target == DataType::Binary {
                let parsed = p
                    .text
                    .as_deref()
                    .map(|t| {
                        runnel_pgwire::types::parse_bytea(t).ok_or_else(|| {
                            RunnelError::execution(
                                SqlState::INVALID_TEXT_REPRESENTATION,
                                format!(
                                    "invalid input syntax for type bytea: \"{t}\" (parameter ${})",
                                    i + 1
                                ),
                            )
                        })
                    })
                    .transpose()?;
                return Ok(ScalarValue::Binary(parsed).into());
            }
            if let (DataType::Interval(_), Some(t)) = (&target, p.text.as_deref()) {
                let interval =
                    runnel_common::interval_text::parse_interval(t).ok_or_else(|| {
                        RunnelError::execution(
                            SqlState::INVALID_DATETIME_FORMAT,
                            format!(
                                "invalid input syntax for type interval: \"{t}\" (parameter ${})",
                                i + 1
                            ),
                        )
                    })?;
                return ScalarValue::IntervalMonthDayNano(Some(interval))
                    .cast_to(&target)
                    .map(Into::into)
                    .map_err(Into::into);
            }
            if let (DataType::List(element), Some(t)) = (&target, p.text.as_deref()) {
                let parsed = crate::convert::parse_array_text(t, element.data_type())
                    .unwrap_or_else(|| {
                        Err(RunnelError::execution(
                            SqlState::INVALID_TEXT_REPRESENTATION,
                            format!("malformed array literal: \"{t}\" (parameter ${})", i + 1),
                        ))
                    })?;
                return Ok(parsed.into());
            }
            text.cast_to(&target)
                .map_err(|e| match (&target, p.text.as_deref()) {
                    (DataType::Int16 | DataType::Int32 | DataType::Int64, Some(t)) => {
                        runnel_common::integer_text::integer_input_error(
                            t,
                            &target,
                            &format!(" (parameter ${})", i + 1),
                        )
                    }
                    _ => RunnelError::execution(
                        SqlState::INVALID_TEXT_REPRESENTATION,
                        format!(
                            "invalid value for parameter ${}: {:?} is not a valid {target} ({e})",
                            i + 1,
                            p.text.as_deref().unwrap_or("NULL")
                        ),
                    ),
                })
                .map(Into::into)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ParamValues::List(values))
}

pub async fn handle(
    session: &mut RunnelSession,
    statement: &ast::Statement,
    sql: &str,
    params: &[ParamValue],
) -> Result<QueryResponse> {
    let mut plan = plan(session, statement, sql).await?;
    if !params.is_empty() {
        let values = bind(&plan, params)?;
        plan = plan.with_param_values(values)?;
    }
    let response = if let LogicalPlan::Dml(dml) = &plan {
        match dml.op {
            WriteOp::Insert(_) => dml::insert(session, dml).await,
            WriteOp::Update => dml::update(session, dml).await,
            WriteOp::Delete => dml::delete(session, dml).await,
            _ => Err(RunnelError::not_implemented(format!("{}", dml.op))),
        }
    } else {
        run(session, plan)
            .await
            .map(|(schema, batches)| QueryResponse::Rows { schema, batches })
    };
    match response {
        Err(error) => Err(analysis_failed(session, statement, sql, error).await),
        ok => ok,
    }
}

/// Type errors (`WHERE name + 1 > 2`) surface only when DataFusion analyzes the plan, as it
/// starts running it, with an untyped message: when Runnel can name the cause, that is the
/// statement's error, with a SQLSTATE and a position.
async fn analysis_failed(
    session: &RunnelSession,
    statement: &ast::Statement,
    sql: &str,
    error: RunnelError,
) -> RunnelError {
    if error.sqlstate() != SqlState::STATEMENT_ERROR {
        return error;
    }
    crate::plan_diagnosis::diagnose(&session.ctx.state(), statement, sql)
        .await
        .unwrap_or(error)
}

/// Runs a planned query: its rows as DataFusion produces them, with Postgres's column names,
/// `timestamptz` columns in the session's time zone.
async fn run(session: &RunnelSession, plan: LogicalPlan) -> Result<(SchemaRef, BatchStream)> {
    use futures::StreamExt;
    let schema = crate::convert::result_schema(&plan);
    let batches = session
        .ctx
        .execute_logical_plan(plan)
        .await?
        .execute_stream()
        .await?;
    let (schema, batches) =
        crate::convert::as_described(schema, batches, &session.settings().time_zone());
    let batches = batches
        .map(|batch| batch.map_err(|e| crate::session::to_pg_error(e.into())))
        .boxed();
    Ok((schema, batches))
}

/// The rows of a query (COPY ... TO); a statement that is not a query is refused.
pub async fn rows(
    session: &mut RunnelSession,
    statement: &ast::Statement,
    sql: &str,
) -> Result<(SchemaRef, BatchStream)> {
    let plan = plan(session, statement, sql).await?;
    if let LogicalPlan::Dml(_) = plan {
        return Err(RunnelError::not_implemented(
            "COPY of INSERT, UPDATE or DELETE",
        ));
    }
    match run(session, plan).await {
        Err(error) => Err(analysis_failed(session, statement, sql, error).await),
        ok => ok,
    }
}
