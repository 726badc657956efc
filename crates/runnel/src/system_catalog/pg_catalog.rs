//! `pg_catalog`: the Postgres 15 system catalogs tools read, with every column Postgres has.
//! Streams and tables are relations of kind `r`, materialized views `m`, a primary key is an
//! index (`i`) with its `pg_index` and `pg_constraint` rows; catalog tables list themselves.

use std::sync::Arc;

use runnel_sql::{CatalogEntry, ObjectKind};

use super::oids::{self, PG_CATALOG_NAMESPACE, PUBLIC_NAMESPACE, SUPERUSER};
use super::types::{column_type, BUILTIN_TYPES};
use super::{Rows, Snapshot, SystemSchemaKind, SystemTable};
use runnel_pgwire::types::array_oid;

/// A user relation: what a stream, table or materialized view is in the catalogs.
pub fn relations<'a>(snapshot: &'a Snapshot<'_>) -> impl Iterator<Item = &'a Arc<CatalogEntry>> {
    snapshot
        .catalog
        .entries()
        .filter(|e| e.kind != ObjectKind::Sink)
}

/// `pg_class.relkind` of a user relation.
pub fn relkind(entry: &CatalogEntry) -> char {
    match entry.kind {
        ObjectKind::MaterializedView => 'm',
        _ => 'r',
    }
}

/// The primary key's index name, as Postgres names it.
pub fn primary_key_name(entry: &CatalogEntry) -> String {
    format!("{}_pkey", entry.name)
}

/// The SELECT of a materialized view, as `pg_get_viewdef` gives it.
pub fn view_definition(entry: &CatalogEntry) -> Option<String> {
    if entry.kind != ObjectKind::MaterializedView {
        return None;
    }
    let statements = runnel_sql::parse_statements(&entry.sql).ok()?;
    match &statements.first()?.kind {
        runnel_sql::Statement::CreateMaterializedView { view, .. } => {
            Some(format!(" {};", view.query))
        }
        _ => None,
    }
}

/// The role name for a role OID (`pg_get_userbyid`).
pub fn role_name(snapshot: &Snapshot<'_>, oid: u32) -> Option<String> {
    roles(snapshot)
        .into_iter()
        .find(|(o, _)| *o == oid)
        .map(|(_, name)| name)
}

/// Every role, by OID and name.
pub fn roles(snapshot: &Snapshot<'_>) -> Vec<(u32, String)> {
    snapshot
        .roles
        .values()
        .filter(|role| !role.is_public())
        .map(|role| (role.oid, role.name.clone()))
        .collect()
}

/// Every relation in `pg_class`, catalog tables included: (oid, name, namespace, kind, columns).
fn system_relations() -> impl Iterator<Item = (u32, &'static str, u32, &'static SystemTable)> {
    let schemas = [
        SystemSchemaKind::PgCatalog,
        SystemSchemaKind::InformationSchema,
    ];
    schemas.into_iter().flat_map(|kind| {
        let namespace = match kind {
            SystemSchemaKind::PgCatalog => PG_CATALOG_NAMESPACE,
            SystemSchemaKind::InformationSchema => oids::INFORMATION_SCHEMA_NAMESPACE,
        };
        let offset = match kind {
            SystemSchemaKind::PgCatalog => 0,
            SystemSchemaKind::InformationSchema => 500,
        };
        kind.tables().iter().enumerate().map(move |(i, table)| {
            (
                oids::system_relation(table.name, offset + i),
                table.name,
                namespace,
                table,
            )
        })
    })
}

/// The OID of a catalog table named `schema.name` (or `name` in `pg_catalog`).
pub fn system_relation_oid(name: &str) -> Option<u32> {
    let (schema, name) = name.split_once('.').unwrap_or(("pg_catalog", name));
    let namespace = match schema {
        "pg_catalog" => PG_CATALOG_NAMESPACE,
        "information_schema" => oids::INFORMATION_SCHEMA_NAMESPACE,
        _ => return None,
    };
    system_relations()
        .find(|(_, n, ns, _)| *n == name && *ns == namespace)
        .map(|(oid, ..)| oid)
}

/// The qualified name of a catalog table's OID.
pub fn system_relation_name(oid: u32) -> Option<String> {
    system_relations()
        .find(|(o, ..)| *o == oid)
        .map(|(_, name, namespace, _)| {
            if namespace == PG_CATALOG_NAMESPACE {
                name.to_string()
            } else {
                format!("information_schema.{name}")
            }
        })
}

