//! SESSION windows: each input row with its session's `window_start` and `window_end`.
//!
//! State per key: every row ordered by its time (then its bytes), with its weight. Rows less
//! than `gap` apart share a session: `window_start` is its first time, `window_end` its last
//! plus `gap`. A change at time `t` can only change the sessions within reach of `t`: the
//! operator widens the changed times' span while a neighbouring row is less than `gap` away
//! (only unchanged rows lie outside the span, so the widened span is made of whole sessions
//! before and after the change), emits the span's rows with their old bounds as deletes and
//! with their new bounds as inserts, and drops the pairs that cancel. Rows with a NULL time
//! are sessions of their own with NULL bounds, and are not kept.
//!
//! When the time column is bounded by the clock (every future change has `time >= W - lag`),
//! a session whose `window_end` is at or before `W - lag` can gain no row: it is closed and
//! its rows are freed (their output rows stay downstream). The same bound makes
//! `window_end` bounded, so aggregates over sessions close too.
//!
//! State: per key, its rows, in a `runnel_state::KeyedState` (one store value per key: the
//! rows of its open sessions), read when a batch or the clock needs the key. With a clock,
//! each key is noted in a `runnel_state::TimeIndex` at the time its first session would
//! close, where the clock finds the keys that have sessions to free.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, Int64Array, UInt32Array};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use hashbrown::HashMap;
use runnel_common::{ChangeBatch, Result, RunnelError};
use runnel_state::codec::{decode_rows, encode_rows, EncodedRows};
use runnel_state::vnode::VnodeSet;
use runnel_state::{KeyedState, SharedBudget, SlotValues, Store, TimeIndex, WriteBatch};

use crate::expr::{evaluate, evaluate_all, timestamp_micros, CompiledExpr};
use crate::operator::Operator;

type Key = Box<[u8]>;
/// A key's rows: (time in microseconds, row bytes) -> weight.
type Sessions = BTreeMap<(i64, Key), i64>;

pub struct SessionWindowOp {
    time: CompiledExpr,
    time_type: DataType,
    keys: Vec<CompiledExpr>,
    gap: i64,
    /// The lag of the time column behind the clock, when it is bounded (sessions close), and
    /// the keys by the time their first session would close.
    closing: Option<(i64, TimeIndex)>,
    input_types: Vec<DataType>,
    output_schema: SchemaRef,
    /// Which key is in which slot (`runnel_state::KeyedState`).
    state: KeyedState,
    partitions: KeyRows,
}

/// Each slot's key's rows.
#[derive(Default)]
struct KeyRows {
    rows: Vec<Sessions>,
}

impl SlotValues for KeyRows {
    fn grow(&mut self, slots: usize) {
        self.rows.resize_with(slots, Sessions::new);
    }

    /// A key's rows: (i64 time, u32 length, encoded row, i64 weight) repeated.
    fn load(&mut self, slot: u32, value: &[u8]) -> Result<()> {
        let corrupt = || RunnelError::internal("truncated session window state");
        let rows = &mut self.rows[slot as usize];
        let mut bytes = value;
        while !bytes.is_empty() {
            let (time, rest) = bytes.split_first_chunk::<8>().ok_or_else(corrupt)?;
            let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(corrupt)?;
            let len = u32::from_le_bytes(*len) as usize;
            if rest.len() < len + 8 {
                return Err(corrupt());
            }
            let (row, rest) = rest.split_at(len);
            let (weight, rest) = rest.split_first_chunk::<8>().ok_or_else(corrupt)?;
            rows.insert(
                (i64::from_le_bytes(*time), row.into()),
                i64::from_le_bytes(*weight),
            );
            bytes = rest;
        }
        Ok(())
    }

    fn save(&self, slot: u32, out: &mut Vec<u8>) -> bool {
        let rows = &self.rows[slot as usize];
        for ((time, row), weight) in rows {
            out.extend_from_slice(&time.to_le_bytes());
            out.extend_from_slice(&(row.len() as u32).to_le_bytes());
            out.extend_from_slice(row);
            out.extend_from_slice(&weight.to_le_bytes());
        }
        !rows.is_empty()
    }

