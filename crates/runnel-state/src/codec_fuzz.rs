//! Fuzz properties of the key codec ([`crate::codec`]): random rows of every supported type
//! round-trip, their encodings sort as the values do, and arbitrary bytes decode to arrays or a
//! [`CodecError`], never a panic.
//!
//! Values are generated as DataFusion [`ScalarValue`]s, so the expected arrays are built and
//! compared by DataFusion rather than by the codec; the expected order is DataFusion's order of
//! scalars (which the module docs promise for strings, binaries and intervals), except for
//! floats, where the codec documents Postgres's order (`-0.0 = +0.0`, NaN last).

use std::cmp::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{
    DataType, IntervalDayTime, IntervalMonthDayNano, IntervalUnit, TimeUnit,
};
use datafusion::common::ScalarValue;
use proptest::prelude::*;

use crate::codec::{
    check_supported, decode_rows, encode_rows, encode_scalar, skip_columns, CodecError, EncodedRows,
};

/// Every type the codec supports, with the timestamp time zones and decimal shapes that change
/// how a value is typed (not how it is encoded).
fn supported_types() -> Vec<DataType> {
    use DataType as D;
    let mut types = vec![
        D::Null,
        D::Boolean,
        D::Int8,
        D::Int16,
        D::Int32,
        D::Int64,
        D::UInt8,
        D::UInt16,
        D::UInt32,
        D::UInt64,
        D::Float32,
        D::Float64,
        D::Decimal128(38, 0),
        D::Decimal128(38, 10),
        D::Decimal128(5, 2),
        D::Date32,
        D::Date64,
        D::Time32(TimeUnit::Second),
        D::Time32(TimeUnit::Millisecond),
        D::Time64(TimeUnit::Microsecond),
        D::Time64(TimeUnit::Nanosecond),
        D::Interval(IntervalUnit::YearMonth),
        D::Interval(IntervalUnit::DayTime),
        D::Interval(IntervalUnit::MonthDayNano),
        D::Utf8,
        D::LargeUtf8,
        D::Utf8View,
        D::Binary,
        D::LargeBinary,
        D::BinaryView,
    ];
    for unit in [
        TimeUnit::Second,
        TimeUnit::Millisecond,
        TimeUnit::Microsecond,
        TimeUnit::Nanosecond,
    ] {
        types.push(D::Timestamp(unit, None));
        types.push(D::Timestamp(unit, Some(Arc::from("UTC"))));
        types.push(D::Timestamp(unit, Some(Arc::from("+05:30"))));
        types.push(D::Duration(unit));
    }
    types
}

fn any_type() -> impl Strategy<Value = DataType> {
    prop::sample::select(supported_types())
}

/// Integers biased towards the edges, where sign-bit flipping and byte order go wrong.
fn edgy_i64(min: i64, max: i64) -> BoxedStrategy<i64> {
    prop_oneof![
        2 => prop::sample::select(vec![min, max, -1, 0, 1, min + 1, max - 1]),
        1 => (-3i64..=3).prop_map(move |v| v.clamp(min, max)),
        3 => min..=max,
    ]
    .boxed()
}

fn edgy_u64(max: u64) -> BoxedStrategy<u64> {
    prop_oneof![
        2 => prop::sample::select(vec![0, 1, max, max - 1, max / 2, max / 2 + 1]),
        3 => 0..=max,
    ]
    .boxed()
}

fn edgy_f64() -> BoxedStrategy<f64> {
    prop_oneof![
        2 => prop::sample::select(vec![
            0.0,
            -0.0,
            f64::NAN,
            -f64::NAN,
            // A NaN with a payload: still one canonical NaN after the round trip.
            f64::from_bits(0x7FF0_0000_0000_0001),
            f64::from_bits(0xFFF0_0000_0000_0001),
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN,
            f64::MAX,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            f64::EPSILON,
            // Subnormals.
            f64::from_bits(1),
            -f64::from_bits(1),
            1.0,
            -1.0,
        ]),
        3 => any::<f64>(),
        1 => any::<u64>().prop_map(f64::from_bits),
    ]
    .boxed()
}

