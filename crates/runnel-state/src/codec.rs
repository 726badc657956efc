//! Order-preserving ("memcomparable") binary encoding of rows of Arrow columns.
//!
//! Used for RocksDB keys (group keys, join keys, primary keys, whole rows of view
//! contents) and as the generic value encoding of rows kept in state.
//!
//! # Guarantees
//!
//! * **Order**: comparing two encoded rows byte-wise (`<[u8]>::cmp`, i.e. RocksDB's default
//!   comparator) gives the SQL order of the tuples — column by column, every column
//!   `ASC NULLS FIRST`. This holds because every column encoding is order-preserving *and*
//!   prefix-free (self-delimiting), so the concatenation compares lexicographically.
//! * **Round trip**: every encoding decodes back to an Arrow array of the same [`DataType`]
//!   (the caller supplies the types; the format carries no type tags). The only normalisations
//!   are for floats: `-0.0` decodes as `+0.0` and every NaN as one canonical NaN.
//! * **Persistence**: the format is deterministic and stable; it is written to disk, so any
//!   change to it must bump [`FORMAT_VERSION`] and come with a migration.
//!
//! # Format
//!
//! A row is `prefix ‖ col₀ ‖ col₁ ‖ …` where `prefix` is an arbitrary caller-chosen byte
//! string (an operator's key prefix, possibly empty) and each `colᵢ` is one value:
//!
//! | value | bytes |
//! |-------|-------|
//! | NULL (any type) | `00` — nothing follows |
//! | non-NULL (any type) | `01` followed by the payload below |
//!
//! | type | payload after `01` |
//! |------|--------------------|
//! | `Null` | never present: a `Null` column is all NULLs (`00`) |
//! | `Boolean` | 1 byte: `00` = false, `01` = true |
//! | `Int8/16/32/64` | 1/2/4/8 bytes: two's complement big-endian with the sign bit flipped (`v XOR 0x80…`) |
//! | `UInt8/16/32/64` | 1/2/4/8 bytes: big-endian |
//! | `Float32` / `Float64` | 4 / 8 bytes: canonicalise (`-0.0` → `+0.0`; every NaN → `0x7FC00000` / `0x7FF8000000000000`), take the IEEE bits `b`; if the sign bit of `b` is clear emit `b XOR 0x80…`, else emit `NOT b`; big-endian. Order: `-inf < … < -0.0 = +0.0 < … < +inf < NaN` (NaN sorts last, as in Postgres) |
//! | `Decimal128(p, s)` | 16 bytes: the unscaled `i128`, big-endian, sign bit flipped. Precision and scale come from the column type, so values of one column compare correctly |
//! | `Date32` | as `Int32` (days since epoch) |
//! | `Date64` | as `Int64` (ms since epoch) |
//! | `Time32(s\|ms)` | as `Int32` |
//! | `Time64(us\|ns)` | as `Int64` |
//! | `Timestamp(unit, tz)` | as `Int64` (the stored UTC-based value; unit and tz come from the column type) |
//! | `Duration(unit)` | as `Int64` |
//! | `Interval(YearMonth)` | as `Int32` (months) |
//! | `Interval(DayTime)` | 8 bytes: `days` then `milliseconds`, each as `Int32` |
//! | `Interval(MonthDayNano)` | 16 bytes: `months` (as `Int32`), `days` (as `Int32`), `nanoseconds` (as `Int64`) |
//! | `Utf8`, `LargeUtf8`, `Utf8View` | the UTF-8 bytes with every `00` byte escaped as `00 FF`, then the terminator `00 00` |
//! | `Binary`, `LargeBinary`, `BinaryView` | the bytes, escaped and terminated like strings |
//!
//! Examples: `Int32 1` = `01 80 00 00 01`; `Int32 -1` = `01 7F FF FF FF`; `Int32 NULL` = `00`;
//! `Utf8 ""` = `01 00 00`; `Utf8 "a\0b"` = `01 61 00 FF 62 00 00`; `Float64 1.0` =
//! `01 BF F0 00 00 00 00 00 00`.
//!
//! Notes on the resulting order:
//!
//! * Strings and binaries compare byte-wise (for UTF-8 that is code-point order, i.e. the
//!   `C` collation; it is also DataFusion's order). A proper prefix sorts first (`"a" < "ab"`)
//!   because the terminator `00 00` is smaller than any escaped or literal byte that can follow.
//! * Intervals compare field by field (months, then days, then nanoseconds), which is Arrow's
//!   and DataFusion's order for interval values — not Postgres' "normalised duration" order
//!   (`1 month` vs `30 days`).
//! * Encodings of different types are not comparable with each other; a key's column types are
//!   fixed by the plan.
//!
//! The utf8/large/view variants (and binary/large/view) share one encoding, so the same key can
//! be decoded as any of them; decoding always builds exactly the requested [`DataType`].
//!
//! # Performance
//!
//! Encoding downcasts each column once per batch into [`EncCol`] (typed slices held in an enum)
//! and then appends row-major into one contiguous buffer ([`EncodedRows`]); there is no per-row
//! heap allocation and no dynamic dispatch per value. Decoding walks the rows column by column
//! (one cursor per row) into Arrow builders created with capacity.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, BinaryArray, BinaryBuilder, BinaryViewArray,
    BinaryViewBuilder, BooleanArray, BooleanBuilder, LargeBinaryArray, LargeBinaryBuilder,
    LargeStringArray, LargeStringBuilder, NullArray, PrimitiveArray, PrimitiveBuilder, StringArray,
    StringBuilder, StringViewArray, StringViewBuilder,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, DurationMicrosecondType,
    DurationMillisecondType, DurationNanosecondType, DurationSecondType, Float32Type, Float64Type,
    Int16Type, Int32Type, Int64Type, Int8Type, IntervalDayTime, IntervalDayTimeType,
    IntervalMonthDayNano, IntervalMonthDayNanoType, IntervalUnit, IntervalYearMonthType,
    Time32MillisecondType, Time32SecondType, Time64MicrosecondType, Time64NanosecondType, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use datafusion::common::ScalarValue;

/// Version of the on-disk format described in the module docs. Bump on any change.
pub const FORMAT_VERSION: u32 = 1;

/// Marker byte of a NULL value (nothing follows it).
pub const NULL_MARKER: u8 = 0x00;
/// Marker byte of a non-NULL value (the payload follows it).
pub const PRESENT_MARKER: u8 = 0x01;
/// How a `00` byte inside a string/binary value is written.
const ESCAPED_ZERO: [u8; 2] = [0x00, 0xFF];
/// End of a string/binary value.
const TERMINATOR: [u8; 2] = [0x00, 0x00];

/// Errors of the row codec.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The type has no state encoding (nested types, dictionaries, ...).
    #[error("type {0} cannot be encoded in state")]
    UnsupportedType(DataType),
    /// The bytes are not a valid encoding of the requested types.
    #[error("corrupt encoded row: {0}")]
    Corrupt(String),
    /// The caller passed inconsistent input (columns of different lengths, a row index out of
    /// range, an array whose concrete type does not match its `DataType`).
    #[error("invalid codec input: {0}")]
    InvalidInput(String),
}

type Result<T, E = CodecError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------------
// EncodedRows
// ---------------------------------------------------------------------------------------------

/// Encoded rows in one contiguous buffer.
///
/// Row `i` is `data[offsets[i]..offsets[i + 1]]`; `offsets` always holds `len() + 1` entries
/// (`Default` and [`EncodedRows::new`] start with `[0]`).
#[derive(Debug, Clone)]
pub struct EncodedRows {
    data: Vec<u8>,
    /// `len = rows + 1`, starts with 0, non-decreasing.
    offsets: Vec<usize>,
}

impl Default for EncodedRows {
    fn default() -> Self {
        Self::new()
    }
}

impl EncodedRows {
    /// An empty set of rows.
    pub fn new() -> Self {
        Self {
            data: Vec::new(),
            offsets: vec![0],
        }
    }

    /// An empty set with room for `rows` rows totalling `bytes` bytes.
    pub fn with_capacity(rows: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Self {
            data: Vec::with_capacity(bytes),
            offsets,
        }
    }

    /// Removes all rows, keeping the allocations.
    pub fn clear(&mut self) {
        self.data.clear();
        self.offsets.clear();
        self.offsets.push(0);
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// True if there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total number of encoded bytes over all rows.
    pub fn data_len(&self) -> usize {
        self.data.len()
    }

    /// The bytes of row `i`.
    ///
    /// # Panics
    /// If `i >= self.len()` (like slice indexing).
    pub fn row(&self, i: usize) -> &[u8] {
        &self.data[self.offsets[i]..self.offsets[i + 1]]
    }

    /// The rows in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.offsets.windows(2).map(move |w| &self.data[w[0]..w[1]])
    }

    /// Appends one already-encoded row (used to build keys with a prefix).
    pub fn push_row(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        self.offsets.push(self.data.len());
    }
}

// ---------------------------------------------------------------------------------------------
// Per-type value encodings
// ---------------------------------------------------------------------------------------------

/// A fixed-width value with an order-preserving big-endian encoding.
trait FixedKey: Copy {
    /// Payload width in bytes.
    const WIDTH: usize;
    /// Appends the `WIDTH`-byte payload.
    fn put(self, out: &mut Vec<u8>);
    /// Writes the payload into `dst`, which is exactly `WIDTH` bytes.
    fn write(self, dst: &mut [u8]);
    /// Decodes a payload; `bytes.len()` must be `WIDTH` (else `None`).
    fn get(bytes: &[u8]) -> Option<Self>;
}

macro_rules! signed_key {
    ($($t:ty => $u:ty),* $(,)?) => {$(
        impl FixedKey for $t {
            const WIDTH: usize = std::mem::size_of::<$t>();
            #[inline]
            fn put(self, out: &mut Vec<u8>) {
                const SIGN: $u = 1 << (<$u>::BITS - 1);
                out.extend_from_slice(&((self as $u) ^ SIGN).to_be_bytes());
            }
            #[inline]
            fn write(self, dst: &mut [u8]) {
                const SIGN: $u = 1 << (<$u>::BITS - 1);
                dst.copy_from_slice(&((self as $u) ^ SIGN).to_be_bytes());
            }
            #[inline]
            fn get(bytes: &[u8]) -> Option<Self> {
                const SIGN: $u = 1 << (<$u>::BITS - 1);
                Some((<$u>::from_be_bytes(bytes.try_into().ok()?) ^ SIGN) as $t)
            }
        }
    )*};
}
signed_key!(i8 => u8, i16 => u16, i32 => u32, i64 => u64, i128 => u128);

macro_rules! unsigned_key {
    ($($t:ty),* $(,)?) => {$(
        impl FixedKey for $t {
            const WIDTH: usize = std::mem::size_of::<$t>();
            #[inline]
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
            #[inline]
            fn write(self, dst: &mut [u8]) {
                dst.copy_from_slice(&self.to_be_bytes());
            }
            #[inline]
            fn get(bytes: &[u8]) -> Option<Self> {
                Some(<$t>::from_be_bytes(bytes.try_into().ok()?))
            }
        }
    )*};
}
unsigned_key!(u8, u16, u32, u64);

macro_rules! float_key {
    ($($t:ty => $u:ty, $nan:expr);* $(;)?) => {$(
        impl FixedKey for $t {
            const WIDTH: usize = std::mem::size_of::<$t>();
            #[inline]
            fn put(self, out: &mut Vec<u8>) {
                let mut key = [0u8; std::mem::size_of::<$t>()];
                self.write(&mut key);
                out.extend_from_slice(&key);
            }
            #[inline]
            fn write(self, dst: &mut [u8]) {
                const SIGN: $u = 1 << (<$u>::BITS - 1);
                let bits: $u = if self.is_nan() {
                    $nan
                } else if self == 0.0 {
                    0 // -0.0 and +0.0 are equal in SQL: both become +0.0
                } else {
                    self.to_bits()
                };
                let key = if bits & SIGN == 0 { bits ^ SIGN } else { !bits };
                dst.copy_from_slice(&key.to_be_bytes());
            }
            #[inline]
            fn get(bytes: &[u8]) -> Option<Self> {
                const SIGN: $u = 1 << (<$u>::BITS - 1);
                let key = <$u>::from_be_bytes(bytes.try_into().ok()?);
                let bits = if key & SIGN != 0 { key ^ SIGN } else { !key };
                Some(<$t>::from_bits(bits))
            }
        }
    )*};
}
float_key!(f32 => u32, 0x7FC0_0000; f64 => u64, 0x7FF8_0000_0000_0000);

