//! The server side of a connection: startup, the simple and extended query protocols and
//! `COPY ... FROM STDIN`, driving a [`PgSession`] opened from a [`PgEngine`].
//!
//! Output is encoded into a byte buffer, passed to a [`BufWriter`] after each message (or each
//! batch of DataRows) and flushed to the socket only where the client waits for an answer:
//! ReadyForQuery, CopyInResponse, Flush and PortalSuspended.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::codec::StartupRequest;
use crate::codec::{self, CodecError, FieldDescription, FrontendMessage, MessageReader, Target};
use crate::engine::{
    CopyInSink, ParamValue, PgEngine, PgSession, QueryResponse, StartupInfo, StatementDescription,
    TransactionStatus,
};
use crate::error::PgError;
use crate::types::{decode_param, pg_type, Format, RowEncoder};

/// Accepts connections on `listener` forever, serving each on its own task.
///
/// Errors of `accept` (a connection reset before it was accepted, running out of file
/// descriptors) are logged and retried after a short pause, so this only returns if the task is
/// dropped.
pub async fn serve<E: PgEngine>(listener: TcpListener, engine: Arc<E>) -> std::io::Result<()> {
    let cancellations = Cancellations::default();
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(error) = socket.set_nodelay(true) {
            debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        let engine = Arc::clone(&engine);
        let cancellations = cancellations.clone();
        tokio::spawn(async move {
            debug!(%peer, "connection opened");
            match serve_with_cancellations(socket, engine, cancellations).await {
                Ok(()) => debug!(%peer, "connection closed"),
                Err(error) => debug!(%peer, %error, "connection lost"),
            }
        });
    }
}

/// Serves one client connection until it terminates or the socket fails.
///
/// Engine errors are reported to the client and the connection goes on; a protocol violation
/// is reported as a FATAL error (SQLSTATE 08P01) and closes the connection. The result is an
/// error only when the socket itself failed.
pub async fn serve_connection<E, S>(socket: S, engine: Arc<E>) -> std::io::Result<()>
where
    E: PgEngine,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    serve_with_cancellations(socket, engine, Cancellations::default()).await
}

/// The statements running on every connection of one listener, by process id, so that a
/// CancelRequest (which arrives on a connection of its own) can stop one.
#[derive(Debug, Clone, Default)]
struct Cancellations {
    running: Arc<std::sync::Mutex<RunningConnections>>,
}

/// Process id -> (secret key, what wakes the connection's running statement).
type RunningConnections = HashMap<i32, (i32, Arc<Notify>)>;

impl Cancellations {
    fn running(&self) -> std::sync::MutexGuard<'_, RunningConnections> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection's process id and secret key, and what wakes it on a cancel.
    fn register(&self) -> (i32, i32, Arc<Notify>) {
        let notify = Arc::new(Notify::new());
        let mut running = self.running();
        loop {
            let process_id = rand::random_range(1..=i32::MAX);
            if running.contains_key(&process_id) {
                continue;
            }
            let secret = rand::random::<i32>();
            running.insert(process_id, (secret, notify.clone()));
            return (process_id, secret, notify);
        }
    }

    fn remove(&self, process_id: i32) {
        self.running().remove(&process_id);
    }

    /// Stops the statement running on `process_id`, if the key matches. Only a statement
    /// running now is woken (a cancel of an idle connection does nothing, as in Postgres).
    fn cancel(&self, process_id: i32, secret: &[u8]) {
        let running = self.running();
        if let Some((expected, notify)) = running.get(&process_id) {
            if secret == expected.to_be_bytes() {
                notify.notify_waiters();
            }
        }
    }
}

async fn serve_with_cancellations<E, S>(
    socket: S,
    engine: Arc<E>,
    cancellations: Cancellations,
) -> std::io::Result<()>
where
    E: PgEngine,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut stream = BufWriter::new(socket);
    let mut reader = MessageReader::new();
    let mut out = BytesMut::with_capacity(8 * 1024);

    let startup = match read_startup(&mut stream, &mut reader, &mut out, &cancellations).await {
        Ok(Some(startup)) => startup,
        Ok(None) => return Ok(()),
        Err(failure) => return finish_early(&mut stream, &mut out, failure).await,
    };
    let (process_id, secret, cancel) = cancellations.register();
    let startup = StartupInfo {
        process_id,
        ..startup
    };
    let result = serve_session(stream, reader, out, engine, startup, secret, cancel).await;
    cancellations.remove(process_id);
    result
}

