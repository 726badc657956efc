//! Kafka ingestion: each Kafka stream or table has `--workers` reader threads (the workers'
//! count, so decoding scales with the dataflow); reader `r` of `N` reads the partitions `p`
//! with `p mod N == r` (`reads_partition`) from the offsets stored in RocksDB, decodes each
//! chunk of records into an Arrow batch, and appends it to the relation's log **in the same
//! atomic write** as its partitions' next offsets. The readers append to one log in turns (the
//! relation's writer lock); a partition is only ever read by one of them, so its records stay
//! in order in the log. A crash at any point leaves the log holding exactly the records before
//! the stored offsets, so restarting (with any `--workers`) resumes without loss or
//! duplicates; the dataflow then reads the log like any other (its own positions are
//! checkpointed with the view state) and splits its entries between the workers.
//!
//! Bad records never stop the thread unless `on_error = 'fail'`: they are counted, the last
//! error is kept for `SHOW PROGRESS`, and with `dlq:<topic>` the raw record is copied to a
//! dead-letter topic before the offsets that pass it are committed. A broker that goes away
//! only changes the status; librdkafka reconnects and reading resumes at the next offset.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use runnel_common::{Result, RunnelError, SqlState, KAFKA_OFFSET_COLUMN, KAFKA_PARTITION_COLUMN};
use runnel_connectors::formats::{take_rows, RecordDecoder};
use runnel_connectors::kafka::{client_config, send_waiting, KafkaRecord, TopicReader};
use runnel_connectors::{Format, KafkaOptions, KafkaSecurity, OnError};
use runnel_plan::ObjectId;
use runnel_sql::{CatalogEntry, ObjectKind, RelationDef};
use runnel_state::log_index::KafkaRecipe;
use runnel_state::{keys, Store};

use crate::connector_registry::{
    IngestProgress, PartitionProgress, SourceHandle, SourceOrigin, SourceRun,
};
use crate::shared::Shared;
use crate::table_upsert::{upsert, TableOp};

/// Records per chunk (one log entry and one atomic write per chunk).
const CHUNK_RECORDS: usize = 16_384;
/// How long a poll waits for the first record, and then for the rest of a chunk.
const POLL_WAIT: Duration = Duration::from_millis(200);
const POLL_LINGER: Duration = Duration::from_millis(20);
/// How long a source that lost its broker must poll without an error (and without records,
/// which would prove it at once) before its status says it runs again.
const QUIET_BEFORE_RUNNING: Duration = Duration::from_secs(3);
/// How often a stream catching up logs how far it got.
const BACKFILL_LOG_EVERY: Duration = Duration::from_secs(5);

/// Where a relation column's values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnSource {
    /// The n-th value column (decoded from the record value).
    Value(usize),
    Partition,
    Offset,
    Timestamp,
    Key,
}

/// How a Kafka relation's columns map onto records.
#[derive(Debug, Clone)]
pub struct Layout {
    columns: Vec<ColumnSource>,
    /// The columns decoded from the record value, in declared order.
    value_schema: Schema,
}

