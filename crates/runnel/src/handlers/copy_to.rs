//! `COPY { name [(columns)] | (query) } TO STDOUT [WITH (FORMAT text | csv | binary, HEADER,
//! DELIMITER, NULL, QUOTE, ESCAPE)]`: the rows of a relation or query as COPY data, written
//! as Postgres writes them (how a training set leaves Runnel: `psql -c "\copy (SELECT ...) to
//! 'features.csv' csv header"`). Unlike Postgres, a materialized view can be copied by name.

use datafusion::sql::sqlparser::ast;
use runnel_common::Result;
use runnel_pgwire::copy_format::CopyOutFormat;
use runnel_pgwire::QueryResponse;
use runnel_sql::statement::{CopyOptions, CopySource};

use super::query;
use crate::session::RunnelSession;

pub async fn handle(
    session: &mut RunnelSession,
    source: &CopySource,
    options: &CopyOptions,
    sql: &str,
) -> Result<QueryResponse> {
    let statement = match source {
        CopySource::Subscribe(spec) => {
            let (schema, batches) = super::subscribe::changes(session, spec).await?;
            return Ok(QueryResponse::CopyOut {
                columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
                format: copy_out_format(options),
                batches,
            });
        }
        CopySource::Query(q) => ast::Statement::Query(q.clone()),
        CopySource::Relation { name, columns } => {
            let list = if columns.is_empty() {
                "*".to_string()
            } else {
                columns
                    .iter()
                    .map(|c| quoted(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            runnel_sql::parser::parse_one(&format!("SELECT {list} FROM {}", quoted(name)))?
        }
    };
    let (schema, batches) = query::rows(session, &statement, sql).await?;
    Ok(QueryResponse::CopyOut {
        columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
        format: copy_out_format(options),
        batches,
    })
}

fn copy_out_format(options: &CopyOptions) -> CopyOutFormat {
    if options.binary {
        CopyOutFormat::Binary
    } else {
        CopyOutFormat::Text(super::copy::copy_format(options))
    }
}

/// A name as a quoted identifier, so it is taken as written.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
