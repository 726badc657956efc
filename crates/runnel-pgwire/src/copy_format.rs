//! The data formats of COPY: `COPY ... TO STDOUT` rows written in text, CSV or binary
//! ([`CopyEncoder`]), and `COPY ... FROM STDIN` text and CSV decoded into Arrow string
//! columns (one per copied column, NULLs included). Turning the strings into the target
//! columns' types is the database's business; this module only knows how Postgres frames
//! rows and fields, so its output is what a Postgres server would have read from the same
//! bytes:
//!
//! - **text**: one row per line (`\n`, `\r\n` or `\r`), fields split by the delimiter (tab),
//!   backslash escapes (`\t \n \r \b \f \v \\`, octal `\NNN`, hex `\xHH`, `\<any>` = that
//!   byte), and the NULL string (`\N`) compared with the field *before* unescaping, so `\\N`
//!   is the two-character text `\N`.
//! - **CSV**: fields split by the delimiter (`,`), quoted with `"` (a quoted field may hold
//!   delimiters and line breaks; the escape character, by default the quote, before a quote
//!   stands for a quote), an *unquoted* field equal to the NULL string (empty) is NULL and a
//!   quoted one never is, so `""` is the empty string.
//! - either: an optional header line that is skipped, and the end-of-data marker `\.` alone on
//!   a line, after which nothing is read.
//!
//! Data arrives in chunks that may split a row (or a multi-byte character) anywhere; a row is
//! decoded once all of it is there.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;

use crate::error::PgError;

/// How the copied data is framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    pub csv: bool,
    pub header: bool,
    pub delimiter: u8,
    /// CSV only.
    pub quote: u8,
    /// CSV only: the byte that, before a quote inside a quoted field, makes it literal.
    pub escape: u8,
    /// The text that stands for NULL.
    pub null: Vec<u8>,
}

impl CopyFormat {
    /// Postgres's defaults for text format.
    pub fn text() -> Self {
        CopyFormat {
            csv: false,
            header: false,
            delimiter: b'\t',
            quote: b'"',
            escape: b'"',
            null: b"\\N".to_vec(),
        }
    }

    /// Postgres's defaults for CSV format.
    pub fn csv() -> Self {
        CopyFormat {
            csv: true,
            delimiter: b',',
            null: Vec::new(),
            ..CopyFormat::text()
        }
    }
}

/// What `COPY ... TO STDOUT` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyOutFormat {
    /// Text or CSV, as framed by the [`CopyFormat`].
    Text(CopyFormat),
    /// Postgres's binary COPY format (`PGCOPY` header, length-prefixed binary values).
    Binary,
}

/// Writes result batches as COPY data: each value in its Postgres text (or binary) form,
/// framed and escaped as Postgres's COPY TO writes it, so `COPY ... FROM` (Runnel's or
/// Postgres's) reads back the same values.
pub struct CopyEncoder {
    format: CopyOutFormat,
    encoder: crate::types::RowEncoder,
    started: bool,
}

/// The signature that opens binary COPY data, with its flags and header-extension length.
const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

impl CopyEncoder {
    /// An encoder of `format` writing text values in `style` (the session's DateStyle,
    /// IntervalStyle and extra_float_digits, which Postgres's COPY follows too).
    pub fn new(format: CopyOutFormat, style: crate::types::OutputStyle) -> Self {
        CopyEncoder {
            format,
            encoder: crate::types::RowEncoder::with_style(style),
            started: false,
        }
    }

    /// Whether the data is in binary format (for CopyOutResponse).
    pub fn binary(&self) -> bool {
        self.format == CopyOutFormat::Binary
    }

    /// What comes before the first row: the binary header, or the CSV header line.
    pub fn start(&mut self, column_names: &[&str], out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        match &self.format {
            CopyOutFormat::Binary => out.extend_from_slice(BINARY_HEADER),
            CopyOutFormat::Text(format) if format.header => {
                for (i, name) in column_names.iter().enumerate() {
                    if i > 0 {
                        out.push(format.delimiter);
                    }
                    if format.csv {
                        write_csv_field(format, name.as_bytes(), out);
                    } else {
                        write_text_field(format, name.as_bytes(), out);
                    }
                }
                out.push(b'\n');
            }
            CopyOutFormat::Text(_) => {}
        }
    }