impl Layout {
    /// Maps a definition's columns; `_partition`, `_offset`, `_timestamp` and `_key` are
    /// metadata columns filled from the record.
    pub fn new(def: &RelationDef) -> Result<Layout> {
        let mut columns = Vec::new();
        let mut value_fields = Vec::new();
        for field in def.schema.fields() {
            let (source, natural) = match field.name().as_str() {
                "_partition" => (ColumnSource::Partition, DataType::Int32),
                "_offset" => (ColumnSource::Offset, DataType::Int64),
                "_timestamp" => (
                    ColumnSource::Timestamp,
                    DataType::Timestamp(
                        datafusion::arrow::datatypes::TimeUnit::Microsecond,
                        Some(runnel_sql::ddl::UTC.into()),
                    ),
                ),
                "_key" => (ColumnSource::Key, DataType::Utf8),
                _ => {
                    columns.push(ColumnSource::Value(value_fields.len()));
                    value_fields.push(field.as_ref().clone());
                    continue;
                }
            };
            let ok = match source {
                ColumnSource::Key => matches!(field.data_type(), DataType::Utf8 | DataType::Binary),
                _ => datafusion::arrow::compute::can_cast_types(&natural, field.data_type()),
            };
            if !ok {
                return Err(RunnelError::plan(
                    SqlState::DATATYPE_MISMATCH,
                    format!(
                        "metadata column \"{}\" cannot have type {} (use {})",
                        field.name(),
                        field.data_type(),
                        match source {
                            ColumnSource::Partition => "INT",
                            ColumnSource::Offset => "BIGINT",
                            ColumnSource::Timestamp => "TIMESTAMPTZ",
                            _ => "TEXT or BYTEA",
                        }
                    ),
                ));
            }
            columns.push(source);
        }
        if value_fields.is_empty() && def.kind == ObjectKind::Table {
            return Err(RunnelError::plan(
                SqlState::INVALID_TABLE_DEFINITION,
                "a Kafka table needs value columns besides the metadata columns",
            ));
        }
        if def.kind == ObjectKind::Table
            && def
                .primary_key
                .iter()
                .any(|&k| !matches!(columns[k], ColumnSource::Value(_)))
        {
            return Err(RunnelError::plan(
                SqlState::INVALID_TABLE_DEFINITION,
                "a Kafka table's primary key must be made of value columns",
            ));
        }
        Ok(Layout {
            columns,
            value_schema: Schema::new(value_fields),
        })
    }

    /// The decoder of record values in `format`.
    pub fn decoder(&self, format: Format) -> RecordDecoder {
        RecordDecoder::new(format, &self.value_schema)
    }
}

/// Starts reading `entry`'s topic from its stored offsets, on `--workers` threads registered
/// together in the server's source threads (a reader that gets no partition ends at once).
pub fn start(
    shared: &Arc<Shared>,
    entry: Arc<CatalogEntry>,
    options: KafkaOptions,
    layout: Layout,
) -> Result<()> {
    let handle = SourceHandle::new("connecting");
    let readers = shared.config.workers.max(1);
    let catch_up = Arc::new(Mutex::new(CatchUpLog {
        last_logged: Instant::now(),
        was_backfilling: false,
    }));
    let runs: Vec<(String, SourceRun)> = (0..readers)
        .map(|reader| {
            let task = IngestTask {
                shared: shared.clone(),
                entry: entry.clone(),
                options: options.clone(),
                layout: layout.clone(),
                reader,
                readers,
                stop: handle.stop.clone(),
                progress: handle.progress.clone(),
                catch_up: catch_up.clone(),
            };
            let run: SourceRun = Box::new(move || task.run());
            (format!("runnel-kafka-{}", entry.name), run)
        })
        .collect();
    shared.sources.spawn_all(
        entry.id,
        runs,
        SourceOrigin::Kafka(Box::new(options)),
        handle,
    )
}

/// Whether reader `reader` of `readers` reads `partition`. A function of the partition's
/// number alone, so readers that listed the topic's partitions at different moments (one
/// added in between) still never share one.
pub(crate) fn reads_partition(partition: i32, reader: usize, readers: usize) -> bool {
    partition.rem_euclid(readers as i32) as usize == reader
}

/// When a source's readers last logged how far their catch-up got (one line for all of
/// them, not one per reader).
struct CatchUpLog {
    last_logged: Instant,
    was_backfilling: bool,
}

/// The stored next offsets of a source, per partition.
pub fn stored_offsets(store: &Store, id: ObjectId) -> Result<BTreeMap<i32, i64>> {
    let mut out = BTreeMap::new();
    for (key, value) in store.scan_prefix(&keys::kafka_offsets_prefix(id))? {
        let partition = keys::kafka_offset_partition(&key)
            .ok_or_else(|| RunnelError::internal("malformed Kafka offset key"))?;
        let bytes: [u8; 8] = value[..]
            .try_into()
            .map_err(|_| RunnelError::internal("stored Kafka offset is not 8 bytes"))?;
        out.insert(partition, i64::from_le_bytes(bytes));
    }
    Ok(out)
}

