//! Framing of the PostgreSQL v3 protocol: reading the startup packet and frontend messages from
//! the client, and encoding backend messages into a byte buffer.
//!
//! Reading keeps its own [`BytesMut`] buffer, so a message body (a whole CopyData payload
//! included) is handed out as a [`Bytes`] slice of what was read, without copying. Encoding
//! appends complete messages to a caller-owned [`BytesMut`]; the connection decides when that
//! buffer goes to the socket.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::engine::TransactionStatus;
use crate::error::PgError;

/// Request code of an SSLRequest packet.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// Request code of a GSSENCRequest packet.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// Request code of a CancelRequest packet.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// Largest startup packet accepted, as in Postgres (`MAX_STARTUP_PACKET_LENGTH`).
const MAX_STARTUP_LEN: usize = 10_000;
/// Largest regular message accepted, as in Postgres (`PQ_LARGE_MESSAGE_LIMIT`).
const MAX_MESSAGE_LEN: usize = 0x3fff_ffff;
/// How much to ask the socket for at least, so small messages are read in few syscalls.
const READ_CHUNK: usize = 8 * 1024;

/// Why a frontend message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The bytes are not a valid message: the connection cannot go on.
    #[error("{0}")]
    Protocol(String),
}

impl CodecError {
    fn protocol(message: impl Into<String>) -> Self {
        Self::Protocol(message.into())
    }
}

/// The first packet of a connection (it has no type byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupRequest {
    /// SSLRequest: answered with `N`, then the client sends another startup packet.
    Ssl,
    /// GSSENCRequest: answered with `N`, then the client sends another startup packet.
    GssEnc,
    /// CancelRequest for another connection. The key is 4 bytes in protocol 3.0 and up to 256
    /// in 3.2, so it is kept as bytes.
    Cancel { process_id: i32, secret_key: Bytes },
    /// StartupMessage with its protocol version and `name=value` parameters.
    Startup {
        major: u16,
        minor: u16,
        parameters: Vec<(String, String)>,
    },
}

/// Which object a Describe or Close message names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `S`: a prepared statement.
    Statement,
    /// `P`: a portal.
    Portal,
}

/// A message from the client after startup.
#[derive(Debug, Clone, PartialEq)]
pub enum FrontendMessage {
    /// `Q`: a simple-protocol query string.
    Query(String),
    /// `P`: prepare `query` as statement `name` (empty = unnamed).
    Parse {
        name: String,
        query: String,
        param_oids: Vec<u32>,
    },
    /// `B`: bind parameters to a statement, creating a portal.
    Bind {
        portal: String,
        statement: String,
        param_formats: Vec<i16>,
        /// Raw parameter values; `None` is NULL.
        params: Vec<Option<Bytes>>,
        result_formats: Vec<i16>,
    },
    /// `D`: describe a statement or a portal.
    Describe { target: Target, name: String },
    /// `E`: run a portal, returning at most `max_rows` rows (0 = all).
    Execute { portal: String, max_rows: i32 },
    /// `C`: close a statement or a portal.
    Close { target: Target, name: String },
    /// `S`
    Sync,
    /// `H`
    Flush,
    /// `X`
    Terminate,
    /// `d`
    CopyData(Bytes),
    /// `c`
    CopyDone,
    /// `f`: the client aborts a COPY with this message.
    CopyFail(String),
    /// A well-framed message of a type this server does not handle (FunctionCall,
    /// PasswordMessage outside authentication, ...).
    Unsupported(u8),
}

impl FrontendMessage {
    /// The message's type byte.
    pub fn tag(&self) -> u8 {
        match self {
            Self::Query(_) => b'Q',
            Self::Parse { .. } => b'P',
            Self::Bind { .. } => b'B',
            Self::Describe { .. } => b'D',
            Self::Execute { .. } => b'E',
            Self::Close { .. } => b'C',
            Self::Sync => b'S',
            Self::Flush => b'H',
            Self::Terminate => b'X',
            Self::CopyData(_) => b'd',
            Self::CopyDone => b'c',
            Self::CopyFail(_) => b'f',
            Self::Unsupported(tag) => *tag,
        }
    }

