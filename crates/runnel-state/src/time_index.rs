//! A time-indexed state table: the state layer's variant for state the event-time clock
//! expires (rows a temporal filter holds until their threshold, windowed groups until their
//! window closes). Entries are `(time, key)` with a weight, in the store under
//! `prefix ‖ vnode ‖ time ‖ key` (time as an order-preserving integer), so each vnode's entries
//! are ordered by time and the clock passing `t` is one range read per vnode that holds
//! anything that early (from that vnode's earliest entry on, so the tombstones of expired
//! entries are not read again). Nothing is loaded into memory: changes since the last checkpoint are
//! kept as weight deltas and merged with the store when read, and a checkpoint adds them with
//! the store's merge operator, without reading anything.
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

/// An entry's change since the last checkpoint: its weight is `delta` plus the stored weight,
/// unless the stored weight no longer counts (`replaced`: the entry was set since).
#[derive(Clone, Copy, Default)]
struct Pending {
    replaced: bool,
    delta: i64,
}

/// An expired entry: its time, key and weight (never 0).
pub type Expired = (i64, Vec<u8>, i64);

/// An entry within a vnode: its time and key.
type Entry = (i64, Box<[u8]>);

pub struct TimeIndex {
    store: Arc<Store>,
    prefix: Vec<u8>,
    /// Per vnode, the entries touched since the last checkpoint (ordered by time: an
    /// expiry reads a prefix of each).
    pending: Vec<BTreeMap<Entry, Pending>>,
    /// Per vnode, no entry is earlier than this (`i64::MIN`: not known yet).
    earliest: Vec<i64>,
    /// Per vnode, no entry *in the store* is earlier than this (entries expired but not yet
    /// deleted aside): entries that come and go between two checkpoints never cost a store
    /// read.
    stored_from: Vec<i64>,
    /// Store keys of stored entries expired since the last checkpoint.
    deletes: Vec<Vec<u8>>,
}

