//! OVER windows: each input row with its window function values (per-event features such as
//! "average price of this user's views in the 30 minutes before this one", and ranks).
//!
//! State per partition: every row, ordered by its ORDER BY key (then by its bytes, so ties
//! have a fixed order), with its weight. Frames only look back, so a change at order key `k`
//! can only change the values of rows at or after `k`, up to how far the frames reach:
//! - `RANGE INTERVAL r PRECEDING`: rows with keys in `[k, k + r]`;
//! - bounded `ROWS`, UNBOUNDED PRECEDING and ranks: every row from `k` on;
//! - no ORDER BY (whole-partition frames): every row of the partition.
//!
//! For each touched partition the operator evaluates the window functions (DataFusion's own
//! window expressions, so the values are exactly the batch ones) over the affected rows and
//! the rows their frames read, once before and once after applying the changes, and emits
//! the old rows as deletes and the new rows as inserts. In an in-order stream the affected
//! rows are just the new ones.
//!
//! With a RANGE frame over a clock-bounded ORDER BY column, rows too old for any future frame
//! are freed when the clock passes them (their output rows stay in the view). A top-N filter
//! above (`row_number() ... <= n`) limits evaluation to each partition's first rows.
//!
//! State: a `runnel_state::KeyedState` in the rows layout, a partition per key and one store
//! entry per row (`sized(order key) ‖ row → weight`), so a partition is read with one range
//! scan when a batch needs it and a checkpoint writes only the rows that changed. When rows
//! are freed by the clock, each partition is noted in a `runnel_state::TimeIndex` at the time
//! of its oldest row, where the clock finds the partitions it frees rows of.

