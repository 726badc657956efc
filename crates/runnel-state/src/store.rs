//! The RocksDB store: one instance per node, shared by the catalog, source logs, table rows,
//! view contents and operator state. Reads are point/multi gets and prefix scans; every
//! mutation is a `WriteBatch`, so a checkpoint is one atomic write.
//!
//! A full disk degrades the store, it does not break it: every write first checks that the
//! data directory's file system has more free space than a reserve
//! ([`StoreOptions::disk_reserve_bytes`]) and fails with [`StateError::DiskFull`] (53100)
//! otherwise, so RocksDB itself never runs out of space in the middle of a write (after a
//! failed log write it refuses every later write until the database is reopened), its
//! background flushes and compactions have room, and a restart can replay its log. Reads never
//! check.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rocksdb::{Direction, IteratorMode, Options, ReadOptions, WriteOptions, DB};

pub use rocksdb::WriteBatch;

use crate::error::StateError;
use crate::keys::prefix_end;

/// Values of at least this many bytes are kept in RocksDB's blob files, not in its sorted
/// files (see [`Store::open`]); what reads sizes from the sorted files counts them apart.
pub const BLOB_MIN_BYTES: u64 = 4096;

/// The merge operator of the store: a value written with `WriteBatch::merge` is a
/// little-endian i64 added to the stored one (append-only views count rows without reading
/// them back).
const ADD_I64: &str = "runnel.add_i64";

fn add_i64(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &rocksdb::MergeOperands,
) -> Option<Vec<u8>> {
    let read = |bytes: &[u8]| -> Option<i64> { Some(i64::from_le_bytes(bytes.try_into().ok()?)) };
    let mut total = match existing {
        Some(v) => read(v)?,
        None => 0,
    };
    for op in operands {
        total = total.checked_add(read(op)?)?;
    }
    Some(total.to_le_bytes().to_vec())
}

#[derive(Debug, Clone, Copy, Default)]
pub struct StoreOptions {
    /// fsync the WAL on every write (survives power loss, not only a process crash).
    pub sync_writes: bool,
    /// Writes fail with [`StateError::DiskFull`] while the data directory's file system has
    /// less free space than this (0: never).
    pub disk_reserve_bytes: u64,
}

pub struct Store {
    db: DB,
    sync_writes: bool,
    space: FreeSpace,
    blob_gc: Mutex<BlobGc>,
}

/// How often the blob files' garbage is looked at ([`Store::tune_blob_gc`]).
const BLOB_GC_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Whether RocksDB's blob garbage collection is on, and when that was last decided.
#[derive(Default)]
struct BlobGc {
    on: bool,
    last_checked: Option<Instant>,
}

/// How often the free space is asked of the file system: a write checks the last answer, so a
/// statvfs per write is not needed, and a burst of writes cannot overshoot the reserve by more
/// than what it writes in this time.
const SPACE_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// The free space of the store's file system, measured now and then.
struct FreeSpace {
    path: PathBuf,
    reserve: u64,
    /// When last measured, and the free bytes then.
    last: Mutex<Option<(Instant, u64)>>,
}

impl FreeSpace {
    /// Free bytes for unprivileged writers; None when the file system cannot say (the write
    /// then goes ahead, as it would without the check).
    fn available(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, bytes)) = *last {
            if at.elapsed() < SPACE_CHECK_INTERVAL {
                return Some(bytes);
            }
        }
        let stat = rustix::fs::statvfs(&self.path).ok()?;
        let bytes = stat.f_bavail.saturating_mul(stat.f_frsize);
        *last = Some((Instant::now(), bytes));
        Some(bytes)
    }

    fn check(&self) -> Result<(), StateError> {
        if self.reserve == 0 {
            return Ok(());
        }
        match self.available() {
            Some(available) if available < self.reserve => Err(StateError::DiskFull {
                path: self.path.display().to_string(),
                available_mb: available >> 20,
                reserve_mb: self.reserve >> 20,
            }),
            _ => Ok(()),
        }
    }
}

/// A key/value pair read from the store.
pub type KeyValue = (Box<[u8]>, Box<[u8]>);

/// The bytes of a RocksDB write batch's header: a sequence number (fixed64) and the
/// record count (fixed32), before the records (RocksDB's `WriteBatch::rep_` format, the
/// same that `WriteBatchInternal::Append` concatenates; the `rocksdb` crate has no `Append`).
const BATCH_HEADER: usize = 12;

