//! Transaction blocks: `BEGIN` ... `COMMIT` / `ROLLBACK`.
//!
//! The writes of a block (INSERT, UPDATE, DELETE, COPY FROM) are computed when their
//! statement runs (so a bad value or a duplicate key fails that statement, as in Postgres) and
//! kept here, per relation. COMMIT applies all of them in one RocksDB write, one log entry per
//! relation touched, so no view ever sees part of a transaction; ROLLBACK, or an error at
//! COMMIT, drops them.
//!
//! Reads in a block see committed data; a block's own writes are not visible until COMMIT
//! (views are maintained from the logs, which the writes reach only then). So that no read
//! silently misses them, a statement that reads a relation this block wrote (or a view
//! computed from one) is refused: the read would not see the block's writes.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;
use runnel_common::{Result, RunnelError, SqlState};
use runnel_plan::ObjectId;
use runnel_sql::{Catalog, CatalogEntry, ObjectKind};
use runnel_state::WriteBatch;

use crate::handlers::dml;
use crate::shared::Shared;

/// The writes of an open transaction block, shared with a COPY running in it.
pub type SharedPendingWrites = Arc<std::sync::Mutex<PendingWrites>>;

/// What a transaction block wrote and has not committed yet.
#[derive(Default, Clone)]
pub struct PendingWrites {
    relations: BTreeMap<ObjectId, PendingRelation>,
}

#[derive(Clone)]
struct PendingRelation {
    entry: Arc<CatalogEntry>,
    /// Rows the block deletes (tables) ...
    old: Vec<RecordBatch>,
    /// ... and rows it inserts.
    new: Vec<RecordBatch>,
    /// Tables with a primary key: the keys of the rows the block inserts and deletes, to
    /// check each new row's key against.
    inserted_keys: HashSet<Vec<u8>>,
    removed_keys: HashSet<Vec<u8>>,
}

impl PendingWrites {
    pub fn is_empty(&self) -> bool {
        self.relations.is_empty()
    }

    /// Keeps `old` rows to delete and `new` rows to insert (streams: only inserts) for
    /// COMMIT. A new row whose key another row has (stored and not deleted by the block, or
    /// inserted by it) fails here, as the statement would in Postgres.
    pub fn add(
        &mut self,
        shared: &Shared,
        entry: &Arc<CatalogEntry>,
        old: RecordBatch,
        new: RecordBatch,
    ) -> Result<()> {
        let relation = self
            .relations
            .entry(entry.id)
            .or_insert_with(|| PendingRelation {
                entry: entry.clone(),
                old: Vec::new(),
                new: Vec::new(),
                inserted_keys: HashSet::new(),
                removed_keys: HashSet::new(),
            });
        if entry.kind == ObjectKind::Table && !entry.primary_key.is_empty() {
            let old_keys = dml::primary_keys(entry, &old)?;
            let new_keys = dml::primary_keys(entry, &new)?;
            let removed: HashSet<&[u8]> = old_keys
                .iter()
                .chain(relation.removed_keys.iter().map(Vec::as_slice))
                .collect();
            let mut seen: HashSet<&[u8]> = HashSet::new();
            let mut to_check = Vec::new();
            for key in new_keys.iter() {
                if !seen.insert(key) || relation.inserted_keys.contains(key) {
                    return Err(dml::duplicate_key(entry));
                }
                if !removed.contains(key) {
                    to_check.push(key);
                }
            }
            if shared
                .store
                .multi_get(&to_check)?
                .iter()
                .any(Option::is_some)
            {
                return Err(dml::duplicate_key(entry));
            }
            relation
                .removed_keys
                .extend(old_keys.iter().map(<[u8]>::to_vec));
            relation
                .inserted_keys
                .extend(new_keys.iter().map(<[u8]>::to_vec));
        }
        if old.num_rows() > 0 {
            relation.old.push(old);
        }
        if new.num_rows() > 0 {
            relation.new.push(new);
        }
        Ok(())
    }

