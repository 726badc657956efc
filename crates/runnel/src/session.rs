//! One client connection: implements the wire protocol's session trait by classifying each
//! statement and handing it to its handler.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;

use async_trait::async_trait;
use datafusion::execution::context::SessionContext;
use runnel_common::RunnelError;
use runnel_pgwire::{
    ParamValue, PgError, PgSession, QueryResponse, StartupInfo, StatementDescription,
    TransactionStatus,
};
use runnel_sql::statement::object_name;
use runnel_sql::statement::TransactionCommand;
use runnel_sql::{parse_statements, ObjectKind, ParsedStatement, Statement};

use crate::handlers;
use crate::query_context::session_context;
use crate::settings::SessionSettings;
use crate::shared::Shared;
use crate::system_catalog::SessionIdentity;
use crate::transaction::{PendingComment, SharedPendingWrites, Transaction};

pub struct RunnelSession {
    pub shared: Arc<Shared>,
    pub ctx: SessionContext,
    /// Who the session is and its settings (shared with the catalog functions).
    pub identity: SessionIdentity,
    /// The open transaction block, if any.
    transaction: Option<Transaction>,
    /// This session wrote since its last flush, so its next query flushes first (when
    /// `implicit_flush` is on).
    pub writes_pending: bool,
    /// Open cursors: their columns, and whether they were declared WITH HOLD.
    pub cursors: HashMap<String, (SchemaRef, bool)>,
    /// NOTICEs of the running statement, sent to the client before its answer.
    notices: Vec<String>,
    /// NOTICEs sent to the client while the statement runs (a backfill's progress): set
    /// once the protocol layer takes the receiving end (`live_notices`).
    live_notices: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

impl RunnelSession {
    pub fn settings(&self) -> &SessionSettings {
        &self.identity.settings
    }

    /// Raises a NOTICE for the client.
    pub fn notice(&mut self, text: impl Into<String>) {
        self.notices.push(text.into());
    }

    /// Where to send NOTICEs that the client gets while the statement still runs (from any
    /// thread); `None` when nobody delivers them (a session not served over the wire).
    pub fn live_notice_sender(&self) -> Option<tokio::sync::mpsc::UnboundedSender<String>> {
        self.live_notices.clone()
    }

    /// Makes unqualified names resolve as `search_path` says: in `public` (then `pg_catalog`,
    /// which Postgres always searches) while `public` is on the path, else in the first
    /// schema of the path that exists, else in `pg_catalog` alone. DataFusion resolves an
    /// unqualified name in one schema, so a path that puts another schema before `public`
    /// still finds user relations first.
    pub fn follow_search_path(&self) {
        let path = self.settings().search_path();
        let schema = if path.contains(&"public") {
            "public"
        } else {
            path.first().copied().unwrap_or("pg_catalog")
        };
        let state = self.ctx.state_ref();
        if state.read().config().options().catalog.default_schema != schema {
            state
                .write()
                .config_mut()
                .options_mut()
                .catalog
                .default_schema = schema.to_string();
        }
    }

    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some()
    }

    /// Where the writes of the open transaction block go (`None`: no block is open, writes
    /// commit as their statement completes).
    pub fn pending_writes(&self) -> Option<SharedPendingWrites> {
        self.transaction.as_ref().map(|t| t.writes.clone())
    }

    /// Refuses a plan that reads what the open transaction block wrote (see
    /// [`crate::transaction`]).
    pub fn check_reads(
        &self,
        plan: &datafusion::logical_expr::LogicalPlan,
    ) -> Result<(), RunnelError> {
        match &self.transaction {
            Some(transaction) => crate::transaction::lock_pending(&transaction.writes)
                .check_reads(&self.shared.catalog.snapshot(), plan),
            None => Ok(()),
        }
    }

