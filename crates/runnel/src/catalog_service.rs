//! The catalog service: the one owner of the catalog. It holds the current catalog (readers take
//! a snapshot, writers publish a new one), the lock that serialises catalog changes, the object
//! id counter, and the single ordered restore at start-up. Handlers call it; it calls no
//! handler: restoring an entry is passed in by whoever opens the engine.

use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};

use runnel_common::{Result, RunnelError};
use runnel_plan::ObjectId;
use runnel_sql::{Catalog, CatalogEntry, StoredEntry};
use runnel_state::{keys, Store};

const NEXT_ID: &str = "next_id";

/// A store write: key and value.
pub type CatalogWrite = (Vec<u8>, Vec<u8>);

pub struct CatalogService {
    store: Arc<Store>,
    current: RwLock<Arc<Catalog>>,
    next_id: Mutex<ObjectId>,
    /// Serialises catalog changes: a handler holds it from validating a change to publishing it.
    changes: tokio::sync::Mutex<()>,
}

/// Held while a catalog change is validated, persisted and published.
pub type ChangeGuard<'a> = tokio::sync::MutexGuard<'a, ()>;

impl CatalogService {
    /// An empty catalog over `store`, with the id counter read back from it.
    pub fn open(store: Arc<Store>) -> Result<CatalogService> {
        let next_id = match store.get(&keys::meta(NEXT_ID))? {
            Some(b) => u32::from_le_bytes(
                b.as_slice()
                    .try_into()
                    .map_err(|_| RunnelError::internal("stored next_id is not 4 bytes"))?,
            ),
            None => 1,
        };
        Ok(CatalogService {
            store,
            current: RwLock::new(Arc::new(Catalog::default())),
            next_id: Mutex::new(next_id),
            changes: tokio::sync::Mutex::new(()),
        })
    }

    /// The catalog as it is now; later changes do not affect the snapshot.
    pub fn snapshot(&self) -> Arc<Catalog> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Waits for other catalog changes to finish; the change is this caller's until the guard
    /// drops.
    pub async fn lock_changes(&self) -> ChangeGuard<'_> {
        self.changes.lock().await
    }

    /// Publishes a change to the in-memory catalog (after its writes are in the store).
    pub fn publish(&self, change: impl FnOnce(&mut Catalog)) {
        let mut guard = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = (**guard).clone();
        change(&mut next);
        *guard = Arc::new(next);
    }

    /// Reserves an object id; the returned write persists the counter with the object.
    pub fn allocate_id(&self) -> (ObjectId, CatalogWrite) {
        let mut next = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
        let id = *next;
        *next += 1;
        (id, (keys::meta(NEXT_ID), next.to_le_bytes().to_vec()))
    }

    /// The store write that persists an entry.
    pub fn entry_write(entry: &CatalogEntry) -> Result<CatalogWrite> {
        let json = serde_json::to_vec(&entry.stored())
            .map_err(|e| RunnelError::internal(format!("catalog entry not serialisable: {e}")))?;
        Ok((keys::catalog_entry(entry.id), json))
    }

    /// Restores every stored entry in creation order (an object's inputs always have smaller
    /// ids), through `restore_entry`. An entry that fails is logged and left out, so one broken
    /// object never keeps the server from starting.
    pub async fn restore<F, Fut>(&self, mut restore_entry: F) -> Result<()>
    where
        F: FnMut(StoredEntry) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let stored = self.store.scan_prefix(&keys::catalog_prefix())?;
        let mut entries: Vec<StoredEntry> = Vec::with_capacity(stored.len());
        for (_, value) in stored {
            entries
                .push(serde_json::from_slice(&value).map_err(|e| {
                    RunnelError::internal(format!("unreadable catalog entry: {e}"))
                })?);
        }
        entries.sort_by_key(|e| e.id);
        for entry in entries {
            let (name, id) = (entry.name.clone(), entry.id);
            match restore_entry(entry).await {
                Ok(()) => tracing::info!("restored {name}"),
                Err(err) => tracing::error!(
                    "could not restore {name} (id {id}): {err}; it is left out until fixed"
                ),
            }
        }
        Ok(())
    }
}
