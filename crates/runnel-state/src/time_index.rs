//! A time-indexed state table: the state layer's variant for state the event-time clock
//! expires (rows a temporal filter holds until their threshold, windowed groups until their
//! window closes, rows an interval join frees). Entries are `(time, key)` with a weight, in the
//! store under `prefix ‖ vnode ‖ time ‖ key` (time as an order-preserving integer), so each
//! vnode's stored entries are ordered by time.
//!
//! In memory, entries are kept by time in buckets of about 65 ms of event time (each bucket a
//! vector of entries and one buffer of their keys: no allocation per entry), so noting an
//! entry is a push and the clock passing `t` takes whole buckets. Memory holds every entry
//! earlier than a *ceiling* (`i64::MAX` while the shared memory budget and a cap per index
//! allow), plus the changes since the last checkpoint; a checkpoint writes those changes
//! (weight deltas with the store's merge operator, without reading anything), and entries
//! that come and go between two checkpoints never touch the store. When the budget is
//! exceeded or the index holds more than its cap, a checkpoint drops the latest buckets from
//! memory and lowers the ceiling: their entries are then only in the store, read back (one
//! range read per vnode holding something that early, with some read-ahead) when the clock
//! reaches them. After a restart everything is in the store and nothing is read until the
//! clock needs it.
//!
//! Call sequence: [`TimeIndex::add`] / [`TimeIndex::set`] as entries appear (an index uses one
//! or the other), [`TimeIndex::expire`] when the clock moves (returns and removes every entry
//! at or before it), and [`TimeIndex::checkpoint`] at every checkpoint.

use std::collections::BTreeMap;
use std::sync::Arc;

use runnel_common::{Result, RunnelError};

use crate::cache_budget::SharedBudget;
use crate::keys::{ordered_i64, ordered_i64_from, prefix_end};
use crate::vnode::{Vnode, VNODE_COUNT};
use crate::{Store, WriteBatch};

/// log2 of a bucket's width in microseconds (65.5 ms).
const BUCKET_BITS: u32 = 16;
/// What an entry costs in memory besides its key (for the budget).
const ENTRY_OVERHEAD: usize = 40;
/// The most memory one index keeps for entries already stored: past it, the latest buckets
/// are left to the store. Entries far ahead of the clock (a 30-minute temporal filter's rows)
/// gain nothing from staying in memory until then; those close to it are kept.
const MEMORY_CAP: usize = 64 << 20;
/// How much of each vnode's stored entries after the clock an expiry that reads the store
/// brings into memory (so that the next ones need not read it).
const READ_AHEAD_PER_VNODE: usize = 64 << 10;
/// Budget changes are reported in steps of this many bytes, not per entry.
const REPORT_STEP: isize = 1 << 16;

fn bucket_of(time: i64) -> i64 {
    time >> BUCKET_BITS
}

/// Appends the store key of entry `(time, key)` of `vnode` under `prefix` to `out`.
fn push_store_key(out: &mut Vec<u8>, prefix: &[u8], vnode: Vnode, time: i64, key: &[u8]) {
    out.extend_from_slice(prefix);
    out.extend_from_slice(&vnode.to_be_bytes());
    out.extend_from_slice(&ordered_i64(time));
    out.extend_from_slice(key);
}

/// The tag of an entry that has none (read from the store, or noted without one).
pub const NO_TAG: u32 = u32::MAX;

/// A change to an entry: its weight is `delta` plus its weight before, unless that no longer
/// counts (`replaced`: the entry was set). `stored`: written at a checkpoint. `tag`: what the
/// caller attached to it (see [`TimeIndex::set_tagged`]).
#[derive(Clone, Copy)]
struct Change {
    time: i64,
    delta: i64,
    start: usize,
    len: u32,
    tag: u32,
    vnode: Vnode,
    replaced: bool,
    stored: bool,
}

impl Change {
    /// The change's key in its bucket's key buffer.
    fn key<'k>(&self, keys: &'k [u8]) -> &'k [u8] {
        &keys[self.start..self.start + self.len as usize]
    }

    /// An entry read from the store, with its stored weight (its key is pushed with it).
    fn stored(vnode: Vnode, time: i64, weight: i64) -> Change {
        Change {
            time,
            delta: weight,
            start: 0,
            len: 0,
            tag: NO_TAG,
            vnode,
            replaced: false,
            stored: true,
        }
    }
}

