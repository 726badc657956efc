//! `WITH (...)` options of Kafka streams, tables, views and sinks.

use std::collections::BTreeMap;

use crate::error::{ConnectorError, Result};

/// How record values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl Format {
    fn parse(s: &str) -> Result<Format> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            other => Err(ConnectorError::Options(format!(
                "format '{other}' is not supported (use 'json' or 'csv')"
            ))),
        }
    }
}

/// Where reading a topic starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    /// The first offset each partition still holds.
    Earliest,
    /// Each partition's end (high watermark) when the position is resolved.
    Latest,
    /// Explicit next offsets per partition; partitions not named start at the earliest.
    Offsets(BTreeMap<i32, i64>),
    /// Per partition, the first offset whose record timestamp is at or after this instant
    /// (milliseconds since the epoch), as Kafka's offsets-for-times defines it.
    Timestamp(i64),
}

impl StartPosition {
    pub fn parse(s: &str) -> Result<StartPosition> {
        let trimmed = s.trim();
        let lower = trimmed.to_ascii_lowercase();
        if lower == "earliest" {
            return Ok(StartPosition::Earliest);
        }
        if lower == "latest" {
            return Ok(StartPosition::Latest);
        }
        if let Some(list) = lower.strip_prefix("offsets:") {
            let mut offsets = BTreeMap::new();
            for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let parsed = part.split_once('=').and_then(|(p, o)| {
                    Some((p.trim().parse::<i32>().ok()?, o.trim().parse::<i64>().ok()?))
                });
                match parsed {
                    Some((p, o)) if p >= 0 && o >= 0 => {
                        if offsets.insert(p, o).is_some() {
                            return Err(ConnectorError::Options(format!(
                                "start offsets name partition {p} twice"
                            )));
                        }
                    }
                    _ => {
                        return Err(ConnectorError::Options(format!(
                            "bad start offset '{part}': expected partition=offset, e.g. 'offsets:0=42,1=17'"
                        )))
                    }
                }
            }
            if offsets.is_empty() {
                return Err(ConnectorError::Options(
                    "start 'offsets:' names no partition (e.g. 'offsets:0=42,1=17')".into(),
                ));
            }
            return Ok(StartPosition::Offsets(offsets));
        }
        if lower.starts_with("timestamp:") {
            let text = &trimmed["timestamp:".len()..];
            let ts = chrono::DateTime::parse_from_rfc3339(text.trim()).map_err(|e| {
                ConnectorError::Options(format!(
                    "bad start timestamp '{text}': {e} (expected RFC 3339, e.g. 2026-06-10T00:00:00Z)"
                ))
            })?;
            return Ok(StartPosition::Timestamp(ts.timestamp_millis()));
        }
        Err(ConnectorError::Options(format!(
            "bad start '{trimmed}': expected 'earliest', 'latest', 'offsets:0=42,1=17' or 'timestamp:<RFC 3339>'"
        )))
    }
}

/// What a stream does with a record it cannot decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnError {
    /// Count it, remember the error, go on.
    Skip,
    /// Stop the stream at the record (everything before it is kept).
    Fail,
    /// Count it and copy the raw record to this topic.
    DeadLetter(String),
}

impl OnError {
    fn parse(s: &str) -> Result<OnError> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "skip" => Ok(OnError::Skip),
            "fail" => Ok(OnError::Fail),
            _ => match s.trim().split_once(':') {
                Some((kind, topic))
                    if kind.eq_ignore_ascii_case("dlq") && !topic.trim().is_empty() =>
                {
                    Ok(OnError::DeadLetter(topic.trim().to_string()))
                }
                _ => Err(ConnectorError::Options(format!(
                    "bad on_error '{s}': expected 'skip', 'fail' or 'dlq:<topic>'"
                ))),
            },
        }
    }
}

/// A stream's or table's Kafka options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaOptions {
    pub topic: String,
    pub bootstrap_servers: String,
    pub format: Format,
    pub start: StartPosition,
    pub on_error: OnError,
    /// A partition that sent nothing for this long, with nothing left to read, stops holding
    /// the stream's watermark back (`idle_timeout`, default 10 seconds).
    pub idle_timeout: std::time::Duration,
}

