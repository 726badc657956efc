//! Postgres's arithmetic where DataFusion's differs, for ad-hoc queries and views alike (both
//! are planned in a context with these registered, see `runnel::query_context`):
//!
//! - `sum(bigint)` is `numeric` and `avg` of any integer is `numeric`, as in Postgres (a
//!   [`FunctionRewrite`], which runs before type coercion, and [`plan_postgres_aggregates`],
//!   which applies it to a fresh plan so that its schema says so): the sum's argument is cast
//!   to `numeric(38,0)`, so a sum of bigints near the maximum is exact instead of wrapping
//!   negative; the average is [`crate::exact_aggregates`]'s, `numeric(38,16)` rounded as
//!   Postgres rounds (`avg(DISTINCT ...)` casts to `numeric(38,0)` and keeps DataFusion's 4
//!   truncated decimals). `sum(int)` and `sum(smallint)` are already `bigint` in DataFusion,
//!   as in Postgres.
//!   `sum(bigint) OVER (...)` and `avg(integer) OVER (...)` are `numeric` as well.
//! - `sum` and `avg` of floats (with or without OVER) sum exactly and round once
//!   ([`crate::exact_aggregates`]), as a materialized view does, so both give the same
//!   float whatever order they read the rows in.
//! - `max` and `min` of floats order `NaN` above every other value
//!   ([`crate::float_extremes`]), whatever order the rows come in.
//! - a float or a numeric cast to an integer type rounds to the nearest (`CAST(3.7 AS INT)` is
//!   4, `CAST(2.5 AS INT)` 3, `CAST(2.5::float8 AS INT)` 2), where Arrow truncates.
//! - `+`, `-` (binary and unary) and `*` of `smallint`, `integer` and `bigint` raise 22003
//!   ("integer out of range") instead of wrapping: after type coercion (an [`AnalyzerRule`]),
//!   each becomes a call of a checked function of the same type and name. Division already
//!   fails on overflow and on zero (22012).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::compute::kernels::numeric;
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Float32Type, Float64Type};
use datafusion::arrow::error::ArrowError;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, Result as DfResult, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::expr::{AggregateFunction, ScalarFunction};
use datafusion::logical_expr::expr_rewriter::{FunctionRewrite, NamePreserver};
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    AggregateUDF, BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::logical_expr::{Cast, TryCast, WindowFunctionDefinition};
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_expr_common::datum::apply;
use runnel_common::{RunnelError, SqlState};

/// `numeric` as Runnel stores it when Postgres leaves the precision open.
pub const NUMERIC: DataType = DataType::Decimal128(38, 0);

/// `sum(bigint)` and `avg(integer)` as `numeric`; see the module documentation.
#[derive(Debug, Default)]
pub struct NumericIntegerAggregates;

impl FunctionRewrite for NumericIntegerAggregates {
    fn name(&self) -> &str {
        "runnel_numeric_integer_aggregates"
    }