async fn serve_session<E, S>(
    mut stream: BufWriter<S>,
    reader: MessageReader,
    mut out: BytesMut,
    engine: Arc<E>,
    startup: StartupInfo,
    secret: i32,
    cancel: Arc<Notify>,
) -> std::io::Result<()>
where
    E: PgEngine,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let process_id = startup.process_id;
    let mut session = match engine.open_session(&startup).await {
        Ok(session) => session,
        Err(error) => {
            return finish_early(&mut stream, &mut out, Failure::Fatal(error.fatal())).await
        }
    };
    debug!(user = %startup.user, database = %startup.database, "session opened");

    codec::authentication_ok(&mut out);
    let reported = session.take_parameter_changes();
    if reported.is_empty() {
        // An engine that keeps no parameters of its own: Postgres's defaults.
        let application_name = startup
            .parameters
            .iter()
            .find(|(name, _)| name == "application_name")
            .map_or("", |(_, value)| value.as_str());
        for (name, value) in [
            ("server_version", "15.0"),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("TimeZone", "UTC"),
            ("IntervalStyle", "postgres"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
            ("application_name", application_name),
        ] {
            codec::parameter_status(&mut out, name, value);
        }
    }
    for (name, value) in &reported {
        codec::parameter_status(&mut out, name, value);
    }
    codec::backend_key_data(&mut out, process_id, secret);

    let mut connection = Connection {
        stream,
        reader,
        out,
        session,
        statements: HashMap::new(),
        portals: HashMap::new(),
        encoder: RowEncoder::default(),
        skip_until_sync: false,
        cancel,
    };
    connection.run().await
}

/// Reads the startup packet, answering SSL and GSS encryption requests with `N` (not
/// supported). `None` when the client closed or sent a CancelRequest (which this server does
/// not act on).
async fn read_startup<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufWriter<S>,
    reader: &mut MessageReader,
    out: &mut BytesMut,
    cancellations: &Cancellations,
) -> Result<Option<StartupInfo>, Failure> {
    loop {
        match reader.read_startup(stream).await? {
            None => return Ok(None),
            Some(StartupRequest::Ssl | StartupRequest::GssEnc) => {
                stream.write_all(b"N").await?;
                stream.flush().await?;
            }
            Some(StartupRequest::Cancel {
                process_id,
                secret_key,
            }) => {
                debug!(process_id, "cancel request");
                cancellations.cancel(process_id, &secret_key);
                return Ok(None);
            }
            Some(StartupRequest::Startup {
                major,
                minor,
                parameters,
            }) => {
                if major != 3 {
                    return Err(Failure::Fatal(
                        PgError::new(
                            "0A000",
                            format!(
                                "unsupported frontend protocol {major}.{minor}: server supports \
                                 3.0 to 3.0"
                            ),
                        )
                        .fatal(),
                    ));
                }
                let unrecognized: Vec<&str> = parameters
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .filter(|name| name.starts_with("_pq_."))
                    .collect();
                if minor > 0 || !unrecognized.is_empty() {
                    codec::negotiate_protocol_version(out, 0, &unrecognized);
                }
                let lookup = |key: &str| {
                    parameters
                        .iter()
                        .find(|(name, _)| name == key)
                        .map(|(_, value)| value.clone())
                };
                let user = lookup("user").unwrap_or_default();
                let database = lookup("database").unwrap_or_else(|| user.clone());
                return Ok(Some(StartupInfo {
                    user,
                    database,
                    parameters,
                    process_id: 0,
                }));
            }
        }
    }
}

/// Reports a failure that happened before the session existed, then ends the connection.
async fn finish_early<S: AsyncWrite + Unpin>(
    stream: &mut BufWriter<S>,
    out: &mut BytesMut,
    failure: Failure,
) -> std::io::Result<()> {
    match failure {
        Failure::Io(error) => Err(error),
        Failure::Closed => Ok(()),
        Failure::Query(error) | Failure::Fatal(error) => {
            debug!(%error, "connection refused");
            codec::error_response(out, &error);
            stream.write_all(out).await?;
            stream.flush().await
        }
    }
}

