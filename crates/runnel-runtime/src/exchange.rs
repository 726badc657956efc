//! Exchanges: where a view's rows move between workers.
//!
//! Every worker runs a replica of every view's operators (see [`crate::shard`]). A stateful
//! operator's replica on worker `w` holds the keys whose vnode `w` owns
//! ([`runnel_state::vnode::shard_of`]), so the rows reaching it must be the rows of those
//! keys: before such an operator, the plan of every view gets an **exchange** node that sends
//! each row to the worker owning the vnode of the operator's partitioning key, computed
//! exactly as the operator computes it (the same expressions, the same casts, the same
//! encoding). This module says, per plan node and input port, what that key is
//! ([`required`]), and whether the input is already partitioned by it ([`provided`]: an
//! aggregate's output by its group columns, a filter's or a projection's by the columns they
//! keep), in which case no exchange is added: rows only move where the partitioning changes.
//! Stateless chains stay on the worker that produced their rows.
//!
//! An exchange before an aggregate whose input columns are all group columns (`count(*) ...
//! GROUP BY a, b`, the windowed counts of Nexmark q5) sends each distinct row of a batch once,
//! its weights added up ([`PartitionKey::WholeRows`]): identical rows are one group's, and the
//! aggregate takes a row of weight `w` as `w` copies. Where a batch has many (a bid stream
//! counted per auction and window has a few hundred distinct rows per batch of thousands),
//! that is most of what would cross, and be looked up in the aggregate's state.
//!
//! An exchange before an aggregate of only `min`/`max` calls over inserts sends, of a batch's
//! rows of one group, only those holding an extreme ([`PartitionKey::Extremes`],
//! [`crate::extreme_rows`]): the others cannot change the result.

use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, UInt32Array};
use datafusion::arrow::compute::{cast, interleave, interleave_record_batch, take_record_batch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, ExprSchemable};
use hashbrown::HashTable;
use runnel_common::{ChangeBatch, Result, RunnelError};
use runnel_plan::{NodeKind, PlanNode, StreamPlan};
use runnel_state::codec::{encode_rows, EncodedRows};
use runnel_state::vnode::{shard_of, vnode_of};

use crate::expr::{compile_all, evaluate_all, CompiledExpr};
use crate::extreme_rows::ExtremeCalls;

/// How a stream of rows is partitioned between workers: by the vnode of the encoded values
/// of these columns (of the node's output). The whole row is every column.
pub type Columns = Vec<usize>;

/// What decides the worker of a row at an exchange.
#[derive(Clone)]
pub enum PartitionKey {
    /// Columns of the input, encoded as they are.
    Columns(Columns),
    /// Columns that are every column of the input, before an aggregate: as `Columns`, and
    /// rows equal in all of them are sent as one, their weights added up (see the module
    /// docs).
    WholeRows(Columns),
    /// Group columns of the input, before an aggregate of only `min`/`max` calls over
    /// inserts: as `Columns`, and of a batch's rows of one group only those holding a call's
    /// extreme are sent (see [`ExtremeCalls::keep`]).
    Extremes(Columns, Arc<ExtremeCalls>),
    /// Expressions over the input, each cast to its type when one is given (a join's keys
    /// are cast to the type both sides compare in).
    Exprs(Vec<CompiledExpr>, Vec<Option<DataType>>),
    /// Every row to one worker (a sink's, on worker 0).
    Worker(usize),
}

/// Routes rows to workers by a [`PartitionKey`].
pub struct Partitioner {
    key: PartitionKey,
    /// `WholeRows`: adds up equal rows before they are routed; `Extremes`: keeps the extreme
    /// rows.
    consolidator: Consolidator,
}

