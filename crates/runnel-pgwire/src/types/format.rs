//! Postgres text output of single values (floats, dates, timestamps, intervals, numerics,
//! bytea) and the binary `numeric` format, all appended to a caller's buffer without allocating.

use std::fmt::{self, Display, LowerExp};
use std::io::Write as _;

use super::style::{DateOrder, DateStyle, IntervalStyle};

/// Microseconds in a day.
pub(crate) const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (Postgres' epoch).
pub(crate) const PG_EPOCH_DAYS: i64 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
pub(crate) const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS * MICROS_PER_DAY;

/// Appends formatted text to `buf`.
pub(crate) fn push_fmt(buf: &mut Vec<u8>, args: fmt::Arguments<'_>) {
    buf.write_fmt(args)
        .expect("writing to a Vec<u8> cannot fail: it grows as needed");
}

/// Appends `value` with its `Display` form.
pub(crate) fn push_display(buf: &mut Vec<u8>, value: impl Display) {
    push_fmt(buf, format_args!("{value}"));
}

/// `float8` output as in Postgres 12+: the shortest text that reads back as the same value,
/// in exponent form when the decimal exponent is below -4 or at least 15.
pub fn write_float8(buf: &mut Vec<u8>, value: f64) {
    write_float(
        buf,
        value,
        value.is_nan(),
        value.is_infinite(),
        value < 0.0,
        15,
    );
}

/// `float4` output as in Postgres 12+: like [`write_float8`] with shortest `f32` digits and
/// exponent form from a decimal exponent of 6 on.
pub fn write_float4(buf: &mut Vec<u8>, value: f32) {
    write_float(
        buf,
        value,
        value.is_nan(),
        value.is_infinite(),
        value < 0.0,
        6,
    );
}

fn write_float<F: Display + LowerExp>(
    buf: &mut Vec<u8>,
    value: F,
    nan: bool,
    infinite: bool,
    negative: bool,
    fixed_below: i32,
) {
    if nan {
        buf.extend_from_slice(b"NaN");
        return;
    }
    if infinite {
        buf.extend_from_slice(if negative { b"-Infinity" } else { b"Infinity" });
        return;
    }
    // Rust's `{:e}` gives the shortest round-trip digits as `d.ddde<exp>`.
    let mut tmp = [0u8; 64];
    let len = {
        let mut cursor = &mut tmp[..];
        if write!(cursor, "{value:e}").is_err() {
            push_display(buf, value);
            return;
        }
        64 - cursor.len()
    };
    let sci = &tmp[..len];
    let Some(e_pos) = sci.iter().rposition(|&b| b == b'e') else {
        push_display(buf, value);
        return;
    };
    let exponent = std::str::from_utf8(&sci[e_pos + 1..])
        .ok()
        .and_then(|s| s.parse::<i32>().ok())
        .unwrap_or(0);
    if (-4..fixed_below).contains(&exponent) {
        push_display(buf, value);
    } else {
        buf.extend_from_slice(&sci[..e_pos]);
        buf.push(b'e');
        buf.push(if exponent < 0 { b'-' } else { b'+' });
        push_fmt(buf, format_args!("{:02}", exponent.unsigned_abs()));
    }
}

/// Proleptic Gregorian date of a day number counted from 1970-01-01 (astronomical years: year
/// 0 is 1 BC).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // `month` is in 1..=12 and `day` in 1..=31 by construction.
    (year, month as u32, day as u32)
}

/// Writes `YYYY-MM-DD` for a day counted from 1970-01-01; returns whether the date is BC,
/// in which case the caller appends ` BC` after whatever follows the date.
fn write_ymd(buf: &mut Vec<u8>, days: i64) -> bool {
    let (year, month, day) = civil_from_days(days);
    let bc = year <= 0;
    let year = if bc { 1 - year } else { year };
    push_fmt(buf, format_args!("{year:04}-{month:02}-{day:02}"));
    bc
}

/// `date` output (ISO style) for a day counted from 1970-01-01.
pub fn write_date(buf: &mut Vec<u8>, days: i64) {
    if write_ymd(buf, days) {
        buf.extend_from_slice(b" BC");
    }
}

/// Appends `.ffffff` with trailing zeros trimmed, or nothing for a zero fraction.
fn write_fraction(buf: &mut Vec<u8>, micros: u64) {
    if micros == 0 {
        return;
    }
    let mut digits = micros;
    let mut width = 6;
    while digits.is_multiple_of(10) {
        digits /= 10;
        width -= 1;
    }
    push_fmt(buf, format_args!(".{digits:0width$}"));
}

/// `HH:MM:SS[.ffffff]` for a non-negative number of microseconds (hours may exceed 23).
fn write_clock(buf: &mut Vec<u8>, micros: u64) {
    let seconds = micros / 1_000_000;
    push_fmt(
        buf,
        format_args!(
            "{:02}:{:02}:{:02}",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        ),
    );
    write_fraction(buf, micros % 1_000_000);
}

