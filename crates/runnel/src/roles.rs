//! Roles: who may log in, with which password, and who is a superuser. They are kept in the
//! store beside the catalog (one metadata entry holding every role, written whole on each
//! change: a server has a handful of roles), and read by the wire layer to authenticate a
//! connection and by the handlers to check what a session's role may do.
//!
//! The bootstrap superuser `runnel` always exists. Its password comes from the operator at
//! start-up (`--superuser-password-file`, `RUNNEL_SUPERUSER_PASSWORD`) or from `ALTER ROLE`;
//! once it has one, every connection authenticates with SCRAM-SHA-256. Passwords are stored
//! only as SCRAM verifiers.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use runnel_common::{Result, RunnelError, SqlState};
use runnel_pgwire::auth::ScramVerifier;
use runnel_state::{keys, Store, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::catalog_service::{CatalogService, CatalogWrite};
use crate::system_catalog::oids;

/// The bootstrap superuser's name.
pub const BOOTSTRAP_SUPERUSER: &str = "runnel";

/// The predefined role whose members may create Kafka streams, tables and sinks (which make
/// the server connect to hosts the statement names), as Postgres's `pg_read_server_files`
/// guards reading the server's files.
pub const KAFKA_ROLE: &str = "runnel_kafka";
const KAFKA_ROLE_OID: u32 = 4700;

pub use runnel_sql::access::PUBLIC;

const ROLES_KEY: &str = "roles";

/// One role.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub oid: u32,
    pub name: String,
    pub superuser: bool,
    pub login: bool,
    /// The SCRAM verifier of the role's password (Postgres's text form); `None`: no
    /// password, so the role cannot log in where passwords are required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Roles this one is a member of (`GRANT role TO this`): it has their privileges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_of: Vec<String>,
    /// `GRANT CREATE ON SCHEMA public`: may create streams, tables, views and sinks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create_on_public: bool,
}

// Never the verifier.
impl std::fmt::Debug for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Role")
            .field("oid", &self.oid)
            .field("name", &self.name)
            .field("superuser", &self.superuser)
            .field("login", &self.login)
            .field("password", &self.password.is_some())
            .field("member_of", &self.member_of)
            .field("create_on_public", &self.create_on_public)
            .finish()
    }
}

impl Role {
    /// A role without attributes: no LOGIN, no SUPERUSER, no password.
    pub fn new(oid: u32, name: &str) -> Role {
        Role {
            oid,
            name: name.to_string(),
            superuser: false,
            login: false,
            password: None,
            member_of: Vec::new(),
            create_on_public: false,
        }
    }

    /// Whether this is the `public` pseudo-role (every role), which holds what is granted
    /// `TO PUBLIC` and is not listed as a role.
    pub fn is_public(&self) -> bool {
        self.name == PUBLIC
    }

    /// The role's verifier, if it has a password.
    pub fn verifier(&self) -> Option<ScramVerifier> {
        self.password.as_deref()?.parse().ok()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredRoles {
    roles: Vec<Role>,
}

/// Every role, by name.
pub type RoleMap = BTreeMap<String, Role>;

/// The roles of the server. Changes are made under the catalog's change lock (they share
/// its id counter for OIDs), so they never interleave.
pub struct Roles {
    store: Arc<Store>,
    current: RwLock<Arc<RoleMap>>,
}

impl std::fmt::Debug for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Roles").finish_non_exhaustive()
    }
}

