//! Per-group aggregate state that supports retraction: every accumulator takes weighted
//! updates (+n / -n), so deletes and updates flow through aggregates exactly.
//!
//! Accumulators are columnar over groups (one vector slot per group id) and update from whole
//! Arrow arrays, so the per-row work is a few array reads and an indexed add.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Float64Array, Int64Array,
    PrimitiveArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Decimal128Type, Float64Type, Int64Type, UInt64Type,
};
use runnel_common::exact_float_sum::ExactFloatSum;
use runnel_common::integer_average::{integer_average, AVERAGE_TYPE};
use runnel_common::{Result, RunnelError, SqlState};
use runnel_plan::{AggregateCall, AggregateFunction};
use runnel_state::codec::{decode_rows, encode_rows, EncodedRows};

/// Aggregate state for every group of one aggregate call.
pub trait GroupAccumulator: Send {
    /// Makes room for group ids `0..groups`.
    fn resize(&mut self, groups: usize);
    /// Adds `weights[i]` copies of row i to group `groups[i]`, for rows where `mask` is true.
    fn update(
        &mut self,
        groups: &[u32],
        values: Option<&ArrayRef>,
        weights: &[i64],
        mask: Option<&BooleanArray>,
    ) -> Result<()>;
    /// The aggregate's value for each group, in order.
    fn evaluate(&self, groups: &[u32]) -> Result<ArrayRef>;
    fn save(&self, group: u32, out: &mut Vec<u8>);
    fn load(&mut self, group: u32, bytes: &mut &[u8]) -> Result<()>;
    fn reset(&mut self, group: u32);
}

/// Builds the accumulator for one aggregate call over `input_type` values.
pub fn create_accumulator(
    call: &AggregateCall,
    input_type: Option<&DataType>,
    append_only: bool,
) -> Result<Box<dyn GroupAccumulator>> {
    let out = call.output_type.clone();
    Ok(match call.function {
        AggregateFunction::CountStar => Box::new(CountAcc::default()),
        AggregateFunction::Count if call.distinct => Box::new(MultisetAcc::new(
            MultisetOutput::CountDistinct,
            DataType::Int64,
        )),
        AggregateFunction::Count => Box::new(CountAcc::default()),
        AggregateFunction::Sum => match out {
            DataType::Int64 => Box::new(SumAcc::<Int64Type>::new(out)),
            DataType::UInt64 => Box::new(SumAcc::<UInt64Type>::new(out)),
            DataType::Float64 => Box::new(FloatSumAcc::new(FloatOutput::Sum)),
            DataType::Decimal128(_, _) => Box::new(SumAcc::<Decimal128Type>::new(out)),
            other => {
                return Err(RunnelError::not_implemented(format!(
                    "sum producing {other} in a materialized view"
                )))
            }
        },
        AggregateFunction::Avg => match (&out, input_type) {
            (DataType::Float64, _) => Box::new(FloatSumAcc::new(FloatOutput::Average)),
            (out, Some(input)) if input.is_integer() && *out == AVERAGE_TYPE => {
                Box::new(DecimalAvgAcc::integer())
            }
            (DataType::Decimal128(p, s), Some(DataType::Decimal128(_, in_scale))) => {
                Box::new(DecimalAvgAcc::decimal(*p, *s, *in_scale)?)
            }
            (other, _) => {
                return Err(RunnelError::not_implemented(format!(
                    "avg producing {other} in a materialized view"
                )))
            }
        },
        AggregateFunction::Min | AggregateFunction::Max => {
            let is_min = call.function == AggregateFunction::Min;
            if append_only {
                match native_extreme(is_min, &out) {
                    Some(native) => native,
                    None => Box::new(ExtremeAcc::new(is_min, out)),
                }
            } else {
                let output = if is_min {
                    MultisetOutput::Min
                } else {
                    MultisetOutput::Max
                };
                Box::new(MultisetAcc::new(output, out))
            }
        }
    })
}

fn mask_allows(mask: Option<&BooleanArray>, i: usize) -> bool {
    match mask {
        None => true,
        Some(m) => m.is_valid(i) && m.value(i),
    }
}

fn read_i64(bytes: &mut &[u8]) -> Result<i64> {
    let (head, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| RunnelError::internal("truncated aggregate state"))?;
    *bytes = rest;
    Ok(i64::from_le_bytes(*head))
}

