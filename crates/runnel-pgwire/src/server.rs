//! The server side of a connection on the `pgwire` crate, driving a [`PgSession`] opened from
//! a [`PgEngine`].
//!
//! `pgwire` owns the socket: TLS negotiation, message framing, the startup handshake's
//! messages, SCRAM's exchange (driven here, one message at a time), the connection state machine (skipping to Sync after an extended-protocol error,
//! the COPY sub-protocol), the prepared statement and portal store and the cancel-key
//! registry. This module implements its handler traits: it turns messages into calls on the
//! session and the session's answers into messages, encoding Arrow results with
//! [`crate::types`] and COPY data with [`crate::copy_format`]. The handlers that `pgwire`
//! provides a default for are overridden where Runnel needs Postgres's exact behaviour:
//! statements run one at a time within a simple query (each answered before the next runs),
//! the transaction status comes from the session, parameters are checked at Bind, `DECLARE`d
//! cursors are fetched with the formats of each FETCH, and a statement can be cancelled or
//! time out. NOTICEs a session raises while its statement runs (a view's backfill progress)
//! are sent as they come, while the statement is awaited.

use std::collections::{HashMap, VecDeque};
use std::fmt::{self, Debug};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use bytes::Bytes;
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::auth::mechanism::{AuthMechanism, AuthMechanismFactory, AuthState};
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata, AuthSource,
    ServerParameterProvider, StartupHandler,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format as PortalFormat, Portal, PortalExecutionState};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::FieldInfo;
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionHandle, ConnectionManager, ErrorHandler,
    PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator, Type, DEFAULT_NAME,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail, CopyInResponse, CopyOutResponse};
use pgwire::messages::data::{
    DataRow, FieldDescription, NoData, ParameterDescription, RowDescription,
};
use pgwire::messages::extendedquery::{
    Bind, BindComplete, Describe, Execute, Parse, ParseComplete, PortalSuspended, Sync as PgSync,
    TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::{
    CommandComplete, EmptyQueryResponse, ReadyForQuery, TransactionStatus as WireStatus,
};
use pgwire::messages::simplequery::Query;
use pgwire::messages::startup::ParameterStatus;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::TlsAcceptor;
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::Mutex;
use tracing::{debug, warn};

use crate::auth::{AuthMethod, EngineVerifiers};
use crate::copy_format::{CopyEncoder, CopyOutFormat};
use crate::engine::{
    BatchStream, CopyInSink, ParamValue, PgEngine, PgSession, QueryResponse, StartupInfo,
    StatementDescription, TransactionStatus,
};
use crate::error::PgError;
use crate::types::{decode_param, pg_type_of, Format, OutputStyle, RowEncoder};

/// How [`serve`] treats connections beyond what the engine decides.
#[derive(Clone)]
pub struct ServeOptions {
    /// Offer TLS (to clients that ask with SSLRequest, or start TLS directly).
    pub tls: Option<TlsAcceptor>,
    /// The server's certificate chain in PEM, with `tls`: SCRAM then also offers channel
    /// binding (SCRAM-SHA-256-PLUS) on encrypted connections.
    pub certificate_pem: Option<Vec<u8>>,
    /// Refuse connections that are not encrypted (28000).
    pub tls_required: bool,
    /// Connections served at once; a client beyond them is refused with 53300.
    pub max_connections: usize,
    /// How long a connection may take from being accepted to being logged in (TLS, startup,
    /// SCRAM); then it is closed.
    pub handshake_timeout: Duration,
    /// The longest statement text (Query, Parse) and the most parameter bytes (Bind) a
    /// message may carry; a longer one fails with 54000. COPY data is not limited.
    pub max_message_bytes: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            tls: None,
            certificate_pem: None,
            tls_required: false,
            max_connections: 100,
            handshake_timeout: Duration::from_secs(10),
            max_message_bytes: 256 << 20,
        }
    }
}

impl fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeOptions")
            .field("tls", &self.tls.is_some())
            .field("tls_required", &self.tls_required)
            .field("max_connections", &self.max_connections)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish_non_exhaustive()
    }
}

/// Accepts connections on `listener` forever, serving each on its own task.
///
/// Errors of `accept` (a connection reset before it was accepted, running out of file
/// descriptors) are logged and retried after a short pause, so this only returns if the task is
/// dropped, or at once if `options.certificate_pem` holds no certificate.
pub async fn serve<E: PgEngine>(
    listener: TcpListener,
    engine: Arc<E>,
    options: ServeOptions,
) -> std::io::Result<()> {
    let connections = Arc::new(ConnectionManager::new());
    let verifiers: Arc<dyn AuthSource> = Arc::new(EngineVerifiers::new(Arc::clone(&engine)));
    let plain = ScramAuth::new(verifiers);
    let mut tls = plain.clone();
    if let Some(pem) = &options.certificate_pem {
        tls.configure_certificate(pem).map_err(|error| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the TLS certificate cannot be used for channel binding: {error}"),
            )
        })?;
    }
    let scram = Arc::new(ScramExchanges { plain, tls });
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let open_count = OpenConnection::count(&open);
        let connection = Arc::new(Connection {
            engine: Arc::clone(&engine),
            connections: Arc::clone(&connections),
            options: options.clone(),
            scram: Arc::clone(&scram),
            open: open_count,
            logged_in: AtomicBool::new(false),
            state: Mutex::new(ConnectionState::default()),
        });
        let handlers = Handlers(Arc::clone(&connection));
        let tls = options.tls.clone();
        let handshake_timeout = options.handshake_timeout;
        tokio::spawn(async move {
            debug!(%peer, "connection opened");
            let serving = pgwire::tokio::process_socket(socket, tls, handlers);
            tokio::pin!(serving);
            let served = tokio::select! {
                served = &mut serving => served,
                () = tokio::time::sleep(handshake_timeout) => {
                    if connection.logged_in.load(Ordering::Acquire) {
                        serving.await
                    } else {
                        // Dropping the connection's future closes its socket.
                        warn!(%peer, timeout = ?handshake_timeout, "connection closed: no login within the handshake timeout");
                        Ok(())
                    }
                }
            };
            match served {
                Ok(()) => debug!(%peer, "connection closed"),
                Err(error) => debug!(%peer, %error, "connection lost"),
            }
        });
    }
}

/// Everything one connection keeps between messages.
struct Connection<E: PgEngine> {
    engine: Arc<E>,
    /// The cancel keys of every connection of the listener.
    connections: Arc<ConnectionManager>,
    options: ServeOptions,
    scram: Arc<ScramExchanges>,
    /// This connection's place in the count of open connections.
    open: OpenConnection,
    /// Set once the session is open: the handshake timeout no longer applies.
    logged_in: AtomicBool,
    state: Mutex<ConnectionState<E::Session>>,
}

/// One open connection, counted from accept to close (a connection that is refused counts
/// until it is closed, as in Postgres).
struct OpenConnection {
    open: Arc<AtomicUsize>,
    /// How many were open, this one included, when it was accepted.
    position: usize,
}

