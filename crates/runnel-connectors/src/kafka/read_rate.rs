//! The broker's ceiling for the Kafka benchmark: a plain librdkafka consumer (the same bundled
//! librdkafka Runnel uses, no decoding, no state) reading every partition of a topic from its
//! earliest offset to its high watermark as fast as it can. Run as
//! `runnel kafka-read-rate BOOTSTRAP TOPIC` (`benches/kafka_backfill.py` does).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::message::Message;

use super::TopicReader;
use crate::error::{ConnectorError, Result};
use crate::options::{KafkaSecurity, StartPosition};

/// What a full read of a topic took.
#[derive(Debug, Clone, Copy)]
pub struct ReadRate {
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// Reads `topic` from the earliest offsets to the high watermarks seen at the start (over a
/// plaintext connection: the benchmark broker has no TLS or SASL).
pub fn measure_read_rate(bootstrap: &str, topic: &str) -> Result<ReadRate> {
    let reader = TopicReader::connect(
        bootstrap,
        &KafkaSecurity::default(),
        topic,
        "runnel-read-rate",
    )?;
    let ends: BTreeMap<i32, i64> = reader.resolve(&StartPosition::Latest)?;
    let starts = reader.resolve(&StartPosition::Earliest)?;
    reader.assign(&starts)?;
    let started = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut next = starts.clone();
    while next.iter().any(|(p, o)| *o < ends[p]) {
        let (chunk, error) =
            reader.poll_chunk(16_384, Duration::from_secs(30), Duration::from_millis(20));
        if let Some(e) = error {
            return Err(e);
        }
        if chunk.is_empty() {
            return Err(ConnectorError::Broker(
                "no records for 30 seconds before reaching the high watermarks".into(),
            ));
        }
        for m in &chunk {
            records += 1;
            bytes += m.payload().map_or(0, <[u8]>::len) as u64;
            let o = next.entry(m.partition()).or_insert(0);
            *o = (*o).max(m.offset() + 1);
        }
    }
    Ok(ReadRate {
        records,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}