/// Why handling a message stopped.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// An error of the statement: reported, and the connection goes on.
    #[error(transparent)]
    Query(#[from] PgError),
    /// Reported, then the connection is closed.
    #[error("{0}")]
    Fatal(PgError),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The client said Terminate, or went away.
    #[error("the client closed the connection")]
    Closed,
}

impl From<CodecError> for Failure {
    fn from(error: CodecError) -> Self {
        match error {
            CodecError::Io(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                Self::Closed
            }
            CodecError::Io(error) => Self::Io(error),
            CodecError::Protocol(message) => Self::Fatal(PgError::protocol(message).fatal()),
        }
    }
}

/// A statement prepared with Parse.
struct Prepared<T> {
    statement: Arc<T>,
    description: StatementDescription,
}

/// A statement with its parameters bound, ready to Execute.
struct Portal<T> {
    statement: Arc<T>,
    params: Vec<ParamValue>,
    description: StatementDescription,
    /// Result format codes as Bind sent them.
    result_formats: Vec<i16>,
    /// Type OIDs of the columns announced by Describe, to check the result against.
    described: Option<Vec<u32>>,
    state: PortalState,
    /// A cursor of `DECLARE` (not a protocol-level portal).
    declared: bool,
    /// A cursor declared `WITH HOLD`: it outlives its transaction.
    held: bool,
}

enum PortalState {
    /// Not executed yet.
    Ready,
    /// Rows produced, possibly some already sent.
    Rows(RowCursor),
    /// A command that ran to completion; it cannot run again.
    Done,
    /// An empty query: every Execute answers EmptyQueryResponse.
    Empty,
}

/// A result set being sent, possibly over several Executes.
struct RowCursor {
    batches: Vec<RecordBatch>,
    batch: usize,
    row: usize,
    formats: Vec<Format>,
}

struct Connection<S, P: PgSession> {
    stream: BufWriter<S>,
    reader: MessageReader,
    /// Encoded messages not yet handed to `stream`.
    out: BytesMut,
    session: P,
    statements: HashMap<String, Prepared<P::Statement>>,
    portals: HashMap<String, Portal<P::Statement>>,
    encoder: RowEncoder,
    /// After an error in the extended protocol, messages are discarded until Sync.
    skip_until_sync: bool,
    /// Woken by a CancelRequest for this connection.
    cancel: Arc<Notify>,
}

impl<S, P> Connection<S, P>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    P: PgSession,
{
    async fn run(&mut self) -> std::io::Result<()> {
        self.ready_for_query().await?;
        loop {
            let message = match self.read().await {
                Ok(Some(message)) => message,
                Ok(None) | Err(Failure::Closed) => return Ok(()),
                Err(Failure::Io(error)) => return Err(error),
                Err(Failure::Fatal(error) | Failure::Query(error)) => {
                    return self.fatal(&error).await;
                }
            };
            if self.skip_until_sync
                && !matches!(message, FrontendMessage::Sync | FrontendMessage::Terminate)
            {
                continue;
            }
            match self.dispatch(message).await {
                Ok(()) => self.send().await?,
                Err(Failure::Query(error)) => {
                    // Simple queries report their own errors, so this one is from an
                    // extended-protocol message.
                    // Sent at once, as Postgres does: a client that sent Parse + Describe +
                    // Flush waits for this answer and sends Sync only after it.
                    debug!(%error, "statement failed");
                    codec::error_response(&mut self.out, &error);
                    self.flush().await?;
                    self.skip_until_sync = true;
                }
                Err(Failure::Fatal(error)) => return self.fatal(&error).await,
                Err(Failure::Closed) => return self.stream.flush().await,
                Err(Failure::Io(error)) => return Err(error),
            }
        }
    }

