//! Sink: hands every change of its input (a view or a stream) to a [`SinkWriter`], and makes
//! each checkpoint wait until the writer has delivered what it was given, so a committed
//! checkpoint never covers a change that did not leave Runnel (at-least-once delivery).

use std::any::Any;

use runnel_common::{ChangeBatch, Result};

use crate::operator::Operator;

/// Where a sink's changes go (a Kafka topic; implemented outside the runtime).
pub trait SinkWriter: Send {
    /// Queues one change batch for delivery.
    fn write(&mut self, batch: &ChangeBatch) -> Result<()>;
    /// Returns once everything queued is delivered; an error postpones the checkpoint.
    fn flush(&mut self) -> Result<()>;
}

pub struct SinkOp {
    writer: Box<dyn SinkWriter>,
}

impl SinkOp {
    pub fn new(writer: Box<dyn SinkWriter>) -> Self {
        SinkOp { writer }
    }
}

impl Operator for SinkOp {
    fn process(
        &mut self,
        _port: usize,
        batch: ChangeBatch,
        _out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        self.writer.write(&batch)
    }

    fn prepare_checkpoint(&mut self) -> Result<()> {
        self.writer.flush()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
