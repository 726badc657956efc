//! A keyed state table: the state layer an operator keeps its per-key state in.
//!
//! The operator keeps its values in its own columnar arrays indexed by *slot* (so a batch is
//! still processed with vectorised loops over slot ids) and implements [`SlotValues`] to say
//! how a slot's value is stored. [`KeyedState`] owns everything else: which key is in which
//! slot, the store keys (`operator prefix ‖ vnode ‖ key`, see [`crate::vnode`]), reading
//! missing keys from the store (one multi-get per batch), dirty tracking, writing changed
//! slots at a checkpoint, deleting, and evicting least recently used clean slots when the
//! shared [`CacheBudget`] is exceeded. Nothing is loaded when an operator starts: a key is
//! read the first time a batch needs it.
//!
//! The call sequence an operator sees, per input batch:
//! 1. [`KeyedState::begin_batch`];
//! 2. [`KeyedState::resolve`] with the batch's encoded keys: a slot per row (missing keys are
//!    read from the store and [`SlotValues::load`]ed, unknown keys get a fresh slot) and the
//!    distinct slots in first-seen order;
//! 3. the operator updates its arrays and calls [`KeyedState::mark_dirty`] for each changed
//!    slot (or [`KeyedState::remove`] for a key whose state is gone for good);
//! 4. [`KeyedState::evict`] once the batch's output is built.
//!
//! At every checkpoint, [`KeyedState::checkpoint`] asks [`SlotValues::save`] for each dirty
//! slot's value and adds it to the checkpoint's write (or a delete when the slot is empty).
//!
//! **Rows layout** ([`KeyedState::open_rows`]): for state that is a large ordered set of rows
//! per key (an OVER window's partition), a key's value is not one store value but one store
//! entry per row, `prefix ‖ vnode ‖ sized(key) ‖ row key`, read with one range scan when the
//! key is needed ([`SlotValues::load_row`] per entry) and written row by row: at a checkpoint
//! [`SlotValues::save_rows`] writes only the rows that changed.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use runnel_common::Result;
use smallvec::SmallVec;

use crate::cache_budget::SharedBudget;
use crate::keys::prefix_end;
use crate::vnode::{vnode_key, vnode_of, Vnode, VnodeSet};
use crate::{Store, WriteBatch};

/// Where [`SlotValues::save_rows`] writes a row: `(row key, Some(value))`, or `None` to delete.
pub type RowWriter<'a> = dyn FnMut(&[u8], Option<&[u8]>) + 'a;

/// What an operator keeps per slot, and how it is stored.
pub trait SlotValues {
    /// Makes room for slots `0..slots` (new slots hold the empty state).
    fn grow(&mut self, slots: usize);
    /// Sets an empty slot to the stored `value`.
    fn load(&mut self, slot: u32, value: &[u8]) -> Result<()>;
    /// Appends the slot's stored form to `out`; false when the slot is empty (its key is
    /// deleted from the store and the slot freed).
    fn save(&self, slot: u32, out: &mut Vec<u8>) -> bool;
    /// Empties a slot (evicted or deleted); it may be given to another key.
    fn reset(&mut self, slot: u32);

    /// Whether the slot holds nothing to store ([`SlotValues::save`] would return false).
    /// A checkpoint frees such a slot that was never stored without sorting or writing it
    /// (an interval join's row that came and expired between two checkpoints). The default,
    /// `false`, leaves every slot to `save`.
    fn is_empty(&self, _slot: u32) -> bool {
        false
    }

    /// Rows layout: adds one stored row (its row key and value) to a slot being read.
    fn load_row(&mut self, _slot: u32, _row_key: &[u8], _value: &[u8]) -> Result<()> {
        Err(runnel_common::RunnelError::internal(
            "a state table of values read as rows",
        ))
    }

    /// Rows layout: writes the slot's rows changed since it was last saved, each as
    /// `write(row key, Some(value))` or `write(row key, None)` (deleted), and forgets that they
    /// changed. Returns the bytes the slot's rows take (0: it has none left).
    fn save_rows(&mut self, _slot: u32, _write: &mut RowWriter<'_>) -> usize {
        0
    }
}

/// Memory a cached slot costs beyond its key and value bytes, measured roughly: the slot
/// record (~64 bytes, a key of up to [`INLINE_KEY_BYTES`] inside it), the index entry (~8),
/// its recency-queue entries (~40) and the operator's per-slot arrays and accumulator
/// overhead (~40).
const SLOT_OVERHEAD: usize = 152;

/// A value size to assume for a slot that was never stored, until it is.
const FIRST_VALUE_GUESS: usize = 32;

/// Keys up to this many bytes are kept in the slot itself (one or two integer columns, the
/// common key): a lookup compares them without following a pointer, and making a slot
/// allocates nothing.
const INLINE_KEY_BYTES: usize = 24;

/// A slot's key.
type SlotKey = SmallVec<[u8; INLINE_KEY_BYTES]>;

