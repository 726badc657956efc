//! The engine: opens the store, starts the dataflow worker, restores every catalog object in
//! order through the catalog service and the CREATE handlers, and opens sessions for the wire
//! protocol. Everything it builds is in [`Shared`], which knows none of this.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use runnel_common::{Result, RunnelError};
use runnel_pgwire::auth::{AuthMethod, ScramVerifier};
use runnel_pgwire::{PgEngine, PgError, StartupInfo};
use runnel_runtime::{Worker, WorkerThread};
use runnel_state::{CacheBudget, Store, StoreOptions};

use crate::handlers;
use crate::session::RunnelSession;
use crate::shared::{EngineConfig, Shared};

/// Objects of the catalog, by kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct ObjectCounts {
    pub streams: usize,
    pub tables: usize,
    pub views: usize,
    pub sinks: usize,
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
                disk_reserve_bytes: config.disk_reserve_bytes,
            },
        )?;
        let state_cache = CacheBudget::new(config.state_cache_bytes);
        let WorkerThread { worker, join } = Worker::start(
            store.clone(),
            config.checkpoint_interval,
            state_cache.clone(),
            config.workers,
        )?;
        let shared = Arc::new(Shared::new(store, worker, state_cache, config)?);
        let engine = Arc::new(Engine {
            shared: shared.clone(),
            worker_thread: Mutex::new(Some(join)),
        });
        engine.restore().await?;
        shared.worker.resume();
        Ok(engine)
    }

    async fn restore(&self) -> Result<()> {
        let shared = &self.shared;
        shared
            .catalog
            .restore(|entry| async move { handlers::restore(shared, &entry).await })
            .await
    }

    /// How many objects of each kind the catalog holds (what the start-up restored).
    pub fn restored_objects(&self) -> ObjectCounts {
        let mut counts = ObjectCounts::default();
        for entry in self.shared.catalog.snapshot().entries() {
            match entry.kind {
                runnel_sql::ObjectKind::Stream => counts.streams += 1,
                runnel_sql::ObjectKind::Table => counts.tables += 1,
                runnel_sql::ObjectKind::MaterializedView => counts.views += 1,
                runnel_sql::ObjectKind::Sink => counts.sinks += 1,
            }
        }
        counts
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
                // The next start then has no RocksDB log to replay (a large one took seconds
                // and its memtables' memory).
                if let Err(err) = self.shared.store.flush() {
                    tracing::warn!("flushing the store at shutdown failed: {err}");
                }
            }
        }
    }
}

#[async_trait]
impl PgEngine for Engine {
    type Session = RunnelSession;

    /// SCRAM once the bootstrap superuser has a password; until then, trust for loopback
    /// clients only (a non-loopback client then has no password to give, and fails).
    fn authentication(&self, startup: &StartupInfo) -> AuthMethod {
        if self.shared.roles.passwords_required() || !is_loopback(startup.peer.ip()) {
            AuthMethod::Scram
        } else {
            AuthMethod::Trust
        }
    }

    async fn scram_verifier(&self, user: &str) -> Option<ScramVerifier> {
        self.shared
            .roles
            .get(user)
            .filter(|role| role.login)
            .and_then(|role| role.verifier())
    }

    async fn open_session(
        &self,
        startup: &StartupInfo,
    ) -> std::result::Result<RunnelSession, PgError> {
        // Authenticated with SCRAM, the role exists and may log in; trusted, it may not.
        let user = if startup.user.is_empty() {
            crate::roles::BOOTSTRAP_SUPERUSER
        } else {
            startup.user.as_str()
        };
        match self.shared.roles.get(user) {
            None => {
                return Err(PgError::new(
                    "28000",
                    format!("role \"{user}\" does not exist"),
                ))
            }
            Some(role) if !role.login => {
                return Err(PgError::new(
                    "28000",
                    format!("role \"{user}\" is not permitted to log in"),
                ))
            }
            Some(_) => {}
        }
        RunnelSession::open(self.shared.clone(), startup)
    }
}

/// Loopback, IPv4-mapped IPv6 addresses included.
pub fn is_loopback(address: std::net::IpAddr) -> bool {
    address.to_canonical().is_loopback()
}
