//! `GRANT` and `REVOKE`, parsed from the tokens with sqlparser's primitives: sqlparser's own
//! GRANT covers many dialects' object kinds, Runnel keeps Postgres's forms for relations,
//! schema `public` and role membership:
//!
//! ```text
//! GRANT { { SELECT | INSERT | UPDATE | DELETE } [, ...] | ALL [ PRIVILEGES ] }
//!     ON { [ TABLE | MATERIALIZED VIEW | STREAM ] name [, ...] | ALL TABLES IN SCHEMA public }
//!     TO { role | PUBLIC | CURRENT_USER } [, ...]
//! GRANT CREATE ON SCHEMA public TO ...
//! GRANT role [, ...] TO ...
//! REVOKE ... FROM ... [ CASCADE | RESTRICT ]
//! ```

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::Token;
use runnel_common::{Result, RunnelError, SqlState};

use super::RunnelParser;
use crate::access::{Privileges, PUBLIC};
use crate::statement::{ident_name, object_name, GrantStatement, Granted, Statement};

impl RunnelParser<'_> {
    pub(super) fn grant(&mut self, revoke: bool) -> Result<Statement> {
        self.parser.next_token();
        if revoke
            && self
                .parser
                .parse_keywords(&[Keyword::GRANT, Keyword::OPTION, Keyword::FOR])
        {
            return Err(RunnelError::not_implemented(
                "GRANT OPTION: only owners and superusers grant privileges in Runnel",
            ));
        }
        let granted = self.granted()?;
        let preposition = if revoke { Keyword::FROM } else { Keyword::TO };
        self.sql_part(|p| p.expect_keyword(preposition))?;
        let grantees = self.sql_part(|p| p.parse_comma_separated(|p| p.parse_identifier()))?;
        let grantees = grantees
            .iter()
            .map(
                |grantee| match grantee.value.to_ascii_lowercase().as_str() {
                    "public" if grantee.quote_style.is_none() => PUBLIC.to_string(),
                    _ => ident_name(grantee),
                },
            )
            .collect();
        if !revoke
            && self
                .parser
                .parse_keywords(&[Keyword::WITH, Keyword::GRANT, Keyword::OPTION])
        {
            return Err(RunnelError::not_implemented(
                "WITH GRANT OPTION: only owners and superusers grant privileges in Runnel",
            ));
        }
        if revoke && !self.parser.parse_keyword(Keyword::CASCADE) {
            let _ = self.parser.parse_keyword(Keyword::RESTRICT);
        }
        self.expect_end(if revoke {
            "unexpected text after REVOKE ... FROM roles"
        } else {
            "unexpected text after GRANT ... TO roles"
        })?;
        Ok(Statement::Grant(Box::new(GrantStatement {
            revoke,
            granted,
            grantees,
        })))
    }

    /// What comes before `TO` / `FROM`.
    fn granted(&mut self) -> Result<Granted> {
        if self
            .parser
            .parse_keywords(&[Keyword::CREATE, Keyword::ON, Keyword::SCHEMA])
        {
            let schema = self.sql_part(|p| p.parse_identifier())?;
            if ident_name(&schema) != "public" {
                return Err(RunnelError::plan(
                    SqlState("3F000"),
                    format!("schema \"{}\" does not exist", ident_name(&schema)),
                ));
            }
            return Ok(Granted::CreateOnSchema);
        }
        let privileges = if self.parser.parse_keyword(Keyword::ALL) {
            let _ = self.parser.parse_keyword(Keyword::PRIVILEGES);
            Some(Privileges::ALL)
        } else {
            None
        };
        let privileges = match privileges {
            Some(all) => all,
            None => {
                // Privilege names, or role names for a membership grant.
                let names = self.sql_part(|p| p.parse_comma_separated(|p| p.parse_identifier()))?;
                if !self.parser.parse_keyword(Keyword::ON) {
                    return Ok(Granted::Roles(names.iter().map(ident_name).collect()));
                }
                let mut privileges = Privileges::NONE;
                for name in &names {
                    let privilege = Privileges::named(&name.value).ok_or_else(|| {
                        RunnelError::not_implemented(format!(
                            "privilege {}: Runnel grants SELECT, INSERT, UPDATE and DELETE on \
                             relations, and CREATE on schema public",
                            name.value.to_uppercase()
                        ))
                    })?;
                    privileges = privileges.union(privilege);
                }
                return Ok(Granted::Relations {
                    privileges,
                    relations: Some(self.relation_names()?),
                });
            }
        };
        self.sql_part(|p| p.expect_keyword(Keyword::ON))?;
        if self.parser.parse_keywords(&[
            Keyword::ALL,
            Keyword::TABLES,
            Keyword::IN,
            Keyword::SCHEMA,
        ]) {
            let schema = self.sql_part(|p| p.parse_identifier())?;
            if ident_name(&schema) != "public" {
                return Err(RunnelError::plan(
                    SqlState("3F000"),
                    format!("schema \"{}\" does not exist", ident_name(&schema)),
                ));
            }
            return Ok(Granted::Relations {
                privileges,
                relations: None,
            });
        }
        Ok(Granted::Relations {
            privileges,
            relations: Some(self.relation_names()?),
        })
    }

    /// `[TABLE | MATERIALIZED VIEW | STREAM] name [, ...]`.
    fn relation_names(&mut self) -> Result<Vec<String>> {
        if !self.parser.parse_keyword(Keyword::TABLE)
            && !self
                .parser
                .parse_keywords(&[Keyword::MATERIALIZED, Keyword::VIEW])
            && self.peek_word(0, "STREAM")
            && !matches!(self.parser.peek_nth_token_ref(1).token, Token::Comma)
            && !self.peek_word(1, "TO")
            && !self.peek_word(1, "FROM")
        {
            self.parser.next_token();
        }
        let names = self.sql_part(|p| p.parse_comma_separated(|p| p.parse_object_name(false)))?;
        Ok(names.iter().map(object_name).collect())
    }
}
