//! GROUP BY with retractable aggregates. For each input batch the operator finds every row's
//! group, emits the touched groups' previous output rows as deletes, applies the weighted
//! updates, and emits their new output rows as inserts.
//!
//! State per group (key: the encoded group values) is the weighted row count plus each
//! accumulator's state, kept in a `runnel_state::KeyedState`: read from the store the first
//! time a batch names the group, cached within the shared state budget, written at
//! checkpoints for the groups that changed; a group whose row count drops to zero is deleted,
//! so state is bounded by the number of live groups, not by the number of events, and memory
//! by the budget, not by the number of groups.
//!
//! Windows: when a group column is bounded by the event-time clock (`window_end` of a TUMBLE
//! over a stream with a watermark, see `runnel_plan::TimeBound`), a group whose value falls
//! behind the clock can never change again. It is closed: its state is freed (its output row
//! stays in the view), so state is bounded by the open windows. The open windows' groups are
//! kept in memory (pinned in the cache and read whole at start-up), to be found by time. With EMIT ON WINDOW CLOSE the
//! operator emits nothing while a group is open and its final row when it closes.

use std::any::Any;
use std::collections::BTreeSet;

use datafusion::arrow::array::{Array, Int64Array};
use datafusion::arrow::array::{ArrayRef, BooleanArray, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use runnel_common::{ChangeBatch, Result, RunnelError};
use runnel_plan::AggregateCall;
use runnel_state::codec::{decode_rows, encode_rows, EncodedRows};
use runnel_state::{KeyedState, SlotValues, WriteBatch};

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
}

pub struct AggregateOp {
    group_exprs: Vec<CompiledExpr>,
    schema: SchemaRef,
    /// No GROUP BY: exactly one group, which exists (and has an output row) even when empty.
    global: bool,
    /// Which group is in which slot, read on demand and cached (see `runnel_state::KeyedState`).
    state: KeyedState,
    groups: GroupStates,
    scratch: EncodedRows,
}

/// The groups' values by slot: the weighted row count and each accumulator's state, and the
/// open windows' times.
struct GroupStates {
    rows: Vec<i64>,
    slots: Vec<AggregateSlot>,
    global: bool,
    open: Option<OpenGroups>,
}

impl GroupStates {
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
}

impl SlotValues for GroupStates {
    fn grow(&mut self, slots: usize) {
        self.rows.resize(slots, 0);
        for slot in &mut self.slots {
            slot.accumulator.resize(slots);
        }
    }

    fn load(&mut self, g: u32, value: &[u8]) -> Result<()> {
        let (head, mut bytes) = value
            .split_first_chunk::<8>()
            .ok_or_else(|| RunnelError::internal("truncated aggregate group state"))?;
        self.rows[g as usize] = i64::from_le_bytes(*head);
        for slot in &mut self.slots {
            slot.accumulator.load(g, &mut bytes)?;
        }
        Ok(())
    }

    fn save(&self, g: u32, out: &mut Vec<u8>) -> bool {
        let rows = self.rows[g as usize];
        if rows <= 0 && !self.global {
            return false;
        }
        out.extend_from_slice(&rows.to_le_bytes());
        for slot in &self.slots {
            slot.accumulator.save(g, out);
        }
        true
    }

    fn reset(&mut self, g: u32) {
        self.untrack_time(g);
        self.rows[g as usize] = 0;
        for slot in &mut self.slots {
            slot.accumulator.reset(g);
        }
    }
}

