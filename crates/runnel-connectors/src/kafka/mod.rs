//! The Kafka transport (librdkafka through the `rdkafka` crate, bundled build).
//!
//! Runnel never joins consumer groups: it assigns every partition of a topic explicitly at
//! offsets it stores itself, in the same atomic write as the data read (see the server's
//! ingest loop). That is what makes replay and recovery exactly once.
//!
//! Every client is configured by [`client_config`]: the bootstrap servers plus the TLS/SASL
//! settings of its `WITH (...)` options, with the SASL password file read at that moment.

mod read_rate;
mod reader;
mod sink;

pub use read_rate::{measure_read_rate, ReadRate};
pub use reader::{resolve_start, KafkaRecord, TopicReader};
pub use sink::{send_waiting, DeliveryStatus, KafkaSink};

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;

use crate::error::{ConnectorError, Result};
use crate::options::KafkaSecurity;

/// How long a metadata or watermark request may take before the broker counts as unreachable.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// A client configuration for `bootstrap` with the TLS/SASL settings of `security`. Reads the
/// SASL password file, if there is one, now: call it when connecting, not when parsing.
pub fn client_config(bootstrap: &str, security: &KafkaSecurity) -> Result<ClientConfig> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in security.properties()? {
        config.set(key, value);
    }
    // librdkafka reports a dropped connection (a TLS peer that hangs up, say) at info level:
    // [`LastFailure`] needs those lines whatever RUNNEL_LOG says (the log filter still
    // decides what is printed).
    config.set_log_level(RDKafkaLogLevel::Info);
    Ok(config)
}

/// The last failure librdkafka logged for a client (a TLS handshake or SASL authentication
/// that failed, a refused connection). A request to a broker that cannot be reached only fails
/// with "timed out" or "transport failure"; this is what says why. Clients' contexts forward
/// their `log` callback here.
#[derive(Default)]
pub struct LastFailure(Mutex<Failures>);

#[derive(Default)]
struct Failures {
    /// The last line logged as an error.
    error: Option<String>,
    /// The last broker failure (facility FAIL) logged at a lower level ("Disconnected").
    other: Option<String>,
}

impl LastFailure {
    /// Keeps `message` if it reports a failure, and logs it as rdkafka's default context does.
    pub fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        use RDKafkaLogLevel::*;
        let error = matches!(level, Emerg | Alert | Critical | Error);
        if error || facility == "FAIL" {
            let line = Some(without_thread(message).to_string());
            let mut failures = self.0.lock().unwrap_or_else(|p| p.into_inner());
            match error {
                true => failures.error = line,
                false => failures.other = line,
            }
        }
        match level {
            Emerg | Alert | Critical | Error => {
                tracing::error!(target: "librdkafka", "librdkafka: {facility} {message}")
            }
            Warning => tracing::warn!(target: "librdkafka", "librdkafka: {facility} {message}"),
            Notice | Info => {
                tracing::info!(target: "librdkafka", "librdkafka: {facility} {message}")
            }
            Debug => tracing::debug!(target: "librdkafka", "librdkafka: {facility} {message}"),
        }
    }

    /// Whether an error line was logged (the best explanation there is).
    pub fn has_error(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .error
            .is_some()
    }

    /// `e` as a connector error, with the last logged failure appended when it is a broker
    /// error.
    pub fn explain(&self, e: KafkaError) -> ConnectorError {
        let why = {
            let failures = self.0.lock().unwrap_or_else(|p| p.into_inner());
            failures.error.clone().or_else(|| failures.other.clone())
        };
        match (ConnectorError::from(e), why) {
            (ConnectorError::Broker(m), Some(why)) => {
                ConnectorError::Broker(format!("{m}; last broker error: {why}"))
            }
            (e, _) => e,
        }
    }
}

/// A librdkafka log line without its `[thrd:...]: ` prefix (the broker is named again after it).
fn without_thread(message: &str) -> &str {
    match message
        .strip_prefix("[thrd:")
        .and_then(|rest| rest.split_once("]: "))
    {
        Some((_, text)) => text,
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_failure_explains_broker_errors() {
        let failure = LastFailure::default();
        let timed_out =
            || KafkaError::MetadataFetch(rdkafka::error::RDKafkaErrorCode::OperationTimedOut);
        // Nothing logged: the error as it is.
        assert!(!failure
            .explain(timed_out())
            .to_string()
            .contains("last broker error"));
        failure.log(
            RDKafkaLogLevel::Info,
            "FAIL",
            "[thrd:ssl://b:1/bootstrap]: ssl://b:1/bootstrap: Disconnected: SSL connection closed by peer",
        );
        assert!(failure.explain(timed_out()).to_string().ends_with(
            "; last broker error: ssl://b:1/bootstrap: Disconnected: SSL connection closed by peer"
        ));
        // An error-level line wins over a later, vaguer one.
        failure.log(
            RDKafkaLogLevel::Error,
            "FAIL",
            "b:1: SASL authentication error: invalid-proof",
        );
        failure.log(RDKafkaLogLevel::Info, "FAIL", "b:1: Disconnected");
        assert!(failure
            .explain(timed_out())
            .to_string()
            .ends_with("; last broker error: b:1: SASL authentication error: invalid-proof"));
        // A client that could not be created is the user's configuration, not the broker.
        let client = failure.explain(KafkaError::ClientCreation("ssl.key.location failed".into()));
        assert!(matches!(client, ConnectorError::Client(_)), "{client:?}");
    }
}
