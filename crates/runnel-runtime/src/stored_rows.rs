//! Row counts of stored Arrow IPC batches (source-log entries, blocks of appended views),
//! read from the batch's message header without decoding its columns: a backfill's total and
//! a view's row count at restore must not cost a second pass over the data. A generated
//! stream's entry, kept as a recipe, stores its count in its marker (`log_index`).

use datafusion::arrow::ipc::root_as_message;
use runnel_common::Result;
use runnel_state::{ipc, Store};

/// The sum of `count(value)` over the stored values in `[start, end)`, stopping at the first
/// value it fails on.
pub fn sum_stored(
    store: &Store,
    start: &[u8],
    end: &[u8],
    mut count: impl FnMut(&[u8]) -> Result<i64>,
) -> Result<i64> {
    let mut total = 0i64;
    let mut failed = None;
    store.for_each_in_range(start, end, |_, value| match count(value) {
        Ok(n) => {
            total += n;
            Ok(true)
        }
        Err(err) => {
            failed = Some(err);
            Ok(false)
        }
    })?;
    match failed {
        Some(err) => Err(err),
        None => Ok(total),
    }
}

/// The rows of a batch framed by [`runnel_state::ipc::encode_batch`] (an IPC stream: a schema
/// message, then the record batch message). Falls back to decoding the batch when the header
/// cannot be read, so a framing this reader does not know costs time, never a wrong count.
pub fn stored_batch_rows(bytes: &[u8]) -> Result<u64> {
    if let Some(rows) = runnel_state::log_index::recipe_marker_rows(bytes) {
        return Ok(rows);
    }
    match header_rows(bytes) {
        Some(rows) => Ok(rows),
        None => Ok(ipc::decode_batch(bytes)?.num_rows() as u64),
    }
}

/// Walks the stream's messages (each: an optional 0xFFFFFFFF continuation marker, the
/// metadata length, the flatbuffer metadata, the body) up to the first record batch.
fn header_rows(bytes: &[u8]) -> Option<u64> {
    let mut rest = bytes;
    loop {
        let (mut length, mut tail) = read_i32(rest)?;
        if length == -1 {
            (length, tail) = read_i32(tail)?;
        }
        let length = usize::try_from(length).ok().filter(|&l| l > 0)?;
        let message = root_as_message(tail.get(..length)?).ok()?;
        if let Some(batch) = message.header_as_record_batch() {
            return u64::try_from(batch.length()).ok();
        }
        let body = usize::try_from(message.bodyLength()).ok()?;
        rest = tail.get(length.checked_add(body)?..)?;
    }
}

fn read_i32(bytes: &[u8]) -> Option<(i32, &[u8])> {
    let (head, tail) = bytes.split_first_chunk::<4>()?;
    Some((i32::from_le_bytes(*head), tail))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;

    use super::*;

    #[test]
    fn counts_rows_from_the_header() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Utf8, true),
        ]));
        for n in [0usize, 1, 3, 70_000] {
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(0..n as i64)),
                    Arc::new(StringArray::from_iter_values((0..n).map(|i| i.to_string()))),
                ],
            )
            .unwrap();
            let bytes = ipc::encode_batch(&batch).unwrap();
            assert_eq!(header_rows(&bytes), Some(n as u64));
            assert_eq!(stored_batch_rows(&bytes).unwrap(), n as u64);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_count() {
        assert_eq!(header_rows(b"not arrow"), None);
        assert!(stored_batch_rows(b"not arrow").is_err());
    }
}