fn edgy_f32() -> BoxedStrategy<f32> {
    prop_oneof![
        2 => prop::sample::select(vec![
            0.0f32,
            -0.0,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7F80_0001),
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN,
            f32::MAX,
            f32::from_bits(1),
            -f32::from_bits(1),
        ]),
        3 => any::<f32>(),
        1 => any::<u32>().prop_map(f32::from_bits),
    ]
    .boxed()
}

/// Strings with the bytes the escaping is about (`00`, and `FF` through U+00FF's and other
/// characters' UTF-8) and proper prefixes of each other.
fn edgy_string() -> BoxedStrategy<String> {
    prop_oneof![
        prop::sample::select(vec![
            String::new(),
            "\0".to_string(),
            "\0\0".to_string(),
            "a".to_string(),
            "a\0".to_string(),
            "a\0b".to_string(),
            "ab".to_string(),
            "\u{ff}".to_string(),
            "\u{10FFFF}".to_string(),
        ]),
        prop::collection::vec(
            prop_oneof![
                Just('\0'),
                Just('a'),
                Just('b'),
                Just('\u{ff}'),
                Just('\u{10FFFF}')
            ],
            0..6
        )
        .prop_map(|chars| chars.into_iter().collect()),
        any::<String>(),
    ]
    .boxed()
}

fn edgy_bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        prop::collection::vec(prop::sample::select(vec![0u8, 1, 0xFE, 0xFF, b'a']), 0..6),
        prop::collection::vec(any::<u8>(), 0..40),
    ]
    .boxed()
}

/// The largest unscaled value of a decimal of precision `p`.
fn decimal_max(p: u8) -> i128 {
    10i128.pow(u32::from(p)) - 1
}

