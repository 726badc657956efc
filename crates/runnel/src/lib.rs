//! The Runnel server: wires the store, the dataflow worker and the SQL frontend behind the
//! Postgres wire protocol. Each statement kind has its own handler in [`handlers`].

pub mod catalog_service;
pub mod config;
pub mod connector_registry;
pub mod convert;
pub mod engine;
pub mod handlers;
pub mod kafka_archive;
pub mod kafka_ingest;
pub mod key_lookup;
pub mod metrics;
pub mod metrics_server;
pub mod nexmark_archive;
pub mod nexmark_ingest;
pub mod plan_diagnosis;
pub mod privileges;
pub mod query_context;
pub mod roles;
pub mod serving;
pub mod session;
pub mod settings;
pub mod shared;
pub mod sink_delivery;
pub mod stream_cache;
pub mod system_catalog;
pub mod table_upsert;
pub mod text_casts;
pub mod tls;
pub mod transaction;
pub mod writer;

pub use engine::Engine;
pub use shared::EngineConfig;
