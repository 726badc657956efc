//! Shared vocabulary of every Runnel crate: the error type (by whose fault, with its SQLSTATE)
//! and the change batch, the unit of data that flows between operators.

pub mod change;
pub mod error;

pub use change::{ChangeBatch, KAFKA_OFFSET_COLUMN, KAFKA_PARTITION_COLUMN};
pub use error::{Result, RunnelError, SqlState};
