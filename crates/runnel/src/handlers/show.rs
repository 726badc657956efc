//! SHOW STREAMS / TABLES / MATERIALIZED VIEWS / SINKS / PROGRESS.

use datafusion::arrow::datatypes::SchemaRef;
use runnel_common::Result;
use runnel_pgwire::QueryResponse;
use runnel_sql::{ObjectKind, ShowKind};
use runnel_state::keys;

use super::{text_rows, text_schema};
use crate::session::RunnelSession;

pub fn schema(kind: ShowKind) -> SchemaRef {
    match kind {
        ShowKind::Streams | ShowKind::Tables | ShowKind::Sinks => text_schema(&["name"]),
        ShowKind::MaterializedViews => text_schema(&["name", "status"]),
        ShowKind::Progress => text_schema(&[
            "source",
            "partition",
            "committed_offset",
            "end_offset",
            "lag",
            "rows_read",
        ]),
    }
}

pub async fn handle(session: &mut RunnelSession, kind: ShowKind) -> Result<QueryResponse> {
    let catalog = session.shared.catalog();
    let names = |k: ObjectKind| -> Vec<Vec<Option<String>>> {
        let mut names: Vec<String> = catalog
            .entries()
            .filter(|e| e.kind == k)
            .map(|e| e.name.clone())
            .collect();
        names.sort();
        names.into_iter().map(|n| vec![Some(n)]).collect()
    };
    let rows = match kind {
        ShowKind::Streams => names(ObjectKind::Stream),
        ShowKind::Tables => names(ObjectKind::Table),
        ShowKind::Sinks => vec![],
        ShowKind::MaterializedViews => {
            let status = session.shared.worker.status().await?;
            let mut views: Vec<(String, String)> = catalog
                .entries()
                .filter(|e| e.kind == ObjectKind::MaterializedView)
                .map(|e| {
                    let state = status
                        .failed_views
                        .iter()
                        .find(|(id, _)| *id == e.id)
                        .map(|(_, err)| format!("failed: {err}"))
                        .unwrap_or_else(|| "running".to_string());
                    (e.name.clone(), state)
                })
                .collect();
            views.sort();
            views
                .into_iter()
                .map(|(n, s)| vec![Some(n), Some(s)])
                .collect()
        }
        ShowKind::Progress => {
            let status = session.shared.worker.status().await?;
            let store = &session.shared.store;
            let mut rows = Vec::new();
            for source in status.sources {
                let Some(entry) = catalog.get_by_id(source.id) else {
                    continue;
                };
                let prefix = keys::log_prefix(source.id);
                let end = store
                    .last_key_in_range(&prefix, &keys::prefix_end(&prefix))?
                    .and_then(|k| keys::log_entry_seq(&k))
                    .map_or(0, |s| s + 1);
                rows.push(vec![
                    Some(entry.name.clone()),
                    Some("0".to_string()),
                    Some(source.position.to_string()),
                    Some(end.to_string()),
                    Some(end.saturating_sub(source.position).to_string()),
                    Some(source.rows_read.to_string()),
                ]);
            }
            rows
        }
    };
    text_rows(schema(kind), rows)
}
