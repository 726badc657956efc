//! How values are written as text for one session: its `DateStyle`, `IntervalStyle` and
//! `extra_float_digits` settings, with the setting values Postgres accepts for each.
//! Binary output does not depend on them.

/// The date part of `DateStyle`: how dates and timestamps are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DateStyle {
    /// `2026-03-01 12:00:00+01`
    #[default]
    Iso,
    /// `03/01/2026 12:00:00 CET` (`01/03/2026` with DMY)
    Sql,
    /// `Sun Mar 01 12:00:00 2026 CET`
    Postgres,
    /// `01.03.2026 12:00:00 CET`
    German,
}

/// The field order of `DateStyle` (it also decides how ambiguous input is read in Postgres).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DateOrder {
    #[default]
    Mdy,
    Dmy,
    Ymd,
}

/// `IntervalStyle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IntervalStyle {
    /// `1 year 2 mons 3 days 04:05:06`
    #[default]
    Postgres,
    /// `@ 1 year 2 mons 3 days 4 hours 5 mins 6 secs`
    PostgresVerbose,
    /// `+1-2 +3 +4:05:06`
    SqlStandard,
    /// `P1Y2M3DT4H5M6S`
    Iso8601,
}

/// Everything that decides the text form of a value, for one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputStyle {
    pub date_style: DateStyle,
    pub date_order: DateOrder,
    pub interval_style: IntervalStyle,
    /// Above 0: the shortest text that reads back as the same float (Postgres 12+). 0 or
    /// below: `15 + n` significant digits for `float8`, `6 + n` for `float4`.
    pub extra_float_digits: i32,
}

impl Default for OutputStyle {
    fn default() -> Self {
        Self {
            date_style: DateStyle::Iso,
            date_order: DateOrder::Mdy,
            interval_style: IntervalStyle::Postgres,
            extra_float_digits: 1,
        }
    }
}

impl DateStyle {
    fn name(self) -> &'static str {
        match self {
            DateStyle::Iso => "ISO",
            DateStyle::Sql => "SQL",
            DateStyle::Postgres => "Postgres",
            DateStyle::German => "German",
        }
    }

    /// Reads a `DateStyle` setting as Postgres does: a style (`ISO`, `SQL`, `Postgres`,
    /// `German`) and/or an order (`MDY`/`US`/`NonEuropean`, `DMY`/`European`, `YMD`),
    /// separated by commas or spaces, case-insensitively; what is not given stays as in
    /// `current` (German alone also means DMY). `None` when the value is not valid.
    pub fn parse_setting(
        value: &str,
        current: (DateStyle, DateOrder),
    ) -> Option<(DateStyle, DateOrder)> {
        let (mut style, mut order) = (None, None);
        // A second, different style (or order) is an error, as in Postgres.
        fn set<T: PartialEq>(slot: &mut Option<T>, new: T) -> bool {
            match slot {
                Some(old) if *old != new => false,
                _ => {
                    *slot = Some(new);
                    true
                }
            }
        }
        let mut any = false;
        for token in value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
        {
            any = true;
            let ok = match token.to_ascii_lowercase().as_str() {
                "iso" => set(&mut style, DateStyle::Iso),
                "sql" => set(&mut style, DateStyle::Sql),
                "postgres" => set(&mut style, DateStyle::Postgres),
                "german" => set(&mut style, DateStyle::German),
                "ymd" => set(&mut order, DateOrder::Ymd),
                "dmy" | "euro" | "european" => set(&mut order, DateOrder::Dmy),
                "mdy" | "us" | "noneuro" | "noneuropean" => set(&mut order, DateOrder::Mdy),
                "default" => set(&mut style, DateStyle::Iso) && set(&mut order, DateOrder::Mdy),
                _ => false,
            };
            if !ok {
                return None;
            }
        }
        if !any {
            return None;
        }
        let order = match (order, style) {
            (Some(order), _) => order,
            (None, Some(DateStyle::German)) => DateOrder::Dmy,
            (None, _) => current.1,
        };
        Some((style.unwrap_or(current.0), order))
    }

    /// The setting as Postgres shows it: `ISO, MDY`, `SQL, DMY`, ...
    pub fn setting_text(style: DateStyle, order: DateOrder) -> String {
        let order = match order {
            DateOrder::Mdy => "MDY",
            DateOrder::Dmy => "DMY",
            DateOrder::Ymd => "YMD",
        };
        format!("{}, {order}", style.name())
    }
}

impl IntervalStyle {
    /// Reads an `IntervalStyle` setting (case-insensitively).
    pub fn parse_setting(value: &str) -> Option<IntervalStyle> {
        Some(match value.trim().to_ascii_lowercase().as_str() {
            "postgres" => IntervalStyle::Postgres,
            "postgres_verbose" => IntervalStyle::PostgresVerbose,
            "sql_standard" => IntervalStyle::SqlStandard,
            "iso_8601" => IntervalStyle::Iso8601,
            _ => return None,
        })
    }

    /// The setting as Postgres shows it.
    pub fn setting_text(self) -> &'static str {
        match self {
            IntervalStyle::Postgres => "postgres",
            IntervalStyle::PostgresVerbose => "postgres_verbose",
            IntervalStyle::SqlStandard => "sql_standard",
            IntervalStyle::Iso8601 => "iso_8601",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_style_settings() {
        let default = (DateStyle::Iso, DateOrder::Mdy);
        let read = |v: &str| {
            DateStyle::parse_setting(v, default).map(|(s, o)| DateStyle::setting_text(s, o))
        };
        assert_eq!(read("ISO, MDY").as_deref(), Some("ISO, MDY"));
        assert_eq!(read("sql, dmy").as_deref(), Some("SQL, DMY"));
        assert_eq!(read("SQL").as_deref(), Some("SQL, MDY"));
        assert_eq!(read("German").as_deref(), Some("German, DMY"));
        assert_eq!(read("european").as_deref(), Some("ISO, DMY"));
        assert_eq!(read("Postgres YMD").as_deref(), Some("Postgres, YMD"));
        assert_eq!(read("ISO, SQL"), None);
        assert_eq!(read("fancy"), None);
        assert_eq!(read(""), None);
    }

    #[test]
    fn interval_style_settings() {
        assert_eq!(
            IntervalStyle::parse_setting("ISO_8601"),
            Some(IntervalStyle::Iso8601)
        );
        assert_eq!(IntervalStyle::parse_setting("iso"), None);
    }
}
