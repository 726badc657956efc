//! `WITH (...)` options of Kafka streams, tables, views and sinks, parsed and checked once
//! into typed values, including the TLS and SASL settings ([`KafkaSecurity`]) that go to
//! librdkafka unchanged, and the rule that their secrets are never shown.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

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
    /// TLS and SASL settings of the consumer (and of the dead-letter producer).
    pub security: KafkaSecurity,
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

/// The librdkafka properties a `WITH (...)` may set, passed to librdkafka under the same names
/// (after the checks in [`KafkaSecurity::from_options`]; the enumerated values are spelled as
/// librdkafka wants them). `sasl.mechanisms`, librdkafka's own spelling, is accepted as an
/// alias of `sasl.mechanism`.
pub const SECURITY_OPTIONS: &[&str] = &[
    "security.protocol",
    "sasl.mechanism",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
];

/// Runnel's own option: the SASL password is the first line of this file on the server, read
/// each time the client connects, so the password never appears in SQL or in the catalog.
pub const SASL_PASSWORD_FILE: &str = "sasl.password.file";

/// The security option `key` names, in its dotted spelling. Each may also be written with
/// underscores (`security_protocol`, like `bootstrap_servers`): a dotted key must be quoted in
/// SQL (`"security.protocol" = 'sasl_ssl'`), an underscored one need not be.
fn security_key(key: &str) -> Option<&'static str> {
    SECURITY_OPTIONS
        .iter()
        .chain(&["sasl.mechanisms", SASL_PASSWORD_FILE])
        .find(|k| k.replace('.', "_") == key.replace('.', "_"))
        .copied()
}

/// What a secret option's value (`sasl.password`, `ssl.key.password`) is shown as.
pub const REDACTED: &str = "********";

/// A secret string (a password). Its `Debug` shows [`REDACTED`], so structs holding it can be
/// printed and logged without leaking it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    const ALL: [SecurityProtocol; 4] = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ];

    fn parse(s: &str) -> Result<SecurityProtocol> {
        let name = s.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
            .ok_or_else(|| {
                ConnectorError::Options(format!(
                    "security.protocol '{s}' is not supported (use 'plaintext', 'ssl', 'sasl_plaintext' or 'sasl_ssl')"
                ))
            })
    }

    /// librdkafka's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// `sasl.mechanism`. GSSAPI (Kerberos) and OAUTHBEARER are not offered: the first needs Cyrus
/// SASL in the build, the second a token provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    const ALL: [SaslMechanism; 3] = [
        SaslMechanism::Plain,
        SaslMechanism::ScramSha256,
        SaslMechanism::ScramSha512,
    ];

    fn parse(s: &str) -> Result<SaslMechanism> {
        let name = s.trim().to_ascii_uppercase();
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == name)
            .ok_or_else(|| {
                ConnectorError::Options(format!(
                    "sasl.mechanism '{s}' is not supported (use 'PLAIN', 'SCRAM-SHA-256' or 'SCRAM-SHA-512')"
                ))
            })
    }

    /// librdkafka's name (it compares mechanism names case-sensitively).
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Where the SASL password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslPassword {
    /// `sasl.password`, given in the statement.
    Inline(Secret),
    /// `sasl.password.file`: the first line of this file on the server.
    File(PathBuf),
}

/// The TLS and SASL settings of a Kafka client. The default is a plaintext connection without
/// authentication, what librdkafka does when given none of the options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaSecurity {
    pub protocol: Option<SecurityProtocol>,
    pub sasl_mechanism: Option<SaslMechanism>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<SaslPassword>,
    pub ssl_ca_location: Option<String>,
    pub ssl_certificate_location: Option<String>,
    pub ssl_key_location: Option<String>,
    pub ssl_key_password: Option<Secret>,
    pub ssl_endpoint_identification_algorithm: Option<String>,
}

impl KafkaSecurity {
    /// The server files these settings make the server read (`sasl.password.file`,
    /// `ssl.*.location`), by option name.
    pub fn server_files(&self) -> Vec<(&'static str, String)> {
        let mut files = Vec::new();
        if let Some(SaslPassword::File(path)) = &self.sasl_password {
            files.push(("sasl.password.file", path.display().to_string()));
        }
        for (name, location) in [
            ("ssl.ca.location", &self.ssl_ca_location),
            ("ssl.certificate.location", &self.ssl_certificate_location),
            ("ssl.key.location", &self.ssl_key_location),
        ] {
            if let Some(location) = location {
                files.push((name, location.clone()));
            }
        }
        files
    }

