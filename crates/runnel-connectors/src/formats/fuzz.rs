//! Fuzz properties of record decoding ([`RecordDecoder`], JSON and CSV): any chunk of record
//! values — arbitrary bytes, or well-formed records with the wrong types, nesting, huge
//! numbers and duplicate keys — decodes into good rows and per-record errors, never a panic;
//! every record is accounted for exactly once; and a record is decoded the same way in a
//! chunk as alone, so a bad record can neither spoil nor be absorbed by its neighbours.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, IntervalUnit, Schema, TimeUnit};
use datafusion::common::ScalarValue;
use proptest::prelude::*;

use runnel_common::text_types::{fit_varchar, max_length, MAX_LENGTH_KEY};
use runnel_common::TextType;

use super::RecordDecoder;
use crate::options::Format;

/// Column names: short, so generated records hit them often.
const NAMES: [&str; 5] = ["a", "b", "c", "id", "ts"];

/// A value column as `CREATE STREAM` declares them (the Arrow types of `ddl.rs`), with its
/// nullability and text-type tags.
fn column(name: &'static str) -> impl Strategy<Value = Field> {
    let plain = prop::sample::select(vec![
        DataType::Boolean,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Float32,
        DataType::Float64,
        DataType::Decimal128(38, 10),
        DataType::Decimal128(5, 2),
        DataType::Utf8,
        DataType::Binary,
        DataType::Date32,
        DataType::Timestamp(TimeUnit::Microsecond, None),
        DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
        DataType::Time64(TimeUnit::Microsecond),
        DataType::Interval(IntervalUnit::MonthDayNano),
    ])
    .prop_map(move |t| Field::new(name, t, true));
    let text = prop::sample::select(vec![TextType::Json, TextType::Jsonb, TextType::Uuid])
        .prop_map(move |t| t.field(name, true));
    let varchar = (0usize..4).prop_map(move |n| {
        Field::new(name, DataType::Utf8, true)
            .with_metadata(HashMap::from([(MAX_LENGTH_KEY.to_string(), n.to_string())]))
    });
    (
        prop_oneof![4 => plain, 1 => text, 1 => varchar],
        any::<bool>(),
    )
        .prop_map(|(field, nullable)| field.with_nullable(nullable))
}

fn schema() -> impl Strategy<Value = Schema> {
    (1usize..=NAMES.len())
        .prop_flat_map(|n| {
            NAMES[..n]
                .iter()
                .map(|&name| column(name))
                .collect::<Vec<_>>()
        })
        .prop_map(Schema::new)
}

/// JSON scalars where decoders overflow, round, or mistake one type for another.
fn json_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "null",
            "true",
            "false",
            "0",
            "-0",
            "1",
            "-1",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775809",
            "340282366920938463463374607431768211456",
            "123456789012345678901234567890.123456789",
            "1e308",
            "1e309",
            "-1e400",
            "1e-400",
            "0.1",
            "1.5e3",
            "1E+2",
            "\"\"",
            "\"1\"",
            "\"true\"",
            "\"2026-06-10T00:00:00Z\"",
            "\"2026-06-10 12:34:56.789+02\"",
            "\"2026-02-30\"",
            "\"99999-01-01\"",
            "\"12:34:56\"",
            "\"1 day 2 hours\"",
            "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"",
            "\"NaN\"",
            "\"Infinity\"",
            "\"\\u0000\"",
            "\"\\ud800\"",
            "\"\\u00e9\\n\\t\\\"\"",
            "\"   \"",
            "\"abcdef\"",
        ])
        .prop_map(str::to_string),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| v.to_string()),
        "[a-z0-9 .:-]{0,8}".prop_map(|s| format!("\"{s}\"")),
    ]
}

/// Any JSON value, nested up to a few levels.
fn json_value() -> impl Strategy<Value = String> {
    json_scalar().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((key(), inner), 0..4).prop_map(|kv| object(&kv)),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(NAMES.to_vec()).prop_map(str::to_string),
        1 => "[A-Za-z_]{1,3}",
    ]
}