    /// Ends the open transaction block: COMMIT applies its writes (unless a statement of it
    /// failed), ROLLBACK drops them; either way without one, as Postgres does (which warns).
    async fn end_transaction(&mut self, commit: bool) -> Result<QueryResponse, RunnelError> {
        let tag = |tag: &str| QueryResponse::Command {
            tag: tag.to_string(),
        };
        let Some(transaction) = self.transaction.take() else {
            return Ok(tag(if commit { "COMMIT" } else { "ROLLBACK" }));
        };
        self.settings().end_transaction();
        // Cursors without HOLD end with their transaction (the protocol layer drops their
        // rows too).
        self.cursors.retain(|_, (_, hold)| *hold);
        if commit && !transaction.failed {
            let writes = transaction.take_writes();
            let wrote = !writes.is_empty();
            match writes.commit(&self.shared).await {
                Ok(()) => {
                    self.writes_pending |= wrote;
                    for c in &transaction.comments {
                        handlers::comment::apply(
                            &self.shared,
                            c.kind,
                            &c.relation,
                            c.column.as_deref(),
                            c.text.as_deref(),
                        )
                        .await?;
                    }
                    Ok(tag("COMMIT"))
                }
                Err(error) => {
                    self.undo_created(transaction.created).await;
                    Err(error)
                }
            }
        } else {
            self.undo_created(transaction.created).await;
            Ok(tag("ROLLBACK"))
        }
    }

    /// The open block, or 25P01 for a statement that needs one.
    fn block(&mut self, statement: &str) -> Result<&mut Transaction, RunnelError> {
        self.transaction.as_mut().ok_or_else(|| {
            RunnelError::plan(
                runnel_common::SqlState("25P01"),
                format!("{statement} can only be used in transaction blocks"),
            )
        })
    }

    fn savepoint(&mut self, name: &str) -> Result<QueryResponse, RunnelError> {
        self.block("SAVEPOINT")?.savepoint(name.to_string());
        Ok(QueryResponse::Command {
            tag: "SAVEPOINT".to_string(),
        })
    }

    fn release(&mut self, name: &str) -> Result<QueryResponse, RunnelError> {
        self.block("RELEASE SAVEPOINT")?.release(name)?;
        Ok(QueryResponse::Command {
            tag: "RELEASE".to_string(),
        })
    }

    async fn rollback_to(&mut self, name: &str) -> Result<QueryResponse, RunnelError> {
        let created = self.block("ROLLBACK TO SAVEPOINT")?.rollback_to(name)?;
        self.undo_created(created).await;
        Ok(QueryResponse::Command {
            tag: "ROLLBACK".to_string(),
        })
    }

    /// A statement of the open block failed: the block only ends now (as in Postgres).
    fn fail_transaction(&mut self) {
        if let Some(transaction) = self.transaction.as_mut() {
            transaction.failed = true;
        }
    }

    /// Drops what a rolled-back block created, newest first.
    async fn undo_created(&mut self, created: Vec<(ObjectKind, String)>) {
        for (kind, name) in created.into_iter().rev() {
            let names = [name];
            if let Err(error) = handlers::drop::handle(self, kind, &names, true, false).await {
                tracing::warn!(
                    "ROLLBACK could not drop {} \"{}\" created in the transaction: {error}",
                    kind.sql_name(),
                    names[0]
                );
            }
        }
    }
}

/// What a statement that changes the catalog does and to what, for the log.
fn ddl_description(statement: &Statement) -> Option<(String, String)> {
    let (what, name) = match statement {
        Statement::CreateMaterializedView { explain: true, .. } => return None,
        Statement::CreateRelation { kind, create, .. } => (
            format!("CREATE {}", kind.sql_name().to_uppercase()),
            object_name(&create.name),
        ),
        Statement::CreateMaterializedView { view, .. } => (
            "CREATE MATERIALIZED VIEW".to_string(),
            object_name(&view.name),
        ),
        Statement::CreateSink { name, .. } => ("CREATE SINK".to_string(), name.clone()),
        Statement::Drop { kind, names, .. } => (
            format!("DROP {}", kind.sql_name().to_uppercase()),
            names.join(", "),
        ),
        Statement::Comment { relation, .. } => ("COMMENT".to_string(), relation.clone()),
        Statement::CreateRole { name, .. } => ("CREATE ROLE".to_string(), name.clone()),
        Statement::AlterRole { name, .. } => ("ALTER ROLE".to_string(), name.clone()),
        Statement::DropRole { names, .. } => ("DROP ROLE".to_string(), names.join(", ")),
        Statement::Grant(grant) => (
            if grant.revoke { "REVOKE" } else { "GRANT" }.to_string(),
            grant.grantees.join(", "),
        ),
        _ => return None,
    };
    Some((what, name))
}

