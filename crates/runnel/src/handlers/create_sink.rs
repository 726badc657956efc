//! CREATE SINK: every change of a view (or every row of a stream) written to a Kafka topic as
//! JSON, in append or upsert mode. The sink is a node of the dataflow after its input that
//! appends each checkpoint's changes to the sink's outbox; a delivery thread sends the outbox
//! on from the sink's own position ([`crate::sink_delivery`]), at least once.

use std::sync::Arc;

use runnel_common::{Result, RunnelError, SqlState};
use runnel_connectors::kafka::KafkaSink;
use runnel_connectors::{SinkMode, SinkOptions};
use runnel_pgwire::QueryResponse;
use runnel_plan::{ObjectId, RelationKind};
use runnel_runtime::operators::SinkOp;
use runnel_sql::access::{Access, Privileges};
use runnel_sql::{CatalogEntry, ObjectKind, Statement, StoredEntry};

use crate::catalog_service::CatalogService;
use crate::connector_registry::SinkInfo;
use crate::session::RunnelSession;
use crate::shared::Shared;

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
    let writes = vec![CatalogService::entry_write(&entry)?, id_write];
    // A new sink's outbox starts empty: its first entry is the input's current contents.
    let op = Box::new(SinkOp::new(id, 0));
    shared
        .worker
        .add_sink(id, input.id, input_kind, op, true, writes)
        .await?;
    start_delivery(&shared, id, name, &input, &options, sink)?;
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

/// Starts sending the sink's outbox to its topic and registers it for SHOW SINKS.
fn start_delivery(
    shared: &Shared,
    id: ObjectId,
    name: &str,
    input: &CatalogEntry,
    options: &SinkOptions,
    sink: KafkaSink,
) -> Result<()> {
    let status = sink.status();
    let schema = runnel_common::change::nullable_schema(&input.schema);
    let delivery = crate::sink_delivery::start(shared.store.clone(), id, name, schema, sink)?;
    shared.sinks.register(
        id,
        SinkInfo {
            from: input.name.clone(),
            topic: options.topic.clone(),
            mode: options.mode,
            status,
            delivery,
        },
    );
    Ok(())
}

/// Re-creates a sink at start-up: the outbox entries not yet delivered are sent first. The
/// broker may be down: they wait until it is back.
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
    let next_seq = crate::sink_delivery::next_outbox_seq(&shared.store, stored.id)?;
    let op = Box::new(SinkOp::new(stored.id, next_seq));
    shared
        .worker
        .add_sink(stored.id, input.id, input_kind, op, false, vec![])
        .await?;
    start_delivery(shared, stored.id, &stored.name, &input, &options, sink)?;
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
