//! Log entries just appended, handed from the writers to the dataflow in memory.
//!
//! A writer commits each entry to the store (that is what makes it durable) and then offers
//! the same Arrow batch here; the dataflow, reading the log from its position, takes the
//! entries it finds here instead of reading them back from RocksDB and decoding their IPC
//! (which cost a fifth of a Nexmark query's dataflow time). Only logs something reads are
//! kept ([`FreshEntries::watch`]), at most [`FRESH_ENTRY_BYTES`] of them in all: when the
//! dataflow falls behind, the oldest are dropped and read from the store as before. A
//! generator, whose entries the store keeps only as recipes, waits for room instead
//! ([`FreshEntries::wait_for_room`]) while the dataflow takes its log's entries from here:
//! what it would drop must be generated a second time to be read. An entry here is exactly the one stored (same schema, metadata and rows), so what a view
//! sees does not depend on where the entry came from.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use runnel_plan::ObjectId;

/// The memory the entries may take, all logs together.
pub const FRESH_ENTRY_BYTES: usize = 64 << 20;

#[derive(Default)]
struct Inner {
    /// Per log: entries in sequence order, with their sizes.
    logs: HashMap<ObjectId, VecDeque<(u64, RecordBatch, usize)>>,
    /// The logs the dataflow reads.
    watched: HashSet<ObjectId>,
    bytes: usize,
}

/// Shared by the writers and the dataflow's coordinator.
#[derive(Default)]
pub struct FreshEntries {
    inner: Mutex<Inner>,
    /// Signalled when entries are dropped or a log stops being read.
    room: Condvar,
}

impl FreshEntries {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the dataflow reads `log` (entries of logs it does not read are not kept).
    pub fn watch(&self, log: ObjectId, read: bool) {
        let mut inner = self.inner();
        if read {
            inner.watched.insert(log);
        } else {
            inner.watched.remove(&log);
            if let Some(entries) = inner.logs.remove(&log) {
                inner.bytes -= entries.iter().map(|e| e.2).sum::<usize>();
            }
            self.room.notify_all();
        }
    }

