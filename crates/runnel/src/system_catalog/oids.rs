//! Object identifiers in the system catalogs.
//!
//! Fixed values follow Postgres where clients and tools compare against them: the
//! `pg_catalog` (11) and `public` (2200) namespaces, the bootstrap superuser (10), the
//! built-in types (see [`super::types`]) and the catalog tables' own OIDs (`pg_class` is 1259).
//! A user relation with Runnel object id `n` gets `16384 + 4n` (16384 is Postgres's first
//! OID for user objects), and the three OIDs after it name its primary-key index, its
//! primary-key constraint and its row type, so every OID maps back to one object.

use runnel_plan::ObjectId;

pub const PG_CATALOG_NAMESPACE: u32 = 11;
pub const PUBLIC_NAMESPACE: u32 = 2200;
pub const INFORMATION_SCHEMA_NAMESPACE: u32 = 13_000;
/// The bootstrap superuser, `runnel`.
pub const SUPERUSER: u32 = 10;
/// The one database, `runnel`.
pub const DATABASE: u32 = 16_384;
pub const TEMPLATE_DATABASE: u32 = 1;
/// `pg_am`'s btree, the access method of primary-key indexes.
pub const BTREE_AM: u32 = 403;
pub const HEAP_AM: u32 = 2;
/// The default tablespace.
pub const DEFAULT_TABLESPACE: u32 = 1663;
/// The `sql` language of `pg_language`, for built-in functions.
pub const INTERNAL_LANGUAGE: u32 = 12;
/// The default collation.
pub const DEFAULT_COLLATION: u32 = 100;

const FIRST_USER_OID: u32 = 16_384;

/// What a user-object OID names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserObject {
    Relation(ObjectId),
    PrimaryKeyIndex(ObjectId),
    PrimaryKeyConstraint(ObjectId),
    RowType(ObjectId),
}

pub fn relation(id: ObjectId) -> u32 {
    FIRST_USER_OID.saturating_add(id.saturating_mul(4))
}

pub fn primary_key_index(id: ObjectId) -> u32 {
    relation(id).saturating_add(1)
}

pub fn primary_key_constraint(id: ObjectId) -> u32 {
    relation(id).saturating_add(2)
}

pub fn row_type(id: ObjectId) -> u32 {
    relation(id).saturating_add(3)
}

/// The object a user OID names, if it is one.
pub fn user_object(oid: u32) -> Option<UserObject> {
    let offset = oid.checked_sub(FIRST_USER_OID)?;
    let id = offset / 4;
    Some(match offset % 4 {
        0 => UserObject::Relation(id),
        1 => UserObject::PrimaryKeyIndex(id),
        2 => UserObject::PrimaryKeyConstraint(id),
        _ => UserObject::RowType(id),
    })
}

/// OIDs of the catalog tables (Postgres's, for those it fixes).
pub fn system_relation(name: &str, position: usize) -> u32 {
    match name {
        "pg_type" => 1247,
        "pg_attribute" => 1249,
        "pg_proc" => 1255,
        "pg_class" => 1259,
        "pg_authid" => 1260,
        "pg_database" => 1262,
        "pg_am" => 2601,
        "pg_attrdef" => 2604,
        "pg_constraint" => 2606,
        "pg_depend" => 2608,
        "pg_description" => 2609,
        "pg_index" => 2610,
        "pg_inherits" => 2611,
        "pg_rewrite" => 2618,
        "pg_trigger" => 2620,
        "pg_namespace" => 2615,
        // Views and the rest: above the catalog tables, below user objects.
        _ => 12_000 + u32::try_from(position).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_oids_map_back_to_their_object() {
        for id in [1, 2, 77] {
            assert_eq!(user_object(relation(id)), Some(UserObject::Relation(id)));
            assert_eq!(
                user_object(primary_key_index(id)),
                Some(UserObject::PrimaryKeyIndex(id))
            );
            assert_eq!(
                user_object(primary_key_constraint(id)),
                Some(UserObject::PrimaryKeyConstraint(id))
            );
            assert_eq!(user_object(row_type(id)), Some(UserObject::RowType(id)));
        }
        assert_eq!(user_object(1259), None);
    }
}
