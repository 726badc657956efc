//! Appending to source logs. Each stream and table has one writer that hands out sequence
//! numbers under a lock held until the write is committed, so entries become visible in
//! sequence order and the dataflow never skips one.
//!
//! A stream with a watermark runs its event-time clock here (see `runnel_common::time`):
//! late rows are dropped and counted before they reach the log, every entry records the
//! watermark after it in its schema metadata, and the clock's state is committed in the same
//! write as the entry. So the log alone decides what every view sees, live or replayed.
//!
//! Every entry is indexed (`runnel_state::log_index`) in the same write: when it was appended,
//! its size and rows (for a stream's retention, `pg_relation_size` and a backfill's row count),
//! and for a Kafka stream the recipe that rebuilds it from the topic ([`rebuild_kafka_entry`]
//! runs that recipe). A generated stream's entry keeps only its recipe
//! ([`GeneratedRecipe`]): the rows are offered to the dataflow in memory and never written;
//! [`rebuild_generated_entry`] makes them again for whoever reads the entry from the store.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Int32Array, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::Schema;
use runnel_common::time::WATERMARK_METADATA;
use runnel_common::{
    ChangeBatch, Result, RunnelError, WatermarkClock, WatermarkDef, KAFKA_PARTITION_COLUMN,
};
use runnel_plan::ObjectId;
use runnel_runtime::fresh_entries::FreshEntries;
use runnel_state::log_index::{self, EntryIndex, GeneratedRecipe, KafkaRecipe};
use runnel_state::{ipc, keys, Store, WriteBatch};

pub struct SourceWriter {
    id: ObjectId,
    /// The lock also serialises a table's read-modify-write.
    state: tokio::sync::Mutex<WriterState>,
}

struct WriterState {
    next_seq: u64,
    /// Rows appended to the log since the server started (a table's changes: an update is a
    /// delete and an insert), for the metrics.
    rows_appended: u64,
    /// Streams with a watermark.
    clock: Option<WatermarkClock>,
    /// Where committed entries are offered to the dataflow.
    fresh: Option<Arc<FreshEntries>>,
}

impl SourceWriter {
    /// Rows appended to the log since the server started.
    pub async fn rows_appended(&self) -> u64 {
        self.state.lock().await.rows_appended
    }

    /// `fresh`: where committed entries are offered to the dataflow (see
    /// `runnel_runtime::fresh_entries`).
    pub fn open(
        store: &Arc<Store>,
        id: ObjectId,
        watermark: Option<WatermarkDef>,
        fresh: Option<Arc<FreshEntries>>,
    ) -> Result<SourceWriter> {
        let next_seq = runnel_state::log_index::log_end(store, id)?;
        let clock = match watermark {
            None => None,
            Some(def) => Some(match store.get(&keys::watermark_clock(id))? {
                Some(bytes) => {
                    let mut clock: WatermarkClock =
                        serde_json::from_slice(&bytes).map_err(|e| {
                            RunnelError::internal(format!("stored watermark clock is corrupt: {e}"))
                        })?;
                    clock.settle();
                    clock
                }
                None => WatermarkClock::new(def),
            }),
        };
        Ok(SourceWriter {
            id,
            state: tokio::sync::Mutex::new(WriterState {
                next_seq,
                rows_appended: 0,
                clock,
                fresh,
            }),
        })
    }

    /// Takes the writer's lock; while held, the caller may read the relation's current rows
    /// and then [`LockedWriter::commit`] changes computed from them.
    pub async fn lock(&self) -> LockedWriter<'_> {
        LockedWriter {
            id: self.id,
            state: self.state.lock().await,
        }
    }

    /// The stream's event-time clock as last committed (`None` without a watermark).
    pub async fn clock(&self) -> Option<WatermarkClock> {
        self.state.lock().await.clock.clone()
    }
}

pub struct LockedWriter<'a> {
    id: ObjectId,
    state: tokio::sync::MutexGuard<'a, WriterState>,
}

