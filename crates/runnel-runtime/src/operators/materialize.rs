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
//! It also counts, per batch (never per row of the store), the view's rows (the sum of the
//! weights: what `SELECT count(*)` of the view gives) and the changes applied (the sum of
//! their absolute values: an update counts its delete and its insert), for the metrics. The
//! row count is persisted with each checkpoint that changes it, under the view's operator
//! range, so a restart restores it with one read; a view stored before that key existed is
//! counted from its stored rows once, at restore.

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, UInt32Array};
use datafusion::arrow::compute::{concat_batches, min, sum, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use hashbrown::HashMap;
use runnel_common::{ChangeBatch, Result, RunnelError};
use runnel_state::codec::EncodedRows;
use runnel_state::keys::prefix_end;
use runnel_state::vnode::vnode_of;
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
    /// Where the row count is stored (see the module docs).
    count_key: Vec<u8>,
    /// The view's rows, pending changes included.
    rows: i64,
    /// `rows` differs from the stored count.
    rows_dirty: bool,
    /// Changes applied since the operator was built (this process).
    changes: u64,
    /// SUBSCRIBE's subscribers to the view.
    tap: ChangeTap,
    /// The memory `pending` holds, counted in the state budget (a checkpoint comes early when
    /// the changes of one interval outgrow it).
    pending_bytes: PendingBytes,
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
    /// Per key: the latest row's encoded value columns as a range of `arena`, or `None` for a
    /// delete. Values are appended to one buffer, so an update allocates nothing per row.
    Keyed {
        latest: HashMap<Box<[u8]>, Option<(usize, usize)>>,
        arena: Vec<u8>,
    },
    /// Per encoded row: the change of its count.
    Counted { deltas: HashMap<Box<[u8]>, i64> },
    /// Inserted rows, and the number of the next block to write.
    Appended {
        batches: Vec<RecordBatch>,
        next_block: u64,
    },
}

impl MaterializeOp {
    /// `prefix`: where the rows are stored; `count_key`: where their count is.
    pub fn new(
        store: Arc<Store>,
        prefix: Vec<u8>,
        count_key: Vec<u8>,
        schema: SchemaRef,
        key: Option<&[usize]>,
        appended: bool,
        budget: SharedBudget,
    ) -> Result<Self> {
        let layout = ViewLayout::new(key, appended, schema.fields().len());
        let pending = match layout {
            ViewLayout::Keyed { .. } => Pending::Keyed {
                latest: HashMap::new(),
                arena: Vec::new(),
            },
            ViewLayout::Counted => Pending::Counted {
                deltas: HashMap::new(),
            },
            ViewLayout::Appended => {
                let last = store.last_key_in_range(&prefix, &prefix_end(&prefix))?;
                let next_block = match last {
                    None => 0,
                    Some(key) => {
                        let block: [u8; 8] = key[prefix.len()..].try_into().map_err(|_| {
                            RunnelError::internal("an appended view's block key is malformed")
                        })?;
                        u64::from_be_bytes(block) + 1
                    }
                };
                Pending::Appended {
                    batches: Vec::new(),
                    next_block,
                }
            }
        };
        let (rows, rows_dirty) = match store.get(&count_key)? {
            Some(stored) => (decode_count(&stored)?, false),
            None => (count_stored_rows(&store, &prefix, &layout)?, true),
        };
        Ok(MaterializeOp {
            store,
            prefix,
            schema,
            layout,
            pending,
            key_scratch: EncodedRows::new(),
            value_scratch: EncodedRows::new(),
            count_key,
            rows,
            rows_dirty,
            changes: 0,
            tap: ChangeTap::default(),
            pending_bytes: PendingBytes::new(budget),
        })
    }

    /// The view's rows now (what `SELECT count(*)` gives once pending changes are
    /// committed).
    pub fn row_count(&self) -> i64 {
        self.rows
    }

