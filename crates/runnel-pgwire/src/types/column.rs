//! Column-at-a-time encoding of record batches into DataRow messages.
//!
//! Each column of a batch is first encoded whole, in its wire format, into one reused byte
//! buffer plus an end offset per row; DataRows are then assembled row by row from those
//! buffers. Values are written straight into the buffer, so encoding allocates nothing per
//! value (except for `numeric` in binary, which goes through one scratch buffer per column).

use std::fmt;

use arrow::array::{Array, AsArray};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Date64Type, Decimal128Type, Decimal256Type,
    Decimal32Type, Decimal64Type, DurationMicrosecondType, DurationMillisecondType,
    DurationNanosecondType, DurationSecondType, Float16Type, Float32Type, Float64Type, Int16Type,
    Int32Type, Int64Type, Int8Type, IntervalDayTimeType, IntervalMonthDayNanoType, IntervalUnit,
    IntervalYearMonthType, Time32MillisecondType, Time32SecondType, Time64MicrosecondType,
    Time64NanosecondType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use bytes::{BufMut, BytesMut};

use super::format::{
    numeric_text_to_binary, push_display, write_bytea, write_date, write_date_styled,
    write_decimal, write_float4, write_float8, write_float_digits, write_interval,
    write_interval_styled, write_time, write_timestamp, write_timestamp_styled, write_timestamptz,
    ZoneLabel, PG_EPOCH_DAYS, PG_EPOCH_MICROS,
};
use super::style::{DateOrder, DateStyle, IntervalStyle, OutputStyle};
use super::Format;
use crate::error::PgError;
use pgwire::messages::data::DataRow;

/// Largest DataRow body sent; Postgres clients reject messages of 1 GiB and more anyway.
const MAX_ROW_SIZE: usize = (i32::MAX as usize) - 16;

/// One column of a batch encoded in its wire format.
#[derive(Debug, Default)]
struct EncodedColumn {
    data: Vec<u8>,
    /// End offset in `data` of each row's value.
    ends: Vec<usize>,
    nulls: Option<NullBuffer>,
}

impl EncodedColumn {
    fn reset(&mut self, array: &dyn Array) {
        self.data.clear();
        self.ends.clear();
        self.nulls = array.logical_nulls();
    }

    /// Writes every non-null value of `len` rows with `write`.
    fn fill(&mut self, len: usize, mut write: impl FnMut(&mut Vec<u8>, usize)) {
        self.ends.reserve(len);
        for row in 0..len {
            if self.nulls.as_ref().is_none_or(|nulls| nulls.is_valid(row)) {
                write(&mut self.data, row);
            }
            self.ends.push(self.data.len());
        }
    }

    /// Like [`fill`](Self::fill) for a writer that can fail.
    fn try_fill(
        &mut self,
        len: usize,
        mut write: impl FnMut(&mut Vec<u8>, usize) -> Result<(), PgError>,
    ) -> Result<(), PgError> {
        self.ends.reserve(len);
        for row in 0..len {
            if self.nulls.as_ref().is_none_or(|nulls| nulls.is_valid(row)) {
                write(&mut self.data, row)?;
            }
            self.ends.push(self.data.len());
        }
        Ok(())
    }

    fn value(&self, row: usize) -> Option<&[u8]> {
        if self.nulls.as_ref().is_some_and(|nulls| nulls.is_null(row)) {
            return None;
        }
        let start = if row == 0 { 0 } else { self.ends[row - 1] };
        Some(&self.data[start..self.ends[row]])
    }
}

/// Encodes batches into DataRow messages, reusing its column buffers from batch to batch.
#[derive(Debug, Default)]
pub(crate) struct RowEncoder {
    columns: Vec<EncodedColumn>,
    rows: usize,
    /// The session's DateStyle, IntervalStyle and extra_float_digits (text format only).
    style: OutputStyle,
}

impl RowEncoder {
    /// An encoder writing text in `style`.
    pub(crate) fn with_style(style: OutputStyle) -> Self {
        Self {
            style,
            ..Self::default()
        }
    }

    /// Text from now on is written in `style` (the session's settings may have changed).
    pub(crate) fn set_style(&mut self, style: OutputStyle) {
        self.style = style;
    }

    /// Encodes `batch`, column `i` in `formats[i]` (text when missing).
    pub(crate) fn encode(
        &mut self,
        batch: &RecordBatch,
        formats: &[Format],
    ) -> Result<(), PgError> {
        if i16::try_from(batch.num_columns()).is_err() {
            return Err(PgError::new(
                "54011",
                format!("result has too many columns: {}", batch.num_columns()),
            ));
        }
        if self.columns.len() < batch.num_columns() {
            self.columns
                .resize_with(batch.num_columns(), EncodedColumn::default);
        }
        let schema = batch.schema();
        for (index, array) in batch.columns().iter().enumerate() {
            let format = formats.get(index).copied().unwrap_or_default();
            let column = &mut self.columns[index];
            let text_type = super::text_type_oid(schema.field(index));
            match (format, text_type) {
                (Format::Binary, Some(oid @ (super::oid::JSONB | super::oid::UUID))) => {
                    column.reset(array.as_ref());
                    encode_binary_text_type(array.as_ref(), oid, column)?;
                }
                _ => encode_array(array.as_ref(), format, &self.style, column)?,
            }
        }
        self.columns.truncate(batch.num_columns());
        self.rows = batch.num_rows();
        Ok(())
    }