/// The OID of the role named `name` (the bootstrap superuser's for a name no role has).
pub fn role_oid(snapshot: &Snapshot<'_>, name: &str) -> u32 {
    snapshot.roles.get(name).map_or(SUPERUSER, |role| role.oid)
}

fn pg_class(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    for entry in relations(snapshot) {
        let oid = oids::relation(entry.id);
        let has_key = !entry.primary_key.is_empty();
        let owner = role_oid(snapshot, &entry.access.owner);
        let row = rows
            .row()
            .set("oid", oid)
            .set("relname", entry.name.as_str())
            .set("relnamespace", PUBLIC_NAMESPACE)
            .set("reltype", oids::row_type(entry.id))
            .set("relowner", owner)
            .set("relam", oids::HEAP_AM)
            .set("relfilenode", oid)
            .set("reltuples", -1.0)
            .set("relhasindex", has_key)
            .set("relpersistence", 'p')
            .set("relkind", relkind(entry))
            .set("relnatts", entry.schema.fields().len())
            .set("relispopulated", true)
            .set("relreplident", 'd')
            .set("relfrozenxid", 0u32);
        if let Some(acl) = entry.access.acl_items() {
            row.set("relacl", acl);
        }
        if has_key {
            let index = oids::primary_key_index(entry.id);
            rows.row()
                .set("oid", index)
                .set("relname", primary_key_name(entry))
                .set("relnamespace", PUBLIC_NAMESPACE)
                .set("relowner", owner)
                .set("relam", oids::BTREE_AM)
                .set("relfilenode", index)
                .set("reltuples", -1.0)
                .set("relpersistence", 'p')
                .set("relkind", 'i')
                .set("relnatts", entry.primary_key.len())
                .set("relispopulated", true)
                .set("relreplident", 'n');
        }
    }
    for (oid, name, namespace, table) in system_relations() {
        rows.row()
            .set("oid", oid)
            .set("relname", name)
            .set("relnamespace", namespace)
            .set("relowner", SUPERUSER)
            .set("relam", oids::HEAP_AM)
            .set("reltuples", -1.0)
            .set("relpersistence", 'p')
            .set(
                "relkind",
                if namespace == PG_CATALOG_NAMESPACE {
                    'r'
                } else {
                    'v'
                },
            )
            .set("relnatts", table.schema().fields().len())
            .set("relispopulated", true)
            .set("relreplident", 'n');
    }
}

/// COMMENT ON texts: a relation's (`objsubid` 0) and its columns'.
fn pg_description(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    for entry in relations(snapshot) {
        for (&column, text) in &entry.comments {
            rows.row()
                .set("objoid", oids::relation(entry.id))
                .set("classoid", oids::system_relation("pg_class", 0))
                .set("objsubid", column)
                .set("description", text.as_str());
        }
    }
}

fn pg_attribute(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    let column = |rows: &mut Rows,
                  relation: u32,
                  number: usize,
                  field: &datafusion::arrow::datatypes::Field,
                  nullable: bool| {
        let name = field.name().as_str();
        let (type_oid, typmod) = column_type(field);
        let builtin = super::types::builtin(type_oid);
        let len = builtin.map_or(-1, |t| t.len);
        let textual = builtin.is_some_and(|t| t.category == 'S');
        rows.row()
            .set("attrelid", relation)
            .set("attname", name)
            .set("atttypid", type_oid)
            .set("attstattarget", -1i32)
            .set("attlen", len)
            .set("attnum", i16::try_from(number).unwrap_or(i16::MAX))
            .set(
                "attndims",
                i32::from(super::types::builtin(type_oid).is_none()),
            )
            .set("attcacheoff", -1i32)
            .set("atttypmod", typmod)
            .set("attbyval", (1..=8).contains(&len))
            .set("attalign", if len == 8 { 'd' } else { 'i' })
            .set("attstorage", if len < 0 { 'x' } else { 'p' })
            .set("attcompression", "")
            .set("attnotnull", !nullable)
            .set("attidentity", "")
            .set("attgenerated", "")
            .set("attislocal", true)
            .set(
                "attcollation",
                if textual { oids::DEFAULT_COLLATION } else { 0 },
            );
    };
    for entry in relations(snapshot) {
        let relation = oids::relation(entry.id);
        for (i, field) in entry.schema.fields().iter().enumerate() {
            let nullable = field.is_nullable() && !entry.primary_key.contains(&i);
            column(rows, relation, i + 1, field, nullable);
        }
        let index = oids::primary_key_index(entry.id);
        for (n, &i) in entry.primary_key.iter().enumerate() {
            let field = entry.schema.field(i);
            column(rows, index, n + 1, field, false);
        }
    }
    for (oid, _, _, table) in system_relations() {
        let schema = table.schema();
        for (i, field) in schema.fields().iter().enumerate() {
            column(rows, oid, i + 1, field, true);
        }
    }
}

