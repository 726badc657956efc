//! Upserts into a table (a Kafka table's records): the latest value per primary key wins and a
//! delete removes the key. Reads the current rows with one multi-get, then appends the
//! resulting `-old / +new` changes to the table's log and updates its rows in one atomic write
//! (with whatever `extra` writes the caller adds, such as the Kafka offsets reached).

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use hashbrown::HashMap;
use runnel_common::{ChangeBatch, Result};
use runnel_connectors::formats::take_rows;
use runnel_sql::CatalogEntry;
use runnel_state::codec::{encode_rows, EncodedRows};
use runnel_state::{keys, WriteBatch};

use crate::serving::decode_table_rows;
use crate::shared::Shared;
use crate::writer::LockedWriter;

/// One record's effect, in record order.
#[derive(Debug, Clone, Copy)]
pub enum TableOp {
    /// Row `n` of the upserted rows becomes its key's row.
    Upsert(u32),
    /// The key in row `n` of the delete keys is removed.
    Delete(u32),
}

/// Applies `ops` to `entry`'s rows: `rows` holds full rows (the table's schema), `delete_keys`
/// the primary-key columns of deleted keys.
pub fn upsert(
    shared: &Arc<Shared>,
    entry: &CatalogEntry,
    locked: &mut LockedWriter<'_>,
    rows: &RecordBatch,
    delete_keys: &RecordBatch,
    ops: &[TableOp],
    mut extra: WriteBatch,
) -> Result<()> {
    let prefix = keys::table_prefix(entry.id);
    let pk: Vec<_> = entry
        .primary_key
        .iter()
        .map(|&i| rows.column(i).clone())
        .collect();
    let mut upsert_keys = EncodedRows::new();
    encode_rows(&prefix, &pk, &mut upsert_keys)?;
    let mut values = EncodedRows::new();
    encode_rows(&[], rows.columns(), &mut values)?;
    let mut deleted = EncodedRows::new();
    encode_rows(&prefix, delete_keys.columns(), &mut deleted)?;

    // The last op per key decides; `order` keeps first-seen order for a deterministic log.
    let mut last: HashMap<&[u8], Option<u32>> = HashMap::with_capacity(ops.len());
    let mut order: Vec<&[u8]> = Vec::with_capacity(ops.len());
    for op in ops {
        let (key, value) = match *op {
            TableOp::Upsert(r) => (upsert_keys.row(r as usize), Some(r)),
            TableOp::Delete(d) => (deleted.row(d as usize), None),
        };
        if last.insert(key, value).is_none() {
            order.push(key);
        }
    }
    let existing = shared.store.multi_get(&order)?;
    let mut old_rows: Vec<Vec<u8>> = Vec::new();
    let mut new_rows: Vec<u32> = Vec::new();
    for (key, old) in order.iter().zip(existing) {
        match (old, last[key]) {
            (Some(old), Some(r)) if old.as_slice() == values.row(r as usize) => {}
            (old, Some(r)) => {
                if let Some(old) = old {
                    old_rows.push(old);
                }
                extra.put(key, values.row(r as usize));
                new_rows.push(r);
            }
            (Some(old), None) => {
                old_rows.push(old);
                extra.delete(key);
            }
            (None, None) => {}
        }
    }
    let old = decode_table_rows(&entry.schema, old_rows.iter().map(Vec::as_slice))?;
    let new = take_rows(rows, &new_rows)?;
    let changes = [ChangeBatch::uniform(old, -1), ChangeBatch::inserts(new)];
    locked.commit(&shared.store, &changes, extra)
}
