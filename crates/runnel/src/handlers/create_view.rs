//! CREATE MATERIALIZED VIEW (and EXPLAIN of it): plan the query with DataFusion, lower it to
//! the streaming plan, and have the worker backfill and start maintaining it. The catalog
//! entry is committed with the view's first checkpoint.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::execution::context::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast;
use runnel_common::{Result, RunnelError, SqlState};
use runnel_connectors::kafka::resolve_start as resolve_topic_start;
use runnel_connectors::StartPosition;
use runnel_pgwire::QueryResponse;
use runnel_plan::{ObjectId, StreamPlan};
use runnel_sql::access::Access;
use runnel_sql::ddl::sql_options;
use runnel_sql::statement::ident_name;
use runnel_sql::{
    lower_view, Catalog, CatalogEntry, ObjectKind, RelationInfo, RelationResolver, Statement,
    StoredEntry,
};
use runnel_state::keys;

use super::{text_rows, text_schema};
use crate::catalog_service::CatalogService;
use crate::session::RunnelSession;
use crate::shared::Shared;

struct CatalogResolver<'a>(&'a Catalog);

impl RelationResolver for CatalogResolver<'_> {
    fn resolve_relation(&self, name: &str) -> Result<RelationInfo> {
        let entry = self.0.resolve(name)?;
        Ok(RelationInfo {
            id: entry.id,
            kind: entry.relation_kind(),
            event_time: entry.event_time.clone(),
        })
    }
}

/// A view's plan and its output schema (Postgres-style column names, all nullable).
pub struct PlannedView {
    pub plan: StreamPlan,
    pub schema: SchemaRef,
}

pub async fn plan_view(
    ctx: &SessionContext,
    catalog: &Catalog,
    id: ObjectId,
    view: &ast::CreateView,
    emit_on_window_close: bool,
    sql: &str,
) -> Result<PlannedView> {
    let options = sql_options(&view.options)?;
    if let Some((key, _)) = options.iter().find(|(k, _)| k != "start") {
        return Err(RunnelError::not_implemented(format!(
            "materialized view option {key} (views take only start)"
        )));
    }
    let state = ctx.state();
    let mut query = view.query.clone();
    runnel_sql::asof::rewrite_asof_joins(&mut query)?;
    let mut statement = ast::Statement::Query(query);
    runnel_sql::interval_literals::read_interval_literals(&mut statement)?;
    let logical = match state
        .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
        .await
    {
        Ok(logical) => logical,
        Err(error) => {
            return Err(super::query::planning_failed(&state, &statement, sql, error).await)
        }
    };
    let logical = runnel_sql::pg_numbers::plan_postgres_aggregates(logical)?;
    // A view reads its literals the same way whoever creates it: ISO, MDY.
    let logical = crate::text_casts::plan_postgres_text_casts(
        ctx,
        logical,
        "text_out_utc",
        runnel_common::date_text::FieldOrder::default(),
    )?;
    let logical = runnel_sql::temporal::bind_event_time_now(logical)?;
    let mut names = crate::convert::postgres_column_names(&logical);
    if !view.columns.is_empty() {
        if view.columns.len() != names.len() {
            return Err(RunnelError::plan(
                SqlState::SYNTAX_ERROR,
                format!(
                    "the view's column list names {} columns but the query returns {}",
                    view.columns.len(),
                    names.len()
                ),
            ));
        }
        names = view.columns.iter().map(|c| ident_name(&c.name)).collect();
    }
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(RunnelError::plan(
                SqlState::DUPLICATE_COLUMN,
                format!("column \"{name}\" specified more than once; give the columns distinct names with AS"),
            ));
        }
    }
    runnel_sql::check_view_plan(&logical)?;
    let optimized = state.optimize(&logical)?;
    let plan = lower_view(
        &optimized,
        id,
        &CatalogResolver(catalog),
        emit_on_window_close,
    )?;
    let fields: Vec<Field> = logical
        .schema()
        .fields()
        .iter()
        .zip(&names)
        .map(|(f, name)| {
            Field::new(name, f.data_type().clone(), true).with_metadata(f.metadata().clone())
        })
        .collect();
    Ok(PlannedView {
        plan,
        schema: Arc::new(Schema::new(fields)),
    })
}

