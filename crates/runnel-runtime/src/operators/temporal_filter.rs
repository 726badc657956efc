//! Temporal filter: `WHERE ts > NOW() - INTERVAL '30 minutes'` with NOW() the event-time clock.
//!
//! Each row gets a threshold, `time + offset`. An `Until` filter passes a row while the clock
//! is before its threshold and retracts it when the clock gets there; a `From` filter holds
//! a row back until the clock reaches its threshold and then passes it for good. A row that
//! arrives when its condition is false is dropped (for `Until`, it can never become true;
//! a retraction then matches a row that was already retracted). Without a clock yet, every
//! `Until` row is visible and every `From` row waits.
//!
//! State: the rows waiting for their threshold, keyed by `threshold, row` (threshold as an
//! order-preserving big-endian integer), with their weights, so a clock advance is one range
//! scan. Changes since the last checkpoint are kept in memory as weight deltas (or
//! removals) and merged with the store when read; a checkpoint adds the deltas with the
//! store's merge operator, without reading anything.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use runnel_common::{ChangeBatch, Result};
use runnel_plan::TemporalBound;
use runnel_state::codec::{decode_rows, encode_selected_rows, EncodedRows};
use runnel_state::{keys, Store, WriteBatch};

use crate::expr::{evaluate, timestamp_micros, CompiledExpr};
use crate::operator::Operator;
use crate::view_rows::decode_count;

/// A waiting row: its store key and weight.
type Waiting = (Vec<u8>, i64);

/// A waiting row's change since the last checkpoint: its weight is `delta` plus the stored
/// weight, unless the row was released since (then the stored weight no longer counts).
#[derive(Clone, Copy, Default)]
struct Pending {
    released: bool,
    delta: i64,
}

pub struct TemporalFilterOp {
    store: Arc<Store>,
    prefix: Vec<u8>,
    time: CompiledExpr,
    offset_micros: i64,
    bound: TemporalBound,
    schema: SchemaRef,
    types: Vec<DataType>,
    clock: Option<i64>,
    /// Full store keys (prefix, threshold, row) touched since the last checkpoint.
    pending: BTreeMap<Vec<u8>, Pending>,
    scratch: EncodedRows,
}

impl TemporalFilterOp {
    pub fn new(
        store: &Arc<Store>,
        prefix: Vec<u8>,
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
            store: store.clone(),
            prefix,
            time,
            offset_micros,
            bound,
            schema,
            types,
            clock: None,
            pending: BTreeMap::new(),
            scratch: EncodedRows::new(),
        })
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

    /// Waiting rows with a threshold at or before `clock`: (store key, weight), store and
    /// pending changes merged.
    fn due(&self, clock: i64) -> Result<Vec<Waiting>> {
        let start = self.prefix.clone();
        let mut end = self.prefix.clone();
        match clock.checked_add(1) {
            Some(next) => end.extend_from_slice(&keys::ordered_i64(next)),
            None => end = keys::prefix_end(&self.prefix),
        }
        let mut merged: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        for (key, value) in self.store.scan_range(&start, &end)? {
            merged.insert(key.to_vec(), decode_count(&value)?);
        }
        for (key, change) in self.pending.range(start..end) {
            let weight = merged.entry(key.clone()).or_insert(0);
            if change.released {
                *weight = 0;
            }
            *weight += change.delta;
        }
        // Zero weights too: they are released (deleted) with the rest.
        Ok(merged.into_iter().collect())
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
                let mut key = Vec::with_capacity(self.prefix.len() + 8 + row.len());
                key.extend_from_slice(&self.prefix);
                key.extend_from_slice(&keys::ordered_i64(threshold));
                key.extend_from_slice(row);
                self.pending.entry(key).or_default().delta += batch.weights.value(i as usize);
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
        let (due, zero): (Vec<Waiting>, Vec<Waiting>) =
            self.due(watermark)?.into_iter().partition(|(_, w)| *w != 0);
        for (key, _) in zero {
            self.pending.insert(
                key,
                Pending {
                    released: true,
                    delta: 0,
                },
            );
        }
        if due.is_empty() {
            return Ok(());
        }
        let row_start = self.prefix.len() + 8;
        let columns: Vec<ArrayRef> =
            decode_rows(due.iter().map(|(k, _)| &k[row_start..]), &self.types)?;
        let sign = match self.bound {
            TemporalBound::Until => -1,
            TemporalBound::From => 1,
        };
        let weights = Int64Array::from_iter_values(due.iter().map(|(_, w)| w * sign));
        for (key, _) in due {
            self.pending.insert(
                key,
                Pending {
                    released: true,
                    delta: 0,
                },
            );
        }
        let options = RecordBatchOptions::new().with_row_count(Some(weights.len()));
        let data = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?;
        out.push(ChangeBatch::new(data, weights));
        Ok(())
    }

    fn checkpoint(&mut self, batch: &mut WriteBatch) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // Weight changes are added in the store (its merge operator), so nothing is read
        // back; a released row is deleted, and re-added weight after a release starts over.
        for (key, change) in std::mem::take(&mut self.pending) {
            if change.released {
                batch.delete(&key);
                if change.delta != 0 {
                    batch.put(&key, change.delta.to_le_bytes());
                }
            } else if change.delta != 0 {
                batch.merge(&key, change.delta.to_le_bytes());
            }
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
