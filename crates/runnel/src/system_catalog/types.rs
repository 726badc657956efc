//! The built-in Postgres types Runnel reports: their `pg_type` rows, and the names
//! `format_type()` and `information_schema.columns` give a column of each.

use datafusion::arrow::datatypes::Field;
use runnel_pgwire::oid;
use runnel_pgwire::types::{array_oid, element_oid};

/// A built-in base type.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinType {
    pub oid: u32,
    /// `pg_type.typname`.
    pub name: &'static str,
    /// The SQL name `format_type()` prints.
    pub sql_name: &'static str,
    pub len: i16,
    /// `pg_type.typcategory`.
    pub category: char,
}

const fn t(
    oid: u32,
    name: &'static str,
    sql_name: &'static str,
    len: i16,
    category: char,
) -> BuiltinType {
    BuiltinType {
        oid,
        name,
        sql_name,
        len,
        category,
    }
}

pub static BUILTIN_TYPES: &[BuiltinType] = &[
    t(oid::BOOL, "bool", "boolean", 1, 'B'),
    t(oid::BYTEA, "bytea", "bytea", -1, 'U'),
    t(oid::CHAR, "char", "\"char\"", 1, 'Z'),
    t(oid::NAME, "name", "name", 64, 'S'),
    t(oid::INT8, "int8", "bigint", 8, 'N'),
    t(oid::INT2, "int2", "smallint", 2, 'N'),
    t(22, "int2vector", "int2vector", -1, 'A'),
    t(oid::INT4, "int4", "integer", 4, 'N'),
    t(24, "regproc", "regproc", 4, 'N'),
    t(oid::TEXT, "text", "text", -1, 'S'),
    t(oid::OID, "oid", "oid", 4, 'N'),
    t(30, "oidvector", "oidvector", -1, 'A'),
    t(oid::JSON, "json", "json", -1, 'U'),
    t(194, "pg_node_tree", "pg_node_tree", -1, 'Z'),
    t(oid::FLOAT4, "float4", "real", 4, 'N'),
    t(oid::FLOAT8, "float8", "double precision", 8, 'N'),
    t(oid::UNKNOWN, "unknown", "unknown", -2, 'X'),
    t(1033, "aclitem", "aclitem", 16, 'U'),
    t(oid::BPCHAR, "bpchar", "character", -1, 'S'),
    t(oid::VARCHAR, "varchar", "character varying", -1, 'S'),
    t(oid::DATE, "date", "date", 4, 'D'),
    t(oid::TIME, "time", "time without time zone", 8, 'D'),
    t(
        oid::TIMESTAMP,
        "timestamp",
        "timestamp without time zone",
        8,
        'D',
    ),
    t(
        oid::TIMESTAMPTZ,
        "timestamptz",
        "timestamp with time zone",
        8,
        'D',
    ),
    t(oid::INTERVAL, "interval", "interval", 16, 'T'),
    t(oid::NUMERIC, "numeric", "numeric", -1, 'N'),
    t(2205, "regclass", "regclass", 4, 'N'),
    t(2206, "regtype", "regtype", 4, 'N'),
    t(oid::UUID, "uuid", "uuid", 16, 'U'),
    t(oid::JSONB, "jsonb", "jsonb", -1, 'U'),
    t(4089, "regnamespace", "regnamespace", 4, 'N'),
    t(4096, "regrole", "regrole", 4, 'N'),
];

pub fn builtin(type_oid: u32) -> Option<&'static BuiltinType> {
    BUILTIN_TYPES.iter().find(|t| t.oid == type_oid)
}

/// The type OID and typmod a column is reported with.
pub fn column_type(field: &Field) -> (u32, i32) {
    let pg = runnel_pgwire::pg_type_of(field);
    (pg.oid, pg.typmod)
}

/// `format_type(type_oid, typmod)`: `bigint`, `numeric(10,2)`, `text[]`, ...
pub fn format_type(type_oid: u32, typmod: Option<i32>) -> Option<String> {
    if let Some(element) = element_oid(type_oid) {
        return format_type(element, None).map(|name| format!("{name}[]"));
    }
    let builtin = builtin(type_oid)?;
    let typmod = typmod.filter(|&m| m >= 0);
    Some(match (type_oid, typmod) {
        (oid::NUMERIC, Some(m)) if m >= 4 => {
            let m = m - 4;
            format!("numeric({},{})", (m >> 16) & 0xffff, m & 0xffff)
        }
        (oid::VARCHAR, Some(m)) if m >= 4 => format!("character varying({})", m - 4),
        (oid::BPCHAR, Some(m)) if m >= 4 => format!("character({})", m - 4),
        _ => builtin.sql_name.to_string(),
    })
}

/// `information_schema.columns.data_type`: the SQL name without modifiers, `ARRAY` for arrays.
pub fn information_schema_type(type_oid: u32) -> String {
    if element_oid(type_oid).is_some() {
        return "ARRAY".to_string();
    }
    builtin(type_oid).map_or_else(|| "USER-DEFINED".to_string(), |t| t.sql_name.to_string())
}

/// The `pg_type` name of a type OID, arrays as `_element`.
pub fn type_name(type_oid: u32) -> Option<String> {
    if let Some(element) = element_oid(type_oid) {
        return builtin(element).map(|t| format!("_{}", t.name));
    }
    builtin(type_oid).map(|t| t.name.to_string())
}

/// Looks a type name up as `::regtype` does: SQL names, `pg_type` names and `name[]`.
pub fn lookup_type(name: &str) -> Option<u32> {
    let name = name
        .trim()
        .trim_start_matches("pg_catalog.")
        .to_ascii_lowercase();
    let name = name.trim_matches('"');
    if let Some(element) = name.strip_suffix("[]") {
        return lookup_type(element).map(array_oid);
    }
    let alias = match name {
        "int" | "integer" => "int4",
        "smallint" => "int2",
        "bigint" => "int8",
        "real" => "float4",
        "double precision" | "float" => "float8",
        "boolean" => "bool",
        "character varying" => "varchar",
        "character" => "bpchar",
        "decimal" => "numeric",
        "timestamp with time zone" => "timestamptz",
        "timestamp without time zone" => "timestamp",
        "time without time zone" => "time",
        other => other,
    };
    BUILTIN_TYPES
        .iter()
        .find(|t| t.name == alias)
        .map(|t| t.oid)
        .or_else(|| {
            let element = alias.strip_prefix('_')?;
            BUILTIN_TYPES
                .iter()
                .find(|t| t.name == element)
                .map(|t| array_oid(t.oid))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_types_as_postgres_does() {
        assert_eq!(format_type(oid::INT8, None).as_deref(), Some("bigint"));
        assert_eq!(
            format_type(oid::NUMERIC, Some(((10 << 16) | 2) + 4)).as_deref(),
            Some("numeric(10,2)")
        );
        assert_eq!(format_type(1009, None).as_deref(), Some("text[]"));
        assert_eq!(
            format_type(oid::TIMESTAMPTZ, Some(-1)).as_deref(),
            Some("timestamp with time zone")
        );
        assert_eq!(information_schema_type(1016), "ARRAY");
        assert_eq!(lookup_type("integer"), Some(oid::INT4));
        assert_eq!(lookup_type("pg_catalog.text[]"), Some(1009));
        assert_eq!(lookup_type("_int8"), Some(1016));
        assert_eq!(type_name(1016).as_deref(), Some("_int8"));
        assert_eq!(lookup_type("hstore"), None);
    }
}
