//! Projection: one output column per expression; weights pass through.

use std::any::Any;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use runnel_common::{ChangeBatch, Result};

use crate::expr::{evaluate_all, CompiledExpr};
use crate::operator::Operator;

pub struct ProjectOp {
    exprs: Vec<CompiledExpr>,
    schema: SchemaRef,
}

impl ProjectOp {
    pub fn new(exprs: Vec<CompiledExpr>, schema: SchemaRef) -> Self {
        ProjectOp { exprs, schema }
    }
}

impl Operator for ProjectOp {
    fn process(
        &mut self,
        _port: usize,
        batch: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let columns = evaluate_all(&self.exprs, &batch.data)?;
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        let data = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?;
        out.push(ChangeBatch::new(data, batch.weights));
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