impl OpenConnection {
    fn count(open: &Arc<AtomicUsize>) -> OpenConnection {
        let position = open.fetch_add(1, Ordering::AcqRel) + 1;
        OpenConnection {
            open: Arc::clone(open),
            position,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

struct ConnectionState<S: PgSession> {
    /// A login between the startup message and the end of its SCRAM exchange.
    login: Option<PendingLogin>,
    /// Opened once the connection is authenticated.
    session: Option<S>,
    /// Where the session's live notices arrive (see [`PgSession::live_notices`]).
    live_notices: Option<UnboundedReceiver<String>>,
    /// Where the data of a running `COPY ... FROM STDIN` goes.
    copy_in: Option<Box<dyn CopyInSink>>,
    /// The statements of a simple query that follow its COPY FROM STDIN, run once the
    /// data is in.
    after_copy: VecDeque<Arc<S::Statement>>,
    /// `DECLARE`d cursors by name: their rows, handed out by FETCH.
    cursors: HashMap<String, Cursor>,
    encoder: RowEncoder,
}

impl<S: PgSession> Default for ConnectionState<S> {
    fn default() -> Self {
        Self {
            login: None,
            session: None,
            live_notices: None,
            copy_in: None,
            after_copy: VecDeque::new(),
            cursors: HashMap::new(),
            encoder: RowEncoder::default(),
        }
    }
}

impl<S: PgSession> ConnectionState<S> {
    fn session(&mut self) -> Result<&mut S, PgError> {
        self.session
            .as_mut()
            .ok_or_else(|| PgError::protocol("no session: the startup message was not handled"))
    }

    /// The session, and where its live notices arrive.
    fn session_and_notices(
        &mut self,
    ) -> Result<(&mut S, Option<&mut UnboundedReceiver<String>>), PgError> {
        let session = self
            .session
            .as_mut()
            .ok_or_else(|| PgError::protocol("no session: the startup message was not handled"))?;
        Ok((session, self.live_notices.as_mut()))
    }
}

/// A result set handed out a piece at a time (a cursor, or a portal run with a row limit),
/// pulled from the engine's stream only as far as the client asks.
struct RowCursor {
    schema: Arc<Schema>,
    slices: Slices,
}

impl RowCursor {
    fn new(schema: Arc<Schema>, batches: BatchStream) -> Self {
        Self {
            schema,
            slices: Slices::new(batches),
        }
    }

    /// The next rows, at most `limit` (all when `None`), as DataRows in `formats`.
    async fn next_rows(
        &mut self,
        limit: Option<usize>,
        formats: &[Format],
        encoder: &mut RowEncoder,
        stop: &mut Stop,
    ) -> Result<Vec<DataRow>, PgError> {
        let mut rows = Vec::new();
        loop {
            let wanted = limit.map_or(usize::MAX, |limit| limit - rows.len());
            if wanted == 0 {
                break;
            }
            let Some(slice) = self.slices.next(wanted, stop).await? else {
                break;
            };
            encoder.encode(&slice, formats)?;
            rows.extend(encoder.data_rows()?);
        }
        Ok(rows)
    }
}

impl RowCursor {
    /// The rows of a never-ending result that are ready, at most `limit`: waits for a first
    /// one (for at most `timeout`, then none), then takes only what needs no waiting.
    async fn ready_rows(
        &mut self,
        limit: Option<usize>,
        timeout: Option<Duration>,
        formats: &[Format],
        encoder: &mut RowEncoder,
        stop: &mut Stop,
    ) -> Result<Vec<DataRow>, PgError> {
        use futures::FutureExt;
        let mut rows = Vec::new();
        let limit = limit.unwrap_or(usize::MAX);
        let first = self.slices.next(limit, stop);
        let first = match timeout {
            Some(timeout) => match tokio::time::timeout(timeout, first).await {
                Ok(first) => first?,
                Err(_) => return Ok(rows),
            },
            None => first.await?,
        };
        let Some(mut slice) = first else {
            return Ok(rows);
        };
        loop {
            encoder.encode(&slice, formats)?;
            rows.extend(encoder.data_rows()?);
            let wanted = limit - rows.len();
            if wanted == 0 {
                break;
            }
            // Dropping a pending `next` loses nothing: the stream keeps what it has not
            // handed out.
            match self.slices.next(wanted, stop).now_or_never() {
                Some(next) => match next? {
                    Some(next) => slice = next,
                    None => break,
                },
                None => break,
            }
        }
        Ok(rows)
    }
}

/// The engine's batches cut into slices of at most [`ENCODED_SLICE`] rows, so what is
/// encoded at a time stays small.
struct Slices {
    batches: BatchStream,
    /// The batch being cut, and how many of its rows were handed out.
    current: Option<(RecordBatch, usize)>,
}

impl Slices {
    fn new(batches: BatchStream) -> Self {
        Self {
            batches,
            current: None,
        }
    }

    /// The next slice, of at most `at_most` rows; `None` once the stream has ended.
    async fn next(
        &mut self,
        at_most: usize,
        stop: &mut Stop,
    ) -> Result<Option<RecordBatch>, PgError> {
        loop {
            let (batch, sent) = match self.current.take() {
                Some((batch, sent)) if sent < batch.num_rows() => (batch, sent),
                _ => match stop.race(self.batches.next()).await? {
                    Some(batch) => (batch?, 0),
                    None => return Ok(None),
                },
            };
            if batch.num_rows() == 0 {
                continue;
            }
            let take = (batch.num_rows() - sent).min(at_most).min(ENCODED_SLICE);
            let slice = batch.slice(sent, take);
            self.current = Some((batch, sent + take));
            return Ok(Some(slice));
        }
    }
}

impl Slices {
    /// The next slice; when none is ready yet, what was sent so far is flushed first, so the
    /// client of a result that never ends (SUBSCRIBE) gets each change as it comes, not when
    /// a buffer fills.
    async fn next_flushed<C>(
        &mut self,
        stop: &mut Stop,
        client: &mut C,
    ) -> PgWireResult<Option<RecordBatch>>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use futures::FutureExt;
        // Dropping a pending `next` loses nothing (see `RowCursor::ready_rows`).
        if let Some(ready) = self.next(usize::MAX, stop).now_or_never() {
            return ready.map_err(wire_error);
        }
        client.flush().await?;
        self.next(usize::MAX, stop).await.map_err(wire_error)
    }
}

/// Rows are encoded this many at a time, so the encoded rows stay small.
const ENCODED_SLICE: usize = 1024;

/// What stops a running statement: a CancelRequest for the connection, or the session's
/// statement timeout passing.
struct Stop {
    cancel: Option<futures::channel::oneshot::Receiver<()>>,
    deadline: Option<tokio::time::Instant>,
}

impl Stop {
    /// Nothing stops it.
    fn never() -> Self {
        Self {
            cancel: None,
            deadline: None,
        }
    }

    /// Stopped by the next cancel of this connection, or when `timeout` has passed.
    async fn armed<C: ClientInfo>(client: &C, timeout: Option<Duration>) -> Self {
        let cancel = match client.session_extensions().get::<Arc<ConnectionHandle>>() {
            Some(handle) => Some(handle.start_query().await),
            None => None,
        };
        Self {
            cancel,
            deadline: timeout.map(|limit| tokio::time::Instant::now() + limit),
        }
    }

    /// Runs `work` unless the statement is stopped first (57014).
    async fn race<T>(&mut self, work: impl std::future::Future<Output = T>) -> Result<T, PgError> {
        let cancel = &mut self.cancel;
        let cancelled = async move {
            // A receiver whose sender was replaced (another statement started) is not a
            // cancel.
            if let Some(receiver) = cancel.as_mut() {
                if receiver.await.is_ok() {
                    return;
                }
            }
            std::future::pending::<()>().await;
        };
        let deadline = self.deadline;
        let timed_out = async move {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = work => Ok(done),
            () = cancelled => Err(PgError::new("57014", "canceling statement due to user request")),
            () = timed_out => Err(PgError::new("57014", "canceling statement due to statement timeout")),
        }
    }
}

/// A cursor of `DECLARE`, which lives as long as its transaction unless declared WITH HOLD.
struct Cursor {
    rows: RowCursor,
    hold: bool,
    /// Its rows never end (SUBSCRIBE): FETCH takes what is ready.
    live: bool,
}

/// A prepared statement as the portal store keeps it: the session's statement and how the
/// session described it.
struct WireStatement<T> {
    statement: Arc<T>,
    description: StatementDescription,
}

// Not derived: that would ask for `T: Clone`, and only the `Arc` is cloned.
impl<T> Clone for WireStatement<T> {
    fn clone(&self) -> Self {
        Self {
            statement: Arc::clone(&self.statement),
            description: self.description.clone(),
        }
    }
}

/// The `QueryParser` the extended-protocol handler must name. Parse, Describe and Execute are
/// handled here rather than by `pgwire`'s defaults (the session parses and describes), so
/// nothing calls it (nor the default `do_describe_*` that would).
struct SessionParses<T>(std::marker::PhantomData<fn() -> T>);

#[async_trait]
impl<T: Send + Sync + 'static> QueryParser for SessionParses<T> {
    type Statement = WireStatement<T>;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        _sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        Err(wire_error(PgError::new(
            "XX000",
            "statements are parsed by the session",
        )))
    }

