//! The DataFusion context a session plans queries in: Runnel's catalog as the `public` schema,
//! `pg_catalog` and `information_schema` beside it, Runnel's functions, operators and table
//! functions, and Postgres's parsing and time-zone defaults.

use std::sync::Arc;

use datafusion::catalog::CatalogProvider;
use datafusion::execution::context::SessionContext;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::FunctionRegistry;
use datafusion::prelude::SessionConfig;

use crate::serving::{RelationTable, RunnelSchema};
use crate::shared::Shared;
use crate::system_catalog::{SessionIdentity, SystemSchema, SystemSchemaKind};

/// A DataFusion context whose `public` schema is Runnel's catalog, with `pg_catalog`
/// and `information_schema` beside it and the catalog functions for `session`.
pub fn session_context(shared: &Arc<Shared>, session: &SessionIdentity) -> SessionContext {
    let mut config = SessionConfig::new()
        // Runnel's own information_schema replaces DataFusion's.
        .with_information_schema(false)
        .with_target_partitions(2)
        .with_default_catalog_and_schema("runnel", "public");
    let options = config.options_mut();
    options.sql_parser.map_string_types_to_utf8view = false;
    // `1.005` is a numeric literal, as in Postgres, not a float that rounds on the way.
    options.sql_parser.parse_float_as_decimal = true;
    options.sql_parser.dialect = datafusion::common::config::Dialect::PostgreSQL;
    // Spans let planning errors point at the offending name, as Postgres's do.
    options.sql_parser.collect_spans = true;
    options.execution.time_zone = Some("+00:00".to_string());
    let state = SessionContext::new_with_config_rt(config, query_runtime(shared)).state();
    let state = runnel_sql::text_type_casts::with_type_planner(state);
    let mut ctx =
        SessionContext::new_with_state(runnel_sql::session_window::with_runnel_planner(state));
    ctx.register_udf((*runnel_sql::asof::asof_match_udf()).clone());
    ctx.register_function_rewrite(Arc::new(runnel_sql::pg_numbers::NumericIntegerAggregates))
        .expect("registering a function rewrite on a fresh context cannot fail");
    ctx.add_analyzer_rule(Arc::new(runnel_sql::pg_numbers::CheckedIntegerArithmetic));
    crate::system_catalog::functions::register(&ctx, shared, session);
    crate::system_catalog::table_functions::register(&ctx);
    crate::system_catalog::to_json::register(&ctx);
    runnel_sql::whole_row::register(&ctx);
    runnel_sql::interval_literals::register(&ctx)
        .expect("registering a planner on a fresh context cannot fail");
    runnel_sql::text_type_casts::register(&ctx);
    runnel_sql::json::register(&ctx)
        .expect("registering the JSON operators on a fresh context cannot fail");
    let tables = shared.clone();
    let lookup: Arc<runnel_sql::windows::TableLookup> = Arc::new(move |name: &str| {
        let entry = tables.catalog.snapshot().get(name)?.clone();
        (entry.kind != runnel_sql::ObjectKind::Sink).then(|| {
            datafusion::datasource::provider_as_source(Arc::new(RelationTable::new(
                entry,
                tables.clone(),
            )))
        })
    });
    ctx.register_relation_planner(Arc::new(runnel_sql::windows::WindowTableFunctions::new(
        lookup,
    )))
    .expect("registering a relation planner on a fresh context cannot fail");
    let catalog = Arc::new(datafusion::catalog::MemoryCatalogProvider::new());
    // Registering into a fresh in-memory catalog cannot fail.
    let pg_catalog = Arc::new(SystemSchema::new(
        SystemSchemaKind::PgCatalog,
        shared.clone(),
        session.clone(),
    ));
    let _ = catalog.register_schema(
        "public",
        Arc::new(RunnelSchema::new(shared.clone(), pg_catalog.clone())),
    );
    let _ = catalog.register_schema("pg_catalog", pg_catalog);
    let _ = catalog.register_schema(
        "information_schema",
        Arc::new(SystemSchema::new(
            SystemSchemaKind::InformationSchema,
            shared.clone(),
            session.clone(),
        )),
    );
    ctx.register_catalog("runnel", catalog);
    ctx
}

/// The runtime of a session's queries: a memory pool of `query_memory_bytes` (sorts, joins and
/// aggregations reserve from it; a sort that does not fit spills to the OS temporary directory,
/// what cannot spill fails with 53200), so one query cannot take the server's memory.
fn query_runtime(shared: &Shared) -> Arc<RuntimeEnv> {
    let limited =
        || RuntimeEnvBuilder::new().with_memory_limit(shared.config.query_memory_bytes, 1.0);
    limited().build_arc().unwrap_or_else(|error| {
        tracing::warn!(%error, "queries cannot spill to disk: no temporary directory");
        let no_spilling = DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled);
        limited()
            .with_disk_manager_builder(no_spilling)
            .build_arc()
            .expect("a runtime without a disk manager touches no file")
    })
}