    fn rewrite(
        &self,
        expr: Expr,
        schema: &DFSchema,
        _config: &ConfigOptions,
    ) -> DfResult<Transformed<Expr>> {
        let (expr, to_integer) = match expr {
            Expr::Cast(Cast { expr, field }) if field.data_type().is_integer() => {
                (*expr, Some((field, false)))
            }
            Expr::TryCast(TryCast { expr, field }) if field.data_type().is_integer() => {
                (*expr, Some((field, true)))
            }
            other => (other, None),
        };
        if let Some((field, is_try)) = to_integer {
            let already_rounded =
                matches!(&expr, Expr::ScalarFunction(f) if f.func.name() == ROUND_TO_INTEGER);
            let rounded = match expr.get_type(schema)? {
                _ if already_rounded => Transformed::no(expr),
                DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => {
                    Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
                        Arc::new(ScalarUDF::new_from_impl(RoundToInteger::default())),
                        vec![expr],
                    )))
                }
                _ => Transformed::no(expr),
            };
            return Ok(rounded.update_data(|expr| {
                let expr = Box::new(expr);
                if is_try {
                    Expr::TryCast(TryCast { expr, field })
                } else {
                    Expr::Cast(Cast { expr, field })
                }
            }));
        }
        let expr = match expr {
            // `sum(bigint) OVER (...)` is `numeric` too: a running sum near the maximum must
            // not wrap. (Its frame is summed by DataFusion's own sum over decimals, in views as
            // ad hoc.)
            // `avg(integer) OVER` is `numeric` and float `sum`/`avg` OVER are exact, by the same
            // aggregates as without OVER: a view re-evaluates a frame from wherever its changed
            // rows start, so a sum that depended on the order of additions and retractions
            // would differ from the batch answer in its last digits.
            Expr::WindowFunction(mut window) => {
                let name = match &window.fun {
                    WindowFunctionDefinition::AggregateUDF(f) => f.name().to_string(),
                    _ => String::new(),
                };
                if window.params.distinct {
                    return Ok(Transformed::no(Expr::WindowFunction(window)));
                }
                let [arg] = window.params.args.as_mut_slice() else {
                    return Ok(Transformed::no(Expr::WindowFunction(window)));
                };
                let arg_type = arg.get_type(schema)?;
                if name == "sum" && arg_type == DataType::Int64 {
                    *arg = arg.clone().cast_to(&NUMERIC, schema)?;
                    return Ok(Transformed::yes(Expr::WindowFunction(window)));
                }
                let Some((udaf, arg_type)) = exact_sum_or_avg(&name, &arg_type) else {
                    return Ok(Transformed::no(Expr::WindowFunction(window)));
                };
                *arg = arg.clone().cast_to(&arg_type, schema)?;
                window.fun = WindowFunctionDefinition::AggregateUDF(udaf);
                return Ok(Transformed::yes(Expr::WindowFunction(window)));
            }
            other => other,
        };
        let Expr::AggregateFunction(AggregateFunction { func, mut params }) = expr else {
            return Ok(Transformed::no(expr));
        };
        let arg_type = match params.args.as_slice() {
            [arg] => Some(arg.get_type(schema)?),
            _ => None,
        };
        let exact = match (func.name(), &arg_type) {
            ("max", Some(t @ (DataType::Float32 | DataType::Float64))) => {
                Some((crate::float_extremes::float_max(), t.clone()))
            }
            ("min", Some(t @ (DataType::Float32 | DataType::Float64))) => {
                Some((crate::float_extremes::float_min(), t.clone()))
            }
            (name, Some(arg_type)) if !params.distinct => exact_sum_or_avg(name, arg_type),
            _ => None,
        };
        if let Some((exact, arg_type)) = exact {
            let arg = params.args.remove(0);
            params.args.push(arg.cast_to(&arg_type, schema)?);
            return Ok(Transformed::yes(Expr::AggregateFunction(
                AggregateFunction {
                    func: exact,
                    params,
                },
            )));
        }
        let widen = match (func.name(), &arg_type) {
            ("sum", Some(DataType::Int64)) => true,
            ("avg", Some(arg_type)) => arg_type.is_integer(),
            _ => false,
        };
        if !widen {
            return Ok(Transformed::no(Expr::AggregateFunction(
                AggregateFunction { func, params },
            )));
        }
        let arg = params.args.remove(0);
        params.args.push(arg.cast_to(&NUMERIC, schema)?);
        Ok(Transformed::yes(Expr::AggregateFunction(
            AggregateFunction { func, params },
        )))
    }
}

/// The exact aggregate that replaces `sum` or `avg` of `arg_type` (not DISTINCT), with or
/// without OVER, and the type its argument is cast to: exact float sums and averages, and the
/// `numeric` average of integers.
fn exact_sum_or_avg(name: &str, arg_type: &DataType) -> Option<(Arc<AggregateUDF>, DataType)> {
    match (name, arg_type) {
        ("sum", DataType::Float32 | DataType::Float64) => {
            Some((crate::exact_aggregates::exact_sum(), DataType::Float64))
        }
        ("avg", DataType::Float32 | DataType::Float64) => {
            Some((crate::exact_aggregates::exact_avg(), DataType::Float64))
        }
        ("avg", t) if t.is_integer() => {
            Some((crate::exact_aggregates::integer_avg(), DataType::Int64))
        }
        _ => None,
    }
}