    fn get_parameter_types(&self, _stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Ok(Vec::new())
    }

    fn get_result_schema(
        &self,
        _stmt: &Self::Statement,
        _column_format: Option<&PortalFormat>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(Vec::new())
    }
}

/// The handlers `pgwire` asks for, all served by one connection's [`Connection`].
struct Handlers<E: PgEngine>(Arc<Connection<E>>);

impl<E: PgEngine> PgWireServerHandlers for Handlers<E> {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.0)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.0)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.0)
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        Arc::clone(&self.0)
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::clone(&self.0)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(DefaultCancelHandler::new(Arc::clone(&self.0.connections)))
    }
}

/// A statement's text for a debug log line: none that may hold a password
/// (`CREATE ROLE ... PASSWORD '...'`).
fn loggable(sql: &str) -> &str {
    if sql.to_ascii_lowercase().contains("password") {
        "(a statement naming a password)"
    } else {
        sql
    }
}

/// Sends a NoticeResponse at once (not queued behind the statement's answer).
async fn send_notice<C>(client: &mut C, text: String)
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
{
    let info = ErrorInfo::new("NOTICE".to_string(), "00000".to_string(), text);
    let notice = PgWireBackendMessage::NoticeResponse(info.into());
    if let Err(error) = client.send(notice).await {
        // The connection is gone: the statement's own answer will fail on it.
        debug!(?error, "sending a notice failed");
    }
}

/// `pgwire`'s error for one of ours.
fn wire_error(error: PgError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(error)))
}

fn error_info(error: PgError) -> ErrorInfo {
    let mut info = ErrorInfo::new(error.severity.to_string(), error.sqlstate, error.message);
    info.detail = error.detail;
    info.hint = error.hint;
    info.position = error.position.map(|position| position.to_string());
    info
}

fn wire_status(status: TransactionStatus) -> WireStatus {
    match status {
        TransactionStatus::Idle => WireStatus::Idle,
        TransactionStatus::InTransaction => WireStatus::Transaction,
        TransactionStatus::Failed => WireStatus::Error,
    }
}

fn command_complete(tag: impl Into<String>) -> PgWireBackendMessage {
    PgWireBackendMessage::CommandComplete(CommandComplete::new(tag.into()))
}

/// RowDescription fields for `schema` sent in `formats`.
fn row_description(schema: &Schema, formats: &[Format]) -> PgWireBackendMessage {
    let fields = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(index, field)| {
            let pg = pg_type_of(field);
            FieldDescription::new(
                field.name().clone(),
                0,
                0,
                pg.oid,
                pg.typlen,
                pg.typmod,
                formats.get(index).copied().unwrap_or_default().code(),
            )
        })
        .collect();
    PgWireBackendMessage::RowDescription(RowDescription::new(fields))
}

/// Expands format codes to one per value: none means all text, one applies to all, otherwise
/// there must be one each; `mismatch` makes the error for any other number of codes.
fn resolve_formats(
    codes: &[i16],
    count: usize,
    mismatch: impl FnOnce(usize) -> PgError,
) -> Result<Vec<Format>, PgError> {
    let parse = |code: i16| {
        Format::from_code(code)
            .ok_or_else(|| PgError::new("22023", format!("unsupported format code: {code}")))
    };
    match codes {
        [] => Ok(vec![Format::Text; count]),
        [code] => parse(*code).map(|format| vec![format; count]),
        codes if codes.len() == count => codes.iter().map(|&code| parse(code)).collect(),
        codes => Err(mismatch(codes.len())),
    }
}

/// The format codes a portal was bound with.
fn portal_codes(format: &PortalFormat) -> Vec<i16> {
    match format {
        PortalFormat::UnifiedText => Vec::new(),
        PortalFormat::UnifiedBinary => vec![Format::Binary.code()],
        PortalFormat::Individual(codes) => codes.clone(),
    }
}

fn missing_statement(name: &str) -> PgError {
    if name == DEFAULT_NAME {
        PgError::new("26000", "unnamed prepared statement does not exist")
    } else {
        PgError::new(
            "26000",
            format!("prepared statement \"{name}\" does not exist"),
        )
    }
}

fn missing_portal(name: &str) -> PgError {
    let name = if name == DEFAULT_NAME { "" } else { name };
    PgError::new("34000", format!("portal \"{name}\" does not exist"))
}

/// The parameters the client is told about at startup: the session's, or Postgres's defaults
/// for an engine that keeps none.
struct StartupParameters(Vec<(String, String)>);

impl ServerParameterProvider for StartupParameters {
    fn server_parameters<C: ClientInfo>(&self, client: &C) -> Option<HashMap<String, String>> {
        if !self.0.is_empty() {
            return Some(self.0.iter().cloned().collect());
        }
        let application_name = client
            .metadata()
            .get("application_name")
            .cloned()
            .unwrap_or_default();
        Some(
            [
                ("server_version", "15.0"),
                ("server_encoding", "UTF8"),
                ("client_encoding", "UTF8"),
                ("DateStyle", "ISO, MDY"),
                ("TimeZone", "UTC"),
                ("IntervalStyle", "postgres"),
                ("integer_datetimes", "on"),
                ("standard_conforming_strings", "on"),
            ]
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .chain([("application_name".to_string(), application_name)])
            .collect(),
        )
    }
}

