//! Runnel's incremental runtime: the operator contract, one operator per file, the dataflow
//! graph that connects every view's operators to the source logs, and the worker thread that
//! drives it and commits checkpoints, and the layout of view rows in the store; also the
//! progress of view backfills (`backfill.rs`) and row counts of stored batches
//! (`stored_rows.rs`), and the change feeds of SUBSCRIBE (`subscription.rs`).

pub mod backfill;
pub mod build;
pub mod dataflow;
pub mod exchange;
pub mod expr;
pub mod fresh_entries;
pub mod log_archive;
pub mod operator;
pub mod operators;
pub mod shard;
pub mod stored_rows;
pub mod subscription;
pub mod view_rows;
pub mod worker;

pub use backfill::{BackfillReport, BackfillStatus};
pub use dataflow::ViewStats;
pub use log_archive::{LogArchive, LogKeeping};
pub use operator::Operator;
pub use worker::{CheckpointStats, SourceStatus, Worker, WorkerStatus, WorkerThread};
