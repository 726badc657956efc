//! A worker of the parallel dataflow: one thread with its replica of every view's operators.
//!
//! `--workers N` starts N shards. Each holds the same graph (the same node numbers on every
//! shard): every view's operators, with an exchange node before each stateful operator
//! whose input is not already partitioned by its key ([`crate::exchange`]). A stateful
//! operator's replica on shard `s` owns the vnodes `s` owns
//! ([`runnel_state::vnode::shard_of`]): its state, its time index's reads, its view rows.
//!
//! The coordinator ([`crate::dataflow::Dataflow`], on the worker thread) reads the source
//! logs and hands every shard the same entries ([`Feed`]); a shard pushes its part of each
//! entry's rows (a stream's rows by contiguous ranges; a table's, and what a sink reads of a
//! log, all on shard 0, so a table row's changes stay in order), then the entry's watermark,
//! through its graph. At an exchange, the rows of other shards are sent to them
//! ([`ShardMsg::Rows`]); the clock is sent to every shard ([`ShardMsg::Clock`]), and an
//! exchange's clock is the minimum over the shards' (its ports `1..=N`), so windows and
//! temporal filters close as with one worker: a row never reaches an operator whose clock
//! is past the point of the log the row comes from.
//!
//! **Quiescence.** [`Pending`] counts the feeds and exchange messages not yet processed.
//! When it is zero every shard has processed everything sent so far and nothing is in
//! flight: that is where the coordinator checkpoints (each shard adds its operators' state
//! to a batch; the coordinator writes them with the source positions in one RocksDB write),
//! adds and removes views, and answers what needs every shard. Barriers are thus aligned
//! trivially: a checkpoint's cut is the log positions fed so far, and the channels between
//! shards are empty at it.
//!
//! Control runs as closures on a shard's graph ([`Shards::on_all`]), in order with the data
//! sent before them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use runnel_common::{ChangeBatch, Result, RunnelError};
use runnel_plan::{NodeKind, ObjectId, StreamPlan};
use runnel_state::codec::EncodedRows;
use runnel_state::vnode::VnodeSet;
use runnel_state::{SharedBudget, Store, WriteBatch};

use crate::build::{build_operator, node_arrow_schema, BuildContext};
use crate::dataflow::{from_start, LogEntry, StartOffsets};
use crate::exchange::{Exchanges, PartitionKey, Partitioner, Routed};
use crate::operator::Operator;
use crate::operators::materialize::ViewOutput;
use crate::operators::MaterializeOp;

/// A node's input: (node, port).
pub type Port = (usize, usize);

/// Feeds and exchange messages sent and not yet processed, and a way to wait until there are
/// none (see the module docs).
#[derive(Default)]
pub struct Pending {
    count: AtomicI64,
    /// Feeds processed, summed over the shards.
    feeds_done: AtomicU64,
    lock: Mutex<()>,
    changed: Condvar,
    /// A shard panicked: what it owed will never be processed.
    poisoned: AtomicBool,
}

impl Pending {
    fn add(&self, n: i64) {
        self.count.fetch_add(n, Ordering::SeqCst);
    }

    fn done(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.notify();
        }
    }

    fn feed_done(&self) {
        self.feeds_done.fetch_add(1, Ordering::SeqCst);
        self.notify();
    }

    fn notify(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.changed.notify_all();
    }

    fn poison(&self) {
        self.poisoned.store(true, Ordering::SeqCst);
        self.notify();
    }

    /// Waits until `ready` holds (checked under the lock every time something changes).
    fn wait_until(&self, ready: impl Fn(&Pending) -> bool) -> Result<()> {
        let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.poisoned.load(Ordering::SeqCst) {
                return Err(RunnelError::internal("a dataflow worker thread panicked"));
            }
            if ready(self) {
                return Ok(());
            }
            guard = self.changed.wait(guard).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// How each worker spent its time since the start, for the metrics endpoint: processing
/// messages, or waiting, by what the wait ended with. A worker adds its busy time when it
/// next waits (a worker busy without a pause shows it then).
pub struct WorkerTimes {
    workers: Vec<WorkerTime>,
}

#[derive(Default)]
struct WorkerTime {
    busy_nanos: AtomicU64,
    /// Per [`Waited`], by its discriminant.
    idle_nanos: [AtomicU64; 3],
}

/// What ended a worker's wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Waited {
    /// The coordinator's next feed: the sources (or the coordinator) set the pace.
    Input,
    /// Another worker's exchanged rows, clock or end of a round's level: skew, or a round
    /// waiting for its slowest worker.
    Peers,
    /// A control step (a checkpoint, a view added, a snapshot).
    Control,
}

impl Waited {
    pub const ALL: [Waited; 3] = [Waited::Input, Waited::Peers, Waited::Control];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Waited::Input => "input",
            Waited::Peers => "peers",
            Waited::Control => "control",
        }
    }

    fn of(msg: &ShardMsg) -> Waited {
        match msg {
            ShardMsg::Feed(_) => Waited::Input,
            ShardMsg::Rows { .. } | ShardMsg::Clock { .. } | ShardMsg::LevelDone { .. } => {
                Waited::Peers
            }
            ShardMsg::Run(_) | ShardMsg::Stop => Waited::Control,
        }
    }
}