pub async fn handle(
    session: &mut RunnelSession,
    view: &ast::CreateView,
    explain: bool,
    emit_on_window_close: bool,
    sql: &str,
) -> Result<QueryResponse> {
    let shared = session.shared.clone();
    let name = runnel_sql::statement::object_name(&view.name);
    session.follow_search_path();
    if explain {
        let planned = plan_view(
            &session.ctx,
            &shared.catalog.snapshot(),
            0,
            view,
            emit_on_window_close,
            sql,
        )
        .await?;
        let text = planned.plan.to_string();
        let rows = text.lines().map(|l| vec![Some(l.to_string())]).collect();
        return text_rows(text_schema(&["QUERY PLAN"]), rows);
    }
    crate::privileges::require_create(session)?;
    let _ddl = shared.catalog.lock_changes().await;
    let catalog = shared.catalog.snapshot();
    if let Some(existing) = catalog.get(&name) {
        if view.if_not_exists {
            return Ok(QueryResponse::Command {
                tag: "CREATE MATERIALIZED VIEW".into(),
            });
        }
        return Err(RunnelError::plan(
            SqlState::DUPLICATE_TABLE,
            format!(
                "relation \"{name}\" already exists (a {})",
                existing.kind.sql_name()
            ),
        ));
    }
    let (id, id_write) = shared.catalog.allocate_id();
    let planned = plan_view(&session.ctx, &catalog, id, view, emit_on_window_close, sql).await?;
    // The view's owner reads what the view reads.
    let principal = crate::privileges::Principal::of(session);
    for id in planned.plan.dependencies() {
        if let Some(input) = catalog.get_by_id(id) {
            principal.require(input, runnel_sql::access::Privileges::SELECT)?;
        }
    }
    let start_offsets = resolve_start(&shared, &catalog, &planned.plan, view).await?;
    require_untrimmed(&shared, &catalog, &planned.plan)?;
    let entry = CatalogEntry {
        id,
        name,
        kind: ObjectKind::MaterializedView,
        sql: sql.to_string(),
        schema: planned.schema.clone(),
        primary_key: vec![],
        dependencies: planned.plan.dependencies(),
        view_key: planned.plan.view_key().map(<[usize]>::to_vec),
        view_appended: planned.plan.view_appended(),
        start_offsets,
        watermark: None,
        event_time: planned.plan.output().event_time.clone(),
        comments: Default::default(),
        access: Access::owned_by(&session.identity.user),
    };
    let writes = vec![CatalogService::entry_write(&entry)?, id_write];
    // The backfill's progress goes to the log, SHOW PROGRESS and, as NOTICEs, this client.
    let report = runnel_runtime::BackfillReport {
        view_name: entry.name.clone(),
        notices: session.live_notice_sender(),
    };
    shared
        .worker
        .create_view(
            id,
            planned.plan,
            planned.schema,
            entry.start_offsets.clone(),
            writes,
            report,
        )
        .await?;
    shared.catalog.publish(|c| c.insert(entry));
    Ok(QueryResponse::Command {
        tag: "CREATE MATERIALIZED VIEW".into(),
    })
}