/// One batch holding the records of `batches` in order, written atomically: what several
/// workers built for one checkpoint. `buffer` is where they are joined (cleared first; pass
/// the same one each time to reuse its memory).
pub fn concat_batches(
    batches: Vec<WriteBatch>,
    buffer: &mut Vec<u8>,
) -> Result<WriteBatch, StateError> {
    let mut batches = batches.into_iter().filter(|b| !b.is_empty());
    let Some(first) = batches.next() else {
        return Ok(WriteBatch::default());
    };
    let rest: Vec<WriteBatch> = batches.collect();
    if rest.is_empty() {
        return Ok(first);
    }
    // Room for all of it at once, and a quarter more for the next, larger checkpoint: a
    // growing buffer moves to fresh pages, which the kernel must zero (most of the join's
    // cost when it grew by doubling).
    let total = first.data().len() + rest.iter().map(|b| b.data().len()).sum::<usize>();
    buffer.clear();
    if buffer.capacity() < total {
        buffer.reserve_exact(total + total / 4);
    }
    buffer.extend_from_slice(first.data());
    let mut count = first.len() as u64;
    drop(first);
    for batch in rest {
        let data = batch.data();
        if data.len() < BATCH_HEADER {
            return Err(StateError::Corrupt(
                "a write batch is shorter than its header".into(),
            ));
        }
        buffer.extend_from_slice(&data[BATCH_HEADER..]);
        count += batch.len() as u64;
    }
    let count = u32::try_from(count)
        .map_err(|_| StateError::Corrupt("a checkpoint holds over 2^32 writes".into()))?;
    buffer[8..BATCH_HEADER].copy_from_slice(&count.to_le_bytes());
    Ok(WriteBatch::from_data(buffer))
}

