//! `epoch_bin(stride, t)`: the start of the epoch-aligned bin of `stride` that holds `t`, in
//! `t`'s own type. TUMBLE and HOP place rows in windows with it.
//!
//! DataFusion's `date_bin` does the same but computes in nanoseconds, whose `i64` range ends in
//! 1677 and 2262: a row from the year 2300 made every window over its stream fail for good.
//! Timestamps are microseconds in Runnel (and Postgres), so this bins in the column's unit
//! and keeps the full range Postgres accepts.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{ArrayRef, AsArray, PrimitiveArray};
use datafusion::arrow::datatypes::{
    ArrowTimestampType, DataType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use datafusion::arrow::error::ArrowError;
use datafusion::common::{exec_err, plan_err, DataFusionError, Result as DfResult, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use runnel_common::{RunnelError, SqlState};

use crate::event_time::interval_literal;

/// The function's name, as plans and EXPLAIN show it.
pub const EPOCH_BIN: &str = "epoch_bin";

/// The shared `epoch_bin` function.
pub fn epoch_bin_udf() -> Arc<ScalarUDF> {
    static UDF: OnceLock<Arc<ScalarUDF>> = OnceLock::new();
    UDF.get_or_init(|| Arc::new(ScalarUDF::new_from_impl(EpochBin::new())))
        .clone()
}

/// `epoch_bin(stride, t)` for a fixed stride given in microseconds.
pub fn epoch_bin(stride_micros: i64, time: Expr) -> Expr {
    epoch_bin_udf().call(vec![crate::windows::interval_expr(stride_micros), time])
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct EpochBin {
    signature: Signature,
}

impl EpochBin {
    fn new() -> Self {
        EpochBin {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for EpochBin {
    fn name(&self) -> &str {
        EPOCH_BIN
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        match arg_types {
            [_, t @ DataType::Timestamp(_, _)] => Ok(t.clone()),
            _ => plan_err!("epoch_bin(stride, time) takes an interval and a timestamp"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [stride, time] = args.args.as_slice() else {
            return exec_err!("epoch_bin takes two arguments");
        };
        let stride_micros = match stride {
            ColumnarValue::Scalar(s) => interval_literal(&Expr::Literal(s.clone(), None)),
            ColumnarValue::Array(_) => None,
        };
        let Some(stride_micros) = stride_micros.filter(|s| *s > 0) else {
            return exec_err!("epoch_bin needs a positive constant stride without months");
        };
        let is_scalar = matches!(time, ColumnarValue::Scalar(_));
        let array = time.to_array(args.number_rows)?;
        let binned: ArrayRef = match array.data_type() {
            DataType::Timestamp(TimeUnit::Second, tz) => Arc::new(
                bin::<TimestampSecondType>(array.as_primitive(), stride_micros, 1)?
                    .with_timezone_opt(tz.clone()),
            ),
            DataType::Timestamp(TimeUnit::Millisecond, tz) => Arc::new(
                bin::<TimestampMillisecondType>(array.as_primitive(), stride_micros, 1_000)?
                    .with_timezone_opt(tz.clone()),
            ),
            DataType::Timestamp(TimeUnit::Microsecond, tz) => Arc::new(
                bin::<TimestampMicrosecondType>(array.as_primitive(), stride_micros, 1_000_000)?
                    .with_timezone_opt(tz.clone()),
            ),
            DataType::Timestamp(TimeUnit::Nanosecond, tz) => Arc::new(
                bin::<TimestampNanosecondType>(array.as_primitive(), stride_micros, 1_000_000_000)?
                    .with_timezone_opt(tz.clone()),
            ),
            other => return exec_err!("epoch_bin of {other}"),
        };
        Ok(if is_scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&binned, 0)?)
        } else {
            ColumnarValue::Array(binned)
        })
    }
}

/// Bins timestamps counted in units of `1 / per_second` seconds. A stride finer than the unit
/// bins by whole units (each value is its own bin); the start of a bin before the first
/// representable instant is out of range (22008).
fn bin<T: ArrowTimestampType>(
    values: &PrimitiveArray<T>,
    stride_micros: i64,
    per_second: i128,
) -> DfResult<PrimitiveArray<T>> {
    let stride = (i128::from(stride_micros) * per_second / 1_000_000).max(1);
    let stride = i64::try_from(stride).unwrap_or(i64::MAX);
    values
        .try_unary::<_, T, _>(|v| {
            v.checked_sub(v.rem_euclid(stride))
                .ok_or_else(|| ArrowError::ComputeError("timestamp out of range".into()))
        })
        .map_err(|_| {
            DataFusionError::External(Box::new(RunnelError::execution(
                SqlState::DATETIME_FIELD_OVERFLOW,
                "timestamp out of range",
            )))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(values: &[Option<i64>], stride: i64) -> Vec<Option<i64>> {
        let array = PrimitiveArray::<TimestampMicrosecondType>::from(values.to_vec());
        bin(&array, stride, 1_000_000).unwrap().iter().collect()
    }

    #[test]
    fn bins_are_aligned_to_the_epoch_on_both_sides_of_it() {
        assert_eq!(
            micros(
                &[
                    Some(0),
                    Some(59),
                    Some(60),
                    Some(-1),
                    Some(-60),
                    Some(-61),
                    None
                ],
                60
            ),
            vec![
                Some(0),
                Some(0),
                Some(60),
                Some(-60),
                Some(-60),
                Some(-120),
                None
            ]
        );
    }

    #[test]
    fn years_beyond_2262_bin_like_any_other() {
        // 2300-01-01 10:00:00 UTC in microseconds, far beyond the nanosecond range.
        let t = 10_413_828_000_000_000;
        let minute = 60_000_000;
        assert_eq!(micros(&[Some(t + 5)], minute), vec![Some(t)]);
    }

    #[test]
    fn the_first_instant_has_no_bin_and_says_so() {
        let array = PrimitiveArray::<TimestampMicrosecondType>::from(vec![i64::MIN]);
        assert!(bin(&array, 60_000_000, 1_000_000).is_err());
    }

    #[test]
    fn coarser_and_finer_units_bin_in_their_own_unit() {
        let seconds = PrimitiveArray::<TimestampSecondType>::from(vec![125]);
        assert_eq!(bin(&seconds, 60_000_000, 1).unwrap().value(0), 120);
        let nanos = PrimitiveArray::<TimestampNanosecondType>::from(vec![1_500]);
        assert_eq!(bin(&nanos, 1, 1_000_000_000).unwrap().value(0), 1_000);
        // A stride below the unit: every second is its own bin.
        assert_eq!(bin(&seconds, 500_000, 1).unwrap().value(0), 125);
    }
}
