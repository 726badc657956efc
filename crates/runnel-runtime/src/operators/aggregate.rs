//! GROUP BY with retractable aggregates. For each input batch the operator finds every row's
//! group, emits the touched groups' previous output rows as deletes, applies the weighted
//! updates, and emits their new output rows as inserts.
//!
//! State per group (key: the encoded group values) is the weighted row count plus each
//! accumulator's state. It lives in memory and is written to the store at checkpoints for the
//! groups that changed; a group whose row count drops to zero is deleted, so state is bounded
//! by the number of live groups, not by the number of events.

use std::any::Any;

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::array::{ArrayRef, BooleanArray, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use hashbrown::HashMap;
use runnel_common::{ChangeBatch, Result, RunnelError};
use runnel_plan::AggregateCall;
use runnel_state::codec::{encode_rows, EncodedRows};
use runnel_state::{Store, WriteBatch};

use super::accumulators::{create_accumulator, GroupAccumulator};
use crate::expr::{evaluate, evaluate_all, evaluate_predicate, CompiledExpr};
use crate::operator::Operator;

/// One aggregate call with its compiled argument and FILTER.
pub struct AggregateSlot {
    pub accumulator: Box<dyn GroupAccumulator>,
    pub arg: Option<CompiledExpr>,
    pub filter: Option<CompiledExpr>,
}

impl AggregateSlot {
    pub fn new(
        call: &AggregateCall,
        arg: Option<CompiledExpr>,
        filter: Option<CompiledExpr>,
        input_type: Option<&DataType>,
        append_only: bool,
    ) -> Result<Self> {
        Ok(AggregateSlot {
            accumulator: create_accumulator(call, input_type, append_only)?,
            arg,
            filter,
        })
    }
}

pub struct AggregateOp {
    prefix: Vec<u8>,
    group_exprs: Vec<CompiledExpr>,
    slots: Vec<AggregateSlot>,
    schema: SchemaRef,
    /// No GROUP BY: exactly one group, which exists (and has an output row) even when empty.
    global: bool,
    index: HashMap<Box<[u8]>, u32>,
    keys: Vec<Box<[u8]>>,
    rows: Vec<i64>,
    dirty: Vec<bool>,
    dirty_list: Vec<u32>,
    free: Vec<u32>,
    /// Per group: the batch epoch in which it was last touched (dedups touched groups).
    touched_epoch: Vec<u64>,
    epoch: u64,
    scratch: EncodedRows,
}

impl AggregateOp {
    pub fn new(
        store: &Store,
        prefix: Vec<u8>,
        group_exprs: Vec<CompiledExpr>,
        slots: Vec<AggregateSlot>,
        schema: SchemaRef,
    ) -> Result<Self> {
        let global = group_exprs.is_empty();
        let mut op = AggregateOp {
            prefix,
            group_exprs,
            slots,
            schema,
            global,
            index: HashMap::new(),
            keys: Vec::new(),
            rows: Vec::new(),
            dirty: Vec::new(),
            dirty_list: Vec::new(),
            free: Vec::new(),
            touched_epoch: Vec::new(),
            epoch: 0,
            scratch: EncodedRows::new(),
        };
        op.load(store)?;
        if op.global && op.index.is_empty() {
            op.group_for(&[]);
        }
        Ok(op)
    }

    fn load(&mut self, store: &Store) -> Result<()> {
        let prefix_len = self.prefix.len();
        for (key, value) in store.scan_prefix(&self.prefix)? {
            let g = self.group_for(&key[prefix_len..]);
            let mut bytes: &[u8] = &value;
            let (head, rest) = bytes
                .split_first_chunk::<8>()
                .ok_or_else(|| RunnelError::internal("truncated aggregate group state"))?;
            self.rows[g as usize] = i64::from_le_bytes(*head);
            bytes = rest;
            for slot in &mut self.slots {
                slot.accumulator.load(g, &mut bytes)?;
            }
        }
        Ok(())
    }

    /// The group id for an encoded key, creating the group if needed.
    fn group_for(&mut self, key: &[u8]) -> u32 {
        if let Some(&g) = self.index.get(key) {
            return g;
        }
        let g = match self.free.pop() {
            Some(g) => {
                self.keys[g as usize] = key.into();
                g
            }
            None => {
                let g = self.keys.len() as u32;
                self.keys.push(key.into());
                self.rows.push(0);
                self.dirty.push(false);
                self.touched_epoch.push(0);
                for slot in &mut self.slots {
                    slot.accumulator.resize(self.keys.len());
                }
                g
            }
        };
        self.index.insert(key.into(), g);
        g
    }

    /// Output rows for `groups`, with group columns taken from `group_columns` at `rows`.
    fn output(
        &self,
        groups: &[u32],
        group_columns: &[ArrayRef],
        rows: &UInt32Array,
    ) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for column in group_columns {
            columns.push(take(column.as_ref(), rows, None)?);
        }
        for slot in &self.slots {
            columns.push(slot.accumulator.evaluate(groups)?);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(groups.len()));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?)
    }

    fn mark_dirty(&mut self, g: u32) {
        if !self.dirty[g as usize] {
            self.dirty[g as usize] = true;
            self.dirty_list.push(g);
        }
    }
}

