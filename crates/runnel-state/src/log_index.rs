//! What the store knows about each entry of a stream's log besides its rows (namespace 0x0A,
//! written in the same atomic write as the entry): when it was appended and how large it is,
//! which retention needs, and for a Kafka stream the recipe that rebuilds the entry from its
//! topic once retention has deleted it. The topic is the source of truth and the log a cache of
//! it: a view created later reads the deleted entries from the topic again, and gets exactly
//! the rows the entry held.
//!
//! Where a trimmed log starts is stored apart (`keys::log_start`), so that sequence numbers
//! keep growing after every entry was deleted.

use std::collections::BTreeMap;

use runnel_common::WatermarkClock;
use runnel_plan::ObjectId;
use serde::{Deserialize, Serialize};

use crate::error::StateError;
use crate::keys;
use crate::store::{Store, BLOB_MIN_BYTES};

/// The index of one log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryIndex {
    /// When the entry was appended, in microseconds since the Unix epoch.
    pub appended_at: i64,
    /// The entry's stored size.
    pub bytes: u64,
    pub rows: u64,
    /// Kafka streams: how to read the entry again from the topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaRecipe>,
}

/// The records one Kafka chunk committed, and what the stream's clock did with them: enough to
/// rebuild the entry byte for byte from the topic (decoding is deterministic, and the clock is
/// run again from its state before the chunk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct KafkaRecipe {
    /// Per partition, the offsets of the chunk's first and last record.
    pub partitions: BTreeMap<i32, (i64, i64)>,
    /// The order the records came in: runs of (partition, number of records).
    pub runs: Vec<(i32, u32)>,
    /// The stream's event-time clock before the chunk (streams with a watermark).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_before: Option<WatermarkClock>,
    /// The watermark the entry carries (after the chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_after: Option<i64>,
}

impl KafkaRecipe {
    /// The recipe of records that came in this order (partition and offset of each).
    pub fn of_records(records: impl IntoIterator<Item = (i32, i64)>) -> KafkaRecipe {
        let mut recipe = KafkaRecipe::default();
        for (partition, offset) in records {
            recipe
                .partitions
                .entry(partition)
                .and_modify(|(_, last)| *last = offset)
                .or_insert((offset, offset));
            match recipe.runs.last_mut() {
                Some((p, n)) if *p == partition => *n += 1,
                _ => recipe.runs.push((partition, 1)),
            }
        }
        recipe
    }

    /// Records the chunk read, in all.
    pub fn records(&self) -> u64 {
        self.runs.iter().map(|(_, n)| u64::from(*n)).sum()
    }
}

impl EntryIndex {
    pub fn encode(&self) -> Result<Vec<u8>, StateError> {
        serde_json::to_vec(self).map_err(|e| StateError::Corrupt(format!("log index: {e}")))
    }

    pub fn decode(bytes: &[u8]) -> Result<EntryIndex, StateError> {
        serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt(format!("log index: {e}")))
    }
}

/// The first sequence number `source`'s log still holds (0 unless retention trimmed it).
pub fn log_start(store: &Store, source: ObjectId) -> Result<u64, StateError> {
    match store.get(&keys::log_start(source))? {
        None => Ok(0),
        Some(bytes) => {
            let bytes: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| StateError::Corrupt("log start is not 8 bytes".into()))?;
            Ok(u64::from_le_bytes(bytes))
        }
    }
}

/// One past the last sequence number `source`'s log ever had: the next entry's number.
pub fn log_end(store: &Store, source: ObjectId) -> Result<u64, StateError> {
    let prefix = keys::log_prefix(source);
    let last = store.last_key_in_range(&prefix, &keys::prefix_end(&prefix))?;
    let after_last = match last {
        None => 0,
        Some(key) => {
            keys::log_entry_seq(&key).ok_or_else(|| StateError::Corrupt("bad log key".into()))? + 1
        }
    };
    // Every entry may have been trimmed: numbering goes on from where the log starts.
    Ok(after_last.max(log_start(store, source)?))
}

/// The bytes of `source`'s log entries that live in the store's blob files (the entries of at
/// least [`BLOB_MIN_BYTES`]), from their indexes: the sorted files' size estimates hold only a
/// reference to each. Entries without an index (a log written before every log was indexed)
/// are not counted.
pub fn bytes_in_blob_files(store: &Store, source: ObjectId) -> Result<u64, StateError> {
    let mut bytes = 0u64;
    for_each_index(
        store,
        source,
        log_start(store, source)?,
        u64::MAX,
        |_, index| {
            if index.bytes >= BLOB_MIN_BYTES {
                bytes += index.bytes;
            }
            Ok(true)
        },
    )?;
    Ok(bytes)
}

/// The index entries of `source`'s log entries `[from, to)`, in sequence order, calling `each`
/// until it returns false.
pub fn for_each_index(
    store: &Store,
    source: ObjectId,
    from: u64,
    to: u64,
    mut each: impl FnMut(u64, EntryIndex) -> Result<bool, StateError>,
) -> Result<(), StateError> {
    let start = keys::log_index(source, from);
    let end = match to {
        u64::MAX => keys::prefix_end(&keys::log_index_prefix(source)),
        to => keys::log_index(source, to),
    };
    store.for_each_in_range(&start, &end, |key, value| {
        let seq = keys::log_entry_seq(key)
            .ok_or_else(|| StateError::Corrupt("bad log index key".into()))?;
        each(seq, EntryIndex::decode(value)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_keeps_the_order_records_came_in() {
        let recipe = KafkaRecipe::of_records([(0, 10), (0, 11), (1, 5), (0, 12), (1, 7)]);
        assert_eq!(recipe.runs, vec![(0, 2), (1, 1), (0, 1), (1, 1)]);
        assert_eq!(recipe.partitions[&0], (10, 12));
        assert_eq!(recipe.partitions[&1], (5, 7));
        assert_eq!(recipe.records(), 5);
    }

    #[test]
    fn index_round_trips() {
        let index = EntryIndex {
            appended_at: 1_700_000_000_000_000,
            bytes: 4096,
            rows: 3,
            kafka: Some(KafkaRecipe::of_records([(2, 40), (2, 41), (2, 43)])),
        };
        assert_eq!(EntryIndex::decode(&index.encode().unwrap()).unwrap(), index);
    }
}
