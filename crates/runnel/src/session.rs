//! One client connection: implements the wire protocol's session trait by classifying each
//! statement and handing it to its handler.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::execution::context::SessionContext;
use runnel_common::RunnelError;
use runnel_pgwire::{
    ParamValue, PgEngine, PgError, PgSession, QueryResponse, StartupInfo, StatementDescription,
    TransactionStatus,
};
use runnel_sql::statement::TransactionCommand;
use runnel_sql::{parse_statements, ParsedStatement, Statement};

use crate::engine::{Engine, Shared};
use crate::handlers;

pub struct RunnelSession {
    pub shared: Arc<Shared>,
    pub ctx: SessionContext,
    transaction: TransactionStatus,
}

#[async_trait]
impl PgEngine for Engine {
    type Session = RunnelSession;

    async fn open_session(&self, _startup: &StartupInfo) -> Result<RunnelSession, PgError> {
        Ok(RunnelSession {
            shared: self.shared.clone(),
            ctx: self.shared.session_context(),
            transaction: TransactionStatus::Idle,
        })
    }
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
                kind: Statement::Set,
            },
            1 => statements.remove(0),
            _ => {
                return Err(PgError::new(
                    "42601",
                    "cannot insert multiple commands into a prepared statement",
                ))
            }
        };
        let description = handlers::describe(self, &statement, param_oids)
            .await
            .map_err(to_pg_error)?;
        Ok((Arc::new(statement), description))
    }

    async fn execute(
        &mut self,
        statement: &ParsedStatement,
        params: &[ParamValue],
    ) -> Result<QueryResponse, PgError> {
        if statement.sql.is_empty() {
            return Ok(QueryResponse::Empty);
        }
        if let Statement::Transaction(command) = &statement.kind {
            let (status, tag) = match command {
                TransactionCommand::Begin => (TransactionStatus::InTransaction, "BEGIN"),
                TransactionCommand::Commit => (TransactionStatus::Idle, "COMMIT"),
                TransactionCommand::Rollback => (TransactionStatus::Idle, "ROLLBACK"),
            };
            self.transaction = status;
            return Ok(QueryResponse::Command {
                tag: tag.to_string(),
            });
        }
        handlers::execute(self, statement, params)
            .await
            .map_err(to_pg_error)
    }

    fn transaction_status(&self) -> TransactionStatus {
        self.transaction
    }
}
