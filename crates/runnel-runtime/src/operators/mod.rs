//! One operator per file.

pub mod accumulators;
pub mod aggregate;
pub mod asof_join;
pub mod filter;
pub mod join;
pub mod materialize;
pub mod project;
pub mod relabel;
pub mod session_window;
pub mod sink;
pub mod temporal_filter;
pub mod window;

pub use aggregate::AggregateOp;
pub use asof_join::AsofJoinOp;
pub use filter::FilterOp;
pub use join::JoinOp;
pub use materialize::MaterializeOp;
pub use project::ProjectOp;
pub use relabel::RelabelOp;
pub use session_window::SessionWindowOp;
pub use sink::SinkOp;
pub use temporal_filter::TemporalFilterOp;
pub use window::WindowOp;
