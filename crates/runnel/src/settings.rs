//! Session settings: the Postgres run-time parameters (GUCs) a session can `SET`, `SHOW` and
//! `RESET`, read by `current_setting()`, changed by `set_config()` and listed in
//! `pg_settings` and `SHOW ALL`.
//!
//! Every parameter Runnel knows is in [`DEFINITIONS`]; any other name is an error (42704), as
//! in Postgres, except the two-part names (`myapp.tenant`) Postgres keeps as placeholders for
//! extensions and applications. `SET LOCAL` lasts until the end of the transaction.
//! Parameters marked `reported` are sent to the client in a ParameterStatus message whenever
//! they change, as Postgres does.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use runnel_common::{Result, RunnelError, SqlState};
use runnel_pgwire::types::{DateStyle, IntervalStyle, OutputStyle};

/// SQLSTATE 42704: the parameter does not exist.
const UNDEFINED_OBJECT: SqlState = SqlState("42704");
/// SQLSTATE 55P02: the parameter cannot be changed now (read-only parameters).
const CANT_CHANGE_RUNTIME_PARAM: SqlState = SqlState("55P02");

/// The Postgres version Runnel's SQL dialect, catalog and protocol follow.
pub const POSTGRES_VERSION: &str = "15.0";
pub const POSTGRES_VERSION_NUM: &str = "150000";

/// The schemas there are: Runnel's relations are all in `public`.
const SCHEMAS: [&str; 3] = ["public", "pg_catalog", "information_schema"];

/// How a parameter's value is checked and normalised when set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// `on`/`off` and the other spellings Postgres accepts.
    Bool,
    Integer {
        min: i64,
        max: i64,
    },
    /// Milliseconds; a number, or a string with a unit (`'5s'`, `'2min'`).
    Milliseconds,
    TimeZone,
    /// `DateStyle`: a style and/or a field order; what is not given keeps its current value.
    DateStyle,
    /// One of a fixed set of values (compared case-insensitively).
    Enum(&'static [&'static str]),
    /// Cannot be changed by a session.
    ReadOnly,
}

/// A parameter Runnel knows.
#[derive(Debug)]
pub struct Definition {
    pub name: &'static str,
    pub default: &'static str,
    pub kind: Kind,
    /// `pg_settings.category`.
    pub category: &'static str,
    /// `pg_settings.short_desc`.
    pub description: &'static str,
    /// Sent in ParameterStatus at start-up and on every change.
    pub reported: bool,
    /// `pg_settings.unit`.
    pub unit: Option<&'static str>,
}

const fn def(
    name: &'static str,
    default: &'static str,
    kind: Kind,
    category: &'static str,
    description: &'static str,
    reported: bool,
) -> Definition {
    Definition {
        name,
        default,
        kind,
        category,
        description,
        reported,
        unit: None,
    }
}

const CLIENT: &str = "Client Connection Defaults / Locale and Formatting";
const STATEMENT: &str = "Client Connection Defaults / Statement Behavior";
const PRESET: &str = "Preset Options";
const RUNNEL: &str = "Runnel";