#[async_trait]
impl<E: PgEngine> StartupHandler for Connection<E> {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(startup) => {
                protocol_negotiation(client, &startup).await?;
                save_startup_parameters_to_metadata(client, &startup);
                let user = startup.parameters.get("user").cloned().unwrap_or_default();
                let database = startup
                    .parameters
                    .get("database")
                    .cloned()
                    .unwrap_or_else(|| user.clone());
                let info = StartupInfo {
                    user,
                    database,
                    parameters: startup.parameters.into_iter().collect(),
                    process_id: 0,
                    peer: client.socket_addr(),
                    secure: client.is_secure(),
                };
                if self.open.position > self.options.max_connections {
                    warn!(user = %info.user, address = %info.peer, max_connections = self.options.max_connections, "connection refused: too many clients");
                    return refuse(
                        client,
                        PgError::new("53300", "sorry, too many clients already"),
                    )
                    .await;
                }
                if self.options.tls_required && !info.secure {
                    warn!(user = %info.user, address = %info.peer, "connection refused: not encrypted");
                    return refuse(
                        client,
                        PgError::new(
                            "28000",
                            "the server requires TLS: connect with sslmode=require",
                        ),
                    )
                    .await;
                }
                match self.engine.authentication(&info) {
                    AuthMethod::Trust => self.start_session(client, info).await,
                    AuthMethod::Scram => {
                        let scram = if info.secure {
                            &self.scram.tls
                        } else {
                            &self.scram.plain
                        };
                        let mut mechanism = scram.create();
                        let first = mechanism.begin(client).await;
                        self.authentication_step(client, info, mechanism, first)
                            .await
                    }
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let pending = self.state.lock().await.login.take();
                let Some(PendingLogin {
                    info,
                    mut mechanism,
                }) = pending
                else {
                    return refuse(client, PgError::protocol("no authentication in progress"))
                        .await;
                };
                let step = mechanism.next(client, message).await;
                self.authentication_step(client, info, mechanism, step)
                    .await
            }
            _ => refuse(client, PgError::protocol("expected a startup message")).await,
        }
    }
}

impl<E: PgEngine> Connection<E> {
    /// Answers one step of a login's SCRAM exchange: the next challenge, the session once the
    /// proof holds, or 28P01 (the same for a wrong password and an unknown user).
    async fn authentication_step<C>(
        &self,
        client: &mut C,
        info: StartupInfo,
        mechanism: Box<dyn AuthMechanism>,
        step: PgWireResult<AuthState>,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match step {
            Ok(AuthState::InProgress(challenge)) => {
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                self.state.lock().await.login = Some(PendingLogin { info, mechanism });
                client
                    .send(PgWireBackendMessage::Authentication(challenge))
                    .await?;
                Ok(())
            }
            Ok(AuthState::Ok { final_message, .. }) => {
                if let Some(message) = final_message {
                    client
                        .feed(PgWireBackendMessage::Authentication(message))
                        .await?;
                }
                self.start_session(client, info).await
            }
            Err(PgWireError::IoError(error)) => Err(PgWireError::IoError(error)),
            Ok(AuthState::Failed(error)) | Err(error) => {
                // What failed stays in the server's log at debug level; the client and the
                // default log learn only that the login failed (never the password).
                debug!(%error, "authentication failed");
                warn!(user = %info.user, address = %info.peer, "authentication failed");
                refuse(
                    client,
                    PgError::new(
                        "28P01",
                        format!("password authentication failed for user \"{}\"", info.user),
                    ),
                )
                .await
            }
        }
    }

    /// Opens the session of an authenticated connection and completes the startup:
    /// AuthenticationOk, the session's parameters, BackendKeyData, ReadyForQuery.
    async fn start_session<C>(&self, client: &mut C, mut info: StartupInfo) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (process_id, secret_key) = RandomPidSecretKeyGenerator::default().generate(client);
        client.set_pid_and_secret_key(process_id, secret_key.clone());
        let (handle, guard) = self.connections.register(process_id, secret_key);
        client
            .session_extensions()
            .insert::<Arc<ConnectionHandle>>(handle);
        client.session_extensions().insert(guard);
        info.process_id = process_id;
        let mut session = match self.engine.open_session(&info).await {
            Ok(session) => session,
            Err(error) => return refuse(client, error).await,
        };
        debug!(user = %info.user, database = %info.database, "session opened");
        let parameters = StartupParameters(session.take_parameter_changes());
        let live_notices = session.live_notices();
        {
            let mut state = self.state.lock().await;
            state.session = Some(session);
            state.live_notices = live_notices;
        }
        self.logged_in.store(true, Ordering::Release);
        finish_authentication(client, &parameters).await
    }
}

impl<E: PgEngine> Connection<E> {
    /// Refuses a message whose statement text or parameters are longer than the server takes
    /// (54000, program_limit_exceeded), before anything parses it.
    fn check_message_size(&self, bytes: usize) -> Result<(), PgError> {
        let limit = self.options.max_message_bytes;
        if bytes > limit {
            return Err(PgError::new(
                "54000",
                format!("message too long: {bytes} bytes, the server takes at most {limit}"),
            ));
        }
        Ok(())
    }
}

/// A login waiting for the client's next SCRAM message.
struct PendingLogin {
    info: StartupInfo,
    mechanism: Box<dyn AuthMechanism>,
}

/// The SCRAM exchanges a listener offers: over TLS with channel binding
/// (SCRAM-SHA-256-PLUS) when the certificate is known, in plain text without.
struct ScramExchanges {
    plain: ScramAuth,
    tls: ScramAuth,
}

/// Ends a connection that cannot start: a FATAL error, then the socket closes. Sent here
/// rather than returned, as `pgwire` would follow a returned startup error with
/// ReadyForQuery.
async fn refuse<C>(client: &mut C, error: PgError) -> PgWireResult<()>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    debug!(%error, "connection refused");
    client
        .send(PgWireBackendMessage::ErrorResponse(
            error_info(error.fatal()).into(),
        ))
        .await?;
    client.close().await?;
    Ok(())
}

impl<E: PgEngine> ErrorHandler for Connection<E> {
    fn on_error<C: ClientInfo>(&self, _client: &C, error: &mut PgWireError) {
        debug!(%error, "statement failed");
    }
}

/// How a statement's execution was answered.
enum Answered {
    /// Completely: the next statement may run.
    Done,
    /// With CopyInResponse: CopyData follows, and ReadyForQuery waits for CopyDone.
    CopyIn,
}

impl<E: PgEngine> Connection<E> {
    /// Runs a statement, stopping it with 57014 when a CancelRequest for this connection
    /// arrives or the session's statement timeout passes (for the statements the session
    /// says may stop half-way). The same [`Stop`] then covers sending its rows. Notices the
    /// session raises meanwhile go to the client as they come.
    async fn run<C>(
        client: &mut C,
        session: &mut E::Session,
        notices: Option<&mut UnboundedReceiver<String>>,
        statement: &<E::Session as PgSession>::Statement,
        params: &[ParamValue],
    ) -> (Result<QueryResponse, PgError>, Stop)
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
    {
        if !session.is_cancellable(statement) {
            let response =
                Self::execute_sending_notices(client, session, notices, statement, params).await;
            return (response, Stop::never());
        }
        let mut stop = Stop::armed(&*client, session.statement_timeout()).await;
        let work = Self::execute_sending_notices(client, session, notices, statement, params);
        let response = match stop.race(work).await {
            Ok(response) => response,
            Err(stopped) => {
                session.statement_failed();
                Err(stopped)
            }
        };
        (response, stop)
    }