    /// Appends the rows of `batch`, and the end offset in `out` of each row to `row_ends`
    /// (Postgres sends each row in a CopyData of its own, and clients such as psycopg parse
    /// one row per CopyData).
    pub fn write(
        &mut self,
        batch: &RecordBatch,
        out: &mut Vec<u8>,
        row_ends: &mut Vec<usize>,
    ) -> Result<(), PgError> {
        let wire = if self.binary() {
            crate::types::Format::Binary
        } else {
            crate::types::Format::Text
        };
        let formats = vec![wire; batch.num_columns()];
        self.encoder.encode(batch, &formats)?;
        let columns = self.encoder.columns();
        for row in 0..self.encoder.rows() {
            match &self.format {
                CopyOutFormat::Binary => {
                    out.extend_from_slice(&(columns as i16).to_be_bytes());
                    for column in 0..columns {
                        match self.encoder.value(row, column) {
                            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                            Some(value) => {
                                out.extend_from_slice(&(value.len() as i32).to_be_bytes());
                                out.extend_from_slice(value);
                            }
                        }
                    }
                }
                CopyOutFormat::Text(format) => {
                    for column in 0..columns {
                        if column > 0 {
                            out.push(format.delimiter);
                        }
                        match self.encoder.value(row, column) {
                            None => out.extend_from_slice(&format.null),
                            Some(value) if format.csv => write_csv_field(format, value, out),
                            Some(value) => write_text_field(format, value, out),
                        }
                    }
                    out.push(b'\n');
                }
            }
            row_ends.push(out.len());
        }
        Ok(())
    }

    /// What comes after the last row: the binary trailer.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.binary() {
            out.extend_from_slice(&(-1i16).to_be_bytes());
        }
    }
}

/// A text-format field: backslash, the delimiter, newline, carriage return and the other
/// control characters COPY escapes are written as backslash escapes.
fn write_text_field(format: &CopyFormat, value: &[u8], out: &mut Vec<u8>) {
    for &byte in value {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x0b => out.extend_from_slice(b"\\v"),
            b if b == format.delimiter => {
                out.push(b'\\');
                out.push(b);
            }
            b => out.push(b),
        }
    }
}

/// A CSV field: quoted when it holds the delimiter, the quote, a line break, or equals the
/// NULL string (an unquoted empty field is NULL), with quotes and escapes doubled as CSV
/// needs.
fn write_csv_field(format: &CopyFormat, value: &[u8], out: &mut Vec<u8>) {
    let needs_quotes = value == format.null.as_slice()
        || value
            .iter()
            .any(|&b| b == format.delimiter || b == format.quote || b == b'\n' || b == b'\r')
        || value.starts_with(b"\\.");
    if !needs_quotes {
        out.extend_from_slice(value);
        return;
    }
    out.push(format.quote);
    for &byte in value {
        if byte == format.quote || byte == format.escape {
            out.push(format.escape);
        }
        out.push(byte);
    }
    out.push(format.quote);
}

/// Decodes binary COPY data (`COPY ... FROM STDIN (FORMAT binary)`, what asyncpg's
/// `copy_records_to_table` sends) into batches of string columns: each field is turned into
/// its Postgres text form from the binary form of its column's type, so the database parses
/// one representation, as for text COPY.
pub struct BinaryCopyDecoder {
    type_oids: Vec<u32>,
    batch_rows: usize,
    builders: Vec<StringBuilder>,
    rows_in_batch: usize,
    pending: Vec<u8>,
    header_read: bool,
    ended: bool,
    rows: u64,
}

fn bad_binary_copy(message: impl Into<String>) -> PgError {
    PgError::new("22P04", message)
}

impl BinaryCopyDecoder {
    /// A decoder of rows whose columns have the types `type_oids`.
    pub fn new(type_oids: Vec<u32>, batch_rows: usize) -> Self {
        BinaryCopyDecoder {
            builders: type_oids.iter().map(|_| StringBuilder::new()).collect(),
            type_oids,
            batch_rows,
            rows_in_batch: 0,
            pending: Vec::new(),
            header_read: false,
            ended: false,
            rows: 0,
        }
    }

