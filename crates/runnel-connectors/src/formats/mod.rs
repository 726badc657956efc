//! Record formats. A [`RecordDecoder`] turns a chunk of record values into one Arrow batch of
//! the relation's value columns. The whole chunk is decoded in one vectorised pass; only when
//! that fails (or yields the wrong number of rows) is it decoded again one record at a time,
//! so a bad record costs its neighbours nothing but time and is reported with its index.

mod csv;
#[cfg(test)]
mod fuzz;
mod json;
pub mod json_encode;

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, StringArray, StringBuilder, UInt32Array};
use datafusion::arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use runnel_common::text_types::{fit_varchar, max_length, too_long};
use runnel_common::TextType;

use crate::options::Format;

/// The outcome of decoding a chunk of records.
#[derive(Debug)]
pub struct Decoded {
    /// One row per good record, in record order, with the decoder's (nullable) value schema.
    pub batch: RecordBatch,
    /// For each row of `batch`, the index of the record it came from.
    pub rows: Vec<usize>,
    /// Records that could not be decoded: (index, why).
    pub errors: Vec<(usize, String)>,
}

/// Decodes record values of one format into the value columns of a relation.
pub struct RecordDecoder {
    format: Format,
    /// The value columns, all nullable: NOT NULL is checked after decoding so that a missing
    /// field is one bad record rather than a failed chunk.
    schema: SchemaRef,
    /// Columns that must not be null (indices into `schema`).
    not_null: Vec<usize>,
    /// JSON-typed columns (indices into `schema`): nested values are kept as JSON text.
    json_columns: Vec<usize>,
}

impl RecordDecoder {
    /// `columns` are the value columns in declared order (metadata columns excluded), with
    /// their real nullability; a column tagged `json` or `jsonb` takes a nested JSON value as
    /// its text.
    pub fn new(format: Format, columns: &Schema) -> RecordDecoder {
        let json_columns = columns
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| matches!(TextType::of(f), Some(TextType::Json | TextType::Jsonb)))
            .map(|(i, _)| i)
            .collect();
        let not_null = columns
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.is_nullable())
            .map(|(i, _)| i)
            .collect();
        let fields: Vec<Field> = columns
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        RecordDecoder {
            format,
            schema: Arc::new(Schema::new(fields)),
            not_null,
            json_columns,
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes `values` (a `None` value is a record without one, which is an error here).
    pub fn decode(&self, values: &[Option<&[u8]>]) -> Decoded {
        let mut errors = Vec::new();
        let mut present: Vec<usize> = Vec::with_capacity(values.len());
        let mut payloads: Vec<std::borrow::Cow<'_, [u8]>> = Vec::with_capacity(values.len());
        for (i, value) in values.iter().enumerate() {
            let Some(bytes) = value else {
                errors.push((i, "record has no value".to_string()));
                continue;
            };
            match self
                .prepare(bytes)
                .and_then(|p| self.check_decimal_digits(&p).map(|()| p))
            {
                Ok(p) => {
                    present.push(i);
                    payloads.push(p);
                }
                Err(e) => errors.push((i, e)),
            }
        }
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_ref()).collect();
        let (batch, mut rows) = match self.decode_chunk(&refs) {
            Ok(batch) if batch.num_rows() == refs.len() => (batch, present),
            _ => self.decode_one_by_one(&refs, &present, &mut errors),
        };
        let (batch, mut rows) = self.check_not_null(batch, &mut rows, &mut errors);
        let (batch, rows) = self.normalize_text_types(batch, &mut rows, &mut errors);
        errors.sort_by_key(|(i, _)| *i);
        Decoded {
            batch,
            rows,
            errors,
        }
    }

    fn prepare<'a>(&self, bytes: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>, String> {
        match self.format {
            Format::Json if !self.json_columns.is_empty() => {
                json::nested_as_text(bytes, &self.schema, &self.json_columns).map(Into::into)
            }
            _ => Ok(bytes.into()),
        }
    }

    fn decode_chunk(&self, payloads: &[&[u8]]) -> Result<RecordBatch, String> {
        match self.format {
            Format::Json => json::decode(&self.schema, payloads),
            Format::Csv => csv::decode(&self.schema, payloads),
        }
    }

    fn decode_one_by_one(
        &self,
        payloads: &[&[u8]],
        present: &[usize],
        errors: &mut Vec<(usize, String)>,
    ) -> (RecordBatch, Vec<usize>) {
        let mut batches = Vec::new();
        let mut rows = Vec::new();
        for (payload, &index) in payloads.iter().zip(present) {
            match self.decode_chunk(std::slice::from_ref(payload)) {
                Ok(b) if b.num_rows() == 1 => {
                    batches.push(b);
                    rows.push(index);
                }
                Ok(b) => errors.push((
                    index,
                    format!("expected one row per record, found {}", b.num_rows()),
                )),
                Err(e) => errors.push((index, e)),
            }
        }
        let batch = concat_batches(&self.schema, &batches)
            .unwrap_or_else(|_| RecordBatch::new_empty(self.schema.clone()));
        if batch.num_rows() != rows.len() {
            // Only a bug gets here (batches of one schema always concatenate).
            for &i in &rows {
                errors.push((i, "internal error: decoded rows did not concatenate".into()));
            }
            return (RecordBatch::new_empty(self.schema.clone()), Vec::new());
        }
        (batch, rows)
    }

    fn check_not_null(
        &self,
        batch: RecordBatch,
        rows: &mut Vec<usize>,
        errors: &mut Vec<(usize, String)>,
    ) -> (RecordBatch, Vec<usize>) {
        let bad: Vec<usize> = self
            .not_null
            .iter()
            .copied()
            .filter(|&c| batch.column(c).null_count() > 0)
            .collect();
        if bad.is_empty() {
            return (batch, std::mem::take(rows));
        }
        let mut keep = vec![true; batch.num_rows()];
        for &c in &bad {
            let column = batch.column(c);
            for (r, k) in keep.iter_mut().enumerate() {
                if *k && column.is_null(r) {
                    *k = false;
                    errors.push((
                        rows[r],
                        format!(
                            "missing value for NOT NULL column \"{}\"",
                            self.schema.field(c).name()
                        ),
                    ));
                }
            }
        }
        self.keep_rows(&batch, rows, keep)
    }
}