    fn is_empty(&self, slot: u32) -> bool {
        self.rows[slot as usize].is_empty()
    }

    fn reset(&mut self, slot: u32) {
        self.rows[slot as usize].clear();
    }
}

/// The time `rows`' first session closes at: its last time plus the gap.
fn first_close(rows: &Sessions, gap: i64) -> Option<i64> {
    let mut times = rows.keys().map(|(t, _)| *t);
    let mut last = times.next()?;
    for t in times {
        if t - last >= gap {
            break;
        }
        last = t;
    }
    Some(last.saturating_add(gap))
}

/// Frees the rows of the sessions of `rows` that are closed at `cutoff`; true if any went.
fn free_closed(rows: &mut Sessions, gap: i64, cutoff: i64) -> bool {
    // The last time of the last closed session: a session is closed once its last time plus
    // the gap is at or before the cutoff.
    let mut closed_until: Option<i64> = None;
    let mut previous: Option<i64> = None;
    for &(t, _) in rows.keys() {
        if let Some(p) = previous {
            if t - p >= gap && p.saturating_add(gap) <= cutoff {
                closed_until = Some(p);
            }
        }
        if t.saturating_add(gap) > cutoff {
            previous = None;
            break;
        }
        previous = Some(t);
    }
    if let Some(p) = previous {
        // Every row was visited: the last session is closed too.
        closed_until = Some(p);
    }
    let Some(until) = closed_until else {
        return false;
    };
    *rows = match until.checked_add(1) {
        Some(next) => rows.split_off(&(next, Key::default())),
        None => Sessions::new(),
    };
    true
}

/// One output row: the row's bytes and its session's bounds (microseconds).
type Bounded = (Key, i64, i64);