impl Roles {
    /// The stored roles, with the bootstrap superuser added on a fresh data directory.
    pub fn open(store: Arc<Store>) -> Result<Roles> {
        let mut roles = RoleMap::new();
        if let Some(bytes) = store.get(&keys::meta(ROLES_KEY))? {
            let stored: StoredRoles = serde_json::from_slice(&bytes)
                .map_err(|e| RunnelError::internal(format!("unreadable roles: {e}")))?;
            roles.extend(stored.roles.into_iter().map(|r| (r.name.clone(), r)));
        }
        roles
            .entry(BOOTSTRAP_SUPERUSER.to_string())
            .or_insert_with(|| Role {
                superuser: true,
                login: true,
                ..Role::new(oids::SUPERUSER, BOOTSTRAP_SUPERUSER)
            });
        roles
            .entry(KAFKA_ROLE.to_string())
            .or_insert_with(|| Role::new(KAFKA_ROLE_OID, KAFKA_ROLE));
        roles
            .entry(PUBLIC.to_string())
            .or_insert_with(|| Role::new(0, PUBLIC));
        Ok(Roles {
            store,
            current: RwLock::new(Arc::new(roles)),
        })
    }

    /// Every role as it is now.
    pub fn snapshot(&self) -> Arc<RoleMap> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn get(&self, name: &str) -> Option<Role> {
        self.snapshot().get(name).cloned()
    }

    /// `user` and every role it is a member of, directly or through others, and `public`.
    pub fn effective(roles: &RoleMap, user: &str) -> Vec<String> {
        let mut found = vec![user.to_string()];
        let mut next = 0;
        while next < found.len() {
            if let Some(role) = roles.get(&found[next]) {
                for parent in &role.member_of {
                    if !found.contains(parent) {
                        found.push(parent.clone());
                    }
                }
            }
            next += 1;
        }
        if !found.iter().any(|name| name == PUBLIC) {
            found.push(PUBLIC.to_string());
        }
        found
    }

    pub fn is_superuser(&self, user: &str) -> bool {
        self.snapshot().get(user).is_some_and(|role| role.superuser)
    }

    /// Whether connections must authenticate with a password: once the bootstrap superuser
    /// has one. Without it, only loopback connections are served, trusted.
    pub fn passwords_required(&self) -> bool {
        self.snapshot()
            .get(BOOTSTRAP_SUPERUSER)
            .is_some_and(|role| role.password.is_some())
    }

    /// Sets the bootstrap superuser's password (from the operator, at start-up).
    pub fn set_superuser_password(&self, password: &str) -> Result<()> {
        let mut roles = (*self.snapshot()).clone();
        if let Some(role) = roles.get_mut(BOOTSTRAP_SUPERUSER) {
            role.password = Some(stored_password(password));
        }
        self.save(roles, Vec::new())
    }

    /// Replaces every role with `roles`, persisting them with `extra` writes in one batch.
    pub fn save(&self, roles: RoleMap, extra: Vec<CatalogWrite>) -> Result<()> {
        let stored = StoredRoles {
            roles: roles.values().cloned().collect(),
        };
        let json = serde_json::to_vec(&stored)
            .map_err(|e| RunnelError::internal(format!("roles not serialisable: {e}")))?;
        let mut batch = WriteBatch::default();
        batch.put(keys::meta(ROLES_KEY), json);
        for (key, value) in extra {
            batch.put(key, value);
        }
        self.store.write(batch)?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(roles);
        Ok(())
    }

    /// A new role's OID, from the catalog's id counter (so no relation shares it); the
    /// write persists the counter.
    pub fn allocate_oid(catalog: &CatalogService) -> (u32, CatalogWrite) {
        let (id, write) = catalog.allocate_id();
        (oids::relation(id), write)
    }
}

/// What is stored for `PASSWORD 'text'`: its SCRAM verifier, or the text itself when it
/// already is one (as `pg_dumpall` writes roles), as Postgres does.
pub fn stored_password(text: &str) -> String {
    if ScramVerifier::is_verifier_text(text) {
        text.to_string()
    } else {
        ScramVerifier::from_password(text).to_string()
    }
}

/// An empty password is refused, as Postgres refuses it ("empty string is not a valid
/// password").
pub fn check_password(text: &str) -> Result<()> {
    if text.is_empty() {
        return Err(RunnelError::plan(
            SqlState::INVALID_PARAMETER_VALUE,
            "empty string is not a valid password",
        ));
    }
    Ok(())
}
