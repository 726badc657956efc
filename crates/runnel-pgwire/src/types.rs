//! Postgres types of Arrow data: which type OID a column is reported as, how its values are
//! written in text and binary format, and how binary-format parameters become text.
//!
//! | Arrow | Postgres |
//! | --- | --- |
//! | Boolean | `bool` (16) |
//! | Int8, Int16, UInt8 | `int2` (21) |
//! | Int32, UInt16 | `int4` (23) |
//! | Int64 | `int8` (20) |
//! | UInt32 | `oid` (26) |
//! | UInt64, Decimal32/64/128/256 | `numeric` (1700) |
//! | Float16, Float32 | `float4` (700) |
//! | Float64 | `float8` (701) |
//! | Utf8, LargeUtf8, Utf8View | `text` (25) |
//! | Binary, LargeBinary, BinaryView, FixedSizeBinary | `bytea` (17) |
//! | Date32, Date64 | `date` (1082) |
//! | Time32, Time64 | `time` (1083) |
//! | Timestamp without zone | `timestamp` (1114) |
//! | Timestamp with a zone | `timestamptz` (1184), rendered in UTC |
//! | Interval, Duration | `interval` (1186) |
//! | Dictionary | the type of its values |
//! | List, LargeList | the array type of its element's type (`text[]` for the rest) |
//! | anything else | `text`, with Arrow's display form |
//!
//! A Utf8 field whose metadata key `runnel.pg_type` ([`PG_TYPE_METADATA_KEY`]) is `json`,
//! `jsonb` or `uuid` is that type (the text is already in the type's normal form); in binary,
//! `jsonb` is a version byte then the text and `uuid` its 16 bytes.
//!
//! Every one of these has a binary encoding (for the `text` fallback it is the same UTF-8 as
//! the text form), so a column is sent in binary whenever the client asks for it.

mod column;
mod format;
mod params;
mod style;

use arrow::datatypes::{DataType, Field, TimeUnit};

pub use column::text_column;
pub(crate) use column::RowEncoder;
pub use format::{
    parse_bytea, write_bytea, write_date, write_decimal, write_float4, write_float8,
    write_interval, write_time, write_timestamp,
};
pub(crate) use params::decode_param;
pub use style::{DateOrder, DateStyle, IntervalStyle, OutputStyle};

/// Type OIDs of the built-in Postgres types this crate deals with.
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const UNKNOWN: u32 = 705;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
    /// An anonymous row (`ROW(1, 'a')`, a whole-row reference).
    pub const RECORD: u32 = 2249;
}

/// How a column is described in RowDescription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgType {
    /// Type OID, see [`oid`].
    pub oid: u32,
    /// `pg_type.typlen`: the size of a fixed-size type, -1 for variable size.
    pub typlen: i16,
    /// Type modifier: `((precision << 16) | scale) + 4` for numeric, otherwise -1.
    pub typmod: i32,
}

impl PgType {
    const fn new(oid: u32, typlen: i16) -> Self {
        Self {
            oid,
            typlen,
            typmod: -1,
        }
    }
}

/// Wire format of a value: Postgres format code 0 or 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Binary,
}

impl Format {
    /// The protocol's format code.
    pub fn code(self) -> i16 {
        match self {
            Self::Text => 0,
            Self::Binary => 1,
        }
    }

    /// Reads a format code; `None` for anything but 0 and 1.
    pub fn from_code(code: i16) -> Option<Self> {
        match code {
            0 => Some(Self::Text),
            1 => Some(Self::Binary),
            _ => None,
        }
    }
}

/// The field metadata key naming a text column's Postgres type (`json`, `jsonb`, `uuid`); the
/// server crates tag fields with the same key.
pub const PG_TYPE_METADATA_KEY: &str = "runnel.pg_type";

/// The OID of a Utf8 field tagged as `json`, `jsonb` or `uuid`.
pub(crate) fn text_type_oid(field: &Field) -> Option<u32> {
    if !matches!(field.data_type(), DataType::Utf8) {
        return None;
    }
    match field.metadata().get(PG_TYPE_METADATA_KEY)?.as_str() {
        "json" => Some(oid::JSON),
        "jsonb" => Some(oid::JSONB),
        "uuid" => Some(oid::UUID),
        _ => None,
    }
}