/// The changes in one span of time, in the order they were made, with their keys in one
/// buffer.
#[derive(Default)]
struct Bucket {
    changes: Vec<Change>,
    keys: Vec<u8>,
    /// Holds changes not yet written.
    fresh: bool,
}

impl Bucket {
    fn key(&self, change: &Change) -> &[u8] {
        change.key(&self.keys)
    }

    fn push(&mut self, mut change: Change, key: &[u8]) {
        change.start = self.keys.len();
        change.len = key.len() as u32;
        self.keys.extend_from_slice(key);
        self.changes.push(change);
    }
}

/// Entries an expiry removed: `(time, key, weight)`, weight never 0. An entry changed several
/// times while in memory may come out once per change, with weights that add up to its
/// weight (for [`TimeIndex::set`]: weight 1 each time). Not in time order.
#[derive(Default)]
pub struct Expired {
    parts: Vec<Bucket>,
}

impl Expired {
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.changes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(|p| p.changes.is_empty())
    }

    pub fn iter(&self) -> impl Iterator<Item = (i64, &[u8], i64)> + '_ {
        self.parts
            .iter()
            .flat_map(|p| p.changes.iter().map(move |c| (c.time, p.key(c), c.delta)))
    }

    /// `(key, tag)` of each entry ([`NO_TAG`] where it has none).
    pub fn keys_tagged(&self) -> impl Iterator<Item = (&[u8], u32)> + '_ {
        self.parts
            .iter()
            .flat_map(|p| p.changes.iter().map(move |c| (p.key(c), c.tag)))
    }

    /// Owned copies, in time order (tests and small callers).
    pub fn to_vec(&self) -> Vec<(i64, Vec<u8>, i64)> {
        let mut out: Vec<_> = self.iter().map(|(t, k, w)| (t, k.to_vec(), w)).collect();
        out.sort_by_key(|e| e.0);
        out
    }
}

/// One vnode's writes at a checkpoint: store keys in one buffer, and per write its key's
/// span, whether it is a put, and the weight.
#[derive(Default)]
struct VnodeWrites {
    keys: Vec<u8>,
    writes: Vec<(usize, usize, bool, i64)>,
}

/// A stored entry: its vnode, time and key.
type StoredEntry = (Vnode, i64, Box<[u8]>);

/// The stored entries an expiry found due: weight and store key of each.
type StoredDue = BTreeMap<StoredEntry, (i64, Vec<u8>)>;

pub struct TimeIndex {
    store: Arc<Store>,
    prefix: Vec<u8>,
    budget: SharedBudget,
    /// Entries by bucket: every stored entry earlier than `ceiling`, and every change since
    /// the last checkpoint.
    buckets: BTreeMap<i64, Bucket>,
    /// Buckets with changes since the last checkpoint (ids may repeat or be gone).
    fresh_buckets: Vec<i64>,
    /// Every entry in the store earlier than this is also in memory; no stored entry at or
    /// after it is.
    ceiling: i64,
    /// Per vnode, no entry only in the store is earlier than this (`i64::MIN`: not known yet).
    stored_from: Vec<i64>,
    /// Store keys of stored entries expired since the last checkpoint.
    deletes: Bucket,
    /// Bytes of the entries in memory, and of those changed since the last checkpoint.
    bytes: usize,
    fresh_bytes: usize,
    /// Of those, not yet reported to the budget.
    unreported: isize,
    unreported_fresh: isize,
}

impl TimeIndex {
    /// The index stored under `prefix`, its memory counted in `budget`. What it stores is
    /// learnt when the clock gets there (one read per vnode), not at opening.
    pub fn open(store: Arc<Store>, prefix: Vec<u8>, budget: SharedBudget) -> Result<TimeIndex> {
        let empty = store
            .last_key_in_range(&prefix, &prefix_end(&prefix))?
            .is_none();
        let (ceiling, stored_from) = match empty {
            true => (i64::MAX, i64::MAX),
            false => (i64::MIN, i64::MIN),
        };
        Ok(TimeIndex {
            store,
            prefix,
            budget,
            buckets: BTreeMap::new(),
            fresh_buckets: Vec::new(),
            ceiling,
            stored_from: vec![stored_from; usize::from(VNODE_COUNT)],
            deletes: Bucket::default(),
            bytes: 0,
            fresh_bytes: 0,
            unreported: 0,
            unreported_fresh: 0,
        })
    }

