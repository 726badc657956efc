//! Date and timestamp text in the forms Postgres reads beyond ISO 8601, respelled as ISO text
//! Arrow's parser reads: numeric dates in the session's `DateStyle` field order (`03/01/2026`
//! is March 1st with MDY, January 3rd with DMY; a field of more than two digits is the year;
//! two-digit years are 1970-2069), month names (`Mar 1 2026`, `1 March 2026`, `2026-Mar-01`),
//! times without seconds, `AM`/`PM`, and the SQL, Postgres and German output styles
//! (`Sun Mar 01 12:00:00 2026 PST`, `01.03.2026 12:00:00 CET`) with the common zone
//! abbreviations. Callers try Arrow's parser first and fall back to [`iso_date_text`], so what
//! Arrow already reads is read as before.

/// Which field of a numeric date comes first (the order part of `DateStyle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldOrder {
    #[default]
    MonthDayYear,
    DayMonthYear,
    YearMonthDay,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Zone abbreviations Postgres knows by default that its own output uses most, with their
/// offsets east of UTC in seconds.
const ZONES: &[(&str, i32)] = &[
    ("utc", 0),
    ("gmt", 0),
    ("z", 0),
    ("ut", 0),
    ("est", -5 * 3600),
    ("edt", -4 * 3600),
    ("cst", -6 * 3600),
    ("cdt", -5 * 3600),
    ("mst", -7 * 3600),
    ("mdt", -6 * 3600),
    ("pst", -8 * 3600),
    ("pdt", -7 * 3600),
    ("akst", -9 * 3600),
    ("akdt", -8 * 3600),
    ("hst", -10 * 3600),
    ("wet", 0),
    ("west", 3600),
    ("bst", 3600),
    ("cet", 3600),
    ("cest", 2 * 3600),
    ("met", 3600),
    ("mest", 2 * 3600),
    ("eet", 2 * 3600),
    ("eest", 3 * 3600),
    ("msk", 3 * 3600),
    ("ist", 5 * 3600 + 1800),
    ("jst", 9 * 3600),
    ("kst", 9 * 3600),
    ("aest", 10 * 3600),
    ("aedt", 11 * 3600),
    ("nzst", 12 * 3600),
    ("nzdt", 13 * 3600),
];

/// One piece of date/time text.
#[derive(Debug, PartialEq)]
enum Token<'a> {
    Number(&'a str),
    Word(String),
    /// `HH:MM[:SS[.f]]`.
    Time(&'a str),
    /// `+HH[:MM]` / `-HH[:MM]` after a time.
    Offset(&'a str),
}

fn tokens(text: &str) -> Option<Vec<Token<'_>>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut seen_time = false;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() || matches!(c, b',' | b'/' | b'.' | b'-') && !seen_time {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() {
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b':') {
                i += 1;
            }
            if text[start..i].contains(':') {
                // A fraction of a second belongs to the time.
                if i < bytes.len() && bytes[i] == b'.' {
                    i += 1;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                out.push(Token::Time(&text[start..i]));
                seen_time = true;
            } else {
                out.push(Token::Number(&text[start..i]));
            }
        } else if c.is_ascii_alphabetic() {
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            out.push(Token::Word(text[start..i].to_ascii_lowercase()));
        } else if matches!(c, b'+' | b'-') && seen_time {
            i += 1;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b':') {
                i += 1;
            }
            out.push(Token::Offset(&text[start..i]));
        } else if c == b'.' || c == b'/' || c == b',' {
            i += 1;
        } else {
            return None;
        }
    }
    Some(out)
}

fn month_number(word: &str) -> Option<u32> {
    if word.len() < 3 {
        return None;
    }
    MONTHS
        .iter()
        .position(|m| word.starts_with(m))
        .map(|m| m as u32 + 1)
}

/// A two-digit year as Postgres reads it.
fn full_year(text: &str) -> Option<i32> {
    let year: i32 = text.parse().ok()?;
    Some(match text.len() {
        1 | 2 if year < 70 => year + 2000,
        1 | 2 => year + 1900,
        _ => year,
    })
}