/// Applies [`NumericIntegerAggregates`] to a plan just built from SQL, with every node's schema
/// recomputed, so that what the plan says it returns (a query's row description, a view's
/// columns) already has the types Postgres gives: `sum(bigint)` is `numeric` from the start.
/// (The rewrite is also registered with the context, where it finds nothing left to do.)
pub fn plan_postgres_aggregates(plan: LogicalPlan) -> runnel_common::Result<LogicalPlan> {
    let rewrite = NumericIntegerAggregates;
    let options = ConfigOptions::default();
    let mut aggregates = false;
    plan.apply_with_subqueries(|node| {
        aggregates |= matches!(node, LogicalPlan::Aggregate(_) | LogicalPlan::Window(_));
        Ok(if aggregates {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    if !aggregates {
        return Ok(plan);
    }
    let rewritten = plan.transform_up_with_subqueries(|node| {
        let schema = merge_schema(&node.inputs());
        let names = NamePreserver::new(&node);
        let node = node.map_expressions(|expr| {
            let name = names.save(&expr);
            let rewritten = expr.transform_up(|e| rewrite.rewrite(e, &schema, &options))?;
            Ok(rewritten.update_data(|e| name.restore(e)))
        })?;
        // A node above a rewritten one sees new column types: every schema is recomputed.
        node.map_data(|plan| plan.recompute_schema())
    })?;
    Ok(rewritten.data)
}

/// Integer `+`, `-` and `*` that raise 22003 instead of wrapping; see the module documentation.
#[derive(Debug, Default)]
pub struct CheckedIntegerArithmetic;

impl AnalyzerRule for CheckedIntegerArithmetic {
    fn name(&self) -> &str {
        "runnel_checked_integer_arithmetic"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        let functions = [
            checked_function(Operator::Plus),
            checked_function(Operator::Minus),
            checked_function(Operator::Multiply),
        ];
        plan.transform_up_with_subqueries(|node| {
            // A leaf has no expressions to check, except VALUES (`INSERT ... VALUES (70000)`
            // into a smallint column casts its literals there).
            if node.inputs().is_empty() && !matches!(node, LogicalPlan::Values(_)) {
                return Ok(Transformed::no(node));
            }
            let schema = merge_schema(&node.inputs());
            let names = NamePreserver::new(&node);
            node.map_expressions(|expr| {
                let name = names.save(&expr);
                let rewritten = expr.transform_up(|e| {
                    let e = match e {
                        // A number cast to a narrower integer: 22003 when it does not fit.
                        Expr::Cast(Cast { expr, field })
                            if crate::integer_range::needs_range_check(
                                &type_of(&expr, &schema)?,
                                field.data_type(),
                            ) =>
                        {
                            let checked = Expr::ScalarFunction(ScalarFunction::new_udf(
                                crate::integer_range::range_check(field.data_type()),
                                vec![*expr],
                            ));
                            return Ok(Transformed::yes(Expr::Cast(Cast {
                                expr: Box::new(checked),
                                field,
                            })));
                        }
                        Expr::ScalarFunction(call)
                            if call.func.name() == "abs"
                                && call.args.len() == 1
                                && is_checked_integer(&type_of(&call.args[0], &schema)?)
                                && !Arc::ptr_eq(&call.func, &crate::integer_range::int_abs()) =>
                        {
                            return Ok(Transformed::yes(Expr::ScalarFunction(
                                ScalarFunction::new_udf(crate::integer_range::int_abs(), call.args),
                            )));
                        }
                        other => other,
                    };
                    // `-x` as `0 - x`: DataFusion negates a column wrapping around.
                    let e = match e {
                        Expr::Negative(operand) => {
                            let operand_type = type_of(&operand, &schema)?;
                            if !is_checked_integer(&operand_type) {
                                return Ok(Transformed::no(Expr::Negative(operand)));
                            }
                            let zero = ScalarValue::new_zero(&operand_type)?;
                            return Ok(Transformed::yes(Expr::ScalarFunction(
                                ScalarFunction::new_udf(
                                    Arc::clone(&functions[1]),
                                    vec![Expr::Literal(zero, None), *operand],
                                ),
                            )));
                        }
                        other => other,
                    };
                    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
                        return Ok(Transformed::no(e));
                    };
                    let function = match op {
                        Operator::Plus => &functions[0],
                        Operator::Minus => &functions[1],
                        Operator::Multiply => &functions[2],
                        _ => {
                            return Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr {
                                left,
                                op,
                                right,
                            })))
                        }
                    };
                    let operand_type = type_of(&left, &schema)?;
                    if !is_checked_integer(&operand_type)
                        || type_of(&right, &schema)? != operand_type
                    {
                        return Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr {
                            left,
                            op,
                            right,
                        })));
                    }
                    Ok(Transformed::yes(Expr::ScalarFunction(
                        ScalarFunction::new_udf(Arc::clone(function), vec![*left, *right]),
                    )))
                })?;
                Ok(rewritten.update_data(|e| name.restore(e)))
            })
        })
        .map(|transformed| transformed.data)
    }
}

/// The type of `expr`, going down through the checked calls this rule made (their type is
/// their first operand's) rather than asking DataFusion, which names every level it types.
fn type_of(expr: &Expr, schema: &DFSchema) -> DfResult<DataType> {
    let mut expr = expr;
    while let Expr::ScalarFunction(call) = expr {
        match call.args.first() {
            Some(first) if CHECKED_NAMES.contains(&call.func.name()) => expr = first,
            _ => break,
        }
    }
    expr.get_type(schema)
}

const CHECKED_NAMES: [&str; 3] = ["int_plus", "int_minus", "int_multiply"];

fn is_checked_integer(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int16 | DataType::Int32 | DataType::Int64
    )
}

fn checked_function(op: Operator) -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(CheckedInteger::new(op)))
}

