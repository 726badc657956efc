//! `max` and `min` of `REAL` and `DOUBLE PRECISION` in Postgres's float order, for ad-hoc
//! queries: `NaN` is larger than every other value (`Infinity` included) and equal to itself.
//!
//! DataFusion's grouped `max`/`min` of floats compare with IEEE `>`/`<`, where every comparison
//! with `NaN` is false, so the answer depended on the order rows came in (`Infinity`, `NaN`,
//! `1.5` gave a max of 1.5) and differed from a materialized view's, whose state orders floats
//! as Postgres does. [`crate::pg_numbers`] plans `max`/`min` of floats with these; they keep the
//! names `max` and `min`, so a view's lowering sees the same aggregate.

use std::cmp::Ordering;
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float32Array, Float64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

/// The shared `max` of floats.
pub fn float_max() -> Arc<AggregateUDF> {
    static UDF: OnceLock<Arc<AggregateUDF>> = OnceLock::new();
    UDF.get_or_init(|| Arc::new(AggregateUDF::new_from_impl(FloatExtreme::new(Extreme::Max))))
        .clone()
}

/// The shared `min` of floats.
pub fn float_min() -> Arc<AggregateUDF> {
    static UDF: OnceLock<Arc<AggregateUDF>> = OnceLock::new();
    UDF.get_or_init(|| Arc::new(AggregateUDF::new_from_impl(FloatExtreme::new(Extreme::Min))))
        .clone()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Extreme {
    Max,
    Min,
}

impl Extreme {
    /// Whether `candidate` replaces `current`, in Postgres's float order.
    fn replaces(self, candidate: f64, current: f64) -> bool {
        let order = postgres_float_cmp(candidate, current);
        match self {
            Extreme::Max => order == Ordering::Greater,
            Extreme::Min => order == Ordering::Less,
        }
    }
}

/// Postgres's float order: every NaN equal and above `Infinity`; `-0` equal to `0`.
pub fn postgres_float_cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct FloatExtreme {
    extreme: Extreme,
    signature: Signature,
}

impl FloatExtreme {
    fn new(extreme: Extreme) -> Self {
        FloatExtreme {
            extreme,
            signature: Signature::uniform(
                1,
                vec![DataType::Float32, DataType::Float64],
                Volatility::Immutable,
            ),
        }
    }
}

impl AggregateUDFImpl for FloatExtreme {
    fn name(&self) -> &str {
        match self.extreme {
            Extreme::Max => "max",
            Extreme::Min => "min",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [t @ (DataType::Float32 | DataType::Float64)] => Ok(t.clone()),
            _ => plan_err!(
                "{} of floats takes one REAL or DOUBLE PRECISION",
                self.name()
            ),
        }
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[{}]", args.name, self.name()),
            args.return_type().clone(),
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(ExtremeAccumulator {
            extreme: self.extreme,
            output: args.return_type().clone(),
            value: None,
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(ExtremeGroupsAccumulator {
            extreme: self.extreme,
            output: args.return_type().clone(),
            values: Vec::new(),
            seen: Vec::new(),
        }))
    }
}

/// The values as doubles (a `REAL` widens exactly, and narrows back exactly on output).
fn doubles(values: &ArrayRef) -> Result<ArrayRef> {
    Ok(cast(values, &DataType::Float64)?)
}

/// Doubles as the aggregate's output type.
fn output_array(output: &DataType, values: impl Iterator<Item = Option<f64>>) -> ArrayRef {
    match output {
        DataType::Float32 => Arc::new(
            values
                .map(|v| v.map(|v| v as f32))
                .collect::<Float32Array>(),
        ),
        _ => Arc::new(values.collect::<Float64Array>()),
    }
}

/// One group's extreme (no GROUP BY).
#[derive(Debug)]
struct ExtremeAccumulator {
    extreme: Extreme,
    output: DataType,
    value: Option<f64>,
}

impl ExtremeAccumulator {
    fn offer(&mut self, values: &ArrayRef) -> Result<()> {
        let values = doubles(values)?;
        for v in values.as_primitive::<Float64Type>().iter().flatten() {
            if self
                .value
                .is_none_or(|current| self.extreme.replaces(v, current))
            {
                self.value = Some(v);
            }
        }
        Ok(())
    }

    fn scalar(&self) -> ScalarValue {
        match self.output {
            DataType::Float32 => ScalarValue::Float32(self.value.map(|v| v as f32)),
            _ => ScalarValue::Float64(self.value),
        }
    }
}

impl Accumulator for ExtremeAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.offer(&values[0])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(self.scalar())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.scalar()])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.offer(&states[0])
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}