/// The writes that record `offsets` as a source's next offsets.
pub fn offset_writes(id: ObjectId, offsets: &BTreeMap<i32, i64>) -> Vec<(Vec<u8>, Vec<u8>)> {
    offsets
        .iter()
        .map(|(&p, &o)| (keys::kafka_offset(id, p), o.to_le_bytes().to_vec()))
        .collect()
}

struct IngestTask {
    shared: Arc<Shared>,
    entry: Arc<CatalogEntry>,
    options: KafkaOptions,
    layout: Layout,
    /// This thread's number among the source's readers, and their count.
    reader: usize,
    readers: usize,
    stop: Arc<AtomicBool>,
    progress: Arc<Mutex<IngestProgress>>,
    catch_up: Arc<Mutex<CatchUpLog>>,
}

/// What became of a chunk of records.
struct ChunkOutcome {
    /// Next offsets per partition after the chunk (or after the records kept, on a failure).
    offsets: BTreeMap<i32, i64>,
    /// Records of the chunk committed (bad ones included), per partition.
    records: BTreeMap<i32, u64>,
    ingested: usize,
    /// `on_error = 'fail'` hit a bad record: stop after committing what came before it.
    failed: Option<String>,
}

impl IngestTask {
    fn set_status(&self, status: String) {
        let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        if progress.status.starts_with("failed") {
            // Another reader stopped the source: the others only wind down.
            return;
        }
        // Logged when the kind of status changes (losing the broker, getting it back), not
        // on every retry.
        let kind = |s: &str| s.split(':').next().unwrap_or("").to_string();
        if kind(&progress.status) != kind(&status) {
            if status.starts_with("connecting") {
                tracing::warn!(source = %self.entry.name, "Kafka source {status}");
            } else if progress.status.starts_with("connecting") {
                tracing::info!(source = %self.entry.name, "Kafka source {status} again");
            }
        }
        progress.status = status;
    }

    /// Stops the source, every reader of it: one that fails (or meets a bad record with
    /// `on_error = 'fail'`) stops them all, as one thread reading every partition stopped.
    fn fail(&self, why: String) {
        self.set_status(format!("failed: {why}"));
        self.stop.store(true, Ordering::SeqCst);
    }