/// An object with the keys in order, duplicates kept as written.
fn object(kv: &[(String, String)]) -> String {
    let fields: Vec<String> = kv
        .iter()
        .map(|(k, v)| format!("{}:{v}", serde_json::Value::String(k.clone())))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// A record value: mostly one JSON object keyed by the column names (repeated keys included),
/// sometimes broken or not an object, sometimes arbitrary bytes.
fn json_record() -> impl Strategy<Value = Vec<u8>> {
    let object = prop::collection::vec((key(), json_value()), 0..6)
        .prop_map(|kv| object(&kv))
        .boxed();
    prop_oneof![
        6 => object.clone().prop_map(String::into_bytes),
        1 => json_value().prop_map(String::into_bytes),
        // Cut short, or two values in one record: must be one bad record.
        1 => (object.clone(), any::<prop::sample::Index>()).prop_map(|(text, cut)| {
            let bytes = text.into_bytes();
            let at = cut.index(bytes.len() + 1);
            bytes[..at].to_vec()
        }),
        1 => (object.clone(), object).prop_map(|(a, b)| format!("{a}\n{b}").into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..24),
        1 => prop::collection::vec(prop::sample::select(b"{}[]\":,\n \\0a".to_vec()), 0..24),
    ]
}

/// A CSV field, quoted or not, with the characters CSV framing gives meaning to.
fn csv_field() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        json_scalar().prop_map(|s| s.trim_matches('"').to_string()),
        prop::sample::select(vec![",", "\"", "\"\"", "\n", "\r", "\r\n", " ", "é", "\\"])
            .prop_map(str::to_string),
    ];
    (prop::collection::vec(piece, 0..3), any::<bool>()).prop_map(|(pieces, quoted)| {
        let text = pieces.concat();
        if quoted {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text
        }
    })
}

fn csv_record() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::collection::vec(csv_field(), 0..7).prop_map(|f| f.join(",").into_bytes()),
        // A character's bytes on both sides of a delimiter (or of a record boundary).
        1 => (prop::collection::vec(csv_field(), 1..6), any::<prop::sample::Index>()).prop_map(
            |(fields, at)| {
                let at = at.index(fields.len());
                let mut out = Vec::new();
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(if i == at { b"\xc3,\xa9" } else { b"," });
                    }
                    out.extend_from_slice(field.as_bytes());
                }
                if at == 0 {
                    out.push(0xc3);
                }
                out
            }
        ),
        1 => prop::collection::vec(any::<u8>(), 0..24),
        1 => prop::collection::vec(prop::sample::select(b",\"\n\r 1a.\xc3\xa9".to_vec()), 0..24),
    ]
}

/// Up to eight records of `format`, one in eight missing (a Kafka message without a value);
/// or good records cut into values at the wrong places, so that one value starts what the
/// next one finishes.
fn records(format: Format) -> impl Strategy<Value = Vec<Option<Vec<u8>>>> {
    let record = match format {
        Format::Json => json_record().boxed(),
        Format::Csv => csv_record().boxed(),
    };
    let independent = prop::collection::vec(
        prop_oneof![1 => Just(None), 7 => record.clone().prop_map(Some)],
        0..8,
    );
    let misframed = (
        prop::collection::vec(record, 1..5),
        prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    )
        .prop_map(|(records, cuts)| {
            let text = records.join(&b"\n"[..]);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(text.len() + 1)).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut out = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain(std::iter::once(text.len())) {
                out.push(Some(text[start..cut].to_vec()));
                start = cut;
            }
            out
        });
    prop_oneof![3 => independent, 1 => misframed]
}

fn format_and_records() -> impl Strategy<Value = (Format, Vec<Option<Vec<u8>>>)> {
    prop_oneof![Just(Format::Json), Just(Format::Csv)]
        .prop_flat_map(|format| (Just(format), records(format)))
}

/// One row of a decoded batch, as comparable values.
fn row(batch: &datafusion::arrow::record_batch::RecordBatch, r: usize) -> Vec<ScalarValue> {
    batch
        .columns()
        .iter()
        .map(|c| ScalarValue::try_from_array(c, r).expect("a decoded value reads back"))
        .collect()
}