/// Every parameter Runnel knows, by name as Postgres spells it.
pub static DEFINITIONS: &[Definition] = &[
    def(
        "application_name",
        "",
        Kind::Text,
        "Reporting and Logging / What to Log",
        "Sets the application name to be reported in statistics and logs.",
        true,
    ),
    def(
        "bytea_output",
        "hex",
        Kind::Enum(&["hex"]),
        STATEMENT,
        "Sets the output format for bytea.",
        false,
    ),
    def(
        "client_encoding",
        "UTF8",
        Kind::Enum(&["UTF8", "UTF-8", "UNICODE"]),
        CLIENT,
        "Sets the client's character set encoding.",
        true,
    ),
    def(
        "client_min_messages",
        "notice",
        Kind::Enum(&[
            "debug5", "debug4", "debug3", "debug2", "debug1", "log", "notice", "warning", "error",
        ]),
        STATEMENT,
        "Sets the message levels that are sent to the client.",
        false,
    ),
    def(
        "default_table_access_method",
        "heap",
        Kind::Enum(&["heap"]),
        STATEMENT,
        "Sets the default table access method for new tables.",
        false,
    ),
    def(
        "DateStyle",
        "ISO, MDY",
        Kind::DateStyle,
        CLIENT,
        "Sets the display format for date and time values.",
        true,
    ),
    def(
        "default_transaction_isolation",
        "read committed",
        Kind::Enum(&[
            "read committed",
            "repeatable read",
            "serializable",
            "read uncommitted",
        ]),
        STATEMENT,
        "Sets the transaction isolation level of each new transaction.",
        false,
    ),
    def(
        "default_transaction_read_only",
        "off",
        Kind::Bool,
        STATEMENT,
        "Sets the default read-only status of new transactions.",
        false,
    ),
    def(
        "extra_float_digits",
        "1",
        Kind::Integer { min: -15, max: 3 },
        CLIENT,
        "Sets the number of digits displayed for floating-point values.",
        false,
    ),
    def(
        "idle_in_transaction_session_timeout",
        "0",
        Kind::Milliseconds,
        STATEMENT,
        "Sets the maximum allowed idle time between queries, when in a transaction.",
        false,
    ),
    def(
        "implicit_flush",
        "on",
        Kind::Bool,
        RUNNEL,
        "Waits after each write until every view reflects it, so the next query reads it.",
        false,
    ),
    def(
        "integer_datetimes",
        "on",
        Kind::ReadOnly,
        PRESET,
        "Shows whether datetimes are integer based.",
        true,
    ),
    def(
        "IntervalStyle",
        "postgres",
        Kind::Enum(&["postgres", "postgres_verbose", "sql_standard", "iso_8601"]),
        CLIENT,
        "Sets the display format for interval values.",
        true,
    ),
    def(
        "is_superuser",
        "on",
        Kind::ReadOnly,
        PRESET,
        "Shows whether the current user is a superuser.",
        true,
    ),
    def(
        "jit",
        "off",
        Kind::Bool,
        "Query Tuning / Other Planner Options",
        "Allow JIT compilation (Runnel has none; kept for clients that set it).",
        false,
    ),
    def(
        "lc_collate",
        "C",
        Kind::ReadOnly,
        PRESET,
        "Shows the collation order locale.",
        false,
    ),
    def(
        "lc_ctype",
        "C",
        Kind::ReadOnly,
        PRESET,
        "Shows the character classification and case conversion locale.",
        false,
    ),
    def(
        "lc_messages",
        "C",
        Kind::Text,
        CLIENT,
        "Sets the language in which messages are displayed.",
        false,
    ),
    def(
        "lc_monetary",
        "C",
        Kind::Text,
        CLIENT,
        "Sets the locale for formatting monetary amounts.",
        false,
    ),
    def(
        "lc_numeric",
        "C",
        Kind::Text,
        CLIENT,
        "Sets the locale for formatting numbers.",
        false,
    ),
    def(
        "lc_time",
        "C",
        Kind::Text,
        CLIENT,
        "Sets the locale for formatting date and time values.",
        false,
    ),
    def(
        "lock_timeout",
        "0",
        Kind::Milliseconds,
        STATEMENT,
        "Sets the maximum allowed duration of any wait for a lock.",
        false,
    ),
    def(
        "max_identifier_length",
        "63",
        Kind::ReadOnly,
        PRESET,
        "Shows the maximum identifier length.",
        false,
    ),
    def(
        "max_index_keys",
        "32",
        Kind::ReadOnly,
        PRESET,
        "Shows the maximum number of index keys.",
        false,
    ),
    def(
        "search_path",
        "\"$user\", public",
        Kind::Text,
        STATEMENT,
        "Sets the schema search order for names that are not schema-qualified.",
        false,
    ),
    def(
        "server_encoding",
        "UTF8",
        Kind::ReadOnly,
        PRESET,
        "Shows the server (database) character set encoding.",
        true,
    ),
    def(
        "server_version",
        POSTGRES_VERSION,
        Kind::ReadOnly,
        PRESET,
        "Shows the server version.",
        true,
    ),
    def(
        "server_version_num",
        POSTGRES_VERSION_NUM,
        Kind::ReadOnly,
        PRESET,
        "Shows the server version as an integer.",
        false,
    ),
    def(
        "session_authorization",
        "runnel",
        Kind::ReadOnly,
        PRESET,
        "Sets the session user name.",
        true,
    ),
    def(
        "standard_conforming_strings",
        "on",
        Kind::Enum(&["on"]),
        "Version and Platform Compatibility",
        "Causes '...' strings to treat backslashes literally.",
        true,
    ),
    Definition {
        unit: Some("ms"),
        ..def(
            "statement_timeout",
            "0",
            Kind::Milliseconds,
            STATEMENT,
            "Sets the maximum allowed duration of any statement.",
            false,
        )
    },
    def(
        "TimeZone",
        "UTC",
        Kind::TimeZone,
        CLIENT,
        "Sets the time zone for displaying and interpreting time stamps.",
        true,
    ),
    def(
        "transaction_isolation",
        "read committed",
        Kind::Enum(&[
            "read committed",
            "repeatable read",
            "serializable",
            "read uncommitted",
        ]),
        STATEMENT,
        "Sets the current transaction's isolation level.",
        false,
    ),
    def(
        "transaction_read_only",
        "off",
        Kind::Bool,
        STATEMENT,
        "Sets the current transaction's read-only status.",
        false,
    ),
];

