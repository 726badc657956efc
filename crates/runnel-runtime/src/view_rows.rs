//! How a materialized view's rows are laid out in the store, under `keys::view_prefix(view)`.
//! The materialize operator writes them; serving and views over views read them back here.
//!
//! Three layouts, fixed when the view is created (the catalog records which):
//! - **keyed**, when the plan proves that some output columns identify a row (the group
//!   columns of an aggregate): key = the vnode of the encoded key columns, then the encoded
//!   key columns; value = the encoded remaining columns in schema order. An update is one
//!   put, with no read of the old row; a lookup of one key is one read ([`row_store_key`]).
//! - **appended**, when the view has no key and only ever gets inserts (a projection or
//!   filter of a stream): key = a block number (`u64` big-endian), value = an Arrow IPC
//!   batch of the rows appended in one checkpoint (at most [`APPEND_BLOCK_ROWS`]). Writing a
//!   row costs a copy into its block instead of a store entry of its own.
//! - **counted**, otherwise: key = the vnode of the encoded whole row, then the encoded
//!   row; value = its multiplicity (`i64` little-endian), so duplicate rows are stored once.
//!
//! The vnode (`runnel_state::vnode`) comes first so that a view's rows split by vnode as its
//! operators' state does.

use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use runnel_common::{Result, RunnelError};
use runnel_state::codec::{decode_rows, encode_rows, EncodedRows};
use runnel_state::{KeyValue, Store};

/// Rows per batch when reading a view out of the store.
pub const READ_BATCH_ROWS: usize = 8192;

/// Most rows in one block of an appended view.
pub const APPEND_BLOCK_ROWS: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewLayout {
    /// One row per key: `key` and `value` are the schema's column indices in each part.
    Keyed { key: Vec<usize>, value: Vec<usize> },
    /// A multiset of whole rows with counts.
    Counted,
    /// Blocks of appended rows.
    Appended,
}

impl ViewLayout {
    pub fn new(key: Option<&[usize]>, appended: bool, num_columns: usize) -> Self {
        match key {
            Some(key) => ViewLayout::Keyed {
                key: key.to_vec(),
                value: (0..num_columns).filter(|c| !key.contains(c)).collect(),
            },
            None if appended => ViewLayout::Appended,
            None => ViewLayout::Counted,
        }
    }
}

/// The bytes of the vnode between a keyed or counted view's prefix and its row key.
pub const VNODE_BYTES: usize = 2;

/// The store key of a keyed or counted view's row (`row_key`: the encoded key columns, or the
/// encoded row), in `out`.
pub fn row_store_key(prefix: &[u8], row_key: &[u8], out: &mut Vec<u8>) {
    use runnel_state::vnode::{vnode_key, vnode_of};
    vnode_key(prefix, vnode_of(row_key), row_key, out);
}

/// The store key of block `block` of an appended view under `prefix`.
pub fn block_key(prefix: &[u8], block: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&block.to_be_bytes());
    key
}

/// A stored block of an appended view, with the view's schema.
pub fn decode_block(schema: &SchemaRef, value: &[u8]) -> Result<RecordBatch> {
    let batch = runnel_state::ipc::decode_batch(value)?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        batch.columns().to_vec(),
        &options,
    )?)
}

/// Encodes rows `0..num_rows` of `columns` (selected by `indices`) into `out`, one row each,
/// also when no column is selected (then every row is empty).
pub fn encode_columns(
    columns: &[ArrayRef],
    indices: &[usize],
    num_rows: usize,
    out: &mut EncodedRows,
) -> Result<()> {
    out.clear();
    if indices.is_empty() {
        for _ in 0..num_rows {
            out.push_row(&[]);
        }
        return Ok(());
    }
    let selected: Vec<ArrayRef> = indices.iter().map(|&i| columns[i].clone()).collect();
    encode_rows(&[], &selected, out)?;
    Ok(())
}

/// A stored count or weight (i64, little endian): view row counts and the waiting rows of
/// temporal filters, windows and ASOF joins.
pub fn decode_count(value: &[u8]) -> Result<i64> {
    let bytes: [u8; 8] = value
        .try_into()
        .map_err(|_| RunnelError::internal("stored count is not 8 bytes"))?;
    Ok(i64::from_le_bytes(bytes))
}

