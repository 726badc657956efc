//! The Nexmark benchmark's event generator: people, auctions and bids of an online auction
//! site, as three streams (`connector = 'nexmark'`, `table = 'person' | 'auction' | 'bid'`).
//!
//! It follows the Nexmark event model (the Beam/Flink generator's): one global sequence of
//! events in which every 50 events hold 1 person, 3 auctions and 46 bids; ids grow with the
//! sequence; auctions are sold by recent people; bids go to recent auctions and come from
//! recent people, half of them to "hot" auctions and three quarters from "hot" bidders;
//! prices are log-uniform. Event `n`'s time is `start_time + n / event_time_rate`.
//!
//! Everything about event `n` is a pure function of `(seed, n)`, so a stream can resume at
//! any event after a restart and every run with the same seed produces the same events.
//!
//! A stream's events are cut into `partitions` (like a Kafka topic's), so several threads can
//! generate one stream: the sequence's groups of 50 events go to the partitions in turn
//! (group `g` to partition `g mod partitions`), so every partition holds the same mix of
//! kinds and all of them move through event time together. The partitioning depends only on
//! the stream's options, never on how many threads generate it.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int32Array, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::error::{ConnectorError, Result};

const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const BID_PROPORTION: u64 = 46;
const PROPORTION_DENOMINATOR: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;
/// A stream's partitions unless its `partitions` option says otherwise: one thread generates
/// it. On the 2-core machine we measure on, more threads did not generate faster (every chunk's
/// RocksDB write runs under the stream's one writer lock) and cost Nexmark q8 about a fifth at
/// two workers. Fixed: the stored positions of an existing stream are per partition.
pub const DEFAULT_PARTITIONS: u32 = 1;
/// At most this many partitions (each is a row of SHOW PROGRESS and a stored position).
const MAX_PARTITIONS: u32 = 1024;
const FIRST_PERSON_ID: i64 = 1000;
const FIRST_AUCTION_ID: i64 = 1000;
const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: u64 = 5;
const NUM_ACTIVE_PEOPLE: u64 = 1000;
const PERSON_ID_LEAD: u64 = 10;
const NUM_IN_FLIGHT_AUCTIONS: u64 = 100;
const AUCTION_ID_LEAD: u64 = 10;
const HOT_AUCTION_RATIO: u64 = 2;
const HOT_BIDDER_RATIO: u64 = 4;
const HOT_SELLER_RATIO: u64 = 4;
/// How long an auction runs, in event-time microseconds (10 s to 10 min).
const MIN_AUCTION_MICROS: u64 = 10_000_000;
const MAX_AUCTION_MICROS: u64 = 600_000_000;

const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const CITIES: [&str; 10] = [
    "phoenix",
    "los angeles",
    "san francisco",
    "boise",
    "portland",
    "bend",
    "redmond",
    "seattle",
    "kent",
    "cheyenne",
];
const STATES: [&str; 6] = ["az", "ca", "id", "or", "wa", "wy"];
const CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const URLS: [&str; 4] = [
    "https://www.nexmark.com/item.htm?query=1",
    "https://www.nexmark.com/item.htm?query=1&channel_id=1",
    "https://www.nexmark.com/item.htm?query=1&channel_id=2",
    "https://www.nexmark.com/item.htm?query=1&channel_id=3",
];
const ITEMS: [&str; 8] = [
    "vase", "lamp", "rug", "clock", "print", "chair", "mirror", "desk",
];
const ADJECTIVES: [&str; 6] = ["antique", "rare", "signed", "mint", "restored", "vintage"];

/// Which of the three Nexmark streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NexmarkTable {
    Person,
    Auction,
    Bid,
}

impl NexmarkTable {
    pub fn parse(text: &str) -> Result<Self> {
        match text.to_ascii_lowercase().as_str() {
            "person" => Ok(NexmarkTable::Person),
            "auction" => Ok(NexmarkTable::Auction),
            "bid" => Ok(NexmarkTable::Bid),
            other => Err(ConnectorError::Options(format!(
                "nexmark table '{other}' is not one of person, auction, bid"
            ))),
        }
    }