    /// Rows in the last encoded batch.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Columns in the last encoded batch.
    pub(crate) fn columns(&self) -> usize {
        self.columns.len()
    }

    /// The encoded value of `column` in `row` of the last encoded batch (`None` for NULL).
    pub(crate) fn value(&self, row: usize, column: usize) -> Option<&[u8]> {
        self.columns[column].value(row)
    }

    /// A DataRow for every row of the last encoded batch. The rows' bytes share one buffer,
    /// so a batch costs one allocation, not one per row.
    pub(crate) fn data_rows(&self) -> Result<Vec<DataRow>, PgError> {
        let mut sizes = Vec::with_capacity(self.rows);
        let mut total = 0usize;
        for row in 0..self.rows {
            let size = self.columns.iter().fold(0usize, |size, column| {
                size.saturating_add(4 + column.value(row).map_or(0, <[u8]>::len))
            });
            if size > MAX_ROW_SIZE {
                return Err(PgError::new(
                    "54000",
                    format!("result row of {size} bytes is too large to send"),
                ));
            }
            sizes.push(size);
            total = total.saturating_add(size);
        }
        let mut out = BytesMut::with_capacity(total);
        for row in 0..self.rows {
            for column in &self.columns {
                match column.value(row) {
                    None => out.put_i32(-1),
                    Some(value) => {
                        // The row size check above bounds every value below `i32::MAX`.
                        out.put_i32(value.len() as i32);
                        out.extend_from_slice(value);
                    }
                }
            }
        }
        // `encode` checked that the column count fits an Int16.
        let field_count = self.columns.len() as i16;
        Ok(sizes
            .into_iter()
            .map(|size| DataRow::new(out.split_to(size), field_count))
            .collect())
    }
}

/// Every value of `array` in its Postgres text form, written in `style` (what a cast to
/// `text` gives in Postgres: `interval '1 day'::text` is `1 day`, not Arrow's `1 days`).
pub fn text_column(
    array: &dyn Array,
    style: &OutputStyle,
) -> Result<arrow::array::StringArray, PgError> {
    let mut column = EncodedColumn::default();
    encode_array(array, Format::Text, style, &mut column)?;
    let too_large = || PgError::new("54000", "text result of more than 2 GiB");
    let offsets = std::iter::once(Ok(0))
        .chain(
            column
                .ends
                .iter()
                .map(|&end| i32::try_from(end).map_err(|_| too_large())),
        )
        .collect::<Result<Vec<i32>, PgError>>()?;
    arrow::array::StringArray::try_new(
        arrow::buffer::OffsetBuffer::new(offsets.into()),
        column.data.into(),
        column.nulls,
    )
    .map_err(|e| PgError::new("XX000", format!("text output is not UTF-8: {e}")))
}

fn encode_array(
    array: &dyn Array,
    format: Format,
    style: &OutputStyle,
    column: &mut EncodedColumn,
) -> Result<(), PgError> {
    if let DataType::Dictionary(_, values) = array.data_type() {
        let plain = arrow::compute::cast(array, values)
            .map_err(|e| PgError::new("XX000", format!("cannot unpack dictionary column: {e}")))?;
        return encode_array(plain.as_ref(), format, style, column);
    }
    column.reset(array);
    match format {
        Format::Text => encode_text(array, style, column),
        Format::Binary => encode_binary(array, column),
    }
}

/// Binary `jsonb` (a version byte, then the text) and `uuid` (16 bytes) of a text column.
fn encode_binary_text_type(
    array: &dyn Array,
    oid: u32,
    column: &mut EncodedColumn,
) -> Result<(), PgError> {
    let strings = array
        .as_string_opt::<i32>()
        .ok_or_else(|| PgError::new("XX000", "a jsonb or uuid column is not Utf8"))?;
    column.try_fill(strings.len(), |buf, row| {
        let text = strings.value(row);
        if oid == super::oid::JSONB {
            buf.push(1);
            buf.extend_from_slice(text.as_bytes());
            return Ok(());
        }
        let hex: Vec<u8> = text.bytes().filter(|&b| b != b'-').collect();
        let bytes = (hex.len() == 32)
            .then(|| {
                hex.chunks(2)
                    .map(|pair| {
                        std::str::from_utf8(pair)
                            .ok()
                            .and_then(|p| u8::from_str_radix(p, 16).ok())
                    })
                    .collect::<Option<Vec<u8>>>()
            })
            .flatten()
            .ok_or_else(|| {
                PgError::new(
                    "22P02",
                    format!("invalid input syntax for type uuid: \"{text}\""),
                )
            })?;
        buf.extend_from_slice(&bytes);
        Ok(())
    })
}

