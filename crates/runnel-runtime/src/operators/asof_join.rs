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

use std::any::Any;
use std::collections::{BTreeMap, HashSet};
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
        };
        op.load(store)?;
        Ok(op)
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
            changes.extend(self.joined_range(&key, from, to, 1));
        }
        self.emit(&changes, out)
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