    /// The security options of a `WITH (...)` list (other options are left alone: the caller
    /// checks for unknown ones). Checks values and that they fit together; never reads a file.
    pub fn from_options(options: &[(String, String)]) -> Result<KafkaSecurity> {
        let options: Vec<(String, String)> = options
            .iter()
            .filter_map(|(k, v)| security_key(k).map(|key| (key.to_string(), v.clone())))
            .collect();
        // A value that is not empty. Never echoes a secret's value.
        let text = |key: &str| -> Result<Option<String>> {
            match take(&options, key) {
                Some(v) if v.trim().is_empty() => Err(ConnectorError::Options(format!(
                    "{key} is empty (omit the option instead)"
                ))),
                other => Ok(other),
            }
        };
        let mechanism = match (text("sasl.mechanism")?, text("sasl.mechanisms")?) {
            (Some(_), Some(_)) => {
                return Err(ConnectorError::Options(
                    "sasl.mechanism and sasl.mechanisms are the same option: give one".into(),
                ))
            }
            (a, b) => a.or(b).map(|m| SaslMechanism::parse(&m)).transpose()?,
        };
        let sasl_password = match (text("sasl.password")?, text(SASL_PASSWORD_FILE)?) {
            (Some(_), Some(_)) => {
                return Err(ConnectorError::Options(format!(
                    "give sasl.password or {SASL_PASSWORD_FILE}, not both"
                )))
            }
            (Some(p), None) => Some(SaslPassword::Inline(Secret(p))),
            (None, Some(f)) => {
                let path = PathBuf::from(&f);
                if !path.is_absolute() {
                    return Err(ConnectorError::Options(format!(
                        "{SASL_PASSWORD_FILE} '{f}' must be an absolute path (a file on the server)"
                    )));
                }
                Some(SaslPassword::File(path))
            }
            (None, None) => None,
        };
        let endpoint = text("ssl.endpoint.identification.algorithm")?
            .map(|a| match a.trim().to_ascii_lowercase().as_str() {
                v @ ("none" | "https") => Ok(v.to_string()),
                _ => Err(ConnectorError::Options(format!(
                    "ssl.endpoint.identification.algorithm '{a}' is not supported (use 'https' or 'none')"
                ))),
            })
            .transpose()?;
        let security = KafkaSecurity {
            protocol: text("security.protocol")?
                .map(|p| SecurityProtocol::parse(&p))
                .transpose()?,
            sasl_mechanism: mechanism,
            sasl_username: text("sasl.username")?,
            sasl_password,
            ssl_ca_location: text("ssl.ca.location")?,
            ssl_certificate_location: text("ssl.certificate.location")?,
            ssl_key_location: text("ssl.key.location")?,
            ssl_key_password: text("ssl.key.password")?.map(Secret),
            ssl_endpoint_identification_algorithm: endpoint,
        };
        security.check()?;
        Ok(security)
    }

    /// Options that librdkafka would ignore under the chosen protocol are refused rather than
    /// silently unused (a user who gives a password expects it to be used), and a SASL
    /// protocol needs its mechanism and credentials (librdkafka's default mechanism, GSSAPI,
    /// is not in the build).
    fn check(&self) -> Result<()> {
        let protocol = self.protocol.unwrap_or(SecurityProtocol::Plaintext);
        let named = match self.protocol {
            Some(p) => format!("security.protocol is '{}'", p.as_str()),
            None => "security.protocol is not set (plaintext)".to_string(),
        };
        let sasl_given = [
            ("sasl.mechanism", self.sasl_mechanism.is_some()),
            ("sasl.username", self.sasl_username.is_some()),
            (
                match self.sasl_password {
                    Some(SaslPassword::File(_)) => SASL_PASSWORD_FILE,
                    _ => "sasl.password",
                },
                self.sasl_password.is_some(),
            ),
        ];
        if !protocol.sasl() {
            if let Some((key, _)) = sasl_given.iter().find(|(_, given)| *given) {
                return Err(ConnectorError::Options(format!(
                    "{key} is set but {named}: use 'sasl_plaintext' or 'sasl_ssl' to authenticate with SASL"
                )));
            }
        } else if let Some((key, _)) = sasl_given.iter().find(|(_, given)| !*given) {
            let key = match *key {
                "sasl.password" => "sasl.password (or sasl.password.file)",
                "sasl.mechanism" => "sasl.mechanism ('PLAIN', 'SCRAM-SHA-256' or 'SCRAM-SHA-512')",
                k => k,
            };
            return Err(ConnectorError::Options(format!(
                "{named}, which needs {key}"
            )));
        }
        let tls_given = [
            ("ssl.ca.location", self.ssl_ca_location.is_some()),
            (
                "ssl.certificate.location",
                self.ssl_certificate_location.is_some(),
            ),
            ("ssl.key.location", self.ssl_key_location.is_some()),
            ("ssl.key.password", self.ssl_key_password.is_some()),
            (
                "ssl.endpoint.identification.algorithm",
                self.ssl_endpoint_identification_algorithm.is_some(),
            ),
        ];
        if !protocol.tls() {
            if let Some((key, _)) = tls_given.iter().find(|(_, given)| *given) {
                return Err(ConnectorError::Options(format!(
                    "{key} is set but {named}: use 'ssl' or 'sasl_ssl' to connect with TLS"
                )));
            }
        }
        if self.ssl_certificate_location.is_some() != self.ssl_key_location.is_some() {
            return Err(ConnectorError::Options(
                "ssl.certificate.location and ssl.key.location go together (a client certificate and its key)".into(),
            ));
        }
        if self.ssl_key_password.is_some() && self.ssl_key_location.is_none() {
            return Err(ConnectorError::Options(
                "ssl.key.password is set without ssl.key.location".into(),
            ));
        }
        Ok(())
    }