/// The object a CREATE statement makes, if it is one.
fn created_object(statement: &Statement) -> Option<(ObjectKind, String)> {
    match statement {
        Statement::CreateRelation { kind, create, .. } => Some((*kind, object_name(&create.name))),
        Statement::CreateMaterializedView {
            view,
            explain: false,
            ..
        } => Some((ObjectKind::MaterializedView, object_name(&view.name))),
        Statement::CreateSink { name, .. } => Some((ObjectKind::Sink, name.clone())),
        _ => None,
    }
}

/// Startup parameters that are not run-time parameters.
const CONNECTION_PARAMETERS: &[&str] = &["user", "database", "replication", "options"];

impl RunnelSession {
    /// A session for a client that sent `startup`; a bad startup setting refuses the
    /// connection (FATAL), as in Postgres.
    pub fn open(shared: Arc<Shared>, startup: &StartupInfo) -> Result<RunnelSession, PgError> {
        let settings = SessionSettings::default();
        // As in Postgres, every other startup parameter, and each `-c name=value` of
        // `options`, sets a run-time parameter for the session.
        for (name, value) in &startup.parameters {
            if name.starts_with("_pq_.") || CONNECTION_PARAMETERS.contains(&name.as_str()) {
                continue;
            }
            settings
                .set(name, Some(value), false)
                .map_err(|e| to_pg_error(e).fatal())?;
        }
        if let Some((_, options)) = startup.parameters.iter().find(|(n, _)| n == "options") {
            for (name, value) in
                command_line_options(options).map_err(|e| to_pg_error(e).fatal())?
            {
                settings
                    .set(&name, Some(&value), false)
                    .map_err(|e| to_pg_error(e).fatal())?;
            }
        }
        let user = if startup.user.is_empty() {
            "runnel".to_string()
        } else {
            startup.user.clone()
        };
        settings.mark_all_reported();
        let identity = SessionIdentity {
            user,
            database: if startup.database.is_empty() {
                "runnel".to_string()
            } else {
                startup.database.clone()
            },
            settings,
            backend_pid: startup.process_id,
        };
        shared.metrics.connections.inc();
        Ok(RunnelSession {
            ctx: session_context(&shared, &identity),
            shared,
            identity,
            transaction: None,
            writes_pending: false,
            cursors: HashMap::new(),
            notices: Vec::new(),
            live_notices: None,
        })
    }
}

/// The `-c name=value` (or `--name=value`) settings of a startup `options` string, with
/// Postgres's backslash escapes for spaces.
fn command_line_options(options: &str) -> runnel_common::Result<Vec<(String, String)>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut settings = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let assignment = if word == "-c" {
            words.next().unwrap_or_default()
        } else if let Some(rest) = word.strip_prefix("-c") {
            rest.to_string()
        } else if let Some(rest) = word.strip_prefix("--") {
            rest.to_string()
        } else {
            return Err(RunnelError::plan(
                runnel_common::SqlState::PROTOCOL_VIOLATION,
                format!("invalid command-line argument for server process: {word}"),
            ));
        };
        let Some((name, value)) = assignment.split_once('=') else {
            return Err(RunnelError::plan(
                runnel_common::SqlState::SYNTAX_ERROR,
                format!("-c {assignment} requires a value"),
            ));
        };
        settings.push((name.replace('-', "_"), value.to_string()));
    }
    Ok(settings)
}

