//! Equi-join (inner and left outer) maintained with the delta rule
//! Δ(L ⋈ R) = ΔL ⋈ R + L' ⋈ ΔR: each side keeps its rows indexed by join key, a batch from
//! one side probes the other side's state and is then added to its own.
//!
//! A left join also tracks, per key, the total weight of right rows: a left row with no
//! match is emitted padded with NULLs, and that padded row is retracted when the key's first
//! right row arrives (and re-emitted when its last right row goes). Rows whose key has a NULL
//! never match, as in SQL.
//!
//! State per side and key: the multiset of encoded rows, one store value per key, in a
//! `runnel_state::KeyedState` per side (key: the side, then the vnode of the join key, then
//! the join key): read when a batch needs the key, cached within the shared state budget. A
//! probe reads only keys that have rows on the other side; it makes no slot for the others.
//!
//! Interval joins (`a.ts BETWEEN b.ts - INTERVAL ... AND b.ts` over streams with watermarks):
//! the plan gives, per side, a time below which a row can match no future row of the other
//! side; such rows are freed as the clock passes (their joined rows stay in the view), so
//! the state holds only the rows still inside the interval. Each such row is noted in the
//! side's `runnel_state::TimeIndex` by its time rounded up to [`EXPIRY_GRID_MICROS`] (entry:
//! the join key, tagged with its slot), where the clock finds the keys to visit; a visit drops
//! the key's rows whose time the cutoff has passed (each row is held with its time). So rows
//! go at most one grid step late (the join's condition still filters every output row, so
//! that changes no result), a key is visited at most once per step, and the index holds keys,
//! not copies of rows. Keys are read like any others, nothing is pinned.

use std::any::Any;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, Int64Array, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use runnel_common::{ChangeBatch, Result, RunnelError};
use runnel_plan::JoinType;
use runnel_state::codec::{decode_rows, encode_rows, EncodedRows};
use runnel_state::vnode::Vnode;
use runnel_state::{KeyedState, SlotValues, TimeIndex, WriteBatch};

use crate::exchange::keys_of;
use crate::expr::{evaluate, evaluate_all, evaluate_predicate, timestamp_micros, CompiledExpr};
use crate::operator::Operator;

/// The grid rows' times are rounded up to in the expiry index (about a second).
pub const EXPIRY_GRID_MICROS: i64 = 1 << 20;

/// Rows of a side freed once the clock passes their time plus `lag_micros`.
pub struct Expiry {
    pub time: CompiledExpr,
    pub lag_micros: i64,
    /// (time rounded up to the grid, join key) of the side's rows, tagged with the key's
    /// slot. An entry stays when its rows go earlier (the visit finds nothing to drop).
    by_time: TimeIndex,
    /// The index has expired every entry at or before this.
    expired_upto: i64,
}

impl Expiry {
    pub fn new(time: CompiledExpr, lag_micros: i64, by_time: TimeIndex) -> Self {
        Expiry {
            time,
            lag_micros,
            by_time,
            expired_upto: i64::MIN,
        }
    }

    /// Notes the key of a row at `time`; `noted`: the grid time last noted for the key's slot.
    fn note(&mut self, time: i64, key: &[u8], vnode: Vnode, slot: u32, noted: &mut i64) {
        let on_grid = time | (EXPIRY_GRID_MICROS - 1);
        // The key's entry at this grid time is still to come, and its visit frees this row too.
        if *noted == on_grid && on_grid > self.expired_upto {
            return;
        }
        *noted = on_grid;
        self.by_time.set_tagged(vnode, on_grid, key, slot);
    }
}

struct JoinSide {
    key_exprs: Vec<CompiledExpr>,
    expiry: Option<Expiry>,
    row_types: Vec<DataType>,
    /// Which join key is in which slot, read on demand and cached (`runnel_state::KeyedState`).
    state: KeyedState,
    rows: SideRows,
}

/// A row held by a side: its count, and the time the clock frees it after (`i64::MAX`: never).
#[derive(Clone, Copy)]
struct Held {
    count: i64,
    time: i64,
}

