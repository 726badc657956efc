//! Where a stream's rows live besides its log, and how much of the log is kept.
//!
//! A stream with a retention has old log entries deleted once every view has read them (see
//! `Dataflow::trim_logs`). A view created later still needs them for its backfill: a Kafka
//! stream's entries are rebuilt from its topic by a [`LogArchive`], from the recipe the
//! entry's index keeps (`runnel_state::log_index`), a generated (Nexmark) stream's by its
//! generator; an embedded stream has no other copy, so such a backfill fails with
//! [`trimmed_error`].
//!
//! A generated stream's archive is also how its log is read at all: the log keeps each entry
//! as a recipe, and [`read_stored_entries`] has the archive make its rows.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use runnel_common::{Result, Retention, RunnelError, SqlState};
use runnel_plan::ObjectId;
use runnel_state::log_index::{self, EntryIndex};
use runnel_state::{ipc, keys, Store};

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

/// The stored log entries `[from, to)` of `source` (`to`: `u64::MAX` for the end), at most
/// `limit` of them and about `max_rows` rows, in sequence order. Entries kept as a recipe are
/// made again by `archive`; without one, reading such an entry fails.
pub fn read_stored_entries(
    store: &Store,
    source: ObjectId,
    from: u64,
    to: u64,
    limit: usize,
    max_rows: usize,
    archive: Option<&dyn LogArchive>,
) -> Result<Vec<(u64, RecordBatch)>> {
    let start = keys::log_entry(source, from);
    let end = match to {
        u64::MAX => keys::prefix_end(&keys::log_prefix(source)),
        to => keys::log_entry(source, to),
    };
    let mut out: Vec<(u64, Option<RecordBatch>)> = Vec::new();
    // Entries kept as recipes: their place in `out`, and their index.
    let mut recipes: Vec<(usize, u64)> = Vec::new();
    let mut rows = 0;
    store.for_each_in_range(&start, &end, |key, value| {
        let seq = keys::log_entry_seq(key)
            .ok_or_else(|| runnel_state::StateError::Corrupt("bad log key".into()))?;
        match log_index::recipe_marker_rows(value) {
            Some(n) => {
                rows += usize::try_from(n).unwrap_or(usize::MAX);
                recipes.push((out.len(), seq));
                out.push((seq, None));
            }
            None => {
                let stored = ipc::decode_batch(value)?;
                rows += stored.num_rows();
                out.push((seq, Some(stored)));
            }
        }
        Ok(out.len() < limit && rows < max_rows)
    })?;
    if !recipes.is_empty() {
        let archive = archive.ok_or_else(|| {
            RunnelError::internal(format!(
                "source {source}'s log holds recipes, but nothing makes their rows"
            ))
        })?;
        let mut indexes = Vec::with_capacity(recipes.len());
        for &(_, seq) in &recipes {
            let index = log_index::entry_index(store, source, seq)?.ok_or_else(|| {
                RunnelError::internal(format!(
                    "log entry {seq} of source {source} has no index to rebuild it from"
                ))
            })?;
            indexes.push((seq, index));
        }
        let mut places = recipes.iter();
        archive.rebuild(&indexes, &mut |seq, stored| match places.next() {
            Some(&(place, expected)) if expected == seq => {
                out[place].1 = Some(stored);
                Ok(())
            }
            _ => Err(RunnelError::internal(format!(
                "source {source}'s archive rebuilt entry {seq} out of order"
            ))),
        })?;
    }
    out.into_iter()
        .map(|(seq, stored)| {
            stored.map(|s| (seq, s)).ok_or_else(|| {
                RunnelError::internal(format!(
                    "log entry {seq} of source {source} was not rebuilt from its recipe"
                ))
            })
        })
        .collect()
}
