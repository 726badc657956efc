//! Catalog objects: streams, tables and materialized views, by name and by id. The catalog
//! persists each object as its CREATE statement (see [`StoredEntry`]) and rebuilds everything
//! else by re-parsing and re-planning it on start.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use runnel_common::{Result, RunnelError, SqlState, WatermarkDef};
use runnel_plan::{EventTime, ObjectId, RelationKind};
use serde::{Deserialize, Serialize};

use crate::access::Access;
use crate::statement::ObjectKind;

/// One catalog object as kept in memory.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    pub id: ObjectId,
    pub name: String,
    pub kind: ObjectKind,
    /// The CREATE statement, as the user wrote it.
    pub sql: String,
    /// The relation's columns as queries see them.
    pub schema: SchemaRef,
    /// Primary key columns (tables).
    pub primary_key: Vec<usize>,
    /// Objects this one reads (views).
    pub dependencies: Vec<ObjectId>,
    /// Views: the columns the view's rows are stored by, one row per key (`None`: stored as
    /// a multiset of rows with counts). Fixed when the view is created.
    pub view_key: Option<Vec<usize>>,
    /// Views without a key that only ever get inserts: stored as blocks of appended rows.
    /// Fixed when the view is created.
    pub view_appended: bool,
    /// Views created with a start position: per Kafka stream read, the first offset of each
    /// partition the view sees, resolved once at creation (so a restart keeps them).
    pub start_offsets: BTreeMap<ObjectId, BTreeMap<i32, i64>>,
    /// Streams: `WATERMARK FOR ...`.
    pub watermark: Option<WatermarkDef>,
    /// Whether an event-time clock paces the relation, and the columns it bounds (a stream's
    /// watermark column, a view's output columns derived from its plan).
    pub event_time: EventTime,
    /// `COMMENT ON` texts: 0 for the object itself, else a column's 1-based number.
    pub comments: BTreeMap<i32, String>,
    /// The owner and the privileges granted on the object.
    pub access: Access,
}

impl CatalogEntry {
    pub fn relation_kind(&self) -> RelationKind {
        match self.kind {
            ObjectKind::Stream => RelationKind::Stream,
            ObjectKind::Table => RelationKind::Table,
            // A sink is never read as a relation; it is listed only to share the namespace.
            ObjectKind::MaterializedView | ObjectKind::Sink => RelationKind::View,
        }
    }
}

/// What a materialized view's stored rows and operator state mean. 8: equal subplans of a
/// view share one node (`crate::share`), which renumbers the nodes, and so the state keys, of
/// a view that has some. 7: a join side holds each
/// row with its expiry time, and its time index names keys, not rows. 6: every operator's state
/// is vnode-keyed through `runnel_state::KeyedState` (OVER window and ASOF join in its rows
/// layout, session windows one value per key), and what the clock expires is found in time
/// indexes (`runnel_state::TimeIndex`); sub-tables under the operator prefix ‖ a tag byte. 5: aggregate and join
/// state keys and keyed/counted view rows start with a vnode (`runnel_state::vnode`), and
/// that state is read on demand. 4: `avg(integer) OVER` is
/// `numeric` and float `sum`/`avg` OVER are exact. 3: `sum(bigint) OVER` is `numeric`.
/// 2: `sum(bigint)` and `avg(integer)` are `numeric` and float sums exact
/// (`runnel_sql::pg_numbers`); 1 before.
/// A view stored with an earlier layout is rebuilt from its sources when it is restored.
pub const STATE_LAYOUT: u32 = 8;

/// Whether a view whose state an earlier Runnel wrote with `layout` must be rebuilt from its
/// sources, given how many nodes its plan now shares (`StreamPlan::shared_nodes`): layout 7
/// differs from 8 only where the plan shares nodes, so other views keep their state.
pub fn state_needs_rebuild(layout: u32, shared_nodes: usize) -> bool {
    layout < 7 || (layout < STATE_LAYOUT && shared_nodes > 0)
}

fn first_state_layout() -> u32 {
    1
}

/// The persisted form of a catalog object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEntry {
    pub id: ObjectId,
    pub name: String,
    pub kind: StoredKind,
    pub sql: String,
    /// See [`CatalogEntry::view_key`]; absent in entries written before views had keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_key: Option<Vec<usize>>,
    /// See [`CatalogEntry::view_appended`]; absent (false) in entries written before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub view_appended: bool,
    /// See [`CatalogEntry::start_offsets`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub start_offsets: BTreeMap<ObjectId, BTreeMap<i32, i64>>,
    /// See [`CatalogEntry::comments`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub comments: BTreeMap<i32, String>,
    /// See [`CatalogEntry::access`]; absent in entries written before objects had owners
    /// (owned by the bootstrap superuser).
    #[serde(default, skip_serializing_if = "Access::is_default")]
    pub access: Access,
    /// See [`STATE_LAYOUT`]; absent (1) in entries written before it was recorded.
    #[serde(default = "first_state_layout")]
    pub state_layout: u32,
    /// The vnode count its operator state was partitioned into (`runnel_plan::VNODE_COUNT`
    /// when written); absent (0) before state had vnodes.
    #[serde(default)]
    pub vnode_count: u16,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum StoredKind {
    Stream,
    Table,
    MaterializedView,
    Sink,
}

