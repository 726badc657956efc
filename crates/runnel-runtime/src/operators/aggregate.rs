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
//! noted in a `runnel_state::TimeIndex` by their time value (in memory tagged with the group's
//! slot, so a closing group still cached is found without a lookup by key), where the clock
//! finds the ones it closes (the others are read from the store like any group; nothing is
//! pinned or loaded at start-up). With EMIT ON WINDOW CLOSE the operator emits nothing while a group is open and
//! its final row when it closes.

use std::any::Any;

use datafusion::arrow::array::{Array, Int64Array};
use datafusion::arrow::array::{ArrayRef, BooleanArray, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use runnel_common::{ChangeBatch, Result, RunnelError};
use runnel_plan::AggregateCall;
use runnel_state::codec::{decode_rows, EncodedRows};
use runnel_state::{KeyedState, SlotValues, TimeIndex, WriteBatch};

use super::accumulators::{create_accumulator, GroupAccumulator};
use crate::exchange::{keys_of, Consolidator};
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

/// Open groups by their time value, to find the closed ones on a clock advance.
struct OpenGroups {
    closing: GroupClosing,
    /// (time value, group key) of every open group.
    by_time: TimeIndex,
    /// Per slot: its group is noted in `by_time` (since it was read or created).
    noted: Vec<bool>,
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
    /// A global aggregate's group is this worker's (see [`AggregateOp::owning_global`]).
    owns_global: bool,
    /// When every input column is a group column: adds up a batch's equal rows (one group's)
    /// first, so each group is looked up and updated once per batch.
    consolidator: Option<Consolidator>,
}

/// The groups' values by slot: the weighted row count and each accumulator's state, and the
/// open windows' times.
struct GroupStates {
    rows: Vec<i64>,
    slots: Vec<AggregateSlot>,
    global: bool,
    open: Option<OpenGroups>,
}

impl SlotValues for GroupStates {
    fn grow(&mut self, slots: usize) {
        self.rows.resize(slots, 0);
        if let Some(open) = &mut self.open {
            open.noted.resize(slots, false);
        }
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

    fn is_empty(&self, g: u32) -> bool {
        self.rows[g as usize] <= 0 && !self.global
    }

    fn reset(&mut self, g: u32) {
        if let Some(noted) = self.open.as_mut().and_then(|o| o.noted.get_mut(g as usize)) {
            *noted = false;
        }
        self.rows[g as usize] = 0;
        for slot in &mut self.slots {
            slot.accumulator.reset(g);
        }
    }
}

impl AggregateOp {
    /// `windows` is the time index of the open groups, for an aggregate whose groups close
    /// (`closing`).
    pub fn new(
        state: KeyedState,
        group_exprs: Vec<CompiledExpr>,
        slots: Vec<AggregateSlot>,
        schema: SchemaRef,
        closing: Option<(GroupClosing, TimeIndex)>,
    ) -> Result<Self> {
        let global = group_exprs.is_empty();
        let open = closing
            .filter(|_| !global)
            .map(|(closing, by_time)| OpenGroups {
                closing,
                by_time,
                noted: Vec::new(),
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
            owns_global: true,
            consolidator: None,
        };
        if op.global {
            // The one group: slot 0, always at hand.
            let g = op.state.slot_for(&[], &mut op.groups)?;
            op.state.pin(g);
        }
        Ok(op)
    }

    /// Whether this worker holds a global aggregate's one group (only its replica gives the
    /// first row; the others never get input).
    pub fn owning_global(mut self, owns: bool) -> Self {
        self.owns_global = owns;
        self
    }

    /// Every input column is a group column (see [`crate::exchange::groups_are_whole_rows`]):
    /// equal rows of a batch are added up before their group is looked up.
    pub fn consolidating(mut self, whole_rows: bool) -> Self {
        self.consolidator = (whole_rows && !self.global).then(Consolidator::default);
        self
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

impl AggregateOp {
    /// `batch` with its equal rows added up, and their keys, when this aggregate
    /// consolidates and that removed some; else `batch` as it is.
    fn consolidated(
        &mut self,
        batch: ChangeBatch,
        given_keys: Option<&EncodedRows>,
    ) -> Result<(ChangeBatch, Option<EncodedRows>)> {
        let Some(consolidator) = self.consolidator.as_mut() else {
            return Ok((batch, None));
        };
        let group_columns = evaluate_all(&self.group_exprs, &batch.data)?;
        let keys = keys_of(given_keys, &group_columns, &mut self.scratch)?;
        Ok(match consolidator.apply(&batch, keys)? {
            Some((fewer, keys)) => (fewer, Some(keys)),
            // The keys just encoded are encoded again below: only on batches where adding up
            // did not pay, which are then skipped for a while.
            None => (batch, None),
        })
    }

    /// [`Operator::process`], with the rows' group keys when an exchange encoded them.
    fn process_batch(
        &mut self,
        batch: ChangeBatch,
        given_keys: Option<&EncodedRows>,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let (batch, consolidated_keys) = self.consolidated(batch, given_keys)?;
        let given_keys = consolidated_keys.as_ref().or(given_keys);
        let n = batch.num_rows();
        if n == 0 {
            // Every row cancelled out.
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
            let resolved = keys_of(given_keys, &group_columns, &mut scratch).and_then(|keys| {
                self.state.resolve(
                    (0..n).map(|i| keys.row(i)),
                    &mut self.groups,
                    &mut group_ids,
                    &mut touched,
                )
            });
            self.scratch = scratch;
            resolved?;
        }
        if let Some(open) = self.groups.open.as_mut() {
            // Noting a group again (after it was evicted and read back) is harmless.
            let times = timestamp_micros(&group_columns[open.closing.column])?;
            for &(g, r) in &touched {
                if !open.noted[g as usize] && times.is_valid(r as usize) {
                    let (key, vnode) = (self.state.key(g), self.state.vnode(g));
                    open.by_time
                        .set_tagged(vnode, times.value(r as usize), key, g);
                    open.noted[g as usize] = true;
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
}

impl Operator for AggregateOp {
    fn process(
        &mut self,
        _port: usize,
        batch: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        self.process_batch(batch, None, out)
    }

    fn process_keyed(
        &mut self,
        _port: usize,
        batch: ChangeBatch,
        keys: &EncodedRows,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        self.process_batch(batch, Some(keys), out)
    }

    fn on_start(&mut self, fresh: bool, out: &mut Vec<ChangeBatch>) -> Result<()> {
        if fresh && self.global && self.owns_global {
            // SQL gives a global aggregate one row even over no input (count 0, sum NULL).
            let row = self.output(&[0], &[], &UInt32Array::from(vec![0u32]))?;
            self.state.mark_dirty(0);
            out.push(ChangeBatch::inserts(row));
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let Some(open) = self.groups.open.as_mut() else {
            return Ok(());
        };
        // A group with time value below the clock minus the lag can never change again.
        let Some(threshold) = watermark.checked_sub(open.closing.lag_micros) else {
            return Ok(());
        };
        let emit_on_close = open.closing.emit_on_close;
        let expired = open.by_time.expire(threshold.saturating_sub(1))?;
        if expired.is_empty() {
            return Ok(());
        }
        // The closed groups (one emptied by retractions since it was noted comes back
        // empty, and goes without output).
        self.state.begin_batch();
        let mut closed = self
            .state
            .slots_tagged(expired.keys_tagged(), &mut self.groups)?;
        // A group noted more than once comes out once per note.
        closed.sort_unstable();
        closed.dedup();
        if emit_on_close {
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
        self.state.evict(&mut self.groups);
        Ok(())
    }

    fn checkpoint(&mut self, batch: &mut WriteBatch) -> Result<()> {
        // Groups emptied by retractions are freed here (their time index entries go when
        // their windows close).
        self.state.checkpoint(batch, &mut self.groups);
        if let Some(open) = self.groups.open.as_mut() {
            open.by_time.checkpoint(batch);
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
