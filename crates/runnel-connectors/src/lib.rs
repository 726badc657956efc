//! Connectors: how Runnel reads from and writes to systems outside it.
//!
//! - [`options`]: the `WITH (connector = 'kafka', ...)` options of streams, tables, views and
//!   sinks, parsed and checked once into typed values (TLS/SASL settings included, their
//!   secrets redacted wherever they are printed).
//! - [`formats`]: record formats (JSON, CSV) decoded into Arrow batches, one bad record at a
//!   time isolated from the good ones, and JSON encoding of change batches for sinks.
//! - [`kafka`]: the Kafka transport: a reader over every partition of a topic from explicit
//!   positions, start-position resolution against the broker, and a sink producer.
//!
//! Transports are kept apart from formats. Nothing here touches Runnel's state store: the
//! server commits what a reader returns together with the offsets it reached.

pub mod error;
pub mod formats;
pub mod kafka;
pub mod nexmark;
pub mod options;

pub use error::ConnectorError;
pub use nexmark::{NexmarkGenerator, NexmarkOptions, NexmarkTable};
pub use options::{
    Format, KafkaOptions, KafkaSecurity, OnError, SinkMode, SinkOptions, StartPosition,
};
