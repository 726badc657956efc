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

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::compute::{cast, take, take_record_batch};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, ExprSchemable};
use runnel_common::{ChangeBatch, Result, RunnelError};
use runnel_plan::{NodeKind, PlanNode, StreamPlan};
use runnel_state::codec::{encode_rows, EncodedRows};
use runnel_state::vnode::{shard_of, vnode_of};

use crate::expr::{compile_all, evaluate_all, CompiledExpr};

/// How a stream of rows is partitioned between workers: by the vnode of the encoded values
/// of these columns (of the node's output). The whole row is every column.
pub type Columns = Vec<usize>;

/// What decides the worker of a row at an exchange.
#[derive(Clone)]
pub enum PartitionKey {
    /// Columns of the input, encoded as they are.
    Columns(Columns),
    /// Expressions over the input, each cast to its type when one is given (a join's keys
    /// are cast to the type both sides compare in).
    Exprs(Vec<CompiledExpr>, Vec<Option<DataType>>),
    /// Every row to one worker (a sink's, on worker 0).
    Worker(usize),
}

/// Routes rows to workers by a [`PartitionKey`].
pub struct Partitioner {
    key: PartitionKey,
    scratch: EncodedRows,
}

/// Rows bound for one worker, with their partition keys encoded when the key has columns:
/// `keys.row(i)` is row `i`'s key exactly as the operator after the exchange encodes it, so it
/// takes them ([`crate::operator::Operator::process_keyed`]) instead of encoding them again.
pub struct Routed {
    pub batch: ChangeBatch,
    pub keys: Option<EncodedRows>,
}

impl Routed {
    /// `parts` as one batch (none when there are none), with their keys when every part has
    /// them.
    pub fn concat(parts: Vec<Routed>) -> Result<Option<Routed>> {
        if parts.len() <= 1 {
            return Ok(parts.into_iter().next());
        }
        let schema = parts[0].batch.schema();
        let mut batches: Vec<ChangeBatch> = Vec::with_capacity(parts.len());
        let mut keys = parts.iter().all(|p| p.keys.is_some()).then(|| {
            let rows = parts.iter().map(|p| p.batch.num_rows()).sum();
            let bytes = parts
                .iter()
                .filter_map(|p| p.keys.as_ref())
                .map(EncodedRows::data_len)
                .sum();
            EncodedRows::with_capacity(rows, bytes)
        });
        for part in parts {
            if let (Some(all), Some(part_keys)) = (keys.as_mut(), part.keys.as_ref()) {
                all.append(part_keys);
            }
            batches.push(part.batch);
        }
        let batch = ChangeBatch::concat(&schema, &batches)?;
        Ok(Some(Routed { batch, keys }))
    }
}

impl Partitioner {
    pub fn new(key: PartitionKey) -> Self {
        Partitioner {
            key,
            scratch: EncodedRows::new(),
        }
    }

    /// `batch` split by the worker of each row, `shards` workers: (worker, its rows), rows in
    /// their order.
    pub fn split(&mut self, batch: ChangeBatch, shards: usize) -> Result<Vec<(usize, Routed)>> {
        let n = batch.num_rows();
        let columns: Vec<ArrayRef> = match &self.key {
            PartitionKey::Worker(to) => return Ok(vec![(*to, Routed { batch, keys: None })]),
            PartitionKey::Columns(columns) => columns
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
            return Ok(vec![(to, Routed { batch, keys: None })]);
        }
        let mut keys = std::mem::take(&mut self.scratch);
        keys.clear();
        encode_rows(&[], &columns, &mut keys)?;
        let mut rows_of: Vec<Vec<u32>> = vec![Vec::new(); shards];
        for (i, key) in keys.iter().enumerate() {
            rows_of[shard_of(vnode_of(key), shards)].push(i as u32);
        }
        if let Some(only) = rows_of.iter().position(|rows| rows.len() == n) {
            let keys = Some(keys);
            return Ok(vec![(only, Routed { batch, keys })]);
        }
        let mut parts = Vec::new();
        for (shard, rows) in rows_of.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let bytes = (keys.data_len() * rows.len()).div_ceil(n);
            let mut part_keys = EncodedRows::with_capacity(rows.len(), bytes);
            for &row in &rows {
                part_keys.push_row(keys.row(row as usize));
            }
            let rows = UInt32Array::from(rows);
            let data = take_record_batch(&batch.data, &rows)?;
            let weights = take(&batch.weights, &rows, None)?;
            let weights = weights
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .ok_or_else(|| RunnelError::internal("weights are not Int64"))?
                .clone();
            let batch = ChangeBatch::new(data, weights);
            parts.push((
                shard,
                Routed {
                    batch,
                    keys: Some(part_keys),
                },
            ));
        }
        self.scratch = keys;
        Ok(parts)
    }
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
                    ports.push(Some(PartitionKey::Columns(columns)));
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

/// A shared handle on a plan's exchanges (built once per view, used by every worker).
pub type Exchanges = Arc<Vec<Vec<Option<PartitionKey>>>>;
