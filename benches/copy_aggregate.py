"""COPY-and-aggregate benchmark: Runnel's view maintenance versus DuckDB's batch query over the
same rows. Prints numbers; never fails on speed.

Two measurements, both over the same N rows:
- backfill: the rows are COPYed into a stream first; then `CREATE MATERIALIZED VIEW` replays the
  stream's log through the aggregate and commits the view. Its duration is pure view
  maintenance (log decode, grouping, accumulators, view rows, the RocksDB write), comparable
  with DuckDB's query over an already-loaded table.
- live: the view exists first, then the rows arrive by COPY; the clock runs from the start of
  the COPY until FLUSH returns (ingest, logging and maintenance together, end to end).

Each is measured at every `--workers` count (default 1 and 2: `runnel serve --workers N`), and
the speed-up of each count over the first is printed, with how long each worker was busy
during the backfill and waited for another worker (the server's
`runnel_worker_*_seconds_total` metrics read before and after the CREATE).
"""

import argparse
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request

import duckdb
import psycopg

AGGREGATE = "SELECT k, count(*) AS n, sum(x) AS s, avg(x) AS a, min(x) AS lo, max(x) AS hi " \
            "FROM {src} GROUP BY k"


def generate(rows: int, keys: int, seed: int) -> bytes:
    rng = random.Random(seed)
    lines = [f"{rng.randrange(keys)},{rng.randrange(100000) / 4}\n" for _ in range(rows)]
    return "".join(lines).encode()


def rss_mib(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def start_server(binary: str, data_dir: str, extra_args: tuple[str, ...] = ()):
    """The server process, its port and its metrics port."""
    proc = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir,
                             "--metrics-listen", "127.0.0.1:0", *extra_args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "RUNNEL_LOG": "warn"})
    metrics = re.search(r"metrics on 127\.0\.0\.1:(\d+)", proc.stdout.readline())
    line = proc.stdout.readline()
    m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if not m or not metrics:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, int(m.group(1)), int(metrics.group(1))


WORKER_TIME = re.compile(r'^runnel_worker_(busy|idle)_seconds_total\{(?:waiting_for="(\w+)",)?'
                         r'worker="(\d+)"\} (\S+)$', re.M)