fn pg_type(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    let base = |rows: &mut Rows,
                oid: u32,
                name: String,
                len: i16,
                category: char,
                element: u32,
                array: u32| {
        let io = if element != 0 {
            "array".to_string()
        } else {
            name.clone()
        };
        rows.row()
            .set("oid", oid)
            .set("typname", name)
            .set("typnamespace", PG_CATALOG_NAMESPACE)
            .set("typowner", SUPERUSER)
            .set("typlen", len)
            .set("typbyval", (1..=8).contains(&len))
            .set("typtype", 'b')
            .set("typcategory", category)
            .set("typisdefined", true)
            .set("typdelim", ',')
            .set("typelem", element)
            .set("typarray", array)
            .set("typinput", format!("{io}_in"))
            .set("typoutput", format!("{io}_out"))
            .set("typreceive", format!("{io}_recv"))
            .set("typsend", format!("{io}_send"))
            .set("typalign", if len == 8 { 'd' } else { 'i' })
            .set("typstorage", if len < 0 { 'x' } else { 'p' })
            .set("typtypmod", -1i32)
            .set(
                "typcollation",
                if category == 'S' {
                    oids::DEFAULT_COLLATION
                } else {
                    0
                },
            );
    };
    for t in BUILTIN_TYPES {
        let array = array_oid(t.oid);
        let has_array = runnel_pgwire::types::element_oid(array) == Some(t.oid);
        base(
            rows,
            t.oid,
            t.name.to_string(),
            t.len,
            t.category,
            0,
            if has_array { array } else { 0 },
        );
        if has_array {
            base(rows, array, format!("_{}", t.name), -1, 'A', t.oid, 0);
        }
    }
    for entry in relations(snapshot) {
        rows.row()
            .set("oid", oids::row_type(entry.id))
            .set("typname", entry.name.as_str())
            .set("typnamespace", PUBLIC_NAMESPACE)
            .set("typowner", SUPERUSER)
            .set("typlen", -1i16)
            .set("typtype", 'c')
            .set("typcategory", 'C')
            .set("typisdefined", true)
            .set("typdelim", ',')
            .set("typrelid", oids::relation(entry.id))
            .set("typinput", "record_in")
            .set("typoutput", "record_out")
            .set("typreceive", "record_recv")
            .set("typsend", "record_send")
            .set("typalign", 'd')
            .set("typstorage", 'x')
            .set("typtypmod", -1i32);
    }
}

fn pg_namespace(_: &Snapshot<'_>, rows: &mut Rows) {
    for (oid, name) in [
        (PG_CATALOG_NAMESPACE, "pg_catalog"),
        (PUBLIC_NAMESPACE, "public"),
        (oids::INFORMATION_SCHEMA_NAMESPACE, "information_schema"),
    ] {
        rows.row()
            .set("oid", oid)
            .set("nspname", name)
            .set("nspowner", SUPERUSER);
    }
}

fn pg_database(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    rows.row()
        .set("oid", oids::DATABASE)
        .set("datname", snapshot.session.database.as_str())
        .set("datdba", SUPERUSER)
        .set("encoding", 6i32)
        .set("datlocprovider", 'c')
        .set("datallowconn", true)
        .set("datconnlimit", -1i32)
        .set("datminmxid", 1u32)
        .set("dattablespace", oids::DEFAULT_TABLESPACE)
        .set("datcollate", "C")
        .set("datctype", "C");
}

