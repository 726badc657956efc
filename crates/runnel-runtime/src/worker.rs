//! The dataflow worker: one thread that owns the [`Dataflow`], applies catalog changes that
//! need it (new sources and views, drops), reads the source logs whenever writers signal new
//! data, and checkpoints on an interval or when asked (FLUSH).
//!
//! Catalog writes for a new object are committed in the same atomic batch as the checkpoint
//! that first includes its state, so a crash never leaves a view in the catalog without the
//! state that matches the stored positions.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use runnel_common::{Result, RunnelError};
use runnel_plan::{ObjectId, RelationKind, StreamPlan};
use runnel_state::{keys, Store, WriteBatch};
use tokio::sync::oneshot;

use crate::dataflow::{Dataflow, StartOffsets};
use crate::operator::Operator;

/// Extra key/value writes to commit with the next checkpoint (catalog entries, metadata).
pub type Writes = Vec<(Vec<u8>, Vec<u8>)>;

/// Progress of one source log.
#[derive(Debug, Clone)]
pub struct SourceStatus {
    pub id: ObjectId,
    /// Next sequence number the dataflow reads (every entry before it is processed).
    pub position: u64,
    pub rows_read: u64,
}

#[derive(Debug, Clone, Default)]
pub struct WorkerStatus {
    pub sources: Vec<SourceStatus>,
    /// Views that stopped updating, with the error that stopped them.
    pub failed_views: Vec<(ObjectId, String)>,
}

enum Command {
    AddSource {
        id: ObjectId,
        schema: SchemaRef,
        writes: Writes,
        reply: oneshot::Sender<Result<()>>,
    },
    AddView {
        id: ObjectId,
        plan: Box<StreamPlan>,
        schema: SchemaRef,
        backfill: bool,
        starts: BTreeMap<ObjectId, StartOffsets>,
        writes: Writes,
        reply: oneshot::Sender<Result<()>>,
    },
    AddSink {
        id: ObjectId,
        input: ObjectId,
        input_kind: RelationKind,
        op: Box<dyn Operator>,
        backfill: bool,
        writes: Writes,
        reply: oneshot::Sender<Result<()>>,
    },
    Drop {
        ids: Vec<ObjectId>,
        reply: oneshot::Sender<Result<()>>,
    },
    Flush {
        reply: oneshot::Sender<Result<()>>,
    },
    Status {
        reply: oneshot::Sender<WorkerStatus>,
    },
    Wake,
    /// Drains, commits a last checkpoint and ends the thread (shutdown), so that nothing
    /// uses the store while the process exits.
    Stop {
        reply: oneshot::Sender<()>,
    },
    /// Starts reading source logs (the worker starts paused so that restoring views can
    /// finish before any of them sees new data).
    Resume,
}

/// Handle to the worker thread; cheap to clone.
#[derive(Clone)]
pub struct Worker {
    tx: Sender<Command>,
    checkpoints: Arc<CheckpointStats>,
}

/// What the worker's checkpoints took, for the metrics endpoint: the durations since the
/// last time they were taken (bounded, so an unread log cannot grow without end), and when
/// the last one was written.
#[derive(Debug, Default)]
pub struct CheckpointStats {
    durations: std::sync::Mutex<Vec<Duration>>,
    last_success_unix_ms: std::sync::atomic::AtomicU64,
}

/// Checkpoint durations kept between two reads of [`CheckpointStats::take_durations`].
const MAX_UNREAD_DURATIONS: usize = 100_000;

