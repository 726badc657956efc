//! SUBSCRIBE: a relation's changes as rows, for as long as the client reads them.
//!
//! Each row is `runnel_checkpoint` (the checkpoint at which the change became visible; they
//! only grow), `runnel_progressed` (with `progress`: true on a row that only says a
//! checkpoint passed), `runnel_diff` (+n for n copies of the row inserted, -n deleted), then
//! the relation's columns. With `snapshot` (the default) the relation's contents at the
//! checkpoint the subscription starts at come first, as inserts. The dataflow hands each
//! checkpoint's changes to a bounded buffer per subscriber and never waits for one: a
//! subscriber that falls that far behind is ended with an error (see
//! `runnel_runtime::subscription`).
//!
//! A materialized view's changes are those its contents go through. A stream's or table's are
//! the entries of its log, as the dataflow reads them: a stream's rows as inserts, a table's
//! inserts, deletes and updates (a delete and an insert). Their snapshot is read here, not in
//! the dataflow, so a long log never holds the dataflow: the dataflow says the log position
//! its changes start at, and the snapshot is the log before it, read in slices (a stream), or
//! the table's rows (read under its writer's lock, less the entries written since).

use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, ArrayRef, BooleanArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use futures::stream::BoxStream;
use futures::StreamExt;
use runnel_common::{ChangeBatch, Result, RunnelError, SqlState};
use runnel_pgwire::{BatchStream, PgError};
use runnel_runtime::subscription::{consolidate, EndReason, SubscriptionEvent};
use runnel_sql::access::Privileges;
use runnel_sql::statement::SubscribeSpec;
use runnel_sql::{CatalogEntry, ObjectKind};

use crate::serving::read_relation;
use crate::session::{to_pg_error, RunnelSession};
use crate::shared::Shared;
use crate::stream_cache::read_log_changes;

/// Log entries read per slice of a stream's snapshot.
const SNAPSHOT_ENTRIES_PER_SLICE: usize = 256;

/// The columns of a subscription to a relation with `columns`.
fn output_schema(columns: &Schema, progress: bool) -> SchemaRef {
    let mut fields = vec![Field::new("runnel_checkpoint", DataType::Int64, false)];
    if progress {
        fields.push(Field::new("runnel_progressed", DataType::Boolean, false));
    }
    fields.push(Field::new("runnel_diff", DataType::Int64, progress));
    fields.extend(
        columns
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true)),
    );
    Arc::new(Schema::new(fields))
}

/// The relation `spec` subscribes to, if it can be subscribed to.
fn subscribed_relation(session: &RunnelSession, spec: &SubscribeSpec) -> Result<Arc<CatalogEntry>> {
    let catalog = session.shared.catalog.snapshot();
    let entry = catalog.resolve(&spec.relation)?.clone();
    if entry.kind == ObjectKind::Sink {
        return Err(RunnelError::plan(
            SqlState::WRONG_OBJECT_TYPE,
            format!(
                "cannot subscribe to sink \"{}\": subscribe to its input instead",
                entry.name
            ),
        ));
    }
    Ok(entry)
}

/// The columns `spec` returns, without subscribing (Describe).
pub fn describe(session: &RunnelSession, spec: &SubscribeSpec) -> Result<SchemaRef> {
    let entry = subscribed_relation(session, spec)?;
    Ok(output_schema(&entry.schema, spec.progress))
}

/// Events of a subscription, its snapshot first.
type Events = BoxStream<'static, Result<SubscriptionEvent>>;

/// The schema and the endless rows of `spec`.
pub async fn changes(
    session: &RunnelSession,
    spec: &SubscribeSpec,
) -> Result<(SchemaRef, BatchStream)> {
    let entry = subscribed_relation(session, spec)?;
    crate::privileges::Principal::of(session).require(&entry, Privileges::SELECT)?;
    let events = match entry.kind {
        ObjectKind::MaterializedView => view_events(session, &entry, spec.snapshot).await?,
        _ => source_events(session.shared.clone(), entry.clone(), spec.snapshot).await?,
    };
    let schema = output_schema(&entry.schema, spec.progress);
    let progress = spec.progress;
    let out_schema = schema.clone();
    let rows = events
        .filter_map(move |event| {
            let schema = out_schema.clone();
            async move {
                match event {
                    Ok(SubscriptionEvent::Changes {
                        checkpoint,
                        changes,
                    }) if !changes.is_empty() => {
                        Some(change_rows(&schema, checkpoint, &changes, progress))
                    }
                    Ok(SubscriptionEvent::Changes { .. }) => None,
                    Ok(SubscriptionEvent::Checkpoint(checkpoint)) if progress => {
                        Some(progress_row(&schema, checkpoint))
                    }
                    Ok(SubscriptionEvent::Checkpoint(_)) => None,
                    Ok(SubscriptionEvent::Ended(reason)) => {
                        let state = match reason {
                            // configuration_limit_exceeded: the subscriber buffer's bound.
                            EndReason::TooSlow { .. } => SqlState("53400"),
                            EndReason::RelationDropped => SqlState::UNDEFINED_TABLE,
                        };
                        Some(Err(RunnelError::execution(state, reason.to_string())))
                    }
                    Err(error) => Some(Err(error)),
                }
            }
        })
        .map(|batch| batch.map_err(|e: RunnelError| -> PgError { to_pg_error(e) }))
        .boxed();
    Ok((schema, rows))
}

