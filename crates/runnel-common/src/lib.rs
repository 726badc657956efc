//! Shared vocabulary of every Runnel crate: the error type (by whose fault, with its SQLSTATE)
//! the change batch, the unit of data that flows between operators, and event time (watermark
//! definitions and the clock that enforces them), and the exact float sum aggregates keep.

pub mod change;
pub mod date_text;
pub mod error;
pub mod exact_float_sum;
pub mod integer_average;
pub mod integer_text;
pub mod interval_text;
pub mod retention;
pub mod text_types;
pub mod time;

pub use change::{ChangeBatch, KAFKA_OFFSET_COLUMN, KAFKA_PARTITION_COLUMN};
pub use error::{Result, RunnelError, SqlState};
pub use retention::Retention;
pub use text_types::TextType;
pub use time::{WatermarkClock, WatermarkDef};
