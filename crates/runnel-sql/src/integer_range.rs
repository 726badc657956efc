//! Integer and numeric results that do not fit their type raise 22003 as in Postgres
//! (`smallint out of range`, `integer out of range`, `bigint out of range`, `numeric field
//! overflow`), for the ways besides `+`, `-` and `*` (see [`crate::pg_numbers`]) a value leaves
//! its range:
//! - a cast of a number to a narrower integer type (`40000::int::smallint`, `3e10::int`):
//!   Arrow's cast fails with a generic cast error, which Runnel maps to 22P02 (bad input), so
//!   the cast's input is first checked by `to_int2`/`to_int4`/`to_int8`, which fail with 22003
//!   by the value's range, not by any message;
//! - text cast to an integer type (`'99999999999'::int`): Postgres says the value is out of
//!   range (22003) when it is all digits, and bad input (22P02) otherwise; the same check
//!   tells them apart ([`runnel_common::integer_text`]) once the cast has failed;
//! - a number cast to a `numeric(p, s)` with fewer integer digits than the number may have
//!   (`1e300::float8::numeric(10,2)`, `123456::numeric(5,2)`): `to_numeric`, 22003; a float
//!   `NaN` or infinity, which Runnel's numeric cannot hold, is refused with 22P02 as in text;
//! - `abs` of the smallest integer (`abs(-2147483648::int)`), where Arrow's kernel fails with a
//!   compute error (22000): `int_abs` is `abs` with a checked negation.
//!
//! [`crate::pg_numbers::CheckedIntegerArithmetic`] plans these after type coercion.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::arrow::datatypes::{
    ArrowNativeTypeOp, ArrowPrimitiveType, DataType, Int16Type, Int32Type, Int64Type,
};
use datafusion::common::{exec_err, Result as DfResult, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use runnel_common::{RunnelError, SqlState};

fn out_of_range(data_type: &DataType) -> DataFusionError {
    DataFusionError::External(Box::new(RunnelError::execution(
        SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
        format!(
            "{} out of range",
            runnel_common::integer_text::integer_type_name(data_type)
        ),
    )))
}

/// Whether a cast from `from` to `to` can overflow the integer type `to` (a float or a decimal,
/// a wider integer, or text) or the decimal type `to` (a float, or an integer or decimal with
/// more integer digits than `to` has). A widening cast, which type coercion adds all the time,
/// cannot fail and stays a plain cast.
pub fn needs_range_check(from: &DataType, to: &DataType) -> bool {
    if let DataType::Decimal128(precision, scale) = to {
        let room = i16::from(*precision) - i16::from(*scale);
        return match from {
            _ if from.is_floating() => true,
            DataType::Decimal128(p, s) => room < i16::from(*p) - i16::from(*s),
            _ => integer_digits(from).is_some_and(|digits| room < digits),
        };
    }
    // Postgres's integer types; Arrow's others never come out of SQL.
    let Some(to_bits) = signed_bits(to)
        .filter(|_| matches!(to, DataType::Int16 | DataType::Int32 | DataType::Int64))
    else {
        return false;
    };
    if from.is_floating() || from.is_decimal() || is_text(from) {
        return true;
    }
    signed_bits(from).is_some_and(|from_bits| from_bits > to_bits)
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// The error of a strict cast of `text` to the integer type `target` that failed: the first
/// value the lenient cast turns into NULL is the one refused.
fn text_input_error(text: &ArrayRef, target: &DataType) -> DataFusionError {
    let fallback = || out_of_range(target);
    let Ok(lenient) = cast_with_options(text, target, &CastOptions::default()) else {
        return fallback();
    };
    let Ok(strings) = cast_with_options(text, &DataType::Utf8, &CastOptions::default()) else {
        return fallback();
    };
    let strings = strings.as_string::<i32>();
    match (0..strings.len()).find(|&r| strings.is_valid(r) && lenient.is_null(r)) {
        Some(r) => DataFusionError::External(Box::new(
            runnel_common::integer_text::integer_input_error(strings.value(r), target, ""),
        )),
        None => fallback(),
    }
}

/// The most decimal digits a value of the integer type `t` has.
fn integer_digits(t: &DataType) -> Option<i16> {
    Some(match t {
        DataType::Int8 | DataType::UInt8 => 3,
        DataType::Int16 | DataType::UInt16 => 5,
        DataType::Int32 | DataType::UInt32 => 10,
        DataType::Int64 => 19,
        DataType::UInt64 => 20,
        _ => return None,
    })
}

/// 22003 for a value `numeric(p, s)` cannot hold, or 22P02 for a float that no numeric of
/// Runnel's holds (NaN, an infinity).
fn numeric_cast_error(input: &ArrayRef, target: &DataType) -> DataFusionError {
    let special = match input.data_type() {
        DataType::Float64 => input
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
            .iter()
            .flatten()
            .find(|v| !v.is_finite()),
        DataType::Float32 => input
            .as_primitive::<datafusion::arrow::datatypes::Float32Type>()
            .iter()
            .flatten()
            .find(|v| !v.is_finite())
            .map(f64::from),
        _ => None,
    };
    let error = match (special, target) {
        (Some(value), _) => RunnelError::execution(
            SqlState::INVALID_TEXT_REPRESENTATION,
            format!(
                "NUMERIC cannot hold {} in Runnel (a 38-digit decimal); use DOUBLE \
                 PRECISION for NaN and infinities",
                match value {
                    v if v.is_nan() => "NaN",
                    v if v > 0.0 => "Infinity",
                    _ => "-Infinity",
                }
            ),
        ),
        (None, DataType::Decimal128(precision, scale)) => RunnelError::execution(
            SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
            format!(
                "numeric field overflow: a field with precision {precision}, scale {scale} \
                 must round to an absolute value less than 10^{}",
                i16::from(*precision) - i16::from(*scale)
            ),
        ),
        (None, _) => RunnelError::execution(
            SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
            "numeric field overflow",
        ),
    };
    DataFusionError::External(Box::new(error))
}

/// The bits of a signed integer type that holds every value of `t` (an integer type).
fn signed_bits(t: &DataType) -> Option<u32> {
    Some(match t {
        DataType::Int8 => 8,
        DataType::Int16 | DataType::UInt8 => 16,
        DataType::Int32 | DataType::UInt16 => 32,
        DataType::Int64 | DataType::UInt32 => 64,
        DataType::UInt64 => 65,
        _ => return None,
    })
}

/// The range check of a cast to `target` (`to_int2`, `to_int4`, `to_int8` or `to_numeric`).
pub fn range_check(target: &DataType) -> Arc<ScalarUDF> {
    if target.is_decimal() {
        return Arc::new(ScalarUDF::new_from_impl(RangeCheckedCast {
            name: "to_numeric",
            target: target.clone(),
            signature: Signature::any(1, Volatility::Immutable),
        }));
    }
    static UDFS: OnceLock<[Arc<ScalarUDF>; 3]> = OnceLock::new();
    let [int2, int4, int8] = UDFS.get_or_init(|| {
        [DataType::Int16, DataType::Int32, DataType::Int64].map(|target| {
            Arc::new(ScalarUDF::new_from_impl(RangeCheckedCast {
                name: match target {
                    DataType::Int16 => "to_int2",
                    DataType::Int32 => "to_int4",
                    _ => "to_int8",
                },
                target,
                signature: Signature::any(1, Volatility::Immutable),
            }))
        })
    });
    match target {
        DataType::Int16 => int2.clone(),
        DataType::Int32 => int4.clone(),
        _ => int8.clone(),
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct RangeCheckedCast {
    name: &'static str,
    target: DataType,
    signature: Signature,
}

impl ScalarUDFImpl for RangeCheckedCast {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.target.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [value] = args.args.as_slice() else {
            return exec_err!("{} takes one argument", self.name);
        };
        let options = CastOptions {
            safe: false,
            ..Default::default()
        };
        // A number's cast fails only by leaving the range; text's also by not being a number.
        let cast = |array: &ArrayRef| {
            cast_with_options(array, &self.target, &options).map_err(|_| {
                if self.target.is_decimal() {
                    numeric_cast_error(array, &self.target)
                } else if is_text(array.data_type()) {
                    text_input_error(array, &self.target)
                } else {
                    out_of_range(&self.target)
                }
            })
        };
        match value {
            ColumnarValue::Array(array) => Ok(ColumnarValue::Array(cast(array)?)),
            ColumnarValue::Scalar(scalar) => {
                let array = cast(&scalar.to_array()?)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                    &array, 0,
                )?))
            }
        }
    }
}

