//! The dataflow worker: one thread that owns the [`Dataflow`], applies catalog changes that
//! need it (new sources and views, drops), reads the source logs whenever writers signal new
//! data, and checkpoints on an interval or when asked (FLUSH).
//!
//! Catalog writes for a new object are committed in the same atomic batch as the checkpoint
//! that first includes its state, so a crash never leaves a view in the catalog without the
//! state that matches the stored positions.
//!
//! The worker can be busy for minutes (a backfill), so what other threads read of it is
//! published, not asked for: [`Worker::status`] (source positions, failed views, view rows and
//! changes, updated after every round of reads and every command), [`Worker::backfills`] and
//! [`CheckpointStats`].
//!
//! **Freshness** (`runnel_view_freshness_seconds`): every writer wakes the worker right after
//! its append is committed, and the wake carries that time. Each drain of the logs takes the
//! oldest wake since the previous drain as the append time of what it reads (the start of
//! the drain when there was none: the append raced the drain). Per view, the dataflow keeps
//! the oldest such time among the reads that changed the view's contents; the checkpoint
//! that commits them records `commit time - that time`, once per view and checkpoint. So
//! what is measured is, per checkpoint, the age of the oldest change it made visible in the
//! view, at no cost per row. It is an upper bound within one drain (a drain's rows count
//! from its oldest wake, and a view reading only the newer of two sources written in the same
//! drain gets the older time). Backfills and the catch-up after a restart are not measured:
//! their rows' append times are unknown.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use runnel_common::{Result, RunnelError, SqlState};
use runnel_plan::{ObjectId, RelationKind, StreamPlan};
use runnel_state::{keys, SharedBudget, Store, WriteBatch};
use tokio::sync::oneshot;

use crate::backfill::{BackfillProgress, BackfillReport, BackfillStatus, Backfills};
use crate::dataflow::{Dataflow, StartOffsets, ViewStats};
use crate::fresh_entries::FreshEntries;
use crate::log_archive::LogKeeping;
use crate::operator::Operator;
use crate::shard::WorkerTimes;
use crate::subscription::{SourceSubscriptionStart, SubscriptionStart};

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
    /// Every view's rows and changes.
    pub views: Vec<ViewStats>,
}

/// What the worker thread publishes for the others (see the module docs).
#[derive(Debug, Default)]
struct Published {
    status: Mutex<WorkerStatus>,
    backfills: Arc<Backfills>,
}

enum Command {
    AddSource {
        id: ObjectId,
        schema: SchemaRef,
        keeping: LogKeeping,
        table: bool,
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
        /// Who hears of the backfill's progress (`None`: the log, naming the view by id).
        report: Option<BackfillReport>,
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
    /// A writer appended to a source log, committed `at`.
    Wake {
        at: Instant,
    },
    /// Drains, commits a last checkpoint and ends the thread (shutdown), so that nothing
    /// uses the store while the process exits.
    Stop {
        reply: oneshot::Sender<()>,
    },
    /// Starts reading source logs (the worker starts paused so that restoring views can
    /// finish before any of them sees new data).
    Resume,
    /// SUBSCRIBE to a view.
    Subscribe {
        view: ObjectId,
        snapshot: bool,
        buffer: usize,
        reply: oneshot::Sender<Result<SubscriptionStart>>,
    },
    SubscribeSource {
        source: ObjectId,
        buffer: usize,
        reply: oneshot::Sender<Result<SourceSubscriptionStart>>,
    },
}

/// Handle to the worker thread; cheap to clone.
#[derive(Clone)]
pub struct Worker {
    tx: Sender<Command>,
    checkpoints: Arc<CheckpointStats>,
    published: Arc<Published>,
    /// Where writers offer the entries they append (see [`FreshEntries`]).
    fresh: Arc<FreshEntries>,
    worker_times: Arc<WorkerTimes>,
}

/// What the worker's checkpoints took, for the metrics endpoint: the durations since the
/// last time they were taken (bounded, so an unread log cannot grow without end), when the
/// last one was written, and the views' freshness they measured (see the module docs).
#[derive(Debug, Default)]
pub struct CheckpointStats {
    durations: std::sync::Mutex<Vec<Duration>>,
    last_success_unix_ms: std::sync::atomic::AtomicU64,
    freshness: std::sync::Mutex<Vec<(ObjectId, Duration)>>,
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