/// `time` output for microseconds since midnight.
pub fn write_time(buf: &mut Vec<u8>, micros: i64) {
    if micros < 0 {
        buf.push(b'-');
    }
    write_clock(buf, micros.unsigned_abs());
}

/// `timestamp` output (`2026-06-10 12:34:56.123456`) for microseconds since 1970-01-01; with
/// `utc_offset` it is `timestamptz` output rendered in UTC (`...+00`).
pub fn write_timestamp(buf: &mut Vec<u8>, micros: i64, utc_offset: bool) {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let bc = write_ymd(buf, days);
    buf.push(b' ');
    write_clock(buf, micros.rem_euclid(MICROS_PER_DAY).unsigned_abs());
    if utc_offset {
        buf.extend_from_slice(b"+00");
    }
    if bc {
        buf.extend_from_slice(b" BC");
    }
}

/// Reads `bytea` text input as Postgres does: `\\x` followed by pairs of hex digits
/// (whitespace between pairs allowed), or the escape format (`\\\\` is a backslash, `\\ooo`
/// an octal byte, anything else itself). `None` when it is not valid.
pub fn parse_bytea(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if let Some(hex) = text.strip_prefix("\\x") {
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if !digits.len().is_multiple_of(2) {
            return None;
        }
        let value = |d: u8| (d as char).to_digit(16).map(|v| v as u8);
        return digits
            .chunks(2)
            .map(|pair| Some(value(pair[0])? << 4 | value(pair[1])?))
            .collect();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let octal = bytes.get(i + 1..i + 4)?;
            if !octal.iter().all(|b| (b'0'..=b'7').contains(b)) || octal[0] > b'3' {
                return None;
            }
            out.push((octal[0] - b'0') << 6 | (octal[1] - b'0') << 3 | (octal[2] - b'0'));
            i += 4;
        }
    }
    Some(out)
}

/// `timestamptz` output in a zone `offset_seconds` east of UTC: the local date and time,
/// then the offset as Postgres prints it (`+02`, `+05:30`, `-00:25:21`).
pub fn write_timestamptz(buf: &mut Vec<u8>, utc_micros: i64, offset_seconds: i32) {
    let local = utc_micros.saturating_add(i64::from(offset_seconds) * 1_000_000);
    let days = local.div_euclid(MICROS_PER_DAY);
    let bc = write_ymd(buf, days);
    buf.push(b' ');
    write_clock(buf, local.rem_euclid(MICROS_PER_DAY).unsigned_abs());
    write_offset(buf, offset_seconds);
    if bc {
        buf.extend_from_slice(b" BC");
    }
}

/// A UTC offset as Postgres prints it: `+02`, `+05:30`, `-00:25:21`.
fn write_offset(buf: &mut Vec<u8>, offset_seconds: i32) {
    buf.push(if offset_seconds < 0 { b'-' } else { b'+' });
    let offset = offset_seconds.unsigned_abs();
    push_fmt(buf, format_args!("{:02}", offset / 3600));
    if !offset.is_multiple_of(3600) {
        push_fmt(buf, format_args!(":{:02}", offset / 60 % 60));
        if !offset.is_multiple_of(60) {
            push_fmt(buf, format_args!(":{:02}", offset % 60));
        }
    }
}