/// Calls `write` with every value of a primitive array (nulls skipped).
fn each<T: ArrowPrimitiveType>(
    array: &dyn Array,
    column: &mut EncodedColumn,
    mut write: impl FnMut(&mut Vec<u8>, T::Native),
) {
    let values = array.as_primitive::<T>().values();
    column.fill(values.len(), |buf, row| write(buf, values[row]));
}

/// Converts a count of `unit` to microseconds, rounding nanoseconds to the nearest microsecond
/// and saturating far outside the range Postgres can represent anyway.
fn to_micros(value: i64, unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => value.saturating_mul(1_000_000),
        TimeUnit::Millisecond => value.saturating_mul(1_000),
        TimeUnit::Microsecond => value,
        TimeUnit::Nanosecond => value.div_euclid(1_000) + i64::from(value.rem_euclid(1_000) >= 500),
    }
}

/// Calls `write` with every value of a Time32/Time64/Timestamp/Duration array in microseconds.
fn each_micros(
    array: &dyn Array,
    column: &mut EncodedColumn,
    write: impl Fn(&mut Vec<u8>, i64),
) -> bool {
    match array.data_type() {
        DataType::Time32(TimeUnit::Second) => each::<Time32SecondType>(array, column, |b, v| {
            write(b, to_micros(v.into(), TimeUnit::Second))
        }),
        DataType::Time32(TimeUnit::Millisecond) => {
            each::<Time32MillisecondType>(array, column, |b, v| {
                write(b, to_micros(v.into(), TimeUnit::Millisecond))
            })
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            each::<Time64MicrosecondType>(array, column, write)
        }
        DataType::Time64(TimeUnit::Nanosecond) => {
            each::<Time64NanosecondType>(array, column, |b, v| {
                write(b, to_micros(v, TimeUnit::Nanosecond))
            })
        }
        DataType::Timestamp(unit, _) | DataType::Duration(unit) => {
            let unit = *unit;
            let scaled = |b: &mut Vec<u8>, v: i64| write(b, to_micros(v, unit));
            match (array.data_type(), unit) {
                (DataType::Timestamp(..), TimeUnit::Second) => {
                    each::<TimestampSecondType>(array, column, scaled)
                }
                (DataType::Timestamp(..), TimeUnit::Millisecond) => {
                    each::<TimestampMillisecondType>(array, column, scaled)
                }
                (DataType::Timestamp(..), TimeUnit::Microsecond) => {
                    each::<TimestampMicrosecondType>(array, column, scaled)
                }
                (DataType::Timestamp(..), TimeUnit::Nanosecond) => {
                    each::<TimestampNanosecondType>(array, column, scaled)
                }
                (_, TimeUnit::Second) => each::<DurationSecondType>(array, column, scaled),
                (_, TimeUnit::Millisecond) => {
                    each::<DurationMillisecondType>(array, column, scaled)
                }
                (_, TimeUnit::Microsecond) => {
                    each::<DurationMicrosecondType>(array, column, scaled)
                }
                (_, TimeUnit::Nanosecond) => each::<DurationNanosecondType>(array, column, scaled),
            }
        }
        _ => return false,
    }
    true
}

/// Calls `write` with every value of an Interval array as (months, days, microseconds).
fn each_interval(
    array: &dyn Array,
    column: &mut EncodedColumn,
    unit: IntervalUnit,
    write: impl Fn(&mut Vec<u8>, i32, i32, i64),
) {
    match unit {
        IntervalUnit::YearMonth => {
            each::<IntervalYearMonthType>(array, column, |b, v| write(b, v, 0, 0))
        }
        IntervalUnit::DayTime => each::<IntervalDayTimeType>(array, column, |b, v| {
            write(b, 0, v.days, i64::from(v.milliseconds) * 1_000)
        }),
        IntervalUnit::MonthDayNano => each::<IntervalMonthDayNanoType>(array, column, |b, v| {
            write(
                b,
                v.months,
                v.days,
                to_micros(v.nanoseconds, TimeUnit::Nanosecond),
            )
        }),
    }
}