    /// Restricts what the index reads from the store to `vnodes` (a worker's share: the
    /// other vnodes' entries are other workers'). Call right after opening.
    pub fn owning(mut self, vnodes: &crate::vnode::VnodeSet) -> Self {
        for vnode in 0..VNODE_COUNT {
            if !vnodes.contains(vnode) {
                self.stored_from[usize::from(vnode)] = i64::MAX;
            }
        }
        self
    }

    fn push(&mut self, vnode: Vnode, time: i64, key: &[u8], delta: i64, replaced: bool, tag: u32) {
        let change = Change {
            time,
            delta,
            start: 0,
            len: 0,
            tag,
            vnode,
            replaced,
            stored: false,
        };
        self.hold(change, key);
        if self.unreported > REPORT_STEP {
            self.report();
        }
    }

    /// Puts a change in its bucket and counts its memory (a change not stored yet also as
    /// fresh, its bucket listed for the next checkpoint).
    fn hold(&mut self, change: Change, key: &[u8]) {
        let id = bucket_of(change.time);
        let bucket = self.buckets.entry(id).or_default();
        let bytes = ENTRY_OVERHEAD + key.len();
        if !change.stored {
            if !bucket.fresh {
                bucket.fresh = true;
                self.fresh_buckets.push(id);
            }
            self.fresh_bytes += bytes;
            self.unreported_fresh += bytes as isize;
        }
        bucket.push(change, key);
        self.bytes += bytes;
        self.unreported += bytes as isize;
    }

    /// Brings the budget up to date with this index's memory.
    fn report(&mut self) {
        match self.unreported >= 0 {
            true => self.budget.add(self.unreported as usize),
            false => self.budget.sub(self.unreported.unsigned_abs()),
        }
        match self.unreported_fresh >= 0 {
            true => self.budget.add_dirty(self.unreported_fresh as usize),
            false => self.budget.sub_dirty(self.unreported_fresh.unsigned_abs()),
        }
        self.unreported = 0;
        self.unreported_fresh = 0;
    }

    /// Accounts for changes leaving memory.
    fn forget(&mut self, changes: &[Change]) {
        for change in changes {
            let bytes = ENTRY_OVERHEAD + change.len as usize;
            self.bytes -= bytes;
            self.unreported -= bytes as isize;
            if !change.stored {
                self.fresh_bytes -= bytes;
                self.unreported_fresh -= bytes as isize;
            }
        }
    }

    /// Forgets stored changes that are now only in the store (at or after the ceiling).
    fn leave_to_store(&mut self, changes: &[Change]) {
        for change in changes {
            let from = &mut self.stored_from[usize::from(change.vnode)];
            *from = (*from).min(change.time);
        }
        self.forget(changes);
    }

    /// Adds `weight` to the entry `(time, key)` of `vnode`.
    pub fn add(&mut self, vnode: Vnode, time: i64, key: &[u8], weight: i64) {
        self.push(vnode, time, key, weight, false, NO_TAG);
    }

    /// Sets the entry `(time, key)` of `vnode` to weight 1, whatever it held: an index of
    /// which keys to visit when, where noting a key twice is harmless.
    pub fn set(&mut self, vnode: Vnode, time: i64, key: &[u8]) {
        self.push(vnode, time, key, 1, true, NO_TAG);
    }

    /// [`TimeIndex::set`], with a tag that comes back with the entry if it expires from
    /// memory (not if it was only in the store by then): say, the slot its key had, which
    /// the caller checks is still the key's before using it.
    pub fn set_tagged(&mut self, vnode: Vnode, time: i64, key: &[u8], tag: u32) {
        self.push(vnode, time, key, 1, true, tag);
    }

