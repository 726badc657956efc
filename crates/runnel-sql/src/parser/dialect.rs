//! Runnel's SQL dialect: sqlparser's PostgreSQL dialect with a bound on the parser's work.
//!
//! sqlparser 0.62 (the version DataFusion 55 uses) parses some expression heads speculatively:
//! a reserved word such as `ARRAY` or `CAST` is tried as an expression, and when that fails it
//! is tried again as an identifier, which re-parses everything after it. Nested, the work
//! multiplies at every level: 48 nested `ARRAY[` (where the recursion limit fails the innermost)
//! ran for hours, and `CAST(` nested 16 deep around a syntax error takes 200,000 expression
//! starts where the statement has 70 tokens. Valid statements are not spared: nested function
//! calls are parsed twice a level (see `supports_named_fn_args_with_expr_name` below, which
//! turns that off). (sqlparser 0.64 memoizes these failures; Runnel cannot use it before
//! DataFusion does.)
//!
//! [`BudgetedDialect`] counts the expressions the parser starts, through sqlparser's
//! `parse_prefix` hook, which sees every one, speculative or not. A statement that parses in
//! one pass starts about one expression per token; past [`budget`] starts the hook fails every
//! further one, so the parser unwinds at once, and the statement is refused as too complex
//! (54001) instead of holding a core.

use std::any::TypeId;
use std::cell::Cell;

use datafusion::sql::sqlparser::ast::Expr;
use datafusion::sql::sqlparser::dialect::{Dialect, PostgreSqlDialect, Precedence};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};

/// How many expression starts a statement of `tokens` tokens may take: far more than any
/// statement needs that parses without backtracking through nested speculation, and little
/// enough work (about a millisecond per 1,000 starts) to stay well under a second.
pub(crate) fn budget(tokens: usize) -> u64 {
    100_000 + 8 * tokens as u64
}

/// sqlparser's [`PostgreSqlDialect`], every one of its choices delegated to it (sqlparser
/// checks the dialect by its `TypeId`, which is PostgreSQL's too), plus a work budget.
#[derive(Debug)]
pub(crate) struct BudgetedDialect {
    postgres: PostgreSqlDialect,
    started: Cell<u64>,
    budget: u64,
}

impl BudgetedDialect {
    pub(crate) fn new(budget: u64) -> BudgetedDialect {
        BudgetedDialect {
            postgres: PostgreSqlDialect {},
            started: Cell::new(0),
            budget,
        }
    }

    /// The parser started more expressions than the budget allows (its error, whatever it
    /// says, comes from running out).
    pub(crate) fn exhausted(&self) -> bool {
        self.started.get() > self.budget
    }
}

impl Dialect for BudgetedDialect {
    fn dialect(&self) -> TypeId {
        self.postgres.dialect()
    }

    /// Counts an expression start; past the budget, fails it. The error is the one sqlparser
    /// never retries after (`maybe_parse` passes it on), so the parse ends quickly.
    fn parse_prefix(&self, parser: &mut Parser) -> Option<Result<Expr, ParserError>> {
        let started = self.started.get() + 1;
        self.started.set(started);
        if started > self.budget {
            return Some(Err(ParserError::RecursionLimitExceeded));
        }
        self.postgres.parse_prefix(parser)
    }

