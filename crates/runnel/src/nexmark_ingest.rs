//! Nexmark streams (`connector = 'nexmark'`): one thread per stream generates its events in
//! chunks and appends each chunk to the stream's log in the same atomic write as the next
//! event number (stored like a Kafka offset, partition 0), so a restart resumes exactly where
//! the last committed chunk ended: no event lost, none twice.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runnel_common::Result;
use runnel_connectors::{NexmarkGenerator, NexmarkOptions};
use runnel_sql::CatalogEntry;

use crate::connector_registry::{IngestProgress, PartitionProgress, SourceHandle, SourceOrigin};
use crate::kafka_ingest::{offset_writes, stored_offsets};
use crate::shared::Shared;

/// Rows of the stream per chunk (one log entry and one atomic write per chunk).
const CHUNK_ROWS: usize = 16_384;

/// Starts generating `entry`'s events from its stored position, on a thread of its own
/// registered in the server's source threads.
pub fn start(
    shared: &Arc<Shared>,
    entry: Arc<CatalogEntry>,
    generator: NexmarkGenerator,
) -> Result<()> {
    let handle = SourceHandle::new("running");
    let task = GeneratorTask {
        shared: shared.clone(),
        entry: entry.clone(),
        generator,
        stop: handle.stop.clone(),
        progress: handle.progress.clone(),
    };
    shared.sources.spawn(
        entry.id,
        format!("runnel-nexmark-{}", entry.name),
        SourceOrigin::Generator,
        handle,
        move || {
            if let Err(e) = task.run() {
                tracing::error!(source = %task.entry.name, "Nexmark generator stopped: {e}");
                task.progress
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .status = format!("failed: {e}");
            }
        },
    )
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
            let mut extra = crate::writer::batch_for_rows(&batch);
            for (k, v) in offset_writes(self.entry.id, &BTreeMap::from([(0, to as i64)])) {
                extra.put(k, v);
            }
            locked.commit_stream(store, batch, None, extra)?;
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
                // Events generated and committed so far (this run starts where it stopped).
                records: position,
            },
        );
        progress.status = status.to_string();
        if status == "running" {
            progress.events_per_sec = rate;
        }
    }
}