/// Adds up the equal rows of batches ([`consolidate`]), or thins them another way
/// ([`Consolidator::apply_with`]), while that pays: after a batch where it removed fewer than
/// 1 row in [`CONSOLIDATE_MIN_FRACTION`], the next [`CONSOLIDATE_SKIP_BATCHES`] batches are
/// left as they are.
#[derive(Default)]
pub struct Consolidator {
    skip: u32,
}

/// See [`Consolidator`].
const CONSOLIDATE_MIN_FRACTION: usize = 8;
const CONSOLIDATE_SKIP_BATCHES: u32 = 64;

impl Consolidator {
    /// `batch` (whose rows are encoded whole in `keys`) with its equal rows added up, or
    /// `None` to use it as it is.
    pub fn apply(
        &mut self,
        batch: &ChangeBatch,
        keys: &EncodedRows,
    ) -> Result<Option<(ChangeBatch, EncodedRows)>> {
        self.apply_with(batch, keys, consolidate)
    }

    /// [`Consolidator::apply`] with `thin` in place of [`consolidate`]: `batch` with fewer
    /// rows (and their keys), or `None` to use it as it is.
    pub fn apply_with(
        &mut self,
        batch: &ChangeBatch,
        keys: &EncodedRows,
        thin: impl FnOnce(&ChangeBatch, &EncodedRows) -> Result<Option<(ChangeBatch, EncodedRows)>>,
    ) -> Result<Option<(ChangeBatch, EncodedRows)>> {
        if self.skip > 0 {
            self.skip -= 1;
            return Ok(None);
        }
        let n = batch.num_rows();
        let fewer = thin(batch, keys)?;
        let removed = fewer.as_ref().map_or(0, |(b, _)| n - b.num_rows());
        if removed * CONSOLIDATE_MIN_FRACTION < n {
            self.skip = CONSOLIDATE_SKIP_BATCHES;
        }
        Ok(fewer)
    }
}

/// Whether `group_exprs` are plain columns that are every column of `schema` (each row is
/// its group's key, so equal rows may be added up before the aggregate: [`consolidate`]).
pub fn groups_are_whole_rows(group_exprs: &[Expr], schema: &DFSchema) -> bool {
    let Some(mut columns) = plain_columns(group_exprs, schema) else {
        return false;
    };
    columns.sort_unstable();
    columns.dedup();
    !columns.is_empty() && columns.into_iter().eq(0..schema.fields().len())
}

/// Rows bound for one worker: the rows of `batch` at `rows` (every row when `None`), with
/// the partition keys of `batch`'s rows when the key has columns (`keys.row(i)` is row `i`'s
/// key exactly as the operator after the exchange encodes it, so it takes them,
/// [`crate::operator::Operator::process_keyed`], instead of encoding them again). The batch
/// and keys are shared by every worker's part (Arrow arrays are reference-counted): the rows
/// are gathered once, when the round's parts are joined ([`Routed::gather`]).
pub struct Routed {
    pub batch: ChangeBatch,
    pub rows: Option<Arc<[u32]>>,
    pub keys: Option<Arc<EncodedRows>>,
}

impl Routed {
    fn whole(batch: ChangeBatch, keys: Option<Arc<EncodedRows>>) -> Self {
        Routed {
            batch,
            rows: None,
            keys,
        }
    }

