//! The Kafka transport (librdkafka through the `rdkafka` crate, bundled build).
//!
//! Runnel never joins consumer groups: it assigns every partition of a topic explicitly at
//! offsets it stores itself, in the same atomic write as the data read (see the server's
//! ingest loop). That is what makes replay and recovery exactly once.

mod read_rate;
mod reader;
mod sink;

pub use read_rate::{measure_read_rate, ReadRate};
pub use reader::{resolve_start, KafkaRecord, TopicReader};
pub use sink::{send_waiting, DeliveryStatus, KafkaSink};

use std::time::Duration;

/// How long a metadata or watermark request may take before the broker counts as unreachable.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(5);
