//! Scalar expressions: DataFusion logical expressions compiled once into physical expressions
//! and evaluated over whole batches.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::logical_expr::execution_props::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{create_physical_expr, PhysicalExpr};
use runnel_common::{Result, RunnelError};

pub type CompiledExpr = Arc<dyn PhysicalExpr>;

pub fn compile(expr: &Expr, schema: &DFSchema) -> Result<CompiledExpr> {
    Ok(create_physical_expr(
        expr,
        schema,
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )?)
}

pub fn compile_all(exprs: &[Expr], schema: &DFSchema) -> Result<Vec<CompiledExpr>> {
    exprs.iter().map(|e| compile(e, schema)).collect()
}

pub fn evaluate(expr: &CompiledExpr, batch: &RecordBatch) -> Result<ArrayRef> {
    Ok(expr.evaluate(batch)?.into_array(batch.num_rows())?)
}

pub fn evaluate_all(exprs: &[CompiledExpr], batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    exprs.iter().map(|e| evaluate(e, batch)).collect()
}

/// A timestamp column's values as microseconds since the epoch (the unit of event time).
pub fn timestamp_micros(column: &ArrayRef) -> Result<datafusion::arrow::array::Int64Array> {
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    let us = cast(column, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    let us = cast(&us, &DataType::Int64)?;
    us.as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .cloned()
        .ok_or_else(|| RunnelError::internal("timestamp cast did not give Int64"))
}

/// Evaluates a predicate; NULL counts as false wherever the caller filters with it.
pub fn evaluate_predicate(expr: &CompiledExpr, batch: &RecordBatch) -> Result<BooleanArray> {
    let array = evaluate(expr, batch)?;
    array
        .as_any()
        .downcast_ref::<BooleanArray>()
        .cloned()
        .ok_or_else(|| {
            RunnelError::internal(format!(
                "predicate evaluated to {} instead of boolean",
                array.data_type()
            ))
        })
}