/// Date or timestamp text Arrow's parser does not read, respelled as ISO 8601 text it does
/// (`2026-03-01`, `2026-03-01 12:00:00`, `2026-03-01 12:00:00-08:00`); `None` when it is no
/// date Runnel knows how to read.
pub fn iso_date_text(text: &str, order: FieldOrder) -> Option<String> {
    let tokens = tokens(text.trim())?;
    let mut numbers: Vec<&str> = Vec::new();
    let mut month_name = None;
    let mut time = None;
    let mut offset: Option<i32> = None;
    let mut pm = None;
    let mut bc = false;
    for token in &tokens {
        match token {
            Token::Number(n) => numbers.push(n),
            Token::Time(t) => {
                if time.replace(*t).is_some() {
                    return None;
                }
            }
            Token::Offset(o) => offset = Some(offset_seconds(o)?),
            Token::Word(w) if w == "am" || w == "pm" => pm = Some(w == "pm"),
            Token::Word(w) if w == "bc" => bc = true,
            Token::Word(w) if w == "ad" => {}
            Token::Word(w) if WEEKDAYS.iter().any(|d| w.starts_with(d)) && w.len() >= 3 => {}
            Token::Word(w) => {
                if let Some(m) = month_number(w).filter(|_| month_name.is_none()) {
                    month_name = Some(m);
                } else if let Some((_, seconds)) = ZONES.iter().find(|(name, _)| name == w) {
                    offset = Some(*seconds);
                } else {
                    return None;
                }
            }
        }
    }
    let (mut year, month, day) = match (month_name, numbers.as_slice()) {
        (Some(month), [a, b]) => {
            if a.len() > 2 {
                (full_year(a)?, month, b.parse().ok()?)
            } else {
                (full_year(b)?, month, a.parse().ok()?)
            }
        }
        (None, [a, b, c]) => {
            let (y, m, d) = if a.len() > 2 {
                (a, b, c)
            } else {
                match order {
                    FieldOrder::MonthDayYear => (c, a, b),
                    FieldOrder::DayMonthYear => (c, b, a),
                    FieldOrder::YearMonthDay => (a, b, c),
                }
            };
            (full_year(y)?, m.parse().ok()?, d.parse().ok()?)
        }
        _ => return None,
    };
    if bc {
        year = 1 - year;
    }
    // Validates the day of the month.
    chrono::NaiveDate::from_ymd_opt(year, month, day)?;
    let mut out = if (0..=9999).contains(&year) {
        format!("{year:04}-{month:02}-{day:02}")
    } else {
        return None;
    };
    if let Some(time) = time {
        let mut fields = time.splitn(3, ':');
        let mut hour: u32 = fields.next()?.parse().ok()?;
        let minute: u32 = fields.next()?.parse().ok()?;
        let second = fields.next().unwrap_or("00");
        match pm {
            Some(true) if hour < 12 => hour += 12,
            Some(false) if hour == 12 => hour = 0,
            _ => {}
        }
        if hour > 23 || minute > 59 {
            return None;
        }
        out.push_str(&format!(" {hour:02}:{minute:02}:{second:0>2}"));
    } else if pm.is_some() {
        return None;
    }
    if let Some(offset) = offset {
        if time.is_none() {
            out.push_str(" 00:00:00");
        }
        let sign = if offset < 0 { '-' } else { '+' };
        let offset = offset.unsigned_abs();
        out.push_str(&format!(
            "{sign}{:02}:{:02}",
            offset / 3600,
            offset / 60 % 60
        ));
    }
    Some(out)
}

/// `+HH`, `+HH:MM`, `-HHMM` as seconds east of UTC.
fn offset_seconds(text: &str) -> Option<i32> {
    let sign = if text.starts_with('-') { -1 } else { 1 };
    let digits: String = text[1..].chars().filter(|c| *c != ':').collect();
    let (hours, minutes) = match digits.len() {
        1 | 2 => (digits.parse::<i32>().ok()?, 0),
        4 => (digits[..2].parse().ok()?, digits[2..].parse().ok()?),
        _ => return None,
    };
    Some(sign * (hours * 3600 + minutes * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(text: &str) -> Option<String> {
        iso_date_text(text, FieldOrder::MonthDayYear)
    }

    #[test]
    fn numeric_dates_follow_the_field_order() {
        assert_eq!(iso("03/01/2026").as_deref(), Some("2026-03-01"));
        assert_eq!(
            iso_date_text("03/01/2026", FieldOrder::DayMonthYear).as_deref(),
            Some("2026-01-03")
        );
        assert_eq!(
            iso_date_text("26/03/01", FieldOrder::YearMonthDay).as_deref(),
            Some("2026-03-01")
        );
        assert_eq!(iso("1/8/99").as_deref(), Some("1999-01-08"));
        assert_eq!(iso("1/8/69").as_deref(), Some("2069-01-08"));
        // A field of more than two digits is the year, whatever the order.
        assert_eq!(iso("2026/03/01").as_deref(), Some("2026-03-01"));
        assert_eq!(iso("13/01/2026"), None);
        assert_eq!(iso("02/30/2026"), None);
    }

    #[test]
    fn month_names_times_and_zones() {
        assert_eq!(iso("January 8, 1999").as_deref(), Some("1999-01-08"));
        assert_eq!(iso("8 Jan 1999").as_deref(), Some("1999-01-08"));
        assert_eq!(iso("1999-Jan-08").as_deref(), Some("1999-01-08"));
        assert_eq!(
            iso("Wed Dec 17 07:37:16 1997 PST").as_deref(),
            Some("1997-12-17 07:37:16-08:00")
        );
        assert_eq!(
            iso("12/17/1997 07:37:16.5 UTC").as_deref(),
            Some("1997-12-17 07:37:16.5+00:00")
        );
        assert_eq!(
            iso_date_text("17.12.1997 07:37 CET", FieldOrder::DayMonthYear).as_deref(),
            Some("1997-12-17 07:37:00+01:00")
        );
        assert_eq!(
            iso("03/01/2026 1:05 PM").as_deref(),
            Some("2026-03-01 13:05:00")
        );
        assert_eq!(
            iso("03/01/2026 12:00 am").as_deref(),
            Some("2026-03-01 00:00:00")
        );
        assert_eq!(
            iso("03/01/2026 10:00:00-05").as_deref(),
            Some("2026-03-01 10:00:00-05:00")
        );
        assert_eq!(iso("soon"), None);
        assert_eq!(iso("03/01/2026 10:00 XYZ"), None);
    }
}