struct Slot {
    key: SlotKey,
    /// The key's hash in the index (kept: the index rehashes when it grows, and a removal
    /// finds the slot by it).
    hash: u64,
    vnode: Vnode,
    /// The batch that last used the slot (see [`KeyedState::begin_batch`]).
    last_used: u64,
    /// Bytes counted in the budget for this slot.
    bytes: u32,
    live: bool,
    dirty: bool,
    /// The store may hold a value for the key (deleting it must be written).
    stored: bool,
    /// Never evicted.
    pinned: bool,
}

pub struct KeyedState {
    store: std::sync::Arc<Store>,
    prefix: Vec<u8>,
    /// One store entry per row ([`KeyedState::open_rows`]) rather than one value per key.
    rows: bool,
    budget: SharedBudget,
    /// The live slots, found by their key's hash (the key itself is kept once, in the slot).
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    slots: Vec<Slot>,
    free: Vec<u32>,
    dirty: Vec<u32>,
    /// Slots in the order they were used, oldest first; an entry is current only while
    /// its epoch is the slot's `last_used` (later uses push a new entry).
    recency: VecDeque<(u32, u64)>,
    epoch: u64,
    /// Stored keys to delete at the next checkpoint (removed slots).
    deletes: Vec<(Vnode, SlotKey)>,
    /// The store may hold keys this cache does not: false while the table was empty when
    /// opened and nothing has been evicted since, so a miss needs no read.
    maybe_stored: bool,
    /// Bytes of this table's slots counted in the budget.
    bytes: usize,
    /// Bytes of dirty slots counted in the budget's dirty total.
    dirty_bytes: usize,
    /// Running size of a stored value, for slots not stored yet.
    value_guess: usize,
    store_key: Vec<u8>,
    /// The vnodes whose keys this table may hold: its worker's (a key of another vnode
    /// reaching it is a routing bug, caught in debug builds).
    owned: VnodeSet,
}

impl KeyedState {
    /// A state table over the store keys starting with `prefix`.
    pub fn open(
        store: std::sync::Arc<Store>,
        prefix: Vec<u8>,
        budget: SharedBudget,
    ) -> Result<Self> {
        let maybe_stored = store
            .last_key_in_range(&prefix, &prefix_end(&prefix))?
            .is_some();
        Ok(KeyedState {
            store,
            prefix,
            rows: false,
            budget,
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            slots: Vec::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            recency: VecDeque::new(),
            epoch: 0,
            deletes: Vec::new(),
            maybe_stored,
            bytes: 0,
            dirty_bytes: 0,
            value_guess: FIRST_VALUE_GUESS,
            store_key: Vec::new(),
            owned: VnodeSet::all(),
        })
    }

    /// Restricts the table to `vnodes`, its worker's share (see the field).
    pub fn owning(mut self, vnodes: &VnodeSet) -> Self {
        self.owned = *vnodes;
        self
    }

    /// A state table in the rows layout (see the module docs) over the store keys starting
    /// with `prefix`.
    pub fn open_rows(
        store: std::sync::Arc<Store>,
        prefix: Vec<u8>,
        budget: SharedBudget,
    ) -> Result<Self> {
        let mut table = KeyedState::open(store, prefix, budget)?;
        table.rows = true;
        Ok(table)
    }

    /// Rows layout: the store key prefix of `key`'s rows.
    fn rows_prefix(&self, vnode: Vnode, key: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(&vnode.to_be_bytes());
        crate::keys::push_sized(out, key);
    }

    /// Rows layout: reads the rows of new slots' keys (one range scan each), loading the
    /// ones found.
    fn read_rows<V: SlotValues>(&mut self, misses: &[u32], values: &mut V) -> Result<()> {
        let mut start = Vec::new();
        for &slot in misses {
            let s = &self.slots[slot as usize];
            self.rows_prefix(s.vnode, &s.key, &mut start);
            let end = prefix_end(&start);
            let mut bytes = 0usize;
            let mut failed = None;
            let at = start.len();
            self.store.for_each_in_range(&start, &end, |key, value| {
                bytes += key.len() - at + value.len();
                if let Err(e) = values.load_row(slot, &key[at..], value) {
                    failed = Some(e);
                    return Ok(false);
                }
                Ok(true)
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            if bytes > 0 {
                self.slots[slot as usize].stored = true;
                self.set_value_len(slot, bytes);
            }
        }
        self.budget.count_read(misses.len() as u64);
        Ok(())
    }

    /// Starts a batch: slots used from here on count as used by it.
    pub fn begin_batch(&mut self) {
        self.epoch += 1;
        self.compact_recency();
    }

    /// The key of a live slot.
    pub fn key(&self, slot: u32) -> &[u8] {
        &self.slots[slot as usize].key
    }

    /// The vnode of a live slot's key, hashed once when the slot was made.
    pub fn vnode(&self, slot: u32) -> Vnode {
        self.slots[slot as usize].vnode
    }

    /// Whether `slot` is live and holds `key` (a slot remembered from earlier may have been
    /// evicted since and given to another key).
    pub fn holds(&self, slot: u32, key: &[u8]) -> bool {
        self.slots
            .get(slot as usize)
            .is_some_and(|s| s.live && *s.key == *key)
    }

    /// Every live slot (order unspecified).
    pub fn live_slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.index.iter().copied()
    }

    /// The number of cached keys.
    pub fn cached(&self) -> usize {
        self.index.len()
    }

    /// A slot per key of `keys` (in `slots`), and each distinct slot with the index of the
    /// first key naming it (in `touched`, first-seen order). Keys neither cached nor stored
    /// get an empty slot.
    pub fn resolve<'k, V: SlotValues>(
        &mut self,
        keys: impl IntoIterator<Item = &'k [u8]>,
        values: &mut V,
        slots: &mut Vec<u32>,
        touched: &mut Vec<(u32, u32)>,
    ) -> Result<()> {
        let mut misses: Vec<u32> = Vec::new();
        for (row, key) in keys.into_iter().enumerate() {
            let slot = match self.slot_of(key) {
                Some(slot) => slot,
                None => {
                    let slot = self.new_slot(key, values);
                    if self.maybe_stored {
                        misses.push(slot);
                    }
                    slot
                }
            };
            if self.touch(slot) {
                touched.push((slot, row as u32));
            }
            slots.push(slot);
        }
        self.read_misses(&misses, values)
    }