/// A role's attributes are LOGIN and SUPERUSER; the others Postgres has are false (a
/// superuser may still do what they allow).
fn pg_roles(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    for role in snapshot.roles.values().filter(|role| !role.is_public()) {
        rows.row()
            .set("oid", role.oid)
            .set("rolname", role.name.as_str())
            .set("rolsuper", role.superuser)
            .set("rolinherit", true)
            .set("rolcanlogin", role.login)
            .set("rolreplication", false)
            .set("rolconnlimit", -1i32)
            .set("rolpassword", "********");
    }
}

/// Like Postgres, the stored verifiers are shown to superusers only.
fn pg_authid(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    let superuser = snapshot
        .roles
        .get(&snapshot.session.user)
        .is_some_and(|role| role.superuser);
    for role in snapshot.roles.values().filter(|role| !role.is_public()) {
        let row = rows
            .row()
            .set("oid", role.oid)
            .set("rolname", role.name.as_str())
            .set("rolsuper", role.superuser)
            .set("rolinherit", true)
            .set("rolcanlogin", role.login)
            .set("rolreplication", false)
            .set("rolconnlimit", -1i32);
        if superuser {
            if let Some(password) = &role.password {
                row.set("rolpassword", password.as_str());
            }
        }
    }
}

/// Role memberships (`GRANT role TO member`).
fn pg_auth_members(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    let mut oid = 0u32;
    for member in snapshot.roles.values() {
        for parent in &member.member_of {
            oid += 1;
            rows.row()
                .set("oid", oid)
                .set("roleid", role_oid(snapshot, parent))
                .set("member", member.oid)
                .set("grantor", SUPERUSER)
                .set("admin_option", false);
        }
    }
}

fn pg_user(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    for role in snapshot.roles.values().filter(|role| role.login) {
        rows.row()
            .set("usename", role.name.as_str())
            .set("usesysid", role.oid)
            .set("usesuper", role.superuser)
            .set("userepl", false)
            .set("passwd", "********");
    }
}

fn pg_settings(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    for (definition, value) in snapshot.session.settings.all() {
        let (vartype, min, max, enumvals) = match definition.kind {
            crate::settings::Kind::Bool => ("bool", None, None, None),
            crate::settings::Kind::Integer { min, max } => (
                "integer",
                Some(min.to_string()),
                Some(max.to_string()),
                None,
            ),
            crate::settings::Kind::Milliseconds => (
                "integer",
                Some("0".to_string()),
                Some(i32::MAX.to_string()),
                None,
            ),
            crate::settings::Kind::Enum(values) => (
                "enum",
                None,
                None,
                Some(values.iter().map(|v| v.to_string()).collect::<Vec<_>>()),
            ),
            _ => ("string", None, None, None),
        };
        let context = if definition.kind == crate::settings::Kind::ReadOnly {
            "internal"
        } else {
            "user"
        };
        rows.row()
            .set("name", definition.name)
            .set("setting", value)
            .set("unit", definition.unit)
            .set("category", definition.category)
            .set("short_desc", definition.description)
            .set("context", context)
            .set("vartype", vartype)
            .set("source", "default")
            .set("min_val", min)
            .set("max_val", max)
            .set("enumvals", enumvals)
            .set("boot_val", definition.default)
            .set("reset_val", definition.default)
            .set("pending_restart", false);
    }
}

fn pg_index(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    for entry in relations(snapshot).filter(|e| !e.primary_key.is_empty()) {
        let keys: Vec<i64> = entry.primary_key.iter().map(|&i| i as i64 + 1).collect();
        let n = keys.len();
        rows.row()
            .set("indexrelid", oids::primary_key_index(entry.id))
            .set("indrelid", oids::relation(entry.id))
            .set("indnatts", n)
            .set("indnkeyatts", n)
            .set("indisunique", true)
            .set("indisprimary", true)
            .set("indimmediate", true)
            .set("indisvalid", true)
            .set("indisready", true)
            .set("indislive", true)
            .set("indkey", keys)
            .set("indcollation", vec![0i64; n])
            .set("indclass", vec![0i64; n])
            .set("indoption", vec![0i64; n]);
    }
}

fn pg_constraint(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    for entry in relations(snapshot).filter(|e| !e.primary_key.is_empty()) {
        let keys: Vec<i64> = entry.primary_key.iter().map(|&i| i as i64 + 1).collect();
        rows.row()
            .set("oid", oids::primary_key_constraint(entry.id))
            .set("conname", primary_key_name(entry))
            .set("connamespace", PUBLIC_NAMESPACE)
            .set("contype", 'p')
            .set("convalidated", true)
            .set("conrelid", oids::relation(entry.id))
            .set("conindid", oids::primary_key_index(entry.id))
            .set("confupdtype", ' ')
            .set("confdeltype", ' ')
            .set("confmatchtype", ' ')
            .set("conislocal", true)
            .set("connoinherit", true)
            .set("conkey", keys);
    }
}