/// One key's multiset of encoded rows. Most keys of an interval join hold one row at a time
/// (a bid's price), so one row is kept without a map. Several rows are kept in the order of
/// their time (a row's time is a function of the row: the expiry's expression over it), so the
/// clock drops a key's oldest rows without looking at the others: a key of many rows (a
/// common price) is visited once per grid step while its rows span many.
#[derive(Default)]
enum KeyRows {
    #[default]
    Empty,
    One(Box<[u8]>, Held),
    Many(BTreeMap<(i64, Box<[u8]>), i64>),
}

impl KeyRows {
    fn is_empty(&self) -> bool {
        match self {
            KeyRows::Empty => true,
            KeyRows::One(..) => false,
            KeyRows::Many(rows) => rows.is_empty(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&[u8], Held)> + '_ {
        let (one, many) = match self {
            KeyRows::Empty => (None, None),
            KeyRows::One(row, held) => (Some((&row[..], *held)), None),
            KeyRows::Many(rows) => {
                let rows = rows
                    .iter()
                    .map(|((time, row), &count)| (&row[..], Held { count, time: *time }));
                (None, Some(rows))
            }
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    fn add(&mut self, row: &[u8], weight: i64, time: i64) {
        let held = Held {
            count: weight,
            time,
        };
        match self {
            KeyRows::Empty => *self = KeyRows::One(row.into(), held),
            KeyRows::One(one, one_held) => {
                if **one == *row {
                    one_held.count += weight;
                    if one_held.count == 0 {
                        *self = KeyRows::Empty;
                    }
                    return;
                }
                let KeyRows::One(one, one_held) = std::mem::take(self) else {
                    unreachable!("matched as one row above");
                };
                let mut rows = BTreeMap::new();
                rows.insert((one_held.time, one), one_held.count);
                rows.insert((time, row.into()), weight);
                *self = KeyRows::Many(rows);
            }
            // A new row (the common case) needs its own copy anyway.
            KeyRows::Many(rows) => match rows.entry((time, row.into())) {
                Entry::Occupied(mut found) => {
                    *found.get_mut() += weight;
                    if *found.get() == 0 {
                        found.remove();
                    }
                }
                Entry::Vacant(new) => {
                    new.insert(weight);
                }
            },
        }
    }

    /// Drops the rows whose time is before `cutoff`: the total count of those dropped, `None`
    /// when none was.
    fn free_before(&mut self, cutoff: i64) -> Option<i64> {
        match self {
            KeyRows::Empty => None,
            KeyRows::One(_, held) => {
                if held.time >= cutoff {
                    return None;
                }
                let dropped = held.count;
                *self = KeyRows::Empty;
                Some(dropped)
            }
            KeyRows::Many(rows) => {
                if rows
                    .first_key_value()
                    .is_none_or(|((time, _), _)| *time >= cutoff)
                {
                    return None;
                }
                let kept = rows.split_off(&(cutoff, Box::default()));
                Some(std::mem::replace(rows, kept).values().sum())
            }
        }
    }
}

/// A side's rows by slot: per join key, the multiset of encoded rows and their total weight.
struct SideRows {
    rows: Vec<KeyRows>,
    totals: Vec<i64>,
    /// Per slot, the grid time its key was last noted at in the expiry index (`i64::MIN`: not
    /// since the slot was filled), so that a key's rows in one grid step make one entry.
    noted: Vec<i64>,
}

impl SideRows {
    fn add(&mut self, slot: u32, row: &[u8], weight: i64, time: i64) {
        let s = slot as usize;
        self.rows[s].add(row, weight, time);
        self.totals[s] += weight;
    }

    /// Drops the key's rows the clock frees (time before `cutoff`); whether any went.
    fn free_before(&mut self, slot: u32, cutoff: i64) -> bool {
        let s = slot as usize;
        let Some(freed) = self.rows[s].free_before(cutoff) else {
            return false;
        };
        self.totals[s] -= freed;
        true
    }
}

impl SlotValues for SideRows {
    fn grow(&mut self, slots: usize) {
        self.rows.resize_with(slots, KeyRows::default);
        self.totals.resize(slots, 0);
        self.noted.resize(slots, i64::MIN);
    }

    /// A key's rows: (u32 length, encoded row, i64 count, i64 time) repeated.
    fn load(&mut self, slot: u32, value: &[u8]) -> Result<()> {
        let mut bytes = value;
        while !bytes.is_empty() {
            let len = take_u32(&mut bytes)? as usize;
            if bytes.len() < len + 16 {
                return Err(RunnelError::internal("truncated join state"));
            }
            let (row, rest) = bytes.split_at(len);
            let (count, rest) = rest.split_at(8);
            let (time, rest) = rest.split_at(8);
            bytes = rest;
            let int = |b: &[u8]| {
                b.try_into()
                    .map(i64::from_le_bytes)
                    .map_err(|_| RunnelError::internal("join state integer is not 8 bytes"))
            };
            self.add(slot, row, int(count)?, int(time)?);
        }
        Ok(())
    }

    fn save(&self, slot: u32, out: &mut Vec<u8>) -> bool {
        let rows = &self.rows[slot as usize];
        if rows.is_empty() {
            return false;
        }
        for (row, held) in rows.iter() {
            out.extend_from_slice(&(row.len() as u32).to_le_bytes());
            out.extend_from_slice(row);
            out.extend_from_slice(&held.count.to_le_bytes());
            out.extend_from_slice(&held.time.to_le_bytes());
        }
        true
    }

    fn is_empty(&self, slot: u32) -> bool {
        self.rows[slot as usize].is_empty()
    }

    fn reset(&mut self, slot: u32) {
        self.rows[slot as usize] = KeyRows::Empty;
        self.totals[slot as usize] = 0;
        self.noted[slot as usize] = i64::MIN;
    }
}

impl JoinSide {
    fn open(
        key_exprs: Vec<CompiledExpr>,
        row_types: Vec<DataType>,
        expiry: Option<Expiry>,
        state: KeyedState,
    ) -> Self {
        JoinSide {
            key_exprs,
            expiry,
            row_types,
            state,
            rows: SideRows {
                rows: Vec::new(),
                totals: Vec::new(),
                noted: Vec::new(),
            },
        }
    }

    fn add(&mut self, slot: u32, row: &[u8], weight: i64, time: i64) {
        self.rows.add(slot, row, weight, time);
        self.state.mark_dirty(slot);
    }

    /// Drops the key's rows the clock frees (time before `cutoff`), marking it changed if any
    /// went.
    fn free_before(&mut self, slot: u32, cutoff: i64) {
        if self.rows.free_before(slot, cutoff) {
            self.state.mark_dirty(slot);
        }
    }

    /// The slot of each key with rows on this side (read from the store if needed).
    fn find<'k>(&mut self, keys: impl IntoIterator<Item = &'k [u8]>) -> Result<Vec<Option<u32>>> {
        let mut found = Vec::new();
        self.state.find(keys, &mut self.rows, &mut found)?;
        Ok(found)
    }
}

/// Output under construction: pairs of (row from the batch, row from state or NULL padding).
struct Pairs<'a> {
    batch_rows: Vec<u32>,
    state_rows: Vec<&'a [u8]>,
    weights: Vec<i64>,
}

impl Pairs<'_> {
    fn new() -> Self {
        Pairs {
            batch_rows: Vec::new(),
            state_rows: Vec::new(),
            weights: Vec::new(),
        }
    }
}

