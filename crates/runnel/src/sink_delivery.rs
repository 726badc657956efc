//! Sink delivery: a thread per sink that sends the sink's outbox to its topic from the sink's
//! own position, so a sink whose broker is away never holds back a checkpoint.
//!
//! The dataflow's sink operator (`runnel_runtime::operators::SinkOp`) appends each
//! checkpoint's changes to the sink's outbox, a log in the store (`keys::log_entry(sink,
//! seq)`), in the same write as the checkpoint: every change a checkpoint covers is in the
//! outbox exactly once. This thread reads the outbox in order from its position, queues the
//! records in the producer, waits until the broker has acknowledged all of them, then stores
//! the next position and deletes the delivered entries (one write). While the broker is away
//! the records wait in the producer and the outbox grows on disk; the status says why.
//!
//! Delivery is at least once: a record is sent again only when the server stops after the
//! broker acknowledged it and before the position after it was stored (the entries of one
//! round, up to [`ROUND_ENTRIES`] checkpoints' worth), or when the broker refused it for good
//! (the round is sent again from its start).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use runnel_common::{ChangeBatch, Result, RunnelError};
use runnel_connectors::kafka::KafkaSink;
use runnel_plan::ObjectId;
use runnel_state::{ipc, keys, Store, WriteBatch};

/// Outbox entries (one per checkpoint with changes) sent before waiting for acknowledgements.
const ROUND_ENTRIES: usize = 64;
/// How long one wait for acknowledgements lasts before the status says the sink waits.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an empty outbox is looked at again.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// What SHOW SINKS and the metrics see of a delivery thread; dropping the sink stops it.
#[derive(Debug, Default)]
pub struct DeliveryHandle {
    stop: AtomicBool,
    /// `running`, or `waiting: <why>` while the broker has not acknowledged a round.
    state: Mutex<String>,
    /// Outbox entries committed but not yet delivered.
    backlog: AtomicU64,
}

impl DeliveryHandle {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub fn state(&self) -> String {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_state(&self, state: impl Into<String>) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state.into();
    }

    /// Checkpoints' changes in the outbox not yet acknowledged by the broker.
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }
}

/// The sequence number the sink operator gives its next outbox entry: after every entry still
/// there, and after every one delivered (those are deleted).
pub fn next_outbox_seq(store: &Store, sink: ObjectId) -> Result<u64> {
    let delivered = stored_position(store, sink)?;
    let prefix = keys::log_prefix(sink);
    let last = store
        .last_key_in_range(&prefix, &keys::prefix_end(&prefix))?
        .and_then(|key| keys::log_entry_seq(&key));
    Ok(last.map_or(delivered, |seq| delivered.max(seq + 1)))
}

fn stored_position(store: &Store, sink: ObjectId) -> Result<u64> {
    Ok(match store.get(&keys::position(sink))? {
        Some(bytes) => u64::from_le_bytes(
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| RunnelError::internal("stored sink position is not 8 bytes"))?,
        ),
        None => 0,
    })
}

/// Starts the delivery thread of `sink`, whose changes have the input's `schema`.
pub fn start(
    store: Arc<Store>,
    sink: ObjectId,
    name: &str,
    schema: SchemaRef,
    producer: KafkaSink,
) -> Result<Arc<DeliveryHandle>> {
    let handle = Arc::new(DeliveryHandle::default());
    handle.set_state("running");
    let position = stored_position(&store, sink)?;
    let mut task = Delivery {
        store,
        sink,
        name: name.to_string(),
        schema,
        producer,
        handle: handle.clone(),
        position,
        position_stored: true,
    };
    std::thread::Builder::new()
        .name(format!("runnel-sink-{name}"))
        .spawn(move || task.run())
        .map_err(|e| RunnelError::external(format!("cannot start sink thread: {e}")))?;
    Ok(handle)
}

