//! The contract between the wire protocol and the database: the protocol layer depends only on
//! these traits, so it can be tested alone and the engine never sees a protocol message.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use bytes::Bytes;

use crate::auth::{AuthMethod, ScramVerifier};
use crate::error::PgError;

/// What the client sent in its startup message, and where it connected from.
#[derive(Debug, Clone)]
pub struct StartupInfo {
    pub user: String,
    pub database: String,
    /// Every `key=value` pair of the startup message, `user` and `database` included.
    pub parameters: Vec<(String, String)>,
    /// The process id the connection is known by (BackendKeyData, CancelRequest).
    pub process_id: i32,
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// Whether the connection is encrypted (TLS).
    pub secure: bool,
}

/// The database as seen by the protocol layer: it opens one session per connection.
#[async_trait]
pub trait PgEngine: Send + Sync + 'static {
    type Session: PgSession;

    /// How a connection must authenticate before its session opens. The default trusts
    /// everyone.
    fn authentication(&self, _startup: &StartupInfo) -> AuthMethod {
        AuthMethod::Trust
    }

    /// The stored SCRAM verifier of `user`; `None` when the user does not exist, may not log
    /// in or has no password (the exchange then runs against a mock verifier and fails the
    /// same way as a wrong password).
    async fn scram_verifier(&self, _user: &str) -> Option<ScramVerifier> {
        None
    }

    async fn open_session(&self, startup: &StartupInfo) -> Result<Self::Session, PgError>;
}

/// A bound parameter value as the engine receives it: the protocol layer turns binary-format
/// parameters into their Postgres text form, so the engine parses one representation only.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamValue {
    /// The parameter's type OID as the statement was described (0 when nobody knows it).
    pub type_oid: u32,
    /// Postgres text form of the value; `None` is SQL NULL.
    pub text: Option<String>,
}

/// Result of preparing one statement for the extended protocol.
#[derive(Debug, Clone)]
pub struct StatementDescription {
    /// The type OID of each `$n` parameter, in order (`$1` first).
    pub param_oids: Vec<u32>,
    /// The columns the statement returns, or `None` when it returns no rows (DDL, INSERT, ...).
    pub fields: Option<SchemaRef>,
}

/// Result rows as the engine produces them: the protocol layer sends each batch as it
/// arrives, so a result never has to fit in memory; an error ends the result.
pub type BatchStream = futures::stream::BoxStream<'static, Result<RecordBatch, PgError>>;

/// A result already in memory, as a [`BatchStream`].
pub fn batch_stream(batches: Vec<RecordBatch>) -> BatchStream {
    Box::pin(futures::stream::iter(batches.into_iter().map(Ok)))
}

/// What executing one statement produced.
pub enum QueryResponse {
    /// A result set. The protocol layer sends RowDescription (unless the client already
    /// described it), a DataRow per row and `SELECT <n>`.
    Rows {
        schema: SchemaRef,
        batches: BatchStream,
    },
    /// A statement without result rows; `tag` is the CommandComplete tag, e.g. `INSERT 0 3`.
    Command { tag: String },
    /// `COPY ... FROM STDIN`: the protocol layer answers CopyInResponse with `columns` text
    /// columns, feeds every CopyData payload to the sink, then calls `finish` on CopyDone (its
    /// row count becomes `COPY <n>`) or `abort` on CopyFail.
    CopyIn {
        columns: usize,
        sink: Box<dyn CopyInSink>,
    },
    /// `COPY ... TO STDOUT`: the protocol layer answers CopyOutResponse, sends the rows of
    /// `batches` as CopyData in `format`, CopyDone, and `COPY <n>`.
    CopyOut {
        /// Column names (for CSV's HEADER).
        columns: Vec<String>,
        format: crate::copy_format::CopyOutFormat,
        batches: BatchStream,
    },
    /// `DECLARE name CURSOR FOR query`: the protocol layer keeps the rows as a portal named
    /// `name` (closed at the end of the transaction unless `hold`), which `Fetch` and the
    /// extended protocol's Describe and Execute read, as in Postgres. The rows are pulled
    /// from `batches` a FETCH at a time.
    /// A `live` cursor's rows never end (SUBSCRIBE): a FETCH gets the rows that are ready,
    /// waiting only for a first one (up to its timeout).
    DeclareCursor {
        name: String,
        schema: SchemaRef,
        batches: BatchStream,
        hold: bool,
        live: bool,
    },
    /// `FETCH count FROM name`: the next rows of the cursor (`None`: all that are left); on a
    /// live cursor, `timeout` bounds the wait for a first row.
    Fetch {
        name: String,
        count: Option<u64>,
        timeout: Option<std::time::Duration>,
    },
    /// `CLOSE name` / `CLOSE ALL` (`None`).
    CloseCursor { name: Option<String> },
    /// An empty query string (only whitespace or comments).
    Empty,
}

