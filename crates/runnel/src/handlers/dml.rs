//! INSERT, UPDATE and DELETE. DataFusion plans the statement; Runnel runs the plan's input
//! (the new rows, or the rows the WHERE clause selects) and appends the resulting changes to
//! the relation's log. For tables the scan and the write happen under the table's writer lock,
//! so concurrent statements cannot interleave between reading rows and changing them.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::logical_expr::{DmlStatement, Expr, LogicalPlan, Projection};
use hashbrown::{HashMap, HashSet};
use runnel_common::{ChangeBatch, Result, RunnelError, SqlState, TextType};
use runnel_pgwire::QueryResponse;
use runnel_sql::{CatalogEntry, ObjectKind};
use runnel_state::codec::{encode_rows, EncodedRows};
use runnel_state::{keys, WriteBatch};

use crate::session::RunnelSession;
use crate::shared::Shared;
use crate::transaction::{lock_pending, SharedPendingWrites};
use crate::writer::{LockedWriter, Staged};

fn target(session: &RunnelSession, dml: &DmlStatement) -> Result<Arc<CatalogEntry>> {
    let name = dml.table_name.table();
    let entry = session.shared.catalog.snapshot().resolve(name)?.clone();
    if entry.kind == ObjectKind::MaterializedView {
        return Err(RunnelError::plan(
            SqlState::WRONG_OBJECT_TYPE,
            format!("cannot change materialized view \"{name}\": it is computed from its inputs"),
        ));
    }
    refuse_kafka(&session.shared, &entry)?;
    Ok(entry)
}

/// A Kafka stream or table is written only by its topic: a second writer would put rows in
/// its log that no offset accounts for, and a replay would not reproduce them.
pub fn refuse_kafka(shared: &Shared, entry: &CatalogEntry) -> Result<()> {
    if shared.sources.is_generated(entry.id) {
        return Err(RunnelError::plan(
            SqlState::WRONG_OBJECT_TYPE,
            format!(
                "stream \"{}\" is generated (connector 'nexmark') and takes no INSERT or COPY",
                entry.name
            ),
        ));
    }
    match shared.sources.kafka_options(entry.id) {
        Some(options) => Err(RunnelError::plan(
            SqlState::WRONG_OBJECT_TYPE,
            format!(
                "{} \"{}\" is fed by Kafka topic '{}'; produce to the topic instead",
                entry.kind.sql_name(),
                entry.name,
                options.topic
            ),
        )),
        None => Ok(()),
    }
}

/// Runs a plan to completion.
async fn run(session: &RunnelSession, plan: LogicalPlan) -> Result<Vec<RecordBatch>> {
    Ok(session
        .ctx
        .execute_logical_plan(plan)
        .await?
        .collect()
        .await?)
}

/// Casts the columns of `batches` (by position) to `schema` and checks NOT NULL columns.
pub fn conform(schema: &SchemaRef, batches: &[RecordBatch], offset: usize) -> Result<RecordBatch> {
    let parts = conform_each(schema, batches, offset)?;
    Ok(concat_batches(schema, &parts)?)
}

/// Like [`conform`], keeping the batches apart.
pub fn conform_each(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    offset: usize,
) -> Result<Vec<RecordBatch>> {
    let mut out: Vec<RecordBatch> = Vec::with_capacity(batches.len());
    for batch in batches {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for (i, field) in schema.fields().iter().enumerate() {
            let column = batch.column(offset + i);
            crate::convert::check_bare_numeric(
                column.as_ref(),
                field.data_type(),
                &format!("column \"{}\"", field.name()),
            )?;
            let column = if column.data_type() == field.data_type() {
                column.clone()
            } else if field.data_type() == &datafusion::arrow::datatypes::DataType::Binary {
                crate::convert::text_to_bytea(column)?
            } else if matches!(field.data_type(), DataType::Interval(_))
                && matches!(column.data_type(), DataType::Utf8 | DataType::Utf8View)
            {
                cast(
                    &runnel_common::interval_text::intervals_from_text(column.as_ref())?,
                    field.data_type(),
                )?
            } else {
                cast(column, field.data_type())?
            };
            let column = match TextType::of(field) {
                Some(text_type) => text_type.normalize_array(column.as_ref())?,
                None => runnel_common::text_types::enforce_max_length(field, column)?,
            };
            if !field.is_nullable() && column.null_count() > 0 {
                return Err(RunnelError::execution(
                    SqlState::NOT_NULL_VIOLATION,
                    format!(
                        "null value in column \"{}\" violates not-null constraint",
                        field.name()
                    ),
                ));
            }
            columns.push(column);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        out.push(RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &options,
        )?);
    }
    Ok(out)
}