fn pg_am(_: &Snapshot<'_>, rows: &mut Rows) {
    rows.row()
        .set("oid", oids::HEAP_AM)
        .set("amname", "heap")
        .set("amhandler", "heap_tableam_handler")
        .set("amtype", 't');
    rows.row()
        .set("oid", oids::BTREE_AM)
        .set("amname", "btree")
        .set("amhandler", "bthandler")
        .set("amtype", 'i');
}

fn pg_tables(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    for entry in relations(snapshot).filter(|e| e.kind != ObjectKind::MaterializedView) {
        rows.row()
            .set("schemaname", "public")
            .set("tablename", entry.name.as_str())
            .set("tableowner", entry.access.owner.as_str())
            .set("hasindexes", !entry.primary_key.is_empty());
    }
}

fn pg_matviews(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    for entry in relations(snapshot).filter(|e| e.kind == ObjectKind::MaterializedView) {
        rows.row()
            .set("schemaname", "public")
            .set("matviewname", entry.name.as_str())
            .set("matviewowner", entry.access.owner.as_str())
            .set("hasindexes", false)
            .set("ispopulated", true)
            .set("definition", view_definition(entry));
    }
}

fn pg_indexes(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    for entry in relations(snapshot).filter(|e| !e.primary_key.is_empty()) {
        rows.row()
            .set("schemaname", "public")
            .set("tablename", entry.name.as_str())
            .set("indexname", primary_key_name(entry))
            .set("indexdef", index_definition(entry));
    }
}

/// `pg_get_indexdef` of a primary key's index.
pub fn index_definition(entry: &CatalogEntry) -> String {
    format!(
        "CREATE UNIQUE INDEX {} ON public.{} USING btree ({})",
        primary_key_name(entry),
        entry.name,
        key_columns(entry)
    )
}

