//! Appending to source logs. Each stream and table has one writer that hands out sequence
//! numbers under a lock held until the write is committed, so entries become visible in
//! sequence order and the dataflow never skips one.

use std::sync::Arc;

use runnel_common::{ChangeBatch, Result, RunnelError};
use runnel_plan::ObjectId;
use runnel_state::{ipc, keys, Store, WriteBatch};

pub struct SourceWriter {
    id: ObjectId,
    /// The next sequence number; the lock also serialises a table's read-modify-write.
    next_seq: tokio::sync::Mutex<u64>,
}

impl SourceWriter {
    pub fn open(store: &Arc<Store>, id: ObjectId) -> Result<SourceWriter> {
        let prefix = keys::log_prefix(id);
        let last = store.last_key_in_range(&prefix, &keys::prefix_end(&prefix))?;
        let next = match last {
            Some(key) => {
                keys::log_entry_seq(&key)
                    .ok_or_else(|| RunnelError::internal("malformed log key"))?
                    + 1
            }
            None => 0,
        };
        Ok(SourceWriter {
            id,
            next_seq: tokio::sync::Mutex::new(next),
        })
    }

    /// Takes the writer's lock; while held, the caller may read the relation's current rows
    /// and then [`LockedWriter::commit`] changes computed from them.
    pub async fn lock(&self) -> LockedWriter<'_> {
        LockedWriter {
            id: self.id,
            next_seq: self.next_seq.lock().await,
        }
    }
}

pub struct LockedWriter<'a> {
    id: ObjectId,
    next_seq: tokio::sync::MutexGuard<'a, u64>,
}

impl LockedWriter<'_> {
    /// Appends `changes` to the log and applies `extra` (table rows) in one atomic write.
    pub fn commit(
        &mut self,
        store: &Store,
        changes: &[ChangeBatch],
        mut batch: WriteBatch,
    ) -> Result<()> {
        let mut seq = *self.next_seq;
        for change in changes {
            if change.is_empty() {
                continue;
            }
            let stored = change.to_stored()?;
            batch.put(keys::log_entry(self.id, seq), ipc::encode_batch(&stored)?);
            seq += 1;
        }
        store.write(batch)?;
        *self.next_seq = seq;
        Ok(())
    }
}