pub struct JoinOp {
    join_type: JoinType,
    sides: [JoinSide; 2],
    /// The common type each key column is cast to before encoding.
    key_types: Vec<DataType>,
    filter: Option<CompiledExpr>,
    schema: SchemaRef,
}

impl JoinOp {
    /// `states`: each side's state table (left, right).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        states: [KeyedState; 2],
        join_type: JoinType,
        left_keys: Vec<CompiledExpr>,
        right_keys: Vec<CompiledExpr>,
        key_types: Vec<DataType>,
        left_types: Vec<DataType>,
        right_types: Vec<DataType>,
        filter: Option<CompiledExpr>,
        schema: SchemaRef,
        expiry: [Option<Expiry>; 2],
    ) -> Result<Self> {
        let [left_expiry, right_expiry] = expiry;
        let [left_state, right_state] = states;
        Ok(JoinOp {
            join_type,
            sides: [
                JoinSide::open(left_keys, left_types, left_expiry, left_state),
                JoinSide::open(right_keys, right_types, right_expiry, right_state),
            ],
            key_types,
            filter,
            schema,
        })
    }

    /// Builds output rows. `side` is the batch's side; the other side's columns come from
    /// encoded state rows, or NULLs where a state row is absent (left-join padding).
    fn build(
        &self,
        side: usize,
        batch: &RecordBatch,
        pairs: &Pairs,
        padded_state: bool,
    ) -> Result<Option<RecordBatch>> {
        let n = pairs.weights.len();
        if n == 0 {
            return Ok(None);
        }
        let take_idx = UInt32Array::from(pairs.batch_rows.clone());
        let batch_cols: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &take_idx, None))
            .collect::<std::result::Result<_, _>>()?;
        let other = 1 - side;
        let other_cols: Vec<ArrayRef> = if padded_state {
            self.sides[other]
                .row_types
                .iter()
                .map(|t| new_null_array(t, n))
                .collect()
        } else {
            decode_rows(
                pairs.state_rows.iter().copied(),
                &self.sides[other].row_types,
            )?
        };
        let columns = if side == 0 {
            batch_cols.into_iter().chain(other_cols).collect()
        } else {
            other_cols.into_iter().chain(batch_cols).collect()
        };
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        Ok(Some(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?))
    }

    /// Left rows from state with NULL padding on the right, weight `sign` * their count.
    fn padded_from_state(&self, slot: u32, sign: i64) -> Result<Option<ChangeBatch>> {
        let left = &self.sides[0];
        let rows: Vec<(&[u8], i64)> = left.rows.rows[slot as usize]
            .iter()
            .filter(|(_, held)| held.count != 0)
            .map(|(r, held)| (r, held.count * sign))
            .collect();
        if rows.is_empty() {
            return Ok(None);
        }
        let n = rows.len();
        let mut columns = decode_rows(rows.iter().map(|(r, _)| *r), &left.row_types)?;
        for t in &self.sides[1].row_types {
            columns.push(new_null_array(t, n));
        }
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        let data = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?;
        Ok(Some(ChangeBatch::new(
            data,
            Int64Array::from_iter_values(rows.iter().map(|(_, w)| *w)),
        )))
    }

    fn emit(&self, batch: ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        match &self.filter {
            Some(filter) => {
                let mask = evaluate_predicate(filter, &batch.data)?;
                let kept = batch.filter(&mask)?;
                if !kept.is_empty() {
                    out.push(kept);
                }
            }
            None => out.push(batch),
        }
        Ok(())
    }
}

