//! The engine: the store, the catalog, the dataflow worker and the source writers, shared by
//! every session. Opening an engine restores the catalog and every view from the store.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use datafusion::execution::context::SessionContext;
use datafusion::prelude::SessionConfig;
use runnel_common::{Result, RunnelError};
use runnel_plan::ObjectId;
use runnel_runtime::{Worker, WorkerThread};
use runnel_sql::{Catalog, CatalogEntry, StoredEntry};
use runnel_state::{keys, Store, StoreOptions};

use crate::handlers::create_sink::SinkInfo;
use crate::handlers::{create_relation, create_sink, create_view};
use crate::kafka_ingest::Ingests;
use crate::serving::RunnelSchema;
use crate::stream_cache::StreamLogCache;
use crate::system_catalog::{SessionIdentity, SystemSchema, SystemSchemaKind};
use crate::writer::SourceWriter;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub checkpoint_interval: Duration,
    pub sync_writes: bool,
    /// Default `bootstrap_servers` of Kafka streams, tables and sinks.
    pub kafka_bootstrap_servers: Option<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            checkpoint_interval: Duration::from_millis(1000),
            sync_writes: false,
            kafka_bootstrap_servers: None,
        }
    }
}

/// State every session shares.
pub struct Shared {
    pub store: Arc<Store>,
    pub worker: Worker,
    catalog: RwLock<Arc<Catalog>>,
    next_id: Mutex<ObjectId>,
    /// Serialises catalog changes.
    pub ddl: tokio::sync::Mutex<()>,
    writers: Mutex<HashMap<ObjectId, Arc<SourceWriter>>>,
    /// Decoded stream logs for ad-hoc reads.
    pub stream_cache: StreamLogCache,
    pub config: EngineConfig,
    /// Running Kafka ingestion, per stream or table.
    pub ingests: Ingests,
    /// Nexmark streams' generator threads.
    pub generators: crate::nexmark_ingest::Generators,
    /// Sinks, for SHOW SINKS.
    pub sinks: Mutex<HashMap<ObjectId, SinkInfo>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

const NEXT_ID: &str = "next_id";

/// Arrow memory for decoded stream logs kept for ad-hoc reads, all streams together.
const STREAM_CACHE_BYTES: usize = 256 << 20;

impl Shared {
    /// A snapshot of the catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn update_catalog(&self, change: impl FnOnce(&mut Catalog)) {
        let mut guard = self
            .catalog
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = (**guard).clone();
        change(&mut next);
        *guard = Arc::new(next);
    }

    /// Reserves an object id; the returned writes persist the counter with the object.
    pub fn allocate_id(&self) -> (ObjectId, (Vec<u8>, Vec<u8>)) {
        let mut next = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
        let id = *next;
        *next += 1;
        (id, (keys::meta(NEXT_ID), next.to_le_bytes().to_vec()))
    }

    /// The catalog write for an entry.
    pub fn catalog_write(entry: &CatalogEntry) -> Result<(Vec<u8>, Vec<u8>)> {
        let json = serde_json::to_vec(&entry.stored())
            .map_err(|e| RunnelError::internal(format!("catalog entry not serialisable: {e}")))?;
        Ok((keys::catalog_entry(entry.id), json))
    }

    /// The writer that appends to a stream's or table's log.
    pub fn writer(&self, id: ObjectId) -> Result<Arc<SourceWriter>> {
        let mut writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = writers.get(&id) {
            return Ok(w.clone());
        }
        let watermark = self.catalog().get_by_id(id).and_then(|e| e.watermark);
        let w = Arc::new(SourceWriter::open(&self.store, id, watermark)?);
        writers.insert(id, w.clone());
        Ok(w)
    }

