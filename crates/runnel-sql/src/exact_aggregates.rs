//! Aggregates computed exactly as a materialized view computes them, for ad-hoc queries:
//! - `sum` and `avg` of floats: each group's values are summed exactly ([`ExactFloatSum`]) and
//!   rounded once, so a query and a view over the same rows give the same float, bit for bit,
//!   whatever order the rows came in (DataFusion's own `sum` adds in reading order, and its
//!   last digits depend on that order);
//! - `avg` of integers: `numeric(38, 16)` from the exact sum, rounded as Postgres rounds
//!   ([`integer_average`]; DataFusion's decimal average truncates at 4 places).
//!
//! [`crate::pg_numbers`] plans these aggregates with them; they keep the names `sum` and
//! `avg`, so a view's lowering sees the same aggregate.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float64Array, Int64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Field, FieldRef, Float64Type, Int64Type,
};
use datafusion::common::{Result, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use runnel_common::exact_float_sum::ExactFloatSum;
use runnel_common::integer_average::{integer_average, AVERAGE_SCALE, AVERAGE_TYPE};
use runnel_common::{RunnelError, SqlState};

/// `avg(integer)` as `numeric(38, 16)`, rounded.
pub fn integer_avg() -> Arc<AggregateUDF> {
    Arc::new(AggregateUDF::new_from_impl(IntegerAverage {
        signature: Signature::exact(vec![DataType::Int64], Volatility::Immutable),
    }))
}

/// What the aggregate returns from the exact sum and the count of values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Output {
    Sum,
    Average,
}

/// `sum(float)` as an exact sum.
pub fn exact_sum() -> Arc<AggregateUDF> {
    Arc::new(AggregateUDF::new_from_impl(ExactFloatAggregate::new(
        Output::Sum,
    )))
}

/// `avg(float)` from an exact sum.
pub fn exact_avg() -> Arc<AggregateUDF> {
    Arc::new(AggregateUDF::new_from_impl(ExactFloatAggregate::new(
        Output::Average,
    )))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ExactFloatAggregate {
    output: Output,
    signature: Signature,
}

impl ExactFloatAggregate {
    fn new(output: Output) -> Self {
        ExactFloatAggregate {
            output,
            signature: Signature::exact(vec![DataType::Float64], Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for ExactFloatAggregate {
    fn name(&self) -> &str {
        match self.output {
            Output::Sum => "sum",
            Output::Average => "avg",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format!("{}[exact_sum]", args.name),
                DataType::Binary,
                true,
            )),
            Arc::new(Field::new(
                format!("{}[count]", args.name),
                DataType::Int64,
                true,
            )),
        ])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(ExactAccumulator {
            output: self.output,
            sum: ExactFloatSum::default(),
            count: 0,
        }))
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        !args.is_distinct
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(ExactGroupsAccumulator {
            output: self.output,
            sums: Vec::new(),
            counts: Vec::new(),
        }))
    }
}

fn overflow(error: runnel_common::exact_float_sum::FloatOverflow) -> DataFusionError {
    DataFusionError::External(Box::new(RunnelError::execution(
        SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
        error.to_string(),
    )))
}

fn floats(values: &ArrayRef) -> Result<ArrayRef> {
    Ok(cast(values, &DataType::Float64)?)
}

fn result(output: Output, sum: &ExactFloatSum, count: i64) -> Option<f64> {
    (count > 0).then(|| match output {
        Output::Sum => sum.value(),
        Output::Average => sum.value() / count as f64,
    })
}

fn encode(sum: &ExactFloatSum) -> Vec<u8> {
    let mut bytes = Vec::new();
    sum.write(&mut bytes);
    bytes
}

fn decode(bytes: &[u8]) -> Result<ExactFloatSum> {
    ExactFloatSum::read(&mut &bytes[..])
        .ok_or_else(|| DataFusionError::Internal("a truncated exact float sum".into()))
}

/// One group's exact sum (windows, DISTINCT-free fallbacks).
#[derive(Debug)]
struct ExactAccumulator {
    output: Output,
    sum: ExactFloatSum,
    count: i64,
}

impl ExactAccumulator {
    fn add(&mut self, values: &ArrayRef, weight: i64) -> Result<()> {
        let values = floats(values)?;
        for value in values.as_primitive::<Float64Type>().iter().flatten() {
            self.sum.add_weighted(value, weight).map_err(overflow)?;
            self.count += weight;
        }
        Ok(())
    }
}

impl Accumulator for ExactAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.add(&values[0], 1)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.add(&values[0], -1)
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(result(
            self.output,
            &self.sum,
            self.count,
        )))
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::Binary(Some(encode(&self.sum))),
            ScalarValue::Int64(Some(self.count)),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let sums = states[0].as_binary::<i32>();
        let counts = states[1].as_primitive::<Int64Type>();
        for (bytes, count) in sums.iter().zip(counts.iter()) {
            if let (Some(bytes), Some(count)) = (bytes, count) {
                self.sum.merge(&decode(bytes)?).map_err(overflow)?;
                self.count += count;
            }
        }
        Ok(())
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + 8 * self.sum.partials_len()
    }
}