fn read_bytes<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8]> {
    let len = read_i64(bytes)? as usize;
    if bytes.len() < len {
        return Err(RunnelError::internal("truncated aggregate state"));
    }
    let (head, rest) = bytes.split_at(len);
    *bytes = rest;
    Ok(head)
}

fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as i64).to_le_bytes());
    out.extend_from_slice(b);
}

/// count(*) and count(x): the sum of weights of (non-null) rows.
#[derive(Default)]
struct CountAcc {
    counts: Vec<i64>,
}

impl GroupAccumulator for CountAcc {
    fn resize(&mut self, groups: usize) {
        self.counts.resize(groups, 0);
    }

    fn update(
        &mut self,
        groups: &[u32],
        values: Option<&ArrayRef>,
        weights: &[i64],
        mask: Option<&BooleanArray>,
    ) -> Result<()> {
        for (i, (&g, &w)) in groups.iter().zip(weights).enumerate() {
            let valid = values.is_none_or(|v| v.is_valid(i));
            if valid && mask_allows(mask, i) {
                self.counts[g as usize] += w;
            }
        }
        Ok(())
    }

    fn evaluate(&self, groups: &[u32]) -> Result<ArrayRef> {
        Ok(Arc::new(Int64Array::from_iter_values(
            groups.iter().map(|&g| self.counts[g as usize]),
        )))
    }

    fn save(&self, group: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.counts[group as usize].to_le_bytes());
    }

    fn load(&mut self, group: u32, bytes: &mut &[u8]) -> Result<()> {
        self.counts[group as usize] = read_i64(bytes)?;
        Ok(())
    }

    fn reset(&mut self, group: u32) {
        self.counts[group as usize] = 0;
    }
}

/// Native types a sum can accumulate, with weighted addition.
pub trait SumNative: Copy + Default + Send + 'static {
    fn add_weighted(self, value: Self, weight: i64) -> Self;
    fn write_le(self, out: &mut Vec<u8>);
    fn read_le(bytes: &mut &[u8]) -> Result<Self>;
}

impl SumNative for i64 {
    fn add_weighted(self, value: Self, weight: i64) -> Self {
        self.wrapping_add(value.wrapping_mul(weight))
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn read_le(bytes: &mut &[u8]) -> Result<Self> {
        read_i64(bytes)
    }
}

impl SumNative for u64 {
    fn add_weighted(self, value: Self, weight: i64) -> Self {
        self.wrapping_add(value.wrapping_mul(weight as u64))
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn read_le(bytes: &mut &[u8]) -> Result<Self> {
        Ok(read_i64(bytes)? as u64)
    }
}

impl SumNative for i128 {
    fn add_weighted(self, value: Self, weight: i64) -> Self {
        self.wrapping_add(value.wrapping_mul(weight as i128))
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn read_le(bytes: &mut &[u8]) -> Result<Self> {
        let (head, rest) = bytes
            .split_first_chunk::<16>()
            .ok_or_else(|| RunnelError::internal("truncated aggregate state"))?;
        *bytes = rest;
        Ok(i128::from_le_bytes(*head))
    }
}

/// sum(x): the weighted sum plus the weighted count of non-null inputs (sum of none is NULL).
struct SumAcc<T: ArrowPrimitiveType>
where
    T::Native: SumNative,
{
    output_type: DataType,
    sums: Vec<T::Native>,
    counts: Vec<i64>,
}

impl<T: ArrowPrimitiveType> SumAcc<T>
where
    T::Native: SumNative,
{
    fn new(output_type: DataType) -> Self {
        SumAcc {
            output_type,
            sums: Vec::new(),
            counts: Vec::new(),
        }
    }
}

impl<T: ArrowPrimitiveType> GroupAccumulator for SumAcc<T>
where
    T::Native: SumNative,
{
    fn resize(&mut self, groups: usize) {
        self.sums.resize(groups, T::Native::default());
        self.counts.resize(groups, 0);
    }

    fn update(
        &mut self,
        groups: &[u32],
        values: Option<&ArrayRef>,
        weights: &[i64],
        mask: Option<&BooleanArray>,
    ) -> Result<()> {
        let values = values.ok_or_else(|| RunnelError::internal("sum without an argument"))?;
        let values = cast(values, &self.output_type)?;
        let values = values.as_primitive::<T>();
        let raw = values.values();
        for (i, (&g, &w)) in groups.iter().zip(weights).enumerate() {
            if values.is_valid(i) && mask_allows(mask, i) {
                let g = g as usize;
                self.sums[g] = self.sums[g].add_weighted(raw[i], w);
                self.counts[g] += w;
            }
        }
        Ok(())
    }

    fn evaluate(&self, groups: &[u32]) -> Result<ArrayRef> {
        let array: PrimitiveArray<T> = groups
            .iter()
            .map(|&g| (self.counts[g as usize] > 0).then(|| self.sums[g as usize]))
            .collect();
        Ok(Arc::new(array.with_data_type(self.output_type.clone())))
    }

    fn save(&self, group: u32, out: &mut Vec<u8>) {
        self.sums[group as usize].write_le(out);
        out.extend_from_slice(&self.counts[group as usize].to_le_bytes());
    }

    fn load(&mut self, group: u32, bytes: &mut &[u8]) -> Result<()> {
        self.sums[group as usize] = T::Native::read_le(bytes)?;
        self.counts[group as usize] = read_i64(bytes)?;
        Ok(())
    }

    fn reset(&mut self, group: u32) {
        self.sums[group as usize] = T::Native::default();
        self.counts[group as usize] = 0;
    }
}

/// sum(x) and avg(x) of floats, exact under retraction: each group keeps its
/// [`ExactFloatSum`], so deleting rows returns exactly the sum (and average) of those left,
/// and the result is the same whatever order the rows came and went in, as the ad-hoc
/// `sum`/`avg` Runnel plans for floats computes it (`runnel_sql::pg_numbers`).
struct FloatSumAcc {
    output: FloatOutput,
    sums: Vec<ExactFloatSum>,
    counts: Vec<i64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FloatOutput {
    Sum,
    Average,
}

impl FloatSumAcc {
    fn new(output: FloatOutput) -> Self {
        FloatSumAcc {
            output,
            sums: Vec::new(),
            counts: Vec::new(),
        }
    }
}

impl GroupAccumulator for FloatSumAcc {
    fn resize(&mut self, groups: usize) {
        self.sums.resize(groups, ExactFloatSum::default());
        self.counts.resize(groups, 0);
    }