    /// Runs a statement, stopping it with 57014 when a CancelRequest for this connection
    /// arrives or the session's statement timeout passes (for the statements the session
    /// says may stop half-way).
    async fn execute_statement(
        &mut self,
        statement: &P::Statement,
        params: &[ParamValue],
    ) -> Result<QueryResponse, PgError> {
        if !self.session.is_cancellable(statement) {
            return self.session.execute(statement, params).await;
        }
        let timeout = self.session.statement_timeout();
        let cancel = self.cancel.clone();
        let cancelled = cancel.notified();
        let timed_out = async {
            match timeout {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            response = self.session.execute(statement, params) => response,
            () = cancelled => Err(PgError::new("57014", "canceling statement due to user request")),
            () = timed_out => Err(PgError::new("57014", "canceling statement due to statement timeout")),
        }
    }

    /// ParameterStatus for every reported parameter the last statement changed.
    fn report_parameter_changes(&mut self) {
        for (name, value) in self.session.take_parameter_changes() {
            codec::parameter_status(&mut self.out, &name, &value);
        }
    }

    async fn fatal(&mut self, error: &PgError) -> std::io::Result<()> {
        warn!(%error, "closing connection");
        codec::error_response(&mut self.out, error);
        self.flush().await
    }

    async fn read(&mut self) -> Result<Option<FrontendMessage>, Failure> {
        Ok(self.reader.read_message(&mut self.stream).await?)
    }

    /// Hands the encoded messages to the buffered writer.
    async fn send(&mut self) -> Result<(), std::io::Error> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Sends everything encoded so far to the client.
    async fn flush(&mut self) -> Result<(), std::io::Error> {
        self.send().await?;
        self.stream.flush().await
    }

    async fn ready_for_query(&mut self) -> Result<(), std::io::Error> {
        codec::ready_for_query(&mut self.out, self.session.transaction_status());
        self.flush().await
    }

    async fn dispatch(&mut self, message: FrontendMessage) -> Result<(), Failure> {
        match message {
            FrontendMessage::Query(sql) => self.simple_query(&sql).await,
            FrontendMessage::Parse {
                name,
                query,
                param_oids,
            } => self.parse(name, &query, &param_oids).await,
            FrontendMessage::Bind {
                portal,
                statement,
                param_formats,
                params,
                result_formats,
            } => self.bind(portal, &statement, &param_formats, &params, result_formats),
            FrontendMessage::Describe { target, name } => self.describe(target, &name),
            FrontendMessage::Execute { portal, max_rows } => self.execute(portal, max_rows).await,
            FrontendMessage::Close { target, name } => {
                // Closing something that does not exist is not an error.
                match target {
                    Target::Statement => drop(self.statements.remove(&name)),
                    Target::Portal => drop(self.portals.remove(&name)),
                }
                codec::close_complete(&mut self.out);
                Ok(())
            }
            FrontendMessage::Sync => {
                self.skip_until_sync = false;
                if self.session.transaction_status() == TransactionStatus::Idle {
                    // The implicit transaction ended, and portals live only as long as their
                    // transaction (but for cursors declared WITH HOLD).
                    self.portals.retain(|_, portal| portal.held);
                }
                Ok(self.ready_for_query().await?)
            }
            FrontendMessage::Flush => Ok(self.flush().await?),
            FrontendMessage::Terminate => Err(Failure::Closed),
            // What a client still sends of a COPY that already failed is dropped.
            FrontendMessage::CopyData(_)
            | FrontendMessage::CopyDone
            | FrontendMessage::CopyFail(_) => Ok(()),
            FrontendMessage::Unsupported(tag) => Err(Failure::Fatal(
                PgError::protocol(format!("invalid frontend message type {tag}")).fatal(),
            )),
        }
    }

    async fn simple_query(&mut self, sql: &str) -> Result<(), Failure> {
        debug!(sql, "simple query");
        // As in Postgres, a simple query replaces the unnamed statement and portal.
        self.statements.remove("");
        self.portals.remove("");
        match self.run_simple_query(sql).await {
            Ok(()) => {}
            Err(Failure::Query(error)) => {
                debug!(%error, "statement failed");
                codec::error_response(&mut self.out, &error);
            }
            Err(other) => return Err(other),
        }
        Ok(self.ready_for_query().await?)
    }

    async fn run_simple_query(&mut self, sql: &str) -> Result<(), Failure> {
        let statements = self.session.parse_simple(sql)?;
        if statements.is_empty() {
            codec::empty_query_response(&mut self.out);
            return Ok(());
        }
        for statement in statements {
            let response = self.execute_statement(&statement, &[]).await;
            self.report_parameter_changes();
            match response? {
                QueryResponse::Rows { schema, batches } => {
                    let formats = vec![Format::Text; schema.fields().len()];
                    codec::row_description(&mut self.out, &field_descriptions(&schema, &formats));
                    let mut cursor = RowCursor {
                        batches,
                        batch: 0,
                        row: 0,
                        formats,
                    };
                    let (sent, _) = self.send_rows(&mut cursor, None).await?;
                    codec::command_complete(&mut self.out, &format!("SELECT {sent}"));
                }
                QueryResponse::Command { tag } => codec::command_complete(&mut self.out, &tag),
                QueryResponse::Empty => codec::empty_query_response(&mut self.out),
                QueryResponse::CopyIn { columns, sink } => self.copy_in(columns, sink).await?,
                QueryResponse::CopyOut {
                    columns,
                    format,
                    batches,
                } => self.copy_out(&columns, format, &batches).await?,
                cursor => self.cursor_command(cursor, &statement, None).await?,
            }
            self.end_of_transaction_cursors();
            self.send().await?;
        }
        Ok(())
    }

    async fn parse(
        &mut self,
        name: String,
        query: &str,
        param_oids: &[u32],
    ) -> Result<(), Failure> {
        debug!(name, query, "parse");
        if name.is_empty() {
            self.statements.remove("");
        } else if self.statements.contains_key(&name) {
            return Err(PgError::new(
                "42P05",
                format!("prepared statement \"{name}\" already exists"),
            )
            .into());
        }
        let (statement, description) = self.session.prepare(query, param_oids).await?;
        self.statements.insert(
            name,
            Prepared {
                statement,
                description,
            },
        );
        codec::parse_complete(&mut self.out);
        Ok(())
    }

    fn bind(
        &mut self,
        portal: String,
        statement: &str,
        param_formats: &[i16],
        params: &[Option<bytes::Bytes>],
        result_formats: Vec<i16>,
    ) -> Result<(), Failure> {
        let prepared = self
            .statements
            .get(statement)
            .ok_or_else(|| missing_statement(statement))?;
        if !portal.is_empty() && self.portals.contains_key(&portal) {
            return Err(
                PgError::new("42P03", format!("portal \"{portal}\" already exists")).into(),
            );
        }
        let oids = &prepared.description.param_oids;
        if params.len() != oids.len() {
            return Err(PgError::protocol(format!(
                "bind message supplies {} parameters, but prepared statement \"{statement}\" \
                 requires {}",
                params.len(),
                oids.len()
            ))
            .into());
        }
        let formats = resolve_formats(param_formats, params.len(), |count| {
            PgError::protocol(format!(
                "bind message has {count} parameter formats but {} parameters",
                params.len()
            ))
        })?;
        let params = params
            .iter()
            .zip(oids)
            .zip(formats)
            .enumerate()
            .map(|(index, ((raw, &oid), format))| {
                decode_param(index + 1, oid, format, raw.as_deref())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let columns = prepared
            .description
            .fields
            .as_ref()
            .map_or(0, |schema| schema.fields().len());
        resolve_formats(&result_formats, columns, |count| {
            PgError::protocol(format!(
                "bind message has {count} result formats but query has {columns} columns"
            ))
        })?;
        let bound = Portal {
            statement: Arc::clone(&prepared.statement),
            params,
            description: prepared.description.clone(),
            result_formats,
            described: None,
            state: PortalState::Ready,
            declared: false,
            held: false,
        };
        self.portals.insert(portal, bound);
        codec::bind_complete(&mut self.out);
        Ok(())
    }

    fn describe(&mut self, target: Target, name: &str) -> Result<(), Failure> {
        match target {
            Target::Statement => {
                let prepared = self
                    .statements
                    .get(name)
                    .ok_or_else(|| missing_statement(name))?;
                // A parameter whose type nobody knows is described as `text`, as Postgres
                // does: clients cannot bind a parameter of type 0.
                let oids: Vec<u32> = prepared
                    .description
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
                codec::parameter_description(&mut self.out, &oids);
                match &prepared.description.fields {
                    Some(schema) => {
                        let formats = vec![Format::Text; schema.fields().len()];
                        codec::row_description(
                            &mut self.out,
                            &field_descriptions(schema, &formats),
                        );
                    }
                    None => codec::no_data(&mut self.out),
                }
            }
            Target::Portal => {
                let portal = self
                    .portals
                    .get_mut(name)
                    .ok_or_else(|| missing_portal(name))?;
                match &portal.description.fields {
                    Some(schema) => {
                        let formats =
                            resolve_formats(&portal.result_formats, schema.fields().len(), |_| {
                                PgError::protocol("result formats do not match the columns")
                            })?;
                        let fields = field_descriptions(schema, &formats);
                        portal.described = Some(fields.iter().map(|f| f.type_oid).collect());
                        codec::row_description(&mut self.out, &fields);
                    }
                    None => codec::no_data(&mut self.out),
                }
            }
        }
        Ok(())
    }

    async fn execute(&mut self, name: String, max_rows: i32) -> Result<(), Failure> {
        let mut portal = self
            .portals
            .remove(&name)
            .ok_or_else(|| missing_portal(&name))?;
        let result = self.run_portal(&name, &mut portal, max_rows).await;
        // A portal whose execution failed is gone, as in Postgres.
        if result.is_ok() {
            self.portals.insert(name, portal);
        }
        result
    }

    async fn run_portal(
        &mut self,
        name: &str,
        portal: &mut Portal<P::Statement>,
        max_rows: i32,
    ) -> Result<(), Failure> {
        if let PortalState::Ready = portal.state {
            debug!(portal = name, "execute");
            let response = self
                .execute_statement(&portal.statement, &portal.params)
                .await;
            self.report_parameter_changes();
            match response? {
                QueryResponse::Rows { schema, batches } => {
                    let columns = schema.fields().len();
                    let formats = resolve_formats(&portal.result_formats, columns, |count| {
                        PgError::new(
                            "XX000",
                            format!(
                                "bind message has {count} result formats but the result has \
                                 {columns} columns"
                            ),
                        )
                    })?;
                    if let Some(described) = &portal.described {
                        let actual = schema.fields().iter().map(|f| pg_type(f.data_type()).oid);
                        if !actual.eq(described.iter().copied()) {
                            return Err(PgError::new(
                                "XX000",
                                "the result's columns differ from the statement's description",
                            )
                            .into());
                        }
                    }
                    portal.state = PortalState::Rows(RowCursor {
                        batches,
                        batch: 0,
                        row: 0,
                        formats,
                    });
                }
                QueryResponse::Command { tag } => {
                    codec::command_complete(&mut self.out, &tag);
                    portal.state = PortalState::Done;
                    return Ok(());
                }
                QueryResponse::Empty => portal.state = PortalState::Empty,
                QueryResponse::CopyIn { columns, sink } => {
                    portal.state = PortalState::Done;
                    return self.copy_in(columns, sink).await;
                }
                QueryResponse::CopyOut {
                    columns,
                    format,
                    batches,
                } => {
                    portal.state = PortalState::Done;
                    return self.copy_out(&columns, format, &batches).await;
                }
                cursor => {
                    portal.state = PortalState::Done;
                    let formats = portal.result_formats.clone();
                    let statement = Arc::clone(&portal.statement);
                    let result = self
                        .cursor_command(cursor, &statement, Some(&formats))
                        .await;
                    self.end_of_transaction_cursors();
                    return result;
                }
            }
        }
        match &mut portal.state {
            PortalState::Rows(cursor) => {
                let limit = usize::try_from(max_rows).ok().filter(|&n| n > 0);
                let (sent, suspended) = self.send_rows(cursor, limit).await?;
                if suspended {
                    codec::portal_suspended(&mut self.out);
                    self.flush().await?;
                } else {
                    codec::command_complete(&mut self.out, &format!("SELECT {sent}"));
                }
                Ok(())
            }
            PortalState::Empty => {
                codec::empty_query_response(&mut self.out);
                Ok(())
            }
            PortalState::Done | PortalState::Ready => {
                Err(PgError::new("55000", format!("portal \"{name}\" cannot be run")).into())
            }
        }
    }

    /// Sends DataRows from `cursor`, at most `limit` of them. Returns how many were sent and
    /// whether the limit stopped them.
    async fn send_rows(
        &mut self,
        cursor: &mut RowCursor,
        limit: Option<usize>,
    ) -> Result<(u64, bool), Failure> {
        let mut sent = 0usize;
        while let Some(batch) = cursor.batches.get(cursor.batch) {
            let available = batch.num_rows() - cursor.row;
            if available == 0 {
                cursor.batch += 1;
                cursor.row = 0;
                continue;
            }
            let take = limit.map_or(available, |limit| available.min(limit - sent));
            if take == 0 {
                break;
            }
            if take == batch.num_rows() {
                self.encoder.encode(batch, &cursor.formats)?;
            } else {
                self.encoder
                    .encode(&batch.slice(cursor.row, take), &cursor.formats)?;
            }
            self.encoder.write_data_rows(&mut self.out)?;
            self.send().await?;
            cursor.row += take;
            sent += take;
        }
        let suspended = limit.is_some_and(|limit| sent == limit);
        Ok((u64::try_from(sent).unwrap_or(u64::MAX), suspended))
    }

    /// Cursors declared without HOLD end with their transaction.
    fn end_of_transaction_cursors(&mut self) {
        if self.session.transaction_status() == TransactionStatus::Idle {
            self.portals
                .retain(|_, portal| portal.held || !portal.declared);
        }
    }

    /// DECLARE, FETCH and CLOSE of a cursor, which lives here as a portal. `result_formats`
    /// are the Bind's result formats of an extended-protocol FETCH (`None`: the simple
    /// protocol, which also sends a RowDescription).
    async fn cursor_command(
        &mut self,
        response: QueryResponse,
        statement: &Arc<P::Statement>,
        result_formats: Option<&[i16]>,
    ) -> Result<(), Failure> {
        match response {
            QueryResponse::DeclareCursor {
                name,
                schema,
                batches,
                hold,
            } => {
                if self.portals.contains_key(&name) {
                    return Err(
                        PgError::new("42P03", format!("cursor \"{name}\" already exists")).into(),
                    );
                }
                let columns = schema.fields().len();
                self.portals.insert(
                    name,
                    Portal {
                        statement: Arc::clone(statement),
                        params: Vec::new(),
                        description: StatementDescription {
                            param_oids: Vec::new(),
                            fields: Some(schema),
                        },
                        result_formats: Vec::new(),
                        described: None,
                        state: PortalState::Rows(RowCursor {
                            batches,
                            batch: 0,
                            row: 0,
                            formats: vec![Format::Text; columns],
                        }),
                        declared: true,
                        held: hold,
                    },
                );
                codec::command_complete(&mut self.out, "DECLARE CURSOR");
            }
            QueryResponse::Fetch { name, count } => {
                let mut portal = self.portals.remove(&name).ok_or_else(|| {
                    PgError::new("34000", format!("cursor \"{name}\" does not exist"))
                })?;
                let result = self.fetch(&mut portal, count, result_formats).await;
                self.portals.insert(name, portal);
                result?;
            }
            QueryResponse::CloseCursor { name: Some(name) } => {
                if self.portals.remove(&name).is_none() {
                    return Err(
                        PgError::new("34000", format!("cursor \"{name}\" does not exist")).into(),
                    );
                }
                codec::command_complete(&mut self.out, "CLOSE CURSOR");
            }
            QueryResponse::CloseCursor { name: None } => {
                self.portals.retain(|name, _| name.is_empty());
                codec::command_complete(&mut self.out, "CLOSE CURSOR ALL");
            }
            _ => {
                return Err(PgError::new("XX000", "not a cursor command").into());
            }
        }
        Ok(())
    }

    /// Sends the next `count` rows (all when `None`) of a cursor, then `FETCH n`.
    async fn fetch(
        &mut self,
        portal: &mut Portal<P::Statement>,
        count: Option<u64>,
        result_formats: Option<&[i16]>,
    ) -> Result<(), Failure> {
        let PortalState::Rows(cursor) = &mut portal.state else {
            return Err(PgError::new("55000", "the cursor has no rows to fetch").into());
        };
        let columns = cursor.formats.len();
        match result_formats {
            Some(codes) => {
                cursor.formats = resolve_formats(codes, columns, |n| {
                    PgError::protocol(format!(
                        "bind message has {n} result formats but the cursor has {columns} columns"
                    ))
                })?;
            }
            None => {
                cursor.formats = vec![Format::Text; columns];
                if let Some(schema) = &portal.description.fields {
                    codec::row_description(
                        &mut self.out,
                        &field_descriptions(schema, &cursor.formats),
                    );
                }
            }
        }
        let limit = count.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        let (sent, _) = if limit == Some(0) {
            (0, false)
        } else {
            self.send_rows(cursor, limit).await?
        };
        codec::command_complete(&mut self.out, &format!("FETCH {sent}"));
        Ok(())
    }

    /// Runs COPY TO STDOUT: CopyOutResponse, a CopyData per row (the binary header goes with
    /// the first, a CSV header line in its own), CopyDone and `COPY <n>`.
    async fn copy_out(
        &mut self,
        columns: &[String],
        format: crate::copy_format::CopyOutFormat,
        batches: &[RecordBatch],
    ) -> Result<(), Failure> {
        let mut encoder = crate::copy_format::CopyEncoder::new(format);
        codec::copy_out_response(&mut self.out, columns.len(), encoder.binary());
        let names: Vec<&str> = columns.iter().map(String::as_str).collect();
        let mut data = Vec::new();
        encoder.start(&names, &mut data);
        // A CSV header is a line of its own; the binary header prefixes the first row.
        if !data.is_empty() && !encoder.binary() {
            codec::copy_data(&mut self.out, &data);
            data.clear();
        }
        let mut row_ends = Vec::new();
        let mut rows = 0u64;
        for batch in batches {
            // A slice at a time, so the encoded rows stay small.
            let mut offset = 0;
            while offset < batch.num_rows() {
                let take = (batch.num_rows() - offset).min(1024);
                row_ends.clear();
                encoder.write(&batch.slice(offset, take), &mut data, &mut row_ends)?;
                let mut start = 0;
                for &end in &row_ends {
                    codec::copy_data(&mut self.out, &data[start..end]);
                    start = end;
                }
                data.clear();
                self.send().await?;
                offset += take;
            }
            rows += batch.num_rows() as u64;
        }
        encoder.finish(&mut data);
        if !data.is_empty() {
            codec::copy_data(&mut self.out, &data);
        }
        codec::copy_done(&mut self.out);
        codec::command_complete(&mut self.out, &format!("COPY {rows}"));
        Ok(())
    }

    /// Runs COPY FROM STDIN: CopyInResponse, then CopyData into `sink` until CopyDone or
    /// CopyFail.
    async fn copy_in(
        &mut self,
        columns: usize,
        mut sink: Box<dyn CopyInSink>,
    ) -> Result<(), Failure> {
        codec::copy_in_response(&mut self.out, columns);
        self.flush().await?;
        loop {
            let message = match self.read().await {
                Ok(Some(message)) => message,
                Ok(None) => {
                    sink.abort("connection closed during COPY".into()).await;
                    return Err(Failure::Closed);
                }
                Err(failure) => {
                    sink.abort("connection failed during COPY".into()).await;
                    return Err(failure);
                }
            };
            match message {
                FrontendMessage::CopyData(data) => {
                    if let Err(error) = sink.write(data).await {
                        sink.abort(error.message.clone()).await;
                        return Err(error.into());
                    }
                }
                FrontendMessage::CopyDone => {
                    let rows = sink.finish().await?;
                    codec::command_complete(&mut self.out, &format!("COPY {rows}"));
                    return Ok(());
                }
                FrontendMessage::CopyFail(message) => {
                    sink.abort(message.clone()).await;
                    return Err(PgError::new(
                        "57014",
                        format!("COPY from stdin failed: {message}"),
                    )
                    .into());
                }
                // Postgres ignores these during COPY, which lets clients send Sync right after
                // Execute.
                FrontendMessage::Flush | FrontendMessage::Sync => {}
                FrontendMessage::Terminate => {
                    sink.abort("client terminated the connection during COPY".into())
                        .await;
                    return Err(Failure::Closed);
                }
                other => {
                    sink.abort("unexpected message during COPY".into()).await;
                    return Err(PgError::protocol(format!(
                        "unexpected message type 0x{:02X} during COPY from stdin",
                        other.tag()
                    ))
                    .into());
                }
            }
        }
    }
}

fn missing_statement(name: &str) -> PgError {
    if name.is_empty() {
        PgError::new("26000", "unnamed prepared statement does not exist")
    } else {
        PgError::new(
            "26000",
            format!("prepared statement \"{name}\" does not exist"),
        )
    }
}

fn missing_portal(name: &str) -> PgError {
    PgError::new("34000", format!("portal \"{name}\" does not exist"))
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

/// RowDescription fields for `schema` sent in `formats`.
fn field_descriptions(schema: &Schema, formats: &[Format]) -> Vec<FieldDescription> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(index, field)| {
            let pg = pg_type(field.data_type());
            FieldDescription {
                name: field.name().clone(),
                table_oid: 0,
                column_id: 0,
                type_oid: pg.oid,
                typlen: pg.typlen,
                typmod: pg.typmod,
                format: formats.get(index).copied().unwrap_or_default().code(),
            }
        })
        .collect()
}