    /// Refuses a plan that reads a relation the block wrote, or a view computed from one:
    /// the read would not see the block's writes.
    pub fn check_reads(&self, catalog: &Catalog, plan: &LogicalPlan) -> Result<()> {
        if self.relations.is_empty() {
            return Ok(());
        }
        for name in scanned_relations(plan)? {
            let Some(entry) = catalog.get(&name) else {
                continue;
            };
            if let Some(written) = self.written_under(catalog, entry) {
                let through = if written == entry.name {
                    String::new()
                } else {
                    format!(", which is computed from \"{written}\"")
                };
                return Err(RunnelError::plan(
                    SqlState("25000"),
                    format!(
                        "cannot read \"{}\"{through} in the transaction that wrote \
                         \"{written}\": a transaction's writes become visible at COMMIT",
                        entry.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The relation this block wrote that `entry` is, or is computed from.
    fn written_under(&self, catalog: &Catalog, entry: &CatalogEntry) -> Option<String> {
        let mut todo = vec![entry.id];
        let mut seen = HashSet::new();
        while let Some(id) = todo.pop() {
            if !seen.insert(id) {
                continue;
            }
            if let Some(relation) = self.relations.get(&id) {
                return Some(relation.entry.name.clone());
            }
            if let Some(entry) = catalog.get_by_id(id) {
                todo.extend(entry.dependencies.iter().copied());
            }
        }
        None
    }

    /// Applies every write of the block in one atomic write, under the writers' locks (taken
    /// in id order, so two commits cannot wait for each other).
    pub async fn commit(self, shared: &Arc<Shared>) -> Result<()> {
        if self.relations.is_empty() {
            return Ok(());
        }
        let writers = self
            .relations
            .keys()
            .map(|&id| shared.writer(id))
            .collect::<Result<Vec<_>>>()?;
        let mut locked = Vec::with_capacity(writers.len());
        for writer in &writers {
            locked.push(writer.lock().await);
        }
        let relations: Vec<&PendingRelation> = self.relations.values().collect();
        let mut batch = WriteBatch::default();
        let mut staged = Vec::with_capacity(relations.len());
        // Tables first: their key checks may still fail, and staging moves a stream's
        // event-time clock.
        for (index, relation) in relations.iter().enumerate() {
            if relation.entry.kind == ObjectKind::Table {
                let entry = &relation.entry;
                let old = concat_batches(&entry.schema, &relation.old)?;
                let new = concat_batches(&entry.schema, &relation.new)?;
                let lock = &mut locked[index];
                staged.push((
                    index,
                    dml::stage_table_changes(shared, entry, lock, &old, &new, &mut batch)?,
                ));
            }
        }
        for (index, relation) in relations.iter().enumerate() {
            if relation.entry.kind != ObjectKind::Table {
                let rows = concat_batches(&relation.entry.schema, &relation.new)?;
                let (_, stage) = locked[index].stage_stream(rows, &mut batch)?;
                staged.push((index, stage));
            }
        }
        shared.store.write(batch)?;
        for (index, stage) in staged {
            locked[index].staged_written(stage);
        }
        drop(locked);
        shared.worker.wake();
        Ok(())
    }
}

/// A transaction block's state besides its writes.
#[derive(Default)]
pub struct Transaction {
    /// The writes, once the block wrote.
    pub writes: SharedPendingWrites,
    /// Objects the block created, dropped again by ROLLBACK: CREATE takes effect at once
    /// (a block's later statements use the new object), and is undone with the block.
    pub created: Vec<(ObjectKind, String)>,
    /// A statement failed: everything but ROLLBACK (or COMMIT, which then rolls back) is
    /// refused, as in Postgres.
    pub failed: bool,
    /// Open savepoints, oldest first.
    pub savepoints: Vec<Savepoint>,
    /// COMMENT ON statements of the block, checked when issued and applied at COMMIT.
    pub comments: Vec<PendingComment>,
}

/// A `COMMENT ON` kept for COMMIT.
#[derive(Debug, Clone)]
pub struct PendingComment {
    pub kind: ObjectKind,
    pub relation: String,
    pub column: Option<String>,
    pub text: Option<String>,
}

/// `SAVEPOINT name`: what the block had written and created then.
pub struct Savepoint {
    pub name: String,
    writes: PendingWrites,
    created: usize,
    comments: usize,
}

impl Transaction {
    pub fn has_writes(&self) -> bool {
        !self
            .writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Marks where the block is, for ROLLBACK TO.
    pub fn savepoint(&mut self, name: String) {
        let writes = self
            .writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.savepoints.push(Savepoint {
            name,
            writes,
            created: self.created.len(),
            comments: self.comments.len(),
        });
    }

    /// The newest savepoint called `name`.
    fn find_savepoint(&self, name: &str) -> Result<usize> {
        self.savepoints
            .iter()
            .rposition(|savepoint| savepoint.name == name)
            .ok_or_else(|| {
                RunnelError::plan(
                    SqlState("3B001"),
                    format!("savepoint \"{name}\" does not exist"),
                )
            })
    }

    /// `RELEASE name`: forgets the savepoint and those after it, keeping what they marked.
    pub fn release(&mut self, name: &str) -> Result<()> {
        let index = self.find_savepoint(name)?;
        self.savepoints.truncate(index);
        Ok(())
    }

    /// `ROLLBACK TO name`: drops what the block wrote since the savepoint (which stays) and
    /// ends a failure; returns the objects created since, for the caller to drop.
    pub fn rollback_to(&mut self, name: &str) -> Result<Vec<(ObjectKind, String)>> {
        let index = self.find_savepoint(name)?;
        self.savepoints.truncate(index + 1);
        let savepoint = &self.savepoints[index];
        *self.writes.lock().unwrap_or_else(|p| p.into_inner()) = savepoint.writes.clone();
        let created = self
            .created
            .split_off(savepoint.created.min(self.created.len()));
        self.comments.truncate(savepoint.comments);
        self.failed = false;
        Ok(created)
    }

    /// The writes, leaving none behind.
    pub fn take_writes(&self) -> PendingWrites {
        std::mem::take(&mut *self.writes.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The writers' lock of a transaction's pending writes.
pub fn lock_pending(pending: &SharedPendingWrites) -> std::sync::MutexGuard<'_, PendingWrites> {
    pending.lock().unwrap_or_else(|p| p.into_inner())
}

/// The names of the relations a plan scans, subqueries included.
pub fn scanned_relations(plan: &LogicalPlan) -> Result<Vec<String>> {
    let mut read = Vec::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            read.push(scan.table_name.table().to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(read)
}