    /// Decodes the complete rows in `data`; full batches are appended to `out`.
    pub fn write(&mut self, data: &[u8], out: &mut Vec<RecordBatch>) -> Result<(), PgError> {
        if self.ended {
            return Ok(());
        }
        self.pending.extend_from_slice(data);
        let mut at = 0;
        if !self.header_read {
            // Signature, flags, header extension length, extension.
            if self.pending.len() < BINARY_HEADER.len() {
                return Ok(());
            }
            if self.pending[..11] != BINARY_HEADER[..11] {
                return Err(bad_binary_copy("COPY file signature not recognized"));
            }
            let extension = i32::from_be_bytes([
                self.pending[15],
                self.pending[16],
                self.pending[17],
                self.pending[18],
            ]);
            let extension = usize::try_from(extension)
                .map_err(|_| bad_binary_copy("invalid COPY file header (missing length)"))?;
            if self.pending.len() < BINARY_HEADER.len() + extension {
                return Ok(());
            }
            at = BINARY_HEADER.len() + extension;
            self.header_read = true;
        }
        while let Some(consumed) = self.decode_row(at, out)? {
            at += consumed;
            if self.ended {
                break;
            }
        }
        self.pending.drain(..at);
        Ok(())
    }

    /// Decodes the row at `at` if it is all there: the bytes it took, or `None`.
    fn decode_row(
        &mut self,
        at: usize,
        out: &mut Vec<RecordBatch>,
    ) -> Result<Option<usize>, PgError> {
        let bytes = &self.pending[at..];
        let Some(count) = bytes.get(..2) else {
            return Ok(None);
        };
        let count = i16::from_be_bytes([count[0], count[1]]);
        if count == -1 {
            self.ended = true;
            return Ok(Some(2));
        }
        if usize::try_from(count).ok() != Some(self.type_oids.len()) {
            return Err(bad_binary_copy(format!(
                "row field count is {count}, expected {}",
                self.type_oids.len()
            )));
        }
        // Find every field before decoding any, so a row is added whole or not at all.
        let mut fields: Vec<Option<(usize, usize)>> = Vec::with_capacity(self.type_oids.len());
        let mut offset = 2;
        for _ in 0..self.type_oids.len() {
            let Some(length) = bytes.get(offset..offset + 4) else {
                return Ok(None);
            };
            let length = i32::from_be_bytes([length[0], length[1], length[2], length[3]]);
            offset += 4;
            if length < 0 {
                fields.push(None);
                continue;
            }
            let length = length as usize;
            if bytes.len() < offset + length {
                return Ok(None);
            }
            fields.push(Some((offset, offset + length)));
            offset += length;
        }
        for (column, field) in fields.into_iter().enumerate() {
            let value = match field {
                None => None,
                Some((start, end)) => {
                    let raw = &bytes[start..end];
                    crate::types::decode_param(
                        column + 1,
                        self.type_oids[column],
                        crate::types::Format::Binary,
                        Some(raw),
                    )
                    .map_err(|e| {
                        bad_binary_copy(format!(
                            "COPY row {}, column {}: {}",
                            self.rows + 1,
                            column + 1,
                            e.message
                        ))
                    })?
                    .text
                }
            };
            self.builders[column].append_option(value);
        }
        self.rows += 1;
        self.rows_in_batch += 1;
        if self.rows_in_batch >= self.batch_rows {
            out.push(string_batch(&mut self.builders, self.rows_in_batch));
            self.rows_in_batch = 0;
        }
        Ok(Some(offset))
    }

    /// The input ended: the last batch, and the rows decoded in all.
    pub fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<u64, PgError> {
        if !self.ended && !self.pending.is_empty() {
            return Err(bad_binary_copy("unexpected end of binary COPY data"));
        }
        self.ended = true;
        if self.rows_in_batch > 0 {
            out.push(string_batch(&mut self.builders, self.rows_in_batch));
            self.rows_in_batch = 0;
        }
        Ok(self.rows)
    }
}

/// A batch of the string columns built so far.
fn string_batch(builders: &mut [StringBuilder], rows: usize) -> RecordBatch {
    let columns: Vec<ArrayRef> = builders
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    let fields: Vec<Field> = (0..columns.len())
        .map(|i| Field::new(format!("column{}", i + 1), DataType::Utf8, true))
        .collect();
    let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options)
        .expect("string columns built to the same row count match their schema")
}

/// One decoded field of the row being read: a range of the row buffer, or NULL.
#[derive(Debug, Clone, Copy)]
enum FieldValue {
    Null,
    Text { start: usize, end: usize },
}