/// Alternative names accepted for a parameter (RisingWave's spelling of implicit flush).
const ALIASES: &[(&str, &str)] = &[
    ("rw_implicit_flush", "implicit_flush"),
    ("timezone", "TimeZone"),
];

/// The definition for `name`, matched case-insensitively, aliases included.
pub fn definition(name: &str) -> Option<&'static Definition> {
    let name = ALIASES
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
        .map_or(name, |(_, target)| target);
    DEFINITIONS
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case(name))
}

fn unrecognized(name: &str) -> RunnelError {
    RunnelError::plan(
        UNDEFINED_OBJECT,
        format!("unrecognized configuration parameter \"{name}\""),
    )
}

fn invalid_value(name: &str, value: &str, hint: &str) -> RunnelError {
    RunnelError::plan(
        SqlState::INVALID_PARAMETER_VALUE,
        format!("invalid value for parameter \"{name}\": \"{value}\"{hint}"),
    )
}

/// A session's parameter values. Cheap to clone as a handle: the session and the SQL
/// functions that read settings share one.
#[derive(Debug, Clone, Default)]
pub struct SessionSettings {
    inner: Arc<Mutex<Values>>,
}

#[derive(Debug, Default)]
struct Values {
    /// Values that differ from the default, by canonical name (placeholders by lower-cased name).
    set: BTreeMap<String, String>,
    /// Session values to restore when the transaction ends, for parameters set with `LOCAL`.
    saved: BTreeMap<String, Option<String>>,
    /// Reported parameters changed since the last call of `take_reported_changes`.
    changed: Vec<String>,
}

impl SessionSettings {
    fn values(&self) -> MutexGuard<'_, Values> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value `SHOW name` prints.
    pub fn get(&self, name: &str) -> Result<String> {
        match definition(name) {
            Some(d) => Ok(self
                .values()
                .set
                .get(d.name)
                .cloned()
                .unwrap_or_else(|| d.default.to_string())),
            None if is_placeholder(name) => self
                .values()
                .set
                .get(&name.to_ascii_lowercase())
                .cloned()
                .ok_or_else(|| unrecognized(name)),
            None => Err(unrecognized(name)),
        }
    }