impl LockedWriter<'_> {
    /// The sequence number the next entry gets: every entry before it is committed.
    pub fn next_seq(&self) -> u64 {
        self.state.next_seq
    }

    /// Appends `changes` to the log and applies `extra` (table rows) in one atomic write.
    pub fn commit(
        &mut self,
        store: &Store,
        changes: &[ChangeBatch],
        mut batch: WriteBatch,
    ) -> Result<()> {
        let staged = self.stage(changes, &mut batch)?;
        store.write(batch)?;
        self.staged_written(staged);
        Ok(())
    }

    /// Adds the log entries of `changes` to `batch`, a write that may carry other relations'
    /// entries too (a transaction's COMMIT). Once `batch` is written, tell this writer with
    /// [`LockedWriter::staged_written`]; if it is not, nothing changed.
    pub fn stage(&mut self, changes: &[ChangeBatch], batch: &mut WriteBatch) -> Result<Staged> {
        let stored: Vec<RecordBatch> = changes
            .iter()
            .filter(|c| !c.is_empty())
            .map(ChangeBatch::to_stored)
            .collect::<Result<_>>()?;
        self.stage_entries(&stored, None, batch)
    }

    /// Appends rows to a stream's log (after its clock dropped the late ones) with `extra`
    /// (Kafka offsets) in one atomic write. Returns how many rows were appended. A Kafka
    /// chunk passes its `recipe` (the records it read), which the entry's index keeps.
    pub fn commit_stream(
        &mut self,
        store: &Store,
        rows: RecordBatch,
        recipe: Option<KafkaRecipe>,
        mut extra: WriteBatch,
    ) -> Result<usize> {
        let recipe = recipe.map(Recipe::Kafka);
        let (n, staged) = self.stage_stream_from(rows, recipe, None, &mut extra)?;
        store.write(extra)?;
        self.staged_written(staged);
        Ok(n)
    }

    /// [`LockedWriter::commit_stream`] for rows of a generator, which the log keeps as their
    /// `recipe` only. The generator's partitions are not a column of the rows: `partitions`
    /// names each row's, for the clock.
    pub fn commit_generated(
        &mut self,
        store: &Store,
        rows: RecordBatch,
        partitions: &Int32Array,
        recipe: GeneratedRecipe,
        mut extra: WriteBatch,
    ) -> Result<usize> {
        let recipe = Some(Recipe::Generated(recipe));
        let (n, staged) = self.stage_stream_from(rows, recipe, Some(partitions), &mut extra)?;
        store.write(extra)?;
        self.staged_written(staged);
        Ok(n)
    }

    /// [`LockedWriter::commit_stream`] into a write of several relations (see
    /// [`LockedWriter::stage`]). Returns how many rows will be appended.
    pub fn stage_stream(
        &mut self,
        rows: RecordBatch,
        extra: &mut WriteBatch,
    ) -> Result<(usize, Staged)> {
        self.stage_stream_from(rows, None, None, extra)
    }

    /// `partitions`: each row's partition when it is not the rows' Kafka partition column.
    fn stage_stream_from(
        &mut self,
        rows: RecordBatch,
        mut recipe: Option<Recipe>,
        partitions: Option<&Int32Array>,
        extra: &mut WriteBatch,
    ) -> Result<(usize, Staged)> {
        let Some(clock) = self.state.clock.as_mut() else {
            let n = rows.num_rows();
            let stored = ChangeBatch::inserts(rows).to_stored()?;
            let staged = self.stage_entries(&[stored], recipe, extra)?;
            return Ok((n, staged));
        };
        if let Some(recipe) = recipe.as_mut() {
            *recipe.clock_before() = Some(clock.clone());
        }
        let before = clock.watermark;
        let rows = observe_clock(clock, rows, partitions)?;
        let moved = clock.watermark != before;
        let n = rows.num_rows();
        if let Some(recipe) = recipe.as_mut() {
            *recipe.watermark_after() = clock.watermark;
        }
        let entries = clocked_entries(self.id, clock, rows, moved, extra)?;
        let staged = self.stage_entries(&entries, recipe, extra)?;
        Ok((n, staged))
    }

    /// The staged entries are written: later entries follow them (and the dataflow may
    /// take them from memory).
    pub fn staged_written(&mut self, staged: Staged) {
        self.state.next_seq = staged.next_seq;
        self.state.rows_appended += staged.rows;
        if let Some(fresh) = &self.state.fresh {
            for (seq, entry) in &staged.entries {
                fresh.offer(self.id, *seq, entry);
            }
        }
    }

    /// Registers a Kafka stream's partitions with its clock (each holds the watermark back
    /// until it sends or goes idle).
    pub fn add_partitions(&mut self, partitions: &[i32]) {
        if let Some(clock) = self.state.clock.as_mut() {
            clock.add_partitions(partitions.iter().copied());
        }
    }

    /// Marks partitions idle; when that moves the watermark, appends an entry without rows
    /// that carries it (a Kafka stream's: its recipe reads no record). Returns whether the
    /// watermark moved.
    pub fn set_idle(&mut self, store: &Store, partitions: &[i32]) -> Result<bool> {
        self.move_clock(store, true, |clock| clock.set_idle(partitions))
    }

    /// Marks a generator's partitions finished (they never send again); when that moves the
    /// watermark, appends an entry without rows that carries it. The clock's state is
    /// written either way, so calling it again after a restart changes nothing.
    pub fn finish_partitions(&mut self, store: &Store, partitions: &[i32]) -> Result<bool> {
        self.move_clock(store, false, |clock| clock.finish(partitions))
    }

    /// Changes the clock by `change` (true: the watermark moved) and commits its state,
    /// with an entry without rows carrying the watermark when it moved (`kafka`: the entry
    /// is indexed with a recipe that reads no record).
    fn move_clock(
        &mut self,
        store: &Store,
        kafka: bool,
        change: impl FnOnce(&mut WatermarkClock) -> bool,
    ) -> Result<bool> {
        let Some(clock) = self.state.clock.as_mut() else {
            return Ok(false);
        };
        let moved = change(clock);
        let mut extra = WriteBatch::default();
        let empty = RecordBatch::new_empty(Arc::new(Schema::empty()));
        let entries = clocked_entries(self.id, clock, empty, moved, &mut extra)?;
        let recipe = kafka.then(|| {
            Recipe::Kafka(KafkaRecipe {
                watermark_after: clock.watermark,
                ..KafkaRecipe::default()
            })
        });
        let staged = self.stage_entries(&entries, recipe, &mut extra)?;
        store.write(extra)?;
        self.staged_written(staged);
        Ok(moved)
    }

    /// Partitions of the clock that are currently idle.
    pub fn idle_partitions(&self) -> Vec<i32> {
        self.state.clock.as_ref().map_or_else(Vec::new, |c| {
            c.partitions
                .iter()
                .filter(|(_, p)| p.idle)
                .map(|(&id, _)| id)
                .collect()
        })
    }

    /// Adds `entries` to `batch` under the next sequence numbers, each with its index entry
    /// (`recipe` goes with a chunk's one entry; a generated one is all the log keeps of it).
    fn stage_entries(
        &mut self,
        entries: &[RecordBatch],
        recipe: Option<Recipe>,
        batch: &mut WriteBatch,
    ) -> Result<Staged> {
        let mut seq = self.state.next_seq;
        let mut rows = 0u64;
        let appended_at = now_micros();
        let mut offered = Vec::with_capacity(entries.len());
        let (kafka, generated) = match recipe {
            None => (None, None),
            Some(Recipe::Kafka(r)) => (Some(r), None),
            Some(Recipe::Generated(r)) => (None, Some(r)),
        };
        for stored in entries {
            let encoded = match generated {
                Some(_) => log_index::recipe_marker(stored.num_rows() as u64),
                None => ipc::encode_batch(stored)?,
            };
            let index = EntryIndex {
                appended_at,
                bytes: encoded.len() as u64,
                rows: stored.num_rows() as u64,
                // A chunk makes at most one entry.
                kafka: kafka.clone(),
                generated: generated.clone(),
            };
            batch.put(keys::log_index(self.id, seq), index.encode()?);
            batch.put(keys::log_entry(self.id, seq), encoded);
            if self.state.fresh.is_some() {
                offered.push((seq, stored.clone()));
            }
            seq += 1;
            rows += stored.num_rows() as u64;
        }
        Ok(Staged {
            next_seq: seq,
            rows,
            entries: offered,
        })
    }
}

