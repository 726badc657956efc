//! Splits a query string into statements and classifies each into a [`Statement`]: Runnel's own
//! commands (CREATE STREAM, SHOW STREAMS, FLUSH, EXPLAIN CREATE MATERIALIZED VIEW, ...) are
//! recognised by their leading keywords; everything else is parsed by sqlparser with the
//! PostgreSQL dialect.

use datafusion::sql::sqlparser::ast::{self, ObjectType};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use runnel_common::{Result, RunnelError, SqlState};

/// The kind of catalog object a statement names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Stream,
    Table,
    MaterializedView,
    /// Not a relation: writes a view's or stream's changes out (to Kafka).
    Sink,
}

impl ObjectKind {
    pub fn sql_name(self) -> &'static str {
        match self {
            ObjectKind::Stream => "stream",
            ObjectKind::Table => "table",
            ObjectKind::MaterializedView => "materialized view",
            ObjectKind::Sink => "sink",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowKind {
    Streams,
    Tables,
    MaterializedViews,
    Sinks,
    Progress,
    Watermarks,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionCommand {
    Begin,
    Commit,
    Rollback,
    /// `SAVEPOINT name`.
    Savepoint(String),
    /// `RELEASE [SAVEPOINT] name`.
    Release(String),
    /// `ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name`.
    RollbackTo(String),
}

/// One classified statement, with its own SQL text (the catalog stores it).
#[derive(Debug, Clone)]
pub struct ParsedStatement {
    pub sql: String,
    pub kind: Statement,
}

#[derive(Debug, Clone)]
pub enum Statement {
    /// CREATE STREAM / CREATE TABLE, parsed as sqlparser's CREATE TABLE.
    CreateRelation {
        kind: ObjectKind,
        create: Box<ast::CreateTable>,
        /// `WATERMARK FOR column AS expr` (streams), taken out before sqlparser saw the rest.
        watermark: Option<Box<WatermarkClause>>,
    },
    CreateMaterializedView {
        view: Box<ast::CreateView>,
        /// Only describe the operator graph.
        explain: bool,
        /// `... EMIT ON WINDOW CLOSE`: each window's row once, final, when it closes.
        emit_on_window_close: bool,
    },
    /// `CREATE SINK [IF NOT EXISTS] name FROM relation WITH (...)`.
    CreateSink {
        name: String,
        from: String,
        options: Vec<(String, String)>,
        if_not_exists: bool,
    },
    Drop {
        kind: ObjectKind,
        names: Vec<String>,
        if_exists: bool,
        cascade: bool,
    },
    Show(ShowKind),
    Flush,
    /// `SET [SESSION | LOCAL] name { TO | = } value`, `SET TIME ZONE`, `SET NAMES`;
    /// `value` is `None` for `DEFAULT`.
    SetVariable {
        name: String,
        value: Option<String>,
        local: bool,
    },
    /// `RESET name`, or `RESET ALL` / `DISCARD ALL` (`None`).
    ResetVariable(Option<String>),
    /// `SHOW name` (`SHOW ALL` is the name `all`).
    ShowVariable(String),
    /// Statements accepted with nothing to do: `SET TRANSACTION ...` and `SET SESSION
    /// CHARACTERISTICS` (Runnel has one isolation level), `DEALLOCATE` (prepared statements
    /// are the protocol layer's), `DISCARD PLANS`/`SEQUENCES`/`TEMP` (Runnel keeps none).
    /// The tag is the CommandComplete tag.
    NoOp(&'static str),
    Transaction(TransactionCommand),
    Copy {
        table: String,
        columns: Vec<String>,
        options: CopyOptions,
    },
    /// `DECLARE name [NO SCROLL] CURSOR [WITH[OUT] HOLD] FOR query`.
    DeclareCursor {
        name: String,
        query: Box<ast::Query>,
        hold: bool,
    },
    /// `FETCH [FORWARD] [count | ALL | NEXT] FROM name`; `count` is `None` for ALL.
    Fetch {
        name: String,
        count: Option<u64>,
    },
    /// `CLOSE name`, or `CLOSE ALL` (`None`).
    CloseCursor(Option<String>),
    /// `COPY { name [(columns)] | (query) } TO STDOUT [WITH (...)]`.
    CopyTo {
        source: CopySource,
        options: CopyOptions,
    },
    /// Queries and DML, planned by DataFusion.
    Query(Box<ast::Statement>),
}

/// A stream's `WATERMARK FOR column AS expr` clause, as written.
#[derive(Debug, Clone)]
pub struct WatermarkClause {
    pub column: String,
    pub expr: ast::Expr,
}

/// What `COPY ... TO` reads.
#[derive(Debug, Clone)]
pub enum CopySource {
    Relation { name: String, columns: Vec<String> },
    Query(Box<ast::Query>),
}

/// Options of `COPY ... FROM STDIN` and `COPY ... TO STDOUT`.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyOptions {
    pub csv: bool,
    /// `FORMAT binary`.
    pub binary: bool,
    pub header: bool,
    pub delimiter: u8,
    /// The string that stands for NULL.
    pub null: String,
    /// CSV: the quote character.
    pub quote: u8,
    /// CSV: the character that makes a quote inside a quoted field literal (the quote itself
    /// unless set).
    pub escape: u8,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            csv: false,
            binary: false,
            header: false,
            delimiter: b'\t',
            null: "\\N".to_string(),
            quote: b'"',
            escape: b'"',
        }
    }
}

/// Splits `sql` at top-level semicolons and classifies every non-empty statement.
pub fn parse_statements(sql: &str) -> Result<Vec<ParsedStatement>> {
    split_statements(sql)?
        .into_iter()
        .map(|text| {
            let kind = classify(&text)?;
            Ok(ParsedStatement { sql: text, kind })
        })
        .collect()
}

/// Splits at semicolons outside strings, identifiers and comments.
pub fn split_statements(sql: &str) -> Result<Vec<String>> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| syntax_error(sql, &e.to_string()))?;
    let line_starts = line_starts(sql);
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut has_content = false;
    for t in &tokens {
        match &t.token {
            Token::SemiColon => {
                let end = byte_offset(sql, &line_starts, t.span.start.line, t.span.start.column);
                if has_content {
                    out.push(sql[start..end].trim().to_string());
                }
                start = end + 1;
                has_content = false;
            }
            Token::Whitespace(_) => {}
            _ => has_content = true,
        }
    }
    if has_content && start < sql.len() {
        out.push(sql[start..].trim().to_string());
    }
    Ok(out)
}