    fn update(
        &mut self,
        groups: &[u32],
        values: Option<&ArrayRef>,
        weights: &[i64],
        mask: Option<&BooleanArray>,
    ) -> Result<()> {
        let values = values.ok_or_else(|| RunnelError::internal("sum without an argument"))?;
        let values = cast(values, &DataType::Float64)?;
        let values = values.as_primitive::<Float64Type>();
        for (i, (&g, &w)) in groups.iter().zip(weights).enumerate() {
            if values.is_valid(i) && mask_allows(mask, i) {
                let g = g as usize;
                self.sums[g]
                    .add_weighted(values.value(i), w)
                    .map_err(|overflow| {
                        RunnelError::execution(
                            SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
                            overflow.to_string(),
                        )
                    })?;
                self.counts[g] += w;
            }
        }
        Ok(())
    }

    fn evaluate(&self, groups: &[u32]) -> Result<ArrayRef> {
        let array: Float64Array = groups
            .iter()
            .map(|&g| {
                let g = g as usize;
                let count = self.counts[g];
                (count > 0).then(|| match self.output {
                    FloatOutput::Sum => self.sums[g].value(),
                    FloatOutput::Average => self.sums[g].value() / count as f64,
                })
            })
            .collect();
        Ok(Arc::new(array))
    }

    fn save(&self, group: u32, out: &mut Vec<u8>) {
        self.sums[group as usize].write(out);
        out.extend_from_slice(&self.counts[group as usize].to_le_bytes());
    }

    fn load(&mut self, group: u32, bytes: &mut &[u8]) -> Result<()> {
        self.sums[group as usize] = ExactFloatSum::read(bytes)
            .ok_or_else(|| RunnelError::internal("truncated aggregate state"))?;
        self.counts[group as usize] = read_i64(bytes)?;
        Ok(())
    }