    fn status_is_connecting(&self) -> bool {
        let progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        progress.status.starts_with("connecting")
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps up to `d`, waking early when asked to stop.
    fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopped() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn run(self) {
        let client_id = format!("{}-{}", self.entry.name, self.entry.id);
        let reader = loop {
            if self.stopped() {
                return;
            }
            // Connecting reads the SASL password file again: a rotated password is picked up.
            match TopicReader::connect(
                &self.options.bootstrap_servers,
                &self.options.security,
                &self.options.topic,
                &client_id,
            ) {
                Ok(r) => break r,
                Err(e) => {
                    self.set_status(format!("connecting: {e}"));
                    self.pause(Duration::from_secs(1));
                }
            }
        };
        loop {
            match self.read(&reader) {
                Ok(()) => return,
                // Nothing of the chunk was written (the log and the offsets go in one write):
                // wait for room and read again from the stored offsets.
                Err(e) if e.sqlstate() == SqlState::DISK_FULL => {
                    tracing::warn!(source = %self.entry.name, "Kafka ingestion waits: {e}");
                    self.set_status(format!("waiting: {e}"));
                    while !self.stopped() && self.shared.store.check_space().is_err() {
                        self.pause(Duration::from_secs(1));
                    }
                    if self.stopped() {
                        return;
                    }
                    tracing::info!(source = %self.entry.name, "Kafka ingestion resumes: the disk has room again");
                }
                Err(e) => {
                    tracing::error!(source = %self.entry.name, "Kafka ingestion stopped: {e}");
                    self.fail(e.to_string());
                    return;
                }
            }
        }
    }

    fn read(&self, reader: &TopicReader) -> Result<()> {
        let store = &self.shared.store;
        let mut positions = stored_offsets(store, self.entry.id)?;
        for &p in reader.partitions() {
            // A partition added after the source was created: read all of it (as 'earliest').
            positions.entry(p).or_insert(0);
        }
        let timed = self.entry.watermark.is_some();
        if timed {
            // Every partition, not only this reader's: the stream's clock must wait for the
            // partitions of readers that have not started yet.
            let every: Vec<i32> = positions.keys().copied().collect();
            let writer = self.shared.writer(self.entry.id)?;
            futures::executor::block_on(writer.lock()).add_partitions(&every);
        }
        positions.retain(|&p, _| reads_partition(p, self.reader, self.readers));
        if positions.is_empty() {
            return Ok(());
        }
        reader.assign(&positions).map_err(RunnelError::from)?;
        let partitions: Vec<i32> = positions.keys().copied().collect();
        // When each partition last sent a record (idle partitions stop holding the
        // watermark back).
        let mut last_record: BTreeMap<i32, Instant> =
            partitions.iter().map(|&p| (p, Instant::now())).collect();
        {
            let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
            // End offsets (and so the backfill target) come with the first fetch responses.
            for (&p, &offset) in &positions {
                progress.partitions.insert(
                    p,
                    PartitionProgress {
                        offset,
                        end_offset: None,
                        backfill: None,
                        records: 0,
                    },
                );
            }
            if !progress.status.starts_with("failed") {
                progress.status = "running".into();
            }
        }
        let decoder = RecordDecoder::new(self.options.format, &self.layout.value_schema);
        let key_decoder = (self.entry.kind == ObjectKind::Table).then(|| {
            let fields: Vec<Field> = self
                .entry
                .primary_key
                .iter()
                .map(|&k| self.entry.schema.field(k).clone())
                .collect();
            RecordDecoder::new(Format::Json, &Schema::new(fields))
        });
        let dlq = match &self.options.on_error {
            OnError::DeadLetter(topic) => Some(DeadLetters::connect(
                &self.options.bootstrap_servers,
                &self.options.security,
                topic,
            )?),
            _ => None,
        };
        let mut window_start = Instant::now();
        let mut window_count = 0usize;
        let mut quiet_since: Option<Instant> = None;
        while !self.stopped() {
            let (records, error) = reader.poll_chunk(CHUNK_RECORDS, POLL_WAIT, POLL_LINGER);
            if let Some(e) = &error {
                quiet_since = None;
                if records.is_empty() {
                    self.set_status(format!("connecting: {e}"));
                    self.pause(Duration::from_millis(200));
                }
            }
            let now = Instant::now();
            for r in &records {
                last_record.insert(r.partition(), now);
            }
            if timed && records.is_empty() {
                self.mark_idle(&last_record)?;
            }
            if !records.is_empty() {
                let outcome =
                    self.ingest(&records, &decoder, key_decoder.as_ref(), dlq.as_ref())?;
                window_count += outcome.ingested;
                {
                    let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
                    for (p, o) in &outcome.offsets {
                        let part = progress.partitions.entry(*p).or_default();
                        part.offset = *o;
                        part.records += outcome.records.get(p).copied().unwrap_or(0);
                    }
                }
                if let Some(why) = outcome.failed {
                    self.fail(why);
                    return Ok(());
                }
                if error.is_none() {
                    self.set_status("running".into());
                }
            } else if error.is_none() {
                // librdkafka reports a lost broker now and then, not at every poll: without
                // records, the source is running again only after a while without errors.
                let quiet = *quiet_since.get_or_insert(now);
                if !self.status_is_connecting() || quiet.elapsed() >= QUIET_BEFORE_RUNNING {
                    self.set_status("running".into());
                }
            }
            let elapsed = window_start.elapsed();
            if elapsed >= Duration::from_secs(1) {
                let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
                let rate = window_count as f64 / elapsed.as_secs_f64();
                progress.reader_rates.insert(self.reader, rate);
                progress.events_per_sec = progress.reader_rates.values().sum();
                for (&p, part) in progress.partitions.iter_mut() {
                    if !reads_partition(p, self.reader, self.readers) {
                        continue;
                    }
                    if let Some(high) = reader.cached_high_watermark(p) {
                        if part.end_offset.is_none() && high > part.offset {
                            // The first end offset seen: catching up to it is the backfill.
                            part.backfill = Some((part.offset, high));
                        }
                        part.end_offset = Some(high);
                    }
                    if part.backfill.is_some_and(|(_, to)| part.offset >= to) {
                        part.backfill = None;
                    }
                }
                let (done, total) = progress
                    .partitions
                    .values()
                    .filter_map(|p| p.backfill.map(|(from, to)| (p.offset - from, to - from)))
                    .fold((0, 0), |(d, t), (pd, pt)| (d + pd, t + pt));
                let mut log = self.catch_up.lock().unwrap_or_else(|p| p.into_inner());
                if total > 0 && log.last_logged.elapsed() >= BACKFILL_LOG_EVERY {
                    tracing::info!(
                        source = %self.entry.name,
                        "backfill {:.1}% ({done} of {total} records behind the end offsets seen at start), {:.0} events/s",
                        100.0 * done as f64 / total as f64,
                        progress.events_per_sec
                    );
                    log.last_logged = Instant::now();
                } else if total == 0 && log.was_backfilling {
                    tracing::info!(source = %self.entry.name, "backfill done; reading live");
                }
                log.was_backfilling = total > 0;
                window_start = Instant::now();
                window_count = 0;
            }
        }
        Ok(())
    }

    /// Marks partitions idle that sent nothing for `idle_timeout` and have nothing left to
    /// read, so they stop holding the stream's watermark back.
    fn mark_idle(&self, last_record: &BTreeMap<i32, Instant>) -> Result<()> {
        let caught_up: Vec<i32> = {
            let progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
            last_record
                .iter()
                .filter(|(_, at)| at.elapsed() >= self.options.idle_timeout)
                .filter(|(p, _)| {
                    progress
                        .partitions
                        .get(p)
                        .is_some_and(|part| part.end_offset.is_some_and(|end| part.offset >= end))
                })
                .map(|(&p, _)| p)
                .collect()
        };
        if caught_up.is_empty() {
            return Ok(());
        }
        let writer = self.shared.writer(self.entry.id)?;
        let mut locked = futures::executor::block_on(writer.lock());
        let idle = locked.idle_partitions();
        let newly: Vec<i32> = caught_up
            .into_iter()
            .filter(|p| !idle.contains(p))
            .collect();
        if !newly.is_empty() && locked.set_idle(&self.shared.store, &newly)? {
            drop(locked);
            self.shared.worker.wake();
        }
        Ok(())
    }

    /// Decodes and commits one chunk; returns the offsets reached.
    fn ingest(
        &self,
        records: &[KafkaRecord<'_>],
        decoder: &RecordDecoder,
        key_decoder: Option<&RecordDecoder>,
        dlq: Option<&DeadLetters>,
    ) -> Result<ChunkOutcome> {
        let is_table = key_decoder.is_some();
        // Tables: a record without a value is a tombstone, not a bad record.
        let value_records: Vec<usize> = (0..records.len())
            .filter(|&i| !is_table || records[i].payload().is_some())
            .collect();
        let values: Vec<Option<&[u8]>> = value_records
            .iter()
            .map(|&i| records[i].payload())
            .collect();
        let decoded = decoder.decode(&values);
        let mut errors: Vec<(usize, String)> = decoded
            .errors
            .iter()
            .map(|(i, e)| (value_records[*i], e.clone()))
            .collect();
        let row_records: Vec<usize> = decoded.rows.iter().map(|&r| value_records[r]).collect();

        let mut tombstones: Vec<usize> = Vec::new();
        let mut key_batch = None;
        if let Some(kd) = key_decoder {
            let candidates: Vec<usize> = (0..records.len())
                .filter(|&i| records[i].payload().is_none())
                .collect();
            let key_texts: Vec<Option<Vec<u8>>> = candidates
                .iter()
                .map(|&i| records[i].key().map(|k| key_as_json(k, kd.schema())))
                .collect();
            let key_refs: Vec<Option<&[u8]>> = key_texts.iter().map(|k| k.as_deref()).collect();
            let keys = kd.decode(&key_refs);
            for (i, e) in &keys.errors {
                errors.push((candidates[*i], format!("tombstone key: {e}")));
            }
            tombstones = keys.rows.iter().map(|&r| candidates[r]).collect();
            key_batch = Some(keys.batch);
        }
        errors.sort_by_key(|(i, _)| *i);

        // on_error = 'fail': keep only what precedes the first bad record.
        let (cut, failed) = match (&self.options.on_error, errors.first()) {
            (OnError::Fail, Some((i, why))) => (*i, Some(self.describe(&records[*i], why))),
            _ => (records.len(), None),
        };
        let mut offsets: BTreeMap<i32, i64> = BTreeMap::new();
        let mut counts: BTreeMap<i32, u64> = BTreeMap::new();
        for r in &records[..cut] {
            let next = offsets.entry(r.partition()).or_insert(0);
            *next = (*next).max(r.offset() + 1);
            *counts.entry(r.partition()).or_insert(0) += 1;
        }
        let bad: Vec<&(usize, String)> = errors.iter().filter(|(i, _)| *i < cut).collect();
        if let Some(dlq) = dlq {
            for (i, why) in &bad {
                dlq.send(&records[*i], why, self.options.topic.as_str())?;
            }
            if !bad.is_empty() {
                dlq.flush()?;
            }
        }
        if !bad.is_empty() || failed.is_some() {
            let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
            progress.errors += bad.len() as u64 + u64::from(failed.is_some());
            if let Some((i, why)) = bad.last() {
                progress.last_error = Some(self.describe(&records[*i], why));
            }
            if let Some(f) = &failed {
                progress.last_error = Some(f.clone());
            }
        }

        let kept: Vec<u32> = (0..row_records.len())
            .filter(|&r| row_records[r] < cut)
            .map(|r| r as u32)
            .collect();
        let rows = take_rows(&decoded.batch, &kept)?;
        let row_records: Vec<usize> = kept.iter().map(|&r| row_records[r as usize]).collect();
        let data = relation_rows(&self.entry, &self.layout, records, &rows, &row_records)?;
        let writer = self.shared.writer(self.entry.id)?;
        let mut locked = futures::executor::block_on(writer.lock());
        let mut extra = crate::writer::batch_for_rows(&data);
        for (k, v) in offset_writes(self.entry.id, &offsets) {
            extra.put(k, v);
        }
        let ingested = data.num_rows() + tombstones.iter().filter(|&&i| i < cut).count();
        if is_table {
            // Apply upserts and tombstones in record order.
            let keys =
                key_batch.unwrap_or_else(|| RecordBatch::new_empty(Arc::new(Schema::empty())));
            let mut ops: Vec<(usize, TableOp)> = row_records
                .iter()
                .enumerate()
                .map(|(row, &rec)| (rec, TableOp::Upsert(row as u32)))
                .collect();
            ops.extend(
                tombstones
                    .iter()
                    .enumerate()
                    .filter(|(_, &rec)| rec < cut)
                    .map(|(k, &rec)| (rec, TableOp::Delete(k as u32))),
            );
            ops.sort_by_key(|(rec, _)| *rec);
            let ops: Vec<TableOp> = ops.into_iter().map(|(_, op)| op).collect();
            upsert(
                &self.shared,
                &self.entry,
                &mut locked,
                &data,
                &keys,
                &ops,
                extra,
            )?;
        } else {
            let recipe =
                KafkaRecipe::of_records(records[..cut].iter().map(|r| (r.partition(), r.offset())));
            locked.commit_stream(&self.shared.store, data, Some(recipe), extra)?;
        }
        drop(locked);
        self.shared.worker.wake();
        Ok(ChunkOutcome {
            offsets,
            records: counts,
            ingested,
            failed,
        })
    }

    fn describe(&self, record: &KafkaRecord<'_>, why: &str) -> String {
        format!(
            "partition {} offset {}: {why}",
            record.partition(),
            record.offset()
        )
    }
}

/// The relation's columns for the decoded rows (metadata columns filled from the records),
/// plus, for streams, the hidden partition/offset columns.
fn relation_rows(
    entry: &CatalogEntry,
    layout: &Layout,
    records: &[KafkaRecord<'_>],
    values: &RecordBatch,
    row_records: &[usize],
) -> Result<RecordBatch> {
    {
        let schema = &entry.schema;
        let partitions = || -> ArrayRef {
            Arc::new(Int32Array::from_iter_values(
                row_records.iter().map(|&i| records[i].partition()),
            ))
        };
        let offsets = || -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(
                row_records.iter().map(|&i| records[i].offset()),
            ))
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len() + 2);
        for (field, source) in schema.fields().iter().zip(&layout.columns) {
            let column: ArrayRef = match source {
                ColumnSource::Value(v) => values.column(*v).clone(),
                ColumnSource::Partition => partitions(),
                ColumnSource::Offset => offsets(),
                ColumnSource::Timestamp => Arc::new(
                    TimestampMicrosecondArray::from_iter(
                        row_records
                            .iter()
                            .map(|&i| records[i].timestamp().to_millis().map(|ms| ms * 1000)),
                    )
                    .with_timezone(runnel_sql::ddl::UTC),
                ),
                ColumnSource::Key => match field.data_type() {
                    DataType::Binary => Arc::new(BinaryArray::from_iter(
                        row_records.iter().map(|&i| records[i].key()),
                    )),
                    _ => Arc::new(StringArray::from_iter(row_records.iter().map(|&i| {
                        records[i]
                            .key()
                            .map(|k| String::from_utf8_lossy(k).into_owned())
                    }))),
                },
            };
            let column = if column.data_type() == field.data_type() {
                column
            } else {
                cast(&column, field.data_type())?
            };
            columns.push(column);
        }
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        if entry.kind == ObjectKind::Stream {
            fields.push(Field::new(KAFKA_PARTITION_COLUMN, DataType::Int32, false));
            fields.push(Field::new(KAFKA_OFFSET_COLUMN, DataType::Int64, false));
            columns.push(partitions());
            columns.push(offsets());
        }
        let options = RecordBatchOptions::new().with_row_count(Some(row_records.len()));
        Ok(RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &options,
        )?)
    }
}

