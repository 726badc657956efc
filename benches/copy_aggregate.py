"""COPY-and-aggregate benchmark: Runnel's incremental view maintenance versus DuckDB's batch
query over the same rows. Prints numbers; never fails on speed."""

import argparse
import os
import random
import re
import shutil
import subprocess
import tempfile
import time

import duckdb
import psycopg

VIEW = ("SELECT k, count(*) AS n, sum(x) AS s, avg(x) AS a, min(x) AS lo, max(x) AS hi "
        "FROM s GROUP BY k")


def generate(rows: int, keys: int, seed: int) -> bytes:
    rng = random.Random(seed)
    lines = [f"{rng.randrange(keys)},{rng.randrange(100000) / 4}\n" for _ in range(rows)]
    return "".join(lines).encode()


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def start_server(binary: str, data_dir: str):
    proc = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "RUNNEL_LOG": "warn"})
    line = proc.stdout.readline()
    m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, int(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/runnel")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    data = generate(args.rows, args.keys, args.seed)
    tmp = tempfile.mkdtemp(prefix="runnel-bench-")
    proc, port = start_server(args.bin, os.path.join(tmp, "data"))
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="runnel", dbname="runnel",
                             autocommit=True) as conn:
            conn.execute("CREATE STREAM s (k BIGINT, x DOUBLE PRECISION)")
            conn.execute(f"CREATE MATERIALIZED VIEW v AS {VIEW}")
            t0 = time.perf_counter()
            with conn.cursor().copy("COPY s FROM STDIN WITH (FORMAT csv)") as copy:
                step = 1 << 20
                for i in range(0, len(data), step):
                    copy.write(data[i:i + step])
            t1 = time.perf_counter()
            conn.execute("FLUSH")
            t2 = time.perf_counter()
            runnel_rows = conn.execute("SELECT k, n, s, lo, hi FROM v ORDER BY k").fetchall()
        rss = peak_rss_mib(proc.pid)
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)

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

    same = [tuple(r) for r in runnel_rows] == [tuple(r) for r in duck_rows]
    maintain = t2 - t1
    total = t2 - t0
    duck_time = d1 - d0
    print(f"rows={args.rows} keys={args.keys}")
    print(f"runnel: copy {t1 - t0:.3f}s, view maintenance after copy {maintain:.3f}s, "
          f"end-to-end {total:.3f}s")
    print(f"runnel: view maintenance {args.rows / maintain:,.0f} rows/s, "
          f"end-to-end {args.rows / total:,.0f} rows/s, peak RSS {rss:.0f} MiB")
    print(f"duckdb (1 thread, table already loaded): {duck_time:.3f}s "
          f"= {args.rows / duck_time:,.0f} rows/s")
    print(f"ratio runnel maintenance / duckdb query: {maintain / duck_time:.2f}x")
    print(f"results identical: {same}")


if __name__ == "__main__":
    main()