    fn reset(&mut self, group: u32) {
        self.sums[group as usize] = ExactFloatSum::default();
        self.counts[group as usize] = 0;
    }
}

/// avg(x) over an exact i128 sum and the count: of integers as Postgres computes it
/// (`numeric(38, 16)` rounded half away from zero, see `runnel_common::integer_average`, as the
/// ad-hoc `avg` Runnel plans for integers), of decimals as DataFusion does (the scale raised,
/// sum * 10^(out_scale - in_scale) / count, truncated).
struct DecimalAvgAcc {
    output: AvgOutput,
    input_scale: i8,
    sums: Vec<i128>,
    counts: Vec<i64>,
}

enum AvgOutput {
    IntegerAverage,
    Decimal { precision: u8, scale: i8 },
}

impl DecimalAvgAcc {
    fn integer() -> Self {
        DecimalAvgAcc {
            output: AvgOutput::IntegerAverage,
            input_scale: 0,
            sums: Vec::new(),
            counts: Vec::new(),
        }
    }

    fn decimal(precision: u8, scale: i8, input_scale: i8) -> Result<Self> {
        if scale < input_scale {
            return Err(RunnelError::not_implemented(
                "avg of a decimal with a smaller output scale",
            ));
        }
        Ok(DecimalAvgAcc {
            output: AvgOutput::Decimal { precision, scale },
            input_scale,
            sums: Vec::new(),
            counts: Vec::new(),
        })
    }
}

impl GroupAccumulator for DecimalAvgAcc {
    fn resize(&mut self, groups: usize) {
        self.counts.resize(groups, 0);
        self.sums.resize(groups, 0);
    }

    fn update(
        &mut self,
        groups: &[u32],
        values: Option<&ArrayRef>,
        weights: &[i64],
        mask: Option<&BooleanArray>,
    ) -> Result<()> {
        let values = values.ok_or_else(|| RunnelError::internal("avg without an argument"))?;
        let values = cast(values, &DataType::Decimal128(38, self.input_scale))?;
        let values = values.as_primitive::<Decimal128Type>();
        for (i, (&g, &w)) in groups.iter().zip(weights).enumerate() {
            if values.is_valid(i) && mask_allows(mask, i) {
                let g = g as usize;
                self.sums[g] = self.sums[g].add_weighted(values.value(i), w);
                self.counts[g] += w;
            }
        }
        Ok(())
    }

    fn evaluate(&self, groups: &[u32]) -> Result<ArrayRef> {
        let array = match self.output {
            AvgOutput::IntegerAverage => groups
                .iter()
                .map(|&g| integer_average(self.sums[g as usize], self.counts[g as usize]))
                .collect::<Result<Decimal128Array>>()?
                .with_data_type(AVERAGE_TYPE),
            AvgOutput::Decimal { precision, scale } => {
                let factor = 10i128.pow((scale - self.input_scale) as u32);
                groups
                    .iter()
                    .map(|&g| {
                        let g = g as usize;
                        (self.counts[g] > 0).then(|| self.sums[g] * factor / self.counts[g] as i128)
                    })
                    .collect::<Decimal128Array>()
                    .with_precision_and_scale(precision, scale)?
            }
        };
        Ok(Arc::new(array))
    }

    fn save(&self, group: u32, out: &mut Vec<u8>) {
        let g = group as usize;
        SumNative::write_le(self.sums[g], out);
        out.extend_from_slice(&self.counts[g].to_le_bytes());
    }

    fn load(&mut self, group: u32, bytes: &mut &[u8]) -> Result<()> {
        let g = group as usize;
        self.sums[g] = <i128 as SumNative>::read_le(bytes)?;
        self.counts[g] = read_i64(bytes)?;
        Ok(())
    }