fn encode_text(
    array: &dyn Array,
    style: &OutputStyle,
    column: &mut EncodedColumn,
) -> Result<(), PgError> {
    let len = array.len();
    let dates = (style.date_style, style.date_order);
    let plain_floats = style.extra_float_digits > 0;
    match array.data_type() {
        DataType::Null => column.fill(len, |_, _| {}),
        DataType::Boolean => {
            let array = array.as_boolean();
            column.fill(len, |b, row| {
                b.push(if array.value(row) { b't' } else { b'f' })
            });
        }
        DataType::Int8 => each::<Int8Type>(array, column, push_display),
        DataType::Int16 => each::<Int16Type>(array, column, push_display),
        DataType::Int32 => each::<Int32Type>(array, column, push_display),
        DataType::Int64 => each::<Int64Type>(array, column, push_display),
        DataType::UInt8 => each::<UInt8Type>(array, column, push_display),
        DataType::UInt16 => each::<UInt16Type>(array, column, push_display),
        DataType::UInt32 => each::<UInt32Type>(array, column, push_display),
        DataType::UInt64 => each::<UInt64Type>(array, column, push_display),
        DataType::Float16 => each::<Float16Type>(array, column, |b, v| write_float4(b, v.to_f32())),
        DataType::Float32 if plain_floats => each::<Float32Type>(array, column, write_float4),
        DataType::Float32 => each::<Float32Type>(array, column, |b, v| {
            write_float_digits(b, v.into(), 6 + style.extra_float_digits)
        }),
        DataType::Float64 if plain_floats => each::<Float64Type>(array, column, write_float8),
        DataType::Float64 => each::<Float64Type>(array, column, |b, v| {
            write_float_digits(b, v, 15 + style.extra_float_digits)
        }),
        &DataType::Decimal32(_, scale) => {
            each::<Decimal32Type>(array, column, |b, v| write_decimal(b, v, scale))
        }
        &DataType::Decimal64(_, scale) => {
            each::<Decimal64Type>(array, column, |b, v| write_decimal(b, v, scale))
        }
        &DataType::Decimal128(_, scale) => {
            each::<Decimal128Type>(array, column, |b, v| write_decimal(b, v, scale))
        }
        &DataType::Decimal256(_, scale) => {
            each::<Decimal256Type>(array, column, |b, v| write_decimal(b, v, scale))
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => raw_bytes(array, column),
        DataType::Binary => {
            let array = array.as_binary::<i32>();
            column.fill(len, |b, row| write_bytea(b, array.value(row)));
        }
        DataType::LargeBinary => {
            let array = array.as_binary::<i64>();
            column.fill(len, |b, row| write_bytea(b, array.value(row)));
        }
        DataType::BinaryView => {
            let array = array.as_binary_view();
            column.fill(len, |b, row| write_bytea(b, array.value(row)));
        }
        DataType::FixedSizeBinary(_) => {
            let array = array.as_fixed_size_binary();
            column.fill(len, |b, row| write_bytea(b, array.value(row)));
        }
        DataType::Date32 | DataType::Date64 if dates.0 != DateStyle::Iso => {
            let days = arrow::compute::cast(array, &DataType::Date32)
                .map_err(|e| PgError::new("XX000", format!("cannot read dates: {e}")))?;
            each::<Date32Type>(days.as_ref(), column, |b, v| {
                write_date_styled(b, v.into(), dates.0, dates.1)
            })
        }
        DataType::Date32 => each::<Date32Type>(array, column, |b, v| write_date(b, v.into())),
        DataType::Date64 => each::<Date64Type>(array, column, |b, v| {
            write_date(b, v.div_euclid(86_400_000))
        }),
        DataType::Time32(_) | DataType::Time64(_) => {
            if !each_micros(array, column, write_time) {
                display(array, column)?;
            }
        }
        DataType::Timestamp(_, zone) if dates.0 != DateStyle::Iso => {
            let zone = zone.as_deref().map(LabelledZone::new);
            each_micros(array, column, |b, us| match &zone {
                None => write_timestamp_styled(b, us, ZoneLabel::None, dates.0, dates.1),
                Some(zone) => zone.write(b, us, dates),
            });
        }
        DataType::Timestamp(_, zone) => match zone.as_deref().and_then(non_utc_zone) {
            // Rendered in the column's zone: the offset of each value's instant.
            Some(tz) => {
                each_micros(array, column, |b, us| {
                    write_timestamptz(b, us, utc_offset_seconds(&tz, us))
                });
            }
            None => {
                each_micros(array, column, |b, us| {
                    write_timestamp(b, us, zone.is_some())
                });
            }
        },
        DataType::Duration(_) if style.interval_style != IntervalStyle::Postgres => {
            let intervals = style.interval_style;
            each_micros(array, column, |b, us| {
                let (days, us) = justify_hours(us);
                write_interval_styled(b, 0, days, us, intervals)
            });
        }
        DataType::Duration(_) => {
            each_micros(array, column, |b, us| {
                let (days, us) = justify_hours(us);
                write_interval(b, 0, days, us)
            });
        }
        &DataType::Interval(unit) if style.interval_style != IntervalStyle::Postgres => {
            let intervals = style.interval_style;
            each_interval(array, column, unit, |b, months, days, us| {
                write_interval_styled(b, months, days, us, intervals)
            })
        }
        &DataType::Interval(unit) => each_interval(array, column, unit, write_interval),
        DataType::List(_) | DataType::LargeList(_) => {
            encode_list(array, Format::Text, style, column)?
        }
        DataType::Struct(_) => encode_record(array, Format::Text, style, column)?,
        _ => display(array, column)?,
    }
    Ok(())
}

fn encode_binary(array: &dyn Array, column: &mut EncodedColumn) -> Result<(), PgError> {
    let len = array.len();
    let be16 = |b: &mut Vec<u8>, v: i16| b.extend_from_slice(&v.to_be_bytes());
    let be32 = |b: &mut Vec<u8>, v: i32| b.extend_from_slice(&v.to_be_bytes());
    let be64 = |b: &mut Vec<u8>, v: i64| b.extend_from_slice(&v.to_be_bytes());
    // Scratch space for the text form of numerics on their way to the binary form.
    let mut scratch = Vec::new();
    let mut numeric = |b: &mut Vec<u8>, write: &dyn Fn(&mut Vec<u8>)| {
        scratch.clear();
        write(&mut scratch);
        numeric_text_to_binary(&scratch, b);
    };
    match array.data_type() {
        DataType::Null => column.fill(len, |_, _| {}),
        DataType::Boolean => {
            let array = array.as_boolean();
            column.fill(len, |b, row| b.push(u8::from(array.value(row))));
        }
        DataType::Int8 => each::<Int8Type>(array, column, |b, v| be16(b, v.into())),
        DataType::Int16 => each::<Int16Type>(array, column, be16),
        DataType::Int32 => each::<Int32Type>(array, column, be32),
        DataType::Int64 => each::<Int64Type>(array, column, be64),
        DataType::UInt8 => each::<UInt8Type>(array, column, |b, v| be16(b, v.into())),
        DataType::UInt16 => each::<UInt16Type>(array, column, |b, v| be32(b, v.into())),
        // `oid`, an unsigned 4-byte integer on the wire.
        DataType::UInt32 => {
            each::<UInt32Type>(array, column, |b, v| b.extend_from_slice(&v.to_be_bytes()))
        }
        DataType::UInt64 => {
            each::<UInt64Type>(array, column, |b, v| numeric(b, &|s| push_display(s, v)))
        }
        DataType::Float16 => each::<Float16Type>(array, column, |b, v| {
            b.extend_from_slice(&v.to_f32().to_be_bytes())
        }),
        DataType::Float32 => {
            each::<Float32Type>(array, column, |b, v| b.extend_from_slice(&v.to_be_bytes()))
        }
        DataType::Float64 => {
            each::<Float64Type>(array, column, |b, v| b.extend_from_slice(&v.to_be_bytes()))
        }
        &DataType::Decimal32(_, scale) => each::<Decimal32Type>(array, column, |b, v| {
            numeric(b, &|s| write_decimal(s, v, scale))
        }),
        &DataType::Decimal64(_, scale) => each::<Decimal64Type>(array, column, |b, v| {
            numeric(b, &|s| write_decimal(s, v, scale))
        }),
        &DataType::Decimal128(_, scale) => each::<Decimal128Type>(array, column, |b, v| {
            numeric(b, &|s| write_decimal(s, v, scale))
        }),
        &DataType::Decimal256(_, scale) => each::<Decimal256Type>(array, column, |b, v| {
            numeric(b, &|s| write_decimal(s, v, scale))
        }),
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => raw_bytes(array, column),
        DataType::Date32 => each::<Date32Type>(array, column, |b, v| {
            be32(b, saturate_i32(i64::from(v) - PG_EPOCH_DAYS))
        }),
        DataType::Date64 => each::<Date64Type>(array, column, |b, v| {
            be32(b, saturate_i32(v.div_euclid(86_400_000) - PG_EPOCH_DAYS))
        }),
        DataType::Time32(_) | DataType::Time64(_) => {
            if !each_micros(array, column, be64) {
                display(array, column)?;
            }
        }
        DataType::Timestamp(..) => {
            each_micros(array, column, |b, us| {
                be64(b, us.saturating_sub(PG_EPOCH_MICROS))
            });
        }
        DataType::Duration(_) => {
            each_micros(array, column, |b, us| {
                let (days, us) = justify_hours(us);
                write_binary_interval(b, 0, days, us)
            });
        }
        &DataType::Interval(unit) => each_interval(array, column, unit, write_binary_interval),
        DataType::List(_) | DataType::LargeList(_) => {
            encode_list(array, Format::Binary, &OutputStyle::default(), column)?
        }
        DataType::Struct(_) => {
            encode_record(array, Format::Binary, &OutputStyle::default(), column)?
        }
        // Everything else is sent as `text`, whose binary form is its UTF-8 text.
        _ => display(array, column)?,
    }
    Ok(())
}

/// A one-dimensional Postgres array per list value: its elements are encoded whole first, in
/// the same format, then framed per row (`{a,"b c",NULL}` in text; dimensions, element type
/// and length-prefixed elements in binary).
/// A struct column as Postgres's anonymous `record`: text `(1,"a b",)` (a field is quoted
/// when it is empty or holds a quote, backslash, parenthesis, comma or white space; NULL is
/// nothing), binary the field count, then each field's type OID and value.
fn encode_record(
    array: &dyn Array,
    format: Format,
    style: &OutputStyle,
    column: &mut EncodedColumn,
) -> Result<(), PgError> {
    let record = array.as_struct();
    let mut fields = Vec::with_capacity(record.num_columns());
    for child in record.columns() {
        let mut encoded = EncodedColumn::default();
        encode_array(child.as_ref(), format, style, &mut encoded)?;
        fields.push((super::pg_type(child.data_type()).oid, encoded));
    }
    column.fill(array.len(), |b, row| match format {
        Format::Text => {
            b.push(b'(');
            for (index, (_, field)) in fields.iter().enumerate() {
                if index > 0 {
                    b.push(b',');
                }
                if let Some(value) = field.value(row) {
                    write_record_field(b, value);
                }
            }
            b.push(b')');
        }
        Format::Binary => {
            b.extend_from_slice(&saturate_i32(fields.len() as i64).to_be_bytes());
            for (oid, field) in &fields {
                b.extend_from_slice(&oid.to_be_bytes());
                write_binary_item(b, field.value(row));
            }
        }
    });
    Ok(())
}

/// An array element or record field in binary: its length (-1 for NULL), then its bytes.
fn write_binary_item(b: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => b.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(value) => {
            b.extend_from_slice(&saturate_i32(value.len() as i64).to_be_bytes());
            b.extend_from_slice(value);
        }
    }
}

