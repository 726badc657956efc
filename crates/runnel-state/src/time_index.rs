//! A time-indexed state table: the state layer's variant for state the event-time clock
//! expires (rows a temporal filter holds until their threshold, windowed groups until their
//! window closes, rows an interval join frees). Entries are `(time, key)` with a weight, in the
//! store under `prefix ‖ vnode ‖ time ‖ key` (time as an order-preserving integer), so each
//! vnode's stored entries are ordered by time and the clock passing `t` is one range read per
//! vnode that stores anything that early (from its earliest stored entry on, so the tombstones
//! of expired entries are not read again). Changes since the last checkpoint are kept in memory
//! by time, as cheaply as an in-memory index (a push per change); entries that come and go
//! between two checkpoints never touch the store, and a checkpoint writes the rest (weight
//! deltas with the store's merge operator, without reading anything).
//!
//! Call sequence: [`TimeIndex::add`] / [`TimeIndex::set`] as entries appear, [`TimeIndex::expire`]
//! when the clock moves (returns and removes every entry at or before it), and
//! [`TimeIndex::checkpoint`] at every checkpoint.

use std::collections::BTreeMap;
use std::sync::Arc;

use runnel_common::{Result, RunnelError};

use crate::keys::{ordered_i64, ordered_i64_from, prefix_end};
use crate::vnode::{Vnode, VNODE_COUNT};
use crate::{Store, WriteBatch};

/// A change since the last checkpoint: the entry's weight is `delta` plus its weight before,
/// unless that no longer counts (`replaced`: the entry was set).
#[derive(Clone, Copy, Default)]
struct Pending {
    replaced: bool,
    delta: i64,
}

/// An expired entry: its time, key and weight (never 0). An entry changed several times since
/// the last checkpoint may come out once per change, with weights that add up to its weight
/// (for [`TimeIndex::set`]: weight 1 each time).
pub type Expired = (i64, Vec<u8>, i64);

/// A stored entry: its vnode, time and key.
type StoredEntry = (Vnode, i64, Box<[u8]>);

/// A change to one entry, in the order changes were made.
type Change = (Vnode, Box<[u8]>, Pending);

pub struct TimeIndex {
    store: Arc<Store>,
    prefix: Vec<u8>,
    /// The changes since the last checkpoint, by time, in the order they were made (several
    /// changes to one entry are applied in that order: nothing is sorted or combined).
    pending: BTreeMap<i64, Vec<Change>>,
    /// Per vnode, no entry *in the store* is earlier than this (entries expired but not yet
    /// deleted aside; `i64::MIN`: not known yet).
    stored_from: Vec<i64>,
    /// Store keys of stored entries expired since the last checkpoint.
    deletes: Vec<Vec<u8>>,
}

impl TimeIndex {
    /// The index stored under `prefix`. What it stores is learnt on the first expiry (one
    /// read per vnode), not at opening.
    pub fn open(store: Arc<Store>, prefix: Vec<u8>) -> Result<TimeIndex> {
        let empty = store
            .last_key_in_range(&prefix, &prefix_end(&prefix))?
            .is_none();
        let unknown = if empty { i64::MAX } else { i64::MIN };
        Ok(TimeIndex {
            store,
            prefix,
            pending: BTreeMap::new(),
            stored_from: vec![unknown; usize::from(VNODE_COUNT)],
            deletes: Vec::new(),
        })
    }

    fn store_key(&self, vnode: Vnode, time: i64, key: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(&vnode.to_be_bytes());
        out.extend_from_slice(&ordered_i64(time));
        out.extend_from_slice(key);
    }

    /// Adds `weight` to the entry `(time, key)` of `vnode`.
    pub fn add(&mut self, vnode: Vnode, time: i64, key: &[u8], weight: i64) {
        let change = Pending {
            replaced: false,
            delta: weight,
        };
        self.pending
            .entry(time)
            .or_default()
            .push((vnode, key.into(), change));
    }

    /// Sets the entry `(time, key)` of `vnode` to weight 1, whatever it held: an index of
    /// which keys to visit when, where noting a key twice is harmless.
    pub fn set(&mut self, vnode: Vnode, time: i64, key: &[u8]) {
        let change = Pending {
            replaced: true,
            delta: 1,
        };
        self.pending
            .entry(time)
            .or_default()
            .push((vnode, key.into(), change));
    }