/// Every group's extreme, for GROUP BY.
struct ExtremeGroupsAccumulator {
    extreme: Extreme,
    output: DataType,
    values: Vec<f64>,
    seen: Vec<bool>,
}

impl ExtremeGroupsAccumulator {
    fn offer(
        &mut self,
        values: &ArrayRef,
        group_indices: &[usize],
        filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.values.resize(total_num_groups, 0.0);
        self.seen.resize(total_num_groups, false);
        let values = doubles(values)?;
        let values = values.as_primitive::<Float64Type>();
        for (row, &group) in group_indices.iter().enumerate() {
            let allowed = filter.is_none_or(|f| f.is_valid(row) && f.value(row));
            if !allowed || values.is_null(row) {
                continue;
            }
            let v = values.value(row);
            if !self.seen[group] || self.extreme.replaces(v, self.values[group]) {
                self.values[group] = v;
                self.seen[group] = true;
            }
        }
        Ok(())
    }

    fn take(&mut self, emit_to: EmitTo) -> ArrayRef {
        let values = emit_to.take_needed(&mut self.values);
        let seen = emit_to.take_needed(&mut self.seen);
        output_array(
            &self.output,
            values
                .into_iter()
                .zip(seen)
                .map(|(v, seen)| seen.then_some(v)),
        )
    }
}

impl GroupsAccumulator for ExtremeGroupsAccumulator {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.offer(&values[0], group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(self.take(emit_to))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.take(emit_to)])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.offer(&values[0], group_indices, None, total_num_groups)
    }

    /// Each row as a group's state of its own: the row's value, NULL where it is filtered out.
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let values = doubles(&values[0])?;
        let values = values.as_primitive::<Float64Type>();
        let rows = (0..values.len()).map(|row| {
            let allowed = opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row));
            (allowed && values.is_valid(row)).then(|| values.value(row))
        });
        Ok(vec![output_array(&self.output, rows)])
    }

    fn size(&self) -> usize {
        self.values.capacity() * 8 + self.seen.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grouped(extreme: Extreme, values: Vec<Option<f64>>) -> Option<f64> {
        let mut acc = ExtremeGroupsAccumulator {
            extreme,
            output: DataType::Float64,
            values: Vec::new(),
            seen: Vec::new(),
        };
        let groups = vec![0; values.len()];
        let array: ArrayRef = Arc::new(Float64Array::from(values));
        acc.update_batch(&[array], &groups, None, 1).unwrap();
        let out = acc.evaluate(EmitTo::All).unwrap();
        let out = out.as_primitive::<Float64Type>();
        out.is_valid(0).then(|| out.value(0))
    }

    #[test]
    fn nan_is_the_largest_float_in_any_order() {
        let inf = f64::INFINITY;
        for values in [
            vec![Some(inf), Some(f64::NAN), Some(1.5)],
            vec![Some(f64::NAN), Some(inf), Some(1.5)],
            vec![Some(1.5), Some(inf), Some(f64::NAN)],
        ] {
            assert!(grouped(Extreme::Max, values.clone()).unwrap().is_nan());
            assert_eq!(grouped(Extreme::Min, values), Some(1.5));
        }
    }

    #[test]
    fn nulls_are_skipped_and_all_null_is_null() {
        assert_eq!(
            grouped(Extreme::Max, vec![None, Some(-1.0), None]),
            Some(-1.0)
        );
        assert_eq!(grouped(Extreme::Min, vec![None, None]), None);
        assert!(grouped(Extreme::Min, vec![Some(f64::NAN)])
            .unwrap()
            .is_nan());
    }
}
