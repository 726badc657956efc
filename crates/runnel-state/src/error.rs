//! Errors of the state layer: the store failed, or stored bytes are not what they should be.

use runnel_common::RunnelError;

use crate::codec::CodecError;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("storage error: {0}")]
    Storage(#[from] rocksdb::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("corrupt state: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

impl From<StateError> for RunnelError {
    fn from(err: StateError) -> Self {
        match err {
            StateError::Storage(e) => RunnelError::External(format!("storage error: {e}")),
            StateError::Codec(CodecError::UnsupportedType(t)) => RunnelError::NotImplemented(
                format!("columns of type {t} cannot be stored or used as keys yet"),
            ),
            other => RunnelError::Internal(other.to_string()),
        }
    }
}

impl From<CodecError> for RunnelError {
    fn from(err: CodecError) -> Self {
        StateError::Codec(err).into()
    }
}
