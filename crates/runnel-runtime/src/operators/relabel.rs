//! Sources and UNION ALL: forward every batch unchanged, relabelled with the node's schema.

use std::any::Any;

use datafusion::arrow::datatypes::SchemaRef;
use runnel_common::{ChangeBatch, Result};

use crate::operator::Operator;

pub struct RelabelOp {
    schema: SchemaRef,
}

impl RelabelOp {
    pub fn new(schema: SchemaRef) -> Self {
        RelabelOp { schema }
    }
}

impl Operator for RelabelOp {
    fn process(
        &mut self,
        _port: usize,
        batch: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        if !batch.is_empty() {
            out.push(batch.with_schema(self.schema.clone())?);
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