    /// The librdkafka properties to set, with the SASL password read from its file now (each
    /// connection reads it again, so a rotated password is picked up on reconnecting).
    pub fn properties(&self) -> Result<Vec<(&'static str, String)>> {
        let mut out = Vec::new();
        let mut put = |key: &'static str, value: Option<&str>| {
            if let Some(v) = value {
                out.push((key, v.to_string()));
            }
        };
        put(
            "security.protocol",
            self.protocol.map(SecurityProtocol::as_str),
        );
        put(
            "sasl.mechanism",
            self.sasl_mechanism.map(SaslMechanism::as_str),
        );
        put("sasl.username", self.sasl_username.as_deref());
        put("ssl.ca.location", self.ssl_ca_location.as_deref());
        put(
            "ssl.certificate.location",
            self.ssl_certificate_location.as_deref(),
        );
        put("ssl.key.location", self.ssl_key_location.as_deref());
        put(
            "ssl.key.password",
            self.ssl_key_password.as_ref().map(Secret::expose),
        );
        put(
            "ssl.endpoint.identification.algorithm",
            self.ssl_endpoint_identification_algorithm.as_deref(),
        );
        match &self.sasl_password {
            Some(SaslPassword::Inline(p)) => out.push(("sasl.password", p.expose().to_string())),
            Some(SaslPassword::File(path)) => {
                out.push(("sasl.password", read_password_file(path)?))
            }
            None => {}
        }
        Ok(out)
    }
}

/// The first line of a password file (without its line ending; other whitespace is part of the
/// password).
fn read_password_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|source| ConnectorError::SecretFile {
        option: SASL_PASSWORD_FILE,
        path: path.to_path_buf(),
        source,
    })?;
    let first = text.split('\n').next().unwrap_or_default();
    let first = first.strip_suffix('\r').unwrap_or(first);
    if first.is_empty() {
        return Err(ConnectorError::Options(format!(
            "{SASL_PASSWORD_FILE} '{}': the first line is empty (it must hold the password)",
            path.display()
        )));
    }
    Ok(first.to_string())
}

