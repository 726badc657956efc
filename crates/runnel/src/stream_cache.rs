//! Decoded stream logs for ad-hoc reads. A stream's log is append-only: an entry, once
//! written at a sequence number, never changes, and entries are written in sequence order,
//! each in one atomic write. So a scan only needs to decode the entries written since the
//! previous scan; the rest is kept here, already decoded and merged into batches of about
//! [`TARGET_BATCH_ROWS`] rows. RocksDB stays the truth: the cache holds copies of committed
//! entries only, and a stream it does not hold (over budget) is read from the store. When
//! retention trims a log (its start moves), its cached copy is decoded afresh. A generated
//! stream's log holds recipes, not rows: its archive (registered here when the stream is
//! created or restored) makes them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use runnel_common::{ChangeBatch, Result};
use runnel_plan::ObjectId;
use runnel_runtime::{read_stored_entries, LogArchive};
use runnel_state::Store;

/// Rows per merged batch handed to DataFusion.
pub const TARGET_BATCH_ROWS: usize = 8192;

/// The decoded log of one stream, up to (not including) `next_seq`.
#[derive(Default)]
struct CachedLog {
    /// Where the log started when this copy was read.
    log_start: u64,
    next_seq: u64,
    /// Merged batches; the last one may still grow.
    batches: Vec<RecordBatch>,
    bytes: usize,
}

/// Decoded stream logs, at most `budget_bytes` of Arrow memory in all.
pub struct StreamLogCache {
    logs: Mutex<HashMap<ObjectId, CachedLog>>,
    budget_bytes: usize,
    /// What makes the rows of streams whose log keeps recipes.
    archives: Mutex<HashMap<ObjectId, Arc<dyn LogArchive>>>,
}

impl StreamLogCache {
    pub fn new(budget_bytes: usize) -> Self {
        StreamLogCache {
            logs: Mutex::new(HashMap::new()),
            budget_bytes,
            archives: Mutex::new(HashMap::new()),
        }
    }

    /// Registers what makes the rows of stream `id`'s recipes (a generated stream).
    pub fn set_archive(&self, id: ObjectId, archive: Arc<dyn LogArchive>) {
        self.archives
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, archive);
    }

    /// What makes the rows of stream `id`'s recipes, if its log keeps any.
    pub fn archive(&self, id: ObjectId) -> Option<Arc<dyn LogArchive>> {
        self.archives
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Every row of stream `id` committed so far, in log order.
    pub fn read(
        &self,
        store: &Store,
        id: ObjectId,
        schema: &SchemaRef,
    ) -> Result<Vec<RecordBatch>> {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let log_start = runnel_state::log_index::log_start(store, id)?;
        let mut log = logs
            .remove(&id)
            .filter(|log| log.log_start == log_start)
            .unwrap_or_default();
        log.log_start = log_start;
        let used: usize = logs.values().map(|l| l.bytes).sum();
        // Decoding happens under the lock: concurrent scans of one stream would otherwise
        // decode the same new entries twice, and the work is bounded by what is new.
        let archive = self.archive(id);
        let new = read_entries(store, id, log.next_seq, schema, archive.as_deref())?;
        if let Some((last_seq, _)) = new.last() {
            log.next_seq = last_seq + 1;
        }
        append_merged(schema, &mut log.batches, new.into_iter().map(|(_, b)| b))?;
        log.bytes = log
            .batches
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum();
        let batches = log.batches.clone();
        if used + log.bytes <= self.budget_bytes {
            logs.insert(id, log);
        }
        Ok(batches)
    }

    /// Forgets a dropped stream.
    pub fn forget(&self, id: ObjectId) {
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        self.archives
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

/// Log entries of stream `id` from sequence number `from` on, without their weight column.
fn read_entries(
    store: &Store,
    id: ObjectId,
    from: u64,
    schema: &SchemaRef,
    archive: Option<&dyn LogArchive>,
) -> Result<Vec<(u64, RecordBatch)>> {
    // Stream entries are all inserts.
    let entries = read_log_changes(store, id, schema, from, u64::MAX, usize::MAX, archive)?;
    Ok(entries
        .into_iter()
        .map(|(seq, changes)| (seq, changes.data))
        .collect())
}

/// At most `limit` log entries of stream or table `id` in `[from, to)`, as changes of
/// `schema` (hidden Kafka columns are left out), in log order. `archive` makes the rows of
/// entries kept as recipes (a generated stream's).
pub fn read_log_changes(
    store: &Store,
    id: ObjectId,
    schema: &SchemaRef,
    from: u64,
    to: u64,
    limit: usize,
    archive: Option<&dyn LogArchive>,
) -> Result<Vec<(u64, ChangeBatch)>> {
    read_stored_entries(store, id, from, to, limit, usize::MAX, archive)?
        .into_iter()
        .map(|(seq, batch)| Ok((seq, ChangeBatch::from_stored(&batch, schema.clone())?)))
        .collect()
}

/// Appends `new` batches to `batches`, merging small ones so that batches hold about
/// [`TARGET_BATCH_ROWS`] rows (a stream log holds one entry per INSERT). Order is kept.
fn append_merged(
    schema: &SchemaRef,
    batches: &mut Vec<RecordBatch>,
    new: impl Iterator<Item = RecordBatch>,
) -> Result<()> {
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0;
    // The last batch, if not full, is merged again with what follows.
    if let Some(last) = batches.last() {
        if last.num_rows() < TARGET_BATCH_ROWS {
            pending_rows = last.num_rows();
            pending.extend(batches.pop());
        }
    }
    let flush = |pending: &mut Vec<RecordBatch>, batches: &mut Vec<RecordBatch>| -> Result<()> {
        match pending.len() {
            0 => {}
            1 => batches.extend(pending.pop()),
            _ => batches.push(concat_batches(schema, pending.iter())?),
        }
        pending.clear();
        Ok(())
    };
    for batch in new {
        if batch.num_rows() == 0 {
            continue;
        }
        if pending_rows + batch.num_rows() > TARGET_BATCH_ROWS {
            flush(&mut pending, batches)?;
            pending_rows = 0;
        }
        pending_rows += batch.num_rows();
        pending.push(batch);
    }
    flush(&mut pending, batches)
}