    /// Waits, at most `timeout`, while the dataflow reads `log` and has not taken enough of
    /// what is held: `log`'s entries take half the budget, or all logs' three quarters of it
    /// with some of `log`'s among them. A writer whose entries are costly to read back (a
    /// generator's) so keeps pace with the dataflow rather than have its entries dropped; the
    /// timeout bounds the wait for a reader that does not move (dropped entries are read
    /// from the store). Returns at once for a log nothing reads.
    pub fn wait_for_room(&self, log: ObjectId, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut inner = self.inner();
        while inner.watched.contains(&log) && {
            let own: usize = inner
                .logs
                .get(&log)
                .map_or(0, |e| e.iter().map(|e| e.2).sum());
            own > FRESH_ENTRY_BYTES / 2 || (own > 0 && inner.bytes > FRESH_ENTRY_BYTES / 4 * 3)
        } {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            inner = self
                .room
                .wait_timeout(inner, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Offers entry `seq` of `log`, committed to the store (entries come in sequence order).
    pub fn offer(&self, log: ObjectId, seq: u64, entry: &RecordBatch) {
        let mut inner = self.inner();
        if !inner.watched.contains(&log) {
            return;
        }
        let size = entry.get_array_memory_size();
        if size > FRESH_ENTRY_BYTES / 4 {
            return;
        }
        let Inner { logs, bytes, .. } = &mut *inner;
        let entries = logs.entry(log).or_default();
        if entries.back().is_some_and(|(last, _, _)| last + 1 != seq) {
            // A gap (an entry was not offered): what is here no longer leads up to it.
            *bytes -= entries.drain(..).map(|e| e.2).sum::<usize>();
        }
        entries.push_back((seq, entry.clone(), size));
        *bytes += size;
        // Over the limit: the oldest entries of the logs go (the dataflow reads them from the
        // store).
        while *bytes > FRESH_ENTRY_BYTES {
            let Some((_, oldest)) = logs
                .iter_mut()
                .filter(|(_, e)| !e.is_empty())
                .min_by_key(|(_, e)| e.front().map_or(u64::MAX, |f| f.0))
            else {
                break;
            };
            match oldest.pop_front() {
                Some((_, _, size)) => *bytes -= size,
                None => break,
            }
        }
    }

    /// Entries of `log` from `from` on, before `to`, at most `limit` and about `max_rows`
    /// rows, if the first one held is `from` (otherwise none: the caller reads the store).
    /// Entries before `from` are dropped (they were read).
    pub fn take(
        &self,
        log: ObjectId,
        from: u64,
        to: u64,
        limit: usize,
        max_rows: usize,
    ) -> Vec<(u64, RecordBatch)> {
        let mut inner = self.inner();
        let Inner { logs, bytes, .. } = &mut *inner;
        let Some(entries) = logs.get_mut(&log) else {
            return Vec::new();
        };
        let mut dropped = false;
        while entries.front().is_some_and(|(seq, _, _)| *seq < from) {
            if let Some((_, _, size)) = entries.pop_front() {
                *bytes -= size;
                dropped = true;
            }
        }
        if dropped {
            self.room.notify_all();
        }
        let mut out = Vec::new();
        let mut rows = 0;
        for (next, (seq, entry, _)) in (from..).zip(entries.iter()) {
            if *seq != next || *seq >= to || out.len() >= limit || rows >= max_rows {
                break;
            }
            rows += entry.num_rows();
            out.push((*seq, entry.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn entry(rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from_iter_values(0..rows))],
        )
        .expect("a batch")
    }

    #[test]
    fn hands_over_contiguous_entries_of_watched_logs() {
        let fresh = FreshEntries::default();
        fresh.offer(1, 0, &entry(1));
        assert!(
            fresh.take(1, 0, u64::MAX, 10, 100).is_empty(),
            "not watched"
        );
        fresh.watch(1, true);
        for seq in 5..9 {
            fresh.offer(1, seq, &entry(2));
        }
        // From an entry not held: nothing (read the store).
        assert!(fresh.take(1, 4, u64::MAX, 10, 100).is_empty());
        let seqs = |v: Vec<(u64, RecordBatch)>| v.into_iter().map(|e| e.0).collect::<Vec<_>>();
        assert_eq!(seqs(fresh.take(1, 5, u64::MAX, 2, 100)), vec![5, 6]);
        assert_eq!(seqs(fresh.take(1, 6, 8, 10, 100)), vec![6, 7]);
        // Rows bound: stops after the entry that reaches it.
        assert_eq!(seqs(fresh.take(1, 7, u64::MAX, 10, 1)), vec![7]);
        // A gap drops what came before it.
        fresh.offer(1, 10, &entry(1));
        assert!(fresh.take(1, 8, u64::MAX, 10, 100).is_empty());
        assert_eq!(seqs(fresh.take(1, 10, u64::MAX, 10, 100)), vec![10]);
        fresh.watch(1, false);
        assert!(fresh.take(1, 10, u64::MAX, 10, 100).is_empty());
    }

    /// A generator waits while its log's entries held fill half the budget and the dataflow
    /// reads the log; it goes on once they are taken. It does not wait for a log nothing
    /// reads, nor while none of its own entries are held, whatever other logs hold.
    #[test]
    fn a_writer_waits_for_room_while_its_entries_are_not_taken() {
        let fresh = Arc::new(FreshEntries::default());
        let big = entry(1 << 20);
        let per_entry = big.get_array_memory_size();
        let to_fill = (FRESH_ENTRY_BYTES / 2 / per_entry + 1) as u64;
        let long = Duration::from_secs(600);
        // Not watched: nothing is held, nothing waits.
        for seq in 0..to_fill {
            fresh.offer(1, seq, &big);
        }
        fresh.wait_for_room(1, long);
        fresh.watch(1, true);
        fresh.watch(2, true);
        for seq in 0..to_fill {
            fresh.offer(1, seq, &big);
        }
        // Log 2 has nothing held: its writer goes on.
        fresh.wait_for_room(2, long);
        // The reader takes from the first entry held: the writer waits until it moves on.
        assert_eq!(fresh.take(1, 0, u64::MAX, 1, usize::MAX).len(), 1);
        let waiter = {
            let fresh = fresh.clone();
            std::thread::spawn(move || fresh.wait_for_room(1, long))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "returned with the budget full");
        assert_eq!(fresh.take(1, to_fill / 2, u64::MAX, 1, usize::MAX).len(), 1);
        waiter.join().expect("waiter");
        // A reader that does not move is waited for at most the timeout.
        for seq in to_fill..to_fill + to_fill / 2 + 1 {
            fresh.offer(1, seq, &big);
        }
        fresh.wait_for_room(1, Duration::from_millis(10));
    }
}