    /// Removes and returns every entry with a time at or before `upto` whose weight is not 0.
    pub fn expire(&mut self, upto: i64) -> Result<Expired> {
        let Some(after) = upto.checked_add(1) else {
            return Err(RunnelError::internal("a clock at the end of time"));
        };
        // In memory: the buckets wholly at or before `upto`, and the due part of upto's.
        let last = bucket_of(upto);
        let later = self.buckets.split_off(&last);
        let mut due: Vec<Bucket> = std::mem::replace(&mut self.buckets, later)
            .into_values()
            .collect();
        if let Some(bucket) = self.buckets.get_mut(&last) {
            let mut part = Bucket::default();
            let Bucket { changes, keys, .. } = bucket;
            changes.retain(|c| {
                if c.time > upto {
                    return true;
                }
                part.push(*c, c.key(keys));
                false
            });
            if changes.is_empty() {
                self.buckets.remove(&last);
            }
            due.push(part);
        }
        for bucket in &due {
            self.forget(&bucket.changes);
        }
        // Entries only the store holds.
        let ceiling = self.ceiling;
        let (mut stored, new_ceiling) = match upto >= ceiling {
            true => self.read_stored(upto, after)?,
            false => (BTreeMap::new(), ceiling),
        };
        let mut store_key = Vec::new();
        for bucket in &mut due {
            let Bucket { changes, keys, .. } = bucket;
            for change in changes.iter_mut() {
                let key = change.key(keys);
                if change.stored {
                    // Deleted at the next checkpoint (scans start at the ceiling, after it).
                    store_key.clear();
                    push_store_key(&mut store_key, &self.prefix, change.vnode, change.time, key);
                    self.deletes.push(*change, &store_key);
                } else if !stored.is_empty() && change.time >= ceiling {
                    let entry = (change.vnode, change.time, Box::<[u8]>::from(key));
                    if let Some((before, key)) = stored.remove(&entry) {
                        if !change.replaced {
                            change.delta += before;
                        }
                        self.deletes.push(*change, &key);
                    }
                }
            }
            changes.retain(|c| c.delta != 0);
        }
        // Stored entries with no change in memory.
        let mut rest = Bucket::default();
        for ((vnode, time, key), (weight, store_key)) in stored {
            let change = Change::stored(vnode, time, weight);
            self.deletes.push(change, &store_key);
            if weight != 0 {
                rest.push(change, &key[..]);
            }
        }
        due.push(rest);
        // Everything at or before `upto` is gone, and what was read ahead is in memory.
        self.ceiling = new_ceiling;
        self.report();
        Ok(Expired { parts: due })
    }

    /// The entries due that only the store holds (from the ceiling to `upto`), by entry:
    /// weight and store key; and the new ceiling: the entries after `upto` are read ahead
    /// into memory, up to [`READ_AHEAD_PER_VNODE`] bytes per vnode (none when the budget is
    /// exceeded), as far as every vnode was read.
    fn read_stored(&mut self, upto: i64, after: i64) -> Result<(StoredDue, i64)> {
        let mut stored = BTreeMap::new();
        let time_at = self.prefix.len() + 2;
        let time_of = |key: &[u8]| {
            key.get(time_at..time_at + 8)
                .and_then(|t| <[u8; 8]>::try_from(t).ok())
                .map(ordered_i64_from)
                .ok_or_else(|| crate::StateError::Corrupt("time index key is too short".into()))
        };
        let limit = match self.budget.excess() {
            0 => READ_AHEAD_PER_VNODE,
            _ => 0,
        };
        // Per vnode: no entry of it before this is left only in the store.
        let mut bounds = self.stored_from.clone();
        let mut ahead: Vec<(Vnode, i64, Vec<u8>, i64)> = Vec::new();
        for vnode in 0..VNODE_COUNT {
            let v = usize::from(vnode);
            if self.stored_from[v] == i64::MAX {
                continue;
            }
            // From the earliest stored entry on, not from the vnode's start: expired entries
            // are deleted, and a scan from the start would step over every tombstone they
            // left until compaction drops them.
            let from = self.stored_from[v].max(self.ceiling);
            let mut start = self.prefix.clone();
            start.extend_from_slice(&vnode.to_be_bytes());
            let vnode_end = prefix_end(&start);
            let mut end = start.clone();
            end.extend_from_slice(&ordered_i64(after));
            start.extend_from_slice(&ordered_i64(from));
            if from <= upto {
                self.store.for_each_in_range(&start, &end, |key, value| {
                    let entry = (vnode, time_of(key)?, key[time_at + 8..].into());
                    stored.insert(entry, (decode_weight(value)?, key.to_vec()));
                    Ok(true)
                })?;
            }
            // Ahead, whole times at a time.
            let (mut bound, mut read, mut last) = (i64::MAX, 0usize, None);
            self.store
                .for_each_in_range(&end, &vnode_end, |key, value| {
                    let time = time_of(key)?;
                    if read >= limit && last != Some(time) {
                        bound = time;
                        return Ok(false);
                    }
                    read += key.len() + value.len();
                    last = Some(time);
                    let weight = decode_weight(value)?;
                    ahead.push((vnode, time, key[time_at + 8..].to_vec(), weight));
                    Ok(true)
                })?;
            bounds[v] = bound;
        }
        let ceiling = bounds.iter().copied().min().unwrap_or(i64::MAX);
        for (vnode, time, key, weight) in ahead {
            if time >= ceiling {
                // Read, but past a vnode that was not read as far: left to the store.
                let bound = &mut bounds[usize::from(vnode)];
                *bound = (*bound).min(time);
                continue;
            }
            self.hold(Change::stored(vnode, time, weight), &key);
        }
        self.stored_from = bounds;
        Ok((stored, ceiling.max(after)))
    }