impl SessionWindowOp {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &Arc<Store>,
        budget: &SharedBudget,
        vnodes: &VnodeSet,
        prefix: Vec<u8>,
        time: CompiledExpr,
        time_type: DataType,
        keys: Vec<CompiledExpr>,
        gap: i64,
        time_lag: Option<i64>,
        input_schema: SchemaRef,
        output_schema: SchemaRef,
    ) -> Result<Self> {
        let input_types = input_schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect::<Vec<_>>();
        for t in &input_types {
            runnel_state::codec::check_supported(t)?;
        }
        if !matches!(time_type, DataType::Timestamp(_, _)) || gap <= 0 {
            return Err(RunnelError::internal(
                "a session window needs a timestamp column and a positive gap",
            ));
        }
        // Rows under `prefix ‖ 0`, the keys by closing time under `prefix ‖ 1`.
        let sub = |tag: u8| runnel_state::keys::sub_table(&prefix, tag);
        let closing = match time_lag {
            Some(lag) => Some((
                lag,
                TimeIndex::open(store.clone(), sub(1), budget.clone())?.owning(vnodes),
            )),
            None => None,
        };
        Ok(SessionWindowOp {
            time,
            time_type,
            keys,
            gap,
            closing,
            input_types,
            output_schema,
            state: KeyedState::open(store.clone(), sub(0), budget.clone())?.owning(vnodes),
            partitions: KeyRows::default(),
        })
    }

    /// Notes when `slot`'s key's first session closes (with a clock).
    fn note_closing(&mut self, slot: u32) {
        let Some((_, index)) = self.closing.as_mut() else {
            return;
        };
        if let Some(at) = first_close(&self.partitions.rows[slot as usize], self.gap) {
            let (key, vnode) = (self.state.key(slot), self.state.vnode(slot));
            index.set(vnode, at, key);
        }
    }

    /// Widens `[lo, hi]` while a row outside it is less than the gap away.
    fn reach(&self, rows: &Sessions, mut lo: i64, mut hi: i64) -> (i64, i64) {
        while let Some(((t, _), _)) = rows.range(..(lo, Key::default())).next_back() {
            if lo - t >= self.gap {
                break;
            }
            lo = *t;
        }
        while let Some(((t, _), _)) = hi
            .checked_add(1)
            .and_then(|next| rows.range((next, Key::default())..).next())
        {
            if t - hi >= self.gap {
                break;
            }
            hi = *t;
        }
        (lo, hi)
    }

    /// Adds `sign` times the weight of every row in `[lo, hi]`, with its session's bounds.
    fn sessions_in(
        &self,
        rows: Option<&Sessions>,
        (lo, hi): (i64, i64),
        sign: i64,
        out: &mut HashMap<Bounded, i64>,
    ) {
        let Some(rows) = rows else { return };
        let mut session: Vec<(&Key, i64)> = Vec::new();
        let mut start = 0;
        let mut last = 0;
        let mut flush = |session: &mut Vec<(&Key, i64)>, start: i64, last: i64| {
            for (row, weight) in session.drain(..) {
                *out.entry((row.clone(), start, last + self.gap))
                    .or_insert(0) += sign * weight;
            }
        };
        let upper = hi.saturating_add(1);
        for ((t, row), &weight) in rows.range((lo, Key::default())..(upper, Key::default())) {
            if weight <= 0 {
                continue;
            }
            if session.is_empty() {
                start = *t;
            } else if t - last >= self.gap {
                flush(&mut session, start, last);
                start = *t;
            }
            last = *t;
            session.push((row, weight));
        }
        if !session.is_empty() {
            flush(&mut session, start, last);
        }
    }

    /// A timestamp array of the time column's type from microseconds.
    fn times(&self, micros: Vec<i64>) -> Result<ArrayRef> {
        let values: ArrayRef = Arc::new(Int64Array::from(micros));
        let values = cast(&values, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        Ok(cast(&values, &self.time_type)?)
    }

    /// Output rows (with their weights) for `changes`.
    fn output(&self, changes: HashMap<Bounded, i64>) -> Result<Option<ChangeBatch>> {
        let changes: Vec<(Bounded, i64)> = changes.into_iter().filter(|(_, w)| *w != 0).collect();
        if changes.is_empty() {
            return Ok(None);
        }
        let n = changes.len();
        let mut columns = decode_rows(
            changes.iter().map(|((r, _, _), _)| &r[..]),
            &self.input_types,
        )?;
        columns.push(self.times(changes.iter().map(|((_, s, _), _)| *s).collect())?);
        columns.push(self.times(changes.iter().map(|((_, _, e), _)| *e).collect())?);
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        let data =
            RecordBatch::try_new_with_options(self.output_schema.clone(), columns, &options)?;
        let weights = Int64Array::from_iter_values(changes.iter().map(|(_, w)| *w));
        Ok(Some(ChangeBatch::new(data, weights)))
    }
}

impl Operator for SessionWindowOp {
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
        let times = timestamp_micros(&evaluate(&self.time, data)?)?;
        let mut partition_keys = EncodedRows::new();
        if !self.keys.is_empty() {
            let columns = evaluate_all(&self.keys, data)?;
            encode_rows(&[], &columns, &mut partition_keys)?;
        }
        let mut row_bytes = EncodedRows::new();
        encode_rows(&[], data.columns(), &mut row_bytes)?;