proptest! {
    #![proptest_config(runnel_fuzz::config(4096))]

    /// Every record ends up as exactly one good row or one error, in record order; good rows
    /// respect NOT NULL, `varchar(n)` and the normal form of json/jsonb/uuid; and each record
    /// decodes in the chunk exactly as it does alone.
    #[test]
    fn fuzz_record_decoding_accounts_for_every_record(
        schema in schema(),
        (format, values) in format_and_records(),
    ) {
        let decoder = RecordDecoder::new(format, &schema);
        let refs: Vec<Option<&[u8]>> = values.iter().map(Option::as_deref).collect();
        let out = decoder.decode(&refs);

        prop_assert_eq!(out.batch.schema(), decoder.schema().clone());
        prop_assert_eq!(out.batch.num_rows(), out.rows.len());
        prop_assert!(out.rows.windows(2).all(|w| w[0] < w[1]), "rows in record order");
        let mut seen: Vec<usize> = out.rows.clone();
        seen.extend(out.errors.iter().map(|(i, _)| *i));
        seen.sort_unstable();
        prop_assert_eq!(seen, (0..values.len()).collect::<Vec<_>>(), "{:?}", out.errors);
        for (i, value) in values.iter().enumerate() {
            if value.is_none() {
                prop_assert!(out.errors.iter().any(|(e, _)| *e == i));
            }
        }

        for (c, field) in schema.fields().iter().enumerate() {
            let column = out.batch.column(c);
            // Arrow's full validation: offsets in bounds, strings UTF-8 at every boundary.
            column
                .to_data()
                .validate_full()
                .map_err(|e| TestCaseError::fail(format!("column {}: {e}", field.name())))?;
            if !field.is_nullable() {
                prop_assert_eq!(column.null_count(), 0, "NOT NULL column {}", field.name());
            }
            let Some(strings) = column.as_any().downcast_ref::<StringArray>() else {
                continue;
            };
            for text in strings.iter().flatten() {
                if let Some(limit) = max_length(field) {
                    prop_assert_eq!(fit_varchar(text, limit), Some(text));
                }
                if let Some(text_type) = TextType::of(field) {
                    let normal = text_type.normalize(text).expect("a kept value is valid");
                    prop_assert_eq!(normal.as_ref(), text, "{:?} not normalised", text_type);
                }
            }
        }

        // Alone, each record gives the same row, or is refused too.
        for (i, value) in refs.iter().enumerate() {
            let alone = decoder.decode(std::slice::from_ref(value));
            let in_chunk = out.rows.iter().position(|&r| r == i);
            match in_chunk {
                Some(r) => {
                    prop_assert_eq!(
                        alone.batch.num_rows(),
                        1,
                        "record {} decoded in the chunk but not alone: {:?}",
                        i,
                        alone.errors
                    );
                    prop_assert_eq!(row(&alone.batch, 0), row(&out.batch, r), "record {}", i);
                }
                None => prop_assert_eq!(
                    alone.batch.num_rows(),
                    0,
                    "record {} refused in the chunk but decoded alone",
                    i
                ),
            }
        }
    }
}

/// Two string columns and an id: what the regression cases below need.
fn id_name_z() -> Schema {
    Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("z", DataType::Utf8, true),
    ])
}

// Found by `fuzz_record_decoding_accounts_for_every_record`: joined with line breaks for the
// one-pass decode, a record cut short was completed by the next one, and the chunk still gave
// as many rows as records, so two bad records were stored as two made-up rows.