    /// Decodes the body of a message of type `tag`.
    pub fn decode(tag: u8, body: Bytes) -> Result<Self, CodecError> {
        let mut body = Body(body);
        let message = match tag {
            b'Q' => Self::Query(body.cstr()?),
            b'P' => {
                let name = body.cstr()?;
                let query = body.cstr()?;
                let count = body.count()?;
                let mut param_oids = Vec::with_capacity(count);
                for _ in 0..count {
                    param_oids.push(body.u32()?);
                }
                Self::Parse {
                    name,
                    query,
                    param_oids,
                }
            }
            b'B' => {
                let portal = body.cstr()?;
                let statement = body.cstr()?;
                let count = body.count()?;
                let mut param_formats = Vec::with_capacity(count);
                for _ in 0..count {
                    param_formats.push(body.i16()?);
                }
                let count = body.count()?;
                let mut params = Vec::with_capacity(count);
                for _ in 0..count {
                    let len = body.i32()?;
                    params.push(match usize::try_from(len) {
                        Ok(len) => Some(body.bytes(len)?),
                        Err(_) if len == -1 => None,
                        Err(_) => {
                            return Err(CodecError::protocol(format!(
                                "invalid parameter length {len} in Bind message"
                            )))
                        }
                    });
                }
                let count = body.count()?;
                let mut result_formats = Vec::with_capacity(count);
                for _ in 0..count {
                    result_formats.push(body.i16()?);
                }
                Self::Bind {
                    portal,
                    statement,
                    param_formats,
                    params,
                    result_formats,
                }
            }
            b'D' => Self::Describe {
                target: body.target()?,
                name: body.cstr()?,
            },
            b'E' => Self::Execute {
                portal: body.cstr()?,
                max_rows: body.i32()?,
            },
            b'C' => Self::Close {
                target: body.target()?,
                name: body.cstr()?,
            },
            b'S' => Self::Sync,
            b'H' => Self::Flush,
            b'X' => Self::Terminate,
            b'd' => return Ok(Self::CopyData(body.0)),
            b'c' => Self::CopyDone,
            b'f' => Self::CopyFail(body.cstr()?),
            other => return Ok(Self::Unsupported(other)),
        };
        body.finish(tag)?;
        Ok(message)
    }
}

/// A cursor over a message body whose reads fail with a protocol error instead of panicking.
struct Body(Bytes);

impl Body {
    fn need(&self, n: usize) -> Result<(), CodecError> {
        if self.0.remaining() < n {
            return Err(CodecError::protocol("message too short for its contents"));
        }
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }

    fn i16(&mut self) -> Result<i16, CodecError> {
        self.need(2)?;
        Ok(self.0.get_i16())
    }

    fn i32(&mut self) -> Result<i32, CodecError> {
        self.need(4)?;
        Ok(self.0.get_i32())
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        self.need(4)?;
        Ok(self.0.get_u32())
    }

    /// An Int16 element count, which must not be negative.
    fn count(&mut self) -> Result<usize, CodecError> {
        let n = self.i16()?;
        usize::try_from(n).map_err(|_| CodecError::protocol(format!("negative count {n}")))
    }

    fn bytes(&mut self, n: usize) -> Result<Bytes, CodecError> {
        self.need(n)?;
        Ok(self.0.split_to(n))
    }

    fn cstr(&mut self) -> Result<String, CodecError> {
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| CodecError::protocol("unterminated string in message"))?;
        let raw = self.0.split_to(end);
        self.0.advance(1);
        String::from_utf8(raw.to_vec())
            .map_err(|_| CodecError::protocol("invalid UTF-8 in message string"))
    }

    fn target(&mut self) -> Result<Target, CodecError> {
        match self.u8()? {
            b'S' => Ok(Target::Statement),
            b'P' => Ok(Target::Portal),
            other => Err(CodecError::protocol(format!(
                "invalid describe/close target {:?}",
                char::from(other)
            ))),
        }
    }

    fn finish(&self, tag: u8) -> Result<(), CodecError> {
        if self.0.has_remaining() {
            return Err(CodecError::protocol(format!(
                "invalid message format: {} trailing bytes in message {:?}",
                self.0.remaining(),
                char::from(tag)
            )));
        }
        Ok(())
    }
}

