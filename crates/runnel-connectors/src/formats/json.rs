//! JSON record values: one object per record, fields matched to columns by name.

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::record_batch::RecordBatch;

/// Decodes the records as newline-separated JSON in one pass.
///
/// Each record must be exactly one JSON value: a record cut short that the next one would
/// complete, or one holding two values, fails the chunk (which is then decoded one record at a
/// time) instead of lending rows to or borrowing them from its neighbours.
pub fn decode(schema: &SchemaRef, payloads: &[&[u8]]) -> Result<RecordBatch, String> {
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(payloads.len().max(1) + 1)
        .build_decoder()
        .map_err(|e| e.to_string())?;
    for (i, p) in payloads.iter().enumerate() {
        for part in [*p, b"\n"] {
            let mut rest = part;
            while !rest.is_empty() {
                let used = decoder.decode(rest).map_err(|e| e.to_string())?;
                if used == 0 {
                    return Err("JSON decoder made no progress".into());
                }
                rest = &rest[used..];
            }
        }
        if decoder.has_partial_record() || decoder.len() != i + 1 {
            return Err("expected exactly one JSON value in the record".into());
        }
    }
    Ok(decoder
        .flush()
        .map_err(|e| e.to_string())?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone())))
}

/// Decodes one record with every column of `text_schema` (all `Utf8`) taking a JSON scalar's
/// text as written (numbers included), for checks that must see the digits before Arrow
/// parses them.
pub fn decode_as_text(text_schema: &SchemaRef, payload: &[u8]) -> Result<RecordBatch, String> {
    let mut decoder = ReaderBuilder::new(text_schema.clone())
        .with_coerce_primitive(true)
        .build_decoder()
        .map_err(|e| e.to_string())?;
    let mut rest = payload;
    while !rest.is_empty() {
        let used = decoder.decode(rest).map_err(|e| e.to_string())?;
        if used == 0 {
            return Err("JSON decoder made no progress".into());
        }
        rest = &rest[used..];
    }
    Ok(decoder
        .flush()
        .map_err(|e| e.to_string())?
        .unwrap_or_else(|| RecordBatch::new_empty(text_schema.clone())))
}

/// Rewrites one record so that each JSON-typed column's value, whatever its JSON type, is a
/// string holding its JSON text (the form Runnel stores JSON columns in).
pub fn nested_as_text(
    bytes: &[u8],
    schema: &Schema,
    json_columns: &[usize],
) -> Result<Vec<u8>, String> {
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("malformed JSON: {e}"))?;
    let Some(object) = value.as_object_mut() else {
        return Err("expected a JSON object".into());
    };
    for &c in json_columns {
        let name = schema.field(c).name();
        if let Some(v) = object.get_mut(name) {
            if !v.is_null() {
                *v = serde_json::Value::String(v.to_string());
            }
        }
    }
    serde_json::to_vec(&value).map_err(|e| e.to_string())
}
