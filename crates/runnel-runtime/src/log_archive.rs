//! Where a stream's rows live besides its log, and how much of the log is kept.
//!
//! A stream with a retention has old log entries deleted once every view has read them (see
//! `Dataflow::trim_logs`). A view created later still needs them for its backfill: a Kafka
//! stream's entries are rebuilt from its topic by a [`LogArchive`], from the recipe the
//! entry's index keeps (`runnel_state::log_index`); an embedded stream has no other copy, so
//! such a backfill fails with [`trimmed_error`].

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use runnel_common::{Result, Retention, RunnelError, SqlState};
use runnel_plan::ObjectId;
use runnel_state::log_index::{self, EntryIndex};
use runnel_state::Store;

/// Rebuilds log entries that retention deleted, from where their rows came from.
pub trait LogArchive: Send + Sync {
    /// Calls `each` with every entry of `entries` (sequence number and index, in sequence
    /// order) as it was stored in the log.
    fn rebuild(
        &self,
        entries: &[(u64, EntryIndex)],
        each: &mut dyn FnMut(u64, RecordBatch) -> Result<()>,
    ) -> Result<()>;
}

/// How the dataflow keeps a source's log.
#[derive(Clone, Default)]
pub struct LogKeeping {
    /// `None`: every entry is kept (tables, and streams without a retention).
    pub retention: Option<Retention>,
    /// Where trimmed entries can be read again (Kafka streams).
    pub archive: Option<Arc<dyn LogArchive>>,
}

/// The error of a backfill that needs entries retention deleted from a stream that cannot
/// read them again; `earliest` names the first entry the log holds and when it was appended.
pub fn trimmed_error(stream: &str, earliest: Option<(u64, String)>) -> RunnelError {
    let since = match earliest {
        Some((seq, at)) => format!(
            "its log starts at entry {seq}, appended at {at}: the earliest available position"
        ),
        None => "every row it ever held was removed".to_string(),
    };
    RunnelError::execution(
        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!(
            "stream {stream} no longer holds the rows a new view reads first: its retention removed them, and an embedded stream has no other copy ({since})"
        ),
    )
}

/// The first entry `source`'s log holds, and when it was appended (for errors); `None` when
/// the log holds none.
pub fn earliest_entry(store: &Store, source: ObjectId) -> Result<Option<(u64, String)>> {
    let mut first = None;
    let start = log_index::log_start(store, source)?;
    log_index::for_each_index(store, source, start, u64::MAX, |seq, index| {
        first = Some((seq, runnel_common::time::format_micros(index.appended_at)));
        Ok(false)
    })?;
    Ok(first)
}
