//! COMMENT ON a relation or a column: the text is kept in the catalog entry (persisted with
//! it) and read by `pg_description`, `obj_description()` and `col_description()`, which is
//! where psql's `\dt+`, `\d+` and tools such as DBeaver and dbt look for it.

use runnel_common::{Result, RunnelError, SqlState};
use runnel_pgwire::QueryResponse;
use runnel_sql::ObjectKind;
use runnel_state::WriteBatch;

use crate::catalog_service::CatalogService;
use crate::session::RunnelSession;

pub async fn handle(
    session: &mut RunnelSession,
    kind: ObjectKind,
    relation: &str,
    column: Option<&str>,
    text: Option<&str>,
) -> Result<QueryResponse> {
    let shared = session.shared.clone();
    let _changes = shared.catalog.lock_changes().await;
    let catalog = shared.catalog.snapshot();
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
    let mut updated = (**entry).clone();
    match text.filter(|t| !t.is_empty()) {
        Some(text) => updated.comments.insert(key, text.to_string()),
        None => updated.comments.remove(&key),
    };
    let (k, v) = CatalogService::entry_write(&updated)?;
    let mut batch = WriteBatch::default();
    batch.put(k, v);
    shared.store.write(batch)?;
    shared.catalog.publish(|c| c.insert(updated));
    Ok(QueryResponse::Command {
        tag: "COMMENT".into(),
    })
}