    /// Executes a statement and, while it runs, sends every notice arriving on `notices` (then
    /// those left when it ends), so that psql prints a long statement's progress as it goes.
    async fn execute_sending_notices<C>(
        client: &mut C,
        session: &mut E::Session,
        notices: Option<&mut UnboundedReceiver<String>>,
        statement: &<E::Session as PgSession>::Statement,
        params: &[ParamValue],
    ) -> Result<QueryResponse, PgError>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
    {
        let Some(notices) = notices else {
            return session.execute(statement, params).await;
        };
        // Left by a statement that was stopped half-way: not this one's.
        while notices.try_recv().is_ok() {}
        let execution = session.execute(statement, params);
        tokio::pin!(execution);
        let response = loop {
            tokio::select! {
                response = &mut execution => break response,
                notice = notices.recv() => match notice {
                    Some(text) => send_notice(client, text).await,
                    None => break execution.as_mut().await,
                },
            }
        };
        while let Ok(text) = notices.try_recv() {
            send_notice(client, text).await;
        }
        response
    }

    /// Ends a query cycle: cursors and portals end with their transaction (but for cursors
    /// declared WITH HOLD), and ReadyForQuery carries the session's transaction status.
    async fn ready_for_query<C>(
        client: &mut C,
        state: &mut ConnectionState<E::Session>,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let status = match state.session.as_ref() {
            Some(session) => wire_status(session.transaction_status()),
            None => WireStatus::Idle,
        };
        if Self::end_of_transaction(state) {
            client.portal_store().clear_portals();
        }
        client.set_transaction_status(status);
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                status,
            )))
            .await?;
        Ok(())
    }

    /// Tells the session when sending a statement's answer failed (see
    /// [`PgSession::statement_failed`]); a failure of the socket itself is not the
    /// statement's.
    fn fail_on_error<T>(
        state: &mut ConnectionState<E::Session>,
        result: PgWireResult<T>,
    ) -> PgWireResult<T> {
        if let Err(PgWireError::UserError(_)) = &result {
            if let Some(session) = state.session.as_mut() {
                session.statement_failed();
            }
        }
        result
    }

    /// The session's statement timeout, for a [`Stop`] of continuing a cursor or portal.
    fn timeout(state: &ConnectionState<E::Session>) -> Option<Duration> {
        state
            .session
            .as_ref()
            .and_then(PgSession::statement_timeout)
    }

    /// ParameterStatus for every reported parameter the last statement changed, and the
    /// session's transaction status for the next ReadyForQuery.
    async fn after_statement<C>(client: &mut C, session: &mut E::Session) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        for notice in session.take_notices() {
            let info = ErrorInfo::new("NOTICE".to_string(), "00000".to_string(), notice);
            client
                .feed(PgWireBackendMessage::NoticeResponse(info.into()))
                .await?;
        }
        for (name, value) in session.take_parameter_changes() {
            client
                .feed(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                    name, value,
                )))
                .await?;
        }
        client.set_transaction_status(wire_status(session.transaction_status()));
        Ok(())
    }

    /// Cursors end with their transaction, but for those declared WITH HOLD. True when no
    /// transaction is open (protocol portals then end too).
    fn end_of_transaction(state: &mut ConnectionState<E::Session>) -> bool {
        let idle = state
            .session
            .as_ref()
            .is_none_or(|session| session.transaction_status() == TransactionStatus::Idle);
        if idle {
            state.cursors.retain(|_, cursor| cursor.hold);
        }
        idle
    }

    /// Sends a whole result as the engine produces it: DataRows in `formats`, then
    /// `SELECT n`.
    async fn send_rows<C>(
        client: &mut C,
        encoder: &mut RowEncoder,
        batches: BatchStream,
        formats: &[Format],
        stop: &mut Stop,
    ) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut sent = 0usize;
        let mut slices = Slices::new(batches);
        while let Some(slice) = slices.next_flushed(stop, client).await? {
            encoder.encode(&slice, formats).map_err(wire_error)?;
            for row in encoder.data_rows().map_err(wire_error)? {
                client.feed(PgWireBackendMessage::DataRow(row)).await?;
            }
            sent += slice.num_rows();
        }
        client
            .feed(command_complete(format!("SELECT {sent}")))
            .await?;
        Ok(())
    }

    /// Runs COPY TO STDOUT: CopyOutResponse, a CopyData per row (the binary header goes with
    /// the first, a CSV header line in its own), CopyDone and `COPY <n>`.
    async fn copy_out<C>(
        client: &mut C,
        columns: &[String],
        format: CopyOutFormat,
        style: OutputStyle,
        batches: BatchStream,
        stop: &mut Stop,
    ) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut encoder = CopyEncoder::new(format, style);
        let binary = encoder.binary();
        let code = i16::from(binary);
        let count = i16::try_from(columns.len()).unwrap_or(i16::MAX);
        client
            .feed(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
                i8::from(binary),
                count,
                vec![code; columns.len()],
            )))
            .await?;
        let names: Vec<&str> = columns.iter().map(String::as_str).collect();
        let mut data = Vec::new();
        encoder.start(&names, &mut data);
        let copy_data = |bytes: &[u8]| {
            PgWireBackendMessage::CopyData(CopyData::new(Bytes::copy_from_slice(bytes)))
        };
        // A CSV header is a line of its own; the binary header prefixes the first row.
        if !data.is_empty() && !binary {
            client.feed(copy_data(&data)).await?;
            data.clear();
        }
        let mut row_ends = Vec::new();
        let mut rows = 0u64;
        let mut slices = Slices::new(batches);
        while let Some(slice) = slices.next_flushed(stop, client).await? {
            row_ends.clear();
            encoder
                .write(&slice, &mut data, &mut row_ends)
                .map_err(wire_error)?;
            let mut start = 0;
            for &end in &row_ends {
                client.feed(copy_data(&data[start..end])).await?;
                start = end;
            }
            data.clear();
            rows += slice.num_rows() as u64;
        }
        encoder.finish(&mut data);
        if !data.is_empty() {
            client.feed(copy_data(&data)).await?;
        }
        client
            .feed(PgWireBackendMessage::CopyDone(CopyDone::new()))
            .await?;
        client
            .feed(command_complete(format!("COPY {rows}")))
            .await?;
        Ok(())
    }

    /// Starts COPY FROM STDIN: the sink waits for the CopyData the client sends next.
    async fn start_copy_in<C>(
        client: &mut C,
        state: &mut ConnectionState<E::Session>,
        columns: usize,
        sink: Box<dyn CopyInSink>,
        extended: bool,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        state.copy_in = Some(sink);
        client.set_state(PgWireConnectionState::CopyInProgress(extended));
        let count = i16::try_from(columns).unwrap_or(i16::MAX);
        client
            .send(PgWireBackendMessage::CopyInResponse(CopyInResponse::new(
                0,
                count,
                vec![0; columns],
            )))
            .await?;
        Ok(())
    }

    /// DECLARE, FETCH and CLOSE of a cursor. `result_formats` are the Bind's result formats of
    /// an extended-protocol FETCH (`None`: the simple protocol, which also sends a
    /// RowDescription).
    async fn cursor_command<C>(
        client: &mut C,
        state: &mut ConnectionState<E::Session>,
        response: QueryResponse,
        result_formats: Option<&[i16]>,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match response {
            QueryResponse::DeclareCursor {
                name,
                schema,
                batches,
                hold,
                live,
            } => {
                if state.cursors.contains_key(&name) {
                    return Err(wire_error(PgError::new(
                        "42P03",
                        format!("cursor \"{name}\" already exists"),
                    )));
                }
                state.cursors.insert(
                    name,
                    Cursor {
                        rows: RowCursor::new(schema, batches),
                        hold,
                        live,
                    },
                );
                client.feed(command_complete("DECLARE CURSOR")).await?;
            }
            QueryResponse::Fetch {
                name,
                count,
                timeout,
            } => {
                let mut stop = Stop::armed(client, Self::timeout(state)).await;
                let ConnectionState {
                    cursors, encoder, ..
                } = state;
                let cursor = cursors.get_mut(&name).ok_or_else(|| {
                    wire_error(PgError::new(
                        "34000",
                        format!("cursor \"{name}\" does not exist"),
                    ))
                })?;
                let columns = cursor.rows.schema.fields().len();
                let formats = match result_formats {
                    Some(codes) => resolve_formats(codes, columns, |n| {
                        PgError::protocol(format!(
                            "bind message has {n} result formats but the cursor has {columns} \
                             columns"
                        ))
                    })
                    .map_err(wire_error)?,
                    None => {
                        let formats = vec![Format::Text; columns];
                        client
                            .feed(row_description(&cursor.rows.schema, &formats))
                            .await?;
                        formats
                    }
                };
                let limit = count.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
                let rows = if limit == Some(0) {
                    Vec::new()
                } else if cursor.live {
                    cursor
                        .rows
                        .ready_rows(limit, timeout, &formats, encoder, &mut stop)
                        .await
                        .map_err(wire_error)?
                } else {
                    cursor
                        .rows
                        .next_rows(limit, &formats, encoder, &mut stop)
                        .await
                        .map_err(wire_error)?
                };
                let sent = rows.len();
                for row in rows {
                    client.feed(PgWireBackendMessage::DataRow(row)).await?;
                }
                client
                    .feed(command_complete(format!("FETCH {sent}")))
                    .await?;
            }
            QueryResponse::CloseCursor { name: Some(name) } => {
                if state.cursors.remove(&name).is_none() {
                    return Err(wire_error(PgError::new(
                        "34000",
                        format!("cursor \"{name}\" does not exist"),
                    )));
                }
                client.feed(command_complete("CLOSE CURSOR")).await?;
            }
            QueryResponse::CloseCursor { name: None } => {
                state.cursors.clear();
                client.feed(command_complete("CLOSE CURSOR ALL")).await?;
            }
            _ => {
                return Err(wire_error(PgError::new("XX000", "not a cursor command")));
            }
        }
        Ok(())
    }

    /// The statements of one simple query, each answered before the next runs. Stops at the
    /// first error, as Postgres does.
    async fn run_simple_query<C>(
        client: &mut C,
        state: &mut ConnectionState<E::Session>,
        sql: &str,
    ) -> PgWireResult<Answered>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = state.session().map_err(wire_error)?.parse_simple(sql);
        let statements = statements.map_err(wire_error)?;
        if statements.is_empty() {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
            return Ok(Answered::Done);
        }
        Self::run_statements(client, state, statements.into(), true).await
    }

    /// Runs `statements` of a simple query in order. A COPY FROM STDIN among them (only one
    /// when `copy_allowed`: `pgwire` ends the COPY state after the first) keeps the ones after
    /// it for when its data is in.
    async fn run_statements<C>(
        client: &mut C,
        state: &mut ConnectionState<E::Session>,
        mut statements: VecDeque<Arc<<E::Session as PgSession>::Statement>>,
        copy_allowed: bool,
    ) -> PgWireResult<Answered>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        while let Some(statement) = statements.pop_front() {
            let (session, notices) = state.session_and_notices().map_err(wire_error)?;
            let (response, mut stop) = Self::run(client, session, notices, &statement, &[]).await;
            Self::after_statement(client, session).await?;
            // The statement may have changed DateStyle, IntervalStyle or extra_float_digits.
            let style = session.output_style();
            state.encoder.set_style(style);
            match response.map_err(wire_error)? {
                QueryResponse::Rows { schema, batches } => {
                    let formats = vec![Format::Text; schema.fields().len()];
                    client.feed(row_description(&schema, &formats)).await?;
                    let sent =
                        Self::send_rows(client, &mut state.encoder, batches, &formats, &mut stop)
                            .await;
                    Self::fail_on_error(state, sent)?;
                }
                QueryResponse::Command { tag } => client.feed(command_complete(tag)).await?,
                QueryResponse::Empty => {
                    client
                        .feed(PgWireBackendMessage::EmptyQueryResponse(
                            EmptyQueryResponse::new(),
                        ))
                        .await?;
                }
                QueryResponse::CopyIn { columns, sink } => {
                    if !copy_allowed {
                        sink.abort("a second COPY FROM STDIN in one query string".into())
                            .await;
                        return Err(wire_error(PgError::new(
                            "0A000",
                            "only one COPY FROM STDIN is supported in a query string",
                        )));
                    }
                    state.after_copy = statements;
                    Self::start_copy_in(client, state, columns, sink, false).await?;
                    return Ok(Answered::CopyIn);
                }
                QueryResponse::CopyOut {
                    columns,
                    format,
                    batches,
                } => {
                    let sent =
                        Self::copy_out(client, &columns, format, style, batches, &mut stop).await;
                    Self::fail_on_error(state, sent)?;
                }
                cursor => {
                    let done = Self::cursor_command(client, state, cursor, None).await;
                    Self::fail_on_error(state, done)?;
                }
            }
            Self::end_of_transaction(state);
        }
        Ok(Answered::Done)
    }

    /// Runs a protocol portal (or continues one a row limit suspended).
    async fn execute_portal<C>(
        client: &mut C,
        state: &mut ConnectionState<E::Session>,
        portal: &Portal<WireStatement<<E::Session as PgSession>::Statement>>,
        max_rows: usize,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let execution = portal.state();
        let mut execution = execution.lock().await;
        if !matches!(&*execution, PortalExecutionState::Initial) {
            // Run before: a result a row limit suspended is kept among the cursors.
            drop(execution);
            return Self::continue_portal(client, state, portal, max_rows).await;
        }
        let wire = &portal.statement.statement;
        let oids = &wire.description.param_oids;
        let params = portal
            .parameters
            .iter()
            .zip(oids)
            .enumerate()
            .map(|(index, (raw, &oid))| {
                let format = if portal.parameter_format.is_binary(index) {
                    Format::Binary
                } else {
                    Format::Text
                };
                decode_param(index + 1, oid, format, raw.as_deref())
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(wire_error)?;
        let (session, notices) = state.session_and_notices().map_err(wire_error)?;
        let (response, mut stop) =
            Self::run(client, session, notices, &wire.statement, &params).await;
        Self::after_statement(client, session).await?;
        let style = session.output_style();
        state.encoder.set_style(style);
        *execution = PortalExecutionState::Finished;
        match response.map_err(wire_error)? {
            QueryResponse::Rows { schema, batches } => {
                let columns = schema.fields().len();
                let formats =
                    resolve_formats(&portal_codes(&portal.result_column_format), columns, |n| {
                        PgError::new(
                            "XX000",
                            format!(
                                "bind message has {n} result formats but the result has \
                                 {columns} columns"
                            ),
                        )
                    })
                    .map_err(wire_error)?;
                if max_rows == 0 {
                    let sent =
                        Self::send_rows(client, &mut state.encoder, batches, &formats, &mut stop)
                            .await;
                    Self::fail_on_error(state, sent)?;
                } else {
                    let name = portal.name.clone();
                    state.cursors.insert(
                        portal_cursor_name(&name),
                        Cursor {
                            rows: RowCursor::new(schema, batches),
                            hold: false,
                            live: false,
                        },
                    );
                    drop(execution);
                    return Self::continue_portal(client, state, portal, max_rows).await;
                }
            }
            QueryResponse::Command { tag } => client.feed(command_complete(tag)).await?,
            QueryResponse::Empty => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
            }
            QueryResponse::CopyIn { columns, sink } => {
                Self::start_copy_in(client, state, columns, sink, true).await?;
            }
            QueryResponse::CopyOut {
                columns,
                format,
                batches,
            } => {
                let sent =
                    Self::copy_out(client, &columns, format, style, batches, &mut stop).await;
                Self::fail_on_error(state, sent)?;
            }
            cursor => {
                let codes = portal_codes(&portal.result_column_format);
                let done = Self::cursor_command(client, state, cursor, Some(&codes)).await;
                Self::fail_on_error(state, done)?;
                Self::end_of_transaction(state);
            }
        }
        Ok(())
    }

    /// The next `max_rows` rows (all when 0) of a portal whose result is kept, then
    /// PortalSuspended if rows are left or `SELECT n` when none are.
    async fn continue_portal<C>(
        client: &mut C,
        state: &mut ConnectionState<E::Session>,
        portal: &Portal<WireStatement<<E::Session as PgSession>::Statement>>,
        max_rows: usize,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let key = portal_cursor_name(&portal.name);
        let mut stop = Stop::armed(client, Self::timeout(state)).await;
        let ConnectionState {
            cursors, encoder, ..
        } = state;
        let Some(cursor) = cursors.get_mut(&key) else {
            // Ran to completion before: nothing is left.
            client.feed(command_complete("SELECT 0")).await?;
            return Ok(());
        };
        let columns = cursor.rows.schema.fields().len();
        let formats = resolve_formats(&portal_codes(&portal.result_column_format), columns, |n| {
            PgError::new(
                "XX000",
                format!("bind message has {n} result formats but the result has {columns} columns"),
            )
        })
        .map_err(wire_error)?;
        let limit = (max_rows > 0).then_some(max_rows);
        let rows = cursor
            .rows
            .next_rows(limit, &formats, encoder, &mut stop)
            .await
            .map_err(wire_error)?;
        let sent = rows.len();
        for row in rows {
            client.feed(PgWireBackendMessage::DataRow(row)).await?;
        }
        // As in Postgres, reaching the row limit suspends the portal, even when no row is
        // left (the next Execute then completes it with no rows).
        if limit != Some(sent) {
            cursors.remove(&key);
            client
                .feed(command_complete(format!("SELECT {sent}")))
                .await?;
        } else {
            client
                .send(PgWireBackendMessage::PortalSuspended(PortalSuspended::new()))
                .await?;
        }
        Ok(())
    }
}