/// One field of a record's text (record_out in Postgres).
fn write_record_field(b: &mut Vec<u8>, value: &[u8]) {
    let quote = value.is_empty()
        || value
            .iter()
            .any(|c| matches!(c, b'"' | b'\\' | b'(' | b')' | b',') || c.is_ascii_whitespace());
    if !quote {
        b.extend_from_slice(value);
        return;
    }
    b.push(b'"');
    for &c in value {
        if matches!(c, b'"' | b'\\') {
            b.push(c);
        }
        b.push(c);
    }
    b.push(b'"');
}

fn encode_list(
    array: &dyn Array,
    format: Format,
    style: &OutputStyle,
    column: &mut EncodedColumn,
) -> Result<(), PgError> {
    let (offsets, values): (Vec<usize>, arrow::array::ArrayRef) = match array.data_type() {
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            let offsets = list.value_offsets().iter().map(|&o| o as usize).collect();
            (offsets, list.values().clone())
        }
        DataType::LargeList(_) => {
            let list = array.as_list::<i64>();
            let offsets = list.value_offsets().iter().map(|&o| o as usize).collect();
            (offsets, list.values().clone())
        }
        other => {
            return Err(PgError::new("XX000", format!("{other} is not a list type")));
        }
    };
    let mut elements = EncodedColumn::default();
    encode_array(values.as_ref(), format, style, &mut elements)?;
    let nested = matches!(
        values.data_type(),
        DataType::List(_) | DataType::LargeList(_)
    );
    let element_oid = super::pg_type(values.data_type()).oid;
    column.fill(array.len(), |b, row| {
        let (start, end) = (offsets[row], offsets[row + 1]);
        match format {
            Format::Text => {
                b.push(b'{');
                for index in start..end {
                    if index > start {
                        b.push(b',');
                    }
                    match elements.value(index) {
                        None => b.extend_from_slice(b"NULL"),
                        Some(value) if nested => b.extend_from_slice(value),
                        Some(value) => write_array_element(b, value),
                    }
                }
                b.push(b'}');
            }
            Format::Binary => {
                let has_null = (start..end).any(|index| elements.value(index).is_none());
                let dimensions: i32 = if end > start { 1 } else { 0 };
                b.extend_from_slice(&dimensions.to_be_bytes());
                b.extend_from_slice(&i32::from(has_null).to_be_bytes());
                b.extend_from_slice(&element_oid.to_be_bytes());
                if end > start {
                    b.extend_from_slice(&saturate_i32((end - start) as i64).to_be_bytes());
                    b.extend_from_slice(&1i32.to_be_bytes());
                }
                for index in start..end {
                    write_binary_item(b, elements.value(index));
                }
            }
        }
    });
    Ok(())
}

