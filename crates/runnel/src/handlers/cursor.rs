//! `DECLARE name CURSOR [WITH HOLD] FOR query`, `FETCH [FORWARD] n FROM name` and `CLOSE`:
//! server-side cursors, as psycopg's and psycopg2's named cursors use them. The query runs at
//! DECLARE; the protocol layer keeps its rows as a portal and hands them out a FETCH at a
//! time. The session remembers each cursor's columns, to describe a FETCH before it runs.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::sql::sqlparser::ast;
use runnel_common::{Result, RunnelError, SqlState};
use runnel_pgwire::QueryResponse;

use super::query;
use crate::session::RunnelSession;

fn missing(name: &str) -> RunnelError {
    RunnelError::plan(
        SqlState("34000"),
        format!("cursor \"{name}\" does not exist"),
    )
}

pub async fn declare(
    session: &mut RunnelSession,
    name: &str,
    query: &ast::Query,
    hold: bool,
    sql: &str,
) -> Result<QueryResponse> {
    check_new_cursor(session, name, hold)?;
    let statement = ast::Statement::Query(Box::new(query.clone()));
    let (schema, batches) = query::rows(session, &statement, sql).await?;
    Ok(declared(session, name, schema, batches, hold, false))
}

/// Remembers a declared cursor's columns and hands its rows to the protocol layer.
fn declared(
    session: &mut RunnelSession,
    name: &str,
    schema: SchemaRef,
    batches: runnel_pgwire::BatchStream,
    hold: bool,
    live: bool,
) -> QueryResponse {
    session
        .cursors
        .insert(name.to_string(), (schema.clone(), hold));
    QueryResponse::DeclareCursor {
        name: name.to_string(),
        schema,
        batches,
        hold,
        live,
    }
}

/// A cursor may be declared: in a transaction (unless WITH HOLD), under a new name.
fn check_new_cursor(session: &RunnelSession, name: &str, hold: bool) -> Result<()> {
    if !hold && !session.in_transaction() {
        return Err(RunnelError::plan(
            SqlState("25P01"),
            "DECLARE CURSOR can only be used in transaction blocks",
        ));
    }
    if session.cursors.contains_key(name) {
        return Err(RunnelError::plan(
            SqlState("42P03"),
            format!("cursor \"{name}\" already exists"),
        ));
    }
    Ok(())
}

pub fn fetch(
    session: &RunnelSession,
    name: &str,
    count: Option<u64>,
    timeout: Option<std::time::Duration>,
) -> Result<QueryResponse> {
    if !session.cursors.contains_key(name) {
        return Err(missing(name));
    }
    Ok(QueryResponse::Fetch {
        name: name.to_string(),
        count,
        timeout,
    })
}

/// `DECLARE name CURSOR FOR SUBSCRIBE ...`: a cursor whose rows never end; each FETCH gets
/// the rows that are ready (waiting for a first one, up to its timeout).
pub async fn declare_subscribe(
    session: &mut RunnelSession,
    name: &str,
    subscribe: &runnel_sql::statement::SubscribeSpec,
    hold: bool,
) -> Result<QueryResponse> {
    check_new_cursor(session, name, hold)?;
    let (schema, batches) = super::subscribe::changes(session, subscribe).await?;
    Ok(declared(session, name, schema, batches, hold, true))
}

/// The columns a FETCH from `name` returns.
pub fn fetch_schema(session: &RunnelSession, name: &str) -> Result<SchemaRef> {
    session
        .cursors
        .get(name)
        .map(|(schema, _)| schema.clone())
        .ok_or_else(|| missing(name))
}

pub fn close(session: &mut RunnelSession, name: Option<&str>) -> Result<QueryResponse> {
    match name {
        Some(name) => {
            session.cursors.remove(name).ok_or_else(|| missing(name))?;
        }
        None => session.cursors.clear(),
    }
    Ok(QueryResponse::CloseCursor {
        name: name.map(str::to_string),
    })
}
