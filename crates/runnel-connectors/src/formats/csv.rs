//! CSV record values: one line per record, fields in the relation's declared column order.

use datafusion::arrow::csv::ReaderBuilder;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

/// Decodes the records as the lines of one CSV document (no header) in one pass.
///
/// Each record must be exactly one CSV row: a record with a line break outside quotes, or an
/// unterminated quote that the next record would close, fails the chunk (which is then decoded
/// one record at a time) instead of lending rows to or borrowing them from its neighbours.
///
/// Each record must also be UTF-8 as a whole. arrow-csv checks only that the concatenation of
/// a batch's fields is, then cuts the fields out unchecked, so a field ending inside a
/// character that the next field (or record) finishes would become a `str` that is not UTF-8.
/// Delimiters, quotes and line breaks are ASCII, which no character's encoding contains, so a
/// UTF-8 record has only UTF-8 fields.
pub fn decode(schema: &SchemaRef, payloads: &[&[u8]]) -> Result<RecordBatch, String> {
    let batch_size = payloads.len().max(1) + 1;
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_header(false)
        .with_batch_size(batch_size)
        .build_decoder();
    for (i, p) in payloads.iter().enumerate() {
        let line = p.strip_suffix(b"\n").unwrap_or(p);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !is_one_row(line) {
            return Err(
                "a CSV record must be one row: it has a line break outside quotes, or a quote \
                 that is never closed"
                    .into(),
            );
        }
        if let Err(e) = std::str::from_utf8(line) {
            return Err(format!(
                "invalid byte sequence for encoding \"UTF8\" at byte {} of the record",
                e.valid_up_to()
            ));
        }
        for part in [line, b"\n"] {
            let mut rest = part;
            while !rest.is_empty() {
                let used = decoder.decode(rest).map_err(|e| e.to_string())?;
                if used == 0 {
                    return Err("CSV decoder made no progress".into());
                }
                rest = &rest[used..];
            }
        }
        let found = batch_size - decoder.capacity() - i;
        if found != 1 {
            return Err(format!(
                "expected exactly one CSV row in the record, found {found}"
            ));
        }
    }
    // An empty buffer tells the decoder the input is complete.
    decoder.decode(&[]).map_err(|e| e.to_string())?;
    Ok(decoder
        .flush()
        .map_err(|e| e.to_string())?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone())))
}

/// Whether `line` is one CSV row and no more, read as arrow-csv's reader (csv-core with a `"`
/// quote, doubled quotes inside quotes, no escape character) reads it: no line break outside
/// quotes, and no quoted field left open. Counting the decoder's rows after each record cannot
/// tell: a record that ends one row and opens a quote still adds exactly one, and the next
/// record then closes the quote it opened.
fn is_one_row(line: &[u8]) -> bool {
    #[derive(Clone, Copy)]
    enum State {
        FieldStart,
        Unquoted,
        Quoted,
        QuoteInQuoted,
    }
    let mut state = State::FieldStart;
    for &b in line {
        state = match (state, b) {
            (State::Quoted, b'"') => State::QuoteInQuoted,
            (State::Quoted, _) => State::Quoted,
            (_, b'\n' | b'\r') => return false,
            (_, b',') => State::FieldStart,
            (State::FieldStart, b'"') | (State::QuoteInQuoted, b'"') => State::Quoted,
            _ => State::Unquoted,
        };
    }
    !matches!(state, State::Quoted)
}
