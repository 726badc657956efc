//! Reading a topic: every partition assigned at an explicit offset, records polled in chunks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::sync::Mutex;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};

use super::{client_config, LastFailure, BROKER_TIMEOUT};
use crate::error::{ConnectorError, Result};
use crate::options::{KafkaSecurity, StartPosition};

/// Keeps the high watermarks that fetch responses carry (librdkafka's statistics, once a
/// second), so progress reporting needs no extra broker requests: a ListOffsets request per
/// partition per second is costly on some brokers (Tansu's sqlite engine scans for it).
///
/// Also keeps the last failure librdkafka logged, to say why the broker cannot be reached.
#[derive(Default)]
pub struct ReaderContext {
    high_watermarks: Mutex<HashMap<i32, i64>>,
    failure: LastFailure,
}

impl ClientContext for ReaderContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.failure.log(level, facility, message);
    }

    fn stats(&self, statistics: Statistics) {
        let mut high = self
            .high_watermarks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for topic in statistics.topics.values() {
            for (&partition, p) in &topic.partitions {
                if partition >= 0 && p.hi_offset >= 0 {
                    high.insert(partition, p.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for ReaderContext {}

/// How long a consumer that failed to connect is polled, at most, for an error line that
/// says why.
const LOG_DRAIN: Duration = Duration::from_secs(1);

/// A consumer over all partitions of one topic.
pub struct TopicReader {
    consumer: BaseConsumer<ReaderContext>,
    topic: String,
    partitions: Vec<i32>,
}

/// One record, borrowed from the consumer.
pub type KafkaRecord<'a> = BorrowedMessage<'a>;

fn consumer_config(
    bootstrap: &str,
    security: &KafkaSecurity,
    client_id: &str,
) -> Result<ClientConfig> {
    let mut config = client_config(bootstrap, security)?;
    config
        .set("client.id", client_id)
        // Required by librdkafka even though Runnel only assigns partitions and never commits.
        .set("group.id", format!("runnel-{client_id}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // An assigned offset that the broker no longer holds: read what is left, in order.
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("queued.min.messages", "200000")
        .set("socket.keepalive.enable", "true")
        .set("reconnect.backoff.max.ms", "2000")
        .set("statistics.interval.ms", "1000");
    Ok(config)
}

impl TopicReader {
    /// Connects and reads the topic's partitions; fails if the broker is unreachable (saying
    /// why, when librdkafka logged it: a failed TLS handshake or SASL authentication), or the
    /// topic does not exist.
    pub fn connect(
        bootstrap: &str,
        security: &KafkaSecurity,
        topic: &str,
        client_id: &str,
    ) -> Result<TopicReader> {
        let consumer: BaseConsumer<ReaderContext> =
            consumer_config(bootstrap, security, client_id)?
                .create_with_context(ReaderContext::default())?;
        let metadata = match consumer.fetch_metadata(Some(topic), BROKER_TIMEOUT) {
            Ok(metadata) => metadata,
            Err(e) => {
                // librdkafka's log lines, which say why, wait in the client's queue until it is
                // polled (nothing is assigned: polling reads no record). An error line may come
                // just after the failure it explains.
                let until = Instant::now() + LOG_DRAIN;
                while !consumer.context().failure.has_error() {
                    let Some(left) = until.checked_duration_since(Instant::now()) else {
                        break;
                    };
                    consumer.poll(left.min(Duration::from_millis(20)));
                }
                return Err(consumer.context().failure.explain(e));
            }
        };
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Err(ConnectorError::Broker(format!("topic '{topic}' not found")));
        };
        if let Some(err) = t.error() {
            return Err(ConnectorError::Broker(format!(
                "topic '{topic}': {}",
                rdkafka::error::RDKafkaErrorCode::from(err)
            )));
        }
        let mut partitions: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        partitions.sort_unstable();
        if partitions.is_empty() {
            return Err(ConnectorError::Broker(format!(
                "topic '{topic}' has no partitions (does it exist?)"
            )));
        }
        Ok(TopicReader {
            consumer,
            topic: topic.to_string(),
            partitions,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// (low, high) watermarks of a partition, asked of the broker.
    pub fn watermarks(&self, partition: i32) -> Result<(i64, i64)> {
        Ok(self
            .consumer
            .fetch_watermarks(&self.topic, partition, BROKER_TIMEOUT)?)
    }

    /// The high watermark of a partition as of the last fetch response (no request).
    pub fn cached_high_watermark(&self, partition: i32) -> Option<i64> {
        self.consumer
            .context()
            .high_watermarks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&partition)
            .copied()
    }

    /// The next offset to read per partition for `start`.
    pub fn resolve(&self, start: &StartPosition) -> Result<BTreeMap<i32, i64>> {
        let mut out = BTreeMap::new();
        match start {
            StartPosition::Earliest => {
                // Offset 0 needs no request: where the broker no longer holds it, the consumer
                // resets to the first offset it does hold (`auto.offset.reset`).
                for &p in &self.partitions {
                    out.insert(p, 0);
                }
            }
            StartPosition::Latest => {
                for &p in &self.partitions {
                    out.insert(p, self.watermarks(p)?.1);
                }
            }
            StartPosition::Offsets(offsets) => {
                if let Some(p) = offsets.keys().find(|p| !self.partitions.contains(p)) {
                    return Err(ConnectorError::Options(format!(
                        "start names partition {p}, but topic '{}' has partitions {:?}",
                        self.topic, self.partitions
                    )));
                }
                for &p in &self.partitions {
                    let (low, high) = self.watermarks(p)?;
                    let offset = offsets.get(&p).copied().unwrap_or(low);
                    out.insert(p, offset.clamp(low, high));
                }
            }
            StartPosition::Timestamp(ms) => {
                let mut list = TopicPartitionList::new();
                for &p in &self.partitions {
                    list.add_partition_offset(&self.topic, p, Offset::Offset(*ms))?;
                }
                let found = self.consumer.offsets_for_times(list, BROKER_TIMEOUT)?;
                for &p in &self.partitions {
                    let high = self.watermarks(p)?.1;
                    let offset = match found.find_partition(&self.topic, p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) if o >= 0 && o < high => {
                            // Some brokers (Tansu) answer an early offset rather than "end"
                            // when every record is older than the time: check the record.
                            match self.timestamp_at(p, o)? {
                                Some(ts) if ts < *ms => high,
                                _ => o,
                            }
                        }
                        // No record at or after the time: start at the end.
                        _ => high,
                    };
                    out.insert(p, offset);
                }
            }
        }
        Ok(out)
    }

    /// The timestamp of the record at `offset` of `partition` (reads it with a throwaway
    /// assignment; used only while resolving a start position).
    fn timestamp_at(&self, partition: i32, offset: i64) -> Result<Option<i64>> {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.topic, partition, Offset::Offset(offset))?;
        self.consumer.assign(&list)?;
        let deadline = Instant::now() + BROKER_TIMEOUT;
        let found = loop {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) if m.partition() == partition && m.offset() >= offset => {
                    break m.timestamp().to_millis()
                }
                Some(Err(e)) => return Err(e.into()),
                _ if Instant::now() >= deadline => break None,
                _ => {}
            }
        };
        self.consumer.unassign()?;
        Ok(found)
    }

    /// Assigns every partition at its next offset.
    pub fn assign(&self, positions: &BTreeMap<i32, i64>) -> Result<()> {
        let mut list = TopicPartitionList::new();
        for (&p, &offset) in positions {
            list.add_partition_offset(&self.topic, p, Offset::Offset(offset))?;
        }
        self.consumer.assign(&list)?;
        Ok(())
    }

    /// Stops reading every partition.
    pub fn unassign(&self) -> Result<()> {
        self.consumer.unassign()?;
        Ok(())
    }

    /// Up to `max` records: waits at most `wait` for the first, then takes what is already
    /// fetched (and up to `linger` more) so chunks stay large under load. A transport error
    /// (broker down) comes back as `Err` after the records polled before it.
    pub fn poll_chunk(
        &self,
        max: usize,
        wait: Duration,
        linger: Duration,
    ) -> (Vec<KafkaRecord<'_>>, Option<ConnectorError>) {
        let mut out = Vec::new();
        let started = Instant::now();
        let mut first_at: Option<Instant> = None;
        while out.len() < max {
            let timeout = match first_at {
                None => wait.saturating_sub(started.elapsed()),
                Some(at) => linger.saturating_sub(at.elapsed()),
            };
            match self.consumer.poll(timeout) {
                Some(Ok(message)) => {
                    first_at.get_or_insert_with(Instant::now);
                    out.push(message);
                }
                Some(Err(e)) => return (out, Some(self.consumer.context().failure.explain(e))),
                None => break,
            }
        }
        (out, None)
    }
}

/// Resolves `start` for a topic with a short-lived consumer (views' start positions).
pub fn resolve_start(
    bootstrap: &str,
    security: &KafkaSecurity,
    topic: &str,
    start: &StartPosition,
) -> Result<BTreeMap<i32, i64>> {
    let reader = TopicReader::connect(bootstrap, security, topic, "runnel-resolve")?;
    reader.resolve(start)
}
