//! The server's Prometheus metrics, kept in one [`prometheus`] registry: what the sessions
//! count as they go (connections, queries by outcome) and what is read when a scrape comes
//! (state size, checkpoints, the process's own figures).

use std::time::Duration;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use runnel_common::{Result, RunnelError};
use runnel_runtime::CheckpointStats;
use runnel_state::Store;

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// Open client connections.
    pub connections: IntGauge,
    /// Statements run, by `outcome` (`ok` or `error`).
    pub queries: IntCounterVec,
    state_bytes: IntGauge,
    checkpoint_seconds: Histogram,
    checkpoint_last_success: Gauge,
}

fn registration(error: prometheus::Error) -> RunnelError {
    RunnelError::internal(format!("cannot register a metric: {error}"))
}

impl Metrics {
    pub fn new() -> Result<Metrics> {
        let registry = Registry::new();
        let connections = IntGauge::new("runnel_connections", "Open client connections.")
            .map_err(registration)?;
        let queries = IntCounterVec::new(
            Opts::new(
                "runnel_queries_total",
                "Statements run, by outcome (ok or error).",
            ),
            &["outcome"],
        )
        .map_err(registration)?;
        let state_bytes = IntGauge::new(
            "runnel_state_bytes",
            "Bytes of live state in RocksDB (its estimate, memtables included).",
        )
        .map_err(registration)?;
        let checkpoint_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "runnel_checkpoint_duration_seconds",
                "How long writing a checkpoint took.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .map_err(registration)?;
        let checkpoint_last_success = Gauge::new(
            "runnel_checkpoint_last_success_timestamp_seconds",
            "When the last checkpoint was written (Unix time; 0 before the first).",
        )
        .map_err(registration)?;
        for metric in [
            Box::new(connections.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(queries.clone()),
            Box::new(state_bytes.clone()),
            Box::new(checkpoint_seconds.clone()),
            Box::new(checkpoint_last_success.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry.register(metric).map_err(registration)?;
        }
        // Both outcomes are there from the start, so a rate over them is defined at once.
        queries.with_label_values(&["ok"]);
        queries.with_label_values(&["error"]);
        Ok(Metrics {
            registry,
            connections,
            queries,
            state_bytes,
            checkpoint_seconds,
            checkpoint_last_success,
        })
    }

    /// Counts a statement that ran.
    pub fn count_query(&self, ok: bool) {
        self.queries
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Every metric in Prometheus's text format, with the figures read now.
    pub fn render(&self, store: &Store, checkpoints: &CheckpointStats) -> Result<String> {
        self.state_bytes
            .set(i64::try_from(store.live_data_bytes()).unwrap_or(i64::MAX));
        for took in checkpoints.take_durations() {
            self.checkpoint_seconds.observe(took.as_secs_f64());
        }
        let last = Duration::from_millis(checkpoints.last_success_unix_ms());
        self.checkpoint_last_success.set(last.as_secs_f64());
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| RunnelError::internal(format!("cannot encode the metrics: {e}")))?;
        String::from_utf8(out)
            .map_err(|e| RunnelError::internal(format!("the metrics are not UTF-8: {e}")))
    }
}
