//! Connector errors, by whose fault they are.

use std::path::PathBuf;

use runnel_common::{RunnelError, SqlState};

/// Postgres's codes for a server-side file that cannot be read (as COPY FROM a file answers).
const UNDEFINED_FILE: SqlState = SqlState("58P01");
const IO_ERROR: SqlState = SqlState("58030");

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The user's options are wrong (unknown option, bad start position, ...).
    #[error("{0}")]
    Options(String),
    /// A file an option names (`sasl.password.file`) cannot be read on the server. The message
    /// names the option and the file, never its contents.
    #[error("{option} '{}': cannot read it: {source}", path.display())]
    SecretFile {
        option: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// librdkafka refused the client configuration (a certificate or key file it cannot load,
    /// a wrong key password): the user's options, not the broker.
    #[error("kafka: cannot create the client: {0}")]
    Client(String),
    /// The broker cannot be reached or refused a request.
    #[error("kafka: {0}")]
    Broker(String),
    /// A record could not be decoded (bad input, never a bug).
    #[error("{0}")]
    Decode(String),
    /// A bug in Runnel.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<rdkafka::error::KafkaError> for ConnectorError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        match e {
            rdkafka::error::KafkaError::ClientCreation(why) => ConnectorError::Client(why),
            e => ConnectorError::Broker(e.to_string()),
        }
    }
}

impl From<ConnectorError> for RunnelError {
    fn from(e: ConnectorError) -> Self {
        match e {
            ConnectorError::Options(m) => RunnelError::plan(SqlState::INVALID_PARAMETER_VALUE, m),
            ConnectorError::SecretFile {
                option,
                path,
                source,
            } => {
                let state = match source.kind() {
                    std::io::ErrorKind::NotFound => UNDEFINED_FILE,
                    std::io::ErrorKind::PermissionDenied => SqlState::INSUFFICIENT_PRIVILEGE,
                    _ => IO_ERROR,
                };
                let message = ConnectorError::SecretFile {
                    option,
                    path,
                    source,
                }
                .to_string();
                RunnelError::execution(state, message)
            }
            ConnectorError::Client(m) => RunnelError::plan(
                SqlState::INVALID_PARAMETER_VALUE,
                format!("kafka: cannot create the client: {m}"),
            ),
            ConnectorError::Broker(m) => {
                RunnelError::execution(SqlState::CONNECTION_EXCEPTION, format!("kafka: {m}"))
            }
            ConnectorError::Decode(m) => {
                RunnelError::execution(SqlState::INVALID_TEXT_REPRESENTATION, m)
            }
            ConnectorError::Internal(m) => RunnelError::internal(m),
        }
    }
}

pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;
