//! Temporal filter: `WHERE ts > NOW() - INTERVAL '30 minutes'` with NOW() the event-time clock.
//!
//! Each row gets a threshold, `time + offset`. An `Until` filter passes a row while the clock
//! is before its threshold and retracts it when the clock gets there; a `From` filter holds
//! a row back until the clock reaches its threshold and then passes it for good. A row that
//! arrives when its condition is false is dropped (for `Until`, it can never become true;
//! a retraction then matches a row that was already retracted). Without a clock yet, every
//! `Until` row is visible and every `From` row waits.
//!
//! State: the rows waiting for their threshold, in a `runnel_state::TimeIndex` (entries
//! `threshold, row` with their weights, under the vnode of the row): held in memory by time
//! while the state budget allows, written at checkpoints, read back by time when not. With
//! several workers a row reaches the worker owning its vnode, except when the input has only
//! inserts: then no exchange moves it ([`crate::exchange::exchanges`]), and a row of a vnode
//! another worker owns is kept under one this worker owns (any will do: the filter is linear,
//! and a row never has to meet its retraction), so each worker reads back only its own rows.

use std::any::Any;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use runnel_common::{ChangeBatch, Result};
use runnel_plan::TemporalBound;
use runnel_state::codec::{decode_rows, encode_selected_rows, EncodedRows};
use runnel_state::vnode::{vnode_of, Vnode, VnodeSet};
use runnel_state::{TimeIndex, WriteBatch};

use crate::expr::{evaluate, timestamp_micros, CompiledExpr};
use crate::operator::Operator;

pub struct TemporalFilterOp {
    time: CompiledExpr,
    offset_micros: i64,
    bound: TemporalBound,
    schema: SchemaRef,
    types: Vec<DataType>,
    clock: Option<i64>,
    /// The waiting rows by threshold.
    waiting: TimeIndex,
    /// The vnodes this worker owns, and the first run of them (where a row of another
    /// worker's vnode is kept).
    owned: VnodeSet,
    home: Option<(Vnode, u32)>,
    scratch: EncodedRows,
}

impl TemporalFilterOp {
    /// `waiting`: where rows wait for the clock (the operator's time index), `owned`: the
    /// vnodes of this worker.
    pub fn new(
        waiting: TimeIndex,
        owned: VnodeSet,
        time: CompiledExpr,
        offset_micros: i64,
        bound: TemporalBound,
        schema: SchemaRef,
    ) -> Result<Self> {
        let types: Vec<DataType> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        for t in &types {
            runnel_state::codec::check_supported(t)?;
        }
        Ok(TemporalFilterOp {
            time,
            offset_micros,
            bound,
            schema,
            types,
            clock: None,
            waiting,
            owned,
            home: owned.ranges().first().copied(),
            scratch: EncodedRows::new(),
        })
    }

    /// The vnode `row` is kept under: its own when this worker owns it, else one of this
    /// worker's chosen by it.
    fn vnode_for(&self, row: &[u8]) -> Vnode {
        let vnode = vnode_of(row);
        match self.home {
            Some((first, end)) if !self.owned.contains(vnode) => {
                let run = end - u32::from(first);
                first + (u32::from(vnode) % run) as Vnode
            }
            _ => vnode,
        }
    }

    /// Each row's threshold (null when its time is null or out of range).
    fn thresholds(&self, batch: &RecordBatch) -> Result<Vec<Option<i64>>> {
        let micros = timestamp_micros(&evaluate(&self.time, batch)?)?;
        Ok(micros
            .iter()
            .map(|t| t.and_then(|t| t.checked_add(self.offset_micros)))
            .collect())
    }

    fn visible(&self, threshold: i64) -> bool {
        match self.bound {
            TemporalBound::Until => self.clock.is_none_or(|w| w < threshold),
            TemporalBound::From => self.clock.is_some_and(|w| w >= threshold),
        }
    }
}

impl Operator for TemporalFilterOp {
    fn process(
        &mut self,
        _port: usize,
        batch: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let thresholds = self.thresholds(&batch.data)?;
        let mut pass = Vec::with_capacity(thresholds.len());
        let mut wait: Vec<u32> = Vec::new();
        for (i, t) in thresholds.iter().enumerate() {
            let visible = t.is_some_and(|t| self.visible(t));
            pass.push(visible);
            // Until: a visible row waits for its expiry. From: an invisible one for its start.
            let waits = match self.bound {
                TemporalBound::Until => visible,
                TemporalBound::From => t.is_some() && !visible,
            };
            if waits {
                wait.push(i as u32);
            }
        }
        if !wait.is_empty() {
            self.scratch.clear();
            encode_selected_rows(&[], batch.data.columns(), &wait, &mut self.scratch)?;
            for (n, &i) in wait.iter().enumerate() {
                let threshold = thresholds[i as usize].expect("waiting rows have a threshold");
                let row = self.scratch.row(n);
                let weight = batch.weights.value(i as usize);
                self.waiting
                    .add(self.vnode_for(row), threshold, row, weight);
            }
        }
        let mask = BooleanArray::from(pass);
        let kept = batch.filter(&mask)?;
        if !kept.is_empty() {
            out.push(kept);
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<ChangeBatch>) -> Result<()> {
        if self.clock.is_some_and(|c| c >= watermark) {
            return Ok(());
        }
        self.clock = Some(watermark);
        let due = self.waiting.expire(watermark)?;
        if due.is_empty() {
            return Ok(());
        }
        let columns: Vec<ArrayRef> = decode_rows(due.iter().map(|(_, row, _)| row), &self.types)?;
        let sign = match self.bound {
            TemporalBound::Until => -1,
            TemporalBound::From => 1,
        };
        let weights = Int64Array::from_iter_values(due.iter().map(|(_, _, w)| w * sign));
        let options = RecordBatchOptions::new().with_row_count(Some(weights.len()));
        let data = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?;
        out.push(ChangeBatch::new(data, weights));
        Ok(())
    }

    fn checkpoint(&mut self, batch: &mut WriteBatch) -> Result<()> {
        self.waiting.checkpoint(batch);
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
