//! Postgres's system catalogs, `pg_catalog` and `information_schema`, as views of Runnel's own
//! catalog: every table is computed from the catalog snapshot and the session when it is
//! scanned, so it can never drift from what exists. psql's meta-commands, SQLAlchemy's
//! reflection, pgjdbc's `DatabaseMetaData`, Grafana and GUI tools read these.
//!
//! Tables are declared by their columns ([`columns`]) and filled by name ([`Row::set`]), so a
//! table lists every column Postgres has while its filler sets only those Runnel knows; the
//! others hold the type's neutral value (0, false, NULL).
//!
//! Object identifiers (see [`oids`]) follow Postgres where tools expect fixed values (the
//! `pg_catalog` and `public` namespaces, built-in types, the bootstrap superuser) and are
//! derived from Runnel's object ids for user relations.
//!
//! Also here: the functions tools call ([`functions`]), which read the same snapshot.

pub mod functions;
mod information_schema;
pub mod oids;
mod pg_catalog;
pub mod table_functions;
pub mod to_json;
pub mod types;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float32Builder, Float64Builder, Int16Builder, Int32Builder,
    Int64Builder, ListBuilder, StringBuilder, UInt32Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use runnel_sql::Catalog;

use crate::settings::SessionSettings;
use crate::shared::Shared;

/// Who is asking: what the catalog tables and functions need of the session.
#[derive(Debug, Clone)]
pub struct SessionIdentity {
    pub user: String,
    pub database: String,
    pub settings: SessionSettings,
    /// The process id reported in BackendKeyData and by `pg_backend_pid()`.
    pub backend_pid: i32,
}

impl SessionIdentity {
    /// The identity of work the server does on its own (restoring views at start-up).
    pub fn system() -> Self {
        SessionIdentity {
            user: "runnel".to_string(),
            database: "runnel".to_string(),
            settings: SessionSettings::default(),
            backend_pid: 0,
        }
    }
}

/// What a catalog table is filled from.
pub struct Snapshot<'a> {
    pub catalog: &'a Catalog,
    pub session: &'a SessionIdentity,
    pub roles: &'a crate::roles::RoleMap,
}

/// The column types catalog tables use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Oid,
    Text,
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    TextArray,
    Int2Array,
    OidArray,
}

impl ColumnType {
    fn parse(spelling: &str) -> Option<Self> {
        Some(match spelling {
            "oid" | "regclass" | "regtype" | "xid" => ColumnType::Oid,
            "name" | "text" | "char" | "regproc" | "varchar" | "pg_node_tree" | "timestamptz"
            | "yes_or_no" | "interval" => ColumnType::Text,
            "bool" => ColumnType::Bool,
            "int2" => ColumnType::Int2,
            "int4" => ColumnType::Int4,
            "int8" => ColumnType::Int8,
            "float4" => ColumnType::Float4,
            "float8" => ColumnType::Float8,
            "text[]" | "name[]" | "aclitem[]" | "char[]" => ColumnType::TextArray,
            "int2[]" | "int2vector" => ColumnType::Int2Array,
            "oid[]" | "oidvector" | "regtype[]" => ColumnType::OidArray,
            _ => return None,
        })
    }

    fn data_type(self) -> DataType {
        let list =
            |element: DataType| DataType::List(Arc::new(Field::new_list_field(element, true)));
        match self {
            ColumnType::Oid => DataType::UInt32,
            ColumnType::Text => DataType::Utf8,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Int2 => DataType::Int16,
            ColumnType::Int4 => DataType::Int32,
            ColumnType::Int8 => DataType::Int64,
            ColumnType::Float4 => DataType::Float32,
            ColumnType::Float8 => DataType::Float64,
            ColumnType::TextArray => list(DataType::Utf8),
            ColumnType::Int2Array => list(DataType::Int16),
            ColumnType::OidArray => list(DataType::UInt32),
        }
    }

    /// The value a column holds when its filler does not set it.
    fn neutral(self) -> Value {
        match self {
            ColumnType::Oid | ColumnType::Int2 | ColumnType::Int4 | ColumnType::Int8 => {
                Value::Int(0)
            }
            ColumnType::Float4 | ColumnType::Float8 => Value::Float(0.0),
            ColumnType::Bool => Value::Bool(false),
            _ => Value::Null,
        }
    }
}

/// A schema from `"name type, name type, ..."` (Postgres type names, see [`ColumnType`]).
/// The specs are constants of this module, so a bad one is a bug.
pub fn columns(spec: &str) -> (SchemaRef, Vec<ColumnType>) {
    let mut fields = Vec::new();
    let mut types = Vec::new();
    for column in spec.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let (name, type_name) = column
            .split_once(' ')
            .unwrap_or_else(|| panic!("catalog column spec {column:?} has no type"));
        let column_type = ColumnType::parse(type_name.trim())
            .unwrap_or_else(|| panic!("catalog column type {type_name:?} is unknown"));
        fields.push(Field::new(name, column_type.data_type(), true));
        types.push(column_type);
    }
    (Arc::new(Schema::new(fields)), types)
}