    /// Sets `name` to `value` (`None`: back to its default). With `local`, the previous value
    /// comes back at the end of the transaction. Returns the canonical name.
    pub fn set(&self, name: &str, value: Option<&str>, local: bool) -> Result<String> {
        let (key, normalised, reported) = match definition(name) {
            Some(d) => {
                let normalised = match value {
                    Some(v) => Some(normalise(d, v, &self.get(d.name)?)?),
                    None if d.kind == Kind::ReadOnly => {
                        return Err(read_only(d.name));
                    }
                    None => None,
                };
                (d.name.to_string(), normalised, d.reported)
            }
            None if is_placeholder(name) => {
                (name.to_ascii_lowercase(), value.map(str::to_string), false)
            }
            None => return Err(unrecognized(name)),
        };
        let mut values = self.values();
        let previous = values.set.get(&key).cloned();
        if local && !values.saved.contains_key(&key) {
            values.saved.insert(key.clone(), previous);
        } else if !local {
            // A session-level SET inside a transaction outlives it.
            values.saved.remove(&key);
        }
        match normalised {
            Some(v) => values.set.insert(key.clone(), v),
            None => values.set.remove(&key),
        };
        if reported {
            values.changed.push(key.clone());
        }
        Ok(key)
    }

    /// `RESET ALL`: every parameter back to its default.
    pub fn reset_all(&self) {
        let mut values = self.values();
        let names: Vec<String> = values.set.keys().cloned().collect();
        for name in names {
            if definition(&name).is_some_and(|d| d.reported) {
                values.changed.push(name);
            }
        }
        values.set.clear();
        values.saved.clear();
    }

    /// The transaction ended: values set with `LOCAL` are undone.
    pub fn end_transaction(&self) {
        let mut values = self.values();
        let saved = std::mem::take(&mut values.saved);
        for (name, previous) in saved {
            match previous {
                Some(v) => values.set.insert(name.clone(), v),
                None => values.set.remove(&name),
            };
            if definition(&name).is_some_and(|d| d.reported) {
                values.changed.push(name);
            }
        }
    }

    /// Every reported parameter is to be told to the client (at start-up).
    pub fn mark_all_reported(&self) {
        let mut values = self.values();
        values.changed = DEFINITIONS
            .iter()
            .filter(|d| d.reported)
            .map(|d| d.name.to_string())
            .collect();
    }

    /// The reported parameters that changed since the last call, with their values now.
    pub fn take_reported_changes(&self) -> Vec<(String, String)> {
        let changed = std::mem::take(&mut self.values().changed);
        let mut out: Vec<(String, String)> = Vec::new();
        for name in changed {
            if out.iter().any(|(n, _)| *n == name) {
                continue;
            }
            if let Ok(value) = self.get(&name) {
                out.push((name, value));
            }
        }
        out
    }