/// A Kafka stream's rows from `records`, as ingestion makes them (records that do not decode
/// are left out; ingestion counted them, or copied them to the dead-letter topic, when it
/// read them first).
pub fn stream_rows(
    entry: &CatalogEntry,
    layout: &Layout,
    decoder: &RecordDecoder,
    records: &[KafkaRecord<'_>],
) -> Result<RecordBatch> {
    let values: Vec<Option<&[u8]>> = records.iter().map(|r| r.payload()).collect();
    let decoded = decoder.decode(&values);
    relation_rows(entry, layout, records, &decoded.batch, &decoded.rows)
}

/// A record key as a JSON object of the key columns: an object is taken as is; for a
/// one-column key a bare JSON value, or else the key's text, is that column's value.
fn key_as_json(key: &[u8], key_schema: &SchemaRef) -> Vec<u8> {
    let trimmed = key.trim_ascii();
    if trimmed.first() == Some(&b'{') || key_schema.fields().len() != 1 {
        return key.to_vec();
    }
    let name = serde_json::to_string(key_schema.field(0).name()).unwrap_or_default();
    let value = match serde_json::from_slice::<serde_json::Value>(trimmed) {
        Ok(v) if !v.is_object() && !v.is_array() => v.to_string(),
        _ => serde_json::to_string(&String::from_utf8_lossy(key)).unwrap_or_default(),
    };
    format!("{{{name}:{value}}}").into_bytes()
}

/// The dead-letter producer of a stream with `on_error = 'dlq:<topic>'`.
struct DeadLetters {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
}

impl DeadLetters {
    /// A producer with the stream's own TLS/SASL settings (the dead-letter topic is on the
    /// stream's broker).
    fn connect(bootstrap: &str, security: &KafkaSecurity, topic: &str) -> Result<DeadLetters> {
        let producer: ThreadedProducer<DefaultProducerContext> = client_config(bootstrap, security)
            .map_err(RunnelError::from)?
            .set("message.timeout.ms", "0")
            .create()
            .map_err(|e| RunnelError::from(runnel_connectors::ConnectorError::from(e)))?;
        Ok(DeadLetters {
            producer,
            topic: topic.to_string(),
        })
    }

    fn send(&self, record: &KafkaRecord<'_>, why: &str, source_topic: &str) -> Result<()> {
        let partition = record.partition().to_string();
        let offset = record.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "runnel.error",
                value: Some(why),
            })
            .insert(Header {
                key: "runnel.source.topic",
                value: Some(source_topic),
            })
            .insert(Header {
                key: "runnel.source.partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "runnel.source.offset",
                value: Some(&offset),
            });
        let mut out: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic).headers(headers);
        if let Some(k) = record.key() {
            out = out.key(k);
        }
        if let Some(v) = record.payload() {
            out = out.payload(v);
        }
        send_waiting(&self.producer, out).map_err(Into::into)
    }

    /// Waits until the dead letters are on the broker, before their offsets are committed.
    fn flush(&self) -> Result<()> {
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(|e| RunnelError::from(runnel_connectors::ConnectorError::from(e)))
    }
}