/// What reading one row from the front of the input found.
enum RowRead {
    /// A whole row of `consumed` bytes (line break included).
    Row { consumed: usize },
    /// The end-of-data marker line.
    EndMarker,
    /// The row is not complete yet.
    NeedMore,
}

/// Decodes COPY data into batches of string columns.
pub struct CopyDecoder {
    format: CopyFormat,
    columns: usize,
    batch_rows: usize,
    builders: Vec<StringBuilder>,
    rows_in_batch: usize,
    /// Bytes received and not yet decoded (at most one incomplete row after each call).
    pending: Vec<u8>,
    /// The current row's field contents, after unescaping, end to end.
    row: Vec<u8>,
    fields: Vec<FieldValue>,
    /// 1-based line of the next row, for messages (a CSV row may span lines).
    line: u64,
    header_pending: bool,
    ended: bool,
    rows: u64,
}

impl CopyDecoder {
    /// A decoder of rows with `columns` fields, emitting batches of up to `batch_rows` rows.
    pub fn new(format: CopyFormat, columns: usize, batch_rows: usize) -> Self {
        CopyDecoder {
            header_pending: format.header,
            builders: (0..columns).map(|_| StringBuilder::new()).collect(),
            format,
            columns,
            batch_rows: batch_rows.max(1),
            rows_in_batch: 0,
            pending: Vec::new(),
            row: Vec::new(),
            fields: Vec::with_capacity(columns),
            line: 1,
            ended: false,
            rows: 0,
        }
    }

    /// Rows decoded so far (the header not included).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Decodes the complete rows in `data` (after what came before it); full batches are
    /// appended to `out`.
    pub fn write(&mut self, data: &[u8], out: &mut Vec<RecordBatch>) -> Result<(), PgError> {
        if self.ended {
            return Ok(());
        }
        self.pending.extend_from_slice(data);
        let consumed = self.decode_rows(false, out)?;
        self.pending.drain(..consumed);
        Ok(())
    }

    /// The input ended: decodes a last row without a line break and returns the last batch.
    /// Later writes are ignored.
    pub fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<u64, PgError> {
        if !self.ended {
            self.decode_rows(true, out)?;
            self.ended = true;
        }
        if self.rows_in_batch > 0 {
            out.push(self.flush_batch());
        }
        Ok(self.rows)
    }

    /// Decodes rows from `pending`, returning how many bytes were consumed.
    fn decode_rows(&mut self, eof: bool, out: &mut Vec<RecordBatch>) -> Result<usize, PgError> {
        let mut offset = 0;
        while offset < self.pending.len() && !self.ended {
            let read = if self.format.csv {
                self.read_csv_row(offset, eof)?
            } else {
                self.read_text_row(offset, eof)?
            };
            match read {
                RowRead::NeedMore => break,
                RowRead::EndMarker => {
                    self.ended = true;
                }
                RowRead::Row { consumed } => {
                    let lines = self.pending[offset..offset + consumed]
                        .iter()
                        .filter(|&&b| b == b'\n')
                        .count()
                        .max(1);
                    offset += consumed;
                    if self.header_pending {
                        self.header_pending = false;
                    } else {
                        self.append_row()?;
                        if self.rows_in_batch >= self.batch_rows {
                            out.push(self.flush_batch());
                        }
                    }
                    self.line += lines as u64;
                }
            }
        }
        Ok(offset)
    }

    fn bad_format(&self, message: impl std::fmt::Display) -> PgError {
        PgError::new(
            "22P04",
            format!("{message} (COPY data, line {})", self.line),
        )
    }

    /// Moves the fields of the row just read into the column builders.
    fn append_row(&mut self) -> Result<(), PgError> {
        // A header line is allowed any shape; data rows must match the column count exactly.
        if self.fields.len() > self.columns {
            return Err(self.bad_format("extra data after last expected column"));
        }
        if self.fields.len() < self.columns {
            return Err(self.bad_format(format!(
                "missing data for column {} of {}",
                self.fields.len() + 1,
                self.columns
            )));
        }
        for (column, field) in self.fields.iter().enumerate() {
            match *field {
                FieldValue::Null => self.builders[column].append_null(),
                FieldValue::Text { start, end } => {
                    let text = std::str::from_utf8(&self.row[start..end]).map_err(|_| {
                        PgError::new(
                            "22021",
                            format!(
                                "invalid byte sequence for encoding \"UTF8\" (COPY data, line {}, column {})",
                                self.line,
                                column + 1
                            ),
                        )
                    })?;
                    self.builders[column].append_value(text);
                }
            }
        }
        self.rows_in_batch += 1;
        self.rows += 1;
        Ok(())
    }