    /// Adds the changes since the last checkpoint to `batch`: the expired entries' deletes,
    /// then the entries changed (an entry expired and set again is put after its delete).
    /// Then, if the memory budget is exceeded, drops the latest buckets from memory.
    pub fn checkpoint(&mut self, batch: &mut WriteBatch) {
        let deletes = std::mem::take(&mut self.deletes);
        for change in &deletes.changes {
            batch.delete(deletes.key(change));
        }
        let mut ids = std::mem::take(&mut self.fresh_buckets);
        ids.sort_unstable();
        ids.dedup();
        {
            // In key order (RocksDB's memtable takes sorted keys far faster than random ones).
            // The store keys are first copied out per vnode in the order the changes sit in
            // memory (reading keys scattered over the buckets in key order would miss the
            // cache on nearly every one); each vnode's are then sorted by time and key, stably,
            // so one entry's changes stay in the order they were made and a put and the merges
            // after it add up as they did.
            let mut per_vnode: Vec<VnodeWrites> = Vec::new();
            per_vnode.resize_with(usize::from(VNODE_COUNT), VnodeWrites::default);
            for id in &ids {
                let Some(bucket) = self.buckets.get(id) else {
                    continue;
                };
                for change in bucket.changes.iter().filter(|c| !c.stored) {
                    if !change.replaced && change.delta == 0 {
                        continue;
                    }
                    let out = &mut per_vnode[usize::from(change.vnode)];
                    let start = out.keys.len();
                    let key = bucket.key(change);
                    push_store_key(&mut out.keys, &self.prefix, change.vnode, change.time, key);
                    out.writes
                        .push((start, out.keys.len(), change.replaced, change.delta));
                }
            }
            for out in &mut per_vnode {
                let VnodeWrites { keys, writes } = out;
                writes.sort_by(|a, b| keys[a.0..a.1].cmp(&keys[b.0..b.1]));
                for &(start, end, replaced, delta) in writes.iter() {
                    let store_key = &keys[start..end];
                    match replaced {
                        // A put replaces whatever was stored.
                        true => batch.put(store_key, delta.to_le_bytes()),
                        false => batch.merge(store_key, delta.to_le_bytes()),
                    }
                }
            }
        }
        // Everything is stored now; what is at or after the ceiling is only kept there.
        let ceiling = self.ceiling;
        for id in ids {
            let Some(bucket) = self.buckets.get_mut(&id) else {
                continue;
            };
            bucket.fresh = false;
            let mut dropped: Vec<Change> = Vec::new();
            bucket.changes.retain_mut(|c| {
                c.stored = true;
                if c.time < ceiling {
                    return true;
                }
                dropped.push(*c);
                false
            });
            if bucket.changes.is_empty() {
                self.buckets.remove(&id);
            }
            // Marked stored: their fresh bytes are cleared below, with the others'.
            self.leave_to_store(&dropped);
        }
        self.unreported_fresh -= self.fresh_bytes as isize;
        self.fresh_bytes = 0;
        self.report();
        self.shrink();
    }

    /// Drops the latest buckets while the budget is exceeded or the index holds more than
    /// [`MEMORY_CAP`] (all stored: called right after a checkpoint's writes), lowering the
    /// ceiling to the earliest dropped.
    fn shrink(&mut self) {
        let mut excess = self.budget.excess();
        while excess > 0 || self.bytes > MEMORY_CAP {
            let Some((id, bucket)) = self.buckets.pop_last() else {
                break;
            };
            let bytes_before = self.bytes;
            self.ceiling = self.ceiling.min(id << BUCKET_BITS);
            self.leave_to_store(&bucket.changes);
            excess = excess.saturating_sub(bytes_before - self.bytes);
        }
        self.report();
    }
}