/// The Postgres type a column is reported as: its tag's, else its Arrow type's.
pub fn pg_type_of(field: &Field) -> PgType {
    match text_type_oid(field) {
        Some(oid::UUID) => PgType::new(oid::UUID, 16),
        Some(oid) => PgType::new(oid, -1),
        None => pg_type(field.data_type()),
    }
}

/// The Postgres type an Arrow column is reported as (see the module docs for the mapping).
pub fn pg_type(data_type: &DataType) -> PgType {
    match data_type {
        DataType::Boolean => PgType::new(oid::BOOL, 1),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => PgType::new(oid::INT2, 2),
        DataType::Int32 | DataType::UInt16 => PgType::new(oid::INT4, 4),
        DataType::Int64 => PgType::new(oid::INT8, 8),
        DataType::UInt32 => PgType::new(oid::OID, 4),
        DataType::UInt64 => PgType::new(oid::NUMERIC, -1),
        DataType::Float16 | DataType::Float32 => PgType::new(oid::FLOAT4, 4),
        DataType::Float64 => PgType::new(oid::FLOAT8, 8),
        // How a bare NUMERIC is kept (an engine's choice: Runnel's): no typmod, as Postgres
        // reports an unconstrained numeric.
        DataType::Decimal128(38, 10) => PgType::new(oid::NUMERIC, -1),
        DataType::Decimal32(precision, scale)
        | DataType::Decimal64(precision, scale)
        | DataType::Decimal128(precision, scale)
        | DataType::Decimal256(precision, scale) => PgType {
            oid: oid::NUMERIC,
            typlen: -1,
            // Postgres numeric typmods have a non-negative scale up to 1000.
            typmod: u8::try_from(*scale).map_or(-1, |scale| {
                ((i32::from(*precision) << 16) | i32::from(scale)) + 4
            }),
        },
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => PgType::new(oid::BYTEA, -1),
        DataType::Date32 | DataType::Date64 => PgType::new(oid::DATE, 4),
        DataType::Time32(_) | DataType::Time64(_) => PgType::new(oid::TIME, 8),
        DataType::Timestamp(_, None) => PgType::new(oid::TIMESTAMP, 8),
        DataType::Timestamp(_, Some(_)) => PgType::new(oid::TIMESTAMPTZ, 8),
        DataType::Interval(_) | DataType::Duration(_) => PgType::new(oid::INTERVAL, 16),
        DataType::Dictionary(_, values) => pg_type(values),
        DataType::List(element) | DataType::LargeList(element) => {
            PgType::new(array_oid(pg_type(element.data_type()).oid), -1)
        }
        DataType::Struct(_) => PgType::new(oid::RECORD, -1),
        _ => PgType::new(oid::TEXT, -1),
    }
}

/// The OID of the array type whose elements have type `element` (`text[]` for types without
/// one here).
pub fn array_oid(element: u32) -> u32 {
    ARRAY_TYPES
        .iter()
        .find(|(e, _)| *e == element)
        .map_or(1009, |(_, array)| *array)
}

/// The element type of an array type OID.
pub fn element_oid(array: u32) -> Option<u32> {
    ARRAY_TYPES
        .iter()
        .find(|(_, a)| *a == array)
        .map(|(element, _)| *element)
}

/// (element type, array type) OIDs of the built-in types.
pub const ARRAY_TYPES: &[(u32, u32)] = &[
    (oid::BOOL, 1000),
    (oid::BYTEA, 1001),
    (oid::CHAR, 1002),
    (oid::NAME, 1003),
    (oid::INT2, 1005),
    (oid::INT4, 1007),
    (oid::TEXT, 1009),
    (oid::VARCHAR, 1015),
    (oid::BPCHAR, 1014),
    (oid::INT8, 1016),
    (oid::FLOAT4, 1021),
    (oid::FLOAT8, 1022),
    (oid::OID, 1028),
    (oid::TIMESTAMP, 1115),
    (oid::DATE, 1182),
    (oid::TIME, 1183),
    (oid::TIMESTAMPTZ, 1185),
    (oid::INTERVAL, 1187),
    (oid::NUMERIC, 1231),
    (oid::UUID, 2951),
    (oid::JSON, 199),
    (oid::JSONB, 3807),
    (oid::RECORD, 2287),
];

