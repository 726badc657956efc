//! CREATE STREAM and CREATE TABLE: validate the definition, persist it and register its log
//! with the dataflow. A Kafka stream or table (`connector = 'kafka'`) also resolves its start
//! position against the broker, stores it as its first offsets (committed with the catalog
//! entry, so a restart never re-resolves 'latest'), and starts its ingestion thread.
//!
//! A stream's `retention` option says how much of its log the dataflow keeps (see
//! `runnel_runtime::log_archive`); a Kafka stream's topic is its archive.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast;
use runnel_common::{Result, Retention, RunnelError, SqlState};
use runnel_pgwire::QueryResponse;
use runnel_plan::{EventTime, TimeBound};
use runnel_sql::access::Access;
use runnel_sql::{
    relation_def, CatalogEntry, ObjectKind, RelationDef, Statement, StoredEntry, WatermarkClause,
};

use runnel_connectors::{KafkaOptions, NexmarkGenerator, NexmarkOptions};
use runnel_runtime::{LogArchive, LogKeeping};

use crate::catalog_service::CatalogService;
use crate::kafka_ingest;
use crate::nexmark_archive::NexmarkArchive;
use crate::session::RunnelSession;
use crate::shared::Shared;

/// `connector = 'nexmark'`: the stream's generator (streams only).
fn nexmark_generator(def: &RelationDef) -> Result<Option<Arc<NexmarkGenerator>>> {
    let is_nexmark = def
        .options
        .iter()
        .rev()
        .find(|(k, _)| k == "connector")
        .is_some_and(|(_, v)| v.eq_ignore_ascii_case("nexmark"));
    if !is_nexmark {
        return Ok(None);
    }
    if def.kind != ObjectKind::Stream {
        return Err(RunnelError::plan(
            SqlState::INVALID_TABLE_DEFINITION,
            "connector 'nexmark' makes streams (CREATE STREAM person / auction / bid)",
        ));
    }
    let options = NexmarkOptions::from_options(&def.options, &def.name)?;
    Ok(Some(Arc::new(NexmarkGenerator::new(options, &def.schema)?)))
}

/// Takes `retention` out of a definition's options (the connectors know nothing of it).
fn take_retention(def: &mut RelationDef) -> Result<Option<Retention>> {
    let mut found = None;
    for (k, v) in &def.options {
        if k == "retention" {
            found = Some(Retention::parse(v)?);
        }
    }
    def.options.retain(|(k, _)| k != "retention");
    if found.is_some() && def.kind != ObjectKind::Stream {
        return Err(RunnelError::plan(
            SqlState::INVALID_TABLE_DEFINITION,
            format!(
                "retention applies to streams; table \"{}\" keeps its current rows",
                def.name
            ),
        ));
    }
    Ok(found)
}

/// How the dataflow keeps a relation's log: a stream's retention (a Kafka stream's default is
/// the server's `kafka_log_retention`, read again from the topic; an embedded stream keeps
/// everything unless told, its log being the only copy), and a Kafka stream's topic as the
/// archive of what is trimmed. A Nexmark stream's generator is its archive: its log keeps
/// recipes, whose rows the generator makes again for the dataflow and for ad-hoc reads (it
/// is registered with the stream cache here).
fn log_keeping(
    shared: &Arc<Shared>,
    entry: &Arc<CatalogEntry>,
    retention: Option<Retention>,
    kafka: Option<(&KafkaOptions, &kafka_ingest::Layout)>,
    nexmark: Option<&Arc<NexmarkGenerator>>,
) -> LogKeeping {
    if entry.kind != ObjectKind::Stream {
        return LogKeeping::default();
    }
    match (kafka, nexmark) {
        (Some((options, layout)), _) => LogKeeping {
            retention: Some(retention.unwrap_or(shared.config.kafka_log_retention)),
            archive: Some(Arc::new(crate::kafka_archive::KafkaArchive::new(
                entry.clone(),
                options.clone(),
                layout.clone(),
            ))),
        },
        (None, Some(generator)) => {
            let archive: Arc<dyn LogArchive> =
                Arc::new(NexmarkArchive::new(entry.name.clone(), generator.clone()));
            shared.stream_cache.set_archive(entry.id, archive.clone());
            LogKeeping {
                retention,
                archive: Some(archive),
            }
        }
        (None, None) => LogKeeping {
            retention,
            archive: None,
        },
    }
}

/// A stream's event time as views see it: its watermark column, bounded with lag 0.
fn stream_event_time(def: &RelationDef) -> EventTime {
    match def.watermark {
        Some(wm) => EventTime {
            timed: true,
            bounds: vec![TimeBound {
                column: wm.column,
                lag_micros: 0,
            }],
        },
        None => EventTime::default(),
    }
}

