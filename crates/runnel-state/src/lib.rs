//! Runnel's state: the RocksDB store, the key layout every component shares, the order-preserving
//! row codec used for keys and stored rows, and Arrow IPC framing for source logs.
//!
//! Everything durable lives in one RocksDB instance; a checkpoint is one `WriteBatch`.

pub mod codec;
pub mod error;
pub mod ipc;
pub mod keys;
pub mod store;

pub use error::StateError;
pub use store::{KeyValue, Store, StoreOptions, WriteBatch};

#[cfg(test)]
mod codec_fuzz;