impl FixedKey for IntervalDayTime {
    const WIDTH: usize = 8;
    #[inline]
    fn put(self, out: &mut Vec<u8>) {
        self.days.put(out);
        self.milliseconds.put(out);
    }
    #[inline]
    fn write(self, dst: &mut [u8]) {
        self.days.write(&mut dst[0..4]);
        self.milliseconds.write(&mut dst[4..8]);
    }
    #[inline]
    fn get(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::WIDTH {
            return None;
        }
        Some(IntervalDayTime {
            days: i32::get(bytes.get(0..4)?)?,
            milliseconds: i32::get(bytes.get(4..8)?)?,
        })
    }
}

impl FixedKey for IntervalMonthDayNano {
    const WIDTH: usize = 16;
    #[inline]
    fn put(self, out: &mut Vec<u8>) {
        self.months.put(out);
        self.days.put(out);
        self.nanoseconds.put(out);
    }
    #[inline]
    fn write(self, dst: &mut [u8]) {
        self.months.write(&mut dst[0..4]);
        self.days.write(&mut dst[4..8]);
        self.nanoseconds.write(&mut dst[8..16]);
    }
    #[inline]
    fn get(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::WIDTH {
            return None;
        }
        Some(IntervalMonthDayNano {
            months: i32::get(bytes.get(0..4)?)?,
            days: i32::get(bytes.get(4..8)?)?,
            nanoseconds: i64::get(bytes.get(8..16)?)?,
        })
    }
}

/// Appends one nullable fixed-width value.
#[inline]
fn put_fixed<T: FixedKey>(out: &mut Vec<u8>, value: Option<T>) {
    match value {
        None => out.push(NULL_MARKER),
        Some(v) => {
            out.push(PRESENT_MARKER);
            v.put(out);
        }
    }
}

/// Appends one non-NULL string/binary value: marker, escaped bytes, terminator.
#[inline]
fn put_bytes(out: &mut Vec<u8>, value: &[u8]) {
    out.push(PRESENT_MARKER);
    let mut rest = value;
    while let Some(zero) = rest.iter().position(|&b| b == 0) {
        out.extend_from_slice(&rest[..zero]);
        out.extend_from_slice(&ESCAPED_ZERO);
        rest = &rest[zero + 1..];
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(&TERMINATOR);
}

#[inline]
fn put_opt_bytes(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.push(NULL_MARKER),
        Some(v) => put_bytes(out, v),
    }
}

// ---------------------------------------------------------------------------------------------
// Type classification
// ---------------------------------------------------------------------------------------------

/// The shape of a type's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `DataType::Null`: always the NULL marker.
    Null,
    /// Marker then a payload of this many bytes.
    Fixed(usize),
    /// Marker then escaped bytes and a terminator.
    Bytes,
}

fn kind(data_type: &DataType) -> Option<Kind> {
    use DataType as D;
    Some(match data_type {
        D::Null => Kind::Null,
        D::Boolean | D::Int8 | D::UInt8 => Kind::Fixed(1),
        D::Int16 | D::UInt16 => Kind::Fixed(2),
        D::Int32
        | D::UInt32
        | D::Float32
        | D::Date32
        | D::Time32(TimeUnit::Second | TimeUnit::Millisecond)
        | D::Interval(IntervalUnit::YearMonth) => Kind::Fixed(4),
        D::Int64
        | D::UInt64
        | D::Float64
        | D::Date64
        | D::Time64(TimeUnit::Microsecond | TimeUnit::Nanosecond)
        | D::Timestamp(_, _)
        | D::Duration(_)
        | D::Interval(IntervalUnit::DayTime) => Kind::Fixed(8),
        D::Decimal128(_, _) | D::Interval(IntervalUnit::MonthDayNano) => Kind::Fixed(16),
        D::Utf8 | D::LargeUtf8 | D::Utf8View | D::Binary | D::LargeBinary | D::BinaryView => {
            Kind::Bytes
        }
        _ => return None,
    })
}

fn kind_or_err(data_type: &DataType) -> Result<Kind> {
    kind(data_type).ok_or_else(|| CodecError::UnsupportedType(data_type.clone()))
}

/// Checks up front that every type is supported (planning-time validation).
pub fn check_supported(data_type: &DataType) -> Result<(), CodecError> {
    kind_or_err(data_type).map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Values and validity of a primitive column.
struct Prim<'a, T> {
    values: &'a [T],
    nulls: Option<&'a NullBuffer>,
}

impl<T: FixedKey> Prim<'_, T> {
    /// Writes the value of the `k`th of `rows` at `cursors[k]` in `data` and moves that
    /// cursor past it (1 byte for a NULL, `1 + WIDTH` otherwise).
    #[inline]
    fn write_column(
        &self,
        rows: impl Iterator<Item = usize>,
        data: &mut [u8],
        cursors: &mut [usize],
    ) {
        for (i, cursor) in rows.zip(cursors) {
            let pos = *cursor;
            if self.nulls.is_none_or(|n| n.is_valid(i)) {
                data[pos] = PRESENT_MARKER;
                self.values[i].write(&mut data[pos + 1..pos + 1 + T::WIDTH]);
                *cursor = pos + 1 + T::WIDTH;
            } else {
                data[pos] = NULL_MARKER;
                *cursor = pos + 1;
            }
        }
    }

    #[inline]
    fn encode(&self, i: usize, out: &mut Vec<u8>) {
        if self.nulls.is_none_or(|n| n.is_valid(i)) {
            out.push(PRESENT_MARKER);
            self.values[i].put(out);
        } else {
            out.push(NULL_MARKER);
        }
    }
}