    /// The rows of `parts` in order as one batch (none when there are none), with their
    /// keys when every part has them: one copy of each row, none for a single whole batch.
    pub fn gather(parts: Vec<Routed>) -> Result<Option<(ChangeBatch, Option<Arc<EncodedRows>>)>> {
        if let [only] = parts.as_slice() {
            if only.rows.is_none() {
                let only = parts.into_iter().next().expect("one part");
                return Ok(Some((only.batch, only.keys)));
            }
        }
        if parts.is_empty() {
            return Ok(None);
        }
        // (part, row) of every row, in order.
        let mut picks: Vec<(usize, usize)> = Vec::new();
        for (p, part) in parts.iter().enumerate() {
            match &part.rows {
                Some(rows) => picks.extend(rows.iter().map(|&r| (p, r as usize))),
                None => picks.extend((0..part.batch.num_rows()).map(|r| (p, r))),
            }
        }
        let part_keys: Option<Vec<&EncodedRows>> =
            parts.iter().map(|p| p.keys.as_deref()).collect();
        let keys = part_keys.map(|part_keys| {
            let bytes = part_keys.iter().map(|k| k.data_len()).sum();
            let mut keys = EncodedRows::with_capacity(picks.len(), bytes);
            for &(p, r) in &picks {
                keys.push_row(part_keys[p].row(r));
            }
            Arc::new(keys)
        });
        let batches: Vec<&RecordBatch> = parts.iter().map(|p| &p.batch.data).collect();
        let data = match batches[0].num_columns() {
            // Rows with no columns (a global count's input): only their number.
            0 => RecordBatch::try_new_with_options(
                batches[0].schema(),
                Vec::new(),
                &RecordBatchOptions::new().with_row_count(Some(picks.len())),
            )?,
            _ => interleave_record_batch(&batches, &picks)?,
        };
        let weights: Vec<&dyn Array> = parts
            .iter()
            .map(|p| &p.batch.weights as &dyn Array)
            .collect();
        let weights = interleave(&weights, &picks)?;
        let weights = weights
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| RunnelError::internal("weights are not Int64"))?
            .clone();
        Ok(Some((ChangeBatch::new(data, weights), keys)))
    }
}

impl Partitioner {
    pub fn new(key: PartitionKey) -> Self {
        Partitioner {
            key,
            consolidator: Consolidator::default(),
        }
    }

    /// `batch` split by the worker of each row, `shards` workers: (worker, its rows), rows in
    /// their order (for `WholeRows`, equal rows as the first of them, see [`consolidate`]).
    pub fn split(&mut self, batch: ChangeBatch, shards: usize) -> Result<Vec<(usize, Routed)>> {
        let columns: Vec<ArrayRef> = match &self.key {
            PartitionKey::Worker(to) => return Ok(vec![(*to, Routed::whole(batch, None))]),
            PartitionKey::Columns(columns)
            | PartitionKey::WholeRows(columns)
            | PartitionKey::Extremes(columns, _) => columns
                .iter()
                .map(|&c| batch.data.column(c).clone())
                .collect(),
            PartitionKey::Exprs(exprs, casts) => {
                let mut columns = evaluate_all(exprs, &batch.data)?;
                for (column, to) in columns.iter_mut().zip(casts) {
                    if let Some(to) = to {
                        if column.data_type() != to {
                            *column = cast(column, to)?;
                        }
                    }
                }
                columns
            }
        };
        if columns.is_empty() {
            let to = shard_of(vnode_of(&[]), shards);
            return Ok(vec![(to, Routed::whole(batch, None))]);
        }
        let mut keys = EncodedRows::new();
        encode_rows(&[], &columns, &mut keys)?;
        let consolidated = match &self.key {
            PartitionKey::WholeRows(_) => self.consolidator.apply(&batch, &keys)?,
            PartitionKey::Extremes(_, calls) => {
                self.consolidator
                    .apply_with(&batch, &keys, |batch, keys| calls.keep(batch, keys))?
            }
            _ => None,
        };
        let (batch, keys) = consolidated.unwrap_or((batch, keys));
        let n = batch.num_rows();
        let mut rows_of: Vec<Vec<u32>> = vec![Vec::new(); shards];
        for (i, key) in keys.iter().enumerate() {
            rows_of[shard_of(vnode_of(key), shards)].push(i as u32);
        }
        let keys = Some(Arc::new(keys));
        if let Some(only) = rows_of.iter().position(|rows| rows.len() == n) {
            return Ok(vec![(only, Routed::whole(batch, keys))]);
        }
        Ok(rows_of
            .into_iter()
            .enumerate()
            .filter(|(_, rows)| !rows.is_empty())
            .map(|(shard, rows)| {
                let part = Routed {
                    batch: batch.clone(),
                    rows: Some(rows.into()),
                    keys: keys.clone(),
                };
                (shard, part)
            })
            .collect())
    }
}

