//! Runnel's incremental runtime: the operator contract, one operator per file, the dataflow
//! that connects every view's operators to the source logs (a coordinator, `dataflow.rs`,
//! feeding worker threads that each run a replica of the graph over their vnodes,
//! `shard.rs`, with exchanges where rows change workers, `exchange.rs`), the worker thread
//! that drives it and commits checkpoints, and the layout of view rows in the store; also the
//! progress of view backfills (`backfill.rs`), row counts of stored batches
//! (`stored_rows.rs`), the writers' hand-over of fresh log entries (`fresh_entries.rs`), and
//! the change feeds of SUBSCRIBE (`subscription.rs`).

pub mod backfill;
pub mod build;
pub mod dataflow;
pub mod exchange;
pub mod expr;
pub mod extreme_rows;
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
pub use log_archive::{read_stored_entries, LogArchive, LogKeeping};
pub use operator::Operator;
pub use shard::{Waited, WorkerTimeTotals, WorkerTimes};
pub use worker::{CheckpointStats, SourceStatus, Worker, WorkerStatus, WorkerThread};
