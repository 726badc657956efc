//! Fuzz properties of COPY framing ([`crate::copy_format`]): the COPY FROM decoders (text, CSV
//! and binary) read arbitrary bytes into rows or a [`PgError`], never a panic, and read the
//! same rows (or fail the same way) however the bytes are split into CopyData messages; rows
//! written by the COPY TO encoder in text or CSV read back as the same values.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use proptest::prelude::*;

use crate::copy_format::{BinaryCopyDecoder, CopyDecoder, CopyEncoder, CopyFormat, CopyOutFormat};
use crate::error::PgError;
use crate::types::OutputStyle;

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
                        let c = c
                            .as_any()
                            .downcast_ref::<StringArray>()
                            .expect("COPY decodes to string columns");
                        c.is_valid(r).then(|| c.value(r).to_string())
                    })
                    .collect(),
            );
        }
    }
    rows
}

/// What a COPY FROM made of its input: the rows of the batches it emitted, and how it ended
/// (the row count of `finish`, or the first error, after which the server stops reading).
#[derive(Debug, PartialEq)]
struct Outcome {
    rows: Rows,
    end: Result<u64, PgError>,
}

/// The two COPY FROM decoders behind one interface.
trait Decode {
    fn write(&mut self, data: &[u8], out: &mut Vec<RecordBatch>) -> Result<(), PgError>;
    fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<u64, PgError>;
}

impl Decode for CopyDecoder {
    fn write(&mut self, data: &[u8], out: &mut Vec<RecordBatch>) -> Result<(), PgError> {
        CopyDecoder::write(self, data, out)
    }
    fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<u64, PgError> {
        CopyDecoder::finish(self, out)
    }
}

impl Decode for BinaryCopyDecoder {
    fn write(&mut self, data: &[u8], out: &mut Vec<RecordBatch>) -> Result<(), PgError> {
        BinaryCopyDecoder::write(self, data, out)
    }
    fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<u64, PgError> {
        BinaryCopyDecoder::finish(self, out)
    }
}

/// Feeds `data` to `decoder` split at the (sorted, deduplicated) `cuts`, then finishes.
fn run(mut decoder: impl Decode, data: &[u8], cuts: &[usize]) -> Outcome {
    let mut out = Vec::new();
    let mut start = 0;
    let mut end = Ok(0);
    for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
        if let Err(e) = decoder.write(&data[start..cut], &mut out) {
            end = Err(e);
            break;
        }
        start = cut;
    }
    if end.is_ok() {
        end = decoder.finish(&mut out);
    }
    let rows = rows_of(&out);
    if let Ok(n) = &end {
        assert_eq!(*n as usize, rows.len(), "finish counts the rows it emitted");
    }
    Outcome { rows, end }
}

/// Chunk boundaries inside `len` bytes (from random fractions, so they shrink well).
fn cuts_in(len: usize, fractions: &[f64]) -> Vec<usize> {
    let mut cuts: Vec<usize> = fractions
        .iter()
        .map(|f| ((len as f64) * f) as usize)
        .filter(|&c| c <= len)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Bytes drawn mostly from the characters COPY framing gives meaning to.
fn copy_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let special = prop::sample::select(b"\t,\"\\.N\n\r ax0178|'\xff\xc3\xa9".to_vec());
    prop_oneof![
        3 => prop::collection::vec(special, 0..max),
        1 => prop::collection::vec(any::<u8>(), 0..max),
    ]
}

/// Any format the decoder might be built with, including ones Postgres would refuse: the
/// decoder must not panic on them either.
fn any_format() -> impl Strategy<Value = CopyFormat> {
    let byte = prop::sample::select(b"\t,\"\\|;'\n\rNxa. ".to_vec());
    (
        any::<bool>(),
        any::<bool>(),
        byte.clone(),
        byte.clone(),
        byte,
        prop::sample::select(vec!["\\N", "", "NULL", "\\", "\"", ",", "\t", "\\."]),
    )
        .prop_map(|(csv, header, delimiter, quote, escape, null)| CopyFormat {
            csv,
            header,
            delimiter,
            quote,
            escape,
            null: null.as_bytes().to_vec(),
        })
}

