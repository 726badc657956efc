//! What the store knows about each entry of a stream's log besides its rows (namespace 0x0A,
//! written in the same atomic write as the entry): when it was appended and how large it is,
//! which retention needs, and for a Kafka stream the recipe that rebuilds the entry from its
//! topic once retention has deleted it. The topic is the source of truth and the log a cache of
//! it: a view created later reads the deleted entries from the topic again, and gets exactly
//! the rows the entry held.
//!
//! A generated stream's (Nexmark's) entry holds no rows at all: its index keeps the recipe
//! that generates them again ([`GeneratedRecipe`]), and the log key only a marker
//! ([`recipe_marker`]) with the entry's row count, so that the log's sequence numbers, its end
//! and its trimming stay as they are. The rows are handed to the dataflow in memory when they
//! are made, and generated again by whoever reads the entry from the store.
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
    /// Generated streams: how to generate the entry's rows again (the log holds none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated: Option<GeneratedRecipe>,
}

/// The events one chunk of a generator produced, and what the stream's clock did with them:
/// generation is a pure function of the stream's options and the event numbers, so this
/// rebuilds the entry exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratedRecipe {
    /// The generator's output version the rows were made by: another version may make other
    /// rows from the same numbers, and then the entry cannot be rebuilt.
    pub version: u32,
    /// The range of the global event sequence the chunk spanned.
    pub from: u64,
    pub to: u64,
    /// Per partition, where the chunk's thread resumed it (`None`: another thread's).
    pub starts: Vec<Option<u64>>,
    /// The stream's event-time clock before the chunk (streams with a watermark).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_before: Option<WatermarkClock>,
    /// The watermark the entry carries (after the chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_after: Option<i64>,
}

/// What starts the log value of an entry whose rows are only a recipe. A stored batch starts
/// with an IPC message (its continuation marker `0xFFFFFFFF`, or its length), never with
/// these bytes.
const RECIPE_MARKER: &[u8; 8] = b"RNLRCPE1";

/// The log value of an entry of `rows` rows kept as a recipe in its index: the marker and the
/// row count (so counting a log's rows needs no index).
pub fn recipe_marker(rows: u64) -> Vec<u8> {
    let mut value = Vec::with_capacity(16);
    value.extend_from_slice(RECIPE_MARKER);
    value.extend_from_slice(&rows.to_le_bytes());
    value
}

/// The rows of a log value written by [`recipe_marker`]; `None` for a stored batch.
pub fn recipe_marker_rows(value: &[u8]) -> Option<u64> {
    let rest = value.strip_prefix(RECIPE_MARKER.as_slice())?;
    Some(u64::from_le_bytes(rest.try_into().ok()?))
}

/// The index of entry `seq` of `source`'s log, if it has one.
pub fn entry_index(
    store: &Store,
    source: ObjectId,
    seq: u64,
) -> Result<Option<EntryIndex>, StateError> {
    store
        .get(&keys::log_index(source, seq))?
        .map(|bytes| EntryIndex::decode(&bytes))
        .transpose()
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
    /// The watermark a recipe says the entry carries (`None` without a recipe or a clock).
    pub fn watermark_after(&self) -> Option<i64> {
        match (&self.kafka, &self.generated) {
            (Some(kafka), _) => kafka.watermark_after,
            (None, Some(generated)) => generated.watermark_after,
            (None, None) => None,
        }
    }

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
            generated: None,
        };
        assert_eq!(EntryIndex::decode(&index.encode().unwrap()).unwrap(), index);
        let generated = EntryIndex {
            kafka: None,
            generated: Some(GeneratedRecipe {
                version: 1,
                from: 100,
                to: 150,
                starts: vec![Some(100), None, Some(120)],
                clock_before: None,
                watermark_after: Some(7),
            }),
            ..index
        };
        let decoded = EntryIndex::decode(&generated.encode().unwrap()).unwrap();
        assert_eq!(decoded, generated);
        assert_eq!(decoded.watermark_after(), Some(7));
    }

    #[test]
    fn a_recipe_marker_is_never_a_stored_batch() {
        assert_eq!(recipe_marker_rows(&recipe_marker(16_384)), Some(16_384));
        let schema = std::sync::Arc::new(datafusion::arrow::datatypes::Schema::empty());
        let empty = datafusion::arrow::record_batch::RecordBatch::new_empty(schema);
        let stored = crate::ipc::encode_batch(&empty).unwrap();
        assert_eq!(recipe_marker_rows(&stored), None);
        assert_eq!(recipe_marker_rows(&recipe_marker(3)[..12]), None);
    }
}
