//! One handler per statement kind. `execute` dispatches a classified statement; `describe`
//! answers the extended protocol's Describe without running anything.

pub mod copy;
pub mod create_relation;
pub mod create_sink;
pub mod create_view;
pub mod dml;
pub mod drop;
pub mod flush;
pub mod query;
pub mod show;

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use runnel_common::Result;
use runnel_pgwire::{ParamValue, QueryResponse, StatementDescription};
use runnel_sql::{ParsedStatement, Statement};

use crate::session::RunnelSession;

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
        Statement::Flush => flush::handle(session).await,
        Statement::Set => Ok(QueryResponse::Command {
            tag: "SET".to_string(),
        }),
        Statement::Transaction(_) => Ok(QueryResponse::Command {
            tag: "BEGIN".to_string(),
        }),
        Statement::Copy {
            table,
            columns,
            options,
        } => copy::handle(session, table, columns, options),
        Statement::Query(query) => query::handle(session, query, params).await,
    }
}

pub async fn describe(
    session: &mut RunnelSession,
    statement: &ParsedStatement,
    param_oids: &[u32],
) -> Result<StatementDescription> {
    let fields = match &statement.kind {
        Statement::Query(query) => return query::describe(session, query, param_oids).await,
        Statement::Show(kind) => Some(show::schema(*kind)),
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
        batches: vec![batch],
    })
}