/// Every group's exact sum, for GROUP BY.
struct ExactGroupsAccumulator {
    output: Output,
    sums: Vec<ExactFloatSum>,
    counts: Vec<i64>,
}

impl ExactGroupsAccumulator {
    fn take(&mut self, emit_to: EmitTo) -> (Vec<ExactFloatSum>, Vec<i64>) {
        (
            emit_to.take_needed(&mut self.sums),
            emit_to.take_needed(&mut self.counts),
        )
    }
}

fn allows(filter: Option<&BooleanArray>, row: usize) -> bool {
    filter.is_none_or(|f| f.is_valid(row) && f.value(row))
}

impl GroupsAccumulator for ExactGroupsAccumulator {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.sums.resize(total_num_groups, ExactFloatSum::default());
        self.counts.resize(total_num_groups, 0);
        let values = floats(&values[0])?;
        let values = values.as_primitive::<Float64Type>();
        for (row, &group) in group_indices.iter().enumerate() {
            if values.is_valid(row) && allows(opt_filter, row) {
                self.sums[group]
                    .add_weighted(values.value(row), 1)
                    .map_err(overflow)?;
                self.counts[group] += 1;
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let (sums, counts) = self.take(emit_to);
        let values: Float64Array = sums
            .iter()
            .zip(&counts)
            .map(|(sum, &count)| result(self.output, sum, count))
            .collect();
        Ok(Arc::new(values))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let (sums, counts) = self.take(emit_to);
        let sums: BinaryArray = sums.iter().map(|sum| Some(encode(sum))).collect();
        Ok(vec![Arc::new(sums), Arc::new(Int64Array::from(counts))])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.sums.resize(total_num_groups, ExactFloatSum::default());
        self.counts.resize(total_num_groups, 0);
        let sums = values[0].as_binary::<i32>();
        let counts = values[1].as_primitive::<Int64Type>();
        for (row, &group) in group_indices.iter().enumerate() {
            if sums.is_valid(row) && counts.is_valid(row) {
                self.sums[group]
                    .merge(&decode(sums.value(row))?)
                    .map_err(overflow)?;
                self.counts[group] += counts.value(row);
            }
        }
        Ok(())
    }

    /// Each row as a group's state of its own (for DataFusion's partial aggregation when it
    /// stops grouping).
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let values = floats(&values[0])?;
        let values = values.as_primitive::<Float64Type>();
        let mut sums = Vec::with_capacity(values.len());
        let mut counts = Vec::with_capacity(values.len());
        for row in 0..values.len() {
            let mut sum = ExactFloatSum::default();
            let mut count = 0;
            if values.is_valid(row) && allows(opt_filter, row) {
                sum.add_weighted(values.value(row), 1).map_err(overflow)?;
                count = 1;
            }
            sums.push(Some(encode(&sum)));
            counts.push(count);
        }
        Ok(vec![
            Arc::new(BinaryArray::from_iter(sums)),
            Arc::new(Int64Array::from(counts)),
        ])
    }

    /// An estimate (asked after every batch, so it does not visit the groups): two partials
    /// a group, what most sums hold.
    fn size(&self) -> usize {
        self.sums.capacity() * (std::mem::size_of::<ExactFloatSum>() + 16)
            + self.counts.capacity() * 8
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct IntegerAverage {
    signature: Signature,
}

impl AggregateUDFImpl for IntegerAverage {
    fn name(&self) -> &str {
        "avg"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(AVERAGE_TYPE)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format!("{}[sum]", args.name),
                DataType::Decimal128(38, 0),
                true,
            )),
            Arc::new(Field::new(
                format!("{}[count]", args.name),
                DataType::Int64,
                true,
            )),
        ])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(IntegerAverageAccumulator::default()))
    }
}

fn average_value(sum: i128, count: i64) -> Result<Option<i128>> {
    integer_average(sum, count).map_err(|e| DataFusionError::External(Box::new(e)))
}

/// The exact sum (in i128: no sum of i64s a query can read overflows it) and the count.
#[derive(Debug, Default)]
struct IntegerAverageAccumulator {
    sum: i128,
    count: i64,
}

impl IntegerAverageAccumulator {
    fn add(&mut self, values: &ArrayRef, weight: i64) -> Result<()> {
        let values = cast(values, &DataType::Int64)?;
        for value in values.as_primitive::<Int64Type>().iter().flatten() {
            self.sum += i128::from(value) * i128::from(weight);
            self.count += weight;
        }
        Ok(())
    }
}

impl Accumulator for IntegerAverageAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.add(&values[0], 1)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.add(&values[0], -1)
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Decimal128(
            average_value(self.sum, self.count)?,
            38,
            AVERAGE_SCALE,
        ))
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::Decimal128(Some(self.sum), 38, 0),
            ScalarValue::Int64(Some(self.count)),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let sums = states[0].as_primitive::<Decimal128Type>();
        let counts = states[1].as_primitive::<Int64Type>();
        for (sum, count) in sums.iter().zip(counts.iter()) {
            if let (Some(sum), Some(count)) = (sum, count) {
                self.sum += sum;
                self.count += count;
            }
        }
        Ok(())
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}