/// One worker's totals (see [`WorkerTimes`]).
#[derive(Clone, Debug, Default)]
pub struct WorkerTimeTotals {
    pub busy: Duration,
    /// Per [`Waited::ALL`].
    pub idle: [Duration; 3],
}

impl WorkerTimes {
    fn new(workers: usize) -> Self {
        WorkerTimes {
            workers: (0..workers).map(|_| WorkerTime::default()).collect(),
        }
    }

    /// Per worker, in order.
    pub fn totals(&self) -> Vec<WorkerTimeTotals> {
        let read = |n: &AtomicU64| Duration::from_nanos(n.load(Ordering::Relaxed));
        self.workers
            .iter()
            .map(|w| WorkerTimeTotals {
                busy: read(&w.busy_nanos),
                idle: w.idle_nanos.each_ref().map(read),
            })
            .collect()
    }

    fn add(counter: &AtomicU64, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        counter.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// What the coordinator hands every shard (see the module docs).
pub enum Feed {
    /// New entries of the logs, for every node reading them.
    Live {
        reads: Vec<SourceRead>,
        /// When they were appended, at the latest (`None`: not known).
        append_time: Option<Instant>,
    },
    /// Nothing to read: a round of its own, which completes after everything sent before
    /// it (see [`Rounds`]).
    Barrier,
    /// A new view's or sink's replay of one log, into one node only.
    Replay {
        read: SourceRead,
        target: Port,
        start: Option<Arc<StartOffsets>>,
        /// Every row to shard 0 (a sink reading the log).
        whole: bool,
    },
}

/// Entries of one source log.
pub struct SourceRead {
    pub source: ObjectId,
    /// A table's log: its rows all go to shard 0 (an update's delete and insert in order).
    pub table: bool,
    pub entries: Vec<LogEntry>,
}

/// What a shard is sent.
pub enum ShardMsg {
    /// A control step, run on the shard's graph (it sends its own reply).
    Run(Box<dyn FnOnce(&mut Graph) + Send>),
    Feed(Arc<Feed>),
    /// Rows another shard's exchange sent: into `port` of `node`.
    Rows {
        node: usize,
        port: usize,
        rows: Routed,
    },
    /// The clock of another shard's exchange.
    Clock {
        node: usize,
        port: usize,
        watermark: i64,
    },
    /// The sender has sent everything of `round` up to exchange level `level` (see
    /// [`Rounds`]).
    LevelDone {
        round: u64,
        level: u32,
    },
    Stop,
}

/// A node reading a source log on this shard.
#[derive(Clone)]
pub struct Reader {
    pub port: Port,
    /// A view reading a Kafka stream from a start position.
    pub start: Option<Arc<StartOffsets>>,
    /// Reads every row, on shard 0 only (a sink).
    pub whole: bool,
}

pub(crate) struct NodeSlot {
    op: Box<dyn Operator>,
    view: ObjectId,
    /// The node is its view's `Materialize`: what it outputs is the view's change.
    view_output: bool,
    /// Where this node's output goes: (node, input port).
    pub(crate) outputs: Vec<Port>,
    /// Per input port: whether an event-time clock comes in on it, and its latest value.
    input_clocks: Vec<PortClock>,
    /// The node's clock: the minimum over its timed ports, once each has one.
    pub(crate) watermark: Option<i64>,
    /// An exchange: rows arriving on port 0 go to their shard's port `1 + this shard`.
    exchange: Option<Exchange>,
}

struct Exchange {
    partitioner: Partitioner,
    /// The clock last seen on port 0 (the local input), sent to every shard.
    upstream: Option<i64>,
    /// Rows and clocks received (from every shard, this one included) and not yet pushed on:
    /// pushed together when a round's level completes ([`Rounds`]), the rows as one batch
    /// (an aggregate then emits one change per group, not one per sender), each port's
    /// latest clock after them.
    rows: Vec<Routed>,
    clocks: Vec<Option<i64>>,
    /// Messages from other shards among them, counted in [`Pending`] until pushed on.
    held: i64,
}

impl Exchange {
    fn new(partitioner: Partitioner, shards: usize) -> Self {
        Exchange {
            partitioner,
            upstream: None,
            rows: Vec::new(),
            clocks: vec![None; shards + 1],
            held: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.clocks.iter().all(Option::is_none)
    }
}

/// Rounds of exchanges. Every feed is a round; a shard processes its part, then tells every
/// shard it is done with the round's level 0. An exchange holds what it receives; when every
/// shard is done with a level of a round, each shard pushes on what its exchanges hold (level
/// `L + 1` flows on from there: rows reaching the next exchange are held again) and says it is
/// done with level `L + 1`, up to the deepest exchange of the graph. So an operator after an
/// exchange gets one batch per round, whatever the number of shards, and a round's rows are
/// all processed when its last level completes: a quiet point ([`Shards::quiesce`]) is a round
/// of its own (a barrier) after everything else.
#[derive(Default)]
struct Rounds {
    /// Per round in progress: per level, how many shards are done with it, and the levels
    /// this shard has completed.
    open: BTreeMap<u64, (Vec<usize>, u32)>,
    /// The next round this shard starts (its feeds, in order).
    next: u64,
}

#[derive(Clone, Copy, Default)]
struct PortClock {
    timed: bool,
    watermark: Option<i64>,
}

impl NodeSlot {
    fn new(op: Box<dyn Operator>, view: ObjectId, timed_ports: Vec<bool>) -> Self {
        NodeSlot {
            op,
            view,
            view_output: false,
            outputs: Vec::new(),
            input_clocks: timed_ports
                .into_iter()
                .map(|timed| PortClock {
                    timed,
                    watermark: None,
                })
                .collect(),
            watermark: None,
            exchange: None,
        }
    }

    /// An exchange of `view` routing by `key` between `shards` workers: port 0 is the local
    /// input (its clock is handled apart), ports `1..=shards` the workers', timed when the
    /// input is.
    fn exchange(view: ObjectId, key: PartitionKey, timed: bool, shards: usize) -> Self {
        let mut timed_ports = vec![false];
        timed_ports.extend(std::iter::repeat_n(timed, shards));
        let mut slot = NodeSlot::new(Box::new(PassOp), view, timed_ports);
        slot.exchange = Some(Exchange::new(Partitioner::new(key), shards));
        slot
    }

    /// Records `watermark` on `port`; returns the node's clock when that moved it.
    fn advance_clock(&mut self, port: usize, watermark: i64) -> Option<i64> {
        let clock = self.input_clocks.get_mut(port)?;
        if !clock.timed || clock.watermark.is_some_and(|w| w >= watermark) {
            return None;
        }
        clock.watermark = Some(watermark);
        let mut combined: Option<i64> = None;
        for c in self.input_clocks.iter().filter(|c| c.timed) {
            let w = c.watermark?;
            combined = Some(combined.map_or(w, |m| m.min(w)));
        }
        let combined = combined?;
        if self.watermark.is_some_and(|w| w >= combined) {
            return None;
        }
        self.watermark = Some(combined);
        Some(combined)
    }
}

/// Forwards every batch unchanged: an exchange's local side, and a sink's replica on shards
/// other than 0 (which never gets rows: they are exchanged to shard 0).
struct PassOp;

impl Operator for PassOp {
    fn process(
        &mut self,
        _port: usize,
        batch: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<()> {
        if !batch.is_empty() {
            out.push(batch);
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// What a shard knows about a view (or sink).
pub(crate) struct GraphView {
    pub(crate) nodes: Vec<usize>,
    pub(crate) shared: Arc<ViewOutput>,
}

/// Where a view's plan nodes and exchange nodes sit in the graph (the same on every shard).
pub struct Placement {
    /// Per plan node, its graph node.
    pub node: Vec<usize>,
    /// Per plan node and input port, the exchange node in front of it.
    pub exchange: Vec<Vec<Option<usize>>>,
    /// Every graph node of the view.
    pub all: Vec<usize>,
}

impl Placement {
    /// Plan nodes from `base` on, then the exchanges, in order of node and port.
    pub fn new(plan: &StreamPlan, exchanges: &[Vec<Option<PartitionKey>>], base: usize) -> Self {
        let node: Vec<usize> = (base..base + plan.nodes.len()).collect();
        let mut next = base + plan.nodes.len();
        let exchange = exchanges
            .iter()
            .map(|ports| {
                ports
                    .iter()
                    .map(|key| {
                        key.as_ref().map(|_| {
                            next += 1;
                            next - 1
                        })
                    })
                    .collect()
            })
            .collect();
        Placement {
            node,
            exchange,
            all: (base..next).collect(),
        }
    }

    /// The view's output (its last plan node).
    pub fn output(&self) -> usize {
        self.node[self.node.len() - 1]
    }
}

/// Senders to every shard, and the count of what they owe.
#[derive(Clone)]
pub(crate) struct Peers {
    senders: Vec<Sender<ShardMsg>>,
    pending: Arc<Pending>,
}

impl Peers {
    fn send(&self, shard: usize, msg: ShardMsg) {
        self.pending.add(1);
        if self.senders[shard].send(msg).is_err() {
            // The shard is gone (shutting down): nothing will process it.
            self.pending.done();
        }
    }
}

/// One shard's replica of the dataflow graph.
pub struct Graph {
    pub(crate) store: Arc<Store>,
    budget: SharedBudget,
    pub(crate) shard: usize,
    pub(crate) shards: usize,
    vnodes: VnodeSet,
    pub(crate) nodes: Vec<Option<NodeSlot>>,
    pub(crate) views: BTreeMap<ObjectId, GraphView>,
    /// Per source log, the nodes reading it here.
    pub(crate) readers: BTreeMap<ObjectId, Vec<Reader>>,
    /// When the entries being read now were appended, at the latest.
    append_time: Option<Instant>,
    peers: Peers,
    rounds: Rounds,
    /// The most exchanges on one path of any view: the levels of a round.
    depth: u32,
    /// Exchange nodes holding something.
    holding: Vec<usize>,
}

impl Graph {
    pub(crate) fn node_mut(&mut self, n: usize) -> Result<&mut NodeSlot> {
        self.nodes
            .get_mut(n)
            .and_then(|s| s.as_mut())
            .ok_or_else(|| RunnelError::internal(format!("dataflow node {n} is gone")))
    }

    /// The replica of a view's materialize step at node `n`.
    pub fn materialize(&self, n: usize) -> Result<&MaterializeOp> {
        self.nodes
            .get(n)
            .and_then(|s| s.as_ref())
            .and_then(|s| s.op.as_any().downcast_ref::<MaterializeOp>())
            .ok_or_else(|| RunnelError::internal("view output is not a materialize operator"))
    }

    /// Builds this shard's replica of a view's operators and wires them together (not to
    /// their inputs), then runs their `on_start` (a global aggregate's first row).
    #[allow(clippy::too_many_arguments)]
    pub fn add_view(
        &mut self,
        view: ObjectId,
        plan: &StreamPlan,
        view_schema: SchemaRef,
        exchanges: &Exchanges,
        shared: Arc<ViewOutput>,
        backfill: bool,
    ) -> Result<()> {
        let placement = Placement::new(plan, exchanges, self.nodes.len());
        let context = BuildContext {
            store: self.store.clone(),
            budget: self.budget.clone(),
            vnodes: self.vnodes,
            shard: (self.shard, self.shards),
            view_output: Some(shared.clone()),
        };
        let mut built: Vec<Box<dyn Operator>> = Vec::with_capacity(plan.nodes.len());
        for node in &plan.nodes {
            let schema = if matches!(node.kind, NodeKind::Materialize { .. }) {
                view_schema.clone()
            } else {
                node_arrow_schema(&node.schema)
            };
            built.push(build_operator(&context, view, plan, node, schema)?);
        }
        for (op, node) in built.into_iter().zip(&plan.nodes) {
            let timed_ports = match node.kind {
                NodeKind::Source { .. } => vec![node.event_time.timed],
                _ => node
                    .inputs
                    .iter()
                    .map(|&i| plan.nodes[i].event_time.timed)
                    .collect(),
            };
            self.nodes.push(Some(NodeSlot::new(op, view, timed_ports)));
        }
        for (node, ports) in plan.nodes.iter().zip(exchanges.iter()) {
            for (port, key) in ports.iter().enumerate() {
                let Some(key) = key else { continue };
                let timed = plan.nodes[node.inputs[port]].event_time.timed;
                let slot = NodeSlot::exchange(view, key.clone(), timed, self.shards);
                self.nodes.push(Some(slot));
            }
        }
        for (c, consumer) in plan.nodes.iter().enumerate() {
            for (port, &input) in consumer.inputs.iter().enumerate() {
                let from = placement.node[input];
                match placement.exchange[c][port] {
                    Some(exchange) => {
                        self.node_mut(from)?.outputs.push((exchange, 0));
                        self.node_mut(exchange)?
                            .outputs
                            .push((placement.node[c], port));
                    }
                    None => self.node_mut(from)?.outputs.push((placement.node[c], port)),
                }
            }
        }
        let output = placement.output();
        self.node_mut(output)?.view_output = true;
        self.views.insert(
            view,
            GraphView {
                nodes: placement.all.clone(),
                shared,
            },
        );
        self.update_depth();
        // Initial output (global aggregates), in topological order.
        for &n in &placement.node {
            let mut out = Vec::new();
            self.node_mut(n)?.op.on_start(backfill, &mut out)?;
            for batch in out {
                self.forward(n, batch);
            }
        }
        Ok(())
    }

    /// Adds a sink's node (its operator on shard 0; a pass-through elsewhere), behind an
    /// exchange to shard 0 when it reads a view (`view_input`: the view's output; the
    /// coordinator wires it). Returns the sink's node.
    pub fn add_sink(
        &mut self,
        sink: ObjectId,
        op: Option<Box<dyn Operator>>,
        view_input: Option<usize>,
        shared: Arc<ViewOutput>,
    ) -> Result<usize> {
        let node = self.nodes.len();
        let op = op.unwrap_or_else(|| Box::new(PassOp));
        let mut nodes = vec![node];
        self.nodes.push(Some(NodeSlot::new(op, sink, vec![false])));
        if view_input.is_some() {
            let exchange = self.nodes.len();
            let mut slot = NodeSlot::exchange(sink, PartitionKey::Worker(0), false, self.shards);
            slot.outputs.push((node, 0));
            self.nodes.push(Some(slot));
            nodes.push(exchange);
        }
        self.views.insert(sink, GraphView { nodes, shared });
        self.update_depth();
        Ok(node)
    }

    /// Unwires and frees a view's (or sink's) nodes.
    pub fn remove_view(&mut self, view: ObjectId) {
        let Some(state) = self.views.remove(&view) else {
            return;
        };
        for &n in &state.nodes {
            if let Some(slot) = self.nodes.get_mut(n) {
                // What another shard sent and this one held is done with.
                let held = slot
                    .as_ref()
                    .and_then(|s| s.exchange.as_ref())
                    .map_or(0, |e| e.held);
                for _ in 0..held {
                    self.peers.pending.done();
                }
                *slot = None;
            }
        }
        for slot in self.nodes.iter_mut().flatten() {
            slot.outputs.retain(|(n, _)| !state.nodes.contains(n));
        }
        for readers in self.readers.values_mut() {
            readers.retain(|r| !state.nodes.contains(&r.port.0));
        }
        self.update_depth();
    }

    /// Processes what the coordinator fed (see [`Feed`]), then starts the round's exchanges.
    pub fn feed(&mut self, feed: &Feed) {
        self.feed_rows(feed);
        self.finish_feed();
    }

    fn feed_rows(&mut self, feed: &Feed) {
        match feed {
            Feed::Barrier => {}
            Feed::Live { reads, append_time } => {
                self.append_time = *append_time;
                for read in reads {
                    let readers = self.readers.get(&read.source).cloned().unwrap_or_default();
                    if readers.is_empty() {
                        continue;
                    }
                    for entry in &read.entries {
                        for reader in &readers {
                            self.feed_entry(
                                entry,
                                reader.port,
                                reader.start.as_deref(),
                                read.table || reader.whole,
                            );
                        }
                        if let Some(wm) = entry.watermark {
                            for reader in &readers {
                                self.push_watermark(reader.port.0, reader.port.1, wm);
                            }
                        }
                    }
                }
                // Kept: the exchanges push this feed's rows on in later levels of its round.
            }
            Feed::Replay {
                read,
                target,
                start,
                whole,
            } => {
                for entry in &read.entries {
                    self.feed_entry(entry, *target, start.as_deref(), read.table || *whole);
                    if let Some(wm) = entry.watermark {
                        self.push_watermark(target.0, target.1, wm);
                    }
                    if let Err(err) = self.spill_backfill(target.0) {
                        self.fail_node(target.0, err);
                    }
                }
            }
        }
    }

    /// Pushes this shard's part of an entry's rows into `target` (rows before a view's
    /// `start` left out): with `whole`, all of them on shard 0; otherwise a contiguous range.
    fn feed_entry(
        &mut self,
        entry: &LogEntry,
        target: Port,
        start: Option<&StartOffsets>,
        whole: bool,
    ) {
        let Some(batch) = &entry.batch else { return };
        let n = batch.num_rows();
        let (from, to) = match whole {
            true if self.shard == 0 => (0, n),
            true => return,
            false => (
                n * self.shard / self.shards,
                n * (self.shard + 1) / self.shards,
            ),
        };
        if from == to {
            return;
        }
        let (part, positions) = match (from, to) == (0, n) {
            true => (batch.clone(), entry.positions.clone()),
            false => (
                ChangeBatch::new(
                    batch.data.slice(from, to - from),
                    batch.weights.slice(from, to - from),
                ),
                entry
                    .positions
                    .as_ref()
                    .map(|(p, o)| (p.slice(from, to - from), o.slice(from, to - from))),
            ),
        };
        match from_start(part, positions.as_ref(), start) {
            Ok(Some(rows)) => self.push(target.0, target.1, rows),
            Ok(None) => {}
            Err(err) => self.fail_node(target.0, err),
        }
    }

    /// During a backfill, when the operators' changed state fills half the state cache,
    /// writes this shard's part of the backfilling view's state to the store so that it can
    /// be evicted (see `Dataflow::add_view`).
    fn spill_backfill(&mut self, node: usize) -> Result<()> {
        if !self.budget.wants_checkpoint() {
            return Ok(());
        }
        let Some(view) = self.view_of(node) else {
            return Ok(());
        };
        let nodes = match self.views.get(&view) {
            Some(state) => state.nodes.clone(),
            None => return Ok(()),
        };
        let mut batch = WriteBatch::default();
        for n in nodes {
            if let Some(slot) = self.nodes.get_mut(n).and_then(|n| n.as_mut()) {
                slot.op.checkpoint(&mut batch)?;
            }
        }
        self.store.write(batch)?;
        Ok(())
    }

    /// Stops the view of `node` with `err`.
    fn fail_node(&mut self, node: usize, err: RunnelError) {
        if let Some(view) = self.view_of(node) {
            self.fail_view(view, err);
        }
    }

    /// The view (or sink) node `node` belongs to.
    fn view_of(&self, node: usize) -> Option<ObjectId> {
        self.nodes
            .get(node)
            .and_then(|n| n.as_ref())
            .map(|n| n.view)
    }

    fn fail_view(&mut self, view: ObjectId, err: RunnelError) {
        tracing::error!(view, "view maintenance failed: {err}");
        if let Some(v) = self.views.get(&view) {
            v.shared.fail(err.to_string());
        }
    }

    fn view_failed(&self, view: ObjectId) -> bool {
        self.views.get(&view).is_some_and(|v| v.shared.has_failed())
    }

    /// Sends `batch` to every consumer of node `from`.
    pub(crate) fn forward(&mut self, from: usize, batch: ChangeBatch) {
        let outputs = match self.nodes.get(from).and_then(|s| s.as_ref()) {
            Some(slot) => slot.outputs.clone(),
            None => return,
        };
        for (node, port) in outputs {
            self.push(node, port, batch.clone());
        }
    }

    /// Pushes a batch into a node and, depth first, everything it produces; at an exchange,
    /// rows of other shards are sent to them. An operator error fails only that operator's
    /// view: it stops updating and reports the error.
    pub(crate) fn push(&mut self, node: usize, port: usize, batch: ChangeBatch) {
        self.push_keyed(node, port, batch, None);
    }

    /// [`Graph::push`] of rows an exchange routed here, with their partition keys when it
    /// encoded them (for `node` only: what it produces is pushed on without).
    fn push_keyed(
        &mut self,
        node: usize,
        port: usize,
        batch: ChangeBatch,
        keys: Option<&EncodedRows>,
    ) {
        let mut keys = keys;
        let mut stack = vec![(node, port, batch)];
        while let Some((node, port, batch)) = stack.pop() {
            let given = keys.take();
            let shard = self.shard;
            let shards = self.shards;
            let Some(slot) = self.nodes.get_mut(node).and_then(|s| s.as_mut()) else {
                continue;
            };
            let view = slot.view;
            if self.views.get(&view).is_some_and(|v| v.shared.has_failed()) {
                continue;
            }
            if let (Some(exchange), 0) = (slot.exchange.as_mut(), port) {
                match exchange.partitioner.split(batch, shards) {
                    Ok(parts) => {
                        for (to, rows) in parts {
                            match to == shard {
                                true => {
                                    exchange.rows.push(rows);
                                    self.holding.push(node);
                                }
                                false => self.peers.send(
                                    to,
                                    ShardMsg::Rows {
                                        node,
                                        port: 1 + shard,
                                        rows,
                                    },
                                ),
                            }
                        }
                    }
                    Err(err) => self.fail_view(view, err),
                }
                continue;
            }
            let mut out = Vec::new();
            let processed = match given {
                Some(keys) => slot.op.process_keyed(port, batch, keys, &mut out),
                None => slot.op.process(port, batch, &mut out),
            };
            match processed {
                Ok(()) => {
                    if slot.view_output && !out.is_empty() {
                        if let (Some(appended), Some(v)) = (self.append_time, self.views.get(&view))
                        {
                            v.shared.note_input(appended);
                        }
                    }
                    for produced in out {
                        for &(next, next_port) in &slot.outputs {
                            stack.push((next, next_port, produced.clone()));
                        }
                    }
                }
                Err(err) => self.fail_view(view, err),
            }
        }
    }

    /// Moves the clock of `port` of `node` to `watermark` and, when that moves the node's
    /// clock, lets the operator act on it (its output goes downstream first), then passes
    /// the clock on to every consumer. An exchange sends its input's clock to every shard.
    pub(crate) fn push_watermark(&mut self, node: usize, port: usize, watermark: i64) {
        let mut stack = vec![(node, port, watermark)];
        while let Some((node, port, watermark)) = stack.pop() {
            let shard = self.shard;
            let Some(slot) = self.nodes.get_mut(node).and_then(|s| s.as_mut()) else {
                continue;
            };
            if let (Some(exchange), 0) = (slot.exchange.as_mut(), port) {
                if exchange.upstream.is_some_and(|w| w >= watermark) {
                    continue;
                }
                exchange.upstream = Some(watermark);
                exchange.clocks[1 + shard] = Some(watermark);
                self.holding.push(node);
                for to in (0..self.shards).filter(|&to| to != shard) {
                    self.peers.send(
                        to,
                        ShardMsg::Clock {
                            node,
                            port: 1 + shard,
                            watermark,
                        },
                    );
                }
                continue;
            }
            let Some(clock) = slot.advance_clock(port, watermark) else {
                continue;
            };
            let view = slot.view;
            if self.view_failed(view) {
                continue;
            }
            let Some(slot) = self.nodes.get_mut(node).and_then(|s| s.as_mut()) else {
                continue;
            };
            let mut out = Vec::new();
            if let Err(err) = slot.op.on_watermark(clock, &mut out) {
                self.fail_view(view, err);
                continue;
            }
            let outputs = slot.outputs.clone();
            for produced in out {
                for &(next, next_port) in &outputs {
                    self.push(next, next_port, produced.clone());
                }
            }
            // Reversed so the stack visits consumers in order.
            for &(next, next_port) in outputs.iter().rev() {
                stack.push((next, next_port, clock));
            }
        }
    }

    /// Holds rows another shard's exchange sent (pushed on when the round's level completes).
    fn receive_rows(&mut self, node: usize, rows: Routed) {
        match self.exchange_mut(node) {
            Some(exchange) => {
                exchange.rows.push(rows);
                exchange.held += 1;
                self.holding.push(node);
            }
            // The view was dropped meanwhile.
            None => self.peers.pending.done(),
        }
    }

    /// Holds a clock another shard's exchange sent.
    fn receive_clock(&mut self, node: usize, port: usize, watermark: i64) {
        match self.exchange_mut(node) {
            Some(exchange) => {
                if let Some(clock) = exchange.clocks.get_mut(port) {
                    *clock = Some(clock.map_or(watermark, |c| c.max(watermark)));
                }
                exchange.held += 1;
                self.holding.push(node);
            }
            None => self.peers.pending.done(),
        }
    }

    fn exchange_mut(&mut self, node: usize) -> Option<&mut Exchange> {
        self.nodes
            .get_mut(node)
            .and_then(|n| n.as_mut())
            .and_then(|n| n.exchange.as_mut())
    }

    /// Pushes on what every exchange holds: its rows as one batch, then each shard's latest
    /// clock (a clock held back is never ahead of the rows it came after; see the module
    /// docs).
    fn flush_exchanges(&mut self) {
        let mut holding = std::mem::take(&mut self.holding);
        holding.sort_unstable();
        holding.dedup();
        for node in holding {
            let Some(slot) = self.nodes.get_mut(node).and_then(|n| n.as_mut()) else {
                continue;
            };
            let view = slot.view;
            let Some(exchange) = slot.exchange.as_mut() else {
                continue;
            };
            if exchange.is_empty() && exchange.held == 0 {
                continue;
            }
            let rows = std::mem::take(&mut exchange.rows);
            let clocks: Vec<Option<i64>> = exchange.clocks.iter_mut().map(Option::take).collect();
            let held = std::mem::take(&mut exchange.held);
            match Routed::gather(rows) {
                Ok(Some((batch, keys))) => {
                    let outputs = slot.outputs.clone();
                    for (next, next_port) in outputs {
                        self.push_keyed(next, next_port, batch.clone(), keys.as_deref());
                    }
                }
                Ok(None) => {}
                Err(err) => self.fail_view(view, err),
            }
            for (port, clock) in clocks.into_iter().enumerate() {
                if let Some(watermark) = clock {
                    self.push_watermark(node, port, watermark);
                }
            }
            for _ in 0..held {
                self.peers.pending.done();
            }
        }
    }

    /// This shard finished its part of its next round's feed: level 0 of the round is done here.
    fn finish_feed(&mut self) {
        let round = self.rounds.next;
        self.rounds.next += 1;
        self.level_done(round, 0, true);
    }

    /// A shard (this one when `own`) is done with `level` of `round`: when every shard is,
    /// this shard pushes on what its exchanges hold and is done with the next level.
    fn level_done(&mut self, round: u64, level: u32, own: bool) {
        if own {
            self.announce_level(round, level);
        }
        self.count_level(round, level);
        // Levels complete in order: a later level's notices can come before an earlier one
        // completes here.
        loop {
            let Some(state) = self.rounds.open.get_mut(&round) else {
                return;
            };
            if state.0.get(state.1 as usize).copied().unwrap_or(0) < self.shards {
                return;
            }
            state.1 += 1;
            let next = state.1;
            self.flush_exchanges();
            if next > self.depth {
                self.rounds.open.remove(&round);
                return;
            }
            self.announce_level(round, next);
            self.count_level(round, next);
        }
    }

    /// Tells the other shards this one is done with `level` of `round`.
    fn announce_level(&self, round: u64, level: u32) {
        for to in (0..self.shards).filter(|&to| to != self.shard) {
            self.peers.send(to, ShardMsg::LevelDone { round, level });
        }
    }

    /// Counts one more shard done with `level` of `round`.
    fn count_level(&mut self, round: u64, level: u32) {
        let (counts, _) = self.rounds.open.entry(round).or_default();
        let at = level as usize;
        if counts.len() <= at {
            counts.resize(at + 1, 0);
        }
        counts[at] += 1;
    }

    /// The most exchanges on one path of the graph (the levels of a round).
    fn update_depth(&mut self) {
        fn reach(nodes: &[Option<NodeSlot>], n: usize, memo: &mut Vec<Option<u32>>) -> u32 {
            if let Some(d) = memo[n] {
                return d;
            }
            let Some(slot) = nodes[n].as_ref() else {
                return 0;
            };
            let below = slot
                .outputs
                .iter()
                .map(|&(o, _)| reach(nodes, o, memo))
                .max()
                .unwrap_or(0);
            let d = below + u32::from(slot.exchange.is_some());
            memo[n] = Some(d);
            d
        }
        let mut memo = vec![None; self.nodes.len()];
        self.depth = (0..self.nodes.len())
            .map(|n| reach(&self.nodes, n, &mut memo))
            .max()
            .unwrap_or(0);
    }

    /// Adds this shard's operators' changed state to a checkpoint's `batch`.
    pub fn checkpoint(&mut self, batch: &mut WriteBatch) -> Result<()> {
        for slot in self.nodes.iter_mut().flatten() {
            slot.op.checkpoint(batch)?;
        }
        Ok(())
    }
}

/// A shard's answer to [`Shards::run_on`].
fn answer<R>(reply: mpsc::Receiver<R>) -> Result<R> {
    reply
        .recv()
        .map_err(|_| RunnelError::internal("a dataflow worker stopped while answering"))
}

/// The shard threads, from the coordinator's side.
pub struct Shards {
    peers: Peers,
    times: Arc<WorkerTimes>,
    joins: Vec<JoinHandle<()>>,
    /// Feeds sent to every shard so far.
    feeds_sent: u64,
}

/// Feeds a shard may have unprocessed before the coordinator waits: the coordinator reads
/// the next entries while the shards work on these.
const FEEDS_AHEAD: u64 = 2;

impl Shards {
    /// Starts `shards` worker threads over `store`, their state caches sharing `budget`.
    pub fn start(store: Arc<Store>, budget: SharedBudget, shards: usize) -> Result<Shards> {
        let pending = Arc::new(Pending::default());
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| mpsc::channel::<ShardMsg>()).unzip();
        let peers = Peers { senders, pending };
        let times = Arc::new(WorkerTimes::new(shards));
        let mut joins = Vec::with_capacity(shards);
        for (shard, rx) in receivers.into_iter().enumerate() {
            let graph = Graph {
                store: store.clone(),
                budget: budget.clone(),
                shard,
                shards,
                vnodes: VnodeSet::of_shard(shard, shards),
                nodes: Vec::new(),
                views: BTreeMap::new(),
                readers: BTreeMap::new(),
                append_time: None,
                peers: peers.clone(),
                rounds: Rounds::default(),
                depth: 0,
                holding: Vec::new(),
            };
            let times = times.clone();
            let join = std::thread::Builder::new()
                .name(format!("runnel-worker-{shard}"))
                .stack_size(crate::worker::THREAD_STACK_BYTES)
                .spawn(move || run_shard(graph, rx, &times))
                .map_err(|e| {
                    RunnelError::external(format!("cannot start a dataflow worker: {e}"))
                })?;
            joins.push(join);
        }
        Ok(Shards {
            peers,
            times,
            joins,
            feeds_sent: 0,
        })
    }

    pub fn count(&self) -> usize {
        self.peers.senders.len()
    }

    /// How the workers spent their time.
    pub fn times(&self) -> Arc<WorkerTimes> {
        self.times.clone()
    }

    /// Runs `f` on shard `shard`'s graph and returns its result.
    pub fn on_one<R: Send + 'static>(
        &self,
        shard: usize,
        f: impl FnOnce(&mut Graph) -> R + Send + 'static,
    ) -> Result<R> {
        let reply = self.run_on(shard, f)?;
        answer(reply)
    }

    /// Runs `f` on every shard's graph at once; returns the results in shard order.
    pub fn on_all<R: Send + 'static>(
        &self,
        f: impl Fn(&mut Graph) -> R + Send + Sync + 'static,
    ) -> Result<Vec<R>> {
        let f = Arc::new(f);
        let replies = (0..self.count())
            .map(|shard| {
                let f = f.clone();
                self.run_on(shard, move |graph| f(graph))
            })
            .collect::<Result<Vec<_>>>()?;
        replies.into_iter().map(answer).collect()
    }

    /// Sends `f` to shard `shard`; its result comes on the returned channel.
    fn run_on<R: Send + 'static>(
        &self,
        shard: usize,
        f: impl FnOnce(&mut Graph) -> R + Send + 'static,
    ) -> Result<mpsc::Receiver<R>> {
        let sender = self
            .peers
            .senders
            .get(shard)
            .ok_or_else(|| RunnelError::internal("no such dataflow worker"))?;
        let (reply, rx) = mpsc::channel();
        let run: Box<dyn FnOnce(&mut Graph) + Send> = Box::new(move |graph| {
            let _ = reply.send(f(graph));
        });
        sender
            .send(ShardMsg::Run(run))
            .map_err(|_| RunnelError::internal("a dataflow worker has stopped"))?;
        Ok(rx)
    }

    /// Hands `feed` to every shard, first waiting while they have [`FEEDS_AHEAD`] unprocessed.
    pub fn feed(&mut self, feed: Feed) -> Result<()> {
        let shards = self.count() as u64;
        let behind = self.feeds_sent.saturating_sub(FEEDS_AHEAD - 1) * shards;
        self.peers
            .pending
            .wait_until(|p| p.feeds_done.load(Ordering::SeqCst) >= behind)?;
        let feed = Arc::new(feed);
        self.feeds_sent += 1;
        for shard in 0..self.count() {
            self.peers.send(shard, ShardMsg::Feed(feed.clone()));
        }
        Ok(())
    }

    /// Waits until every shard has processed everything sent and nothing is in flight or
    /// held: sends a barrier round (which pushes on what the exchanges hold, level by level)
    /// and waits for it.
    pub fn quiesce(&mut self) -> Result<()> {
        self.feed(Feed::Barrier)?;
        self.peers
            .pending
            .wait_until(|p| p.count.load(Ordering::SeqCst) == 0)
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        for sender in &self.peers.senders {
            let _ = sender.send(ShardMsg::Stop);
        }
        for join in self.joins.drain(..) {
            let _ = join.join();
        }
    }
}

/// A shard thread: processes what it is sent, in order. A panic poisons the dataflow (the
/// coordinator exits the process, which restarts from the last checkpoint).
fn run_shard(mut graph: Graph, rx: Receiver<ShardMsg>, times: &WorkerTimes) {
    let pending = graph.peers.pending.clone();
    let time = &times.workers[graph.shard];
    let mut busy_since = Instant::now();
    loop {
        // The clock is read only when the worker has to wait.
        let msg = match rx.try_recv() {
            Ok(msg) => msg,
            Err(TryRecvError::Disconnected) => return,
            Err(TryRecvError::Empty) => {
                let waiting = Instant::now();
                WorkerTimes::add(&time.busy_nanos, waiting - busy_since);
                let Ok(msg) = rx.recv() else { return };
                busy_since = Instant::now();
                let waited = Waited::of(&msg) as usize;
                WorkerTimes::add(&time.idle_nanos[waited], busy_since - waiting);
                msg
            }
        };
        // Rows and clocks are counted done once their exchange pushes them on.
        let (counted, is_feed) = match &msg {
            ShardMsg::Stop => return,
            ShardMsg::Run(_) | ShardMsg::Rows { .. } | ShardMsg::Clock { .. } => (false, false),
            ShardMsg::Feed(_) => (true, true),
            ShardMsg::LevelDone { .. } => (true, false),
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match msg {
            ShardMsg::Run(f) => f(&mut graph),
            ShardMsg::Feed(feed) => graph.feed(&feed),
            ShardMsg::Rows { node, rows, .. } => graph.receive_rows(node, rows),
            ShardMsg::Clock {
                node,
                port,
                watermark,
            } => graph.receive_clock(node, port, watermark),
            ShardMsg::LevelDone { round, level } => graph.level_done(round, level, false),
            ShardMsg::Stop => {}
        }));
        if outcome.is_err() {
            tracing::error!(shard = graph.shard, "a dataflow worker panicked");
            pending.poison();
            return;
        }
        if is_feed {
            pending.feed_done();
        }
        if counted {
            pending.done();
        }
    }
}