pub async fn insert(session: &mut RunnelSession, dml: &DmlStatement) -> Result<QueryResponse> {
    let entry = target(session, dml)?;
    let batches = run(session, dml.input.as_ref().clone()).await?;
    let rows = conform_each(&entry.schema, &batches, 0)?;
    let pending = session.pending_writes();
    let n = insert_rows(&session.shared, &entry, rows, pending.as_ref()).await?;
    Ok(QueryResponse::Command {
        tag: format!("INSERT 0 {n}"),
    })
}

/// Appends rows to a stream, or inserts them into a table (refusing duplicate keys); in a
/// transaction block (`pending`), keeps them for its COMMIT.
pub async fn insert_rows(
    shared: &Arc<Shared>,
    entry: &Arc<CatalogEntry>,
    rows: Vec<RecordBatch>,
    pending: Option<&SharedPendingWrites>,
) -> Result<u64> {
    let mut n: u64 = rows.iter().map(|b| b.num_rows() as u64).sum();
    if n == 0 {
        return Ok(0);
    }
    if let Some(pending) = pending {
        let rows = concat_batches(&entry.schema, &rows)?;
        let empty = RecordBatch::new_empty(entry.schema.clone());
        lock_pending(pending).add(shared, entry, empty, rows)?;
        return Ok(n);
    }
    let writer = shared.writer(entry.id)?;
    let mut locked = writer.lock().await;
    match entry.kind {
        ObjectKind::Stream => {
            // Late rows (behind the stream's watermark) are dropped: count what was appended.
            let rows = concat_batches(&entry.schema, &rows)?;
            n = locked.commit_stream(&shared.store, rows, None, WriteBatch::default())? as u64;
        }
        _ => {
            let rows = concat_batches(&entry.schema, &rows)?;
            let empty = RecordBatch::new_empty(entry.schema.clone());
            write_table_changes(shared, entry, &mut locked, &empty, &rows)?;
        }
    }
    drop(locked);
    shared.worker.wake();
    Ok(n)
}

/// Applies deletes of `old` rows and inserts of `new` rows to a table, with key checks.
fn write_table_changes(
    shared: &Shared,
    entry: &CatalogEntry,
    locked: &mut LockedWriter<'_>,
    old: &RecordBatch,
    new: &RecordBatch,
) -> Result<()> {
    let mut batch = WriteBatch::default();
    let staged = stage_table_changes(shared, entry, locked, old, new, &mut batch)?;
    shared.store.write(batch)?;
    locked.staged_written(staged);
    Ok(())
}

/// Adds to `batch` the row writes and the log entry of deleting `old` rows and inserting
/// `new` rows into a table, after the key checks.
pub fn stage_table_changes(
    shared: &Shared,
    entry: &CatalogEntry,
    locked: &mut LockedWriter<'_>,
    old: &RecordBatch,
    new: &RecordBatch,
    batch: &mut WriteBatch,
) -> Result<Staged> {
    if entry.primary_key.is_empty() {
        keyless_row_writes(shared, entry, old, new, batch)?;
    } else {
        keyed_row_writes(shared, entry, old, new, batch)?;
    }
    let changes = [
        ChangeBatch::uniform(old.clone(), -1),
        ChangeBatch::inserts(new.clone()),
    ];
    locked.stage(&changes, batch)
}

