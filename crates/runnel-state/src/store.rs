//! The RocksDB store: one instance per node, shared by the catalog, source logs, table rows,
//! view contents and operator state. Reads are point/multi gets and prefix scans; every
//! mutation is a `WriteBatch`, so a checkpoint is one atomic write.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{Direction, IteratorMode, Options, ReadOptions, WriteOptions, DB};

pub use rocksdb::WriteBatch;

use crate::error::StateError;
use crate::keys::prefix_end;

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
}

pub struct Store {
    db: DB,
    sync_writes: bool,
}

/// A key/value pair read from the store.
pub type KeyValue = (Box<[u8]>, Box<[u8]>);

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
        opts.set_merge_operator_associative(ADD_I64, add_i64);
        let db = DB::open(&opts, path)?;
        Ok(Arc::new(Store {
            db,
            sync_writes: options.sync_writes,
        }))
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

    /// RocksDB's estimate of the bytes of live data (after compaction), plus what is in the
    /// memtables.
    pub fn live_data_bytes(&self) -> u64 {
        let property = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        property("rocksdb.estimate-live-data-size") + property("rocksdb.cur-size-all-mem-tables")
    }

    /// RocksDB's estimate of the bytes of files holding keys in `ranges` (`[start, end)`);
    /// what is still in the memtable is not counted.
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

    /// Applies `batch` atomically.
    pub fn write(&self, batch: WriteBatch) -> Result<(), StateError> {
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
