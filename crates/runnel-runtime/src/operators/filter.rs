//! Filter: keeps the rows (inserts and deletes alike) whose predicate is true.

use std::any::Any;

use runnel_common::{ChangeBatch, Result};

use crate::expr::{evaluate_predicate, CompiledExpr};
use crate::operator::Operator;

pub struct FilterOp {
    predicate: CompiledExpr,
}

impl FilterOp {
    pub fn new(predicate: CompiledExpr) -> Self {
        FilterOp { predicate }
    }
}

impl Operator for FilterOp {
    fn process(
        &mut self,
        _port: usize,
        batch: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mask = evaluate_predicate(&self.predicate, &batch.data)?;
        let kept = batch.filter(&mask)?;
        if !kept.is_empty() {
            out.push(kept);
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
