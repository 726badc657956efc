//! Subscriptions to a relation's changes (SUBSCRIBE).
//!
//! A view's materialize step and each source log the dataflow reads keep a [`ChangeTap`]:
//! while it has subscribers, it records every change batch the view applies (or the dataflow
//! reads from the log), and when a checkpoint commits, it consolidates them (a row inserted
//! and deleted within the checkpoint cancels out) and hands them to each subscriber as that
//! checkpoint's changes, followed by a [`SubscriptionEvent::Checkpoint`]. A subscriber is a
//! bounded channel: the dataflow never waits for one. One that has [`SUBSCRIBER_BUFFER`]
//! events unread gets [`SubscriptionEvent::Ended`] and is dropped, so a slow client costs the
//! dataflow at most that much memory and no time.
//!
//! A subscriber's snapshot is taken when it is added and already holds the changes recorded
//! before (a view's snapshot is its contents with pending changes; a source's is its log up to
//! the position read), so each subscriber only receives the changes recorded after it joined.

use std::collections::HashMap;

use datafusion::arrow::array::{Int64Array, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::row::{RowConverter, SortField};
use runnel_common::{ChangeBatch, Result, RunnelError};
use tokio::sync::mpsc;

/// Events buffered per subscriber before it is ended as too slow: with one checkpoint a
/// second, about eight minutes of checkpoints (each one or two events).
pub const SUBSCRIBER_BUFFER: usize = 1024;

/// What a subscriber receives.
#[derive(Debug)]
pub enum SubscriptionEvent {
    /// The relation's changes at a checkpoint (or, first, a view's snapshot).
    Changes {
        checkpoint: u64,
        changes: ChangeBatch,
    },
    /// A checkpoint committed; its changes, if any, came before.
    Checkpoint(u64),
    /// The subscription ended.
    Ended(EndReason),
}

/// Why a subscription ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The subscriber left this many events unread.
    TooSlow { unread: usize },
    /// The relation was dropped.
    RelationDropped,
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndReason::TooSlow { unread } => write!(
                f,
                "subscriber too slow: it left {unread} events unread and was disconnected; \
                 read the subscription faster or subscribe again"
            ),
            EndReason::RelationDropped => f.write_str("the relation subscribed to was dropped"),
        }
    }
}

/// A new subscription to a view: the checkpoint it starts at, the view's contents then (when
/// asked for), and the events after it.
pub struct SubscriptionStart {
    pub checkpoint: u64,
    pub snapshot: Option<ChangeBatch>,
    pub events: mpsc::Receiver<SubscriptionEvent>,
}

/// A new subscription to a stream or table: the checkpoint its snapshot belongs to, the log
/// position the snapshot ends at (the events hold the entries from there on), and the events.
pub struct SourceSubscriptionStart {
    pub checkpoint: u64,
    pub position: u64,
    pub events: mpsc::Receiver<SubscriptionEvent>,
}

/// One subscriber of a tap.
struct Subscriber {
    sender: mpsc::Sender<SubscriptionEvent>,
    /// Recorded batches its snapshot already holds (those pending when it joined).
    skip: usize,
}

/// A relation's subscribers and the changes recorded since the last checkpoint.
#[derive(Default)]
pub struct ChangeTap {
    subscribers: Vec<Subscriber>,
    pending: Vec<ChangeBatch>,
}

impl ChangeTap {
    /// Whether changes must be recorded.
    pub fn is_active(&self) -> bool {
        !self.subscribers.is_empty()
    }

    /// Records changes (the arrays are shared, not copied).
    pub fn record(&mut self, changes: &ChangeBatch) {
        if self.is_active() && !changes.is_empty() {
            self.pending.push(changes.clone());
        }
    }

    /// Adds a subscriber whose snapshot holds every change recorded so far: it receives the
    /// changes recorded from now on, at the next checkpoint and later ones.
    pub fn subscribe(&mut self, buffer: usize) -> mpsc::Receiver<SubscriptionEvent> {
        let (sender, receiver) = mpsc::channel(buffer.max(2));
        self.subscribers.push(Subscriber {
            sender,
            skip: self.pending.len(),
        });
        receiver
    }

    /// Hands the changes recorded since the last checkpoint to every subscriber as
    /// `checkpoint`'s, and drops the subscribers that are gone or too far behind.
    pub fn publish(&mut self, checkpoint: u64) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        if self.subscribers.is_empty() {
            return Ok(());
        }
        // Consolidated once per distinct skip: usually every subscriber has skip 0.
        let mut by_skip: HashMap<usize, Option<ChangeBatch>> = HashMap::new();
        for subscriber in &self.subscribers {
            if let std::collections::hash_map::Entry::Vacant(slot) = by_skip.entry(subscriber.skip)
            {
                slot.insert(consolidate(pending[subscriber.skip..].to_vec())?);
            }
        }
        self.subscribers.retain_mut(|subscriber| {
            let changes = &by_skip[&std::mem::take(&mut subscriber.skip)];
            let sender = &subscriber.sender;
            if sender.is_closed() {
                return false;
            }
            // Two events, and one more slot to say why the subscription ends.
            if sender.capacity() < 3 {
                let unread = sender.max_capacity() - sender.capacity();
                let _ = sender.try_send(SubscriptionEvent::Ended(EndReason::TooSlow { unread }));
                return false;
            }
            if let Some(changes) = changes {
                let event = SubscriptionEvent::Changes {
                    checkpoint,
                    changes: changes.clone(),
                };
                if sender.try_send(event).is_err() {
                    return false;
                }
            }
            sender
                .try_send(SubscriptionEvent::Checkpoint(checkpoint))
                .is_ok()
        });
        Ok(())
    }

    /// Ends every subscription with `reason`.
    pub fn end(&mut self, reason: EndReason) {
        for subscriber in self.subscribers.drain(..) {
            let _ = subscriber
                .sender
                .try_send(SubscriptionEvent::Ended(reason.clone()));
        }
        self.pending.clear();
    }
}