    /// A slot per key of `keys` (each given once, e.g. a batch's distinct keys), read where
    /// needed: [`KeyedState::resolve`] without the first-seen bookkeeping.
    pub fn slots_of<'k, V: SlotValues>(
        &mut self,
        keys: impl IntoIterator<Item = &'k [u8]>,
        values: &mut V,
    ) -> Result<Vec<u32>> {
        let (mut slots, mut touched) = (Vec::new(), Vec::new());
        self.resolve(keys, values, &mut slots, &mut touched)?;
        Ok(slots)
    }

    /// The slot of each `(key, tag)` of a time index's expired entries, tagged with the slot
    /// the key had when noted (`TimeIndex::set_tagged`): the tagged slot where it still holds
    /// the key (no lookup by key), else the key's slot read like any (evicted since, or noted
    /// before a restart: each such key looked up once). A slot may come more than once.
    pub fn slots_tagged<'k, V: SlotValues>(
        &mut self,
        entries: impl IntoIterator<Item = (&'k [u8], u32)>,
        values: &mut V,
    ) -> Result<Vec<u32>> {
        let mut slots = Vec::new();
        let mut untagged: Vec<&[u8]> = Vec::new();
        for (key, tag) in entries {
            match self.holds(tag, key) {
                true => slots.push(tag),
                false => untagged.push(key),
            }
        }
        if !untagged.is_empty() {
            untagged.sort_unstable();
            untagged.dedup();
            slots.extend(self.slots_of(untagged, values)?);
        }
        Ok(slots)
    }

    /// The slot of each key that has state (cached, or stored and read now), `None` for the
    /// others; unlike [`KeyedState::resolve`], no slot is made for a key without state (a
    /// join probing the other side must not fill that side's cache with empty keys).
    pub fn find<'k, V: SlotValues>(
        &mut self,
        keys: impl IntoIterator<Item = &'k [u8]>,
        values: &mut V,
        found: &mut Vec<Option<u32>>,
    ) -> Result<()> {
        let start = found.len();
        // Keys to read, each once, and the rows waiting for each.
        let mut missing: HashMap<&'k [u8], Vec<usize>> = HashMap::new();
        for key in keys {
            match self.slot_of(key) {
                Some(slot) => {
                    self.touch(slot);
                    found.push(Some(slot));
                }
                None => {
                    if self.maybe_stored {
                        missing.entry(key).or_default().push(found.len());
                    }
                    found.push(None);
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let missing: Vec<(&[u8], Vec<usize>)> = missing.into_iter().collect();
        if self.rows {
            for (key, rows) in missing {
                let slot = self.new_slot(key, values);
                self.read_rows(&[slot], values)?;
                if !self.slots[slot as usize].stored {
                    self.free_slot(slot, values);
                    continue;
                }
                self.touch(slot);
                for row in rows {
                    found[row] = Some(slot);
                }
            }
            return Ok(());
        }
        let store_keys: Vec<Vec<u8>> = missing
            .iter()
            .map(|(key, _)| {
                let mut store_key = Vec::new();
                vnode_key(&self.prefix, vnode_of(key), key, &mut store_key);
                store_key
            })
            .collect();
        let stored = self.store.multi_get(&store_keys)?;
        self.budget.count_read(store_keys.len() as u64);
        for ((key, rows), value) in missing.into_iter().zip(stored) {
            let Some(value) = value else {
                continue;
            };
            let slot = self.new_slot(key, values);
            self.load_stored(slot, &value, values)?;
            self.touch(slot);
            for row in rows {
                debug_assert!(row >= start);
                found[row] = Some(slot);
            }
        }
        Ok(())
    }

    /// The slot of one key, reading it from the store if needed.
    pub fn slot_for<V: SlotValues>(&mut self, key: &[u8], values: &mut V) -> Result<u32> {
        if let Some(slot) = self.slot_of(key) {
            self.touch(slot);
            return Ok(slot);
        }
        let slot = self.new_slot(key, values);
        self.touch(slot);
        if self.maybe_stored {
            self.read_misses(&[slot], values)?;
        }
        Ok(slot)
    }

    /// Keeps a slot in memory for good (state that must always be at hand).
    pub fn pin(&mut self, slot: u32) {
        self.slots[slot as usize].pinned = true;
    }

    /// Reads every stored key into the cache and pins it (state that is scanned whole; not in
    /// the rows layout).
    pub fn load_all<V: SlotValues>(&mut self, values: &mut V) -> Result<()> {
        if self.rows {
            return Err(runnel_common::RunnelError::internal(
                "load_all of a state table in the rows layout",
            ));
        }
        let start = self.prefix.clone();
        let end = prefix_end(&start);
        let mut stored = Vec::new();
        self.store.for_each_in_range(&start, &end, |key, value| {
            stored.push((
                Box::<[u8]>::from(&key[start.len()..]),
                Box::<[u8]>::from(value),
            ));
            Ok(true)
        })?;
        for (key, value) in stored {
            let Some(key) = key.get(2..) else {
                return Err(runnel_common::RunnelError::internal(
                    "a state key lacks its vnode",
                ));
            };
            let slot = match self.slot_of(key) {
                Some(slot) => slot,
                None => {
                    let slot = self.new_slot(key, values);
                    self.load_stored(slot, &value, values)?;
                    slot
                }
            };
            self.pin(slot);
        }
        // Everything stored is cached now: a miss is a new key until something is evicted.
        self.maybe_stored = false;
        Ok(())
    }

    pub fn mark_dirty(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if s.live && !s.dirty {
            s.dirty = true;
            self.dirty_bytes += s.bytes as usize;
            self.budget.add_dirty(s.bytes as usize);
            self.dirty.push(slot);
        }
    }

    /// Forgets a key for good: its slot is freed and its stored value deleted at the next
    /// checkpoint.
    pub fn remove<V: SlotValues>(&mut self, slot: u32, values: &mut V) {
        let s = &self.slots[slot as usize];
        if s.stored {
            self.deletes.push((s.vnode, s.key.clone()));
        }
        self.free_slot(slot, values);
    }

    /// Adds the changed slots and the deletes to the checkpoint, in key order (RocksDB's
    /// memtable takes sorted keys far faster than random ones). Empty slots are freed.
    pub fn checkpoint<V: SlotValues>(&mut self, batch: &mut WriteBatch, values: &mut V) {
        for (vnode, key) in std::mem::take(&mut self.deletes) {
            if self.rows {
                let mut start = Vec::new();
                self.rows_prefix(vnode, &key, &mut start);
                batch.delete_range(&start, &prefix_end(&start));
                continue;
            }
            vnode_key(&self.prefix, vnode, &key, &mut self.store_key);
            batch.delete(&self.store_key);
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        // Slots made and emptied since the last checkpoint have nothing to write or delete.
        let mut gone = Vec::new();
        dirty.retain(|&slot| {
            let s = &self.slots[slot as usize];
            let empty = s.dirty && !s.stored && values.is_empty(slot);
            if empty {
                gone.push(slot);
            }
            s.dirty && !empty
        });
        for slot in gone {
            self.free_slot(slot, values);
        }
        let dirty = self.in_key_order(dirty);
        let mut value = Vec::new();
        for slot in dirty {
            if !self.slots[slot as usize].dirty {
                // Listed twice (freed and given to another key since): written already.
                continue;
            }
            self.slots[slot as usize].dirty = false;
            if self.rows {
                let s = &self.slots[slot as usize];
                let mut row_key = Vec::new();
                self.rows_prefix(s.vnode, &s.key, &mut row_key);
                let at = row_key.len();
                let size = values.save_rows(slot, &mut |row, value| {
                    row_key.truncate(at);
                    row_key.extend_from_slice(row);
                    match value {
                        Some(v) => batch.put(&row_key, v),
                        None => batch.delete(&row_key),
                    }
                });
                if size == 0 {
                    self.free_slot(slot, values);
                } else {
                    self.slots[slot as usize].stored = true;
                    self.set_value_len(slot, size);
                }
                continue;
            }
            value.clear();
            let keep = values.save(slot, &mut value);
            let s = &self.slots[slot as usize];
            let (vnode, stored) = (s.vnode, s.stored);
            vnode_key(&self.prefix, vnode, &s.key, &mut self.store_key);
            if keep {
                batch.put(&self.store_key, &value);
                self.slots[slot as usize].stored = true;
                self.set_value_len(slot, value.len());
                self.value_guess = (self.value_guess * 7 + value.len()) / 8;
            } else {
                if stored {
                    batch.delete(&self.store_key);
                }
                self.free_slot(slot, values);
            }
        }
        self.budget.sub_dirty(self.dirty_bytes);
        self.dirty_bytes = 0;
        // Everything is clean now: get back within the budget before the next batch (the
        // values just written are in `batch`, which the caller writes before any read).
        self.evict(values);
    }

    /// `slots` in the order of their (vnode, key). Sorted by an integer made of the vnode and
    /// the key's first bytes, which decides almost every comparison without reading the keys
    /// (scattered over the heap); equal prefixes compare the whole keys.
    fn in_key_order(&self, slots: Vec<u32>) -> Vec<u32> {
        let prefix = |slot: u32| -> u64 {
            let s = &self.slots[slot as usize];
            let mut head = [0u8; 6];
            let n = s.key.len().min(6);
            head[..n].copy_from_slice(&s.key[..n]);
            let mut bytes = [0u8; 8];
            bytes[..2].copy_from_slice(&s.vnode.to_be_bytes());
            bytes[2..].copy_from_slice(&head);
            u64::from_be_bytes(bytes)
        };
        let mut keyed: Vec<(u64, u32)> = slots.into_iter().map(|s| (prefix(s), s)).collect();
        keyed.sort_unstable_by(|&(pa, a), &(pb, b)| {
            pa.cmp(&pb).then_with(|| {
                let (a, b) = (&self.slots[a as usize], &self.slots[b as usize]);
                (a.vnode, &a.key).cmp(&(b.vnode, &b.key))
            })
        });
        keyed.into_iter().map(|(_, slot)| slot).collect()
    }

    /// Evicts least recently used clean slots while the shared budget is exceeded.
    pub fn evict<V: SlotValues>(&mut self, values: &mut V) {
        let mut excess = self.budget.excess();
        if excess == 0 {
            return;
        }
        let mut budget_rounds = self.recency.len();
        let mut evicted = 0;
        while excess > 0 && budget_rounds > 0 {
            budget_rounds -= 1;
            let Some((slot, epoch)) = self.recency.pop_front() else {
                break;
            };
            let s = &self.slots[slot as usize];
            if !s.live || s.last_used != epoch || s.pinned {
                continue;
            }
            if s.dirty {
                // Written at the next checkpoint; it stays until then.
                self.recency.push_back((slot, epoch));
                continue;
            }
            excess = excess.saturating_sub(s.bytes as usize);
            self.maybe_stored = true;
            self.free_slot(slot, values);
            evicted += 1;
        }
        self.budget.count_evicted(evicted);
    }

    /// The live slot holding `key`.
    fn slot_of(&self, key: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        self.index
            .find(hash, |&slot| *self.slots[slot as usize].key == *key)
            .copied()
    }

    fn new_slot<V: SlotValues>(&mut self, key: &[u8], values: &mut V) -> u32 {
        let bytes = (key.len() + self.value_guess + SLOT_OVERHEAD) as u32;
        let hash = self.hasher.hash_one(key);
        let vnode = vnode_of(key);
        debug_assert!(
            self.owned.contains(vnode),
            "a key of vnode {vnode} reached a worker that does not own it"
        );
        let fresh = Slot {
            key: SlotKey::from_slice(key),
            hash,
            vnode,
            last_used: 0,
            bytes,
            live: true,
            dirty: false,
            stored: false,
            pinned: false,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = fresh;
                slot
            }
            None => {
                self.slots.push(fresh);
                values.grow(self.slots.len());
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.index
            .insert_unique(hash, slot, |&s| slots[s as usize].hash);
        self.bytes += bytes as usize;
        self.budget.add(bytes as usize);
        slot
    }

    /// Marks a slot used by the current batch; true on its first use in the batch.
    fn touch(&mut self, slot: u32) -> bool {
        let s = &mut self.slots[slot as usize];
        if s.last_used == self.epoch {
            return false;
        }
        s.last_used = self.epoch;
        self.recency.push_back((slot, self.epoch));
        true
    }

    /// Reads the given new slots' keys from the store, loading the ones found.
    fn read_misses<V: SlotValues>(&mut self, misses: &[u32], values: &mut V) -> Result<()> {
        if misses.is_empty() {
            return Ok(());
        }
        if self.rows {
            return self.read_rows(misses, values);
        }
        let keys: Vec<Vec<u8>> = misses
            .iter()
            .map(|&slot| {
                let s = &self.slots[slot as usize];
                let mut key = Vec::new();
                vnode_key(&self.prefix, s.vnode, &s.key, &mut key);
                key
            })
            .collect();
        let found = self.store.multi_get(&keys)?;
        self.budget.count_read(keys.len() as u64);
        for (&slot, value) in misses.iter().zip(found) {
            if let Some(value) = value {
                self.load_stored(slot, &value, values)?;
            }
        }
        Ok(())
    }

    fn set_value_len(&mut self, slot: u32, value_len: usize) {
        let s = &mut self.slots[slot as usize];
        let bytes = (s.key.len() + value_len + SLOT_OVERHEAD) as u32;
        if bytes >= s.bytes {
            let grown = (bytes - s.bytes) as usize;
            self.bytes += grown;
            self.budget.add(grown);
        } else {
            let shrunk = (s.bytes - bytes) as usize;
            self.bytes -= shrunk;
            self.budget.sub(shrunk);
        }
        s.bytes = bytes;
    }

    fn free_slot<V: SlotValues>(&mut self, slot: u32, values: &mut V) {
        let s = &mut self.slots[slot as usize];
        if !s.live {
            return;
        }
        s.live = false;
        s.dirty = false;
        s.pinned = false;
        s.key = SlotKey::new();
        let bytes = s.bytes as usize;
        if let Ok(entry) = self.index.find_entry(s.hash, |&other| other == slot) {
            entry.remove();
        }
        self.bytes -= bytes;
        self.budget.sub(bytes);
        values.reset(slot);
        self.free.push(slot);
    }

    /// Sets a new slot to its stored value.
    fn load_stored<V: SlotValues>(
        &mut self,
        slot: u32,
        value: &[u8],
        values: &mut V,
    ) -> Result<()> {
        values.load(slot, value)?;
        self.slots[slot as usize].stored = true;
        self.set_value_len(slot, value.len());
        Ok(())
    }

    /// Drops entries of the recency queue that later uses or frees made stale, once they
    /// outnumber the live slots (so the queue stays proportional to the cache).
    fn compact_recency(&mut self) {
        if self.recency.len() <= 2 * self.index.len() + 1024 {
            return;
        }
        let slots = &self.slots;
        self.recency.retain(|&(slot, epoch)| {
            slots[slot as usize].live && slots[slot as usize].last_used == epoch
        });
    }
}

impl Drop for KeyedState {
    fn drop(&mut self) {
        self.budget.sub(self.bytes);
        self.budget.sub_dirty(self.dirty_bytes);
    }
}

impl std::fmt::Debug for KeyedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedState")
            .field("cached", &self.index.len())
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CacheBudget, StoreOptions};

    /// A count per key.
    #[derive(Default)]
    struct Counts(Vec<i64>);

    impl SlotValues for Counts {
        fn grow(&mut self, slots: usize) {
            self.0.resize(slots, 0);
        }
        fn load(&mut self, slot: u32, value: &[u8]) -> Result<()> {
            assert_eq!(
                self.0[slot as usize], 0,
                "loaded into a slot that is not empty"
            );
            self.0[slot as usize] = i64::from_le_bytes(value.try_into().unwrap());
            Ok(())
        }
        fn save(&self, slot: u32, out: &mut Vec<u8>) -> bool {
            let n = self.0[slot as usize];
            out.extend_from_slice(&n.to_le_bytes());
            n != 0
        }
        fn reset(&mut self, slot: u32) {
            self.0[slot as usize] = 0;
        }
        fn is_empty(&self, slot: u32) -> bool {
            self.0[slot as usize] == 0
        }
    }

    fn add(state: &mut KeyedState, counts: &mut Counts, keys: &[u64]) {
        state.begin_batch();
        let encoded: Vec<[u8; 8]> = keys.iter().map(|k| k.to_be_bytes()).collect();
        let (mut slots, mut touched) = (Vec::new(), Vec::new());
        state
            .resolve(
                encoded.iter().map(|k| &k[..]),
                counts,
                &mut slots,
                &mut touched,
            )
            .unwrap();
        for &slot in &slots {
            counts.0[slot as usize] += 1;
        }
        for (slot, _) in touched {
            state.mark_dirty(slot);
        }
        state.evict(counts);
    }

    fn checkpoint(store: &Store, state: &mut KeyedState, counts: &mut Counts) {
        let mut batch = WriteBatch::default();
        state.checkpoint(&mut batch, counts);
        store.write(batch).unwrap();
    }

    fn count_of(state: &mut KeyedState, counts: &mut Counts, key: u64) -> i64 {
        state.begin_batch();
        let slot = state.slot_for(&key.to_be_bytes(), counts).unwrap();
        counts.0[slot as usize]
    }

    #[test]
    fn a_small_cache_evicts_and_rereads_without_losing_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        // Room for about 40 keys.
        let budget = CacheBudget::new(40 * (8 + 8 + SLOT_OVERHEAD));
        let mut state = KeyedState::open(store.clone(), vec![7], budget.clone()).unwrap();
        let mut counts = Counts::default();
        for round in 0..5u64 {
            let keys: Vec<u64> = (0..1000).map(|i| (i * 7919 + round) % 1000).collect();
            for chunk in keys.chunks(50) {
                add(&mut state, &mut counts, chunk);
                checkpoint(&store, &mut state, &mut counts);
            }
        }
        assert!(state.cached() < 200, "{} keys cached", state.cached());
        assert!(
            budget.used() <= budget.limit() * 2,
            "{} bytes used",
            budget.used()
        );
        for key in [0, 1, 500, 999] {
            assert_eq!(count_of(&mut state, &mut counts, key), 5, "key {key}");
        }
        // A second table over the same store reads what the first wrote, under vnode keys.
        let mut reopened = KeyedState::open(store.clone(), vec![7], budget).unwrap();
        let mut fresh = Counts::default();
        assert_eq!(count_of(&mut reopened, &mut fresh, 321), 5);
        let mut key = vec![7];
        key.extend_from_slice(&vnode_of(&321u64.to_be_bytes()).to_be_bytes());
        key.extend_from_slice(&321u64.to_be_bytes());
        assert_eq!(store.get(&key).unwrap(), Some(5i64.to_le_bytes().to_vec()));
    }

    #[test]
    fn empty_and_removed_keys_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let budget = CacheBudget::unlimited();
        let mut state = KeyedState::open(store.clone(), vec![9], budget.clone()).unwrap();
        let mut counts = Counts::default();
        add(&mut state, &mut counts, &[1, 2, 3]);
        checkpoint(&store, &mut state, &mut counts);
        assert_eq!(store.scan_prefix(&[9]).unwrap().len(), 3);
        // Key 1 back to zero: deleted at the checkpoint; key 2 removed outright.
        state.begin_batch();
        let slot = state.slot_for(&1u64.to_be_bytes(), &mut counts).unwrap();
        counts.0[slot as usize] = 0;
        state.mark_dirty(slot);
        let two = state.slot_for(&2u64.to_be_bytes(), &mut counts).unwrap();
        state.remove(two, &mut counts);
        checkpoint(&store, &mut state, &mut counts);
        let left = store.scan_prefix(&[9]).unwrap();
        assert_eq!(left.len(), 1);
        assert!(left[0].0.ends_with(&3u64.to_be_bytes()));
        assert_eq!(state.cached(), 1);
        drop(state);
        assert_eq!(budget.used(), 0, "a dropped table gives its bytes back");
    }

    /// A checkpoint writes in (vnode, key) order, however the keys' first bytes compare, and
    /// frees a slot made and emptied since the last one without writing it.
    #[test]
    fn checkpoint_writes_in_key_order_and_skips_slots_emptied_unstored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let mut state = KeyedState::open(store.clone(), vec![4], CacheBudget::unlimited()).unwrap();
        let mut counts = Counts::default();
        let mut keys: Vec<Vec<u8>> = vec![
            b"abcdefZ".to_vec(),
            b"abcdefA".to_vec(),
            b"abc".to_vec(),
            b"abc\0".to_vec(),
            b"abcdef".to_vec(),
            Vec::new(),
            vec![0xff; 9],
        ];
        keys.extend((0..200u32).map(|i| (i * 7919).to_be_bytes().to_vec()));
        state.begin_batch();
        let slots = state
            .slots_of(keys.iter().map(|k| &k[..]), &mut counts)
            .unwrap();
        let ordered: Vec<Vec<u8>> = state
            .in_key_order(slots.clone())
            .into_iter()
            .map(|s| state.key(s).to_vec())
            .collect();
        let mut expected = keys.clone();
        expected.sort_by_key(|k| (vnode_of(k), k.clone()));
        assert_eq!(ordered, expected);

        // Every key counted once, the first then back to zero: never stored, nothing written.
        for &slot in &slots {
            counts.0[slot as usize] = 1;
            state.mark_dirty(slot);
        }
        counts.0[slots[0] as usize] = 0;
        checkpoint(&store, &mut state, &mut counts);
        assert_eq!(store.scan_prefix(&[4]).unwrap().len(), keys.len() - 1);
        assert_eq!(state.cached(), keys.len() - 1, "the emptied slot is freed");
    }

    #[test]
    fn find_reads_stored_keys_and_makes_no_slot_for_absent_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let budget = CacheBudget::unlimited();
        let mut writer = KeyedState::open(store.clone(), vec![3], budget.clone()).unwrap();
        let mut counts = Counts::default();
        add(&mut writer, &mut counts, &[1, 2, 2]);
        checkpoint(&store, &mut writer, &mut counts);
        drop(writer);

        let mut reader = KeyedState::open(store.clone(), vec![3], budget).unwrap();
        let mut fresh = Counts::default();
        reader.begin_batch();
        let keys: Vec<[u8; 8]> = [2u64, 9, 1, 2].iter().map(|k| k.to_be_bytes()).collect();
        let mut found = Vec::new();
        reader
            .find(keys.iter().map(|k| &k[..]), &mut fresh, &mut found)
            .unwrap();
        let counts_found: Vec<Option<i64>> = found
            .iter()
            .map(|slot| slot.map(|s| fresh.0[s as usize]))
            .collect();
        assert_eq!(counts_found, [Some(2), None, Some(1), Some(2)]);
        assert_eq!(found[0], found[3], "one slot per key");
        assert_eq!(reader.cached(), 2, "no slot for the absent key");
    }

    #[test]
    fn changed_entries_stay_until_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let budget = CacheBudget::new(1024);
        let mut state = KeyedState::open(store.clone(), vec![5], budget.clone()).unwrap();
        let mut counts = Counts::default();
        add(&mut state, &mut counts, &(0..100).collect::<Vec<_>>());
        assert_eq!(state.cached(), 100, "dirty keys are never evicted");
        assert!(budget.wants_checkpoint());
        checkpoint(&store, &mut state, &mut counts);
        assert!(!budget.wants_checkpoint());
        add(&mut state, &mut counts, &[100]);
        assert!(state.cached() < 100);
        assert_eq!(count_of(&mut state, &mut counts, 42), 1);
    }

    /// Per key, a set of numbered rows with counts, in the rows layout.
    #[derive(Default)]
    struct RowSets {
        rows: Vec<std::collections::BTreeMap<u32, i64>>,
        changed: Vec<std::collections::BTreeSet<u32>>,
        writes: usize,
    }

    impl SlotValues for RowSets {
        fn grow(&mut self, slots: usize) {
            self.rows.resize_with(slots, Default::default);
            self.changed.resize_with(slots, Default::default);
        }
        fn load(&mut self, _: u32, _: &[u8]) -> Result<()> {
            unreachable!("rows are read one by one")
        }
        fn save(&self, _: u32, _: &mut Vec<u8>) -> bool {
            unreachable!("rows are written one by one")
        }
        fn reset(&mut self, slot: u32) {
            self.rows[slot as usize].clear();
            self.changed[slot as usize].clear();
        }
        fn load_row(&mut self, slot: u32, row_key: &[u8], value: &[u8]) -> Result<()> {
            let row = u32::from_be_bytes(row_key.try_into().unwrap());
            let count = i64::from_le_bytes(value.try_into().unwrap());
            self.rows[slot as usize].insert(row, count);
            Ok(())
        }
        fn save_rows(&mut self, slot: u32, write: &mut RowWriter<'_>) -> usize {
            for row in std::mem::take(&mut self.changed[slot as usize]) {
                self.writes += 1;
                match self.rows[slot as usize].get(&row) {
                    Some(c) => write(&row.to_be_bytes(), Some(&c.to_le_bytes())),
                    None => write(&row.to_be_bytes(), None),
                }
            }
            self.rows[slot as usize].len() * 12
        }
    }

    fn add_rows(state: &mut KeyedState, sets: &mut RowSets, key: u64, rows: &[(u32, i64)]) {
        state.begin_batch();
        let slot = state.slot_for(&key.to_be_bytes(), sets).unwrap();
        for &(row, delta) in rows {
            let count = sets.rows[slot as usize].entry(row).or_insert(0);
            *count += delta;
            if *count == 0 {
                sets.rows[slot as usize].remove(&row);
            }
            sets.changed[slot as usize].insert(row);
        }
        state.mark_dirty(slot);
        state.evict(sets);
    }

    fn rows_of(state: &mut KeyedState, sets: &mut RowSets, key: u64) -> Vec<(u32, i64)> {
        state.begin_batch();
        let slot = state.slot_for(&key.to_be_bytes(), sets).unwrap();
        sets.rows[slot as usize]
            .iter()
            .map(|(r, c)| (*r, *c))
            .collect()
    }

    #[test]
    fn the_rows_layout_reads_a_key_by_range_and_writes_only_changed_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        // Room for a handful of keys: everything is evicted and read back.
        let budget = CacheBudget::new(4 * (8 + 12 * 100 + SLOT_OVERHEAD));
        let mut state = KeyedState::open_rows(store.clone(), vec![9], budget.clone()).unwrap();
        let mut sets = RowSets::default();
        let mut expected: Vec<std::collections::BTreeMap<u32, i64>> = vec![Default::default(); 20];
        for round in 0..3u32 {
            for key in 0..20u64 {
                let rows: Vec<(u32, i64)> = (0..100).map(|r| (r * 3 + round, 1)).collect();
                add_rows(&mut state, &mut sets, key, &rows);
                for (r, c) in rows {
                    *expected[key as usize].entry(r).or_insert(0) += c;
                }
                let mut batch = WriteBatch::default();
                state.checkpoint(&mut batch, &mut sets);
                store.write(batch).unwrap();
            }
        }
        assert!(state.cached() <= 6, "{} keys cached", state.cached());
        // A checkpoint wrote the rows that changed, not the keys' whole sets.
        assert_eq!(sets.writes, 3 * 20 * 100);
        // Keys adjacent in bytes do not see each other's rows (keys are length-prefixed).
        for key in 0..20u64 {
            let want: Vec<(u32, i64)> = expected[key as usize]
                .iter()
                .map(|(r, c)| (*r, *c))
                .collect();
            assert_eq!(rows_of(&mut state, &mut sets, key), want, "key {key}");
        }
        // Rows going to zero are deleted; a key with none left is deleted whole.
        let all: Vec<(u32, i64)> = rows_of(&mut state, &mut sets, 5)
            .iter()
            .map(|(r, c)| (*r, -c))
            .collect();
        add_rows(&mut state, &mut sets, 5, &all);
        let mut batch = WriteBatch::default();
        state.checkpoint(&mut batch, &mut sets);
        store.write(batch).unwrap();
        let mut reopened = KeyedState::open_rows(store.clone(), vec![9], budget).unwrap();
        let mut fresh = RowSets::default();
        assert!(rows_of(&mut reopened, &mut fresh, 5).is_empty());
        assert_eq!(rows_of(&mut reopened, &mut fresh, 6).len(), 300);
        // `remove` deletes a key's rows with one range delete.
        reopened.begin_batch();
        let slot = reopened.slot_for(&6u64.to_be_bytes(), &mut fresh).unwrap();
        reopened.remove(slot, &mut fresh);
        let mut batch = WriteBatch::default();
        reopened.checkpoint(&mut batch, &mut fresh);
        store.write(batch).unwrap();
        assert!(rows_of(&mut reopened, &mut fresh, 6).is_empty());
        assert_eq!(rows_of(&mut reopened, &mut fresh, 7).len(), 300);
    }
}
