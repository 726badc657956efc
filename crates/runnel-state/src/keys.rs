//! The key layout of Runnel's single RocksDB keyspace. Every key starts with a one-byte
//! namespace, then big-endian ids, so each object's data is one contiguous, prefix-scannable
//! range and dropping an object is a handful of range deletes.
//!
//! | namespace | key                                   | value                                  |
//! |-----------|---------------------------------------|----------------------------------------|
//! | 0x01      | object id                             | catalog entry (JSON)                   |
//! | 0x02      | name                                  | metadata (next object id, ...)         |
//! | 0x03      | source id, sequence number (u64)      | one change batch (Arrow IPC)           |
//! | 0x04      | source id                             | next sequence number the dataflow reads|
//! | 0x05      | table id, encoded primary key         | the row (codec-encoded)                |
//! | 0x06      | view id, encoded row                  | multiplicity (i64, little endian)      |
//! | 0x07      | view id, node id (u32), operator key  | operator state                         |
//! | 0x08      | source id, Kafka partition (u32)      | next offset to ingest (i64, LE)        |
//! | 0x09      | source id                             | the stream's event-time clock (JSON)   |
//! | 0x0A      | source id, sequence number (u64)      | a stream log entry's index (`log_index`)|
//! | 0x0B      | source id                             | first sequence number the log holds    |

use runnel_plan::ObjectId;

pub const CATALOG: u8 = 0x01;
pub const META: u8 = 0x02;
pub const LOG: u8 = 0x03;
pub const POSITION: u8 = 0x04;
pub const TABLE_ROW: u8 = 0x05;
pub const VIEW_ROW: u8 = 0x06;
pub const OPERATOR: u8 = 0x07;
pub const KAFKA_OFFSET: u8 = 0x08;
pub const WATERMARK_CLOCK: u8 = 0x09;
pub const LOG_INDEX: u8 = 0x0A;
pub const LOG_START: u8 = 0x0B;

fn with_id(namespace: u8, id: ObjectId) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    key.push(namespace);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

pub fn catalog_prefix() -> Vec<u8> {
    vec![CATALOG]
}

pub fn catalog_entry(id: ObjectId) -> Vec<u8> {
    with_id(CATALOG, id)
}

pub fn meta(name: &str) -> Vec<u8> {
    let mut key = vec![META];
    key.extend_from_slice(name.as_bytes());
    key
}

pub fn log_prefix(source: ObjectId) -> Vec<u8> {
    with_id(LOG, source)
}

pub fn log_entry(source: ObjectId, seq: u64) -> Vec<u8> {
    let mut key = log_prefix(source);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The sequence number of a log entry key.
pub fn log_entry_seq(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(5..13)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

pub fn log_index_prefix(source: ObjectId) -> Vec<u8> {
    with_id(LOG_INDEX, source)
}

/// The index entry of log entry `seq` (same sequence layout as [`log_entry`]).
pub fn log_index(source: ObjectId, seq: u64) -> Vec<u8> {
    let mut key = log_index_prefix(source);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Where a log trimmed by retention starts (absent: at 0).
pub fn log_start(source: ObjectId) -> Vec<u8> {
    with_id(LOG_START, source)
}

pub fn position(source: ObjectId) -> Vec<u8> {
    with_id(POSITION, source)
}

pub fn table_prefix(table: ObjectId) -> Vec<u8> {
    with_id(TABLE_ROW, table)
}

pub fn view_prefix(view: ObjectId) -> Vec<u8> {
    with_id(VIEW_ROW, view)
}

pub fn view_operators_prefix(view: ObjectId) -> Vec<u8> {
    with_id(OPERATOR, view)
}

pub fn operator_prefix(view: ObjectId, node: u32) -> Vec<u8> {
    let mut key = view_operators_prefix(view);
    key.extend_from_slice(&node.to_be_bytes());
    key
}

pub fn kafka_offsets_prefix(source: ObjectId) -> Vec<u8> {
    with_id(KAFKA_OFFSET, source)
}

pub fn kafka_offset(source: ObjectId, partition: i32) -> Vec<u8> {
    let mut key = kafka_offsets_prefix(source);
    key.extend_from_slice(&(partition as u32).to_be_bytes());
    key
}

/// The partition of a [`kafka_offset`] key.
pub fn kafka_offset_partition(key: &[u8]) -> Option<i32> {
    let bytes: [u8; 4] = key.get(5..9)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes) as i32)
}

pub fn watermark_clock(source: ObjectId) -> Vec<u8> {
    with_id(WATERMARK_CLOCK, source)
}

/// Order-preserving bytes of a signed integer inside an operator key (big endian with the
/// sign bit flipped, so byte order is numeric order).
pub fn ordered_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

/// Inverse of [`ordered_i64`].
pub fn ordered_i64_from(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

/// Appends a length-prefixed part (u32 big-endian length, then the bytes) to an operator key,
/// so that variable-length parts can be split apart again with [`take_sized`].
pub fn push_sized(key: &mut Vec<u8>, part: &[u8]) {
    key.extend_from_slice(&(part.len() as u32).to_be_bytes());
    key.extend_from_slice(part);
}

/// Splits a [`push_sized`] part off the front of `rest`; `None` when `rest` is too short.
pub fn take_sized<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, tail) = rest.split_first_chunk::<4>()?;
    let (part, tail) = tail.split_at_checked(u32::from_be_bytes(*len) as usize)?;
    *rest = tail;
    Some(part)
}

/// The prefix of one of an operator's state tables: the operator's prefix and a tag byte
/// (an aggregate's groups and its window index, a join's two sides and their indexes, ...).
pub fn sub_table(prefix: &[u8], tag: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 1);
    out.extend_from_slice(prefix);
    out.push(tag);
    out
}

/// The smallest key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only an all-0xff prefix gets here; namespaces never are.
    vec![0xff; prefix.len() + 1]
}

/// Every key range an object owns, for DROP.
pub fn object_ranges(id: ObjectId) -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        catalog_entry(id),
        log_prefix(id),
        position(id),
        table_prefix(id),
        view_prefix(id),
        view_operators_prefix(id),
        kafka_offsets_prefix(id),
        watermark_clock(id),
        log_index_prefix(id),
        log_start(id),
    ]
    .into_iter()
    .map(|p| {
        let end = prefix_end(&p);
        (p, end)
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_i64_sorts_numerically_and_round_trips() {
        let values = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        for pair in values.windows(2) {
            assert!(ordered_i64(pair[0]) < ordered_i64(pair[1]));
        }
        for v in values {
            assert_eq!(ordered_i64_from(ordered_i64(v)), v);
        }
    }

    #[test]
    fn sized_parts_split_back() {
        let mut key = Vec::new();
        push_sized(&mut key, b"ab");
        push_sized(&mut key, b"");
        key.extend_from_slice(b"rest");
        let mut rest = &key[..];
        assert_eq!(take_sized(&mut rest), Some(&b"ab"[..]));
        assert_eq!(take_sized(&mut rest), Some(&b""[..]));
        assert_eq!(rest, b"rest");
        let mut short = &[0u8, 0, 0, 9, 1][..];
        assert_eq!(take_sized(&mut short), None);
    }
}
