//! SUBSCRIBE, as Materialize has it: `SUBSCRIBE [TO] relation [WITH (SNAPSHOT [= bool],
//! PROGRESS [= bool])]` alone, inside `COPY (...) TO STDOUT [WITH (...)]`, or as the query of
//! `DECLARE name CURSOR [WITH[OUT] HOLD] FOR ...`; and FETCH's `WITH (TIMEOUT = 'interval')`.
//! sqlparser knows none of them; the parts it knows (names, COPY's options, FETCH itself) are
//! still parsed by it.

use std::time::Duration;

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};
use runnel_common::{Result, RunnelError, SqlState};

use super::{is_word, RunnelParser};
use crate::statement::{object_name, CopySource, Statement, SubscribeSpec};

impl RunnelParser<'_> {
    /// `SUBSCRIBE ...` alone.
    pub(super) fn subscribe(&mut self) -> Result<Statement> {
        let spec = self.subscribe_spec()?;
        self.expect_end("unexpected text after SUBSCRIBE")?;
        Ok(Statement::Subscribe(spec))
    }

    /// `COPY (SUBSCRIBE ...) TO STDOUT [WITH (...)]`: the options are COPY's, parsed as those
    /// of `COPY (SELECT 1) TO STDOUT ...`.
    pub(super) fn copy_subscribe(&mut self) -> Result<Statement> {
        self.expect_word("COPY")?;
        self.sql_part(|p| p.expect_token(&Token::LParen))?;
        let spec = self.subscribe_spec()?;
        let close = self.parser.next_token();
        if close.token != Token::RParen {
            return Err(self.error_at(&close, "expected ) after SUBSCRIBE"));
        }
        let rest = &self.sql[super::byte_offset(
            self.sql,
            &super::line_starts(self.sql),
            close.span.end.line,
            close.span.end.column,
        )..];
        let copy = super::RunnelParser::parse(&format!("COPY (SELECT 1) {rest}"))?;
        match copy {
            Statement::CopyTo { options, .. } => Ok(Statement::CopyTo {
                source: CopySource::Subscribe(spec),
                options,
            }),
            _ => Err(RunnelError::plan(
                SqlState::SYNTAX_ERROR,
                "COPY (SUBSCRIBE ...) must be followed by TO STDOUT",
            )),
        }
    }

    /// `DECLARE name [NO SCROLL] CURSOR [WITH HOLD | WITHOUT HOLD] FOR SUBSCRIBE ...`.
    pub(super) fn declare_subscribe(&mut self) -> Result<Statement> {
        self.expect_word("DECLARE")?;
        let name = self.sql_part(|p| p.parse_identifier())?;
        let _ = self.parser.parse_keywords(&[Keyword::NO, Keyword::SCROLL]);
        self.sql_part(|p| p.expect_keyword(Keyword::CURSOR))?;
        let hold = if self.parser.parse_keywords(&[Keyword::WITH, Keyword::HOLD]) {
            true
        } else {
            let _ = self
                .parser
                .parse_keywords(&[Keyword::WITHOUT, Keyword::HOLD]);
            false
        };
        self.sql_part(|p| p.expect_keyword(Keyword::FOR))?;
        let subscribe = self.subscribe_spec()?;
        self.expect_end("unexpected text after DECLARE ... FOR SUBSCRIBE")?;
        Ok(Statement::DeclareSubscribe {
            name: crate::statement::ident_name(&name),
            subscribe,
            hold,
        })
    }

    fn subscribe_spec(&mut self) -> Result<SubscribeSpec> {
        self.expect_word("SUBSCRIBE")?;
        let _ = self.parser.parse_keyword(Keyword::TO);
        let relation = self.sql_part(|p| p.parse_object_name(false))?;
        let mut spec = SubscribeSpec {
            relation: object_name(&relation),
            snapshot: true,
            progress: false,
        };
        if self.parser.parse_keyword(Keyword::WITH) {
            self.sql_part(|p| p.expect_token(&Token::LParen))?;
            loop {
                let option = self.sql_part(|p| p.parse_identifier())?;
                let value = if self.parser.consume_token(&Token::Eq) {
                    let token = self.parser.next_token();
                    match &token.token {
                        Token::Word(w) if w.value.eq_ignore_ascii_case("true") => true,
                        Token::Word(w) if w.value.eq_ignore_ascii_case("false") => false,
                        Token::SingleQuotedString(s) if s.eq_ignore_ascii_case("true") => true,
                        Token::SingleQuotedString(s) if s.eq_ignore_ascii_case("false") => false,
                        _ => {
                            return Err(self.error_at(
                                &token,
                                &format!("{} takes true or false", option.value),
                            ))
                        }
                    }
                } else {
                    true
                };
                match option.value.to_ascii_lowercase().as_str() {
                    "snapshot" => spec.snapshot = value,
                    "progress" => spec.progress = value,
                    other => {
                        return Err(RunnelError::plan(
                            SqlState::INVALID_PARAMETER_VALUE,
                            format!(
                                "unknown SUBSCRIBE option \"{other}\" (known: snapshot, progress)"
                            ),
                        ))
                    }
                }
                if !self.parser.consume_token(&Token::Comma) {
                    break;
                }
            }
            self.sql_part(|p| p.expect_token(&Token::RParen))?;
        }
        Ok(spec)
    }
}

