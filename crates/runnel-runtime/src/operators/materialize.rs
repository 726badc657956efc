//! The view's output: keeps the view's contents in the store (layouts in
//! [`crate::view_rows`]) and forwards every change to views that read this one.
//!
//! Changes accumulate in memory between checkpoints and are written by the next one:
//! - keyed views keep, per key touched since the last checkpoint, the latest row (or a
//!   delete), so a group updated many times is written once and nothing is read back;
//! - counted views keep per-row count deltas; a checkpoint reads the affected rows' counts
//!   with one multi-get and writes the new counts (deleting rows that reach zero);
//! - appended views keep the inserted batches; a checkpoint writes them as new blocks.
//!
//! Every worker has a replica of the step, which applies the changes of the keys its vnodes
//! hold (a keyed view's key columns, a counted view's whole row; an appended view's rows stay
//! on the worker that made them, its blocks numbered from one counter). Changes of one key
//! can come from two workers in either order (a join's output row whose join key changed is
//! retracted by one worker and inserted by another), so a keyed view's pending changes are
//! kept per key as the values put and the deletes counted, and resolved at the checkpoint,
//! when every worker has delivered: the order they arrived in does not matter.
//!
//! What the replicas share is a [`ViewOutput`]: per batch (never per row of the store), the
//! view's rows (the sum of the weights: what `SELECT count(*)` of the view gives) and the
//! changes applied (the sum of their absolute values: an update counts its delete and its
//! insert), for the metrics; SUBSCRIBE's tap; whether the view failed. The row count is
//! persisted with each checkpoint that changes it, under the view's operator range, so a
//! restart restores it with one read; a view stored before that key existed is counted from
//! its stored rows once, at restore.

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use datafusion::arrow::array::{Int64Array, UInt32Array};
use datafusion::arrow::compute::{concat_batches, min, sum, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use hashbrown::HashMap;
use runnel_common::{ChangeBatch, Result, RunnelError};
use runnel_state::codec::EncodedRows;
use runnel_state::keys::prefix_end;
use runnel_state::vnode::{vnode_of, VnodeSet};
use runnel_state::{PendingBytes, SharedBudget, Store, WriteBatch};

use crate::operator::Operator;
use crate::stored_rows::{stored_batch_rows, sum_stored};
use crate::subscription::ChangeTap;
use crate::view_rows::{
    block_key, decode_block, decode_count, decode_view_rows, encode_columns, row_store_key,
    ViewLayout, APPEND_BLOCK_ROWS, VNODE_BYTES,
};

pub struct MaterializeOp {
    store: Arc<Store>,
    prefix: Vec<u8>,
    schema: SchemaRef,
    layout: ViewLayout,
    pending: Pending,
    key_scratch: EncodedRows,
    value_scratch: EncodedRows,
    /// What the view's replicas share.
    output: Arc<ViewOutput>,
    /// This replica's worker and the number of workers: which vnodes (keyed and counted
    /// views) or blocks (appended views) its snapshot reads.
    shard: (usize, usize),
    /// The memory `pending` holds, counted in the state budget (a checkpoint comes early when
    /// the changes of one interval outgrow it).
    pending_bytes: PendingBytes,
}

/// What every worker's replica of a view's materialize step shares (see the module docs).
pub struct ViewOutput {
    /// The view's rows, pending changes included.
    rows: AtomicI64,
    /// `rows` differs from the stored count.
    rows_dirty: AtomicBool,
    /// Changes applied since the view was added to this process's dataflow.
    changes: AtomicU64,
    /// An appended view's next block number.
    next_block: AtomicU64,
    /// Where the row count is stored.
    count_key: Vec<u8>,
    /// SUBSCRIBE's subscribers to the view.
    pub tap: Mutex<ChangeTap>,
    /// Why the view stopped updating (set by the replica that failed; every replica stops).
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
    /// The append time of the oldest input whose changes reached the view's contents since
    /// the last checkpoint (live reads only).
    oldest_input: Mutex<Option<Instant>>,
}

impl ViewOutput {
    /// The shared state of the view stored under `prefix` in `layout`, its row count under
    /// `count_key`.
    pub fn open(
        store: &Store,
        prefix: &[u8],
        count_key: Vec<u8>,
        layout: &ViewLayout,
    ) -> Result<Arc<Self>> {
        let next_block = match layout {
            ViewLayout::Appended => match store.last_key_in_range(prefix, &prefix_end(prefix))? {
                None => 0,
                Some(key) => {
                    let block: [u8; 8] = key[prefix.len()..].try_into().map_err(|_| {
                        RunnelError::internal("an appended view's block key is malformed")
                    })?;
                    u64::from_be_bytes(block) + 1
                }
            },
            _ => 0,
        };
        let (rows, rows_dirty) = match store.get(&count_key)? {
            Some(stored) => (decode_count(&stored)?, false),
            None => (count_stored_rows(store, prefix, layout)?, true),
        };
        Ok(Arc::new(ViewOutput {
            rows: AtomicI64::new(rows),
            rows_dirty: AtomicBool::new(rows_dirty),
            changes: AtomicU64::new(0),
            next_block: AtomicU64::new(next_block),
            count_key,
            tap: Mutex::new(ChangeTap::default()),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            oldest_input: Mutex::new(None),
        }))
    }

    /// The shared state of something with no stored rows of its own (a sink: only its
    /// failure is used).
    pub fn detached() -> Arc<Self> {
        Arc::new(ViewOutput {
            rows: AtomicI64::new(0),
            rows_dirty: AtomicBool::new(false),
            changes: AtomicU64::new(0),
            next_block: AtomicU64::new(0),
            count_key: Vec::new(),
            tap: Mutex::new(ChangeTap::default()),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            oldest_input: Mutex::new(None),
        })
    }

    /// Whether this is a sink's (see [`ViewOutput::detached`]).
    pub fn is_detached(&self) -> bool {
        self.count_key.is_empty()
    }

    /// The view's rows now (what `SELECT count(*)` gives once pending changes are
    /// committed).
    pub fn row_count(&self) -> i64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Rows inserted plus rows deleted since the view was added to this process.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// Adds the row count to a checkpoint if it changed (once for every replica: called at
    /// the checkpoint, when every worker has applied its changes).
    pub fn checkpoint(&self, batch: &mut WriteBatch) {
        if self.rows_dirty.swap(false, Ordering::Relaxed) {
            batch.put(&self.count_key, self.row_count().to_le_bytes());
        }
    }

    /// The subscribers' tap.
    pub fn tap(&self) -> std::sync::MutexGuard<'_, ChangeTap> {
        self.tap.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the view stopped updating.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Why the view stopped updating.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops the view with `error` (the first failure is kept); returns whether this call
    /// recorded it.
    pub fn fail(&self, error: String) -> bool {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if failure.is_some() {
            return false;
        }
        *failure = Some(error);
        self.failed.store(true, Ordering::Relaxed);
        true
    }

    /// Notes that input appended at `appended` changed the view's contents.
    pub fn note_input(&self, appended: Instant) {
        let mut oldest = self.oldest_input.lock().unwrap_or_else(|p| p.into_inner());
        *oldest = Some(oldest.map_or(appended, |t| t.min(appended)));
    }

    /// The append time of the oldest input that changed the view since the last call.
    pub fn take_oldest_input(&self) -> Option<Instant> {
        self.oldest_input
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// Where a view's row count is stored: in the view's operator range (DROP removes it), under a
/// node number no plan reaches (the dataflow keeps a failed view's error at `u32::MAX`).
pub fn row_count_key(view: runnel_plan::ObjectId) -> Vec<u8> {
    runnel_state::keys::operator_prefix(view, u32::MAX - 1)
}

/// What a pending key costs beyond its bytes (hash map entry, allocation), roughly.
const PENDING_ENTRY_OVERHEAD: usize = 48;

/// Changes since the last checkpoint.
enum Pending {
    /// Per key: its changes, the values as ranges of `arena` (appended to one buffer, so an
    /// update allocates nothing per row).
    Keyed {
        latest: HashMap<Box<[u8]>, KeyChanges>,
        arena: Vec<u8>,
    },
    /// Per encoded row: the change of its count.
    Counted { deltas: HashMap<Box<[u8]>, i64> },
    /// Inserted rows.
    Appended { batches: Vec<RecordBatch> },
}

/// A keyed view's changes of one key since the last checkpoint, in any order: the values
/// inserted and not deleted since, and the deletes of values not inserted since (deletes of
/// the stored row). At the checkpoint a value left is the key's row; otherwise a delete
/// deletes it; otherwise nothing changed.
#[derive(Default)]
struct KeyChanges {
    put: Option<(usize, usize)>,
    /// More values put (a key's insert that arrived before the delete of its previous row).
    more: Vec<(usize, usize)>,
    deletes: u32,
}

impl KeyChanges {
    fn insert(&mut self, value: (usize, usize)) {
        match self.put {
            None => self.put = Some(value),
            Some(_) => self.more.push(value),
        }
    }

    fn delete(&mut self, value: &[u8], arena: &[u8]) {
        let same = |(start, end): (usize, usize)| &arena[start..end] == value;
        if self.put.is_some_and(same) {
            self.put = self.more.pop();
        } else if let Some(i) = self.more.iter().position(|&v| same(v)) {
            self.more.swap_remove(i);
        } else {
            self.deletes += 1;
        }
    }

    /// What the key's stored row becomes: `Some(Some(value))` a put, `Some(None)` a delete,
    /// `None` no change.
    fn resolved(&self) -> Result<Option<Option<(usize, usize)>>> {
        if !self.more.is_empty() {
            return Err(RunnelError::internal(
                "a keyed view got two rows for one key in one checkpoint",
            ));
        }
        Ok(match (self.put, self.deletes) {
            (Some(value), _) => Some(Some(value)),
            (None, 0) => None,
            (None, _) => Some(None),
        })
    }
}

impl MaterializeOp {
    /// `prefix`: where the rows are stored; `output`: what the view's replicas share;
    /// `shard`: this replica's worker and the number of workers.
    pub fn new(
        store: Arc<Store>,
        prefix: Vec<u8>,
        schema: SchemaRef,
        layout: ViewLayout,
        budget: SharedBudget,
        output: Arc<ViewOutput>,
        shard: (usize, usize),
    ) -> Result<Self> {
        let pending = match layout {
            ViewLayout::Keyed { .. } => Pending::Keyed {
                latest: HashMap::new(),
                arena: Vec::new(),
            },
            ViewLayout::Counted => Pending::Counted {
                deltas: HashMap::new(),
            },
            ViewLayout::Appended => Pending::Appended {
                batches: Vec::new(),
            },
        };
        Ok(MaterializeOp {
            store,
            prefix,
            schema,
            layout,
            pending,
            key_scratch: EncodedRows::new(),
            value_scratch: EncodedRows::new(),
            output,
            shard,
            pending_bytes: PendingBytes::new(budget),
        })
    }

    /// What the view's replicas share.
    pub fn output(&self) -> &Arc<ViewOutput> {
        &self.output
    }

    /// This replica's part of the stored rows: its vnodes' (keyed, counted) or every
    /// `shards`-th block (appended).
    fn stored_part(&self) -> Result<Vec<runnel_state::KeyValue>> {
        let (shard, shards) = self.shard;
        if shards == 1 {
            return Ok(self.store.scan_prefix(&self.prefix)?);
        }
        if let ViewLayout::Appended = self.layout {
            let mut part = self.store.scan_prefix(&self.prefix)?;
            let at = self.prefix.len();
            part.retain(|(key, _)| {
                key.get(at..at + 8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .is_some_and(|b| u64::from_be_bytes(b) % shards as u64 == shard as u64)
            });
            return Ok(part);
        }
        let mut part = Vec::new();
        for (first, end) in VnodeSet::of_shard(shard, shards).ranges() {
            let mut start = self.prefix.clone();
            start.extend_from_slice(&first.to_be_bytes());
            let stop = match u16::try_from(end) {
                Ok(end) => {
                    let mut stop = self.prefix.clone();
                    stop.extend_from_slice(&end.to_be_bytes());
                    stop
                }
                Err(_) => prefix_end(&self.prefix),
            };
            part.extend(self.store.scan_range(&start, &stop)?);
        }
        Ok(part)
    }

    /// This replica's part of the view's current contents (committed state plus pending
    /// changes) as one insert batch, for backfilling a view that reads this one.
    pub fn snapshot(&self) -> Result<ChangeBatch> {
        let prefix_len = self.prefix.len() + VNODE_BYTES;
        let stored = self.stored_part()?;
        let data = match &self.pending {
            Pending::Keyed { latest, arena } => {
                let mut rows: HashMap<&[u8], &[u8]> = stored
                    .iter()
                    .map(|(k, v)| (&k[prefix_len..], &v[..]))
                    .collect();
                for (key, changes) in latest {
                    match changes.resolved()? {
                        Some(Some((start, end))) => rows.insert(key, &arena[start..end]),
                        Some(None) => rows.remove(&key[..]),
                        None => None,
                    };
                }
                let rows: Vec<(&[u8], &[u8])> = rows.into_iter().collect();
                decode_view_rows(&self.layout, &self.schema, rows.iter().copied())?
            }
            Pending::Counted { deltas } => {
                let mut counts: HashMap<&[u8], i64> = HashMap::new();
                for (key, value) in &stored {
                    counts.insert(&key[prefix_len..], decode_count(value)?);
                }
                for (row, delta) in deltas {
                    *counts.entry(row).or_insert(0) += delta;
                }
                let encoded: Vec<(&[u8], [u8; 8])> = counts
                    .into_iter()
                    .filter(|(_, count)| *count > 0)
                    .map(|(row, count)| (row, count.to_le_bytes()))
                    .collect();
                decode_view_rows(
                    &self.layout,
                    &self.schema,
                    encoded.iter().map(|(row, count)| (*row, &count[..])),
                )?
            }
            Pending::Appended { batches, .. } => {
                let mut all = stored
                    .iter()
                    .map(|(_, v)| decode_block(&self.schema, v))
                    .collect::<Result<Vec<_>>>()?;
                all.extend(batches.iter().cloned());
                concat_batches(&self.schema, &all)?
            }
        };
        Ok(ChangeBatch::inserts(data))
    }

    fn buffer_appended(&mut self, batch: &RecordBatch, weights: &[i64]) -> Result<()> {
        let Pending::Appended { batches, .. } = &mut self.pending else {
            return Ok(());
        };
        let rows = if weights.iter().all(|&w| w == 1) {
            batch.clone()
        } else {
            // The plan proved the view only gets inserts; a row can still come n times.
            let mut repeat: Vec<u32> = Vec::with_capacity(weights.len());
            for (i, &w) in weights.iter().enumerate() {
                if w < 0 {
                    return Err(RunnelError::internal(
                        "a delete reached a view stored as appended rows",
                    ));
                }
                repeat.extend(std::iter::repeat_n(i as u32, w as usize));
            }
            take_record_batch(batch, &UInt32Array::from(repeat))?
        };
        let options = datafusion::arrow::record_batch::RecordBatchOptions::new()
            .with_row_count(Some(rows.num_rows()));
        let rows = RecordBatch::try_new_with_options(
            self.schema.clone(),
            rows.columns().to_vec(),
            &options,
        )?;
        self.pending_bytes.add(rows.get_array_memory_size());
        batches.push(rows);
        Ok(())
    }

    fn buffer_keyed(&mut self, batch: &RecordBatch, weights: &[i64]) -> Result<()> {
        let (ViewLayout::Keyed { key, value }, Pending::Keyed { latest, arena }) =
            (&self.layout, &mut self.pending)
        else {
            return Ok(());
        };
        let n = batch.num_rows();
        encode_columns(batch.columns(), key, n, &mut self.key_scratch)?;
        encode_columns(batch.columns(), value, n, &mut self.value_scratch)?;
        let (arena_before, keys_before) = (arena.len(), latest.len());
        for (i, &w) in weights.iter().enumerate() {
            let key = self.key_scratch.row(i);
            let changes = match latest.get_mut(key) {
                Some(changes) => changes,
                None => latest.entry(key.into()).or_default(),
            };
            let value = self.value_scratch.row(i);
            if w > 0 {
                let start = arena.len();
                arena.extend_from_slice(value);
                for _ in 0..w {
                    changes.insert((start, arena.len()));
                }
            } else {
                for _ in 0..w.unsigned_abs() {
                    changes.delete(value, arena);
                }
            }
        }
        let new_keys = latest.len() - keys_before;
        self.pending_bytes.add(
            arena.len() - arena_before
                + new_keys * (PENDING_ENTRY_OVERHEAD + self.key_scratch.data_len() / n.max(1)),
        );
        Ok(())
    }

    fn buffer_counted(&mut self, batch: &RecordBatch, weights: &[i64]) -> Result<()> {
        let Pending::Counted { deltas } = &mut self.pending else {
            return Ok(());
        };
        let all: Vec<usize> = (0..batch.num_columns()).collect();
        encode_columns(
            batch.columns(),
            &all,
            batch.num_rows(),
            &mut self.key_scratch,
        )?;
        let mut added = 0;
        for (row, &w) in self.key_scratch.iter().zip(weights) {
            match deltas.get_mut(row) {
                Some(d) => *d += w,
                None => {
                    added += row.len() + PENDING_ENTRY_OVERHEAD;
                    deltas.insert(row.into(), w);
                }
            }
        }
        self.pending_bytes.add(added);
        Ok(())
    }
}

impl Operator for MaterializeOp {
    fn process(
        &mut self,
        _port: usize,
        batch: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let (net, applied) = weight_sums(&batch.weights);
        let output = &self.output;
        output.rows.fetch_add(net, Ordering::Relaxed);
        if net != 0 {
            output.rows_dirty.store(true, Ordering::Relaxed);
        }
        output.changes.fetch_add(applied, Ordering::Relaxed);
        {
            let mut tap = output.tap();
            if tap.is_active() {
                tap.record(&batch);
            }
        }
        match self.layout {
            ViewLayout::Keyed { .. } => self.buffer_keyed(&batch.data, batch.weights.values())?,
            ViewLayout::Counted => self.buffer_counted(&batch.data, batch.weights.values())?,
            ViewLayout::Appended => self.buffer_appended(&batch.data, batch.weights.values())?,
        }
        out.push(batch.with_schema(self.schema.clone())?);
        Ok(())
    }

    fn checkpoint(&mut self, batch: &mut WriteBatch) -> Result<()> {
        self.pending_bytes.clear();
        let mut key = self.prefix.clone();
        match &mut self.pending {
            Pending::Appended { batches } => {
                if batches.is_empty() {
                    return Ok(());
                }
                // Block by block: concatenating the whole interval's rows first (a second of
                // a fast stream is hundreds of MB) cost a fresh allocation, and the kernel's
                // zeroing of its pages, at every checkpoint; blocks' rows are the same.
                let mut parts: Vec<RecordBatch> = Vec::new();
                let mut part_rows = 0;
                for pending in batches.drain(..) {
                    let mut offset = 0;
                    while offset < pending.num_rows() {
                        let len = (APPEND_BLOCK_ROWS - part_rows).min(pending.num_rows() - offset);
                        parts.push(pending.slice(offset, len));
                        part_rows += len;
                        offset += len;
                        if part_rows == APPEND_BLOCK_ROWS {
                            put_block(&self.schema, &self.prefix, &self.output, batch, &parts)?;
                            parts.clear();
                            part_rows = 0;
                        }
                    }
                }
                if part_rows > 0 {
                    put_block(&self.schema, &self.prefix, &self.output, batch, &parts)?;
                }
            }
            Pending::Keyed { latest, arena } => {
                // In key order: RocksDB's memtable inserts sorted keys far faster.
                let mut rows = Vec::with_capacity(latest.len());
                for (row_key, changes) in latest.drain() {
                    if let Some(row) = changes.resolved()? {
                        rows.push((vnode_of(&row_key), row_key, row));
                    }
                }
                rows.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
                for (_, row_key, row) in rows {
                    row_store_key(&self.prefix, &row_key, &mut key);
                    match row {
                        Some((start, end)) => batch.put(&key, &arena[start..end]),
                        None => batch.delete(&key),
                    }
                }
                arena.clear();
            }
            Pending::Counted { deltas } => {
                let deltas: Vec<(Box<[u8]>, i64)> =
                    deltas.drain().filter(|(_, d)| *d != 0).collect();
                if deltas.is_empty() {
                    return Ok(());
                }
                let keys: Vec<Vec<u8>> = deltas
                    .iter()
                    .map(|(row, _)| {
                        let mut key = Vec::with_capacity(self.prefix.len() + 2 + row.len());
                        row_store_key(&self.prefix, row, &mut key);
                        key
                    })
                    .collect();
                let current = self.store.multi_get(&keys)?;
                for ((key, (_, delta)), old) in keys.iter().zip(&deltas).zip(current) {
                    let old = match old {
                        Some(v) => decode_count(&v)?,
                        None => 0,
                    };
                    let new = old + delta;
                    if new > 0 {
                        batch.put(key, new.to_le_bytes());
                    } else {
                        if new < 0 {
                            tracing::error!(
                                "view row count went negative ({new}); dropping the row"
                            );
                        }
                        batch.delete(key);
                    }
                }
            }
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The sum of a batch's weights (its rows' net change) and of their absolute values (its
/// changes), with Arrow's vectorised kernels: one pass when there is no delete, the usual case.
fn weight_sums(weights: &Int64Array) -> (i64, u64) {
    let net = sum(weights).unwrap_or(0);
    if min(weights).is_none_or(|m| m >= 0) {
        return (net, net.unsigned_abs());
    }
    let applied = weights.values().iter().map(|w| w.unsigned_abs()).sum();
    (net, applied)
}

/// The rows a view holds in the store: for views stored before their count was.
fn count_stored_rows(store: &Store, prefix: &[u8], layout: &ViewLayout) -> Result<i64> {
    sum_stored(store, prefix, &prefix_end(prefix), |value| match layout {
        ViewLayout::Keyed { .. } => Ok(1),
        ViewLayout::Counted => decode_count(value).map(|c| c.max(0)),
        ViewLayout::Appended => stored_batch_rows(value).map(|n| n as i64),
    })
}

/// Writes `parts` (at most [`APPEND_BLOCK_ROWS`] rows in all) as an appended view's next
/// block.
fn put_block(
    schema: &SchemaRef,
    prefix: &[u8],
    output: &ViewOutput,
    batch: &mut WriteBatch,
    parts: &[RecordBatch],
) -> Result<()> {
    let block = match parts {
        [one] => runnel_state::ipc::encode_batch(one)?,
        _ => runnel_state::ipc::encode_batch(&concat_batches(schema, parts)?)?,
    };
    let number = output.next_block.fetch_add(1, Ordering::Relaxed);
    batch.put(block_key(prefix, number), block);
    Ok(())
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use runnel_state::StoreOptions;

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
        ]))
    }

    fn changes(rows: &[(i64, &str, i64)]) -> ChangeBatch {
        let data = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .expect("a valid batch");
        ChangeBatch::new(data, Int64Array::from_iter_values(rows.iter().map(|r| r.2)))
    }

    fn op(store: &Arc<Store>, key: Option<&[usize]>, appended: bool) -> MaterializeOp {
        replica(store, key, appended, None, (0, 1))
    }

    /// A replica of the view on `shard`, sharing `output` (a new one when `None`).
    fn replica(
        store: &Arc<Store>,
        key: Option<&[usize]>,
        appended: bool,
        output: Option<Arc<ViewOutput>>,
        shard: (usize, usize),
    ) -> MaterializeOp {
        let layout = ViewLayout::new(key, appended, 2);
        let output = output.unwrap_or_else(|| {
            ViewOutput::open(store, b"view/", b"count".to_vec(), &layout).expect("opened")
        });
        MaterializeOp::new(
            store.clone(),
            b"view/".to_vec(),
            schema(),
            layout,
            runnel_state::CacheBudget::unlimited(),
            output,
            shard,
        )
        .expect("the operator builds")
    }

    fn commit(store: &Store, op: &mut MaterializeOp) {
        let mut batch = WriteBatch::default();
        op.checkpoint(&mut batch).expect("a checkpoint");
        op.output().checkpoint(&mut batch);
        store.write(batch).expect("the write");
    }

    /// A key's changes give the same row whatever order they arrive in (two workers can
    /// deliver an update's delete and insert either way round), and two replicas' snapshots
    /// together are the view.
    #[test]
    fn keyed_changes_resolve_in_any_order() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("a store");
        let mut view = op(&store, Some(&[0]), false);
        let mut out = Vec::new();
        view.process(
            0,
            changes(&[(1, "a", 1), (2, "b", 1), (3, "c", 1)]),
            &mut out,
        )
        .expect("applied");
        commit(&store, &mut view);
        // 1: insert before delete; 2: delete before insert; 3: inserted and deleted again
        // (a value put and taken back) after its stored row's delete; 4: new and gone.
        let orders = [
            changes(&[(1, "aa", 1), (1, "a", -1), (2, "b", -1), (2, "bb", 1)]),
            changes(&[
                (3, "c", -1),
                (3, "x", 1),
                (3, "x", -1),
                (4, "d", 1),
                (4, "d", -1),
            ]),
        ];
        for batch in orders {
            view.process(0, batch, &mut out).expect("applied");
        }
        let snapshot = |view: &MaterializeOp| {
            let batch = view.snapshot().expect("a snapshot");
            let mut rows: Vec<(i64, String)> = (0..batch.num_rows())
                .map(|i| {
                    let k = batch.data.column(0).as_any().downcast_ref::<Int64Array>();
                    let v = batch.data.column(1).as_any().downcast_ref::<StringArray>();
                    (
                        k.map_or(0, |k| k.value(i)),
                        v.map_or("", |v| v.value(i)).to_string(),
                    )
                })
                .collect();
            rows.sort();
            rows
        };
        let expected = vec![(1, "aa".to_string()), (2, "bb".to_string())];
        assert_eq!(snapshot(&view), expected);
        commit(&store, &mut view);
        assert_eq!(snapshot(&view), expected);
        assert_eq!(view.output().row_count(), 2);
        // Two replicas (two workers): each reads its vnodes; together, every row.
        let output = view.output().clone();
        let halves =
            [0, 1].map(|s| replica(&store, Some(&[0]), false, Some(output.clone()), (s, 2)));
        let mut both: Vec<(i64, String)> = halves.iter().flat_map(snapshot).collect();
        both.sort();
        assert_eq!(both, expected);
    }

    /// Rows and changes follow the weights; the count survives a rebuild through its key,
    /// and without the key it is counted from the stored rows.
    #[test]
    fn counts_rows_and_changes_in_every_layout() {
        let inserts = changes(&[(1, "a", 1), (2, "b", 1), (3, "c", 1)]);
        // An update of 2 and a delete of 3.
        let update_delete = changes(&[(2, "b", -1), (2, "bb", 1), (3, "c", -1)]);
        let twice = changes(&[(4, "d", 2)]);
        // (key columns, appended, the changes, rows then, changes counted)
        type Case<'a> = (Option<&'a [usize]>, bool, Vec<&'a ChangeBatch>, i64, u64);
        let cases: [Case; 3] = [
            (Some(&[0]), false, vec![&inserts, &update_delete], 2, 6),
            (None, false, vec![&inserts, &update_delete, &twice], 4, 8),
            (None, true, vec![&inserts, &twice], 5, 5),
        ];
        for (key, appended, batches, rows, applied) in cases {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let store = Store::open(dir.path(), StoreOptions::default()).expect("a store");
            let mut view = op(&store, key, appended);
            let mut out = Vec::new();
            for batch in batches {
                view.process(0, batch.clone(), &mut out)
                    .expect("the changes apply");
            }
            let output = view.output().clone();
            assert_eq!((output.row_count(), output.changes()), (rows, applied));
            commit(&store, &mut view);
            assert_eq!(read_back(&store, &view), rows, "{key:?} {appended}");
            let rebuilt = op(&store, key, appended);
            let output = rebuilt.output();
            assert_eq!((output.row_count(), output.changes()), (rows, 0));
            let mut forget = WriteBatch::default();
            forget.delete(b"count");
            store.write(forget).expect("the delete");
            assert_eq!(op(&store, key, appended).output().row_count(), rows);
        }
    }

    /// A checkpoint cuts the interval's appended rows into blocks of `APPEND_BLOCK_ROWS`
    /// (the last one shorter) across the batches they came in, in arrival order.
    #[test]
    fn appended_rows_are_cut_into_full_blocks_in_order() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("a store");
        let mut view = op(&store, None, true);
        let sizes = [40_000, 50_000, 1, 60_000, 7];
        let total: usize = sizes.iter().sum();
        let mut next = 0i64;
        let mut out = Vec::new();
        for size in sizes {
            let rows: Vec<(i64, String)> = (next..next + size as i64)
                .map(|k| (k, format!("v{k}")))
                .collect();
            next += size as i64;
            let refs: Vec<(i64, &str, i64)> =
                rows.iter().map(|(k, v)| (*k, v.as_str(), 1)).collect();
            view.process(0, changes(&refs), &mut out)
                .expect("the inserts apply");
        }
        commit(&store, &mut view);
        let blocks = crate::view_rows::read_view(&store, &view.prefix, &view.layout, &view.schema)
            .expect("the rows");
        let sizes: Vec<usize> = blocks.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(
            sizes,
            vec![
                APPEND_BLOCK_ROWS,
                APPEND_BLOCK_ROWS,
                total - 2 * APPEND_BLOCK_ROWS
            ]
        );
        let mut expected = 0i64;
        for block in &blocks {
            let keys = block
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("k");
            let values = block
                .column(1)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("v");
            for (k, v) in keys.values().iter().zip(values.iter()) {
                assert_eq!((*k, v), (expected, Some(format!("v{expected}").as_str())));
                expected += 1;
            }
        }
        assert_eq!(expected, total as i64);
    }

    fn read_back(store: &Store, view: &MaterializeOp) -> i64 {
        crate::view_rows::read_view(store, &view.prefix, &view.layout, &view.schema)
            .expect("the rows")
            .iter()
            .map(|b| b.num_rows() as i64)
            .sum()
    }
}