    /// Removes and returns every entry with a time at or before `upto` whose weight is not 0.
    pub fn expire(&mut self, upto: i64) -> Result<Vec<Expired>> {
        let mut out = Vec::new();
        let Some(after) = upto.checked_add(1) else {
            return Err(RunnelError::internal("a clock at the end of time"));
        };
        let later = self.pending.split_off(&after);
        let due = std::mem::replace(&mut self.pending, later);
        // The stored entries due, per vnode that stores any: (time, key) → (weight, store key).
        let mut stored: BTreeMap<StoredEntry, (i64, Vec<u8>)> = BTreeMap::new();
        let time_at = self.prefix.len() + 2;
        for vnode in 0..VNODE_COUNT {
            let v = usize::from(vnode);
            if self.stored_from[v] > upto {
                continue;
            }
            let mut start = self.prefix.clone();
            start.extend_from_slice(&vnode.to_be_bytes());
            let vnode_end = prefix_end(&start);
            let mut end = start.clone();
            end.extend_from_slice(&ordered_i64(after));
            // From the earliest stored entry on, not from the vnode's start: expired entries
            // are deleted, and a scan from the start would step over every tombstone they
            // left until compaction drops them.
            if self.stored_from[v] != i64::MIN {
                start.extend_from_slice(&ordered_i64(self.stored_from[v]));
            }
            let mut malformed = false;
            self.store.for_each_in_range(&start, &end, |key, value| {
                match key
                    .get(time_at..time_at + 8)
                    .and_then(|t| <[u8; 8]>::try_from(t).ok())
                {
                    Some(time) => {
                        let entry = (vnode, ordered_i64_from(time), key[time_at + 8..].into());
                        stored.insert(entry, (decode_weight(value)?, key.to_vec()));
                    }
                    None => malformed = true,
                }
                Ok(true)
            })?;
            if malformed {
                return Err(RunnelError::internal("time index key is too short"));
            }
            // The stored entries left start after `upto`.
            let mut next = i64::MAX;
            self.store.for_each_in_range(&end, &vnode_end, |key, _| {
                if let Some(time) = key.get(time_at..time_at + 8) {
                    next = ordered_i64_from(<[u8; 8]>::try_from(time).unwrap_or([0xff; 8]));
                }
                Ok(false)
            })?;
            self.stored_from[v] = next;
        }
        for (time, changes) in due {
            for (vnode, key, change) in changes {
                let mut weight = change.delta;
                let before = match stored.is_empty() {
                    true => None,
                    false => stored.remove(&(vnode, time, key.clone())),
                };
                if let Some((before, store_key)) = before {
                    if !change.replaced {
                        weight += before;
                    }
                    // Deleted at the next checkpoint (the scans that follow start after it).
                    self.deletes.push(store_key);
                }
                if weight != 0 {
                    out.push((time, key.into_vec(), weight));
                }
            }
        }
        // Stored entries with no change since the last checkpoint.
        for ((_, time, key), (weight, store_key)) in stored {
            self.deletes.push(store_key);
            if weight != 0 {
                out.push((time, key.into_vec(), weight));
            }
        }
        Ok(out)
    }

    /// Adds the changes since the last checkpoint to `batch`: the expired entries' deletes,
    /// then the entries changed (an entry expired and set again is put after its delete).
    pub fn checkpoint(&mut self, batch: &mut WriteBatch) {
        for key in std::mem::take(&mut self.deletes) {
            batch.delete(&key);
        }
        // In key order (RocksDB's memtable takes sorted keys far faster than random ones);
        // the sort is stable, so one entry's changes stay in the order they were made and a
        // put and the merges after it add up as they did.
        let pending = std::mem::take(&mut self.pending);
        let mut writes: Vec<(Vnode, i64, &[u8], Pending)> =
            Vec::with_capacity(pending.values().map(Vec::len).sum());
        for (&time, changes) in &pending {
            for (vnode, key, change) in changes {
                if !change.replaced && change.delta == 0 {
                    continue;
                }
                writes.push((*vnode, time, key, *change));
            }
        }
        // (vnode, time, key) order is the store keys' order; integers decide most comparisons.
        writes.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        let mut store_key = Vec::new();
        for (vnode, time, key, change) in writes {
            self.store_key(vnode, time, key, &mut store_key);
            match change.replaced {
                // A put replaces whatever was stored.
                true => batch.put(&store_key, change.delta.to_le_bytes()),
                false => batch.merge(&store_key, change.delta.to_le_bytes()),
            }
            let stored_from = &mut self.stored_from[usize::from(vnode)];
            *stored_from = (*stored_from).min(time);
        }
    }

