"""Nexmark benchmark: Runnel's built-in Nexmark generator feeding each Nexmark query (q0-q5, q7,
q8; benches/nexmark_queries.py) and the 30-minute feature, one query per fresh server. Prints
numbers, writes an SVG chart and a JSON file; never fails on speed.

    .venv/bin/python benches/nexmark.py --bin target/release/runnel --events 10000000 \\
        [--queries q0,q1,...] [--out target/bench/nexmark.svg]
    scripts/bench.sh nexmark [--events N]     (builds the release binary first)

Each query runs at each `--workers` count (default 1,2: `runnel serve --workers N`), and the
speed-up of each count over the first (events/s, wall clock) is printed at the end. For each
query and count, two runs, each on its own fresh `runnel serve` (temporary data directory):

1. Throughput. CREATE STREAM for only the streams the query reads (q0, q1, q2, q5, q7 and
   feature_30m read bid; q3 and q8 person and auction; q4 auction and bid), each with
   `events = N, rate = 'unlimited'`, then at once CREATE MATERIALIZED VIEW. A generator starts
   when its stream is created, so the view catches up on what was generated before it existed
   by replaying the log, then follows live. The clock runs from the first CREATE STREAM until
   every generator reports `finished` in SHOW PROGRESS (polled every 50 ms) and a FLUSH
   (which waits until the dataflow has processed everything appended so far and committed a
   checkpoint) has returned. Events processed = the events of the streams the query reads
   (the generator's 1:3:46 person/auction/bid split of N, checked with SELECT count(*) on each
   stream afterwards). Reported:
   - events/s (wall): events processed / wall time;
   - CPU s: the server process's user+sys time from /proc/PID/stat, sampled right after FLUSH
     returned, minus the same sampled just before the first CREATE STREAM (so the server's
     start-up is left out); it covers every thread: the generators, the dataflow, RocksDB's
     background threads, pgwire;
     events per CPU-second ("per core") = events processed / CPU s. The generator threads'
     own CPU (threads named runnel-nexmark-*, from /proc/PID/task/*/stat) and the dataflow's
     (the coordinator runnel-dataflow and the workers runnel-worker-N) are reported apart,
     with events per CPU-second excluding the generator ("excl. gen");
   - peak RSS: VmHWM from /proc/PID/status at the end;
   - per dataflow worker, the seconds it was busy and waited for input (the coordinator's
     next entries), for peers (another worker's exchanged rows or end of a round) or for
     control (checkpoints): the server's `runnel_worker_*_seconds_total` metrics, read at
     the same two points.
   The targets drawn on the chart are per core: 2,000,000 events/s for q0-q2, 300,000 for the
   others.

2. Latency. The same streams throttled (`rate = --latency-rate`, default 200,000 events/s,
   `events` = rate * --latency-seconds, default 15 s), the view, and one sentinel view per
   stream read, `SELECT count(*) AS n FROM <stream>`. Two client threads poll, each on its
   own connection, every --poll-interval (20 ms):
   - SHOW PROGRESS: each generator's `offset` (the next global event number), with the wall
     time the request was sent (the server takes the generators' progress snapshot as the
     request arrives; the rest of SHOW PROGRESS can wait for the dataflow thread).
   - the sentinel views: their counts say how many events of each stream the last committed
     checkpoint reflects (stream s's c-th event is a known global event number: of every 50
     events 1 is a person, 3 are auctions, 46 are bids). All views are maintained by one
     dataflow thread and committed together in one atomic checkpoint at one input position,
     so a sentinel's count is also the position of the query's view in that checkpoint. The
     sentinel is used because most results do not say how far they got (q4 and q5 have no
     time column) and scanning a large view every 20 ms (q0: millions of rows) would load the
     machine it measures. Event n of stream s is "visible" at the reply time of the first poll
     whose sentinel for s counts all of s's events up to n.
   Arrival: a throttled generator commits its events in chunks (at most rate / 10 events
   and 16,384 rows; one atomic write of the rows and of the next event number to the stream's
   log), the chunk starting at event p at T + p / rate (it sleeps until then), and publishes
   its offset for SHOW PROGRESS right after a commit but only about once a second. A
   published offset o, first seen by the poll sent at t (the poll before it sent at t'), is
   the end of a chunk committed in (t', t]; so each published offset bounds T, and together
   they fix it to within a few milliseconds (the JSON's `schedule`: `fit_ms` is the width of
   the interval of T consistent with every published offset, negative when they disagree by
   that much, which is tolerated up to two poll intervals; it must come from at least 3
   published offsets per stream and be under 100 ms; the `finished` status, published at
   T + events / rate, is checked against it too). Then every
   chunk of the run is a
   sample: latency = visible(last event of the chunk) - (T + p / rate), about ten samples a
   second per stream, spread evenly over the checkpoint cycle. If the published offsets do
   not fit the schedule (the generator fell behind its rate), or SHOW PROGRESS was blocked
   so long that T is not known to 100 ms (SHOW PROGRESS also waits for the dataflow thread,
   which does not answer while it has a backlog, e.g. a debug build at 200,000/s on 2
   cores), only the published offsets are samples (latency = visible(o - 1) - t): exact when
   the polls are not blocked (otherwise a lower bound), but one sample a second at a phase
   locked to the checkpoint cycle, so biased; the method used is printed. Both are in the
   JSON.
   What the latency includes: from the chunk being durable in the stream's log to a SELECT
   seeing its effect in the view: waking the dataflow thread, reading and decoding the log
   entry, running it through the view's operators (and the sentinels'), waiting for the next
   checkpoint (views are served from the last committed checkpoint; one is due
   --checkpoint-interval-ms after new work arrived, the server's `--checkpoint-interval-ms`,
   1000 ms by default, so this wait alone averages about half the interval), writing it, and
   the polling resolution (up to one poll interval). Not included: generating the events.
   If the server cannot keep up with the latency rate, the latency grows with the backlog
   over the run; the achieved generation rate is printed. p99 is nearest-rank.

Results: a table on stdout, --out (SVG bar chart of events per CPU-second per query, log
scale, with the targets as lines) and the same path with .json (every number).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "python"))
from nexmark_queries import (  # noqa: E402
    QUERIES,
    QUERY_STREAMS,
    kind_count,
    stream_ddl,
    view_ddl,
)
from runnel_proc import RunnelProcess  # noqa: E402
from copy_aggregate import spent, worker_times  # noqa: E402  (same folder)
from kafka_harness import free_port  # noqa: E402

TARGET_PER_CORE = {"q0": 2_000_000, "q1": 2_000_000, "q2": 2_000_000}
DEFAULT_TARGET_PER_CORE = 300_000
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The generator's start time T must be known to within this for the chunk-schedule latencies.
MAX_FIT_S = 0.1
# ... from at least this many offsets published per stream while SHOW PROGRESS answered.
MIN_PUBLISHED = 3
# Rows of a stream per generator chunk (CHUNK_ROWS in crates/runnel/src/nexmark_ingest.rs).
GENERATOR_CHUNK_ROWS = 16_384


def target(query: str) -> int:
    return TARGET_PER_CORE.get(query, DEFAULT_TARGET_PER_CORE)


# ---------------------------------------------------------------------------------------------
# /proc


def cpu_seconds(pid: int) -> float:
    """user + sys CPU seconds of the whole process (all threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (threads of one name summed; names are cut at 15 chars)."""
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def status_mib(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------------------------------
# helpers


def start(binary: str, checkpoint_ms: int | None, workers: int | None = None,
          metrics_port: int | None = None) -> RunnelProcess:
    extra = ["--checkpoint-interval-ms", str(checkpoint_ms)] if checkpoint_ms else []
    if metrics_port:
        extra += ["--metrics-listen", f"127.0.0.1:{metrics_port}"]
    if workers:
        extra += ["--workers", str(workers)]
    proc = RunnelProcess(binary=binary, extra_args=extra)
    proc.start()
    return proc


def progress(conn: psycopg.Connection) -> dict[str, tuple]:
    """SHOW PROGRESS: stream -> (offset or None, status). A stream's events are cut into
    partitions, one row each, generated by several threads, each publishing its partitions
    about once a second: the offset is the least of the partitions shown (every event before
    it is committed, once all partitions are shown)."""
    out: dict[str, tuple] = {}
    for row in conn.execute("SHOW PROGRESS").fetchall():
        offset = None if row[2] is None else int(row[2])
        if row[0] in out:
            seen = out[row[0]][0]
            offset = None if seen is None or offset is None else min(seen, offset)
        out[row[0]] = (offset, row[9])
    return out


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def fmt_rate(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.0f}"


# ---------------------------------------------------------------------------------------------
# 1. throughput


def throughput_run(args, query: str) -> dict:
    streams = QUERY_STREAMS[query]
    ddl = stream_ddl(args.events, rate="unlimited", seed=args.seed,
                     event_time_rate=args.event_time_rate, streams=streams,
                     partitions=args.partitions)
    metrics_port = free_port()
    proc = start(args.bin, args.checkpoint_interval_ms, args.current_workers, metrics_port)
    try:
        pid = proc.proc.pid
        with proc.connect() as conn:
            # the server's start-up (opening RocksDB, ...) is not part of the measurement
            workers_before = worker_times(metrics_port)
            cpu_before = cpu_seconds(pid)
            threads_before = thread_cpu_seconds(pid)
            started = time.perf_counter()
            for s in streams:
                conn.execute(ddl[s])
            conn.execute(view_ddl(query))
            created = time.perf_counter() - started
            deadline = time.monotonic() + args.timeout
            last_report = time.monotonic()
            while True:
                p = progress(conn)
                if all(p.get(s, (None, ""))[1] == "finished" for s in streams):
                    break
                failed = [f"{s}: {p[s][1]}" for s in streams if s in p and
                          p[s][1].startswith("failed")]
                if failed:
                    raise RuntimeError(f"generator failed: {failed}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"generators not finished after {args.timeout} s: {p}")
                if time.monotonic() - last_report >= 10:
                    print(f"    ... {query}: {time.perf_counter() - started:.0f} s, generated "
                          f"{ {s: p.get(s, (None,))[0] for s in streams} }", flush=True)
                    last_report = time.monotonic()
                time.sleep(0.05)
            # (SHOW PROGRESS also waits for the dataflow thread: with a backlog it answers late)
            finished_seen = time.perf_counter() - started
            conn.execute("FLUSH")
            wall = time.perf_counter() - started
            cpu = cpu_seconds(pid) - cpu_before
            threads = {k: v - threads_before.get(k, 0.0)
                       for k, v in thread_cpu_seconds(pid).items()}
            peak = status_mib(pid, "VmHWM")
            workers = spent(workers_before, worker_times(metrics_port))
            # after the clock and the CPU sample: counting is work of its own
            counts = {s: conn.execute(f"SELECT count(*) FROM {s}").fetchone()[0] for s in streams}
            view_rows = conn.execute(f"SELECT count(*) FROM {query}").fetchone()[0]
    finally:
        proc.cleanup()
    expected = {s: kind_count(s, args.events) for s in streams}
    if counts != expected:
        print(f"    warning: {query}: stream row counts {counts}, expected {expected}")
    events = sum(counts.values())
    gen_cpu = sum(v for k, v in threads.items() if k.startswith("runnel-nexmark"))
    # The coordinator (runnel-dataflow) and the workers (runnel-worker-N).
    dataflow_cpu = sum(v for k, v in threads.items()
                       if k == "runnel-dataflow" or k.startswith("runnel-worker"))
    return {
        "events": events,
        "stream_rows": counts,
        "wall_s": wall,
        "create_s": created,
        "finished_seen_s": finished_seen,
        "events_per_s": events / wall,
        "cpu_s": cpu,
        "events_per_cpu_s": events / cpu if cpu > 0 else float("nan"),
        "generator_cpu_s": gen_cpu,
        "dataflow_cpu_s": dataflow_cpu,
        "events_per_cpu_s_excl_generator": events / (cpu - gen_cpu) if cpu > gen_cpu else
        float("nan"),
        "thread_cpu_s": threads,
        # Per worker: seconds busy, and waiting for input, peers or control (the server's
        # runnel_worker_*_seconds_total).
        "worker_s": workers,
        "peak_rss_mib": peak,
        "view_rows": view_rows,
    }


# ---------------------------------------------------------------------------------------------
# 2. latency


class Poller(threading.Thread):
    """Runs `poll(conn)` every `interval` on its own connection, recording
    (time sent, time replied, value)."""

    def __init__(self, proc: RunnelProcess, poll, interval: float):
        super().__init__(daemon=True)
        self.proc, self.poll, self.interval = proc, poll, interval
        self.samples: list[tuple[float, float, object]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self):
        try:
            with self.proc.connect() as conn:
                while not self.stop.is_set():
                    sent = time.monotonic()
                    value = self.poll(conn)
                    self.samples.append((sent, time.monotonic(), value))
                    rest = self.interval - (time.monotonic() - sent)
                    if rest > 0:
                        self.stop.wait(rest)
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            self.error = e


def latency_run(args, query: str) -> dict:
    streams = QUERY_STREAMS[query]
    rate = args.latency_rate
    events = max(1000, int(rate * args.latency_seconds))
    ddl = stream_ddl(events, rate=rate, seed=args.seed, event_time_rate=args.event_time_rate,
                     streams=streams, partitions=args.partitions)
    proc = start(args.bin, args.checkpoint_interval_ms, args.current_workers)
    final = {s: kind_count(s, events) for s in streams}
    try:
        with proc.connect() as conn:
            started = time.monotonic()
            created: dict[str, tuple[float, float]] = {}
            for s in streams:
                sent = time.monotonic()
                conn.execute(ddl[s])
                created[s] = (sent, time.monotonic())
            conn.execute(view_ddl(query))
            for s in streams:
                conn.execute(f"CREATE MATERIALIZED VIEW probe_{s} AS SELECT count(*) AS n FROM {s}")
            views_ready = time.monotonic()
            progress_poller = Poller(proc, progress, args.poll_interval)

            def probe(c):
                out = {}
                for s in streams:
                    row = c.execute(f"SELECT n FROM probe_{s}").fetchone()
                    out[s] = 0 if row is None or row[0] is None else int(row[0])
                return out

            probe_poller = Poller(proc, probe, args.poll_interval)
            progress_poller.start()
            probe_poller.start()
            deadline = started + args.latency_seconds * 4 + 60
            finished_at = None
            while time.monotonic() < deadline:
                time.sleep(0.1)
                if progress_poller.error or probe_poller.error:
                    break
                done = (progress_poller.samples and probe_poller.samples and
                        all(progress_poller.samples[-1][2].get(s, (None, ""))[1] == "finished"
                            for s in streams) and probe_poller.samples[-1][2] == final)
                if done:
                    # the first probe reply that showed every event
                    finished_at = next(replied for _, replied, counts in probe_poller.samples
                                       if counts == final)
                    break
            progress_poller.stop.set()
            probe_poller.stop.set()
            progress_poller.join(5)
            probe_poller.join(5)
            for poller in (progress_poller, probe_poller):
                if poller.error:
                    raise poller.error
    finally:
        proc.cleanup()

    lat = analyse_latency(streams, rate, events, progress_poller.samples, probe_poller.samples,
                          views_ready, args.poll_interval, created)
    lat.update({
        "duration_s": (finished_at or time.monotonic()) - started,
        # from the last event's scheduled generation time to the view showing it
        "caught_up_after_generation_s": None if finished_at is None else
        finished_at - (min(c[0] for c in created.values()) + events / rate),
        "caught_up": finished_at is not None,
        "progress_polls": len(progress_poller.samples),
        "probe_polls": len(probe_poller.samples),
    })
    return lat


def chunks(stream: str, events: int, rate: float) -> list[tuple[int, int]]:
    """The generator's chunks [from, to) of global event numbers when throttled to `rate`
    (crates/runnel/src/nexmark_ingest.rs: at most CHUNK_ROWS rows of the stream, whole groups
    of 50 events, and at most rate / 10 events, so about ten chunks a second)."""
    per_group = {"person": 1, "auction": 3, "bid": 46}[stream]
    groups = max(1, GENERATOR_CHUNK_ROWS // per_group)
    max_events = max(50, int(rate / 10))
    out, pos = [], 0
    while pos < events:
        to = min(pos + groups * 50, events, pos + max_events)
        out.append((pos, to))
        pos = to
    return out


def analyse_latency(streams, rate, events, progress_samples, probe_samples, views_ready,
                    poll_interval, created) -> dict:
    """Latencies from the two pollers' samples (see the module docstring). `created`: stream ->
    (time CREATE STREAM was sent, time it returned)."""

    def visible(stream: str, upto: int) -> float | None:
        """Reply time of the first probe showing all of stream's events before `upto`."""
        needed = kind_count(stream, upto)
        return next((replied for _, replied, counts in probe_samples
                     if counts.get(stream, 0) >= needed), None)

    published: list[float] = []  # latencies of the events at the published offsets
    modelled: list[float] = []  # latencies of every chunk's last event, from the schedule
    unseen = 0
    schedule: dict[str, dict] = {}
    achieved = []
    tolerance = 2 * poll_interval + 0.02
    for s in streams:
        # (offset, sent time of the first poll showing it, sent time of the poll before)
        changes: list[tuple[int, float, float]] = []
        last, previous_sent = None, float("-inf")
        last_running_sent, finished_sent = float("-inf"), None
        for sent, _, p in progress_samples:
            offset, status = p.get(s, (None, ""))
            if status == "finished":
                if finished_sent is None:
                    finished_sent = sent
            else:
                last_running_sent = sent
            if offset is not None:
                # A new offset is published right after a chunk was committed (the 'finished'
                # status is published later, after the throttle's sleep: not a sample).
                if offset != last and status == "running" and offset > 0:
                    changes.append((offset, sent, previous_sent))
                last = offset
            previous_sent = sent
        for offset, sent, _ in changes:
            if sent < views_ready:
                continue
            v = visible(s, offset)
            if v is None:
                unseen += 1
            else:
                published.append(v - sent)
        # The generation rate: from the published offsets whose time is known to a few polls
        # (with a blocked SHOW PROGRESS, the first poll showing an offset can be much later).
        precise = [(o, sent) for o, sent, prev in changes if sent - prev <= 3 * poll_interval]
        if len(precise) >= 2 and precise[-1][1] > precise[0][1]:
            achieved.append((precise[-1][0] - precise[0][0]) / (precise[-1][1] - precise[0][1]))

        # The throttled generator commits the chunk starting at event p at T + p / rate.
        # Each published offset o (the end of a chunk starting at p) was committed between
        # the poll before the one that showed it and that one: T lies in
        # (previous - p / rate, sent - p / rate].
        table = chunks(s, events, rate)
        start_of = {to: frm for frm, to in table}
        lo, hi, off_grid = float("-inf"), float("inf"), 0
        for offset, sent, prev in changes:
            if offset not in start_of:
                off_grid += 1
                continue
            p = start_of[offset]
            lo, hi = max(lo, prev - p / rate), min(hi, sent - p / rate)
        lo = max(lo, created[s][0])  # the generator started during its CREATE STREAM
        fit = hi - lo
        t_start = (lo + hi) / 2
        # Check against 'finished', published after the last sleep, at T + events / rate:
        # after the last poll that showed the generator running, no later than the first
        # that showed it finished.
        if finished_sent is not None:
            lo = max(lo, last_running_sent - events / rate)
            hi = min(hi, finished_sent - events / rate)
        # On schedule: enough published offsets were seen (SHOW PROGRESS was not blocked for
        # most of the run), they and 'finished' agree, and they fix T to within MAX_FIT_S.
        consistent = (len(changes) >= MIN_PUBLISHED and off_grid == 0
                      and finished_sent is not None and lo <= hi + tolerance
                      and fit <= MAX_FIT_S)
        schedule[s] = {
            "published_offsets": len(changes),
            "offsets_off_the_chunk_grid": off_grid,
            "fit_ms": 1000 * fit if changes else None,
            "finish_check_ms": 1000 * (hi - lo),
            "on_schedule": consistent,
        }
        if not consistent:
            continue
        for frm, to in table:
            arrived = t_start + frm / rate
            if arrived < views_ready:
                continue
            v = visible(s, to)
            if v is None:
                unseen += 1
            else:
                modelled.append(v - arrived)
    on_schedule = all(x["on_schedule"] for x in schedule.values())
    primary = modelled if on_schedule and modelled else published

    def summary(values: list[float]) -> dict:
        return {
            "samples": len(values),
            "p50_ms": 1000 * percentile(values, 50),
            "p99_ms": 1000 * percentile(values, 99),
            "min_ms": 1000 * min(values) if values else float("nan"),
            "max_ms": 1000 * max(values) if values else float("nan"),
        }

    return {
        "rate": rate,
        "events": events,
        "achieved_rate": min(achieved) if len(achieved) == len(streams) else None,
        "method": "chunk schedule" if primary is modelled else "published offsets",
        **summary(primary),
        "unseen": unseen,
        "published_offsets": summary(published),
        "chunk_schedule": summary(modelled),
        "schedule": schedule,
        "latencies_ms": [round(1000 * x, 1) for x in primary],
    }


# ---------------------------------------------------------------------------------------------
# output


def ms(x) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:,.0f}"