/// How a `timestamptz` value's zone is written in the SQL, Postgres and German styles.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ZoneLabel<'a> {
    /// A `timestamp` without time zone.
    None,
    /// The zone's abbreviation at that instant (`CET`, `UTC`).
    Abbreviation(&'a str),
    /// A zone without abbreviation: its offset.
    Offset(i32),
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Year, month, day as Postgres prints them (the year of a BC date counted back from 1) and
/// whether the date is BC.
fn printed_date(days: i64) -> (i64, u32, u32, bool) {
    let (year, month, day) = civil_from_days(days);
    let bc = year <= 0;
    (if bc { 1 - year } else { year }, month, day, bc)
}

/// `date` output in a DateStyle other than ISO (EncodeDateOnly in Postgres): `03/01/2026`
/// (SQL), `01.03.2026` (German), `03-01-2026` (Postgres); day first with DMY.
pub(crate) fn write_date_styled(buf: &mut Vec<u8>, days: i64, style: DateStyle, order: DateOrder) {
    let (year, month, day, bc) = printed_date(days);
    let day_first = order == DateOrder::Dmy;
    match style {
        DateStyle::Iso => {
            write_date(buf, days);
            return;
        }
        DateStyle::German => push_fmt(buf, format_args!("{day:02}.{month:02}.{year:04}")),
        DateStyle::Sql | DateStyle::Postgres => {
            let separator = if style == DateStyle::Sql { '/' } else { '-' };
            let (first, second) = if day_first {
                (day, month)
            } else {
                (month, day)
            };
            push_fmt(
                buf,
                format_args!("{first:02}{separator}{second:02}{separator}{year:04}"),
            );
        }
    }
    if bc {
        buf.extend_from_slice(b" BC");
    }
}

/// `timestamp`/`timestamptz` output in a DateStyle other than ISO (EncodeDateTime in
/// Postgres) for a local time in microseconds since 1970-01-01: `03/01/2026 12:00:00 CET`
/// (SQL), `01.03.2026 12:00:00 CET` (German), `Sun Mar 01 12:00:00 2026 CET` (Postgres).
pub(crate) fn write_timestamp_styled(
    buf: &mut Vec<u8>,
    local_micros: i64,
    zone: ZoneLabel<'_>,
    style: DateStyle,
    order: DateOrder,
) {
    let days = local_micros.div_euclid(MICROS_PER_DAY);
    let time = local_micros.rem_euclid(MICROS_PER_DAY).unsigned_abs();
    let (year, month, day, bc) = printed_date(days);
    let month_name = MONTHS[month as usize - 1];
    match style {
        DateStyle::Iso => {
            write_timestamp(buf, local_micros, false);
            if let ZoneLabel::Offset(offset) = zone {
                write_offset(buf, offset);
            }
            return;
        }
        DateStyle::Sql | DateStyle::German => {
            write_date_styled(buf, days, style, order);
            if bc {
                buf.truncate(buf.len() - 3);
            }
            buf.push(b' ');
            write_clock(buf, time);
            match zone {
                ZoneLabel::None => {}
                ZoneLabel::Abbreviation(name) => push_fmt(buf, format_args!(" {name}")),
                ZoneLabel::Offset(offset) => write_offset(buf, offset),
            }
        }
        DateStyle::Postgres => {
            let weekday = WEEKDAYS[(days + 4).rem_euclid(7) as usize];
            if order == DateOrder::Dmy {
                push_fmt(buf, format_args!("{weekday} {day:02} {month_name} "));
            } else {
                push_fmt(buf, format_args!("{weekday} {month_name} {day:02} "));
            }
            write_clock(buf, time);
            push_fmt(buf, format_args!(" {year:04}"));
            match zone {
                ZoneLabel::None => {}
                ZoneLabel::Abbreviation(name) => push_fmt(buf, format_args!(" {name}")),
                ZoneLabel::Offset(offset) => {
                    buf.push(b' ');
                    write_offset(buf, offset);
                }
            }
        }
    }
    if bc {
        buf.extend_from_slice(b" BC");
    }
}

/// Float output with `extra_float_digits` of 0 or less, as C's `%.*g`: `digits` significant
/// digits, trailing zeros removed, exponent form below 1e-4 or from 1e`digits` on.
pub(crate) fn write_float_digits(buf: &mut Vec<u8>, value: f64, digits: i32) {
    if value.is_nan() {
        buf.extend_from_slice(b"NaN");
        return;
    }
    if value.is_infinite() {
        buf.extend_from_slice(if value < 0.0 {
            b"-Infinity"
        } else {
            b"Infinity"
        });
        return;
    }
    let precision = digits.max(1);
    let scientific = format!("{:.*e}", (precision - 1) as usize, value);
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        push_display(buf, value);
        return;
    };
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let trim = |text: &str| -> String {
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text.to_string()
        }
    };
    if (-4..precision).contains(&exponent) {
        let decimals = (precision - 1 - exponent).max(0) as usize;
        buf.extend_from_slice(trim(&format!("{value:.decimals$}")).as_bytes());
    } else {
        buf.extend_from_slice(trim(mantissa).as_bytes());
        buf.push(b'e');
        buf.push(if exponent < 0 { b'-' } else { b'+' });
        push_fmt(buf, format_args!("{:02}", exponent.unsigned_abs()));
    }
}