#[test]
fn a_json_record_cut_short_is_not_completed_by_the_next() {
    let d = RecordDecoder::new(Format::Json, &id_name_z());
    let out = d.decode(&[Some(br#"{"id":1,"name":"#), Some(br#""x"}{"id":2}"#)]);
    assert!(out.rows.is_empty(), "{:?}", out.batch);
    let bad: Vec<usize> = out.errors.iter().map(|(i, _)| *i).collect();
    assert_eq!(bad, vec![0, 1]);
}

#[test]
fn a_csv_record_with_an_open_quote_is_not_closed_by_the_next() {
    let d = RecordDecoder::new(Format::Csv, &id_name_z());
    let out = d.decode(&[Some(b"1,\"x"), Some(b"\",2\n5,6,7"), Some(b"8,y,z")]);
    assert_eq!(out.rows, vec![2]);
    let bad: Vec<usize> = out.errors.iter().map(|(i, _)| *i).collect();
    assert_eq!(bad, vec![0, 1]);
}

// Found by `fuzz_record_decoding_accounts_for_every_record`: arrow-cast's `parse_decimal`
// counts a number's digits in a `u8`; `f64::MAX` written out (309 digits) for a decimal column
// overflowed it, a panic in a debug build and a wrong value in a release build.

#[test]
fn a_decimal_with_hundreds_of_digits_is_a_bad_record() {
    let schema = Schema::new(vec![
        Field::new("a", DataType::Decimal128(38, 10), true),
        Field::new("b", DataType::Utf8, true),
    ]);
    let huge = f64::MAX.to_string();
    assert!(huge.len() > 300);
    let json = format!(r#"{{"a":{huge},"b":"x"}}"#);
    let json_string = format!(r#"{{"a":"-{huge}.5"}}"#);
    let out = RecordDecoder::new(Format::Json, &schema).decode(&[
        Some(json.as_bytes()),
        Some(json_string.as_bytes()),
        Some(br#"{"a":1.5}"#),
    ]);
    assert_eq!(out.rows, vec![2]);
    assert!(
        out.errors[0].1.contains("numeric field overflow"),
        "{:?}",
        out.errors
    );
    let csv = format!("{huge},x");
    let out =
        RecordDecoder::new(Format::Csv, &schema).decode(&[Some(csv.as_bytes()), Some(b"2.5,y")]);
    assert_eq!(out.rows, vec![1]);
    assert!(
        out.errors[0].1.contains("numeric field overflow"),
        "{:?}",
        out.errors
    );
    // Leading zeros are not digits that count, and a long string in a text column is no number.
    let zeros = format!(r#"{{"a":"{}1.5","b":"{huge}"}}"#, "0".repeat(300));
    let out = RecordDecoder::new(Format::Json, &schema).decode(&[Some(zeros.as_bytes())]);
    assert_eq!(out.rows, vec![0], "{:?}", out.errors);
}

// Found by `fuzz_record_decoding_accounts_for_every_record` (a long run): the same parser
// reads an exponent into an `i16`, which `1e308100` overflowed.

#[test]
fn a_decimal_with_a_huge_exponent_is_a_bad_record() {
    let schema = Schema::new(vec![Field::new("a", DataType::Decimal128(38, 10), true)]);
    let fraction = format!("0.{}e1", "1".repeat(40_000));
    // `1e308-100` too: Arrow's parser takes the sign anywhere in the exponent (a long run).
    let values = [
        "1e308100",
        "-1.5E-99999",
        &fraction,
        "1e308-100",
        "1.5e3",
        "1e0001",
    ];
    for format in [Format::Csv, Format::Json] {
        let records: Vec<String> = values
            .iter()
            .map(|v| match format {
                Format::Csv => v.to_string(),
                Format::Json => format!(r#"{{"a":{v}}}"#),
            })
            .collect();
        let refs: Vec<Option<&[u8]>> = records.iter().map(|r| Some(r.as_bytes())).collect();
        let out = RecordDecoder::new(format, &schema).decode(&refs);
        assert_eq!(out.rows, vec![4, 5], "{format:?}: {:?}", out.errors);
        assert!(out.errors[0].1.contains("exponent"), "{:?}", out.errors);
        assert!(
            out.errors[2].1.contains("fractional digits"),
            "{:?}",
            out.errors
        );
    }
}

// Found by `fuzz_record_decoding_accounts_for_every_record` (a long run): arrow-csv checks that
// a batch's field bytes, concatenated, are UTF-8, then cuts each field out without checking;
// a field ending inside a character that the next field finishes made a `str` that is not
// UTF-8 (undefined behaviour; a debug build aborted).

#[test]
fn a_csv_record_split_inside_a_character_is_a_bad_record() {
    let schema = Schema::new(vec![
        Field::new("a", DataType::Utf8, true),
        Field::new("b", DataType::Utf8, true),
    ]);
    let d = RecordDecoder::new(Format::Csv, &schema);
    // "é" is C3 A9: split by the delimiter, or across two records.
    let out = d.decode(&[
        Some(b"\xc3,\xa9"),
        Some(b"x,\xc3"),
        Some(b"\xa9,y"),
        Some("é,ü".as_bytes()),
    ]);
    assert_eq!(out.rows, vec![3], "{:?}", out.errors);
    let bad: Vec<usize> = out.errors.iter().map(|(i, _)| *i).collect();
    assert_eq!(bad, vec![0, 1, 2]);
}

// Found by `fuzz_record_decoding_accounts_for_every_record` (a long run): a record that ended
// one row and then opened a quote added exactly one row, as a record should, and the next
// record closed its quote: the chunk stored rows neither record has alone.

#[test]
fn a_csv_record_that_opens_a_quote_after_a_row_is_bad() {
    let schema = Schema::new(vec![Field::new("a", DataType::Utf8, true)]);
    let d = RecordDecoder::new(Format::Csv, &schema);
    let out = d.decode(&[Some(b" \n\""), Some(b"1000\""), Some(b"\"a\nb\"")]);
    // Alone, the second record is the one value `1000"` (a quote inside an unquoted field is
    // a character), and the third a quoted field with a line break in it.
    assert_eq!(out.rows, vec![1, 2], "{:?}", out.errors);
    let a = out
        .batch
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!(a.value(0), "1000\"");
    assert_eq!(a.value(1), "a\nb");
    let bad: Vec<usize> = out.errors.iter().map(|(i, _)| *i).collect();
    assert_eq!(bad, vec![0]);
}