/// Reads startup packets and frontend messages from a byte stream, buffering what it reads.
#[derive(Debug, Default)]
pub struct MessageReader {
    buf: BytesMut,
}

impl MessageReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads until at least `n` bytes are buffered. Returns `false` on end of stream with
    /// nothing buffered (a clean close); end of stream inside a message is an error.
    async fn fill<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        n: usize,
    ) -> std::io::Result<bool> {
        while self.buf.len() < n {
            self.buf.reserve((n - self.buf.len()).max(READ_CHUNK));
            if reader.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(false);
                }
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(true)
    }

    /// Reads the untyped first packet of a connection. `None` when the client closed first.
    pub async fn read_startup<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> Result<Option<StartupRequest>, CodecError> {
        if !self.fill(reader, 4).await? {
            return Ok(None);
        }
        let len = usize::try_from(i32::from_be_bytes([
            self.buf[0],
            self.buf[1],
            self.buf[2],
            self.buf[3],
        ]))
        .unwrap_or(0);
        if !(8..=MAX_STARTUP_LEN).contains(&len) {
            return Err(CodecError::protocol(format!(
                "invalid length of startup packet: {len}"
            )));
        }
        self.fill(reader, len).await?;
        let mut body = self.buf.split_to(len).freeze();
        body.advance(4);
        let code = body.get_i32();
        match code {
            SSL_REQUEST_CODE => Ok(Some(StartupRequest::Ssl)),
            GSSENC_REQUEST_CODE => Ok(Some(StartupRequest::GssEnc)),
            CANCEL_REQUEST_CODE => {
                let mut body = Body(body);
                let process_id = body.i32()?;
                Ok(Some(StartupRequest::Cancel {
                    process_id,
                    secret_key: body.0,
                }))
            }
            _ => {
                let major = u16::try_from(code >> 16).unwrap_or(0);
                let minor = (code & 0xffff) as u16;
                let mut body = Body(body);
                let mut parameters = Vec::new();
                loop {
                    let name = body.cstr()?;
                    if name.is_empty() {
                        break;
                    }
                    let value = body.cstr()?;
                    parameters.push((name, value));
                }
                body.finish(b'0')?;
                Ok(Some(StartupRequest::Startup {
                    major,
                    minor,
                    parameters,
                }))
            }
        }
    }

    /// Reads one typed message. `None` when the client closed the connection between messages.
    pub async fn read_message<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> Result<Option<FrontendMessage>, CodecError> {
        if !self.fill(reader, 5).await? {
            return Ok(None);
        }
        let tag = self.buf[0];
        let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        let len = match usize::try_from(len) {
            Ok(len) if (4..=MAX_MESSAGE_LEN).contains(&len) => len,
            _ => {
                return Err(CodecError::protocol(format!(
                    "invalid message length {len} for message type {:?}",
                    char::from(tag)
                )))
            }
        };
        self.fill(reader, 1 + len).await?;
        let mut frame = self.buf.split_to(1 + len);
        frame.advance(5);
        FrontendMessage::decode(tag, frame.freeze()).map(Some)
    }
}

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDescription {
    pub name: String,
    pub table_oid: u32,
    pub column_id: i16,
    pub type_oid: u32,
    pub typlen: i16,
    pub typmod: i32,
    /// 0 = text, 1 = binary.
    pub format: i16,
}

/// Starts a message of type `tag`; returns where it starts, for [`end_message`].
pub(crate) fn begin_message(buf: &mut BytesMut, tag: u8) -> usize {
    let start = buf.len();
    buf.put_u8(tag);
    buf.put_i32(0);
    start
}