/// More significant integer digits than any `Decimal128` value has (38 at most).
const MAX_DECIMAL_DIGITS: usize = 38;
/// Postgres's bound on a numeric input's exponent (`NUMERIC_MAX_PRECISION`).
const MAX_DECIMAL_EXPONENT: usize = 1000;
/// Postgres's bound on a numeric input's fractional digits (`NUMERIC_DSCALE_MAX`).
const MAX_DECIMAL_FRACTION: usize = 16383;

impl RecordDecoder {
    /// Refuses a record whose value for a decimal column Arrow cannot parse safely:
    /// arrow-cast's `parse_decimal` counts digits in a `u8` (overflowing past 255 integer
    /// digits), an exponent in an `i16` (past 32767) and e-notation fractional digits in an
    /// `i16`: a panic in a debug build, a wrapped, wrong value that passes its precision check
    /// in a release build. Each bound refused here is one Postgres refuses too. Only a record
    /// with a long run of digits, or digits after an `e`, is looked at closely, with every
    /// column read as text.
    fn check_decimal_digits(&self, bytes: &[u8]) -> Result<(), String> {
        let decimals: Vec<usize> = self
            .schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| matches!(f.data_type(), DataType::Decimal128(..)))
            .map(|(i, _)| i)
            .collect();
        if decimals.is_empty() || !may_overflow_decimal_parsing(bytes) {
            return Ok(());
        }
        let text_fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect();
        let text_schema = Arc::new(Schema::new(text_fields));
        let text = match self.format {
            Format::Json => json::decode_as_text(&text_schema, bytes)?,
            Format::Csv => csv::decode(&text_schema, &[bytes])?,
        };
        for &c in &decimals {
            let Some(values) = text.column(c).as_any().downcast_ref::<StringArray>() else {
                continue;
            };
            if let Some(problem) = values.iter().flatten().find_map(decimal_text_problem) {
                return Err(format!(
                    "column \"{}\": {problem}",
                    self.schema.field(c).name()
                ));
            }
        }
        Ok(())
    }
}

/// Whether `bytes` has a run of digits longer than any decimal's, or an exponent of more than
/// three digits (signs anywhere in it, as Arrow's parser allows): the only shapes
/// [`decimal_text_problem`] refuses.
fn may_overflow_decimal_parsing(bytes: &[u8]) -> bool {
    let mut run = 0;
    // The digits of the exponent being read, if any.
    let mut exponent: Option<usize> = None;
    for &b in bytes {
        if b.is_ascii_digit() {
            run += 1;
            if let Some(digits) = exponent.as_mut() {
                *digits += 1;
                if *digits > 3 {
                    return true;
                }
            }
            if run > MAX_DECIMAL_DIGITS {
                return true;
            }
        } else {
            run = 0;
            exponent = match b {
                b'e' | b'E' => Some(0),
                b'+' | b'-' => exponent,
                _ => None,
            };
        }
    }
    false
}

