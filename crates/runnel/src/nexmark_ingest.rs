//! Nexmark streams (`connector = 'nexmark'`): `--workers` threads generate each stream. The
//! stream's events are cut into partitions (`runnel_connectors::nexmark`); thread `r` of `N`
//! generates the partitions `p` with `p mod N == r`, the rule Kafka readers follow. Each
//! thread generates its partitions' events in chunks and appends each chunk to the stream's
//! log in the same atomic write as its partitions' next event numbers (stored like Kafka
//! offsets), so a restart, with any number of threads, resumes every partition exactly where
//! its last committed chunk ended: no event lost, none twice.
//!
//! The log keeps each chunk as its recipe only (its range and the partitions' resume points;
//! `crate::nexmark_archive` generates it again for whoever reads it from the store): the rows
//! are handed to the dataflow in memory, and a thread waits while the dataflow has not taken
//! what it handed before (`FreshEntries::wait_for_room`), rather than generate rows that
//! would be dropped and generated again.
//!
//! Every partition is registered with the stream's event-time clock before anything is
//! appended, so a thread that runs ahead cannot make another's rows late; a thread whose
//! partitions reach the `events` bound marks them finished, so they stop holding the
//! watermark back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runnel_common::Result;
use runnel_connectors::NexmarkGenerator;
use runnel_sql::CatalogEntry;
use runnel_state::log_index::GeneratedRecipe;

use crate::connector_registry::{
    IngestProgress, PartitionProgress, SourceHandle, SourceOrigin, SourceRun,
};
use crate::kafka_ingest::{offset_writes, reads_partition, stored_offsets};
use crate::shared::Shared;

/// Rows of the stream per chunk (one log entry and one atomic write per chunk).
const CHUNK_ROWS: usize = 16_384;
/// How long a thread waits for the dataflow to take its chunks before it generates more
/// anyway (they are then dropped from memory and generated again when read).
const ROOM_WAIT: Duration = Duration::from_secs(1);

/// Starts generating `entry`'s events from its stored positions, on `--workers` threads (at
/// most one per partition) registered together in the server's source threads.
pub fn start(
    shared: &Arc<Shared>,
    entry: Arc<CatalogEntry>,
    generator: Arc<NexmarkGenerator>,
) -> Result<()> {
    let handle = SourceHandle::new("running");
    let partitions = generator.options().partitions as usize;
    let threads = shared.config.workers.clamp(1, partitions);
    let runs: Vec<(String, SourceRun)> = (0..threads)
        .map(|thread| {
            let task = GeneratorTask {
                shared: shared.clone(),
                entry: entry.clone(),
                generator: generator.clone(),
                thread,
                threads,
                stop: handle.stop.clone(),
                progress: handle.progress.clone(),
            };
            let run: SourceRun = Box::new(move || {
                if let Err(e) = task.run() {
                    tracing::error!(source = %task.entry.name, "Nexmark generator stopped: {e}");
                    task.progress
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .status = format!("failed: {e}");
                    // One thread failing stops the stream's generation, as one thread did.
                    task.stop.store(true, Ordering::SeqCst);
                }
            });
            (format!("runnel-nexmark-{}", entry.name), run)
        })
        .collect();
    shared
        .sources
        .spawn_all(entry.id, runs, SourceOrigin::Generator, handle)
}

struct GeneratorTask {
    shared: Arc<Shared>,
    entry: Arc<CatalogEntry>,
    generator: Arc<NexmarkGenerator>,
    /// This thread's number among the stream's generator threads, and their count.
    thread: usize,
    threads: usize,
    stop: Arc<AtomicBool>,
    progress: Arc<Mutex<IngestProgress>>,
}