/// Writes the length of the message begun at `start`.
///
/// DataRow sizes are checked against the protocol's limit before they are encoded, and every
/// other message is built from short strings, so a length beyond `i32` is a bug.
pub(crate) fn end_message(buf: &mut BytesMut, start: usize) {
    let len = i32::try_from(buf.len() - start - 1)
        .expect("backend message longer than 2 GiB: DataRow sizes are checked before encoding");
    buf[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

fn put_message(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    let start = begin_message(buf, tag);
    body(buf);
    end_message(buf, start);
}

/// Appends `s` as a C string; NUL bytes (which a C string cannot hold) are dropped.
fn put_cstr(buf: &mut BytesMut, s: &str) {
    buf.extend(s.bytes().filter(|&b| b != 0));
    buf.put_u8(0);
}

/// Appends a count that the protocol carries as Int16. Counts here are columns or parameters,
/// which Postgres limits to 1664 and 65535, so saturating is only a guard.
fn put_count(buf: &mut BytesMut, n: usize) {
    buf.put_u16(u16::try_from(n).unwrap_or(u16::MAX));
}

/// `R` AuthenticationOk.
pub fn authentication_ok(buf: &mut BytesMut) {
    put_message(buf, b'R', |b| b.put_i32(0));
}

/// `S` ParameterStatus.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    put_message(buf, b'S', |b| {
        put_cstr(b, name);
        put_cstr(b, value);
    });
}

/// `K` BackendKeyData.
pub fn backend_key_data(buf: &mut BytesMut, process_id: i32, secret_key: i32) {
    put_message(buf, b'K', |b| {
        b.put_i32(process_id);
        b.put_i32(secret_key);
    });
}

/// `v` NegotiateProtocolVersion: the newest minor version supported and the protocol options
/// (`_pq_.*` startup parameters) not recognized.
pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: u16, unrecognized: &[&str]) {
    put_message(buf, b'v', |b| {
        b.put_i32(i32::from(minor) | (3 << 16));
        b.put_i32(i32::try_from(unrecognized.len()).unwrap_or(i32::MAX));
        for option in unrecognized {
            put_cstr(b, option);
        }
    });
}

/// `Z` ReadyForQuery.
pub fn ready_for_query(buf: &mut BytesMut, status: TransactionStatus) {
    let status = match status {
        TransactionStatus::Idle => b'I',
        TransactionStatus::InTransaction => b'T',
        TransactionStatus::Failed => b'E',
    };
    put_message(buf, b'Z', |b| b.put_u8(status));
}

/// `T` RowDescription.
pub fn row_description(buf: &mut BytesMut, fields: &[FieldDescription]) {
    put_message(buf, b'T', |b| {
        put_count(b, fields.len());
        for field in fields {
            put_cstr(b, &field.name);
            b.put_u32(field.table_oid);
            b.put_i16(field.column_id);
            b.put_u32(field.type_oid);
            b.put_i16(field.typlen);
            b.put_i32(field.typmod);
            b.put_i16(field.format);
        }
    });
}

/// `t` ParameterDescription.
pub fn parameter_description(buf: &mut BytesMut, oids: &[u32]) {
    put_message(buf, b't', |b| {
        put_count(b, oids.len());
        for &oid in oids {
            b.put_u32(oid);
        }
    });
}

/// `C` CommandComplete.
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    put_message(buf, b'C', |b| put_cstr(b, tag));
}

/// `I` EmptyQueryResponse.
pub fn empty_query_response(buf: &mut BytesMut) {
    put_message(buf, b'I', |_| {});
}

/// `1` ParseComplete.
pub fn parse_complete(buf: &mut BytesMut) {
    put_message(buf, b'1', |_| {});
}

/// `2` BindComplete.
pub fn bind_complete(buf: &mut BytesMut) {
    put_message(buf, b'2', |_| {});
}

/// `3` CloseComplete.
pub fn close_complete(buf: &mut BytesMut) {
    put_message(buf, b'3', |_| {});
}

/// `n` NoData.
pub fn no_data(buf: &mut BytesMut) {
    put_message(buf, b'n', |_| {});
}

/// `s` PortalSuspended.
pub fn portal_suspended(buf: &mut BytesMut) {
    put_message(buf, b's', |_| {});
}

/// `G` CopyInResponse: overall text format with `columns` text columns.
pub fn copy_in_response(buf: &mut BytesMut, columns: usize) {
    put_message(buf, b'G', |b| {
        b.put_i8(0);
        put_count(b, columns);
        for _ in 0..columns {
            b.put_i16(0);
        }
    });
}

/// `H` CopyOutResponse: `columns` columns, all in text (`binary` false) or binary format.
pub fn copy_out_response(buf: &mut BytesMut, columns: usize, binary: bool) {
    let code = i16::from(binary);
    put_message(buf, b'H', |b| {
        b.put_i8(i8::from(binary));
        put_count(b, columns);
        for _ in 0..columns {
            b.put_i16(code);
        }
    });
}