/// A column downcast once per batch; encoding a value is a `match`, not a virtual call.
enum EncCol<'a> {
    Null,
    Bool(&'a BooleanArray),
    I8(Prim<'a, i8>),
    I16(Prim<'a, i16>),
    I32(Prim<'a, i32>),
    I64(Prim<'a, i64>),
    I128(Prim<'a, i128>),
    U8(Prim<'a, u8>),
    U16(Prim<'a, u16>),
    U32(Prim<'a, u32>),
    U64(Prim<'a, u64>),
    F32(Prim<'a, f32>),
    F64(Prim<'a, f64>),
    DayTime(Prim<'a, IntervalDayTime>),
    MonthDayNano(Prim<'a, IntervalMonthDayNano>),
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Utf8View(&'a StringViewArray),
    Binary(&'a BinaryArray),
    LargeBinary(&'a LargeBinaryArray),
    BinaryView(&'a BinaryViewArray),
}

fn downcast<T: Array + 'static>(array: &dyn Array) -> Result<&T> {
    array.as_any().downcast_ref::<T>().ok_or_else(|| {
        CodecError::InvalidInput(format!(
            "array of type {} is not a {}",
            array.data_type(),
            std::any::type_name::<T>()
        ))
    })
}

fn prim<T: ArrowPrimitiveType>(array: &dyn Array) -> Result<Prim<'_, T::Native>> {
    let a = downcast::<PrimitiveArray<T>>(array)?;
    Ok(Prim {
        values: a.values(),
        nulls: a.nulls(),
    })
}

impl<'a> EncCol<'a> {
    fn new(array: &'a dyn Array) -> Result<Self> {
        use DataType as D;
        use EncCol as E;
        let a = array;
        Ok(match a.data_type() {
            D::Null => E::Null,
            D::Boolean => E::Bool(downcast(a)?),
            D::Int8 => E::I8(prim::<Int8Type>(a)?),
            D::Int16 => E::I16(prim::<Int16Type>(a)?),
            D::Int32 => E::I32(prim::<Int32Type>(a)?),
            D::Int64 => E::I64(prim::<Int64Type>(a)?),
            D::UInt8 => E::U8(prim::<UInt8Type>(a)?),
            D::UInt16 => E::U16(prim::<UInt16Type>(a)?),
            D::UInt32 => E::U32(prim::<UInt32Type>(a)?),
            D::UInt64 => E::U64(prim::<UInt64Type>(a)?),
            D::Float32 => E::F32(prim::<Float32Type>(a)?),
            D::Float64 => E::F64(prim::<Float64Type>(a)?),
            D::Decimal128(_, _) => E::I128(prim::<Decimal128Type>(a)?),
            D::Date32 => E::I32(prim::<Date32Type>(a)?),
            D::Date64 => E::I64(prim::<Date64Type>(a)?),
            D::Time32(TimeUnit::Second) => E::I32(prim::<Time32SecondType>(a)?),
            D::Time32(TimeUnit::Millisecond) => E::I32(prim::<Time32MillisecondType>(a)?),
            D::Time64(TimeUnit::Microsecond) => E::I64(prim::<Time64MicrosecondType>(a)?),
            D::Time64(TimeUnit::Nanosecond) => E::I64(prim::<Time64NanosecondType>(a)?),
            D::Timestamp(TimeUnit::Second, _) => E::I64(prim::<TimestampSecondType>(a)?),
            D::Timestamp(TimeUnit::Millisecond, _) => E::I64(prim::<TimestampMillisecondType>(a)?),
            D::Timestamp(TimeUnit::Microsecond, _) => E::I64(prim::<TimestampMicrosecondType>(a)?),
            D::Timestamp(TimeUnit::Nanosecond, _) => E::I64(prim::<TimestampNanosecondType>(a)?),
            D::Duration(TimeUnit::Second) => E::I64(prim::<DurationSecondType>(a)?),
            D::Duration(TimeUnit::Millisecond) => E::I64(prim::<DurationMillisecondType>(a)?),
            D::Duration(TimeUnit::Microsecond) => E::I64(prim::<DurationMicrosecondType>(a)?),
            D::Duration(TimeUnit::Nanosecond) => E::I64(prim::<DurationNanosecondType>(a)?),
            D::Interval(IntervalUnit::YearMonth) => E::I32(prim::<IntervalYearMonthType>(a)?),
            D::Interval(IntervalUnit::DayTime) => E::DayTime(prim::<IntervalDayTimeType>(a)?),
            D::Interval(IntervalUnit::MonthDayNano) => {
                E::MonthDayNano(prim::<IntervalMonthDayNanoType>(a)?)
            }
            D::Utf8 => E::Utf8(downcast(a)?),
            D::LargeUtf8 => E::LargeUtf8(downcast(a)?),
            D::Utf8View => E::Utf8View(downcast(a)?),
            D::Binary => E::Binary(downcast(a)?),
            D::LargeBinary => E::LargeBinary(downcast(a)?),
            D::BinaryView => E::BinaryView(downcast(a)?),
            other => return Err(CodecError::UnsupportedType(other.clone())),
        })
    }

    /// Rough number of bytes per row, for reserving the output buffer.
    fn bytes_per_row_hint(&self) -> usize {
        fn avg(total: usize, len: usize) -> usize {
            total.checked_div(len).unwrap_or(0)
        }
        // marker + terminator + (a little slack for escapes)
        const BYTES_OVERHEAD: usize = 4;
        match self {
            EncCol::Utf8(a) => BYTES_OVERHEAD + avg(a.values().len(), a.len()),
            EncCol::LargeUtf8(a) => BYTES_OVERHEAD + avg(a.values().len(), a.len()),
            EncCol::Binary(a) => BYTES_OVERHEAD + avg(a.values().len(), a.len()),
            EncCol::LargeBinary(a) => BYTES_OVERHEAD + avg(a.values().len(), a.len()),
            EncCol::Utf8View(a) => {
                BYTES_OVERHEAD + avg(a.lengths().map(|l| l as usize).sum(), a.len())
            }
            EncCol::BinaryView(a) => {
                BYTES_OVERHEAD + avg(a.lengths().map(|l| l as usize).sum(), a.len())
            }
            // Marker and payload; a NULL takes less.
            fixed => fixed.fixed_width().unwrap_or(1),
        }
    }

    /// The bytes of a non-NULL value's encoding (of every value, for a `Null` column) when
    /// the type fixes them; `None` for strings and binaries. Columns of such types only are
    /// written a column at a time ([`encode_fixed`]).
    fn fixed_width(&self) -> Option<usize> {
        fn fixed<T: FixedKey>(_: &Prim<'_, T>) -> usize {
            1 + T::WIDTH
        }
        Some(match self {
            EncCol::Null => 1,
            EncCol::Bool(_) => 2,
            EncCol::I8(p) => fixed(p),
            EncCol::I16(p) => fixed(p),
            EncCol::I32(p) => fixed(p),
            EncCol::I64(p) => fixed(p),
            EncCol::I128(p) => fixed(p),
            EncCol::U8(p) => fixed(p),
            EncCol::U16(p) => fixed(p),
            EncCol::U32(p) => fixed(p),
            EncCol::U64(p) => fixed(p),
            EncCol::F32(p) => fixed(p),
            EncCol::F64(p) => fixed(p),
            EncCol::DayTime(p) => fixed(p),
            EncCol::MonthDayNano(p) => fixed(p),
            EncCol::Utf8(_)
            | EncCol::LargeUtf8(_)
            | EncCol::Utf8View(_)
            | EncCol::Binary(_)
            | EncCol::LargeBinary(_)
            | EncCol::BinaryView(_) => return None,
        })
    }

    /// The column's NULLs, when it has any (a `Null` column's values all take the same bytes,
    /// so it has none here).
    fn nulls(&self) -> Option<&NullBuffer> {
        let nulls = match self {
            EncCol::Null => None,
            EncCol::Bool(a) => a.nulls(),
            EncCol::I8(p) => p.nulls,
            EncCol::I16(p) => p.nulls,
            EncCol::I32(p) => p.nulls,
            EncCol::I64(p) => p.nulls,
            EncCol::I128(p) => p.nulls,
            EncCol::U8(p) => p.nulls,
            EncCol::U16(p) => p.nulls,
            EncCol::U32(p) => p.nulls,
            EncCol::U64(p) => p.nulls,
            EncCol::F32(p) => p.nulls,
            EncCol::F64(p) => p.nulls,
            EncCol::DayTime(p) => p.nulls,
            EncCol::MonthDayNano(p) => p.nulls,
            EncCol::Utf8(a) => a.nulls(),
            EncCol::LargeUtf8(a) => a.nulls(),
            EncCol::Utf8View(a) => a.nulls(),
            EncCol::Binary(a) => a.nulls(),
            EncCol::LargeBinary(a) => a.nulls(),
            EncCol::BinaryView(a) => a.nulls(),
        };
        nulls.filter(|n| n.null_count() > 0)
    }

    /// Writes a fixed-width column's values of `rows`, the `k`th at `cursors[k]`, moving each
    /// cursor past its value.
    fn write_column(
        &self,
        rows: impl Iterator<Item = usize>,
        data: &mut [u8],
        cursors: &mut [usize],
    ) {
        match self {
            EncCol::Null => {
                for cursor in cursors.iter_mut() {
                    data[*cursor] = NULL_MARKER;
                    *cursor += 1;
                }
            }
            EncCol::Bool(a) => {
                for (i, cursor) in rows.zip(cursors) {
                    let pos = *cursor;
                    if a.is_valid(i) {
                        data[pos] = PRESENT_MARKER;
                        data[pos + 1] = u8::from(a.value(i));
                        *cursor = pos + 2;
                    } else {
                        data[pos] = NULL_MARKER;
                        *cursor = pos + 1;
                    }
                }
            }
            EncCol::I8(p) => p.write_column(rows, data, cursors),
            EncCol::I16(p) => p.write_column(rows, data, cursors),
            EncCol::I32(p) => p.write_column(rows, data, cursors),
            EncCol::I64(p) => p.write_column(rows, data, cursors),
            EncCol::I128(p) => p.write_column(rows, data, cursors),
            EncCol::U8(p) => p.write_column(rows, data, cursors),
            EncCol::U16(p) => p.write_column(rows, data, cursors),
            EncCol::U32(p) => p.write_column(rows, data, cursors),
            EncCol::U64(p) => p.write_column(rows, data, cursors),
            EncCol::F32(p) => p.write_column(rows, data, cursors),
            EncCol::F64(p) => p.write_column(rows, data, cursors),
            EncCol::DayTime(p) => p.write_column(rows, data, cursors),
            EncCol::MonthDayNano(p) => p.write_column(rows, data, cursors),
            EncCol::Utf8(_)
            | EncCol::LargeUtf8(_)
            | EncCol::Utf8View(_)
            | EncCol::Binary(_)
            | EncCol::LargeBinary(_)
            | EncCol::BinaryView(_) => {
                unreachable!("a variable-width column is written a row at a time")
            }
        }
    }

    /// Appends the encoding of value `i` (which must be in range).
    #[inline]
    fn encode(&self, i: usize, out: &mut Vec<u8>) {
        match self {
            EncCol::Null => out.push(NULL_MARKER),
            EncCol::Bool(a) => {
                if a.is_valid(i) {
                    out.extend_from_slice(&[PRESENT_MARKER, u8::from(a.value(i))]);
                } else {
                    out.push(NULL_MARKER);
                }
            }
            EncCol::I8(p) => p.encode(i, out),
            EncCol::I16(p) => p.encode(i, out),
            EncCol::I32(p) => p.encode(i, out),
            EncCol::I64(p) => p.encode(i, out),
            EncCol::I128(p) => p.encode(i, out),
            EncCol::U8(p) => p.encode(i, out),
            EncCol::U16(p) => p.encode(i, out),
            EncCol::U32(p) => p.encode(i, out),
            EncCol::U64(p) => p.encode(i, out),
            EncCol::F32(p) => p.encode(i, out),
            EncCol::F64(p) => p.encode(i, out),
            EncCol::DayTime(p) => p.encode(i, out),
            EncCol::MonthDayNano(p) => p.encode(i, out),
            EncCol::Utf8(a) => put_opt_bytes(out, a.is_valid(i).then(|| a.value(i).as_bytes())),
            EncCol::LargeUtf8(a) => {
                put_opt_bytes(out, a.is_valid(i).then(|| a.value(i).as_bytes()))
            }
            EncCol::Utf8View(a) => put_opt_bytes(out, a.is_valid(i).then(|| a.value(i).as_bytes())),
            EncCol::Binary(a) => put_opt_bytes(out, a.is_valid(i).then(|| a.value(i))),
            EncCol::LargeBinary(a) => put_opt_bytes(out, a.is_valid(i).then(|| a.value(i))),
            EncCol::BinaryView(a) => put_opt_bytes(out, a.is_valid(i).then(|| a.value(i))),
        }
    }
}

/// The common length of `columns` (0 if there are none).
fn num_rows(columns: &[ArrayRef]) -> Result<usize> {
    let n = columns.first().map_or(0, |c| c.len());
    for (i, c) in columns.iter().enumerate() {
        if c.len() != n {
            return Err(CodecError::InvalidInput(format!(
                "column {i} has {} rows, column 0 has {n}",
                c.len()
            )));
        }
    }
    Ok(n)
}

fn encode_impl(
    prefix: &[u8],
    columns: &[ArrayRef],
    rows: impl Iterator<Item = usize> + Clone,
    count: usize,
    out: &mut EncodedRows,
) -> Result<()> {
    let cols = columns
        .iter()
        .map(|c| EncCol::new(c.as_ref()))
        .collect::<Result<Vec<_>>>()?;
    let widths: Option<Vec<usize>> = cols.iter().map(EncCol::fixed_width).collect();
    if let Some(widths) = widths.filter(|w| !w.is_empty()) {
        encode_fixed(prefix, &cols, &widths, rows, count, out);
        return Ok(());
    }
    let per_row = prefix.len() + cols.iter().map(EncCol::bytes_per_row_hint).sum::<usize>();
    out.data.reserve(per_row.saturating_mul(count));
    out.offsets.reserve(count);
    for i in rows {
        out.data.extend_from_slice(prefix);
        for col in &cols {
            col.encode(i, &mut out.data);
        }
        out.offsets.push(out.data.len());
    }
    Ok(())
}

/// [`encode_impl`] for columns that are all fixed-width: the rows' lengths first, then
/// each column written in place for every row (one `match` per column, not per value).
fn encode_fixed(
    prefix: &[u8],
    cols: &[EncCol<'_>],
    widths: &[usize],
    rows: impl Iterator<Item = usize> + Clone,
    count: usize,
    out: &mut EncodedRows,
) {
    let start = out.data.len();
    // Columns without NULLs take the same bytes in every row; a NULL takes one.
    let mut uniform = prefix.len();
    let mut nullable: Vec<(&NullBuffer, usize)> = Vec::new();
    for (col, &width) in cols.iter().zip(widths) {
        match col.nulls() {
            Some(nulls) => nullable.push((nulls, width)),
            None => uniform += width,
        }
    }
    let mut cursors: Vec<usize> = Vec::with_capacity(count);
    let mut end = start;
    out.offsets.reserve(count);
    for i in rows.clone() {
        cursors.push(end);
        end += uniform
            + nullable
                .iter()
                .map(|&(nulls, width)| if nulls.is_valid(i) { width } else { 1 })
                .sum::<usize>();
        out.offsets.push(end);
    }
    out.data.resize(end, 0);
    if !prefix.is_empty() {
        for cursor in &mut cursors {
            out.data[*cursor..*cursor + prefix.len()].copy_from_slice(prefix);
            *cursor += prefix.len();
        }
    }
    for col in cols {
        col.write_column(rows.clone(), &mut out.data, &mut cursors);
    }
}

/// Appends the encoding of rows `0..n` of `columns` (all the same length) to `out`, one row
/// each, each row prefixed by `prefix` (an operator's key prefix; empty for none).
///
/// With no columns there is no row count to go by, so nothing is appended (use
/// [`encode_selected_rows`] or [`EncodedRows::push_row`] for prefix-only keys). On error
/// nothing is appended.
pub fn encode_rows(
    prefix: &[u8],
    columns: &[ArrayRef],
    out: &mut EncodedRows,
) -> Result<(), CodecError> {
    let n = num_rows(columns)?;
    encode_impl(prefix, columns, 0..n, n, out)
}

/// Like [`encode_rows`], but only the selected rows (indices into the columns), in that order.
///
/// With no columns, appends one prefix-only row per index (no bounds check: there is nothing
/// to index). An out-of-range index is an [`CodecError::InvalidInput`]; on error nothing is
/// appended.
pub fn encode_selected_rows(
    prefix: &[u8],
    columns: &[ArrayRef],
    rows: &[u32],
    out: &mut EncodedRows,
) -> Result<(), CodecError> {
    let n = num_rows(columns)?;
    if !columns.is_empty() {
        if let Some(&bad) = rows.iter().find(|&&r| r as usize >= n) {
            return Err(CodecError::InvalidInput(format!(
                "row index {bad} out of range for {n} rows"
            )));
        }
    }
    encode_impl(
        prefix,
        columns,
        rows.iter().map(|&r| r as usize),
        rows.len(),
        out,
    )
}

/// Encodes one [`ScalarValue`] as a single column (for point lookups / literals), appending to
/// `out`. The bytes are identical to those [`encode_rows`] produces for the same value in an
/// array of the scalar's type.
pub fn encode_scalar(value: &ScalarValue, out: &mut Vec<u8>) -> Result<(), CodecError> {
    use ScalarValue as S;
    match value {
        S::Null => out.push(NULL_MARKER),
        S::Boolean(v) => put_fixed(out, v.map(u8::from)),
        S::Int8(v) => put_fixed(out, *v),
        S::Int16(v) => put_fixed(out, *v),
        S::Int32(v) => put_fixed(out, *v),
        S::Int64(v) => put_fixed(out, *v),
        S::UInt8(v) => put_fixed(out, *v),
        S::UInt16(v) => put_fixed(out, *v),
        S::UInt32(v) => put_fixed(out, *v),
        S::UInt64(v) => put_fixed(out, *v),
        S::Float32(v) => put_fixed(out, *v),
        S::Float64(v) => put_fixed(out, *v),
        S::Decimal128(v, _, _) => put_fixed(out, *v),
        S::Date32(v) | S::Time32Second(v) | S::Time32Millisecond(v) => put_fixed(out, *v),
        S::IntervalYearMonth(v) => put_fixed(out, *v),
        S::Date64(v)
        | S::Time64Microsecond(v)
        | S::Time64Nanosecond(v)
        | S::TimestampSecond(v, _)
        | S::TimestampMillisecond(v, _)
        | S::TimestampMicrosecond(v, _)
        | S::TimestampNanosecond(v, _)
        | S::DurationSecond(v)
        | S::DurationMillisecond(v)
        | S::DurationMicrosecond(v)
        | S::DurationNanosecond(v) => put_fixed(out, *v),
        S::IntervalDayTime(v) => put_fixed(out, *v),
        S::IntervalMonthDayNano(v) => put_fixed(out, *v),
        S::Utf8(v) | S::LargeUtf8(v) | S::Utf8View(v) => {
            put_opt_bytes(out, v.as_deref().map(str::as_bytes))
        }
        S::Binary(v) | S::LargeBinary(v) | S::BinaryView(v) => put_opt_bytes(out, v.as_deref()),
        other => return Err(CodecError::UnsupportedType(other.data_type())),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// Low-level decode failure; turned into [`CodecError::Corrupt`] with row/column context.
type Fail = &'static str;

fn corrupt(row: Option<usize>, col: usize, what: Fail) -> CodecError {
    match row {
        Some(row) => CodecError::Corrupt(format!("row {row}, column {col}: {what}")),
        None => CodecError::Corrupt(format!("column {col}: {what}")),
    }
}

/// Reads a null marker at `*pos`; true if a value follows.
#[inline]
fn read_marker(row: &[u8], pos: &mut usize) -> Result<bool, Fail> {
    let marker = *row.get(*pos).ok_or("truncated row (missing null marker)")?;
    *pos += 1;
    match marker {
        NULL_MARKER => Ok(false),
        PRESENT_MARKER => Ok(true),
        _ => Err("invalid null marker"),
    }
}

#[inline]
fn read_fixed<T: FixedKey>(row: &[u8], pos: &mut usize) -> Result<Option<T>, Fail> {
    if !read_marker(row, pos)? {
        return Ok(None);
    }
    let end = *pos + T::WIDTH;
    let bytes = row.get(*pos..end).ok_or("truncated fixed-width value")?;
    *pos = end;
    T::get(bytes).map(Some).ok_or("bad fixed-width value")
}

/// Reads the escaped body of a string/binary value starting at `*pos` (after the marker) and
/// moves `*pos` past its terminator. Returns the bytes borrowed from the row if the value has
/// no escapes; otherwise unescapes into `scratch` (cleared first) and returns `None`.
#[inline]
fn read_escaped<'r>(
    row: &'r [u8],
    pos: &mut usize,
    scratch: &mut Vec<u8>,
) -> Result<Option<&'r [u8]>, Fail> {
    let start = *pos;
    let mut chunk = start;
    let mut escaped = false;
    loop {
        let tail = row.get(chunk..).ok_or("unterminated string")?;
        let zero = chunk
            + tail
                .iter()
                .position(|&b| b == 0)
                .ok_or("unterminated string")?;
        match row.get(zero + 1) {
            Some(0x00) => {
                *pos = zero + 2;
                if !escaped {
                    return Ok(Some(&row[start..zero]));
                }
                scratch.extend_from_slice(&row[chunk..zero]);
                return Ok(None);
            }
            Some(0xFF) => {
                if !escaped {
                    scratch.clear();
                    escaped = true;
                }
                scratch.extend_from_slice(&row[chunk..zero]);
                scratch.push(0);
                chunk = zero + 2;
            }
            _ => return Err("invalid escape in string"),
        }
    }
}

/// Moves `*pos` past the escaped body of a string/binary value.
fn skip_escaped(row: &[u8], pos: &mut usize) -> Result<(), Fail> {
    let mut chunk = *pos;
    loop {
        let tail = row.get(chunk..).ok_or("unterminated string")?;
        let zero = chunk
            + tail
                .iter()
                .position(|&b| b == 0)
                .ok_or("unterminated string")?;
        match row.get(zero + 1) {
            Some(0x00) => {
                *pos = zero + 2;
                return Ok(());
            }
            Some(0xFF) => chunk = zero + 2,
            _ => return Err("invalid escape in string"),
        }
    }
}

fn skip_value(row: &[u8], pos: &mut usize, kind: Kind) -> Result<(), Fail> {
    let present = read_marker(row, pos)?;
    match kind {
        Kind::Null if present => Err("non-NULL value in a Null column"),
        Kind::Null => Ok(()),
        Kind::Fixed(_) | Kind::Bytes if !present => Ok(()),
        Kind::Fixed(width) => {
            if row.len() - *pos < width {
                return Err("truncated fixed-width value");
            }
            *pos += width;
            Ok(())
        }
        Kind::Bytes => skip_escaped(row, pos),
    }
}

/// A builder for string/binary values, so one generic loop decodes all six byte types.
trait ByteSink {
    fn push(&mut self, bytes: &[u8]) -> Result<(), Fail>;
    fn push_null(&mut self);
    fn build(self) -> ArrayRef;
}

macro_rules! utf8_sink {
    ($($b:ty),*) => {$(
        impl ByteSink for $b {
            #[inline]
            fn push(&mut self, bytes: &[u8]) -> Result<(), Fail> {
                let s = std::str::from_utf8(bytes).map_err(|_| "invalid UTF-8 in string value")?;
                self.append_value(s);
                Ok(())
            }
            #[inline]
            fn push_null(&mut self) {
                self.append_null();
            }
            fn build(mut self) -> ArrayRef {
                Arc::new(self.finish())
            }
        }
    )*};
}
utf8_sink!(StringBuilder, LargeStringBuilder, StringViewBuilder);

macro_rules! binary_sink {
    ($($b:ty),*) => {$(
        impl ByteSink for $b {
            #[inline]
            fn push(&mut self, bytes: &[u8]) -> Result<(), Fail> {
                self.append_value(bytes);
                Ok(())
            }
            #[inline]
            fn push_null(&mut self) {
                self.append_null();
            }
            fn build(mut self) -> ArrayRef {
                Arc::new(self.finish())
            }
        }
    )*};
}
binary_sink!(BinaryBuilder, LargeBinaryBuilder, BinaryViewBuilder);

/// Decodes one column of every row, advancing each row's cursor.
struct ColumnDecoder<'r, 'p> {
    rows: &'r [&'r [u8]],
    pos: &'p mut [usize],
    col: usize,
}

impl ColumnDecoder<'_, '_> {
    fn fail(&self, row: usize, what: Fail) -> CodecError {
        corrupt(Some(row), self.col, what)
    }

    fn null(&mut self) -> Result<ArrayRef> {
        for r in 0..self.rows.len() {
            skip_value(self.rows[r], &mut self.pos[r], Kind::Null).map_err(|e| self.fail(r, e))?;
        }
        Ok(Arc::new(NullArray::new(self.rows.len())))
    }

    fn boolean(&mut self) -> Result<ArrayRef> {
        let mut builder = BooleanBuilder::with_capacity(self.rows.len());
        for r in 0..self.rows.len() {
            let v =
                read_fixed::<u8>(self.rows[r], &mut self.pos[r]).map_err(|e| self.fail(r, e))?;
            match v {
                None => builder.append_null(),
                Some(0) => builder.append_value(false),
                Some(1) => builder.append_value(true),
                Some(_) => return Err(self.fail(r, "invalid boolean byte")),
            }
        }
        Ok(Arc::new(builder.finish()))
    }

    fn primitive<T>(&mut self, data_type: &DataType) -> Result<ArrayRef>
    where
        T: ArrowPrimitiveType,
        T::Native: FixedKey,
    {
        // `with_data_type` carries timestamp time zones and decimal precision/scale; it only
        // asserts that `data_type` belongs to `T`, which `decode_column`'s match guarantees.
        let mut builder =
            PrimitiveBuilder::<T>::with_capacity(self.rows.len()).with_data_type(data_type.clone());
        for r in 0..self.rows.len() {
            let v = read_fixed::<T::Native>(self.rows[r], &mut self.pos[r])
                .map_err(|e| self.fail(r, e))?;
            builder.append_option(v);
        }
        Ok(Arc::new(builder.finish()))
    }

    fn bytes<S: ByteSink>(&mut self, mut sink: S, scratch: &mut Vec<u8>) -> Result<ArrayRef> {
        for r in 0..self.rows.len() {
            let row = self.rows[r];
            let pos = &mut self.pos[r];
            let step = match read_marker(row, pos) {
                Ok(false) => {
                    sink.push_null();
                    Ok(())
                }
                Ok(true) => match read_escaped(row, pos, scratch) {
                    Ok(Some(borrowed)) => sink.push(borrowed),
                    Ok(None) => sink.push(scratch),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            step.map_err(|e| self.fail(r, e))?;
        }
        Ok(sink.build())
    }

    /// Rough string data size of this column: the undecoded bytes shared among the remaining
    /// columns.
    fn data_hint(&self, remaining_columns: usize) -> usize {
        let rest: usize = self
            .rows
            .iter()
            .zip(self.pos.iter())
            .map(|(row, &p)| row.len().saturating_sub(p))
            .sum();
        rest / remaining_columns.max(1)
    }

    fn decode(
        &mut self,
        data_type: &DataType,
        remaining_columns: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<ArrayRef> {
        use DataType as D;
        let n = self.rows.len();
        match data_type {
            D::Null => self.null(),
            D::Boolean => self.boolean(),
            D::Int8 => self.primitive::<Int8Type>(data_type),
            D::Int16 => self.primitive::<Int16Type>(data_type),
            D::Int32 => self.primitive::<Int32Type>(data_type),
            D::Int64 => self.primitive::<Int64Type>(data_type),
            D::UInt8 => self.primitive::<UInt8Type>(data_type),
            D::UInt16 => self.primitive::<UInt16Type>(data_type),
            D::UInt32 => self.primitive::<UInt32Type>(data_type),
            D::UInt64 => self.primitive::<UInt64Type>(data_type),
            D::Float32 => self.primitive::<Float32Type>(data_type),
            D::Float64 => self.primitive::<Float64Type>(data_type),
            D::Decimal128(_, _) => self.primitive::<Decimal128Type>(data_type),
            D::Date32 => self.primitive::<Date32Type>(data_type),
            D::Date64 => self.primitive::<Date64Type>(data_type),
            D::Time32(TimeUnit::Second) => self.primitive::<Time32SecondType>(data_type),
            D::Time32(TimeUnit::Millisecond) => self.primitive::<Time32MillisecondType>(data_type),
            D::Time64(TimeUnit::Microsecond) => self.primitive::<Time64MicrosecondType>(data_type),
            D::Time64(TimeUnit::Nanosecond) => self.primitive::<Time64NanosecondType>(data_type),
            D::Timestamp(TimeUnit::Second, _) => self.primitive::<TimestampSecondType>(data_type),
            D::Timestamp(TimeUnit::Millisecond, _) => {
                self.primitive::<TimestampMillisecondType>(data_type)
            }
            D::Timestamp(TimeUnit::Microsecond, _) => {
                self.primitive::<TimestampMicrosecondType>(data_type)
            }
            D::Timestamp(TimeUnit::Nanosecond, _) => {
                self.primitive::<TimestampNanosecondType>(data_type)
            }
            D::Duration(TimeUnit::Second) => self.primitive::<DurationSecondType>(data_type),
            D::Duration(TimeUnit::Millisecond) => {
                self.primitive::<DurationMillisecondType>(data_type)
            }
            D::Duration(TimeUnit::Microsecond) => {
                self.primitive::<DurationMicrosecondType>(data_type)
            }
            D::Duration(TimeUnit::Nanosecond) => {
                self.primitive::<DurationNanosecondType>(data_type)
            }
            D::Interval(IntervalUnit::YearMonth) => {
                self.primitive::<IntervalYearMonthType>(data_type)
            }
            D::Interval(IntervalUnit::DayTime) => self.primitive::<IntervalDayTimeType>(data_type),
            D::Interval(IntervalUnit::MonthDayNano) => {
                self.primitive::<IntervalMonthDayNanoType>(data_type)
            }
            D::Utf8 => {
                let hint = self.data_hint(remaining_columns);
                self.bytes(StringBuilder::with_capacity(n, hint), scratch)
            }
            D::LargeUtf8 => {
                let hint = self.data_hint(remaining_columns);
                self.bytes(LargeStringBuilder::with_capacity(n, hint), scratch)
            }
            D::Utf8View => self.bytes(StringViewBuilder::with_capacity(n), scratch),
            D::Binary => {
                let hint = self.data_hint(remaining_columns);
                self.bytes(BinaryBuilder::with_capacity(n, hint), scratch)
            }
            D::LargeBinary => {
                let hint = self.data_hint(remaining_columns);
                self.bytes(LargeBinaryBuilder::with_capacity(n, hint), scratch)
            }
            D::BinaryView => self.bytes(BinaryViewBuilder::with_capacity(n), scratch),
            other => Err(CodecError::UnsupportedType(other.clone())),
        }
    }
}

/// Decodes rows (each WITHOUT prefix: callers slice it off) into one array per type.
///
/// If `types` covers only the first k columns of each row, the rest of each row is ignored
/// (and not validated). Errors are [`CodecError::UnsupportedType`] (checked before any row is
/// read) or [`CodecError::Corrupt`] naming the row and column.
pub fn decode_rows<'a>(
    rows: impl IntoIterator<Item = &'a [u8]>,
    types: &[DataType],
) -> Result<Vec<ArrayRef>, CodecError> {
    for t in types {
        check_supported(t)?;
    }
    let rows: Vec<&[u8]> = rows.into_iter().collect();
    let mut pos = vec![0usize; rows.len()];
    let mut scratch = Vec::new();
    let mut out = Vec::with_capacity(types.len());
    for (col, data_type) in types.iter().enumerate() {
        let mut decoder = ColumnDecoder {
            rows: &rows,
            pos: &mut pos,
            col,
        };
        out.push(decoder.decode(data_type, types.len() - col, &mut scratch)?);
    }
    Ok(out)
}

/// Decodes (walks over) the first `types.len()` columns of one row and returns the number of
/// bytes consumed, so callers can split a key into its parts.
pub fn skip_columns(row: &[u8], types: &[DataType]) -> Result<usize, CodecError> {
    let mut pos = 0;
    for (col, data_type) in types.iter().enumerate() {
        let kind = kind_or_err(data_type)?;
        skip_value(row, &mut pos, kind).map_err(|e| corrupt(None, col, e))?;
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    //! Expected bytes and orders below are derived by hand from the format table in the module
    //! docs and from SQL semantics (reference comparators written independently of the codec).

    use super::*;
    use datafusion::arrow::array::{
        AsArray, Date32Array, Date64Array, Decimal128Array, DurationMicrosecondArray,
        DurationMillisecondArray, DurationNanosecondArray, DurationSecondArray, Float32Array,
        Float64Array, Int16Array, Int32Array, Int64Array, Int8Array, IntervalDayTimeArray,
        IntervalMonthDayNanoArray, IntervalYearMonthArray, ListArray, Time32MillisecondArray,
        Time32SecondArray, Time64MicrosecondArray, Time64NanosecondArray,
        TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
        TimestampSecondArray, UInt16Array, UInt32Array, UInt64Array, UInt8Array,
    };
    use datafusion::arrow::compute::take;
    use datafusion::arrow::datatypes::{Field, Fields};
    use std::cmp::Ordering;
    use std::fmt::Debug;

    // ---- helpers ------------------------------------------------------------------------

    /// xorshift64 — deterministic, dependency-free.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Self {
            Self(seed.max(1))
        }
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len() as u64) as usize]
        }
    }

    fn encode(columns: &[ArrayRef]) -> EncodedRows {
        let mut out = EncodedRows::new();
        encode_rows(&[], columns, &mut out).unwrap();
        out
    }

    fn rows_vec(rows: &EncodedRows) -> Vec<Vec<u8>> {
        rows.iter().map(<[u8]>::to_vec).collect()
    }

    fn types_of(columns: &[ArrayRef]) -> Vec<DataType> {
        columns.iter().map(|c| c.data_type().clone()).collect()
    }

    /// Float canonicalisation expected from the format: -0.0 -> +0.0, NaN -> quiet NaN.
    fn canon64(v: f64) -> u64 {
        if v.is_nan() {
            0x7FF8_0000_0000_0000
        } else if v == 0.0 {
            0
        } else {
            v.to_bits()
        }
    }

    fn canon32(v: f32) -> u32 {
        if v.is_nan() {
            0x7FC0_0000
        } else if v == 0.0 {
            0
        } else {
            v.to_bits()
        }
    }

    /// Decoded arrays must equal the input, except for float canonicalisation.
    fn assert_same(label: &str, got: &ArrayRef, want: &ArrayRef) {
        assert_eq!(got.data_type(), want.data_type(), "{label}: type");
        assert_eq!(got.len(), want.len(), "{label}: len");
        match want.data_type() {
            DataType::Float32 => {
                let (g, w) = (
                    got.as_primitive::<Float32Type>(),
                    want.as_primitive::<Float32Type>(),
                );
                for i in 0..w.len() {
                    assert_eq!(g.is_valid(i), w.is_valid(i), "{label}[{i}] validity");
                    if w.is_valid(i) {
                        assert_eq!(g.value(i).to_bits(), canon32(w.value(i)), "{label}[{i}]");
                    }
                }
            }
            DataType::Float64 => {
                let (g, w) = (
                    got.as_primitive::<Float64Type>(),
                    want.as_primitive::<Float64Type>(),
                );
                for i in 0..w.len() {
                    assert_eq!(g.is_valid(i), w.is_valid(i), "{label}[{i}] validity");
                    if w.is_valid(i) {
                        assert_eq!(g.value(i).to_bits(), canon64(w.value(i)), "{label}[{i}]");
                    }
                }
            }
            _ => assert_eq!(got.to_data(), want.to_data(), "{label}"),
        }
    }

    fn arr(a: impl Array + 'static) -> ArrayRef {
        Arc::new(a)
    }

    /// One array per supported type, with NULLs and extreme / awkward values.
    fn sample_arrays() -> Vec<ArrayRef> {
        let strs = vec![
            Some(""),
            None,
            Some("a\0b"),
            Some("\0"),
            Some("\0\0"),
            Some("héllo wörld — long enough not to be inlined in a view"),
            Some("\u{10FFFF}"),
            Some("ab\0"),
        ];
        let bins: Vec<Option<&[u8]>> = vec![
            Some(b""),
            None,
            Some(&[0]),
            Some(&[0, 0xFF]),
            Some(&[0xFF, 0]),
            Some(&[0, 0, 0]),
            Some(b"long binary value, more than twelve bytes\0\0"),
        ];
        let i64s = vec![
            Some(i64::MIN),
            None,
            Some(-1),
            Some(0),
            Some(1),
            Some(i64::MAX),
        ];
        let p38 = 10i128.pow(38) - 1;
        vec![
            arr(NullArray::new(4)),
            arr(BooleanArray::from(vec![Some(true), None, Some(false)])),
            arr(Int8Array::from(vec![
                Some(i8::MIN),
                None,
                Some(-1),
                Some(0),
                Some(i8::MAX),
            ])),
            arr(Int16Array::from(vec![
                Some(i16::MIN),
                None,
                Some(-1),
                Some(0),
                Some(i16::MAX),
            ])),
            arr(Int32Array::from(vec![
                Some(i32::MIN),
                None,
                Some(-1),
                Some(0),
                Some(i32::MAX),
            ])),
            arr(Int64Array::from(i64s.clone())),
            arr(UInt8Array::from(vec![
                Some(0),
                None,
                Some(1),
                Some(u8::MAX),
            ])),
            arr(UInt16Array::from(vec![
                Some(0),
                None,
                Some(1),
                Some(u16::MAX),
            ])),
            arr(UInt32Array::from(vec![
                Some(0),
                None,
                Some(1),
                Some(u32::MAX),
            ])),
            arr(UInt64Array::from(vec![
                Some(0),
                None,
                Some(1),
                Some(u64::MAX),
            ])),
            arr(Float32Array::from(vec![
                Some(f32::NAN),
                Some(-0.0),
                Some(0.0),
                Some(f32::INFINITY),
                Some(f32::NEG_INFINITY),
                Some(f32::MIN),
                Some(f32::MAX),
                Some(f32::MIN_POSITIVE),
                Some(-1.0e-45),
                None,
                Some(f32::from_bits(0xFFC0_0001)),
            ])),
            arr(Float64Array::from(vec![
                Some(f64::NAN),
                Some(-0.0),
                Some(0.0),
                Some(f64::INFINITY),
                Some(f64::NEG_INFINITY),
                Some(f64::MIN),
                Some(f64::MAX),
                Some(f64::MIN_POSITIVE),
                Some(5e-324),
                Some(-5e-324),
                None,
                Some(f64::from_bits(0x7FF0_0000_0000_0001)),
            ])),
            arr(Decimal128Array::from(vec![
                Some(i128::MIN),
                Some(-p38),
                None,
                Some(0),
                Some(1),
                Some(p38),
                Some(i128::MAX),
            ])
            .with_precision_and_scale(38, 10)
            .unwrap()),
            arr(Decimal128Array::from(vec![Some(-99999), None, Some(12345)])
                .with_precision_and_scale(5, 2)
                .unwrap()),
            arr(StringArray::from(strs.clone())),
            arr(LargeStringArray::from(strs.clone())),
            arr(StringViewArray::from(strs)),
            arr(BinaryArray::from(bins.clone())),
            arr(LargeBinaryArray::from(bins.clone())),
            arr(BinaryViewArray::from(bins)),
            arr(Date32Array::from(vec![
                Some(i32::MIN),
                None,
                Some(0),
                Some(19000),
                Some(i32::MAX),
            ])),
            arr(Date64Array::from(i64s.clone())),
            arr(TimestampSecondArray::from(i64s.clone())),
            arr(TimestampMillisecondArray::from(i64s.clone()).with_timezone("+01:00")),
            arr(TimestampMicrosecondArray::from(i64s.clone()).with_timezone("UTC")),
            arr(TimestampNanosecondArray::from(i64s.clone()).with_timezone("America/New_York")),
            arr(Time32SecondArray::from(vec![Some(0), None, Some(86_399)])),
            arr(Time32MillisecondArray::from(vec![
                Some(0),
                None,
                Some(86_399_999),
            ])),
            arr(Time64MicrosecondArray::from(vec![
                Some(0),
                None,
                Some(86_399_999_999),
            ])),
            arr(Time64NanosecondArray::from(vec![
                Some(0),
                None,
                Some(86_399_999_999_999),
            ])),
            arr(IntervalYearMonthArray::from(vec![
                Some(i32::MIN),
                None,
                Some(-13),
                Some(0),
                Some(25),
                Some(i32::MAX),
            ])),
            arr(IntervalDayTimeArray::from(vec![
                Some(IntervalDayTime::new(i32::MIN, i32::MAX)),
                None,
                Some(IntervalDayTime::new(0, 0)),
                Some(IntervalDayTime::new(-1, 1)),
                Some(IntervalDayTime::new(i32::MAX, i32::MIN)),
            ])),
            arr(IntervalMonthDayNanoArray::from(vec![
                Some(IntervalMonthDayNano::new(i32::MIN, i32::MIN, i64::MIN)),
                None,
                Some(IntervalMonthDayNano::new(1, -1, 5)),
                Some(IntervalMonthDayNano::new(0, 0, 0)),
                Some(IntervalMonthDayNano::new(i32::MAX, i32::MAX, i64::MAX)),
            ])),
            arr(DurationSecondArray::from(i64s.clone())),
            arr(DurationMillisecondArray::from(i64s.clone())),
            arr(DurationMicrosecondArray::from(i64s.clone())),
            arr(DurationNanosecondArray::from(i64s)),
        ]
    }

    // ---- exact bytes ----------------------------------------------------------------------

    #[test]
    fn exact_bytes_follow_the_documented_format() {
        let cases: Vec<(ArrayRef, Vec<Vec<u8>>)> = vec![
            (
                arr(Int32Array::from(vec![
                    Some(1),
                    Some(-1),
                    None,
                    Some(i32::MIN),
                    Some(i32::MAX),
                    Some(0),
                ])),
                vec![
                    vec![1, 0x80, 0, 0, 1],
                    vec![1, 0x7F, 0xFF, 0xFF, 0xFF],
                    vec![0],
                    vec![1, 0, 0, 0, 0],
                    vec![1, 0xFF, 0xFF, 0xFF, 0xFF],
                    vec![1, 0x80, 0, 0, 0],
                ],
            ),
            (
                arr(Int8Array::from(vec![-128, 127])),
                vec![vec![1, 0x00], vec![1, 0xFF]],
            ),
            (arr(UInt16Array::from(vec![258])), vec![vec![1, 0x01, 0x02]]),
            (
                arr(UInt64Array::from(vec![u64::MAX])),
                vec![vec![1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]],
            ),
            (
                arr(BooleanArray::from(vec![Some(true), Some(false), None])),
                vec![vec![1, 1], vec![1, 0], vec![0]],
            ),
            (
                arr(Float64Array::from(vec![
                    1.0,
                    -1.0,
                    0.0,
                    -0.0,
                    f64::NAN,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                ])),
                vec![
                    vec![1, 0xBF, 0xF0, 0, 0, 0, 0, 0, 0],
                    vec![1, 0x40, 0x0F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
                    vec![1, 0x80, 0, 0, 0, 0, 0, 0, 0],
                    vec![1, 0x80, 0, 0, 0, 0, 0, 0, 0],
                    vec![1, 0xFF, 0xF8, 0, 0, 0, 0, 0, 0],
                    vec![1, 0xFF, 0xF0, 0, 0, 0, 0, 0, 0],
                    vec![1, 0x00, 0x0F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
                ],
            ),
            (
                arr(Float32Array::from(vec![1.5, -2.0])),
                vec![vec![1, 0xBF, 0xC0, 0, 0], vec![1, 0x3F, 0xFF, 0xFF, 0xFF]],
            ),
            (
                arr(StringArray::from(vec![
                    Some(""),
                    Some("a\0b"),
                    Some("\0"),
                    None,
                ])),
                vec![
                    vec![1, 0, 0],
                    vec![1, 0x61, 0x00, 0xFF, 0x62, 0, 0],
                    vec![1, 0x00, 0xFF, 0, 0],
                    vec![0],
                ],
            ),
            (
                arr(StringViewArray::from(vec![Some("a\0b")])),
                vec![vec![1, 0x61, 0x00, 0xFF, 0x62, 0, 0]],
            ),
            (
                arr(BinaryArray::from(vec![Some(&[0xFF_u8, 0x00][..])])),
                vec![vec![1, 0xFF, 0x00, 0xFF, 0, 0]],
            ),
            (
                arr(Decimal128Array::from(vec![123, -1])
                    .with_precision_and_scale(10, 2)
                    .unwrap()),
                vec![
                    [vec![1, 0x80], vec![0; 14], vec![0x7B]].concat(),
                    [vec![1, 0x7F], vec![0xFF; 15]].concat(),
                ],
            ),
            (
                arr(IntervalMonthDayNanoArray::from(vec![
                    IntervalMonthDayNano::new(1, -1, 5),
                ])),
                vec![vec![
                    1, 0x80, 0, 0, 1, 0x7F, 0xFF, 0xFF, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 5,
                ]],
            ),
            (
                arr(IntervalDayTimeArray::from(vec![IntervalDayTime::new(
                    -2, 3,
                )])),
                vec![vec![1, 0x7F, 0xFF, 0xFF, 0xFE, 0x80, 0, 0, 3]],
            ),
            (arr(NullArray::new(2)), vec![vec![0], vec![0]]),
            (
                arr(TimestampMillisecondArray::from(vec![1]).with_timezone("+01:00")),
                vec![vec![1, 0x80, 0, 0, 0, 0, 0, 0, 1]],
            ),
            (
                arr(Date32Array::from(vec![-1])),
                vec![vec![1, 0x7F, 0xFF, 0xFF, 0xFF]],
            ),
        ];
        for (array, want) in cases {
            assert_eq!(
                rows_vec(&encode(std::slice::from_ref(&array))),
                want,
                "{}",
                array.data_type()
            );
        }

        // Tuples are plain concatenations.
        let rows = encode(&[
            arr(Int32Array::from(vec![1])),
            arr(StringArray::from(vec!["a"])),
            arr(BooleanArray::from(vec![None])),
        ]);
        assert_eq!(
            rows_vec(&rows),
            vec![vec![1, 0x80, 0, 0, 1, 1, 0x61, 0, 0, 0]]
        );
    }

    #[test]
    fn encoded_width_of_each_type() {
        // Marker + payload width, straight from the format table.
        let non_null_len: Vec<(ArrayRef, usize)> = vec![
            (arr(BooleanArray::from(vec![true])), 2),
            (arr(Int16Array::from(vec![0])), 3),
            (arr(UInt32Array::from(vec![0])), 5),
            (arr(Date64Array::from(vec![0])), 9),
            (arr(Time32MillisecondArray::from(vec![0])), 5),
            (arr(Time64NanosecondArray::from(vec![0])), 9),
            (arr(DurationSecondArray::from(vec![0])), 9),
            (arr(IntervalYearMonthArray::from(vec![0])), 5),
            (
                arr(IntervalDayTimeArray::from(vec![IntervalDayTime::new(0, 0)])),
                9,
            ),
            (
                arr(IntervalMonthDayNanoArray::from(vec![
                    IntervalMonthDayNano::new(0, 0, 0),
                ])),
                17,
            ),
            (arr(Decimal128Array::from(vec![0])), 17),
            (arr(LargeBinaryArray::from(vec![&b"xyz"[..]])), 6),
        ];
        for (array, len) in non_null_len {
            let rows = encode(std::slice::from_ref(&array));
            assert_eq!(rows.row(0).len(), len, "{}", array.data_type());
            assert_eq!(skip_columns(rows.row(0), &types_of(&[array])).unwrap(), len);
        }
    }

    // ---- round trips ----------------------------------------------------------------------

    #[test]
    fn round_trip_every_supported_type() {
        for array in sample_arrays() {
            let label = array.data_type().to_string();
            check_supported(array.data_type()).unwrap();
            let rows = encode(std::slice::from_ref(&array));
            assert_eq!(rows.len(), array.len());
            let decoded = decode_rows(rows.iter(), &[array.data_type().clone()]).unwrap();
            assert_eq!(decoded.len(), 1);
            assert_same(&label, &decoded[0], &array);
            for (i, row) in rows.iter().enumerate() {
                assert_eq!(
                    skip_columns(row, &[array.data_type().clone()]).unwrap(),
                    row.len(),
                    "{label}[{i}]"
                );
            }
        }
    }

    #[test]
    fn round_trip_all_types_in_one_row() {
        let samples = sample_arrays();
        let n = samples.iter().map(|a| a.len()).max().unwrap();
        let idx = UInt32Array::from_iter_values((0..n as u32).map(|i| i * 7 + 3));
        let columns: Vec<ArrayRef> = samples
            .iter()
            .map(|a| {
                let len = a.len() as u32;
                let idx = UInt32Array::from_iter_values(idx.values().iter().map(|i| i % len));
                take(a.as_ref(), &idx, None).unwrap()
            })
            .collect();
        let types = types_of(&columns);
        let rows = encode(&columns);
        let decoded = decode_rows(rows.iter(), &types).unwrap();
        for (got, want) in decoded.iter().zip(&columns) {
            assert_same(&want.data_type().to_string(), got, want);
        }
        for row in rows.iter() {
            assert_eq!(skip_columns(row, &types).unwrap(), row.len());
        }
        // Decoding only a leading subset ignores the rest of each row.
        let k = 15;
        let partial = decode_rows(rows.iter(), &types[..k]).unwrap();
        assert_eq!(partial.len(), k);
        for (got, want) in partial.iter().zip(&columns[..k]) {
            assert_same("partial", got, want);
        }
    }

    #[test]
    fn sliced_arrays_encode_like_fresh_ones() {
        let ints = Int32Array::from(vec![Some(5), None, Some(-7), Some(9), None]);
        let strs = StringArray::from(vec![Some("x"), Some("y\0"), None, Some(""), Some("zz")]);
        let sliced = encode(&[arr(ints.slice(1, 3)), arr(strs.slice(1, 3))]);
        let fresh = encode(&[
            arr(Int32Array::from(vec![None, Some(-7), Some(9)])),
            arr(StringArray::from(vec![Some("y\0"), None, Some("")])),
        ]);
        assert_eq!(rows_vec(&sliced), rows_vec(&fresh));
    }

    #[test]
    fn decode_of_zero_rows_gives_empty_arrays_of_the_right_type() {
        let types = types_of(&sample_arrays());
        let decoded = decode_rows(std::iter::empty(), &types).unwrap();
        for (a, t) in decoded.iter().zip(&types) {
            assert_eq!(a.len(), 0);
            assert_eq!(a.data_type(), t);
        }
        assert!(decode_rows([&[1u8][..]], &[]).unwrap().is_empty());
    }

    #[test]
    fn string_views_decode_as_other_string_types_and_back() {
        // The three string (and binary) flavours share one encoding.
        let rows = encode(&[arr(StringViewArray::from(vec![
            Some("a\0"),
            None,
            Some("b"),
        ]))]);
        let decoded =
            decode_rows(rows.iter(), &[DataType::LargeUtf8, DataType::Binary]).unwrap_err();
        // Only one column is present: asking for two must fail on the missing one.
        assert!(matches!(decoded, CodecError::Corrupt(_)));
        let decoded = decode_rows(rows.iter(), &[DataType::LargeUtf8]).unwrap();
        assert_same(
            "large",
            &decoded[0],
            &arr(LargeStringArray::from(vec![Some("a\0"), None, Some("b")])),
        );
        let decoded = decode_rows(rows.iter(), &[DataType::BinaryView]).unwrap();
        assert_same(
            "binview",
            &decoded[0],
            &arr(BinaryViewArray::from(vec![
                Some(&b"a\0"[..]),
                None,
                Some(&b"b"[..]),
            ])),
        );
    }

    // ---- scalars --------------------------------------------------------------------------

    #[test]
    fn encode_scalar_matches_column_encoding() {
        for array in sample_arrays() {
            let rows = encode(std::slice::from_ref(&array));
            for i in 0..array.len() {
                let scalar = ScalarValue::try_from_array(&array, i).unwrap();
                let mut bytes = Vec::new();
                encode_scalar(&scalar, &mut bytes).unwrap();
                assert_eq!(bytes, rows.row(i), "{scalar:?}");
            }
        }
    }

    /// Fixed-width columns are written a column at a time (`encode_fixed`): every row must
    /// be the concatenation of its values' encodings, with and without NULLs, a prefix, or a
    /// selection of rows, and next to rows already in the container.
    #[test]
    fn fixed_width_rows_are_their_values_concatenated() {
        let mut rng = Rng::new(7);
        let fixed: Vec<ArrayRef> = sample_arrays()
            .into_iter()
            .filter(|a| {
                !matches!(
                    a.data_type(),
                    DataType::Utf8
                        | DataType::LargeUtf8
                        | DataType::Utf8View
                        | DataType::Binary
                        | DataType::LargeBinary
                        | DataType::BinaryView
                )
            })
            .collect();
        for round in 0..200 {
            let width = 1 + rng.below(4) as usize;
            let picked: Vec<ArrayRef> = (0..width)
                .map(|_| fixed[rng.below(fixed.len() as u64) as usize].clone())
                .collect();
            let len = picked.iter().map(|a| a.len()).min().unwrap();
            let start = rng.below(len as u64 + 1) as usize;
            let columns: Vec<ArrayRef> =
                picked.iter().map(|a| a.slice(start, len - start)).collect();
            let n = len - start;
            let prefix: Vec<u8> = (0..rng.below(3)).map(|i| 0xA0 + i as u8).collect();
            let expected = |i: usize| {
                let mut bytes = prefix.clone();
                for column in &columns {
                    let scalar = ScalarValue::try_from_array(column, i).unwrap();
                    encode_scalar(&scalar, &mut bytes).unwrap();
                }
                bytes
            };
            let mut rows = EncodedRows::new();
            rows.push_row(b"before");
            encode_rows(&prefix, &columns, &mut rows).unwrap();
            assert_eq!(rows.len(), n + 1, "round {round}");
            assert_eq!(rows.row(0), b"before");
            for i in 0..n {
                assert_eq!(rows.row(i + 1), expected(i), "round {round}, row {i}");
            }
            let selected: Vec<u32> = (0..n).rev().step_by(2).map(|i| i as u32).collect();
            let mut rows = EncodedRows::new();
            encode_selected_rows(&prefix, &columns, &selected, &mut rows).unwrap();
            for (k, &i) in selected.iter().enumerate() {
                assert_eq!(
                    rows.row(k),
                    expected(i as usize),
                    "round {round}, selected {i}"
                );
            }
        }
    }

    #[test]
    fn encode_scalar_bytes_and_errors() {
        let mut out = vec![0xAA];
        encode_scalar(&ScalarValue::Int64(Some(-2)), &mut out).unwrap();
        encode_scalar(&ScalarValue::Utf8(None), &mut out).unwrap();
        encode_scalar(&ScalarValue::Null, &mut out).unwrap();
        encode_scalar(&ScalarValue::Utf8View(Some("\0".into())), &mut out).unwrap();
        // Appends after existing content; -2 = 0xFF..FE, sign flipped = 0x7F..FE.
        assert_eq!(
            out,
            vec![0xAA, 1, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 0, 0, 1, 0, 0xFF, 0, 0]
        );
        let list = ScalarValue::List(ScalarValue::new_list_nullable(
            &[ScalarValue::Int32(Some(1))],
            &DataType::Int32,
        ));
        let mut out = Vec::new();
        assert!(matches!(
            encode_scalar(&list, &mut out),
            Err(CodecError::UnsupportedType(_))
        ));
        assert!(matches!(
            encode_scalar(&ScalarValue::Float16(None), &mut out),
            Err(CodecError::UnsupportedType(DataType::Float16))
        ));
    }

    // ---- order preservation ---------------------------------------------------------------

    fn sql_cmp<T>(a: &Option<T>, b: &Option<T>, cmp: &impl Fn(&T, &T) -> Ordering) -> Ordering {
        match (a, b) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less, // NULLS FIRST
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => cmp(x, y),
        }
    }

    /// SQL (Postgres) float order: -0.0 = +0.0, all NaNs equal and greater than +inf.
    fn sql_float_cmp(a: f64, b: f64) -> Ordering {
        match (a.is_nan(), b.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => a.partial_cmp(&b).expect("non-NaN floats are ordered"),
        }
    }

    /// Byte order of the encodings must equal the SQL order of the values (every pair), sorting
    /// by bytes must sort the values, and the encodings must decode back.
    fn check_order<T: Debug>(
        array: ArrayRef,
        values: &[Option<T>],
        cmp: impl Fn(&T, &T) -> Ordering,
    ) {
        let label = array.data_type().to_string();
        assert_eq!(array.len(), values.len());
        let rows = encode(std::slice::from_ref(&array));
        for i in 0..values.len() {
            for j in 0..values.len() {
                assert_eq!(
                    rows.row(i).cmp(rows.row(j)),
                    sql_cmp(&values[i], &values[j], &cmp),
                    "{label}: {:?} vs {:?}",
                    values[i],
                    values[j]
                );
            }
        }
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| rows.row(a).cmp(rows.row(b)));
        for w in order.windows(2) {
            assert_ne!(
                sql_cmp(&values[w[0]], &values[w[1]], &cmp),
                Ordering::Greater,
                "{label}: sorted by bytes but {:?} > {:?}",
                values[w[0]],
                values[w[1]]
            );
        }
        let decoded = decode_rows(rows.iter(), &[array.data_type().clone()]).unwrap();
        assert_same(&label, &decoded[0], &array);
    }

    const N: usize = 300;

    macro_rules! int_values {
        ($rng:expr, $t:ty) => {
            (0..N)
                .map(|_| match $rng.below(10) {
                    0 => None,
                    1 => Some(<$t>::MIN),
                    2 => Some(<$t>::MAX),
                    3..=5 => Some(($rng.below(7) as i64 - 3) as $t),
                    _ => Some($rng.next() as $t),
                })
                .collect::<Vec<Option<$t>>>()
        };
    }

    fn ord<T: Ord>(a: &T, b: &T) -> Ordering {
        a.cmp(b)
    }

    #[test]
    fn order_integers_and_temporal() {
        let mut rng = Rng::new(0x5EED_0001);

        let v = int_values!(rng, i8);
        check_order(arr(Int8Array::from(v.clone())), &v, ord);
        let v = int_values!(rng, i16);
        check_order(arr(Int16Array::from(v.clone())), &v, ord);
        let v = int_values!(rng, i32);
        check_order(arr(Int32Array::from(v.clone())), &v, ord);
        check_order(arr(Date32Array::from(v.clone())), &v, ord);
        check_order(arr(Time32SecondArray::from(v.clone())), &v, ord);
        check_order(arr(IntervalYearMonthArray::from(v.clone())), &v, ord);
        let v = int_values!(rng, i64);
        check_order(arr(Int64Array::from(v.clone())), &v, ord);
        check_order(arr(Date64Array::from(v.clone())), &v, ord);
        check_order(
            arr(TimestampNanosecondArray::from(v.clone()).with_timezone("UTC")),
            &v,
            ord,
        );
        check_order(arr(TimestampSecondArray::from(v.clone())), &v, ord);
        check_order(arr(DurationMicrosecondArray::from(v.clone())), &v, ord);
        check_order(arr(Time64NanosecondArray::from(v.clone())), &v, ord);
        let v = int_values!(rng, u8);
        check_order(arr(UInt8Array::from(v.clone())), &v, ord);
        let v = int_values!(rng, u16);
        check_order(arr(UInt16Array::from(v.clone())), &v, ord);
        let v = int_values!(rng, u32);
        check_order(arr(UInt32Array::from(v.clone())), &v, ord);
        let v = int_values!(rng, u64);
        check_order(arr(UInt64Array::from(v.clone())), &v, ord);
    }

    #[test]
    fn order_decimal() {
        let mut rng = Rng::new(0x5EED_0002);
        let p38 = 10i128.pow(38) - 1;
        let v: Vec<Option<i128>> = (0..N)
            .map(|_| match rng.below(10) {
                0 => None,
                1 => Some(rng.pick(&[i128::MIN, i128::MAX, p38, -p38])),
                2..=4 => Some(rng.below(7) as i128 - 3),
                5..=6 => Some(rng.next() as i64 as i128),
                _ => Some(((rng.next() as u128) << 64 | rng.next() as u128) as i128),
            })
            .collect();
        let a = Decimal128Array::from(v.clone())
            .with_precision_and_scale(38, 6)
            .unwrap();
        check_order(arr(a), &v, |a, b| a.cmp(b));
    }

    #[test]
    fn order_floats() {
        let mut rng = Rng::new(0x5EED_0003);
        let specials64 = [
            f64::NAN,
            -f64::NAN,
            f64::from_bits(0x7FF0_0000_0000_0001),
            f64::from_bits(0xFFF8_0000_0000_0123),
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            5e-324,
            -5e-324,
            1.0,
            -1.0,
            0.5,
            -0.5,
        ];
        let v: Vec<Option<f64>> = (0..N)
            .map(|_| match rng.below(10) {
                0 => None,
                1..=4 => Some(rng.pick(&specials64)),
                5..=6 => Some(rng.below(7) as f64 - 3.0),
                _ => Some(f64::from_bits(rng.next())),
            })
            .collect();
        check_order(arr(Float64Array::from(v.clone())), &v, |a, b| {
            sql_float_cmp(*a, *b)
        });

        let specials32 = [
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7F80_0001),
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            1.0e-45,
            -1.0e-45,
            1.0,
            -1.0,
        ];
        let v: Vec<Option<f32>> = (0..N)
            .map(|_| match rng.below(10) {
                0 => None,
                1..=4 => Some(rng.pick(&specials32)),
                5..=6 => Some(rng.below(7) as f32 - 3.0),
                _ => Some(f32::from_bits(rng.next() as u32)),
            })
            .collect();
        // f32 -> f64 is exact and keeps NaN-ness, so the f64 reference order applies.
        check_order(arr(Float32Array::from(v.clone())), &v, |a, b| {
            sql_float_cmp(f64::from(*a), f64::from(*b))
        });
    }

    const PIECES: [&str; 10] = [
        "",
        "\0",
        "a",
        "b",
        "\u{1}",
        "\u{7f}",
        "\u{ff}",
        "zz",
        "\u{10FFFF}",
        "\0\u{ff}",
    ];

    fn random_string(rng: &mut Rng) -> String {
        let parts = rng.below(7);
        (0..parts).map(|_| rng.pick(&PIECES)).collect()
    }

    fn random_bytes(rng: &mut Rng) -> Vec<u8> {
        let len = rng.below(6);
        (0..len)
            .map(|_| rng.pick(&[0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF]))
            .collect()
    }

    #[test]
    fn order_strings_and_binaries() {
        let mut rng = Rng::new(0x5EED_0004);
        let v: Vec<Option<String>> = (0..N)
            .map(|_| (rng.below(8) != 0).then(|| random_string(&mut rng)))
            .collect();
        // SQL string order here is byte-wise (C collation / DataFusion), which is Rust's.
        let cmp = |a: &String, b: &String| a.as_bytes().cmp(b.as_bytes());
        check_order(
            arr(StringArray::from_iter(v.iter().map(|s| s.as_deref()))),
            &v,
            cmp,
        );
        check_order(
            arr(LargeStringArray::from_iter(v.iter().map(|s| s.as_deref()))),
            &v,
            cmp,
        );
        check_order(
            arr(StringViewArray::from_iter(v.iter().map(|s| s.as_deref()))),
            &v,
            cmp,
        );

        let v: Vec<Option<Vec<u8>>> = (0..N)
            .map(|_| (rng.below(8) != 0).then(|| random_bytes(&mut rng)))
            .collect();
        let cmp = |a: &Vec<u8>, b: &Vec<u8>| a.as_slice().cmp(b.as_slice());
        check_order(
            arr(BinaryArray::from_iter(v.iter().map(|b| b.as_deref()))),
            &v,
            cmp,
        );
        check_order(
            arr(LargeBinaryArray::from_iter(v.iter().map(|b| b.as_deref()))),
            &v,
            cmp,
        );
        check_order(
            arr(BinaryViewArray::from_iter(v.iter().map(|b| b.as_deref()))),
            &v,
            cmp,
        );
    }

    #[test]
    fn order_bool_null_and_intervals() {
        let mut rng = Rng::new(0x5EED_0005);
        let v: Vec<Option<bool>> = (0..50)
            .map(|_| rng.pick(&[None, Some(false), Some(true)]))
            .collect();
        check_order(arr(BooleanArray::from(v.clone())), &v, |a, b| {
            // false < true
            u8::from(*a).cmp(&u8::from(*b))
        });

        let v: Vec<Option<()>> = vec![None; 5];
        check_order(arr(NullArray::new(5)), &v, |_, _| Ordering::Equal);

        let field32 = |rng: &mut Rng| match rng.below(4) {
            0 => rng.pick(&[i32::MIN, i32::MAX, -1, 0, 1]),
            1 | 2 => rng.below(5) as i32 - 2,
            _ => rng.next() as i32,
        };
        let v: Vec<Option<IntervalDayTime>> = (0..N)
            .map(|_| {
                (rng.below(10) != 0)
                    .then(|| IntervalDayTime::new(field32(&mut rng), field32(&mut rng)))
            })
            .collect();
        check_order(arr(IntervalDayTimeArray::from(v.clone())), &v, |a, b| {
            (a.days, a.milliseconds).cmp(&(b.days, b.milliseconds))
        });

        let v: Vec<Option<IntervalMonthDayNano>> = (0..N)
            .map(|_| {
                (rng.below(10) != 0).then(|| {
                    let nanos = match rng.below(3) {
                        0 => rng.pick(&[i64::MIN, i64::MAX, -1, 0, 1]),
                        1 => rng.below(5) as i64 - 2,
                        _ => rng.next() as i64,
                    };
                    IntervalMonthDayNano::new(field32(&mut rng), field32(&mut rng), nanos)
                })
            })
            .collect();
        check_order(
            arr(IntervalMonthDayNanoArray::from(v.clone())),
            &v,
            |a, b| (a.months, a.days, a.nanoseconds).cmp(&(b.months, b.days, b.nanoseconds)),
        );
    }

    #[test]
    fn order_multi_column_tuples() {
        let mut rng = Rng::new(0x5EED_0006);
        let n = 400;
        // Few distinct values per column so that ties force comparison of later columns.
        let s: Vec<Option<String>> = (0..n)
            .map(|_| {
                (rng.below(6) != 0).then(|| {
                    let parts = rng.below(3);
                    (0..parts)
                        .map(|_| rng.pick(&["", "\0", "a", "\u{1}"]))
                        .collect()
                })
            })
            .collect();
        let i: Vec<Option<i32>> = (0..n)
            .map(|_| (rng.below(6) != 0).then(|| rng.below(5) as i32 - 2))
            .collect();
        let b: Vec<Option<Vec<u8>>> = (0..n)
            .map(|_| {
                (rng.below(6) != 0).then(|| {
                    let len = rng.below(3);
                    (0..len).map(|_| rng.pick(&[0x00, 0xFF])).collect()
                })
            })
            .collect();
        let f: Vec<Option<f64>> = (0..n)
            .map(|_| (rng.below(6) != 0).then(|| rng.pick(&[f64::NAN, -0.0, 0.0, -1.5, 2.0])))
            .collect();
        let columns = vec![
            arr(StringArray::from_iter(s.iter().map(|x| x.as_deref()))),
            arr(Int32Array::from(i.clone())),
            arr(BinaryArray::from_iter(b.iter().map(|x| x.as_deref()))),
            arr(Float64Array::from(f.clone())),
        ];
        let rows = encode(&columns);
        let reference = |x: usize, y: usize| {
            sql_cmp(&s[x], &s[y], &|a: &String, b: &String| {
                a.as_bytes().cmp(b.as_bytes())
            })
            .then_with(|| sql_cmp(&i[x], &i[y], &|a: &i32, b: &i32| a.cmp(b)))
            .then_with(|| sql_cmp(&b[x], &b[y], &|a: &Vec<u8>, b: &Vec<u8>| a.cmp(b)))
            .then_with(|| sql_cmp(&f[x], &f[y], &|a: &f64, b: &f64| sql_float_cmp(*a, *b)))
        };
        let mut equal_pairs = 0;
        for x in 0..n {
            for y in 0..n {
                let want = reference(x, y);
                equal_pairs += usize::from(want == Ordering::Equal && x != y);
                assert_eq!(
                    rows.row(x).cmp(rows.row(y)),
                    want,
                    "({:?}, {:?}, {:?}, {:?}) vs ({:?}, {:?}, {:?}, {:?})",
                    s[x],
                    i[x],
                    b[x],
                    f[x],
                    s[y],
                    i[y],
                    b[y],
                    f[y]
                );
            }
        }
        assert!(equal_pairs > 0, "test data should contain duplicate tuples");
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&x, &y| rows.row(x).cmp(rows.row(y)));
        assert!(order
            .windows(2)
            .all(|w| reference(w[0], w[1]) != Ordering::Greater));

        let decoded = decode_rows(rows.iter(), &types_of(&columns)).unwrap();
        for (got, want) in decoded.iter().zip(&columns) {
            assert_same("tuple", got, want);
        }
    }

    // ---- prefixes, selection, splitting ---------------------------------------------------

    #[test]
    fn prefix_is_prepended_and_sliced_off() {
        let columns = vec![
            arr(Int32Array::from(vec![Some(3), None])),
            arr(StringArray::from(vec![Some("x\0"), Some("")])),
        ];
        let prefix = [0xAB, 0x00, 0x01];
        let mut with = EncodedRows::new();
        encode_rows(&prefix, &columns, &mut with).unwrap();
        let without = encode(&columns);
        assert_eq!(with.len(), 2);
        assert_eq!(
            rows_vec(&with),
            vec![
                vec![0xAB, 0, 1, 1, 0x80, 0, 0, 3, 1, b'x', 0, 0xFF, 0, 0],
                vec![0xAB, 0, 1, 0, 1, 0, 0],
            ]
        );
        for (w, wo) in with.iter().zip(without.iter()) {
            assert_eq!(&w[prefix.len()..], wo);
        }
        let decoded =
            decode_rows(with.iter().map(|r| &r[prefix.len()..]), &types_of(&columns)).unwrap();
        for (got, want) in decoded.iter().zip(&columns) {
            assert_same("prefixed", got, want);
        }

        // Equal-length prefixes dominate the order.
        let mut a = EncodedRows::new();
        encode_rows(&[0x01], &[arr(Int32Array::from(vec![i32::MAX]))], &mut a).unwrap();
        encode_rows(&[0x02], &[arr(Int32Array::from(vec![None]))], &mut a).unwrap();
        assert_eq!(a.len(), 2);
        assert!(a.row(0) < a.row(1));

        // No columns: encode_rows appends nothing, encode_selected_rows prefix-only rows.
        let mut keys = EncodedRows::new();
        encode_rows(&prefix, &[], &mut keys).unwrap();
        assert!(keys.is_empty());
        encode_selected_rows(&prefix, &[], &[0, 7], &mut keys).unwrap();
        assert_eq!(rows_vec(&keys), vec![prefix.to_vec(), prefix.to_vec()]);
    }

    #[test]
    fn selected_rows_in_given_order() {
        let columns = vec![
            arr(Int32Array::from(vec![Some(10), Some(20), None, Some(40)])),
            arr(StringArray::from(vec![
                Some("a"),
                None,
                Some("c"),
                Some("d\0"),
            ])),
        ];
        let all = encode(&columns);
        let mut out = EncodedRows::new();
        out.push_row(b"existing");
        encode_selected_rows(&[7], &columns, &[3, 0, 3, 2], &mut out).unwrap();
        assert_eq!(out.len(), 5);
        assert_eq!(out.row(0), b"existing");
        for (k, &src) in [3usize, 0, 3, 2].iter().enumerate() {
            assert_eq!(out.row(k + 1)[0], 7);
            assert_eq!(&out.row(k + 1)[1..], all.row(src));
        }
        let decoded =
            decode_rows(out.iter().skip(1).map(|r| &r[1..]), &types_of(&columns)).unwrap();
        assert_same(
            "sel-int",
            &decoded[0],
            &arr(Int32Array::from(vec![Some(40), Some(10), Some(40), None])),
        );
        assert_same(
            "sel-str",
            &decoded[1],
            &arr(StringArray::from(vec![
                Some("d\0"),
                Some("a"),
                Some("d\0"),
                Some("c"),
            ])),
        );

        // Out of range: error, nothing appended.
        let err = encode_selected_rows(&[], &columns, &[1, 4], &mut out).unwrap_err();
        assert!(matches!(err, CodecError::InvalidInput(_)), "{err}");
        assert_eq!(out.len(), 5);
        encode_selected_rows(&[], &columns, &[], &mut out).unwrap();
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn skip_columns_splits_keys() {
        let columns = vec![
            arr(StringArray::from(vec![Some("a\0b"), None, Some("")])),
            arr(Int64Array::from(vec![Some(7), Some(8), None])),
            arr(Float32Array::from(vec![Some(1.0), None, Some(2.0)])),
            arr(BooleanArray::from(vec![Some(true), None, Some(false)])),
        ];
        let types = types_of(&columns);
        // Cumulative byte lengths after k columns, worked out by hand:
        // "a\0b" = 1 + (1 + 2 + 1) + 2 = 7, NULL = 1, "" = 3, Int64 = 9, Float32 = 5, Bool = 2.
        let expected = [[0, 7, 16, 21, 23], [0, 1, 10, 11, 12], [0, 3, 4, 9, 11]];
        let rows = encode(&columns);
        for (r, row) in rows.iter().enumerate() {
            assert_eq!(row.len(), expected[r][4]);
            for k in 0..=4 {
                assert_eq!(
                    skip_columns(row, &types[..k]).unwrap(),
                    expected[r][k],
                    "row {r} k {k}"
                );
            }
        }
        // Split off the first column and decode the rest.
        let tails: Vec<&[u8]> = rows
            .iter()
            .map(|row| &row[skip_columns(row, &types[..1]).unwrap()..])
            .collect();
        let decoded = decode_rows(tails, &types[1..]).unwrap();
        for (got, want) in decoded.iter().zip(&columns[1..]) {
            assert_same("tail", got, want);
        }
        // Truncated rows are corrupt.
        let row0 = rows.row(0);
        assert!(matches!(
            skip_columns(&row0[..5], &types[..1]),
            Err(CodecError::Corrupt(_))
        ));
        assert!(matches!(
            skip_columns(&row0[..10], &types[..2]),
            Err(CodecError::Corrupt(_))
        ));
        assert!(matches!(
            skip_columns(row0, &[DataType::Float16]),
            Err(CodecError::UnsupportedType(_))
        ));
    }

    // ---- errors ---------------------------------------------------------------------------

    #[test]
    fn corrupt_rows_are_rejected() {
        let bad: Vec<(&[u8], DataType)> = vec![
            (&[0x02], DataType::Int32),                            // bad marker
            (&[0x01, 0x80], DataType::Int32),                      // truncated
            (&[], DataType::Int32),                                // missing marker
            (&[0x01, b'a'], DataType::Utf8),                       // unterminated
            (&[0x01, b'a', 0x00], DataType::Utf8),                 // half a terminator
            (&[0x01, 0x00, 0x01], DataType::Binary),               // bad escape
            (&[0x01, 0xC3, 0x28, 0x00, 0x00], DataType::Utf8),     // invalid UTF-8
            (&[0x01, 0xC3, 0x28, 0x00, 0x00], DataType::Utf8View), // invalid UTF-8
            (&[0x01, 0x02], DataType::Boolean),                    // not 0/1
            (&[0x01], DataType::Null),                             // value in a Null column
        ];
        for (row, dt) in bad {
            let err = decode_rows([row], std::slice::from_ref(&dt)).unwrap_err();
            assert!(
                matches!(err, CodecError::Corrupt(_)),
                "{row:?} as {dt}: {err}"
            );
        }
        // Invalid UTF-8 is fine as binary.
        let ok = decode_rows([&[0x01, 0xC3, 0x28, 0x00, 0x00][..]], &[DataType::Binary]).unwrap();
        assert_same(
            "bin",
            &ok[0],
            &arr(BinaryArray::from(vec![&[0xC3, 0x28][..]])),
        );
        // The message names the row and column.
        let err = decode_rows(
            [&[0x00, 0x00][..], &[0x00, 0x05]],
            &[DataType::Int8, DataType::Int8],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "corrupt encoded row: row 1, column 1: invalid null marker"
        );
    }

    #[test]
    fn unsupported_types_are_rejected() {
        for t in types_of(&sample_arrays()) {
            check_supported(&t).unwrap();
        }
        let unsupported = [
            DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
            DataType::Struct(Fields::from(vec![Field::new("a", DataType::Int32, true)])),
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            DataType::Float16,
            DataType::Decimal256(40, 2),
            DataType::FixedSizeBinary(4),
            DataType::Time32(TimeUnit::Microsecond),
            DataType::Time64(TimeUnit::Second),
        ];
        for t in unsupported {
            assert!(
                matches!(check_supported(&t), Err(CodecError::UnsupportedType(ref u)) if *u == t)
            );
            assert!(matches!(
                decode_rows([&[0u8][..]], std::slice::from_ref(&t)),
                Err(CodecError::UnsupportedType(_))
            ));
        }
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1)])]);
        let mut out = EncodedRows::new();
        let err = encode_rows(&[], &[arr(list)], &mut out).unwrap_err();
        assert!(matches!(
            err,
            CodecError::UnsupportedType(DataType::List(_))
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn mismatched_column_lengths_are_rejected() {
        let mut out = EncodedRows::new();
        let err = encode_rows(
            &[],
            &[
                arr(Int32Array::from(vec![1, 2])),
                arr(Int32Array::from(vec![1])),
            ],
            &mut out,
        )
        .unwrap_err();
        assert!(matches!(err, CodecError::InvalidInput(_)));
        assert!(out.is_empty());
    }

    // ---- EncodedRows ----------------------------------------------------------------------

    #[test]
    fn encoded_rows_container() {
        let mut rows = EncodedRows::default();
        assert!(rows.is_empty());
        assert_eq!(rows.len(), 0);
        assert_eq!(rows.iter().count(), 0);
        rows.push_row(b"ab");
        rows.push_row(b"");
        rows.push_row(b"c");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows.data_len(), 3);
        assert_eq!(rows.row(0), b"ab");
        assert_eq!(rows.row(1), b"");
        assert_eq!(rows.row(2), b"c");
        assert_eq!(rows.iter().collect::<Vec<_>>(), vec![&b"ab"[..], b"", b"c"]);
        let copy = rows.clone();
        rows.clear();
        assert!(rows.is_empty());
        assert_eq!(copy.len(), 3);
        let mut sized = EncodedRows::with_capacity(10, 100);
        assert!(sized.is_empty());
        encode_rows(&[], &[arr(Int8Array::from(vec![1, 2]))], &mut sized).unwrap();
        assert_eq!(rows_vec(&sized), vec![vec![1, 0x81], vec![1, 0x82]]);
    }

    // ---- micro benchmark ------------------------------------------------------------------

    #[test]
    #[ignore = "micro benchmark: cargo test --release -p runnel-state codec::tests::bench -- --ignored --nocapture"]
    fn bench_encode_decode_throughput() {
        use std::time::Instant;
        let n = 1_000_000usize;
        let columns = vec![
            arr(Int64Array::from_iter_values(
                (0..n as i64).map(|i| (i * 7919) % 100_003),
            )),
            arr(StringArray::from_iter_values(
                (0..n).map(|i| format!("user-{}", i % 5000)),
            )),
            arr(Float64Array::from_iter(
                (0..n).map(|i| (i % 13 != 0).then_some(i as f64 * 0.5)),
            )),
            arr(Int32Array::from_iter(
                (0..n).map(|i| (i % 7 != 0).then_some(i as i32)),
            )),
        ];
        let types = types_of(&columns);
        let mut out = EncodedRows::new();
        let reps = 3;
        let start = Instant::now();
        for _ in 0..reps {
            out.clear();
            encode_rows(&[0xAB, 0xCD], &columns, &mut out).unwrap();
        }
        let enc = start.elapsed();
        let start = Instant::now();
        let mut decoded = Vec::new();
        for _ in 0..reps {
            decoded = decode_rows(out.iter().map(|r| &r[2..]), &types).unwrap();
        }
        let dec = start.elapsed();
        assert_eq!(decoded[0].len(), n);
        let rate = |d: std::time::Duration| (reps * n) as f64 / d.as_secs_f64() / 1e6;
        println!(
            "encode: {:.2} M rows/s, decode: {:.2} M rows/s ({} bytes/row)",
            rate(enc),
            rate(dec),
            out.data_len() / n
        );
    }
}
