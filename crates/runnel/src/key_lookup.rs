//! Point and prefix lookups of keyed views and of tables by primary key: `SELECT ... FROM v
//! WHERE k = 42` (or `k IN (...)`, or equalities on the first columns of a composite key)
//! reads those keys from the store instead of the whole relation.
//!
//! DataFusion offers the scan its filters; those that are equalities (or `IN` lists) of a key
//! column with constants are accepted as *inexact* (DataFusion still applies them after the
//! scan, so a lookup can only ever narrow what is read, never change an answer). When the
//! constants cover the first columns of the view's key, the scan encodes each combination
//! with the row codec: a whole key is one RocksDB multi-get (its vnode is the hash of the
//! encoded key), the first columns of a key are one range scan per vnode (a table's rows have
//! no vnode: one range scan). The plan shows a `ViewKeyLookup` (`TableKeyLookup`) leaf where it
//! would show the whole relation's rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use runnel_common::Result;
use runnel_runtime::view_rows::{decode_stored, encode_columns, row_store_key, ViewLayout};
use runnel_state::codec::EncodedRows;
use runnel_state::keys::prefix_end;
use runnel_state::vnode::{vnode_key, VNODE_COUNT};
use runnel_state::Store;

/// Most key combinations one scan looks up; beyond, it reads the whole view.
const MAX_LOOKUPS: usize = 4096;

/// The keys a scan reads: constants for the first `values.len()` key columns.
#[derive(Debug, Clone)]
pub struct KeyLookup {
    /// Per key column, in key order: the column's name and its constants.
    values: Vec<(String, Vec<ScalarValue>)>,
    /// Every key column is given (point lookups), not only the first ones (prefixes).
    whole_key: bool,
}

/// The constants `filter` compares a column with, by column name: `col = c`, `c = col`,
/// `col IN (c, ...)`, and disjunctions of those on one column (DataFusion rewrites a short
/// IN list as `col = c1 OR col = c2 ...`). Anything else (casts of the column included) is
/// not a lookup.
fn column_constants(filter: &Expr) -> Option<(&str, Vec<ScalarValue>)> {
    match filter {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let (name, mut values) = column_constants(left)?;
            let (other, more) = column_constants(right)?;
            if name != other {
                return None;
            }
            values.extend(more);
            Some((name, values))
        }
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => {
                Some((c.name.as_str(), vec![v.clone()]))
            }
            _ => None,
        },
        Expr::InList(list) if !list.negated => {
            let Expr::Column(c) = list.expr.as_ref() else {
                return None;
            };
            let values = list
                .list
                .iter()
                .map(|e| match e {
                    Expr::Literal(v, _) => Some(v.clone()),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Some((c.name.as_str(), values))
        }
        _ => None,
    }
}

/// Whether `filter` can narrow a lookup of a view keyed by `key_names`.
pub fn is_key_filter(filter: &Expr, key_names: &[&str]) -> bool {
    column_constants(filter).is_some_and(|(name, _)| key_names.contains(&name))
}

impl KeyLookup {
    /// The lookup `filters` (a conjunction) allow on a view whose key columns are
    /// `key_columns` (name and index into `schema`, in key order), if any.
    pub fn plan(
        filters: &[Expr],
        key_columns: &[(String, usize)],
        schema: &SchemaRef,
    ) -> Option<Self> {
        // Per key column: the constants every conjunct on it allows (their intersection).
        let mut allowed: BTreeMap<usize, Vec<ScalarValue>> = BTreeMap::new();
        for filter in filters {
            let Some((name, values)) = column_constants(filter) else {
                continue;
            };
            let Some(position) = key_columns.iter().position(|(n, _)| n == name) else {
                continue;
            };
            let data_type = schema.field(key_columns[position].1).data_type();
            let mut typed = Vec::with_capacity(values.len());
            for value in values {
                if value.is_null() {
                    continue; // `k = NULL` is never true
                }
                // Only a constant that is exactly a value of the column's type is looked up
                // (`k = 1.5` over a bigint key is not narrowed: DataFusion's filter decides).
                let cast = value.cast_to(data_type).ok()?;
                if cast.cast_to(&value.data_type()).ok()? != value {
                    return None;
                }
                if !typed.contains(&cast) {
                    typed.push(cast);
                }
            }
            let entry = allowed.entry(position).or_insert_with(|| typed.clone());
            entry.retain(|v| typed.contains(v));
        }
        let given = (0..key_columns.len())
            .take_while(|p| allowed.contains_key(p))
            .count();
        if given == 0 {
            return None;
        }
        let values: Vec<(String, Vec<ScalarValue>)> = (0..given)
            .map(|p| {
                (
                    key_columns[p].0.clone(),
                    allowed.remove(&p).unwrap_or_default(),
                )
            })
            .collect();
        let combinations = values
            .iter()
            .try_fold(1usize, |n, (_, v)| n.checked_mul(v.len().max(1)))?;
        if combinations > MAX_LOOKUPS {
            return None;
        }
        Some(KeyLookup {
            values,
            whole_key: given == key_columns.len(),
        })
    }