/// `d` CopyData with `data`.
pub fn copy_data(buf: &mut BytesMut, data: &[u8]) {
    put_message(buf, b'd', |b| b.extend_from_slice(data));
}

/// `c` CopyDone.
pub fn copy_done(buf: &mut BytesMut) {
    put_message(buf, b'c', |_| {});
}

/// `E` ErrorResponse with every field of `error` that is present.
pub fn error_response(buf: &mut BytesMut, error: &PgError) {
    put_message(buf, b'E', |b| {
        let mut field = |code: u8, value: &str| {
            b.put_u8(code);
            put_cstr(b, value);
        };
        field(b'S', error.severity);
        field(b'V', error.severity);
        field(b'C', &error.sqlstate);
        field(b'M', &error.message);
        if let Some(detail) = &error.detail {
            field(b'D', detail);
        }
        if let Some(hint) = &error.hint {
            field(b'H', hint);
        }
        if let Some(position) = error.position {
            field(b'P', &position.to_string());
        }
        b.put_u8(0);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(i32::try_from(body.len() + 4).unwrap_or(0)).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[tokio::test]
    async fn reads_startup_and_messages() {
        let mut input = Vec::new();
        input.extend_from_slice(&8i32.to_be_bytes());
        input.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
        let params = b"user\0alice\0database\0db\0\0";
        input.extend_from_slice(&(i32::try_from(8 + params.len()).unwrap_or(0)).to_be_bytes());
        input.extend_from_slice(&0x0003_0000i32.to_be_bytes());
        input.extend_from_slice(params);
        input.extend(frame(b'Q', b"select 1\0"));
        input.extend(frame(b'E', b"p\0\0\0\0\x05"));
        input.extend(frame(b'd', b"1\n2\n"));

        let mut reader = MessageReader::new();
        let mut stream = &input[..];
        assert_eq!(
            reader.read_startup(&mut stream).await.ok().flatten(),
            Some(StartupRequest::Ssl)
        );
        assert_eq!(
            reader.read_startup(&mut stream).await.ok().flatten(),
            Some(StartupRequest::Startup {
                major: 3,
                minor: 0,
                parameters: vec![
                    ("user".into(), "alice".into()),
                    ("database".into(), "db".into())
                ],
            })
        );
        assert_eq!(
            reader.read_message(&mut stream).await.ok().flatten(),
            Some(FrontendMessage::Query("select 1".into()))
        );
        assert_eq!(
            reader.read_message(&mut stream).await.ok().flatten(),
            Some(FrontendMessage::Execute {
                portal: "p".into(),
                max_rows: 5
            })
        );
        assert_eq!(
            reader.read_message(&mut stream).await.ok().flatten(),
            Some(FrontendMessage::CopyData(Bytes::from_static(b"1\n2\n")))
        );
        assert!(matches!(reader.read_message(&mut stream).await, Ok(None)));
    }

    #[tokio::test]
    async fn rejects_malformed_messages() {
        let input = frame(b'D', b"Xname\0");
        let mut stream = &input[..];
        let result = MessageReader::new().read_message(&mut stream).await;
        assert!(matches!(result, Err(CodecError::Protocol(_))));

        let input = frame(b'Q', b"select 1\0extra");
        let mut stream = &input[..];
        let result = MessageReader::new().read_message(&mut stream).await;
        assert!(matches!(result, Err(CodecError::Protocol(_))));

        let mut input = vec![b'Q'];
        input.extend_from_slice(&2i32.to_be_bytes());
        let mut stream = &input[..];
        let result = MessageReader::new().read_message(&mut stream).await;
        assert!(matches!(result, Err(CodecError::Protocol(_))));
    }

    #[test]
    fn encodes_error_response() {
        let mut buf = BytesMut::new();
        let mut error = PgError::new("42601", "syntax error");
        error.position = Some(7);
        error_response(&mut buf, &error);
        let expected = b"E\0\0\0\x2bSERROR\0VERROR\0C42601\0Msyntax error\0P7\0\0";
        assert_eq!(&buf[..], &expected[..]);
    }
}
