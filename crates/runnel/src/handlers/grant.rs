//! GRANT and REVOKE: privileges on relations (by their owners), CREATE on schema `public` and
//! role membership (by superusers).

use runnel_common::{Result, RunnelError, SqlState};
use runnel_pgwire::QueryResponse;
use runnel_sql::access::PUBLIC;
use runnel_sql::{CatalogEntry, GrantStatement, Granted, ObjectKind};
use runnel_state::WriteBatch;

use super::role::{missing_role, require_superuser};
use crate::catalog_service::CatalogService;
use crate::privileges::Principal;
use crate::roles::{RoleMap, Roles};
use crate::session::RunnelSession;

pub async fn handle(session: &mut RunnelSession, grant: &GrantStatement) -> Result<QueryResponse> {
    let shared = session.shared.clone();
    let _changes = shared.catalog.lock_changes().await;
    let roles = shared.roles.snapshot();
    let grantees = grantees(session, &roles, &grant.grantees)?;
    match &grant.granted {
        Granted::Relations {
            privileges,
            relations,
        } => {
            let catalog = shared.catalog.snapshot();
            let targets: Vec<&CatalogEntry> = match relations {
                Some(names) => names
                    .iter()
                    .map(|name| catalog.resolve(name).map(AsRef::as_ref))
                    .collect::<Result<_>>()?,
                None => catalog
                    .entries()
                    .filter(|e| e.kind != ObjectKind::Sink)
                    .map(AsRef::as_ref)
                    .collect(),
            };
            let principal = Principal::of(session);
            let mut batch = WriteBatch::default();
            let mut updated = Vec::new();
            for entry in targets {
                if entry.kind == ObjectKind::Sink {
                    return Err(RunnelError::plan(
                        SqlState::WRONG_OBJECT_TYPE,
                        format!(
                            "\"{}\" is a sink: it has no privileges to grant",
                            entry.name
                        ),
                    ));
                }
                principal.require_owner(entry)?;
                let mut entry = entry.clone();
                for grantee in &grantees {
                    if grant.revoke {
                        entry.access.revoke(grantee, *privileges);
                    } else {
                        entry.access.grant(grantee, *privileges);
                    }
                }
                let (key, value) = CatalogService::entry_write(&entry)?;
                batch.put(key, value);
                updated.push(entry);
            }
            shared.store.write(batch)?;
            shared.catalog.publish(|catalog| {
                for entry in updated {
                    catalog.insert(entry);
                }
            });
        }
        Granted::CreateOnSchema => {
            require_superuser(session, "grant CREATE on schema public")?;
            let mut all = (*roles).clone();
            for grantee in &grantees {
                if let Some(role) = all.get_mut(grantee) {
                    role.create_on_public = !grant.revoke;
                }
            }
            shared.roles.save(all, Vec::new())?;
        }
        Granted::Roles(granted) => {
            require_superuser(session, "grant role membership")?;
            let mut all = (*roles).clone();
            for parent in granted {
                if parent == PUBLIC || !all.contains_key(parent) {
                    return Err(missing_role(parent));
                }
                for grantee in &grantees {
                    if grant.revoke {
                        if let Some(role) = all.get_mut(grantee) {
                            role.member_of.retain(|p| p != parent);
                        }
                        continue;
                    }
                    if grantee == PUBLIC {
                        return Err(RunnelError::plan(
                            SqlState::INVALID_PARAMETER_VALUE,
                            "role membership cannot be granted to PUBLIC",
                        ));
                    }
                    // A role cannot end up a member of itself.
                    if Roles::effective(&all, parent).contains(grantee) {
                        return Err(RunnelError::plan(
                            SqlState("0LP01"),
                            format!("role \"{grantee}\" is a member of role \"{parent}\""),
                        ));
                    }
                    if let Some(role) = all.get_mut(grantee) {
                        if !role.member_of.contains(parent) {
                            role.member_of.push(parent.clone());
                        }
                    }
                }
            }
            shared.roles.save(all, Vec::new())?;
        }
    }
    Ok(QueryResponse::Command {
        tag: if grant.revoke { "REVOKE" } else { "GRANT" }.to_string(),
    })
}

/// The grantees' role names, each checked to exist (`CURRENT_USER` is the session's).
fn grantees(session: &RunnelSession, roles: &RoleMap, names: &[String]) -> Result<Vec<String>> {
    names
        .iter()
        .map(|name| {
            let name = match name.as_str() {
                "current_user" | "session_user" | "current_role" => session.identity.user.clone(),
                _ => name.clone(),
            };
            if roles.contains_key(&name) {
                Ok(name)
            } else {
                Err(missing_role(&name))
            }
        })
        .collect()
}
