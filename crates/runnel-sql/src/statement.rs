//! The statements Runnel runs, typed: Runnel's own (CREATE STREAM, CREATE SINK, SHOW PROGRESS,
//! FLUSH, ...), the Postgres commands it handles itself (SET/SHOW/RESET, COPY, cursors,
//! transaction control), and queries and DML left to DataFusion. Each prints back as SQL
//! (`Display`) that parses to the same statement; [`crate::parser`] builds them.

use std::fmt;

use datafusion::sql::sqlparser::ast;

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
    /// `FETCH [FORWARD] [count | ALL | NEXT] FROM name [WITH (timeout = 'interval')]`;
    /// `count` is `None` for ALL. The timeout applies to SUBSCRIBE cursors: how long to wait
    /// for a first row (by default, until one comes).
    Fetch {
        name: String,
        count: Option<u64>,
        timeout: Option<std::time::Duration>,
    },
    /// `SUBSCRIBE [TO] relation [WITH (snapshot = bool, progress = bool)]`.
    Subscribe(SubscribeSpec),
    /// `DECLARE name CURSOR [WITH[OUT] HOLD] FOR SUBSCRIBE ...`.
    DeclareSubscribe {
        name: String,
        subscribe: SubscribeSpec,
        hold: bool,
    },
    /// `CLOSE name`, or `CLOSE ALL` (`None`).
    CloseCursor(Option<String>),
    /// `COPY { name [(columns)] | (query) } TO STDOUT [WITH (...)]`.
    CopyTo {
        source: CopySource,
        options: CopyOptions,
    },
    /// `COMMENT ON { TABLE | MATERIALIZED VIEW } name IS 'text' | NULL`, or `COMMENT ON
    /// COLUMN relation.column IS ...` (`column` set); `text` is `None` to remove the comment.
    Comment {
        kind: ObjectKind,
        relation: String,
        column: Option<String>,
        text: Option<String>,
    },
    /// `CREATE ROLE | USER [IF NOT EXISTS] name [[WITH] option ...]` (a USER can log in
    /// unless it says NOLOGIN).
    CreateRole {
        name: String,
        options: RoleOptions,
        if_not_exists: bool,
    },
    /// `ALTER ROLE | USER name [WITH] option ...`.
    AlterRole {
        name: String,
        options: RoleOptions,
    },
    /// `DROP ROLE | USER [IF EXISTS] name [, ...]`.
    DropRole {
        names: Vec<String>,
        if_exists: bool,
    },
    /// `GRANT ... TO ...` or `REVOKE ... FROM ...`.
    Grant(Box<GrantStatement>),
    /// Queries and DML, planned by DataFusion.
    Query(Box<ast::Statement>),
}

/// A GRANT, or a REVOKE (`revoke`), of privileges or role memberships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantStatement {
    pub revoke: bool,
    pub granted: Granted,
    /// Role names; [`crate::access::PUBLIC`] for `PUBLIC`.
    pub grantees: Vec<String>,
}

/// What a GRANT or REVOKE gives or takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Granted {
    /// Privileges on relations: named ones, or (`None`) all of them in schema `public`.
    Relations {
        privileges: crate::access::Privileges,
        relations: Option<Vec<String>>,
    },
    /// `CREATE ON SCHEMA public`.
    CreateOnSchema,
    /// Membership in these roles.
    Roles(Vec<String>),
}

/// The role attributes a CREATE or ALTER ROLE sets (`None`: not mentioned).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RoleOptions {
    pub login: Option<bool>,
    pub superuser: Option<bool>,
    /// `PASSWORD 'text'` (`Some(Some)`) or `PASSWORD NULL` (`Some(None)`).
    pub password: Option<Option<String>>,
}