/// Maps an engine error to the ErrorResponse the client receives.
pub fn to_pg_error(err: RunnelError) -> PgError {
    let mut pg = PgError::new(err.sqlstate().0, err.to_string());
    pg.position = err.position();
    if let RunnelError::Internal(_) = err {
        tracing::error!("internal error: {err}");
    }
    pg
}

#[async_trait]
impl PgSession for RunnelSession {
    type Statement = ParsedStatement;

    fn parse_simple(&mut self, sql: &str) -> Result<Vec<Arc<ParsedStatement>>, PgError> {
        parse_statements(sql)
            .map(|v| v.into_iter().map(Arc::new).collect())
            .map_err(to_pg_error)
    }

    async fn prepare(
        &mut self,
        sql: &str,
        param_oids: &[u32],
    ) -> Result<(Arc<ParsedStatement>, StatementDescription), PgError> {
        let mut statements = parse_statements(sql).map_err(to_pg_error)?;
        let statement = match statements.len() {
            0 => ParsedStatement {
                sql: String::new(),
                kind: Statement::NoOp(""),
            },
            1 => statements.remove(0),
            _ => {
                return Err(PgError::new(
                    "42601",
                    "cannot insert multiple commands into a prepared statement",
                ))
            }
        };
        let description = match handlers::describe(self, &statement, param_oids).await {
            Ok(description) => description,
            Err(error) => {
                self.fail_transaction();
                return Err(to_pg_error(error));
            }
        };
        Ok((Arc::new(statement), description))
    }

    async fn execute(
        &mut self,
        statement: &ParsedStatement,
        params: &[ParamValue],
    ) -> Result<QueryResponse, PgError> {
        let result = self.execute_statement(statement, params).await;
        self.shared.metrics.count_query(result.is_ok());
        result
    }

    fn transaction_status(&self) -> TransactionStatus {
        match &self.transaction {
            None => TransactionStatus::Idle,
            Some(transaction) if transaction.failed => TransactionStatus::Failed,
            Some(_) => TransactionStatus::InTransaction,
        }
    }

    fn statement_failed(&mut self) {
        self.fail_transaction();
    }

    fn take_parameter_changes(&mut self) -> Vec<(String, String)> {
        self.settings().take_reported_changes()
    }

    fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    fn live_notices(&mut self) -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        self.live_notices = Some(sender);
        Some(receiver)
    }

    fn output_style(&self) -> runnel_pgwire::types::OutputStyle {
        self.settings().output_style()
    }

    fn statement_timeout(&self) -> Option<std::time::Duration> {
        self.settings().statement_timeout()
    }

    /// Reads (queries, SHOW, COPY TO) stop half-way when cancelled, and so do writes in a
    /// transaction block (they only reach the block's pending writes, and a stopped statement
    /// aborts the block); other statements that change the catalog or the data run to the
    /// end, so a cancel never leaves half of one done.
    fn is_cancellable(&self, statement: &ParsedStatement) -> bool {
        use datafusion::sql::sqlparser::ast::Statement as Ast;
        match &statement.kind {
            Statement::Query(query) => match query.as_ref() {
                Ast::Query(_) | Ast::Explain { .. } | Ast::ExplainTable { .. } => true,
                Ast::Insert(_) | Ast::Update(_) | Ast::Delete(_) => self.transaction.is_some(),
                _ => false,
            },
            Statement::CopyTo { .. }
            | Statement::DeclareCursor { .. }
            | Statement::Show(_)
            | Statement::ShowVariable(_) => true,
            _ => false,
        }
    }
}

