//! Ordered rows per key, with weights: the slot values of a [`KeyedState`] in the rows layout
//! (see `keyed_state.rs`) for operators whose state per key is an ordered multiset of rows (an
//! OVER window's partition by ORDER BY key, an ASOF join side's rows by time). The operator
//! says how a row key is ordered and encoded ([`RowKey`]); [`OrderedRows`] keeps the rows and
//! which changed since the last checkpoint, and reads and writes them row by row.
//!
//! [`KeyedState`]: crate::KeyedState

use std::collections::{BTreeMap, BTreeSet};

use runnel_common::{Result, RunnelError};

use crate::keyed_state::{RowWriter, SlotValues};
use crate::keys::{ordered_i64, ordered_i64_from, push_sized, take_sized};

/// How a row is ordered within its key and stored (its store key within the key's range).
pub trait RowKey: Ord + Clone {
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(bytes: &[u8]) -> Result<Self>;
    /// Bytes it takes in memory, roughly.
    fn size(&self) -> usize;
}

/// A time (stored order-preserving) and an encoded row.
impl RowKey for (i64, Box<[u8]>) {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&ordered_i64(self.0));
        out.extend_from_slice(&self.1);
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let (time, row) = bytes
            .split_first_chunk::<8>()
            .ok_or_else(|| RunnelError::internal("a stored row key lacks its time"))?;
        Ok((ordered_i64_from(*time), row.into()))
    }

    fn size(&self) -> usize {
        8 + self.1.len()
    }
}

/// An order key (stored length-prefixed) and an encoded row.
impl RowKey for (Box<[u8]>, Box<[u8]>) {
    fn encode(&self, out: &mut Vec<u8>) {
        push_sized(out, &self.0);
        out.extend_from_slice(&self.1);
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let mut rest = bytes;
        let order = take_sized(&mut rest)
            .ok_or_else(|| RunnelError::internal("a stored row key lacks its order key"))?;
        Ok((order.into(), rest.into()))
    }

    fn size(&self) -> usize {
        self.0.len() + self.1.len()
    }
}

/// Memory a row costs beyond its key: its weight and the ordered map's share of a node.
const ROW_OVERHEAD: usize = 56;

/// Each slot's rows, and the rows changed since the slot was last saved.
pub struct OrderedRows<K> {
    rows: Vec<BTreeMap<K, i64>>,
    changed: Vec<BTreeSet<K>>,
}

impl<K> Default for OrderedRows<K> {
    fn default() -> Self {
        OrderedRows {
            rows: Vec::new(),
            changed: Vec::new(),
        }
    }
}

impl<K: RowKey> OrderedRows<K> {
    /// `slot`'s rows.
    pub fn get(&self, slot: u32) -> &BTreeMap<K, i64> {
        &self.rows[slot as usize]
    }

    /// Adds `weight` to a row of `slot` (a row whose weight reaches 0 goes).
    pub fn add(&mut self, slot: u32, row: K, weight: i64) {
        let rows = &mut self.rows[slot as usize];
        let w = rows.entry(row.clone()).or_insert(0);
        *w += weight;
        if *w == 0 {
            rows.remove(&row);
        }
        self.changed[slot as usize].insert(row);
    }

    /// Drops `slot`'s rows before `bound`; true if any went.
    pub fn drop_before(&mut self, slot: u32, bound: &K) -> bool {
        let rows = &mut self.rows[slot as usize];
        let kept = rows.split_off(bound);
        let gone = std::mem::replace(rows, kept);
        let any = !gone.is_empty();
        self.changed[slot as usize].extend(gone.into_keys());
        any
    }
}

impl<K: RowKey> SlotValues for OrderedRows<K> {
    fn grow(&mut self, slots: usize) {
        self.rows.resize_with(slots, BTreeMap::new);
        self.changed.resize_with(slots, BTreeSet::new);
    }

    fn load(&mut self, _slot: u32, _value: &[u8]) -> Result<()> {
        Err(RunnelError::internal("ordered rows are read row by row"))
    }

    fn save(&self, _slot: u32, _out: &mut Vec<u8>) -> bool {
        false
    }

    fn reset(&mut self, slot: u32) {
        self.rows[slot as usize].clear();
        self.changed[slot as usize].clear();
    }

    /// A row: its [`RowKey`] → weight (i64, little endian).
    fn load_row(&mut self, slot: u32, row_key: &[u8], value: &[u8]) -> Result<()> {
        let weight: [u8; 8] = value
            .try_into()
            .map_err(|_| RunnelError::internal("a stored row weight is not 8 bytes"))?;
        self.rows[slot as usize].insert(K::decode(row_key)?, i64::from_le_bytes(weight));
        Ok(())
    }

    fn save_rows(&mut self, slot: u32, write: &mut RowWriter<'_>) -> usize {
        let rows = &self.rows[slot as usize];
        let mut row_key = Vec::new();
        for row in std::mem::take(&mut self.changed[slot as usize]) {
            row_key.clear();
            row.encode(&mut row_key);
            match rows.get(&row) {
                Some(w) => write(&row_key, Some(&w.to_le_bytes())),
                None => write(&row_key, None),
            }
        }
        rows.keys().map(|k| k.size() + ROW_OVERHEAD).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_keys_round_trip_and_store_in_order() {
        let times: Vec<(i64, Box<[u8]>)> =
            vec![(-5, b"b".as_slice().into()), (3, b"a".as_slice().into())];
        let mut encoded: Vec<Vec<u8>> = times
            .iter()
            .map(|k| {
                let mut out = Vec::new();
                k.encode(&mut out);
                out
            })
            .collect();
        for (k, bytes) in times.iter().zip(&encoded) {
            assert_eq!(&<(i64, Box<[u8]>)>::decode(bytes).unwrap(), k);
        }
        encoded.sort();
        assert_eq!(<(i64, Box<[u8]>)>::decode(&encoded[0]).unwrap().0, -5);
        let ordered: (Box<[u8]>, Box<[u8]>) = (b"ord".as_slice().into(), b"row".as_slice().into());
        let mut out = Vec::new();
        ordered.encode(&mut out);
        assert_eq!(<(Box<[u8]>, Box<[u8]>)>::decode(&out).unwrap(), ordered);
    }

    #[test]
    fn changed_rows_are_written_once_and_dropped_rows_deleted() {
        let mut rows: OrderedRows<(i64, Box<[u8]>)> = OrderedRows::default();
        rows.grow(1);
        let row = |t: i64| (t, Box::<[u8]>::from(b"r".as_slice()));
        rows.add(0, row(1), 1);
        rows.add(0, row(2), 2);
        rows.add(0, row(3), 1);
        rows.add(0, row(3), -1);
        let mut written = Vec::new();
        let size = rows.save_rows(0, &mut |k, v| {
            written.push((k.to_vec(), v.map(<[u8]>::to_vec)))
        });
        assert_eq!(written.len(), 3, "rows 1, 2 written, 3 deleted");
        assert!(written.iter().any(|(_, v)| v.is_none()));
        assert!(size > 0);
        assert!(rows.drop_before(0, &row(2)));
        written.clear();
        rows.save_rows(0, &mut |k, v| {
            written.push((k.to_vec(), v.map(<[u8]>::to_vec)))
        });
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].1, None);
        assert_eq!(rows.get(0).len(), 1);
    }
}
