//! What the server runs beside the dataflow, by object id: the source threads (Kafka readers
//! and Nexmark generators) and the sinks. SHOW PROGRESS and SHOW SINKS read it, DROP stops
//! what it names, and writes check it (a Kafka table or a generated stream takes no INSERT).
//! Starting a source is its ingest module's; this registry only keeps what is running.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use runnel_common::{Result, RunnelError};
use runnel_connectors::kafka::DeliveryStatus;
use runnel_connectors::{KafkaOptions, SinkMode};
use runnel_plan::ObjectId;

/// Progress of one partition.
#[derive(Debug, Clone, Default)]
pub struct PartitionProgress {
    /// Next offset to read: every record before it is committed.
    pub offset: i64,
    /// The high watermark, as last seen.
    pub end_offset: Option<i64>,
    /// Where the current catch-up started and where it ends (the end offset seen when
    /// reading started); `None` when there was nothing to catch up on.
    pub backfill: Option<(i64, i64)>,
    /// Records read from the partition and committed since the server started.
    pub records: u64,
}

/// What `SHOW PROGRESS` shows of one source.
#[derive(Debug, Clone, Default)]
pub struct IngestProgress {
    pub partitions: BTreeMap<i32, PartitionProgress>,
    pub errors: u64,
    pub last_error: Option<String>,
    pub status: String,
    pub events_per_sec: f64,
    /// A Kafka source's rate per reader thread (each reads a share of the partitions);
    /// `events_per_sec` is their sum.
    pub reader_rates: BTreeMap<usize, f64>,
}

/// Where a source thread's rows come from.
#[derive(Debug, Clone)]
pub enum SourceOrigin {
    /// Boxed: Kafka options, TLS/SASL settings included, dwarf the other variant.
    Kafka(Box<KafkaOptions>),
    Generator,
}

/// What a source thread shares with the registry.
#[derive(Clone)]
pub struct SourceHandle {
    /// Set to ask the thread to stop after its current write.
    pub stop: Arc<AtomicBool>,
    pub progress: Arc<Mutex<IngestProgress>>,
}

impl SourceHandle {
    pub fn new(status: &str) -> SourceHandle {
        SourceHandle {
            stop: Arc::new(AtomicBool::new(false)),
            progress: Arc::new(Mutex::new(IngestProgress {
                status: status.to_string(),
                ..Default::default()
            })),
        }
    }
}

struct SourceThread {
    handle: SourceHandle,
    /// A Kafka source has one thread per share of its partitions (`kafka_ingest`).
    joins: Vec<JoinHandle<()>>,
    origin: SourceOrigin,
}

/// The body of one source thread.
pub type SourceRun = Box<dyn FnOnce() + Send + 'static>;

/// The running source threads.
#[derive(Default)]
pub struct SourceThreads {
    running: Mutex<HashMap<ObjectId, SourceThread>>,
}

impl SourceThreads {
    /// Spawns `run` as the thread `thread_name` and records it as `id`'s source.
    pub fn spawn(
        &self,
        id: ObjectId,
        thread_name: String,
        origin: SourceOrigin,
        handle: SourceHandle,
        run: impl FnOnce() + Send + 'static,
    ) -> Result<()> {
        self.spawn_all(id, vec![(thread_name, Box::new(run))], origin, handle)
    }

    /// Spawns each of `runs` as a thread of its name, all recorded as `id`'s source (stopped
    /// and waited for together). If one cannot start, those started are stopped again.
    pub fn spawn_all(
        &self,
        id: ObjectId,
        runs: Vec<(String, SourceRun)>,
        origin: SourceOrigin,
        handle: SourceHandle,
    ) -> Result<()> {
        let mut joins = Vec::with_capacity(runs.len());
        for (thread_name, run) in runs {
            match std::thread::Builder::new().name(thread_name).spawn(run) {
                Ok(join) => joins.push(join),
                Err(e) => {
                    handle.stop.store(true, Ordering::SeqCst);
                    for join in joins {
                        let _ = join.join();
                    }
                    return Err(RunnelError::external(format!(
                        "cannot start a source thread: {e}"
                    )));
                }
            }
        }
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                SourceThread {
                    handle,
                    joins,
                    origin,
                },
            );
        Ok(())
    }

    /// Stops a source's threads and waits for them (each one's last write is complete or not
    /// begun).
    pub fn stop(&self, id: ObjectId) {
        let thread = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(mut thread) = thread {
            thread.handle.stop.store(true, Ordering::SeqCst);
            for join in thread.joins.drain(..) {
                let _ = join.join();
            }
        }
    }

    /// Every running source's progress, by id.
    pub fn progress(&self) -> Vec<(ObjectId, IngestProgress)> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(ObjectId, IngestProgress)> = running
            .iter()
            .map(|(id, t)| {
                let progress = t.handle.progress.lock().unwrap_or_else(|p| p.into_inner());
                (*id, progress.clone())
            })
            .collect();
        out.sort_by_key(|(id, _)| *id);
        out
    }

    /// Where a running source reads from; `None` when `id` has no source thread.
    pub fn origin(&self, id: ObjectId) -> Option<SourceOrigin> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map(|t| t.origin.clone())
    }

    /// The Kafka options of a source that is being ingested.
    pub fn kafka_options(&self, id: ObjectId) -> Option<KafkaOptions> {
        match self.origin(id)? {
            SourceOrigin::Kafka(options) => Some(*options),
            SourceOrigin::Generator => None,
        }
    }

    pub fn is_generated(&self, id: ObjectId) -> bool {
        matches!(self.origin(id), Some(SourceOrigin::Generator))
    }
}

/// What SHOW SINKS shows of a sink.
#[derive(Debug, Clone)]
pub struct SinkInfo {
    pub from: String,
    pub topic: String,
    pub mode: SinkMode,
    pub status: Arc<DeliveryStatus>,
    pub delivery: Arc<crate::sink_delivery::DeliveryHandle>,
}

impl SinkInfo {
    /// `running`; `waiting: ...` while the broker has not acknowledged what was sent (with
    /// how many checkpoints' changes wait in the outbox); `retrying: ...` after deliveries
    /// failed (the producer retries them).
    pub fn describe_status(&self) -> String {
        let state = self.delivery.state();
        if state.starts_with("waiting") {
            return format!(
                "{state} ({} checkpoints' changes in the outbox)",
                self.delivery.backlog()
            );
        }
        let failed = self.status.failed.load(Ordering::Relaxed);
        let last = self
            .status
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match last {
            Some(e) if failed > 0 => format!("retrying: {failed} deliveries failed, last: {e}"),
            _ => "running".to_string(),
        }
    }

    pub fn delivered(&self) -> u64 {
        self.status.delivered.load(Ordering::Relaxed)
    }
}

/// The running sinks.
#[derive(Default)]
pub struct Sinks {
    running: Mutex<HashMap<ObjectId, SinkInfo>>,
}

impl Sinks {
    pub fn register(&self, id: ObjectId, info: SinkInfo) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, info);
    }

    /// Stops the sink's delivery thread (DROP SINK) and forgets it.
    pub fn forget(&self, id: ObjectId) {
        let removed = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(info) = removed {
            info.delivery.stop();
        }
    }

    pub fn snapshot(&self) -> HashMap<ObjectId, SinkInfo> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
