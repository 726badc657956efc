//! `interval` text input as Postgres reads it, so every form Postgres prints reads back:
//! the `postgres` style (`1 year 2 mons 3 days 04:05:06.5`, `-1 days +01:00:00`), the
//! `postgres_verbose` style (`@ 1 day 2 hours ago`), SQL-standard fields (`1-2`, `3 4:05:06`)
//! and ISO 8601 durations (`P1Y2M3DT4H5M6.5S`), plus unit spellings and fractions (`1.5
//! hours`, `90 min`, `2w`).
//!
//! Arrow's interval parser (what DataFusion uses) knows `<number> <unit>` pairs only, so a
//! value Runnel itself printed, a timedelta a driver binds, or a COPY of an interval column
//! would not read back. Fractions carry down as in Postgres: a fraction of a year becomes whole
//! months, a fraction of a month 30-day days and then time, a fraction of a day time.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, IntervalMonthDayNanoArray};
use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano};

use crate::{Result, RunnelError, SqlState};

const MICROS_PER_SECOND: i128 = 1_000_000;
const MICROS_PER_DAY: f64 = 86_400_000_000.0;

/// An interval being read, in wide integers so overflow is found once at the end.
#[derive(Debug, Default)]
struct Parts {
    months: i128,
    days: i128,
    micros: i128,
}

impl Parts {
    /// Adds `value` of `unit`: `whole` and `fraction` have the same sign.
    fn add(&mut self, unit: Unit, whole: i128, fraction: f64) {
        match unit {
            Unit::Millennium => self.add_months(whole * 12_000, fraction * 12_000.0),
            Unit::Century => self.add_months(whole * 1_200, fraction * 1_200.0),
            Unit::Decade => self.add_months(whole * 120, fraction * 120.0),
            Unit::Year => self.add_months(whole * 12, fraction * 12.0),
            Unit::Month => {
                self.months += whole;
                self.add_fraction_of_days(fraction * 30.0);
            }
            Unit::Week => {
                self.days += whole * 7;
                self.add_fraction_of_days(fraction * 7.0);
            }
            Unit::Day => {
                self.days += whole;
                self.micros += (fraction * MICROS_PER_DAY).round() as i128;
            }
            Unit::Micros(per_unit) => {
                self.micros += whole * per_unit + (fraction * per_unit as f64).round() as i128;
            }
        }
    }

    /// Whole months only: Postgres rounds a fraction of a year to months.
    fn add_months(&mut self, whole: i128, fraction_months: f64) {
        self.months += whole + fraction_months.round() as i128;
    }

    /// `days` (possibly fractional) as whole days plus time.
    fn add_fraction_of_days(&mut self, days: f64) {
        let whole = days.trunc();
        self.days += whole as i128;
        self.micros += ((days - whole) * MICROS_PER_DAY).round() as i128;
    }

    fn negate(&mut self) {
        self.months = -self.months;
        self.days = -self.days;
        self.micros = -self.micros;
    }

    fn finish(self) -> Option<IntervalMonthDayNano> {
        Some(IntervalMonthDayNano::new(
            i32::try_from(self.months).ok()?,
            i32::try_from(self.days).ok()?,
            i64::try_from(self.micros.checked_mul(1_000)?).ok()?,
        ))
    }
}

#[derive(Debug, Clone, Copy)]
enum Unit {
    Millennium,
    Century,
    Decade,
    Year,
    Month,
    Week,
    Day,
    /// A unit of fixed length, in microseconds.
    Micros(i128),
}

/// The unit a word names, with the spellings and abbreviations Postgres accepts.
fn unit(word: &str) -> Option<Unit> {
    Some(match word {
        "millennium" | "millennia" | "millenniums" | "mil" | "mils" => Unit::Millennium,
        "century" | "centuries" | "cent" | "c" => Unit::Century,
        "decade" | "decades" | "dec" | "decs" => Unit::Decade,
        "year" | "years" | "yr" | "yrs" | "y" => Unit::Year,
        "month" | "months" | "mon" | "mons" => Unit::Month,
        "week" | "weeks" | "w" => Unit::Week,
        "day" | "days" | "d" => Unit::Day,
        "hour" | "hours" | "hr" | "hrs" | "h" => Unit::Micros(3_600 * MICROS_PER_SECOND),
        "minute" | "minutes" | "min" | "mins" | "m" => Unit::Micros(60 * MICROS_PER_SECOND),
        "second" | "seconds" | "sec" | "secs" | "s" => Unit::Micros(MICROS_PER_SECOND),
        "millisecond" | "milliseconds" | "msec" | "msecs" | "ms" => Unit::Micros(1_000),
        "microsecond" | "microseconds" | "usec" | "usecs" | "us" => Unit::Micros(1),
        _ => return None,
    })
}

/// A signed decimal number split into its whole part and its fraction (same sign).
fn number(text: &str) -> Option<(i128, f64)> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let fraction: f64 = if fraction.is_empty() {
        0.0
    } else {
        format!("0.{fraction}").parse().ok()?
    };
    Some(if negative {
        (-whole, -fraction)
    } else {
        (whole, fraction)
    })
}