    fn reset(&mut self, group: u32) {
        let g = group as usize;
        self.counts[g] = 0;
        self.sums[g] = 0;
    }
}

/// A primitive value kept natively by [`NativeExtremeAcc`], compared in SQL order.
trait ExtremeNative: Copy + Send + 'static {
    /// `self < other` in SQL order (for floats: `-0.0 = +0.0`, NaN greater than everything).
    fn sql_lt(self, other: Self) -> bool;
    /// The value stored for `self` (floats: `+0.0` for `-0.0`, as the row codec does).
    fn canonical(self) -> Self;
    fn write_le(self, out: &mut Vec<u8>);
    fn read_le(bytes: &mut &[u8]) -> Result<Self>;
}

macro_rules! extreme_native_int {
    ($($t:ty),*) => {$(
        impl ExtremeNative for $t {
            fn sql_lt(self, other: Self) -> bool {
                self < other
            }
            fn canonical(self) -> Self {
                self
            }
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read_le(bytes: &mut &[u8]) -> Result<Self> {
                let (head, rest) = bytes
                    .split_first_chunk::<{ std::mem::size_of::<$t>() }>()
                    .ok_or_else(|| RunnelError::internal("truncated aggregate state"))?;
                *bytes = rest;
                Ok(<$t>::from_le_bytes(*head))
            }
        }
    )*};
}
extreme_native_int!(i8, i16, i32, i64, i128);

impl ExtremeNative for f64 {
    fn sql_lt(self, other: Self) -> bool {
        match (self.is_nan(), other.is_nan()) {
            (false, true) => true,
            (_, false) if !self.is_nan() => self < other,
            _ => false,
        }
    }
    fn canonical(self) -> Self {
        if self == 0.0 {
            0.0
        } else if self.is_nan() {
            f64::NAN
        } else {
            self
        }
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn read_le(bytes: &mut &[u8]) -> Result<Self> {
        let (head, rest) = bytes
            .split_first_chunk::<8>()
            .ok_or_else(|| RunnelError::internal("truncated aggregate state"))?;
        *bytes = rest;
        Ok(f64::from_le_bytes(*head))
    }
}

/// The native min/max accumulator for append-only input of a primitive type, if there is one.
fn native_extreme(is_min: bool, out: &DataType) -> Option<Box<dyn GroupAccumulator>> {
    use datafusion::arrow::datatypes::{
        Date32Type, Int16Type, Int32Type, Int8Type, TimeUnit, TimestampMicrosecondType,
        TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
    };
    let out = out.clone();
    Some(match &out {
        DataType::Int8 => Box::new(NativeExtremeAcc::<Int8Type>::new(is_min, out)),
        DataType::Int16 => Box::new(NativeExtremeAcc::<Int16Type>::new(is_min, out)),
        DataType::Int32 => Box::new(NativeExtremeAcc::<Int32Type>::new(is_min, out)),
        DataType::Int64 => Box::new(NativeExtremeAcc::<Int64Type>::new(is_min, out)),
        DataType::Float64 => Box::new(NativeExtremeAcc::<Float64Type>::new(is_min, out)),
        DataType::Date32 => Box::new(NativeExtremeAcc::<Date32Type>::new(is_min, out)),
        DataType::Decimal128(_, _) => {
            Box::new(NativeExtremeAcc::<Decimal128Type>::new(is_min, out))
        }
        DataType::Timestamp(unit, _) => match unit {
            TimeUnit::Second => Box::new(NativeExtremeAcc::<TimestampSecondType>::new(is_min, out)),
            TimeUnit::Millisecond => Box::new(NativeExtremeAcc::<TimestampMillisecondType>::new(
                is_min, out,
            )),
            TimeUnit::Microsecond => Box::new(NativeExtremeAcc::<TimestampMicrosecondType>::new(
                is_min, out,
            )),
            TimeUnit::Nanosecond => Box::new(NativeExtremeAcc::<TimestampNanosecondType>::new(
                is_min, out,
            )),
        },
        _ => return None,
    })
}

/// min/max over append-only input of a primitive type: the current extreme per group, kept
/// as a native value (one comparison per row, no allocation).
struct NativeExtremeAcc<T: ArrowPrimitiveType>
where
    T::Native: ExtremeNative,
{
    is_min: bool,
    output_type: DataType,
    extremes: Vec<T::Native>,
    present: Vec<bool>,
}

impl<T: ArrowPrimitiveType> NativeExtremeAcc<T>
where
    T::Native: ExtremeNative,
{
    fn new(is_min: bool, output_type: DataType) -> Self {
        NativeExtremeAcc {
            is_min,
            output_type,
            extremes: Vec::new(),
            present: Vec::new(),
        }
    }
}

impl<T: ArrowPrimitiveType> GroupAccumulator for NativeExtremeAcc<T>
where
    T::Native: ExtremeNative,
{
    fn resize(&mut self, groups: usize) {
        self.extremes.resize(groups, T::Native::default());
        self.present.resize(groups, false);
    }

    fn update(
        &mut self,
        groups: &[u32],
        values: Option<&ArrayRef>,
        weights: &[i64],
        mask: Option<&BooleanArray>,
    ) -> Result<()> {
        let values = values.ok_or_else(|| RunnelError::internal("min/max without an argument"))?;
        let values = cast(values, &self.output_type)?;
        let values = values.as_primitive::<T>();
        let raw = values.values();
        for (i, (&g, &w)) in groups.iter().zip(weights).enumerate() {
            if w <= 0 || !values.is_valid(i) || !mask_allows(mask, i) {
                continue;
            }
            let g = g as usize;
            let v = raw[i];
            let better = !self.present[g]
                || if self.is_min {
                    v.sql_lt(self.extremes[g])
                } else {
                    self.extremes[g].sql_lt(v)
                };
            if better {
                self.extremes[g] = v.canonical();
                self.present[g] = true;
            }
        }
        Ok(())
    }

    fn evaluate(&self, groups: &[u32]) -> Result<ArrayRef> {
        let array: PrimitiveArray<T> = groups
            .iter()
            .map(|&g| self.present[g as usize].then(|| self.extremes[g as usize]))
            .collect();
        Ok(Arc::new(array.with_data_type(self.output_type.clone())))
    }

    fn save(&self, group: u32, out: &mut Vec<u8>) {
        let g = group as usize;
        out.push(self.present[g] as u8);
        self.extremes[g].write_le(out);
    }

    fn load(&mut self, group: u32, bytes: &mut &[u8]) -> Result<()> {
        let (&present, rest) = bytes
            .split_first()
            .ok_or_else(|| RunnelError::internal("truncated aggregate state"))?;
        *bytes = rest;
        self.present[group as usize] = present != 0;
        self.extremes[group as usize] = T::Native::read_le(bytes)?;
        Ok(())
    }

    fn reset(&mut self, group: u32) {
        self.present[group as usize] = false;
    }
}

/// min/max over append-only input: only the current extreme is kept, as its order-preserving
/// encoding, so any orderable type works with one byte comparison per row.
struct ExtremeAcc {
    is_min: bool,
    output_type: DataType,
    extremes: Vec<Option<Box<[u8]>>>,
    scratch: EncodedRows,
}

impl ExtremeAcc {
    fn new(is_min: bool, output_type: DataType) -> Self {
        ExtremeAcc {
            is_min,
            output_type,
            extremes: Vec::new(),
            scratch: EncodedRows::new(),
        }
    }
}

impl GroupAccumulator for ExtremeAcc {
    fn resize(&mut self, groups: usize) {
        self.extremes.resize(groups, None);
    }