    /// Every known parameter with its value, in name order (`SHOW ALL`, `pg_settings`).
    pub fn all(&self) -> Vec<(&'static Definition, String)> {
        let values = self.values();
        let mut all: Vec<(&'static Definition, String)> = DEFINITIONS
            .iter()
            .map(|d| {
                let value = values
                    .set
                    .get(d.name)
                    .cloned()
                    .unwrap_or_else(|| d.default.to_string());
                (d, value)
            })
            .collect();
        all.sort_by_key(|(d, _)| d.name.to_ascii_lowercase());
        all
    }

    /// `statement_timeout`, or `None` when it is 0 (no timeout).
    pub fn statement_timeout(&self) -> Option<std::time::Duration> {
        let ms: u64 = self.get("statement_timeout").ok()?.parse().ok()?;
        (ms > 0).then(|| std::time::Duration::from_millis(ms))
    }

    pub fn implicit_flush(&self) -> bool {
        self.get("implicit_flush").is_ok_and(|v| v == "on")
    }

    /// The schemas of `search_path` that exist, in order: `"$user"` and schemas that do not
    /// exist are skipped, as Postgres skips them.
    pub fn search_path(&self) -> Vec<&'static str> {
        let value = self.get("search_path").unwrap_or_default();
        let mut schemas: Vec<&'static str> = Vec::new();
        for part in value.split(',') {
            let part = part.trim();
            let name = match part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
                Some(quoted) => quoted.to_string(),
                None => part.to_ascii_lowercase(),
            };
            if let Some(schema) = SCHEMAS.iter().find(|s| **s == name) {
                if !schemas.contains(schema) {
                    schemas.push(schema);
                }
            }
        }
        schemas
    }

    /// `DateStyle`, read.
    fn date_style(&self) -> (DateStyle, runnel_pgwire::types::DateOrder) {
        self.get("DateStyle")
            .ok()
            .and_then(|v| DateStyle::parse_setting(&v, Default::default()))
            .unwrap_or_default()
    }

    /// How this session reads numeric dates (the order part of `DateStyle`).
    pub fn date_order(&self) -> runnel_common::date_text::FieldOrder {
        use runnel_common::date_text::FieldOrder;
        match self.date_style().1 {
            runnel_pgwire::types::DateOrder::Mdy => FieldOrder::MonthDayYear,
            runnel_pgwire::types::DateOrder::Dmy => FieldOrder::DayMonthYear,
            runnel_pgwire::types::DateOrder::Ymd => FieldOrder::YearMonthDay,
        }
    }

    /// How this session's values are written as text.
    pub fn output_style(&self) -> OutputStyle {
        let (date_style, date_order) = self.date_style();
        OutputStyle {
            date_style,
            date_order,
            interval_style: self
                .get("IntervalStyle")
                .ok()
                .and_then(|v| IntervalStyle::parse_setting(&v))
                .unwrap_or_default(),
            extra_float_digits: self
                .get("extra_float_digits")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1),
        }
    }

    pub fn time_zone(&self) -> String {
        self.get("TimeZone").unwrap_or_else(|_| "UTC".to_string())
    }
}

/// Postgres accepts any two-part name as a placeholder parameter.
fn is_placeholder(name: &str) -> bool {
    let mut parts = name.split('.');
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty())
}

fn read_only(name: &str) -> RunnelError {
    RunnelError::plan(
        CANT_CHANGE_RUNTIME_PARAM,
        format!("parameter \"{name}\" cannot be changed"),
    )
}

/// Checks `value` against the parameter's kind and returns it as `SHOW` prints it.
/// The value `value` sets parameter `d` to, in its canonical spelling; `current` is the value
/// it has now.
fn normalise(d: &Definition, value: &str, current: &str) -> Result<String> {
    // A startup parameter may come quoted (asyncpg sends `client_encoding='utf-8'`).
    let value = match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        Some(unquoted) if d.kind != Kind::Text => unquoted,
        _ => value,
    };
    match d.kind {
        Kind::ReadOnly => Err(read_only(d.name)),
        Kind::Text => Ok(value.to_string()),
        Kind::Bool => match value.to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" | "t" | "y" => Ok("on".to_string()),
            "off" | "false" | "no" | "0" | "f" | "n" => Ok("off".to_string()),
            _ => Err(RunnelError::plan(
                SqlState::INVALID_PARAMETER_VALUE,
                format!("parameter \"{}\" requires a Boolean value", d.name),
            )),
        },
        Kind::Integer { min, max } => {
            let n: i64 = value.trim().parse().map_err(|_| {
                RunnelError::plan(
                    SqlState::INVALID_PARAMETER_VALUE,
                    format!("invalid value for parameter \"{}\": \"{value}\"", d.name),
                )
            })?;
            if n < min || n > max {
                return Err(RunnelError::plan(
                    SqlState::INVALID_PARAMETER_VALUE,
                    format!(
                        "{n} is outside the valid range for parameter \"{}\" ({min} .. {max})",
                        d.name
                    ),
                ));
            }
            Ok(n.to_string())
        }
        Kind::Milliseconds => parse_milliseconds(value)
            .map(|ms| ms.to_string())
            .ok_or_else(|| {
                invalid_value(
                    d.name,
                    value,
                    "\nHINT:  Valid units for this parameter are \"us\", \"ms\", \"s\", \"min\", \"h\", and \"d\".",
                )
            }),
        Kind::TimeZone => {
            let trimmed = value.trim();
            let canonical = if trimmed.eq_ignore_ascii_case("utc") || trimmed.eq_ignore_ascii_case("z") {
                "UTC".to_string()
            } else if trimmed.eq_ignore_ascii_case("gmt") {
                "GMT".to_string()
            } else {
                trimmed.to_string()
            };
            datafusion::arrow::array::timezone::Tz::from_str(&canonical)
                .map(|_| canonical.clone())
                .map_err(|_| {
                    invalid_value(d.name, value, "")
                })
        }
        Kind::DateStyle => {
            let current = DateStyle::parse_setting(current, Default::default()).unwrap_or_default();
            DateStyle::parse_setting(value, current)
                .map(|(style, order)| DateStyle::setting_text(style, order))
                .ok_or_else(|| invalid_value(d.name, value, ""))
        }
        Kind::Enum(allowed) => allowed
            .iter()
            .find(|a| a.eq_ignore_ascii_case(value.trim()))
            .map(|a| {
                // Postgres prints these as it keeps them: UTF8 for every spelling of it.
                if d.name == "client_encoding" {
                    "UTF8".to_string()
                } else {
                    a.to_string()
                }
            })
            .ok_or_else(|| invalid_value(d.name, value, "")),
    }
}