/// Re-creates a view from its stored definition at start-up; its state is already stored.
pub async fn restore(shared: &Arc<Shared>, stored: &StoredEntry) -> Result<()> {
    let parsed = runnel_sql::parse_statements(&stored.sql)?;
    let Some(Statement::CreateMaterializedView {
        view,
        emit_on_window_close,
        ..
    }) = parsed.first().map(|p| &p.kind)
    else {
        return Err(RunnelError::internal(
            "stored definition is not CREATE MATERIALIZED VIEW",
        ));
    };
    let ctx = crate::query_context::session_context(
        shared,
        &crate::system_catalog::SessionIdentity::system(),
    );
    let catalog = shared.catalog.snapshot();
    let mut planned = plan_view(
        &ctx,
        &catalog,
        stored.id,
        view,
        *emit_on_window_close,
        &stored.sql,
    )
    .await?;
    // The stored rows' layout is the one chosen at creation, whatever planning says today.
    planned.plan.set_view_key(stored.view_key.clone());
    planned.plan.set_view_appended(stored.view_appended);
    let entry = CatalogEntry {
        id: stored.id,
        name: stored.name.clone(),
        kind: ObjectKind::MaterializedView,
        sql: stored.sql.clone(),
        schema: planned.schema.clone(),
        primary_key: vec![],
        dependencies: planned.plan.dependencies(),
        view_key: stored.view_key.clone(),
        view_appended: stored.view_appended,
        start_offsets: stored.start_offsets.clone(),
        watermark: None,
        event_time: planned.plan.output().event_time.clone(),
        comments: Default::default(),
        access: Access::default(),
    };
    // Rows and state an earlier Runnel laid out differently are dropped, and the view is
    // backfilled from its sources as if created now (from its original start); its entry is
    // rewritten with the checkpoint that holds the new state, so a crash before that
    // rebuilds it again.
    let rebuild =
        runnel_sql::catalog::state_needs_rebuild(stored.state_layout, planned.plan.shared_nodes)
            || stored.vnode_count != runnel_plan::VNODE_COUNT;
    let mut writes = Vec::new();
    if rebuild {
        tracing::warn!(
            view = %stored.name,
            layout = stored.state_layout,
            "rebuilding the view from its sources: its state was written by an earlier Runnel"
        );
        let mut stale = runnel_state::WriteBatch::default();
        for prefix in [
            keys::view_prefix(stored.id),
            keys::view_operators_prefix(stored.id),
        ] {
            stale.delete_range(&prefix, &keys::prefix_end(&prefix));
        }
        shared.store.write(stale)?;
        // The stored entry as it was (its comments and privileges are restored from it), with
        // the layout its new state has.
        let upgraded = StoredEntry {
            state_layout: runnel_sql::catalog::STATE_LAYOUT,
            vnode_count: runnel_plan::VNODE_COUNT,
            ..stored.clone()
        };
        let value = serde_json::to_vec(&upgraded)
            .map_err(|e| RunnelError::internal(format!("catalog entry not serialisable: {e}")))?;
        writes.push((keys::catalog_entry(stored.id), value));
    }
    shared
        .worker
        .add_view(
            stored.id,
            planned.plan,
            planned.schema,
            rebuild,
            stored.start_offsets.clone(),
            writes,
        )
        .await?;
    shared.catalog.publish(|c| c.insert(entry));
    Ok(())
}

/// A new view reads its embedded streams from their first row: refused, naming the earliest
/// available position, when retention removed rows of one (a Kafka stream's are read again
/// from its topic, a generated stream's made again by its generator).
fn require_untrimmed(shared: &Arc<Shared>, catalog: &Catalog, plan: &StreamPlan) -> Result<()> {
    for dep in plan.dependencies() {
        let Some(entry) = catalog.get_by_id(dep) else {
            continue;
        };
        if entry.kind != ObjectKind::Stream
            || shared.sources.kafka_options(dep).is_some()
            || shared.stream_cache.archive(dep).is_some()
        {
            continue;
        }
        if runnel_state::log_index::log_start(&shared.store, dep)? > 0 {
            let earliest = runnel_runtime::log_archive::earliest_entry(&shared.store, dep)?;
            return Err(runnel_runtime::log_archive::trimmed_error(
                &entry.name,
                earliest,
            ));
        }
    }
    Ok(())
}

/// A view's `WITH (start = ...)`: per Kafka stream it reads, the first offset of each
/// partition, resolved against the broker now ('latest' and timestamps mean as of creation).
/// `earliest` (the default) is everything the streams ingested and needs no offsets.
async fn resolve_start(
    shared: &Arc<Shared>,
    catalog: &Catalog,
    plan: &StreamPlan,
    view: &ast::CreateView,
) -> Result<BTreeMap<ObjectId, BTreeMap<i32, i64>>> {
    let options = sql_options(&view.options)?;
    let Some((_, text)) = options.iter().rev().find(|(k, _)| k == "start") else {
        return Ok(BTreeMap::new());
    };
    let start = StartPosition::parse(text)?;
    if start == StartPosition::Earliest {
        return Ok(BTreeMap::new());
    }
    let mut out = BTreeMap::new();
    for dep in plan.dependencies() {
        let Some(entry) = catalog.get_by_id(dep) else {
            continue;
        };
        if entry.kind != ObjectKind::Stream {
            continue;
        }
        let Some(options) = shared.sources.kafka_options(dep) else {
            continue;
        };
        let position = start.clone();
        let offsets = tokio::task::spawn_blocking(move || {
            resolve_topic_start(
                &options.bootstrap_servers,
                &options.security,
                &options.topic,
                &position,
            )
        })
        .await
        .map_err(|e| RunnelError::internal(format!("start resolution panicked: {e}")))??;
        out.insert(dep, offsets);
    }
    if out.is_empty() {
        return Err(RunnelError::plan(
            SqlState::INVALID_PARAMETER_VALUE,
            format!(
                "start = '{text}' applies to Kafka streams, and this view reads none (only 'earliest' is allowed here)"
            ),
        ));
    }
    Ok(out)
}
