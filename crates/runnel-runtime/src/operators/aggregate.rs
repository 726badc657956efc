//! GROUP BY with retractable aggregates. For each input batch the operator finds every row's
//! group, emits the touched groups' previous output rows as deletes, applies the weighted
//! updates, and emits their new output rows as inserts.
//!
//! State per group (key: the encoded group values) is the weighted row count plus each
//! accumulator's state. It lives in memory and is written to the store at checkpoints for the
//! groups that changed; a group whose row count drops to zero is deleted, so state is bounded
//! by the number of live groups, not by the number of events.
//!
//! Windows: when a group column is bounded by the event-time clock (`window_end` of a TUMBLE
//! over a stream with a watermark, see `runnel_plan::TimeBound`), a group whose value falls
//! behind the clock can never change again. It is closed: its state is freed (its output row
//! stays in the view), so state is bounded by the open windows. With EMIT ON WINDOW CLOSE the
//! operator emits nothing while a group is open and its final row when it closes.

use std::any::Any;
use std::collections::BTreeSet;

use datafusion::arrow::array::{Array, Int64Array};
use datafusion::arrow::array::{ArrayRef, BooleanArray, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use hashbrown::HashMap;
use runnel_common::{ChangeBatch, Result, RunnelError};
use runnel_plan::AggregateCall;
use runnel_state::codec::{decode_rows, encode_rows, EncodedRows};
use runnel_state::{Store, WriteBatch};

use super::accumulators::{create_accumulator, GroupAccumulator};
use crate::expr::{evaluate, evaluate_all, evaluate_predicate, timestamp_micros, CompiledExpr};
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

/// How groups close on the clock: `column` (a group column) bounded with `lag_micros`.
#[derive(Debug, Clone, Copy)]
pub struct GroupClosing {
    pub column: usize,
    pub lag_micros: i64,
    pub emit_on_close: bool,
}

/// Open groups ordered by their time value, to find the closed ones on a clock advance.
struct OpenGroups {
    closing: GroupClosing,
    by_time: BTreeSet<(i64, u32)>,
    /// Per group: its entry in `by_time` (`None` for free slots and null times).
    time_of: Vec<Option<i64>>,
    /// Keys of closed groups that may be stored, deleted at the next checkpoint.
    closed_keys: Vec<Box<[u8]>>,
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
    open: Option<OpenGroups>,
}

impl AggregateOp {
    pub fn new(
        store: &Store,
        prefix: Vec<u8>,
        group_exprs: Vec<CompiledExpr>,
        slots: Vec<AggregateSlot>,
        schema: SchemaRef,
        closing: Option<GroupClosing>,
    ) -> Result<Self> {
        let global = group_exprs.is_empty();
        let open = closing.filter(|_| !global).map(|closing| OpenGroups {
            closing,
            by_time: BTreeSet::new(),
            time_of: Vec::new(),
            closed_keys: Vec::new(),
        });
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
            open,
        };
        op.load(store)?;
        op.index_loaded_groups()?;
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

    /// The group columns' types (the output's first columns).
    fn group_types(&self) -> Vec<DataType> {
        self.schema
            .fields()
            .iter()
            .take(self.group_exprs.len())
            .map(|f| f.data_type().clone())
            .collect()
    }

    /// Enters restored groups into the open-group index by their time value.
    fn index_loaded_groups(&mut self) -> Result<()> {
        let Some(open) = &self.open else {
            return Ok(());
        };
        let groups: Vec<u32> = self.index.values().copied().collect();
        if groups.is_empty() {
            return Ok(());
        }
        let types = self.group_types();
        let columns = decode_rows(groups.iter().map(|&g| &self.keys[g as usize][..]), &types)?;
        let times = timestamp_micros(&columns[open.closing.column])?;
        for (i, &g) in groups.iter().enumerate() {
            if times.is_valid(i) {
                self.track_time(g, times.value(i));
            }
        }
        Ok(())
    }

    fn track_time(&mut self, g: u32, time: i64) {
        if let Some(open) = &mut self.open {
            if open.time_of.len() <= g as usize {
                open.time_of.resize(g as usize + 1, None);
            }
            open.time_of[g as usize] = Some(time);
            open.by_time.insert((time, g));
        }
    }

    fn untrack_time(&mut self, g: u32) {
        if let Some(open) = &mut self.open {
            if let Some(time) = open.time_of.get_mut(g as usize).and_then(Option::take) {
                open.by_time.remove(&(time, g));
            }
        }
    }

    /// Frees a group's slot (its stored state is deleted by the caller).
    fn free_group(&mut self, g: u32) {
        let gi = g as usize;
        self.untrack_time(g);
        self.index.remove(&self.keys[gi]);
        self.rows[gi] = 0;
        for slot in &mut self.slots {
            slot.accumulator.reset(g);
        }
        self.keys[gi] = Box::from([]);
        self.free.push(g);
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

    /// Output rows of the `touched` groups that currently have rows (every group of a global
    /// aggregate), their group columns taken at `first_rows`.
    fn live_output(
        &self,
        touched: &[u32],
        first_rows: &[u32],
        group_columns: &[ArrayRef],
    ) -> Result<RecordBatch> {
        let (groups, rows): (Vec<u32>, Vec<u32>) = touched
            .iter()
            .zip(first_rows)
            .filter(|(&g, _)| self.global || self.rows[g as usize] > 0)
            .map(|(&g, &r)| (g, r))
            .unzip();
        self.output(&groups, group_columns, &UInt32Array::from(rows))
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
        if let Some(column) = self.open.as_ref().map(|o| o.closing.column) {
            let times = timestamp_micros(&group_columns[column])?;
            for (&g, &r) in touched.iter().zip(&first_rows) {
                let untracked = self
                    .open
                    .as_ref()
                    .is_some_and(|o| o.time_of.get(g as usize).is_none_or(Option::is_none));
                if untracked && times.is_valid(r as usize) {
                    self.track_time(g, times.value(r as usize));
                }
            }
        }
        let emit_on_close = self.open.as_ref().is_some_and(|o| o.closing.emit_on_close);

        // Previous output of the touched groups that had one (none leaves an open window).
        let old = match emit_on_close {
            true => None,
            false => Some(self.live_output(&touched, &first_rows, &group_columns)?),
        };

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
        let Some(old) = old else {
            // EMIT ON WINDOW CLOSE: a window's final row goes out when it closes.
            return Ok(());
        };
        let new = self.live_output(&touched, &first_rows, &group_columns)?;

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

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let Some(open) = &self.open else {
            return Ok(());
        };
        // A group with time value below the clock minus the lag can never change again.
        let Some(threshold) = watermark.checked_sub(open.closing.lag_micros) else {
            return Ok(());
        };
        let closed: Vec<u32> = open
            .by_time
            .range(..(threshold, 0))
            .map(|&(_, g)| g)
            .collect();
        if closed.is_empty() {
            return Ok(());
        }
        if open.closing.emit_on_close {
            let live: Vec<u32> = closed
                .iter()
                .copied()
                .filter(|&g| self.rows[g as usize] > 0)
                .collect();
            if !live.is_empty() {
                let types = self.group_types();
                let group_columns =
                    decode_rows(live.iter().map(|&g| &self.keys[g as usize][..]), &types)?;
                let rows = UInt32Array::from_iter_values(0..live.len() as u32);
                out.push(ChangeBatch::inserts(self.output(
                    &live,
                    &group_columns,
                    &rows,
                )?));
            }
        }
        for g in closed {
            let key = self.keys[g as usize].clone();
            if let Some(open) = &mut self.open {
                open.closed_keys.push(key);
            }
            self.free_group(g);
        }
        Ok(())
    }

    fn checkpoint(&mut self, batch: &mut WriteBatch) -> Result<()> {
        let mut key = self.prefix.clone();
        let mut value = Vec::new();
        if let Some(open) = &mut self.open {
            for closed in open.closed_keys.drain(..) {
                key.truncate(self.prefix.len());
                key.extend_from_slice(&closed);
                batch.delete(&key);
            }
        }
        // In key order: RocksDB's memtable inserts sorted keys far faster than random ones.
        let mut dirty = std::mem::take(&mut self.dirty_list);
        dirty.sort_unstable_by(|a, b| self.keys[*a as usize].cmp(&self.keys[*b as usize]));
        for g in dirty {
            let gi = g as usize;
            self.dirty[gi] = false;
            if self.keys[gi].is_empty() && !self.global {
                // Closed (and freed) since it was touched.
                continue;
            }
            key.truncate(self.prefix.len());
            key.extend_from_slice(&self.keys[gi]);
            if self.rows[gi] <= 0 && !self.global {
                batch.delete(&key);
                self.free_group(g);
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
