//! FLUSH: returns once every view reflects every write acknowledged before it, and that state
//! is committed.

use runnel_common::Result;
use runnel_pgwire::QueryResponse;

use crate::session::RunnelSession;

pub async fn handle(session: &mut RunnelSession) -> Result<QueryResponse> {
    session.shared.worker.flush().await?;
    Ok(QueryResponse::Command {
        tag: "FLUSH".to_string(),
    })
}