/// Where the kept rows of a protocol portal run with a row limit live among the cursors: a
/// name no SQL identifier can clash with.
fn portal_cursor_name(portal: &str) -> String {
    format!("\0portal:{portal}")
}

#[async_trait]
impl<E: PgEngine> SimpleQueryHandler for Connection<E> {
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        debug!(sql = %loggable(&query.query), "simple query");
        // As in Postgres, a simple query replaces the unnamed statement and portal.
        client.portal_store().rm_statement(DEFAULT_NAME);
        client.portal_store().rm_portal(DEFAULT_NAME);
        let mut state = self.state.lock().await;
        let answered = match self.check_message_size(query.query.len()) {
            Ok(()) => Self::run_simple_query(client, &mut state, &query.query).await,
            Err(error) => Err(wire_error(error)),
        };
        match answered {
            Ok(Answered::CopyIn) => return Ok(()),
            Ok(Answered::Done) => {}
            Err(PgWireError::UserError(info)) => {
                debug!(code = %info.code, message = %info.message, "statement failed");
                client
                    .feed(PgWireBackendMessage::ErrorResponse((*info).into()))
                    .await?;
            }
            Err(other) => return Err(other),
        }
        Self::ready_for_query(client, &mut state).await
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        _query: &str,
    ) -> PgWireResult<Vec<pgwire::api::results::Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // `on_query` runs the statements itself.
        Err(wire_error(PgError::new("XX000", "unreachable: do_query")))
    }
}

