//! Sink: appends every change of its input (a view, stream or table) to the sink's outbox, a
//! log in the store written with each checkpoint (`keys::log_entry(sink, seq)`, one entry per
//! checkpoint with changes). A delivery thread outside the dataflow sends the outbox on from
//! the sink's own position (`runnel::sink_delivery`), so a sink whose destination is down never
//! holds back a checkpoint, and every change a checkpoint covers is in the outbox exactly once
//! (after a crash, the changes after the last checkpoint are computed and appended again, as
//! everything else is).

use std::any::Any;

use runnel_common::{ChangeBatch, Result};
use runnel_plan::ObjectId;
use runnel_state::{ipc, keys, WriteBatch};

use crate::operator::Operator;

pub struct SinkOp {
    sink: ObjectId,
    /// The sequence number of the next outbox entry.
    next_seq: u64,
    /// Changes since the last checkpoint.
    pending: Vec<ChangeBatch>,
}

impl SinkOp {
    /// `next_seq` follows every entry already in the outbox or delivered.
    pub fn new(sink: ObjectId, next_seq: u64) -> Self {
        SinkOp {
            sink,
            next_seq,
            pending: Vec::new(),
        }
    }
}

impl Operator for SinkOp {
    fn process(
        &mut self,
        _port: usize,
        batch: ChangeBatch,
        _out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        if !batch.is_empty() {
            self.pending.push(batch);
        }
        Ok(())
    }

    fn checkpoint(&mut self, batch: &mut WriteBatch) -> Result<()> {
        let Some(first) = self.pending.first() else {
            return Ok(());
        };
        let changes = ChangeBatch::concat(&first.schema(), &self.pending)?;
        batch.put(
            keys::log_entry(self.sink, self.next_seq),
            ipc::encode_batch(&changes.to_stored()?)?,
        );
        self.next_seq += 1;
        self.pending.clear();
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn a_checkpoint_puts_its_changes_in_one_outbox_entry_and_nothing_without_changes() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let rows = |v: Vec<i64>| {
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(v))]).unwrap()
        };
        let mut op = SinkOp::new(7, 3);
        let mut out = Vec::new();
        op.process(0, ChangeBatch::inserts(rows(vec![1, 2])), &mut out)
            .unwrap();
        op.process(0, ChangeBatch::uniform(rows(vec![1]), -1), &mut out)
            .unwrap();
        let mut batch = WriteBatch::default();
        op.checkpoint(&mut batch).unwrap();
        assert_eq!(batch.len(), 1);
        let mut empty = WriteBatch::default();
        op.checkpoint(&mut empty).unwrap();
        assert!(empty.is_empty());
        assert_eq!(op.next_seq, 4);
        assert!(out.is_empty());
    }
}