fn take_u32(bytes: &mut &[u8]) -> Result<u32> {
    let (head, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| RunnelError::internal("truncated join state"))?;
    *bytes = rest;
    Ok(u32::from_le_bytes(*head))
}

impl JoinOp {
    /// [`Operator::process`], with the rows' join keys when an exchange encoded them.
    fn process_batch(
        &mut self,
        port: usize,
        batch: ChangeBatch,
        given_keys: Option<&EncodedRows>,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let side = port;
        let other = 1 - side;
        let n = batch.num_rows();
        let mut key_columns = evaluate_all(&self.sides[side].key_exprs, &batch.data)?;
        for (column, key_type) in key_columns.iter_mut().zip(&self.key_types) {
            if column.data_type() != key_type {
                *column = cast(column, key_type)?;
            }
        }
        let mut scratch = EncodedRows::new();
        let keys = keys_of(given_keys, &key_columns, &mut scratch)?;
        let mut rows = EncodedRows::with_capacity(n, n * 32);
        encode_rows(&[], batch.data.columns(), &mut rows)?;
        let weights = batch.weights.values();
        let has_null = |i: usize| key_columns.iter().any(|c| c.is_null(i));

        // Rows whose key has no NULL: the only ones that can match or be kept.
        let keyed: Vec<usize> = (0..n).filter(|&i| !has_null(i)).collect();
        self.sides[0].state.begin_batch();
        self.sides[1].state.begin_batch();

        // Probe outputs are collected first (borrowing state), then state is updated.
        let mut outputs: Vec<ChangeBatch> = Vec::new();
        let left_join = self.join_type == JoinType::Left;
        if side == 0 || !left_join {
            let found = self.sides[other].find(keyed.iter().map(|&i| keys.row(i)))?;
            let mut matched: Vec<Option<u32>> = vec![None; n];
            for (&i, slot) in keyed.iter().zip(&found) {
                matched[i] = *slot;
            }
            {
                let mut pairs = Pairs::new();
                let mut padded = Pairs::new();
                let probe = &self.sides[other].rows;
                for (i, &slot) in matched.iter().enumerate() {
                    let w = weights[i];
                    let matched = slot.filter(|&s| !probe.rows[s as usize].is_empty());
                    match matched {
                        Some(s) if !left_join || probe.totals[s as usize] > 0 => {
                            for (row, held) in probe.rows[s as usize].iter() {
                                pairs.batch_rows.push(i as u32);
                                pairs.state_rows.push(row);
                                pairs.weights.push(w * held.count);
                            }
                        }
                        _ => {
                            if left_join {
                                padded.batch_rows.push(i as u32);
                                padded.weights.push(w);
                            }
                        }
                    }
                }
                if let Some(data) = self.build(side, &batch.data, &pairs, false)? {
                    outputs.push(ChangeBatch::new(data, Int64Array::from(pairs.weights)));
                }
                if let Some(data) = self.build(side, &batch.data, &padded, true)? {
                    outputs.push(ChangeBatch::new(data, Int64Array::from(padded.weights)));
                }
            }
            let times = match &self.sides[side].expiry {
                Some(expiry) => Some(timestamp_micros(&evaluate(&expiry.time, &batch.data)?)?),
                None => None,
            };
            let own = &mut self.sides[side];
            let (mut slots, mut touched) = (Vec::with_capacity(keyed.len()), Vec::new());
            own.state.resolve(
                keyed.iter().map(|&i| keys.row(i)),
                &mut own.rows,
                &mut slots,
                &mut touched,
            )?;
            for (&i, &s) in keyed.iter().zip(&slots) {
                // The time the clock frees the row after (never without an expiry or a time).
                let time = match &times {
                    Some(times) if times.is_valid(i) => times.value(i),
                    _ => i64::MAX,
                };
                own.add(s, rows.row(i), weights[i], time);
                if let Some(expiry) = own.expiry.as_mut() {
                    if time != i64::MAX && weights[i] > 0 {
                        let vnode = own.state.vnode(s);
                        let noted = &mut own.rows.noted[s as usize];
                        expiry.note(time, keys.row(i), vnode, s, noted);
                    }
                }
            }
        } else {
            // A right-side batch of a left join: row by row, so that each key's transition
            // between "has matches" and "has none" is seen exactly once.
            for &i in &keyed {
                let w = weights[i];
                let key = keys.row(i);
                let right = &mut self.sides[1];
                let right_slot = right.state.slot_for(key, &mut right.rows)?;
                let before = right.rows.totals[right_slot as usize];
                let left_slot = self.sides[0].find(std::iter::once(key))?[0];
                if let Some(ls) = left_slot {
                    let mut pairs = Pairs::new();
                    for (row, held) in self.sides[0].rows.rows[ls as usize].iter() {
                        pairs.batch_rows.push(i as u32);
                        pairs.state_rows.push(row);
                        pairs.weights.push(w * held.count);
                    }
                    if let Some(data) = self.build(1, &batch.data, &pairs, false)? {
                        outputs.push(ChangeBatch::new(data, Int64Array::from(pairs.weights)));
                    }
                }
                // (Left joins have no expiry: only inner interval joins free rows.)
                self.sides[1].add(right_slot, rows.row(i), w, i64::MAX);
                let after = self.sides[1].rows.totals[right_slot as usize];
                if let Some(ls) = left_slot {
                    if before <= 0 && after > 0 {
                        if let Some(b) = self.padded_from_state(ls, -1)? {
                            outputs.push(b);
                        }
                    } else if before > 0 && after <= 0 {
                        if let Some(b) = self.padded_from_state(ls, 1)? {
                            outputs.push(b);
                        }
                    }
                }
            }
        }
        for b in outputs {
            self.emit(b, out)?;
        }
        for side in &mut self.sides {
            side.state.evict(&mut side.rows);
        }
        Ok(())
    }
}

