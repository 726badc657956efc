//! ASOF JOIN (left): every left row with the right row of the same key whose time is the
//! latest at or before its own (strictly before when `strict`), or NULL right columns.
//!
//! State per key: the left rows and the right rows, each ordered by (time, row bytes) with
//! their weights. A left change looks its match up. A right change at time `t` can only
//! change the match of left rows from `t` up to the next right time after the changed
//! ones, so the operator emits those left rows' old joined rows as deletes and their new
//! ones as inserts. Among right rows with the same key and time the one with the greatest
//! row bytes wins, so the answer does not depend on arrival order.
//!
//! Each side's rows are in a `runnel_state::KeyedState` in the rows layout (one store entry
//! per row: `time ‖ row → weight`, a key read with one range scan when a batch needs it, a
//! checkpoint writing the rows that changed).
//!
//! **Freed by the clock.** When both inputs are append-only and the clock bounds both time
//! columns, every row still to come has a time at or after the *frontier* `F` = watermark
//! minus the larger lag. A left row before `F` can no longer be re-matched (a right change at
//! `t` touches left rows from `t` on), so it goes; of the right rows before `F`, only the
//! newest (all of that time) can still be anyone's match, so the older ones go. Each key is
//! noted in a `runnel_state::TimeIndex` at the earliest frontier that frees some of its rows,
//! where the clock finds the keys to visit.

use std::any::Any;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use hashbrown::HashMap;
use runnel_common::{ChangeBatch, Result};
use runnel_state::codec::{decode_rows, encode_rows, EncodedRows};
use runnel_state::vnode::{vnode_of, VnodeSet};
use runnel_state::{KeyedState, OrderedRows, SharedBudget, Store, TimeIndex, WriteBatch};

use crate::expr::{evaluate, evaluate_all, timestamp_micros, CompiledExpr};
use crate::operator::Operator;

type Key = Box<[u8]>;
/// Rows of one side for one key: (time, row bytes) -> weight.
type Rows = BTreeMap<(i64, Key), i64>;

const LEFT: usize = 0;
const RIGHT: usize = 1;

/// One side's compiled expressions.
pub struct AsofSide {
    pub keys: Vec<CompiledExpr>,
    pub time: CompiledExpr,
    pub types: Vec<DataType>,
}

/// One side's rows by slot: (time, row bytes) with their weights.
type SideRows = OrderedRows<(i64, Key)>;

/// A side's state table and its rows.
struct SideState {
    table: KeyedState,
    rows: SideRows,
}

pub struct AsofJoinOp {
    sides: [AsofSide; 2],
    strict: bool,
    schema: SchemaRef,
    state: [SideState; 2],
    /// The frontier's distance behind the clock, when the clock frees state (see the module
    /// docs), and the keys by the earliest frontier that frees some of their rows.
    freeing: Option<(i64, TimeIndex)>,
}

/// One output row before decoding: the left row, its match (if any), the weight.
type Joined = (Key, Option<Key>, i64);

static NO_ROWS: Rows = BTreeMap::new();