use std::any::Any;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array};
use datafusion::arrow::compute::{cast, concat_batches, SortOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::physical_expr::window::WindowExpr;
use hashbrown::HashMap;
use runnel_common::{ChangeBatch, Result, RunnelError};
use runnel_plan::WindowReach;
use runnel_state::codec::{decode_rows, encode_rows, EncodedRows};
use runnel_state::vnode::VnodeSet;
use runnel_state::{KeyedState, OrderedRows, SharedBudget, Store, TimeIndex, WriteBatch};

use crate::expr::{evaluate, evaluate_all, timestamp_micros, CompiledExpr};
use crate::operator::Operator;

type Key = Box<[u8]>;
/// A partition's rows: (order key, row bytes) -> weight.
type Partition = BTreeMap<(Key, Key), i64>;

/// Each slot's partition: rows by (order key, row bytes), with their weights.
type Partitions = OrderedRows<(Key, Key)>;

/// One ORDER BY expression.
pub struct OrderColumn {
    pub expr: CompiledExpr,
    pub options: SortOptions,
}

pub struct WindowOp {
    partition_exprs: Vec<CompiledExpr>,
    order: Vec<OrderColumn>,
    window_exprs: Vec<Arc<dyn WindowExpr>>,
    reach: WindowReach,
    rank_limit: Option<u64>,
    input_schema: SchemaRef,
    input_types: Vec<DataType>,
    output_schema: SchemaRef,
    /// RANGE frames: the ORDER BY column's type (a timestamp).
    range_type: Option<DataType>,
    /// The lag of the ORDER BY column behind the clock, when it is bounded and frames have a
    /// RANGE (rows can be freed), and the partitions by the time of their oldest row.
    freeing: Option<(i64, TimeIndex)>,
    /// Which partition is in which slot (`runnel_state::KeyedState`, rows layout).
    state: KeyedState,
    partitions: Partitions,
}

impl WindowOp {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &Arc<Store>,
        budget: &SharedBudget,
        vnodes: &VnodeSet,
        prefix: Vec<u8>,
        partition_exprs: Vec<CompiledExpr>,
        order: Vec<OrderColumn>,
        window_exprs: Vec<Arc<dyn WindowExpr>>,
        reach: WindowReach,
        rank_limit: Option<u64>,
        input_schema: SchemaRef,
        output_schema: SchemaRef,
        range_type: Option<DataType>,
        order_lag: Option<i64>,
    ) -> Result<Self> {
        let input_types = input_schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect::<Vec<_>>();
        for t in &input_types {
            runnel_state::codec::check_supported(t)?;
        }
        // Partitions under `prefix ‖ 0`, the time index of their oldest rows under
        // `prefix ‖ 1`.
        let sub = |tag: u8| runnel_state::keys::sub_table(&prefix, tag);
        let freeing = match (reach, order_lag, &range_type) {
            (WindowReach::RangeMicros(_), Some(lag), Some(_)) => Some((
                lag,
                TimeIndex::open(store.clone(), sub(1), budget.clone())?.owning(vnodes),
            )),
            _ => None,
        };
        Ok(WindowOp {
            partition_exprs,
            order,
            window_exprs,
            reach,
            rank_limit,
            input_schema,
            input_types,
            output_schema,
            range_type,
            freeing,
            state: KeyedState::open_rows(store.clone(), sub(0), budget.clone())?.owning(vnodes),
            partitions: Partitions::default(),
        })
    }

    /// The time (microseconds) of the oldest row of `slot`'s partition with a time.
    fn oldest_time(&self, slot: u32) -> Result<Option<i64>> {
        let Some(data_type) = self.range_type.as_ref() else {
            return Ok(None);
        };
        for (order, _) in self.partitions.get(slot).keys() {
            // The order key: a null flag byte, then the encoded timestamp.
            let column = decode_rows(
                std::iter::once(&order[1..]),
                std::slice::from_ref(data_type),
            )?;
            let micros = timestamp_micros(&column[0])?;
            if micros.is_valid(0) {
                return Ok(Some(micros.value(0)));
            }
        }
        Ok(None)
    }

    /// Notes `slot`'s partition at the time of its oldest row (rows are being freed), plus a
    /// quarter of the frame (at least a second): rows are freed that much late, in runs, not
    /// one at a time on every clock tick.
    fn note_oldest(&mut self, slot: u32) -> Result<()> {
        let WindowReach::RangeMicros(range) = self.reach else {
            return Ok(());
        };
        if self.freeing.is_none() {
            return Ok(());
        }
        let Some(time) = self.oldest_time(slot)? else {
            return Ok(());
        };
        let at = time.saturating_add((range / 4).max(1_000_000));
        let (key, vnode) = (self.state.key(slot), self.state.vnode(slot));
        if let Some((_, index)) = self.freeing.as_mut() {
            index.set(vnode, at, key);
        }
        Ok(())
    }

    /// Per row: the ORDER BY key, each column as a null flag (placed by NULLS FIRST/LAST)
    /// and its order-preserving bytes (inverted for DESC).
    fn order_keys(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let n = batch.num_rows();
        let mut keys = vec![Vec::new(); n];
        let mut encoded = EncodedRows::new();
        for column in &self.order {
            let values = evaluate(&column.expr, batch)?;
            encoded.clear();
            encode_rows(&[], std::slice::from_ref(&values), &mut encoded)?;
            for (i, key) in keys.iter_mut().enumerate() {
                let null = values.is_null(i);
                key.push(u8::from(null != column.options.nulls_first));
                if !null {
                    let bytes = encoded.row(i);
                    match column.options.descending {
                        false => key.extend_from_slice(bytes),
                        true => key.extend(bytes.iter().map(|b| !b)),
                    }
                }
            }
        }
        Ok(keys)
    }

    /// The order key of a timestamp (RANGE frames: one ascending timestamp ORDER BY).
    fn time_key(&self, micros: i64) -> Result<Vec<u8>> {
        let data_type = self
            .range_type
            .as_ref()
            .ok_or_else(|| RunnelError::internal("RANGE frame without a timestamp ORDER BY"))?;
        let value: ArrayRef = Arc::new(Int64Array::from(vec![micros]));
        let value = cast(
            &cast(&value, &DataType::Timestamp(TimeUnit::Microsecond, None))?,
            data_type,
        )?;
        let mut encoded = EncodedRows::new();
        encode_rows(&[], &[value], &mut encoded)?;
        let mut key = vec![u8::from(self.order[0].options.nulls_first)];
        key.extend_from_slice(encoded.row(0));
        Ok(key)
    }

    /// The output rows of `partition` for entries with order key in `[from, to]` (`to`
    /// inclusive; `None`: no limit), evaluated over entries from `context` on.
    fn evaluate(
        &self,
        partition: Option<&Partition>,
        context: Option<&[u8]>,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
    ) -> Result<Option<RecordBatch>> {
        let Some(partition) = partition else {
            return Ok(None);
        };
        let start: Bound<(Key, Key)> = match context {
            Some(c) => Bound::Included((c.into(), Box::from([]))),
            None => Bound::Unbounded,
        };
        let mut rows: Vec<&[u8]> = Vec::new();
        let mut first_output: Option<usize> = None;
        let mut last_key: Option<&[u8]> = None;
        for ((okey, row), &weight) in partition.range((start, Bound::Unbounded)) {
            if to.is_some_and(|to| okey.as_ref() > to) {
                break;
            }
            if let Some(limit) = self.rank_limit {
                // Past the first `limit` rows, only peers of the last one still count.
                if rows.len() as u64 >= limit && last_key != Some(okey.as_ref()) {
                    break;
                }
            }
            if first_output.is_none() && from.is_none_or(|f| okey.as_ref() >= f) {
                first_output = Some(rows.len());
            }
            for _ in 0..weight.max(0) {
                rows.push(row);
            }
            last_key = Some(okey);
        }
        let Some(first) = first_output else {
            return Ok(None);
        };
        if first >= rows.len() {
            return Ok(None);
        }
        let columns = decode_rows(rows.iter().copied(), &self.input_types)?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        let input =
            RecordBatch::try_new_with_options(self.input_schema.clone(), columns, &options)?;
        let mut out: Vec<ArrayRef> = input.columns().to_vec();
        for w in &self.window_exprs {
            let values = w.evaluate(&input)?;
            let field = &self.output_schema.fields()[out.len()];
            let values = match values.data_type() == field.data_type() {
                true => values,
                false => cast(&values, field.data_type())?,
            };
            out.push(values);
        }
        let n = rows.len() - first;
        let out: Vec<ArrayRef> = out.iter().map(|c| c.slice(first, n)).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        Ok(Some(RecordBatch::try_new_with_options(
            self.output_schema.clone(),
            out,
            &options,
        )?))
    }

    /// Frees rows older than any future frame can reach (RANGE frames over a bounded
    /// ORDER BY column), in the partitions whose oldest row the clock passed.
    fn free_old_rows(&mut self, clock: i64) -> Result<()> {
        let WindowReach::RangeMicros(range) = self.reach else {
            return Ok(());
        };
        let Some((lag, index)) = self.freeing.as_mut() else {
            return Ok(());
        };
        let Some(cutoff) = clock.checked_sub(*lag).and_then(|c| c.checked_sub(range)) else {
            return Ok(());
        };
        let due = index.expire(cutoff.saturating_sub(1))?;
        if due.is_empty() {
            return Ok(());
        }
        let cutoff_key: Key = self.time_key(cutoff)?.into();
        self.state.begin_batch();
        let mut slots = self
            .state
            .slots_of(due.iter().map(|(_, key, _)| key), &mut self.partitions)?;
        // A partition noted more than once is visited once (and noted once again).
        slots.sort_unstable();
        slots.dedup();
        for slot in slots {
            if self
                .partitions
                .drop_before(slot, &(cutoff_key.clone(), Box::from([])))
            {
                self.state.mark_dirty(slot);
            }
            self.note_oldest(slot)?;
        }
        self.state.evict(&mut self.partitions);
        Ok(())
    }
}