pub async fn handle(
    session: &mut RunnelSession,
    kind: ObjectKind,
    create: &ast::CreateTable,
    watermark: Option<&WatermarkClause>,
    sql: &str,
) -> Result<QueryResponse> {
    let mut def = relation_def(kind, create, watermark)?;
    let retention = take_retention(&mut def)?;
    let nexmark = nexmark_generator(&def)?;
    let kafka = match nexmark {
        Some(_) => None,
        None => KafkaOptions::from_options(
            &def.options,
            session.shared.config.kafka_bootstrap_servers.as_deref(),
        )?,
    };
    if kafka.is_some() && kind == ObjectKind::Table && def.primary_key.is_empty() {
        return Err(RunnelError::plan(
            SqlState::INVALID_TABLE_DEFINITION,
            format!(
                "Kafka table \"{}\" needs a PRIMARY KEY: its records are upserted by key",
                def.name
            ),
        ));
    }
    crate::privileges::require_create(session)?;
    if let Some(options) = &kafka {
        crate::privileges::require_kafka(session)?;
        crate::privileges::require_server_files(session, &options.security)?;
    }
    let tag = match kind {
        ObjectKind::Stream => "CREATE STREAM",
        _ => "CREATE TABLE",
    };
    let shared = session.shared.clone();
    let _ddl = shared.catalog.lock_changes().await;
    if let Some(existing) = shared.catalog.snapshot().get(&def.name) {
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
    let prepared = match &kafka {
        Some(options) => {
            let (def, options) = (def.clone(), options.clone());
            let prepared =
                tokio::task::spawn_blocking(move || kafka_ingest::prepare(&def, &options))
                    .await
                    .map_err(|e| RunnelError::internal(format!("Kafka check panicked: {e}")))??;
            Some(prepared)
        }
        None => None,
    };
    let (id, id_write) = shared.catalog.allocate_id();
    let entry = CatalogEntry {
        id,
        name: def.name.clone(),
        kind,
        sql: sql.to_string(),
        schema: def.schema.clone(),
        primary_key: def.primary_key.clone(),
        view_key: None,
        view_appended: false,
        dependencies: vec![],
        start_offsets: Default::default(),
        watermark: def.watermark,
        event_time: stream_event_time(&def),
        comments: Default::default(),
        access: Access::owned_by(&session.identity.user),
    };
    let mut writes = vec![CatalogService::entry_write(&entry)?, id_write];
    if let Some((_, start)) = &prepared {
        writes.extend(kafka_ingest::offset_writes(id, start));
    }
    let entry = Arc::new(entry);
    let keeping = log_keeping(
        &shared,
        &entry,
        retention,
        kafka
            .as_ref()
            .zip(prepared.as_ref().map(|(layout, _)| layout)),
        nexmark.as_ref(),
    );
    shared
        .worker
        .add_source(
            id,
            entry.schema.clone(),
            keeping,
            entry.kind == runnel_sql::statement::ObjectKind::Table,
            writes,
        )
        .await?;
    shared.catalog.publish(|c| c.insert((*entry).clone()));
    if let (Some(options), Some((layout, _))) = (kafka, prepared) {
        crate::kafka_ingest::start(&shared, entry, options, layout)?;
    } else if let Some(generator) = nexmark {
        crate::nexmark_ingest::start(&shared, entry, generator)?;
    }
    Ok(QueryResponse::Command { tag: tag.into() })
}

/// Re-creates a stream or table from its stored definition at start-up.
pub async fn restore(shared: &Arc<Shared>, stored: &StoredEntry) -> Result<()> {
    let parsed = runnel_sql::parse_statements(&stored.sql)?;
    let Some(Statement::CreateRelation {
        kind,
        create,
        watermark,
    }) = parsed.first().map(|p| &p.kind)
    else {
        return Err(RunnelError::internal(
            "stored definition is not CREATE STREAM/TABLE",
        ));
    };
    let mut def = relation_def(*kind, create, watermark.as_deref())?;
    let retention = take_retention(&mut def)?;
    let nexmark = nexmark_generator(&def)?;
    let kafka = match nexmark {
        Some(_) => None,
        None => KafkaOptions::from_options(
            &def.options,
            shared.config.kafka_bootstrap_servers.as_deref(),
        )?,
    };
    let entry = Arc::new(CatalogEntry {
        id: stored.id,
        name: stored.name.clone(),
        kind: *kind,
        sql: stored.sql.clone(),
        schema: def.schema.clone(),
        primary_key: def.primary_key.clone(),
        view_key: None,
        view_appended: false,
        dependencies: vec![],
        start_offsets: Default::default(),
        watermark: def.watermark,
        event_time: stream_event_time(&def),
        comments: Default::default(),
        access: Access::default(),
    });
    let layout = match &kafka {
        Some(_) => Some(kafka_ingest::Layout::new(&def)?),
        None => None,
    };
    let keeping = log_keeping(
        shared,
        &entry,
        retention,
        kafka.as_ref().zip(layout.as_ref()),
        nexmark.as_ref(),
    );
    shared
        .worker
        .add_source(
            entry.id,
            entry.schema.clone(),
            keeping,
            entry.kind == runnel_sql::statement::ObjectKind::Table,
            vec![],
        )
        .await?;
    shared.catalog.publish(|c| c.insert((*entry).clone()));
    if let (Some(options), Some(layout)) = (kafka, layout) {
        // The broker may be down at start-up: the thread waits for it.
        crate::kafka_ingest::start(shared, entry, options, layout)?;
    } else if let Some(generator) = nexmark {
        crate::nexmark_ingest::start(shared, entry, generator)?;
    }
    Ok(())
}
