//! `SET`, `RESET`, `DISCARD ALL` and `SHOW name` / `SHOW ALL`: the session's run-time
//! parameters (see [`crate::settings`]).

use runnel_common::{Result, RunnelError, SqlState};
use runnel_pgwire::QueryResponse;

use super::{text_rows, text_schema};
use crate::session::RunnelSession;

pub fn set(
    session: &RunnelSession,
    name: &str,
    value: Option<&str>,
    local: bool,
    in_transaction: bool,
) -> Result<QueryResponse> {
    if local && !in_transaction {
        // Postgres warns and does nothing: SET LOCAL outside a transaction block has no effect.
        return Ok(QueryResponse::Command {
            tag: "SET".to_string(),
        });
    }
    session.settings().set(name, value, local)?;
    Ok(QueryResponse::Command {
        tag: "SET".to_string(),
    })
}

pub fn reset(session: &RunnelSession, name: Option<&str>) -> Result<QueryResponse> {
    match name {
        Some(name) => {
            session.settings().set(name, None, false)?;
            Ok(QueryResponse::Command {
                tag: "RESET".to_string(),
            })
        }
        None => {
            session.settings().reset_all();
            Ok(QueryResponse::Command {
                tag: "RESET".to_string(),
            })
        }
    }
}

pub fn show(session: &RunnelSession, name: &str) -> Result<QueryResponse> {
    if name.eq_ignore_ascii_case("all") {
        let rows = session
            .settings()
            .all()
            .into_iter()
            .map(|(definition, value)| {
                vec![
                    Some(definition.name.to_string()),
                    Some(value),
                    Some(definition.description.to_string()),
                ]
            })
            .collect();
        return text_rows(text_schema(&["name", "setting", "description"]), rows);
    }
    let value = session.settings().get(name)?;
    let column = crate::settings::definition(name)
        .map_or_else(|| name.to_ascii_lowercase(), |d| d.name.to_string());
    text_rows(text_schema(&[&column]), vec![vec![Some(value)]])
}

/// The columns `SHOW name` returns, for Describe.
pub fn show_schema(name: &str) -> Result<datafusion::arrow::datatypes::SchemaRef> {
    if name.eq_ignore_ascii_case("all") {
        return Ok(text_schema(&["name", "setting", "description"]));
    }
    let column = match crate::settings::definition(name) {
        Some(d) => d.name.to_string(),
        None if name.contains('.') => name.to_ascii_lowercase(),
        None => {
            return Err(RunnelError::plan(
                SqlState("42704"),
                format!("unrecognized configuration parameter \"{name}\""),
            ))
        }
    };
    Ok(text_schema(&[&column]))
}
