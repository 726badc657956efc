//! The state every session and handler shares: the store, the dataflow worker, the catalog
//! service, the source writers and what runs beside the dataflow. It knows no handler,
//! session or query planning: those build on it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runnel_common::Result;
use runnel_plan::ObjectId;
use runnel_runtime::Worker;
use runnel_state::{SharedBudget, Store};

use crate::catalog_service::CatalogService;
use crate::connector_registry::{Sinks, SourceThreads};
use crate::stream_cache::StreamLogCache;
use crate::writer::SourceWriter;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub checkpoint_interval: Duration,
    pub sync_writes: bool,
    /// Default `bootstrap_servers` of Kafka streams, tables and sinks.
    pub kafka_bootstrap_servers: Option<String>,
    /// Events a SUBSCRIBE subscriber may leave unread before it is disconnected.
    pub subscribe_buffer: usize,
    /// The memory pool of each session's queries (DataFusion's), in bytes.
    pub query_memory_bytes: usize,
    /// Free space kept on the data directory's disk (see `runnel_state::store`), in bytes.
    pub disk_reserve_bytes: u64,
    /// The memory of every view operator's state cache together (`runnel_state::CacheBudget`).
    pub state_cache_bytes: usize,
    /// The retention of Kafka streams that name none.
    pub kafka_log_retention: runnel_common::Retention,
    /// The threads that maintain the views (`--workers`).
    pub workers: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            checkpoint_interval: Duration::from_millis(1000),
            sync_writes: false,
            kafka_bootstrap_servers: None,
            subscribe_buffer: runnel_runtime::subscription::SUBSCRIBER_BUFFER,
            query_memory_bytes: 1 << 30,
            disk_reserve_bytes: 256 << 20,
            state_cache_bytes: 1 << 30,
            kafka_log_retention: crate::config::DEFAULT_KAFKA_LOG_RETENTION,
            workers: crate::config::default_workers(),
        }
    }
}

/// Arrow memory for decoded stream logs kept for ad-hoc reads, all streams together.
const STREAM_CACHE_BYTES: usize = 256 << 20;

/// State every session shares.
pub struct Shared {
    pub store: Arc<Store>,
    /// The operators' state cache (its size and use, for the metrics).
    pub state_cache: SharedBudget,
    pub worker: Worker,
    pub catalog: CatalogService,
    writers: Mutex<HashMap<ObjectId, Arc<SourceWriter>>>,
    /// Decoded stream logs for ad-hoc reads.
    pub stream_cache: StreamLogCache,
    pub config: EngineConfig,
    /// Kafka readers and Nexmark generators, per stream or table.
    pub sources: SourceThreads,
    /// Sinks, for SHOW SINKS.
    pub sinks: Sinks,
    /// What `--metrics-listen` exports.
    pub metrics: crate::metrics::Metrics,
    /// Who may log in, and who is a superuser.
    pub roles: crate::roles::Roles,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    pub fn new(
        store: Arc<Store>,
        worker: Worker,
        state_cache: SharedBudget,
        config: EngineConfig,
    ) -> Result<Shared> {
        Ok(Shared {
            state_cache,
            catalog: CatalogService::open(store.clone())?,
            roles: crate::roles::Roles::open(store.clone())?,
            store,
            worker,
            writers: Mutex::new(HashMap::new()),
            stream_cache: StreamLogCache::new(STREAM_CACHE_BYTES),
            config,
            sources: SourceThreads::default(),
            sinks: Sinks::default(),
            metrics: crate::metrics::Metrics::new()?,
        })
    }

    /// The writers opened so far (a source nobody wrote to since the start has none).
    pub fn open_writers(&self) -> Vec<(ObjectId, Arc<SourceWriter>)> {
        self.writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, writer)| (*id, writer.clone()))
            .collect()
    }

    /// The writer that appends to a stream's or table's log.
    pub fn writer(&self, id: ObjectId) -> Result<Arc<SourceWriter>> {
        let mut writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = writers.get(&id) {
            return Ok(w.clone());
        }
        let catalog = self.catalog.snapshot();
        let entry = catalog.get_by_id(id);
        let watermark = entry.and_then(|e| e.watermark);
        let w = Arc::new(SourceWriter::open(
            &self.store,
            id,
            watermark,
            Some(self.worker.fresh_entries()),
        )?);
        writers.insert(id, w.clone());
        Ok(w)
    }

    pub fn forget_writer(&self, id: ObjectId) {
        self.writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}
