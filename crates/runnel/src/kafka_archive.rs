//! A Kafka stream's topic as the archive of its log: the entries retention deleted are read
//! again from the topic, by the recipe each entry's index keeps (the records the chunk read,
//! in the order it read them, and the stream's clock before it), and decoded exactly as
//! ingestion decoded them. So a view created after the trim sees the rows a view that was there
//! all along saw.
//!
//! The topic must still hold the records: when Kafka's own retention deleted them, the backfill
//! fails naming the earliest offset the partition still holds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::message::Message;
use runnel_common::{Result, RunnelError, SqlState};
use runnel_connectors::kafka::{KafkaRecord, TopicReader};
use runnel_connectors::KafkaOptions;
use runnel_runtime::LogArchive;
use runnel_sql::CatalogEntry;
use runnel_state::log_index::{EntryIndex, KafkaRecipe};

use crate::kafka_ingest::{stream_rows, Layout};
use crate::writer::rebuild_kafka_entry;

/// How long re-reading waits for a record it needs before it gives up.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Records of one partition held ahead of the entry that needs them; beyond it the partition's
/// records are dropped and fetched again later (seeking back is exact).
const AHEAD_RECORDS: usize = 65_536;

pub struct KafkaArchive {
    entry: Arc<CatalogEntry>,
    options: KafkaOptions,
    layout: Layout,
    /// Connected on first use (most streams are never re-read).
    reader: Mutex<Option<TopicReader>>,
}

impl KafkaArchive {
    pub fn new(entry: Arc<CatalogEntry>, options: KafkaOptions, layout: Layout) -> KafkaArchive {
        KafkaArchive {
            entry,
            options,
            layout,
            reader: Mutex::new(None),
        }
    }

    fn unavailable(&self, why: String) -> RunnelError {
        RunnelError::execution(
            SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "stream {} cannot read the rows its retention removed from topic '{}' again: {why}",
                self.entry.name, self.options.topic
            ),
        )
    }
}

impl LogArchive for KafkaArchive {
    fn rebuild(
        &self,
        entries: &[(u64, EntryIndex)],
        each: &mut dyn FnMut(u64, RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let mut guard = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let client_id = format!("{}-{}-reread", self.entry.name, self.entry.id);
            let reader = TopicReader::connect(
                &self.options.bootstrap_servers,
                &self.options.security,
                &self.options.topic,
                &client_id,
            )
            .map_err(|e| self.unavailable(e.to_string()))?;
            *guard = Some(reader);
        }
        let Some(reader) = guard.as_ref() else {
            return Err(RunnelError::internal("Kafka re-reader not connected"));
        };
        let decoder = self.layout.decoder(self.options.format);
        let mut fetch = Fetch::new(reader);
        for (seq, index) in entries {
            let recipe = index
                .kafka
                .as_ref()
                .ok_or_else(|| self.unavailable(format!("log entry {seq} has no Kafka recipe")))?;
            let records = fetch.records(recipe).map_err(|why| self.unavailable(why))?;
            let rows = stream_rows(&self.entry, &self.layout, &decoder, &records)?;
            each(*seq, rebuild_kafka_entry(rows, recipe)?)?;
        }
        reader
            .unassign()
            .map_err(|e| self.unavailable(e.to_string()))?;
        Ok(())
    }
}

/// Reads the records of consecutive recipes: each partition is read on from where the last
/// recipe left it, so a run of entries costs one assignment, not one per entry.
struct Fetch<'a> {
    reader: &'a TopicReader,
    /// Records read ahead, per partition.
    queued: BTreeMap<i32, VecDeque<KafkaRecord<'a>>>,
    /// Per assigned partition, the offset after the records read so far: where an assignment
    /// continues it exactly (a Kafka position is the first record at or after an offset).
    position: BTreeMap<i32, i64>,
    /// Partitions whose records were dropped past [`AHEAD_RECORDS`]: read on by reassigning.
    dropped: BTreeSet<i32>,
}

impl<'a> Fetch<'a> {
    fn new(reader: &'a TopicReader) -> Self {
        Fetch {
            reader,
            queued: BTreeMap::new(),
            position: BTreeMap::new(),
            dropped: BTreeSet::new(),
        }
    }

    /// Reads partition `p` afresh from `offset`.
    fn restart(&mut self, p: i32, offset: i64) {
        self.queued.remove(&p);
        self.dropped.remove(&p);
        self.position.insert(p, offset);
    }