/// `abs` of integers with a checked negation.
pub fn int_abs() -> Arc<ScalarUDF> {
    static UDF: OnceLock<Arc<ScalarUDF>> = OnceLock::new();
    UDF.get_or_init(|| {
        Arc::new(ScalarUDF::new_from_impl(IntAbs {
            signature: Signature::uniform(
                1,
                vec![DataType::Int16, DataType::Int32, DataType::Int64],
                Volatility::Immutable,
            ),
        }))
    })
    .clone()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct IntAbs {
    signature: Signature,
}

fn checked_abs<T: ArrowPrimitiveType>(array: &ArrayRef) -> DfResult<ArrayRef> {
    let values: &PrimitiveArray<T> = array.as_primitive();
    let abs = values
        .try_unary::<_, T, _>(|v| {
            if v.is_lt(T::Native::ZERO) {
                v.neg_checked()
            } else {
                Ok(v)
            }
        })
        .map_err(|_| out_of_range(array.data_type()))?;
    Ok(Arc::new(abs))
}

impl ScalarUDFImpl for IntAbs {
    fn name(&self) -> &str {
        "abs"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(arg_types[0].clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [value] = args.args.as_slice() else {
            return exec_err!("abs takes one argument");
        };
        let is_scalar = matches!(value, ColumnarValue::Scalar(_));
        let array = value.to_array(args.number_rows)?;
        let abs = match array.data_type() {
            DataType::Int16 => checked_abs::<Int16Type>(&array)?,
            DataType::Int32 => checked_abs::<Int32Type>(&array)?,
            DataType::Int64 => checked_abs::<Int64Type>(&array)?,
            other => return exec_err!("int_abs of {other}"),
        };
        Ok(if is_scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&abs, 0)?)
        } else {
            ColumnarValue::Array(abs)
        })
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int32Array, Int64Array, StringArray};

    use super::*;

    #[test]
    fn abs_of_the_smallest_integer_is_out_of_range_and_others_are_not() {
        let ok: ArrayRef = Arc::new(Int32Array::from(vec![Some(-5), None, Some(7)]));
        let abs = checked_abs::<Int32Type>(&ok).unwrap();
        assert_eq!(
            abs.as_primitive::<Int32Type>().iter().collect::<Vec<_>>(),
            vec![Some(5), None, Some(7)]
        );
        let min: ArrayRef = Arc::new(Int64Array::from(vec![i64::MIN]));
        let err = checked_abs::<Int64Type>(&min).unwrap_err().to_string();
        assert!(err.contains("bigint out of range"), "{err}");
    }

    #[test]
    fn text_that_is_all_digits_is_out_of_range_and_other_text_bad_input() {
        let text: ArrayRef = Arc::new(StringArray::from(vec![
            Some("1"),
            None,
            Some("99999999999"),
        ]));
        let err = RunnelError::from(text_input_error(&text, &DataType::Int32));
        assert_eq!(
            err.sqlstate(),
            SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
            "{err}"
        );
        assert!(err
            .to_string()
            .contains("\"99999999999\" is out of range for type integer"));
        let text: ArrayRef = Arc::new(StringArray::from(vec!["7", "x7"]));
        let err = RunnelError::from(text_input_error(&text, &DataType::Int16));
        assert_eq!(
            err.sqlstate(),
            SqlState::INVALID_TEXT_REPRESENTATION,
            "{err}"
        );
    }

    #[test]
    fn numbers_and_text_cast_to_a_narrower_integer_type_are_checked() {
        assert!(needs_range_check(&DataType::Int32, &DataType::Int16));
        assert!(needs_range_check(&DataType::Float64, &DataType::Int64));
        assert!(needs_range_check(&DataType::Utf8, &DataType::Int32));
        assert!(!needs_range_check(&DataType::Utf8, &DataType::Float64));
        assert!(!needs_range_check(&DataType::Int32, &DataType::Int32));
        assert!(!needs_range_check(&DataType::Int16, &DataType::Int64));
        assert!(needs_range_check(&DataType::UInt64, &DataType::Int64));
        assert!(!needs_range_check(&DataType::Int32, &DataType::Float64));
        assert!(!needs_range_check(&DataType::Int64, &DataType::Int8));
        // Decimals: by the integer digits each side has.
        assert!(needs_range_check(
            &DataType::Float64,
            &DataType::Decimal128(38, 10)
        ));
        assert!(needs_range_check(
            &DataType::Int64,
            &DataType::Decimal128(5, 2)
        ));
        assert!(!needs_range_check(
            &DataType::Int64,
            &DataType::Decimal128(38, 0)
        ));
        assert!(!needs_range_check(
            &DataType::Int32,
            &DataType::Decimal128(12, 2)
        ));
        assert!(needs_range_check(
            &DataType::Decimal128(10, 2),
            &DataType::Decimal128(6, 0)
        ));
        assert!(!needs_range_check(
            &DataType::Decimal128(10, 2),
            &DataType::Decimal128(12, 4)
        ));
        assert!(!needs_range_check(
            &DataType::Utf8,
            &DataType::Decimal128(10, 2)
        ));
    }
}
