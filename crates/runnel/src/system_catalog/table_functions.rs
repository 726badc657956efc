//! Set-returning functions in FROM as Postgres clients write them.
//!
//! Postgres takes any expression that does not read the query's own rows as an argument of
//! a function in FROM (`generate_series(1, array_upper(current_schemas(false), 1))`), and
//! evaluates it once; DataFusion's built-in table functions take literals only. So each
//! table function here is wrapped to compute such arguments first. `string_to_array(text,
//! delimiter)` is added as a one-row relation, as Grafana's table and column pickers read the
//! `search_path` with it.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{ColumnarValue, Expr};

/// Wraps the context's table functions so their arguments may be constant expressions, and
/// adds `string_to_array`.
pub fn register(ctx: &SessionContext) {
    for name in ["generate_series", "range"] {
        if let Ok(function) = ctx.table_function(name) {
            ctx.register_udtf(
                name,
                Arc::new(ConstantArguments {
                    inner: function.function().clone(),
                }),
            );
        }
    }
    ctx.register_udtf("string_to_array", Arc::new(StringToArray));
}

/// A table function whose arguments are computed before it is called.
#[derive(Debug)]
struct ConstantArguments {
    inner: Arc<dyn TableFunctionImpl>,
}

impl TableFunctionImpl for ConstantArguments {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args
            .exprs()
            .iter()
            .map(|expr| constant(args.session(), expr))
            .collect::<Result<Vec<_>>>()?;
        self.inner
            .call_with_args(TableFunctionArgs::new(&exprs, args.session()))
    }
}

/// `expr` as a literal, when it reads no column (otherwise as it is, for the function to
/// refuse).
fn constant(session: &dyn Session, expr: &Expr) -> Result<Expr> {
    if matches!(expr, Expr::Literal(..)) || !expr.column_refs().is_empty() {
        return Ok(expr.clone());
    }
    Ok(Expr::Literal(evaluate(session, expr)?, None))
}

/// Computes an expression that reads no column.
fn evaluate(session: &dyn Session, expr: &Expr) -> Result<ScalarValue> {
    let physical = session.create_physical_expr(expr.clone(), &DFSchema::empty())?;
    let one_row = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        Vec::new(),
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    match physical.evaluate(&one_row)? {
        ColumnarValue::Scalar(value) => Ok(value),
        ColumnarValue::Array(array) => ScalarValue::try_from_array(&array, 0),
    }
}

/// `FROM string_to_array(text, delimiter [, null_string])`: one row whose one column is the
/// array.
#[derive(Debug)]
struct StringToArray;

impl TableFunctionImpl for StringToArray {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let session = args.session();
        let function = session
            .scalar_functions()
            .get("string_to_array")
            .cloned()
            .ok_or_else(|| {
                datafusion::error::DataFusionError::Plan(
                    "function string_to_array is not registered".to_string(),
                )
            })?;
        let call = Expr::ScalarFunction(ScalarFunction::new_udf(function, args.exprs().to_vec()));
        let value = evaluate(session, &call)?;
        let schema = Arc::new(Schema::new(vec![Field::new(
            "string_to_array",
            value.data_type(),
            true,
        )]));
        let batch = RecordBatch::try_new(schema.clone(), vec![value.to_array()?])?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}
