//! The view's output: keeps the view's contents in the store (layouts in
//! [`crate::view_rows`]) and forwards every change to views that read this one.
//!
//! Changes accumulate in memory between checkpoints and are written by the next one:
//! - keyed views keep, per key touched since the last checkpoint, the latest row (or a
//!   delete), so a group updated many times is written once and nothing is read back;
//! - counted views keep per-row count deltas; a checkpoint reads the affected rows' counts
//!   with one multi-get and writes the new counts (deleting rows that reach zero);
//! - appended views keep the inserted batches; a checkpoint writes them as new blocks.

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use hashbrown::HashMap;
use runnel_common::{ChangeBatch, Result, RunnelError};
use runnel_state::codec::EncodedRows;
use runnel_state::keys::prefix_end;
use runnel_state::{Store, WriteBatch};

use crate::operator::Operator;
use crate::view_rows::{
    block_key, decode_block, decode_count, decode_view_rows, encode_columns, ViewLayout,
    APPEND_BLOCK_ROWS,
};

pub struct MaterializeOp {
    store: Arc<Store>,
    prefix: Vec<u8>,
    schema: SchemaRef,
    layout: ViewLayout,
    pending: Pending,
    key_scratch: EncodedRows,
    value_scratch: EncodedRows,
}

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
    pub fn new(
        store: Arc<Store>,
        prefix: Vec<u8>,
        schema: SchemaRef,
        key: Option<&[usize]>,
        appended: bool,
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
        Ok(MaterializeOp {
            store,
            prefix,
            schema,
            layout,
            pending,
            key_scratch: EncodedRows::new(),
            value_scratch: EncodedRows::new(),
        })
    }

    /// The view's current contents (committed state plus pending changes) as one insert
    /// batch, for backfilling a view that reads this one.
    pub fn snapshot(&self) -> Result<ChangeBatch> {
        let prefix_len = self.prefix.len();
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
        batches.push(RecordBatch::try_new_with_options(
            self.schema.clone(),
            rows.columns().to_vec(),
            &options,
        )?);
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
        for (row, &w) in self.key_scratch.iter().zip(weights) {
            match deltas.get_mut(row) {
                Some(d) => *d += w,
                None => {
                    deltas.insert(row.into(), w);
                }
            }
        }
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
        match self.layout {
            ViewLayout::Keyed { .. } => self.buffer_keyed(&batch.data, batch.weights.values())?,
            ViewLayout::Counted => self.buffer_counted(&batch.data, batch.weights.values())?,
            ViewLayout::Appended => self.buffer_appended(&batch.data, batch.weights.values())?,
        }
        out.push(batch.with_schema(self.schema.clone())?);
        Ok(())
    }

    fn checkpoint(&mut self, batch: &mut WriteBatch) -> Result<()> {
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
                let mut rows: Vec<_> = latest.drain().collect();
                rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                for (row_key, row) in rows {
                    key.truncate(self.prefix.len());
                    key.extend_from_slice(&row_key);
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
                        let mut key = Vec::with_capacity(self.prefix.len() + row.len());
                        key.extend_from_slice(&self.prefix);
                        key.extend_from_slice(row);
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
