//! An exact sum of floats that values can leave as well as enter.
//!
//! A view's `sum(double)` takes rows in and out as the input changes. Added and subtracted in
//! floating point, a sum drifts: insert 0.1, 0.2, 0.3 and 1e17, delete all but 0.2, and a plain
//! `f64` reads 0 where the sum of what is left is 0.2. [`ExactFloatSum`] keeps the exact sum as
//! Shewchuk's non-overlapping partials (the algorithm of Python's `math.fsum`): every finite
//! value is added without rounding, so taking out what was put in returns exactly the earlier
//! sum, and [`ExactFloatSum::value`] is that exact sum rounded once, to nearest, whatever order
//! the values came and went in. Infinities and NaNs are counted apart, so that they too leave
//! the sum as they entered it: a NaN makes the sum NaN only while it is there.
//!
//! Usually one or two partials; never more than the span of the exponents needs (about 40).

/// The exact sum; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExactFloatSum {
    /// Non-overlapping, nonzero, in increasing magnitude; their exact sum is the finite part.
    partials: Vec<f64>,
    nan: i64,
    positive_infinity: i64,
    negative_infinity: i64,
}

/// The finite values summed past the largest double (Postgres: "value out of range:
/// overflow", 22003).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("value out of range: overflow")]
pub struct FloatOverflow;

impl ExactFloatSum {
    /// Adds `weight` copies of `value` (a negative weight takes them out).
    pub fn add_weighted(&mut self, value: f64, weight: i64) -> Result<(), FloatOverflow> {
        if value.is_nan() {
            self.nan += weight;
        } else if value == f64::INFINITY {
            self.positive_infinity += weight;
        } else if value == f64::NEG_INFINITY {
            self.negative_infinity += weight;
        } else if weight == 1 {
            self.add_finite(value)?;
        } else {
            // value × weight as a sum of two doubles, exactly (weights are far below 2^53).
            let weight = weight as f64;
            let product = value * weight;
            if !product.is_finite() {
                return Err(FloatOverflow);
            }
            let error = value.mul_add(weight, -product);
            self.add_finite(product)?;
            if error != 0.0 {
                self.add_finite(error)?;
            }
        }
        Ok(())
    }

    /// Adds the exact sum `other` holds (combining partial aggregates).
    pub fn merge(&mut self, other: &ExactFloatSum) -> Result<(), FloatOverflow> {
        for &partial in &other.partials {
            self.add_finite(partial)?;
        }
        self.nan += other.nan;
        self.positive_infinity += other.positive_infinity;
        self.negative_infinity += other.negative_infinity;
        Ok(())
    }

    /// How many partials the sum holds now (for memory estimates).
    pub fn partials_len(&self) -> usize {
        self.partials.len()
    }