    pub fn forget_writer(&self, id: ObjectId) {
        self.writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// A DataFusion context whose `public` schema is Runnel's catalog, with `pg_catalog`
    /// and `information_schema` beside it and the catalog functions for `session`.
    pub fn session_context(self: &Arc<Self>, session: &SessionIdentity) -> SessionContext {
        let mut config = SessionConfig::new()
            // Runnel's own information_schema replaces DataFusion's.
            .with_information_schema(false)
            .with_target_partitions(2)
            .with_default_catalog_and_schema("runnel", "public");
        let options = config.options_mut();
        options.sql_parser.map_string_types_to_utf8view = false;
        // `1.005` is a numeric literal, as in Postgres, not a float that rounds on the way.
        options.sql_parser.parse_float_as_decimal = true;
        options.sql_parser.dialect = datafusion::common::config::Dialect::PostgreSQL;
        // Spans let planning errors point at the offending name, as Postgres's do.
        options.sql_parser.collect_spans = true;
        options.execution.time_zone = Some("+00:00".to_string());
        let ctx = SessionContext::new_with_state(runnel_sql::session_window::with_runnel_planner(
            SessionContext::new_with_config(config).state(),
        ));
        ctx.register_udf((*runnel_sql::asof::asof_match_udf()).clone());
        crate::system_catalog::functions::register(&ctx, self, session);
        crate::system_catalog::table_functions::register(&ctx);
        runnel_sql::json::register(&ctx)
            .expect("registering the JSON operators on a fresh context cannot fail");
        let shared = self.clone();
        let lookup: Arc<runnel_sql::windows::TableLookup> = Arc::new(move |name: &str| {
            let entry = shared.catalog().get(name)?.clone();
            (entry.kind != runnel_sql::ObjectKind::Sink).then(|| {
                datafusion::datasource::provider_as_source(Arc::new(
                    crate::serving::RelationTable::new(entry, shared.clone()),
                ))
            })
        });
        ctx.register_relation_planner(Arc::new(runnel_sql::windows::WindowTableFunctions::new(
            lookup,
        )))
        .expect("registering a relation planner on a fresh context cannot fail");
        let catalog = Arc::new(datafusion::catalog::MemoryCatalogProvider::new());
        use datafusion::catalog::CatalogProvider;
        // Registering into a fresh in-memory catalog cannot fail.
        let pg_catalog = Arc::new(SystemSchema::new(
            SystemSchemaKind::PgCatalog,
            self.clone(),
            session.clone(),
        ));
        let _ = catalog.register_schema(
            "public",
            Arc::new(RunnelSchema::new(self.clone(), pg_catalog.clone())),
        );
        let _ = catalog.register_schema("pg_catalog", pg_catalog);
        let _ = catalog.register_schema(
            "information_schema",
            Arc::new(SystemSchema::new(
                SystemSchemaKind::InformationSchema,
                self.clone(),
                session.clone(),
            )),
        );
        ctx.register_catalog("runnel", catalog);
        ctx
    }
}

/// The database engine behind the wire protocol.
pub struct Engine {
    pub shared: Arc<Shared>,
    worker_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Engine {
    /// Opens (or creates) the data directory and restores every object in it.
    pub async fn open(data_dir: &Path, config: EngineConfig) -> Result<Arc<Engine>> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            RunnelError::external(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let store = Store::open(
            &data_dir.join("state"),
            StoreOptions {
                sync_writes: config.sync_writes,
            },
        )?;
        let WorkerThread { worker, join } =
            Worker::start(store.clone(), config.checkpoint_interval)?;
        let next_id = match store.get(&keys::meta(NEXT_ID))? {
            Some(b) => u32::from_le_bytes(
                b.as_slice()
                    .try_into()
                    .map_err(|_| RunnelError::internal("stored next_id is not 4 bytes"))?,
            ),
            None => 1,
        };
        let shared = Arc::new(Shared {
            store: store.clone(),
            worker,
            catalog: RwLock::new(Arc::new(Catalog::default())),
            next_id: Mutex::new(next_id),
            ddl: tokio::sync::Mutex::new(()),
            writers: Mutex::new(HashMap::new()),
            stream_cache: StreamLogCache::new(STREAM_CACHE_BYTES),
            config: config.clone(),
            ingests: Ingests::default(),
            generators: Default::default(),
            sinks: Mutex::new(HashMap::new()),
        });
        let engine = Arc::new(Engine {
            shared: shared.clone(),
            worker_thread: Mutex::new(Some(join)),
        });
        engine.restore().await?;
        shared.worker.resume();
        Ok(engine)
    }

    async fn restore(&self) -> Result<()> {
        let stored = self.shared.store.scan_prefix(&keys::catalog_prefix())?;
        let mut entries: Vec<StoredEntry> = Vec::with_capacity(stored.len());
        for (_, value) in stored {
            entries
                .push(serde_json::from_slice(&value).map_err(|e| {
                    RunnelError::internal(format!("unreadable catalog entry: {e}"))
                })?);
        }
        entries.sort_by_key(|e| e.id);
        for entry in entries {
            let result = match entry.kind {
                runnel_sql::StoredKind::MaterializedView => {
                    create_view::restore(&self.shared, &entry).await
                }
                runnel_sql::StoredKind::Sink => create_sink::restore(&self.shared, &entry).await,
                _ => create_relation::restore(&self.shared, &entry).await,
            };
            if let Err(err) = result {
                tracing::error!(
                    "could not restore {} (id {}): {err}; it is left out until fixed",
                    entry.name,
                    entry.id
                );
            } else {
                tracing::info!("restored {}", entry.name);
            }
        }
        Ok(())
    }

    /// Stops the worker after a final checkpoint.
    pub fn shutdown(&self) {
        let handle = self
            .worker_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = handle {
            let shared = self.shared.clone();
            // The worker must be gone before the process exits: a thread still inside
            // RocksDB while exit tears it down aborts ("pthread lock: Invalid argument").
            let stop = async move {
                let _ = shared.worker.flush().await;
                shared.worker.stop().await
            };
            if futures::executor::block_on(stop).is_ok() {
                let _ = handle.join();
            }
        }
    }
}
