//! Errors of the state layer: the store failed, or stored bytes are not what they should be.

use runnel_common::{RunnelError, SqlState};

use crate::codec::CodecError;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("storage error: {0}")]
    Storage(#[from] rocksdb::Error),
    /// The data directory's disk has less free space than the reserve Runnel keeps (so that
    /// RocksDB never runs out in the middle of a write and a restart can replay its log): the
    /// write was not made. Nobody's bug: space must be freed.
    #[error(
        "could not write to {path}: disk full ({available_mb} MiB free, Runnel keeps \
         {reserve_mb} MiB in reserve); reads still work, writes resume once space is freed"
    )]
    DiskFull {
        path: String,
        available_mb: u64,
        reserve_mb: u64,
    },
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
            full @ StateError::DiskFull { .. } => {
                RunnelError::execution(SqlState::DISK_FULL, full.to_string())
            }
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