impl Operator for JoinOp {
    fn process(
        &mut self,
        port: usize,
        batch: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        self.process_batch(port, batch, None, out)
    }

    fn process_keyed(
        &mut self,
        port: usize,
        batch: ChangeBatch,
        keys: &EncodedRows,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        self.process_batch(port, batch, Some(keys), out)
    }

    fn on_watermark(&mut self, watermark: i64, _out: &mut Vec<ChangeBatch>) -> Result<()> {
        for side in &mut self.sides {
            let Some(expiry) = side.expiry.as_mut() else {
                continue;
            };
            let Some(cutoff) = watermark.checked_sub(expiry.lag_micros) else {
                continue;
            };
            // Rows before the cutoff can match no row still to come.
            let expired = expiry.by_time.expire(cutoff.saturating_sub(1))?;
            expiry.expired_upto = expiry.expired_upto.max(cutoff.saturating_sub(1));
            if expired.is_empty() {
                continue;
            }
            // A key is visited in the slot its tag names where that still holds it (a key
            // noted at several grid times is visited once per time: a visit that finds nothing
            // to free changes nothing); the others are found by key, each once.
            side.state.begin_batch();
            let slots = side
                .state
                .slots_tagged(expired.keys_tagged(), &mut side.rows)?;
            for slot in slots {
                side.free_before(slot, cutoff);
            }
            side.state.evict(&mut side.rows);
        }
        Ok(())
    }