/// A non-NULL value of `data_type`.
fn value_of(data_type: &DataType) -> BoxedStrategy<ScalarValue> {
    use DataType as D;
    use ScalarValue as S;
    match data_type.clone() {
        D::Null => Just(S::Null).boxed(),
        D::Boolean => any::<bool>().prop_map(|v| S::Boolean(Some(v))).boxed(),
        D::Int8 => edgy_i64(i8::MIN.into(), i8::MAX.into())
            .prop_map(|v| S::Int8(Some(v as i8)))
            .boxed(),
        D::Int16 => edgy_i64(i16::MIN.into(), i16::MAX.into())
            .prop_map(|v| S::Int16(Some(v as i16)))
            .boxed(),
        D::Int32 => edgy_i32().prop_map(|v| S::Int32(Some(v))).boxed(),
        D::Int64 => edgy_i64(i64::MIN, i64::MAX)
            .prop_map(|v| S::Int64(Some(v)))
            .boxed(),
        D::UInt8 => edgy_u64(u8::MAX.into())
            .prop_map(|v| S::UInt8(Some(v as u8)))
            .boxed(),
        D::UInt16 => edgy_u64(u16::MAX.into())
            .prop_map(|v| S::UInt16(Some(v as u16)))
            .boxed(),
        D::UInt32 => edgy_u64(u32::MAX.into())
            .prop_map(|v| S::UInt32(Some(v as u32)))
            .boxed(),
        D::UInt64 => edgy_u64(u64::MAX).prop_map(|v| S::UInt64(Some(v))).boxed(),
        D::Float32 => edgy_f32().prop_map(|v| S::Float32(Some(v))).boxed(),
        D::Float64 => edgy_f64().prop_map(|v| S::Float64(Some(v))).boxed(),
        D::Decimal128(p, s) => {
            let max = decimal_max(p);
            prop_oneof![
                prop::sample::select(vec![-max, -1, 0, 1, max]),
                (-max..=max),
            ]
            .prop_map(move |v| S::Decimal128(Some(v), p, s))
            .boxed()
        }
        D::Date32 => edgy_i32().prop_map(|v| S::Date32(Some(v))).boxed(),
        D::Date64 => edgy_i64(i64::MIN, i64::MAX)
            .prop_map(|v| S::Date64(Some(v)))
            .boxed(),
        D::Time32(TimeUnit::Second) => edgy_i32().prop_map(|v| S::Time32Second(Some(v))).boxed(),
        D::Time32(_) => edgy_i32()
            .prop_map(|v| S::Time32Millisecond(Some(v)))
            .boxed(),
        D::Time64(TimeUnit::Microsecond) => edgy_i64(i64::MIN, i64::MAX)
            .prop_map(|v| S::Time64Microsecond(Some(v)))
            .boxed(),
        D::Time64(_) => edgy_i64(i64::MIN, i64::MAX)
            .prop_map(|v| S::Time64Nanosecond(Some(v)))
            .boxed(),
        D::Timestamp(unit, tz) => edgy_i64(i64::MIN, i64::MAX)
            .prop_map(move |v| match unit {
                TimeUnit::Second => S::TimestampSecond(Some(v), tz.clone()),
                TimeUnit::Millisecond => S::TimestampMillisecond(Some(v), tz.clone()),
                TimeUnit::Microsecond => S::TimestampMicrosecond(Some(v), tz.clone()),
                TimeUnit::Nanosecond => S::TimestampNanosecond(Some(v), tz.clone()),
            })
            .boxed(),
        D::Duration(unit) => edgy_i64(i64::MIN, i64::MAX)
            .prop_map(move |v| match unit {
                TimeUnit::Second => S::DurationSecond(Some(v)),
                TimeUnit::Millisecond => S::DurationMillisecond(Some(v)),
                TimeUnit::Microsecond => S::DurationMicrosecond(Some(v)),
                TimeUnit::Nanosecond => S::DurationNanosecond(Some(v)),
            })
            .boxed(),
        D::Interval(IntervalUnit::YearMonth) => edgy_i32()
            .prop_map(|v| S::IntervalYearMonth(Some(v)))
            .boxed(),
        D::Interval(IntervalUnit::DayTime) => (edgy_i32(), edgy_i32())
            .prop_map(|(days, ms)| S::IntervalDayTime(Some(IntervalDayTime::new(days, ms))))
            .boxed(),
        D::Interval(IntervalUnit::MonthDayNano) => {
            (edgy_i32(), edgy_i32(), edgy_i64(i64::MIN, i64::MAX))
                .prop_map(|(months, days, nanos)| {
                    S::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(months, days, nanos)))
                })
                .boxed()
        }
        D::Utf8 => edgy_string().prop_map(|v| S::Utf8(Some(v))).boxed(),
        D::LargeUtf8 => edgy_string().prop_map(|v| S::LargeUtf8(Some(v))).boxed(),
        D::Utf8View => edgy_string().prop_map(|v| S::Utf8View(Some(v))).boxed(),
        D::Binary => edgy_bytes().prop_map(|v| S::Binary(Some(v))).boxed(),
        D::LargeBinary => edgy_bytes().prop_map(|v| S::LargeBinary(Some(v))).boxed(),
        D::BinaryView => edgy_bytes().prop_map(|v| S::BinaryView(Some(v))).boxed(),
        other => unreachable!("not in supported_types: {other}"),
    }
}

fn edgy_i32() -> BoxedStrategy<i32> {
    edgy_i64(i32::MIN.into(), i32::MAX.into())
        .prop_map(|v| v as i32)
        .boxed()
}

/// A value of `data_type` or, one time in five, its NULL.
fn nullable_value_of(data_type: &DataType) -> BoxedStrategy<ScalarValue> {
    let null = ScalarValue::try_from(data_type).expect("every supported type has a NULL");
    prop_oneof![1 => Just(null), 4 => value_of(data_type)].boxed()
}