/// The rows of `batch` whose `keys` (each the whole row, encoded) are equal, as one row: the
/// first of them, with their weights added up; rows whose weights cancel are left out.
/// Distinct rows keep their order of first appearance. `None` when no two rows are equal (or
/// a sum would overflow), so the caller keeps the batch as it is.
pub fn consolidate(
    batch: &ChangeBatch,
    keys: &EncodedRows,
) -> Result<Option<(ChangeBatch, EncodedRows)>> {
    let n = batch.num_rows();
    let weights = batch.weights.values();
    let (group_of, first) = group_equal_keys(keys);
    if first.len() == n {
        return Ok(None);
    }
    let mut sums = vec![0i64; first.len()];
    for (&g, &weight) in group_of.iter().zip(weights) {
        match sums[g as usize].checked_add(weight) {
            Some(sum) => sums[g as usize] = sum,
            None => return Ok(None),
        }
    }
    let (rows, sums): (Vec<u32>, Vec<i64>) = first
        .into_iter()
        .zip(sums)
        .filter(|&(_, sum)| sum != 0)
        .unzip();
    let kept = keys_at(keys, &rows);
    let data = take_record_batch(&batch.data, &UInt32Array::from(rows))?;
    Ok(Some((ChangeBatch::new(data, Int64Array::from(sums)), kept)))
}

/// The rows of `keys` grouped by equal key: per row its group (groups numbered in order of
/// first appearance), and per group the first row that has it.
pub fn group_equal_keys(keys: &EncodedRows) -> (Vec<u32>, Vec<u32>) {
    let n = keys.len();
    let hasher = hashbrown::DefaultHashBuilder::default();
    let mut index: HashTable<u32> = HashTable::with_capacity(n.min(4096));
    let (mut first, mut hashes) = (Vec::new(), Vec::new());
    let mut group_of = Vec::with_capacity(n);
    for (i, key) in keys.iter().enumerate() {
        let hash = hasher.hash_one(key);
        let found = index.find(hash, |&g| keys.row(first[g as usize] as usize) == key);
        let g = match found {
            Some(&g) => g,
            None => {
                let g = first.len() as u32;
                first.push(i as u32);
                hashes.push(hash);
                index.insert_unique(hash, g, |&g| hashes[g as usize]);
                g
            }
        };
        group_of.push(g);
    }
    (group_of, first)
}

/// The keys of `keys` at `rows`, in that order.
pub fn keys_at(keys: &EncodedRows, rows: &[u32]) -> EncodedRows {
    let bytes = rows.iter().map(|&r| keys.row(r as usize).len()).sum();
    let mut kept = EncodedRows::with_capacity(rows.len(), bytes);
    for &r in rows {
        kept.push_row(keys.row(r as usize));
    }
    kept
}

/// The keys of `columns`' rows: `given` (an exchange's, see [`Routed`]) when there are
/// some, else encoded into `scratch`. A debug build checks that the given keys are the ones
/// the operator would have encoded (the promise of [`required`]).
pub fn keys_of<'a>(
    given: Option<&'a EncodedRows>,
    columns: &[ArrayRef],
    scratch: &'a mut EncodedRows,
) -> Result<&'a EncodedRows> {
    if let Some(given) = given {
        #[cfg(debug_assertions)]
        {
            let mut own = EncodedRows::new();
            encode_rows(&[], columns, &mut own)?;
            assert!(
                own.len() == given.len() && own.iter().eq(given.iter()),
                "an exchange's keys differ from the operator's"
            );
        }
        return Ok(given);
    }
    scratch.clear();
    encode_rows(&[], columns, scratch)?;
    Ok(scratch)
}