/// Takes a FETCH's trailing `WITH (TIMEOUT = 'interval')` off its tokens, so sqlparser parses
/// the rest; returns the timeout.
pub(super) fn take_fetch_timeout(tokens: &mut Vec<TokenWithSpan>) -> Result<Option<Duration>> {
    let Some(with) = tokens.iter().position(|t| is_word(&t.token, "WITH")) else {
        return Ok(None);
    };
    let significant: Vec<&Token> = tokens[with..]
        .iter()
        .map(|t| &t.token)
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::SemiColon | Token::EOF))
        .collect();
    let text = match significant.as_slice() {
        [_, Token::LParen, Token::Word(option), Token::Eq, value, Token::RParen]
            if option.value.eq_ignore_ascii_case("timeout") =>
        {
            match value {
                Token::SingleQuotedString(text) => text.clone(),
                Token::Number(n, _) => format!("{n} seconds"),
                _ => return Err(bad_timeout()),
            }
        }
        _ => return Err(bad_timeout()),
    };
    let interval = runnel_common::interval_text::parse_interval(&text).ok_or_else(bad_timeout)?;
    if interval.months != 0 || interval.days != 0 || interval.nanoseconds < 0 {
        return Err(bad_timeout());
    }
    tokens.truncate(with);
    Ok(Some(Duration::from_nanos(interval.nanoseconds as u64)))
}

/// Postgres lets FETCH leave out `FROM` before the cursor's name (`FETCH 10 c`); sqlparser
/// does not, so it is put back.
pub(super) fn add_fetch_from(tokens: &mut Vec<TokenWithSpan>) {
    if tokens
        .iter()
        .any(|t| is_word(&t.token, "FROM") || is_word(&t.token, "IN"))
    {
        return;
    }
    let Some(name) = tokens.iter().rposition(|t| {
        !matches!(
            t.token,
            Token::Whitespace(_) | Token::SemiColon | Token::EOF
        )
    }) else {
        return;
    };
    if name == 0 || !matches!(tokens[name].token, Token::Word(_)) {
        return;
    }
    let at = tokens[name].span;
    tokens.insert(
        name,
        TokenWithSpan::new(
            Token::Whitespace(datafusion::sql::sqlparser::tokenizer::Whitespace::Space),
            at,
        ),
    );
    tokens.insert(name, TokenWithSpan::new(Token::make_keyword("FROM"), at));
}

fn bad_timeout() -> RunnelError {
    RunnelError::plan(
        SqlState::INVALID_PARAMETER_VALUE,
        "FETCH takes WITH (TIMEOUT = 'interval'), an interval of seconds or less than a day",
    )
}