fn line_starts(sql: &str) -> Vec<usize> {
    let mut starts = vec![0];
    for (i, b) in sql.bytes().enumerate() {
        if b == b'\n' {
            starts.push(i + 1);
        }
    }
    starts
}

/// Byte offset of a 1-based (line, column-in-chars) location.
fn byte_offset(sql: &str, line_starts: &[usize], line: u64, column: u64) -> usize {
    let line_start = line_starts
        .get((line.max(1) - 1) as usize)
        .copied()
        .unwrap_or(sql.len());
    sql[line_start..]
        .char_indices()
        .nth((column.max(1) - 1) as usize)
        .map(|(i, _)| line_start + i)
        .unwrap_or(sql.len())
}

/// Upper-cased leading words of a statement (up to `n`), skipping comments.
fn leading_words(sql: &str, n: usize) -> Vec<String> {
    let dialect = PostgreSqlDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() else {
        return Vec::new();
    };
    tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .take(n)
        .map(|t| match t {
            Token::Word(w) => w.value.to_ascii_uppercase(),
            other => other.to_string(),
        })
        .collect()
}

fn classify(sql: &str) -> Result<Statement> {
    let words = leading_words(sql, 4);
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["CREATE", "STREAM", ..] => {
            let (without_watermark, watermark) = take_watermark_clause(sql)?;
            let rewritten = replace_word(&without_watermark, "STREAM", "TABLE");
            match parse_one(&rewritten)? {
                ast::Statement::CreateTable(create) => Ok(Statement::CreateRelation {
                    kind: ObjectKind::Stream,
                    create: Box::new(create),
                    watermark,
                }),
                _ => Err(syntax_error(sql, "expected CREATE STREAM name (columns)")),
            }
        }
        ["DROP", "STREAM", ..] => {
            let rewritten = replace_word(sql, "STREAM", "TABLE");
            drop_statement(parse_one(&rewritten)?, Some(ObjectKind::Stream))
        }
        ["DROP", "SINK", ..] => {
            let rewritten = replace_word(sql, "SINK", "TABLE");
            drop_statement(parse_one(&rewritten)?, Some(ObjectKind::Sink))
        }
        ["CREATE", "SINK", ..] => create_sink(sql),
        ["EXPLAIN", "CREATE", ..] => {
            let rest = strip_first_word(sql, "EXPLAIN");
            match classify(rest)? {
                Statement::CreateMaterializedView {
                    view,
                    emit_on_window_close,
                    ..
                } => Ok(Statement::CreateMaterializedView {
                    view,
                    explain: true,
                    emit_on_window_close,
                }),
                _ => Err(RunnelError::not_implemented(
                    "EXPLAIN is supported for CREATE MATERIALIZED VIEW and queries",
                )),
            }
        }
        ["SHOW", "STREAMS"] => Ok(Statement::Show(ShowKind::Streams)),
        ["SHOW", "TABLES"] => Ok(Statement::Show(ShowKind::Tables)),
        ["SHOW", "MATERIALIZED", "VIEWS"] => Ok(Statement::Show(ShowKind::MaterializedViews)),
        ["SHOW", "SINKS"] => Ok(Statement::Show(ShowKind::Sinks)),
        ["SHOW", "PROGRESS"] => Ok(Statement::Show(ShowKind::Progress)),
        ["SHOW", "WATERMARKS"] => Ok(Statement::Show(ShowKind::Watermarks)),
        ["FLUSH"] => Ok(Statement::Flush),
        ["DISCARD", "ALL"] => Ok(Statement::ResetVariable(None)),
        ["DISCARD", ..] => Ok(Statement::NoOp("DISCARD")),
        ["DEALLOCATE", ..] => Ok(Statement::NoOp("DEALLOCATE")),
        // Runnel sends no notifications: there is nothing to stop listening to.
        ["UNLISTEN", ..] => Ok(Statement::NoOp("UNLISTEN")),
        ["SET", "SESSION", "CHARACTERISTICS", ..] | ["SET", "TRANSACTION", ..] => {
            Ok(Statement::NoOp("SET"))
        }
        ["BEGIN", ..] | ["START", "TRANSACTION", ..] => {
            Ok(Statement::Transaction(TransactionCommand::Begin))
        }
        ["COMMIT", ..] | ["END", ..] => Ok(Statement::Transaction(TransactionCommand::Commit)),
        ["SAVEPOINT", ..] => match parse_one(sql)? {
            ast::Statement::Savepoint { name } => Ok(Statement::Transaction(
                TransactionCommand::Savepoint(ident_name(&name)),
            )),
            _ => Err(syntax_error(sql, "expected SAVEPOINT name")),
        },
        ["RELEASE", ..] => match parse_one(sql)? {
            ast::Statement::ReleaseSavepoint { name } => Ok(Statement::Transaction(
                TransactionCommand::Release(ident_name(&name)),
            )),
            _ => Err(syntax_error(sql, "expected RELEASE [SAVEPOINT] name")),
        },
        ["ROLLBACK", ..] | ["ABORT", ..] if w.contains(&"TO") => {
            match parse_one(&replace_word(sql, "ABORT", "ROLLBACK"))? {
                ast::Statement::Rollback {
                    savepoint: Some(name),
                    ..
                } => Ok(Statement::Transaction(TransactionCommand::RollbackTo(
                    ident_name(&name),
                ))),
                _ => Err(syntax_error(sql, "expected ROLLBACK TO [SAVEPOINT] name")),
            }
        }
        ["ROLLBACK", ..] | ["ABORT", ..] => {
            Ok(Statement::Transaction(TransactionCommand::Rollback))
        }
        _ => {
            if matches!(w.as_slice(), ["CREATE", "TABLE", ..])
                && take_watermark_clause(sql)?.1.is_some()
            {
                return Err(RunnelError::plan(
                    SqlState::INVALID_TABLE_DEFINITION,
                    "tables have no event time: WATERMARK FOR belongs in CREATE STREAM",
                ));
            }
            let (sql, emit_on_window_close) = match w.as_slice() {
                ["CREATE", "MATERIALIZED", "VIEW", ..] => take_emit_on_window_close(sql),
                _ => (sql.to_string(), false),
            };
            let sql = sql.as_str();
            let statement = parse_one(sql)?;
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
                drop @ ast::Statement::Drop { .. } => drop_statement(drop, None),
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
                ast::Statement::Commit { .. } => {
                    Ok(Statement::Transaction(TransactionCommand::Commit))
                }
                ast::Statement::Rollback { .. } => {
                    Ok(Statement::Transaction(TransactionCommand::Rollback))
                }
                other => Ok(Statement::Query(Box::new(other))),
            }
        }
    }
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