/// The input column each expression is, when every one is a plain column of `schema`.
fn plain_columns(exprs: &[Expr], schema: &DFSchema) -> Option<Columns> {
    exprs
        .iter()
        .map(|e| match e {
            Expr::Column(c) => schema.index_of_column(c).ok(),
            _ => None,
        })
        .collect()
}

/// The key `exprs` as a partition key over `schema`, each cast to `casts` when given.
fn key_of(exprs: &[Expr], schema: &DFSchema, casts: Vec<Option<DataType>>) -> Result<PartitionKey> {
    if casts.iter().all(Option::is_none) {
        if let Some(columns) = plain_columns(exprs, schema) {
            return Ok(PartitionKey::Columns(columns));
        }
    }
    Ok(PartitionKey::Exprs(compile_all(exprs, schema)?, casts))
}

/// The partitioning `node` needs on input `port`: `None` when any will do (stateless
/// operators, an appended view's rows).
pub fn required(node: &PlanNode, port: usize) -> Result<Option<PartitionKey>> {
    let schema = |p: usize| -> Result<&DFSchema> {
        node.input_schemas
            .get(p)
            .map(|s| s.as_ref())
            .ok_or_else(|| RunnelError::internal("plan node lacks an input schema"))
    };
    let all = |p: usize| -> Result<PartitionKey> {
        Ok(PartitionKey::Columns(
            (0..schema(p)?.fields().len()).collect(),
        ))
    };
    Ok(match &node.kind {
        NodeKind::Source { .. }
        | NodeKind::Union
        | NodeKind::Project { .. }
        | NodeKind::Filter { .. } => None,
        // Waiting rows are kept under the vnode of the whole row (unless the input has only
        // inserts: see [`exchanges`]).
        NodeKind::TemporalFilter { .. } => Some(all(port)?),
        NodeKind::Aggregate { group_exprs, .. } => {
            let s = schema(0)?;
            Some(key_of(group_exprs, s, vec![None; group_exprs.len()])?)
        }
        NodeKind::Join {
            left_keys,
            right_keys,
            ..
        } => {
            let (left, right) = (schema(0)?, schema(1)?);
            // The join encodes both sides' keys in the type they compare in.
            let mut casts = Vec::with_capacity(left_keys.len());
            for (l, r) in left_keys.iter().zip(right_keys) {
                let (lt, rt) = (l.get_type(left)?, r.get_type(right)?);
                let to = match lt == rt {
                    true => lt,
                    false => datafusion::logical_expr::type_coercion::binary::comparison_coercion(
                        &lt, &rt,
                    )
                    .ok_or_else(|| {
                        RunnelError::not_implemented(format!("join keys of types {lt} and {rt}"))
                    })?,
                };
                casts.push(to);
            }
            let (keys, s) = match port {
                0 => (left_keys, left),
                _ => (right_keys, right),
            };
            let casts = keys
                .iter()
                .zip(casts)
                .map(|(k, to)| Ok((k.get_type(s)? != to).then_some(to)))
                .collect::<Result<Vec<_>>>()?;
            Some(key_of(keys, s, casts)?)
        }
        NodeKind::Window { partition_by, .. } => Some(key_of(
            partition_by,
            schema(0)?,
            vec![None; partition_by.len()],
        )?),
        NodeKind::SessionWindow { keys, .. } => {
            Some(key_of(keys, schema(0)?, vec![None; keys.len()])?)
        }
        NodeKind::AsofJoin {
            left_keys,
            right_keys,
            ..
        } => {
            let keys = match port {
                0 => left_keys,
                _ => right_keys,
            };
            Some(key_of(keys, schema(port)?, vec![None; keys.len()])?)
        }
        NodeKind::Materialize { key, appended, .. } => match (key, appended) {
            (Some(key), _) => Some(PartitionKey::Columns(key.clone())),
            (None, true) => None,
            (None, false) => Some(all(0)?),
        },
    })
}

