"""State-size benchmark: a GROUP BY view whose state is as large as its input, at several
`--state-cache-mb` budgets. Prints numbers; never fails on speed.

For each cache size, on a fresh data directory:
- live: `CREATE STREAM s (k BIGINT, x BIGINT)` and a view `SELECT k, count(*), sum(x) ... GROUP
  BY k`, then N rows with N distinct keys arrive by COPY (in statements of `--copy-rows` rows,
  default 100,000: a statement is applied atomically, so its changes are held in memory until
  its checkpoint) in unsorted key order (k = i * 2654435761
  mod 2^40, a bijection on i, so every row makes a new group). The clock runs from the start of
  the COPY until FLUSH returns: rows/s of ingest and view maintenance end to end, while the
  aggregate's state (one entry per key) outgrows a small cache and must live in RocksDB.
- memory: the server's RSS is sampled every 0.2 s during the run; the peak reported is the
  larger of the samples' maximum and VmHWM read at the end.
- correctness (cheap): `SELECT count(*), sum(n), sum(s) FROM v` must be (N, N, sum of x).
- disk: the size of the data directory after FLUSH and after a graceful stop (SIGTERM).
- restart: the server is started again on the same directory with the same cache: the time from
  process start until it prints its listening line, the time of the first point lookup on the
  view (the query alone, after connecting), and VmRSS right after that lookup.

The CSV input is generated once, before any clock starts, into a temporary file (in ~1M-row
chunks, never all in memory) and streamed from it in 1 MiB COPY chunks for every cache size.
"""

import argparse
import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import psycopg

MULTIPLIER = 2654435761
KEY_SPACE = 1 << 40
CHUNK_ROWS = 1_000_000


def key(i: int) -> int:
    return i * MULTIPLIER % KEY_SPACE


def generate_csv(path: str, rows: int, seed: int) -> int:
    """Writes `rows` rows (k, x) to `path`; returns the sum of x. `seed` offsets the keys (still a
    bijection, so still N distinct keys)."""
    with open(path, "w") as f:
        for start in range(0, rows, CHUNK_ROWS):
            end = min(start + CHUNK_ROWS, rows)
            f.write("".join(f"{key(i + seed)},{i % 1000}\n" for i in range(start, end)))
    full, rest = divmod(rows, 1000)
    return full * (999 * 1000 // 2) + rest * (rest - 1) // 2


def rss_mib(pid: int, field: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return float("nan")


class RssSampler:
    """Samples a process's VmRSS every `interval` seconds in a background thread."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid = pid
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            rss = rss_mib(self.pid, "VmRSS")
            if rss == rss:  # not NaN
                self.peak = max(self.peak, rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def start_server(binary: str, data_dir: str, extra_args: tuple[str, ...] = ()):
    """Starts the server; returns (process, port, seconds until the listening line)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir,
                             *extra_args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "RUNNEL_LOG": "warn"})
    line = proc.stdout.readline()
    startup = time.perf_counter() - t0
    m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if not m:
        proc.kill()
        proc.wait()
        raise SystemExit(f"server did not start: {line!r}")
    # Keep draining stdout so the server can never block on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, int(m.group(1)), startup


def stop_server(proc, timeout: float = 120.0) -> float:
    """SIGTERM and wait; kills after `timeout`. Returns the seconds the shutdown took."""
    t0 = time.perf_counter()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"  server did not stop within {timeout:.0f}s of SIGTERM; killed")
            proc.kill()
            proc.wait()
    return time.perf_counter() - t0


def connect(port: int):
    return psycopg.connect(host="127.0.0.1", port=port, user="runnel", dbname="runnel",
                           autocommit=True)


def copy_file(conn, table: str, path: str, rows_per_copy: int):
    """COPYs the file in statements of `rows_per_copy` rows: each statement becomes visible in
    the view atomically, so its changed state stays in memory until its checkpoint; loading in
    statements of bounded size is what keeps memory within the state cache."""
    with open(path, "rb") as f:
        while True:
            lines = list(itertools.islice(f, rows_per_copy))
            if not lines:
                return
            data = b"".join(lines)
            with conn.cursor().copy(f"COPY {table} FROM STDIN WITH (FORMAT csv)") as copy:
                for i in range(0, len(data), 1 << 20):
                    copy.write(data[i:i + (1 << 20)])


def dir_mib(path: str) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass  # removed while walking (compaction)
    return total / (1 << 20)


