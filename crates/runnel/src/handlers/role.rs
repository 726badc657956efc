//! CREATE ROLE / USER, ALTER ROLE / USER and DROP ROLE / USER. Only a superuser manages
//! roles; any role may change its own password, as in Postgres.

use runnel_common::{Result, RunnelError, SqlState};
use runnel_pgwire::QueryResponse;
use runnel_sql::RoleOptions;

use crate::roles::{
    check_password, stored_password, Role, Roles, BOOTSTRAP_SUPERUSER, KAFKA_ROLE, PUBLIC,
};
use crate::session::RunnelSession;

pub async fn create(
    session: &mut RunnelSession,
    name: &str,
    options: &RoleOptions,
    if_not_exists: bool,
) -> Result<QueryResponse> {
    require_superuser(session, "create roles")?;
    if name == PUBLIC || name.starts_with("pg_") {
        return Err(RunnelError::plan(
            SqlState("42939"),
            format!("role name \"{name}\" is reserved"),
        ));
    }
    let shared = session.shared.clone();
    let _changes = shared.catalog.lock_changes().await;
    let mut roles = (*shared.roles.snapshot()).clone();
    if roles.contains_key(name) {
        if if_not_exists {
            session.notice(format!("role \"{name}\" already exists, skipping"));
            return Ok(command("CREATE ROLE"));
        }
        return Err(RunnelError::plan(
            SqlState::DUPLICATE_OBJECT,
            format!("role \"{name}\" already exists"),
        ));
    }
    let (oid, oid_write) = Roles::allocate_oid(&shared.catalog);
    let mut role = Role::new(oid, name);
    apply(&mut role, options)?;
    roles.insert(name.to_string(), role);
    shared.roles.save(roles, vec![oid_write])?;
    Ok(command("CREATE ROLE"))
}

pub async fn alter(
    session: &mut RunnelSession,
    name: &str,
    options: &RoleOptions,
) -> Result<QueryResponse> {
    let own_password_only = options.login.is_none() && options.superuser.is_none();
    if !(own_password_only && name == session.identity.user) {
        require_superuser(session, "alter roles")?;
    }
    let shared = session.shared.clone();
    let _changes = shared.catalog.lock_changes().await;
    let mut roles = (*shared.roles.snapshot()).clone();
    let role = roles
        .get_mut(name)
        .filter(|role| !role.is_public())
        .ok_or_else(|| missing_role(name))?;
    if name == BOOTSTRAP_SUPERUSER
        && (options.superuser == Some(false) || options.login == Some(false))
    {
        return Err(RunnelError::plan(
            SqlState::INSUFFICIENT_PRIVILEGE,
            format!("the bootstrap superuser {BOOTSTRAP_SUPERUSER} keeps SUPERUSER and LOGIN"),
        ));
    }
    apply(role, options)?;
    shared.roles.save(roles, Vec::new())?;
    Ok(command("ALTER ROLE"))
}

pub async fn drop(
    session: &mut RunnelSession,
    names: &[String],
    if_exists: bool,
) -> Result<QueryResponse> {
    require_superuser(session, "drop roles")?;
    let shared = session.shared.clone();
    let _changes = shared.catalog.lock_changes().await;
    let mut roles = (*shared.roles.snapshot()).clone();
    let catalog = shared.catalog.snapshot();
    for name in names {
        if name == BOOTSTRAP_SUPERUSER || name == KAFKA_ROLE {
            return Err(RunnelError::plan(
                SqlState::DEPENDENT_OBJECTS_STILL_EXIST,
                format!("cannot drop role {name} because it is required by the database system"),
            ));
        }
        if *name == session.identity.user {
            return Err(RunnelError::plan(
                SqlState::OBJECT_IN_USE,
                "current user cannot be dropped",
            ));
        }
        if roles.get(name).is_none_or(|role| role.is_public()) {
            if if_exists {
                session.notice(format!("role \"{name}\" does not exist, skipping"));
                continue;
            }
            return Err(missing_role(name));
        }
        // As in Postgres, a role that owns objects or holds privileges on them stays until
        // they are dropped, given away or revoked.
        let held: Vec<String> = catalog
            .entries()
            .filter(|e| e.access.owner == *name || e.access.grants.contains_key(name))
            .map(|e| format!("{} {}", e.kind.sql_name(), e.name))
            .collect();
        if !held.is_empty() {
            return Err(RunnelError::plan(
                SqlState::DEPENDENT_OBJECTS_STILL_EXIST,
                format!(
                    "role \"{name}\" cannot be dropped because some objects depend on it: it \
                     owns or has privileges on {}",
                    held.join(", ")
                ),
            ));
        }
        roles.remove(name);
        for role in roles.values_mut() {
            role.member_of.retain(|parent| parent != name);
        }
    }
    shared.roles.save(roles, Vec::new())?;
    Ok(command("DROP ROLE"))
}

/// Sets what `options` names on `role`.
fn apply(role: &mut Role, options: &RoleOptions) -> Result<()> {
    if let Some(login) = options.login {
        role.login = login;
    }
    if let Some(superuser) = options.superuser {
        role.superuser = superuser;
    }
    if let Some(password) = &options.password {
        role.password = match password {
            Some(text) => {
                check_password(text)?;
                Some(stored_password(text))
            }
            None => None,
        };
    }
    Ok(())
}

pub fn require_superuser(session: &RunnelSession, what: &str) -> Result<()> {
    if session.shared.roles.is_superuser(&session.identity.user) {
        Ok(())
    } else {
        Err(RunnelError::permission_denied(format!(
            "permission denied to {what}: only superusers may"
        )))
    }
}

pub fn missing_role(name: &str) -> RunnelError {
    RunnelError::plan(
        SqlState::UNDEFINED_OBJECT,
        format!("role \"{name}\" does not exist"),
    )
}

fn command(tag: &str) -> QueryResponse {
    QueryResponse::Command {
        tag: tag.to_string(),
    }
}