/// A view's subscription: its snapshot is taken by the dataflow, with the pending changes.
async fn view_events(
    session: &RunnelSession,
    entry: &CatalogEntry,
    snapshot: bool,
) -> Result<Events> {
    let start = session
        .shared
        .worker
        .subscribe(entry.id, snapshot, session.shared.config.subscribe_buffer)
        .await?;
    let first = start.snapshot.map(|snapshot| {
        Ok(SubscriptionEvent::Changes {
            checkpoint: start.checkpoint,
            changes: snapshot,
        })
    });
    Ok(futures::stream::iter(first)
        .chain(tokio_stream_of(start.events).map(Ok))
        .boxed())
}

/// A stream's or table's subscription: the log from the position the dataflow reads at, and
/// before it (with `snapshot`) the contents at that position.
async fn source_events(
    shared: Arc<Shared>,
    entry: Arc<CatalogEntry>,
    snapshot: bool,
) -> Result<Events> {
    let start = shared
        .worker
        .subscribe_source(entry.id, shared.config.subscribe_buffer)
        .await?;
    let live = tokio_stream_of(start.events).map(Ok);
    if !snapshot {
        return Ok(live.boxed());
    }
    let (checkpoint, position) = (start.checkpoint, start.position);
    let contents = match entry.kind {
        ObjectKind::Table => {
            let changes = table_contents_at(&shared, &entry, position).await?;
            futures::stream::iter(changes.map(|changes| {
                Ok(SubscriptionEvent::Changes {
                    checkpoint,
                    changes,
                })
            }))
            .boxed()
        }
        _ => stream_log_until(shared, entry, position)
            .map(move |changes| {
                changes.map(|changes| SubscriptionEvent::Changes {
                    checkpoint,
                    changes,
                })
            })
            .boxed(),
    };
    Ok(contents.chain(live).boxed())
}

/// A stream's log entries before `end`, a slice of entries at a time, each read off the
/// async threads.
fn stream_log_until(
    shared: Arc<Shared>,
    entry: Arc<CatalogEntry>,
    end: u64,
) -> impl futures::Stream<Item = Result<ChangeBatch>> + Send {
    futures::stream::try_unfold(0u64, move |from| {
        let (shared, entry) = (shared.clone(), entry.clone());
        async move {
            if from >= end {
                return Ok(None);
            }
            let schema = entry.schema.clone();
            let read = tokio::task::spawn_blocking(move || {
                let archive = shared.stream_cache.archive(entry.id);
                read_log_changes(
                    &shared.store,
                    entry.id,
                    &entry.schema,
                    from,
                    end,
                    SNAPSHOT_ENTRIES_PER_SLICE,
                    archive.as_deref(),
                )
            })
            .await
            .map_err(|e| RunnelError::internal(format!("snapshot read task failed: {e}")))??;
            let Some(&(last, _)) = read.last() else {
                return Ok(None);
            };
            let changes: Vec<ChangeBatch> = read
                .into_iter()
                .map(|(_, changes)| changes)
                .filter(|changes| !changes.is_empty())
                .collect();
            let slice = ChangeBatch::concat(&schema, &changes)?;
            Ok(Some((slice, last + 1)))
        }
    })
}

/// A table's rows as of log position `position`: its rows now, read with every entry before
/// its writer's next one committed, less the entries from `position` to there.
async fn table_contents_at(
    shared: &Shared,
    entry: &CatalogEntry,
    position: u64,
) -> Result<Option<ChangeBatch>> {
    let writer = shared.writer(entry.id)?;
    let (rows, now) = {
        let locked = writer.lock().await;
        (read_relation(shared, entry)?, locked.next_seq())
    };
    let mut changes: Vec<ChangeBatch> = rows.into_iter().map(ChangeBatch::inserts).collect();
    if now == position {
        return Ok(Some(ChangeBatch::concat(&entry.schema, &changes)?));
    }
    for (_, later) in read_log_changes(
        &shared.store,
        entry.id,
        &entry.schema,
        position,
        now,
        usize::MAX,
        // A table's log holds its changes themselves.
        None,
    )? {
        let undone = Int64Array::from_iter_values(later.weights.values().iter().map(|w| -w));
        changes.push(ChangeBatch::new(later.data, undone));
    }
    consolidate(changes)
}

/// The rows of one checkpoint's changes.
fn change_rows(
    schema: &SchemaRef,
    checkpoint: u64,
    changes: &ChangeBatch,
    progress: bool,
) -> Result<RecordBatch> {
    let rows = changes.num_rows();
    let checkpoint = i64::try_from(checkpoint).unwrap_or(i64::MAX);
    let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![checkpoint; rows]))];
    if progress {
        columns.push(Arc::new(BooleanArray::from(vec![false; rows])));
    }
    columns.push(Arc::new(changes.weights.clone()));
    columns.extend(changes.data.columns().iter().cloned());
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The row that says `checkpoint` passed.
fn progress_row(schema: &SchemaRef, checkpoint: u64) -> Result<RecordBatch> {
    let checkpoint = i64::try_from(checkpoint).unwrap_or(i64::MAX);
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![checkpoint])),
        Arc::new(BooleanArray::from(vec![true])),
    ];
    for field in schema.fields().iter().skip(2) {
        columns.push(new_null_array(field.data_type(), 1));
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// A tokio receiver as a stream.
fn tokio_stream_of<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}