impl Operator for WindowOp {
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
        let data = &batch.data;
        let mut partition_keys = EncodedRows::new();
        if !self.partition_exprs.is_empty() {
            let columns = evaluate_all(&self.partition_exprs, data)?;
            encode_rows(&[], &columns, &mut partition_keys)?;
        }
        let order_keys = self.order_keys(data)?;
        let mut row_bytes = EncodedRows::new();
        encode_rows(&[], data.columns(), &mut row_bytes)?;
        if data.num_columns() == 0 {
            // `SELECT min(1) OVER (ORDER BY 1) FROM s` reads no column: every row is the empty
            // row (the codec encodes no rows for no columns).
            for _ in 0..n {
                row_bytes.push_row(&[]);
            }
        }
        let order_micros = match self.reach {
            WindowReach::RangeMicros(r) if r > 0 => {
                Some(timestamp_micros(&evaluate(&self.order[0].expr, data)?)?)
            }
            _ => None,
        };
        let mut by_partition: HashMap<&[u8], Vec<usize>> = HashMap::new();
        for i in 0..n {
            let key: &[u8] = match self.partition_exprs.is_empty() {
                true => &[],
                false => partition_keys.row(i),
            };
            by_partition.entry(key).or_default().push(i);
        }
        let by_partition: Vec<(&[u8], Vec<usize>)> = by_partition.into_iter().collect();
        self.state.begin_batch();
        let slots = self.state.slots_of(
            by_partition.iter().map(|(key, _)| *key),
            &mut self.partitions,
        )?;
        let mut old_batches = Vec::new();
        let mut new_batches = Vec::new();
        for ((_, rows), &slot) in by_partition.iter().zip(&slots) {
            let min_key = rows
                .iter()
                .map(|&i| &order_keys[i])
                .min()
                .expect("a partition has rows");
            // Which rows' values may change, and which rows their frames read.
            let (context, to): (Option<Vec<u8>>, Option<Vec<u8>>) = match self.reach {
                WindowReach::Partition => (None, None),
                WindowReach::Unbounded | WindowReach::Rows(_) => (None, None),
                WindowReach::RangeMicros(0) => {
                    let max_key = rows.iter().map(|&i| &order_keys[i]).max().cloned();
                    (Some(min_key.clone()), max_key)
                }
                WindowReach::RangeMicros(range) => {
                    let times = order_micros.as_ref().expect("RANGE frames evaluate times");
                    let valid: Vec<i64> = rows
                        .iter()
                        .filter(|&&i| times.is_valid(i))
                        .map(|&i| times.value(i))
                        .collect();
                    let has_null = valid.len() < rows.len();
                    match (valid.iter().min(), valid.iter().max()) {
                        (Some(&lo), Some(&hi)) if !has_null => (
                            Some(self.time_key(lo.saturating_sub(range))?),
                            Some(self.time_key(hi.saturating_add(range))?),
                        ),
                        _ => (None, None),
                    }
                }
            };
            let from = match self.reach {
                WindowReach::Partition => None,
                _ => Some(min_key.as_slice()),
            };
            let partition = Some(self.partitions.get(slot));
            if let Some(old) = self.evaluate(partition, context.as_deref(), from, to.as_deref())? {
                old_batches.push(old);
            }
            let oldest_before = self.partitions.get(slot).keys().next().cloned();
            for &i in rows {
                let entry = (
                    Key::from(order_keys[i].as_slice()),
                    Key::from(row_bytes.row(i)),
                );
                self.partitions.add(slot, entry, batch.weights.value(i));
            }
            let partition = Some(self.partitions.get(slot));
            if let Some(new) = self.evaluate(partition, context.as_deref(), from, to.as_deref())? {
                new_batches.push(new);
            }
            self.state.mark_dirty(slot);
            if self.partitions.get(slot).keys().next() != oldest_before.as_ref() {
                self.note_oldest(slot)?;
            }
        }
        self.state.evict(&mut self.partitions);
        let old_rows: usize = old_batches.iter().map(|b| b.num_rows()).sum();
        let new_rows: usize = new_batches.iter().map(|b| b.num_rows()).sum();
        if old_rows + new_rows == 0 {
            return Ok(());
        }
        let data = concat_batches(&self.output_schema, old_batches.iter().chain(&new_batches))?;
        let mut weights = Vec::with_capacity(old_rows + new_rows);
        weights.extend(std::iter::repeat_n(-1i64, old_rows));
        weights.extend(std::iter::repeat_n(1i64, new_rows));
        out.push(ChangeBatch::new(data, Int64Array::from(weights)));
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, _out: &mut Vec<ChangeBatch>) -> Result<()> {
        self.free_old_rows(watermark)
    }

    fn checkpoint(&mut self, batch: &mut WriteBatch) -> Result<()> {
        // Partitions whose rows all went are deleted and their slots freed.
        self.state.checkpoint(batch, &mut self.partitions);
        if let Some((_, index)) = self.freeing.as_mut() {
            index.checkpoint(batch);
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
