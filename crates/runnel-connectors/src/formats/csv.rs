//! CSV record values: one line per record, fields in the relation's declared column order.

use datafusion::arrow::csv::ReaderBuilder;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

/// Decodes the records as the lines of one CSV document (no header) in one pass.
pub fn decode(schema: &SchemaRef, payloads: &[&[u8]]) -> Result<RecordBatch, String> {
    let total: usize = payloads.iter().map(|p| p.len() + 1).sum();
    let mut buf = Vec::with_capacity(total);
    for p in payloads {
        let line = p.strip_suffix(b"\n").unwrap_or(p);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        buf.extend_from_slice(line);
        buf.push(b'\n');
    }
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_header(false)
        .with_batch_size(payloads.len().max(1) + 1)
        .build_decoder();
    let mut rest = &buf[..];
    while !rest.is_empty() {
        let used = decoder.decode(rest).map_err(|e| e.to_string())?;
        if used == 0 {
            break;
        }
        rest = &rest[used..];
    }
    // An empty buffer tells the decoder the input is complete.
    decoder.decode(&[]).map_err(|e| e.to_string())?;
    Ok(decoder
        .flush()
        .map_err(|e| e.to_string())?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone())))
}