/// How `node`'s output is partitioned, given how each input arrives at it (`inputs[port]`,
/// after any exchange; `None`: not by columns known here). A keyed operator's input always
/// arrives partitioned by its key, so its output is partitioned by the output columns that
/// key is, when it is plain columns.
pub fn provided(node: &PlanNode, inputs: &[Option<Columns>]) -> Option<Columns> {
    let input = inputs.first().cloned().flatten();
    match &node.kind {
        NodeKind::Source { .. } | NodeKind::Union => None,
        NodeKind::Filter { .. } => input,
        // Whole rows when an exchange sent them here, else as they came.
        NodeKind::TemporalFilter { .. } => input,
        // The group columns come first in the output, encoded as the group key was.
        NodeKind::Aggregate { group_exprs, .. } => Some((0..group_exprs.len()).collect()),
        // The input's columns come first in the output.
        NodeKind::Window { partition_by, .. } => {
            plain_columns(partition_by, node.input_schemas.first()?)
        }
        NodeKind::Materialize { key, appended, .. } => match (key, appended) {
            (Some(key), _) => Some(key.clone()),
            (None, true) => input,
            (None, false) => Some((0..node.input_schemas.first()?.fields().len()).collect()),
        },
        NodeKind::Project { exprs } => {
            let input = input?;
            let schema = node.input_schemas.first()?;
            let kept: Vec<Option<usize>> = exprs
                .iter()
                .map(|e| match e {
                    Expr::Column(c) => schema.index_of_column(c).ok(),
                    _ => None,
                })
                .collect();
            input
                .iter()
                .map(|c| kept.iter().position(|k| *k == Some(*c)))
                .collect()
        }
        NodeKind::Join { .. } | NodeKind::AsofJoin { .. } | NodeKind::SessionWindow { .. } => None,
    }
}

/// Where exchanges go in a view's plan run by `shards` workers: per node and input port, the
/// partition key to exchange by, `None` where the input stays on its worker. With one worker,
/// none.
pub fn exchanges(plan: &StreamPlan, shards: usize) -> Result<Vec<Vec<Option<PartitionKey>>>> {
    let mut out: Vec<Vec<Option<PartitionKey>>> = Vec::with_capacity(plan.nodes.len());
    let mut partitioned: Vec<Option<Columns>> = Vec::with_capacity(plan.nodes.len());
    for node in &plan.nodes {
        if shards == 1 {
            out.push(vec![None; node.inputs.len()]);
            partitioned.push(None);
            continue;
        }
        let mut ports = Vec::with_capacity(node.inputs.len());
        let mut arriving = Vec::with_capacity(node.inputs.len());
        for (port, &input) in node.inputs.iter().enumerate() {
            let have = partitioned.get(input).cloned().flatten();
            // A temporal filter over inserts only needs its rows nowhere in particular: it
            // never has to meet a row's retraction, and each worker keeps its rows under a
            // vnode it owns (`TemporalFilterOp`), so exchanging whole rows would only cost.
            let inserts_only = plan.nodes.get(input).is_some_and(|n| n.append_only);
            if matches!(node.kind, NodeKind::TemporalFilter { .. }) && inserts_only {
                ports.push(None);
                arriving.push(have);
                continue;
            }
            match required(node, port)? {
                Some(PartitionKey::Columns(columns)) if have.as_ref() == Some(&columns) => {
                    ports.push(None);
                    arriving.push(have);
                }
                Some(PartitionKey::Columns(columns)) => {
                    arriving.push(Some(columns.clone()));
                    ports.push(Some(aggregate_key(node, columns, inserts_only)?));
                }
                Some(key) => {
                    ports.push(Some(key));
                    arriving.push(None);
                }
                None => {
                    ports.push(None);
                    arriving.push(have);
                }
            }
        }
        partitioned.push(provided(node, &arriving));
        out.push(ports);
    }
    Ok(out)
}

