//! Writing a view's changes to a topic as JSON records (see [`SinkMode`]).
//!
//! Delivery is at least once: records are queued in librdkafka, retried without a time
//! limit, and [`KafkaSink::flush`] returns only when every queued record is acknowledged. The
//! server flushes before each checkpoint, so a change the checkpoint covers has reached the
//! broker; after a crash, changes after the checkpoint are computed and sent again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::{client_config, LastFailure, BROKER_TIMEOUT};
use crate::error::{ConnectorError, Result};
use crate::formats::json_encode::{rows_as_json, with_field};
use crate::options::{SinkMode, SinkOptions};

/// Delivery counters of one sink, shared with progress reporting.
#[derive(Debug, Default)]
pub struct DeliveryStatus {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

struct SinkContext {
    status: Arc<DeliveryStatus>,
    failure: LastFailure,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.failure.log(level, facility, message);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.status.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.status.failed.fetch_add(1, Ordering::Relaxed);
                *self
                    .status
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            }
        }
    }
}

/// Queues `record`, waiting while librdkafka's queue is full (the producer's own thread
/// drains it) rather than dropping or failing the record.
pub fn send_waiting<C: ProducerContext>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'_, [u8], [u8], C::DeliveryOpaque>,
) -> Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                std::thread::sleep(Duration::from_millis(5));
                record = back;
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

pub struct KafkaSink {
    producer: ThreadedProducer<SinkContext>,
    topic: String,
    mode: SinkMode,
    /// Columns that form the record key in upsert mode.
    key_columns: Vec<usize>,
    status: Arc<DeliveryStatus>,
    /// `failed` as of the last flush, to tell new failures from old ones.
    failed_seen: u64,
}

impl KafkaSink {
    /// Creates the producer (reading the SASL password file, if any, now); with
    /// `check_topic`, first checks that the topic exists (a new sink), else trusts it and lets
    /// records queue while the broker is away (a restart).
    pub fn connect(
        options: &SinkOptions,
        key_columns: Vec<usize>,
        client_id: &str,
        check_topic: bool,
    ) -> Result<Self> {
        let status = Arc::new(DeliveryStatus::default());
        let producer: ThreadedProducer<SinkContext> =
            client_config(&options.bootstrap_servers, &options.security)?
                .set("client.id", client_id)
                .set("acks", "all")
                // Retry until delivered: a record given up on would break at-least-once.
                .set("message.timeout.ms", "0")
                .set("linger.ms", "5")
                .set("queue.buffering.max.messages", "1000000")
                .create_with_context(SinkContext {
                    status: status.clone(),
                    failure: LastFailure::default(),
                })?;
        let found = !check_topic || {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&options.topic), BROKER_TIMEOUT)
                .map_err(|e| {
                    // The producer's own thread serves librdkafka's log lines (the reason)
                    // every 100 ms: give it a moment to serve an error line.
                    let context = producer.context();
                    for _ in 0..50 {
                        if context.failure.has_error() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    context.failure.explain(e)
                })?;
            metadata.topics().iter().any(|t| {
                t.name() == options.topic && t.error().is_none() && !t.partitions().is_empty()
            })
        };
        if !found {
            return Err(ConnectorError::Broker(format!(
                "sink topic '{}' not found",
                options.topic
            )));
        }
        Ok(KafkaSink {
            producer,
            topic: options.topic.clone(),
            mode: options.mode,
            key_columns,
            status,
            failed_seen: 0,
        })
    }

    pub fn status(&self) -> Arc<DeliveryStatus> {
        self.status.clone()
    }

    /// Queues the records for one change batch (`weights` per row of `data`).
    pub fn write(&mut self, data: &RecordBatch, weights: &Int64Array) -> Result<()> {
        if data.num_rows() == 0 {
            return Ok(());
        }
        let values = rows_as_json(data)?;
        match self.mode {
            SinkMode::Append => {
                for (row, value) in values.iter().enumerate() {
                    let w = weights.value(row);
                    let op = if w > 0 { "insert" } else { "delete" };
                    let record = with_field(value, "_op", op);
                    for _ in 0..w.unsigned_abs() {
                        self.send(None, Some(&record))?;
                    }
                }
            }
            SinkMode::Upsert => {
                let key_batch = data
                    .project(&self.key_columns)
                    .map_err(|e| ConnectorError::Internal(e.to_string()))?;
                let keys = rows_as_json(&key_batch)?;
                // Per key, the net weight of each distinct row: an update (-old +new) leaves
                // the new row positive; a key left with no positive row is deleted.
                let mut order: Vec<&[u8]> = Vec::new();
                let mut net: HashMap<&[u8], Vec<(&[u8], i64)>> = HashMap::new();
                for (row, (key, value)) in keys.iter().zip(&values).enumerate() {
                    let entry = net.entry(key.as_slice()).or_insert_with(|| {
                        order.push(key.as_slice());
                        Vec::new()
                    });
                    let w = weights.value(row);
                    match entry.iter_mut().find(|(v, _)| *v == value.as_slice()) {
                        Some((_, total)) => *total += w,
                        None => entry.push((value.as_slice(), w)),
                    }
                }
                for key in order {
                    let rows = &net[key];
                    if rows.iter().all(|(_, w)| *w == 0) {
                        continue;
                    }
                    let latest = rows.iter().rev().find(|(_, w)| *w > 0).map(|(v, _)| *v);
                    self.send(Some(key), latest)?;
                }
            }
        }
        Ok(())
    }

    fn send(&self, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<()> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        send_waiting(&self.producer, record)
    }

    /// Waits until every queued record is acknowledged (or `timeout` passes, or a delivery
    /// failed since the last flush: both are errors and the caller must not checkpoint).
    pub fn flush(&mut self, timeout: Duration) -> Result<()> {
        self.producer.flush(timeout)?;
        let failed = self.status.failed.load(Ordering::Relaxed);
        if failed > self.failed_seen {
            self.failed_seen = failed;
            let why = self
                .status
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_default();
            return Err(ConnectorError::Broker(format!(
                "records to '{}' could not be delivered: {why}",
                self.topic
            )));
        }
        Ok(())
    }
}
