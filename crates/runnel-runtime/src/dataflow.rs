//! The dataflow's coordinator: every view's operators, run by the worker threads
//! ([`crate::shard`]), fed from the source logs.
//!
//! Streams and tables append change batches to their logs (see `keys::LOG`); the coordinator
//! reads each log from its position and hands the entries to every worker, which pushes its
//! part of them through its replica of the operators of every view that reads the log. A
//! view that reads another view is wired to that view's output operator (on every worker).
//! A checkpoint waits until the workers have processed everything handed to them, then
//! writes all dirty operator state, view contents and the log positions in one atomic
//! batch, so after a crash every view resumes consistently from the same positions.
//!
//! A new view's backfill replays its input logs in slices as large as its
//! [`BackfillProgress`] allows (a log entry can hold a whole COPY; see
//! [`crate::backfill::FIRST_SLICE_ROWS`]), reporting each slice. For the metrics, the dataflow also notes, per view, the append time
//! of the oldest input whose changes reached the view's contents since the last checkpoint
//! (see [`Dataflow::set_append_time`] and [`Dataflow::take_freshness`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{BooleanArray, Int32Array, Int64Array};
use datafusion::arrow::datatypes::SchemaRef;
use runnel_common::Retention;
use runnel_common::{ChangeBatch, Result, RunnelError};
use runnel_plan::{NodeKind, ObjectId, RelationKind, StreamPlan};
use runnel_state::log_index::{self, EntryIndex};
use runnel_state::{ipc, keys, SharedBudget, Store, WriteBatch};

use crate::backfill::BackfillProgress;
use crate::exchange::{self, Exchanges};
use crate::fresh_entries::FreshEntries;
use crate::log_archive::{earliest_entry, read_stored_entries, trimmed_error, LogKeeping};
use crate::operator::Operator;
use crate::operators::materialize::{row_count_key, ViewOutput};
use crate::shard::{Feed, Placement, Reader, Shards, SourceRead, WorkerTimes};
use crate::stored_rows::{stored_batch_rows, sum_stored};
use crate::subscription::{ChangeTap, SubscriptionEvent};
use crate::view_rows::ViewLayout;

/// How many log entries are read per source before other work gets a turn.
const LOG_READ_CHUNK: usize = 64;

/// Trimmed entries rebuilt from an archive per call (their indexes are held meanwhile).
const ARCHIVE_READ_ENTRIES: usize = 256;

/// Most rows decoded by one read of a log (a read stops after the entry that reaches it): the
/// decoded entries are held while they are processed.
const LOG_READ_ROWS: usize = 262_144;

/// A base relation whose log the dataflow reads.
struct SourceLog {
    schema: SchemaRef,
    /// A table's log (its rows go to one worker, in order).
    table: bool,
    /// Next sequence number to read.
    position: u64,
    /// Source nodes reading this log (on every worker), each with the first Kafka offset per
    /// partition it reads, if it starts at a position (rows before it are filtered out of
    /// every entry, live or replayed).
    readers: Vec<Reader>,
    position_dirty: bool,
    /// The stream's watermark as of `position` (from the log entries read so far).
    watermark: Option<i64>,
    /// SUBSCRIBE's subscribers to the stream or table: the entries read from `position` on.
    tap: ChangeTap,
    /// Its retention, and where trimmed entries can be read again.
    keeping: LogKeeping,
    /// The first entry the log holds (entries before it were trimmed).
    log_start: u64,
    /// Size retention: the stored bytes of entries `[log_start, bytes_counted_to)`.
    retained_bytes: u64,
    bytes_counted_to: u64,
}

impl SourceLog {
    /// Whether anything reads the log as it grows (a view, a sink or a subscription). The
    /// position of a log nothing reads stays where it was: the next reader starts at the end.
    fn is_read(&self) -> bool {
        !self.readers.is_empty() || self.tap.is_active()
    }
}

/// How a new view or sink receives its input's current contents (see
/// [`Dataflow::wire_input`]).
#[derive(Default)]
struct Backfill<'a> {
    /// Where a log's replay stops (default: [`Dataflow::backfill_end`]).
    end: Option<u64>,
    /// Hears of each replayed slice.
    progress: Option<&'a mut BackfillProgress>,
}

/// Per Kafka partition, the first offset a view reads (partitions not named: all).
pub type StartOffsets = BTreeMap<i32, i64>;

/// A log entry as read (or a slice of one's rows).
pub struct LogEntry {
    pub seq: u64,
    /// `None` for an entry that only moves the watermark.
    pub batch: Option<ChangeBatch>,
    /// Kafka streams: each row's partition and offset.
    pub positions: Option<(Int32Array, Int64Array)>,
    /// Streams with a watermark: the watermark after this entry.
    pub watermark: Option<i64>,
}

impl LogEntry {
    /// An entry that only moves the clock.
    fn clock(seq: u64, watermark: Option<i64>) -> Self {
        LogEntry {
            seq,
            batch: None,
            positions: None,
            watermark,
        }
    }
}

/// The watermark a stored log entry carries in its schema metadata.
fn stored_watermark(stored: &datafusion::arrow::record_batch::RecordBatch) -> Option<i64> {
    stored
        .schema_ref()
        .metadata()
        .get(runnel_common::time::WATERMARK_METADATA)
        .and_then(|w| w.parse().ok())
}

/// A stored log entry as the dataflow reads it.
fn stored_entry(
    seq: u64,
    stored: datafusion::arrow::record_batch::RecordBatch,
    schema: &SchemaRef,
) -> Result<LogEntry> {
    let watermark = stored_watermark(&stored);
    if stored.num_rows() == 0 {
        return Ok(LogEntry {
            seq,
            batch: None,
            positions: None,
            watermark,
        });
    }
    Ok(LogEntry {
        seq,
        positions: ChangeBatch::stored_kafka_positions(&stored),
        batch: Some(ChangeBatch::from_stored(&stored, schema.clone())?),
        watermark,
    })
}

/// Keeps the rows at or after `starts` (everything without a start, or a row without a
/// position); `None` when no row is left.
pub(crate) fn from_start(
    batch: ChangeBatch,
    positions: Option<&(Int32Array, Int64Array)>,
    starts: Option<&StartOffsets>,
) -> Result<Option<ChangeBatch>> {
    let (Some(starts), Some((partitions, offsets))) = (starts, positions) else {
        return Ok(Some(batch));
    };
    let mask: BooleanArray = partitions
        .values()
        .iter()
        .zip(offsets.values().iter())
        .map(|(p, o)| Some(starts.get(p).is_none_or(|start| o >= start)))
        .collect();
    if mask.true_count() == batch.num_rows() {
        return Ok(Some(batch));
    }
    if mask.true_count() == 0 {
        return Ok(None);
    }
    batch.filter(&mask).map(Some)
}

/// Rows of a log entry with their Kafka positions (streams read from Kafka).
type Rows = (ChangeBatch, Option<(Int32Array, Int64Array)>);