    /// Rows inserted plus rows deleted since the operator was built.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The view's current contents (committed state plus pending changes) as one insert
    /// batch, for backfilling a view that reads this one.
    pub fn snapshot(&self) -> Result<ChangeBatch> {
        let prefix_len = self.prefix.len() + VNODE_BYTES;
        let stored = self.store.scan_prefix(&self.prefix)?;
        let data = match &self.pending {
            Pending::Keyed { latest, arena } => {
                let mut rows: HashMap<&[u8], &[u8]> = stored
                    .iter()
                    .map(|(k, v)| (&k[prefix_len..], &v[..]))
                    .collect();
                for (key, value) in latest {
                    match value {
                        Some((start, end)) => rows.insert(key, &arena[*start..*end]),
                        None => rows.remove(&key[..]),
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
        // Rows are applied in order: an update arrives as the old row's delete, then the new
        // row's insert, so the last change per key is the key's state.
        for (i, &w) in weights.iter().enumerate() {
            let row = if w > 0 {
                let start = arena.len();
                arena.extend_from_slice(self.value_scratch.row(i));
                Some((start, arena.len()))
            } else {
                None
            };
            let key = self.key_scratch.row(i);
            match latest.get_mut(key) {
                Some(slot) => *slot = row,
                None => {
                    latest.insert(key.into(), row);
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
        self.rows += net;
        self.rows_dirty |= net != 0;
        self.changes += applied;
        self.tap.record(&batch);
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
        if self.rows_dirty {
            batch.put(&self.count_key, self.rows.to_le_bytes());
            self.rows_dirty = false;
        }
        let mut key = self.prefix.clone();
        match &mut self.pending {
            Pending::Appended {
                batches,
                next_block,
            } => {
                if batches.is_empty() {
                    return Ok(());
                }
                let rows = concat_batches(&self.schema, batches.iter())?;
                batches.clear();
                let mut offset = 0;
                while offset < rows.num_rows() {
                    let len = APPEND_BLOCK_ROWS.min(rows.num_rows() - offset);
                    let block = runnel_state::ipc::encode_batch(&rows.slice(offset, len))?;
                    batch.put(block_key(&self.prefix, *next_block), block);
                    *next_block += 1;
                    offset += len;
                }
            }
            Pending::Keyed { latest, arena } => {
                // In key order: RocksDB's memtable inserts sorted keys far faster.
                let mut rows: Vec<_> = latest
                    .drain()
                    .map(|(row_key, row)| (vnode_of(&row_key), row_key, row))
                    .collect();
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

    fn tap(&mut self) -> Option<&mut ChangeTap> {
        Some(&mut self.tap)
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
        MaterializeOp::new(
            store.clone(),
            b"view/".to_vec(),
            b"count".to_vec(),
            schema(),
            key,
            appended,
            runnel_state::CacheBudget::unlimited(),
        )
        .expect("the operator builds")
    }

    fn commit(store: &Store, op: &mut MaterializeOp) {
        let mut batch = WriteBatch::default();
        op.checkpoint(&mut batch).expect("a checkpoint");
        store.write(batch).expect("the write");
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
            assert_eq!((view.row_count(), view.changes()), (rows, applied));
            commit(&store, &mut view);
            assert_eq!(read_back(&store, &view), rows, "{key:?} {appended}");
            let rebuilt = op(&store, key, appended);
            assert_eq!((rebuilt.row_count(), rebuilt.changes()), (rows, 0));
            let mut forget = WriteBatch::default();
            forget.delete(b"count");
            store.write(forget).expect("the delete");
            assert_eq!(op(&store, key, appended).row_count(), rows);
        }
    }

    fn read_back(store: &Store, view: &MaterializeOp) -> i64 {
        crate::view_rows::read_view(store, &view.prefix, &view.layout, &view.schema)
            .expect("the rows")
            .iter()
            .map(|b| b.num_rows() as i64)
            .sum()
    }
}