/// Column types and rows of values of those types (`rows[r][c]`).
#[derive(Debug, Clone)]
struct Table {
    types: Vec<DataType>,
    rows: Vec<Vec<ScalarValue>>,
}

fn table(max_columns: usize, max_rows: usize) -> impl Strategy<Value = Table> {
    prop::collection::vec(any_type(), 1..=max_columns).prop_flat_map(move |types| {
        let row = types.iter().map(nullable_value_of).collect::<Vec<_>>();
        prop::collection::vec(row, 0..=max_rows).prop_map(move |rows| Table {
            types: types.clone(),
            rows,
        })
    })
}

impl Table {
    fn columns(&self) -> Vec<ArrayRef> {
        (0..self.types.len())
            .map(|c| {
                if self.rows.is_empty() {
                    return datafusion::arrow::array::new_empty_array(&self.types[c]);
                }
                ScalarValue::iter_to_array(self.rows.iter().map(|row| row[c].clone()))
                    .expect("values of one type build an array")
            })
            .collect()
    }
}

/// The value the codec promises to give back: floats canonicalised (`-0.0` as `+0.0`, every
/// NaN as the quiet NaN), everything else unchanged.
fn canonical(value: &ScalarValue) -> ScalarValue {
    match value {
        ScalarValue::Float64(Some(v)) if v.is_nan() => ScalarValue::Float64(Some(f64::NAN)),
        ScalarValue::Float64(Some(v)) if *v == 0.0 => ScalarValue::Float64(Some(0.0)),
        ScalarValue::Float32(Some(v)) if v.is_nan() => ScalarValue::Float32(Some(f32::NAN)),
        ScalarValue::Float32(Some(v)) if *v == 0.0 => ScalarValue::Float32(Some(0.0)),
        other => other.clone(),
    }
}

/// Postgres's float order: `-0.0 = +0.0`, NaNs equal to each other and above `+inf`.
fn float_cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).expect("non-NaN floats are ordered"),
    }
}

/// The SQL order of two values of one column, `NULLS FIRST`.
fn value_cmp(a: &ScalarValue, b: &ScalarValue) -> Ordering {
    match (a.is_null(), b.is_null()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Less,
        (false, true) => return Ordering::Greater,
        (false, false) => {}
    }
    match (a, b) {
        (ScalarValue::Float64(Some(x)), ScalarValue::Float64(Some(y))) => float_cmp(*x, *y),
        (ScalarValue::Float32(Some(x)), ScalarValue::Float32(Some(y))) => {
            float_cmp(f64::from(*x), f64::from(*y))
        }
        _ => a
            .partial_cmp(b)
            .unwrap_or_else(|| panic!("values of one type are ordered: {a:?} vs {b:?}")),
    }
}

fn tuple_cmp(a: &[ScalarValue], b: &[ScalarValue]) -> Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| value_cmp(x, y))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

fn encode(prefix: &[u8], table: &Table) -> EncodedRows {
    let mut out = EncodedRows::new();
    encode_rows(prefix, &table.columns(), &mut out).expect("supported types encode");
    out
}