/// The SQL name Postgres uses in messages for the type with this OID (`type_oid` for others).
pub fn type_name(type_oid: u32) -> String {
    let name = match type_oid {
        oid::BOOL => "boolean",
        oid::BYTEA => "bytea",
        oid::CHAR => "\"char\"",
        oid::NAME => "name",
        oid::INT8 => "bigint",
        oid::INT2 => "smallint",
        oid::INT4 => "integer",
        oid::TEXT => "text",
        oid::OID => "oid",
        oid::JSON => "json",
        oid::FLOAT4 => "real",
        oid::FLOAT8 => "double precision",
        oid::BPCHAR => "character",
        oid::VARCHAR => "character varying",
        oid::DATE => "date",
        oid::TIME => "time without time zone",
        oid::TIMESTAMP => "timestamp without time zone",
        oid::TIMESTAMPTZ => "timestamp with time zone",
        oid::INTERVAL => "interval",
        oid::NUMERIC => "numeric",
        oid::UUID => "uuid",
        oid::JSONB => "jsonb",
        oid::RECORD => "record",
        other => return format!("type {other}"),
    };
    name.to_string()
}

/// The Arrow type an engine would naturally use for a parameter of type `oid`, for the types
/// whose choice is unambiguous (`numeric`, whose precision is unknown, and unknown OIDs give
/// `None`).
pub fn arrow_type_for_oid(oid: u32) -> Option<DataType> {
    Some(match oid {
        oid::BOOL => DataType::Boolean,
        oid::INT2 => DataType::Int16,
        oid::INT4 => DataType::Int32,
        oid::INT8 => DataType::Int64,
        oid::OID => DataType::UInt32,
        oid::FLOAT4 => DataType::Float32,
        oid::FLOAT8 => DataType::Float64,
        oid::TEXT
        | oid::VARCHAR
        | oid::BPCHAR
        | oid::NAME
        | oid::CHAR
        | oid::UNKNOWN
        | oid::JSON
        | oid::JSONB
        | oid::UUID => DataType::Utf8,
        oid::BYTEA => DataType::Binary,
        oid::DATE => DataType::Date32,
        oid::TIME => DataType::Time64(TimeUnit::Microsecond),
        oid::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        oid::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        oid::INTERVAL => DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn maps_arrow_types() {
        let cases = [
            (DataType::Boolean, oid::BOOL, 1),
            (DataType::Int8, oid::INT2, 2),
            (DataType::UInt8, oid::INT2, 2),
            (DataType::Int16, oid::INT2, 2),
            (DataType::UInt16, oid::INT4, 4),
            (DataType::Int32, oid::INT4, 4),
            (DataType::UInt32, oid::OID, 4),
            (DataType::Int64, oid::INT8, 8),
            (DataType::UInt64, oid::NUMERIC, -1),
            (DataType::Float32, oid::FLOAT4, 4),
            (DataType::Float64, oid::FLOAT8, 8),
            (DataType::Decimal256(40, 2), oid::NUMERIC, -1),
            (DataType::Utf8View, oid::TEXT, -1),
            (DataType::LargeUtf8, oid::TEXT, -1),
            (DataType::Binary, oid::BYTEA, -1),
            (DataType::Date64, oid::DATE, 4),
            (DataType::Time64(TimeUnit::Nanosecond), oid::TIME, 8),
            (
                DataType::Timestamp(TimeUnit::Millisecond, None),
                oid::TIMESTAMP,
                8,
            ),
            (
                DataType::Timestamp(TimeUnit::Microsecond, Some("+02:00".into())),
                oid::TIMESTAMPTZ,
                8,
            ),
            (
                DataType::Interval(arrow::datatypes::IntervalUnit::YearMonth),
                oid::INTERVAL,
                16,
            ),
            (
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                oid::TEXT,
                -1,
            ),
            (
                DataType::List(Arc::new(arrow::datatypes::Field::new(
                    "item",
                    DataType::Int32,
                    true,
                ))),
                1007,
                -1,
            ),
        ];
        for (data_type, oid, typlen) in cases {
            let pg = pg_type(&data_type);
            assert_eq!((pg.oid, pg.typlen), (oid, typlen), "{data_type}");
        }
        assert_eq!(
            pg_type(&DataType::Decimal128(10, 2)).typmod,
            (10 << 16 | 2) + 4
        );
        assert_eq!(pg_type(&DataType::Int32).typmod, -1);
    }
}
