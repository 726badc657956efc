//! The memory budget of every operator's state cache together (`--state-cache-mb`).
//!
//! Each [`crate::KeyedState`] counts the bytes of the entries it holds and reports them here;
//! when the total passes the limit, the table that is being written evicts its least recently
//! used clean entries. Entries changed since the last checkpoint cannot be evicted (the store
//! holds their previous value); when they alone take half the budget, [`CacheBudget::wants_checkpoint`]
//! asks the worker for a checkpoint, which makes them clean. So memory is bounded by the
//! configuration, whatever the number of keys.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Shared by every state table of a worker.
#[derive(Debug)]
pub struct CacheBudget {
    limit: usize,
    used: AtomicUsize,
    dirty: AtomicUsize,
    /// Entries evicted, and keys read from the store because they were not cached, since
    /// start (for the metrics: a cache too small for the working set shows as both growing).
    evicted: AtomicU64,
    read: AtomicU64,
}

/// A handle on the budget, cheap to clone.
pub type SharedBudget = Arc<CacheBudget>;

impl CacheBudget {
    pub fn new(limit_bytes: usize) -> SharedBudget {
        Arc::new(CacheBudget {
            limit: limit_bytes,
            used: AtomicUsize::new(0),
            dirty: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
            read: AtomicU64::new(0),
        })
    }

    /// A budget no workload reaches (tests and tools that want nothing evicted).
    pub fn unlimited() -> SharedBudget {
        Self::new(usize::MAX / 4)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held by every cache together.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Bytes of entries changed since the last checkpoint.
    pub fn dirty(&self) -> usize {
        self.dirty.load(Ordering::Relaxed)
    }

    /// How many bytes must go to get back under the limit, with an eighth to spare so that
    /// eviction runs in rounds, not on every batch (0: nothing to do).
    pub fn excess(&self) -> usize {
        let used = self.used();
        if used <= self.limit {
            return 0;
        }
        used - (self.limit - self.limit / 8)
    }

    /// Entries evicted since start.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Keys read from the store on a cache miss since start.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    pub(crate) fn count_evicted(&self, entries: u64) {
        self.evicted.fetch_add(entries, Ordering::Relaxed);
    }

    pub(crate) fn count_read(&self, keys: u64) {
        self.read.fetch_add(keys, Ordering::Relaxed);
    }

    /// Changed entries take half the budget: a checkpoint would let them be evicted.
    pub fn wants_checkpoint(&self) -> bool {
        self.dirty() > self.limit / 2
    }

    pub(crate) fn add(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn sub(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    pub(crate) fn add_dirty(&self, bytes: usize) {
        self.dirty.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn sub_dirty(&self, bytes: usize) {
        self.dirty.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// Changes an operator buffers until the next checkpoint outside a [`crate::KeyedState`] (a
/// view's pending rows), counted in the budget's changed bytes so that they, too, bring the
/// checkpoint forward when they grow.
#[derive(Debug)]
pub struct PendingBytes {
    budget: SharedBudget,
    counted: usize,
}

impl PendingBytes {
    pub fn new(budget: SharedBudget) -> Self {
        PendingBytes { budget, counted: 0 }
    }

    pub fn add(&mut self, bytes: usize) {
        self.counted += bytes;
        self.budget.add_dirty(bytes);
    }

    /// The buffered changes were written (a checkpoint).
    pub fn clear(&mut self) {
        self.budget.sub_dirty(self.counted);
        self.counted = 0;
    }
}

impl Drop for PendingBytes {
    fn drop(&mut self) {
        self.clear();
    }
}
