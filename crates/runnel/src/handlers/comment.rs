//! COMMENT ON a relation or a column: the text is kept in the catalog entry (persisted with
//! it) and read by `pg_description`, `obj_description()` and `col_description()`, which is
//! where psql's `\dt+`, `\d+` and tools such as DBeaver and dbt look for it. In a
//! transaction block it is checked at once and applied at COMMIT (ROLLBACK drops it).

use std::sync::Arc;

use runnel_common::{Result, RunnelError, SqlState};
use runnel_pgwire::QueryResponse;
use runnel_sql::{Catalog, CatalogEntry, ObjectKind};
use runnel_state::WriteBatch;

use crate::catalog_service::CatalogService;
use crate::session::RunnelSession;
use crate::shared::Shared;

pub async fn handle(
    session: &mut RunnelSession,
    kind: ObjectKind,
    relation: &str,
    column: Option<&str>,
    text: Option<&str>,
) -> Result<QueryResponse> {
    check(session, kind, relation, column)?;
    apply(&session.shared.clone(), kind, relation, column, text).await?;
    Ok(QueryResponse::Command {
        tag: "COMMENT".into(),
    })
}

/// That the COMMENT's target exists and the session's role owns it.
pub fn check(
    session: &RunnelSession,
    kind: ObjectKind,
    relation: &str,
    column: Option<&str>,
) -> Result<()> {
    let (entry, _) = target(&session.shared.catalog.snapshot(), kind, relation, column)?;
    crate::privileges::Principal::of(session).require_owner(&entry)
}

/// The entry a COMMENT names and the comment's key in it (0, or the column's number); 42P01,
/// 42703 or 42809 when there is no such relation or column of the right kind.
pub fn target(
    catalog: &Catalog,
    kind: ObjectKind,
    relation: &str,
    column: Option<&str>,
) -> Result<(Arc<CatalogEntry>, i32)> {
    let entry = catalog
        .get(relation)
        .filter(|e| e.kind != ObjectKind::Sink)
        .ok_or_else(|| {
            RunnelError::plan(
                SqlState::UNDEFINED_TABLE,
                format!("relation \"{relation}\" does not exist"),
            )
        })?;
    // COMMENT ON TABLE names a stream or a table; COMMENT ON MATERIALIZED VIEW a view.
    let table_like = matches!(entry.kind, ObjectKind::Stream | ObjectKind::Table);
    if column.is_none() && table_like != (kind == ObjectKind::Table) {
        return Err(RunnelError::plan(
            SqlState::WRONG_OBJECT_TYPE,
            format!("\"{relation}\" is a {}", entry.kind.sql_name()),
        ));
    }
    let key = match column {
        None => 0,
        Some(column) => {
            let index = entry.schema.index_of(column).map_err(|_| {
                RunnelError::plan(
                    SqlState::UNDEFINED_COLUMN,
                    format!("column \"{column}\" of relation \"{relation}\" does not exist"),
                )
            })?;
            i32::try_from(index + 1)
                .map_err(|_| RunnelError::internal("column number out of range"))?
        }
    };
    Ok((entry.clone(), key))
}

/// Sets (or with `None` or '' removes) a comment and persists it.
pub async fn apply(
    shared: &Arc<Shared>,
    kind: ObjectKind,
    relation: &str,
    column: Option<&str>,
    text: Option<&str>,
) -> Result<()> {
    let _changes = shared.catalog.lock_changes().await;
    let (entry, key) = target(&shared.catalog.snapshot(), kind, relation, column)?;
    let mut updated = (*entry).clone();
    match text.filter(|t| !t.is_empty()) {
        Some(text) => updated.comments.insert(key, text.to_string()),
        None => updated.comments.remove(&key),
    };
    let (k, v) = CatalogService::entry_write(&updated)?;
    let mut batch = WriteBatch::default();
    batch.put(k, v);
    shared.store.write(batch)?;
    shared.catalog.publish(|c| c.insert(updated));
    Ok(())
}