#[async_trait]
impl<E: PgEngine> ExtendedQueryHandler for Connection<E> {
    type Statement = WireStatement<<E::Session as PgSession>::Statement>;
    type QueryParser = SessionParses<<E::Session as PgSession>::Statement>;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::new(SessionParses(std::marker::PhantomData))
    }

    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        debug!(name = ?message.name, query = %loggable(&message.query), "parse");
        self.check_message_size(message.query.len())
            .map_err(wire_error)?;
        let name = message.name.unwrap_or_else(|| DEFAULT_NAME.to_string());
        if name != DEFAULT_NAME && client.portal_store().get_statement(&name).is_some() {
            return Err(wire_error(PgError::new(
                "42P05",
                format!("prepared statement \"{name}\" already exists"),
            )));
        }
        let mut state = self.state.lock().await;
        let session = state.session().map_err(wire_error)?;
        let (statement, description) = session
            .prepare(&message.query, &message.type_oids)
            .await
            .map_err(wire_error)?;
        client
            .portal_store()
            .put_statement(Arc::new(StoredStatement::new(
                name,
                WireStatement {
                    statement,
                    description,
                },
                Vec::new(),
            )));
        client
            .feed(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
            .await?;
        Ok(())
    }

    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let parameter_bytes = message.parameters.iter().flatten().map(|p| p.len()).sum();
        self.check_message_size(parameter_bytes)
            .map_err(wire_error)?;
        let statement_name = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal_name = message.portal_name.as_deref().unwrap_or(DEFAULT_NAME);
        let Some(Entry::Value(statement)) = client.portal_store().get_statement(statement_name)
        else {
            return Err(wire_error(missing_statement(statement_name)));
        };
        if portal_name != DEFAULT_NAME && client.portal_store().get_portal(portal_name).is_some() {
            return Err(wire_error(PgError::new(
                "42P03",
                format!("portal \"{portal_name}\" already exists"),
            )));
        }
        let description = &statement.statement.description;
        let expected = description.param_oids.len();
        let shown = if statement_name == DEFAULT_NAME {
            ""
        } else {
            statement_name
        };
        if message.parameters.len() != expected {
            return Err(wire_error(PgError::protocol(format!(
                "bind message supplies {} parameters, but prepared statement \"{shown}\" \
                 requires {expected}",
                message.parameters.len()
            ))));
        }
        // Parameters that cannot be read fail here, as in Postgres, not at Execute.
        let formats = resolve_formats(&message.parameter_format_codes, expected, |count| {
            PgError::protocol(format!(
                "bind message has {count} parameter formats but {expected} parameters"
            ))
        })
        .map_err(wire_error)?;
        for (index, ((raw, &oid), format)) in message
            .parameters
            .iter()
            .zip(&description.param_oids)
            .zip(formats)
            .enumerate()
        {
            decode_param(index + 1, oid, format, raw.as_deref()).map_err(wire_error)?;
        }
        let columns = description
            .fields
            .as_ref()
            .map_or(0, |schema| schema.fields().len());
        resolve_formats(&message.result_column_format_codes, columns, |count| {
            PgError::protocol(format!(
                "bind message has {count} result formats but query has {columns} columns"
            ))
        })
        .map_err(wire_error)?;
        let portal = Portal::try_new(&message, statement)?;
        // A result a row limit left half-sent belongs to the portal this one replaces.
        self.state
            .lock()
            .await
            .cursors
            .remove(&portal_cursor_name(&portal.name));
        client.portal_store().put_portal(Arc::new(portal));
        client
            .feed(PgWireBackendMessage::BindComplete(BindComplete::new()))
            .await?;
        Ok(())
    }

    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let (description, formats) = match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => {
                let Some(Entry::Value(statement)) = client.portal_store().get_statement(name)
                else {
                    return Err(wire_error(missing_statement(name)));
                };
                let description = statement.statement.description.clone();
                // A parameter whose type nobody knows is described as `text`, as Postgres
                // does: clients cannot bind a parameter of type 0.
                let oids = description
                    .param_oids
                    .iter()
                    .map(|&oid| {
                        if oid == 0 {
                            crate::types::oid::TEXT
                        } else {
                            oid
                        }
                    })
                    .collect();
                client
                    .feed(PgWireBackendMessage::ParameterDescription(
                        ParameterDescription::new(oids),
                    ))
                    .await?;
                (description.fields, Vec::new())
            }
            TARGET_TYPE_BYTE_PORTAL => match client.portal_store().get_portal(name) {
                Some(Entry::Value(portal)) => (
                    portal.statement.statement.description.fields.clone(),
                    portal_codes(&portal.result_column_format),
                ),
                _ => {
                    // A cursor of DECLARE is a portal too.
                    let state = self.state.lock().await;
                    let cursor = state
                        .cursors
                        .get(name)
                        .ok_or_else(|| wire_error(missing_portal(name)))?;
                    (Some(cursor.rows.schema.clone()), Vec::new())
                }
            },
            other => {
                return Err(wire_error(PgError::protocol(format!(
                    "invalid DESCRIBE message subtype {other}"
                ))))
            }
        };
        match description {
            Some(schema) => {
                let columns = schema.fields().len();
                let formats = resolve_formats(&formats, columns, |_| {
                    PgError::protocol("result formats do not match the columns")
                })
                .map_err(wire_error)?;
                client.feed(row_description(&schema, &formats)).await?;
            }
            None => {
                client
                    .feed(PgWireBackendMessage::NoData(NoData::new()))
                    .await?
            }
        }
        Ok(())
    }

    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let max_rows = usize::try_from(message.max_rows).unwrap_or(0);
        debug!(portal = name, max_rows, "execute");
        let mut state = self.state.lock().await;
        match client.portal_store().get_portal(name) {
            Some(Entry::Value(portal)) => {
                let result = Self::execute_portal(client, &mut state, &portal, max_rows).await;
                let result = Self::fail_on_error(&mut state, result);
                if result.is_err() {
                    // A portal whose execution failed is gone, as in Postgres.
                    client.portal_store().rm_portal(name);
                    state.cursors.remove(&portal_cursor_name(name));
                }
                result
            }
            Some(Entry::Empty) => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
                Ok(())
            }
            None if state.cursors.contains_key(name) => {
                // Execute on a DECLAREd cursor: its next rows, as a FETCH would give them.
                let mut stop = Stop::armed(client, Self::timeout(&state)).await;
                let ConnectionState {
                    cursors, encoder, ..
                } = &mut *state;
                let Some(cursor) = cursors.get_mut(name) else {
                    return Err(wire_error(missing_portal(name)));
                };
                let formats = vec![Format::Text; cursor.rows.schema.fields().len()];
                let limit = (max_rows > 0).then_some(max_rows);
                let rows = cursor
                    .rows
                    .next_rows(limit, &formats, encoder, &mut stop)
                    .await
                    .map_err(wire_error)?;
                let sent = rows.len();
                for row in rows {
                    client.feed(PgWireBackendMessage::DataRow(row)).await?;
                }
                if limit == Some(sent) {
                    client
                        .send(PgWireBackendMessage::PortalSuspended(PortalSuspended::new()))
                        .await?;
                } else {
                    client
                        .feed(command_complete(format!("SELECT {sent}")))
                        .await?;
                }
                Ok(())
            }
            None => Err(wire_error(missing_portal(name))),
        }
    }

    async fn on_sync<C>(&self, client: &mut C, _message: PgSync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut state = self.state.lock().await;
        Self::ready_for_query(client, &mut state).await
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        _portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<pgwire::api::results::Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // `on_execute` runs portals itself.
        Err(wire_error(PgError::new("XX000", "unreachable: do_query")))
    }
}