fn take(options: &[(String, String)], key: &str) -> Option<String> {
    options
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

fn check_known(options: &[(String, String)], known: &[&str], what: &str) -> Result<()> {
    let unknown = |k: &str| !known.contains(&k) && security_key(k).is_none();
    match options.iter().find(|(k, _)| unknown(k)) {
        Some((k, _)) => Err(ConnectorError::Options(format!(
            "unknown option '{k}' for {what} (known: {}, and the TLS/SASL options {}, {SASL_PASSWORD_FILE})",
            known.join(", "),
            SECURITY_OPTIONS.join(", ")
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
            security: KafkaSecurity::from_options(options)?,
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
    /// TLS and SASL settings of the producer.
    pub security: KafkaSecurity,
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
            security: KafkaSecurity::from_options(options)?,
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

    fn kafka(extra: &[(&str, &str)]) -> Result<KafkaOptions> {
        let mut pairs = vec![("connector", "kafka"), ("topic", "t")];
        pairs.extend_from_slice(extra);
        KafkaOptions::from_options(&opts(&pairs), Some("b:1")).map(|o| o.expect("kafka options"))
    }

    fn sink(extra: &[(&str, &str)]) -> Result<SinkOptions> {
        let mut pairs = vec![("connector", "kafka"), ("topic", "t")];
        pairs.extend_from_slice(extra);
        SinkOptions::from_options(&opts(&pairs), Some("b:1"))
    }

    fn message(r: Result<impl fmt::Debug>) -> String {
        match r {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// A file in the test's own temporary directory, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &str) -> TempFile {
            let path =
                std::env::temp_dir().join(format!("runnel-options-{}-{name}", std::process::id()));
            std::fs::write(&path, contents).expect("write a temporary file");
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn security_options_reach_librdkafka_properties() {
        let o = kafka(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "scram-sha-512"),
            ("sasl.username", "alice"),
            ("sasl.password", "s3cret"),
            ("ssl.ca.location", "/etc/ca.pem"),
            ("ssl.certificate.location", "/etc/client.pem"),
            ("ssl.key.location", "/etc/client.key"),
            ("ssl.key.password", "k3y"),
            ("ssl.endpoint.identification.algorithm", "NONE"),
        ])
        .unwrap();
        let props: BTreeMap<&str, String> = o.security.properties().unwrap().into_iter().collect();
        let expected: BTreeMap<&str, String> = [
            // Normalized: librdkafka compares mechanism names case-sensitively.
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "alice"),
            ("sasl.password", "s3cret"),
            ("ssl.ca.location", "/etc/ca.pem"),
            ("ssl.certificate.location", "/etc/client.pem"),
            ("ssl.key.location", "/etc/client.key"),
            ("ssl.key.password", "k3y"),
            ("ssl.endpoint.identification.algorithm", "none"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
        assert_eq!(props, expected);
        // Sinks take the same options.
        let s = sink(&[
            ("security_protocol", "sasl_plaintext"),
            ("sasl_mechanism", "PLAIN"),
            ("sasl_username", "bob"),
            ("sasl_password", "pw"),
        ])
        .unwrap();
        assert_eq!(s.security.protocol, Some(SecurityProtocol::SaslPlaintext));
        assert_eq!(s.security.sasl_mechanism, Some(SaslMechanism::Plain));
        assert_eq!(s.security.sasl_username.as_deref(), Some("bob"));
        // No option: no property, librdkafka's plaintext default.
        assert!(kafka(&[])
            .unwrap()
            .security
            .properties()
            .unwrap()
            .is_empty());
        assert_eq!(
            kafka(&[("security.protocol", "plaintext")])
                .unwrap()
                .security
                .properties()
                .unwrap(),
            vec![("security.protocol", "plaintext".to_string())]
        );
    }

    #[test]
    fn security_option_values_are_checked() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("security.protocol", "tls")],
                "security.protocol 'tls' is not supported",
            ),
            (
                &[
                    ("security.protocol", "sasl_ssl"),
                    ("sasl.mechanism", "GSSAPI"),
                    ("sasl.username", "u"),
                    ("sasl.password", "p"),
                ],
                "sasl.mechanism 'GSSAPI' is not supported",
            ),
            (
                &[("sasl.mechanism", "PLAIN"), ("sasl.mechanisms", "PLAIN")],
                "same option",
            ),
            (
                &[("sasl.username", "u")],
                "sasl.username is set but security.protocol is not set (plaintext)",
            ),
            (
                &[("security.protocol", "ssl"), ("sasl.password", "p")],
                "sasl.password is set but security.protocol is 'ssl'",
            ),
            (
                &[
                    ("security.protocol", "sasl_plaintext"),
                    ("sasl.mechanism", "PLAIN"),
                    ("sasl.username", "u"),
                    ("sasl.password", "p"),
                    ("ssl.ca.location", "/ca"),
                ],
                "ssl.ca.location is set but security.protocol is 'sasl_plaintext'",
            ),
            (
                &[
                    ("security.protocol", "sasl_ssl"),
                    ("sasl.username", "u"),
                    ("sasl.password", "p"),
                ],
                "needs sasl.mechanism",
            ),
            (
                &[
                    ("security.protocol", "sasl_ssl"),
                    ("sasl.mechanism", "PLAIN"),
                    ("sasl.password", "p"),
                ],
                "needs sasl.username",
            ),
            (
                &[
                    ("security.protocol", "sasl_ssl"),
                    ("sasl.mechanism", "PLAIN"),
                    ("sasl.username", "u"),
                ],
                "needs sasl.password (or sasl.password.file)",
            ),
            (
                &[
                    ("security.protocol", "ssl"),
                    ("ssl.certificate.location", "/c"),
                ],
                "go together",
            ),
            (
                &[("security.protocol", "ssl"), ("ssl.key.password", "k")],
                "ssl.key.password is set without ssl.key.location",
            ),
            (
                &[
                    ("security.protocol", "ssl"),
                    ("ssl.endpoint.identification.algorithm", "dns"),
                ],
                "use 'https' or 'none'",
            ),
            (&[("security.protocol", " ")], "security.protocol is empty"),
            (
                &[
                    ("security.protocol", "sasl_ssl"),
                    ("sasl.mechanism", "PLAIN"),
                    ("sasl.username", "u"),
                    ("sasl.password", "p"),
                    ("sasl.password.file", "/p"),
                ],
                "not both",
            ),
            (
                &[
                    ("security.protocol", "sasl_ssl"),
                    ("sasl.mechanism", "PLAIN"),
                    ("sasl.username", "u"),
                    ("sasl.password.file", "secrets/pw"),
                ],
                "must be an absolute path",
            ),
            // Unknown options are still refused, security ones or not.
            (
                &[("ssl.keystore.location", "/ks")],
                "unknown option 'ssl.keystore.location'",
            ),
            (
                &[("sasl.oauthbearer.config", "x")],
                "unknown option 'sasl.oauthbearer.config'",
            ),
        ];
        for (extra, wanted) in cases {
            let got = message(kafka(extra));
            assert!(got.contains(wanted), "{extra:?}: {got}");
            let got = message(sink(extra));
            assert!(got.contains(wanted), "sink {extra:?}: {got}");
        }
        // The empty-value error never echoes a secret, nor does any other.
        let got = message(kafka(&[
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "nope"),
            ("sasl.username", "u"),
            ("sasl.password", "hunter2"),
        ]));
        assert!(!got.contains("hunter2"), "{got}");
        // Embedded streams still take no option at all.
        assert!(message(KafkaOptions::from_options(
            &opts(&[("security.protocol", "ssl")]),
            None
        ))
        .contains("needs connector = 'kafka'"));
    }

    #[test]
    fn sasl_password_file_is_read_when_connecting() {
        let sasl = |file: &str| {
            kafka(&[
                ("security.protocol", "sasl_plaintext"),
                ("sasl.mechanism", "SCRAM-SHA-256"),
                ("sasl.username", "alice"),
                ("sasl.password.file", file),
            ])
        };
        let file = TempFile::new("pw", "s3cret with spaces \r\nsecond line\n");
        let path = file.0.to_str().expect("utf-8 temp path").to_string();
        let o = sasl(&path).unwrap();
        assert_eq!(
            o.security.sasl_password,
            Some(SaslPassword::File(file.0.clone()))
        );
        let password = |o: &KafkaOptions| -> Result<String> {
            Ok(o.security
                .properties()?
                .into_iter()
                .find(|(k, _)| *k == "sasl.password")
                .map(|(_, v)| v)
                .expect("a sasl.password property"))
        };
        // The first line, without its line ending; spaces belong to the password.
        assert_eq!(password(&o).unwrap(), "s3cret with spaces ");
        // Read at each connection, not at parse time: a rotated password is picked up.
        std::fs::write(&file.0, "rotated").unwrap();
        assert_eq!(password(&o).unwrap(), "rotated");
        // An empty first line is a user error naming the file.
        std::fs::write(&file.0, "\nsecond").unwrap();
        let got = password(&o).unwrap_err().to_string();
        assert!(
            got.contains(&path) && got.contains("first line is empty"),
            "{got}"
        );

        // A missing file parses (restoring a stream at start-up must not need it) and fails
        // when connecting, naming the option and the file, with SQLSTATE 58P01.
        let missing = format!("{path}-missing");
        let o = sasl(&missing).unwrap();
        let err = password(&o).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("sasl.password.file '{missing}': cannot read it:")),
            "{text}"
        );
        let err = runnel_common::RunnelError::from(err);
        assert_eq!(err.sqlstate().0, "58P01");
    }

    #[test]
    fn secrets_are_redacted_when_printed() {
        let o = kafka(&[
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "alice"),
            ("sasl.password", "hunter2"),
            ("ssl.key.location", "/k"),
            ("ssl.certificate.location", "/c"),
            ("ssl.key.password", "keypass"),
        ])
        .unwrap();
        for printed in [format!("{o:?}"), format!("{:#?}", o.security)] {
            assert!(!printed.contains("hunter2"), "{printed}");
            assert!(!printed.contains("keypass"), "{printed}");
            assert!(printed.contains(REDACTED), "{printed}");
            assert!(printed.contains("alice"), "{printed}");
        }
        let s = sink(&[
            ("security.protocol", "sasl_plaintext"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "alice"),
            ("sasl.password", "hunter2"),
        ])
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