impl TimeIndex {
    /// The index stored under `prefix`. What it holds is learnt on the first expiry (one read
    /// per vnode), not at opening.
    pub fn open(store: Arc<Store>, prefix: Vec<u8>) -> Result<TimeIndex> {
        let empty = store
            .last_key_in_range(&prefix, &prefix_end(&prefix))?
            .is_none();
        let unknown = if empty { i64::MAX } else { i64::MIN };
        Ok(TimeIndex {
            store,
            prefix,
            pending: vec![BTreeMap::new(); usize::from(VNODE_COUNT)],
            earliest: vec![unknown; usize::from(VNODE_COUNT)],
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

    fn note(&mut self, vnode: Vnode, time: i64) {
        let earliest = &mut self.earliest[usize::from(vnode)];
        *earliest = (*earliest).min(time);
    }

    /// Adds `weight` to the entry `(time, key)` of `vnode`.
    pub fn add(&mut self, vnode: Vnode, time: i64, key: &[u8], weight: i64) {
        self.pending[usize::from(vnode)]
            .entry((time, key.into()))
            .or_default()
            .delta += weight;
        self.note(vnode, time);
    }

    /// Sets the entry `(time, key)` of `vnode` to weight 1, whatever it held: an index of
    /// which keys to visit when, where noting a key twice is harmless.
    pub fn set(&mut self, vnode: Vnode, time: i64, key: &[u8]) {
        self.pending[usize::from(vnode)].insert(
            (time, key.into()),
            Pending {
                replaced: true,
                delta: 1,
            },
        );
        self.note(vnode, time);
    }

    /// Removes and returns every entry with a time at or before `upto` whose weight is not 0,
    /// vnode by vnode, each vnode's in time order.
    pub fn expire(&mut self, upto: i64) -> Result<Vec<Expired>> {
        let mut out = Vec::new();
        let Some(after) = upto.checked_add(1) else {
            return Err(RunnelError::internal("a clock at the end of time"));
        };
        let time_at = self.prefix.len() + 2;
        let decode = |key: &[u8]| -> Option<Entry> {
            let time: [u8; 8] = key.get(time_at..time_at + 8)?.try_into().ok()?;
            Some((ordered_i64_from(time), key[time_at + 8..].into()))
        };
        let after_bound: Entry = (after, Box::from([]));
        for vnode in 0..VNODE_COUNT {
            let v = usize::from(vnode);
            if self.earliest[v] > upto {
                continue;
            }
            let mut vnode_start = self.prefix.clone();
            vnode_start.extend_from_slice(&vnode.to_be_bytes());
            let vnode_end = prefix_end(&vnode_start);
            let mut end = vnode_start.clone();
            end.extend_from_slice(&ordered_i64(after));
            // The pending changes due now, taken out whole (no key is copied).
            let later = self.pending[v].split_off(&after_bound);
            let due = std::mem::replace(&mut self.pending[v], later);
            let read_store = self.stored_from[v] <= upto;
            if !read_store {
                // Nothing stored this early: the pending changes are the entries, and they
                // never reached the store, so they are simply forgotten.
                for ((time, key), change) in due {
                    if change.delta != 0 {
                        out.push((time, key.into_vec(), change.delta));
                    }
                }
            } else {
                // Entry → (weight, its store key when stored).
                let mut merged: BTreeMap<Entry, (i64, Option<Vec<u8>>)> = BTreeMap::new();
                // From the earliest stored entry on, not from the vnode's start: expired
                // entries are deleted, and a scan from the start would step over every
                // tombstone they left until compaction drops them.
                let mut start = vnode_start;
                if self.stored_from[v] != i64::MIN {
                    start.extend_from_slice(&ordered_i64(self.stored_from[v]));
                }
                let mut malformed = false;
                self.store.for_each_in_range(&start, &end, |key, value| {
                    match decode(key) {
                        Some(entry) => {
                            merged.insert(entry, (decode_weight(value)?, Some(key.to_vec())));
                        }
                        None => malformed = true,
                    }
                    Ok(true)
                })?;
                if malformed {
                    return Err(RunnelError::internal("time index key is too short"));
                }
                for (entry, change) in due {
                    let (weight, _) = merged.entry(entry).or_insert((0, None));
                    if change.replaced {
                        *weight = 0;
                    }
                    *weight += change.delta;
                }
                for ((time, key), (weight, stored)) in merged {
                    // A stored entry is deleted at the next checkpoint (the scans that follow
                    // start after it); one that never reached the store is simply forgotten.
                    if let Some(store_key) = stored {
                        self.deletes.push(store_key);
                    }
                    if weight != 0 {
                        out.push((time, key.into_vec(), weight));
                    }
                }
            }
            // What is left starts after `upto`: the first entry stored or pending from there.
            if read_store {
                let mut stored_next = i64::MAX;
                self.store.for_each_in_range(&end, &vnode_end, |key, _| {
                    if let Some((time, _)) = decode(key) {
                        stored_next = time;
                    }
                    Ok(false)
                })?;
                self.stored_from[v] = stored_next;
            }
            let mut next = self.stored_from[v];
            if let Some(((time, _), _)) = self.pending[v]
                .range(after_bound.clone()..)
                .find(|(_, p)| !p.replaced || p.delta != 0)
            {
                next = next.min(*time);
            }
            self.earliest[v] = next;
        }
        Ok(out)
    }

    /// Adds the changes since the last checkpoint to `batch`: the expired entries' deletes,
    /// then the entries changed, in key order (an entry expired and set again is put after
    /// its delete).
    pub fn checkpoint(&mut self, batch: &mut WriteBatch) {
        for key in std::mem::take(&mut self.deletes) {
            batch.delete(&key);
        }
        let mut key = Vec::new();
        for vnode in 0..VNODE_COUNT {
            let pending = std::mem::take(&mut self.pending[usize::from(vnode)]);
            for ((time, entry), change) in pending {
                if change.delta != 0 {
                    let stored_from = &mut self.stored_from[usize::from(vnode)];
                    *stored_from = (*stored_from).min(time);
                }
                self.store_key(vnode, time, &entry, &mut key);
                match (change.replaced, change.delta) {
                    // A put replaces whatever was stored.
                    (true, 0) => batch.delete(&key),
                    (true, delta) => batch.put(&key, delta.to_le_bytes()),
                    (false, 0) => {}
                    (false, delta) => batch.merge(&key, delta.to_le_bytes()),
                }
            }
        }
    }

    /// Entries changed since the last checkpoint (for the state budget's accounting).
    pub fn pending_len(&self) -> usize {
        self.pending.iter().map(BTreeMap::len).sum()
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
        let mut expired = index.expire(20).expect("expired");
        expired.sort();
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
    fn set_is_idempotent() {
        let (_dir, store, mut index) = open();
        index.set(1, 100, b"g");
        checkpoint(&store, &mut index);
        index.set(1, 100, b"g");
        index.set(1, 100, b"g");
        checkpoint(&store, &mut index);
        assert_eq!(
            index.expire(100).expect("expired"),
            vec![(100, b"g".to_vec(), 1)]
        );
    }
}