impl Store {
    pub fn open(path: &Path, options: StoreOptions) -> Result<Arc<Store>, StateError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // Levels 0 and 1 uncompressed: they hold what was just written, which is rewritten
        // soon by compaction, and compressing it twice was a fifth of the CPU of an
        // append-heavy view (flush and compaction threads). Older data is LZ4.
        use rocksdb::DBCompressionType::{Lz4, None as Plain};
        opts.set_compression_per_level(&[Plain, Plain, Lz4, Lz4, Lz4, Lz4, Lz4]);
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        opts.set_write_buffer_size(64 << 20);
        // Bounds the log a restart after a crash replays (and the memtables it rebuilds):
        // past this, memtables are flushed so that older log files can go.
        opts.set_max_total_wal_size(256 << 20);
        opts.set_merge_operator_associative(ADD_I64, add_i64);
        // Bloom filters on whole keys in the files: with a state cache smaller than the
        // state, most point reads are of keys the store does not hold (a key seen for the
        // first time), and a filter answers those without reading a block. (Not in the
        // memtable: that filter costs every write on the dataflow thread, ~10% of a
        // write-heavy view's, for less than it saves.)
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        table.set_whole_key_filtering(true);
        opts.set_block_based_table_factory(&table);
        // Large values (log entries, a sink's outbox: Arrow batches) go to blob files when
        // the memtable is flushed, and the files hold only a reference: compaction then moves
        // a few bytes per entry instead of rewriting (and LZ4-compressing) every log byte once
        // per level, which was most of the compaction threads' CPU while a stream is loaded
        // (and two workers share the cores with them). Blob files are not compressed: a log
        // is written once and read back by each view, so compressing it would cost more CPU
        // than the disk it saves is worth here. Blob garbage (a trimmed or dropped log, a
        // delivered outbox) is collected by compaction, while there is garbage worth it
        // ([`Store::tune_blob_gc`]).
        opts.set_enable_blob_files(true);
        opts.set_min_blob_size(BLOB_MIN_BYTES);
        opts.set_enable_blob_gc(false);
        let db = DB::open(&opts, path)?;
        let store = Arc::new(Store {
            db,
            sync_writes: options.sync_writes,
            space: FreeSpace {
                path: path.to_path_buf(),
                reserve: options.disk_reserve_bytes,
                last: Mutex::new(None),
            },
            blob_gc: Mutex::new(BlobGc::default()),
        });
        // Garbage left by the last run is collected from the start.
        store.tune_blob_gc()?;
        Ok(store)
    }

    /// Turns RocksDB's blob garbage collection on while the blob files hold garbage worth
    /// collecting (at least an eighth of their bytes), and off again below a sixteenth.
    /// Collection moves every live value out of the oldest quarter of the blob files as
    /// compaction meets them, garbage beside it or not: for logs that are only appended (no
    /// retention, nothing dropped) that is pure copying, each log byte rewritten again and
    /// again as the store grows (a fifth of the CPU of 30M Nexmark bids through q1 at two
    /// workers). Looks at most once a second; the dataflow calls it at every checkpoint.
    pub fn tune_blob_gc(&self) -> Result<(), StateError> {
        let mut gc = self.blob_gc.lock().unwrap_or_else(|p| p.into_inner());
        if gc
            .last_checked
            .is_some_and(|at| at.elapsed() < BLOB_GC_CHECK_INTERVAL)
        {
            return Ok(());
        }
        gc.last_checked = Some(Instant::now());
        self.set_blob_gc_by_garbage(&mut gc)
    }

    fn set_blob_gc_by_garbage(&self, gc: &mut BlobGc) -> Result<(), StateError> {
        let property = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        let garbage = property("rocksdb.live-blob-file-garbage-size");
        let total = property("rocksdb.live-blob-file-size");
        let share = if gc.on { 16 } else { 8 };
        let want = garbage > 0 && garbage.saturating_mul(share) >= total;
        if want != gc.on {
            let value = if want { "true" } else { "false" };
            self.db
                .set_options(&[("enable_blob_garbage_collection", value)])?;
            gc.on = want;
        }
        Ok(())
    }

    /// Fails with [`StateError::DiskFull`] when a write now would (see the module docs), so a
    /// caller can keep what it was about to write for later.
    pub fn check_space(&self) -> Result<(), StateError> {
        self.space.check()
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.db.get(key)?)
    }

    /// Batched point lookups, one result per key in order.
    pub fn multi_get<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
    ) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        self.db
            .multi_get(keys.iter().map(|k| k.as_ref()))
            .into_iter()
            .map(|r| r.map_err(StateError::from))
            .collect()
    }

    /// RocksDB's estimate of the bytes of live data (after compaction), plus its blob files
    /// and what is in the memtables.
    pub fn live_data_bytes(&self) -> u64 {
        let property = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        property("rocksdb.estimate-live-data-size")
            + property("rocksdb.live-blob-file-size")
            + property("rocksdb.cur-size-all-mem-tables")
    }

    /// RocksDB's estimate of the bytes of sorted files holding keys in `ranges` (`[start,
    /// end)`); what is still in the memtable is not counted, nor values in blob files
    /// ([`BLOB_MIN_BYTES`]), of which the sorted files hold only a reference.
    pub fn approximate_size(&self, ranges: &[(Vec<u8>, Vec<u8>)]) -> u64 {
        let ranges: Vec<rocksdb::Range<'_>> = ranges
            .iter()
            .map(|(start, end)| rocksdb::Range::new(start, end))
            .collect();
        self.db.get_approximate_sizes(&ranges).iter().sum()
    }

    /// Every pair whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StateError> {
        self.scan_range(prefix, &prefix_end(prefix))
    }

    /// Every pair in `[start, end)`, in key order.
    pub fn scan_range(&self, start: &[u8], end: &[u8]) -> Result<Vec<KeyValue>, StateError> {
        let mut out = Vec::new();
        self.for_each_in_range(start, end, |k, v| {
            out.push((k.into(), v.into()));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Visits `[start, end)` in key order until `visit` returns false.
    pub fn for_each_in_range(
        &self,
        start: &[u8],
        end: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool, StateError>,
    ) -> Result<(), StateError> {
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(end.to_vec());
        let iter = self
            .db
            .iterator_opt(IteratorMode::From(start, Direction::Forward), read);
        for item in iter {
            let (k, v) = item?;
            if !visit(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    /// The last key in `[start, end)`, if any.
    pub fn last_key_in_range(
        &self,
        start: &[u8],
        end: &[u8],
    ) -> Result<Option<Box<[u8]>>, StateError> {
        let mut read = ReadOptions::default();
        read.set_iterate_lower_bound(start.to_vec());
        read.set_iterate_upper_bound(end.to_vec());
        let mut iter = self.db.raw_iterator_opt(read);
        iter.seek_to_last();
        if iter.valid() {
            Ok(iter.key().map(Box::from))
        } else {
            iter.status()?;
            Ok(None)
        }
    }

    /// Writes the memtables to files, so that opening the store again replays no log.
    pub fn flush(&self) -> Result<(), StateError> {
        self.db.flush()?;
        Ok(())
    }

    /// Applies `batch` atomically, unless the disk is full ([`StateError::DiskFull`]).
    pub fn write(&self, batch: WriteBatch) -> Result<(), StateError> {
        self.space.check()?;
        let mut opts = WriteOptions::default();
        opts.set_sync(self.sync_writes);
        self.db.write_opt(batch, &opts)?;
        Ok(())
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blob garbage collection is off while the blob files hold only live values, on once
    /// deletes left an eighth or more of their bytes garbage, and off again when that garbage
    /// is gone.
    #[test]
    fn blob_garbage_is_collected_only_while_there_is_some() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("a store");
        let value = vec![7u8; 2 * BLOB_MIN_BYTES as usize];
        let key = |i: u32| format!("k{i:03}").into_bytes();
        let mut batch = WriteBatch::default();
        for i in 0..16 {
            batch.put(key(i), &value);
        }
        store.write(batch).expect("written");
        store.flush().expect("flushed");
        let decide = || {
            let mut gc = store.blob_gc.lock().expect("not poisoned");
            store.set_blob_gc_by_garbage(&mut gc).expect("options set");
            gc.on
        };
        let garbage = || {
            store
                .db
                .property_int_value("rocksdb.live-blob-file-garbage-size")
                .expect("a property")
                .unwrap_or(0)
        };
        assert!(
            store
                .db
                .property_int_value("rocksdb.live-blob-file-size")
                .unwrap()
                > Some(0)
        );
        assert_eq!(garbage(), 0);
        assert!(!decide());
        // Half the values deleted: once compaction drops their keys, half the file is garbage.
        let mut batch = WriteBatch::default();
        batch.delete_range(key(0), key(8));
        store.write(batch).expect("written");
        store.flush().expect("flushed");
        store.db.compact_range(None::<&[u8]>, None::<&[u8]>);
        assert!(garbage() > 0);
        assert!(decide());
        // The rest deleted: the file is all garbage and goes, and collection stops.
        let mut batch = WriteBatch::default();
        batch.delete_range(key(8), key(16));
        store.write(batch).expect("written");
        store.flush().expect("flushed");
        store.db.compact_range(None::<&[u8]>, None::<&[u8]>);
        assert_eq!(garbage(), 0);
        assert!(!decide());
    }

    #[test]
    fn concatenated_batches_write_every_record_in_order() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("a store");
        let mut before = WriteBatch::default();
        before.put(b"d1", b"x");
        before.put(b"d2", b"x");
        store.write(before).expect("written");
        let mut first = WriteBatch::default();
        first.put(b"a", b"1");
        first.put(b"b", b"1");
        first.merge(b"m", 2i64.to_le_bytes());
        let mut second = WriteBatch::default();
        second.put(b"b", b"2");
        second.delete(b"d1");
        second.delete_range(b"d2", b"d3");
        second.put(b"c", b"2");
        second.merge(b"m", 3i64.to_le_bytes());
        let mut buffer = vec![7u8; 3];
        let joined = concat_batches(vec![WriteBatch::default(), first, second], &mut buffer)
            .expect("concatenated");
        assert_eq!(joined.len(), 8);
        store.write(joined).expect("written");
        let get = |k: &[u8]| store.get(k).expect("read");
        assert_eq!(get(b"a"), Some(b"1".to_vec()));
        assert_eq!(get(b"b"), Some(b"2".to_vec()), "a later batch's write wins");
        assert_eq!(get(b"c"), Some(b"2".to_vec()));
        assert_eq!((get(b"d1"), get(b"d2")), (None, None));
        assert_eq!(
            get(b"m"),
            Some(5i64.to_le_bytes().to_vec()),
            "merges of both batches"
        );
        assert!(concat_batches(Vec::new(), &mut buffer)
            .expect("empty")
            .is_empty());
    }
}