#[async_trait]
impl<E: PgEngine> CopyHandler for Connection<E> {
    async fn on_copy_data<C>(&self, _client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut state = self.state.lock().await;
        let Some(sink) = state.copy_in.as_mut() else {
            return Ok(());
        };
        if let Err(error) = sink.write(copy_data.data).await {
            if let Some(sink) = state.copy_in.take() {
                sink.abort(error.message.clone()).await;
            }
            // An error ends the whole query string.
            state.after_copy.clear();
            return Err(wire_error(error));
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut state = self.state.lock().await;
        let Some(sink) = state.copy_in.take() else {
            // The COPY already failed; what the client still sends of it is dropped.
            return Ok(());
        };
        let result = sink.finish().await;
        let after = std::mem::take(&mut state.after_copy);
        if let Some(session) = state.session.as_mut() {
            Self::after_statement(client, session).await?;
        }
        let rows = result.map_err(wire_error)?;
        client
            .feed(command_complete(format!("COPY {rows}")))
            .await?;
        Self::end_of_transaction(&mut state);
        // The statements after the COPY; `pgwire` sends ReadyForQuery when they are done.
        Self::run_statements(client, &mut state, after, false).await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, _client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut state = self.state.lock().await;
        state.after_copy.clear();
        if let Some(sink) = state.copy_in.take() {
            sink.abort(fail.message.clone()).await;
        }
        wire_error(PgError::new(
            "57014",
            format!("COPY from stdin failed: {}", fail.message),
        ))
    }
}