/// Why Postgres and Arrow would refuse `text` as a decimal, among the shapes that overflow
/// Arrow's parser; `None` for anything else (Arrow's own checks then apply).
fn decimal_text_problem(text: &str) -> Option<String> {
    let text = text.trim();
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let significant = integer.trim_start_matches('0').len();
    if significant > MAX_DECIMAL_DIGITS {
        return Some(format!(
            "numeric field overflow: {significant} integer digits, more than any numeric holds"
        ));
    }
    if fraction.len() > MAX_DECIMAL_FRACTION {
        return Some(format!(
            "value overflows numeric format: more than {MAX_DECIMAL_FRACTION} fractional digits"
        ));
    }
    if let Some(exponent) = exponent {
        // Arrow reads every digit after the `e` into the exponent, signs anywhere between.
        let digits: String = exponent.chars().filter(char::is_ascii_digit).collect();
        let digits = digits.trim_start_matches('0');
        if digits.len() > 4
            || digits
                .parse::<usize>()
                .is_ok_and(|e| e > MAX_DECIMAL_EXPONENT)
        {
            return Some(format!(
                "invalid input syntax for type numeric: exponent beyond ±{MAX_DECIMAL_EXPONENT}"
            ));
        }
    }
    None
}

impl RecordDecoder {
    /// json, jsonb and uuid columns in their normal form, `varchar(n)` values within their
    /// length (see `runnel_common::text_types`); a value that is not one makes its record bad.
    fn normalize_text_types(
        &self,
        batch: RecordBatch,
        rows: &mut Vec<usize>,
        errors: &mut Vec<(usize, String)>,
    ) -> (RecordBatch, Vec<usize>) {
        let tagged: Vec<(usize, TextType)> = self
            .schema
            .fields()
            .iter()
            .enumerate()
            .filter_map(|(c, f)| TextType::of(f).map(|t| (c, t)))
            .collect();
        let limited: Vec<(usize, usize)> = self
            .schema
            .fields()
            .iter()
            .enumerate()
            .filter_map(|(c, f)| max_length(f).map(|limit| (c, limit)))
            .collect();
        if (tagged.is_empty() && limited.is_empty()) || batch.num_rows() == 0 {
            return (batch, std::mem::take(rows));
        }
        let mut keep = vec![true; batch.num_rows()];
        let mut columns = batch.columns().to_vec();
        for &(c, limit) in &limited {
            let Some(strings) = batch.column(c).as_any().downcast_ref::<StringArray>() else {
                continue;
            };
            let mut out = StringBuilder::with_capacity(strings.len(), strings.value_data().len());
            for (r, value) in strings.iter().enumerate() {
                match value.map(|v| fit_varchar(v, limit)) {
                    None => out.append_null(),
                    Some(Some(text)) => out.append_value(text),
                    Some(None) => {
                        if keep[r] {
                            keep[r] = false;
                            errors
                                .push((rows[r], too_long(self.schema.field(c), limit).to_string()));
                        }
                        out.append_null();
                    }
                }
            }
            columns[c] = Arc::new(out.finish());
        }
        for &(c, text_type) in &tagged {
            let Some(strings) = batch.column(c).as_any().downcast_ref::<StringArray>() else {
                continue;
            };
            let mut out = StringBuilder::with_capacity(strings.len(), strings.value_data().len());
            for (r, value) in strings.iter().enumerate() {
                match value.map(|v| text_type.normalize(v)) {
                    None => out.append_null(),
                    Some(Ok(text)) => out.append_value(text),
                    Some(Err(e)) => {
                        if keep[r] {
                            keep[r] = false;
                            errors.push((
                                rows[r],
                                format!("column \"{}\": {e}", self.schema.field(c).name()),
                            ));
                        }
                        out.append_null();
                    }
                }
            }
            columns[c] = Arc::new(out.finish());
        }
        let batch = match RecordBatch::try_new(self.schema.clone(), columns) {
            Ok(batch) => batch,
            Err(_) => return (batch, std::mem::take(rows)),
        };
        if keep.iter().all(|k| *k) {
            return (batch, std::mem::take(rows));
        }
        self.keep_rows(&batch, rows, keep)
    }
}

impl RecordDecoder {
    /// The rows of `batch` whose `keep` is set, with their record indices (`rows`).
    fn keep_rows(
        &self,
        batch: &RecordBatch,
        rows: &[usize],
        keep: Vec<bool>,
    ) -> (RecordBatch, Vec<usize>) {
        let kept_rows: Vec<usize> = rows
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(r, _)| *r)
            .collect();
        let mask = BooleanArray::from(keep);
        let batch = filter_record_batch(batch, &mask)
            .unwrap_or_else(|_| RecordBatch::new_empty(self.schema.clone()));
        (batch, kept_rows)
    }
}