    fn flush_batch(&mut self) -> RecordBatch {
        let rows = std::mem::take(&mut self.rows_in_batch);
        string_batch(&mut self.builders, rows)
    }

    /// Whether the line starting at `start` is the end-of-data marker `\.`; `None` when the
    /// bytes so far cannot tell.
    fn is_end_marker(&self, start: usize, eof: bool) -> Option<bool> {
        match &self.pending[start..] {
            [b'\\', b'.', b'\n' | b'\r', ..] => Some(true),
            [b'\\', b'.'] if eof => Some(true),
            [b'\\', b'.'] | [b'\\'] if !eof => None,
            _ => Some(false),
        }
    }

    /// Length of the line break at `i` (`\n`, `\r\n`, `\r`), `None` when the input may still
    /// continue a `\r\n`.
    fn line_break_len(&self, i: usize, eof: bool) -> Option<usize> {
        match self.pending[i] {
            b'\n' => Some(1),
            _ => match self.pending.get(i + 1) {
                Some(b'\n') => Some(2),
                Some(_) => Some(1),
                None if eof => Some(1),
                None => None,
            },
        }
    }

    fn read_text_row(&mut self, start: usize, eof: bool) -> Result<RowRead, PgError> {
        match self.is_end_marker(start, eof) {
            None => return Ok(RowRead::NeedMore),
            Some(true) => return Ok(RowRead::EndMarker),
            Some(false) => {}
        }
        self.row.clear();
        self.fields.clear();
        let delimiter = self.format.delimiter;
        let data = &self.pending[..];
        let mut i = start;
        let mut field_start_raw = i;
        let mut field_start = 0;
        loop {
            let Some(&b) = data.get(i) else {
                if !eof {
                    return Ok(RowRead::NeedMore);
                }
                if i == start {
                    return Ok(RowRead::NeedMore);
                }
                let raw = &data[field_start_raw..i];
                push_field(
                    &mut self.fields,
                    &self.row,
                    field_start,
                    raw,
                    false,
                    &self.format,
                );
                return Ok(RowRead::Row {
                    consumed: i - start,
                });
            };
            if b == delimiter || b == b'\n' || b == b'\r' {
                let raw = &data[field_start_raw..i];
                push_field(
                    &mut self.fields,
                    &self.row,
                    field_start,
                    raw,
                    false,
                    &self.format,
                );
                if b == delimiter {
                    i += 1;
                    field_start_raw = i;
                    field_start = self.row.len();
                    continue;
                }
                let Some(len) = self.line_break_len(i, eof) else {
                    return Ok(RowRead::NeedMore);
                };
                return Ok(RowRead::Row {
                    consumed: i + len - start,
                });
            }
            if b != b'\\' {
                self.row.push(b);
                i += 1;
                continue;
            }
            // An escape: needs the following byte(s) to be here.
            let Some(&next) = data.get(i + 1) else {
                if eof {
                    return Err(self.bad_format("unterminated backslash escape at end of data"));
                }
                return Ok(RowRead::NeedMore);
            };
            match next {
                b'0'..=b'7' => {
                    let digits = data[i + 1..]
                        .iter()
                        .take(3)
                        .take_while(|d| (b'0'..=b'7').contains(d))
                        .count();
                    if digits < 3 && i + 1 + digits == data.len() && !eof {
                        return Ok(RowRead::NeedMore);
                    }
                    let value = data[i + 1..i + 1 + digits]
                        .iter()
                        .fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                    self.row.push((value & 0xff) as u8);
                    i += 1 + digits;
                }
                b'x' => {
                    let digits = data[i + 2..]
                        .iter()
                        .take(2)
                        .take_while(|d| d.is_ascii_hexdigit())
                        .count();
                    if digits < 2 && i + 2 + digits == data.len() && !eof {
                        return Ok(RowRead::NeedMore);
                    }
                    if digits == 0 {
                        // `\x` without hex digits is a plain `x`, as in Postgres.
                        self.row.push(b'x');
                    } else {
                        let value = data[i + 2..i + 2 + digits].iter().fold(0u8, |v, d| {
                            v * 16 + (*d as char).to_digit(16).unwrap_or(0) as u8
                        });
                        self.row.push(value);
                    }
                    i += 2 + digits;
                }
                other => {
                    self.row.push(match other {
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'v' => 0x0b,
                        literal => literal,
                    });
                    i += 2;
                }
            }
        }
    }

