//! `CREATE ROLE | USER`, `ALTER ROLE | USER` and `DROP ROLE | USER`: sqlparser parses the
//! role and its options (its `CREATE USER` is another dialect's, so both words go through its
//! `CREATE ROLE` parser); this keeps the attributes a Runnel role has and refuses the others
//! by name rather than ignoring them.

use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::keywords::Keyword;
use runnel_common::{Result, RunnelError, SqlState};

use super::RunnelParser;
use crate::statement::{ident_name, object_name, RoleOptions, Statement};

impl RunnelParser<'_> {
    /// `CREATE ROLE | USER [IF NOT EXISTS] name [[WITH] option ...]`.
    pub(super) fn create_role(&mut self, user: bool) -> Result<Statement> {
        self.expect_word("CREATE")?;
        self.parser.next_token();
        let create = self.sql_part(|p| p.parse_create_role())?;
        self.expect_end("unexpected text after CREATE ROLE")?;
        let [name] = create.names.as_slice() else {
            return Err(RunnelError::plan(
                SqlState::SYNTAX_ERROR,
                "CREATE ROLE creates one role at a time",
            ));
        };
        for (given, option) in [
            (create.inherit == Some(false), "NOINHERIT"),
            (create.bypassrls == Some(true), "BYPASSRLS"),
            (create.create_db == Some(true), "CREATEDB"),
            (create.create_role == Some(true), "CREATEROLE"),
            (create.replication == Some(true), "REPLICATION"),
            (create.connection_limit.is_some(), "CONNECTION LIMIT"),
            (create.valid_until.is_some(), "VALID UNTIL"),
            (!create.in_role.is_empty(), "IN ROLE"),
            (!create.in_group.is_empty(), "IN GROUP"),
            (!create.role.is_empty(), "ROLE"),
            (!create.user.is_empty(), "USER"),
            (!create.admin.is_empty(), "ADMIN"),
        ] {
            if given {
                return Err(unsupported_option(option));
            }
        }
        let mut options = RoleOptions {
            login: create.login,
            superuser: create.superuser,
            password: create.password.map(password).transpose()?,
        };
        if user && options.login.is_none() {
            options.login = Some(true);
        }
        Ok(Statement::CreateRole {
            name: object_name(name),
            options,
            if_not_exists: create.if_not_exists,
        })
    }

    /// `ALTER ROLE | USER name [WITH] option ...`.
    pub(super) fn alter_role(&mut self) -> Result<Statement> {
        self.expect_word("ALTER")?;
        self.parser.next_token();
        let statement = self.sql_part(|p| p.parse_alter_role())?;
        self.expect_end("unexpected text after ALTER ROLE")?;
        let ast::Statement::AlterRole { name, operation } = statement else {
            return Err(RunnelError::internal(
                "parse_alter_role gave another statement",
            ));
        };
        let ast::AlterRoleOperation::WithOptions { options: given } = operation else {
            return Err(RunnelError::not_implemented(format!(
                "ALTER ROLE ... {operation} (Runnel changes a role's LOGIN, SUPERUSER and \
                 PASSWORD)"
            )));
        };
        let mut options = RoleOptions::default();
        for option in given {
            match option {
                ast::RoleOption::Login(login) => options.login = Some(login),
                ast::RoleOption::SuperUser(superuser) => options.superuser = Some(superuser),
                ast::RoleOption::Password(given) => options.password = Some(password(given)?),
                ast::RoleOption::Inherit(true)
                | ast::RoleOption::BypassRLS(false)
                | ast::RoleOption::CreateDB(false)
                | ast::RoleOption::CreateRole(false)
                | ast::RoleOption::Replication(false) => {}
                other => return Err(unsupported_option(&other.to_string())),
            }
        }
        Ok(Statement::AlterRole {
            name: ident_name(&name),
            options,
        })
    }

    /// `DROP ROLE | USER [IF EXISTS] name [, ...]`.
    pub(super) fn drop_role(&mut self) -> Result<Statement> {
        self.expect_word("DROP")?;
        self.parser.next_token();
        let if_exists = self.parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let names = self.sql_part(|p| p.parse_comma_separated(|p| p.parse_identifier()))?;
        self.expect_end("unexpected text after DROP ROLE ... name")?;
        Ok(Statement::DropRole {
            names: names.iter().map(ident_name).collect(),
            if_exists,
        })
    }
}

fn password(given: ast::Password) -> Result<Option<String>> {
    match given {
        ast::Password::NullPassword => Ok(None),
        ast::Password::Password(ast::Expr::Value(value)) => match value.value {
            ast::Value::SingleQuotedString(text)
            | ast::Value::EscapedStringLiteral(text)
            | ast::Value::DollarQuotedString(ast::DollarQuotedString { value: text, .. }) => {
                Ok(Some(text))
            }
            _ => Err(password_not_a_string()),
        },
        ast::Password::Password(_) => Err(password_not_a_string()),
    }
}

fn password_not_a_string() -> RunnelError {
    RunnelError::plan(
        SqlState::SYNTAX_ERROR,
        "PASSWORD takes a string literal or NULL",
    )
}

fn unsupported_option(option: &str) -> RunnelError {
    RunnelError::not_implemented(format!(
        "role option {option}: Runnel roles have LOGIN, SUPERUSER and PASSWORD"
    ))
}
