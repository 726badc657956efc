//! `avg` of integers as Postgres computes it: `numeric`, the exact sum divided by the count and
//! rounded half away from zero, here to [`AVERAGE_SCALE`] decimal places (Postgres shows at
//! least 16 significant digits: the same for averages below 10, fewer decimals above).

use datafusion::arrow::datatypes::DataType;

use crate::{Result, RunnelError, SqlState};

/// Decimal places of an average of integers.
pub const AVERAGE_SCALE: i8 = 16;

/// The type of an average of integers: `numeric(38, 16)`.
pub const AVERAGE_TYPE: DataType = DataType::Decimal128(38, AVERAGE_SCALE);

/// `sum / count` as a `numeric(38, 16)` value (its unscaled integer), rounded half away from
/// zero; `None` for no values. An average past 22 integer digits is out of range (22003).
pub fn integer_average(sum: i128, count: i64) -> Result<Option<i128>> {
    if count <= 0 {
        return Ok(None);
    }
    let scaled = sum
        .checked_mul(10i128.pow(AVERAGE_SCALE as u32))
        .ok_or_else(|| {
            RunnelError::execution(
                SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
                format!("numeric field overflow: the average of integers summing to {sum}"),
            )
        })?;
    let count = i128::from(count);
    let (quotient, remainder) = (scaled / count, scaled % count);
    let away = if remainder.abs() * 2 >= count {
        scaled.signum()
    } else {
        0
    };
    Ok(Some(quotient + away))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: i128 = 10_000_000_000_000_000;

    #[test]
    fn averages_round_half_away_from_zero_at_16_places() {
        assert_eq!(integer_average(30, 2).unwrap(), Some(15 * ONE));
        // 20 / 3 = 6.6666666666666666|67 -> ...667, as Postgres prints it.
        assert_eq!(
            integer_average(20, 3).unwrap(),
            Some(66_666_666_666_666_667)
        );
        assert_eq!(
            integer_average(-20, 3).unwrap(),
            Some(-66_666_666_666_666_667)
        );
        assert_eq!(integer_average(1, 2).unwrap(), Some(ONE / 2));
        assert_eq!(integer_average(0, 0).unwrap(), None);
        let max = i128::from(i64::MAX);
        assert_eq!(
            integer_average(max + 1, 2).unwrap(),
            Some((max + 1) / 2 * ONE)
        );
        let too_big = integer_average(i128::MAX / 1000, 1).unwrap_err();
        assert_eq!(too_big.sqlstate(), SqlState::NUMERIC_VALUE_OUT_OF_RANGE);
    }
}
