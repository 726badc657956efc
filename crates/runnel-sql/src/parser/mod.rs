//! Runnel's SQL parser. It wraps sqlparser's PostgreSQL parser, as DataFusion's `DFParser`
//! does: Runnel's statement extensions are parsed from the token stream (`CREATE STREAM` with
//! its `WATERMARK FOR` element, `CREATE SINK`, `DROP STREAM | SINK`, `EXPLAIN CREATE
//! MATERIALIZED VIEW`, a view's trailing `EMIT ON WINDOW CLOSE`, `SHOW STREAMS | TABLES |
//! MATERIALIZED VIEWS | SINKS | PROGRESS | WATERMARKS`, `FLUSH`, the role statements of
//! [`role_statement`] and the GRANT and REVOKE of [`grant_statement`]) by calling sqlparser's own
//! parsers for the parts they share (names, column definitions, constraints, expressions,
//! `WITH` options); every other statement is sqlparser's, classified in [`sql_statement`].
//! Nothing is cut out of or replaced in the SQL text.

mod dialect;
mod grant_statement;
mod role_statement;
mod sql_statement;
mod subscribe_statement;

use datafusion::sql::sqlparser::ast::{
    self, helpers::stmt_create_table::CreateTableBuilder, Visit,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};
use runnel_common::{Result, RunnelError, SqlState};

use self::dialect::BudgetedDialect;
use crate::statement::{
    object_name, ObjectKind, ParsedStatement, ShowKind, Statement, TransactionCommand,
    WatermarkClause,
};

static DIALECT: PostgreSqlDialect = PostgreSqlDialect {};

/// How deeply the parser recurses (brackets, function calls, subqueries: a nested function
/// call takes three levels) before it refuses a statement (54001); sqlparser's default is 50.
const RECURSION_LIMIT: usize = 100;

/// Splits `sql` at top-level semicolons and parses every non-empty statement.
pub fn parse_statements(sql: &str) -> Result<Vec<ParsedStatement>> {
    split_statements(sql)?
        .into_iter()
        .map(|text| {
            let kind = RunnelParser::parse(&text)?;
            Ok(ParsedStatement { sql: text, kind })
        })
        .collect()
}

/// Splits at semicolons outside strings, identifiers and comments.
pub fn split_statements(sql: &str) -> Result<Vec<String>> {
    let tokens = tokenize(sql)?;
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

/// Parses exactly one sqlparser statement (no Runnel extensions).
pub fn parse_one(sql: &str) -> Result<ast::Statement> {
    let tokens = tokenize(sql)?;
    let dialect = BudgetedDialect::new(dialect::budget(tokens.len()));
    let mut parser = RunnelParser::new(sql, tokens, &dialect);
    let statement = parser.sql_tree(Parser::parse_statement)?;
    parser.expect_end("expected exactly one statement")?;
    Ok(statement)
}

/// Parses one expression (SQL text Runnel put together from a parsed statement's parts).
pub(crate) fn parse_expression(sql: &str) -> Result<ast::Expr> {
    let tokens = tokenize(sql)?;
    let dialect = BudgetedDialect::new(dialect::budget(tokens.len()));
    let mut parser = RunnelParser::new(sql, tokens, &dialect);
    let expr = parser.sql_tree(Parser::parse_expr)?;
    parser.expect_end("expected one expression")?;
    Ok(expr)
}

const EMIT_ON_WINDOW_CLOSE: [&str; 4] = ["EMIT", "ON", "WINDOW", "CLOSE"];

/// One statement's parser: sqlparser's, over the statement's tokens.
pub struct RunnelParser<'a> {
    sql: &'a str,
    dialect: &'a BudgetedDialect,
    parser: Parser<'a>,
}

