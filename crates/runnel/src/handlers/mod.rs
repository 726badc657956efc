//! One handler per statement kind. `execute` dispatches a classified statement; `describe`
//! answers the extended protocol's Describe without running anything.

pub mod comment;
pub mod copy;
pub mod copy_to;
pub mod create_relation;
pub mod create_sink;
pub mod create_view;
pub mod cursor;
pub mod dml;
pub mod drop;
pub mod flush;
pub mod grant;
pub mod query;
pub mod role;
pub mod session_settings;
pub mod show;
pub mod subscribe;

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use runnel_common::{Result, SqlState};
use runnel_pgwire::{ParamValue, QueryResponse, StatementDescription};
use runnel_sql::{ParsedStatement, Statement, StoredEntry, StoredKind};

use crate::session::RunnelSession;
use crate::shared::Shared;

/// Re-creates one stored catalog object at start-up, through the handler that creates its kind.
pub async fn restore(shared: &Arc<Shared>, entry: &StoredEntry) -> Result<()> {
    match entry.kind {
        StoredKind::MaterializedView => create_view::restore(shared, entry).await,
        StoredKind::Sink => create_sink::restore(shared, entry).await,
        _ => create_relation::restore(shared, entry).await,
    }?;
    if !entry.comments.is_empty() {
        let comments = entry.comments.clone();
        shared
            .catalog
            .publish(|c| c.set_comments(entry.id, comments));
    }
    if !entry.access.is_default() {
        let access = entry.access.clone();
        shared.catalog.publish(|c| c.set_access(entry.id, access));
    }
    Ok(())
}

pub async fn execute(
    session: &mut RunnelSession,
    statement: &ParsedStatement,
    params: &[ParamValue],
) -> Result<QueryResponse> {
    match &statement.kind {
        Statement::CreateRelation {
            kind,
            create,
            watermark,
        } => {
            create_relation::handle(session, *kind, create, watermark.as_deref(), &statement.sql)
                .await
        }
        Statement::CreateMaterializedView {
            view,
            explain,
            emit_on_window_close,
        } => {
            create_view::handle(
                session,
                view,
                *explain,
                *emit_on_window_close,
                &statement.sql,
            )
            .await
        }
        Statement::CreateSink {
            name,
            from,
            options,
            if_not_exists,
        } => {
            create_sink::handle(session, name, from, options, *if_not_exists, &statement.sql).await
        }
        Statement::Drop {
            kind,
            names,
            if_exists,
            cascade,
        } => drop::handle(session, *kind, names, *if_exists, *cascade).await,
        Statement::Show(kind) => show::handle(session, *kind).await,
        Statement::Comment {
            kind,
            relation,
            column,
            text,
        } => comment::handle(session, *kind, relation, column.as_deref(), text.as_deref()).await,
        Statement::Flush => {
            session.writes_pending = false;
            flush::handle(session).await
        }
        Statement::SetVariable { name, value, local } => {
            let in_transaction = session.in_transaction();
            session_settings::set(session, name, value.as_deref(), *local, in_transaction)
        }
        Statement::ResetVariable(name) => session_settings::reset(session, name.as_deref()),
        Statement::ShowVariable(name) => session_settings::show(session, name),
        Statement::NoOp(tag) => Ok(QueryResponse::Command {
            tag: tag.to_string(),
        }),
        Statement::Transaction(_) => Ok(QueryResponse::Command {
            tag: "BEGIN".to_string(),
        }),
        Statement::Copy {
            table,
            columns,
            options,
        } => {
            session.writes_pending = true;
            copy::handle(session, table, columns, options)
        }
        Statement::DeclareCursor { name, query, hold } => {
            flush_writes(session).await?;
            cursor::declare(session, name, query, *hold, &statement.sql).await
        }
        Statement::Fetch {
            name,
            count,
            timeout,
        } => cursor::fetch(session, name, *count, *timeout),
        Statement::Subscribe(spec) => {
            flush_writes(session).await?;
            let (schema, batches) = subscribe::changes(session, spec).await?;
            Ok(QueryResponse::Rows { schema, batches })
        }
        Statement::DeclareSubscribe {
            name,
            subscribe,
            hold,
        } => {
            flush_writes(session).await?;
            cursor::declare_subscribe(session, name, subscribe, *hold).await
        }
        Statement::CloseCursor(name) => cursor::close(session, name.as_deref()),
        Statement::CopyTo { source, options } => {
            flush_writes(session).await?;
            copy_to::handle(session, source, options, &statement.sql).await
        }
        Statement::CreateRole {
            name,
            options,
            if_not_exists,
        } => role::create(session, name, options, *if_not_exists).await,
        Statement::AlterRole { name, options } => role::alter(session, name, options).await,
        Statement::DropRole { names, if_exists } => role::drop(session, names, *if_exists).await,
        Statement::Grant(grant) => grant::handle(session, grant).await,
        Statement::Query(query) => {
            use datafusion::sql::sqlparser::ast::Statement as Ast;
            if matches!(
                query.as_ref(),
                Ast::Insert(_) | Ast::Update(_) | Ast::Delete(_)
            ) {
                session.writes_pending = true;
            } else {
                flush_writes(session).await?;
            }
            query::handle(session, query, &statement.sql, params).await
        }
    }
}

/// Read your writes: with `implicit_flush`, a session's acknowledged writes reach every view
/// before its next query reads them. On a full disk the checkpoint that would carry them
/// waits, and reads go on as of the last one, saying so (a read never needs disk space).
async fn flush_writes(session: &mut RunnelSession) -> Result<()> {
    if session.writes_pending && session.settings().implicit_flush() {
        match session.shared.worker.flush().await {
            Ok(()) => session.writes_pending = false,
            Err(err) if err.sqlstate() == SqlState::DISK_FULL => session.notice(format!(
                "views are read as of the last checkpoint, without this session's latest \
                 writes: {err}"
            )),
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

pub async fn describe(
    session: &mut RunnelSession,
    statement: &ParsedStatement,
    param_oids: &[u32],
) -> Result<StatementDescription> {
    let fields = match &statement.kind {
        Statement::Query(query) => {
            return query::describe(session, query, &statement.sql, param_oids).await
        }
        Statement::Show(kind) => Some(show::schema(*kind)),
        Statement::ShowVariable(name) => Some(session_settings::show_schema(name)?),
        Statement::Fetch { name, .. } => Some(cursor::fetch_schema(session, name)?),
        Statement::Subscribe(spec) => Some(subscribe::describe(session, spec)?),
        Statement::CreateMaterializedView { explain: true, .. } => {
            Some(text_schema(&["QUERY PLAN"]))
        }
        _ => None,
    };
    Ok(StatementDescription {
        param_oids: param_oids.to_vec(),
        fields,
    })
}

/// A schema of text columns.
pub fn text_schema(names: &[&str]) -> SchemaRef {
    Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ))
}

/// A result of text rows.
pub fn text_rows(schema: SchemaRef, rows: Vec<Vec<Option<String>>>) -> Result<QueryResponse> {
    let columns: Vec<ArrayRef> = (0..schema.fields().len())
        .map(|c| Arc::new(StringArray::from_iter(rows.iter().map(|r| r[c].clone()))) as ArrayRef)
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(QueryResponse::Rows {
        schema,
        batches: runnel_pgwire::batch_stream(vec![batch]),
    })
}