/// `interval` output in any IntervalStyle (EncodeInterval in Postgres).
pub(crate) fn write_interval_styled(
    buf: &mut Vec<u8>,
    months: i32,
    days: i32,
    micros: i64,
    style: IntervalStyle,
) {
    let (year, mon) = (i64::from(months / 12), i64::from(months % 12));
    let mday = i64::from(days);
    let hour = micros / 3_600_000_000;
    let min = micros / 60_000_000 % 60;
    let sec = micros / 1_000_000 % 60;
    let fsec = micros % 1_000_000;
    match style {
        IntervalStyle::Postgres => write_interval(buf, months, days, micros),
        IntervalStyle::SqlStandard => {
            let has_negative = [year, mon, mday, hour, min, sec, fsec]
                .iter()
                .any(|v| *v < 0);
            let has_positive = [year, mon, mday, hour, min, sec, fsec]
                .iter()
                .any(|v| *v > 0);
            let has_year_month = year != 0 || mon != 0;
            let has_day_time = mday != 0 || micros != 0;
            // SQL-standard form has one sign for the whole value and either year-month or
            // day-time fields; anything else gets a sign on every field.
            let mixed_signs = has_negative && has_positive;
            let mixed_fields = has_year_month && has_day_time;
            let standard = !(mixed_signs || mixed_fields);
            if !has_negative && !has_positive {
                buf.push(b'0');
                return;
            }
            if has_negative && standard {
                buf.push(b'-');
            }
            let abs = |v: i64| v.unsigned_abs();
            if !standard {
                let year_sign = if year < 0 || mon < 0 { '-' } else { '+' };
                let day_sign = if mday < 0 { '-' } else { '+' };
                let time_sign = if micros < 0 { '-' } else { '+' };
                push_fmt(
                    buf,
                    format_args!(
                        "{year_sign}{}-{} {day_sign}{} {time_sign}{}:{:02}:",
                        abs(year),
                        abs(mon),
                        abs(mday),
                        abs(hour),
                        abs(min)
                    ),
                );
                write_seconds(buf, sec, fsec, true);
            } else if has_year_month {
                push_fmt(buf, format_args!("{}-{}", abs(year), abs(mon)));
            } else if mday != 0 {
                push_fmt(
                    buf,
                    format_args!("{} {}:{:02}:", abs(mday), abs(hour), abs(min)),
                );
                write_seconds(buf, sec, fsec, true);
            } else {
                push_fmt(buf, format_args!("{}:{:02}:", abs(hour), abs(min)));
                write_seconds(buf, sec, fsec, true);
            }
        }
        IntervalStyle::Iso8601 => {
            if months == 0 && days == 0 && micros == 0 {
                buf.extend_from_slice(b"PT0S");
                return;
            }
            buf.push(b'P');
            let part = |buf: &mut Vec<u8>, value: i64, unit: char| {
                if value != 0 {
                    push_fmt(buf, format_args!("{value}{unit}"));
                }
            };
            part(buf, year, 'Y');
            part(buf, mon, 'M');
            part(buf, mday, 'D');
            if micros != 0 {
                buf.push(b'T');
            }
            part(buf, hour, 'H');
            part(buf, min, 'M');
            if sec != 0 || fsec != 0 {
                if sec < 0 || fsec < 0 {
                    buf.push(b'-');
                }
                write_seconds(buf, sec, fsec, false);
                buf.push(b'S');
            }
        }
        IntervalStyle::PostgresVerbose => {
            buf.push(b'@');
            let mut is_zero = true;
            let mut is_before = false;
            let mut part = |buf: &mut Vec<u8>, value: i64, unit: &str| {
                if value == 0 {
                    return;
                }
                let mut value = value;
                if is_zero {
                    is_before = value < 0;
                    value = value.abs();
                } else if is_before {
                    value = -value;
                }
                let plural = if value == 1 { "" } else { "s" };
                push_fmt(buf, format_args!(" {value} {unit}{plural}"));
                is_zero = false;
            };
            part(buf, year, "year");
            part(buf, mon, "mon");
            part(buf, mday, "day");
            part(buf, hour, "hour");
            part(buf, min, "min");
            if sec != 0 || fsec != 0 {
                buf.push(b' ');
                if sec < 0 || (sec == 0 && fsec < 0) {
                    if is_zero {
                        is_before = true;
                    } else if !is_before {
                        buf.push(b'-');
                    }
                } else if is_before {
                    buf.push(b'-');
                }
                write_seconds(buf, sec, fsec, false);
                let plural = if sec.abs() != 1 || fsec != 0 { "s" } else { "" };
                push_fmt(buf, format_args!(" sec{plural}"));
                is_zero = false;
            }
            if is_zero {
                buf.extend_from_slice(b" 0");
            }
            if is_before {
                buf.extend_from_slice(b" ago");
            }
        }
    }
}

/// Seconds and their fraction, without sign (AppendSeconds in Postgres): `06`, `6.5`.
fn write_seconds(buf: &mut Vec<u8>, sec: i64, fsec: i64, fill_zeros: bool) {
    let sec = sec.unsigned_abs();
    if fill_zeros {
        push_fmt(buf, format_args!("{sec:02}"));
    } else {
        push_display(buf, sec);
    }
    write_fraction(buf, fsec.unsigned_abs());
}

/// `interval` output in the `postgres` IntervalStyle, e.g. `1 year 2 mons 3 days 04:05:06.5`,
/// `-1 days +01:00:00`, `00:00:00`.
pub fn write_interval(buf: &mut Vec<u8>, months: i32, days: i32, micros: i64) {
    // Mirrors EncodeInterval/AddPostgresIntPart of Postgres' datetime.c.
    let mut is_zero = true;
    let mut is_before = false;
    let mut part = |buf: &mut Vec<u8>, value: i64, unit: &str| {
        if value == 0 {
            return;
        }
        if !is_zero {
            buf.push(b' ');
        }
        if is_before && value > 0 {
            buf.push(b'+');
        }
        let plural = if value == 1 { "" } else { "s" };
        push_fmt(buf, format_args!("{value} {unit}{plural}"));
        is_before = value < 0;
        is_zero = false;
    };
    part(buf, i64::from(months / 12), "year");
    part(buf, i64::from(months % 12), "mon");
    part(buf, i64::from(days), "day");
    if is_zero || micros != 0 {
        if !is_zero {
            buf.push(b' ');
        }
        if micros < 0 {
            buf.push(b'-');
        } else if is_before {
            buf.push(b'+');
        }
        write_clock(buf, micros.unsigned_abs());
    }
}

