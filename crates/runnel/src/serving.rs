//! Serving: DataFusion sees Runnel's catalog through a `SchemaProvider` whose tables read
//! stream logs, table rows and view contents straight from the store. Ad-hoc SELECTs,
//! INSERT ... SELECT and the scans behind UPDATE/DELETE all go through here. A keyed view
//! filtered on its key reads only those keys ([`crate::key_lookup`]).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use runnel_common::{Result, RunnelError, SqlState};
use runnel_runtime::view_rows::{read_view, ViewLayout};
use runnel_sql::{CatalogEntry, ObjectKind};
use runnel_state::codec::decode_rows;
use runnel_state::keys;

use crate::key_lookup::{KeyLookup, KeyLookupExec};
use crate::shared::Shared;
use crate::system_catalog::SystemSchema;

/// Rows per batch when scanning rows out of the store.
const SCAN_BATCH_ROWS: usize = 8192;

/// The `public` schema: every stream, table and materialized view. An unqualified name that
/// is none of them resolves in `pg_catalog`, as Postgres's search path puts it first.
#[derive(Debug)]
pub struct RunnelSchema {
    shared: Arc<Shared>,
    pg_catalog: Arc<SystemSchema>,
}

impl RunnelSchema {
    pub fn new(shared: Arc<Shared>, pg_catalog: Arc<SystemSchema>) -> Self {
        RunnelSchema { shared, pg_catalog }
    }
}

#[async_trait]
impl SchemaProvider for RunnelSchema {
    fn table_names(&self) -> Vec<String> {
        self.shared
            .catalog
            .snapshot()
            .entries()
            .filter(|e| e.kind != ObjectKind::Sink)
            .map(|e| e.name.clone())
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let catalog = self.shared.catalog.snapshot();
        let relation = catalog.get(name).filter(|e| e.kind != ObjectKind::Sink);
        Ok(match relation {
            Some(entry) => Some(
                Arc::new(RelationTable::new(entry.clone(), self.shared.clone()))
                    as Arc<dyn TableProvider>,
            ),
            None => self.pg_catalog.provider(name),
        })
    }

    fn table_exist(&self, name: &str) -> bool {
        let relation = self
            .shared
            .catalog
            .snapshot()
            .get(name)
            .is_some_and(|e| e.kind != ObjectKind::Sink);
        // Unqualified names fall back to pg_catalog, as `table` does.
        relation || self.pg_catalog.table_exist(name)
    }
}

/// A stream, table or view as DataFusion sees it. Every column is nullable here: NOT NULL is
/// Runnel's to check when rows are written (naming the table's column, 23502), not
/// DataFusion's while it builds an INSERT's VALUES rows.
#[derive(Debug)]
pub struct RelationTable {
    pub entry: Arc<CatalogEntry>,
    schema: SchemaRef,
    shared: Arc<Shared>,
}

impl RelationTable {
    /// A keyed view's key columns, or a table's primary key (name, index), in key order;
    /// none for other relations.
    fn key_columns(&self) -> Vec<(String, usize)> {
        let key: &[usize] = match (&self.entry.kind, &self.entry.view_key) {
            (ObjectKind::MaterializedView, Some(key)) if !self.entry.view_appended => key,
            (ObjectKind::Table, _) => &self.entry.primary_key,
            _ => &[],
        };
        key.iter()
            .filter(|&&i| i < self.schema.fields().len())
            .map(|&i| (self.schema.field(i).name().clone(), i))
            .collect()
    }

    fn with_own_schema(&self, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        batches
            .into_iter()
            .map(|b| Ok(b.with_schema(self.schema.clone())?))
            .collect()
    }

    pub fn new(entry: Arc<CatalogEntry>, shared: Arc<Shared>) -> Self {
        let fields: Vec<Field> = entry
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            entry.schema.metadata().clone(),
        ));
        RelationTable {
            entry,
            schema,
            shared,
        }
    }
}