/// One checked integer operator as a function: `int_plus`, `int_minus`, `int_multiply`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CheckedInteger {
    op: Operator,
    name: &'static str,
    signature: Signature,
}

impl CheckedInteger {
    fn new(op: Operator) -> Self {
        let name = match op {
            Operator::Plus => CHECKED_NAMES[0],
            Operator::Minus => CHECKED_NAMES[1],
            _ => CHECKED_NAMES[2],
        };
        let signature = Signature::one_of(
            [DataType::Int16, DataType::Int32, DataType::Int64]
                .into_iter()
                .map(|t| TypeSignature::Exact(vec![t.clone(), t]))
                .collect(),
            Volatility::Immutable,
        );
        CheckedInteger {
            op,
            name,
            signature,
        }
    }
}

impl ScalarUDFImpl for CheckedInteger {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(arg_types[0].clone())
    }

    /// The name of the call, without its arguments' names. DataFusion names every expression
    /// it types, at every level: a function's name holds its arguments' names, each built as a
    /// string of its own, so `1 + 1 + ... + 1` with 900 terms took a minute to plan as nested
    /// calls (a `+` writes its operands in place, in linear time). No schema shows this name:
    /// the rewrite keeps each top-level expression's name, as in [`NamePreserver`].
    fn schema_name(&self, _args: &[Expr]) -> DfResult<String> {
        Ok(format!("{}(..)", self.name))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [left, right] = args.args.as_slice() else {
            return Err(DataFusionError::Internal(format!(
                "{} takes two arguments",
                self.name
            )));
        };
        let data_type = left.data_type();
        let result = match self.op {
            Operator::Plus => apply(left, right, numeric::add),
            Operator::Minus => apply(left, right, numeric::sub),
            _ => apply(left, right, numeric::mul),
        };
        result.map_err(|error| match error {
            DataFusionError::ArrowError(arrow, _)
                if matches!(*arrow, ArrowError::ArithmeticOverflow(_)) =>
            {
                DataFusionError::External(Box::new(RunnelError::execution(
                    SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
                    format!("{} out of range", postgres_integer_name(&data_type)),
                )))
            }
            other => other,
        })
    }
}

const ROUND_TO_INTEGER: &str = "round_to_integer";

/// A float or a numeric rounded to an integral value of the same type, as Postgres rounds
/// one cast to an integer (floats to the nearest, ties to even, as `rint`; numerics to the
/// nearest, ties away from zero), where Arrow's cast truncates: `CAST(3.7 AS INT)` is 4.
#[derive(Debug, PartialEq, Eq, Hash)]
struct RoundToInteger {
    signature: Signature,
}

impl Default for RoundToInteger {
    fn default() -> Self {
        RoundToInteger {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for RoundToInteger {
    fn name(&self) -> &str {
        ROUND_TO_INTEGER
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(match &arg_types[0] {
            // 9.99 rounds to 10.00: one more digit.
            DataType::Decimal128(precision, scale) => {
                DataType::Decimal128((*precision + 1).min(38), *scale)
            }
            other => other.clone(),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [value] = args.args.as_slice() else {
            return Err(DataFusionError::Internal(
                "round_to_integer takes one argument".into(),
            ));
        };
        let is_scalar = matches!(value, ColumnarValue::Scalar(_));
        let array = value.to_array(args.number_rows)?;
        let rounded: ArrayRef = match array.data_type() {
            DataType::Float64 => Arc::new(
                array
                    .as_primitive::<Float64Type>()
                    .unary::<_, Float64Type>(f64::round_ties_even),
            ),
            DataType::Float32 => Arc::new(
                array
                    .as_primitive::<Float32Type>()
                    .unary::<_, Float32Type>(f32::round_ties_even),
            ),
            DataType::Decimal128(precision, scale) => {
                let unit = 10i128.pow(u32::try_from(*scale).unwrap_or(0));
                let rounded = array
                    .as_primitive::<Decimal128Type>()
                    .unary::<_, Decimal128Type>(|v| {
                        let (whole, rest) = (v / unit, v % unit);
                        let away = if rest.abs() * 2 >= unit {
                            v.signum()
                        } else {
                            0
                        };
                        (whole + away) * unit
                    })
                    .with_precision_and_scale((*precision + 1).min(38), *scale)?;
                Arc::new(rounded)
            }
            other => {
                return Err(DataFusionError::Internal(format!(
                    "round_to_integer of {other}"
                )))
            }
        };
        Ok(if is_scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&rounded, 0)?)
        } else {
            ColumnarValue::Array(rounded)
        })
    }
}

fn postgres_integer_name(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Int16 => "smallint",
        DataType::Int32 => "integer",
        _ => "bigint",
    }
}