/// `numeric` output of an unscaled integer `value` with `scale` digits after the point (a
/// negative scale multiplies by a power of ten).
pub fn write_decimal(buf: &mut Vec<u8>, value: impl Display, scale: i8) {
    let start = buf.len();
    push_display(buf, value);
    let digits_start = if buf.get(start) == Some(&b'-') {
        start + 1
    } else {
        start
    };
    let scale_digits = usize::from(scale.unsigned_abs());
    if scale > 0 {
        let digits = buf.len() - digits_start;
        if digits <= scale_digits {
            let pad = scale_digits + 1 - digits;
            buf.splice(digits_start..digits_start, std::iter::repeat_n(b'0', pad));
        }
        let point = buf.len() - scale_digits;
        buf.insert(point, b'.');
    } else if scale < 0 && &buf[digits_start..] != b"0" {
        buf.extend(std::iter::repeat_n(b'0', scale_digits));
    }
}

/// `bytea` output in hex format: `\x` and two lower-case hex digits per byte.
pub fn write_bytea(buf: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.reserve(2 + 2 * bytes.len());
    buf.extend_from_slice(b"\\x");
    for &b in bytes {
        buf.push(HEX[usize::from(b >> 4)]);
        buf.push(HEX[usize::from(b & 0xf)]);
    }
}

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

/// Appends the binary `numeric` form of a plain decimal text (`-?digits[.digits]`, as written
/// by [`write_decimal`]): ndigits, weight, sign, dscale, then base-10000 digits.
pub(crate) fn numeric_text_to_binary(text: &[u8], out: &mut Vec<u8>) {
    let (negative, unsigned) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let (int_part, frac_part) = match unsigned.iter().position(|&b| b == b'.') {
        Some(point) => (&unsigned[..point], &unsigned[point + 1..]),
        None => (unsigned, &[][..]),
    };
    let int_part = &int_part[int_part.iter().take_while(|&&b| b == b'0').count()..];
    let int_pad = (4 - int_part.len() % 4) % 4;
    let frac_pad = (4 - frac_part.len() % 4) % 4;
    // Weight of the first (possibly all-zero) group.
    let mut weight = i64::try_from(int_part.len().div_ceil(4)).unwrap_or(i64::MAX) - 1;

    let header = out.len();
    out.extend_from_slice(&[0; 8]);
    let mut ndigits = 0usize;
    let mut group = 0u16;
    let mut in_group = 0;
    let mut leading = true;
    let stream = std::iter::repeat_n(b'0', int_pad)
        .chain(int_part.iter().copied())
        .chain(frac_part.iter().copied())
        .chain(std::iter::repeat_n(b'0', frac_pad));
    for digit in stream {
        group = group * 10 + u16::from(digit.wrapping_sub(b'0') % 10);
        in_group += 1;
        if in_group == 4 {
            if leading && group == 0 {
                weight -= 1;
            } else {
                leading = false;
                out.extend_from_slice(&group.to_be_bytes());
                ndigits += 1;
            }
            group = 0;
            in_group = 0;
        }
    }
    while ndigits > 0 && out[out.len() - 2..] == [0, 0] {
        out.truncate(out.len() - 2);
        ndigits -= 1;
    }
    let sign = if ndigits == 0 {
        weight = 0;
        NUMERIC_POS
    } else if negative {
        NUMERIC_NEG
    } else {
        NUMERIC_POS
    };
    let clamp = |n: i64| i16::try_from(n).unwrap_or(if n < 0 { i16::MIN } else { i16::MAX });
    let ndigits = clamp(i64::try_from(ndigits).unwrap_or(i64::MAX));
    let dscale = u16::try_from(frac_part.len()).unwrap_or(u16::MAX);
    out[header..header + 2].copy_from_slice(&ndigits.to_be_bytes());
    out[header + 2..header + 4].copy_from_slice(&clamp(weight).to_be_bytes());
    out[header + 4..header + 6].copy_from_slice(&sign.to_be_bytes());
    out[header + 6..header + 8].copy_from_slice(&dscale.to_be_bytes());
}