/// ` WITH ...`, the password hidden: a statement's text can end up in a log.
impl fmt::Display for RoleOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words = Vec::new();
        if let Some(superuser) = self.superuser {
            words.push(if superuser {
                "SUPERUSER"
            } else {
                "NOSUPERUSER"
            });
        }
        if let Some(login) = self.login {
            words.push(if login { "LOGIN" } else { "NOLOGIN" });
        }
        match &self.password {
            Some(Some(_)) => words.push("PASSWORD '********'"),
            Some(None) => words.push("PASSWORD NULL"),
            None => {}
        }
        if words.is_empty() {
            Ok(())
        } else {
            write!(f, " WITH {}", words.join(" "))
        }
    }
}

// Never the password: statements end up in debug logs.
impl std::fmt::Debug for RoleOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleOptions")
            .field("login", &self.login)
            .field("superuser", &self.superuser)
            .field("password", &self.password.as_ref().map(|p| p.is_some()))
            .finish()
    }
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
    Relation {
        name: String,
        columns: Vec<String>,
    },
    Query(Box<ast::Query>),
    /// `COPY (SUBSCRIBE ...) TO STDOUT`: the changes, for as long as the client reads.
    Subscribe(SubscribeSpec),
}

/// A SUBSCRIBE: the relation whose changes are sent, whether its current contents come
/// first (`snapshot`, default true), and whether checkpoints without changes are marked
/// (`progress`, default false).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeSpec {
    pub relation: String,
    pub snapshot: bool,
    pub progress: bool,
}

impl fmt::Display for SubscribeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SUBSCRIBE {} WITH (SNAPSHOT = {}, PROGRESS = {})",
            quote_ident(&self.relation),
            self.snapshot,
            self.progress
        )
    }
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

/// An identifier as SQL (Postgres's `quote_ident`): bare when it is a lower-case identifier
/// that is not a keyword, else double-quoted, so it reads back unchanged.
pub fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    let reserved = datafusion::sql::sqlparser::keywords::RESERVED_FOR_COLUMN_ALIAS
        .iter()
        .any(|k| format!("{k:?}").eq_ignore_ascii_case(name));
    if plain && !reserved {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// A string literal as SQL.
fn sql_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

impl fmt::Display for ShowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShowKind::Streams => "SHOW STREAMS",
            ShowKind::Tables => "SHOW TABLES",
            ShowKind::MaterializedViews => "SHOW MATERIALIZED VIEWS",
            ShowKind::Sinks => "SHOW SINKS",
            ShowKind::Progress => "SHOW PROGRESS",
            ShowKind::Watermarks => "SHOW WATERMARKS",
        })
    }
}

impl fmt::Display for TransactionCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransactionCommand::Begin => f.write_str("BEGIN"),
            TransactionCommand::Commit => f.write_str("COMMIT"),
            TransactionCommand::Rollback => f.write_str("ROLLBACK"),
            TransactionCommand::Savepoint(name) => write!(f, "SAVEPOINT {}", quote_ident(name)),
            TransactionCommand::Release(name) => {
                write!(f, "RELEASE SAVEPOINT {}", quote_ident(name))
            }
            TransactionCommand::RollbackTo(name) => {
                write!(f, "ROLLBACK TO SAVEPOINT {}", quote_ident(name))
            }
        }
    }
}

impl fmt::Display for CopyOptions {
    /// The parenthesised option list of COPY (every option, defaults included).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = match (self.binary, self.csv) {
            (true, _) => "binary",
            (false, true) => "csv",
            (false, false) => "text",
        };
        write!(f, "(FORMAT {format}")?;
        if !self.binary {
            write!(
                f,
                ", HEADER {}, DELIMITER {}, NULL {}",
                self.header,
                sql_string(&char::from(self.delimiter).to_string()),
                sql_string(&self.null)
            )?;
        }
        if self.csv {
            write!(
                f,
                ", QUOTE {}, ESCAPE {}",
                sql_string(&char::from(self.quote).to_string()),
                sql_string(&char::from(self.escape).to_string())
            )?;
        }
        f.write_str(")")
    }
}