impl<'a> RunnelParser<'a> {
    fn new(
        sql: &'a str,
        tokens: Vec<TokenWithSpan>,
        dialect: &'a BudgetedDialect,
    ) -> RunnelParser<'a> {
        RunnelParser {
            sql,
            dialect,
            parser: Parser::new(dialect)
                .with_recursion_limit(RECURSION_LIMIT)
                .with_tokens_with_locations(tokens),
        }
    }

    /// Parses one statement (without its terminating semicolon, which is allowed).
    pub fn parse(sql: &'a str) -> Result<Statement> {
        let mut tokens = tokenize(sql)?;
        let words = leading_words(&tokens, 4);
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        // A view's trailing clause is the last tokens of the statement: taking them off the
        // token stream keeps sqlparser from reading `EMIT` as a table alias.
        let emit_on_window_close = matches!(
            w.as_slice(),
            ["CREATE", "MATERIALIZED", "VIEW", ..] | ["EXPLAIN", "CREATE", "MATERIALIZED", ..]
        ) && take_trailing_words(&mut tokens, &EMIT_ON_WINDOW_CLOSE);
        let creates_table_with_watermark =
            matches!(w.as_slice(), ["CREATE", "TABLE", ..]) && has_watermark_element(&tokens);
        let fetch_timeout = if matches!(w.as_slice(), ["FETCH", ..]) {
            let timeout = subscribe_statement::take_fetch_timeout(&mut tokens)?;
            subscribe_statement::add_fetch_from(&mut tokens);
            timeout
        } else {
            None
        };
        let declares_subscribe = matches!(w.as_slice(), ["DECLARE", ..])
            && leading_words(&tokens, 10)
                .windows(2)
                .any(|pair| pair[0] == "FOR" && pair[1] == "SUBSCRIBE");
        let dialect = BudgetedDialect::new(dialect::budget(tokens.len()));
        let mut parser = RunnelParser::new(sql, tokens, &dialect);
        let statement = match w.as_slice() {
            ["CREATE", "STREAM", ..] => parser.create_stream()?,
            ["CREATE", "SINK", ..] => parser.create_sink()?,
            ["DROP", "STREAM", ..] => parser.drop_extension(ObjectKind::Stream)?,
            ["DROP", "SINK", ..] => parser.drop_extension(ObjectKind::Sink)?,
            ["EXPLAIN", "CREATE", ..] => parser.explain_create_view(emit_on_window_close)?,
            ["SHOW", "STREAMS", ..] => parser.words_only(2, Statement::Show(ShowKind::Streams))?,
            ["SHOW", "TABLES", ..] => parser.words_only(2, Statement::Show(ShowKind::Tables))?,
            ["SHOW", "MATERIALIZED", "VIEWS", ..] => {
                parser.words_only(3, Statement::Show(ShowKind::MaterializedViews))?
            }
            ["SHOW", "SINKS", ..] => parser.words_only(2, Statement::Show(ShowKind::Sinks))?,
            ["SHOW", "PROGRESS", ..] => {
                parser.words_only(2, Statement::Show(ShowKind::Progress))?
            }
            ["SHOW", "WATERMARKS", ..] => {
                parser.words_only(2, Statement::Show(ShowKind::Watermarks))?
            }
            ["FLUSH", ..] => parser.words_only(1, Statement::Flush)?,
            ["SUBSCRIBE", ..] => parser.subscribe()?,
            ["COPY", "(", "SUBSCRIBE", ..] => parser.copy_subscribe()?,
            ["DECLARE", ..] if declares_subscribe => parser.declare_subscribe()?,
            ["CREATE", "ROLE", ..] => parser.create_role(false)?,
            ["CREATE", "USER", ..] => parser.create_role(true)?,
            ["ALTER", "ROLE" | "USER", ..] => parser.alter_role()?,
            ["DROP", "ROLE" | "USER", ..] => parser.drop_role()?,
            ["GRANT", ..] => parser.grant(false)?,
            ["REVOKE", ..] => parser.grant(true)?,
            // Postgres statements sqlparser does not parse (or parses into more than Runnel
            // needs): each is accepted whole, whatever follows its leading words.
            ["DISCARD", "ALL"] => Statement::ResetVariable(None),
            ["DISCARD", ..] => Statement::NoOp("DISCARD"),
            ["DEALLOCATE", ..] => Statement::NoOp("DEALLOCATE"),
            // Runnel sends no notifications: there is nothing to stop listening to.
            ["UNLISTEN", ..] => Statement::NoOp("UNLISTEN"),
            ["SET", "SESSION", "CHARACTERISTICS", ..] | ["SET", "TRANSACTION", ..] => {
                Statement::NoOp("SET")
            }
            ["BEGIN", ..] | ["START", "TRANSACTION", ..] => {
                Statement::Transaction(TransactionCommand::Begin)
            }
            ["COMMIT", ..] | ["END", ..] => Statement::Transaction(TransactionCommand::Commit),
            // `ABORT` takes no savepoint in Postgres; `ROLLBACK ... TO` goes to sqlparser.
            ["ABORT", ..] => Statement::Transaction(TransactionCommand::Rollback),
            ["ROLLBACK", ..] if !w.contains(&"TO") => {
                Statement::Transaction(TransactionCommand::Rollback)
            }
            _ if creates_table_with_watermark => {
                return Err(RunnelError::plan(
                    SqlState::INVALID_TABLE_DEFINITION,
                    "tables have no event time: WATERMARK FOR belongs in CREATE STREAM",
                ))
            }
            _ => {
                let statement = parser.sql_tree(Parser::parse_statement)?;
                parser.expect_end("expected exactly one statement")?;
                sql_statement::classify(sql, statement, emit_on_window_close)?
            }
        };
        Ok(match statement {
            Statement::Fetch { name, count, .. } if fetch_timeout.is_some() => Statement::Fetch {
                name,
                count,
                timeout: fetch_timeout,
            },
            statement => statement,
        })
    }

    /// `CREATE STREAM [IF NOT EXISTS] name [( element, ... )] [WITH (option = value, ...)]`,
    /// where an element is a column, a table constraint or `WATERMARK FOR column AS expr`.
    fn create_stream(&mut self) -> Result<Statement> {
        self.expect_word("CREATE")?;
        self.expect_word("STREAM")?;
        let if_not_exists =
            self.parser
                .parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let name = self.sql_part(|p| p.parse_object_name(false))?;
        let mut columns = Vec::new();
        let mut constraints = Vec::new();
        let mut watermark = None;
        if self.parser.consume_token(&Token::LParen) && !self.parser.consume_token(&Token::RParen) {
            loop {
                if self.peek_word(0, "WATERMARK") && self.peek_word(1, "FOR") {
                    if watermark.is_some() {
                        return Err(RunnelError::plan(
                            SqlState::INVALID_TABLE_DEFINITION,
                            "a stream can have only one WATERMARK",
                        ));
                    }
                    watermark = Some(Box::new(self.watermark_clause()?));
                } else if let Some(constraint) =
                    self.sql_tree(|p| p.parse_optional_table_constraint())?
                {
                    constraints.push(constraint);
                } else {
                    columns.push(self.sql_tree(|p| p.parse_column_def())?);
                }
                if self.parser.consume_token(&Token::Comma) {
                    continue;
                }
                self.sql_part(|p| p.expect_token(&Token::RParen))?;
                break;
            }
        }
        let options = self.sql_part(|p| p.parse_options(Keyword::WITH))?;
        self.expect_end("unexpected text after CREATE STREAM ... WITH (...)")?;
        let table_options = if options.is_empty() {
            ast::CreateTableOptions::None
        } else {
            ast::CreateTableOptions::With(options)
        };
        let create = CreateTableBuilder::new(name)
            .if_not_exists(if_not_exists)
            .columns(columns)
            .constraints(constraints)
            .table_options(table_options)
            .build();
        Ok(Statement::CreateRelation {
            kind: ObjectKind::Stream,
            create: Box::new(create),
            watermark,
        })
    }

    /// `WATERMARK FOR column AS expr`.
    fn watermark_clause(&mut self) -> Result<WatermarkClause> {
        self.expect_word("WATERMARK")?;
        self.sql_part(|p| p.expect_keyword(Keyword::FOR))?;
        let column = self.sql_part(|p| p.parse_identifier())?;
        self.sql_part(|p| p.expect_keyword(Keyword::AS))?;
        let expr = self.sql_tree(|p| p.parse_expr())?;
        Ok(WatermarkClause {
            column: crate::statement::ident_name(&column),
            expr,
        })
    }

    /// `CREATE SINK [IF NOT EXISTS] name FROM relation WITH (option = value, ...)`.
    fn create_sink(&mut self) -> Result<Statement> {
        self.expect_word("CREATE")?;
        self.expect_word("SINK")?;
        let if_not_exists =
            self.parser
                .parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let name = self.sql_part(|p| p.parse_object_name(false))?;
        self.sql_part(|p| p.expect_keyword(Keyword::FROM))?;
        let from = self.sql_part(|p| p.parse_object_name(false))?;
        let options = self.sql_part(|p| p.parse_options(Keyword::WITH))?;
        self.expect_end("unexpected text after CREATE SINK ... WITH (...)")?;
        Ok(Statement::CreateSink {
            name: object_name(&name),
            from: object_name(&from),
            options: crate::ddl::sql_options(&ast::CreateTableOptions::With(options))?,
            if_not_exists,
        })
    }

    /// `DROP STREAM | SINK [IF EXISTS] name [, ...] [CASCADE | RESTRICT]`.
    fn drop_extension(&mut self, kind: ObjectKind) -> Result<Statement> {
        self.expect_word("DROP")?;
        self.parser.next_token();
        let if_exists = self.parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let names = self.sql_part(|p| p.parse_comma_separated(|p| p.parse_object_name(false)))?;
        let cascade = self.parser.parse_keyword(Keyword::CASCADE);
        if !cascade {
            let _ = self.parser.parse_keyword(Keyword::RESTRICT);
        }
        self.expect_end("unexpected text after DROP ... name")?;
        Ok(Statement::Drop {
            kind,
            names: names.iter().map(object_name).collect(),
            if_exists,
            cascade,
        })
    }

    /// `EXPLAIN CREATE MATERIALIZED VIEW ...`: the view's operator graph, nothing created.
    fn explain_create_view(&mut self, emit_on_window_close: bool) -> Result<Statement> {
        self.expect_word("EXPLAIN")?;
        let statement = self.sql_tree(|p| p.parse_statement())?;
        self.expect_end("expected exactly one statement")?;
        match sql_statement::classify(self.sql, statement, emit_on_window_close)? {
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

    /// A statement that is its first `n` words and nothing else.
    fn words_only(&mut self, n: usize, statement: Statement) -> Result<Statement> {
        for _ in 0..n {
            self.parser.next_token();
        }
        self.expect_end("unexpected text after the statement")?;
        Ok(statement)
    }

    /// Runs one of sqlparser's parsers, turning its error into a positioned syntax error.
    fn sql_part<T>(
        &mut self,
        part: impl FnOnce(&mut Parser<'a>) -> std::result::Result<T, ParserError>,
    ) -> Result<T> {
        part(&mut self.parser).map_err(|e| {
            if self.dialect.exhausted() {
                RunnelError::plan(
                    SqlState::STATEMENT_TOO_COMPLEX,
                    "statement too complex: the parser gave up on its nesting",
                )
            } else {
                parse_error(self.sql, e)
            }
        })
    }

    /// [`Self::sql_part`] for a part that holds expressions or queries: refused when it nests
    /// too deeply to plan (see [`crate::complexity`]).
    fn sql_tree<T: Visit>(
        &mut self,
        part: impl FnOnce(&mut Parser<'a>) -> std::result::Result<T, ParserError>,
    ) -> Result<T> {
        let tree = self.sql_part(part)?;
        crate::complexity::check_nesting(&tree)?;
        Ok(tree)
    }

    fn peek_word(&self, n: usize, word: &str) -> bool {
        is_word(&self.parser.peek_nth_token_ref(n).token, word)
    }

    fn expect_word(&mut self, word: &str) -> Result<()> {
        let token = self.parser.next_token();
        if is_word(&token.token, word) {
            Ok(())
        } else {
            Err(self.error_at(&token, &format!("expected {word}, found {}", token.token)))
        }
    }

    /// The statement ends here (a semicolon may end it).
    fn expect_end(&mut self, message: &str) -> Result<()> {
        let _ = self.parser.consume_token(&Token::SemiColon);
        let token = self.parser.peek_token();
        if token.token == Token::EOF {
            Ok(())
        } else {
            Err(self.error_at(&token, &format!("{message}, found {}", token.token)))
        }
    }

    fn error_at(&self, token: &TokenWithSpan, message: &str) -> RunnelError {
        let start = token.span.start;
        let position = (start.line > 0).then(|| char_position(self.sql, start.line, start.column));
        RunnelError::Plan {
            state: SqlState::SYNTAX_ERROR,
            message: format!("syntax error: {message}"),
            position,
        }
    }
}

fn tokenize(sql: &str) -> Result<Vec<TokenWithSpan>> {
    Tokenizer::new(&DIALECT, sql)
        .tokenize_with_location()
        .map_err(|e| syntax_error(sql, &e.to_string()))
}

fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// Upper-cased leading words of a statement (up to `n`), skipping whitespace and comments.
fn leading_words(tokens: &[TokenWithSpan], n: usize) -> Vec<String> {
    tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .take(n)
        .map(|t| match &t.token {
            Token::Word(w) => w.value.to_ascii_uppercase(),
            other => other.to_string(),
        })
        .collect()
}

/// Removes `words` from the end of the statement's tokens (before a final semicolon), if the
/// statement ends with them.
fn take_trailing_words(tokens: &mut Vec<TokenWithSpan>, words: &[&str]) -> bool {
    let significant: Vec<usize> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            !matches!(
                t.token,
                Token::Whitespace(_) | Token::SemiColon | Token::EOF
            )
        })
        .map(|(i, _)| i)
        .collect();
    if significant.len() < words.len() {
        return false;
    }
    let tail = &significant[significant.len() - words.len()..];
    if !tail
        .iter()
        .zip(words)
        .all(|(&i, word)| is_word(&tokens[i].token, word))
    {
        return false;
    }
    tokens.truncate(tail[0]);
    true
}

/// Whether a column list holds a `WATERMARK FOR` element (which only streams take).
fn has_watermark_element(tokens: &[TokenWithSpan]) -> bool {
    let significant: Vec<&Token> = tokens
        .iter()
        .map(|t| &t.token)
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let mut depth = 0usize;
    significant.windows(3).any(|w| {
        match w[0] {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
        let opens_element = matches!(w[0], Token::Comma | Token::LParen);
        depth == 1 && opens_element && is_word(w[1], "WATERMARK") && is_word(w[2], "FOR")
    })
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

/// The 1-based character position (what an ErrorResponse reports) of a 1-based line and
/// column in `sql`.
pub fn char_position(sql: &str, line: u64, column: u64) -> u32 {
    let starts = line_starts(sql);
    let byte = byte_offset(sql, &starts, line, column);
    u32::try_from(sql[..byte].chars().count()).unwrap_or(u32::MAX - 1) + 1
}

fn parse_error(sql: &str, e: ParserError) -> RunnelError {
    match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => syntax_error(sql, &m),
        ParserError::RecursionLimitExceeded => RunnelError::plan(
            SqlState::STATEMENT_TOO_COMPLEX,
            "statement too complex: it is nested too deeply",
        ),
    }
}

/// A syntax error with the position sqlparser reported ("... at Line: 1, Column: 8").
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

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
