//! The server's Prometheus metrics, kept in one [`prometheus`] registry: what the sessions
//! count as they go (connections, queries by outcome) and what is read when a scrape comes
//! (state size, checkpoints, sources, failed views, the process's own figures). Figures read
//! at a scrape that are counts (records read) are set on counters by resetting them first:
//! the values never go down while the server runs, and a dropped source's series go away.
//!
//! Per view: its rows and the changes applied to it (counted by the view's `Materialize`
//! operator per batch, published by the dataflow worker) and its freshness, observed from the
//! samples the worker's checkpoints took since the last scrape (what a sample measures:
//! `runnel_runtime::worker`'s module docs).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    CounterVec, Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use runnel_common::{Result, RunnelError};
use runnel_runtime::{CheckpointStats, Waited, WorkerTimes};
use runnel_state::{CacheBudget, Store};

use crate::shared::Shared;
use runnel_sql::ObjectKind;

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// Open client connections.
    pub connections: IntGauge,
    /// Statements run, by `outcome` (`ok` or `error`).
    pub queries: IntCounterVec,
    state_bytes: IntGauge,
    state_cache_bytes: IntGauge,
    state_cache_limit_bytes: IntGauge,
    state_cache_evictions: IntCounter,
    state_cache_reads: IntCounter,
    checkpoint_seconds: Histogram,
    checkpoint_last_success: Gauge,
    source_records: IntCounterVec,
    source_bad_records: IntCounterVec,
    source_lag: IntGaugeVec,
    late_events: IntCounterVec,
    sink_records: IntCounterVec,
    failed_views: IntGauge,
    view_rows: IntGaugeVec,
    view_changes: IntCounterVec,
    view_freshness: HistogramVec,
    worker_busy: CounterVec,
    worker_idle: CounterVec,
    /// Views with a freshness series, so that a dropped view's series can be removed.
    freshness_views: Mutex<BTreeSet<String>>,
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
        let state_cache_bytes = IntGauge::new(
            "runnel_state_cache_bytes",
            "Bytes the view operators' state cache holds (all operators together).",
        )
        .map_err(registration)?;
        let state_cache_limit_bytes = IntGauge::new(
            "runnel_state_cache_limit_bytes",
            "The state cache's size (--state-cache-mb).",
        )
        .map_err(registration)?;
        let state_cache_evictions = IntCounter::new(
            "runnel_state_cache_evictions_total",
            "State entries evicted from the cache to stay within its size.",
        )
        .map_err(registration)?;
        let state_cache_reads = IntCounter::new(
            "runnel_state_cache_reads_total",
            "State keys read from RocksDB because the cache did not hold them.",
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
        let source_records = IntCounterVec::new(
            Opts::new(
                "runnel_source_records_total",
                "Records a source took in since the server started: the rows appended to an \
                 embedded stream's or table's log (partition \"0\"; a table's changes, an \
                 update counting its delete and its insert), a Kafka partition's records \
                 committed, the events a Nexmark generator made.",
            ),
            &["source", "partition"],
        )
        .map_err(registration)?;
        let source_bad_records = IntCounterVec::new(
            Opts::new(
                "runnel_source_bad_records_total",
                "Kafka records that could not be decoded (on_error), since the server started.",
            ),
            &["source"],
        )
        .map_err(registration)?;
        let source_lag = IntGaugeVec::new(
            Opts::new(
                "runnel_source_lag_records",
                "Records of a Kafka partition not read yet (high watermark minus next offset).",
            ),
            &["source", "partition"],
        )
        .map_err(registration)?;
        let late_events = IntCounterVec::new(
            Opts::new(
                "runnel_late_events_total",
                "Rows a stream with a watermark dropped as late (behind its event-time clock, \
                 or without an event time), since the stream was created.",
            ),
            &["stream"],
        )
        .map_err(registration)?;
        let sink_records = IntCounterVec::new(
            Opts::new(
                "runnel_sink_records_total",
                "Records a sink delivered to Kafka (acknowledged by the broker) since the server \
                 started.",
            ),
            &["sink"],
        )
        .map_err(registration)?;
        let failed_views = IntGauge::new(
            "runnel_failed_views",
            "Materialized views that stopped updating after an error.",
        )
        .map_err(registration)?;
        let view_rows = IntGaugeVec::new(
            Opts::new(
                "runnel_view_rows",
                "Rows a materialized view holds (what SELECT count(*) of it gives).",
            ),
            &["view"],
        )
        .map_err(registration)?;
        let view_changes = IntCounterVec::new(
            Opts::new(
                "runnel_view_changes_total",
                "Changes applied to a materialized view's contents (rows inserted plus rows \
                 deleted; an update counts both) since the server started or the view was \
                 created.",
            ),
            &["view"],
        )
        .map_err(registration)?;
        let view_freshness = HistogramVec::new(
            HistogramOpts::new(
                "runnel_view_freshness_seconds",
                "Per checkpoint that changed a view: how long before it the oldest change it \
                 made visible was appended to its source log (INSERT, COPY or Kafka ingest).",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
            &["view"],
        )
        .map_err(registration)?;
        let worker_busy = CounterVec::new(
            Opts::new(
                "runnel_worker_busy_seconds_total",
                "Time a dataflow worker thread spent processing (counted when it next waits).",
            ),
            &["worker"],
        )
        .map_err(registration)?;
        let worker_idle = CounterVec::new(
            Opts::new(
                "runnel_worker_idle_seconds_total",
                "Time a dataflow worker thread spent waiting, by what the wait ended with: \
                 input (the next entries of the source logs), peers (rows, clocks or the end \
                 of a round from another worker) or control (a checkpoint, a view added).",
            ),
            &["worker", "waiting_for"],
        )
        .map_err(registration)?;
        for metric in [
            Box::new(connections.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(queries.clone()),
            Box::new(state_bytes.clone()),
            Box::new(state_cache_bytes.clone()),
            Box::new(state_cache_limit_bytes.clone()),
            Box::new(state_cache_evictions.clone()),
            Box::new(state_cache_reads.clone()),
            Box::new(checkpoint_seconds.clone()),
            Box::new(checkpoint_last_success.clone()),
            Box::new(source_records.clone()),
            Box::new(source_bad_records.clone()),
            Box::new(source_lag.clone()),
            Box::new(late_events.clone()),
            Box::new(sink_records.clone()),
            Box::new(failed_views.clone()),
            Box::new(view_rows.clone()),
            Box::new(view_changes.clone()),
            Box::new(view_freshness.clone()),
            Box::new(worker_busy.clone()),
            Box::new(worker_idle.clone()),
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
            state_cache_bytes,
            state_cache_limit_bytes,
            state_cache_evictions,
            state_cache_reads,
            checkpoint_seconds,
            checkpoint_last_success,
            source_records,
            source_bad_records,
            source_lag,
            late_events,
            sink_records,
            failed_views,
            view_rows,
            view_changes,
            view_freshness,
            worker_busy,
            worker_idle,
            freshness_views: Mutex::new(BTreeSet::new()),
        })
    }

    /// Counts a statement that ran.
    pub fn count_query(&self, ok: bool) {
        self.queries
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Every metric in Prometheus's text format, with the figures read now.
    pub async fn render(&self, shared: &Shared) -> Result<String> {
        self.read_sources(shared).await?;
        self.read_state_cache(&shared.state_cache);
        self.read_worker_times(&shared.worker.worker_times());
        self.render_with(&shared.store, &shared.worker.checkpoint_stats())
    }

    /// Sets the source and view figures from the dataflow's status and the Kafka readers'
    /// progress (what `SHOW PROGRESS` shows).
    async fn read_sources(&self, shared: &Shared) -> Result<()> {
        let status = shared.worker.status().await?;
        let kafka = shared.sources.progress();
        let catalog = shared.catalog.snapshot();
        self.source_records.reset();
        self.source_bad_records.reset();
        self.source_lag.reset();
        for (id, progress) in &kafka {
            let Some(entry) = catalog.get_by_id(*id) else {
                continue;
            };
            self.source_bad_records
                .with_label_values(&[entry.name.as_str()])
                .inc_by(progress.errors);
            for (partition, part) in &progress.partitions {
                let partition = partition.to_string();
                let labels = [entry.name.as_str(), partition.as_str()];
                self.source_records
                    .with_label_values(&labels)
                    .inc_by(part.records);
                if let Some(end) = part.end_offset {
                    self.source_lag
                        .with_label_values(&labels)
                        .set((end - part.offset).max(0));
                }
            }
        }
        // Embedded streams and tables: the rows appended to their logs.
        let writers = shared.open_writers();
        for entry in catalog.entries() {
            let embedded = matches!(entry.kind, ObjectKind::Stream | ObjectKind::Table)
                && !kafka.iter().any(|(id, _)| *id == entry.id);
            if !embedded {
                continue;
            }
            let rows = match writers.iter().find(|(id, _)| *id == entry.id) {
                Some((_, writer)) => writer.rows_appended().await,
                None => 0,
            };
            self.source_records
                .with_label_values(&[entry.name.as_str(), "0"])
                .inc_by(rows);
        }
        // Late rows: counted by each stream's clock, kept with it across restarts.
        self.late_events.reset();
        for entry in catalog.entries() {
            if entry.kind != ObjectKind::Stream || entry.watermark.is_none() {
                continue;
            }
            if let Some(clock) = shared.writer(entry.id)?.clock().await {
                self.late_events
                    .with_label_values(&[entry.name.as_str()])
                    .inc_by(clock.late_rows);
            }
        }
        self.sink_records.reset();
        for (id, sink) in shared.sinks.snapshot() {
            if let Some(entry) = catalog.get_by_id(id) {
                self.sink_records
                    .with_label_values(&[entry.name.as_str()])
                    .inc_by(sink.delivered());
            }
        }
        self.failed_views
            .set(i64::try_from(status.failed_views.len()).unwrap_or(i64::MAX));
        self.read_views(shared, &status, &catalog);
        Ok(())
    }

    /// Every view's rows and changes, and the freshness samples taken since the last scrape.
    fn read_views(
        &self,
        shared: &Shared,
        status: &runnel_runtime::WorkerStatus,
        catalog: &runnel_sql::Catalog,
    ) {
        let view_name = |id| {
            catalog
                .get_by_id(id)
                .filter(|e| e.kind == ObjectKind::MaterializedView)
                .map(|e| e.name.as_str())
        };
        self.view_rows.reset();
        self.view_changes.reset();
        for view in &status.views {
            let Some(name) = view_name(view.id) else {
                continue;
            };
            self.view_rows.with_label_values(&[name]).set(view.rows);
            self.view_changes
                .with_label_values(&[name])
                .inc_by(view.changes);
        }
        let samples = shared.worker.checkpoint_stats().take_view_freshness();
        let mut named = self
            .freshness_views
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (id, age) in samples {
            if let Some(name) = view_name(id) {
                self.view_freshness
                    .with_label_values(&[name])
                    .observe(age.as_secs_f64());
                if !named.contains(name) {
                    named.insert(name.to_string());
                }
            }
        }
        named.retain(|name| {
            let live = catalog
                .get(name)
                .is_some_and(|e| e.kind == ObjectKind::MaterializedView);
            if !live {
                let _ = self.view_freshness.remove_label_values(&[name.as_str()]);
            }
            live
        });
    }

    /// The state cache's figures now (the counters move by what happened since the last read).
    fn read_state_cache(&self, cache: &CacheBudget) {
        let gauge = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.state_cache_bytes.set(gauge(cache.used()));
        self.state_cache_limit_bytes.set(gauge(cache.limit()));
        let evicted = cache.evicted();
        self.state_cache_evictions
            .inc_by(evicted.saturating_sub(self.state_cache_evictions.get()));
        let read = cache.read();
        self.state_cache_reads
            .inc_by(read.saturating_sub(self.state_cache_reads.get()));
    }

    /// The workers' busy and idle time since the start.
    fn read_worker_times(&self, times: &WorkerTimes) {
        self.worker_busy.reset();
        self.worker_idle.reset();
        for (worker, totals) in times.totals().into_iter().enumerate() {
            let worker = worker.to_string();
            self.worker_busy
                .with_label_values(&[worker.as_str()])
                .inc_by(totals.busy.as_secs_f64());
            for (waited, idle) in Waited::ALL.into_iter().zip(totals.idle) {
                self.worker_idle
                    .with_label_values(&[worker.as_str(), waited.label()])
                    .inc_by(idle.as_secs_f64());
            }
        }
    }

    /// The text of every metric, with the state size and checkpoints read now.
    fn render_with(&self, store: &Store, checkpoints: &CheckpointStats) -> Result<String> {
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