/// One element of an array's text form, double-quoted (with `"` and `\` escaped) when it is
/// empty, is `NULL`, or holds a character the array syntax gives a meaning to.
fn write_array_element(buf: &mut Vec<u8>, value: &[u8]) {
    let needs_quotes = value.is_empty()
        || value.eq_ignore_ascii_case(b"null")
        || value
            .iter()
            .any(|c| matches!(c, b'{' | b'}' | b',' | b'"' | b'\\') || c.is_ascii_whitespace());
    if !needs_quotes {
        buf.extend_from_slice(value);
        return;
    }
    buf.push(b'"');
    for &c in value {
        if c == b'"' || c == b'\\' {
            buf.push(b'\\');
        }
        buf.push(c);
    }
    buf.push(b'"');
}

/// The zone a `timestamptz` column names, unless it is UTC (which has a faster path) or
/// does not parse (then UTC too: Arrow itself rejects such a type when it is built).
fn non_utc_zone(zone: &str) -> Option<arrow::array::timezone::Tz> {
    if matches!(zone, "+00:00" | "UTC" | "Z" | "+00" | "Etc/UTC" | "GMT") {
        return None;
    }
    zone.parse().ok()
}

/// A `timestamptz` column's zone, for the styles that print its abbreviation (`CET`).
enum LabelledZone {
    Utc,
    Named(chrono_tz::Tz),
    /// A fixed offset or a zone without abbreviations: printed as its offset.
    Offset(Option<arrow::array::timezone::Tz>),
}

impl LabelledZone {
    fn new(zone: &str) -> Self {
        if non_utc_zone(zone).is_none() && zone.parse::<arrow::array::timezone::Tz>().is_ok() {
            return Self::Utc;
        }
        match zone.parse::<chrono_tz::Tz>() {
            Ok(named) => Self::Named(named),
            Err(_) => Self::Offset(zone.parse().ok()),
        }
    }