        let mut untimed = Vec::new();
        let mut by_partition: HashMap<&[u8], Vec<usize>> = HashMap::new();
        for i in 0..n {
            if times.is_null(i) {
                untimed.push(i as u32);
                continue;
            }
            let key: &[u8] = match self.keys.is_empty() {
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
        let mut changes: HashMap<Bounded, i64> = HashMap::new();
        for ((_, rows), &slot) in by_partition.iter().zip(&slots) {
            let lo = rows.iter().map(|&i| times.value(i)).min();
            let hi = rows.iter().map(|&i| times.value(i)).max();
            let (Some(lo), Some(hi)) = (lo, hi) else {
                continue;
            };
            let existing = &self.partitions.rows[slot as usize];
            let span = self.reach(existing, lo, hi);
            self.sessions_in(Some(existing), span, -1, &mut changes);
            let partition = &mut self.partitions.rows[slot as usize];
            for &i in rows {
                let entry = (times.value(i), Key::from(row_bytes.row(i)));
                let w = partition.entry(entry.clone()).or_insert(0);
                *w += batch.weights.value(i);
                if *w == 0 {
                    partition.remove(&entry);
                }
            }
            self.sessions_in(
                Some(&self.partitions.rows[slot as usize]),
                span,
                1,
                &mut changes,
            );
            self.state.mark_dirty(slot);
            self.note_closing(slot);
        }
        if let Some(changed) = self.output(changes)? {
            out.push(changed);
        }
        self.state.evict(&mut self.partitions);

        if !untimed.is_empty() {
            let indices = UInt32Array::from(untimed);
            let rows = take_record_batch(data, &indices)?;
            let mut columns = rows.columns().to_vec();
            for _ in 0..2 {
                columns.push(new_null_array(&self.time_type, rows.num_rows()));
            }
            let options = RecordBatchOptions::new().with_row_count(Some(rows.num_rows()));
            let data =
                RecordBatch::try_new_with_options(self.output_schema.clone(), columns, &options)?;
            let weights = datafusion::arrow::compute::take(&batch.weights, &indices, None)?;
            let weights = weights
                .as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
                .ok_or_else(|| RunnelError::internal("weights are Int64"))?;
            out.push(ChangeBatch::new(data, weights));
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, _out: &mut Vec<ChangeBatch>) -> Result<()> {
        let Some((lag, index)) = self.closing.as_mut() else {
            return Ok(());
        };
        let Some(cutoff) = watermark.checked_sub(*lag) else {
            return Ok(());
        };
        // The keys whose first session may have closed (a key noted again since is visited
        // once more, harmlessly).
        let due = index.expire(cutoff)?;
        if due.is_empty() {
            return Ok(());
        }
        self.state.begin_batch();
        let (mut slots, mut touched) = (Vec::with_capacity(due.len()), Vec::new());
        self.state.resolve(
            due.iter().map(|(_, key, _)| key),
            &mut self.partitions,
            &mut slots,
            &mut touched,
        )?;
        for (slot, _) in touched {
            if free_closed(&mut self.partitions.rows[slot as usize], self.gap, cutoff) {
                self.state.mark_dirty(slot);
            }
            self.note_closing(slot);
        }
        self.state.evict(&mut self.partitions);
        Ok(())
    }

    fn checkpoint(&mut self, batch: &mut WriteBatch) -> Result<()> {
        // Keys whose rows all went are deleted and their slots freed.
        self.state.checkpoint(batch, &mut self.partitions);
        if let Some((_, index)) = self.closing.as_mut() {
            index.checkpoint(batch);
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::TimestampMicrosecondArray;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::common::DFSchema;
    use datafusion::logical_expr::col;
    use runnel_state::StoreOptions;

    const MINUTE: i64 = 60_000_000;

    fn time_type() -> DataType {
        DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
    }

    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("ts", time_type(), true),
        ]))
    }