    fn add_finite(&mut self, mut x: f64) -> Result<(), FloatOverflow> {
        let mut kept = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let high = x + y;
            if !high.is_finite() {
                return Err(FloatOverflow);
            }
            let low = y - (high - x);
            if low != 0.0 {
                self.partials[kept] = low;
                kept += 1;
            }
            x = high;
        }
        self.partials.truncate(kept);
        if x != 0.0 {
            self.partials.push(x);
        }
        Ok(())
    }

    /// The sum, rounded once to the nearest double (ties to even). NaN while a NaN, or both
    /// infinities, are in it; an infinity while one is.
    pub fn value(&self) -> f64 {
        if self.nan != 0 || (self.positive_infinity != 0 && self.negative_infinity != 0) {
            return f64::NAN;
        }
        if self.positive_infinity != 0 {
            return f64::INFINITY;
        }
        if self.negative_infinity != 0 {
            return f64::NEG_INFINITY;
        }
        let partials = &self.partials;
        let Some((&top, _)) = partials.split_last() else {
            return 0.0;
        };
        // Add from the top down until a sum is inexact; then the remaining partials can only
        // decide a tie, which the correction below settles as round-half-even would.
        let mut high = top;
        let mut low = 0.0;
        let mut n = partials.len() - 1;
        while n > 0 {
            n -= 1;
            let x = high;
            let y = partials[n];
            high = x + y;
            low = y - (high - x);
            if low != 0.0 {
                break;
            }
        }
        if n > 0 && ((low < 0.0 && partials[n - 1] < 0.0) || (low > 0.0 && partials[n - 1] > 0.0)) {
            let y = low * 2.0;
            let x = high + y;
            if y == x - high {
                high = x;
            }
        }
        high
    }

    /// Appends the sum to `out` (what [`ExactFloatSum::read`] reads back).
    pub fn write(&self, out: &mut Vec<u8>) {
        let specials = self.nan != 0 || self.positive_infinity != 0 || self.negative_infinity != 0;
        // At most ~40 partials (the exponent range over 53 bits): the count fits in 7 bits.
        out.push(self.partials.len() as u8 | if specials { 0x80 } else { 0 });
        for partial in &self.partials {
            out.extend_from_slice(&partial.to_le_bytes());
        }
        if specials {
            for count in [self.nan, self.positive_infinity, self.negative_infinity] {
                out.extend_from_slice(&count.to_le_bytes());
            }
        }
    }

    /// Reads what [`ExactFloatSum::write`] wrote from the front of `bytes`, advancing it.
    pub fn read(bytes: &mut &[u8]) -> Option<ExactFloatSum> {
        let (&head, rest) = bytes.split_first()?;
        *bytes = rest;
        let mut eight = || -> Option<[u8; 8]> {
            let (chunk, rest) = bytes.split_first_chunk::<8>()?;
            *bytes = rest;
            Some(*chunk)
        };
        let mut sum = ExactFloatSum::default();
        for _ in 0..(head & 0x7f) {
            sum.partials.push(f64::from_le_bytes(eight()?));
        }
        if head & 0x80 != 0 {
            sum.nan = i64::from_le_bytes(eight()?);
            sum.positive_infinity = i64::from_le_bytes(eight()?);
            sum.negative_infinity = i64::from_le_bytes(eight()?);
        }
        Some(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum_of(values: &[(f64, i64)]) -> ExactFloatSum {
        let mut sum = ExactFloatSum::default();
        for &(value, weight) in values {
            sum.add_weighted(value, weight).unwrap();
        }
        sum
    }

    #[test]
    fn taking_out_what_was_put_in_leaves_the_exact_rest() {
        let sum = sum_of(&[
            (0.1, 1),
            (0.2, 1),
            (0.3, 1),
            (1e17, 1),
            (0.1, -1),
            (0.3, -1),
            (1e17, -1),
        ]);
        assert_eq!(sum.value(), 0.2);
        let sum = sum_of(&[(1e17, 1), (1.0, 1), (1.0, 1), (1e17, -1)]);
        assert_eq!(sum.value(), 2.0);
        assert_eq!(sum_of(&[(0.1, 3), (0.1, -3)]), ExactFloatSum::default());
    }

    #[test]
    fn the_value_is_the_exact_sum_rounded_once() {
        // Plain addition gives 0.6000000000000001.
        assert_eq!(sum_of(&[(0.1, 1), (0.2, 1), (0.3, 1)]).value(), 0.6);
        // A tie decided by a partial far below the others (Python's fsum example).
        assert_eq!(
            sum_of(&[(1e-16, 1), (1.0, 1), (1e16, 1)]).value(),
            10000000000000002.0
        );
        // Weighted: three copies of the double 0.1 sum to just above 0.3 + 1/2 ulp.
        assert_eq!(sum_of(&[(0.1, 3)]).value(), 0.30000000000000004);
        assert_eq!(sum_of(&[(0.1, 10)]).value(), 1.0);
        assert_eq!(ExactFloatSum::default().value(), 0.0);
    }

    #[test]
    fn order_does_not_matter() {
        let values = [1e308, 1.0, -1e308, 3.5e-300, 12345.678, -0.1, 1e-320];
        let forward = sum_of(&values.map(|v| (v, 1)));
        let mut reversed = values;
        reversed.reverse();
        let backward = sum_of(&reversed.map(|v| (v, 1)));
        assert_eq!(forward.value(), backward.value());
        assert_eq!(forward.value(), 12346.578);
    }

    #[test]
    fn special_values_leave_as_they_came() {
        let mut sum = sum_of(&[(1.5, 1), (f64::NAN, 1)]);
        assert!(sum.value().is_nan());
        sum.add_weighted(f64::NAN, -1).unwrap();
        assert_eq!(sum.value(), 1.5);
        sum.add_weighted(f64::INFINITY, 1).unwrap();
        assert_eq!(sum.value(), f64::INFINITY);
        sum.add_weighted(f64::NEG_INFINITY, 1).unwrap();
        assert!(sum.value().is_nan());
        sum.add_weighted(f64::INFINITY, -1).unwrap();
        assert_eq!(sum.value(), f64::NEG_INFINITY);
        sum.add_weighted(f64::NEG_INFINITY, -1).unwrap();
        assert_eq!(sum.value(), 1.5);
    }

    #[test]
    fn finite_values_past_the_largest_double_overflow() {
        let mut sum = sum_of(&[(f64::MAX, 1)]);
        assert_eq!(sum.add_weighted(f64::MAX, 1), Err(FloatOverflow));
        assert_eq!(
            ExactFloatSum::default().add_weighted(f64::MAX, 2),
            Err(FloatOverflow)
        );
    }

    #[test]
    fn write_and_read_round_trip() {
        for sum in [
            ExactFloatSum::default(),
            sum_of(&[(0.1, 1), (1e17, 1), (3e-20, 1)]),
            sum_of(&[(2.0, 1), (f64::NAN, 2), (f64::NEG_INFINITY, 1)]),
        ] {
            let mut bytes = Vec::new();
            sum.write(&mut bytes);
            bytes.push(0xee);
            let mut rest = bytes.as_slice();
            assert_eq!(ExactFloatSum::read(&mut rest), Some(sum));
            assert_eq!(rest, [0xee]);
        }
        assert_eq!(ExactFloatSum::read(&mut [3u8, 0, 0].as_slice()), None);
    }
}