/// The stored keys of the rows of `batch`, in a table with a primary key.
pub fn primary_keys(entry: &CatalogEntry, batch: &RecordBatch) -> Result<EncodedRows> {
    let columns: Vec<ArrayRef> = entry
        .primary_key
        .iter()
        .map(|&i| batch.column(i).clone())
        .collect();
    let mut encoded = EncodedRows::new();
    encode_rows(&keys::table_prefix(entry.id), &columns, &mut encoded)?;
    Ok(encoded)
}

/// A keyed table's row writes, refusing a key that repeats.
fn keyed_row_writes(
    shared: &Shared,
    entry: &CatalogEntry,
    old: &RecordBatch,
    new: &RecordBatch,
    batch: &mut WriteBatch,
) -> Result<()> {
    let old_keys = primary_keys(entry, old)?;
    let new_keys = primary_keys(entry, new)?;
    let mut new_values = EncodedRows::new();
    encode_rows(&[], new.columns(), &mut new_values)?;

    let removed: HashSet<&[u8]> = old_keys.iter().collect();
    let mut seen: HashSet<&[u8]> = HashSet::new();
    let mut to_check: Vec<&[u8]> = Vec::new();
    for key in new_keys.iter() {
        if !seen.insert(key) {
            return Err(duplicate_key(entry));
        }
        if !removed.contains(key) {
            to_check.push(key);
        }
    }
    let existing = shared.store.multi_get(&to_check)?;
    if existing.iter().any(|v| v.is_some()) {
        return Err(duplicate_key(entry));
    }
    for key in old_keys.iter() {
        batch.delete(key);
    }
    for (key, value) in new_keys.iter().zip(new_values.iter()) {
        batch.put(key, value);
    }
    Ok(())
}

/// The same for a table without a primary key, which keeps duplicate rows as Postgres does:
/// each stored row is keyed by a hidden row id (8 bytes, big-endian, in insertion order), new
/// rows take the ids after the largest one stored, and a deleted or updated row gives up the
/// id of a stored row with the same values. Rows with the same values are interchangeable (no
/// query can tell them apart), so which of them goes does not matter.
fn keyless_row_writes(
    shared: &Shared,
    entry: &CatalogEntry,
    old: &RecordBatch,
    new: &RecordBatch,
    batch: &mut WriteBatch,
) -> Result<()> {
    let prefix = keys::table_prefix(entry.id);
    if old.num_rows() > 0 {
        let mut old_values = EncodedRows::new();
        encode_rows(&[], old.columns(), &mut old_values)?;
        let stored = shared.store.scan_prefix(&prefix)?;
        let mut ids_by_row: HashMap<&[u8], Vec<&[u8]>> = HashMap::new();
        for (key, value) in &stored {
            ids_by_row.entry(&value[..]).or_default().push(&key[..]);
        }
        for row in old_values.iter() {
            let key = ids_by_row
                .get_mut(row)
                .and_then(Vec::pop)
                .ok_or_else(|| RunnelError::internal("a deleted row is not stored"))?;
            batch.delete(key);
        }
    }
    if new.num_rows() > 0 {
        let mut end = prefix.clone();
        end.extend_from_slice(&[0xff; 9]);
        let next = match shared.store.last_key_in_range(&prefix, &end)? {
            Some(last) => row_id(&last[prefix.len()..])? + 1,
            None => 0,
        };
        let mut new_values = EncodedRows::new();
        encode_rows(&[], new.columns(), &mut new_values)?;
        for (i, value) in new_values.iter().enumerate() {
            let mut key = prefix.clone();
            key.extend_from_slice(&(next + i as u64).to_be_bytes());
            batch.put(&key, value);
        }
    }
    Ok(())
}