impl Drop for TimeIndex {
    fn drop(&mut self) {
        self.report();
        self.budget.sub(self.bytes);
        self.budget.sub_dirty(self.fresh_bytes);
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
    use crate::{CacheBudget, StoreOptions};

    fn open() -> (tempfile::TempDir, Arc<Store>, TimeIndex) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("a store");
        let index = reopen(&store);
        (dir, store, index)
    }

    fn reopen(store: &Arc<Store>) -> TimeIndex {
        TimeIndex::open(store.clone(), b"ti".to_vec(), CacheBudget::unlimited()).expect("an index")
    }

    fn checkpoint(store: &Store, index: &mut TimeIndex) {
        let mut batch = WriteBatch::default();
        index.checkpoint(&mut batch);
        store.write(batch).expect("written");
    }

    /// Expired entries with the weights of each (time, key) added up, zeros left out.
    fn summed(expired: Expired) -> Vec<(i64, Vec<u8>, i64)> {
        let mut sums: BTreeMap<(i64, Vec<u8>), i64> = BTreeMap::new();
        for (time, key, weight) in expired.to_vec() {
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
            index.expire(25).expect("late").to_vec(),
            vec![(15, b"late".to_vec(), 1)]
        );
        // Reopened: only what was never expired is left.
        checkpoint(&store, &mut index);
        let mut reopened = reopen(&store);
        assert_eq!(
            reopened.expire(i64::MAX - 1).expect("all").to_vec(),
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
        let expired = index.expire(100).expect("expired").to_vec();
        assert!(!expired.is_empty());
        assert!(
            expired.iter().all(|e| e == &(100, b"g".to_vec(), 1)),
            "{expired:?}"
        );
        // Set and expired before any checkpoint: never in the store.
        index.set(2, 150, b"h");
        assert_eq!(
            index.expire(200).expect("h").to_vec(),
            vec![(150, b"h".to_vec(), 1)]
        );
        checkpoint(&store, &mut index);
        let mut reopened = reopen(&store);
        assert!(reopened.expire(i64::MAX - 1).expect("nothing").is_empty());
    }

    /// Random adds, expiries, checkpoints and reopenings against a map of weights, with a
    /// budget that holds everything and with one that holds nothing (every checkpoint drops
    /// all buckets from memory and expiry reads the store).
    #[test]
    fn equals_a_map_of_weights_in_memory_or_not() {
        for limit in [usize::MAX / 4, 1] {
            let (_dir, store, _) = open();
            let budget = CacheBudget::new(limit);
            let open_index =
                || TimeIndex::open(store.clone(), b"ti".to_vec(), budget.clone()).expect("index");
            let mut index = open_index();
            let mut model: BTreeMap<(i64, Vec<u8>), i64> = BTreeMap::new();
            let mut seed: u64 = 42;
            let mut next = |n: u64| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 33) % n
            };
            let mut clock: i64 = 0;
            for step in 0..4000 {
                match next(20) {
                    0 => {
                        clock += next(300_000) as i64;
                        let mut got = summed(index.expire(clock).expect("expired"));
                        got.sort();
                        let due: Vec<(i64, Vec<u8>)> = model
                            .range(..(clock + 1, Vec::new()))
                            .map(|(k, _)| k.clone())
                            .collect();
                        let mut want = Vec::new();
                        for k in due {
                            let w = model.remove(&k).expect("due");
                            if w != 0 {
                                want.push((k.0, k.1, w));
                            }
                        }
                        assert_eq!(got, want, "limit {limit}, step {step}");
                    }
                    1 | 2 => {
                        let mut batch = WriteBatch::default();
                        index.checkpoint(&mut batch);
                        store.write(batch).expect("written");
                        if next(4) == 0 {
                            drop(index);
                            index = open_index();
                        }
                    }
                    _ => {
                        // Mostly ahead of the clock, sometimes behind it (found next time).
                        let time = clock + next(1_000_000) as i64 - 50_000;
                        let key = vec![b'k', next(30) as u8];
                        let weight = next(3) as i64 - 1;
                        index.add(key[1] as Vnode, time, &key, weight);
                        *model.entry((time, key)).or_insert(0) += weight;
                    }
                }
            }
            let mut got = summed(index.expire(i64::MAX - 1).expect("all"));
            got.sort();
            let want: Vec<(i64, Vec<u8>, i64)> = model
                .into_iter()
                .filter(|(_, w)| *w != 0)
                .map(|((t, k), w)| (t, k, w))
                .collect();
            assert_eq!(got, want, "limit {limit}");
        }
    }
}