    fn read_csv_row(&mut self, start: usize, eof: bool) -> Result<RowRead, PgError> {
        match self.is_end_marker(start, eof) {
            None => return Ok(RowRead::NeedMore),
            Some(true) => return Ok(RowRead::EndMarker),
            Some(false) => {}
        }
        self.row.clear();
        self.fields.clear();
        let CopyFormat {
            delimiter,
            quote,
            escape,
            ..
        } = self.format;
        let data = &self.pending[..];
        let mut i = start;
        let mut field_start_raw = i;
        let mut field_start = 0;
        let mut quoted = false;
        let mut in_quotes = false;
        loop {
            let Some(&b) = data.get(i) else {
                if !eof || i == start {
                    return Ok(RowRead::NeedMore);
                }
                if in_quotes {
                    return Err(self.bad_format("unterminated CSV quoted field"));
                }
                let raw = &data[field_start_raw..i];
                push_field(
                    &mut self.fields,
                    &self.row,
                    field_start,
                    raw,
                    quoted,
                    &self.format,
                );
                return Ok(RowRead::Row {
                    consumed: i - start,
                });
            };
            if in_quotes {
                let next = data.get(i + 1);
                if b == escape
                    && (next == Some(&quote) || (escape != quote && next == Some(&escape)))
                {
                    self.row.push(data[i + 1]);
                    i += 2;
                } else if b == quote {
                    if escape == quote && data.get(i + 1).is_none() && !eof {
                        // A doubled quote may continue in the next chunk.
                        return Ok(RowRead::NeedMore);
                    }
                    in_quotes = false;
                    i += 1;
                } else if b == escape && data.get(i + 1).is_none() && !eof {
                    return Ok(RowRead::NeedMore);
                } else {
                    self.row.push(b);
                    i += 1;
                }
                continue;
            }
            if b == quote {
                in_quotes = true;
                quoted = true;
                i += 1;
            } else if b == delimiter || b == b'\n' || b == b'\r' {
                let raw = &data[field_start_raw..i];
                push_field(
                    &mut self.fields,
                    &self.row,
                    field_start,
                    raw,
                    quoted,
                    &self.format,
                );
                if b == delimiter {
                    i += 1;
                    field_start_raw = i;
                    field_start = self.row.len();
                    quoted = false;
                    continue;
                }
                let Some(len) = self.line_break_len(i, eof) else {
                    return Ok(RowRead::NeedMore);
                };
                return Ok(RowRead::Row {
                    consumed: i + len - start,
                });
            } else {
                self.row.push(b);
                i += 1;
            }
        }
    }
}

