//! Classifies the statements sqlparser parses (everything but Runnel's extensions) into
//! [`Statement`]s: CREATE TABLE and CREATE MATERIALIZED VIEW, DROP, COPY, SET/SHOW/RESET,
//! cursors and transaction control; queries and DML pass through as they are.

use datafusion::sql::sqlparser::ast::{self, ObjectType};
use runnel_common::{Result, RunnelError, SqlState};

use super::syntax_error;
use crate::statement::{
    ident_name, object_name, CopyOptions, CopySource, ObjectKind, Statement, TransactionCommand,
};

/// The [`Statement`] a sqlparser statement is; `emit_on_window_close` is whether a CREATE
/// MATERIALIZED VIEW ended with that clause (taken off before sqlparser saw the tokens).
pub(super) fn classify(
    sql: &str,
    statement: ast::Statement,
    emit_on_window_close: bool,
) -> Result<Statement> {
    match statement {
        ast::Statement::CreateTable(create) => Ok(Statement::CreateRelation {
            kind: ObjectKind::Table,
            create: Box::new(create),
            watermark: None,
        }),
        ast::Statement::CreateView(view) => {
            if !view.materialized {
                return Err(RunnelError::not_implemented(
                    "CREATE VIEW without MATERIALIZED; use CREATE MATERIALIZED VIEW",
                ));
            }
            Ok(Statement::CreateMaterializedView {
                view: Box::new(view),
                explain: false,
                emit_on_window_close,
            })
        }
        drop @ ast::Statement::Drop { .. } => drop_statement(drop),
        ast::Statement::Copy {
            source,
            to,
            target,
            options,
            legacy_options,
            ..
        } => copy_statement(source, to, target, options, legacy_options),
        ast::Statement::Set(set) => set_statement(sql, set),
        ast::Statement::Reset(reset) => Ok(Statement::ResetVariable(match reset.reset {
            ast::Reset::ALL => None,
            ast::Reset::ConfigurationParameter(name) => Some(setting_name(&name)),
        })),
        ast::Statement::ShowVariable { variable } => {
            Ok(Statement::ShowVariable(show_variable_name(&variable)))
        }
        ast::Statement::Declare { stmts } => declare_cursor(stmts),
        ast::Statement::Fetch {
            name, direction, ..
        } => fetch_cursor(&name, direction),
        ast::Statement::Close { cursor } => Ok(Statement::CloseCursor(match cursor {
            ast::CloseCursor::All => None,
            ast::CloseCursor::Specific { name } => Some(ident_name(&name)),
        })),
        ast::Statement::StartTransaction { .. } => {
            Ok(Statement::Transaction(TransactionCommand::Begin))
        }
        ast::Statement::Commit { .. } => Ok(Statement::Transaction(TransactionCommand::Commit)),
        ast::Statement::Rollback {
            savepoint: Some(name),
            ..
        } => Ok(Statement::Transaction(TransactionCommand::RollbackTo(
            ident_name(&name),
        ))),
        ast::Statement::Rollback { .. } => Ok(Statement::Transaction(TransactionCommand::Rollback)),
        ast::Statement::Savepoint { name } => Ok(Statement::Transaction(
            TransactionCommand::Savepoint(ident_name(&name)),
        )),
        ast::Statement::ReleaseSavepoint { name } => Ok(Statement::Transaction(
            TransactionCommand::Release(ident_name(&name)),
        )),
        ast::Statement::Comment {
            object_type,
            object_name,
            comment,
            ..
        } => comment_statement(object_type, &object_name, comment),
        other => Ok(Statement::Query(Box::new(other))),
    }
}

/// `COMMENT ON` a relation or one of its columns.
fn comment_statement(
    object_type: ast::CommentObject,
    name: &ast::ObjectName,
    text: Option<String>,
) -> Result<Statement> {
    let kind = match object_type {
        // Streams are tables to Postgres's tools (relkind r).
        ast::CommentObject::Table | ast::CommentObject::Column => ObjectKind::Table,
        ast::CommentObject::MaterializedView | ast::CommentObject::View => {
            ObjectKind::MaterializedView
        }
        other => {
            return Err(RunnelError::not_implemented(format!(
                "COMMENT ON {other} (Runnel keeps comments on relations and columns)"
            )))
        }
    };
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|part| part.as_ident().map_or_else(|| part.to_string(), ident_name))
        .collect();
    let (relation, column) = match (object_type, parts.as_slice()) {
        (ast::CommentObject::Column, [.., relation, column]) => {
            (relation.clone(), Some(column.clone()))
        }
        (ast::CommentObject::Column, _) => {
            return Err(RunnelError::plan(
                SqlState::SYNTAX_ERROR,
                "COMMENT ON COLUMN needs relation.column",
            ))
        }
        _ => (object_name(name), None),
    };
    Ok(Statement::Comment {
        kind,
        relation,
        column,
        text,
    })
}