/// `[+-]H:M`, `[+-]H:M:S[.f]` or `[+-]M:S.f` as microseconds.
fn clock(text: &str) -> Option<i128> {
    let (negative, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let fields: Vec<&str> = body.split(':').collect();
    let whole = |s: &str| -> Option<i128> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let seconds = |s: &str| -> Option<i128> {
        let (whole_part, fraction) = number(s)?;
        (whole_part >= 0 && !s.starts_with(['+', '-'])).then_some(())?;
        Some(whole_part * MICROS_PER_SECOND + (fraction * 1e6).round() as i128)
    };
    let micros = match fields.as_slice() {
        [minutes, secs] if secs.contains('.') => {
            whole(minutes)? * 60 * MICROS_PER_SECOND + seconds(secs)?
        }
        [hours, minutes] => (whole(hours)? * 60 + whole(minutes)?) * 60 * MICROS_PER_SECOND,
        [hours, minutes, secs] => {
            (whole(hours)? * 60 + whole(minutes)?) * 60 * MICROS_PER_SECOND + seconds(secs)?
        }
        _ => return None,
    };
    Some(if negative { -micros } else { micros })
}

/// `[+-]Y-M`, the SQL-standard year-month field.
fn year_month(text: &str) -> Option<i128> {
    let (negative, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (years, months) = body.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(years) || !digits(months) {
        return None;
    }
    let months = years.parse::<i128>().ok()? * 12 + months.parse::<i128>().ok()?;
    Some(if negative { -months } else { months })
}

/// Splits the text into fields: whitespace separates them, and a run of letters after a
/// number is a field of its own (`1day`, `2h30m`).
fn fields(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for word in text.split_whitespace() {
        let mut start = 0;
        let bytes = word.as_bytes();
        for i in 1..bytes.len() {
            let letter = bytes[i].is_ascii_alphabetic();
            if letter != bytes[i - 1].is_ascii_alphabetic() {
                out.push(&word[start..i]);
                start = i;
            }
        }
        out.push(&word[start..]);
    }
    out
}

/// Reads `text` as Postgres reads `interval` input; `None` when it is not valid.
pub fn parse_interval(text: &str) -> Option<IntervalMonthDayNano> {
    let text = text.trim().to_ascii_lowercase();
    if let Some(iso) = text.strip_prefix('p') {
        return parse_iso8601(iso);
    }
    let fields = fields(&text);
    let mut parts = Parts::default();
    let mut ago = false;
    let mut seen_any = false;
    let mut i = 0;
    if fields.first() == Some(&"@") {
        i = 1;
    }
    while i < fields.len() {
        let field = fields[i];
        if field == "ago" {
            // `ago` comes last and at most once.
            if ago || i + 1 != fields.len() || !seen_any {
                return None;
            }
            ago = true;
            i += 1;
            continue;
        }
        seen_any = true;
        if field.contains(':') {
            parts.micros += clock(field)?;
            i += 1;
            continue;
        }
        if let Some(months) = year_month(field) {
            parts.months += months;
            i += 1;
            continue;
        }
        let (whole, fraction) = number(field)?;
        match fields.get(i + 1).and_then(|next| unit(next)) {
            Some(named) => {
                parts.add(named, whole, fraction);
                i += 2;
            }
            // A number before a time of day is a count of days (`3 04:05:06`); a number
            // without a unit otherwise counts seconds, as in Postgres.
            None if fields.get(i + 1).is_some_and(|next| next.contains(':')) => {
                parts.add(Unit::Day, whole, fraction);
                i += 1;
            }
            None if fields.get(i + 1).is_none_or(|next| *next == "ago") => {
                parts.add(Unit::Micros(MICROS_PER_SECOND), whole, fraction);
                i += 1;
            }
            None => return None,
        }
    }
    if !seen_any {
        return None;
    }
    if ago {
        parts.negate();
    }
    parts.finish()
}

/// ISO 8601 "format with designators" after the `P`: `1Y2M3W4DT5H6M7.5S`, any part optional,
/// numbers signed and fractional.
fn parse_iso8601(text: &str) -> Option<IntervalMonthDayNano> {
    let mut parts = Parts::default();
    let mut in_time = false;
    let mut start = 0;
    let mut any = false;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+') {
            continue;
        }
        if b == b't' {
            if in_time || start != i {
                return None;
            }
            in_time = true;
            start = i + 1;
            continue;
        }
        let (whole, fraction) = number(&text[start..i])?;
        let unit = match (b, in_time) {
            (b'y', false) => Unit::Year,
            (b'm', false) => Unit::Month,
            (b'w', false) => Unit::Week,
            (b'd', false) => Unit::Day,
            (b'h', true) => Unit::Micros(3_600 * MICROS_PER_SECOND),
            (b'm', true) => Unit::Micros(60 * MICROS_PER_SECOND),
            (b's', true) => Unit::Micros(MICROS_PER_SECOND),
            _ => return None,
        };
        parts.add(unit, whole, fraction);
        any = true;
        start = i + 1;
    }
    (any && start == bytes.len()).then_some(())?;
    parts.finish()
}