/// Takes a trailing `EMIT ON WINDOW CLOSE` off a CREATE MATERIALIZED VIEW (sqlparser does
/// not know it).
fn take_emit_on_window_close(sql: &str) -> (String, bool) {
    let dialect = PostgreSqlDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize_with_location() else {
        return (sql.to_string(), false);
    };
    let words: Vec<(usize, &datafusion::sql::sqlparser::tokenizer::TokenWithSpan)> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t.token, Token::Whitespace(_) | Token::SemiColon))
        .collect();
    let tail = ["EMIT", "ON", "WINDOW", "CLOSE"];
    if words.len() < tail.len() {
        return (sql.to_string(), false);
    }
    let last = &words[words.len() - tail.len()..];
    let matches = last.iter().zip(tail).all(|((_, t), want)| {
        matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(want))
    });
    if !matches {
        return (sql.to_string(), false);
    }
    let line_starts = line_starts(sql);
    let span = last[0].1.span.start;
    let cut = byte_offset(sql, &line_starts, span.line, span.column);
    (sql[..cut].trim_end().to_string(), true)
}

/// Takes a `WATERMARK FOR column AS expr` element out of a CREATE STREAM's column list
/// (sqlparser does not know it): the statement without it, and the clause parsed.
fn take_watermark_clause(sql: &str) -> Result<(String, Option<Box<WatermarkClause>>)> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| syntax_error(sql, &e.to_string()))?;
    let line_starts = line_starts(sql);
    let offset = |t: &datafusion::sql::sqlparser::tokenizer::TokenWithSpan| {
        byte_offset(sql, &line_starts, t.span.start.line, t.span.start.column)
    };
    let mut depth = 0usize;
    // The last token at depth 1 that was not whitespace, and where the element began.
    let mut previous: Option<usize> = None;
    let mut found: Option<(usize, usize)> = None;
    for (i, t) in tokens.iter().enumerate() {
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            Token::Word(w)
                if depth == 1
                    && w.quote_style.is_none()
                    && w.value.eq_ignore_ascii_case("WATERMARK")
                    && previous.is_some_and(|p| {
                        matches!(tokens[p].token, Token::Comma | Token::LParen)
                    }) =>
            {
                if found.is_some() {
                    return Err(RunnelError::plan(
                        SqlState::INVALID_TABLE_DEFINITION,
                        "a stream can have only one WATERMARK",
                    ));
                }
                found = Some((previous.unwrap_or(i), i));
            }
            _ => {}
        }
        if !matches!(t.token, Token::Whitespace(_)) && depth >= 1 {
            previous = Some(i);
        }
    }
    let Some((before, start)) = found else {
        return Ok((sql.to_string(), None));
    };
    // The element ends at the next comma at depth 1 or at the list's closing parenthesis.
    let mut depth = 1usize;
    let mut end = tokens.len();
    for (i, t) in tokens.iter().enumerate().skip(start + 1) {
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen if depth == 1 => {
                end = i;
                break;
            }
            Token::RParen => depth -= 1,
            Token::Comma if depth == 1 => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let clause_tokens: Vec<Token> = tokens[start + 1..end]
        .iter()
        .map(|t| t.token.clone())
        .collect();
    let mut parser = Parser::new(&dialect).with_tokens(clause_tokens);
    let expect = "expected WATERMARK FOR column AS column - INTERVAL '...'";
    use datafusion::sql::sqlparser::keywords::Keyword;
    parser
        .expect_keyword(Keyword::FOR)
        .map_err(|_| syntax_error(sql, expect))?;
    let column = parser
        .parse_identifier()
        .map_err(|_| syntax_error(sql, expect))?;
    parser
        .expect_keyword(Keyword::AS)
        .map_err(|_| syntax_error(sql, expect))?;
    let expr = parser.parse_expr().map_err(|e| parse_error(sql, e))?;
    if parser.peek_token().token != Token::EOF {
        return Err(syntax_error(sql, expect));
    }
    // Cut from the separating comma before the clause (or, when it comes first, up to and
    // including the comma after it).
    let end_offset = match tokens.get(end) {
        Some(t) if tokens[before].token == Token::LParen && t.token == Token::Comma => {
            offset(t) + 1
        }
        Some(t) => offset(t),
        None => sql.len(),
    };
    let cut_from = match tokens[before].token {
        Token::Comma => offset(&tokens[before]),
        _ => offset(&tokens[start]),
    };
    let mut rest = String::with_capacity(sql.len());
    rest.push_str(&sql[..cut_from]);
    rest.push_str(&sql[end_offset..]);
    Ok((
        rest,
        Some(Box::new(WatermarkClause {
            column: ident_name(&column),
            expr,
        })),
    ))
}