/// Ends a field: `raw` is its bytes as sent, `row[start..]` its decoded value. A field is
/// NULL when its raw bytes are the NULL string, except a quoted CSV field, which never is.
fn push_field(
    fields: &mut Vec<FieldValue>,
    row: &[u8],
    start: usize,
    raw: &[u8],
    quoted: bool,
    format: &CopyFormat,
) {
    fields.push(if !quoted && raw == format.null.as_slice() {
        FieldValue::Null
    } else {
        FieldValue::Text {
            start,
            end: row.len(),
        }
    });
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, StringArray};

    use super::*;

    type Rows = Vec<Vec<Option<String>>>;

    fn rows_of(batches: &[RecordBatch]) -> Rows {
        let mut rows = Vec::new();
        for batch in batches {
            for r in 0..batch.num_rows() {
                rows.push(
                    batch
                        .columns()
                        .iter()
                        .map(|c| {
                            let c = c.as_any().downcast_ref::<StringArray>().unwrap();
                            (!c.is_null(r)).then(|| c.value(r).to_string())
                        })
                        .collect(),
                );
            }
        }
        rows
    }

    /// Decodes `data` split into chunks of every size from 1 to its length, checking that
    /// all splits agree, and returns the rows.
    fn decode(format: CopyFormat, columns: usize, data: &[u8]) -> Result<Rows, PgError> {
        let mut whole = None;
        for chunk in 1..=data.len().max(1) {
            let mut decoder = CopyDecoder::new(format.clone(), columns, 2);
            let mut out = Vec::new();
            for part in data.chunks(chunk) {
                decoder.write(part, &mut out)?;
            }
            let n = decoder.finish(&mut out)?;
            let rows = rows_of(&out);
            assert_eq!(n as usize, rows.len());
            match &whole {
                None => whole = Some(rows),
                Some(w) => assert_eq!(w, &rows, "chunk size {chunk} decodes differently"),
            }
        }
        Ok(whole.unwrap_or_default())
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn text_escapes_and_nulls() {
        let data = b"1\ttab\\there\n2\tnew\\nline\n3\tback\\\\slash\n4\tcr\\rhere\n5\t\\\\N\n6\t\n7\t\\N\n8\t\\101\\x42\\q\n";
        let rows = decode(CopyFormat::text(), 2, data).unwrap();
        let expected = vec![
            vec![s("1"), s("tab\there")],
            vec![s("2"), s("new\nline")],
            vec![s("3"), s("back\\slash")],
            vec![s("4"), s("cr\rhere")],
            vec![s("5"), s("\\N")],
            vec![s("6"), s("")],
            vec![s("7"), None],
            vec![s("8"), s("ABq")],
        ];
        assert_eq!(rows, expected);
    }

    #[test]
    fn text_line_endings_and_end_marker() {
        let rows = decode(CopyFormat::text(), 2, b"1\ta\r\n2\tb\r3\tc\n\\.\n4\td\n").unwrap();
        assert_eq!(
            rows,
            vec![
                vec![s("1"), s("a")],
                vec![s("2"), s("b")],
                vec![s("3"), s("c")]
            ]
        );
        // No final line break.
        let rows = decode(CopyFormat::text(), 1, b"x\ny").unwrap();
        assert_eq!(rows, vec![vec![s("x")], vec![s("y")]]);
    }

    #[test]
    fn csv_quotes_nulls_and_empty_strings() {
        let data = b"1,\"\",0.5\n2,,\n3,\"a,b\",1.25\n4,\"say \"\"hi\"\"\",\n5,\"two\nlines\",x\n";
        let rows = decode(CopyFormat::csv(), 3, data).unwrap();
        assert_eq!(
            rows,
            vec![
                vec![s("1"), s(""), s("0.5")],
                vec![s("2"), None, None],
                vec![s("3"), s("a,b"), s("1.25")],
                vec![s("4"), s("say \"hi\""), None],
                vec![s("5"), s("two\nlines"), s("x")],
            ]
        );
    }

    #[test]
    fn csv_header_escape_and_null_string() {
        let format = CopyFormat {
            header: true,
            escape: b'\\',
            null: b"NULL".to_vec(),
            ..CopyFormat::csv()
        };
        let data = b"a,b\n\"x\\\"y\",NULL\n\"NULL\",\n";
        let rows = decode(format, 2, data).unwrap();
        assert_eq!(rows, vec![vec![s("x\"y"), None], vec![s("NULL"), s("")]]);
    }

    #[test]
    fn wrong_field_counts_and_bad_data_are_errors() {
        let err = decode(CopyFormat::csv(), 2, b"1,2\n1,2,3\n").unwrap_err();
        assert_eq!(err.sqlstate, "22P04");
        assert!(err.message.contains("line 2"), "{}", err.message);
        let err = decode(CopyFormat::text(), 2, b"1\n").unwrap_err();
        assert!(err.message.contains("missing data"), "{}", err.message);
        let err = decode(CopyFormat::csv(), 1, b"\"open\n").unwrap_err();
        assert!(err.message.contains("unterminated"), "{}", err.message);
        let err = decode(CopyFormat::text(), 1, b"\\xff\n").unwrap_err();
        assert_eq!(err.sqlstate, "22021");
    }

    #[test]
    fn multibyte_characters_split_across_chunks() {
        let rows = decode(CopyFormat::text(), 2, "ü\t日本\n".as_bytes()).unwrap();
        assert_eq!(rows, vec![vec![s("ü"), s("日本")]]);
    }
}
