//! Who owns a relation and what other roles may do with it: the relation's owner and its
//! grants (Postgres's `relowner` and `relacl`), kept with the catalog entry. Checking them is
//! the server's (it knows the session's role and the roles' memberships).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The grantee that stands for every role (`GRANT ... TO PUBLIC`).
pub const PUBLIC: &str = "public";

/// The role that owns what was created before relations had owners.
pub const DEFAULT_OWNER: &str = "runnel";

/// A set of table privileges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Privileges(u8);

impl Privileges {
    pub const NONE: Privileges = Privileges(0);
    pub const SELECT: Privileges = Privileges(1);
    pub const INSERT: Privileges = Privileges(2);
    pub const UPDATE: Privileges = Privileges(4);
    pub const DELETE: Privileges = Privileges(8);
    pub const ALL: Privileges = Privileges(15);

    /// Each privilege with its SQL name and `aclitem` letter, in `aclitem`'s order.
    const NAMED: [(Privileges, &'static str, char); 4] = [
        (Privileges::INSERT, "INSERT", 'a'),
        (Privileges::SELECT, "SELECT", 'r'),
        (Privileges::UPDATE, "UPDATE", 'w'),
        (Privileges::DELETE, "DELETE", 'd'),
    ];

    /// The privilege a SQL name (`select`, `INSERT`, ...) names.
    pub fn named(name: &str) -> Option<Privileges> {
        Self::NAMED
            .iter()
            .find(|(_, sql, _)| sql.eq_ignore_ascii_case(name))
            .map(|(privilege, _, _)| *privilege)
    }

    pub fn contains(self, other: Privileges) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Privileges) -> Privileges {
        Privileges(self.0 | other.0)
    }

    pub fn without(self, other: Privileges) -> Privileges {
        Privileges(self.0 & !other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// `aclitem` letters: `arwd` for all four.
    pub fn letters(self) -> String {
        Self::NAMED
            .iter()
            .filter(|(privilege, _, _)| self.contains(*privilege))
            .map(|(_, _, letter)| *letter)
            .collect()
    }

    fn from_letters(letters: &str) -> Privileges {
        Self::NAMED
            .iter()
            .filter(|(_, _, letter)| letters.contains(*letter))
            .fold(Privileges::NONE, |all, (privilege, _, _)| {
                all.union(*privilege)
            })
    }
}

/// The SQL names, comma-separated: `SELECT, INSERT`.
impl fmt::Display for Privileges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Self::NAMED
            .iter()
            .filter(|(privilege, _, _)| self.contains(*privilege))
            .map(|(_, name, _)| *name)
            .collect();
        f.write_str(&names.join(", "))
    }
}

// Stored as `aclitem` letters, readable in the stored catalog.
impl Serialize for Privileges {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.letters())
    }
}

impl<'de> Deserialize<'de> for Privileges {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let letters = String::deserialize(deserializer)?;
        Ok(Privileges::from_letters(&letters))
    }
}

/// A relation's owner and the privileges granted on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    pub owner: String,
    /// Privileges granted, by grantee role ([`PUBLIC`] for every role). The owner's are
    /// implicit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grants: BTreeMap<String, Privileges>,
}

impl Access {
    pub fn owned_by(owner: &str) -> Access {
        Access {
            owner: owner.to_string(),
            grants: BTreeMap::new(),
        }
    }

    pub fn is_default(&self) -> bool {
        *self == Access::default()
    }

    /// Adds `privileges` for `grantee`.
    pub fn grant(&mut self, grantee: &str, privileges: Privileges) {
        let held = self.grants.entry(grantee.to_string()).or_default();
        *held = held.union(privileges);
    }

    /// Takes `privileges` from `grantee`.
    pub fn revoke(&mut self, grantee: &str, privileges: Privileges) {
        if let Some(held) = self.grants.get_mut(grantee) {
            *held = held.without(privileges);
            if held.is_empty() {
                self.grants.remove(grantee);
            }
        }
    }

    /// Postgres's `relacl` items (`alice=r/runnel`, `=r/runnel` for PUBLIC), the owner's
    /// first; `None` while nothing was granted (the owner's default privileges).
    pub fn acl_items(&self) -> Option<Vec<String>> {
        if self.grants.is_empty() {
            return None;
        }
        let owner = &self.owner;
        let mut items = vec![format!("{owner}={}/{owner}", Privileges::ALL.letters())];
        for (grantee, privileges) in &self.grants {
            let shown = if grantee == PUBLIC { "" } else { grantee };
            items.push(format!("{shown}={}/{owner}", privileges.letters()));
        }
        Some(items)
    }
}

impl Default for Access {
    fn default() -> Self {
        Access::owned_by(DEFAULT_OWNER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileges_round_trip_as_letters() {
        let p = Privileges::SELECT.union(Privileges::DELETE);
        assert_eq!(p.letters(), "rd");
        assert_eq!(Privileges::from_letters("rd"), p);
        assert_eq!(Privileges::ALL.letters(), "arwd");
        assert_eq!(p.to_string(), "SELECT, DELETE");
        assert_eq!(Privileges::named("update"), Some(Privileges::UPDATE));
        assert_eq!(Privileges::named("truncate"), None);
    }

    #[test]
    fn grants_and_revokes_make_acl_items() {
        let mut access = Access::owned_by("owner");
        assert_eq!(access.acl_items(), None);
        access.grant("alice", Privileges::SELECT);
        access.grant("alice", Privileges::INSERT);
        access.grant(PUBLIC, Privileges::SELECT);
        assert_eq!(
            access.acl_items().unwrap(),
            vec!["owner=arwd/owner", "alice=ar/owner", "=r/owner"]
        );
        access.revoke("alice", Privileges::ALL);
        access.revoke(PUBLIC, Privileges::SELECT);
        assert_eq!(access.acl_items(), None);
    }
}