/// A format Postgres accepts (its checks in `ProcessCopyOptions`): the delimiter and quote
/// are not line breaks, a text delimiter is not a backslash, letter or digit (those start
/// escapes), the NULL string has no line break, delimiter or CSV quote in it, and the CSV
/// delimiter differs from the quote.
///
/// A CSV quote or delimiter of `\` is left out: a row can then begin with `\.` and a line
/// break (the quoted value `.` and a line break, or an empty field and `.`), which is the
/// end-of-data marker to Runnel and Postgres alike, so no writer can round-trip it.
fn valid_format() -> impl Strategy<Value = CopyFormat> {
    // Built valid rather than filtered, so that long runs are not cut short by rejections:
    // the delimiter and quote are drawn from what differs, and the NULL string loses them.
    let without = |null: String, bytes: &[u8]| -> Vec<u8> {
        null.into_bytes()
            .into_iter()
            .filter(|b| !bytes.contains(b))
            .collect()
    };
    let text = (
        prop::sample::select(b"\t,|;: !#~'\"".to_vec()),
        any::<bool>(),
        prop_oneof![
            3 => Just("\\N".to_string()),
            1 => "[a-zA-Z _\\-'|;,]{0,4}",
        ],
    )
        .prop_map(move |(delimiter, header, null)| CopyFormat {
            header,
            delimiter,
            null: without(null, &[delimiter]),
            ..CopyFormat::text()
        });
    let csv = (
        prop::sample::select(b"\"'|".to_vec()),
        prop::sample::select(b",\t|;'\"".to_vec()),
        prop::sample::select(b"\"'\\|,".to_vec()),
        any::<bool>(),
        prop_oneof![
            3 => Just(String::new()),
            1 => "[a-zA-Z _\\\\'\"|,\t]{0,4}",
        ],
    )
        .prop_map(move |(quote, delimiter, escape, header, null)| {
            // The delimiter must differ from the quote: `;` stands in for it.
            let delimiter = if delimiter == quote { b';' } else { delimiter };
            CopyFormat {
                header,
                delimiter,
                quote,
                escape,
                null: without(null, &[delimiter, quote]),
                ..CopyFormat::csv()
            }
        });
    prop_oneof![text, csv]
}

/// Values with every character COPY escapes or quotes, and the strings that look like its
/// markers (`\N`, `\.`, the empty string).
fn copy_value() -> impl Strategy<Value = Option<String>> {
    let piece = prop::sample::select(vec![
        "\t", "\n", "\r", "\r\n", "\\", "\"", "'", ",", "|", ";", ":", "!", "#", "~", " ", "a",
        "N", "\\N", "\\.", ".", "NULL", "\u{8}", "\u{b}", "\u{c}", "\0", "é", "日本", "x",
    ]);
    prop_oneof![
        1 => Just(None),
        4 => prop::collection::vec(piece, 0..5).prop_map(|p| Some(p.concat())),
        1 => any::<String>().prop_map(Some),
    ]
}

fn string_batch(rows: &Rows, columns: usize) -> RecordBatch {
    let arrays: Vec<ArrayRef> = (0..columns)
        .map(|c| {
            Arc::new(StringArray::from(
                rows.iter().map(|r| r[c].clone()).collect::<Vec<_>>(),
            )) as ArrayRef
        })
        .collect();
    let fields: Vec<Field> = (0..columns)
        .map(|c| Field::new(format!("c{c}"), DataType::Utf8, true))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("columns match")
}

/// Whether text format can tell `value` from NULL: a value whose written form is the NULL
/// string is read back as NULL by Postgres too (the documented ambiguity of a custom NULL
/// string in text format). The written form of a value with no escapable byte is the value.
fn text_distinguishes(format: &CopyFormat, value: &str) -> bool {
    format.csv || value.as_bytes() != format.null.as_slice()
}

/// The Postgres type OIDs the binary decoder turns into text (what asyncpg sends).
const BINARY_OIDS: [u32; 18] = [
    16, 17, 20, 21, 23, 25, 114, 700, 701, 1043, 1082, 1083, 1114, 1184, 1186, 1700, 2950, 3802,
];

fn binary_bytes() -> impl Strategy<Value = Vec<u8>> {
    // A valid header followed by field counts and lengths that are mostly plausible, so the
    // value decoders are reached; sometimes the header itself is damaged.
    let field = prop_oneof![
        Just(vec![0xff, 0xff, 0xff, 0xff]),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(|v| {
            let mut out = (v.len() as i32).to_be_bytes().to_vec();
            out.extend(v);
            out
        }),
        prop::collection::vec(any::<u8>(), 0..6),
    ];
    let row = (0i16..4, prop::collection::vec(field, 0..4)).prop_map(|(count, fields)| {
        let mut out = count.to_be_bytes().to_vec();
        out.extend(fields.concat());
        out
    });
    (
        any::<bool>(),
        prop::collection::vec(row, 0..4),
        any::<bool>(),
    )
        .prop_map(|(good_header, rows, trailer)| {
            let mut out = if good_header {
                b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec()
            } else {
                b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\x7f\xff".to_vec()
            };
            out.extend(rows.concat());
            if trailer {
                out.extend((-1i16).to_be_bytes());
            }
            out
        })
}