impl CheckpointStats {
    fn record(&self, took: Duration) {
        let mut durations = self.durations.lock().unwrap_or_else(|p| p.into_inner());
        if durations.len() < MAX_UNREAD_DURATIONS {
            durations.push(took);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_success_unix_ms
            .store(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// The durations of the checkpoints written since the last call.
    pub fn take_durations(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.durations.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// When the last checkpoint was written, in milliseconds since the Unix epoch (0: none
    /// yet).
    pub fn last_success_unix_ms(&self) -> u64 {
        self.last_success_unix_ms
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

pub struct WorkerThread {
    pub worker: Worker,
    pub join: JoinHandle<()>,
}

impl Worker {
    pub fn start(store: Arc<Store>, checkpoint_interval: Duration) -> Result<WorkerThread> {
        let (tx, rx) = mpsc::channel();
        let checkpoints = Arc::new(CheckpointStats::default());
        let stats = checkpoints.clone();
        let join = std::thread::Builder::new()
            .name("runnel-dataflow".into())
            .spawn(move || {
                let mut state = WorkerState {
                    dataflow: Dataflow::new(store.clone()),
                    store,
                    interval: checkpoint_interval,
                    last_checkpoint: Instant::now(),
                    dirty: false,
                    paused: true,
                    checkpoints: stats,
                };
                state.run(rx);
            })
            .map_err(|e| RunnelError::external(format!("cannot start dataflow thread: {e}")))?;
        Ok(WorkerThread {
            worker: Worker { tx, checkpoints },
            join,
        })
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .map_err(|_| RunnelError::internal("dataflow worker has stopped"))?;
        rx.await
            .map_err(|_| RunnelError::internal("dataflow worker dropped a request"))
    }

    /// What the checkpoints took.
    pub fn checkpoint_stats(&self) -> Arc<CheckpointStats> {
        self.checkpoints.clone()
    }

    /// Lets the worker start reading source logs; call once every restored view is added.
    pub fn resume(&self) {
        let _ = self.tx.send(Command::Resume);
    }

    /// Tells the worker that a source log has new entries.
    pub fn wake(&self) {
        let _ = self.tx.send(Command::Wake);
    }

    pub async fn add_source(&self, id: ObjectId, schema: SchemaRef, writes: Writes) -> Result<()> {
        self.call(|reply| Command::AddSource {
            id,
            schema,
            writes,
            reply,
        })
        .await?
    }

    pub async fn add_view(
        &self,
        id: ObjectId,
        plan: StreamPlan,
        schema: SchemaRef,
        backfill: bool,
        starts: BTreeMap<ObjectId, StartOffsets>,
        writes: Writes,
    ) -> Result<()> {
        self.call(|reply| Command::AddView {
            id,
            plan: Box::new(plan),
            schema,
            backfill,
            starts,
            writes,
            reply,
        })
        .await?
    }

    /// Adds a sink over `input`; `writes` are committed with the checkpoint that follows.
    pub async fn add_sink(
        &self,
        id: ObjectId,
        input: ObjectId,
        input_kind: RelationKind,
        op: Box<dyn Operator>,
        backfill: bool,
        writes: Writes,
    ) -> Result<()> {
        self.call(|reply| Command::AddSink {
            id,
            input,
            input_kind,
            op,
            backfill,
            writes,
            reply,
        })
        .await?
    }

    /// Removes objects from the dataflow and deletes everything they stored.
    pub async fn drop_objects(&self, ids: Vec<ObjectId>) -> Result<()> {
        self.call(|reply| Command::Drop { ids, reply }).await?
    }

    /// Returns once every log entry written before the call is reflected in committed state.
    pub async fn flush(&self) -> Result<()> {
        self.call(|reply| Command::Flush { reply }).await?
    }

    /// Ends the worker thread after a last checkpoint (join it afterwards).
    pub async fn stop(&self) -> Result<()> {
        self.call(|reply| Command::Stop { reply }).await
    }

    pub async fn status(&self) -> Result<WorkerStatus> {
        self.call(|reply| Command::Status { reply }).await
    }
}

struct WorkerState {
    dataflow: Dataflow,
    store: Arc<Store>,
    interval: Duration,
    last_checkpoint: Instant,
    dirty: bool,
    paused: bool,
    checkpoints: Arc<CheckpointStats>,
}

impl WorkerState {
    fn run(&mut self, rx: Receiver<Command>) {
        loop {
            if !self.dirty {
                // Nothing to commit: the next checkpoint is due one interval after new work.
                self.last_checkpoint = Instant::now();
            }
            let timeout = self.interval.saturating_sub(self.last_checkpoint.elapsed());
            match rx.recv_timeout(timeout) {
                Ok(Command::Stop { reply }) => return self.stop(reply),
                Ok(cmd) => self.handle(cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.drain();
                    self.checkpoint_or_die(Vec::new());
                    return;
                }
            }
            while let Ok(cmd) = rx.try_recv() {
                match cmd {
                    Command::Stop { reply } => return self.stop(reply),
                    cmd => self.handle(cmd),
                }
            }
            self.drain();
            if self.dirty && self.last_checkpoint.elapsed() >= self.interval {
                self.checkpoint_or_die(Vec::new());
            }
        }
    }

    fn stop(&mut self, reply: oneshot::Sender<()>) {
        self.drain();
        self.checkpoint_or_die(Vec::new());
        let _ = reply.send(());
    }

    /// Processes every available log entry, checkpointing on schedule along the way.
    fn drain(&mut self) {
        if self.paused {
            return;
        }
        loop {
            match self.dataflow.poll_sources() {
                Ok(true) => {
                    self.dirty = true;
                    if self.last_checkpoint.elapsed() >= self.interval {
                        self.checkpoint_or_die(Vec::new());
                    }
                }
                Ok(false) => break,
                Err(err) => {
                    tracing::error!("reading source logs failed: {err}");
                    break;
                }
            }
        }
    }

    fn checkpoint(&mut self, writes: Writes) -> Result<()> {
        self.dataflow.prepare_checkpoint()?;
        self.commit(writes)
    }

    /// Writes the checkpoint (the caller has prepared it).
    fn commit(&mut self, writes: Writes) -> Result<()> {
        let started = Instant::now();
        let mut batch = WriteBatch::default();
        self.dataflow.checkpoint(&mut batch)?;
        for (k, v) in writes {
            batch.put(k, v);
        }
        self.store.write(batch)?;
        self.last_checkpoint = Instant::now();
        self.dirty = false;
        let took = started.elapsed();
        self.checkpoints.record(took);
        // A checkpoint slower than the interval delays the next one: worth an operator's eye.
        if took > self.interval {
            tracing::warn!(
                duration_ms = took.as_secs_f64() * 1e3,
                interval_ms = self.interval.as_secs_f64() * 1e3,
                "slow checkpoint"
            );
        }
        Ok(())
    }

    /// A checkpoint that cannot be written leaves memory ahead of the store; the only safe
    /// continuation is a restart from the last good checkpoint.
    fn checkpoint_or_die(&mut self, writes: Writes) {
        if let Err(err) = self.dataflow.prepare_checkpoint() {
            // A sink has not delivered yet: keep the work in memory and try again next
            // interval; committing now could lose its records.
            tracing::warn!("checkpoint postponed: {err}");
            self.last_checkpoint = Instant::now();
            return;
        }
        if let Err(err) = self.commit(writes) {
            tracing::error!("checkpoint failed, exiting to recover from the last one: {err}");
            std::process::exit(70);
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Wake => {}
            Command::Resume => self.paused = false,
            Command::Stop { .. } => unreachable!("run() takes Stop before it reaches handle()"),
            Command::AddSource {
                id,
                schema,
                writes,
                reply,
            } => {
                let result = self
                    .dataflow
                    .add_source(id, schema)
                    .and_then(|()| self.checkpoint(writes));
                let _ = reply.send(result);
            }
            Command::AddView {
                id,
                plan,
                schema,
                backfill,
                starts,
                writes,
                reply,
            } => {
                self.drain();
                let result = match self.dataflow.add_view(id, &plan, schema, backfill, &starts) {
                    Ok(()) => self.checkpoint(writes),
                    Err(err) => {
                        self.dataflow.remove_view(id);
                        Err(err)
                    }
                };
                let _ = reply.send(result);
            }
            Command::AddSink {
                id,
                input,
                input_kind,
                op,
                backfill,
                writes,
                reply,
            } => {
                self.drain();
                let result = self
                    .dataflow
                    .add_sink(id, input, input_kind, op, backfill)
                    .and_then(|()| self.checkpoint(writes));
                if result.is_err() {
                    self.dataflow.remove_view(id);
                }
                let _ = reply.send(result);
            }
            Command::Drop { ids, reply } => {
                let mut batch = WriteBatch::default();
                for &id in &ids {
                    self.dataflow.remove_view(id);
                    self.dataflow.remove_source(id);
                }
                let result = self
                    .dataflow
                    .prepare_checkpoint()
                    .and_then(|()| self.dataflow.checkpoint(&mut batch))
                    .and_then(|()| {
                        for &id in &ids {
                            for (start, end) in keys::object_ranges(id) {
                                batch.delete_range(start, end);
                            }
                        }
                        self.store.write(batch)?;
                        Ok(())
                    });
                let _ = reply.send(result);
            }
            Command::Flush { reply } => {
                self.drain();
                let result = self.checkpoint(Vec::new());
                let _ = reply.send(result);
            }
            Command::Status { reply } => {
                let sources = self
                    .dataflow
                    .positions()
                    .into_iter()
                    .map(|(id, position)| SourceStatus {
                        id,
                        position,
                        rows_read: self.dataflow.rows_read.get(&id).copied().unwrap_or(0),
                    })
                    .collect();
                let _ = reply.send(WorkerStatus {
                    sources,
                    failed_views: self.dataflow.failed_views(),
                });
            }
        }
    }
}
