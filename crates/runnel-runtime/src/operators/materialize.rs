//! The view's output: keeps the view's contents in the store as a multiset (key: the encoded
//! row, value: its multiplicity) and forwards every change to views that read this one.
//!
//! Changes accumulate as per-row deltas between checkpoints; a checkpoint reads the affected
//! rows' counts with one multi-get and writes the new counts (deleting rows that reach zero).

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use hashbrown::HashMap;
use runnel_common::{ChangeBatch, Result, RunnelError};
use runnel_state::codec::{decode_rows, encode_rows, EncodedRows};
use runnel_state::{Store, WriteBatch};

use crate::operator::Operator;

pub struct MaterializeOp {
    store: Arc<Store>,
    prefix: Vec<u8>,
    schema: SchemaRef,
    types: Vec<DataType>,
    deltas: HashMap<Box<[u8]>, i64>,
    scratch: EncodedRows,
}

impl MaterializeOp {
    pub fn new(store: Arc<Store>, prefix: Vec<u8>, schema: SchemaRef) -> Self {
        let types = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        MaterializeOp {
            store,
            prefix,
            schema,
            types,
            deltas: HashMap::new(),
            scratch: EncodedRows::new(),
        }
    }

    /// The view's current contents (committed state plus pending deltas) as one insert batch,
    /// for backfilling a view that reads this one.
    pub fn snapshot(&self) -> Result<ChangeBatch> {
        let prefix_len = self.prefix.len();
        let mut counts: HashMap<Box<[u8]>, i64> = HashMap::new();
        for (key, value) in self.store.scan_prefix(&self.prefix)? {
            counts.insert(key[prefix_len..].into(), decode_count(&value)?);
        }
        for (row, delta) in &self.deltas {
            *counts.entry(row.clone()).or_insert(0) += delta;
        }
        let mut rows: Vec<&[u8]> = Vec::with_capacity(counts.len());
        let mut weights: Vec<i64> = Vec::with_capacity(counts.len());
        for (row, &count) in &counts {
            if count > 0 {
                rows.push(row);
                weights.push(count);
            }
        }
        let columns = decode_rows(rows.iter().copied(), &self.types)?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        let data = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?;
        Ok(ChangeBatch::new(data, Int64Array::from(weights)))
    }
}

pub fn decode_count(value: &[u8]) -> Result<i64> {
    let bytes: [u8; 8] = value
        .try_into()
        .map_err(|_| RunnelError::internal("view row count is not 8 bytes"))?;
    Ok(i64::from_le_bytes(bytes))
}

impl Operator for MaterializeOp {
    fn process(
        &mut self,
        _port: usize,
        batch: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.scratch.clear();
        encode_rows(&[], batch.data.columns(), &mut self.scratch)?;
        for (row, &w) in self.scratch.iter().zip(batch.weights.values().iter()) {
            match self.deltas.get_mut(row) {
                Some(d) => *d += w,
                None => {
                    self.deltas.insert(row.into(), w);
                }
            }
        }
        out.push(batch.with_schema(self.schema.clone())?);
        Ok(())
    }

    fn checkpoint(&mut self, batch: &mut WriteBatch) -> Result<()> {
        let deltas: Vec<(Box<[u8]>, i64)> = self.deltas.drain().filter(|(_, d)| *d != 0).collect();
        if deltas.is_empty() {
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = deltas
            .iter()
            .map(|(row, _)| {
                let mut key = Vec::with_capacity(self.prefix.len() + row.len());
                key.extend_from_slice(&self.prefix);
                key.extend_from_slice(row);
                key
            })
            .collect();
        let current = self.store.multi_get(&keys)?;
        for ((key, (_, delta)), old) in keys.iter().zip(&deltas).zip(current) {
            let old = match old {
                Some(v) => decode_count(&v)?,
                None => 0,
            };
            let new = old + delta;
            if new > 0 {
                batch.put(key, new.to_le_bytes());
            } else {
                if new < 0 {
                    tracing::error!("view row count went negative ({new}); dropping the row");
                }
                batch.delete(key);
            }
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