proptest! {
    #![proptest_config(runnel_fuzz::config(4096))]

    /// Text and CSV COPY FROM: arbitrary bytes, in any format, give rows or a PgError, and
    /// the same outcome whether sent whole or in pieces.
    #[test]
    fn fuzz_copy_in_chunks_decode_like_the_whole(
        format in any_format(),
        columns in 0usize..4,
        batch_rows in 1usize..4,
        data in copy_bytes(64),
        fractions in prop::collection::vec(0.0f64..=1.0, 0..6),
    ) {
        let whole = run(CopyDecoder::new(format.clone(), columns, batch_rows), &data, &[]);
        let cuts = cuts_in(data.len(), &fractions);
        let split = run(CopyDecoder::new(format.clone(), columns, batch_rows), &data, &cuts);
        prop_assert_eq!(&whole, &split, "cuts {:?}", cuts);
        // Byte by byte is the most extreme split.
        let every: Vec<usize> = (1..data.len()).collect();
        let bytewise = run(CopyDecoder::new(format, columns, batch_rows), &data, &every);
        prop_assert_eq!(&whole, &bytewise);
        if let Err(e) = &whole.end {
            prop_assert!(["22P04", "22021"].contains(&e.sqlstate.as_str()), "{}", e);
        }
    }

    /// Binary COPY FROM: the same, with field values decoded by type.
    #[test]
    fn fuzz_copy_in_binary_chunks_decode_like_the_whole(
        oids in prop::collection::vec(prop::sample::select(BINARY_OIDS.to_vec()), 0..4),
        batch_rows in 1usize..4,
        data in prop_oneof![3 => binary_bytes(), 1 => copy_bytes(64)],
        fractions in prop::collection::vec(0.0f64..=1.0, 0..6),
    ) {
        let whole = run(BinaryCopyDecoder::new(oids.clone(), batch_rows), &data, &[]);
        let cuts = cuts_in(data.len(), &fractions);
        let split = run(BinaryCopyDecoder::new(oids, batch_rows), &data, &cuts);
        prop_assert_eq!(&whole, &split, "cuts {:?}", cuts);
        if let Err(e) = &whole.end {
            prop_assert_eq!(e.sqlstate.as_str(), "22P04", "{}", e);
        }
    }

    /// What COPY TO writes in text or CSV (any format Postgres accepts, header or not), COPY
    /// FROM with the same options reads back as the same values, NULLs and empty strings
    /// apart.
    #[test]
    fn fuzz_copy_out_then_in_round_trips(
        format in valid_format(),
        columns in 1usize..4,
        rows in prop::collection::vec(prop::collection::vec(copy_value(), 3), 0..6),
        header in prop::collection::vec("[a-z\t,\"|\\\\ ]{0,4}", 3),
    ) {
        let rows: Rows = rows
            .into_iter()
            .map(|mut r| {
                r.truncate(columns);
                r
            })
            .collect();
        // A text value written as the NULL string reads back as NULL (Postgres's documented
        // ambiguity of a custom NULL string): such a value gets a character no generated NULL
        // string has.
        let rows: Rows = rows
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|v| v.map(|v| if text_distinguishes(&format, &v) { v } else { v + "é" }))
                    .collect()
            })
            .collect();
        let mut encoder =
            CopyEncoder::new(CopyOutFormat::Text(format.clone()), OutputStyle::default());
        let mut data = Vec::new();
        let names: Vec<&str> = header[..columns].iter().map(String::as_str).collect();
        encoder.start(&names, &mut data);
        let mut row_ends = Vec::new();
        encoder
            .write(&string_batch(&rows, columns), &mut data, &mut row_ends)
            .unwrap();
        encoder.finish(&mut data);
        prop_assert_eq!(row_ends.len(), rows.len());
        let back = run(CopyDecoder::new(format, columns, 2), &data, &[]);
        prop_assert_eq!(
            back,
            Outcome { end: Ok(rows.len() as u64), rows },
            "data {:?}",
            String::from_utf8_lossy(&data)
        );
    }
}