/// The primary key's columns, comma separated.
pub fn key_columns(entry: &CatalogEntry) -> String {
    entry
        .primary_key
        .iter()
        .map(|&i| entry.schema.field(i).name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn pg_proc(_: &Snapshot<'_>, rows: &mut Rows) {
    for (i, (name, args, result)) in super::functions::CATALOG_FUNCTIONS.iter().enumerate() {
        rows.row()
            .set("oid", 13_000u32 + i as u32)
            .set("proname", *name)
            .set("pronamespace", PG_CATALOG_NAMESPACE)
            .set("proowner", SUPERUSER)
            .set("prolang", oids::INTERNAL_LANGUAGE)
            .set("procost", 1.0)
            .set("prokind", 'f')
            .set("provolatile", 's')
            .set("proparallel", 's')
            .set("pronargs", i16::try_from(args.len()).unwrap_or(0))
            .set("prorettype", *result)
            .set(
                "proargtypes",
                args.iter().map(|&a| i64::from(a)).collect::<Vec<_>>(),
            )
            .set("prosrc", *name);
    }
}

fn pg_tablespace(_: &Snapshot<'_>, rows: &mut Rows) {
    rows.row()
        .set("oid", oids::DEFAULT_TABLESPACE)
        .set("spcname", "pg_default")
        .set("spcowner", SUPERUSER);
}

fn pg_stat_activity(snapshot: &Snapshot<'_>, rows: &mut Rows) {
    rows.row()
        .set("datid", oids::DATABASE)
        .set("datname", snapshot.session.database.as_str())
        .set("pid", snapshot.session.backend_pid)
        .set("usesysid", SUPERUSER)
        .set("usename", snapshot.session.user.as_str())
        .set(
            "application_name",
            snapshot.session.settings.get("application_name").ok(),
        )
        .set("state", "active")
        .set("backend_type", "client backend");
}

pub static TABLES: &[SystemTable] = &[
    SystemTable::new(
        "pg_am",
        "oid oid, amname name, amhandler regproc, amtype char",
        pg_am,
    ),
    SystemTable::empty(
        "pg_attrdef",
        "oid oid, adrelid oid, adnum int2, adbin pg_node_tree",
    ),
    SystemTable::new(
        "pg_attribute",
        "attrelid oid, attname name, atttypid oid, attstattarget int4, attlen int2, attnum int2, \
         attndims int4, attcacheoff int4, atttypmod int4, attbyval bool, attalign char, \
         attstorage char, attcompression char, attnotnull bool, atthasdef bool, \
         atthasmissing bool, attidentity char, attgenerated char, attisdropped bool, \
         attislocal bool, attinhcount int4, attcollation oid, attacl aclitem[], \
         attoptions text[], attfdwoptions text[], attmissingval text[]",
        pg_attribute,
    ),
    SystemTable::new(
        "pg_auth_members",
        "oid oid, roleid oid, member oid, grantor oid, admin_option bool",
        pg_auth_members,
    ),
    SystemTable::new(
        "pg_authid",
        "oid oid, rolname name, rolsuper bool, rolinherit bool, rolcreaterole bool, \
         rolcreatedb bool, rolcanlogin bool, rolreplication bool, rolbypassrls bool, \
         rolconnlimit int4, rolpassword text, rolvaliduntil timestamptz",
        pg_authid,
    ),
    SystemTable::empty(
        "pg_cast",
        "oid oid, castsource oid, casttarget oid, castfunc oid, castcontext char, castmethod char",
    ),
    SystemTable::new(
        "pg_class",
        "oid oid, relname name, relnamespace oid, reltype oid, reloftype oid, relowner oid, \
         relam oid, relfilenode oid, reltablespace oid, relpages int4, reltuples float4, \
         relallvisible int4, reltoastrelid oid, relhasindex bool, relisshared bool, \
         relpersistence char, relkind char, relnatts int2, relchecks int2, relhasrules bool, \
         relhastriggers bool, relhassubclass bool, relrowsecurity bool, \
         relforcerowsecurity bool, relispopulated bool, relreplident char, \
         relispartition bool, relrewrite oid, relfrozenxid xid, relminmxid xid, \
         relacl aclitem[], reloptions text[], relpartbound pg_node_tree",
        pg_class,
    ),
    SystemTable::empty(
        "pg_collation",
        "oid oid, collname name, collnamespace oid, collowner oid, collprovider char, \
         collisdeterministic bool, collencoding int4, collcollate text, collctype text, \
         colliculocale text, collversion text",
    ),
    SystemTable::new(
        "pg_constraint",
        "oid oid, conname name, connamespace oid, contype char, condeferrable bool, \
         condeferred bool, convalidated bool, conrelid oid, contypid oid, conindid oid, \
         conparentid oid, confrelid oid, confupdtype char, confdeltype char, \
         confmatchtype char, conislocal bool, coninhcount int4, connoinherit bool, \
         conkey int2[], confkey int2[], conpfeqop oid[], conppeqop oid[], conffeqop oid[], \
         confdelsetcols int2[], conexclop oid[], conbin pg_node_tree",
        pg_constraint,
    ),
    SystemTable::new(
        "pg_database",
        "oid oid, datname name, datdba oid, encoding int4, datlocprovider char, \
         datistemplate bool, datallowconn bool, datconnlimit int4, datfrozenxid xid, \
         datminmxid xid, dattablespace oid, datcollate text, datctype text, \
         daticulocale text, datcollversion text, datacl aclitem[]",
        pg_database,
    ),
    SystemTable::empty(
        "pg_default_acl",
        "oid oid, defaclrole oid, defaclnamespace oid, defaclobjtype char, defaclacl aclitem[]",
    ),
    SystemTable::empty(
        "pg_depend",
        "classid oid, objid oid, objsubid int4, refclassid oid, refobjid oid, refobjsubid int4, \
         deptype char",
    ),
    SystemTable::new(
        "pg_description",
        "objoid oid, classoid oid, objsubid int4, description text",
        pg_description,
    ),
    SystemTable::empty(
        "pg_enum",
        "oid oid, enumtypid oid, enumsortorder float4, enumlabel name",
    ),
    SystemTable::empty(
        "pg_event_trigger",
        "oid oid, evtname name, evtevent name, evtowner oid, evtfoid oid, evtenabled char, \
         evttags text[]",
    ),
    SystemTable::empty(
        "pg_extension",
        "oid oid, extname name, extowner oid, extnamespace oid, extrelocatable bool, \
         extversion text, extconfig oid[], extcondition text[]",
    ),
    SystemTable::empty(
        "pg_foreign_table",
        "ftrelid oid, ftserver oid, ftoptions text[]",
    ),
    SystemTable::new(
        "pg_index",
        "indexrelid oid, indrelid oid, indnatts int2, indnkeyatts int2, indisunique bool, \
         indnullsnotdistinct bool, indisprimary bool, indisexclusion bool, indimmediate bool, \
         indisclustered bool, indisvalid bool, indcheckxmin bool, indisready bool, \
         indislive bool, indisreplident bool, indkey int2vector, indcollation oidvector, \
         indclass oidvector, indoption int2vector, indexprs pg_node_tree, indpred pg_node_tree",
        pg_index,
    ),
    SystemTable::new(
        "pg_indexes",
        "schemaname name, tablename name, indexname name, tablespace name, indexdef text",
        pg_indexes,
    ),
    SystemTable::empty(
        "pg_inherits",
        "inhrelid oid, inhparent oid, inhseqno int4, inhdetachpending bool",
    ),
    SystemTable::empty(
        "pg_language",
        "oid oid, lanname name, lanowner oid, lanispl bool, lanpltrusted bool, \
         lanplcallfoid oid, laninline oid, lanvalidator oid, lanacl aclitem[]",
    ),
    SystemTable::empty(
        "pg_locks",
        "locktype text, database oid, relation oid, page int4, tuple int2, virtualxid text, \
         transactionid xid, classid oid, objid oid, objsubid int2, virtualtransaction text, \
         pid int4, mode text, granted bool, fastpath bool, waitstart timestamptz",
    ),
    SystemTable::new(
        "pg_matviews",
        "schemaname name, matviewname name, matviewowner name, tablespace name, \
         hasindexes bool, ispopulated bool, definition text",
        pg_matviews,
    ),
    SystemTable::new(
        "pg_namespace",
        "oid oid, nspname name, nspowner oid, nspacl aclitem[]",
        pg_namespace,
    ),
    SystemTable::empty(
        "pg_opclass",
        "oid oid, opcmethod oid, opcname name, opcnamespace oid, opcowner oid, \
         opcfamily oid, opcintype oid, opcdefault bool, opckeytype oid",
    ),
    SystemTable::empty(
        "pg_operator",
        "oid oid, oprname name, oprnamespace oid, oprowner oid, oprkind char, \
         oprcanmerge bool, oprcanhash bool, oprleft oid, oprright oid, oprresult oid, \
         oprcom oid, oprnegate oid, oprcode regproc, oprrest regproc, oprjoin regproc",
    ),
    SystemTable::empty(
        "pg_partitioned_table",
        "partrelid oid, partstrat char, partnatts int2, partdefid oid, partattrs int2vector, \
         partclass oidvector, partcollation oidvector, partexprs pg_node_tree",
    ),
    SystemTable::empty(
        "pg_policy",
        "oid oid, polname name, polrelid oid, polcmd char, polpermissive bool, \
         polroles oid[], polqual pg_node_tree, polwithcheck pg_node_tree",
    ),
    SystemTable::new(
        "pg_proc",
        "oid oid, proname name, pronamespace oid, proowner oid, prolang oid, procost float4, \
         prorows float4, provariadic oid, prosupport regproc, prokind char, prosecdef bool, \
         proleakproof bool, proisstrict bool, proretset bool, provolatile char, \
         proparallel char, pronargs int2, pronargdefaults int2, prorettype oid, \
         proargtypes oidvector, proallargtypes oid[], proargmodes char[], proargnames text[], \
         proargdefaults pg_node_tree, protrftypes oid[], prosrc text, probin text, \
         prosqlbody pg_node_tree, proconfig text[], proacl aclitem[]",
        pg_proc,
    ),
    SystemTable::empty(
        "pg_publication",
        "oid oid, pubname name, pubowner oid, puballtables bool, pubinsert bool, \
         pubupdate bool, pubdelete bool, pubtruncate bool, pubviaroot bool",
    ),
    SystemTable::empty(
        "pg_publication_namespace",
        "oid oid, pnpubid oid, pnnspid oid",
    ),
    SystemTable::empty(
        "pg_publication_rel",
        "oid oid, prpubid oid, prrelid oid, prqual pg_node_tree, prattrs int2vector",
    ),
    SystemTable::empty(
        "pg_range",
        "rngtypid oid, rngsubtype oid, rngmultitypid oid, rngcollation oid, \
         rngsubopc oid, rngcanonical regproc, rngsubdiff regproc",
    ),
    SystemTable::empty(
        "pg_rewrite",
        "oid oid, rulename name, ev_class oid, ev_type char, ev_enabled char, \
         is_instead bool, ev_qual pg_node_tree, ev_action pg_node_tree",
    ),
    SystemTable::new(
        "pg_roles",
        "rolname name, rolsuper bool, rolinherit bool, rolcreaterole bool, rolcreatedb bool, \
         rolcanlogin bool, rolreplication bool, rolconnlimit int4, rolpassword text, \
         rolvaliduntil timestamptz, rolbypassrls bool, rolconfig text[], oid oid",
        pg_roles,
    ),
    SystemTable::empty(
        "pg_sequence",
        "seqrelid oid, seqtypid oid, seqstart int8, seqincrement int8, seqmax int8, \
         seqmin int8, seqcache int8, seqcycle bool",
    ),
    SystemTable::new(
        "pg_settings",
        "name text, setting text, unit text, category text, short_desc text, \
         extra_desc text, context text, vartype text, source text, min_val text, \
         max_val text, enumvals text[], boot_val text, reset_val text, sourcefile text, \
         sourceline int4, pending_restart bool",
        pg_settings,
    ),
    SystemTable::empty(
        "pg_shdescription",
        "objoid oid, classoid oid, description text",
    ),
    SystemTable::new(
        "pg_stat_activity",
        "datid oid, datname name, pid int4, leader_pid int4, usesysid oid, usename name, \
         application_name text, client_addr text, client_hostname text, client_port int4, \
         backend_start timestamptz, xact_start timestamptz, query_start timestamptz, \
         state_change timestamptz, wait_event_type text, wait_event text, state text, \
         backend_xid xid, backend_xmin xid, query_id int8, query text, backend_type text",
        pg_stat_activity,
    ),
    SystemTable::empty(
        "pg_statistic_ext",
        "oid oid, stxrelid oid, stxname name, stxnamespace oid, stxowner oid, \
         stxstattarget int4, stxkeys int2vector, stxkind char[], stxexprs pg_node_tree",
    ),
    SystemTable::new(
        "pg_tables",
        "schemaname name, tablename name, tableowner name, tablespace name, \
         hasindexes bool, hasrules bool, hastriggers bool, rowsecurity bool",
        pg_tables,
    ),
    SystemTable::new(
        "pg_tablespace",
        "oid oid, spcname name, spcowner oid, spcacl aclitem[], spcoptions text[]",
        pg_tablespace,
    ),
    SystemTable::empty(
        "pg_trigger",
        "oid oid, tgrelid oid, tgparentid oid, tgname name, tgfoid oid, tgtype int2, \
         tgenabled char, tgisinternal bool, tgconstrrelid oid, tgconstrindid oid, \
         tgconstraint oid, tgdeferrable bool, tginitdeferred bool, tgnargs int2, \
         tgattr int2vector, tgargs text, tgqual pg_node_tree, tgoldtable name, tgnewtable name",
    ),
    SystemTable::new(
        "pg_type",
        "oid oid, typname name, typnamespace oid, typowner oid, typlen int2, typbyval bool, \
         typtype char, typcategory char, typispreferred bool, typisdefined bool, \
         typdelim char, typrelid oid, typsubscript regproc, typelem oid, typarray oid, \
         typinput regproc, typoutput regproc, typreceive regproc, typsend regproc, \
         typmodin regproc, typmodout regproc, typanalyze regproc, typalign char, \
         typstorage char, typnotnull bool, typbasetype oid, typtypmod int4, typndims int4, \
         typcollation oid, typdefaultbin pg_node_tree, typdefault text, typacl aclitem[]",
        pg_type,
    ),
    SystemTable::new(
        "pg_user",
        "usename name, usesysid oid, usecreatedb bool, usesuper bool, userepl bool, \
         usebypassrls bool, passwd text, valuntil timestamptz, useconfig text[]",
        pg_user,
    ),
    SystemTable::empty(
        "pg_views",
        "schemaname name, viewname name, viewowner name, definition text",
    ),
];