impl From<ObjectKind> for StoredKind {
    fn from(kind: ObjectKind) -> Self {
        match kind {
            ObjectKind::Stream => StoredKind::Stream,
            ObjectKind::Table => StoredKind::Table,
            ObjectKind::MaterializedView => StoredKind::MaterializedView,
            ObjectKind::Sink => StoredKind::Sink,
        }
    }
}

impl From<StoredKind> for ObjectKind {
    fn from(kind: StoredKind) -> Self {
        match kind {
            StoredKind::Stream => ObjectKind::Stream,
            StoredKind::Table => ObjectKind::Table,
            StoredKind::MaterializedView => ObjectKind::MaterializedView,
            StoredKind::Sink => ObjectKind::Sink,
        }
    }
}

impl CatalogEntry {
    pub fn stored(&self) -> StoredEntry {
        StoredEntry {
            id: self.id,
            name: self.name.clone(),
            kind: self.kind.into(),
            sql: self.sql.clone(),
            view_key: self.view_key.clone(),
            view_appended: self.view_appended,
            start_offsets: self.start_offsets.clone(),
            comments: self.comments.clone(),
            access: self.access.clone(),
            state_layout: STATE_LAYOUT,
            vnode_count: runnel_plan::VNODE_COUNT,
        }
    }
}

/// All catalog objects. Mutated only by the dataflow worker; sessions read snapshots.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    by_name: HashMap<String, Arc<CatalogEntry>>,
    by_id: BTreeMap<ObjectId, Arc<CatalogEntry>>,
}

impl Catalog {
    pub fn get(&self, name: &str) -> Option<&Arc<CatalogEntry>> {
        self.by_name.get(name)
    }

    pub fn get_by_id(&self, id: ObjectId) -> Option<&Arc<CatalogEntry>> {
        self.by_id.get(&id)
    }

    /// Looks a relation up, failing with `42P01` like Postgres.
    pub fn resolve(&self, name: &str) -> Result<&Arc<CatalogEntry>> {
        self.get(name).ok_or_else(|| {
            RunnelError::plan(
                SqlState::UNDEFINED_TABLE,
                format!("relation \"{name}\" does not exist"),
            )
        })
    }

    pub fn insert(&mut self, entry: CatalogEntry) {
        let entry = Arc::new(entry);
        self.by_name.insert(entry.name.clone(), entry.clone());
        self.by_id.insert(entry.id, entry);
    }

    /// Replaces an entry's COMMENT ON texts (restoring them at start-up).
    pub fn set_comments(&mut self, id: ObjectId, comments: BTreeMap<i32, String>) {
        if let Some(entry) = self.get_by_id(id) {
            let mut entry = (**entry).clone();
            entry.comments = comments;
            self.insert(entry);
        }
    }

    pub fn set_access(&mut self, id: ObjectId, access: Access) {
        if let Some(entry) = self.get_by_id(id) {
            let mut entry = (**entry).clone();
            entry.access = access;
            self.insert(entry);
        }
    }

    pub fn remove(&mut self, id: ObjectId) -> Option<Arc<CatalogEntry>> {
        let entry = self.by_id.remove(&id)?;
        self.by_name.remove(&entry.name);
        Some(entry)
    }

    /// Objects in creation order.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<CatalogEntry>> {
        self.by_id.values()
    }

    /// Objects that read `id` directly.
    pub fn dependents(&self, id: ObjectId) -> Vec<Arc<CatalogEntry>> {
        self.by_id
            .values()
            .filter(|e| e.dependencies.contains(&id))
            .cloned()
            .collect()
    }

    /// `id` and everything that reads it, transitively, dependents last.
    pub fn with_dependents(&self, id: ObjectId) -> Vec<Arc<CatalogEntry>> {
        let mut out: Vec<Arc<CatalogEntry>> = Vec::new();
        let mut stack = vec![id];
        while let Some(next) = stack.pop() {
            if out.iter().any(|e| e.id == next) {
                continue;
            }
            if let Some(entry) = self.by_id.get(&next) {
                out.push(entry.clone());
                for dep in self.dependents(next) {
                    stack.push(dep.id);
                }
            }
        }
        out.sort_by_key(|e| e.id);
        out
    }
}
