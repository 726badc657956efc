//! Privilege checks: what the session's role may do with a relation, in schema `public`, and
//! with Kafka. A superuser may do everything; an owner everything with what it owns; other
//! roles what was granted to them, to a role they are a member of, or to PUBLIC. Failures are
//! 42501 with Postgres's messages.

use datafusion::logical_expr::{LogicalPlan, WriteOp};
use datafusion::sql::sqlparser::ast;
use runnel_common::{Result, RunnelError};
use runnel_sql::access::Privileges;
use runnel_sql::{CatalogEntry, ObjectKind};

use crate::roles::{RoleMap, Roles, KAFKA_ROLE};
use crate::session::RunnelSession;

/// What the session's role holds, read once per check.
pub struct Principal {
    superuser: bool,
    /// The role and every role it has the privileges of (`public` included).
    roles: Vec<String>,
}

impl Principal {
    pub fn of(session: &RunnelSession) -> Principal {
        Principal::in_roles(&session.shared.roles.snapshot(), &session.identity.user)
    }

    /// What `user` holds among `roles`.
    pub fn in_roles(roles: &RoleMap, user: &str) -> Principal {
        Principal {
            superuser: roles.get(user).is_some_and(|role| role.superuser),
            roles: Roles::effective(roles, user),
        }
    }

    /// CREATE on schema `public`.
    pub fn may_create(&self, roles: &RoleMap) -> bool {
        self.superuser
            || self
                .roles
                .iter()
                .any(|role| roles.get(role).is_some_and(|role| role.create_on_public))
    }

    fn owns(&self, entry: &CatalogEntry) -> bool {
        self.superuser || self.roles.contains(&entry.access.owner)
    }

    pub fn holds(&self, entry: &CatalogEntry, wanted: Privileges) -> bool {
        if self.owns(entry) {
            return true;
        }
        let held = self
            .roles
            .iter()
            .filter_map(|role| entry.access.grants.get(role))
            .fold(Privileges::NONE, |all, granted| all.union(*granted));
        held.contains(wanted)
    }

    /// `wanted` on `entry`, or 42501 `permission denied for table t`.
    pub fn require(&self, entry: &CatalogEntry, wanted: Privileges) -> Result<()> {
        if self.holds(entry, wanted) {
            Ok(())
        } else {
            Err(RunnelError::permission_denied(format!(
                "permission denied for {} {}",
                privilege_noun(entry.kind),
                entry.name
            )))
        }
    }

    /// Ownership of `entry` (to drop it, comment on it, grant on it).
    pub fn require_owner(&self, entry: &CatalogEntry) -> Result<()> {
        if self.owns(entry) {
            Ok(())
        } else {
            Err(RunnelError::permission_denied(format!(
                "must be owner of {} {}",
                entry.kind.sql_name(),
                entry.name
            )))
        }
    }
}

/// `CREATE` on schema `public`: to create streams, tables, views and sinks.
pub fn require_create(session: &RunnelSession) -> Result<()> {
    let roles = session.shared.roles.snapshot();
    if Principal::in_roles(&roles, &session.identity.user).may_create(&roles) {
        Ok(())
    } else {
        Err(RunnelError::permission_denied(
            "permission denied for schema public",
        ))
    }
}

/// Membership in `runnel_kafka`: to create what connects to Kafka brokers the statement
/// names (an ordinary role must not make the server reach arbitrary hosts).
pub fn require_kafka(session: &RunnelSession) -> Result<()> {
    let principal = Principal::of(session);
    if principal.superuser || principal.roles.iter().any(|role| role == KAFKA_ROLE) {
        Ok(())
    } else {
        Err(RunnelError::permission_denied(format!(
            "permission denied to create Kafka streams, tables and sinks: only superusers and \
             members of {KAFKA_ROLE} may connect the server to Kafka brokers"
        )))
    }
}

/// Naming files on the server (`sasl.password.file`, `ssl.*.location`) is for superusers only:
/// the server reads them and sends what it read (a password, a certificate) to a broker the
/// statement chooses, so anyone else could use it to read the server's files, the superuser's
/// password file included. Postgres keeps reading server files to `pg_read_server_files`.
pub fn require_server_files(
    session: &RunnelSession,
    security: &runnel_connectors::KafkaSecurity,
) -> Result<()> {
    let files = security.server_files();
    if files.is_empty() || Principal::of(session).superuser {
        return Ok(());
    }
    let names: Vec<&str> = files.iter().map(|(name, _)| *name).collect();
    Err(RunnelError::permission_denied(format!(
        "permission denied to name files on the server ({}): only superusers may, as the \
         server reads them and sends what they hold to the broker",
        names.join(", ")
    )))
}

/// The privileges a planned statement needs: SELECT on every relation it reads, and INSERT,
/// UPDATE or DELETE on the one it writes. Reading the written relation itself needs SELECT
/// too when an UPDATE or DELETE has a WHERE clause or RETURNING (it could reveal rows), as
/// in Postgres.
pub fn check_plan(
    session: &RunnelSession,
    statement: &ast::Statement,
    plan: &LogicalPlan,
) -> Result<()> {
    let principal = Principal::of(session);
    if principal.superuser {
        return Ok(());
    }
    let catalog = session.shared.catalog.snapshot();
    let mut target = None;
    if let LogicalPlan::Dml(dml) = plan {
        let wanted = match dml.op {
            WriteOp::Insert(_) => Privileges::INSERT,
            WriteOp::Update => Privileges::UPDATE,
            WriteOp::Delete => Privileges::DELETE,
            _ => Privileges::ALL,
        };
        if let Some(entry) = catalog.get(dml.table_name.table()) {
            principal.require(entry, wanted)?;
            let reads_target = match statement {
                ast::Statement::Update(update) => {
                    update.selection.is_some() || update.returning.is_some()
                }
                ast::Statement::Delete(delete) => {
                    delete.selection.is_some() || delete.returning.is_some()
                }
                _ => false,
            };
            if !reads_target {
                target = Some(entry.id);
            }
        }
    }
    for name in crate::transaction::scanned_relations(plan)? {
        if let Some(entry) = catalog.get(&name) {
            if Some(entry.id) != target {
                principal.require(entry, Privileges::SELECT)?;
            }
        }
    }
    Ok(())
}

/// Postgres's noun for a relation in privilege errors.
fn privilege_noun(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::MaterializedView => "materialized view",
        ObjectKind::Sink => "sink",
        ObjectKind::Stream | ObjectKind::Table => "table",
    }
}