    /// Changes since the last checkpoint (for the state budget's accounting).
    pub fn pending_len(&self) -> usize {
        self.pending.values().map(Vec::len).sum()
    }
}

fn decode_weight(value: &[u8]) -> std::result::Result<i64, crate::StateError> {
    let bytes: [u8; 8] = value
        .try_into()
        .map_err(|_| crate::StateError::Corrupt("time index weight is not 8 bytes".into()))?;
    Ok(i64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;

    fn open() -> (tempfile::TempDir, Arc<Store>, TimeIndex) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("a store");
        let index = TimeIndex::open(store.clone(), b"ti".to_vec()).expect("an index");
        (dir, store, index)
    }

    fn checkpoint(store: &Store, index: &mut TimeIndex) {
        let mut batch = WriteBatch::default();
        index.checkpoint(&mut batch);
        store.write(batch).expect("written");
    }

    /// Expired entries with the weights of each (time, key) added up, zeros left out.
    fn summed(expired: Vec<Expired>) -> Vec<Expired> {
        let mut sums: BTreeMap<(i64, Vec<u8>), i64> = BTreeMap::new();
        for (time, key, weight) in expired {
            *sums.entry((time, key)).or_insert(0) += weight;
        }
        sums.into_iter()
            .filter(|(_, w)| *w != 0)
            .map(|((t, k), w)| (t, k, w))
            .collect()
    }

    #[test]
    fn expires_by_time_across_vnodes_and_checkpoints() {
        let (_dir, store, mut index) = open();
        index.add(3, 10, b"a", 1);
        index.add(200, 5, b"b", 2);
        index.add(3, 30, b"c", 1);
        checkpoint(&store, &mut index);
        index.add(3, 10, b"a", 1); // stored 1 + pending 1
        index.add(7, 20, b"d", 1);
        index.add(7, 20, b"d", -1); // nets to nothing
        let expired = summed(index.expire(20).expect("expired"));
        assert_eq!(expired, vec![(5, b"b".to_vec(), 2), (10, b"a".to_vec(), 2)]);
        assert!(index.expire(20).expect("again").is_empty());
        // An entry added behind the clock is found at the next expiry.
        index.add(9, 15, b"late", 1);
        checkpoint(&store, &mut index);
        assert_eq!(
            index.expire(25).expect("late"),
            vec![(15, b"late".to_vec(), 1)]
        );
        // Reopened: only what was never expired is left.
        checkpoint(&store, &mut index);
        let mut reopened = TimeIndex::open(store.clone(), b"ti".to_vec()).expect("reopened");
        assert_eq!(
            reopened.expire(i64::MAX - 1).expect("all"),
            vec![(30, b"c".to_vec(), 1)]
        );
    }

    #[test]
    fn set_notes_a_key_with_weight_one() {
        let (_dir, store, mut index) = open();
        index.set(1, 100, b"g");
        checkpoint(&store, &mut index);
        index.set(1, 100, b"g");
        index.set(1, 100, b"g");
        // Each change comes out with weight 1 (the stored one replaced): the key, noted.
        let expired = index.expire(100).expect("expired");
        assert!(!expired.is_empty());
        assert!(
            expired.iter().all(|e| e == &(100, b"g".to_vec(), 1)),
            "{expired:?}"
        );
        // Set and expired before any checkpoint: never in the store.
        index.set(2, 150, b"h");
        assert_eq!(index.expire(200).expect("h"), vec![(150, b"h".to_vec(), 1)]);
        checkpoint(&store, &mut index);
        let mut reopened = TimeIndex::open(store.clone(), b"ti".to_vec()).expect("reopened");
        assert!(reopened.expire(i64::MAX - 1).expect("nothing").is_empty());
    }
}