/// Checks a Kafka relation's options and definition, and resolves where it starts reading:
/// connects to the broker (so a typo in the topic fails the CREATE, not later).
pub fn prepare(def: &RelationDef, options: &KafkaOptions) -> Result<(Layout, BTreeMap<i32, i64>)> {
    let layout = Layout::new(def)?;
    let reader = TopicReader::connect(
        &options.bootstrap_servers,
        &options.security,
        &options.topic,
        "runnel-create",
    )?;
    let start = reader.resolve(&options.start)?;
    Ok((layout, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_partition_has_exactly_one_reader() {
        for readers in 1..=5 {
            let mut per_reader = vec![Vec::new(); readers];
            for partition in 0..12 {
                let owners: Vec<usize> = (0..readers)
                    .filter(|&r| reads_partition(partition, r, readers))
                    .collect();
                assert_eq!(
                    owners.len(),
                    1,
                    "partition {partition} of {readers} readers"
                );
                per_reader[owners[0]].push(partition);
            }
            // Shares as even as whole partitions allow: 12 partitions split evenly by 1-4
            // readers, 5 readers get 2 or 3.
            let sizes: Vec<usize> = per_reader.iter().map(Vec::len).collect();
            assert!(
                sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
                "{sizes:?}"
            );
        }
        assert_eq!(
            (0..4)
                .filter(|&p| reads_partition(p, 1, 2))
                .collect::<Vec<_>>(),
            vec![1, 3]
        );
    }
}