/// What a chunk's entry keeps of where its rows came from.
enum Recipe {
    Kafka(KafkaRecipe),
    Generated(GeneratedRecipe),
}

impl Recipe {
    fn clock_before(&mut self) -> &mut Option<WatermarkClock> {
        match self {
            Recipe::Kafka(r) => &mut r.clock_before,
            Recipe::Generated(r) => &mut r.clock_before,
        }
    }

    fn watermark_after(&mut self) -> &mut Option<i64> {
        match self {
            Recipe::Kafka(r) => &mut r.watermark_after,
            Recipe::Generated(r) => &mut r.watermark_after,
        }
    }
}

/// Log entries added to a write that is not yet done: what the writer moves on to once it is.
#[must_use = "tell the writer once the write is done"]
pub struct Staged {
    next_seq: u64,
    rows: u64,
    /// The entries, to offer to the dataflow once written.
    entries: Vec<(u64, RecordBatch)>,
}

/// An empty write batch with room for a log entry of `rows` (and a few small writes beside
/// it): RocksDB's batch otherwise grows by doubling, copying the entry's bytes each time
/// (a Nexmark generator's chunk is about a megabyte).
pub fn batch_for_rows(rows: &RecordBatch) -> WriteBatch {
    WriteBatch::with_capacity_bytes(rows.get_array_memory_size() + 4096)
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Runs a stream's clock over `rows`: drops the late ones, moves the watermark. Each row's
/// partition is `partitions`' or else the rows' Kafka partition column's (none: one partition).
fn observe_clock(
    clock: &mut WatermarkClock,
    rows: RecordBatch,
    partitions: Option<&Int32Array>,
) -> Result<RecordBatch> {
    let event_times = rows
        .column(clock.def.column)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(|| RunnelError::internal("watermark column is not a microsecond timestamp"))?;
    let partitions = partitions.or_else(|| {
        rows.column_by_name(KAFKA_PARTITION_COLUMN)
            .and_then(|c| c.as_any().downcast_ref::<Int32Array>())
    });
    Ok(match clock.observe(event_times, partitions) {
        Some(mask) => datafusion::arrow::compute::filter_record_batch(&rows, &mask)?,
        None => rows,
    })
}

/// A Kafka stream's log entry rebuilt from its recipe: `rows` are the relation rows decoded
/// from the recipe's records (bad records left out, as ingestion left them out); the clock
/// runs again from its state before the chunk. The result is the entry as it was stored.
pub fn rebuild_kafka_entry(rows: RecordBatch, recipe: &KafkaRecipe) -> Result<RecordBatch> {
    rebuild_entry(rows, None, &recipe.clock_before, recipe.watermark_after)
}

/// A generated stream's log entry rebuilt from its recipe: `rows` and `partitions` are what
/// the generator makes of the recipe's range; the clock runs again from its state before the
/// chunk. The result is the entry as it was offered when it was appended.
pub fn rebuild_generated_entry(
    rows: RecordBatch,
    partitions: &Int32Array,
    recipe: &GeneratedRecipe,
) -> Result<RecordBatch> {
    rebuild_entry(
        rows,
        Some(partitions),
        &recipe.clock_before,
        recipe.watermark_after,
    )
}

fn rebuild_entry(
    rows: RecordBatch,
    partitions: Option<&Int32Array>,
    clock_before: &Option<WatermarkClock>,
    watermark_after: Option<i64>,
) -> Result<RecordBatch> {
    let rows = match clock_before.clone() {
        Some(mut clock) => observe_clock(&mut clock, rows, partitions)?,
        None => rows,
    };
    let stored = ChangeBatch::inserts(rows).to_stored()?;
    with_watermark(stored, watermark_after)
}

/// What a stream with a clock appends: the clock's state (into `extra`), and the rows as
/// one log entry carrying the watermark, when there are rows or the watermark `moved`.
fn clocked_entries(
    id: ObjectId,
    clock: &WatermarkClock,
    rows: RecordBatch,
    moved: bool,
    extra: &mut WriteBatch,
) -> Result<Vec<RecordBatch>> {
    let state = serde_json::to_vec(clock)
        .map_err(|e| RunnelError::internal(format!("watermark clock not serialisable: {e}")))?;
    extra.put(keys::watermark_clock(id), state);
    if rows.num_rows() == 0 && !moved {
        return Ok(Vec::new());
    }
    let stored = ChangeBatch::inserts(rows).to_stored()?;
    Ok(vec![with_watermark(stored, clock.watermark)?])
}

/// The stored entry with the stream's watermark after it in its schema metadata.
fn with_watermark(stored: RecordBatch, watermark: Option<i64>) -> Result<RecordBatch> {
    let Some(wm) = watermark else {
        return Ok(stored);
    };
    let schema = stored
        .schema()
        .as_ref()
        .clone()
        .with_metadata(HashMap::from([(
            WATERMARK_METADATA.to_string(),
            wm.to_string(),
        )]));
    Ok(stored.with_schema(Arc::new(schema))?)
}