def worker_times(metrics_port: int) -> dict[int, dict[str, float]]:
    """Per worker: seconds busy, and idle by what it waited for (input, peers, control)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    times: dict[int, dict[str, float]] = {}
    for kind, waited, worker, value in WORKER_TIME.findall(text):
        times.setdefault(int(worker), {})[waited or kind] = float(value)
    return times


def spent(before: dict, after: dict) -> dict[int, dict[str, float]]:
    return {w: {k: after[w][k] - before.get(w, {}).get(k, 0.0) for k in after[w]} for w in after}


def copy_rows(conn, table: str, data: bytes):
    with conn.cursor().copy(f"COPY {table} FROM STDIN WITH (FORMAT csv)") as copy:
        step = 1 << 20
        for i in range(0, len(data), step):
            copy.write(data[i:i + step])


def view_rows(conn, view: str):
    return conn.execute(f"SELECT k, n, s, lo, hi FROM {view} ORDER BY k").fetchall()


def run_runnel(binary: str, data: bytes, workers: int) -> dict:
    """Backfill and live runs on one server started with `--workers workers`."""
    tmp = tempfile.mkdtemp(prefix="runnel-bench-")
    proc, port, metrics_port = start_server(binary, os.path.join(tmp, "data"),
                                            ("--workers", str(workers)))
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="runnel", dbname="runnel",
                             autocommit=True) as conn:
            # Backfill: load first, then create the view over the stored log.
            conn.execute("CREATE STREAM s (k BIGINT, x DOUBLE PRECISION)")
            c0 = time.perf_counter()
            copy_rows(conn, "s", data)
            c1 = time.perf_counter()
            rss_before = rss_mib(proc.pid, "VmRSS")
            times_before = worker_times(metrics_port)
            b0 = time.perf_counter()
            conn.execute(f"CREATE MATERIALIZED VIEW v AS {AGGREGATE.format(src='s')}")
            b1 = time.perf_counter()
            # A worker adds its busy time when it next waits: it has by now (the CREATE
            # returned after every worker answered).
            backfill_times = spent(times_before, worker_times(metrics_port))
            rss_backfill = rss_mib(proc.pid, "VmHWM")
            backfill_rows = view_rows(conn, "v")

            # Live: the view exists, then the rows arrive.
            conn.execute("CREATE STREAM s_live (k BIGINT, x DOUBLE PRECISION)")
            conn.execute(f"CREATE MATERIALIZED VIEW v_live AS {AGGREGATE.format(src='s_live')}")
            l0 = time.perf_counter()
            copy_rows(conn, "s_live", data)
            l1 = time.perf_counter()
            conn.execute("FLUSH")
            l2 = time.perf_counter()
            live_rows = view_rows(conn, "v_live")
        rss_peak = rss_mib(proc.pid, "VmHWM")
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "copy": c1 - c0, "backfill": b1 - b0, "live": l2 - l0, "live_copy": l1 - l0,
        "live_flush": l2 - l1, "rss_before": rss_before, "rss_backfill": rss_backfill,
        "rss_peak": rss_peak, "backfill_rows": backfill_rows, "live_rows": live_rows,
        "backfill_workers": backfill_times,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/runnel")
    ap.add_argument("--rows", type=int, default=4_000_000)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workers", default="1,2",
                    help="comma-separated worker counts to run the server with")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]

    data = generate(args.rows, args.keys, args.seed)
    runs = {w: run_runnel(args.bin, data, w) for w in counts}

    csv_path = os.path.join(tempfile.mkdtemp(prefix="runnel-bench-duck-"), "rows.csv")
    with open(csv_path, "wb") as f:
        f.write(data)
    duck = duckdb.connect()
    duck.execute("SET threads TO 1")
    duck.execute(f"CREATE TABLE s AS SELECT * FROM read_csv('{csv_path}', header=false, "
                 "columns={'k': 'BIGINT', 'x': 'DOUBLE'})")
    d0 = time.perf_counter()
    duck_rows = duck.execute(
        "SELECT k, count(*), sum(x), min(x), max(x) FROM s GROUP BY k ORDER BY k").fetchall()
    d1 = time.perf_counter()
    shutil.rmtree(os.path.dirname(csv_path), ignore_errors=True)

    expected = [tuple(r) for r in duck_rows]
    n = args.rows
    duck_time = d1 - d0
    print(f"rows={n} keys={args.keys} binary={args.bin}")
    for w, r in runs.items():
        print(f"--- workers={w}")
        print(f"copy into a stream with no view: {r['copy']:.3f}s = {n / r['copy']:,.0f} rows/s")
        print(f"view maintenance (backfill of the stored rows): {r['backfill']:.3f}s = "
              f"{n / r['backfill']:,.0f} rows/s, RSS {r['rss_before']:.0f} MiB before, "
              f"peak {r['rss_backfill']:.0f} MiB")
        print(f"live (COPY with the view in place, until FLUSH returns): {r['live']:.3f}s = "
              f"{n / r['live']:,.0f} rows/s (copy {r['live_copy']:.3f}s, "
              f"flush {r['live_flush']:.3f}s)")
        for worker, t in sorted(r["backfill_workers"].items()):
            # A wait is counted when it ends, so the wait for input before the CREATE is in
            # `input` too; busy time and waits for peers fall inside the backfill.
            busy = t.get("busy", 0)
            print(f"  worker {worker} during the backfill: busy {busy:.3f}s "
                  f"({busy / r['backfill']:.0%} of it), waited for peers "
                  f"{t.get('peers', 0):.3f}s")
        print(f"peak RSS of the whole run: {r['rss_peak']:.0f} MiB")
        print(f"ratio runnel backfill / duckdb query: {r['backfill'] / duck_time:.2f}x")
        print(f"ratio runnel live end-to-end / duckdb query: {r['live'] / duck_time:.2f}x")
        print("results identical to duckdb: "
              f"backfill {[tuple(x) for x in r['backfill_rows']] == expected}, "
              f"live {[tuple(x) for x in r['live_rows']] == expected}")
    print(f"duckdb (1 thread, table already loaded): {duck_time:.3f}s = "
          f"{n / duck_time:,.0f} rows/s")
    first = counts[0]
    print(f"\n{'workers':>8} {'backfill rows/s':>16} {'speed-up':>9} {'live rows/s':>13} "
          f"{'speed-up':>9}")
    for w, r in runs.items():
        base = runs[first]
        print(f"{w:>8} {n / r['backfill']:>16,.0f} {base['backfill'] / r['backfill']:>8.2f}x "
              f"{n / r['live']:>13,.0f} {base['live'] / r['live']:>8.2f}x")


if __name__ == "__main__":
    main()
