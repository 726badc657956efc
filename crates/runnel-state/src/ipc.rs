//! Arrow IPC framing for batches kept in source logs.

use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::ipc::reader::StreamDecoder;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::StateError;

pub fn encode_batch(batch: &RecordBatch) -> Result<Vec<u8>, StateError> {
    // The rows' own bytes: a slice of a larger batch would report the whole batch's buffers.
    let bytes: usize = batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
        .sum();
    let mut buf = Vec::with_capacity(bytes + 512);
    {
        let mut writer = StreamWriter::try_new(&mut buf, &batch.schema())?;
        writer.write(batch)?;
        writer.finish()?;
    }
    Ok(buf)
}

/// The batch `bytes` holds. The bytes are copied once into an Arrow buffer, which the arrays
/// then point into (a stream reader zeroes a buffer per message and copies into it).
pub fn decode_batch(bytes: &[u8]) -> Result<RecordBatch, StateError> {
    let mut buffer = Buffer::from_vec(bytes.to_vec());
    let mut decoder = StreamDecoder::new();
    while !buffer.is_empty() {
        if let Some(batch) = decoder.decode(&mut buffer)? {
            return Ok(batch);
        }
    }
    Err(StateError::Corrupt("log entry holds no batch".into()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn a_batch_comes_back_as_encoded_with_its_metadata() {
        let schema = Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ])
        .with_metadata(HashMap::from([("watermark".to_string(), "42".to_string())]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
            Arc::new(StringArray::from(vec![Some("a"), Some("bb"), None])),
        ];
        let batch = RecordBatch::try_new(Arc::new(schema), columns).expect("a batch");
        let encoded = encode_batch(&batch).expect("encoded");
        // At an odd address too (a value read from the store has no alignment).
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&encoded);
        for bytes in [&encoded[..], &shifted[1..]] {
            let decoded = decode_batch(bytes).expect("decoded");
            assert_eq!(decoded, batch);
            assert_eq!(decoded.schema().metadata(), batch.schema().metadata());
        }
        let empty = RecordBatch::new_empty(batch.schema());
        assert_eq!(
            decode_batch(&encode_batch(&empty).expect("encoded")).expect("decoded"),
            empty
        );
        assert!(decode_batch(&[]).is_err());
    }
}
