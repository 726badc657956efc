//! Serving: DataFusion sees Runnel's catalog through a `SchemaProvider` whose tables read
//! stream logs, table rows and view contents straight from the store. Ad-hoc SELECTs,
//! INSERT ... SELECT and the scans behind UPDATE/DELETE all go through here.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use runnel_common::change::WEIGHT_COLUMN;
use runnel_common::{Result, RunnelError};
use runnel_sql::{CatalogEntry, ObjectKind};
use runnel_state::codec::decode_rows;
use runnel_state::{ipc, keys, Store};

use crate::engine::Shared;

/// Rows per batch when scanning rows out of the store.
const SCAN_BATCH_ROWS: usize = 8192;

/// The `public` schema: every stream, table and materialized view.
#[derive(Debug)]
pub struct RunnelSchema {
    shared: Arc<Shared>,
}

impl RunnelSchema {
    pub fn new(shared: Arc<Shared>) -> Self {
        RunnelSchema { shared }
    }
}

#[async_trait]
impl SchemaProvider for RunnelSchema {
    fn table_names(&self) -> Vec<String> {
        self.shared
            .catalog()
            .entries()
            .map(|e| e.name.clone())
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(self.shared.catalog().get(name).map(|entry| {
            Arc::new(RelationTable {
                entry: entry.clone(),
                store: self.shared.store.clone(),
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.shared.catalog().get(name).is_some()
    }
}

/// A stream, table or view as DataFusion sees it.
#[derive(Debug)]
pub struct RelationTable {
    pub entry: Arc<CatalogEntry>,
    store: Arc<Store>,
}

#[async_trait]
impl TableProvider for RelationTable {
    fn schema(&self) -> SchemaRef {
        self.entry.schema.clone()
    }

    fn table_type(&self) -> TableType {
        match self.entry.kind {
            ObjectKind::MaterializedView => TableType::View,
            _ => TableType::Base,
        }
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batches = read_relation(&self.store, &self.entry)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let exec =
            MemorySourceConfig::try_new_exec(&[batches], self.schema(), projection.cloned())?;
        Ok(exec)
    }
}

/// Reads a relation's current contents from the store.
pub fn read_relation(store: &Store, entry: &CatalogEntry) -> Result<Vec<RecordBatch>> {
    let schema = entry.schema.clone();
    match entry.kind {
        ObjectKind::Stream => {
            let mut out = Vec::new();
            let prefix = keys::log_prefix(entry.id);
            store.for_each_in_range(&prefix, &keys::prefix_end(&prefix), |_, value| {
                out.push(ipc::decode_batch(value)?);
                Ok(true)
            })?;
            out.into_iter()
                .map(|stored| {
                    let n = stored.num_columns();
                    if n == 0 || stored.schema().field(n - 1).name() != WEIGHT_COLUMN {
                        return Err(RunnelError::internal("stream log entry lacks weights"));
                    }
                    let options = RecordBatchOptions::new().with_row_count(Some(stored.num_rows()));
                    Ok(RecordBatch::try_new_with_options(
                        schema.clone(),
                        stored.columns()[..n - 1].to_vec(),
                        &options,
                    )?)
                })
                .collect()
        }
        ObjectKind::Table => {
            let types: Vec<DataType> = schema
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect();
            let rows = store.scan_prefix(&keys::table_prefix(entry.id))?;
            rows.chunks(SCAN_BATCH_ROWS)
                .map(|chunk| {
                    let columns = decode_rows(chunk.iter().map(|(_, v)| &v[..]), &types)?;
                    let options = RecordBatchOptions::new().with_row_count(Some(chunk.len()));
                    Ok(RecordBatch::try_new_with_options(
                        schema.clone(),
                        columns,
                        &options,
                    )?)
                })
                .collect()
        }
        ObjectKind::MaterializedView => {
            let types: Vec<DataType> = schema
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect();
            let prefix = keys::view_prefix(entry.id);
            let rows = store.scan_prefix(&prefix)?;
            let mut out = Vec::new();
            for chunk in rows.chunks(SCAN_BATCH_ROWS) {
                let columns = decode_rows(chunk.iter().map(|(k, _)| &k[prefix.len()..]), &types)?;
                let options = RecordBatchOptions::new().with_row_count(Some(chunk.len()));
                let batch = RecordBatch::try_new_with_options(schema.clone(), columns, &options)?;
                // Rows present n times are stored once with count n.
                let mut repeat: Vec<u32> = Vec::with_capacity(chunk.len());
                let mut duplicated = false;
                for (i, (_, v)) in chunk.iter().enumerate() {
                    let count = runnel_runtime::operators::materialize::decode_count(v)?;
                    duplicated |= count != 1;
                    for _ in 0..count.max(0) {
                        repeat.push(i as u32);
                    }
                }
                if duplicated {
                    let idx = UInt32Array::from(repeat);
                    let columns = batch
                        .columns()
                        .iter()
                        .map(|c| take(c.as_ref(), &idx, None))
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    let options = RecordBatchOptions::new().with_row_count(Some(idx.len()));
                    out.push(RecordBatch::try_new_with_options(
                        schema.clone(),
                        columns,
                        &options,
                    )?);
                } else {
                    out.push(batch);
                }
            }
            Ok(out)
        }
    }
}