impl GeneratorTask {
    fn run(&self) -> Result<()> {
        let store = &self.shared.store;
        let options = self.generator.options().clone();
        let partitions = options.partitions as usize;
        let all: Vec<i32> = (0..partitions as i32).collect();
        let mine: Vec<i32> = all
            .iter()
            .copied()
            .filter(|&p| reads_partition(p, self.thread, self.threads))
            .collect();
        let stored = stored_offsets(store, self.entry.id)?;
        // Where each of this thread's partitions resumes; `None`: another thread's.
        let mut starts: Vec<Option<u64>> = all
            .iter()
            .map(|&p| {
                reads_partition(p, self.thread, self.threads)
                    .then(|| stored.get(&p).copied().unwrap_or(0).max(0) as u64)
            })
            .collect();
        let writer = self.shared.writer(self.entry.id)?;
        let fresh = self.shared.worker.fresh_entries();
        futures::executor::block_on(writer.lock()).add_partitions(&all);
        let position = |starts: &[Option<u64>]| starts.iter().flatten().copied().min();
        let Some(started_from) = position(&starts) else {
            return Ok(());
        };
        // A chunk spans enough of the sequence to hold about CHUNK_ROWS of this thread's rows.
        let chunk_rows = CHUNK_ROWS * partitions / mine.len();
        let started_at = Instant::now();
        let mut window = (Instant::now(), 0u64);
        let mut finished = false;
        // A throttled generator writes about ten chunks a second.
        let max_events = options
            .rate
            .map_or(u64::MAX, |r| ((r / 10.0) as u64).max(50));
        while !self.stop.load(Ordering::SeqCst) {
            let from = position(&starts).unwrap_or(started_from);
            if options.events.is_some_and(|limit| from >= limit) {
                if !finished {
                    // Idempotent: after a restart it only writes the clock's state again.
                    futures::executor::block_on(writer.lock()).finish_partitions(store, &mine)?;
                    self.shared.worker.wake();
                    finished = true;
                    self.publish(&starts, None);
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let to = self
                .generator
                .chunk_end(from, chunk_rows)
                .min(from.saturating_add(max_events));
            fresh.wait_for_room(self.entry.id, ROOM_WAIT);
            let (batch, row_partitions) = self.generator.generate(from, to, &starts)?;
            let recipe = GeneratedRecipe {
                version: NexmarkGenerator::OUTPUT_VERSION,
                from,
                to,
                starts: starts.clone(),
                clock_before: None,
                watermark_after: None,
            };
            for start in starts.iter_mut().flatten() {
                *start = (*start).max(to);
            }
            let offsets: BTreeMap<i32, i64> = mine.iter().map(|&p| (p, to as i64)).collect();
            let mut locked = futures::executor::block_on(writer.lock());
            let mut extra = crate::writer::batch_for_rows(&batch);
            for (k, v) in offset_writes(self.entry.id, &offsets) {
                extra.put(k, v);
            }
            locked.commit_generated(store, batch, &row_partitions, recipe, extra)?;
            drop(locked);
            self.shared.worker.wake();
            // This thread's share of the events the sequence advanced by.
            window.1 += (to - from) * mine.len() as u64 / partitions as u64;
            let elapsed = window.0.elapsed();
            if elapsed >= Duration::from_secs(1) {
                let rate = window.1 as f64 / elapsed.as_secs_f64();
                self.publish(&starts, Some(rate));
                window = (Instant::now(), 0);
            }
            if let Some(rate) = options.rate {
                // Every thread keeps the whole sequence's pace, generating its share of it.
                let due = Duration::from_secs_f64((to - started_from) as f64 / rate);
                if let Some(wait) = due.checked_sub(started_at.elapsed()) {
                    std::thread::sleep(wait.min(Duration::from_millis(500)));
                }
            }
        }
        Ok(())
    }

    /// Publishes this thread's partitions' positions (and its rate, while running) for
    /// SHOW PROGRESS. The stream is `finished` once every partition reached the `events`
    /// bound, whichever thread generated it.
    fn publish(&self, starts: &[Option<u64>], rate: Option<f64>) {
        let options = self.generator.options();
        let end = options.events.map(|e| e as i64);
        let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        for (p, start) in starts.iter().enumerate() {
            if let Some(position) = start {
                progress.partitions.insert(
                    p as i32,
                    PartitionProgress {
                        offset: *position as i64,
                        end_offset: end,
                        backfill: None,
                        // The sequence's events this partition has passed (generated and
                        // committed, or another partition's).
                        records: *position,
                    },
                );
            }
        }
        if let Some(rate) = rate {
            progress.reader_rates.insert(self.thread, rate);
            progress.events_per_sec = progress.reader_rates.values().sum();
        }
        if progress.status.starts_with("failed") {
            return;
        }
        let done = end.is_some_and(|end| {
            progress.partitions.len() == options.partitions as usize
                && progress.partitions.values().all(|p| p.offset >= end)
        });
        progress.status = if done { "finished" } else { "running" }.to_string();
    }
}