    fn operator(store: &Arc<Store>) -> SessionWindowOp {
        let input = input_schema();
        let df = DFSchema::try_from(input.as_ref().clone()).expect("a valid schema");
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("window_start", time_type(), true));
        fields.push(Field::new("window_end", time_type(), true));
        SessionWindowOp::new(
            store,
            &runnel_state::CacheBudget::new(1 << 20),
            &VnodeSet::all(),
            b"sw".to_vec(),
            crate::expr::compile(&col("ts"), &df).expect("ts compiles"),
            time_type(),
            vec![crate::expr::compile(&col("k"), &df).expect("k compiles")],
            5 * MINUTE,
            Some(0),
            input,
            Arc::new(Schema::new(fields)),
        )
        .expect("the operator builds")
    }

    /// Feeds `(k, minute, weight)` rows; returns the output as sorted
    /// `(k, minute, start minute, end minute, weight)`.
    fn feed(op: &mut SessionWindowOp, rows: &[(i64, i64, i64)]) -> Vec<(i64, i64, i64, i64, i64)> {
        let data = RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1 * MINUTE))
                        .with_timezone("+00:00"),
                ),
            ],
        )
        .expect("a valid batch");
        let weights = Int64Array::from_iter_values(rows.iter().map(|r| r.2));
        let mut out = Vec::new();
        op.process(0, ChangeBatch::new(data, weights), &mut out)
            .expect("process succeeds");
        let mut rows = Vec::new();
        for batch in out {
            let minutes = |c: usize| timestamp_micros(batch.data.column(c)).expect("timestamps");
            let k = batch
                .data
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .cloned();
            let k = k.expect("k is Int64");
            let (ts, start, end) = (minutes(1), minutes(2), minutes(3));
            for i in 0..batch.num_rows() {
                rows.push((
                    k.value(i),
                    ts.value(i) / MINUTE,
                    start.value(i) / MINUTE,
                    end.value(i) / MINUTE,
                    batch.weights.value(i),
                ));
            }
        }
        rows.sort_unstable();
        rows
    }

    fn stored_times(op: &mut SessionWindowOp, k: i64) -> Vec<i64> {
        let mut columns = EncodedRows::new();
        let key: ArrayRef = Arc::new(Int64Array::from(vec![k]));
        encode_rows(&[], &[key], &mut columns).expect("encodes");
        let slot = op
            .state
            .slot_for(columns.row(0), &mut op.partitions)
            .expect("the key's slot");
        op.partitions.rows[slot as usize]
            .keys()
            .map(|(t, _)| t / MINUTE)
            .collect()
    }

    #[test]
    fn sessions_merge_split_close_and_restore() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("the store opens");
        let mut op = operator(&store);

        assert_eq!(
            feed(&mut op, &[(1, 0, 1), (1, 2, 1), (2, 1, 1)]),
            vec![(1, 0, 0, 7, 1), (1, 2, 0, 7, 1), (2, 1, 1, 6, 1)]
        );
        // 6 is 4 minutes after 2: the session grows to [0, 11).
        assert_eq!(
            feed(&mut op, &[(1, 6, 1)]),
            vec![
                (1, 0, 0, 7, -1),
                (1, 0, 0, 11, 1),
                (1, 2, 0, 7, -1),
                (1, 2, 0, 11, 1),
                (1, 6, 0, 11, 1)
            ]
        );
        // Without the row at 2, 0 and 6 are 6 minutes apart: two sessions.
        assert_eq!(
            feed(&mut op, &[(1, 2, -1)]),
            vec![
                (1, 0, 0, 5, 1),
                (1, 0, 0, 11, -1),
                (1, 2, 0, 11, -1),
                (1, 6, 0, 11, -1),
                (1, 6, 6, 11, 1)
            ]
        );

        // At 10 the sessions ending at 5 (key 1) and 6 (key 2) are closed and freed.
        op.on_watermark(10 * MINUTE, &mut Vec::new())
            .expect("the clock advances");
        assert_eq!(stored_times(&mut op, 1), vec![6]);
        assert_eq!(stored_times(&mut op, 2), Vec::<i64>::new());

        let mut batch = WriteBatch::default();
        op.checkpoint(&mut batch).expect("checkpoint succeeds");
        store.write(batch).expect("the write succeeds");
        let mut restored = operator(&store);
        assert_eq!(stored_times(&mut restored, 1), vec![6]);
        assert_eq!(
            feed(&mut restored, &[(1, 8, 1)]),
            vec![(1, 6, 6, 11, -1), (1, 6, 6, 13, 1), (1, 8, 6, 13, 1)]
        );
    }
}
