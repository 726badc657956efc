//! Nexmark streams (`connector = 'nexmark'`): one thread per stream generates its events in
//! chunks and appends each chunk to the stream's log in the same atomic write as the next
//! event number (stored like a Kafka offset, partition 0), so a restart resumes exactly where
//! the last committed chunk ended: no event lost, none twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use runnel_common::{Result, RunnelError};
use runnel_connectors::{NexmarkGenerator, NexmarkOptions};
use runnel_plan::ObjectId;
use runnel_sql::CatalogEntry;
use runnel_state::WriteBatch;

use crate::engine::Shared;
use crate::kafka_ingest::{offset_writes, stored_offsets, IngestProgress, PartitionProgress};

/// Rows of the stream per chunk (one log entry and one atomic write per chunk).
const CHUNK_ROWS: usize = 16_384;

struct Generator {
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<()>>,
    progress: Arc<Mutex<IngestProgress>>,
}

/// The running generator threads.
#[derive(Default)]
pub struct Generators {
    running: Mutex<HashMap<ObjectId, Generator>>,
}

impl Generators {
    /// Starts generating `entry`'s events from its stored position.
    pub fn start(
        &self,
        shared: &Arc<Shared>,
        entry: Arc<CatalogEntry>,
        generator: NexmarkGenerator,
    ) -> Result<()> {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Mutex::new(IngestProgress {
            status: "running".into(),
            ..Default::default()
        }));
        let task = GeneratorTask {
            shared: shared.clone(),
            entry: entry.clone(),
            generator,
            stop: stop.clone(),
            progress: progress.clone(),
        };
        let join = std::thread::Builder::new()
            .name(format!("runnel-nexmark-{}", entry.name))
            .spawn(move || {
                if let Err(e) = task.run() {
                    tracing::error!(source = %task.entry.name, "Nexmark generator stopped: {e}");
                    task.progress
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .status = format!("failed: {e}");
                }
            })
            .map_err(|e| RunnelError::external(format!("cannot start a generator: {e}")))?;
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                entry.id,
                Generator {
                    stop,
                    join: Some(join),
                    progress,
                },
            );
        Ok(())
    }

    /// Stops a stream's generator and waits for it (its last write is complete or not begun).
    pub fn stop(&self, id: ObjectId) {
        let generator = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(mut g) = generator {
            g.stop.store(true, Ordering::SeqCst);
            if let Some(join) = g.join.take() {
                let _ = join.join();
            }
        }
    }

    pub fn is_generated(&self, id: ObjectId) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id)
    }

    pub fn progress(&self) -> Vec<(ObjectId, IngestProgress)> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(ObjectId, IngestProgress)> = running
            .iter()
            .map(|(id, g)| {
                (
                    *id,
                    g.progress.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                )
            })
            .collect();
        out.sort_by_key(|(id, _)| *id);
        out
    }
}

struct GeneratorTask {
    shared: Arc<Shared>,
    entry: Arc<CatalogEntry>,
    generator: NexmarkGenerator,
    stop: Arc<AtomicBool>,
    progress: Arc<Mutex<IngestProgress>>,
}

impl GeneratorTask {
    fn run(&self) -> Result<()> {
        let store = &self.shared.store;
        let options: NexmarkOptions = self.generator.options().clone();
        let mut position = stored_offsets(store, self.entry.id)?
            .get(&0)
            .copied()
            .unwrap_or(0) as u64;
        let started_at = Instant::now();
        let started_from = position;
        let mut window = (Instant::now(), 0u64);
        // A throttled generator writes about ten chunks a second.
        let max_events = options
            .rate
            .map_or(u64::MAX, |r| ((r / 10.0) as u64).max(50));
        while !self.stop.load(Ordering::SeqCst) {
            if options.events.is_some_and(|limit| position >= limit) {
                self.set_progress(position, "finished", 0.0);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let to = self
                .generator
                .chunk_end(position, CHUNK_ROWS)
                .min(position.saturating_add(max_events));
            let batch = self.generator.generate(position, to)?;
            let writer = self.shared.writer(self.entry.id)?;
            let mut locked = futures::executor::block_on(writer.lock());
            let mut extra = WriteBatch::default();
            for (k, v) in offset_writes(self.entry.id, &BTreeMap::from([(0, to as i64)])) {
                extra.put(k, v);
            }
            locked.commit_stream(store, batch, extra)?;
            drop(locked);
            self.shared.worker.wake();
            window.1 += to - position;
            position = to;
            let elapsed = window.0.elapsed();
            if elapsed >= Duration::from_secs(1) {
                let rate = window.1 as f64 / elapsed.as_secs_f64();
                self.set_progress(position, "running", rate);
                window = (Instant::now(), 0);
            }
            if let Some(rate) = options.rate {
                let due = Duration::from_secs_f64((position - started_from) as f64 / rate);
                if let Some(wait) = due.checked_sub(started_at.elapsed()) {
                    std::thread::sleep(wait.min(Duration::from_millis(500)));
                }
            }
        }
        Ok(())
    }

    fn set_progress(&self, position: u64, status: &str, rate: f64) {
        let end = self.generator.options().events.map(|e| e as i64);
        let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        progress.partitions.insert(
            0,
            PartitionProgress {
                offset: position as i64,
                end_offset: end,
                backfill: None,
            },
        );
        progress.status = status.to_string();
        if status == "running" {
            progress.events_per_sec = rate;
        }
    }
}