    /// What EXPLAIN shows: `k IN (1, 2)` or `k = 42` per column.
    fn describe(&self) -> String {
        let parts: Vec<String> = self
            .values
            .iter()
            .map(|(name, values)| match values.as_slice() {
                [one] => format!("{name} = {one}"),
                many => format!(
                    "{name} IN ({})",
                    many.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
            .collect();
        let kind = if self.whole_key { "key" } else { "key prefix" };
        format!("{kind} {}", parts.join(" AND "))
    }

    /// The encoded keys (or key prefixes) to read: every combination of the constants.
    fn encoded(&self) -> Result<EncodedRows> {
        let mut combinations: Vec<Vec<ScalarValue>> = vec![Vec::new()];
        for (_, values) in &self.values {
            combinations = combinations
                .into_iter()
                .flat_map(|prefix| {
                    values.iter().map(move |v| {
                        let mut row = prefix.clone();
                        row.push(v.clone());
                        row
                    })
                })
                .collect();
        }
        let mut out = EncodedRows::new();
        if combinations.is_empty() || self.values.iter().any(|(_, v)| v.is_empty()) {
            return Ok(out);
        }
        let columns: Vec<ArrayRef> = (0..self.values.len())
            .map(|c| ScalarValue::iter_to_array(combinations.iter().map(|row| row[c].clone())))
            .collect::<DfResult<_>>()?;
        let all: Vec<usize> = (0..columns.len()).collect();
        encode_columns(&columns, &all, combinations.len(), &mut out)?;
        Ok(out)
    }

    /// A table's rows with the looked-up primary keys (stored under `prefix` ‖ encoded key,
    /// without a vnode).
    pub fn read_table(
        &self,
        store: &Store,
        prefix: &[u8],
        schema: &SchemaRef,
    ) -> Result<Vec<RecordBatch>> {
        let keys = self.encoded()?;
        let mut rows: Vec<Vec<u8>> = Vec::new();
        let with_prefix = |key: &[u8]| {
            let mut store_key = prefix.to_vec();
            store_key.extend_from_slice(key);
            store_key
        };
        if self.whole_key {
            let store_keys: Vec<Vec<u8>> = keys.iter().map(with_prefix).collect();
            rows.extend(store.multi_get(&store_keys)?.into_iter().flatten());
        } else {
            for key_prefix in keys.iter() {
                let start = with_prefix(key_prefix);
                let found = store.scan_range(&start, &prefix_end(&start))?;
                rows.extend(found.into_iter().map(|(_, v)| v.into_vec()));
            }
        }
        Ok(vec![crate::serving::decode_table_rows(
            schema,
            rows.iter().map(|r| &r[..]),
        )?])
    }

    /// The view's rows with the looked-up keys, read from the store under `prefix`.
    pub fn read(
        &self,
        store: &Store,
        prefix: &[u8],
        layout: &ViewLayout,
        schema: &SchemaRef,
    ) -> Result<Vec<RecordBatch>> {
        let keys = self.encoded()?;
        let mut found = Vec::new();
        if self.whole_key {
            let store_keys: Vec<Vec<u8>> = keys
                .iter()
                .map(|key| {
                    let mut store_key = Vec::new();
                    row_store_key(prefix, key, &mut store_key);
                    store_key
                })
                .collect();
            let values = store.multi_get(&store_keys)?;
            for (key, value) in store_keys.into_iter().zip(values) {
                if let Some(value) = value {
                    found.push((key.into_boxed_slice(), value.into_boxed_slice()));
                }
            }
        } else {
            // The first columns of a key: its vnode hashes the whole key, so every vnode is
            // looked into (one seek each).
            for key_prefix in keys.iter() {
                let mut start = Vec::new();
                for vnode in 0..VNODE_COUNT {
                    vnode_key(prefix, vnode, key_prefix, &mut start);
                    found.extend(store.scan_range(&start, &prefix_end(&start))?);
                }
            }
        }
        decode_stored(layout, schema, prefix.len(), &found)
    }
}

/// A scan that read only the looked-up keys of a view or table (shown by EXPLAIN); it holds
/// the rows.
#[derive(Debug)]
pub struct KeyLookupExec {
    /// `ViewKeyLookup` or `TableKeyLookup`.
    label: &'static str,
    relation: String,
    lookup: String,
    batches: Vec<RecordBatch>,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    properties: Arc<PlanProperties>,
}

impl KeyLookupExec {
    pub fn new(
        label: &'static str,
        relation: &str,
        lookup: &KeyLookup,
        batches: Vec<RecordBatch>,
        schema: SchemaRef,
        projection: Option<Vec<usize>>,
    ) -> DfResult<Self> {
        let projected = match &projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => schema.clone(),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(projected),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(KeyLookupExec {
            label,
            relation: relation.to_string(),
            lookup: lookup.describe(),
            batches,
            schema,
            projection,
            properties: Arc::new(properties),
        })
    }
}

impl DisplayAs for KeyLookupExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let rows: usize = self.batches.iter().map(RecordBatch::num_rows).sum();
        write!(
            f,
            "{}: {} {}, rows={rows}",
            self.label, self.relation, self.lookup
        )
    }
}

impl ExecutionPlan for KeyLookupExec {
    fn name(&self) -> &'static str {
        self.label
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        Ok(Box::pin(MemoryStream::try_new(
            self.batches.clone(),
            self.schema.clone(),
            self.projection.clone(),
        )?))
    }
}