/// Postgres's time units for `statement_timeout` and friends; a bare number is milliseconds.
fn parse_milliseconds(value: &str) -> Option<u64> {
    let value = value.trim();
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match unit.trim() {
        "" | "ms" => 1.0,
        "us" => 0.001,
        "s" => 1_000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return None,
    };
    let ms = (number * factor).round();
    (ms >= 0.0 && ms <= i32::MAX as f64).then_some(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_show_reset_like_postgres() {
        let settings = SessionSettings::default();
        assert_eq!(settings.get("server_version").unwrap(), POSTGRES_VERSION);
        assert_eq!(settings.get("timezone").unwrap(), "UTC");
        settings
            .set("TIMEZONE", Some("Europe/Berlin"), false)
            .unwrap();
        assert_eq!(settings.get("TimeZone").unwrap(), "Europe/Berlin");
        assert!(settings
            .set("TimeZone", Some("Mars/Olympus"), false)
            .is_err());
        settings
            .set("statement_timeout", Some("2s"), false)
            .unwrap();
        assert_eq!(settings.get("statement_timeout").unwrap(), "2000");
        assert_eq!(
            settings.statement_timeout(),
            Some(std::time::Duration::from_secs(2))
        );
        let err = settings.get("no_such_thing").unwrap_err();
        assert_eq!(err.sqlstate(), UNDEFINED_OBJECT);
        assert_eq!(
            settings
                .set("server_version", Some("16"), false)
                .unwrap_err()
                .sqlstate(),
            CANT_CHANGE_RUNTIME_PARAM
        );
        settings.set("myapp.tenant", Some("acme"), false).unwrap();
        assert_eq!(settings.get("MyApp.Tenant").unwrap(), "acme");
        assert_eq!(
            settings.take_reported_changes(),
            vec![("TimeZone".to_string(), "Europe/Berlin".to_string())]
        );
    }

    #[test]
    fn local_values_end_with_the_transaction() {
        let settings = SessionSettings::default();
        settings
            .set("extra_float_digits", Some("2"), false)
            .unwrap();
        settings.set("extra_float_digits", Some("3"), true).unwrap();
        settings.set("application_name", Some("job"), true).unwrap();
        assert_eq!(settings.get("extra_float_digits").unwrap(), "3");
        settings.end_transaction();
        assert_eq!(settings.get("extra_float_digits").unwrap(), "2");
        assert_eq!(settings.get("application_name").unwrap(), "");
        settings
            .set("extra_float_digits", Some("9"), false)
            .unwrap_err();
        settings.reset_all();
        assert_eq!(settings.get("extra_float_digits").unwrap(), "1");
    }
}