struct Delivery {
    store: Arc<Store>,
    sink: ObjectId,
    name: String,
    schema: SchemaRef,
    producer: KafkaSink,
    handle: Arc<DeliveryHandle>,
    /// The first outbox entry not yet delivered.
    position: u64,
    /// Whether `position` is in the store (a full disk can leave it only in memory: the
    /// entries before it are then not sent again while the server runs).
    position_stored: bool,
}

impl Delivery {
    fn run(&mut self) {
        while !self.handle.stopped() {
            match self.round() {
                Ok(true) => {}
                Ok(false) => std::thread::sleep(IDLE_POLL),
                Err(e) => {
                    tracing::warn!(sink = %self.name, "sink delivery waits: {e}");
                    self.handle.set_state(format!("waiting: {e}"));
                    self.pause(Duration::from_secs(1));
                }
            }
        }
    }

    fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.handle.stopped() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends the next entries of the outbox and waits for the broker's acknowledgement.
    /// Returns whether there was anything to send.
    fn round(&mut self) -> Result<bool> {
        let prefix = keys::log_prefix(self.sink);
        let start = keys::log_entry(self.sink, self.position);
        let end = keys::prefix_end(&prefix);
        let mut entries: Vec<(u64, Vec<u8>)> = Vec::new();
        self.store.for_each_in_range(&start, &end, |key, value| {
            if let Some(seq) = keys::log_entry_seq(key) {
                entries.push((seq, value.to_vec()));
            }
            Ok(entries.len() < ROUND_ENTRIES)
        })?;
        let newest = self
            .store
            .last_key_in_range(&start, &end)?
            .and_then(|key| keys::log_entry_seq(&key));
        self.handle.backlog.store(
            newest.map_or(0, |n| n + 1 - self.position),
            Ordering::Relaxed,
        );
        if !self.position_stored {
            self.store_position();
        }
        let Some(&(last, _)) = entries.last() else {
            return Ok(false);
        };
        let status = self.producer.status();
        let failed_before = status.failed.load(Ordering::Relaxed);
        for (_, bytes) in &entries {
            let stored = ipc::decode_batch(bytes)?;
            let change = ChangeBatch::from_stored(&stored, self.schema.clone())?;
            self.producer.write(&change.data, &change.weights)?;
        }
        drop(entries);
        // Queued records are retried by the producer without a time limit: wait for them.
        loop {
            match self.producer.flush(FLUSH_TIMEOUT) {
                Ok(()) => break,
                Err(e) if status.failed.load(Ordering::Relaxed) > failed_before => {
                    // The broker refused records for good: send the round again.
                    return Err(e.into());
                }
                Err(e) => {
                    self.handle.set_state(format!("waiting: {e}"));
                    if self.handle.stopped() {
                        return Ok(true);
                    }
                }
            }
        }
        if self.handle.state() != "running" {
            tracing::info!(sink = %self.name, "sink delivers again");
            self.handle.set_state("running");
        }
        self.position = last + 1;
        self.position_stored = false;
        self.store_position();
        self.handle.backlog.store(
            newest.map_or(0, |n| (n + 1).saturating_sub(self.position)),
            Ordering::Relaxed,
        );
        Ok(true)
    }

    /// Stores the position and deletes what was delivered (one write). On failure (a full
    /// disk) the position stays in memory and is stored at the next round.
    fn store_position(&mut self) {
        if self.handle.stopped() {
            // The sink is being dropped: its keys are deleted, do not write new ones.
            return;
        }
        let mut batch = WriteBatch::default();
        batch.put(keys::position(self.sink), self.position.to_le_bytes());
        batch.delete_range(
            keys::log_entry(self.sink, 0),
            keys::log_entry(self.sink, self.position),
        );
        match self.store.write(batch) {
            Ok(()) => self.position_stored = true,
            Err(e) => tracing::warn!(sink = %self.name, "sink position not stored yet: {e}"),
        }
    }
}