    fn update(
        &mut self,
        groups: &[u32],
        values: Option<&ArrayRef>,
        weights: &[i64],
        mask: Option<&BooleanArray>,
    ) -> Result<()> {
        let values = values.ok_or_else(|| RunnelError::internal("min/max without an argument"))?;
        let values = cast(values, &self.output_type)?;
        self.scratch.clear();
        encode_rows(&[], std::slice::from_ref(&values), &mut self.scratch)?;
        for (i, (&g, &w)) in groups.iter().zip(weights).enumerate() {
            if w <= 0 || !values.is_valid(i) || !mask_allows(mask, i) {
                continue;
            }
            let encoded = self.scratch.row(i);
            let slot = &mut self.extremes[g as usize];
            let better = match slot {
                None => true,
                Some(current) => {
                    if self.is_min {
                        encoded < &current[..]
                    } else {
                        encoded > &current[..]
                    }
                }
            };
            if better {
                *slot = Some(encoded.into());
            }
        }
        Ok(())
    }

    fn evaluate(&self, groups: &[u32]) -> Result<ArrayRef> {
        evaluate_encoded(
            groups.iter().map(|&g| self.extremes[g as usize].as_deref()),
            &self.output_type,
        )
    }

    fn save(&self, group: u32, out: &mut Vec<u8>) {
        match &self.extremes[group as usize] {
            None => out.extend_from_slice(&(-1i64).to_le_bytes()),
            Some(b) => write_bytes(out, b),
        }
    }

    fn load(&mut self, group: u32, bytes: &mut &[u8]) -> Result<()> {
        let mut peek = *bytes;
        if read_i64(&mut peek)? == -1 {
            *bytes = peek;
            self.extremes[group as usize] = None;
        } else {
            self.extremes[group as usize] = Some(read_bytes(bytes)?.into());
        }
        Ok(())
    }

