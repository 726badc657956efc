//! Conversions between Arrow and Postgres type identities used when describing statements.

use datafusion::arrow::datatypes::{DataType, IntervalUnit, Schema, SchemaRef, TimeUnit};
use runnel_common::change::nullable_schema;

/// The Postgres type OID a column of this Arrow type is reported as.
pub fn type_oid(t: &DataType) -> u32 {
    match t {
        DataType::Boolean => 16,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => 21,
        DataType::Int32 | DataType::UInt16 => 23,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => 20,
        DataType::Float16 | DataType::Float32 => 700,
        DataType::Float64 => 701,
        DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => 1700,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => 17,
        DataType::Date32 | DataType::Date64 => 1082,
        DataType::Timestamp(_, None) => 1114,
        DataType::Timestamp(_, Some(_)) => 1184,
        DataType::Interval(_) => 1186,
        DataType::Time32(_) | DataType::Time64(_) => 1083,
        _ => 25,
    }
}

/// The Arrow type a parameter declared with this OID is parsed as.
pub fn oid_type(oid: u32) -> Option<DataType> {
    Some(match oid {
        16 => DataType::Boolean,
        21 => DataType::Int16,
        23 => DataType::Int32,
        20 => DataType::Int64,
        700 => DataType::Float32,
        701 => DataType::Float64,
        1700 => DataType::Decimal128(38, 10),
        25 | 1043 | 1042 | 19 => DataType::Utf8,
        1082 => DataType::Date32,
        1114 => DataType::Timestamp(TimeUnit::Microsecond, None),
        1184 => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        1186 => DataType::Interval(IntervalUnit::MonthDayNano),
        _ => return None,
    })
}

pub fn nullable_arrow_schema(schema: &Schema) -> SchemaRef {
    nullable_schema(schema)
}
