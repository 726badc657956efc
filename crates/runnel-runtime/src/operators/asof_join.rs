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
//! State lives in memory and is written to the store at checkpoints for the entries that
//! changed (key: side, encoded join key, time, row).
//!
//! **Freed by the clock.** When both inputs are append-only and the clock bounds both time
//! columns, every row still to come has a time at or after the *frontier* `F` = watermark
//! minus the larger lag. A left row before `F` can no longer be re-matched (a right change at
//! `t` touches left rows from `t` on), so it goes; of the right rows before `F`, only the
//! newest (all of that time) can still be anyone's match, so the older ones go. Keys are
//! visited only when something of theirs may have passed the frontier (`checks`).

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Bound;

use datafusion::arrow::array::{Array, Int64Array, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use hashbrown::HashMap;
use runnel_common::{ChangeBatch, Result, RunnelError};
use runnel_state::codec::{decode_rows, encode_rows, EncodedRows};
use runnel_state::{keys, Store, WriteBatch};

use crate::expr::{evaluate, evaluate_all, timestamp_micros, CompiledExpr};
use crate::operator::Operator;
use crate::view_rows::{decode_count, write_weight};

type Key = Box<[u8]>;
/// Rows of one side for one key: (time, row bytes) -> weight.
type Rows = BTreeMap<(i64, Key), i64>;

#[derive(Default)]
struct KeyState {
    left: Rows,
    right: Rows,
}

const LEFT: u8 = 0;
const RIGHT: u8 = 1;

/// One side's compiled expressions.
pub struct AsofSide {
    pub keys: Vec<CompiledExpr>,
    pub time: CompiledExpr,
    pub types: Vec<DataType>,
}

pub struct AsofJoinOp {
    prefix: Vec<u8>,
    sides: [AsofSide; 2],
    strict: bool,
    schema: SchemaRef,
    state: HashMap<Key, KeyState>,
    /// (side, key, time, row) changed since the last checkpoint.
    dirty: HashSet<(u8, Key, i64, Key)>,
    /// The frontier's distance behind the clock, when the clock frees state (see the module
    /// docs); `None`: state is kept.
    frontier_lag: Option<i64>,
    /// Per key, the earliest frontier that frees some of its rows, and the same as an
    /// ordered set to pop from.
    next_check: HashMap<Key, i64>,
    checks: BTreeSet<(i64, Key)>,
}

/// One output row before decoding: the left row, its match (if any), the weight.
type Joined = (Key, Option<Key>, i64);

impl AsofJoinOp {
    pub fn new(
        store: &Store,
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
        let mut op = AsofJoinOp {
            prefix,
            sides: [left, right],
            strict,
            schema,
            state: HashMap::new(),
            dirty: HashSet::new(),
            frontier_lag,
            next_check: HashMap::new(),
            checks: BTreeSet::new(),
        };
        op.load(store)?;
        if op.frontier_lag.is_some() {
            let due: Vec<(Key, i64)> = op
                .state
                .iter()
                .filter_map(|(key, state)| Some((key.clone(), first_freeing(state)?)))
                .collect();
            for (key, at) in due {
                op.schedule(&key, at);
            }
        }
        Ok(op)
    }

    /// Rows of the left and right state, for tests.
    #[cfg(test)]
    fn rows_held(&self) -> (usize, usize) {
        self.state
            .values()
            .fold((0, 0), |(l, r), s| (l + s.left.len(), r + s.right.len()))
    }

    /// Notes that `key` may have rows to free once the frontier passes `at`.
    fn schedule(&mut self, key: &Key, at: i64) {
        if self.frontier_lag.is_none() {
            return;
        }
        match self.next_check.get(key) {
            Some(&due) if due <= at => {}
            Some(&due) => {
                self.checks.remove(&(due, key.clone()));
                self.checks.insert((at, key.clone()));
                self.next_check.insert(key.clone(), at);
            }
            None => {
                self.checks.insert((at, key.clone()));
                self.next_check.insert(key.clone(), at);
            }
        }
    }

    /// Frees what the frontier `frontier` makes unreachable for `key` (see the module docs).
    fn free(&mut self, key: &Key, frontier: i64) {
        let Some(state) = self.state.get_mut(key) else {
            return;
        };
        let bound = (frontier, Key::from([]));
        let kept = state.left.split_off(&bound);
        for (time, row) in std::mem::replace(&mut state.left, kept).into_keys() {
            self.dirty.insert((LEFT, key.clone(), time, row));
        }
        let newest_before = state.right.range(..bound).next_back().map(|((t, _), _)| *t);
        if let Some(newest) = newest_before {
            let kept = state.right.split_off(&(newest, Key::from([])));
            for (time, row) in std::mem::replace(&mut state.right, kept).into_keys() {
                self.dirty.insert((RIGHT, key.clone(), time, row));
            }
        }
        let next = first_freeing(state);
        if state.left.is_empty() && state.right.is_empty() {
            self.state.remove(key);
        }
        if let Some(at) = next {
            self.schedule(key, at);
        }
    }

    fn store_key(&self, side: u8, key: &[u8], time: i64, row: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + 13 + key.len() + row.len());
        k.extend_from_slice(&self.prefix);
        k.push(side);
        keys::push_sized(&mut k, key);
        k.extend_from_slice(&keys::ordered_i64(time));
        k.extend_from_slice(row);
        k
    }

    fn load(&mut self, store: &Store) -> Result<()> {
        let corrupt = || RunnelError::internal("ASOF join state key is malformed");
        for (k, v) in store.scan_prefix(&self.prefix)? {
            let rest = &k[self.prefix.len()..];
            let (&side, mut rest) = rest.split_first().ok_or_else(corrupt)?;
            let key = keys::take_sized(&mut rest).ok_or_else(corrupt)?;
            let (time, row) = rest.split_first_chunk::<8>().ok_or_else(corrupt)?;
            let time = keys::ordered_i64_from(*time);
            let weight = decode_count(&v)?;
            let state = self.state.entry(key.into()).or_default();
            let rows = if side == LEFT {
                &mut state.left
            } else {
                &mut state.right
            };
            rows.insert((time, row.into()), weight);
        }
        Ok(())
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
            &self.sides[0].types,
        )?;
        let matched: Vec<&[u8]> = joined.iter().filter_map(|(_, r, _)| r.as_deref()).collect();
        let right_columns = decode_rows(matched.iter().copied(), &self.sides[1].types)?;
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

    fn process_left(&mut self, batch: &ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let (keys, valid, times, rows) = self.encode(0, &batch.data)?;
        let mut joined: Vec<Joined> = Vec::with_capacity(batch.num_rows());
        for (i, &key_valid) in valid.iter().enumerate() {
            let w = batch.weights.value(i);
            let row: Key = rows.row(i).into();
            if !key_valid || times.is_null(i) {
                joined.push((row, None, w));
                continue;
            }
            let (key, time) = (Key::from(keys.row(i)), times.value(i));
            let state = self.state.entry(key.clone()).or_default();
            let m = Self::matching(&state.right, time, self.strict);
            match m {
                Some((r, rw)) => joined.push((row.clone(), Some(r.into()), w * rw)),
                None => joined.push((row.clone(), None, w)),
            }
            let entry = state.left.entry((time, row.clone())).or_insert(0);
            *entry += w;
            if *entry == 0 {
                state.left.remove(&(time, row.clone()));
            }
            self.schedule(&key, time);
            self.dirty.insert((LEFT, key, time, row));
        }
        self.emit(&joined, out)
    }

    /// Joined rows of left rows with times in `[from, to)` under the current right rows.
    fn joined_range(&self, key: &[u8], from: i64, to: Option<i64>, sign: i64) -> Vec<Joined> {
        let Some(state) = self.state.get(key) else {
            return Vec::new();
        };
        let upper = match to {
            Some(t) => Bound::Excluded((t, Box::from([]) as Key)),
            None => Bound::Unbounded,
        };
        state
            .left
            .range((Bound::Included((from, Box::from([]) as Key)), upper))
            .filter(|(_, w)| **w != 0)
            .map(
                |((time, row), w)| match Self::matching(&state.right, *time, self.strict) {
                    Some((r, rw)) => (row.clone(), Some(Key::from(r)), sign * w * rw),
                    None => (row.clone(), None, sign * w),
                },
            )
            .collect()
    }

    fn process_right(&mut self, batch: &ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let (keys, valid, times, rows) = self.encode(1, &batch.data)?;
        let mut by_key: HashMap<Key, Vec<usize>> = HashMap::new();
        for (i, &key_valid) in valid.iter().enumerate() {
            if key_valid && times.is_valid(i) {
                by_key.entry(keys.row(i).into()).or_default().push(i);
            }
        }
        let mut changes: Vec<Joined> = Vec::new();
        for (key, indices) in by_key {
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
            let next_right = self.state.get(&key).and_then(|s| {
                let after = hi.checked_add(1)?;
                s.right
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
            changes.extend(self.joined_range(&key, from, to, -1));
            let state = self.state.entry(key.clone()).or_default();
            for &i in &indices {
                let entry = (times.value(i), Key::from(rows.row(i)));
                let w = state.right.entry(entry.clone()).or_insert(0);
                *w += batch.weights.value(i);
                if *w == 0 {
                    state.right.remove(&entry);
                }
                self.dirty.insert((RIGHT, key.clone(), entry.0, entry.1));
            }
            self.schedule(&key, lo);
            changes.extend(self.joined_range(&key, from, to, 1));
        }
        self.emit(&changes, out)
    }
}

/// The earliest frontier past which some of `state`'s rows are freed: its first left row's
/// time, or the time of its second-oldest right rows (the oldest go once a newer one is
/// behind the frontier).
fn first_freeing(state: &KeyState) -> Option<i64> {
    let left = state.left.keys().next().map(|(t, _)| *t);
    let right = state.right.keys().next().and_then(|(oldest, _)| {
        let after = oldest.checked_add(1)?;
        state
            .right
            .range((after, Key::from([]))..)
            .next()
            .map(|((t, _), _)| *t)
    });
    match (left, right) {
        (Some(l), Some(r)) => Some(l.min(r)),
        (l, r) => l.or(r),
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
        let Some(lag) = self.frontier_lag else {
            return Ok(());
        };
        let frontier = watermark.saturating_sub(lag);
        while let Some((at, _)) = self.checks.first() {
            if *at >= frontier {
                break;
            }
            let Some((_, key)) = self.checks.pop_first() else {
                break;
            };
            self.next_check.remove(&key);
            self.free(&key, frontier);
        }
        Ok(())
    }

    fn checkpoint(&mut self, batch: &mut WriteBatch) -> Result<()> {
        // In key order: RocksDB's memtable inserts sorted keys far faster than random ones.
        let mut dirty: Vec<(u8, Key, i64, Key)> =
            std::mem::take(&mut self.dirty).into_iter().collect();
        dirty.sort_unstable();
        for (side, key, time, row) in dirty {
            let store_key = self.store_key(side, &key, time, &row);
            let weight = self.state.get(&key).and_then(|s| {
                let rows = if side == LEFT { &s.left } else { &s.right };
                rows.get(&(time, row.clone())).copied()
            });
            write_weight(batch, &store_key, weight);
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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

    fn operator(store: &Store, frontier_lag: Option<i64>) -> AsofJoinOp {
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
        assert_eq!(restored.rows_held(), held);
        // The watermark replayed after a restart changes nothing.
        restored.on_watermark(32, &mut out).expect("watermark");
        assert_eq!(restored.rows_held(), held);
    }
}