fn row_id(bytes: &[u8]) -> Result<u64> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| RunnelError::internal("a stored row id is not 8 bytes"))
}

pub fn duplicate_key(entry: &CatalogEntry) -> RunnelError {
    let cols: Vec<&str> = entry
        .primary_key
        .iter()
        .map(|&i| entry.schema.field(i).name().as_str())
        .collect();
    RunnelError::execution(
        SqlState::UNIQUE_VIOLATION,
        format!(
            "duplicate key value violates unique constraint \"{}_pkey\": a row with this ({}) already exists",
            entry.name,
            cols.join(", ")
        ),
    )
}

fn require_table(entry: &CatalogEntry, verb: &str) -> Result<()> {
    if entry.kind == ObjectKind::Stream {
        return Err(RunnelError::plan(
            SqlState::WRONG_OBJECT_TYPE,
            format!(
                "cannot {verb} stream \"{}\": streams are append-only (use a TABLE for rows that change)",
                entry.name
            ),
        ));
    }
    Ok(())
}

pub async fn delete(session: &mut RunnelSession, dml: &DmlStatement) -> Result<QueryResponse> {
    let entry = target(session, dml)?;
    require_table(&entry, "DELETE FROM")?;
    let shared = session.shared.clone();
    let writer = shared.writer(entry.id)?;
    let mut locked = writer.lock().await;
    let batches = run(session, dml.input.as_ref().clone()).await?;
    let old = conform(&entry.schema, &batches, 0)?;
    let n = old.num_rows();
    if n > 0 {
        let empty = RecordBatch::new_empty(entry.schema.clone());
        match session.pending_writes() {
            Some(pending) => lock_pending(&pending).add(&shared, &entry, old, empty)?,
            None => write_table_changes(&shared, &entry, &mut locked, &old, &empty)?,
        }
    }
    drop(locked);
    shared.worker.wake();
    Ok(QueryResponse::Command {
        tag: format!("DELETE {n}"),
    })
}

pub async fn update(session: &mut RunnelSession, dml: &DmlStatement) -> Result<QueryResponse> {
    let entry = target(session, dml)?;
    require_table(&entry, "UPDATE")?;
    // DataFusion plans UPDATE as a projection of every column's new value over the selected
    // rows; project the old columns next to it so each row's before and after are paired.
    let LogicalPlan::Projection(projection) = dml.input.as_ref() else {
        return Err(RunnelError::internal("UPDATE plan is not a projection"));
    };
    let width = entry.schema.fields().len();
    if projection.expr.len() != width {
        return Err(RunnelError::internal(
            "UPDATE projection does not cover every column",
        ));
    }
    let mut exprs: Vec<Expr> = projection
        .input
        .schema()
        .columns()
        .into_iter()
        .take(width)
        .map(Expr::Column)
        .collect();
    for (i, e) in projection.expr.iter().enumerate() {
        let inner = match e {
            Expr::Alias(a) => a.expr.as_ref().clone(),
            other => other.clone(),
        };
        exprs.push(inner.alias(format!("__runnel_new_{i}")));
    }
    let paired = LogicalPlan::Projection(Projection::try_new(exprs, projection.input.clone())?);
    let shared = session.shared.clone();
    let writer = shared.writer(entry.id)?;
    let mut locked = writer.lock().await;
    let batches = run(session, paired).await?;
    let old = conform(&entry.schema, &batches, 0)?;
    let new = conform(&entry.schema, &batches, width)?;
    let n = old.num_rows();
    if n > 0 {
        match session.pending_writes() {
            Some(pending) => lock_pending(&pending).add(&shared, &entry, old, new)?,
            None => write_table_changes(&shared, &entry, &mut locked, &old, &new)?,
        }
    }
    drop(locked);
    shared.worker.wake();
    Ok(QueryResponse::Command {
        tag: format!("UPDATE {n}"),
    })
}