/// Writes a stored weight (see [`decode_count`]), or deletes the key when there is none left.
pub fn write_weight(batch: &mut runnel_state::WriteBatch, key: &[u8], weight: Option<i64>) {
    match weight {
        Some(w) if w != 0 => batch.put(key, w.to_le_bytes()),
        _ => batch.delete(key),
    }
}

/// Decodes stored rows (keys without the view prefix, and values) into one batch.
pub fn decode_view_rows<'a>(
    layout: &ViewLayout,
    schema: &SchemaRef,
    rows: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])> + Clone,
) -> Result<RecordBatch> {
    let types: Vec<DataType> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    let n = rows.len();
    let options = RecordBatchOptions::new().with_row_count(Some(n));
    match layout {
        ViewLayout::Keyed { key, value } => {
            let pick = |indices: &[usize]| indices.iter().map(|&i| types[i].clone()).collect();
            let key_types: Vec<DataType> = pick(key);
            let value_types: Vec<DataType> = pick(value);
            let key_columns = decode_rows(rows.clone().map(|(k, _)| k), &key_types)?;
            let value_columns = decode_rows(rows.map(|(_, v)| v), &value_types)?;
            let mut columns: Vec<Option<ArrayRef>> = vec![None; types.len()];
            for (&i, column) in key.iter().zip(key_columns) {
                columns[i] = Some(column);
            }
            for (&i, column) in value.iter().zip(value_columns) {
                columns[i] = Some(column);
            }
            let columns = columns
                .into_iter()
                .map(|c| c.ok_or_else(|| RunnelError::internal("view layout misses a column")))
                .collect::<Result<Vec<_>>>()?;
            Ok(RecordBatch::try_new_with_options(
                schema.clone(),
                columns,
                &options,
            )?)
        }
        ViewLayout::Appended => Err(RunnelError::internal(
            "an appended view's blocks are decoded with decode_block",
        )),
        ViewLayout::Counted => {
            let columns = decode_rows(rows.clone().map(|(k, _)| k), &types)?;
            let batch = RecordBatch::try_new_with_options(schema.clone(), columns, &options)?;
            // Rows present n times are stored once with count n.
            let mut repeat: Vec<u32> = Vec::with_capacity(n);
            let mut duplicated = false;
            for (i, (_, v)) in rows.enumerate() {
                let count = decode_count(v)?;
                duplicated |= count != 1;
                for _ in 0..count.max(0) {
                    repeat.push(i as u32);
                }
            }
            if !duplicated {
                return Ok(batch);
            }
            let idx = UInt32Array::from(repeat);
            let columns = batch
                .columns()
                .iter()
                .map(|c| take(c.as_ref(), &idx, None))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let options = RecordBatchOptions::new().with_row_count(Some(idx.len()));
            Ok(RecordBatch::try_new_with_options(
                schema.clone(),
                columns,
                &options,
            )?)
        }
    }
}

/// Decodes stored key/value pairs (full keys, view prefix of `prefix_len` bytes and the vnode
/// included) in batches of at most [`READ_BATCH_ROWS`] rows.
pub fn decode_stored(
    layout: &ViewLayout,
    schema: &SchemaRef,
    prefix_len: usize,
    stored: &[KeyValue],
) -> Result<Vec<RecordBatch>> {
    if *layout == ViewLayout::Appended {
        return stored
            .iter()
            .map(|(_, v)| decode_block(schema, v))
            .collect();
    }
    let skip = prefix_len + VNODE_BYTES;
    stored
        .chunks(READ_BATCH_ROWS)
        .map(|chunk| {
            let rows = chunk
                .iter()
                .map(|(k, v)| Ok((k.get(skip..).ok_or_else(short_key)?, &v[..])))
                .collect::<Result<Vec<_>>>()?;
            decode_view_rows(layout, schema, rows.into_iter())
        })
        .collect()
}

fn short_key() -> RunnelError {
    RunnelError::internal("a view row's key is shorter than its prefix and vnode")
}

/// The committed contents of a view.
pub fn read_view(
    store: &Store,
    prefix: &[u8],
    layout: &ViewLayout,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let stored = store.scan_prefix(prefix)?;
    decode_stored(layout, schema, prefix.len(), &stored)
}