/// Splits off the first `at_most` rows (zero-copy slices); `None` for the rest when the rows
/// are that few.
fn split_rows((batch, positions): Rows, at_most: usize) -> (Rows, Option<Rows>) {
    let rows = batch.num_rows();
    if rows <= at_most {
        return ((batch, positions), None);
    }
    let part = |offset: usize, len: usize| {
        let slice = ChangeBatch::new(
            batch.data.slice(offset, len),
            batch.weights.slice(offset, len),
        );
        let positions = positions
            .as_ref()
            .map(|(p, o)| (p.slice(offset, len), o.slice(offset, len)));
        (slice, positions)
    };
    (part(0, at_most), Some(part(at_most, rows - at_most)))
}
/// What the coordinator knows about a view (or sink).
struct ViewState {
    /// Its graph nodes (the same on every worker).
    nodes: Vec<usize>,
    output: usize,
    /// What its replicas share: row count, tap, failure.
    shared: Arc<ViewOutput>,
    /// Its failure, if any, is recorded in the store.
    failure_saved: bool,
}

impl ViewState {
    /// A sink has one node, or two (an exchange in front of it); a view has its
    /// materialize step last, among at least a source before it.
    fn is_sink(&self) -> bool {
        self.shared.is_detached()
    }
}

/// A view's figures for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewStats {
    pub id: ObjectId,
    /// Rows the view holds (pending changes included).
    pub rows: i64,
    /// Rows inserted plus rows deleted since the view was added to this process's dataflow.
    pub changes: u64,
}

/// Where a view's failure is recorded (inside the view's operator range, so DROP removes it).
fn failure_key(view: ObjectId) -> Vec<u8> {
    keys::operator_prefix(view, u32::MAX)
}

pub struct Dataflow {
    store: Arc<Store>,
    /// The memory budget of every operator's state cache.
    budget: SharedBudget,
    /// The worker threads, each with a replica of every view's operators.
    shards: Shards,
    /// The number of graph nodes on every shard (nodes of removed views stay, as gaps).
    graph_len: usize,
    sources: BTreeMap<ObjectId, SourceLog>,
    views: BTreeMap<ObjectId, ViewState>,
    /// Rows read per source since start (for progress reporting).
    pub rows_read: HashMap<ObjectId, u64>,
    /// When the log entries being read now were appended, at the latest (see
    /// [`Dataflow::set_append_time`]).
    append_time: Option<Instant>,
    /// Entries the writers just appended, read from memory instead of the store.
    fresh: Arc<FreshEntries>,
    /// The largest write batch a worker built at the last checkpoint: each starts the next
    /// with that much room.
    worker_batch_bytes: usize,
    /// Where the workers' batches are joined (kept: its pages are not faulted in again at
    /// every checkpoint).
    join_buffer: Vec<u8>,
    /// What building the last checkpoints cost, which decides how the next is built.
    checkpoint_costs: CheckpointCosts,
}

/// How a checkpoint's state is gathered from several workers, chosen from what the last ones
/// cost. Built at once, each worker writes a batch of its own and the coordinator joins them
/// (copying every byte twice); built in turn, one batch goes from worker to worker (no copy),
/// and while one writes the others wait. Either way the same records reach the store in the
/// same order; only the time differs. Building (sorting and encoding changed keys) is
/// expensive for state such as Nexmark q8's, where waiting cost 1.9-2.0 s of a 7.5-8.3 s
/// run at two workers; copying is, for many cheap rows such as the 30-minute feature's
/// temporal filter, where the join took the coordinator from 1.8 to 3.4-3.7 s.
#[derive(Debug, Default)]
struct CheckpointCosts {
    /// Seconds the join took per byte (a moving average; unknown until one was measured).
    join_secs_per_byte: Option<f64>,
    /// How the next checkpoint is built.
    build_in_turn: bool,
    /// Checkpoints built in turn since the last built at once: every
    /// [`CheckpointCosts::MEASURE_JOIN_EVERY`]th is built at once to measure the join again.
    in_turn_since: u32,
}

impl CheckpointCosts {
    const MEASURE_JOIN_EVERY: u32 = 16;

    /// The parts took `builds` at once and the join `join` for `bytes` (`None`: not a
    /// measure of what a join costs).
    fn built_at_once(&mut self, builds: &[Duration], join: Option<Duration>, bytes: usize) {
        self.in_turn_since = 0;
        if let (Some(join), true) = (join, bytes > 0) {
            let rate = join.as_secs_f64() / bytes as f64;
            self.join_secs_per_byte = Some(match self.join_secs_per_byte {
                Some(old) => (old + rate) / 2.0,
                None => rate,
            });
        }
        self.choose(builds, bytes);
    }

    /// The parts took `builds`, one after the other, for `bytes`.
    fn built_in_turn(&mut self, builds: &[Duration], bytes: usize) {
        self.in_turn_since += 1;
        self.choose(builds, bytes);
        if self.in_turn_since >= Self::MEASURE_JOIN_EVERY {
            self.build_in_turn = false;
        }
    }

    /// In turn, the workers wait for each other's builds (all but the longest, which the
    /// parts built at once would take too); at once, for the join. Take the shorter.
    fn choose(&mut self, builds: &[Duration], bytes: usize) {
        let total: f64 = builds.iter().map(Duration::as_secs_f64).sum();
        let longest = builds.iter().map(Duration::as_secs_f64).fold(0.0, f64::max);
        let waited = total - longest;
        self.build_in_turn = self
            .join_secs_per_byte
            .is_some_and(|rate| rate * bytes as f64 > waited);
    }
}

impl Dataflow {
    /// A dataflow run by `workers` threads, taking the entries the writers offer to `fresh`.
    pub fn new(
        store: Arc<Store>,
        budget: SharedBudget,
        workers: usize,
        fresh: Arc<FreshEntries>,
    ) -> Result<Self> {
        let shards = Shards::start(store.clone(), budget.clone(), workers.max(1))?;
        Ok(Dataflow {
            store,
            budget,
            fresh,
            shards,
            graph_len: 0,
            sources: BTreeMap::new(),
            views: BTreeMap::new(),
            rows_read: HashMap::new(),
            append_time: None,
            worker_batch_bytes: 0,
            join_buffer: Vec::new(),
            checkpoint_costs: CheckpointCosts::default(),
        })
    }

    /// The number of worker threads.
    pub fn workers(&self) -> usize {
        self.shards.count()
    }

    /// How the worker threads spent their time.
    pub fn worker_times(&self) -> Arc<WorkerTimes> {
        self.shards.times()
    }