/// Text of a binary `numeric` value, or `None` when the bytes are not a valid numeric.
pub(crate) fn numeric_binary_to_text(raw: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*raw.get(2 * i)?, *raw.get(2 * i + 1)?]))
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(1)? as i16);
    let sign = word(2)?;
    let dscale = usize::from(word(3)?);
    if raw.len() != 8 + 2 * ndigits {
        return None;
    }
    match sign {
        NUMERIC_NAN => return Some("NaN".into()),
        NUMERIC_PINF => return Some("Infinity".into()),
        NUMERIC_NINF => return Some("-Infinity".into()),
        NUMERIC_POS | NUMERIC_NEG => {}
        _ => return None,
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        let d = word(4 + i)?;
        if d >= 10_000 {
            return None;
        }
        digits.push(d);
    }
    let digit = |index: i64| -> u16 {
        usize::try_from(index)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut text = Vec::new();
    if sign == NUMERIC_NEG && ndigits > 0 {
        text.push(b'-');
    }
    if weight < 0 {
        text.push(b'0');
    } else {
        for index in 0..=weight {
            if index == 0 {
                push_display(&mut text, digit(index));
            } else {
                push_fmt(&mut text, format_args!("{:04}", digit(index)));
            }
        }
    }
    if dscale > 0 {
        text.push(b'.');
        let frac_start = text.len();
        let mut index = weight + 1;
        while text.len() - frac_start < dscale {
            push_fmt(&mut text, format_args!("{:04}", digit(index)));
            index += 1;
        }
        text.truncate(frac_start + dscale);
    }
    String::from_utf8(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut buf = Vec::new();
        f(&mut buf);
        String::from_utf8(buf).expect("formatters write ASCII")
    }

    /// The examples of Postgres's documentation, "Interval Output Style Examples" (8.5.5).
    #[test]
    fn interval_styles_like_postgres_documents_them() {
        const HMS: i64 = (4 * 3600 + 5 * 60 + 6) * 1_000_000;
        // (months, days, microseconds) and the text in sql_standard, postgres,
        // postgres_verbose and iso_8601.
        type Case = ((i32, i32, i64), [&'static str; 4]);
        let cases: [Case; 3] = [
            (
                (14, 0, 0),
                ["1-2", "1 year 2 mons", "@ 1 year 2 mons", "P1Y2M"],
            ),
            (
                (0, 3, HMS),
                [
                    "3 4:05:06",
                    "3 days 04:05:06",
                    "@ 3 days 4 hours 5 mins 6 secs",
                    "P3DT4H5M6S",
                ],
            ),
            (
                (-14, 3, -HMS),
                [
                    "-1-2 +3 -4:05:06",
                    "-1 years -2 mons +3 days -04:05:06",
                    "@ 1 year 2 mons -3 days 4 hours 5 mins 6 secs ago",
                    "P-1Y-2M3DT-4H-5M-6S",
                ],
            ),
        ];
        let styles = [
            IntervalStyle::SqlStandard,
            IntervalStyle::Postgres,
            IntervalStyle::PostgresVerbose,
            IntervalStyle::Iso8601,
        ];
        for ((months, days, micros), expected) in cases {
            for (style, want) in styles.iter().zip(expected) {
                assert_eq!(
                    text(|b| write_interval_styled(b, months, days, micros, *style)),
                    want,
                    "{style:?}"
                );
            }
        }
        let zero = |style| text(|b| write_interval_styled(b, 0, 0, 0, style));
        assert_eq!(zero(IntervalStyle::SqlStandard), "0");
        assert_eq!(zero(IntervalStyle::PostgresVerbose), "@ 0");
        assert_eq!(zero(IntervalStyle::Iso8601), "PT0S");
        assert_eq!(
            text(|b| write_interval_styled(b, 0, 0, 1_500_000, IntervalStyle::PostgresVerbose)),
            "@ 1.5 secs"
        );
    }

    /// Postgres's documentation, "Date/Time Output" (8.5.2): 1997-12-17 07:37:16 in PST, in
    /// each DateStyle (fractions of a second are printed only when there are some).
    #[test]
    fn date_styles_like_postgres_documents_them() {
        // 1997-12-17 07:37:16 local time, microseconds since 1970-01-01.
        let local = (10_212 * 86_400 + 7 * 3600 + 37 * 60 + 16) * 1_000_000i64;
        let pst = ZoneLabel::Abbreviation("PST");
        let styled = |style, order| text(|b| write_timestamp_styled(b, local, pst, style, order));
        assert_eq!(
            styled(DateStyle::Sql, DateOrder::Mdy),
            "12/17/1997 07:37:16 PST"
        );
        assert_eq!(
            styled(DateStyle::Sql, DateOrder::Dmy),
            "17/12/1997 07:37:16 PST"
        );
        assert_eq!(
            styled(DateStyle::Postgres, DateOrder::Mdy),
            "Wed Dec 17 07:37:16 1997 PST"
        );
        assert_eq!(
            styled(DateStyle::Postgres, DateOrder::Dmy),
            "Wed 17 Dec 07:37:16 1997 PST"
        );
        assert_eq!(
            styled(DateStyle::German, DateOrder::Dmy),
            "17.12.1997 07:37:16 PST"
        );
        assert_eq!(
            text(|b| write_timestamp_styled(
                b,
                local + 500_000,
                ZoneLabel::Offset(-8 * 3600),
                DateStyle::Postgres,
                DateOrder::Mdy
            )),
            "Wed Dec 17 07:37:16.5 1997 -08"
        );
        let date = |style, order| text(|b| write_date_styled(b, 10_212, style, order));
        assert_eq!(date(DateStyle::Sql, DateOrder::Mdy), "12/17/1997");
        assert_eq!(date(DateStyle::Sql, DateOrder::Dmy), "17/12/1997");
        assert_eq!(date(DateStyle::Postgres, DateOrder::Mdy), "12-17-1997");
        assert_eq!(date(DateStyle::German, DateOrder::Dmy), "17.12.1997");
        // 1 BC (year 0): the BC marker goes last.
        let bc_day = -719_528 + 10;
        assert_eq!(
            text(|b| write_date_styled(b, bc_day, DateStyle::Sql, DateOrder::Mdy)),
            "01/11/0001 BC"
        );
    }

    /// `extra_float_digits` of 0 and below: C's `%.*g` with 15 (float8) or 6 (float4) digits
    /// plus the setting, as Postgres 11 and earlier printed floats.
    #[test]
    fn floats_with_fewer_digits() {
        let g = |v: f64, digits| text(|b| write_float_digits(b, v, digits));
        assert_eq!(g(1.0 / 3.0, 15), "0.333333333333333");
        assert_eq!(g(0.1 + 0.2, 15), "0.3");
        assert_eq!(g(1e100, 15), "1e+100");
        assert_eq!(g(123_456_789_012_345_680.0, 15), "1.23456789012346e+17");
        assert_eq!(g(0.0001234, 15), "0.0001234");
        assert_eq!(g(0.00001234, 15), "1.234e-05");
        assert_eq!(g(-2.5, 15), "-2.5");
        assert_eq!(g(100.0, 15), "100");
        assert_eq!(g(f64::from(0.1f32), 6), "0.1");
        assert_eq!(g(1.0 / 3.0, 0), "0.3");
        assert_eq!(g(f64::NAN, 15), "NaN");
        assert_eq!(g(f64::NEG_INFINITY, 15), "-Infinity");
    }

    #[test]
    fn float8_like_postgres() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (std::f64::consts::PI, "3.141592653589793"),
            (1234.5678, "1234.5678"),
            (1e20, "1e+20"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (1e15, "1e+15"),
            (123456789012345.0, "123456789012345"),
            (999999999999999.0, "999999999999999"),
            (1.2345678901234567e16, "1.2345678901234568e+16"),
            (1e100, "1e+100"),
            (-1e-100, "-1e-100"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
        ];
        for &(value, expected) in cases {
            assert_eq!(text(|b| write_float8(b, value)), expected, "{value:e}");
        }
    }

    #[test]
    fn float4_like_postgres() {
        let cases: &[(f32, &str)] = &[
            (0.1, "0.1"),
            (1.5, "1.5"),
            (123456.0, "123456"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (1e-5, "1e-05"),
            (3.4028235e38, "3.4028235e+38"),
            (f32::NAN, "NaN"),
            (f32::NEG_INFINITY, "-Infinity"),
        ];
        for &(value, expected) in cases {
            assert_eq!(text(|b| write_float4(b, value)), expected, "{value:e}");
        }
    }

    #[test]
    fn bytea_text_input() {
        assert_eq!(
            parse_bytea("\\xDEADbeef"),
            Some(vec![0xde, 0xad, 0xbe, 0xef])
        );
        assert_eq!(parse_bytea("\\x de ad"), Some(vec![0xde, 0xad]));
        assert_eq!(parse_bytea("\\xabc"), None);
        assert_eq!(parse_bytea("a\\\\b\\001"), Some(vec![b'a', b'\\', b'b', 1]));
        assert_eq!(parse_bytea("plain"), Some(b"plain".to_vec()));
        assert_eq!(parse_bytea("bad\\9"), None);
    }

    #[test]
    fn timestamps_in_a_zone() {
        let render = |micros: i64, offset: i32| {
            let mut buf = Vec::new();
            write_timestamptz(&mut buf, micros, offset);
            String::from_utf8(buf).unwrap()
        };
        // 2026-06-10 10:00:00 UTC.
        let instant = 1_781_085_600_000_000;
        assert_eq!(render(instant, 7200), "2026-06-10 12:00:00+02");
        assert_eq!(render(instant, -16_200), "2026-06-10 05:30:00-04:30");
        assert_eq!(
            render(instant + 500_000, 19_800),
            "2026-06-10 15:30:00.5+05:30"
        );
        assert_eq!(
            render(instant, -(25 * 60 + 21)),
            "2026-06-10 09:34:39-00:25:21"
        );
    }

    #[test]
    fn dates_and_timestamps() {
        // 2026-06-10 is day 20614 after 1970-01-01.
        assert_eq!(text(|b| write_date(b, 20_614)), "2026-06-10");
        assert_eq!(text(|b| write_date(b, 0)), "1970-01-01");
        assert_eq!(text(|b| write_date(b, 11_016)), "2000-02-29");
        // 0001-01-01 is day -719162; the day before is 1 BC (astronomical year 0).
        assert_eq!(text(|b| write_date(b, -719_162)), "0001-01-01");
        assert_eq!(text(|b| write_date(b, -719_163)), "0001-12-31 BC");
        assert_eq!(text(|b| write_date(b, 2_932_897)), "10000-01-01");

        let noon = 20_614 * MICROS_PER_DAY + 45_296_123_456;
        assert_eq!(
            text(|b| write_timestamp(b, noon, false)),
            "2026-06-10 12:34:56.123456"
        );
        assert_eq!(
            text(|b| write_timestamp(b, noon, true)),
            "2026-06-10 12:34:56.123456+00"
        );
        assert_eq!(
            text(|b| write_timestamp(b, 45_296_500_000, false)),
            "1970-01-01 12:34:56.5"
        );
        assert_eq!(
            text(|b| write_timestamp(b, 0, false)),
            "1970-01-01 00:00:00"
        );
        assert_eq!(
            text(|b| write_timestamp(b, -1, false)),
            "1969-12-31 23:59:59.999999"
        );
        assert_eq!(
            text(|b| write_timestamp(b, -719_163 * MICROS_PER_DAY, true)),
            "0001-12-31 00:00:00+00 BC"
        );
        assert_eq!(text(|b| write_time(b, 45_296_000_010)), "12:34:56.00001");
        assert_eq!(text(|b| write_time(b, 0)), "00:00:00");
    }

    #[test]
    fn intervals_in_postgres_style() {
        const HOUR: i64 = 3_600_000_000;
        let cases: &[(i32, i32, i64, &str)] = &[
            (0, 0, 0, "00:00:00"),
            (
                14,
                3,
                4 * HOUR + 306_500_000,
                "1 year 2 mons 3 days 04:05:06.5",
            ),
            (1, 1, 0, "1 mon 1 day"),
            (12, 0, 0, "1 year"),
            (-14, 0, 0, "-1 years -2 mons"),
            (0, -1, 0, "-1 days"),
            (0, -1, HOUR, "-1 days +01:00:00"),
            (0, 1, -HOUR, "1 day -01:00:00"),
            (
                -14,
                3,
                -(4 * HOUR + 306_000_000),
                "-1 years -2 mons +3 days -04:05:06",
            ),
            (0, 0, 100 * HOUR, "100:00:00"),
            (0, 0, -1_500_000, "-00:00:01.5"),
            (0, 0, 1, "00:00:00.000001"),
        ];
        for &(months, days, micros, expected) in cases {
            assert_eq!(text(|b| write_interval(b, months, days, micros)), expected);
        }
    }

    #[test]
    fn decimals_keep_their_scale() {
        assert_eq!(text(|b| write_decimal(b, 12_345i128, 2)), "123.45");
        assert_eq!(text(|b| write_decimal(b, -5i128, 2)), "-0.05");
        assert_eq!(text(|b| write_decimal(b, 0i128, 2)), "0.00");
        assert_eq!(text(|b| write_decimal(b, 42i128, 0)), "42");
        assert_eq!(text(|b| write_decimal(b, -1000i64, 3)), "-1.000");
        assert_eq!(text(|b| write_decimal(b, 12i32, -3)), "12000");
        assert_eq!(text(|b| write_decimal(b, 0i32, -3)), "0");
    }

    #[test]
    fn bytea_hex() {
        assert_eq!(text(|b| write_bytea(b, b"\xde\xad\xbe\xef")), "\\xdeadbeef");
        assert_eq!(text(|b| write_bytea(b, b"")), "\\x");
    }

    #[test]
    fn numeric_binary_round_trip() {
        let encode = |s: &str| {
            let mut out = Vec::new();
            numeric_text_to_binary(s.as_bytes(), &mut out);
            out
        };
        // 123.45: two base-10000 digits 123 and 4500, weight 0, dscale 2.
        assert_eq!(
            encode("123.45"),
            [0, 2, 0, 0, 0, 0, 0, 2, 0, 123, 0x11, 0x94]
        );
        // -0.0001: one digit 1 of weight -1, dscale 4.
        assert_eq!(encode("-0.0001"), [0, 1, 0xff, 0xff, 0x40, 0, 0, 4, 0, 1]);
        // 0.00: no digits, dscale 2.
        assert_eq!(encode("0.00"), [0, 0, 0, 0, 0, 0, 0, 2]);
        // 20000000: digits 2000 0000 with the trailing zero group dropped, weight 1.
        assert_eq!(encode("20000000"), [0, 1, 0, 1, 0, 0, 0, 0, 0x07, 0xd0]);
        for s in [
            "123.45",
            "-0.0001",
            "0.00",
            "20000000",
            "0",
            "18446744073709551615",
            "-98765.4321000",
            "0.000000001",
            "12345678901234567890.12345678901234567890",
        ] {
            assert_eq!(numeric_binary_to_text(&encode(s)).as_deref(), Some(s));
        }
        assert_eq!(
            numeric_binary_to_text(&[0, 0, 0, 0, 0xC0, 0, 0, 0]).as_deref(),
            Some("NaN")
        );
        assert_eq!(numeric_binary_to_text(&[0, 1, 0, 0, 0, 0, 0, 0]), None);
    }
}