impl RunnelSession {
    /// Runs one statement (what [`PgSession::execute`] counts).
    async fn execute_statement(
        &mut self,
        statement: &ParsedStatement,
        params: &[ParamValue],
    ) -> Result<QueryResponse, PgError> {
        if statement.sql.is_empty() {
            return Ok(QueryResponse::Empty);
        }
        if let Some(transaction) = &self.transaction {
            let ends_failure = matches!(
                statement.kind,
                Statement::Transaction(
                    TransactionCommand::Commit
                        | TransactionCommand::Rollback
                        | TransactionCommand::RollbackTo(_)
                )
            );
            if transaction.failed && !ends_failure {
                return Err(PgError::new(
                    "25P02",
                    "current transaction is aborted, commands ignored until end of transaction \
                     block",
                ));
            }
        }
        if let Statement::Transaction(command) = &statement.kind {
            let result = match command {
                TransactionCommand::Begin => {
                    if self.transaction.is_none() {
                        self.transaction = Some(Transaction::default());
                    }
                    Ok(QueryResponse::Command {
                        tag: "BEGIN".to_string(),
                    })
                }
                TransactionCommand::Commit => self.end_transaction(true).await,
                TransactionCommand::Rollback => self.end_transaction(false).await,
                TransactionCommand::Savepoint(name) => self.savepoint(name),
                TransactionCommand::Release(name) => self.release(name),
                TransactionCommand::RollbackTo(name) => self.rollback_to(name).await,
            };
            if result.is_err() {
                self.fail_transaction();
            }
            return result.map_err(to_pg_error);
        }
        if self.transaction.is_some() {
            if let Statement::Comment {
                kind,
                relation,
                column,
                text,
            } = &statement.kind
            {
                // Checked now, applied at COMMIT.
                let checked = handlers::comment::check(self, *kind, relation, column.as_deref());
                if let Err(error) = checked {
                    self.fail_transaction();
                    return Err(to_pg_error(error));
                }
                if let Some(transaction) = self.transaction.as_mut() {
                    transaction.comments.push(PendingComment {
                        kind: *kind,
                        relation: relation.clone(),
                        column: column.clone(),
                        text: text.clone(),
                    });
                }
                return Ok(QueryResponse::Command {
                    tag: "COMMENT".into(),
                });
            }
            let refused = match &statement.kind {
                Statement::Drop { kind, .. } => {
                    Some(format!("DROP {}", kind.sql_name().to_uppercase()))
                }
                _ => None,
            };
            if let Some(what) = refused {
                let error = PgError::new(
                    "25001",
                    format!(
                        "{what} cannot run inside a transaction block (it could not be rolled \
                         back)"
                    ),
                );
                self.fail_transaction();
                return Err(error);
            }
        }
        let created = created_object(&statement.kind).filter(|(_, name)| {
            self.transaction.is_some() && self.shared.catalog.snapshot().get(name).is_none()
        });
        let ddl = ddl_description(&statement.kind);
        let started = std::time::Instant::now();
        let result = handlers::execute(self, statement, params).await;
        if let Some((what, name)) = ddl {
            // The kind and name only: a statement's text may hold secrets (Kafka credentials).
            let duration_ms = started.elapsed().as_secs_f64() * 1e3;
            match &result {
                Ok(_) => tracing::info!(statement = what, name, duration_ms, "DDL done"),
                Err(error) => tracing::info!(
                    statement = what,
                    name,
                    duration_ms,
                    error = %error,
                    "DDL failed"
                ),
            }
        }
        match &result {
            Ok(_) => {
                if let (Some(created), Some(transaction)) = (created, self.transaction.as_mut()) {
                    if self.shared.catalog.snapshot().get(&created.1).is_some() {
                        transaction.created.push(created);
                    }
                }
            }
            Err(_) => self.fail_transaction(),
        }
        result.map_err(to_pg_error)
    }
}

impl Drop for RunnelSession {
    fn drop(&mut self) {
        self.shared.metrics.connections.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_startup_options_like_postgres() {
        assert_eq!(
            command_line_options("-c search_path=a,b --statement-timeout=5s -cDateStyle=ISO\\ MDY")
                .unwrap(),
            vec![
                ("search_path".to_string(), "a,b".to_string()),
                ("statement_timeout".to_string(), "5s".to_string()),
                ("DateStyle".to_string(), "ISO MDY".to_string()),
            ]
        );
        assert!(command_line_options("-x").is_err());
    }
}