    fn record_freshness(&self, samples: Vec<(ObjectId, Duration)>) {
        if samples.is_empty() {
            return;
        }
        let mut freshness = self.freshness.lock().unwrap_or_else(|p| p.into_inner());
        let room = MAX_UNREAD_DURATIONS.saturating_sub(freshness.len());
        freshness.extend(samples.into_iter().take(room));
    }

    /// Per view and checkpoint since the last call: how long before the checkpoint the
    /// oldest change it made visible in the view was appended to its source log.
    pub fn take_view_freshness(&self) -> Vec<(ObjectId, Duration)> {
        std::mem::take(&mut *self.freshness.lock().unwrap_or_else(|p| p.into_inner()))
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

/// The stack of every thread that plans, builds or evaluates a statement's expressions (the
/// dataflow thread here, the server's async threads in `runnel`): they recurse once per level
/// of a statement's nesting, up to `runnel_sql::complexity::MAX_NESTING` levels. Only the
/// pages a thread touches take memory.
pub const THREAD_STACK_BYTES: usize = 64 << 20;

impl Worker {
    /// `budget`: the memory of every operator's state cache together; `workers`: the
    /// threads that maintain the views (see [`crate::shard`]).
    pub fn start(
        store: Arc<Store>,
        checkpoint_interval: Duration,
        budget: SharedBudget,
        workers: usize,
    ) -> Result<WorkerThread> {
        let (tx, rx) = mpsc::channel();
        let fresh = Arc::new(FreshEntries::default());
        let dataflow = Dataflow::new(store.clone(), budget, workers, fresh.clone())?;
        let worker_times = dataflow.worker_times();
        let checkpoints = Arc::new(CheckpointStats::default());
        let published = Arc::new(Published::default());
        let stats = checkpoints.clone();
        let publish_to = published.clone();
        let join = std::thread::Builder::new()
            .name("runnel-dataflow".into())
            .stack_size(THREAD_STACK_BYTES)
            .spawn(move || {
                let mut state = WorkerState {
                    dataflow,
                    store,
                    interval: checkpoint_interval,
                    last_checkpoint: Instant::now(),
                    last_checkpoint_bytes: 0,
                    dirty: false,
                    paused: true,
                    catching_up: true,
                    oldest_wake: None,
                    checkpoints: stats,
                    published: publish_to,
                    checkpoint_number: 0,
                    disk_full_since: None,
                };
                state.run(rx);
            })
            .map_err(|e| RunnelError::external(format!("cannot start dataflow thread: {e}")))?;
        Ok(WorkerThread {
            worker: Worker {
                tx,
                checkpoints,
                published,
                fresh,
                worker_times,
            },
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

    /// Where a source's writer offers the entries it appends, for the dataflow to read
    /// without going to the store.
    pub fn fresh_entries(&self) -> Arc<FreshEntries> {
        self.fresh.clone()
    }

    /// How the dataflow's worker threads spent their time.
    pub fn worker_times(&self) -> Arc<WorkerTimes> {
        self.worker_times.clone()
    }

    /// What the checkpoints took.
    pub fn checkpoint_stats(&self) -> Arc<CheckpointStats> {
        self.checkpoints.clone()
    }

    /// Lets the worker start reading source logs; call once every restored view is added.
    pub fn resume(&self) {
        let _ = self.tx.send(Command::Resume);
    }

    /// Tells the worker that a source log has new entries (call once they are committed:
    /// the time of the call is their append time for the freshness metric).
    pub fn wake(&self) {
        let _ = self.tx.send(Command::Wake { at: Instant::now() });
    }

    /// Adds a stream's or table's (`table`) log; `keeping` says how much of it to keep.
    pub async fn add_source(
        &self,
        id: ObjectId,
        schema: SchemaRef,
        keeping: LogKeeping,
        table: bool,
        writes: Writes,
    ) -> Result<()> {
        self.call(|reply| Command::AddSource {
            id,
            schema,
            keeping,
            table,
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
            report: None,
            reply,
        })
        .await?
    }

    /// Adds a new view, backfilled from its inputs, reporting the backfill's progress as
    /// `report` asks (see [`crate::backfill`]); `writes` are committed with the checkpoint
    /// that first holds the view.
    pub async fn create_view(
        &self,
        id: ObjectId,
        plan: StreamPlan,
        schema: SchemaRef,
        starts: BTreeMap<ObjectId, StartOffsets>,
        writes: Writes,
        report: BackfillReport,
    ) -> Result<()> {
        self.call(|reply| Command::AddView {
            id,
            plan: Box::new(plan),
            schema,
            backfill: true,
            starts,
            writes,
            report: Some(report),
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

    /// Subscribes to a view's changes (see [`crate::subscription`]).
    pub async fn subscribe(
        &self,
        view: ObjectId,
        snapshot: bool,
        buffer: usize,
    ) -> Result<SubscriptionStart> {
        self.call(|reply| Command::Subscribe {
            view,
            snapshot,
            buffer,
            reply,
        })
        .await?
    }

    /// Subscribes to the entries of a stream's or table's log (see [`crate::subscription`]).
    pub async fn subscribe_source(
        &self,
        source: ObjectId,
        buffer: usize,
    ) -> Result<SourceSubscriptionStart> {
        self.call(|reply| Command::SubscribeSource {
            source,
            buffer,
            reply,
        })
        .await?
    }

    /// Returns once every log entry written before the call is reflected in committed state.
    pub async fn flush(&self) -> Result<()> {
        self.call(|reply| Command::Flush { reply }).await?
    }

    /// Ends the worker thread after a last checkpoint (join it afterwards).
    pub async fn stop(&self) -> Result<()> {
        self.call(|reply| Command::Stop { reply }).await
    }

    /// The status last published: current as of the worker's last round of reads or command
    /// (a FLUSH that returned is in it). Never waits for the worker.
    pub async fn status(&self) -> Result<WorkerStatus> {
        let status = self
            .published
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Ok(status.clone())
    }

    /// Why `view` stopped updating, if it did (as of the last published checkpoint).
    pub fn view_failure(&self, view: ObjectId) -> Option<String> {
        let status = self
            .published
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        status
            .failed_views
            .iter()
            .find(|(id, _)| *id == view)
            .map(|(_, error)| error.clone())
    }

    /// The view backfills running now.
    pub fn backfills(&self) -> Vec<BackfillStatus> {
        self.published.backfills.snapshot()
    }
}

struct WorkerState {
    dataflow: Dataflow,
    store: Arc<Store>,
    interval: Duration,
    last_checkpoint: Instant,
    /// The size of the last checkpoint's write batch: the next one starts with that much room
    /// (RocksDB's batch otherwise grows by doubling, copying what it holds each time, and a
    /// checkpoint of a fast view is tens of MB).
    last_checkpoint_bytes: usize,
    dirty: bool,
    paused: bool,
    /// The next drain reads what was appended before the worker started (a restart's
    /// catch-up): append times unknown.
    catching_up: bool,
    /// The oldest wake since the last drain (see the module docs).
    oldest_wake: Option<Instant>,
    checkpoints: Arc<CheckpointStats>,
    published: Arc<Published>,
    /// The number of the last checkpoint written: its commit time in milliseconds since the
    /// epoch, made to always grow (what SUBSCRIBE's rows carry).
    checkpoint_number: u64,
    /// Since when checkpoints wait for disk space (logged once per episode).
    disk_full_since: Option<Instant>,
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
                Err(RecvTimeoutError::Timeout) if !self.dirty => {
                    self.idle_checkpoint();
                    self.trim_logs();
                    self.tune_blob_gc();
                }
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
            if self.dirty && self.checkpoint_due() {
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
        let started = Instant::now();
        let appended = match std::mem::take(&mut self.catching_up) {
            true => None,
            false => Some(self.oldest_wake.unwrap_or(started)),
        };
        self.oldest_wake = None;
        self.dataflow.set_append_time(appended);
        loop {
            match self.dataflow.poll_sources() {
                Ok(true) => {
                    self.dirty = true;
                    self.publish();
                    if self.checkpoint_due() {
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
        self.dataflow.set_append_time(None);
    }

    /// The interval has passed, or the operators' changed state fills half the state cache
    /// (a checkpoint makes it clean, so it can be evicted: memory stays within the budget).
    fn checkpoint_due(&self) -> bool {
        self.last_checkpoint.elapsed() >= self.interval || self.dataflow.state_wants_checkpoint()
    }

    /// Publishes the status other threads read (see [`Worker::status`]): a few entries per
    /// source and view, after a round of reads or a command, never per row.
    fn publish(&self) {
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
        let status = WorkerStatus {
            sources,
            failed_views: self.dataflow.failed_views(),
            views: self.dataflow.view_stats(),
        };
        *self
            .published
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = status;
    }

    /// Writes the checkpoint. On a full disk it fails before it
    /// takes anything from the dataflow, so the changes stay in memory for the next attempt.
    fn checkpoint(&mut self, writes: Writes) -> Result<()> {
        if self.dirty || !writes.is_empty() {
            self.store.check_space()?;
        }
        self.tune_blob_gc();
        let started = Instant::now();
        // A quarter more than last time: room for a checkpoint that grew a little. Only the
        // bytes written are touched, so unused room costs no memory (nor does the room of a
        // batch the dataflow replaces with the workers' joined parts).
        let room = self.last_checkpoint_bytes + self.last_checkpoint_bytes / 4;
        let mut batch = WriteBatch::with_capacity_bytes(room);
        self.dataflow.checkpoint(&mut batch)?;
        for (k, v) in writes {
            batch.put(k, v);
        }
        self.last_checkpoint_bytes = batch.size_in_bytes();
        // A FLUSH with nothing new writes nothing, and so works on a full disk too.
        if !batch.is_empty() {
            self.store.write(batch)?;
        }
        self.next_checkpoint_number();
        self.dataflow
            .publish_subscriptions(self.checkpoint_number)?;
        let committed = Instant::now();
        self.last_checkpoint = committed;
        self.dirty = false;
        self.trim_logs();
        let took = started.elapsed();
        self.checkpoints.record(took);
        self.checkpoints
            .record_freshness(self.dataflow.take_freshness(committed));
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
    /// Numbers the next checkpoint: its commit time in milliseconds, made to always grow.
    fn next_checkpoint_number(&mut self) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        self.checkpoint_number = now_ms.max(self.checkpoint_number + 1);
    }

    /// An interval passed with nothing to commit: while anyone subscribes, that is a
    /// checkpoint without changes (nothing to write), which subscribers hear of as progress
    /// and a subscriber that went away is dropped at.
    fn idle_checkpoint(&mut self) {
        if !self.dataflow.has_subscriptions() {
            return;
        }
        self.next_checkpoint_number();
        if let Err(err) = self.dataflow.publish_subscriptions(self.checkpoint_number) {
            tracing::error!("publishing to subscribers failed: {err}");
        }
    }

    /// Deletes what the streams' retention no longer keeps (after a checkpoint: positions are
    /// committed). A failure only postpones it.
    fn trim_logs(&mut self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        match self.dataflow.trim_logs(now) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(entries = n, "retention deleted log entries"),
            Err(err) => tracing::warn!("retention could not trim the logs: {err}"),
        }
    }

    /// Blob garbage collection on or off by how much garbage the store holds (at most once
    /// a second; see `Store::tune_blob_gc`): after checkpoints, and when idle, since what
    /// retention just trimmed becomes garbage.
    fn tune_blob_gc(&self) {
        if let Err(e) = self.store.tune_blob_gc() {
            // Collection stays as it was: only disk space (or copying) is at stake.
            tracing::warn!("cannot change the store's blob garbage collection: {e}");
        }
    }

    fn checkpoint_or_die(&mut self, writes: Writes) {
        match self.checkpoint(writes) {
            Ok(()) => {
                if self.disk_full_since.take().is_some() {
                    tracing::info!("checkpoints resumed: the disk has room again");
                }
            }
            Err(err) if err.sqlstate() == SqlState::DISK_FULL => {
                // Nothing was taken from the dataflow: keep working in memory (sources stop
                // at the door, as their writes fail the same way) and try every interval.
                if self.disk_full_since.is_none() {
                    tracing::warn!("checkpoints postponed until the disk has room: {err}");
                    self.disk_full_since = Some(Instant::now());
                }
                self.last_checkpoint = Instant::now();
            }
            Err(err) => {
                tracing::error!("checkpoint failed, exiting to recover from the last one: {err}");
                std::process::exit(70);
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Wake { at } => {
                self.oldest_wake = Some(self.oldest_wake.map_or(at, |t| t.min(at)));
            }
            Command::Resume => self.paused = false,
            Command::Stop { .. } => unreachable!("run() takes Stop before it reaches handle()"),
            Command::AddSource {
                id,
                schema,
                keeping,
                table,
                writes,
                reply,
            } => {
                let result = self
                    .dataflow
                    .add_source(id, schema, keeping, table)
                    .and_then(|()| self.checkpoint(writes));
                self.publish();
                let _ = reply.send(result);
            }
            Command::AddView {
                id,
                plan,
                schema,
                backfill,
                starts,
                writes,
                report,
                reply,
            } => {
                self.drain();
                let mut progress = backfill.then(|| {
                    let report = report.unwrap_or_else(|| BackfillReport {
                        view_name: format!("#{id}"),
                        notices: None,
                    });
                    BackfillProgress::start(id, report, self.published.backfills.clone())
                });
                let added =
                    self.dataflow
                        .add_view(id, &plan, schema, backfill, &starts, progress.as_mut());
                let result = match added {
                    Ok(()) => {
                        if let Some(progress) = progress.as_mut() {
                            progress.replayed();
                        }
                        self.checkpoint(writes)
                    }
                    Err(err) => {
                        self.dataflow.remove_view(id);
                        Err(err)
                    }
                };
                if let (Some(progress), Ok(())) = (progress, &result) {
                    progress.finish();
                }
                self.publish();
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
                self.publish();
                let _ = reply.send(result);
            }
            Command::Drop { ids, reply } => {
                // Checked before anything leaves the dataflow: a drop that cannot be written
                // must leave everything as it was.
                if let Err(err) = self.store.check_space() {
                    let _ = reply.send(Err(err.into()));
                    return;
                }
                let mut batch = WriteBatch::default();
                for &id in &ids {
                    self.dataflow.remove_view(id);
                    self.dataflow.remove_source(id);
                }
                let result = self.dataflow.checkpoint(&mut batch).and_then(|()| {
                    for &id in &ids {
                        for (start, end) in keys::object_ranges(id) {
                            batch.delete_range(start, end);
                        }
                    }
                    self.store.write(batch)?;
                    Ok(())
                });
                self.publish();
                let _ = reply.send(result);
            }
            Command::Subscribe {
                view,
                snapshot,
                buffer,
                reply,
            } => {
                // What the subscriber gets first becomes visible at the next checkpoint.
                let checkpoint = self.checkpoint_number + 1;
                let result =
                    self.dataflow
                        .subscribe(view, snapshot, buffer)
                        .map(|(snapshot, events)| SubscriptionStart {
                            checkpoint,
                            snapshot,
                            events,
                        });
                let _ = reply.send(result);
            }
            Command::SubscribeSource {
                source,
                buffer,
                reply,
            } => {
                // The snapshot counts as the next checkpoint's, as a view's does.
                let checkpoint = self.checkpoint_number + 1;
                let result =
                    self.dataflow
                        .subscribe_source(source, buffer)
                        .map(|(position, events)| SourceSubscriptionStart {
                            checkpoint,
                            position,
                            events,
                        });
                let _ = reply.send(result);
            }
            Command::Flush { reply } => {
                self.drain();
                let result = self.checkpoint(Vec::new());
                self.publish();
                let _ = reply.send(result);
            }
        }
    }
}