    /// Writes the instant `utc_micros` as a local time in the zone, with its label.
    fn write(&self, buf: &mut Vec<u8>, utc_micros: i64, (style, order): (DateStyle, DateOrder)) {
        use chrono::{Offset, TimeZone};
        use chrono_tz::OffsetName;
        let local = |offset: i32| utc_micros.saturating_add(i64::from(offset) * 1_000_000);
        match self {
            Self::Utc => write_timestamp_styled(
                buf,
                utc_micros,
                ZoneLabel::Abbreviation("UTC"),
                style,
                order,
            ),
            Self::Named(zone) => {
                let Some(instant) = chrono::DateTime::from_timestamp_micros(utc_micros) else {
                    write_timestamp_styled(buf, utc_micros, ZoneLabel::Offset(0), style, order);
                    return;
                };
                let offset = zone.offset_from_utc_datetime(&instant.naive_utc());
                let seconds = offset.fix().local_minus_utc();
                let label = match offset.abbreviation() {
                    // Zones without a name in the tz database have numeric "abbreviations".
                    Some(name) if name.starts_with(|c: char| c.is_ascii_alphabetic()) => {
                        ZoneLabel::Abbreviation(name)
                    }
                    _ => ZoneLabel::Offset(seconds),
                };
                write_timestamp_styled(buf, local(seconds), label, style, order);
            }
            Self::Offset(zone) => {
                let seconds = zone
                    .as_ref()
                    .map_or(0, |z| utc_offset_seconds(z, utc_micros));
                write_timestamp_styled(
                    buf,
                    local(seconds),
                    ZoneLabel::Offset(seconds),
                    style,
                    order,
                );
            }
        }
    }
}

/// The zone's offset from UTC, in seconds, at the instant `utc_micros`.
fn utc_offset_seconds(tz: &arrow::array::timezone::Tz, utc_micros: i64) -> i32 {
    use chrono::{Offset, TimeZone};
    let Some(instant) = chrono::DateTime::from_timestamp_micros(utc_micros) else {
        return 0;
    };
    tz.offset_from_utc_datetime(&instant.naive_utc())
        .fix()
        .local_minus_utc()
}

/// A duration (what subtracting timestamps gives) as days and the time left, as Postgres's
/// `timestamp - timestamp` gives it (`2 days`, not `48:00:00`).
fn justify_hours(micros: i64) -> (i32, i64) {
    const MICROS_PER_DAY: i64 = 86_400_000_000;
    (
        saturate_i32(micros / MICROS_PER_DAY),
        micros % MICROS_PER_DAY,
    )
}

/// Binary `interval`: microseconds, days, months.
fn write_binary_interval(buf: &mut Vec<u8>, months: i32, days: i32, micros: i64) {
    buf.extend_from_slice(&micros.to_be_bytes());
    buf.extend_from_slice(&days.to_be_bytes());
    buf.extend_from_slice(&months.to_be_bytes());
}

fn saturate_i32(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(if value < 0 { i32::MIN } else { i32::MAX })
}

/// Copies the bytes of a string or binary array unchanged.
fn raw_bytes(array: &dyn Array, column: &mut EncodedColumn) {
    let len = array.len();
    match array.data_type() {
        DataType::Utf8 => {
            let array = array.as_string::<i32>();
            column.fill(len, |b, row| {
                b.extend_from_slice(array.value(row).as_bytes())
            });
        }
        DataType::LargeUtf8 => {
            let array = array.as_string::<i64>();
            column.fill(len, |b, row| {
                b.extend_from_slice(array.value(row).as_bytes())
            });
        }
        DataType::Utf8View => {
            let array = array.as_string_view();
            column.fill(len, |b, row| {
                b.extend_from_slice(array.value(row).as_bytes())
            });
        }
        DataType::Binary => {
            let array = array.as_binary::<i32>();
            column.fill(len, |b, row| b.extend_from_slice(array.value(row)));
        }
        DataType::LargeBinary => {
            let array = array.as_binary::<i64>();
            column.fill(len, |b, row| b.extend_from_slice(array.value(row)));
        }
        DataType::BinaryView => {
            let array = array.as_binary_view();
            column.fill(len, |b, row| b.extend_from_slice(array.value(row)));
        }
        DataType::FixedSizeBinary(_) => {
            let array = array.as_fixed_size_binary();
            column.fill(len, |b, row| b.extend_from_slice(array.value(row)));
        }
        // Callers only pass the types above.
        _ => column.fill(len, |_, _| {}),
    }
}

/// Writes every value with Arrow's display formatting (the `text` fallback).
fn display(array: &dyn Array, column: &mut EncodedColumn) -> Result<(), PgError> {
    let options = FormatOptions::new();
    let formatter = ArrayFormatter::try_new(array, &options).map_err(|e| {
        PgError::new(
            "0A000",
            format!("cannot send values of type {}: {e}", array.data_type()),
        )
    })?;
    column.try_fill(array.len(), |b, row| {
        fmt::Write::write_fmt(&mut Utf8Sink(b), format_args!("{}", formatter.value(row)))
            .map_err(|_| PgError::new("XX000", "formatting a value failed"))
    })
}