#[async_trait]
impl TableProvider for RelationTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        match self.entry.kind {
            ObjectKind::MaterializedView => TableType::View,
            _ => TableType::Base,
        }
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let keys = self.key_columns();
        let names: Vec<&str> = keys.iter().map(|(n, _)| n.as_str()).collect();
        Ok(filters
            .iter()
            .map(|f| match crate::key_lookup::is_key_filter(f, &names) {
                // DataFusion still applies the filter: the lookup only narrows the read.
                true => TableProviderFilterPushDown::Inexact,
                false => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let to_df = |e: RunnelError| DataFusionError::External(Box::new(e));
        let key_columns = self.key_columns();
        if let Some(lookup) = KeyLookup::plan(filters, &key_columns, &self.entry.schema) {
            let (label, read) = match self.entry.kind {
                ObjectKind::Table => (
                    "TableKeyLookup",
                    lookup.read_table(
                        &self.shared.store,
                        &keys::table_prefix(self.entry.id),
                        &self.entry.schema,
                    ),
                ),
                _ => (
                    "ViewKeyLookup",
                    read_view_keys(&self.shared, &self.entry, &lookup),
                ),
            };
            let batches = read
                .and_then(|batches| self.with_own_schema(batches))
                .map_err(to_df)?;
            return Ok(Arc::new(KeyLookupExec::new(
                label,
                &self.entry.name,
                &lookup,
                batches,
                self.schema(),
                projection.cloned(),
            )?));
        }
        let batches = read_relation(&self.shared, &self.entry)
            .and_then(|batches| {
                batches
                    .into_iter()
                    .map(|b| Ok(b.with_schema(self.schema.clone())?))
                    .collect::<Result<Vec<_>>>()
            })
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let exec =
            MemorySourceConfig::try_new_exec(&[batches], self.schema(), projection.cloned())?;
        Ok(exec)
    }
}

/// Stored table rows (codec-encoded values) as one batch of the table's schema.
pub fn decode_table_rows<'a>(
    schema: &SchemaRef,
    rows: impl ExactSizeIterator<Item = &'a [u8]>,
) -> Result<RecordBatch> {
    let n = rows.len();
    let types: Vec<DataType> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    let columns = decode_rows(rows, &types)?;
    let options = RecordBatchOptions::new().with_row_count(Some(n));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}

/// A view's failure, as the error reading it gives: its rows stopped at the failure, so
/// reading them as current would be a wrong answer.
fn check_view_current(shared: &Shared, entry: &CatalogEntry) -> Result<()> {
    match shared.worker.view_failure(entry.id) {
        Some(error) => Err(RunnelError::execution(
            SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "materialized view \"{}\" stopped updating: {error}; drop and re-create it",
                entry.name
            ),
        )),
        None => Ok(()),
    }
}

fn view_layout(entry: &CatalogEntry) -> ViewLayout {
    ViewLayout::new(
        entry.view_key.as_deref(),
        entry.view_appended,
        entry.schema.fields().len(),
    )
}

/// The rows of a keyed view with the keys `lookup` names.
fn read_view_keys(
    shared: &Shared,
    entry: &CatalogEntry,
    lookup: &KeyLookup,
) -> Result<Vec<RecordBatch>> {
    check_view_current(shared, entry)?;
    lookup.read(
        &shared.store,
        &keys::view_prefix(entry.id),
        &view_layout(entry),
        &entry.schema,
    )
}

/// Reads a relation's current contents from the store.
pub fn read_relation(shared: &Shared, entry: &CatalogEntry) -> Result<Vec<RecordBatch>> {
    let schema = entry.schema.clone();
    let store = &shared.store;
    match entry.kind {
        ObjectKind::Stream => shared.stream_cache.read(&shared.store, entry.id, &schema),
        ObjectKind::Table => {
            let rows = store.scan_prefix(&keys::table_prefix(entry.id))?;
            rows.chunks(SCAN_BATCH_ROWS)
                .map(|chunk| decode_table_rows(&schema, chunk.iter().map(|(_, v)| &v[..])))
                .collect()
        }
        ObjectKind::Sink => Ok(Vec::new()),
        ObjectKind::MaterializedView => {
            check_view_current(shared, entry)?;
            read_view(
                store,
                &keys::view_prefix(entry.id),
                &view_layout(entry),
                &schema,
            )
        }
    }
}