/// `CREATE SINK [IF NOT EXISTS] name FROM relation WITH (k = v, ...)`.
fn create_sink(sql: &str) -> Result<Statement> {
    use datafusion::sql::sqlparser::keywords::Keyword;
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(sql)
        .map_err(|e| parse_error(sql, e))?;
    let expect_word = |parser: &mut Parser<'_>, word: &str| -> Result<()> {
        match parser.next_token().token {
            Token::Word(w) if w.value.eq_ignore_ascii_case(word) => Ok(()),
            _ => Err(syntax_error(
                sql,
                "expected CREATE SINK name FROM relation WITH (...)",
            )),
        }
    };
    expect_word(&mut parser, "CREATE")?;
    expect_word(&mut parser, "SINK")?;
    let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = parser
        .parse_object_name(false)
        .map_err(|e| parse_error(sql, e))?;
    parser
        .expect_keyword(Keyword::FROM)
        .map_err(|e| parse_error(sql, e))?;
    let from = parser
        .parse_object_name(false)
        .map_err(|e| parse_error(sql, e))?;
    let options = parser
        .parse_options(Keyword::WITH)
        .map_err(|e| parse_error(sql, e))?;
    let _ = parser.consume_token(&Token::SemiColon);
    if parser.peek_token().token != Token::EOF {
        return Err(syntax_error(
            sql,
            "unexpected text after CREATE SINK ... WITH (...)",
        ));
    }
    Ok(Statement::CreateSink {
        name: object_name(&name),
        from: object_name(&from),
        options: crate::ddl::sql_options(&ast::CreateTableOptions::With(options))?,
        if_not_exists,
    })
}