/// `fmt::Write` into a byte buffer.
struct Utf8Sink<'a>(&'a mut Vec<u8>);

impl fmt::Write for Utf8Sink<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, DictionaryArray, Int32Array, ListArray, StringArray, Time32SecondArray,
        TimestampNanosecondArray,
    };
    use arrow::datatypes::Int32Type;

    use super::*;

    fn encoded(array: ArrayRef, format: Format) -> Vec<Option<Vec<u8>>> {
        let mut column = EncodedColumn::default();
        encode_array(array.as_ref(), format, &OutputStyle::default(), &mut column)
            .expect("encodable");
        (0..array.len())
            .map(|row| column.value(row).map(<[u8]>::to_vec))
            .collect()
    }

    fn text(array: ArrayRef) -> Vec<Option<String>> {
        encoded(array, Format::Text)
            .into_iter()
            .map(|v| v.map(|v| String::from_utf8(v).expect("text output is UTF-8")))
            .collect()
    }

    #[test]
    fn nulls_and_values_interleave() {
        let array = Arc::new(Int32Array::from(vec![Some(1), None, Some(-3)]));
        assert_eq!(
            text(array.clone()),
            [Some("1".into()), None, Some("-3".into())]
        );
        assert_eq!(
            encoded(array, Format::Binary),
            [
                Some(vec![0, 0, 0, 1]),
                None,
                Some(vec![0xff, 0xff, 0xff, 0xfd])
            ]
        );
    }

    #[test]
    fn dictionary_list_time_and_nanos() {
        let dict: DictionaryArray<Int32Type> = vec!["a", "b", "a"].into_iter().collect();
        assert_eq!(
            text(Arc::new(dict)),
            [Some("a".into()), Some("b".into()), Some("a".into())]
        );
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![
            Some(1),
            None,
            Some(3),
        ])]);
        // Postgres's array text form, as `SELECT ARRAY[1, NULL, 3]` prints it.
        assert_eq!(text(Arc::new(list.clone())), [Some("{1,NULL,3}".into())]);
        // Binary: 1 dimension, has nulls, int4 elements, 3 elements from 1, then each value.
        let mut binary = Vec::new();
        for word in [1i32, 1, 23, 3, 1, 4, 1, -1, 4, 3] {
            binary.extend_from_slice(&word.to_be_bytes());
        }
        assert_eq!(encoded(Arc::new(list), Format::Binary), [Some(binary)]);
        let strings = ListArray::new(
            Arc::new(arrow::datatypes::Field::new_list_field(
                DataType::Utf8,
                true,
            )),
            arrow::buffer::OffsetBuffer::from_lengths([5, 0]),
            Arc::new(arrow::array::StringArray::from(vec![
                Some("plain"),
                Some("a b"),
                Some(""),
                Some("NULL"),
                Some("x\"y\\z"),
            ])),
            None,
        );
        assert_eq!(
            text(Arc::new(strings)),
            [
                Some(r#"{plain,"a b","","NULL","x\"y\\z"}"#.into()),
                Some("{}".into())
            ]
        );
        assert_eq!(
            text(Arc::new(Time32SecondArray::from(vec![3723]))),
            [Some("01:02:03".into())]
        );
        // 1.0000005 s rounds to 1.000001 s.
        assert_eq!(
            text(Arc::new(TimestampNanosecondArray::from(vec![
                1_000_000_500
            ]))),
            [Some("1970-01-01 00:00:01.000001".into())]
        );
    }

    #[test]
    fn data_rows_are_framed() {
        let batch = RecordBatch::try_from_iter([
            (
                "a",
                Arc::new(Int32Array::from(vec![Some(7), None])) as ArrayRef,
            ),
            (
                "b",
                Arc::new(StringArray::from(vec![Some("hi"), Some("")])) as ArrayRef,
            ),
        ])
        .expect("valid batch");
        let mut encoder = RowEncoder::default();
        encoder
            .encode(&batch, &[Format::Binary, Format::Text])
            .expect("encodable");
        let rows = encoder.data_rows().expect("small rows");
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|row| row.field_count == 2));
        let first: &[u8] = b"\0\0\0\x04\0\0\0\x07\0\0\0\x02hi";
        let second: &[u8] = b"\xff\xff\xff\xff\0\0\0\0";
        assert_eq!(&rows[0].data[..], first);
        assert_eq!(&rows[1].data[..], second);
    }

    #[test]
    fn binary_temporal_values_use_the_2000_epoch() {
        let days = Arc::new(arrow::array::Date32Array::from(vec![10_957, 0]));
        assert_eq!(
            encoded(days, Format::Binary),
            [
                Some(vec![0, 0, 0, 0]),
                Some((-10_957i32).to_be_bytes().to_vec())
            ]
        );
        let ts = Arc::new(arrow::array::TimestampSecondArray::from(vec![946_684_801]));
        assert_eq!(
            encoded(ts, Format::Binary),
            [Some(1_000_000i64.to_be_bytes().to_vec())]
        );
    }
}