impl Operator for AggregateOp {
    fn process(
        &mut self,
        _port: usize,
        batch: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let group_columns = evaluate_all(&self.group_exprs, &batch.data)?;
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        if !self.global {
            encode_rows(&[], &group_columns, &mut scratch)?;
        }
        self.epoch += 1;
        let epoch = self.epoch;
        let mut group_ids: Vec<u32> = Vec::with_capacity(n);
        // Touched groups in first-seen order, and the input row that first named each.
        let mut touched: Vec<u32> = Vec::new();
        let mut first_rows: Vec<u32> = Vec::new();
        for i in 0..n {
            let g = if self.global {
                0
            } else {
                self.group_for(scratch.row(i))
            };
            group_ids.push(g);
            if self.touched_epoch[g as usize] != epoch {
                self.touched_epoch[g as usize] = epoch;
                touched.push(g);
                first_rows.push(i as u32);
            }
        }
        self.scratch = scratch;

        // Previous output of the touched groups that had one.
        let (old_groups, old_rows): (Vec<u32>, Vec<u32>) = touched
            .iter()
            .zip(&first_rows)
            .filter(|(&g, _)| self.global || self.rows[g as usize] > 0)
            .map(|(&g, &r)| (g, r))
            .unzip();
        let old = self.output(&old_groups, &group_columns, &UInt32Array::from(old_rows))?;

        let weights = batch.weights.values();
        for (&g, &w) in group_ids.iter().zip(weights.iter()) {
            self.rows[g as usize] += w;
        }
        for slot in &mut self.slots {
            let values = match &slot.arg {
                Some(arg) => Some(evaluate(arg, &batch.data)?),
                None => None,
            };
            let mask: Option<BooleanArray> = match &slot.filter {
                Some(filter) => Some(evaluate_predicate(filter, &batch.data)?),
                None => None,
            };
            slot.accumulator
                .update(&group_ids, values.as_ref(), weights, mask.as_ref())?;
        }
        for &g in &touched {
            self.mark_dirty(g);
        }

        let (new_groups, new_rows): (Vec<u32>, Vec<u32>) = touched
            .iter()
            .zip(&first_rows)
            .filter(|(&g, _)| self.global || self.rows[g as usize] > 0)
            .map(|(&g, &r)| (g, r))
            .unzip();
        let new = self.output(&new_groups, &group_columns, &UInt32Array::from(new_rows))?;

        let mut weights: Vec<i64> = Vec::with_capacity(old.num_rows() + new.num_rows());
        weights.extend(std::iter::repeat_n(-1, old.num_rows()));
        weights.extend(std::iter::repeat_n(1, new.num_rows()));
        let data = concat_batches(&self.schema, [&old, &new])?;
        if data.num_rows() > 0 {
            out.push(ChangeBatch::new(data, Int64Array::from(weights)));
        }
        Ok(())
    }

    fn on_start(&mut self, fresh: bool, out: &mut Vec<ChangeBatch>) -> Result<()> {
        if fresh && self.global {
            // SQL gives a global aggregate one row even over no input (count 0, sum NULL).
            let row = self.output(&[0], &[], &UInt32Array::from(vec![0u32]))?;
            self.mark_dirty(0);
            out.push(ChangeBatch::inserts(row));
        }
        Ok(())
    }

    fn checkpoint(&mut self, batch: &mut WriteBatch) -> Result<()> {
        let mut key = self.prefix.clone();
        let mut value = Vec::new();
        // In key order: RocksDB's memtable inserts sorted keys far faster than random ones.
        let mut dirty = std::mem::take(&mut self.dirty_list);
        dirty.sort_unstable_by(|a, b| self.keys[*a as usize].cmp(&self.keys[*b as usize]));
        for g in dirty {
            let gi = g as usize;
            self.dirty[gi] = false;
            key.truncate(self.prefix.len());
            key.extend_from_slice(&self.keys[gi]);
            if self.rows[gi] <= 0 && !self.global {
                batch.delete(&key);
                self.index.remove(&self.keys[gi]);
                self.rows[gi] = 0;
                for slot in &mut self.slots {
                    slot.accumulator.reset(g);
                }
                self.keys[gi] = Box::from([]);
                self.free.push(g);
            } else {
                value.clear();
                value.extend_from_slice(&self.rows[gi].to_le_bytes());
                for slot in &self.slots {
                    slot.accumulator.save(g, &mut value);
                }
                batch.put(&key, &value);
            }
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