proptest! {
    #![proptest_config(runnel_fuzz::config(4096))]

    /// decode(encode(rows)) gives the rows back (floats canonicalised), whatever the prefix,
    /// and each row's columns can be walked with `skip_columns` to exactly its end.
    #[test]
    fn fuzz_codec_round_trip(
        table in table(5, 8),
        prefix in prop::collection::vec(any::<u8>(), 0..3),
    ) {
        let encoded = encode(&prefix, &table);
        prop_assert_eq!(encoded.len(), table.rows.len());
        let bodies: Vec<&[u8]> = encoded
            .iter()
            .map(|row| {
                assert!(row.starts_with(&prefix), "every row starts with the prefix");
                &row[prefix.len()..]
            })
            .collect();
        for body in &bodies {
            prop_assert_eq!(skip_columns(body, &table.types).unwrap(), body.len());
        }
        let decoded = decode_rows(bodies.iter().copied(), &table.types).unwrap();
        prop_assert_eq!(decoded.len(), table.types.len());
        for (c, array) in decoded.iter().enumerate() {
            prop_assert_eq!(array.data_type(), &table.types[c]);
            prop_assert_eq!(array.len(), table.rows.len());
            for (r, row) in table.rows.iter().enumerate() {
                let got = ScalarValue::try_from_array(array, r).unwrap();
                prop_assert_eq!(got, canonical(&row[c]), "row {} column {}", r, c);
            }
        }
        // Decoding a leading subset of the columns ignores the rest of each row.
        let first = &table.types[..1];
        let decoded_first = decode_rows(bodies.iter().copied(), first).unwrap();
        prop_assert_eq!(decoded_first[0].to_data(), decoded[0].to_data());
    }

    /// Byte order of encoded rows is the SQL order of the tuples (`NULLS FIRST` in every
    /// column), and `encode_scalar` writes the same bytes as a one-value column.
    #[test]
    fn fuzz_codec_byte_order_is_value_order(table in table(3, 8)) {
        let encoded = encode(&[], &table);
        for i in 0..table.rows.len() {
            for j in 0..table.rows.len() {
                let bytes = encoded.row(i).cmp(encoded.row(j));
                let values = tuple_cmp(&table.rows[i], &table.rows[j]);
                prop_assert_eq!(
                    bytes,
                    values,
                    "rows {:?} and {:?}",
                    &table.rows[i],
                    &table.rows[j]
                );
            }
        }
        for (r, row) in table.rows.iter().enumerate() {
            let mut bytes = Vec::new();
            for value in row {
                encode_scalar(value, &mut bytes).unwrap();
            }
            prop_assert_eq!(&bytes[..], encoded.row(r));
        }
    }

    /// Arbitrary bytes decode to arrays of the requested types and one value per row, or to a
    /// `CodecError`; they never panic. What `skip_columns` accepts, `decode_rows` decodes.
    #[test]
    fn fuzz_codec_decode_arbitrary_bytes(
        types in prop::collection::vec(any_type(), 0..5),
        rows in prop::collection::vec(
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..48),
                // Mostly-valid shapes: markers, zero bytes and escapes, which reach deeper.
                prop::collection::vec(prop::sample::select(vec![0u8, 1, 0xFF, b'a']), 0..48),
            ],
            0..6,
        ),
    ) {
        let refs: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
        match decode_rows(refs.iter().copied(), &types) {
            Ok(arrays) => {
                prop_assert_eq!(arrays.len(), types.len());
                for (array, data_type) in arrays.iter().zip(&types) {
                    prop_assert_eq!(array.data_type(), data_type);
                    prop_assert_eq!(array.len(), rows.len());
                }
            }
            Err(CodecError::Corrupt(_)) => {}
            Err(other) => prop_assert!(false, "unexpected error kind: {other}"),
        }
        for row in &refs {
            match skip_columns(row, &types) {
                Ok(end) => {
                    prop_assert!(end <= row.len());
                    // The walk and the decoder agree on where values end; only the decoder
                    // checks what is inside them (a boolean's byte, a string's UTF-8).
                    if let Err(e) = decode_rows([*row], &types) {
                        let message = e.to_string();
                        prop_assert!(
                            message.contains("invalid boolean byte")
                                || message.contains("invalid UTF-8"),
                            "skip_columns accepted what decode_rows refused: {message}"
                        );
                    }
                }
                Err(CodecError::Corrupt(_)) => {
                    prop_assert!(decode_rows([*row], &types).is_err());
                }
                Err(other) => prop_assert!(false, "unexpected error kind: {other}"),
            }
        }
    }
}

#[test]
fn fuzz_codec_every_generated_type_is_supported() {
    // The properties assume every generated type encodes; a type the codec stops supporting
    // must fail here by name rather than as an `expect` deep inside a property.
    for data_type in supported_types() {
        check_supported(&data_type).unwrap();
    }
}