    /// The recipe's records, in the order the chunk read them.
    fn records(&mut self, recipe: &KafkaRecipe) -> Result<Vec<KafkaRecord<'a>>, String> {
        let mut needed: BTreeMap<i32, usize> = BTreeMap::new();
        for (p, n) in &recipe.runs {
            *needed.entry(*p).or_insert(0) += *n as usize;
        }
        // A partition continues where the last recipe left it when its next record is the
        // recipe's first; otherwise (not read yet, or records in between) it is read afresh.
        let mut reassign = false;
        for (&p, &(first, _)) in &recipe.partitions {
            let continues = match self.queued.get(&p).and_then(|q| q.front()) {
                Some(front) => front.offset() == first,
                None => self.position.get(&p) == Some(&first),
            };
            if !continues {
                self.restart(p, first);
                reassign = true;
            }
        }
        let mut retried = BTreeSet::new();
        loop {
            self.fill(&needed, reassign)?;
            // The first record of each partition must be the one the chunk read first.
            let wrong: Vec<i32> = recipe
                .partitions
                .iter()
                .filter(|(p, (first, _))| {
                    self.queued
                        .get(p)
                        .and_then(|q| q.front())
                        .map(|r| r.offset())
                        != Some(*first)
                })
                .map(|(p, _)| *p)
                .collect();
            let Some(&p) = wrong.first() else {
                break;
            };
            let first = recipe.partitions[&p].0;
            if !retried.insert(p) {
                let earliest = self
                    .reader
                    .watermarks(p)
                    .map(|(low, _)| low.to_string())
                    .unwrap_or_else(|_| "unknown".into());
                return Err(format!(
                    "partition {p} no longer holds offset {first} (did Kafka's own retention delete it?); its earliest available offset is {earliest}"
                ));
            }
            for p in wrong {
                let first = recipe.partitions[&p].0;
                self.restart(p, first);
            }
            reassign = true;
        }
        let mut out = Vec::with_capacity(needed.values().sum());
        for (p, n) in &recipe.runs {
            let queue = self
                .queued
                .get_mut(p)
                .ok_or_else(|| format!("partition {p} has no records queued"))?;
            out.extend(queue.drain(..*n as usize));
        }
        for (&p, &(_, last)) in &recipe.partitions {
            let taken_last = out
                .iter()
                .rev()
                .find(|r| r.partition() == p)
                .map(|r| r.offset());
            if taken_last != Some(last) {
                return Err(format!(
                    "partition {p} holds other records than ingestion read (expected offset {last} last, read {taken_last:?})"
                ));
            }
        }
        Ok(out)
    }

    /// Polls until every partition has the records `needed` queued.
    fn fill(&mut self, needed: &BTreeMap<i32, usize>, mut reassign: bool) -> Result<(), String> {
        let mut last_progress = Instant::now();
        loop {
            let missing: Vec<i32> = needed
                .iter()
                .filter(|(p, n)| self.queued.get(p).map_or(0, VecDeque::len) < **n)
                .map(|(p, _)| *p)
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if missing.iter().any(|p| self.dropped.remove(p)) {
                reassign = true;
            }
            if std::mem::take(&mut reassign) {
                self.reader
                    .assign(&self.position)
                    .map_err(|e| e.to_string())?;
            }
            let (records, error) = self.reader.poll_chunk(
                16_384,
                Duration::from_millis(200),
                Duration::from_millis(20),
            );
            if records.is_empty() {
                if last_progress.elapsed() >= READ_TIMEOUT {
                    return Err(match error {
                        Some(e) => format!("the broker does not answer: {e}"),
                        None => format!(
                            "partitions {missing:?} sent nothing for {} s",
                            READ_TIMEOUT.as_secs()
                        ),
                    });
                }
                continue;
            }
            last_progress = Instant::now();
            for r in records {
                let p = r.partition();
                let Some(&next) = self.position.get(&p) else {
                    continue;
                };
                if r.offset() < next || self.dropped.contains(&p) {
                    continue;
                }
                let queue = self.queued.entry(p).or_default();
                if queue.len() >= AHEAD_RECORDS.max(needed.get(&p).copied().unwrap_or(0)) {
                    // Too far ahead of what is needed now: read on from here later.
                    self.dropped.insert(p);
                    continue;
                }
                self.position.insert(p, r.offset() + 1);
                queue.push_back(r);
            }
        }
    }
}