/// Receives the data of a `COPY ... FROM STDIN`, in chunks that need not end at a line break.
#[async_trait]
pub trait CopyInSink: Send {
    async fn write(&mut self, data: Bytes) -> Result<(), PgError>;
    /// All data arrived; returns how many rows were copied.
    async fn finish(self: Box<Self>) -> Result<u64, PgError>;
    /// The client gave up with `message`; nothing of the copy may become visible.
    async fn abort(self: Box<Self>, message: String);
}

/// Transaction state reported in ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    Idle,
    InTransaction,
    Failed,
}

/// One client connection's session. Statements are opaque to the protocol layer.
#[async_trait]
pub trait PgSession: Send + 'static {
    /// A parsed statement, kept by the protocol layer for prepared statements and portals.
    type Statement: Send + Sync + 'static;

    /// Parses a simple-protocol query string into its statements (possibly none).
    fn parse_simple(&mut self, sql: &str) -> Result<Vec<Arc<Self::Statement>>, PgError>;

    /// Parses one extended-protocol statement. `param_oids` are the types the client declared
    /// in Parse (0 = unspecified); the engine infers the rest.
    async fn prepare(
        &mut self,
        sql: &str,
        param_oids: &[u32],
    ) -> Result<(Arc<Self::Statement>, StatementDescription), PgError>;

    /// Runs a statement with its bound parameters (empty for the simple protocol).
    async fn execute(
        &mut self,
        statement: &Self::Statement,
        params: &[ParamValue],
    ) -> Result<QueryResponse, PgError>;

    fn transaction_status(&self) -> TransactionStatus {
        TransactionStatus::Idle
    }

    /// How long a statement may run before it is stopped (57014); `None` for no limit.
    fn statement_timeout(&self) -> Option<std::time::Duration> {
        None
    }

    /// Whether `statement` may be stopped half-way by a cancel or a timeout (the protocol
    /// layer then drops its execution); statements that must run to completion once started
    /// say no.
    fn is_cancellable(&self, _statement: &Self::Statement) -> bool {
        true
    }

    /// A statement failed after `execute` returned (its rows failed or were stopped while
    /// they were sent) or was stopped by a cancel or timeout while it ran (its execution was
    /// dropped): the session does what an error of the statement does (Postgres aborts an
    /// open transaction block).
    fn statement_failed(&mut self) {}

    /// How values are written as text now (DateStyle, IntervalStyle, extra_float_digits).
    fn output_style(&self) -> crate::types::OutputStyle {
        crate::types::OutputStyle::default()
    }

    /// Run-time parameters whose value the client must be told (ParameterStatus) since the
    /// last call: all of them right after the session opened, then those a statement changed.
    fn take_parameter_changes(&mut self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// NOTICE messages the last statement raised (`role "x" does not exist, skipping`), sent
    /// before its CommandComplete.
    fn take_notices(&mut self) -> Vec<String> {
        Vec::new()
    }

    /// Where NOTICE messages raised *while* a statement runs arrive (a view's backfill
    /// progress): the protocol layer sends each to the client as it comes, while it waits for
    /// the statement. Called once, when the session opens; `None` (the default): the session
    /// raises notices only through [`PgSession::take_notices`].
    fn live_notices(&mut self) -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
        None
    }
}