    fn reset(&mut self, group: u32) {
        self.extremes[group as usize] = None;
    }
}

/// Decodes one optional encoded value per group into an array (NULL where absent).
fn evaluate_encoded<'a>(
    values: impl Iterator<Item = Option<&'a [u8]>>,
    output_type: &DataType,
) -> Result<ArrayRef> {
    // A single NULL-marker byte decodes to NULL in the codec.
    const NULL_ENCODING: &[u8] = &[0u8];
    let rows: Vec<&[u8]> = values.map(|v| v.unwrap_or(NULL_ENCODING)).collect();
    let mut arrays = decode_rows(rows.iter().copied(), std::slice::from_ref(output_type))?;
    arrays
        .pop()
        .ok_or_else(|| RunnelError::internal("decoding produced no column"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum MultisetOutput {
    Min,
    Max,
    CountDistinct,
}

/// min/max over retractable input and count(DISTINCT): the multiset of (encoded) values per
/// group, so deleting the current extreme finds the next one. Bounded by distinct values.
struct MultisetAcc {
    output: MultisetOutput,
    value_type: DataType,
    sets: Vec<BTreeMap<Box<[u8]>, i64>>,
    scratch: EncodedRows,
}

impl MultisetAcc {
    fn new(output: MultisetOutput, value_type: DataType) -> Self {
        MultisetAcc {
            output,
            value_type,
            sets: Vec::new(),
            scratch: EncodedRows::new(),
        }
    }
}

impl GroupAccumulator for MultisetAcc {
    fn resize(&mut self, groups: usize) {
        self.sets.resize_with(groups, BTreeMap::new);
    }

    fn update(
        &mut self,
        groups: &[u32],
        values: Option<&ArrayRef>,
        weights: &[i64],
        mask: Option<&BooleanArray>,
    ) -> Result<()> {
        let values =
            values.ok_or_else(|| RunnelError::internal("aggregate without an argument"))?;
        let values = if self.output == MultisetOutput::CountDistinct {
            values.clone()
        } else {
            cast(values, &self.value_type)?
        };
        self.scratch.clear();
        encode_rows(&[], std::slice::from_ref(&values), &mut self.scratch)?;
        for (i, (&g, &w)) in groups.iter().zip(weights).enumerate() {
            if w == 0 || !values.is_valid(i) || !mask_allows(mask, i) {
                continue;
            }
            let set = &mut self.sets[g as usize];
            let encoded = self.scratch.row(i);
            match set.get_mut(encoded) {
                Some(count) => {
                    *count += w;
                    if *count == 0 {
                        set.remove(encoded);
                    }
                }
                None => {
                    set.insert(encoded.into(), w);
                }
            }
        }
        Ok(())
    }

    fn evaluate(&self, groups: &[u32]) -> Result<ArrayRef> {
        match self.output {
            MultisetOutput::CountDistinct => {
                Ok(Arc::new(Int64Array::from_iter_values(groups.iter().map(
                    |&g| self.sets[g as usize].values().filter(|&&c| c > 0).count() as i64,
                ))))
            }
            MultisetOutput::Min => evaluate_encoded(
                groups.iter().map(|&g| {
                    self.sets[g as usize]
                        .iter()
                        .find(|(_, &c)| c > 0)
                        .map(|(k, _)| &k[..])
                }),
                &self.value_type,
            ),
            MultisetOutput::Max => evaluate_encoded(
                groups.iter().map(|&g| {
                    self.sets[g as usize]
                        .iter()
                        .rev()
                        .find(|(_, &c)| c > 0)
                        .map(|(k, _)| &k[..])
                }),
                &self.value_type,
            ),
        }
    }

    fn save(&self, group: u32, out: &mut Vec<u8>) {
        let set = &self.sets[group as usize];
        out.extend_from_slice(&(set.len() as i64).to_le_bytes());
        for (value, count) in set {
            write_bytes(out, value);
            out.extend_from_slice(&count.to_le_bytes());
        }
    }

    fn load(&mut self, group: u32, bytes: &mut &[u8]) -> Result<()> {
        let n = read_i64(bytes)?;
        let set = &mut self.sets[group as usize];
        set.clear();
        for _ in 0..n {
            let value: Box<[u8]> = read_bytes(bytes)?.into();
            let count = read_i64(bytes)?;
            set.insert(value, count);
        }
        Ok(())
    }

    fn reset(&mut self, group: u32) {
        self.sets[group as usize].clear();
    }
}
