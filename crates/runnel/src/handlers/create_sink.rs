//! CREATE SINK: every change of a view (or every row of a stream) written to a Kafka topic as
//! JSON, in append or upsert mode. The sink is a node of the dataflow after its input; the
//! worker flushes it before each checkpoint, so delivery is at least once.

use std::sync::Arc;
use std::time::Duration;

use runnel_common::{ChangeBatch, Result, RunnelError, SqlState};
use runnel_connectors::kafka::KafkaSink;
use runnel_connectors::{SinkMode, SinkOptions};
use runnel_pgwire::QueryResponse;
use runnel_plan::{ObjectId, RelationKind};
use runnel_runtime::operators::{SinkOp, SinkWriter};
use runnel_sql::access::{Access, Privileges};
use runnel_sql::{CatalogEntry, ObjectKind, Statement, StoredEntry};

use crate::catalog_service::CatalogService;
use crate::connector_registry::SinkInfo;
use crate::session::RunnelSession;
use crate::shared::Shared;

/// How long a checkpoint waits for a sink's records to be acknowledged before it is
/// postponed.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

struct KafkaSinkWriter(KafkaSink);

impl SinkWriter for KafkaSinkWriter {
    fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
        Ok(self.0.write(&batch.data, &batch.weights)?)
    }

    fn flush(&mut self) -> Result<()> {
        Ok(self.0.flush(FLUSH_TIMEOUT)?)
    }
}

/// The input's kind and the key columns an upsert sink uses.
fn sink_input(from: &CatalogEntry, options: &SinkOptions) -> Result<(RelationKind, Vec<usize>)> {
    let all: Vec<usize> = (0..from.schema.fields().len()).collect();
    let kind = match from.kind {
        ObjectKind::Sink => {
            return Err(RunnelError::plan(
                SqlState::WRONG_OBJECT_TYPE,
                format!(
                    "\"{}\" is a sink; a sink reads a view, stream or table",
                    from.name
                ),
            ))
        }
        _ => from.relation_kind(),
    };
    let key = match (from.kind, options.mode) {
        (ObjectKind::Stream, SinkMode::Upsert) => {
            return Err(RunnelError::plan(
                SqlState::INVALID_PARAMETER_VALUE,
                format!(
                    "stream \"{}\" has no key to upsert by; use mode = 'append'",
                    from.name
                ),
            ))
        }
        (ObjectKind::Table, _) => from.primary_key.clone(),
        (ObjectKind::MaterializedView, _) => from.view_key.clone().unwrap_or(all),
        _ => all,
    };
    Ok((kind, key))
}

async fn connect(
    options: &SinkOptions,
    key: Vec<usize>,
    client_id: String,
    check_topic: bool,
) -> Result<KafkaSink> {
    let options = options.clone();
    tokio::task::spawn_blocking(move || KafkaSink::connect(&options, key, &client_id, check_topic))
        .await
        .map_err(|e| RunnelError::internal(format!("sink connect panicked: {e}")))?
        .map_err(Into::into)
}

pub async fn handle(
    session: &mut RunnelSession,
    name: &str,
    from: &str,
    options: &[(String, String)],
    if_not_exists: bool,
    sql: &str,
) -> Result<QueryResponse> {
    let shared = session.shared.clone();
    let options =
        SinkOptions::from_options(options, shared.config.kafka_bootstrap_servers.as_deref())?;
    let _ddl = shared.catalog.lock_changes().await;
    let catalog = shared.catalog.snapshot();
    if let Some(existing) = catalog.get(name) {
        if if_not_exists {
            return Ok(QueryResponse::Command {
                tag: "CREATE SINK".into(),
            });
        }
        return Err(RunnelError::plan(
            SqlState::DUPLICATE_TABLE,
            format!("\"{name}\" already exists (a {})", existing.kind.sql_name()),
        ));
    }
    let input = catalog.resolve(from)?.clone();
    crate::privileges::require_create(session)?;
    crate::privileges::require_kafka(session)?;
    crate::privileges::require_server_files(session, &options.security)?;
    crate::privileges::Principal::of(session).require(&input, Privileges::SELECT)?;
    let (input_kind, key) = sink_input(&input, &options)?;
    let (id, id_write) = shared.catalog.allocate_id();
    let sink = connect(&options, key, format!("runnel-sink-{name}-{id}"), true).await?;
    let owner = Access::owned_by(&session.identity.user);
    let entry = sink_entry(id, name, sql, &input, owner);
    register(&shared, id, &input.name, &options, &sink);
    let writes = vec![CatalogService::entry_write(&entry)?, id_write];
    let op = Box::new(SinkOp::new(Box::new(KafkaSinkWriter(sink))));
    if let Err(e) = shared
        .worker
        .add_sink(id, input.id, input_kind, op, true, writes)
        .await
    {
        shared.sinks.forget(id);
        return Err(e);
    }
    shared.catalog.publish(|c| c.insert(entry));
    Ok(QueryResponse::Command {
        tag: "CREATE SINK".into(),
    })
}

/// A sink's catalog entry: not a relation, but it shares the namespace and depends on its input.
fn sink_entry(
    id: ObjectId,
    name: &str,
    sql: &str,
    input: &CatalogEntry,
    access: Access,
) -> CatalogEntry {
    CatalogEntry {
        id,
        name: name.to_string(),
        kind: ObjectKind::Sink,
        sql: sql.to_string(),
        schema: input.schema.clone(),
        primary_key: vec![],
        dependencies: vec![input.id],
        view_key: None,
        view_appended: false,
        start_offsets: Default::default(),
        watermark: None,
        event_time: Default::default(),
        comments: Default::default(),
        access,
    }
}

fn register(shared: &Shared, id: ObjectId, from: &str, options: &SinkOptions, sink: &KafkaSink) {
    shared.sinks.register(
        id,
        SinkInfo {
            from: from.to_string(),
            topic: options.topic.clone(),
            mode: options.mode,
            status: sink.status(),
        },
    );
}

/// Re-creates a sink at start-up. The broker may be down: records queue until it is back.
pub async fn restore(shared: &Arc<Shared>, stored: &StoredEntry) -> Result<()> {
    let parsed = runnel_sql::parse_statements(&stored.sql)?;
    let Some(Statement::CreateSink { from, options, .. }) = parsed.first().map(|p| &p.kind) else {
        return Err(RunnelError::internal(
            "stored definition is not CREATE SINK",
        ));
    };
    let options =
        SinkOptions::from_options(options, shared.config.kafka_bootstrap_servers.as_deref())?;
    let input = shared.catalog.snapshot().resolve(from)?.clone();
    let (input_kind, key) = sink_input(&input, &options)?;
    let sink = connect(
        &options,
        key,
        format!("runnel-sink-{}-{}", stored.name, stored.id),
        false,
    )
    .await?;
    register(shared, stored.id, &input.name, &options, &sink);
    let op = Box::new(SinkOp::new(Box::new(KafkaSinkWriter(sink))));
    shared
        .worker
        .add_sink(stored.id, input.id, input_kind, op, false, vec![])
        .await?;
    let entry = sink_entry(
        stored.id,
        &stored.name,
        &stored.sql,
        &input,
        Access::default(),
    );
    shared.catalog.publish(|c| c.insert(entry));
    Ok(())
}