impl AggregateOp {
    pub fn new(
        state: KeyedState,
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
        });
        let mut op = AggregateOp {
            group_exprs,
            schema,
            global,
            state,
            groups: GroupStates {
                rows: Vec::new(),
                slots,
                global,
                open,
            },
            scratch: EncodedRows::new(),
        };
        if op.global {
            // The one group: slot 0, always at hand.
            let g = op.state.slot_for(&[], &mut op.groups)?;
            op.state.pin(g);
        }
        if op.groups.open.is_some() {
            // Windowed groups are found by time when the clock closes them, so the open
            // ones stay in memory (their number is bounded by the open windows).
            op.state.load_all(&mut op.groups)?;
            op.index_loaded_groups()?;
        }
        Ok(op)
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
        let Some(column) = self.groups.open.as_ref().map(|o| o.closing.column) else {
            return Ok(());
        };
        let groups: Vec<u32> = self.state.live_slots().collect();
        if groups.is_empty() {
            return Ok(());
        }
        let types = self.group_types();
        let columns = decode_rows(groups.iter().map(|&g| self.state.key(g)), &types)?;
        let times = timestamp_micros(&columns[column])?;
        for (i, &g) in groups.iter().enumerate() {
            if times.is_valid(i) {
                self.groups.track_time(g, times.value(i));
            }
        }
        Ok(())
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
        for slot in &self.groups.slots {
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
    /// aggregate), their group columns taken at the row that first named each.
    fn live_output(
        &self,
        touched: &[(u32, u32)],
        group_columns: &[ArrayRef],
    ) -> Result<RecordBatch> {
        let (groups, rows): (Vec<u32>, Vec<u32>) = touched
            .iter()
            .filter(|(g, _)| self.global || self.groups.rows[*g as usize] > 0)
            .copied()
            .unzip();
        self.output(&groups, group_columns, &UInt32Array::from(rows))
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
        self.state.begin_batch();
        let mut group_ids: Vec<u32> = Vec::with_capacity(n);
        // Touched groups in first-seen order, with the input row that first named each.
        let mut touched: Vec<(u32, u32)> = Vec::new();
        if self.global {
            group_ids.resize(n, 0);
            touched.push((0, 0));
        } else {
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.clear();
            encode_rows(&[], &group_columns, &mut scratch)?;
            let resolved = self.state.resolve(
                (0..n).map(|i| scratch.row(i)),
                &mut self.groups,
                &mut group_ids,
                &mut touched,
            );
            self.scratch = scratch;
            resolved?;
        }
        if let Some(column) = self.groups.open.as_ref().map(|o| o.closing.column) {
            let times = timestamp_micros(&group_columns[column])?;
            for &(g, r) in &touched {
                let untracked = self
                    .groups
                    .open
                    .as_ref()
                    .is_some_and(|o| o.time_of.get(g as usize).is_none_or(Option::is_none));
                if untracked && times.is_valid(r as usize) {
                    self.groups.track_time(g, times.value(r as usize));
                    self.state.pin(g);
                }
            }
        }
        let emit_on_close = self
            .groups
            .open
            .as_ref()
            .is_some_and(|o| o.closing.emit_on_close);

        // Previous output of the touched groups that had one (none leaves an open window).
        let old = match emit_on_close {
            true => None,
            false => Some(self.live_output(&touched, &group_columns)?),
        };

        let weights = batch.weights.values();
        for (&g, &w) in group_ids.iter().zip(weights.iter()) {
            self.groups.rows[g as usize] += w;
        }
        for slot in &mut self.groups.slots {
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
        for &(g, _) in &touched {
            self.state.mark_dirty(g);
        }
        if let Some(old) = old {
            let new = self.live_output(&touched, &group_columns)?;
            let mut weights: Vec<i64> = Vec::with_capacity(old.num_rows() + new.num_rows());
            weights.extend(std::iter::repeat_n(-1, old.num_rows()));
            weights.extend(std::iter::repeat_n(1, new.num_rows()));
            let data = concat_batches(&self.schema, [&old, &new])?;
            if data.num_rows() > 0 {
                out.push(ChangeBatch::new(data, Int64Array::from(weights)));
            }
        }
        // (EMIT ON WINDOW CLOSE: a window's final row goes out when it closes.)
        self.state.evict(&mut self.groups);
        Ok(())
    }

    fn on_start(&mut self, fresh: bool, out: &mut Vec<ChangeBatch>) -> Result<()> {
        if fresh && self.global {
            // SQL gives a global aggregate one row even over no input (count 0, sum NULL).
            let row = self.output(&[0], &[], &UInt32Array::from(vec![0u32]))?;
            self.state.mark_dirty(0);
            out.push(ChangeBatch::inserts(row));
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let Some(open) = &self.groups.open else {
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
                .filter(|&g| self.groups.rows[g as usize] > 0)
                .collect();
            if !live.is_empty() {
                let types = self.group_types();
                let group_columns = decode_rows(live.iter().map(|&g| self.state.key(g)), &types)?;
                let rows = UInt32Array::from_iter_values(0..live.len() as u32);
                out.push(ChangeBatch::inserts(self.output(
                    &live,
                    &group_columns,
                    &rows,
                )?));
            }
        }
        for g in closed {
            self.state.remove(g, &mut self.groups);
        }
        Ok(())
    }

    fn checkpoint(&mut self, batch: &mut WriteBatch) -> Result<()> {
        // Groups emptied by retractions are freed here (and leave the time index).
        self.state.checkpoint(batch, &mut self.groups);
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