/// The default of `idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A duration option such as '10 seconds' or '500 milliseconds'.
fn parse_duration(key: &str, text: &str) -> Result<std::time::Duration> {
    use datafusion::arrow::compute::kernels::cast_utils::parse_interval_month_day_nano;
    parse_interval_month_day_nano(text)
        .ok()
        .and_then(runnel_common::time::interval_micros)
        .and_then(|us| u64::try_from(us).ok())
        .map(std::time::Duration::from_micros)
        .ok_or_else(|| {
            ConnectorError::Options(format!(
                "{key} = '{text}' is not a duration (write e.g. '10 seconds')"
            ))
        })
}

fn take(options: &[(String, String)], key: &str) -> Option<String> {
    options
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

fn check_known(options: &[(String, String)], known: &[&str], what: &str) -> Result<()> {
    match options.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        Some((k, _)) => Err(ConnectorError::Options(format!(
            "unknown option '{k}' for {what} (known: {})",
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

fn connector(options: &[(String, String)]) -> Result<Option<()>> {
    match take(options, "connector") {
        None => Ok(None),
        Some(c) if c.eq_ignore_ascii_case("kafka") => Ok(Some(())),
        Some(c) => Err(ConnectorError::Options(format!(
            "connector '{c}' is not supported (use 'kafka', or omit connector for an embedded relation)"
        ))),
    }
}

fn bootstrap(options: &[(String, String)], default: Option<&str>) -> Result<String> {
    take(options, "bootstrap_servers")
        .or_else(|| default.map(str::to_string))
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            ConnectorError::Options(
                "bootstrap_servers is not set: give it in WITH (...) or start the server with --kafka-bootstrap-servers".into(),
            )
        })
}

fn topic(options: &[(String, String)]) -> Result<String> {
    take(options, "topic")
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| ConnectorError::Options("connector 'kafka' needs a topic option".into()))
}

impl KafkaOptions {
    /// The Kafka options of a stream or table, or `None` for an embedded one (no connector).
    pub fn from_options(
        options: &[(String, String)],
        default_bootstrap: Option<&str>,
    ) -> Result<Option<KafkaOptions>> {
        if connector(options)?.is_none() {
            if let Some((k, _)) = options.first() {
                return Err(ConnectorError::Options(format!(
                    "option '{k}' needs connector = 'kafka' (embedded streams and tables take no options)"
                )));
            }
            return Ok(None);
        }
        check_known(
            options,
            &[
                "connector",
                "topic",
                "bootstrap_servers",
                "format",
                "start",
                "on_error",
                "idle_timeout",
            ],
            "a kafka stream or table",
        )?;
        Ok(Some(KafkaOptions {
            topic: topic(options)?,
            bootstrap_servers: bootstrap(options, default_bootstrap)?,
            format: take(options, "format")
                .map(|f| Format::parse(&f))
                .transpose()?
                .unwrap_or(Format::Json),
            start: take(options, "start")
                .map(|s| StartPosition::parse(&s))
                .transpose()?
                .unwrap_or(StartPosition::Earliest),
            on_error: take(options, "on_error")
                .map(|s| OnError::parse(&s))
                .transpose()?
                .unwrap_or(OnError::Skip),
            idle_timeout: take(options, "idle_timeout")
                .map(|s| parse_duration("idle_timeout", &s))
                .transpose()?
                .unwrap_or(DEFAULT_IDLE_TIMEOUT),
        }))
    }
}

/// How a sink writes a view's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkMode {
    /// Every change as a record with an `_op` field (`insert` / `delete`).
    Append,
    /// Keyed by the view's key: the new row as value, a tombstone when the key is deleted.
    Upsert,
}

/// A sink's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkOptions {
    pub topic: String,
    pub bootstrap_servers: String,
    pub mode: SinkMode,
}

