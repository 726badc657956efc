//! The operator contract. The dataflow calls, for each operator:
//!
//! 1. construction, which loads the operator's persisted state (if any) from the store;
//! 2. [`Operator::on_start`] once, `fresh` when the view is being created (not restored);
//! 3. [`Operator::process`] for every change batch arriving on one of its input ports, in the
//!    order the batches were produced upstream;
//! 4. [`Operator::on_watermark`] when the event-time clock of its inputs advances (the
//!    minimum over its timed inputs; never backwards), after every batch produced before
//!    that point of the sources' logs;
//! 5. at every checkpoint, [`Operator::checkpoint`], adding its dirty state to the one atomic
//!    write that also records the source positions (a sink adds its outbox entry).

use std::any::Any;

use runnel_common::{ChangeBatch, Result};
use runnel_state::codec::EncodedRows;
use runnel_state::WriteBatch;

pub trait Operator: Send {
    /// Handles one input batch on `port`, appending any output to `out`.
    fn process(
        &mut self,
        port: usize,
        batch: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()>;

    /// [`Operator::process`] of a batch an exchange routed here, with its rows' partition
    /// keys already encoded (`keys.row(i)` is row `i`'s key, computed as
    /// [`crate::exchange::required`] says this operator computes it on `port`): an operator
    /// that keys its state by them takes them instead of encoding them again.
    fn process_keyed(
        &mut self,
        port: usize,
        batch: ChangeBatch,
        _keys: &EncodedRows,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        self.process(port, batch, out)
    }

    /// Output owed before any input (the one row of a global aggregate over nothing).
    fn on_start(&mut self, _fresh: bool, _out: &mut Vec<ChangeBatch>) -> Result<()> {
        Ok(())
    }

    /// The event-time clock reaching this operator moved to `watermark` (microseconds since
    /// the epoch). Output produced here (expired rows, closed windows) goes downstream
    /// before the watermark does. The call must be idempotent: after a restart the clock
    /// is replayed from the checkpoint.
    fn on_watermark(&mut self, _watermark: i64, _out: &mut Vec<ChangeBatch>) -> Result<()> {
        Ok(())
    }

    /// Adds the operator's changed state to the checkpoint.
    fn checkpoint(&mut self, _batch: &mut WriteBatch) -> Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &dyn Any;
}
