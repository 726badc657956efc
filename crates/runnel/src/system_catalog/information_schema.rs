//! `information_schema`: the SQL-standard views of the catalog, with Postgres's type names
//! (`bigint`, `timestamp with time zone`) and 1-based ordinals.
//!
//! One difference from Postgres, chosen for the tools Runnel's users point at it (Grafana's
//! table picker, BI tools): materialized views are listed in `tables` (as `VIEW`), `views`
//! and `columns`, where Postgres lists them only in `pg_catalog`.

use runnel_sql::ObjectKind;

use super::pg_catalog::{primary_key_name, relations, view_definition};
use super::types::{column_type, information_schema_type, type_name};
use super::{Rows, Snapshot, SystemTable};
use runnel_pgwire::oid;

fn tables(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    let database = snapshot.session.database.as_str();
    for entry in relations(snapshot) {
        let view = entry.kind == ObjectKind::MaterializedView;
        rows.row()
            .set("table_catalog", database)
            .set("table_schema", "public")
            .set("table_name", entry.name.as_str())
            .set("table_type", if view { "VIEW" } else { "BASE TABLE" })
            .set("is_insertable_into", if view { "NO" } else { "YES" })
            .set("is_typed", "NO");
    }
}

fn columns(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    let database = snapshot.session.database.as_str();
    for entry in relations(snapshot) {
        for (i, field) in entry.schema.fields().iter().enumerate() {
            let (type_oid, typmod) = column_type(field);
            let nullable = field.is_nullable() && !entry.primary_key.contains(&i);
            let (precision, radix, scale) = numeric_shape(type_oid, typmod);
            let datetime_precision = matches!(
                type_oid,
                oid::TIMESTAMP | oid::TIMESTAMPTZ | oid::TIME | oid::INTERVAL | oid::DATE
            )
            .then_some(if type_oid == oid::DATE { 0 } else { 6 });
            rows.row()
                .set("table_catalog", database)
                .set("table_schema", "public")
                .set("table_name", entry.name.as_str())
                .set("column_name", field.name().as_str())
                .set("ordinal_position", i + 1)
                .set("is_nullable", if nullable { "YES" } else { "NO" })
                .set("data_type", information_schema_type(type_oid))
                .set("numeric_precision", precision)
                .set("numeric_precision_radix", radix)
                .set("numeric_scale", scale)
                .set("datetime_precision", datetime_precision)
                .set("udt_catalog", database)
                .set("udt_schema", "pg_catalog")
                .set("udt_name", type_name(type_oid))
                .set("dtd_identifier", (i + 1).to_string())
                .set("is_self_referencing", "NO")
                .set("is_identity", "NO")
                .set("is_generated", "NEVER")
                .set(
                    "is_updatable",
                    if entry.kind == ObjectKind::MaterializedView {
                        "NO"
                    } else {
                        "YES"
                    },
                );
        }
    }
}

/// `numeric_precision`, its radix and `numeric_scale` as Postgres reports them.
fn numeric_shape(type_oid: u32, typmod: i32) -> (Option<i32>, Option<i32>, Option<i32>) {
    match type_oid {
        oid::INT2 => (Some(16), Some(2), Some(0)),
        oid::INT4 => (Some(32), Some(2), Some(0)),
        oid::INT8 => (Some(64), Some(2), Some(0)),
        oid::FLOAT4 => (Some(24), Some(2), None),
        oid::FLOAT8 => (Some(53), Some(2), None),
        oid::NUMERIC if typmod >= 4 => {
            let m = typmod - 4;
            (Some((m >> 16) & 0xffff), Some(10), Some(m & 0xffff))
        }
        oid::NUMERIC => (None, Some(10), None),
        _ => (None, None, None),
    }
}

fn schemata(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    for schema in ["pg_catalog", "public", "information_schema"] {
        rows.row()
            .set("catalog_name", snapshot.session.database.as_str())
            .set("schema_name", schema)
            .set("schema_owner", "runnel");
    }
}

fn views(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    for entry in relations(snapshot).filter(|e| e.kind == ObjectKind::MaterializedView) {
        rows.row()
            .set("table_catalog", snapshot.session.database.as_str())
            .set("table_schema", "public")
            .set("table_name", entry.name.as_str())
            .set("view_definition", view_definition(entry))
            .set("check_option", "NONE")
            .set("is_updatable", "NO")
            .set("is_insertable_into", "NO")
            .set("is_trigger_updatable", "NO")
            .set("is_trigger_deletable", "NO")
            .set("is_trigger_insertable_into", "NO");
    }
}

