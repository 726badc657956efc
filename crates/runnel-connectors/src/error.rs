//! Connector errors, by whose fault they are.

use runnel_common::{RunnelError, SqlState};

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The user's options are wrong (unknown option, bad start position, ...).
    #[error("{0}")]
    Options(String),
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
        ConnectorError::Broker(e.to_string())
    }
}

impl From<ConnectorError> for RunnelError {
    fn from(e: ConnectorError) -> Self {
        match e {
            ConnectorError::Options(m) => RunnelError::plan(SqlState::INVALID_PARAMETER_VALUE, m),
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