/// The batches as one, each distinct row once with the sum of its weights, rows whose
/// weights cancel left out; `None` when nothing is left.
pub fn consolidate(batches: Vec<ChangeBatch>) -> Result<Option<ChangeBatch>> {
    let Some(first) = batches.first() else {
        return Ok(None);
    };
    let schema = first.data.schema();
    let all = ChangeBatch::concat(&schema, &batches)?;
    let converter = RowConverter::new(
        schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect(),
    )
    .map_err(|e| RunnelError::internal(format!("row converter: {e}")))?;
    let rows = converter
        .convert_columns(all.data.columns())
        .map_err(|e| RunnelError::internal(format!("row conversion: {e}")))?;
    // First index of each distinct row, and its summed weight, in first-seen order.
    let mut seen: HashMap<&[u8], usize> = HashMap::with_capacity(all.num_rows());
    let mut firsts: Vec<u32> = Vec::new();
    let mut sums: Vec<i64> = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        let weight = all.weights.value(index);
        match seen.get(row.data()) {
            Some(&slot) => sums[slot] += weight,
            None => {
                seen.insert(row.data(), firsts.len());
                firsts.push(u32::try_from(index).unwrap_or(u32::MAX));
                sums.push(weight);
            }
        }
    }
    let (indices, weights): (Vec<u32>, Vec<i64>) = firsts
        .into_iter()
        .zip(sums)
        .filter(|(_, weight)| *weight != 0)
        .unzip();
    if indices.is_empty() {
        return Ok(None);
    }
    let data = take_record_batch(&all.data, &UInt32Array::from(indices))?;
    Ok(Some(ChangeBatch::new(data, Int64Array::from(weights))))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;

    fn changes(rows: &[(&str, i64)]) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true)]));
        let keys: Vec<&str> = rows.iter().map(|(k, _)| *k).collect();
        let data = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(keys))]).unwrap();
        ChangeBatch::new(
            data,
            Int64Array::from_iter_values(rows.iter().map(|(_, w)| *w)),
        )
    }

    fn rows(batch: &ChangeBatch) -> Vec<(String, i64)> {
        let keys = batch
            .data
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        (0..batch.num_rows())
            .map(|i| (keys.value(i).to_string(), batch.weights.value(i)))
            .collect()
    }

    #[test]
    fn a_checkpoint_s_changes_are_consolidated() {
        let mut tap = ChangeTap::default();
        let mut events = tap.subscribe(16);
        tap.record(&changes(&[("a", 1), ("b", 1)]));
        tap.record(&changes(&[("a", -1), ("c", 2), ("b", 1)]));
        tap.publish(7).unwrap();
        match events.try_recv().unwrap() {
            SubscriptionEvent::Changes {
                checkpoint,
                changes,
            } => {
                assert_eq!(checkpoint, 7);
                assert_eq!(rows(&changes), vec![("b".into(), 2), ("c".into(), 2)]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            events.try_recv().unwrap(),
            SubscriptionEvent::Checkpoint(7)
        ));
        // Nothing changed: only the checkpoint.
        tap.publish(8).unwrap();
        assert!(matches!(
            events.try_recv().unwrap(),
            SubscriptionEvent::Checkpoint(8)
        ));
    }

    #[test]
    fn a_subscriber_that_does_not_read_is_ended_not_waited_for() {
        let mut tap = ChangeTap::default();
        let mut events = tap.subscribe(8);
        for checkpoint in 0..10 {
            tap.record(&changes(&[("a", 1)]));
            tap.publish(checkpoint).unwrap();
        }
        assert!(!tap.is_active());
        let mut last = None;
        while let Ok(event) = events.try_recv() {
            last = Some(event);
        }
        match last {
            Some(SubscriptionEvent::Ended(EndReason::TooSlow { unread })) => assert!(unread >= 6),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_late_subscriber_gets_only_what_its_snapshot_lacks() {
        let mut tap = ChangeTap::default();
        let mut first = tap.subscribe(16);
        tap.record(&changes(&[("a", 1)]));
        // Joins with "a" pending: its snapshot holds it.
        let mut second = tap.subscribe(16);
        tap.record(&changes(&[("b", 1)]));
        tap.publish(3).unwrap();
        let changes_of =
            |events: &mut mpsc::Receiver<SubscriptionEvent>| match events.try_recv().unwrap() {
                SubscriptionEvent::Changes { changes, .. } => rows(&changes),
                other => panic!("{other:?}"),
            };
        assert_eq!(
            changes_of(&mut first),
            vec![("a".into(), 1), ("b".into(), 1)]
        );
        assert_eq!(changes_of(&mut second), vec![("b".into(), 1)]);
        // From the next checkpoint on, both get the same.
        tap.record(&changes(&[("c", 1)]));
        tap.publish(4).unwrap();
        for events in [&mut first, &mut second] {
            assert!(matches!(
                events.try_recv().unwrap(),
                SubscriptionEvent::Checkpoint(3)
            ));
            assert_eq!(changes_of(events), vec![("c".into(), 1)]);
        }
    }

    #[test]
    fn nothing_is_recorded_without_subscribers() {
        let mut tap = ChangeTap::default();
        tap.record(&changes(&[("a", 1)]));
        assert!(tap.pending.is_empty());
    }
}