impl AsofJoinOp {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &Arc<Store>,
        budget: &SharedBudget,
        vnodes: &VnodeSet,
        prefix: Vec<u8>,
        left: AsofSide,
        right: AsofSide,
        strict: bool,
        schema: SchemaRef,
        frontier_lag: Option<i64>,
    ) -> Result<Self> {
        for t in left.types.iter().chain(&right.types) {
            runnel_state::codec::check_supported(t)?;
        }
        // Left rows under `prefix ‖ 0`, right rows under `prefix ‖ 1`, the keys to free under
        // `prefix ‖ 2`.
        let sub = |tag: u8| runnel_state::keys::sub_table(&prefix, tag);
        let side = |tag: u8| -> Result<SideState> {
            Ok(SideState {
                table: KeyedState::open_rows(store.clone(), sub(tag), budget.clone())?
                    .owning(vnodes),
                rows: SideRows::default(),
            })
        };
        let freeing = match frontier_lag {
            Some(lag) => Some((
                lag,
                TimeIndex::open(store.clone(), sub(2), budget.clone())?.owning(vnodes),
            )),
            None => None,
        };
        Ok(AsofJoinOp {
            sides: [left, right],
            strict,
            schema,
            state: [side(0)?, side(1)?],
            freeing,
        })
    }

    /// Rows of the left and right state, for tests.
    #[cfg(test)]
    fn rows_held(&self) -> (usize, usize) {
        let count = |side: &SideState| -> usize {
            side.table
                .live_slots()
                .map(|s| side.rows.get(s).len())
                .sum()
        };
        (count(&self.state[LEFT]), count(&self.state[RIGHT]))
    }

    /// The rows `slot` holds on `side` (none without a slot).
    fn rows(&self, side: usize, slot: Option<u32>) -> &Rows {
        match slot {
            Some(s) => self.state[side].rows.get(s),
            None => &NO_ROWS,
        }
    }

    /// The earliest frontier past which some of a key's rows are freed: its first left row's
    /// time, or the time of its second-oldest right rows (the oldest go once a newer one is
    /// behind the frontier).
    fn first_freeing(left: &Rows, right: &Rows) -> Option<i64> {
        let l = left.keys().next().map(|(t, _)| *t);
        let r = right.keys().next().and_then(|(oldest, _)| {
            let after = oldest.checked_add(1)?;
            right
                .range((after, Key::from([]))..)
                .next()
                .map(|((t, _), _)| *t)
        });
        match (l, r) {
            (Some(l), Some(r)) => Some(l.min(r)),
            (l, r) => l.or(r),
        }
    }

    /// Notes `key` at the earliest frontier that frees some of its rows, when that moved
    /// earlier than `before` (with a clock).
    fn note(&mut self, key: &[u8], left: Option<u32>, right: Option<u32>, before: Option<i64>) {
        if self.freeing.is_none() {
            return;
        }
        let now = Self::first_freeing(self.rows(LEFT, left), self.rows(RIGHT, right));
        if let (Some(at), Some((_, index))) = (now, self.freeing.as_mut()) {
            if before.is_none_or(|b| at < b) {
                index.set(vnode_of(key), at, key);
            }
        }
    }

    /// The right row a left row at `time` matches, with its weight.
    fn matching(right: &Rows, time: i64, strict: bool) -> Option<(&[u8], i64)> {
        let upper = match strict {
            true => Bound::Excluded((time, Box::from([]) as Key)),
            false => match time.checked_add(1) {
                Some(next) => Bound::Excluded((next, Box::from([]) as Key)),
                None => Bound::Unbounded,
            },
        };
        right
            .range((Bound::Unbounded, upper))
            .rev()
            .find(|(_, w)| **w > 0)
            .map(|((_, row), w)| (row.as_ref(), *w))
    }

    /// Decodes joined rows into an output batch and emits it.
    fn emit(&self, joined: &[Joined], out: &mut Vec<ChangeBatch>) -> Result<()> {
        if joined.is_empty() {
            return Ok(());
        }
        let mut columns = decode_rows(
            joined.iter().map(|(l, _, _)| l.as_ref()),
            &self.sides[LEFT].types,
        )?;
        let matched: Vec<&[u8]> = joined.iter().filter_map(|(_, r, _)| r.as_deref()).collect();
        let right_columns = decode_rows(matched.iter().copied(), &self.sides[RIGHT].types)?;
        let mut next = 0u32;
        let indices: UInt32Array = joined
            .iter()
            .map(|(_, r, _)| {
                r.as_ref().map(|_| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        for c in &right_columns {
            columns.push(take(c.as_ref(), &indices, None)?);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(joined.len()));
        let data = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?;
        let weights = Int64Array::from_iter_values(joined.iter().map(|(_, _, w)| *w));
        out.push(ChangeBatch::new(data, weights));
        Ok(())
    }

    /// Encoded keys (`None` when a key column is null: such rows never match), times and
    /// rows of one side's batch.
    fn encode(
        &self,
        side: usize,
        data: &RecordBatch,
    ) -> Result<(EncodedRows, Vec<bool>, Int64Array, EncodedRows)> {
        let s = &self.sides[side];
        let key_columns = evaluate_all(&s.keys, data)?;
        let valid: Vec<bool> = (0..data.num_rows())
            .map(|i| key_columns.iter().all(|c| c.is_valid(i)))
            .collect();
        let mut keys = EncodedRows::new();
        encode_rows(&[], &key_columns, &mut keys)?;
        let times = timestamp_micros(&evaluate(&s.time, data)?)?;
        let mut rows = EncodedRows::new();
        encode_rows(&[], data.columns(), &mut rows)?;
        Ok((keys, valid, times, rows))
    }

    /// Slots on both sides for `keys`: `own` side's made where missing, the other side's
    /// found (a key without rows there gets none).
    fn slots(&mut self, own: usize, keys: &[&[u8]]) -> Result<(Vec<u32>, Vec<Option<u32>>)> {
        let other = 1 - own;
        for side in &mut self.state {
            side.table.begin_batch();
        }
        let (mut own_slots, mut touched) = (Vec::with_capacity(keys.len()), Vec::new());
        let s = &mut self.state[own];
        s.table.resolve(
            keys.iter().copied(),
            &mut s.rows,
            &mut own_slots,
            &mut touched,
        )?;
        let mut other_slots = Vec::with_capacity(keys.len());
        let o = &mut self.state[other];
        o.table
            .find(keys.iter().copied(), &mut o.rows, &mut other_slots)?;
        Ok((own_slots, other_slots))
    }

    fn evict(&mut self) {
        for side in &mut self.state {
            side.table.evict(&mut side.rows);
        }
    }

    fn process_left(&mut self, batch: &ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let (keys, valid, times, rows) = self.encode(LEFT, &batch.data)?;
        let timed: Vec<usize> = (0..batch.num_rows())
            .filter(|&i| valid[i] && times.is_valid(i))
            .collect();
        let timed_keys: Vec<&[u8]> = timed.iter().map(|&i| keys.row(i)).collect();
        let (left_slots, right_slots) = self.slots(LEFT, &timed_keys)?;
        let mut slot_of: HashMap<usize, (u32, Option<u32>)> = HashMap::new();
        for (n, &i) in timed.iter().enumerate() {
            slot_of.insert(i, (left_slots[n], right_slots[n]));
        }
        let mut joined: Vec<Joined> = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let w = batch.weights.value(i);
            let row: Key = rows.row(i).into();
            let Some(&(left, right)) = slot_of.get(&i) else {
                joined.push((row, None, w));
                continue;
            };
            let time = times.value(i);
            match Self::matching(self.rows(RIGHT, right), time, self.strict) {
                Some((r, rw)) => joined.push((row.clone(), Some(r.into()), w * rw)),
                None => joined.push((row.clone(), None, w)),
            }
            let before = Self::first_freeing(self.rows(LEFT, Some(left)), self.rows(RIGHT, right));
            self.state[LEFT].rows.add(left, (time, row), w);
            self.state[LEFT].table.mark_dirty(left);
            self.note(keys.row(i), Some(left), right, before);
        }
        self.emit(&joined, out)?;
        self.evict();
        Ok(())
    }

    /// Joined rows of left rows with times in `[from, to)` under the current right rows.
    fn joined_range(
        &self,
        left: Option<u32>,
        right: Option<u32>,
        from: i64,
        to: Option<i64>,
        sign: i64,
    ) -> Vec<Joined> {
        let (left, right) = (self.rows(LEFT, left), self.rows(RIGHT, right));
        let upper = match to {
            Some(t) => Bound::Excluded((t, Box::from([]) as Key)),
            None => Bound::Unbounded,
        };
        left.range((Bound::Included((from, Box::from([]) as Key)), upper))
            .filter(|(_, w)| **w != 0)
            .map(
                |((time, row), w)| match Self::matching(right, *time, self.strict) {
                    Some((r, rw)) => (row.clone(), Some(Key::from(r)), sign * w * rw),
                    None => (row.clone(), None, sign * w),
                },
            )
            .collect()
    }

    fn process_right(&mut self, batch: &ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let (keys, valid, times, rows) = self.encode(RIGHT, &batch.data)?;
        let mut by_key: HashMap<&[u8], Vec<usize>> = HashMap::new();
        for (i, &key_valid) in valid.iter().enumerate() {
            if key_valid && times.is_valid(i) {
                by_key.entry(keys.row(i)).or_default().push(i);
            }
        }
        let by_key: Vec<(&[u8], Vec<usize>)> = by_key.into_iter().collect();
        let key_list: Vec<&[u8]> = by_key.iter().map(|(k, _)| *k).collect();
        let (right_slots, left_slots) = self.slots(RIGHT, &key_list)?;
        let mut changes: Vec<Joined> = Vec::new();
        for (((key, indices), &right), &left) in by_key.iter().zip(&right_slots).zip(&left_slots) {
            let lo = indices
                .iter()
                .map(|&i| times.value(i))
                .min()
                .expect("non-empty");
            let hi = indices
                .iter()
                .map(|&i| times.value(i))
                .max()
                .expect("non-empty");
            // Left rows whose match can change: from the first changed time (after it, when
            // strict) up to the first right time after the last changed one (inclusive of
            // it when strict, as a strict match excludes equal times).
            let next_right = hi.checked_add(1).and_then(|after| {
                self.rows(RIGHT, Some(right))
                    .range((after, Key::from([]))..)
                    .next()
                    .map(|((t, _), _)| *t)
            });
            let from = if self.strict {
                lo.saturating_add(1)
            } else {
                lo
            };
            let to = next_right.map(|t| if self.strict { t.saturating_add(1) } else { t });
            changes.extend(self.joined_range(left, Some(right), from, to, -1));
            let before = Self::first_freeing(self.rows(LEFT, left), self.rows(RIGHT, Some(right)));
            for &i in indices {
                let entry = (times.value(i), Key::from(rows.row(i)));
                self.state[RIGHT]
                    .rows
                    .add(right, entry, batch.weights.value(i));
            }
            self.state[RIGHT].table.mark_dirty(right);
            self.note(key, left, Some(right), before);
            changes.extend(self.joined_range(left, Some(right), from, to, 1));
        }
        self.emit(&changes, out)?;
        self.evict();
        Ok(())
    }
}

impl Operator for AsofJoinOp {
    fn process(
        &mut self,
        port: usize,
        batch: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        match port {
            0 => self.process_left(&batch, out),
            _ => self.process_right(&batch, out),
        }
    }

    fn on_watermark(&mut self, watermark: i64, _out: &mut Vec<ChangeBatch>) -> Result<()> {
        let Some((lag, index)) = self.freeing.as_mut() else {
            return Ok(());
        };
        let frontier = watermark.saturating_sub(*lag);
        let due = index.expire(frontier.saturating_sub(1))?;
        if due.is_empty() {
            return Ok(());
        }
        // A key noted more than once is visited once (and noted once again).
        let mut keys: Vec<&[u8]> = due.iter().map(|(_, key, _)| key).collect();
        keys.sort_unstable();
        keys.dedup();
        let (left_slots, right_slots) = self.slots(LEFT, &keys)?;
        let bound = (frontier, Key::from([]));
        for ((key, left), right) in keys.iter().zip(left_slots).zip(right_slots) {
            if self.state[LEFT].rows.drop_before(left, &bound) {
                self.state[LEFT].table.mark_dirty(left);
            }
            if let Some(right) = right {
                let newest_before = self.state[RIGHT]
                    .rows
                    .get(right)
                    .range(..bound.clone())
                    .next_back()
                    .map(|((t, _), _)| *t);
                if let Some(newest) = newest_before {
                    let keep_from = (newest, Key::from([]));
                    if self.state[RIGHT].rows.drop_before(right, &keep_from) {
                        self.state[RIGHT].table.mark_dirty(right);
                    }
                }
            }
            // Noted again at the next frontier that frees something (the entry that brought
            // the key here is gone).
            self.note(key, Some(left), right, None);
        }
        self.evict();
        Ok(())
    }

    fn checkpoint(&mut self, batch: &mut WriteBatch) -> Result<()> {
        // Keys whose rows all went are deleted and their slots freed.
        for side in &mut self.state {
            side.table.checkpoint(batch, &mut side.rows);
        }
        if let Some((_, index)) = self.freeing.as_mut() {
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
    use datafusion::arrow::array::TimestampMicrosecondArray;
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::common::DFSchema;
    use datafusion::logical_expr::col;
    use runnel_state::StoreOptions;

    use super::*;
    use crate::expr::compile;

    fn time_type() -> DataType {
        DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
    }

    /// Both sides: (k BIGINT, t TIMESTAMPTZ, v BIGINT).
    fn side_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("t", time_type(), true),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    fn operator(store: &Arc<Store>, frontier_lag: Option<i64>) -> AsofJoinOp {
        let schema = side_schema();
        let df = DFSchema::try_from(schema.as_ref().clone()).expect("a valid schema");
        let side = || AsofSide {
            keys: vec![compile(&col("k"), &df).expect("k compiles")],
            time: compile(&col("t"), &df).expect("t compiles"),
            types: schema
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect(),
        };
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .chain(schema.fields().iter())
            .map(|f| f.as_ref().clone())
            .collect();
        AsofJoinOp::new(
            store,
            &runnel_state::CacheBudget::new(1 << 20),
            &VnodeSet::all(),
            b"asof".to_vec(),
            side(),
            side(),
            false,
            Arc::new(Schema::new(fields)),
            frontier_lag,
        )
        .expect("the operator builds")
    }

    /// Feeds `(k, t, v)` inserts on `port`; returns the output as sorted
    /// `(left v, right v or -1, weight)`.
    fn feed(op: &mut AsofJoinOp, port: usize, rows: &[(i64, i64, i64)]) -> Vec<(i64, i64, i64)> {
        let data = RecordBatch::try_new(
            side_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                        .with_timezone("+00:00"),
                ),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .expect("a valid batch");
        let weights = Int64Array::from_iter_values(rows.iter().map(|_| 1));
        let mut out = Vec::new();
        op.process(port, ChangeBatch::new(data, weights), &mut out)
            .expect("process succeeds");
        let mut joined = Vec::new();
        for batch in out {
            let int = |c: usize| {
                batch
                    .data
                    .column(c)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .cloned()
                    .expect("an Int64 column")
            };
            let (left, right) = (int(2), int(5));
            for i in 0..batch.num_rows() {
                let r = if right.is_null(i) { -1 } else { right.value(i) };
                joined.push((left.value(i), r, batch.weights.value(i)));
            }
        }
        joined.sort_unstable();
        joined
    }

    /// Reads keys `ks` on both sides.
    fn read_keys(op: &mut AsofJoinOp, ks: &[i64]) {
        let column: datafusion::arrow::array::ArrayRef = Arc::new(Int64Array::from(ks.to_vec()));
        let mut encoded = EncodedRows::new();
        encode_rows(&[], &[column], &mut encoded).expect("keys encode");
        let keys: Vec<&[u8]> = (0..ks.len()).map(|i| encoded.row(i)).collect();
        op.slots(LEFT, &keys).expect("left keys");
        op.slots(RIGHT, &keys).expect("right keys");
    }

    /// Rows `(k, t, v)` fed on a port.
    type Step = (usize, Vec<(i64, i64, i64)>);

    #[test]
    fn the_clock_frees_rows_no_later_row_can_match_and_answers_stay_the_same() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("a store");
        let mut freeing = operator(&store, Some(0));
        let kept_dir = tempfile::tempdir().expect("a temporary directory");
        let kept_store = Store::open(kept_dir.path(), StoreOptions::default()).expect("a store");
        let mut keeping = operator(&kept_store, None);
        let steps: Vec<Step> = vec![
            (1, vec![(1, 10, 100), (1, 20, 200), (2, 5, 500)]),
            (0, vec![(1, 15, 1), (1, 25, 2), (2, 6, 3)]),
            (1, vec![(1, 30, 300)]),
            (0, vec![(1, 35, 4)]),
        ];
        for (port, rows) in &steps {
            assert_eq!(
                feed(&mut freeing, *port, rows),
                feed(&mut keeping, *port, rows)
            );
        }
        assert_eq!(freeing.rows_held(), (4, 4));
        // Every row still to come is at 32 or later: the left rows before it cannot be
        // re-matched, and of key 1's right rows only the one at 30 can still be a match.
        let mut out = Vec::new();
        freeing.on_watermark(32, &mut out).expect("watermark");
        assert!(out.is_empty());
        assert_eq!(freeing.rows_held(), (1, 2));
        // The same answers as the operator that kept everything, for new rows on both sides.
        let later: Vec<Step> = vec![
            (0, vec![(1, 40, 5), (2, 40, 6)]),
            (1, vec![(1, 33, 330), (2, 38, 380)]),
            (0, vec![(1, 50, 7)]),
        ];
        for (port, rows) in &later {
            assert_eq!(
                feed(&mut freeing, *port, rows),
                feed(&mut keeping, *port, rows)
            );
        }
        // What was freed is deleted at the checkpoint: a restart holds what memory held.
        let mut batch = WriteBatch::default();
        freeing.checkpoint(&mut batch).expect("checkpoint");
        store.write(batch).expect("written");
        let held = freeing.rows_held();
        let mut restored = operator(&store, Some(0));
        // Nothing is read at start-up; the keys' rows are read when needed.
        assert_eq!(restored.rows_held(), (0, 0));
        read_keys(&mut restored, &[1, 2]);
        assert_eq!(restored.rows_held(), held);
        // The watermark replayed after a restart changes nothing.
        restored.on_watermark(32, &mut out).expect("watermark");
        assert_eq!(restored.rows_held(), held);
    }
}