fn table_constraints(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    let database = snapshot.session.database.as_str();
    for entry in relations(snapshot).filter(|e| !e.primary_key.is_empty()) {
        rows.row()
            .set("constraint_catalog", database)
            .set("constraint_schema", "public")
            .set("constraint_name", primary_key_name(entry))
            .set("table_catalog", database)
            .set("table_schema", "public")
            .set("table_name", entry.name.as_str())
            .set("constraint_type", "PRIMARY KEY")
            .set("is_deferrable", "NO")
            .set("initially_deferred", "NO")
            .set("enforced", "YES")
            .set("nulls_distinct", None::<&str>);
    }
}

fn key_column_usage(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    let database = snapshot.session.database.as_str();
    for entry in relations(snapshot) {
        for (n, &i) in entry.primary_key.iter().enumerate() {
            rows.row()
                .set("constraint_catalog", database)
                .set("constraint_schema", "public")
                .set("constraint_name", primary_key_name(entry))
                .set("table_catalog", database)
                .set("table_schema", "public")
                .set("table_name", entry.name.as_str())
                .set("column_name", entry.schema.field(i).name().as_str())
                .set("ordinal_position", n + 1);
        }
    }
}

pub static TABLES: &[SystemTable] = &[
    SystemTable::empty(
        "check_constraints",
        "constraint_catalog name, constraint_schema name, constraint_name name, \
         check_clause text",
    ),
    SystemTable::new(
        "columns",
        "table_catalog name, table_schema name, table_name name, column_name name, \
         ordinal_position int4, column_default text, is_nullable yes_or_no, data_type text, \
         character_maximum_length int4, character_octet_length int4, numeric_precision int4, \
         numeric_precision_radix int4, numeric_scale int4, datetime_precision int4, \
         interval_type text, interval_precision int4, character_set_catalog name, \
         character_set_schema name, character_set_name name, collation_catalog name, \
         collation_schema name, collation_name name, domain_catalog name, domain_schema name, \
         domain_name name, udt_catalog name, udt_schema name, udt_name name, \
         scope_catalog name, scope_schema name, scope_name name, maximum_cardinality int4, \
         dtd_identifier name, is_self_referencing yes_or_no, is_identity yes_or_no, \
         identity_generation text, identity_start text, identity_increment text, \
         identity_maximum text, identity_minimum text, identity_cycle yes_or_no, \
         is_generated text, generation_expression text, is_updatable yes_or_no",
        columns,
    ),
    SystemTable::new(
        "key_column_usage",
        "constraint_catalog name, constraint_schema name, constraint_name name, \
         table_catalog name, table_schema name, table_name name, column_name name, \
         ordinal_position int4, position_in_unique_constraint int4",
        key_column_usage,
    ),
    SystemTable::empty(
        "referential_constraints",
        "constraint_catalog name, constraint_schema name, constraint_name name, \
         unique_constraint_catalog name, unique_constraint_schema name, \
         unique_constraint_name name, match_option text, update_rule text, delete_rule text",
    ),
    SystemTable::empty(
        "routines",
        "specific_catalog name, specific_schema name, specific_name name, \
         routine_catalog name, routine_schema name, routine_name name, routine_type text, \
         data_type text, type_udt_name name, routine_definition text, external_language text",
    ),
    SystemTable::new(
        "schemata",
        "catalog_name name, schema_name name, schema_owner name, \
         default_character_set_catalog name, default_character_set_schema name, \
         default_character_set_name name, sql_path text",
        schemata,
    ),
    SystemTable::new(
        "table_constraints",
        "constraint_catalog name, constraint_schema name, constraint_name name, \
         table_catalog name, table_schema name, table_name name, constraint_type text, \
         is_deferrable yes_or_no, initially_deferred yes_or_no, enforced yes_or_no, \
         nulls_distinct yes_or_no",
        table_constraints,
    ),
    SystemTable::new(
        "tables",
        "table_catalog name, table_schema name, table_name name, table_type text, \
         self_referencing_column_name name, reference_generation text, \
         user_defined_type_catalog name, user_defined_type_schema name, \
         user_defined_type_name name, is_insertable_into yes_or_no, is_typed yes_or_no, \
         commit_action text",
        tables,
    ),
    SystemTable::new(
        "views",
        "table_catalog name, table_schema name, table_name name, view_definition text, \
         check_option text, is_updatable yes_or_no, is_insertable_into yes_or_no, \
         is_trigger_updatable yes_or_no, is_trigger_deletable yes_or_no, \
         is_trigger_insertable_into yes_or_no",
        views,
    ),
];