/// `DECLARE name CURSOR ... FOR query` (one cursor, forward-only).
fn declare_cursor(mut stmts: Vec<ast::Declare>) -> Result<Statement> {
    let declare = match (stmts.pop(), stmts.is_empty()) {
        (Some(declare), true) => declare,
        _ => return Err(RunnelError::not_implemented("DECLARE of several names")),
    };
    if declare.scroll == Some(true) {
        return Err(RunnelError::not_implemented(
            "SCROLL cursors: cursors are forward-only (NO SCROLL)",
        ));
    }
    let (Some(query), [name]) = (declare.for_query, declare.names.as_slice()) else {
        return Err(RunnelError::not_implemented(
            "DECLARE other than DECLARE name CURSOR FOR query",
        ));
    };
    Ok(Statement::DeclareCursor {
        name: ident_name(name),
        query,
        hold: declare.hold == Some(true),
    })
}

/// `FETCH` forward: a count, NEXT (1) or ALL.
fn fetch_cursor(name: &ast::Ident, direction: ast::FetchDirection) -> Result<Statement> {
    let number = |limit: &ast::ValueWithSpan| -> Result<u64> {
        match &limit.value {
            ast::Value::Number(n, _) => n.to_string().parse().map_err(|_| {
                RunnelError::plan(
                    SqlState::SYNTAX_ERROR,
                    format!("FETCH count {n} is not a row count"),
                )
            }),
            other => Err(RunnelError::plan(
                SqlState::SYNTAX_ERROR,
                format!("FETCH count {other} is not a row count"),
            )),
        }
    };
    let count = match direction {
        ast::FetchDirection::Count { limit }
        | ast::FetchDirection::Forward { limit: Some(limit) } => Some(number(&limit)?),
        ast::FetchDirection::Next | ast::FetchDirection::Forward { limit: None } => Some(1),
        ast::FetchDirection::All | ast::FetchDirection::ForwardAll => None,
        other => {
            return Err(RunnelError::not_implemented(format!(
                "FETCH {other}: cursors are forward-only"
            )))
        }
    };
    Ok(Statement::Fetch {
        name: ident_name(name),
        count,
        timeout: None,
    })
}

