//! The broker's ceiling for the Kafka benchmark: a plain librdkafka consumer (the same bundled
//! librdkafka Runnel uses, no decoding, no state) reading every partition of a topic from
//! offset 0 to its high watermark as fast as it can.
//!
//! `cargo run --release -p runnel-connectors --example kafka_read_rate -- BOOTSTRAP TOPIC`
//! prints one line: `records=N bytes=B seconds=S records_per_sec=R`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::message::Message;
use runnel_connectors::kafka::TopicReader;
use runnel_connectors::StartPosition;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: kafka_read_rate BOOTSTRAP TOPIC");
        std::process::exit(2);
    }
    let reader = TopicReader::connect(&args[1], &args[2], "runnel-read-rate")
        .unwrap_or_else(|e| fail(&e.to_string()));
    let ends: BTreeMap<i32, i64> = reader
        .resolve(&StartPosition::Latest)
        .unwrap_or_else(|e| fail(&e.to_string()));
    let starts = reader
        .resolve(&StartPosition::Earliest)
        .unwrap_or_else(|e| fail(&e.to_string()));
    let total: i64 = ends.iter().map(|(p, e)| e - starts[p]).sum();
    reader
        .assign(&starts)
        .unwrap_or_else(|e| fail(&e.to_string()));
    let started = Instant::now();
    let (mut records, mut bytes) = (0i64, 0usize);
    let mut next = starts.clone();
    while next.iter().any(|(p, o)| *o < ends[p]) {
        let (chunk, error) =
            reader.poll_chunk(16_384, Duration::from_secs(5), Duration::from_millis(20));
        if let Some(e) = error {
            fail(&e.to_string());
        }
        if chunk.is_empty() {
            fail("no records for 5 seconds before reaching the high watermarks");
        }
        for m in &chunk {
            records += 1;
            bytes += m.payload().map_or(0, <[u8]>::len);
            let o = next.entry(m.partition()).or_insert(0);
            *o = (*o).max(m.offset() + 1);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "records={records} bytes={bytes} seconds={seconds:.3} records_per_sec={:.0} expected={total}",
        records as f64 / seconds
    );
}

fn fail(why: &str) -> ! {
    eprintln!("kafka_read_rate: {why}");
    std::process::exit(1);
}