/// Rows `indices` of `batch`, in that order.
pub fn take_rows(
    batch: &RecordBatch,
    indices: &[u32],
) -> datafusion::arrow::error::Result<RecordBatch> {
    take_record_batch(batch, &UInt32Array::from(indices.to_vec()))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::DataType;

    use super::*;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("price", DataType::Float64, true),
            Field::new("name", DataType::Utf8, true),
        ])
    }

    fn ids(batch: &RecordBatch) -> Vec<i64> {
        let a = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        a.values().to_vec()
    }

    #[test]
    fn jsonb_and_uuid_values_are_normalised_and_bad_ones_isolated() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            TextType::Jsonb.field("doc", true),
            TextType::Uuid.field("u", true),
        ]);
        let d = RecordDecoder::new(Format::Json, &schema);
        let values: Vec<Option<&[u8]>> = vec![
            Some(br#"{"id":1,"doc":{"b":1,"a":2},"u":"A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"}"#),
            Some(br#"{"id":2,"u":"not a uuid"}"#),
            Some(br#"{"id":3}"#),
        ];
        let out = d.decode(&values);
        assert_eq!(out.rows, vec![0, 2]);
        assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
        assert_eq!(out.errors[0].0, 1);
        let text = |c: usize| {
            let a = out
                .batch
                .column(c)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            (0..a.len())
                .map(|r| a.is_valid(r).then(|| a.value(r).to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(text(1), vec![Some(r#"{"a": 2, "b": 1}"#.to_string()), None]);
        assert_eq!(
            text(2),
            vec![
                Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".to_string()),
                None
            ]
        );
    }

    #[test]
    fn json_good_chunk_in_one_pass() {
        let d = RecordDecoder::new(Format::Json, &schema());
        let values: Vec<Option<&[u8]>> = vec![
            Some(br#"{"id":1,"price":2.5,"name":"a","extra":true}"#),
            Some(br#"{"price":1,"id":2}"#),
        ];
        let out = d.decode(&values);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.rows, vec![0, 1]);
        assert_eq!(ids(&out.batch), vec![1, 2]);
        let price = out
            .batch
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(price.value(1), 1.0);
        let name = out
            .batch
            .column(2)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert!(name.is_null(1));
    }

    #[test]
    fn json_bad_records_are_isolated() {
        let d = RecordDecoder::new(Format::Json, &schema());
        let values: Vec<Option<&[u8]>> = vec![
            Some(br#"{"id":1}"#),
            Some(b"{not json"),
            Some(br#"{"id":"abc"}"#),
            None,
            Some(br#"{"price":3}"#),
            Some(br#"{"id":6}{"id":7}"#),
            Some(br#"{"id":8}"#),
        ];
        let out = d.decode(&values);
        assert_eq!(out.rows, vec![0, 6]);
        assert_eq!(ids(&out.batch), vec![1, 8]);
        let bad: Vec<usize> = out.errors.iter().map(|(i, _)| *i).collect();
        assert_eq!(bad, vec![1, 2, 3, 4, 5]);
        assert!(out.errors[3].1.contains("\"id\""), "{}", out.errors[3].1);
    }

    #[test]
    fn json_nested_values_become_text() {
        let s = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            TextType::Json.field("doc", true),
        ]);
        let d = RecordDecoder::new(Format::Json, &s);
        let values: Vec<Option<&[u8]>> = vec![
            Some(br#"{"id":1,"doc":{"a":[1,2],"b":"x"}}"#),
            Some(br#"{"id":2,"doc":"plain"}"#),
            Some(br#"{"id":3}"#),
        ];
        let out = d.decode(&values);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let doc = out
            .batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(doc.value(0), r#"{"a":[1,2],"b":"x"}"#);
        assert_eq!(doc.value(1), r#""plain""#);
        assert!(doc.is_null(2));
    }

    #[test]
    fn csv_records() {
        let d = RecordDecoder::new(Format::Csv, &schema());
        let values: Vec<Option<&[u8]>> = vec![
            Some(b"1,2.5,a"),
            Some(b"2,oops,b"),
            Some(b"3,,\"c,d\"\n"),
            Some(b"4,1"),
            Some(b",1,x"),
        ];
        let out = d.decode(&values);
        assert_eq!(ids(&out.batch), vec![1, 3]);
        let name = out
            .batch
            .column(2)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(name.value(1), "c,d");
        let bad: Vec<usize> = out.errors.iter().map(|(i, _)| *i).collect();
        assert_eq!(bad, vec![1, 3, 4]);
    }
}