    /// Registers a stream or table log, resuming from its committed position; `keeping` says
    /// how much of it to keep; `table`: a table's log (its changes stay in order on one
    /// worker).
    pub fn add_source(
        &mut self,
        id: ObjectId,
        schema: SchemaRef,
        keeping: LogKeeping,
        table: bool,
    ) -> Result<()> {
        let position = match self.store.get(&keys::position(id))? {
            Some(bytes) => u64::from_le_bytes(
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| RunnelError::internal("stored source position is not 8 bytes"))?,
            ),
            None => 0,
        };
        let watermark = self.watermark_at(id, position)?;
        let log_start = log_index::log_start(&self.store, id)?;
        self.sources.insert(
            id,
            SourceLog {
                schema,
                table,
                position,
                readers: Vec::new(),
                position_dirty: false,
                watermark,
                tap: ChangeTap::default(),
                keeping,
                log_start,
                retained_bytes: 0,
                bytes_counted_to: log_start,
            },
        );
        Ok(())
    }

    /// The clock of `source` as of `position`: carried by the last entry before it (a
    /// generated entry's, by its recipe).
    fn watermark_at(&self, source: ObjectId, position: u64) -> Result<Option<i64>> {
        let Some(last) = position.checked_sub(1) else {
            return Ok(None);
        };
        let Some(bytes) = self.store.get(&keys::log_entry(source, last))? else {
            return Ok(None);
        };
        if log_index::recipe_marker_rows(&bytes).is_some() {
            let index = log_index::entry_index(&self.store, source, last)?;
            return Ok(index.and_then(|index| index.watermark_after()));
        }
        Ok(stored_watermark(&ipc::decode_batch(&bytes)?))
    }

    pub fn remove_source(&mut self, id: ObjectId) {
        if let Some(mut source) = self.sources.remove(&id) {
            self.fresh.watch(id, false);
            source
                .tap
                .end(crate::subscription::EndReason::RelationDropped);
            if let Err(err) = self.shards.quiesce() {
                tracing::error!("waiting for the workers before removing source {id}: {err}");
            }
            let _ = self.shards.on_all(move |graph| {
                graph.readers.remove(&id);
            });
        }
    }

    /// Instantiates a view's operators on every worker and wires them in. With `backfill`,
    /// the view is new: it first receives everything its inputs hold up to their current
    /// positions. Without, its state is restored from the store and it continues from the
    /// common positions. `starts` gives, per Kafka stream, the topic position the view starts
    /// from. A backfill reports to `progress`: its total first, then each replayed slice.
    pub fn add_view(
        &mut self,
        view: ObjectId,
        plan: &StreamPlan,
        view_schema: SchemaRef,
        backfill: bool,
        starts: &BTreeMap<ObjectId, StartOffsets>,
        mut progress: Option<&mut BackfillProgress>,
    ) -> Result<()> {
        // The graphs change only at a quiet point (no round of exchanges under way).
        self.shards.quiesce()?;
        if backfill {
            // A backfill may write the view's state before the view is committed (see
            // `Graph::spill_backfill`); what an earlier, uncommitted attempt under this id
            // left (a crash in its backfill) goes first.
            let mut stale = WriteBatch::default();
            for prefix in [keys::view_prefix(view), keys::view_operators_prefix(view)] {
                stale.delete_range(&prefix, &keys::prefix_end(&prefix));
            }
            self.store.write(stale)?;
        }
        // Check every input exists before touching the graph.
        for node in &plan.nodes {
            if let NodeKind::Source {
                relation,
                relation_kind,
                name,
            } = &node.kind
            {
                if !self.has_input(*relation, *relation_kind) {
                    return Err(RunnelError::internal(format!(
                        "view input {name} is not in the dataflow"
                    )));
                }
            }
        }
        let Some(NodeKind::Materialize { key, appended, .. }) = plan.nodes.last().map(|n| &n.kind)
        else {
            return Err(RunnelError::internal(
                "a view's plan ends without its materialize step",
            ));
        };
        let layout = ViewLayout::new(key.as_deref(), *appended, view_schema.fields().len());
        let shared = ViewOutput::open(
            &self.store,
            &keys::view_prefix(view),
            row_count_key(view),
            &layout,
        )?;
        // A view that failed before a restart stays failed: its state stopped at the failure.
        let mut failure_saved = false;
        if !backfill {
            if let Some(message) = self.store.get(&failure_key(view))? {
                shared.fail(String::from_utf8_lossy(&message).into_owned());
                failure_saved = true;
            }
        }
        let exchanges: Exchanges = Arc::new(exchange::exchanges(plan, self.workers())?);
        let placement = Placement::new(plan, &exchanges, self.graph_len);
        self.graph_len += placement.all.len();
        let shared_plan = Arc::new(plan.clone());
        let built = {
            let (shared, exchanges) = (shared.clone(), exchanges.clone());
            let count = placement.all.len();
            self.shards.on_all(move |graph| {
                let before = graph.nodes.len();
                let added = graph.add_view(
                    view,
                    &shared_plan,
                    view_schema.clone(),
                    &exchanges,
                    shared.clone(),
                    backfill,
                );
                if added.is_err() {
                    // Every shard keeps the same node numbers.
                    graph.remove_view(view);
                    graph.nodes.truncate(before);
                    graph.nodes.resize_with(before + count, || None);
                }
                added
            })?
        };
        self.views.insert(
            view,
            ViewState {
                nodes: placement.all.clone(),
                output: placement.output(),
                shared: shared.clone(),
                failure_saved,
            },
        );
        if let Some(err) = built.into_iter().find_map(|r| r.err()) {
            self.remove_view(view);
            return Err(err);
        }
        self.shards.quiesce()?;

        // Where each log's replay stops, fixed before any is replayed, so that the total
        // counted here is the one replayed.
        let mut ends = HashMap::new();
        let sources = plan.nodes.iter().filter_map(|node| match &node.kind {
            NodeKind::Source {
                relation,
                relation_kind,
                ..
            } if backfill => Some((relation, relation_kind)),
            _ => None,
        });
        for (relation, relation_kind) in sources {
            let rows = match relation_kind {
                RelationKind::View => self.views[relation].shared.row_count().max(0) as u64,
                _ => {
                    let end = match ends.get(relation) {
                        Some(&end) => end,
                        None => self.backfill_end(*relation)?,
                    };
                    ends.insert(*relation, end);
                    match progress {
                        Some(_) => self.log_rows(*relation, end)?,
                        None => 0,
                    }
                }
            };
            if let Some(progress) = progress.as_deref_mut() {
                progress.add_total(rows);
            }
        }
        if let Some(progress) = progress.as_deref_mut() {
            progress.counted();
        }
        for node in &plan.nodes {
            let NodeKind::Source {
                relation,
                relation_kind,
                ..
            } = &node.kind
            else {
                continue;
            };
            let start = starts.get(relation).cloned().map(Arc::new);
            let backfill = backfill.then(|| Backfill {
                end: ends.get(relation).copied(),
                progress: progress.as_deref_mut(),
            });
            let reader = Reader {
                port: (placement.node[node.id], 0),
                start,
                whole: false,
            };
            self.wire_input(*relation, *relation_kind, reader, backfill)?;
        }
        self.shards.quiesce()?;
        let backfill_error = match backfill {
            true => shared.failure(),
            false => None,
        };
        if let Some(err) = backfill_error {
            self.remove_view(view);
            return Err(RunnelError::execution(
                runnel_common::SqlState::DATA_EXCEPTION,
                err,
            ));
        }
        Ok(())
    }

    /// Tells the writers' hand-over whether `source` is read (see [`FreshEntries`]).
    fn watch(&self, source: ObjectId) {
        if let Some(log) = self.sources.get(&source) {
            self.fresh.watch(source, log.is_read());
        }
    }

    /// Whether `relation` (of `kind`) is in the dataflow, so a new view or sink can read it.
    fn has_input(&self, relation: ObjectId, kind: RelationKind) -> bool {
        match kind {
            RelationKind::View => self.views.contains_key(&relation),
            _ => self.sources.contains_key(&relation),
        }
    }

    /// Connects `reader` to an input: a view's output, or a stream's or table's log. With
    /// `backfill` (a new view or sink) it first receives the input's current contents: the
    /// view's snapshot, or the log replayed up to the backfill's end (from the reader's
    /// start, for a view that starts at a Kafka position).
    fn wire_input(
        &mut self,
        relation: ObjectId,
        kind: RelationKind,
        reader: Reader,
        backfill: Option<Backfill<'_>>,
    ) -> Result<()> {
        let target = reader.port;
        match kind {
            RelationKind::View => {
                let upstream = self.views[&relation].output;
                let snapshot = backfill.is_some();
                // Each worker's part of the upstream view goes into its replica of the reader.
                let rows = self.shards.on_all(move |graph| -> Result<u64> {
                    let mut rows = 0;
                    if snapshot {
                        let part = graph.materialize(upstream)?.snapshot()?;
                        rows = part.num_rows() as u64;
                        if rows > 0 {
                            graph.push(target.0, target.1, part);
                        }
                    }
                    if let Some(wm) = graph.node_mut(upstream)?.watermark {
                        graph.push_watermark(target.0, target.1, wm);
                    }
                    graph.node_mut(upstream)?.outputs.push(target);
                    Ok(rows)
                })?;
                let mut total = 0;
                for part in rows {
                    total += part?;
                }
                if let Some(progress) = backfill.and_then(|b| b.progress) {
                    progress.advance(total);
                }
            }
            RelationKind::Stream | RelationKind::Table => {
                if let Some(Backfill { end, progress }) = backfill {
                    let unread = !self.sources[&relation].is_read();
                    let end = match end {
                        Some(end) => end,
                        None => self.backfill_end(relation)?,
                    };
                    let replayed_clock = self.replay(relation, 0, end, &reader, progress)?;
                    if let Some(source) = self.sources.get_mut(&relation) {
                        if unread && source.position != end {
                            source.position = end;
                            source.position_dirty = true;
                            source.watermark = source.watermark.max(replayed_clock);
                        }
                    }
                }
                // A restored view resumes at the source's clock (replay brought a new one
                // there already; pushing it again is a no-op).
                let clock = self.sources.get(&relation).and_then(|s| s.watermark);
                let added = reader.clone();
                self.shards.on_all(move |graph| {
                    if let Some(wm) = clock {
                        graph.push_watermark(target.0, target.1, wm);
                    }
                    graph
                        .readers
                        .entry(relation)
                        .or_default()
                        .push(added.clone());
                })?;
                if let Some(source) = self.sources.get_mut(&relation) {
                    source.readers.push(reader);
                }
                self.watch(relation);
            }
        }
        Ok(())
    }

    /// Unwires and frees a view's (or sink's) operators on every worker (its stored state is
    /// deleted by the caller).
    pub fn remove_view(&mut self, view: ObjectId) {
        let Some(state) = self.views.remove(&view) else {
            return;
        };
        state
            .shared
            .tap()
            .end(crate::subscription::EndReason::RelationDropped);
        if let Err(err) = self.shards.quiesce() {
            tracing::error!("waiting for the workers before removing view {view}: {err}");
        }
        if let Err(err) = self.shards.on_all(move |graph| graph.remove_view(view)) {
            tracing::error!("removing view {view} from the workers failed: {err}");
        }
        for source in self.sources.values_mut() {
            source.readers.retain(|r| !state.nodes.contains(&r.port.0));
        }
        let ids: Vec<ObjectId> = self.sources.keys().copied().collect();
        for id in ids {
            self.watch(id);
        }
    }

    /// Sets when the log entries read from now on were appended, at the latest (`None`: not
    /// known, e.g. a catch-up after a restart or a backfill): the changes they make to a
    /// view's contents date from then.
    pub fn set_append_time(&mut self, appended: Option<Instant>) {
        self.append_time = appended;
    }

    /// Per view whose contents changed since the last call from input with a known append
    /// time: how long before `committed` the oldest such input was appended. Called once the
    /// checkpoint that makes those changes visible is written.
    pub fn take_freshness(&mut self, committed: Instant) -> Vec<(ObjectId, Duration)> {
        self.views
            .iter()
            .filter(|(_, view)| !view.is_sink())
            .filter_map(|(&id, view)| {
                let appended = view.shared.take_oldest_input()?;
                Some((id, committed.saturating_duration_since(appended)))
            })
            .collect()
    }

    /// Rows and changes of every view (not sinks).
    pub fn view_stats(&self) -> Vec<ViewStats> {
        self.views
            .iter()
            .filter(|(_, view)| !view.is_sink())
            .map(|(&id, view)| ViewStats {
                id,
                rows: view.shared.row_count(),
                changes: view.shared.changes(),
            })
            .collect()
    }

    /// Subscribes to `view`'s changes; with `snapshot`, its contents now (pending changes
    /// included: they become visible at the next checkpoint, as the changes that follow).
    pub fn subscribe(
        &mut self,
        view: ObjectId,
        snapshot: bool,
        buffer: usize,
    ) -> Result<(
        Option<ChangeBatch>,
        tokio::sync::mpsc::Receiver<SubscriptionEvent>,
    )> {
        let state = self
            .views
            .get(&view)
            .ok_or_else(|| RunnelError::internal(format!("view {view} is not in the dataflow")))?;
        let (output, shared) = (state.output, state.shared.clone());
        self.shards.quiesce()?;
        let contents = match snapshot {
            true => {
                let parts = self
                    .shards
                    .on_all(move |graph| graph.materialize(output)?.snapshot())?
                    .into_iter()
                    .collect::<Result<Vec<_>>>()?;
                let schema = parts
                    .first()
                    .map(|p| p.schema())
                    .ok_or_else(|| RunnelError::internal("a dataflow without workers"))?;
                Some(ChangeBatch::concat(&schema, &parts)?)
            }
            false => None,
        };
        let events = shared.tap().subscribe(buffer);
        Ok((contents, events))
    }

    /// Subscribes to the entries of a stream's or table's log from the position the dataflow
    /// has read to; returns that position (the subscriber's snapshot is the log before it).
    /// A log nothing reads yet is read from its end on.
    pub fn subscribe_source(
        &mut self,
        source: ObjectId,
        buffer: usize,
    ) -> Result<(u64, tokio::sync::mpsc::Receiver<SubscriptionEvent>)> {
        let read = self
            .sources
            .get(&source)
            .ok_or_else(|| {
                RunnelError::internal(format!("source {source} is not in the dataflow"))
            })?
            .is_read();
        if !read {
            let end = self.log_end(source)?;
            let watermark = self.watermark_at(source, end)?;
            if let Some(log) = self.sources.get_mut(&source) {
                if log.position != end {
                    log.position = end;
                    log.position_dirty = true;
                    log.watermark = watermark;
                }
            }
        }
        let log = self
            .sources
            .get_mut(&source)
            .ok_or_else(|| RunnelError::internal("subscribed source vanished"))?;
        let subscribed = (log.position, log.tap.subscribe(buffer));
        self.watch(source);
        Ok(subscribed)
    }

    /// Whether any relation has subscribers.
    pub fn has_subscriptions(&mut self) -> bool {
        self.sources.values().any(|source| source.tap.is_active())
            || self
                .views
                .values()
                .any(|view| view.shared.tap().is_active())
    }

    /// Hands every subscribed relation's changes since the last checkpoint to its subscribers
    /// as `checkpoint`'s (called once that checkpoint is written).
    pub fn publish_subscriptions(&mut self, checkpoint: u64) -> Result<()> {
        for view in self.views.values() {
            view.shared.tap().publish(checkpoint)?;
        }
        for source in self.sources.values_mut() {
            source.tap.publish(checkpoint)?;
        }
        Ok(())
    }

    /// Views that stopped updating, with their error.
    pub fn failed_views(&self) -> Vec<(ObjectId, String)> {
        self.views
            .iter()
            .filter_map(|(id, v)| v.shared.failure().map(|e| (*id, e)))
            .collect()
    }

    /// Reads new log entries of every source and hands them to the workers. Returns true if
    /// anything was read (call again until it returns false to drain). The workers may still
    /// be processing them: [`Dataflow::checkpoint`] waits for them.
    pub fn poll_sources(&mut self) -> Result<bool> {
        let ids: Vec<ObjectId> = self.sources.keys().copied().collect();
        let mut reads = Vec::new();
        for id in ids {
            let (position, subscribed) = {
                let s = &self.sources[&id];
                (s.position, s.is_read())
            };
            if !subscribed {
                continue;
            }
            let entries = self.read_log(id, position, u64::MAX, LOG_READ_CHUNK)?;
            let Some(last) = entries.last().map(|e| e.seq) else {
                continue;
            };
            let source = self
                .sources
                .get_mut(&id)
                .expect("the source being polled exists");
            for entry in &entries {
                if let Some(batch) = &entry.batch {
                    *self.rows_read.entry(id).or_insert(0) += batch.num_rows() as u64;
                    source.tap.record(batch);
                }
                if let Some(wm) = entry.watermark {
                    if source.watermark.is_none_or(|w| wm > w) {
                        source.watermark = Some(wm);
                    }
                }
            }
            source.position = last + 1;
            source.position_dirty = true;
            reads.push(SourceRead {
                source: id,
                table: source.table,
                entries,
            });
        }
        if reads.is_empty() {
            return Ok(false);
        }
        self.shards.feed(Feed::Live {
            reads,
            append_time: self.append_time,
        })?;
        Ok(true)
    }

    /// Where a backfill's replay of `source` stops. A source nobody read yet was never
    /// advanced: its log end is where the live part starts. Otherwise the position is current
    /// (the worker drains before adding a view) and later entries arrive live.
    fn backfill_end(&self, source: ObjectId) -> Result<u64> {
        match !self.sources[&source].is_read() {
            true => self.log_end(source),
            false => Ok(self.sources[&source].position),
        }
    }

    /// The rows of `source`'s log entries before `end`, from their headers (and, for entries
    /// retention deleted, from their indexes).
    fn log_rows(&self, source: ObjectId, end: u64) -> Result<u64> {
        // Entries each have an index entry with their rows: reading those is reading a few
        // bytes per entry, not the entries (a backfill's count waited for that). A table's log
        // written before tables' logs were indexed is counted from the entries.
        let (mut rows, mut indexed) = (0u64, 0u64);
        log_index::for_each_index(&self.store, source, 0, end, |_, index| {
            rows += index.rows;
            indexed += 1;
            Ok(true)
        })?;
        if indexed == end {
            return Ok(rows);
        }
        let mut trimmed = 0u64;
        let log_start = self.sources[&source].log_start.min(end);
        if log_start > 0 && self.sources[&source].keeping.archive.is_some() {
            log_index::for_each_index(&self.store, source, 0, log_start, |_, index| {
                trimmed += index.rows;
                Ok(true)
            })?;
        }
        let rows = sum_stored(
            &self.store,
            &keys::log_entry(source, 0),
            &keys::log_entry(source, end),
            |value| stored_batch_rows(value).map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        )?;
        Ok(u64::try_from(rows).unwrap_or(0) + trimmed)
    }

    /// One past the last sequence number `source`'s log had (0 when it never had one).
    fn log_end(&self, source: ObjectId) -> Result<u64> {
        Ok(log_index::log_end(&self.store, source)?)
    }

    /// Log entries `[from, to)` of `source`, at most `limit` of them. Entries kept as a
    /// recipe are made again by the source's archive (its generator).
    fn read_log(
        &self,
        source: ObjectId,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>> {
        let schema = self.sources[&source].schema.clone();
        let fresh = self.fresh.take(source, from, to, limit, LOG_READ_ROWS);
        if !fresh.is_empty() {
            return fresh
                .into_iter()
                .map(|(seq, stored)| stored_entry(seq, stored, &schema))
                .collect();
        }
        let archive = self.sources[&source].keeping.archive.as_deref();
        read_stored_entries(&self.store, source, from, to, limit, LOG_READ_ROWS, archive)?
            .into_iter()
            .map(|(seq, stored)| stored_entry(seq, stored, &schema))
            .collect()
    }

    /// Feeds log entries `[from, to)` of `source` into the reader's node only (backfill), in
    /// slices `progress` sizes and hears of; returns the watermark the last of them carried.
    fn replay(
        &mut self,
        source: ObjectId,
        from: u64,
        to: u64,
        reader: &Reader,
        mut progress: Option<&mut BackfillProgress>,
    ) -> Result<Option<i64>> {
        let mut clock = None;
        let mut next = from;
        let log_start = self.sources[&source].log_start;
        if next < log_start.min(to) {
            clock = self.replay_trimmed(source, next, log_start.min(to), reader, &mut progress)?;
            next = log_start;
        }
        while next < to {
            let entries = self.read_log(source, next, to, LOG_READ_CHUNK)?;
            if entries.is_empty() {
                break;
            }
            for entry in entries {
                next = entry.seq + 1;
                clock = self
                    .replay_entry(source, entry, reader, progress.as_deref_mut())?
                    .or(clock);
            }
        }
        self.shards.quiesce()?;
        Ok(clock)
    }

    /// Feeds one log entry into the backfilling node, in slices of at most what `progress`
    /// asks for (each reported once handed to the workers); returns the entry's watermark.
    fn replay_entry(
        &mut self,
        source: ObjectId,
        entry: LogEntry,
        reader: &Reader,
        mut progress: Option<&mut BackfillProgress>,
    ) -> Result<Option<i64>> {
        let watermark = entry.watermark;
        let table = self.sources[&source].table;
        let mut rest = entry.batch.map(|batch| (batch, entry.positions));
        if rest.is_none() {
            self.feed_replay(source, table, reader, LogEntry::clock(entry.seq, watermark))?;
        }
        while let Some(rows) = rest.take() {
            let at_most = progress.as_ref().map_or(usize::MAX, |p| p.slice_rows());
            let ((slice, positions), tail) = split_rows(rows, at_most);
            rest = tail;
            let done = slice.num_rows() as u64;
            let part = LogEntry {
                seq: entry.seq,
                batch: Some(slice),
                positions,
                // The clock moves after the entry's last row.
                watermark: if rest.is_none() { watermark } else { None },
            };
            self.feed_replay(source, table, reader, part)?;
            if let Some(progress) = progress.as_deref_mut() {
                progress.advance(done);
            }
        }
        Ok(watermark)
    }

    fn feed_replay(
        &mut self,
        source: ObjectId,
        table: bool,
        reader: &Reader,
        entry: LogEntry,
    ) -> Result<()> {
        self.shards.feed(Feed::Replay {
            read: SourceRead {
                source,
                table,
                entries: vec![entry],
            },
            target: reader.port,
            start: reader.start.clone(),
            whole: reader.whole,
        })
    }

    /// Replays only the clock of a trimmed entry a view's start leaves out (from its index);
    /// returns it.
    fn replay_clock_of(
        &mut self,
        source: ObjectId,
        table: bool,
        reader: &Reader,
        seq: u64,
        index: EntryIndex,
    ) -> Result<Option<i64>> {
        let watermark = index.watermark_after();
        if watermark.is_some() {
            self.feed_replay(source, table, reader, LogEntry::clock(seq, watermark))?;
        }
        Ok(watermark)
    }

    /// Replays entries `[from, to)` that retention deleted from `source`'s log, rebuilt by its
    /// archive (a Kafka stream's topic); fails for a stream that has none. Entries a view's
    /// `start` leaves out entirely are not read again, only their watermarks replayed.
    fn replay_trimmed(
        &mut self,
        source: ObjectId,
        from: u64,
        to: u64,
        reader: &Reader,
        progress: &mut Option<&mut BackfillProgress>,
    ) -> Result<Option<i64>> {
        let Some(archive) = self.sources[&source].keeping.archive.clone() else {
            let earliest = earliest_entry(&self.store, source)?;
            return Err(trimmed_error(&format!("#{source}"), earliest));
        };
        let schema = self.sources[&source].schema.clone();
        let table = self.sources[&source].table;
        let start = reader.start.clone();
        let mut clock = None;
        let mut next = from;
        while next < to {
            let mut chunk: Vec<(u64, EntryIndex)> = Vec::new();
            log_index::for_each_index(&self.store, source, next, to, |seq, index| {
                chunk.push((seq, index));
                Ok(chunk.len() < ARCHIVE_READ_ENTRIES)
            })?;
            let Some(&(last, _)) = chunk.last() else {
                break;
            };
            if chunk.first().map(|(seq, _)| *seq) != Some(next)
                || chunk.windows(2).any(|w| w[1].0 != w[0].0 + 1)
            {
                return Err(RunnelError::internal(format!(
                    "the log index of source {source} misses entries from {next} on"
                )));
            }
            next = last + 1;
            // Entries wholly before the view's start: only their watermarks matter.
            let (needed, skipped): (Vec<_>, Vec<_>) =
                chunk
                    .into_iter()
                    .partition(|(_, index)| match (start.as_deref(), &index.kafka) {
                        (Some(start), Some(recipe)) if !recipe.partitions.is_empty() => recipe
                            .partitions
                            .iter()
                            .any(|(p, (_, last))| start.get(p).is_none_or(|s| last >= s)),
                        _ => true,
                    });
            let mut skipped = skipped.into_iter().peekable();
            let mut rebuilt: Vec<(u64, datafusion::arrow::record_batch::RecordBatch)> = Vec::new();
            archive.rebuild(&needed, &mut |seq, stored| {
                rebuilt.push((seq, stored));
                Ok(())
            })?;
            for (seq, stored) in rebuilt {
                while let Some((skipped_seq, index)) = skipped.next_if(|(s, _)| *s < seq) {
                    clock = self
                        .replay_clock_of(source, table, reader, skipped_seq, index)?
                        .or(clock);
                }
                let entry = stored_entry(seq, stored, &schema)?;
                clock = self
                    .replay_entry(source, entry, reader, progress.as_deref_mut())?
                    .or(clock);
            }
            for (skipped_seq, index) in skipped {
                clock = self
                    .replay_clock_of(source, table, reader, skipped_seq, index)?
                    .or(clock);
            }
        }
        Ok(clock)
    }

    /// Deletes the entries of every stream log that its retention no longer keeps and every
    /// reader has read (called after a checkpoint, so read means committed). The last entry
    /// read is always kept: it carries the clock the dataflow resumes from. Returns how many
    /// entries were deleted.
    pub fn trim_logs(&mut self, now_micros: i64) -> Result<u64> {
        let mut deleted = 0;
        let ids: Vec<ObjectId> = self
            .sources
            .iter()
            .filter(|(_, s)| {
                s.keeping
                    .retention
                    .is_some_and(|r| r != Retention::Unlimited)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let end = self.log_end(id)?;
            let source = &self.sources[&id];
            // Read by every reader: before the position (a log nothing reads: all of it).
            let read_to = match source.is_read() {
                true => source.position,
                false => end,
            };
            let bound = read_to.saturating_sub(1);
            let start = source.log_start;
            if bound <= start {
                continue;
            }
            let cut = match source.keeping.retention {
                Some(Retention::Age(age)) => {
                    let cutoff = now_micros.saturating_sub(age);
                    let mut cut = start;
                    log_index::for_each_index(&self.store, id, start, bound, |seq, index| {
                        if index.appended_at >= cutoff {
                            return Ok(false);
                        }
                        cut = seq + 1;
                        Ok(true)
                    })?;
                    cut
                }
                Some(Retention::Bytes(limit)) => {
                    let (mut bytes, counted_to) =
                        (source.retained_bytes, source.bytes_counted_to.max(start));
                    log_index::for_each_index(&self.store, id, counted_to, end, |_, index| {
                        bytes += index.bytes;
                        Ok(true)
                    })?;
                    let mut cut = start;
                    if bytes > limit {
                        log_index::for_each_index(&self.store, id, start, bound, |seq, index| {
                            bytes -= index.bytes;
                            cut = seq + 1;
                            Ok(bytes > limit)
                        })?;
                    }
                    let source = self.sources.get_mut(&id).expect("listed above");
                    source.retained_bytes = bytes;
                    source.bytes_counted_to = end;
                    cut
                }
                _ => start,
            };
            if cut <= start {
                continue;
            }
            let archived = self.sources[&id].keeping.archive.is_some();
            let mut batch = WriteBatch::default();
            batch.delete_range(&keys::log_entry(id, start), &keys::log_entry(id, cut));
            if !archived {
                // A Kafka stream keeps the indexes: they are the recipes to read it again.
                batch.delete_range(&keys::log_index(id, start), &keys::log_index(id, cut));
            }
            batch.put(keys::log_start(id), cut.to_le_bytes());
            self.store.write(batch)?;
            if let Some(source) = self.sources.get_mut(&id) {
                source.log_start = cut;
            }
            deleted += cut - start;
        }
        Ok(deleted)
    }

    /// Adds a sink reading `input` (a view, or a stream's or table's log). With `backfill`
    /// (a new sink) it first receives the input's current contents as inserts. The sink's
    /// operator runs on worker 0, which every change of its input is sent to.
    pub fn add_sink(
        &mut self,
        sink: ObjectId,
        input: ObjectId,
        input_kind: RelationKind,
        op: Box<dyn Operator>,
        backfill: bool,
    ) -> Result<()> {
        if !self.has_input(input, input_kind) {
            return Err(RunnelError::internal(format!(
                "sink input {input} is not in the dataflow"
            )));
        }
        self.shards.quiesce()?;
        let view_input = match input_kind {
            RelationKind::View => Some(self.views[&input].output),
            _ => None,
        };
        let node = self.graph_len;
        let nodes: Vec<usize> = match view_input {
            Some(_) => vec![node, node + 1],
            None => vec![node],
        };
        self.graph_len += nodes.len();
        let shared = ViewOutput::detached();
        let op = Arc::new(Mutex::new(Some(op)));
        {
            let shared = shared.clone();
            let added = self.shards.on_all(move |graph| {
                let op = match graph.shard {
                    0 => op.lock().unwrap_or_else(|p| p.into_inner()).take(),
                    _ => None,
                };
                graph.add_sink(sink, op, view_input, shared.clone())
            })?;
            for result in added {
                result?;
            }
        }
        self.views.insert(
            sink,
            ViewState {
                nodes: nodes.clone(),
                output: node,
                shared,
                failure_saved: false,
            },
        );
        // A view's changes go through the exchange in front of the sink; a log's rows all to
        // worker 0.
        let reader = Reader {
            port: (nodes[nodes.len() - 1], 0),
            start: None,
            whole: view_input.is_none(),
        };
        let backfill = backfill.then(Backfill::default);
        self.wire_input(input, input_kind, reader, backfill)?;
        self.shards.quiesce()
    }

    /// Waits for the workers, then adds their operators' changed state, the views' row
    /// counts and failures and the source positions to `batch`.
    pub fn checkpoint(&mut self, batch: &mut WriteBatch) -> Result<()> {
        self.shards.quiesce()?;
        let workers = self.shards.count();
        if workers == 1 || self.checkpoint_costs.build_in_turn {
            // Each worker adds its part to the one batch in turn: no join, but the others
            // wait meanwhile (see `CheckpointCosts`). One worker writes into it directly.
            let mut builds = Vec::with_capacity(workers);
            for shard in 0..workers {
                let mut handed = std::mem::take(batch);
                let (returned, built, took) = self.shards.on_one(shard, move |graph| {
                    let started = Instant::now();
                    let built = graph.checkpoint(&mut handed);
                    (handed, built, started.elapsed())
                })?;
                *batch = returned;
                built?;
                builds.push(took);
            }
            if workers > 1 {
                self.checkpoint_costs
                    .built_in_turn(&builds, batch.size_in_bytes());
            }
        } else {
            // The workers build their parts at once, each in a batch of its own, and the
            // coordinator joins them (two copies of the bytes).
            let room = self.worker_batch_bytes + self.worker_batch_bytes / 4;
            let parts = self
                .shards
                .on_all(move |graph| {
                    let started = Instant::now();
                    let mut part = WriteBatch::with_capacity_bytes(room);
                    graph
                        .checkpoint(&mut part)
                        .map(|()| (part, started.elapsed()))
                })?
                .into_iter()
                .collect::<Result<Vec<_>>>()?;
            self.worker_batch_bytes = parts
                .iter()
                .map(|(part, _)| part.size_in_bytes())
                .max()
                .unwrap_or(0);
            let builds: Vec<Duration> = parts.iter().map(|(_, took)| *took).collect();
            let joining = Instant::now();
            let room_before = self.join_buffer.capacity();
            let mut all = Vec::with_capacity(parts.len() + 1);
            all.push(std::mem::take(batch));
            all.extend(parts.into_iter().map(|(part, _)| part));
            *batch = runnel_state::concat_batches(all, &mut self.join_buffer)?;
            // A join that first grew the buffer paid once for fresh pages: not its usual cost.
            let join = (self.join_buffer.capacity() == room_before).then(|| joining.elapsed());
            self.checkpoint_costs
                .built_at_once(&builds, join, batch.size_in_bytes());
        }
        for (id, view) in &mut self.views {
            view.shared.checkpoint(batch);
            if !view.failure_saved {
                if let Some(message) = view.shared.failure() {
                    batch.put(failure_key(*id), message.as_bytes());
                    view.failure_saved = true;
                }
            }
        }
        for (id, source) in &mut self.sources {
            if source.position_dirty {
                batch.put(keys::position(*id), source.position.to_le_bytes());
                source.position_dirty = false;
            }
        }
        Ok(())
    }

    /// The operators' changed state takes half the state cache: a checkpoint now would let it
    /// be evicted (see `runnel_state::CacheBudget`).
    pub fn state_wants_checkpoint(&self) -> bool {
        self.budget.wants_checkpoint()
    }

    /// Next sequence number each source will be read from.
    pub fn positions(&self) -> Vec<(ObjectId, u64)> {
        self.sources
            .iter()
            .map(|(id, s)| (*id, s.position))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;

    use super::*;

    /// A checkpoint is built in turn when the join would cost more than the workers' waiting
    /// for each other, and at once otherwise; before any join was measured, at once.
    #[test]
    fn checkpoints_are_built_the_cheaper_way() {
        let ms = Duration::from_millis;
        let mut costs = CheckpointCosts::default();
        costs.built_in_turn(&[ms(10), ms(500)], 1 << 20);
        assert!(!costs.build_in_turn, "no join measured yet: at once");
        // State that is slow to build and quick to join (Nexmark q8): at once.
        costs.built_at_once(&[ms(200), ms(210)], Some(ms(5)), 10 << 20);
        assert!(!costs.build_in_turn);
        // Many cheap rows (a temporal filter's): the join took longer than building.
        let mut costs = CheckpointCosts::default();
        costs.built_at_once(&[ms(20), ms(25)], None, 100 << 20);
        assert!(
            !costs.build_in_turn,
            "a join that grew its buffer is not measured"
        );
        costs.built_at_once(&[ms(20), ms(25)], Some(ms(100)), 100 << 20);
        assert!(costs.build_in_turn);
        // In turn, the join is estimated from the rate measured before: 100 MB would take
        // ~100 ms, more than the 30 ms the second worker waited.
        costs.built_in_turn(&[ms(30), ms(35)], 100 << 20);
        assert!(costs.build_in_turn);
        // Every 16th checkpoint in turn, one is built at once to measure the join again.
        for _ in 2..CheckpointCosts::MEASURE_JOIN_EVERY {
            costs.built_in_turn(&[ms(30), ms(35)], 100 << 20);
            assert!(costs.build_in_turn);
        }
        costs.built_in_turn(&[ms(30), ms(35)], 100 << 20);
        assert!(!costs.build_in_turn);
        costs.built_at_once(&[ms(30), ms(35)], Some(ms(100)), 100 << 20);
        assert!(costs.build_in_turn);
        // The state grew expensive to build: back to building at once.
        costs.built_in_turn(&[ms(400), ms(420)], 100 << 20);
        assert!(!costs.build_in_turn);
    }

    /// Entries `0..n` of source 1, each one row (`seq`), appended at `seq` seconds and
    /// indexed.
    fn store_with_log(n: u64) -> (tempfile::TempDir, Arc<Store>, SchemaRef) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(dir.path(), Default::default()).expect("a store");
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let mut batch = WriteBatch::default();
        for seq in 0..n {
            let data = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from_iter_values([seq as i64]))],
            )
            .expect("a batch");
            let stored = ChangeBatch::inserts(data).to_stored().expect("stored");
            let encoded = ipc::encode_batch(&stored).expect("encoded");
            let index = EntryIndex {
                appended_at: seq as i64 * 1_000_000,
                bytes: 100,
                rows: 1,
                kafka: None,
                generated: None,
            };
            batch.put(keys::log_index(1, seq), index.encode().expect("index"));
            batch.put(keys::log_entry(1, seq), encoded);
        }
        store.write(batch).expect("written");
        (dir, store, schema)
    }

    fn dataflow_over(store: &Arc<Store>, schema: &SchemaRef, retention: Retention) -> Dataflow {
        let budget = runnel_state::CacheBudget::new(1 << 20);
        let mut dataflow =
            Dataflow::new(store.clone(), budget, 1, Default::default()).expect("a dataflow");
        let keeping = LogKeeping {
            retention: Some(retention),
            archive: None,
        };
        dataflow
            .add_source(1, schema.clone(), keeping, false)
            .expect("source");
        dataflow
    }

    fn first_entry(store: &Store) -> Option<u64> {
        let prefix = keys::log_prefix(1);
        let mut first = None;
        store
            .for_each_in_range(&prefix, &keys::prefix_end(&prefix), |key, _| {
                first = keys::log_entry_seq(key);
                Ok(false)
            })
            .expect("scanned");
        first
    }

    #[test]
    fn trimming_by_size_keeps_the_newest_and_the_last_entry_read() {
        let (_dir, store, schema) = store_with_log(10);
        // 350 bytes: the newest three entries (100 bytes each) fit, the fourth does not.
        let mut dataflow = dataflow_over(&store, &schema, Retention::Bytes(350));
        // A log nothing reads is trimmed by its retention alone.
        assert_eq!(dataflow.trim_logs(0).expect("trimmed"), 7);
        assert_eq!(log_index::log_start(&store, 1).expect("start"), 7);
        assert_eq!(first_entry(&store), Some(7));
        // An embedded stream's indexes go with its entries.
        let mut indexed = Vec::new();
        log_index::for_each_index(&store, 1, 0, u64::MAX, |seq, _| {
            indexed.push(seq);
            Ok(true)
        })
        .expect("indexes");
        assert_eq!(indexed, vec![7, 8, 9]);
        // Nothing more to do; numbering goes on after the last entry.
        assert_eq!(dataflow.trim_logs(0).expect("trimmed"), 0);
        assert_eq!(dataflow.log_end(1).expect("end"), 10);
    }

    #[test]
    fn trimming_by_age_stops_at_what_readers_have_not_read() {
        let (_dir, store, schema) = store_with_log(10);
        let mut dataflow = dataflow_over(&store, &schema, Retention::Age(2_000_000));
        // A reader at position 4 has read entries 0..4; entry 3 carries its clock and stays.
        if let Some(source) = dataflow.sources.get_mut(&1) {
            source.position = 4;
            source.readers.push(Reader {
                port: (0, 0),
                start: None,
                whole: false,
            });
        }
        // At 100 s every entry is older than 2 s: only what was read goes.
        assert_eq!(dataflow.trim_logs(100_000_000).expect("trimmed"), 3);
        assert_eq!(first_entry(&store), Some(3));
        // Read on to the end: at 7.5 s entries appended before 5.5 s go (0..=5), up to the
        // last one read.
        if let Some(source) = dataflow.sources.get_mut(&1) {
            source.position = 10;
        }
        assert_eq!(dataflow.trim_logs(7_500_000).expect("trimmed"), 3);
        assert_eq!(first_entry(&store), Some(6));
        // Once every entry is gone, the log still ends where it did.
        if let Some(source) = dataflow.sources.get_mut(&1) {
            source.keeping.retention = Some(Retention::Age(1));
        }
        dataflow.trim_logs(100_000_000).expect("trimmed");
        assert_eq!(first_entry(&store), Some(9));
        assert_eq!(dataflow.log_end(1).expect("end"), 10);
    }

    #[test]
    fn split_rows_cuts_rows_and_positions_alike() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let data =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..10))])
                .expect("a batch");
        let rows = (
            ChangeBatch::inserts(data),
            Some((
                Int32Array::from_iter_values((0..10).map(|i| i % 2)),
                Int64Array::from_iter_values(100..110),
            )),
        );
        let (whole, none) = split_rows(rows.clone(), 10);
        assert_eq!(whole.0.num_rows(), 10);
        assert!(none.is_none());
        let ((head, head_positions), tail) = split_rows(rows, 4);
        let (tail, tail_positions) = tail.expect("rows are left");
        assert_eq!((head.num_rows(), tail.num_rows()), (4, 6));
        let first = |b: &ChangeBatch| {
            b.data
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .map(|a| a.value(0))
        };
        assert_eq!((first(&head), first(&tail)), (Some(0), Some(4)));
        let offsets = |p: Option<(Int32Array, Int64Array)>| p.map(|(_, o)| o.value(0));
        assert_eq!(
            (offsets(head_positions), offsets(tail_positions)),
            (Some(100), Some(104))
        );
    }
}
