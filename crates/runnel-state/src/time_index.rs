//! A time-indexed state table: the state layer's variant for state the event-time clock
//! expires (rows a temporal filter holds until their threshold, windowed groups until their
//! window closes). Entries are `(time, key)` with a weight, in the store under
//! `prefix ‖ vnode ‖ time ‖ key` (time as an order-preserving integer), so each vnode's entries
//! are ordered by time and the clock passing `t` is one range read per vnode that holds
//! anything that early. Nothing is loaded into memory: changes since the last checkpoint are
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
/// unless the stored weight no longer counts (`replaced`: the entry was expired or set since).
#[derive(Clone, Copy, Default)]
struct Pending {
    replaced: bool,
    delta: i64,
}

/// An expired entry: its time, key and weight (never 0).
pub type Expired = (i64, Vec<u8>, i64);

pub struct TimeIndex {
    store: Arc<Store>,
    prefix: Vec<u8>,
    /// Full store keys touched since the last checkpoint.
    pending: BTreeMap<Vec<u8>, Pending>,
    /// Per vnode, no entry is earlier than this (`i64::MIN`: not known yet).
    earliest: Vec<i64>,
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
            pending: BTreeMap::new(),
            earliest: vec![unknown; usize::from(VNODE_COUNT)],
        })
    }

    fn store_key(&self, vnode: Vnode, time: i64, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + 10 + key.len());
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(&vnode.to_be_bytes());
        out.extend_from_slice(&ordered_i64(time));
        out.extend_from_slice(key);
        out
    }

    fn note(&mut self, vnode: Vnode, time: i64) {
        let earliest = &mut self.earliest[usize::from(vnode)];
        *earliest = (*earliest).min(time);
    }

    /// Adds `weight` to the entry `(time, key)` of `vnode`.
    pub fn add(&mut self, vnode: Vnode, time: i64, key: &[u8], weight: i64) {
        let store_key = self.store_key(vnode, time, key);
        self.pending.entry(store_key).or_default().delta += weight;
        self.note(vnode, time);
    }

    /// Sets the entry `(time, key)` of `vnode` to weight 1, whatever it held: an index of
    /// which keys to visit when, where noting a key twice is harmless.
    pub fn set(&mut self, vnode: Vnode, time: i64, key: &[u8]) {
        let store_key = self.store_key(vnode, time, key);
        self.pending.insert(
            store_key,
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
        for vnode in 0..VNODE_COUNT {
            if self.earliest[usize::from(vnode)] > upto {
                continue;
            }
            let mut start = self.prefix.clone();
            start.extend_from_slice(&vnode.to_be_bytes());
            let vnode_end = prefix_end(&start);
            let mut end = start.clone();
            end.extend_from_slice(&ordered_i64(after));
            let mut merged: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
            self.store.for_each_in_range(&start, &end, |key, value| {
                merged.insert(key.to_vec(), decode_weight(value)?);
                Ok(true)
            })?;
            for (key, change) in self.pending.range(start.clone()..end.clone()) {
                let weight = merged.entry(key.clone()).or_insert(0);
                if change.replaced {
                    *weight = 0;
                }
                *weight += change.delta;
            }
            for (key, weight) in merged {
                if weight != 0 {
                    let time: [u8; 8] = key[time_at..time_at + 8]
                        .try_into()
                        .map_err(|_| RunnelError::internal("time index key is too short"))?;
                    out.push((ordered_i64_from(time), key[time_at + 8..].to_vec(), weight));
                }
                // Gone from the store at the next checkpoint (zero weights too).
                self.pending.insert(
                    key,
                    Pending {
                        replaced: true,
                        delta: 0,
                    },
                );
            }
            // What is left starts after `upto`: the first entry stored or pending from there.
            let mut next = i64::MAX;
            self.store.for_each_in_range(&end, &vnode_end, |key, _| {
                if let Some(time) = key.get(time_at..time_at + 8) {
                    let time: [u8; 8] = time.try_into().unwrap_or([0xff; 8]);
                    next = ordered_i64_from(time);
                }
                Ok(false)
            })?;
            if let Some((key, _)) = self
                .pending
                .range(end..vnode_end)
                .find(|(_, p)| !p.replaced || p.delta != 0)
            {
                let time: [u8; 8] = key[time_at..time_at + 8]
                    .try_into()
                    .map_err(|_| RunnelError::internal("time index key is too short"))?;
                next = next.min(ordered_i64_from(time));
            }
            self.earliest[usize::from(vnode)] = next;
        }
        Ok(out)
    }

    /// Adds the changes since the last checkpoint to `batch`.
    pub fn checkpoint(&mut self, batch: &mut WriteBatch) {
        for (key, change) in std::mem::take(&mut self.pending) {
            if change.replaced {
                batch.delete(&key);
                if change.delta != 0 {
                    batch.put(&key, change.delta.to_le_bytes());
                }
            } else if change.delta != 0 {
                batch.merge(&key, change.delta.to_le_bytes());
            }
        }
    }

    /// Entries changed since the last checkpoint (for the state budget's accounting).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
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
