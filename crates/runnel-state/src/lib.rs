//! Runnel's state: the RocksDB store, the state layer operators keep their state in
//! ([`KeyedState`]: vnode-keyed, read on demand, cached within a shared memory budget), the key layout every component shares, the order-preserving
//! row codec used for keys and stored rows, and Arrow IPC framing for source logs.
//!
//! Everything durable lives in one RocksDB instance; a checkpoint is one `WriteBatch`.

pub mod cache_budget;
pub mod codec;
pub mod error;
pub mod ipc;
pub mod keyed_state;
pub mod keys;
pub mod log_index;
pub mod ordered_rows;
pub mod store;
pub mod time_index;
pub mod vnode;

pub use cache_budget::{CacheBudget, PendingBytes, SharedBudget};
pub use error::StateError;
pub use keyed_state::{KeyedState, SlotValues};
pub use ordered_rows::{OrderedRows, RowKey};
pub use store::{concat_batches, KeyValue, Store, StoreOptions, WriteBatch};
pub use time_index::TimeIndex;

#[cfg(test)]
mod codec_fuzz;