/// The parameter `SHOW` names: `SHOW TIME ZONE` and `SHOW TRANSACTION ISOLATION LEVEL` are
/// Postgres's spellings of `TimeZone` and `transaction_isolation`.
fn show_variable_name(words: &[ast::Ident]) -> String {
    let joined = words
        .iter()
        .map(|w| w.value.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    match joined.to_ascii_lowercase().as_str() {
        "time zone" => "TimeZone".to_string(),
        "transaction isolation level" => "transaction_isolation".to_string(),
        "session authorization" => "session_authorization".to_string(),
        _ => words
            .iter()
            .map(|w| w.value.as_str())
            .collect::<Vec<_>>()
            .join("."),
    }
}

/// `SET` in its Postgres forms.
fn set_statement(sql: &str, set: ast::Set) -> Result<Statement> {
    match set {
        ast::Set::SingleAssignment {
            scope,
            variable,
            values,
            ..
        } => {
            let name = setting_name(&variable);
            let local = matches!(scope, Some(ast::ContextModifier::Local));
            let value = set_value(sql, &values)?;
            Ok(Statement::SetVariable { name, value, local })
        }
        ast::Set::SetTimeZone { local, value } => {
            let value = set_value(sql, std::slice::from_ref(&value))?
                .filter(|v| !v.eq_ignore_ascii_case("local"));
            Ok(Statement::SetVariable {
                name: "TimeZone".to_string(),
                value,
                local,
            })
        }
        ast::Set::SetNames { charset_name, .. } => Ok(Statement::SetVariable {
            name: "client_encoding".to_string(),
            value: Some(charset_name.value),
            local: false,
        }),
        ast::Set::SetNamesDefault {} => Ok(Statement::SetVariable {
            name: "client_encoding".to_string(),
            value: None,
            local: false,
        }),
        ast::Set::SetTransaction { .. } => Ok(Statement::NoOp("SET")),
        other => Err(RunnelError::not_implemented(first_words(
            &other.to_string(),
            3,
        ))),
    }
}

/// A parameter's name: its parts joined by dots (`myapp.tenant`), as written.
fn setting_name(name: &ast::ObjectName) -> String {
    name.0
        .iter()
        .map(|part| {
            part.as_ident()
                .map_or_else(|| part.to_string(), |i| i.value.clone())
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn first_words(sql: &str, n: usize) -> String {
    sql.split_whitespace().take(n).collect::<Vec<_>>().join(" ")
}

/// The value of a `SET`, as Postgres keeps it: list items joined by `, `, quotes removed;
/// `None` for `DEFAULT`.
fn set_value(sql: &str, values: &[ast::Expr]) -> Result<Option<String>> {
    let mut parts = Vec::with_capacity(values.len());
    for value in values {
        let text = match value {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::SingleQuotedString(s)
                | ast::Value::DoubleQuotedString(s)
                | ast::Value::EscapedStringLiteral(s) => s.clone(),
                ast::Value::Number(n, _) => n.to_string(),
                ast::Value::Boolean(b) => if *b { "on" } else { "off" }.to_string(),
                other => other.to_string(),
            },
            ast::Expr::Identifier(ident) if ident.quote_style.is_none() => {
                if values.len() == 1 && ident.value.eq_ignore_ascii_case("default") {
                    return Ok(None);
                }
                ident.value.clone()
            }
            ast::Expr::Identifier(ident) => ident.value.clone(),
            ast::Expr::UnaryOp {
                op: ast::UnaryOperator::Minus,
                expr,
            } => format!("-{expr}"),
            ast::Expr::Interval(interval) => {
                interval.value.to_string().trim_matches('\'').to_string()
            }
            _ => {
                return Err(syntax_error(
                    sql,
                    "expected a value for SET: a string, a number or a name",
                ))
            }
        };
        parts.push(text);
    }
    Ok(Some(parts.join(", ")))
}

fn drop_statement(statement: ast::Statement) -> Result<Statement> {
    let ast::Statement::Drop {
        object_type,
        if_exists,
        names,
        cascade,
        ..
    } = statement
    else {
        return Err(RunnelError::internal("drop_statement given a non-DROP"));
    };
    let kind = match object_type {
        ObjectType::Table => ObjectKind::Table,
        ObjectType::MaterializedView | ObjectType::View => ObjectKind::MaterializedView,
        other => {
            return Err(RunnelError::not_implemented(format!(
                "DROP {other} (Runnel has streams, tables and materialized views)"
            )))
        }
    };
    Ok(Statement::Drop {
        kind,
        names: names.iter().map(object_name).collect(),
        if_exists,
        cascade,
    })
}

fn copy_statement(
    source: ast::CopySource,
    to: bool,
    target: ast::CopyTarget,
    options: Vec<ast::CopyOption>,
    legacy_options: Vec<ast::CopyLegacyOption>,
) -> Result<Statement> {
    match (&target, to) {
        (ast::CopyTarget::Stdin, false) | (ast::CopyTarget::Stdout, true) => {}
        _ => {
            return Err(RunnelError::not_implemented(
                "COPY with a file or program: use COPY ... FROM STDIN or COPY ... TO STDOUT \
                 (psql's \\copy reads and writes files on the client)",
            ))
        }
    }
    let mut opts = CopyOptions::default();
    let mut null_set = false;
    let mut delimiter_set = false;
    let mut escape_set = false;
    let single_byte = |what: &str, c: char| -> Result<u8> {
        u8::try_from(c).ok().filter(u8::is_ascii).ok_or_else(|| {
            RunnelError::plan(
                SqlState::INVALID_PARAMETER_VALUE,
                format!("COPY {what} must be a single one-byte character"),
            )
        })
    };
    for option in options {
        match option {
            ast::CopyOption::Format(f) => match f.value.to_ascii_lowercase().as_str() {
                "csv" => opts.csv = true,
                "text" => opts.csv = false,
                "binary" => opts.binary = true,
                other => {
                    return Err(RunnelError::plan(
                        SqlState::INVALID_PARAMETER_VALUE,
                        format!("COPY format \"{other}\" not recognized"),
                    ))
                }
            },
            ast::CopyOption::Header(h) => opts.header = h,
            ast::CopyOption::Delimiter(d) => {
                opts.delimiter = single_byte("delimiter", d)?;
                delimiter_set = true;
            }
            ast::CopyOption::Null(n) => {
                opts.null = n;
                null_set = true;
            }
            ast::CopyOption::Quote(q) => opts.quote = single_byte("quote", q)?,
            ast::CopyOption::Escape(e) => {
                opts.escape = single_byte("escape", e)?;
                escape_set = true;
            }
            other => return Err(RunnelError::not_implemented(format!("COPY option {other}"))),
        }
    }
    for option in legacy_options {
        match option {
            ast::CopyLegacyOption::Csv(csv_options) => {
                opts.csv = true;
                for csv_option in csv_options {
                    match csv_option {
                        ast::CopyLegacyCsvOption::Header => opts.header = true,
                        ast::CopyLegacyCsvOption::Quote(q) => opts.quote = single_byte("quote", q)?,
                        ast::CopyLegacyCsvOption::Escape(e) => {
                            opts.escape = single_byte("escape", e)?;
                            escape_set = true;
                        }
                        other => {
                            return Err(RunnelError::not_implemented(format!(
                                "COPY option {other}"
                            )))
                        }
                    }
                }
            }
            ast::CopyLegacyOption::Header => opts.header = true,
            ast::CopyLegacyOption::Delimiter(d) => {
                opts.delimiter = single_byte("delimiter", d)?;
                delimiter_set = true;
            }
            ast::CopyLegacyOption::Null(n) => {
                opts.null = n;
                null_set = true;
            }
            ast::CopyLegacyOption::Binary => opts.binary = true,
            other => return Err(RunnelError::not_implemented(format!("COPY option {other}"))),
        }
    }
    if opts.csv {
        if !delimiter_set {
            opts.delimiter = b',';
        }
        if !null_set {
            opts.null = String::new();
        }
        if !escape_set {
            opts.escape = opts.quote;
        }
    }
    if opts.binary && (opts.csv || opts.header) {
        return Err(RunnelError::plan(
            SqlState::SYNTAX_ERROR,
            "cannot specify CSV options or HEADER in BINARY mode",
        ));
    }
    if !opts.binary {
        check_copy_framing(&opts)?;
    }
    let source = match source {
        ast::CopySource::Table {
            table_name,
            columns,
        } => CopySource::Relation {
            name: object_name(&table_name),
            columns: columns.iter().map(ident_name).collect(),
        },
        ast::CopySource::Query(query) => CopySource::Query(query),
    };
    match source {
        CopySource::Relation { name, columns } if !to => Ok(Statement::Copy {
            table: name,
            columns,
            options: opts,
        }),
        CopySource::Query(_) if !to => Err(RunnelError::plan(
            SqlState::SYNTAX_ERROR,
            "COPY (query) FROM is not valid: a query can only be copied TO",
        )),
        source => Ok(Statement::CopyTo {
            source,
            options: opts,
        }),
    }
}

/// Postgres's checks of COPY's framing options (`ProcessCopyOptions`): without them COPY TO
/// writes data that COPY FROM reads back differently (a text delimiter `n` is also the escape
/// `\n`; a delimiter inside the NULL string splits it; a CSV quote equal to the delimiter
/// ends every field it opens).
fn check_copy_framing(opts: &CopyOptions) -> Result<()> {
    let refuse = |message: String| {
        Err(RunnelError::plan(
            SqlState::INVALID_PARAMETER_VALUE,
            message,
        ))
    };
    let delimiter = char::from(opts.delimiter);
    if matches!(opts.delimiter, b'\n' | b'\r') {
        return refuse("COPY delimiter cannot be newline or carriage return".into());
    }
    if opts.null.contains(['\n', '\r']) {
        return refuse("COPY null representation cannot use newline or carriage return".into());
    }
    if !opts.csv && "\\.abcdefghijklmnopqrstuvwxyz0123456789".contains(delimiter) {
        return refuse(format!("COPY delimiter cannot be \"{delimiter}\""));
    }
    if opts.null.contains(delimiter) {
        return refuse("COPY delimiter character must not appear in the NULL specification".into());
    }
    if opts.csv {
        if opts.delimiter == opts.quote {
            return refuse("COPY delimiter and quote must be different".into());
        }
        if opts.null.contains(char::from(opts.quote)) {
            return refuse("CSV quote character must not appear in the NULL specification".into());
        }
    }
    Ok(())
}