fn invalid(text: &str) -> RunnelError {
    RunnelError::execution(
        SqlState::INVALID_DATETIME_FORMAT,
        format!("invalid input syntax for type interval: \"{text}\""),
    )
}

/// [`parse_interval`] with Postgres's error (22007) for text that is not an interval.
pub fn interval_from_text(text: &str) -> Result<IntervalMonthDayNano> {
    parse_interval(text).ok_or_else(|| invalid(text))
}

/// A column of interval text as `interval` values (NULL stays NULL).
pub fn intervals_from_text(text: &dyn Array) -> Result<ArrayRef> {
    let strings = datafusion::arrow::compute::cast(text, &DataType::Utf8)?;
    let strings = strings.as_string::<i32>();
    let values = strings
        .iter()
        .map(|value| value.map(interval_from_text).transpose())
        .collect::<Result<IntervalMonthDayNanoArray>>()?;
    Ok(Arc::new(values))
}

/// An interval as text Arrow's own parser (and so DataFusion's `INTERVAL '...'` literal)
/// reads exactly: `<months> months <days> days <microseconds> microseconds`.
pub fn arrow_interval_text(interval: IntervalMonthDayNano) -> String {
    format!(
        "{} months {} days {} microseconds",
        interval.months,
        interval.days,
        interval.nanoseconds / 1_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(text: &str) -> Option<(i32, i32, i64)> {
        parse_interval(text).map(|v| (v.months, v.days, v.nanoseconds / 1_000))
    }

    const HOUR: i64 = 3_600_000_000;

    #[test]
    fn postgres_output_reads_back() {
        assert_eq!(
            iv("1 year 2 mons 3 days 04:05:06.5"),
            Some((14, 3, 4 * HOUR + 5 * 60_000_000 + 6_500_000))
        );
        assert_eq!(iv("-1 days +01:00:00"), Some((0, -1, HOUR)));
        assert_eq!(iv("36:00:00"), Some((0, 0, 36 * HOUR)));
        assert_eq!(iv("00:00:00"), Some((0, 0, 0)));
        assert_eq!(iv("-00:00:00.000005"), Some((0, 0, -5)));
        assert_eq!(iv("-1 years -2 mons"), Some((-14, 0, 0)));
        assert_eq!(iv("3 mons 4 days 00:00:05"), Some((3, 4, 5_000_000)));
    }

    #[test]
    fn verbose_sql_standard_and_iso() {
        assert_eq!(iv("@ 1 day 2 hours ago"), Some((0, -1, -2 * HOUR)));
        assert_eq!(iv("@ 1 year 2 mons 3 secs"), Some((14, 0, 3_000_000)));
        assert_eq!(iv("1-2"), Some((14, 0, 0)));
        assert_eq!(iv("3 4:05:06"), Some((0, 3, 4 * HOUR + 306_000_000)));
        assert_eq!(
            iv("+1-2 -3 +4:05:06"),
            Some((14, -3, 4 * HOUR + 306_000_000))
        );
        assert_eq!(
            iv("P1Y2M3DT4H5M6.5S"),
            Some((14, 3, 4 * HOUR + 306_500_000))
        );
        assert_eq!(iv("PT0S"), Some((0, 0, 0)));
        assert_eq!(iv("P-1Y-2M"), Some((-14, 0, 0)));
        assert_eq!(iv("P2W"), Some((0, 14, 0)));
    }

    #[test]
    fn units_numbers_and_fractions() {
        assert_eq!(iv("90 minutes"), Some((0, 0, 90 * 60_000_000)));
        assert_eq!(iv("1.5 hours"), Some((0, 0, 3 * HOUR / 2)));
        assert_eq!(iv("1day 2h"), Some((0, 1, 2 * HOUR)));
        assert_eq!(iv("1.5 years"), Some((18, 0, 0)));
        assert_eq!(iv("1.5 months"), Some((1, 15, 0)));
        assert_eq!(iv("1.5 days"), Some((0, 1, 12 * HOUR)));
        assert_eq!(iv("10"), Some((0, 0, 10_000_000)));
        assert_eq!(iv("2 weeks"), Some((0, 14, 0)));
        assert_eq!(iv("1 century"), Some((1_200, 0, 0)));
        assert_eq!(iv("250 ms"), Some((0, 0, 250_000)));
        assert_eq!(iv("05:06.5"), Some((0, 0, 306_500_000)));
        assert_eq!(iv("05:06"), Some((0, 0, 5 * HOUR + 6 * 60_000_000)));
    }

    #[test]
    fn not_intervals() {
        for text in [
            "",
            "ago",
            "1 fortnight",
            "1 day ago 2",
            "P",
            "P1H",
            "1:2:3:4",
            "x",
            "1 2",
        ] {
            assert_eq!(iv(text), None, "{text}");
        }
        assert_eq!(iv("2147483648 mons"), None);
    }

    #[test]
    fn arrow_text_is_exact() {
        let value = parse_interval("-1 years -2 mons +3 days -00:00:00.000005").unwrap();
        assert_eq!(
            arrow_interval_text(value),
            "-14 months 3 days -5 microseconds"
        );
    }
}
