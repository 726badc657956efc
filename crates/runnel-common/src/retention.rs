//! How much of a stream's log Runnel keeps: `WITH (retention = '<duration>' | '<size>')`.
//! Entries older than the duration, or beyond the size counted from the newest entry, are
//! deleted once every view has read them (see docs/operations.md#retention).

use std::fmt;

use crate::error::{Result, RunnelError, SqlState};
use crate::interval_text::parse_interval;
use crate::time::interval_micros;

/// A stream log's retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Keep every entry (an embedded stream's default: its log is the only copy of its rows).
    Unlimited,
    /// Delete entries appended more than this many microseconds ago.
    Age(i64),
    /// Keep at most this many bytes of entries (stored size), newest first.
    Bytes(u64),
}

/// Units a size may be given in (Postgres's `pg_size_pretty` spellings, and the binary ones).
const SIZE_UNITS: [(&str, u64); 11] = [
    ("bytes", 1),
    ("b", 1),
    ("kb", 1 << 10),
    ("kib", 1 << 10),
    ("mb", 1 << 20),
    ("mib", 1 << 20),
    ("gb", 1 << 30),
    ("gib", 1 << 30),
    ("tb", 1 << 40),
    ("tib", 1 << 40),
    ("byte", 1),
];

impl Retention {
    /// Reads `'7 days'`, `'36 hours'`, `'1 day 02:00:00'` (any fixed-length Postgres interval),
    /// `'500 MB'`, `'2GB'`, `'1024 bytes'` (sizes in units of 1024), or `'unlimited'`.
    pub fn parse(text: &str) -> Result<Retention> {
        let trimmed = text.trim();
        let lower = trimmed.to_ascii_lowercase();
        if matches!(lower.as_str(), "unlimited" | "forever" | "infinite") {
            return Ok(Retention::Unlimited);
        }
        if let Some(bytes) = parse_size(&lower) {
            return match bytes {
                0 => Err(bad(text, "a size must be at least 1 byte")),
                n => Ok(Retention::Bytes(n)),
            };
        }
        let micros = parse_interval(trimmed)
            .and_then(interval_micros)
            .ok_or_else(|| {
                bad(
                    text,
                    "expected a duration such as '7 days' or '36 hours', a size such as '500 MB', or 'unlimited'",
                )
            })?;
        if micros <= 0 {
            return Err(bad(text, "a duration must be positive"));
        }
        Ok(Retention::Age(micros))
    }
}

fn bad(text: &str, why: &str) -> RunnelError {
    RunnelError::plan(
        SqlState::INVALID_PARAMETER_VALUE,
        format!("invalid retention '{text}': {why}"),
    )
}

/// `<number> <unit>` with a size unit (the number may have a fraction: `'1.5 GB'`).
fn parse_size(lower: &str) -> Option<u64> {
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let unit = unit.trim();
    let (_, scale) = SIZE_UNITS.iter().find(|(name, _)| *name == unit)?;
    let number: f64 = number.parse().ok()?;
    let bytes = number * *scale as f64;
    (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes.round() as u64)
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retention::Unlimited => write!(f, "unlimited"),
            Retention::Age(micros) => {
                let secs = micros / 1_000_000;
                match secs {
                    s if s % 86_400 == 0 && micros % 1_000_000 == 0 => {
                        write!(f, "{} days", s / 86_400)
                    }
                    s if s % 3_600 == 0 && micros % 1_000_000 == 0 => {
                        write!(f, "{} hours", s / 3_600)
                    }
                    _ => write!(f, "{} seconds", *micros as f64 / 1e6),
                }
            }
            Retention::Bytes(n) => write!(f, "{n} bytes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_sizes_and_unlimited() {
        assert_eq!(
            Retention::parse("7 days").unwrap(),
            Retention::Age(7 * 86_400_000_000)
        );
        assert_eq!(
            Retention::parse("1 day 02:00:00").unwrap(),
            Retention::Age(26 * 3_600_000_000)
        );
        assert_eq!(
            Retention::parse("90 seconds").unwrap(),
            Retention::Age(90_000_000)
        );
        assert_eq!(
            Retention::parse("500 MB").unwrap(),
            Retention::Bytes(500 << 20)
        );
        assert_eq!(Retention::parse("2gb").unwrap(), Retention::Bytes(2 << 30));
        assert_eq!(Retention::parse("1.5 KiB").unwrap(), Retention::Bytes(1536));
        assert_eq!(Retention::parse("1 byte").unwrap(), Retention::Bytes(1));
        assert_eq!(Retention::parse("Unlimited").unwrap(), Retention::Unlimited);
    }

    #[test]
    fn refuses_what_is_not_a_retention() {
        for text in ["", "soon", "1 month", "0 bytes", "-5 minutes", "5 parsecs"] {
            let err = Retention::parse(text).unwrap_err();
            assert_eq!(err.sqlstate(), SqlState::INVALID_PARAMETER_VALUE, "{text}");
        }
    }

    #[test]
    fn prints_what_it_reads() {
        for text in [
            "7 days",
            "36 hours",
            "90 seconds",
            "1024 bytes",
            "unlimited",
        ] {
            let parsed = Retention::parse(text).unwrap();
            assert_eq!(Retention::parse(&parsed.to_string()).unwrap(), parsed);
        }
    }
}
