//! SHOW STREAMS / TABLES / MATERIALIZED VIEWS / SINKS / PROGRESS / WATERMARKS.

use datafusion::arrow::datatypes::SchemaRef;
use runnel_common::time::{format_duration_micros, format_micros};
use runnel_common::Result;
use runnel_connectors::SinkMode;
use runnel_pgwire::QueryResponse;
use runnel_sql::{ObjectKind, ShowKind};
use runnel_state::keys;

use super::{text_rows, text_schema};
use crate::session::RunnelSession;

pub fn schema(kind: ShowKind) -> SchemaRef {
    match kind {
        ShowKind::Streams | ShowKind::Tables => text_schema(&["name"]),
        ShowKind::Sinks => text_schema(&["name", "source", "topic", "mode", "status", "delivered"]),
        ShowKind::MaterializedViews => text_schema(&["name", "status"]),
        ShowKind::Progress => text_schema(&[
            "source",
            "partition",
            "offset",
            "end_offset",
            "lag",
            "events_per_sec",
            "backfill",
            "errors",
            "last_error",
            "status",
        ]),
        ShowKind::Watermarks => text_schema(&[
            "stream",
            "watermark_column",
            "delay",
            "watermark",
            "late_events",
            "partitions",
            "idle_partitions",
        ]),
    }
}

pub async fn handle(session: &mut RunnelSession, kind: ShowKind) -> Result<QueryResponse> {
    let catalog = session.shared.catalog.snapshot();
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
        ShowKind::Watermarks => {
            let mut rows = Vec::new();
            let mut streams: Vec<_> = catalog
                .entries()
                .filter(|e| e.watermark.is_some())
                .cloned()
                .collect();
            streams.sort_by(|a, b| a.name.cmp(&b.name));
            for e in streams {
                let Some(def) = e.watermark else { continue };
                let clock = session.shared.writer(e.id)?.clock().await;
                // Shown like a value of the column: with a time zone only for TIMESTAMPTZ.
                let with_zone = matches!(
                    e.schema.field(def.column).data_type(),
                    datafusion::arrow::datatypes::DataType::Timestamp(_, Some(_))
                );
                let format_micros = |us: i64| {
                    let text = format_micros(us);
                    match with_zone {
                        true => text,
                        false => text.trim_end_matches("+00").to_string(),
                    }
                };
                let (watermark, late, partitions, idle) = match &clock {
                    Some(c) => (
                        c.watermark.map(format_micros),
                        c.late_rows,
                        c.partitions.len().max(1),
                        c.idle_partitions(),
                    ),
                    None => (None, 0, 1, 0),
                };
                rows.push(vec![
                    Some(e.name.clone()),
                    Some(e.schema.field(def.column).name().clone()),
                    Some(format_duration_micros(def.delay_micros)),
                    watermark,
                    Some(late.to_string()),
                    Some(partitions.to_string()),
                    Some(idle.to_string()),
                ]);
            }
            rows
        }
        ShowKind::Streams => names(ObjectKind::Stream),
        ShowKind::Tables => names(ObjectKind::Table),
        ShowKind::Sinks => {
            let sinks = session.shared.sinks.snapshot();
            let mut rows: Vec<Vec<Option<String>>> = catalog
                .entries()
                .filter(|e| e.kind == ObjectKind::Sink)
                .filter_map(|e| {
                    let info = sinks.get(&e.id)?;
                    Some(vec![
                        Some(e.name.clone()),
                        Some(info.from.clone()),
                        Some(info.topic.clone()),
                        Some(
                            match info.mode {
                                SinkMode::Append => "append",
                                SinkMode::Upsert => "upsert",
                            }
                            .to_string(),
                        ),
                        Some(info.describe_status()),
                        Some(info.delivered().to_string()),
                    ])
                })
                .collect();
            rows.sort();
            rows
        }
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
        ShowKind::Progress => progress_rows(session).await?,
    };
    text_rows(schema(kind), rows)
}

/// One row per Kafka partition (offsets are Kafka offsets), one per embedded stream or
/// table (offsets are log sequence numbers, as read by the dataflow), and one per view being
/// backfilled (status `backfilling view`; offsets are input rows: `offset` the rows replayed,
/// `end_offset` all the backfill reads, `backfill` the share done).
async fn progress_rows(session: &RunnelSession) -> Result<Vec<Vec<Option<String>>>> {
    let catalog = session.shared.catalog.snapshot();
    let kafka = session.shared.sources.progress();
    let mut rows = Vec::new();
    for (id, progress) in &kafka {
        let Some(entry) = catalog.get_by_id(*id) else {
            continue;
        };
        for (partition, part) in &progress.partitions {
            let end = part.end_offset.map(|e| e.max(part.offset));
            let backfill = part.backfill.and_then(|(from, to)| {
                (to > from && part.offset < to).then(|| {
                    let done = (part.offset - from) as f64 / (to - from) as f64;
                    format!("{:.1}%", 100.0 * done)
                })
            });
            rows.push(vec![
                Some(entry.name.clone()),
                Some(partition.to_string()),
                Some(part.offset.to_string()),
                end.map(|e| e.to_string()),
                end.map(|e| (e - part.offset).to_string()),
                Some(format!("{:.0}", progress.events_per_sec)),
                backfill,
                Some(progress.errors.to_string()),
                progress.last_error.clone(),
                Some(progress.status.clone()),
            ]);
        }
        if progress.partitions.is_empty() {
            rows.push(vec![
                Some(entry.name.clone()),
                None,
                None,
                None,
                None,
                None,
                None,
                Some(progress.errors.to_string()),
                progress.last_error.clone(),
                Some(progress.status.clone()),
            ]);
        }
    }
    let status = session.shared.worker.status().await?;
    let store = &session.shared.store;
    for source in status.sources {
        if kafka.iter().any(|(id, _)| *id == source.id) {
            continue;
        }
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
            None,
            Some(source.position.to_string()),
            Some(end.to_string()),
            Some(end.saturating_sub(source.position).to_string()),
            None,
            None,
            Some("0".to_string()),
            None,
            Some("embedded".to_string()),
        ]);
    }
    // Views being created are not in the catalog yet: the backfill carries the name.
    for backfill in session.shared.worker.backfills() {
        rows.push(vec![
            Some(backfill.name.clone()),
            None,
            Some(backfill.rows_done.to_string()),
            Some(backfill.rows_total.to_string()),
            Some(
                backfill
                    .rows_total
                    .saturating_sub(backfill.rows_done)
                    .to_string(),
            ),
            Some(format!("{:.0}", backfill.rows_per_sec())),
            Some(format!("{:.1}%", backfill.percent())),
            Some("0".to_string()),
            None,
            Some("backfilling view".to_string()),
        ]);
    }
    Ok(rows)
}