fn column_list(columns: &[String]) -> String {
    if columns.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
        format!(" ({})", names.join(", "))
    }
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Statement::CreateRelation {
                kind: ObjectKind::Stream,
                create,
                watermark,
            } => {
                let if_not_exists = if create.if_not_exists {
                    "IF NOT EXISTS "
                } else {
                    ""
                };
                let mut elements: Vec<String> =
                    create.columns.iter().map(ToString::to_string).collect();
                elements.extend(create.constraints.iter().map(ToString::to_string));
                if let Some(w) = watermark {
                    elements.push(format!(
                        "WATERMARK FOR {} AS {}",
                        quote_ident(&w.column),
                        w.expr
                    ));
                }
                write!(
                    f,
                    "CREATE STREAM {if_not_exists}{} ({})",
                    create.name,
                    elements.join(", ")
                )?;
                match &create.table_options {
                    ast::CreateTableOptions::None => Ok(()),
                    options => write!(f, " {options}"),
                }
            }
            Statement::CreateRelation { create, .. } => write!(f, "{create}"),
            Statement::CreateMaterializedView {
                view,
                explain,
                emit_on_window_close,
            } => {
                if *explain {
                    f.write_str("EXPLAIN ")?;
                }
                write!(f, "{view}")?;
                if *emit_on_window_close {
                    f.write_str(" EMIT ON WINDOW CLOSE")?;
                }
                Ok(())
            }
            Statement::CreateSink {
                name,
                from,
                options,
                if_not_exists,
            } => {
                let if_not_exists = if *if_not_exists { "IF NOT EXISTS " } else { "" };
                let options: Vec<String> = options
                    .iter()
                    .map(|(k, v)| format!("{} = {}", quote_ident(k), sql_string(v)))
                    .collect();
                write!(
                    f,
                    "CREATE SINK {if_not_exists}{} FROM {} WITH ({})",
                    quote_ident(name),
                    quote_ident(from),
                    options.join(", ")
                )
            }
            Statement::Drop {
                kind,
                names,
                if_exists,
                cascade,
            } => {
                let names: Vec<String> = names.iter().map(|n| quote_ident(n)).collect();
                write!(
                    f,
                    "DROP {} {}{}{}",
                    kind.sql_name().to_ascii_uppercase(),
                    if *if_exists { "IF EXISTS " } else { "" },
                    names.join(", "),
                    if *cascade { " CASCADE" } else { "" }
                )
            }
            Statement::Show(kind) => write!(f, "{kind}"),
            Statement::Flush => f.write_str("FLUSH"),
            Statement::SetVariable { name, value, local } => {
                let scope = if *local { "LOCAL " } else { "" };
                // sqlparser reads `SET TimeZone` as its own statement, spelt TIME ZONE.
                let name = if name.eq_ignore_ascii_case("timezone") {
                    "TIME ZONE"
                } else {
                    name
                };
                match value {
                    Some(value) => write!(f, "SET {scope}{name} TO {}", sql_string(value)),
                    None => write!(f, "SET {scope}{name} TO DEFAULT"),
                }
            }
            Statement::ResetVariable(Some(name)) => write!(f, "RESET {name}"),
            Statement::ResetVariable(None) => f.write_str("RESET ALL"),
            Statement::ShowVariable(name) => write!(f, "SHOW {name}"),
            Statement::NoOp(tag) => f.write_str(tag),
            Statement::Transaction(command) => write!(f, "{command}"),
            Statement::Copy {
                table,
                columns,
                options,
            } => write!(
                f,
                "COPY {}{} FROM STDIN {options}",
                quote_ident(table),
                column_list(columns)
            ),
            Statement::DeclareCursor { name, query, hold } => write!(
                f,
                "DECLARE {} NO SCROLL CURSOR {} HOLD FOR {query}",
                quote_ident(name),
                if *hold { "WITH" } else { "WITHOUT" }
            ),
            Statement::Fetch {
                name,
                count,
                timeout,
            } => {
                match count {
                    Some(n) => write!(f, "FETCH FORWARD {n} FROM {}", quote_ident(name))?,
                    None => write!(f, "FETCH ALL FROM {}", quote_ident(name))?,
                }
                match timeout {
                    Some(timeout) => write!(f, " WITH (TIMEOUT = '{} ms')", timeout.as_millis()),
                    None => Ok(()),
                }
            }
            Statement::Subscribe(spec) => write!(f, "{spec}"),
            Statement::DeclareSubscribe {
                name,
                subscribe,
                hold,
            } => write!(
                f,
                "DECLARE {} CURSOR{} FOR {subscribe}",
                quote_ident(name),
                if *hold { " WITH HOLD" } else { "" }
            ),
            Statement::CloseCursor(Some(name)) => write!(f, "CLOSE {}", quote_ident(name)),
            Statement::CloseCursor(None) => f.write_str("CLOSE ALL"),
            Statement::CreateRole {
                name,
                options,
                if_not_exists,
            } => {
                let if_not_exists = if *if_not_exists { "IF NOT EXISTS " } else { "" };
                write!(
                    f,
                    "CREATE ROLE {if_not_exists}{}{options}",
                    quote_ident(name)
                )
            }
            Statement::AlterRole { name, options } => {
                write!(f, "ALTER ROLE {}{options}", quote_ident(name))
            }
            Statement::DropRole { names, if_exists } => {
                let names: Vec<String> = names.iter().map(|n| quote_ident(n)).collect();
                let if_exists = if *if_exists { "IF EXISTS " } else { "" };
                write!(f, "DROP ROLE {if_exists}{}", names.join(", "))
            }
            Statement::Grant(grant) => {
                let (verb, preposition) = if grant.revoke {
                    ("REVOKE", "FROM")
                } else {
                    ("GRANT", "TO")
                };
                let what = match &grant.granted {
                    Granted::Relations {
                        privileges,
                        relations: Some(relations),
                    } => {
                        let names: Vec<String> = relations.iter().map(|n| quote_ident(n)).collect();
                        format!("{privileges} ON {}", names.join(", "))
                    }
                    Granted::Relations {
                        privileges,
                        relations: None,
                    } => format!("{privileges} ON ALL TABLES IN SCHEMA public"),
                    Granted::CreateOnSchema => "CREATE ON SCHEMA public".to_string(),
                    Granted::Roles(roles) => {
                        let names: Vec<String> = roles.iter().map(|n| quote_ident(n)).collect();
                        names.join(", ")
                    }
                };
                let grantees: Vec<String> = grant
                    .grantees
                    .iter()
                    .map(|g| {
                        if g == crate::access::PUBLIC {
                            "PUBLIC".to_string()
                        } else {
                            quote_ident(g)
                        }
                    })
                    .collect();
                write!(f, "{verb} {what} {preposition} {}", grantees.join(", "))
            }
            Statement::CopyTo { source, options } => match source {
                CopySource::Relation { name, columns } => write!(
                    f,
                    "COPY {}{} TO STDOUT {options}",
                    quote_ident(name),
                    column_list(columns)
                ),
                CopySource::Query(query) => write!(f, "COPY ({query}) TO STDOUT {options}"),
                CopySource::Subscribe(spec) => write!(f, "COPY ({spec}) TO STDOUT {options}"),
            },
            Statement::Comment {
                kind,
                relation,
                column,
                text,
            } => {
                match column {
                    Some(column) => write!(
                        f,
                        "COMMENT ON COLUMN {}.{} IS ",
                        quote_ident(relation),
                        quote_ident(column)
                    )?,
                    None => write!(
                        f,
                        "COMMENT ON {} {} IS ",
                        kind.sql_name().to_ascii_uppercase(),
                        quote_ident(relation)
                    )?,
                }
                match text {
                    Some(text) => f.write_str(&sql_string(text)),
                    None => f.write_str("NULL"),
                }
            }
            Statement::Query(statement) => write!(f, "{statement}"),
        }
    }
}