fn drop_statement(statement: ast::Statement, forced: Option<ObjectKind>) -> Result<Statement> {
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
    let kind = match (forced, object_type) {
        (Some(kind), _) => kind,
        (None, ObjectType::Table) => ObjectKind::Table,
        (None, ObjectType::MaterializedView) => ObjectKind::MaterializedView,
        (None, ObjectType::View) => ObjectKind::MaterializedView,
        (None, other) => {
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

/// Parses exactly one statement with the PostgreSQL dialect.
pub fn parse_one(sql: &str) -> Result<ast::Statement> {
    let dialect = PostgreSqlDialect {};
    let mut statements = Parser::parse_sql(&dialect, sql).map_err(|e| parse_error(sql, e))?;
    match statements.len() {
        1 => Ok(statements.remove(0)),
        _ => Err(RunnelError::plan(
            SqlState::SYNTAX_ERROR,
            "expected exactly one statement",
        )),
    }
}

fn parse_error(sql: &str, e: ParserError) -> RunnelError {
    match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => syntax_error(sql, &m),
        ParserError::RecursionLimitExceeded => {
            RunnelError::plan(SqlState::SYNTAX_ERROR, "statement is nested too deeply")
        }
    }
}

/// A syntax error with the position sqlparser reported ("... at Line: 1, Column: 8").
/// The 1-based character position (what an ErrorResponse reports) of a 1-based line and
/// column in `sql`.
pub fn char_position(sql: &str, line: u64, column: u64) -> u32 {
    let starts = line_starts(sql);
    let byte = byte_offset(sql, &starts, line, column);
    u32::try_from(sql[..byte].chars().count()).unwrap_or(u32::MAX - 1) + 1
}

fn syntax_error(sql: &str, message: &str) -> RunnelError {
    let position = parse_location(message).map(|(line, col)| char_position(sql, line, col));
    let clean = message
        .split(" at Line: ")
        .next()
        .unwrap_or(message)
        .trim()
        .to_string();
    RunnelError::Plan {
        state: SqlState::SYNTAX_ERROR,
        message: format!("syntax error: {clean}"),
        position,
    }
}

fn parse_location(message: &str) -> Option<(u64, u64)> {
    let idx = message.rfind("Line: ")?;
    let rest = &message[idx + 6..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let col: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((line.trim().parse().ok()?, col.parse().ok()?))
}

/// Replaces the first occurrence of a keyword (as a whole word, any case) in `sql`.
fn replace_word(sql: &str, word: &str, with: &str) -> String {
    let upper = sql.to_ascii_uppercase();
    let mut from = 0;
    while let Some(pos) = upper[from..].find(word) {
        let start = from + pos;
        let end = start + word.len();
        let before_ok = start == 0 || !is_ident_byte(upper.as_bytes()[start - 1]);
        let after_ok = end == upper.len() || !is_ident_byte(upper.as_bytes()[end]);
        if before_ok && after_ok {
            return format!("{}{}{}", &sql[..start], with, &sql[end..]);
        }
        from = end;
    }
    sql.to_string()
}

fn strip_first_word<'a>(sql: &'a str, word: &str) -> &'a str {
    let trimmed = sql.trim_start();
    if trimmed.len() >= word.len() && trimmed[..word.len()].eq_ignore_ascii_case(word) {
        &trimmed[word.len()..]
    } else {
        sql
    }
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A relation name as Runnel's catalog keys it: the last part, normalised like Postgres
/// (unquoted identifiers fold to lower case).
pub fn object_name(name: &ast::ObjectName) -> String {
    name.0
        .last()
        .and_then(|part| part.as_ident())
        .map(ident_name)
        .unwrap_or_else(|| name.to_string())
}

pub fn ident_name(ident: &ast::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_top_level_semicolons_only() {
        let parts = split_statements("select ';'; select 2 ; -- c; \n ;").unwrap();
        assert_eq!(parts, vec!["select ';'", "select 2"]);
    }

    #[test]
    fn classifies_runnel_commands() {
        let s =
            parse_statements("CREATE STREAM s (a BIGINT); FLUSH; SHOW materialized views").unwrap();
        assert!(matches!(
            s[0].kind,
            Statement::CreateRelation {
                kind: ObjectKind::Stream,
                ..
            }
        ));
        assert!(matches!(s[1].kind, Statement::Flush));
        assert!(matches!(
            s[2].kind,
            Statement::Show(ShowKind::MaterializedViews)
        ));
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse_one("SELECT * FORM t").unwrap_err();
        assert_eq!(err.sqlstate(), SqlState::SYNTAX_ERROR);
        assert!(err.position().is_some());
    }

    #[test]
    fn copy_options() {
        let s = parse_statements("COPY s FROM STDIN WITH (FORMAT csv, HEADER true)").unwrap();
        match &s[0].kind {
            Statement::Copy { table, options, .. } => {
                assert_eq!(table, "s");
                assert!(options.csv && options.header);
                assert_eq!(options.delimiter, b',');
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn create_and_drop_sink() {
        let parsed = parse_statements(
            "CREATE SINK IF NOT EXISTS out FROM v WITH (connector = 'kafka', topic = 'recs', mode = 'upsert');",
        )
        .unwrap();
        match &parsed[0].kind {
            Statement::CreateSink {
                name,
                from,
                options,
                if_not_exists,
            } => {
                assert_eq!(
                    (name.as_str(), from.as_str(), *if_not_exists),
                    ("out", "v", true)
                );
                assert_eq!(
                    options,
                    &vec![
                        ("connector".to_string(), "kafka".to_string()),
                        ("topic".to_string(), "recs".to_string()),
                        ("mode".to_string(), "upsert".to_string()),
                    ]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        for bad in [
            "CREATE SINK out v WITH (topic = 't')",
            "CREATE SINK out FROM v WITH (topic = 't') extra",
            "CREATE SINK FROM v",
        ] {
            let err = parse_statements(bad).unwrap_err();
            assert_eq!(err.sqlstate(), SqlState::SYNTAX_ERROR, "{bad}");
        }
        match &parse_statements("DROP SINK IF EXISTS a, b").unwrap()[0].kind {
            Statement::Drop {
                kind,
                names,
                if_exists,
                ..
            } => {
                assert_eq!(*kind, ObjectKind::Sink);
                assert_eq!(names, &vec!["a".to_string(), "b".to_string()]);
                assert!(*if_exists);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