    /// The stream's columns as the generator makes them (TIMESTAMP columns may be declared
    /// TIMESTAMPTZ; a stream may declare any subset, in any order).
    pub fn schema(self) -> SchemaRef {
        let ts = || DataType::Timestamp(TimeUnit::Microsecond, None);
        let f = |name: &str, t: DataType| Field::new(name, t, false);
        let fields = match self {
            NexmarkTable::Person => vec![
                f("id", DataType::Int64),
                f("name", DataType::Utf8),
                f("email_address", DataType::Utf8),
                f("credit_card", DataType::Utf8),
                f("city", DataType::Utf8),
                f("state", DataType::Utf8),
                f("date_time", ts()),
                f("extra", DataType::Utf8),
            ],
            NexmarkTable::Auction => vec![
                f("id", DataType::Int64),
                f("item_name", DataType::Utf8),
                f("description", DataType::Utf8),
                f("initial_bid", DataType::Int64),
                f("reserve", DataType::Int64),
                f("date_time", ts()),
                f("expires", ts()),
                f("seller", DataType::Int64),
                f("category", DataType::Int64),
                f("extra", DataType::Utf8),
            ],
            NexmarkTable::Bid => vec![
                f("auction", DataType::Int64),
                f("bidder", DataType::Int64),
                f("price", DataType::Int64),
                f("channel", DataType::Utf8),
                f("url", DataType::Utf8),
                f("date_time", ts()),
                f("extra", DataType::Utf8),
            ],
        };
        Arc::new(Schema::new(fields))
    }

    /// Whether event `n` of the global sequence is of this kind.
    fn owns(self, n: u64) -> bool {
        let offset = n % PROPORTION_DENOMINATOR;
        match self {
            NexmarkTable::Person => offset < PERSON_PROPORTION,
            NexmarkTable::Auction => {
                (PERSON_PROPORTION..PERSON_PROPORTION + AUCTION_PROPORTION).contains(&offset)
            }
            NexmarkTable::Bid => offset >= PERSON_PROPORTION + AUCTION_PROPORTION,
        }
    }
}

/// A `connector = 'nexmark'` stream's options.
#[derive(Debug, Clone, PartialEq)]
pub struct NexmarkOptions {
    pub table: NexmarkTable,
    /// Events of the global sequence to generate (all kinds); `None`: no end.
    pub events: Option<u64>,
    /// Events generated per wall-clock second (all kinds); `None`: as fast as possible.
    pub rate: Option<f64>,
    pub seed: u64,
    /// Events per second of event time: event `n` happens at `start_time + n / event_time_rate`.
    pub event_time_rate: u64,
    /// Microseconds since the epoch of event 0.
    pub start_time: i64,
    /// How many partitions the events are cut into (see the module's docs).
    pub partitions: u32,
}

impl NexmarkOptions {
    /// The partition event `n` belongs to.
    pub fn partition_of(&self, n: u64) -> i32 {
        ((n / PROPORTION_DENOMINATOR) % self.partitions as u64) as i32
    }

    /// The options of a `connector = 'nexmark'` stream (`table` defaults to the stream's name).
    pub fn from_options(options: &[(String, String)], stream_name: &str) -> Result<Self> {
        let known = [
            "connector",
            "table",
            "events",
            "rate",
            "seed",
            "event_time_rate",
            "start_time",
            "partitions",
        ];
        if let Some((k, _)) = options.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            return Err(ConnectorError::Options(format!(
                "unknown option '{k}' for a nexmark stream (known: {})",
                known.join(", ")
            )));
        }
        let take = |key: &str| {
            options
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let number = |key: &str, text: &str| -> Result<u64> {
            text.trim().replace('_', "").parse::<u64>().map_err(|_| {
                ConnectorError::Options(format!("{key} = '{text}' is not a non-negative integer"))
            })
        };
        let table = NexmarkTable::parse(take("table").unwrap_or(stream_name))?;
        let events = take("events").map(|t| number("events", t)).transpose()?;
        let rate = match take("rate") {
            None => Some(10_000.0),
            Some(t) if t.eq_ignore_ascii_case("unlimited") => None,
            Some(t) => {
                let r = t.trim().parse::<f64>().ok().filter(|r| *r > 0.0).ok_or_else(|| {
                    ConnectorError::Options(format!(
                        "rate = '{t}' is not a positive number of events per second (or 'unlimited')"
                    ))
                })?;
                Some(r)
            }
        };
        let seed = take("seed")
            .map(|t| number("seed", t))
            .transpose()?
            .unwrap_or(0);
        let event_time_rate = take("event_time_rate")
            .map(|t| number("event_time_rate", t))
            .transpose()?
            .unwrap_or(10_000)
            .max(1);
        let start_time = match take("start_time") {
            None => 1_767_225_600_000_000, // 2026-01-01 00:00:00 UTC
            Some(t) => chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| d.timestamp_micros())
                .map_err(|_| {
                    ConnectorError::Options(format!(
                        "start_time = '{t}' is not an RFC 3339 time such as 2026-01-01T00:00:00Z"
                    ))
                })?,
        };
        let partitions = match take("partitions") {
            None => DEFAULT_PARTITIONS,
            Some(t) => number("partitions", t)
                .ok()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (1..=MAX_PARTITIONS).contains(n))
                .ok_or_else(|| {
                    ConnectorError::Options(format!(
                        "partitions = '{t}' is not a whole number from 1 to {MAX_PARTITIONS}"
                    ))
                })?,
        };
        Ok(NexmarkOptions {
            table,
            events,
            rate,
            seed,
            event_time_rate,
            start_time,
            partitions,
        })
    }
}