/// The key of an exchange by `columns` before `node`: for an aggregate, one that also thins
/// the rows where it can (whole rows added up, or only the extremes of `min`/`max` over
/// `inserts_only` input).
fn aggregate_key(node: &PlanNode, columns: Columns, inserts_only: bool) -> Result<PartitionKey> {
    let (
        NodeKind::Aggregate {
            group_exprs,
            aggregates,
            ..
        },
        Some(schema),
    ) = (&node.kind, node.input_schemas.first())
    else {
        return Ok(PartitionKey::Columns(columns));
    };
    if groups_are_whole_rows(group_exprs, schema) {
        return Ok(PartitionKey::WholeRows(columns));
    }
    if inserts_only && !group_exprs.is_empty() {
        if let Some(calls) = ExtremeCalls::of(aggregates, schema)? {
            return Ok(PartitionKey::Extremes(columns, calls));
        }
    }
    Ok(PartitionKey::Columns(columns))
}

/// A shared handle on a plan's exchanges (built once per view, used by every worker).
pub type Exchanges = Arc<Vec<Vec<Option<PartitionKey>>>>;

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    fn batch(values: &[i64], weights: &[i64]) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let column: ArrayRef = Arc::new(Int64Array::from(values.to_vec()));
        let data = RecordBatch::try_new(schema, vec![column]).expect("a batch");
        ChangeBatch::new(data, Int64Array::from(weights.to_vec()))
    }

    fn keys_of_values(values: &[i64]) -> Arc<EncodedRows> {
        let column: ArrayRef = Arc::new(Int64Array::from(values.to_vec()));
        let mut keys = EncodedRows::new();
        encode_rows(&[], &[column], &mut keys).expect("encoded");
        Arc::new(keys)
    }

    fn values_of(batch: &ChangeBatch) -> Vec<i64> {
        let column = batch.data.column(0).as_any().downcast_ref::<Int64Array>();
        column.expect("int64").values().to_vec()
    }

    /// Equal rows come out as the first of them with their weights added up, distinct rows
    /// in order of first appearance, cancelled rows left out, each with its key.
    #[test]
    fn consolidate_adds_up_equal_rows() {
        let values = [5, 7, 5, 9, 7, 5, 3, 9];
        let weights = [1, 1, 2, 1, -1, 1, -1, -1];
        let input = batch(&values, &weights);
        let keys = keys_of_values(&values);
        let (out, out_keys) = consolidate(&input, &keys)
            .expect("ok")
            .expect("consolidated");
        // 5: 1 + 2 + 1; 7: 1 - 1 (cancelled); 9: 1 - 1 (cancelled); 3: -1.
        assert_eq!(values_of(&out), vec![5, 3]);
        assert_eq!(out.weights.values().to_vec(), vec![4, -1]);
        let expected = keys_of_values(&[5, 3]);
        assert!(out_keys.iter().eq(expected.iter()));
        // No two rows equal: nothing to do.
        let distinct = batch(&[1, 2, 3], &[1, 1, -1]);
        assert!(consolidate(&distinct, &keys_of_values(&[1, 2, 3]))
            .expect("ok")
            .is_none());
        // A sum past i64 leaves the batch as it is.
        let huge = batch(&[1, 1], &[i64::MAX, 1]);
        assert!(consolidate(&huge, &keys_of_values(&[1, 1]))
            .expect("ok")
            .is_none());
    }

    /// A whole-row exchange sends each distinct row once, to the worker of its key, and stops
    /// trying on batches where few rows are equal.
    #[test]
    fn whole_row_split_sends_distinct_rows() {
        let mut partitioner = Partitioner::new(PartitionKey::WholeRows(vec![0]));
        let values: Vec<i64> = (0..400).map(|i| i % 40).collect();
        let parts = partitioner
            .split(batch(&values, &vec![1; 400]), 2)
            .expect("split");
        let mut seen: Vec<(i64, i64)> = Vec::new();
        for (shard, part) in parts {
            let (gathered, keys) = Routed::gather(vec![part]).expect("ok").expect("rows");
            let keys = keys.expect("keys");
            for (i, value) in values_of(&gathered).into_iter().enumerate() {
                assert_eq!(shard_of(vnode_of(keys.row(i)), 2), shard);
                seen.push((value, gathered.weights.value(i)));
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..40).map(|v| (v, 10)).collect::<Vec<_>>());
        // All distinct: routed as they are, and the next batches are not looked at.
        let distinct: Vec<i64> = (0..400).collect();
        let rows = |parts: Vec<(usize, Routed)>| -> usize {
            parts
                .into_iter()
                .map(|(_, p)| p.rows.map_or(400, |r| r.len()))
                .sum()
        };
        let split = partitioner
            .split(batch(&distinct, &vec![1; 400]), 2)
            .expect("split");
        assert_eq!(rows(split), 400);
        assert_eq!(partitioner.consolidator.skip, CONSOLIDATE_SKIP_BATCHES);
        let split = partitioner
            .split(batch(&values, &vec![1; 400]), 2)
            .expect("split");
        assert_eq!(rows(split), 400);
    }

    /// A round's parts, whole batches and selections of shared ones, come out as one batch of
    /// their rows in order, each with its weight and its key.
    #[test]
    fn gather_joins_parts_in_order_with_weights_and_keys() {
        let first = batch(&[10, 11, 12, 13], &[1, -1, 2, 1]);
        let second = batch(&[20, 21], &[1, 1]);
        let parts = vec![
            Routed {
                batch: first.clone(),
                rows: Some(vec![3, 1].into()),
                keys: Some(keys_of_values(&[10, 11, 12, 13])),
            },
            Routed::whole(second, Some(keys_of_values(&[20, 21]))),
            Routed {
                batch: first,
                rows: Some(vec![0].into()),
                keys: Some(keys_of_values(&[10, 11, 12, 13])),
            },
        ];
        let (gathered, keys) = Routed::gather(parts).expect("gathered").expect("rows");
        let values = gathered
            .data
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("i64");
        assert_eq!(values.values(), &[13, 11, 20, 21, 10]);
        assert_eq!(gathered.weights.values(), &[1, -1, 1, 1, 1]);
        let expected = keys_of_values(&[13, 11, 20, 21, 10]);
        let keys = keys.expect("every part had keys");
        assert!(keys.iter().eq(expected.iter()));
        // A part without keys: the rows still, the keys not.
        let parts = vec![
            Routed::whole(batch(&[1], &[1]), None),
            Routed::whole(batch(&[2], &[1]), Some(keys_of_values(&[2]))),
        ];
        let (gathered, keys) = Routed::gather(parts).expect("gathered").expect("rows");
        assert_eq!(gathered.num_rows(), 2);
        assert!(keys.is_none());
        assert!(Routed::gather(Vec::new()).expect("nothing").is_none());
    }

    /// Rows without columns (what a global `count(*)` reads) keep their number.
    #[test]
    fn gather_counts_rows_without_columns() {
        let empty = |rows: usize| {
            let options = RecordBatchOptions::new().with_row_count(Some(rows));
            let data =
                RecordBatch::try_new_with_options(Arc::new(Schema::empty()), Vec::new(), &options)
                    .expect("a batch");
            ChangeBatch::new(data, Int64Array::from(vec![1; rows]))
        };
        let parts = vec![Routed::whole(empty(3), None), Routed::whole(empty(2), None)];
        let (gathered, _) = Routed::gather(parts).expect("gathered").expect("rows");
        assert_eq!(gathered.num_rows(), 5);
        assert_eq!(gathered.weights.len(), 5);
    }
}