    fn checkpoint(&mut self, batch: &mut WriteBatch) -> Result<()> {
        // Keys whose rows all went are deleted and their slots freed.
        for side in &mut self.sides {
            side.state.checkpoint(batch, &mut side.rows);
            if let Some(expiry) = side.expiry.as_mut() {
                expiry.by_time.checkpoint(batch);
            }
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

    fn contents(rows: &KeyRows) -> BTreeMap<Vec<u8>, (i64, i64)> {
        rows.iter()
            .map(|(row, held)| (row.to_vec(), (held.count, held.time)))
            .collect()
    }

    /// A key's rows, kept as one row or a map as they come and go, hold what a plain map of
    /// counts holds (rows whose count reaches 0 gone), and freeing by time drops exactly the
    /// rows before the cutoff.
    #[test]
    fn key_rows_equal_a_map_of_counts() {
        let mut rows = KeyRows::default();
        let mut model: BTreeMap<Vec<u8>, (i64, i64)> = BTreeMap::new();
        // A fixed pseudo-random walk over three rows, weights -1..=2, times 0..9.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for step in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let row = vec![b'a' + (x % 3) as u8];
            let weight = (x >> 8) as i64 % 4 - 1;
            // A row's time is a function of the row (the expiry's expression over it).
            let time = i64::from(row[0] - b'a') * 3;
            if step % 50 == 49 {
                let cutoff = ((x >> 16) % 8) as i64;
                let freed = rows.free_before(cutoff).unwrap_or(0);
                let mut expect = 0;
                model.retain(|_, (count, t)| {
                    let keep = *t >= cutoff;
                    if !keep {
                        expect += *count;
                    }
                    keep
                });
                assert_eq!(freed, expect, "step {step}");
            } else if weight != 0 {
                rows.add(&row, weight, time);
                let entry = model.entry(row.clone()).or_insert((0, time));
                entry.0 += weight;
                if entry.0 == 0 {
                    model.remove(&row);
                }
            }
            assert_eq!(contents(&rows), model, "step {step}");
            assert_eq!(rows.is_empty(), model.is_empty(), "step {step}");
        }
    }
}