    // Everything below is PostgreSqlDialect's, method for method (every method it overrides
    // in sqlparser 0.62, and the hooks the parser calls).

    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        self.postgres.identifier_quote_style(identifier)
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        self.postgres.is_delimited_identifier_start(ch)
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        self.postgres.is_identifier_start(ch)
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        self.postgres.is_identifier_part(ch)
    }

    fn supports_unicode_string_literal(&self) -> bool {
        self.postgres.supports_unicode_string_literal()
    }

    fn is_reserved_for_identifier(&self, kw: Keyword) -> bool {
        self.postgres.is_reserved_for_identifier(kw)
    }

    fn is_custom_operator_part(&self, ch: char) -> bool {
        self.postgres.is_custom_operator_part(ch)
    }

    fn get_next_precedence(&self, parser: &Parser) -> Option<Result<u8, ParserError>> {
        self.postgres.get_next_precedence(parser)
    }

    fn parse_infix(
        &self,
        parser: &mut Parser,
        expr: &Expr,
        precedence: u8,
    ) -> Option<Result<Expr, ParserError>> {
        self.postgres.parse_infix(parser, expr, precedence)
    }

    fn parse_statement(
        &self,
        parser: &mut Parser,
    ) -> Option<Result<datafusion::sql::sqlparser::ast::Statement, ParserError>> {
        self.postgres.parse_statement(parser)
    }

    fn supports_filter_during_aggregation(&self) -> bool {
        self.postgres.supports_filter_during_aggregation()
    }

    fn supports_group_by_expr(&self) -> bool {
        self.postgres.supports_group_by_expr()
    }

    fn prec_value(&self, prec: Precedence) -> u8 {
        self.postgres.prec_value(prec)
    }

    fn allow_extract_custom(&self) -> bool {
        self.postgres.allow_extract_custom()
    }

    fn allow_extract_single_quotes(&self) -> bool {
        self.postgres.allow_extract_single_quotes()
    }

    fn supports_create_index_with_clause(&self) -> bool {
        self.postgres.supports_create_index_with_clause()
    }

    fn supports_explain_with_utility_options(&self) -> bool {
        self.postgres.supports_explain_with_utility_options()
    }

    fn supports_listen_notify(&self) -> bool {
        self.postgres.supports_listen_notify()
    }

    fn supports_factorial_operator(&self) -> bool {
        self.postgres.supports_factorial_operator()
    }

    fn supports_bitwise_shift_operators(&self) -> bool {
        self.postgres.supports_bitwise_shift_operators()
    }

    fn supports_comment_on(&self) -> bool {
        self.postgres.supports_comment_on()
    }

    fn supports_load_extension(&self) -> bool {
        self.postgres.supports_load_extension()
    }

    fn supports_named_fn_args_with_colon_operator(&self) -> bool {
        self.postgres.supports_named_fn_args_with_colon_operator()
    }

    /// Off, where PostgreSQL's dialect has it on: to find `json_object('label': value)`,
    /// sqlparser parses every function argument as a possible name first and again as the
    /// argument, so nested calls took 2^depth tries (`replace(` nested 20 deep, 6 million).
    /// Named arguments (`f(a => 1)`) still parse, with an identifier for the name, which is
    /// all DataFusion plans.
    fn supports_named_fn_args_with_expr_name(&self) -> bool {
        false
    }

    fn supports_empty_projections(&self) -> bool {
        self.postgres.supports_empty_projections()
    }

    fn supports_nested_comments(&self) -> bool {
        self.postgres.supports_nested_comments()
    }

    fn supports_string_escape_constant(&self) -> bool {
        self.postgres.supports_string_escape_constant()
    }

    fn supports_numeric_literal_underscores(&self) -> bool {
        self.postgres.supports_numeric_literal_underscores()
    }

    fn supports_array_typedef_with_brackets(&self) -> bool {
        self.postgres.supports_array_typedef_with_brackets()
    }

    fn supports_geometric_types(&self) -> bool {
        self.postgres.supports_geometric_types()
    }

    fn supports_set_names(&self) -> bool {
        self.postgres.supports_set_names()
    }

    fn supports_alter_column_type_using(&self) -> bool {
        self.postgres.supports_alter_column_type_using()
    }

    fn supports_notnull_operator(&self) -> bool {
        self.postgres.supports_notnull_operator()
    }

    fn supports_interval_options(&self) -> bool {
        self.postgres.supports_interval_options()
    }

    fn supports_insert_table_alias(&self) -> bool {
        self.postgres.supports_insert_table_alias()
    }

    fn supports_create_table_like_parenthesized(&self) -> bool {
        self.postgres.supports_create_table_like_parenthesized()
    }

    fn supports_select_wildcard_with_alias(&self) -> bool {
        self.postgres.supports_select_wildcard_with_alias()
    }

    fn supports_comma_separated_trim(&self) -> bool {
        self.postgres.supports_comma_separated_trim()
    }

    fn supports_xml_expressions(&self) -> bool {
        self.postgres.supports_xml_expressions()
    }

    fn supports_comment_optimizer_hint(&self) -> bool {
        self.postgres.supports_comment_optimizer_hint()
    }
}
