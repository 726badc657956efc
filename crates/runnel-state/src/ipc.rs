//! Arrow IPC framing for batches kept in source logs.

use std::io::Cursor;

use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::StateError;

pub fn encode_batch(batch: &RecordBatch) -> Result<Vec<u8>, StateError> {
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() + 512);
    {
        let mut writer = StreamWriter::try_new(&mut buf, &batch.schema())?;
        writer.write(batch)?;
        writer.finish()?;
    }
    Ok(buf)
}

pub fn decode_batch(bytes: &[u8]) -> Result<RecordBatch, StateError> {
    let mut reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    match reader.next() {
        Some(batch) => Ok(batch?),
        None => Err(StateError::Corrupt("log entry holds no batch".into())),
    }
}