impl SinkOptions {
    pub fn from_options(
        options: &[(String, String)],
        default_bootstrap: Option<&str>,
    ) -> Result<SinkOptions> {
        if connector(options)?.is_none() {
            return Err(ConnectorError::Options(
                "a sink needs connector = 'kafka'".into(),
            ));
        }
        check_known(
            options,
            &["connector", "topic", "bootstrap_servers", "format", "mode"],
            "a kafka sink",
        )?;
        if let Some(f) = take(options, "format") {
            if Format::parse(&f)? != Format::Json {
                return Err(ConnectorError::Options(
                    "sinks write format 'json' only".into(),
                ));
            }
        }
        let mode = match take(options, "mode").map(|m| m.to_ascii_lowercase()) {
            None => SinkMode::Append,
            Some(m) if m == "append" => SinkMode::Append,
            Some(m) if m == "upsert" => SinkMode::Upsert,
            Some(m) => {
                return Err(ConnectorError::Options(format!(
                    "sink mode '{m}' is not supported (use 'append' or 'upsert')"
                )))
            }
        };
        Ok(SinkOptions {
            topic: topic(options)?,
            bootstrap_servers: bootstrap(options, default_bootstrap)?,
            mode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse() {
        assert_eq!(
            StartPosition::parse("earliest").unwrap(),
            StartPosition::Earliest
        );
        assert_eq!(
            StartPosition::parse(" LATEST ").unwrap(),
            StartPosition::Latest
        );
        let offsets = StartPosition::parse("offsets:0=42, 1=17").unwrap();
        assert_eq!(
            offsets,
            StartPosition::Offsets([(0, 42), (1, 17)].into_iter().collect())
        );
        assert_eq!(
            StartPosition::parse("timestamp:2026-06-10T00:00:01Z").unwrap(),
            StartPosition::Timestamp(1_781_049_601_000)
        );
        for bad in [
            "",
            "offsets:",
            "offsets:0",
            "offsets:a=1",
            "offsets:0=-1",
            "offsets:0=1,0=2",
            "timestamp:yesterday",
            "first",
        ] {
            assert!(
                StartPosition::parse(bad).is_err(),
                "{bad} should be refused"
            );
        }
    }

    fn opts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kafka_options_defaults_and_errors() {
        let o = KafkaOptions::from_options(
            &opts(&[("connector", "kafka"), ("topic", "t")]),
            Some("b:1"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(o.bootstrap_servers, "b:1");
        assert_eq!(o.format, Format::Json);
        assert_eq!(o.start, StartPosition::Earliest);
        assert_eq!(o.on_error, OnError::Skip);
        assert!(KafkaOptions::from_options(&[], None).unwrap().is_none());
        let dlq = KafkaOptions::from_options(
            &opts(&[
                ("connector", "kafka"),
                ("topic", "t"),
                ("on_error", "dlq:bad"),
                ("format", "csv"),
            ]),
            Some("b:1"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(dlq.on_error, OnError::DeadLetter("bad".into()));
        assert_eq!(dlq.format, Format::Csv);
        for bad in [
            opts(&[("connector", "kafka")]),
            opts(&[("connector", "kafka"), ("topic", "t"), ("colour", "red")]),
            opts(&[("connector", "file"), ("topic", "t")]),
            opts(&[("topic", "t")]),
            opts(&[("connector", "kafka"), ("topic", "t"), ("format", "avro")]),
            opts(&[("connector", "kafka"), ("topic", "t"), ("on_error", "dlq:")]),
        ] {
            assert!(
                KafkaOptions::from_options(&bad, Some("b:1")).is_err(),
                "{bad:?}"
            );
        }
        assert!(
            KafkaOptions::from_options(&opts(&[("connector", "kafka"), ("topic", "t")]), None)
                .is_err()
        );
    }

    #[test]
    fn sink_options() {
        let s = SinkOptions::from_options(
            &opts(&[
                ("connector", "kafka"),
                ("topic", "o"),
                ("mode", "upsert"),
                ("format", "json"),
            ]),
            Some("b:1"),
        )
        .unwrap();
        assert_eq!(s.mode, SinkMode::Upsert);
        assert!(SinkOptions::from_options(
            &opts(&[("connector", "kafka"), ("topic", "o"), ("mode", "x")]),
            Some("b")
        )
        .is_err());
        assert!(SinkOptions::from_options(&opts(&[("topic", "o")]), Some("b")).is_err());
    }
}
