//! JSON encoding of rows for sinks: one JSON object per row, NULL as JSON null, timestamps
//! as RFC 3339 strings (Arrow's JSON writer).

use datafusion::arrow::json::writer::{LineDelimited, WriterBuilder};
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{ConnectorError, Result};

/// Each row of `batch` as the bytes of one JSON object.
pub fn rows_as_json(batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    let mut buf = Vec::with_capacity(batch.num_rows() * 64);
    {
        let mut writer = WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, LineDelimited>(&mut buf);
        writer
            .write(batch)
            .map_err(|e| ConnectorError::Internal(format!("JSON encoding failed: {e}")))?;
        writer
            .finish()
            .map_err(|e| ConnectorError::Internal(format!("JSON encoding failed: {e}")))?;
    }
    let rows: Vec<Vec<u8>> = buf
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    if rows.len() != batch.num_rows() {
        return Err(ConnectorError::Internal(format!(
            "JSON encoding gave {} lines for {} rows",
            rows.len(),
            batch.num_rows()
        )));
    }
    Ok(rows)
}

/// `object` (a JSON object's bytes) with one more string field appended.
pub fn with_field(object: &[u8], name: &str, value: &str) -> Vec<u8> {
    let body = object.strip_suffix(b"}").unwrap_or(object);
    let mut out = Vec::with_capacity(object.len() + name.len() + value.len() + 8);
    out.extend_from_slice(body);
    if body.len() > 1 {
        out.push(b',');
    }
    out.extend_from_slice(serde_json::to_string(name).unwrap_or_default().as_bytes());
    out.push(b':');
    out.extend_from_slice(serde_json::to_string(value).unwrap_or_default().as_bytes());
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn rows_and_op_field() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(1), None])),
            Arc::new(StringArray::from(vec![Some("a\"b"), Some("c")])),
        ];
        let batch = RecordBatch::try_new(schema, cols).unwrap();
        let rows = rows_as_json(&batch).unwrap();
        let first: serde_json::Value = serde_json::from_slice(&rows[0]).unwrap();
        assert_eq!(first, serde_json::json!({"k": 1, "s": "a\"b"}));
        let second: serde_json::Value =
            serde_json::from_slice(&with_field(&rows[1], "_op", "delete")).unwrap();
        assert_eq!(
            second,
            serde_json::json!({"k": null, "s": "c", "_op": "delete"})
        );
    }
}