fn internal(e: datafusion::arrow::error::ArrowError) -> ConnectorError {
    ConnectorError::Internal(format!("nexmark batch: {e}"))
}

/// SplitMix64's finaliser: a bijective 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small fast generator seeded per event (SplitMix64).
struct Random(u64);

impl Random {
    /// Event `n`'s own stream: its start is a hash of (seed, n), so neighbouring events'
    /// streams do not overlap.
    fn for_event(seed: u64, n: u64) -> Self {
        Random(mix(seed ^ mix(n.wrapping_add(0x632B_E59B_D9B4_E019))))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// The id (base 0) of the last person created at or before event `n`.
fn last_base0_person_id(n: u64) -> u64 {
    // With one person per epoch, it is the epoch's own person (the first event of each).
    let epoch = n / PROPORTION_DENOMINATOR;
    epoch * PERSON_PROPORTION + (PERSON_PROPORTION - 1)
}

/// The id (base 0) of the last auction created at or before event `n`.
fn last_base0_auction_id(n: u64) -> u64 {
    let mut epoch = n / PROPORTION_DENOMINATOR;
    let mut offset = n % PROPORTION_DENOMINATOR;
    if offset < PERSON_PROPORTION {
        // Before this epoch's auctions: the previous epoch's last one.
        if epoch == 0 {
            return 0;
        }
        epoch -= 1;
        offset = AUCTION_PROPORTION - 1;
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        offset = AUCTION_PROPORTION - 1;
    } else {
        offset -= PERSON_PROPORTION;
    }
    epoch * AUCTION_PROPORTION + offset
}

/// A recent person (or one about to be created).
fn next_base0_person_id(n: u64, rng: &mut Random) -> u64 {
    let people = last_base0_person_id(n) + 1;
    let active = people.min(NUM_ACTIVE_PEOPLE);
    people - active + rng.below(active + PERSON_ID_LEAD)
}

/// A recent auction (or one about to be created).
fn next_base0_auction_id(n: u64, rng: &mut Random) -> u64 {
    let max = last_base0_auction_id(n);
    let min = max.saturating_sub(NUM_IN_FLIGHT_AUCTIONS);
    min + rng.below(max - min + 1 + AUCTION_ID_LEAD)
}

/// A log-uniform price between 1 and 1,000,000 dollars, in cents.
fn next_price(rng: &mut Random) -> i64 {
    // 10^(6u) as e^(6u ln 10): exp is several times cheaper than powf.
    ((rng.unit() * 6.0 * std::f64::consts::LN_10).exp() * 100.0).round() as i64
}

/// Generates the events of one stream.
pub struct NexmarkGenerator {
    options: NexmarkOptions,
    /// The declared columns: for each, its index in the generator's schema and its type.
    columns: Vec<(usize, DataType)>,
    schema: SchemaRef,
}

impl NexmarkGenerator {
    /// The version of what [`NexmarkGenerator::generate`] makes of the event numbers. A log
    /// keeps a generated chunk as its range only, so any change to the rows, their order or
    /// their partitions must raise it: entries made by another version cannot be rebuilt.
    pub const OUTPUT_VERSION: u32 = 1;

    /// A generator producing `declared`'s columns (matched by name to the table's columns).
    pub fn new(options: NexmarkOptions, declared: &Schema) -> Result<Self> {
        let natural = options.table.schema();
        let mut columns = Vec::with_capacity(declared.fields().len());
        for field in declared.fields() {
            let Some((index, source)) = natural.column_with_name(field.name()) else {
                let names: Vec<&str> = natural.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(ConnectorError::Options(format!(
                    "nexmark {:?} has no column \"{}\" (columns: {})",
                    options.table,
                    field.name(),
                    names.join(", ")
                )));
            };
            let compatible = match (source.data_type(), field.data_type()) {
                (DataType::Timestamp(_, _), DataType::Timestamp(TimeUnit::Microsecond, _)) => true,
                (a, b) => a == b,
            };
            if !compatible {
                return Err(ConnectorError::Options(format!(
                    "nexmark column \"{}\" is {}, not {}",
                    field.name(),
                    source.data_type(),
                    field.data_type()
                )));
            }
            columns.push((index, field.data_type().clone()));
        }
        Ok(NexmarkGenerator {
            options,
            columns,
            schema: Arc::new(declared.clone()),
        })
    }

    pub fn options(&self) -> &NexmarkOptions {
        &self.options
    }

    /// The global event number after `from` up to which a chunk of at most `rows` of this
    /// stream's events reaches (bounded by the `events` option), counting every partition's.
    pub fn chunk_end(&self, from: u64, rows: usize) -> u64 {
        let epochs = (rows as u64 / self.rows_per_epoch()).max(1);
        let end = from.saturating_add(epochs * PROPORTION_DENOMINATOR);
        match self.options.events {
            Some(limit) => end.min(limit),
            None => end,
        }
    }

    /// This stream's events among each [`PROPORTION_DENOMINATOR`] of the sequence.
    fn rows_per_epoch(&self) -> u64 {
        match self.options.table {
            NexmarkTable::Person => PERSON_PROPORTION,
            NexmarkTable::Auction => AUCTION_PROPORTION,
            NexmarkTable::Bid => BID_PROPORTION,
        }
    }

    /// At most how many of `from..to`'s events are this stream's in the partitions `starts`
    /// marks as this thread's: the builders are sized for it, since a batch's buffers stay
    /// as allocated (a person chunk sized by the whole range held 50 times its rows'
    /// memory, too large to be handed to the dataflow in memory).
    fn rows_at_most(&self, from: u64, to: u64, starts: &[Option<u64>]) -> usize {
        // A partition holds every `partitions`-th group of the range, starting anywhere.
        let epochs = (to - from).div_ceil(PROPORTION_DENOMINATOR) + 1;
        let mine = starts.iter().flatten().count() as u64;
        let partitions = (starts.len() as u64).max(1);
        let my_epochs = epochs.div_ceil(partitions) * mine;
        usize::try_from(my_epochs * self.rows_per_epoch()).unwrap_or(usize::MAX)
    }

    fn event_time(&self, n: u64) -> i64 {
        let rate = self.options.event_time_rate as i128;
        self.options.start_time + (n as i128 * 1_000_000 / rate) as i64
    }

    /// This stream's events among global events `from..to` in the partitions this thread
    /// generates, as the declared columns, and each row's partition. `starts[p]` is where
    /// partition `p` resumes (its events before are already generated), `None` for a partition
    /// that another thread generates.
    pub fn generate(
        &self,
        from: u64,
        to: u64,
        starts: &[Option<u64>],
    ) -> Result<(RecordBatch, Int32Array)> {
        let natural = self.options.table.schema();
        let n_cols = natural.fields().len();
        let capacity = self.rows_at_most(from, to, starts).min(1 << 20);
        let mut ints: Vec<Option<Int64Builder>> = Vec::with_capacity(n_cols);
        let mut strings: Vec<Option<StringBuilder>> = Vec::with_capacity(n_cols);
        let mut times: Vec<Option<TimestampMicrosecondBuilder>> = Vec::with_capacity(n_cols);
        for field in natural.fields() {
            ints.push(
                matches!(field.data_type(), DataType::Int64)
                    .then(|| Int64Builder::with_capacity(capacity)),
            );
            strings.push(
                matches!(field.data_type(), DataType::Utf8)
                    .then(|| StringBuilder::with_capacity(capacity, capacity * 16)),
            );
            times.push(
                matches!(field.data_type(), DataType::Timestamp(_, _))
                    .then(|| TimestampMicrosecondBuilder::with_capacity(capacity)),
            );
        }
        let int = |b: &mut Vec<Option<Int64Builder>>, i: usize, v: i64| {
            if let Some(b) = b[i].as_mut() {
                b.append_value(v);
            }
        };
        let text = |b: &mut Vec<Option<StringBuilder>>, i: usize, v: &str| {
            if let Some(b) = b[i].as_mut() {
                b.append_value(v);
            }
        };
        let time = |b: &mut Vec<Option<TimestampMicrosecondBuilder>>, i: usize, v: i64| {
            if let Some(b) = b[i].as_mut() {
                b.append_value(v);
            }
        };
        let mut rows = 0usize;
        let mut row_partitions: Vec<i32> = Vec::with_capacity(capacity);
        let mut scratch = String::new();
        let events = (from..to).filter_map(|n| {
            let p = self.options.partition_of(n);
            let start = starts.get(p as usize).copied().flatten()?;
            (n >= start && self.options.table.owns(n)).then_some((n, p))
        });
        for (n, partition) in events {
            row_partitions.push(partition);
            rows += 1;
            let mut rng = Random::for_event(self.options.seed, n);
            let at = self.event_time(n);
            match self.options.table {
                NexmarkTable::Person => {
                    let id = last_base0_person_id(n) as i64 + FIRST_PERSON_ID;
                    let first = rng.pick(&FIRST_NAMES);
                    let last = rng.pick(&LAST_NAMES);
                    int(&mut ints, 0, id);
                    scratch.clear();
                    scratch.push_str(first);
                    scratch.push(' ');
                    scratch.push_str(last);
                    text(&mut strings, 1, &scratch);
                    scratch.clear();
                    scratch.push_str(&last.to_ascii_lowercase());
                    scratch.push_str("@example.com");
                    text(&mut strings, 2, &scratch);
                    scratch.clear();
                    let card = rng.next();
                    for group in 0..4 {
                        if group > 0 {
                            scratch.push(' ');
                        }
                        scratch.push_str(&format!("{:04}", (card >> (group * 16)) % 10_000));
                    }
                    text(&mut strings, 3, &scratch);
                    let city = rng.below(CITIES.len() as u64) as usize;
                    text(&mut strings, 4, CITIES[city]);
                    text(&mut strings, 5, rng.pick(&STATES));
                    time(&mut times, 6, at);
                    text(&mut strings, 7, "");
                }
                NexmarkTable::Auction => {
                    let id = last_base0_auction_id(n) as i64 + FIRST_AUCTION_ID;
                    int(&mut ints, 0, id);
                    let adjective = rng.pick(&ADJECTIVES);
                    let item = rng.pick(&ITEMS);
                    scratch.clear();
                    scratch.push_str(adjective);
                    scratch.push(' ');
                    scratch.push_str(item);
                    text(&mut strings, 1, &scratch);
                    text(&mut strings, 2, &scratch);
                    let initial = next_price(&mut rng);
                    int(&mut ints, 3, initial);
                    int(&mut ints, 4, initial + next_price(&mut rng));
                    time(&mut times, 5, at);
                    let length =
                        MIN_AUCTION_MICROS + rng.below(MAX_AUCTION_MICROS - MIN_AUCTION_MICROS);
                    time(&mut times, 6, at + length as i64);
                    let seller = if rng.below(HOT_SELLER_RATIO) > 0 {
                        (last_base0_person_id(n) / HOT_SELLER_RATIO) * HOT_SELLER_RATIO
                    } else {
                        next_base0_person_id(n, &mut rng)
                    };
                    int(&mut ints, 7, seller as i64 + FIRST_PERSON_ID);
                    int(
                        &mut ints,
                        8,
                        FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES) as i64,
                    );
                    text(&mut strings, 9, "");
                }
                NexmarkTable::Bid => {
                    let auction = if rng.below(HOT_AUCTION_RATIO) > 0 {
                        (last_base0_auction_id(n) / HOT_AUCTION_RATIO) * HOT_AUCTION_RATIO
                    } else {
                        next_base0_auction_id(n, &mut rng)
                    };
                    let bidder = if rng.below(HOT_BIDDER_RATIO) > 0 {
                        (last_base0_person_id(n) / HOT_BIDDER_RATIO) * HOT_BIDDER_RATIO + 1
                    } else {
                        next_base0_person_id(n, &mut rng)
                    };
                    int(&mut ints, 0, auction as i64 + FIRST_AUCTION_ID);
                    int(&mut ints, 1, bidder as i64 + FIRST_PERSON_ID);
                    int(&mut ints, 2, next_price(&mut rng));
                    let channel = rng.below(CHANNELS.len() as u64) as usize;
                    text(&mut strings, 3, CHANNELS[channel]);
                    text(&mut strings, 4, URLS[channel]);
                    time(&mut times, 5, at);
                    text(&mut strings, 6, "");
                }
            }
        }
        let mut natural_columns: Vec<Option<ArrayRef>> = (0..n_cols)
            .map(|i| {
                if let Some(b) = ints[i].as_mut() {
                    Some(Arc::new(b.finish()) as ArrayRef)
                } else if let Some(b) = strings[i].as_mut() {
                    Some(Arc::new(b.finish()) as ArrayRef)
                } else {
                    times[i].as_mut().map(|b| Arc::new(b.finish()) as ArrayRef)
                }
            })
            .collect();
        let mut columns = Vec::with_capacity(self.columns.len());
        for (index, data_type) in &self.columns {
            let column = natural_columns[*index]
                .clone()
                .ok_or_else(|| ConnectorError::Options("nexmark column not generated".into()))?;
            let column = match column.data_type() == data_type {
                true => column,
                false => cast(&column, data_type).map_err(internal)?,
            };
            columns.push(column);
        }
        natural_columns.clear();
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let batch = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)
            .map_err(internal)?;
        Ok((batch, Int32Array::from(row_partitions)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(table: NexmarkTable) -> NexmarkOptions {
        NexmarkOptions::from_options(
            &[],
            match table {
                NexmarkTable::Person => "person",
                NexmarkTable::Auction => "auction",
                NexmarkTable::Bid => "bid",
            },
        )
        .unwrap()
    }

    fn every_partition() -> Vec<Option<u64>> {
        vec![Some(0); DEFAULT_PARTITIONS as usize]
    }

    fn partitioned(table: NexmarkTable, partitions: u32) -> NexmarkGenerator {
        let options = NexmarkOptions {
            partitions,
            ..options(table)
        };
        NexmarkGenerator::new(options, &table.schema()).unwrap()
    }

    /// Threads that each generate some of the partitions, from positions that differ per
    /// partition (as after a restart with another thread count), together produce every
    /// event after those positions exactly once, each tagged with its own partition.
    #[test]
    fn partitions_split_the_events_between_threads() {
        let g = partitioned(NexmarkTable::Bid, 8);
        let partitions = 8;
        // Partition p resumes at event 37 * p.
        let resume = |p: usize| 37 * p as u64;
        let all: Vec<Option<u64>> = (0..partitions).map(|p| Some(resume(p))).collect();
        let (whole, whole_partitions) = g.generate(0, 3000, &all).unwrap();
        assert!(whole.num_rows() > 2000);
        for threads in 1..=5 {
            let mut parts = Vec::new();
            let mut tagged = Vec::new();
            for thread in 0..threads {
                let starts: Vec<Option<u64>> = (0..partitions)
                    .map(|p| (p % threads == thread).then(|| resume(p)))
                    .collect();
                // In two chunks, split at a point inside a group of 50.
                for (from, to) in [(0, 1234), (1234, 3000)] {
                    let (rows, ps) = g.generate(from, to, &starts).unwrap();
                    assert!(ps.values().iter().all(|&p| p as usize % threads == thread));
                    parts.push(rows);
                    tagged.extend(ps.values().iter().copied());
                }
            }
            let joined = datafusion::arrow::compute::concat_batches(&whole.schema(), &parts)
                .expect("same schema");
            // Same events: sorted by event time, which is distinct per event.
            let order = |b: &RecordBatch| {
                let sorted =
                    datafusion::arrow::compute::sort_to_indices(b.column(5), None, None).unwrap();
                datafusion::arrow::compute::take_record_batch(b, &sorted).unwrap()
            };
            assert_eq!(order(&joined), order(&whole), "{threads} threads");
            let mut a = tagged.clone();
            let mut b = whole_partitions.values().to_vec();
            a.sort();
            b.sort();
            assert_eq!(a, b, "{threads} threads");
        }
        // Events before a partition's position are not generated again.
        let times = whole
            .column(5)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::TimestampMicrosecondArray>()
            .unwrap();
        let per_event = 1_000_000 / g.options().event_time_rate as i64;
        for (i, &p) in whole_partitions.values().iter().enumerate() {
            let n = ((times.value(i) - g.options().start_time) / per_event) as u64;
            assert_eq!(g.options().partition_of(n), p);
            assert!(n >= resume(p as usize));
            assert_eq!(p as u64, (n / 50) % partitions as u64);
        }
    }

    /// A chunk's buffers are sized for the stream's rows in it, not for the whole range of
    /// the sequence it spans (which holds 50 events per person): what the batch holds is what
    /// the dataflow is handed in memory and what its budget counts.
    #[test]
    fn chunks_hold_about_the_memory_of_their_rows() {
        for table in [
            NexmarkTable::Person,
            NexmarkTable::Auction,
            NexmarkTable::Bid,
        ] {
            for (partitions, mine) in [(1usize, vec![0usize]), (8, vec![1, 6])] {
                let g = partitioned(table, partitions as u32);
                let starts: Vec<Option<u64>> = (0..partitions)
                    .map(|p| mine.contains(&p).then_some(1234))
                    .collect();
                let from = 1000;
                let to = g.chunk_end(from, 16_384 * partitions / mine.len());
                let (batch, _) = g.generate(from, to, &starts).unwrap();
                let used: usize = batch
                    .columns()
                    .iter()
                    .map(|c| c.to_data().get_slice_memory_size().unwrap())
                    .sum();
                let held = batch.get_array_memory_size();
                assert!(batch.num_rows() > 10_000, "{table:?}");
                assert!(
                    held <= 2 * used,
                    "{table:?}, {partitions} partitions: {held} bytes held for {used} used"
                );
            }
        }
    }

    #[test]
    fn proportions_and_ids_follow_the_model() {
        let count = |t| {
            NexmarkGenerator::new(options(t), &t.schema())
                .unwrap()
                .generate(0, 5000, &every_partition())
                .unwrap()
                .0
        };
        let people = count(NexmarkTable::Person);
        let auctions = count(NexmarkTable::Auction);
        let bids = count(NexmarkTable::Bid);
        assert_eq!(
            (people.num_rows(), auctions.num_rows(), bids.num_rows()),
            (100, 300, 4600)
        );
        let ids = people
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .unwrap();
        assert_eq!(ids.values().to_vec(), (1000..1100).collect::<Vec<i64>>());
        let auction_ids = auctions
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .unwrap();
        assert_eq!(
            auction_ids.values().to_vec(),
            (1000..1300).collect::<Vec<i64>>()
        );
        // Every bid goes to an auction that exists or is about to.
        let bid_auctions = bids
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .unwrap();
        assert!(bid_auctions
            .values()
            .iter()
            .all(|&a| (1000..1300 + AUCTION_ID_LEAD as i64).contains(&a)));
    }

    #[test]
    fn the_same_seed_gives_the_same_events_in_any_chunking() {
        let g =
            NexmarkGenerator::new(options(NexmarkTable::Bid), &NexmarkTable::Bid.schema()).unwrap();
        let all = every_partition();
        let whole = g.generate(0, 1000, &all).unwrap().0;
        let a = g.generate(0, 437, &all).unwrap().0;
        let b = g.generate(437, 1000, &all).unwrap().0;
        let joined = datafusion::arrow::compute::concat_batches(&whole.schema(), [&a, &b]).unwrap();
        assert_eq!(whole, joined);
    }

    #[test]
    fn declared_columns_are_matched_by_name() {
        let declared = Schema::new(vec![
            Field::new("price", DataType::Int64, true),
            Field::new(
                "date_time",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                true,
            ),
        ]);
        let g = NexmarkGenerator::new(options(NexmarkTable::Bid), &declared).unwrap();
        let batch = g.generate(0, 100, &every_partition()).unwrap().0;
        assert_eq!(batch.num_columns(), 2);
        assert_eq!(batch.num_rows(), 92);
        let bad = Schema::new(vec![Field::new("nope", DataType::Int64, true)]);
        assert!(NexmarkGenerator::new(options(NexmarkTable::Bid), &bad).is_err());
    }
}