def run_one(binary: str, cache_mb: str, csv_path: str, rows: int, sum_x: int, seed: int,
            rows_per_copy: int) -> dict:
    tmp = tempfile.mkdtemp(prefix="runnel-bench-state-")
    data_dir = os.path.join(tmp, "data")
    cache_args = ("--state-cache-mb", cache_mb)
    out = {"cache": cache_mb}
    proc = None
    try:
        proc, port, _ = start_server(binary, data_dir, cache_args)
        with RssSampler(proc.pid) as sampler, connect(port) as conn:
            conn.execute("CREATE STREAM s (k BIGINT, x BIGINT)")
            conn.execute("CREATE MATERIALIZED VIEW v AS "
                         "SELECT k, count(*) AS n, sum(x) AS s FROM s GROUP BY k")
            t0 = time.perf_counter()
            copy_file(conn, "s", csv_path, rows_per_copy)
            t1 = time.perf_counter()
            conn.execute("FLUSH")
            t2 = time.perf_counter()
            # The maintenance's peak, before the check below: an ad-hoc query over the whole
            # view holds the view's rows in memory while it runs.
            peak = max(sampler.peak, rss_mib(proc.pid, "VmHWM"))
            got = conn.execute("SELECT count(*), sum(n), sum(s) FROM v").fetchone()
        query_peak = rss_mib(proc.pid, "VmHWM")
        out["rows_per_s"] = rows / (t2 - t0)
        out["peak_rss"] = peak
        print(f"  live: {t2 - t0:.3f}s = {rows / (t2 - t0):,.0f} rows/s "
              f"(copy {t1 - t0:.3f}s, flush {t2 - t1:.3f}s), peak RSS {peak:.0f} MiB "
              f"(with the full-view check query after it: {query_peak:.0f} MiB)")
        got = tuple(None if v is None else int(v) for v in got)
        expected = (rows, rows, sum_x)
        if got == expected:
            print("  results: ok")
        else:
            print(f"  results: MISMATCH count/sum(n)/sum(s) = {got}, expected {expected}")
        size_live = dir_mib(data_dir)
        stop_s = stop_server(proc)
        proc = None
        out["data_mib"] = dir_mib(data_dir)
        print(f"  data directory: {size_live:.0f} MiB after FLUSH, {out['data_mib']:.0f} MiB "
              f"after a graceful stop ({stop_s:.2f}s)")

        # Restart on the same directory and cache.
        proc, port, startup = start_server(binary, data_dir, cache_args)
        probe = rows // 2
        with connect(port) as conn:
            l0 = time.perf_counter()
            row = conn.execute(f"SELECT n, s FROM v WHERE k = {key(probe + seed)}").fetchall()
            l1 = time.perf_counter()
        rss_after = rss_mib(proc.pid, "VmRSS")
        out.update(restart_s=startup, lookup_s=l1 - l0, rss_restart=rss_after)
        print(f"  restart: listening after {startup:.3f} s, first lookup {l1 - l0:.4f} s, "
              f"RSS {rss_after:.0f} MiB")
        want = [(1, probe % 1000)]
        if [tuple(None if v is None else int(v) for v in r) for r in row] == want:
            print("  restart lookup: ok")
        else:
            print(f"  restart lookup: MISMATCH {row!r}, expected {want!r}")
        stop_server(proc)
        proc = None
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/runnel")
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--caches", default="256,16384",
                    help="comma-separated --state-cache-mb values (MiB)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--copy-rows", type=int, default=100_000,
                    help="rows per COPY statement (each is applied to the view atomically)")
    args = ap.parse_args()
    caches = [c.strip() for c in args.caches.split(",") if c.strip()]

    csv_dir = tempfile.mkdtemp(prefix="runnel-bench-state-csv-")
    csv_path = os.path.join(csv_dir, "rows.csv")
    try:
        g0 = time.perf_counter()
        sum_x = generate_csv(csv_path, args.rows, args.seed)
        g1 = time.perf_counter()
        print(f"rows={args.rows} (all keys distinct) binary={args.bin} caches={','.join(caches)} "
              f"MiB; input {os.path.getsize(csv_path) / (1 << 20):.1f} MiB CSV "
              f"generated in {g1 - g0:.1f}s")
        results = []
        for cache in caches:
            print(f"--state-cache-mb {cache}:")
            results.append(run_one(args.bin, cache, csv_path, args.rows, sum_x, args.seed,
                                   args.copy_rows))
    finally:
        shutil.rmtree(csv_dir, ignore_errors=True)

    print()
    header = (f"{'cache MiB':>10} {'rows/s':>12} {'peak RSS MiB':>13} {'data MiB':>9} "
              f"{'restart s':>10} {'lookup s':>9} {'RSS after restart MiB':>22}")
    print(header)
    for r in results:
        print(f"{r['cache']:>10} {r['rows_per_s']:>12,.0f} {r['peak_rss']:>13.0f} "
              f"{r['data_mib']:>9.0f} {r['restart_s']:>10.3f} {r['lookup_s']:>9.4f} "
              f"{r['rss_restart']:>22.0f}")


if __name__ == "__main__":
    main()