/// A cell of a catalog row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
    TextArray(Vec<String>),
    IntArray(Vec<i64>),
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(v.into())
    }
}
impl From<i16> for Value {
    fn from(v: i16) -> Self {
        Value::Int(v.into())
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v.into())
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<char> for Value {
    fn from(v: char) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<Vec<String>> for Value {
    fn from(v: Vec<String>) -> Self {
        Value::TextArray(v)
    }
}
impl From<Vec<i64>> for Value {
    fn from(v: Vec<i64>) -> Self {
        Value::IntArray(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// The rows of one catalog table being filled.
pub struct Rows {
    schema: SchemaRef,
    types: Vec<ColumnType>,
    index: HashMap<String, usize>,
    rows: Vec<Vec<Value>>,
}

/// One row being filled; columns not set keep their neutral value.
pub struct Row<'a> {
    rows: &'a mut Rows,
}

impl Row<'_> {
    /// Sets column `name`. Naming a column the table does not have is a bug in a filler; it is
    /// caught by the tests that scan every table.
    pub fn set(self, name: &str, value: impl Into<Value>) -> Self {
        let index = self.rows.index.get(name).copied();
        debug_assert!(index.is_some(), "catalog column {name} does not exist");
        if let (Some(index), Some(row)) = (index, self.rows.rows.last_mut()) {
            row[index] = value.into();
        }
        self
    }
}

impl Rows {
    fn new(schema: SchemaRef, types: Vec<ColumnType>) -> Self {
        let index = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name().clone(), i))
            .collect();
        Rows {
            schema,
            types,
            index,
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self) -> Row<'_> {
        let row = self.types.iter().map(|t| t.neutral()).collect();
        self.rows.push(row);
        Row { rows: self }
    }

    fn into_batch(self) -> DfResult<RecordBatch> {
        let columns: Vec<ArrayRef> = self
            .types
            .iter()
            .enumerate()
            .map(|(c, t)| build_column(*t, self.rows.iter().map(|row| &row[c])))
            .collect();
        Ok(RecordBatch::try_new(self.schema, columns)?)
    }
}

fn build_column<'a>(column_type: ColumnType, values: impl Iterator<Item = &'a Value>) -> ArrayRef {
    fn int(v: &Value) -> Option<i64> {
        match v {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }
    macro_rules! ints {
        ($builder:ty, $t:ty) => {{
            let mut b = <$builder>::new();
            for v in values {
                b.append_option(int(v).map(|i| i as $t));
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    match column_type {
        ColumnType::Oid => ints!(UInt32Builder, u32),
        ColumnType::Int2 => ints!(Int16Builder, i16),
        ColumnType::Int4 => ints!(Int32Builder, i32),
        ColumnType::Int8 => ints!(Int64Builder, i64),
        ColumnType::Float4 | ColumnType::Float8 => {
            let floats = values.map(|v| match v {
                Value::Float(f) => Some(*f),
                Value::Int(i) => Some(*i as f64),
                _ => None,
            });
            if column_type == ColumnType::Float4 {
                let mut b = Float32Builder::new();
                floats.for_each(|f| b.append_option(f.map(|f| f as f32)));
                Arc::new(b.finish())
            } else {
                let mut b = Float64Builder::new();
                floats.for_each(|f| b.append_option(f));
                Arc::new(b.finish())
            }
        }
        ColumnType::Bool => {
            let mut b = BooleanBuilder::new();
            for v in values {
                b.append_option(match v {
                    Value::Bool(x) => Some(*x),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        ColumnType::Text => {
            let mut b = StringBuilder::new();
            for v in values {
                match v {
                    Value::Text(s) => b.append_value(s),
                    Value::Int(i) => b.append_value(i.to_string()),
                    Value::Bool(x) => b.append_value(if *x { "t" } else { "f" }),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::TextArray => {
            let mut b = ListBuilder::new(StringBuilder::new());
            for v in values {
                match v {
                    Value::TextArray(items) => {
                        items.iter().for_each(|s| b.values().append_value(s));
                        b.append(true);
                    }
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Int2Array => {
            let mut b = ListBuilder::new(Int16Builder::new());
            for v in values {
                match v {
                    Value::IntArray(items) => {
                        items
                            .iter()
                            .for_each(|&i| b.values().append_value(i as i16));
                        b.append(true);
                    }
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::OidArray => {
            let mut b = ListBuilder::new(UInt32Builder::new());
            for v in values {
                match v {
                    Value::IntArray(items) => {
                        items
                            .iter()
                            .for_each(|&i| b.values().append_value(i as u32));
                        b.append(true);
                    }
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
    }
}

/// One catalog table: its columns and how its rows are made.
pub struct SystemTable {
    pub name: &'static str,
    spec: &'static str,
    fill: fn(&Snapshot<'_>, &mut Rows),
    /// Never has rows (see [`SystemTable::empty`]).
    pub always_empty: bool,
}

impl SystemTable {
    pub const fn new(
        name: &'static str,
        spec: &'static str,
        fill: fn(&Snapshot<'_>, &mut Rows),
    ) -> Self {
        SystemTable {
            name,
            spec,
            fill,
            always_empty: false,
        }
    }

    /// A table Runnel has nothing to put in (triggers, rules, policies, ...): tools still
    /// join against it.
    pub const fn empty(name: &'static str, spec: &'static str) -> Self {
        SystemTable {
            name,
            spec,
            fill: |_, _| {},
            always_empty: true,
        }
    }

    pub fn schema(&self) -> SchemaRef {
        columns(self.spec).0
    }

    /// The table's rows for this snapshot.
    pub fn batch(&self, snapshot: &Snapshot<'_>) -> DfResult<RecordBatch> {
        let (schema, types) = columns(self.spec);
        let mut rows = Rows::new(schema, types);
        (self.fill)(snapshot, &mut rows);
        rows.into_batch()
    }
}

/// Whether the catalog table `name` (in either system schema) never has rows.
pub fn is_always_empty(name: &str) -> bool {
    [
        SystemSchemaKind::PgCatalog,
        SystemSchemaKind::InformationSchema,
    ]
    .iter()
    .flat_map(|kind| kind.tables())
    .any(|t| t.name == name && t.always_empty)
}

/// Which of the two system schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemSchemaKind {
    PgCatalog,
    InformationSchema,
}

impl SystemSchemaKind {
    pub fn tables(self) -> &'static [SystemTable] {
        match self {
            SystemSchemaKind::PgCatalog => pg_catalog::TABLES,
            SystemSchemaKind::InformationSchema => information_schema::TABLES,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SystemSchemaKind::PgCatalog => "pg_catalog",
            SystemSchemaKind::InformationSchema => "information_schema",
        }
    }
}

/// `pg_catalog` or `information_schema` as a DataFusion schema.
#[derive(Debug)]
pub struct SystemSchema {
    kind: SystemSchemaKind,
    shared: Arc<Shared>,
    session: SessionIdentity,
}

impl SystemSchema {
    pub fn new(kind: SystemSchemaKind, shared: Arc<Shared>, session: SessionIdentity) -> Self {
        SystemSchema {
            kind,
            shared,
            session,
        }
    }

    /// The table `name`, as a provider.
    pub fn provider(&self, name: &str) -> Option<Arc<dyn TableProvider>> {
        let table = self.kind.tables().iter().find(|t| t.name == name)?;
        Some(Arc::new(SystemTableProvider {
            table,
            schema: table.schema(),
            shared: self.shared.clone(),
            session: self.session.clone(),
        }))
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        self.kind
            .tables()
            .iter()
            .map(|t| t.name.to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(self.provider(name))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.kind.tables().iter().any(|t| t.name == name)
    }
}

/// A catalog table, computed when scanned.
#[derive(Debug)]
struct SystemTableProvider {
    table: &'static SystemTable,
    schema: SchemaRef,
    shared: Arc<Shared>,
    session: SessionIdentity,
}

impl std::fmt::Debug for SystemTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemTable")
            .field("name", &self.name)
            .finish()
    }
}

#[async_trait]
impl TableProvider for SystemTableProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let catalog = self.shared.catalog.snapshot();
        let roles = self.shared.roles.snapshot();
        let batch = self.table.batch(&Snapshot {
            catalog: &catalog,
            session: &self.session,
            roles: &roles,
        })?;
        let exec =
            MemorySourceConfig::try_new_exec(&[vec![batch]], self.schema(), projection.cloned())?;
        Ok(exec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_builds_on_an_empty_catalog() {
        let catalog = Catalog::default();
        let session = SessionIdentity {
            user: "runnel".into(),
            database: "runnel".into(),
            settings: SessionSettings::default(),
            backend_pid: 7,
        };
        let roles = crate::roles::RoleMap::new();
        let snapshot = Snapshot {
            catalog: &catalog,
            session: &session,
            roles: &roles,
        };
        for kind in [
            SystemSchemaKind::PgCatalog,
            SystemSchemaKind::InformationSchema,
        ] {
            for table in kind.tables() {
                let batch = table.batch(&snapshot).expect("catalog table builds");
                assert_eq!(batch.schema(), table.schema(), "{}", table.name);
            }
        }
    }
}
