//! DROP STREAM / TABLE / MATERIALIZED VIEW, refusing to drop what a view reads unless CASCADE.

use runnel_common::{Result, RunnelError, SqlState};
use runnel_pgwire::QueryResponse;
use runnel_sql::ObjectKind;

use crate::session::RunnelSession;

pub async fn handle(
    session: &mut RunnelSession,
    kind: ObjectKind,
    names: &[String],
    if_exists: bool,
    cascade: bool,
) -> Result<QueryResponse> {
    let shared = session.shared.clone();
    let _ddl = shared.catalog.lock_changes().await;
    let catalog = shared.catalog.snapshot();
    let mut ids = Vec::new();
    for name in names {
        let Some(entry) = catalog.get(name) else {
            if if_exists {
                continue;
            }
            return Err(RunnelError::plan(
                SqlState::UNDEFINED_TABLE,
                format!("{} \"{name}\" does not exist", kind.sql_name()),
            ));
        };
        if entry.kind != kind {
            return Err(RunnelError::plan(
                SqlState::WRONG_OBJECT_TYPE,
                format!(
                    "\"{name}\" is a {}, not a {}; use DROP {}",
                    entry.kind.sql_name(),
                    kind.sql_name(),
                    entry.kind.sql_name().to_uppercase()
                ),
            ));
        }
        crate::privileges::Principal::of(session).require_owner(entry)?;
        let all = catalog.with_dependents(entry.id);
        let dependents: Vec<String> = all
            .iter()
            .filter(|e| e.id != entry.id)
            .map(|e| format!("{} {}", e.kind.sql_name(), e.name))
            .collect();
        if !dependents.is_empty() && !cascade {
            return Err(RunnelError::plan(
                SqlState::DEPENDENT_OBJECTS_STILL_EXIST,
                format!(
                    "cannot drop {} {name} because other objects depend on it ({}); use DROP ... CASCADE to drop them too",
                    kind.sql_name(),
                    dependents.join(", ")
                ),
            ));
        }
        for e in all {
            if !ids.contains(&e.id) {
                ids.push(e.id);
            }
        }
    }
    if !ids.is_empty() {
        // Dependents first, so no view is left reading a dropped input.
        ids.sort_unstable_by(|a, b| b.cmp(a));
        // A Kafka source's thread must be gone before its key ranges are deleted.
        for &id in &ids {
            let sources = shared.clone();
            tokio::task::spawn_blocking(move || sources.sources.stop(id))
                .await
                .map_err(|e| RunnelError::internal(format!("stopping a Kafka reader: {e}")))?;
        }
        shared.worker.drop_objects(ids.clone()).await?;
        shared.catalog.publish(|c| {
            for id in &ids {
                c.remove(*id);
            }
        });
        for id in ids {
            shared.forget_writer(id);
            shared.stream_cache.forget(id);
            shared.sinks.forget(id);
        }
    }
    let tag = match kind {
        ObjectKind::Stream => "DROP STREAM",
        ObjectKind::Table => "DROP TABLE",
        ObjectKind::MaterializedView => "DROP MATERIALIZED VIEW",
        ObjectKind::Sink => "DROP SINK",
    };
    Ok(QueryResponse::Command { tag: tag.into() })
}
