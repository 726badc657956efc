//! CREATE STREAM and CREATE TABLE: validate the definition, persist it and register its log
//! with the dataflow.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast;
use runnel_common::{Result, RunnelError, SqlState};
use runnel_pgwire::QueryResponse;
use runnel_sql::{relation_def, CatalogEntry, ObjectKind, Statement, StoredEntry};

use crate::engine::Shared;
use crate::session::RunnelSession;

pub async fn handle(
    session: &mut RunnelSession,
    kind: ObjectKind,
    create: &ast::CreateTable,
    sql: &str,
) -> Result<QueryResponse> {
    let def = relation_def(kind, create)?;
    let tag = match kind {
        ObjectKind::Stream => "CREATE STREAM",
        _ => "CREATE TABLE",
    };
    let shared = session.shared.clone();
    let _ddl = shared.ddl.lock().await;
    if let Some(existing) = shared.catalog().get(&def.name) {
        if create.if_not_exists {
            return Ok(QueryResponse::Command { tag: tag.into() });
        }
        return Err(RunnelError::plan(
            SqlState::DUPLICATE_TABLE,
            format!(
                "relation \"{}\" already exists (a {})",
                def.name,
                existing.kind.sql_name()
            ),
        ));
    }
    let (id, id_write) = shared.allocate_id();
    let entry = CatalogEntry {
        id,
        name: def.name,
        kind,
        sql: sql.to_string(),
        schema: def.schema,
        primary_key: def.primary_key,
        view_key: None,
        dependencies: vec![],
    };
    let writes = vec![Shared::catalog_write(&entry)?, id_write];
    shared
        .worker
        .add_source(id, entry.schema.clone(), writes)
        .await?;
    shared.update_catalog(|c| c.insert(entry));
    Ok(QueryResponse::Command { tag: tag.into() })
}

/// Re-creates a stream or table from its stored definition at start-up.
pub async fn restore(shared: &Arc<Shared>, stored: &StoredEntry) -> Result<()> {
    let parsed = runnel_sql::parse_statements(&stored.sql)?;
    let Some(Statement::CreateRelation { kind, create }) = parsed.first().map(|p| &p.kind) else {
        return Err(RunnelError::internal(
            "stored definition is not CREATE STREAM/TABLE",
        ));
    };
    let def = relation_def(*kind, create)?;
    let entry = CatalogEntry {
        id: stored.id,
        name: stored.name.clone(),
        kind: *kind,
        sql: stored.sql.clone(),
        schema: def.schema,
        primary_key: def.primary_key,
        view_key: None,
        dependencies: vec![],
    };
    shared
        .worker
        .add_source(entry.id, entry.schema.clone(), vec![])
        .await?;
    shared.update_catalog(|c| c.insert(entry));
    Ok(())
}