def describe_latency(lat: dict) -> str:
    pub = lat["published_offsets"]
    achieved = lat["achieved_rate"]
    text = (f"latency at {lat['rate']:,} events/s (generated at "
            f"{'?' if achieved is None else f'{achieved:,.0f}'}/s): p50 {ms(lat['p50_ms'])} ms, "
            f"p99 {ms(lat['p99_ms'])} ms, min {ms(lat['min_ms'])}, max {ms(lat['max_ms'])} ms "
            f"over {lat['samples']} samples ({lat['method']}; at the published offsets alone: "
            f"p50 {ms(pub['p50_ms'])} ms over {pub['samples']})")
    if not lat["caught_up"]:
        text += "; the view did not show every event before the deadline"
    else:
        text += (f"; the view showed every event {lat['caught_up_after_generation_s']:.2f} s "
                 f"after the last one was due")
    if lat["method"] != "chunk schedule":
        text += (" [SHOW PROGRESS was blocked for most of the run (it waits for the dataflow "
                 "thread, which had a backlog), so arrival times are unknown: the server did not "
                 "keep up with this rate]")
    if lat["unseen"]:
        text += f"; {lat['unseen']} samples never visible"
    return text


def svg_chart(results: dict[str, dict], title: str) -> str:
    """Bars: events per CPU-second per query (log scale); lines: the per-core targets."""
    names = list(results)
    values = {q: (r.get("throughput") or {}).get("events_per_cpu_s") for q, r in results.items()}
    ok = [v for v in values.values() if v and v > 0 and not math.isnan(v)]
    lo_exp = math.floor(math.log10(min(ok + [DEFAULT_TARGET_PER_CORE]))) if ok else 4
    hi_exp = math.ceil(math.log10(max(ok + [max(TARGET_PER_CORE.values())]) * 1.5))
    lo_exp = min(lo_exp, hi_exp - 1)
    width, height = max(640, 110 + 80 * len(names)), 440
    left, right, top, bottom = 90, 30, 66, 60
    plot_w, plot_h = width - left - right, height - top - bottom

    def y(v: float) -> float:
        frac = (math.log10(v) - lo_exp) / (hi_exp - lo_exp)
        return top + plot_h * (1 - min(1.0, max(0.0, frac)))

    def esc(t: str) -> str:
        return t.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15">{esc(title)}</text>',
        f'<text x="{width / 2}" y="38" text-anchor="middle" fill="#555">events per CPU-second '
        f'of the runnel process (log scale); dashed: per-core targets</text>',
    ]
    for e in range(lo_exp, hi_exp + 1):
        for m in (1, 2, 5):
            v = m * 10 ** e
            if not (10 ** lo_exp <= v <= 10 ** hi_exp):
                continue
            yy = y(v)
            out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{width - right}" y2="{yy:.1f}" '
                       f'stroke="{"#ccc" if m == 1 else "#eee"}"/>')
            label = f"{v:,}" if v < 1_000_000 else f"{v / 1_000_000:g}M"
            out.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" '
                       f'fill="#444">{label}</text>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#333"/>')
    out.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" '
               f'y2="{top + plot_h}" stroke="#333"/>')
    slot = plot_w / max(1, len(names))
    for i, q in enumerate(names):
        x0 = left + i * slot
        bar_w = slot * 0.6
        bx = x0 + (slot - bar_w) / 2
        v = values[q]
        t = target(q)
        if v and v > 0 and not math.isnan(v):
            yy = y(v)
            colour = "#3a7d44" if v >= t else "#d08c2a"
            out.append(f'<rect x="{bx:.1f}" y="{yy:.1f}" width="{bar_w:.1f}" '
                       f'height="{top + plot_h - yy:.1f}" fill="{colour}"/>')
            out.append(f'<text x="{bx + bar_w / 2:.1f}" y="{yy - 4:.1f}" text-anchor="middle">'
                       f'{v / 1000:,.0f}k</text>')
        else:
            out.append(f'<text x="{bx + bar_w / 2:.1f}" y="{top + plot_h - 6:.1f}" '
                       f'text-anchor="middle" fill="#a00">failed</text>')
        ty = y(t)
        out.append(f'<line x1="{x0 + 4:.1f}" y1="{ty:.1f}" x2="{x0 + slot - 4:.1f}" '
                   f'y2="{ty:.1f}" stroke="#c00" stroke-width="2" stroke-dasharray="6,3"/>')
        out.append(f'<text x="{x0 + slot / 2:.1f}" y="{top + plot_h + 18}" '
                   f'text-anchor="middle">{esc(q)}</text>')
        out.append(f'<text x="{x0 + slot / 2:.1f}" y="{top + plot_h + 33}" text-anchor="middle" '
                   f'fill="#c00" font-size="10">target {t / 1000:,.0f}k</text>')
    lx = width - right - 250
    for i, (colour, text) in enumerate((("#3a7d44", "meets its target"),
                                        ("#d08c2a", "below its target"))):
        out.append(f'<rect x="{lx + 125 * i}" y="{top - 4}" width="10" height="10" '
                   f'fill="{colour}"/>')
        out.append(f'<text x="{lx + 125 * i + 14}" y="{top + 5}" fill="#333">{text}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def print_table(results: dict[str, dict]) -> None:
    head = (f"{'query':<12} {'events':>11} {'wall s':>8} {'events/s':>11} {'CPU s':>8} "
            f"{'ev/CPU-s':>11} {'excl. gen':>11} {'target':>10} {'RSS MiB':>8} "
            f"{'lat p50 ms':>10} {'lat p99 ms':>10} {'samples':>7}")
    print(head)
    print("-" * len(head))
    for q, r in results.items():
        t = r.get("throughput") or {}
        lat = r.get("latency") or {}
        if not t:
            print(f"{q:<12} failed: {r.get('throughput_error')}")
        else:
            print(f"{q:<12} {t['events']:>11,} {t['wall_s']:>8.2f} {fmt_rate(t['events_per_s']):>11} "
                  f"{t['cpu_s']:>8.2f} {fmt_rate(t['events_per_cpu_s']):>11} "
                  f"{fmt_rate(t['events_per_cpu_s_excl_generator']):>11} {target(q):>10,} "
                  f"{t['peak_rss_mib']:>8.0f} "
                  + (f"{ms(lat['p50_ms']):>10} {ms(lat['p99_ms']):>10} {lat['samples']:>7}"
                     + ("" if lat["method"] == "chunk schedule" else "  (behind: see above)")
                     if lat else f"{'-':>10} {'-':>10} {'-':>7}"))
    for q, r in results.items():
        if r.get("latency_error"):
            print(f"{q}: latency run failed: {r['latency_error']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/runnel")
    ap.add_argument("--partitions", type=int, default=None,
                    help="partitions per Nexmark stream (default: the generator's, 1); each "
                         "stream is generated by min(workers, partitions) threads")
    ap.add_argument("--events", type=int, default=10_000_000,
                    help="events of the global sequence per throughput run (default 10,000,000)")
    ap.add_argument("--queries", default=",".join(QUERIES),
                    help=f"comma-separated, from {','.join(QUERIES)} (default: all)")
    ap.add_argument("--out", default="target/bench/nexmark.svg",
                    help="the SVG chart; the numbers go to the same path with .json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--event-time-rate", type=int, default=10_000,
                    help="events per second of event time (the generator's default)")
    ap.add_argument("--latency-rate", type=int, default=200_000,
                    help="events/s of the throttled latency run (default 200,000)")
    ap.add_argument("--latency-seconds", type=float, default=15.0,
                    help="length of the latency run's generation (default 15)")
    ap.add_argument("--poll-interval", type=float, default=0.02)
    ap.add_argument("--no-latency", action="store_true", help="skip the latency runs")
    ap.add_argument("--checkpoint-interval-ms", type=int, default=None,
                    help="passed to `runnel serve` (default: the server's, 1000)")
    ap.add_argument("--workers", default="1,2",
                    help="comma-separated `runnel serve --workers` counts, each query run at "
                         "each (default 1,2); the chart shows the first")
    ap.add_argument("--timeout", type=float, default=3600.0,
                    help="seconds a throughput run may take before it is abandoned")
    args = ap.parse_args()

    queries = [q.strip() for q in args.queries.split(",") if q.strip()]
    unknown = [q for q in queries if q not in QUERIES]
    if unknown:
        raise SystemExit(f"unknown queries {unknown}; known: {', '.join(QUERIES)}")
    args.bin = os.path.abspath(args.bin)
    if not os.path.exists(args.bin):
        raise SystemExit(f"runnel binary not found: {args.bin}")

    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    print(f"nexmark: events={args.events:,} per throughput run, binary={args.bin}, "
          f"cores={os.cpu_count()}, workers={','.join(map(str, counts))}, latency rate="
          f"{args.latency_rate:,}/s for {args.latency_seconds:g} s"
          + (" (skipped)" if args.no_latency else "")
          + (f", checkpoint interval {args.checkpoint_interval_ms} ms"
             if args.checkpoint_interval_ms else ""), flush=True)
    bench_started = time.monotonic()
    by_workers: dict[int, dict[str, dict]] = {w: {} for w in counts}
    for q in queries:
        for w in counts:
            args.current_workers = w
            r: dict = {"query": q, "workers": w, "streams": list(QUERY_STREAMS[q]),
                       "target_per_core": target(q)}
            by_workers[w][q] = r
            try:
                t = throughput_run(args, q)
                r["throughput"] = t
                print(f"  {q} (workers {w}): {t['events']:,} events in {t['wall_s']:.2f} s = "
                      f"{t['events_per_s']:,.0f} events/s; CPU {t['cpu_s']:.2f} s "
                      f"(generator {t['generator_cpu_s']:.2f}, dataflow "
                      f"{t['dataflow_cpu_s']:.2f}) = {t['events_per_cpu_s']:,.0f} events/CPU-s "
                      f"({t['events_per_cpu_s_excl_generator']:,.0f} excl. generator; target "
                      f"{target(q):,}); peak RSS {t['peak_rss_mib']:.0f} MiB; "
                      f"{t['view_rows']:,} view rows", flush=True)
                for worker, ws in sorted(t["worker_s"].items()):
                    print(f"    worker {worker}: busy {ws.get('busy', 0):.2f} s, waiting for "
                          f"input {ws.get('input', 0):.2f} s, peers {ws.get('peers', 0):.2f} s, "
                          f"control {ws.get('control', 0):.2f} s", flush=True)
            except Exception as e:  # noqa: BLE001 - one query's failure must not stop the others
                r["throughput_error"] = repr(e)
                print(f"  {q} (workers {w}): throughput run failed: {e!r}", flush=True)
            if not args.no_latency:
                try:
                    lat = latency_run(args, q)
                    r["latency"] = lat
                    print(f"  {q} (workers {w}): {describe_latency(lat)}", flush=True)
                except Exception as e:  # noqa: BLE001
                    r["latency_error"] = repr(e)
                    print(f"  {q} (workers {w}): latency run failed: {e!r}", flush=True)

    for w in counts:
        print(f"\nworkers={w}")
        print_table(by_workers[w])
    if len(counts) > 1:
        first = counts[0]
        print(f"\nspeed-up over workers={first} (events/s, wall clock, generator included):")
        head = f"{'query':<12}" + "".join(f" {'ev/s @' + str(w):>13}" for w in counts) + \
            "".join(f" {'x @' + str(w):>7}" for w in counts[1:]) + \
            "".join(f" {'ev/CPU-s @' + str(w):>14}" for w in counts)
        print(head)
        print("-" * len(head))
        for q in queries:
            rates = [(by_workers[w][q].get("throughput") or {}).get("events_per_s") for w in counts]
            per_cpu = [(by_workers[w][q].get("throughput") or {}).get("events_per_cpu_s")
                       for w in counts]
            line = f"{q:<12}" + "".join(f" {fmt_rate(x):>13}" for x in rates)
            for x in rates[1:]:
                line += (f" {x / rates[0]:>6.2f}x" if x and rates[0] else f" {'-':>7}")
            line += "".join(f" {fmt_rate(x):>14}" for x in per_cpu)
            print(line)
    results = by_workers[counts[0]]
    total = time.monotonic() - bench_started
    print(f"\nbenchmark took {total:.0f} s")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    title = f"Runnel Nexmark, {args.events:,} events per query ({Path(args.bin).parent.name} build)"
    out.write_text(svg_chart(results, title))
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps({
        "events": args.events,
        "binary": args.bin,
        "cores": os.cpu_count(),
        "seed": args.seed,
        "event_time_rate": args.event_time_rate,
        "latency_rate": None if args.no_latency else args.latency_rate,
        "latency_seconds": None if args.no_latency else args.latency_seconds,
        "poll_interval_s": args.poll_interval,
        "checkpoint_interval_ms": args.checkpoint_interval_ms or 1000,
        "targets_per_core": {q: target(q) for q in queries},
        "duration_s": total,
        "workers": counts,
        "results": results,
        "results_by_workers": {str(w): r for w, r in by_workers.items()},
    }, indent=2, default=float) + "\n")
    print(f"wrote {out} and {json_path}")


if __name__ == "__main__":
    main()
