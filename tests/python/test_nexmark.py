"""Nexmark correctness: Runnel's built-in generator and the Nexmark queries (q0-q5, q7, q8) plus
the 30-minute online feature, each view compared with DuckDB over the same rows.

One server (the `server` fixture, conftest.py) generates 110,000 events of the global Nexmark
sequence (2,200 people, 6,600 auctions, 101,200 bids), each stream cut into 3 partitions that
the server's worker threads generate. Every query exists twice:

- `<q>` is created right after the three CREATE STREAMs, while the throttled generators
  (20,000 events/s, about 6 s in all) are still producing, so it is maintained live, chunk by
  chunk (the fixture prints how many events had been generated when the last live view
  existed: 0 to 22,000 of the 110,000 in our runs; printed, not asserted, as it depends on
  timing);
- `<q>_backfill` is created after generation has finished and FLUSH returned, so it is built
  by replaying the streams' logs.

After the generators report `finished` in SHOW PROGRESS and FLUSH returns, the three streams'
rows are read back with psycopg and loaded into DuckDB, and every query is computed there with
equivalent DuckDB SQL (TUMBLE and HOP windows written out by hand from epoch microseconds; the
watermark that SHOW WATERMARKS reports stands in for NOW() in the feature). Each view must
equal DuckDB's answer as a multiset of rows; numeric results of arithmetic and averages
(q1.price, q4.avg, feature_30m.avg_price) are compared as floats with a relative tolerance of
1e-9, everything else exactly (timestamps as naive Python datetimes).

The data is shaped so that every part of the queries matters: event_time_rate = 50 events per
event-time second spreads the events over 36 minutes of event time (so the 30-minute filter
drops the oldest bids and there are 220 ten-second windows), and event 0 is at
2026-01-01 00:00:03.5, not on a window boundary, so windows aligned to the first event instead
of the Unix epoch would give different answers. The test checks (on the DuckDB side only)
that these filters do remove rows.

No expected value comes from Runnel's own output except the final watermark, which is itself
checked against max(date_time) - 4 s computed in DuckDB. Takes about 20 s on the debug build
(2 cores).
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import psycopg
import pytest

from runnel_proc import execute, flush, query, show_progress, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benches"))
from nexmark_queries import (  # noqa: E402
    QUERIES,
    STREAMS,
    WATERMARK_DELAY_SECONDS,
    is_kind,
    kind_count,
    stream_ddl,
    view_ddl,
)

EVENTS = 110_000
RATE = 20_000  # events per wall-clock second: generation takes about 6 s
SEED = 1
EVENT_TIME_RATE = 50  # 20 ms of event time per event: 110,000 events span 36 min 40 s
# Each stream's events in 3 partitions: with 2 workers (the suite's), one generator thread has
# partitions 0 and 2, the other 1, so the live views see two threads' chunks interleaved and a
# watermark held back by the slower one.
PARTITIONS = 3
START_TIME = "2026-01-01T00:00:03.5Z"
START = datetime(2026, 1, 1, 0, 0, 3, 500000)  # the same, as a naive UTC datetime
EPOCH = datetime(1970, 1, 1)
TIMEOUT = 150.0

# Columns (by position) compared as floats with a relative tolerance.
FLOAT_COLUMNS = {"q1": {2}, "q4": {1}, "feature_30m": {1}}
REL_TOL = 1e-9

COLUMN_TYPES = {
    "person": [("id", "BIGINT"), ("name", "TEXT"), ("email_address", "TEXT"),
               ("credit_card", "TEXT"), ("city", "TEXT"), ("state", "TEXT"),
               ("date_time", "TIMESTAMP"), ("extra", "TEXT")],
    "auction": [("id", "BIGINT"), ("item_name", "TEXT"), ("description", "TEXT"),
                ("initial_bid", "BIGINT"), ("reserve", "BIGINT"), ("date_time", "TIMESTAMP"),
                ("expires", "TIMESTAMP"), ("seller", "BIGINT"), ("category", "BIGINT"),
                ("extra", "TEXT")],
    "bid": [("auction", "BIGINT"), ("bidder", "BIGINT"), ("price", "BIGINT"),
            ("channel", "TEXT"), ("url", "TEXT"), ("date_time", "TIMESTAMP"), ("extra", "TEXT")],
}

# ---------------------------------------------------------------------------------------------
# The queries in DuckDB. Windows: TUMBLE(rel, col, size) -> window_start = col rounded down to a
# multiple of `size` counted from the Unix epoch; HOP(rel, col, slide, size) -> one row per
# window [s, s + size) with s a multiple of `slide` from the epoch and s <= col < s + size.

DUCK_MACROS = [
    # the start of the `size_us`-wide, epoch-aligned bucket holding ts (ts after 1970)
    "CREATE MACRO bucket_start(ts, size_us) AS make_timestamp((epoch_us(ts) // size_us) * size_us)",
]


def duck_hop(rel: str, slide_s: int, size_s: int) -> str:
    """rel's rows, each once per HOP window holding it, with window_start and window_end."""
    slide_us, size_us = slide_s * 1_000_000, size_s * 1_000_000
    # s = bucket_start(col, slide) - k * slide for k = 0 .. ceil(size / slide) - 1, keeping
    # only the windows that really contain col.
    k_max = -(-size_s // slide_s)
    return (
        f"(SELECT * FROM (SELECT r.*, make_timestamp((epoch_us(r.date_time) // {slide_us} - k) "
        f"* {slide_us}) AS window_start, make_timestamp((epoch_us(r.date_time) // {slide_us} - k) "
        f"* {slide_us} + {size_us}) AS window_end FROM {rel} r CROSS JOIN "
        f"(SELECT range AS k FROM range(0, {k_max}))) "
        f"WHERE window_start <= date_time AND date_time < window_end)"
    )


def duck_tumble(rel: str, size_s: int) -> str:
    size_us = size_s * 1_000_000
    return (
        f"(SELECT r.*, bucket_start(r.date_time, {size_us}) AS window_start, "
        f"bucket_start(r.date_time, {size_us}) + INTERVAL {size_s} SECOND AS window_end "
        f"FROM {rel} r)"
    )


DUCK_QUERIES = {
    "q0": "SELECT auction, bidder, price, date_time FROM bid",
    "q1": "SELECT auction, bidder, 0.908 * price AS price, date_time FROM bid",
    "q2": "SELECT auction, price FROM bid WHERE auction % 123 = 0",
    "q3": "SELECT P.name, P.city, P.state, A.id FROM auction AS A INNER JOIN person AS P "
          "ON A.seller = P.id WHERE A.category = 10 AND P.state IN ('or', 'id', 'ca')",
    "q4": "SELECT Q.category, AVG(Q.final) AS avg FROM (SELECT MAX(B.price) AS final, A.category "
          "FROM auction A JOIN bid B ON A.id = B.auction "
          "WHERE B.date_time >= A.date_time AND B.date_time <= A.expires "
          "GROUP BY A.id, A.category) Q GROUP BY Q.category",
    "q5": f"""
        WITH hop AS {duck_hop('bid', 2, 10)},
        auction_bids AS (
            SELECT auction, count(*) AS num, window_start AS starttime
            FROM hop GROUP BY window_start, auction),
        max_bids AS (
            SELECT max(num) AS maxn, starttime AS starttime_c
            FROM auction_bids GROUP BY starttime)
        SELECT a.auction, a.num FROM auction_bids a JOIN max_bids m
            ON a.starttime = m.starttime_c AND a.num >= m.maxn""",
    "q7": f"""
        WITH b1 AS (
            SELECT max(price) AS maxprice, window_end AS date_time
            FROM {duck_tumble('bid', 10)} GROUP BY window_end)
        SELECT b.auction, b.price, b.bidder, b.date_time FROM bid b JOIN b1
            ON b.price = b1.maxprice
        WHERE b.date_time >= b1.date_time - INTERVAL 10 SECOND AND b.date_time <= b1.date_time""",
    "q8": f"""
        WITH p AS (
            SELECT id, name, window_start AS starttime, window_end AS endtime
            FROM {duck_tumble('person', 10)} GROUP BY id, name, window_start, window_end),
        a AS (
            SELECT seller, window_start AS starttime, window_end AS endtime
            FROM {duck_tumble('auction', 10)} GROUP BY seller, window_start, window_end)
        SELECT p.id, p.name, p.starttime FROM p JOIN a
            ON p.id = a.seller AND p.starttime = a.starttime AND p.endtime = a.endtime""",
    # NOW() is the bid stream's watermark: bound as the parameter.
    "feature_30m": "SELECT bidder, avg(price) AS avg_price, count(*) AS n FROM bid "
                   "WHERE date_time > CAST(? AS TIMESTAMP) - INTERVAL 30 MINUTE GROUP BY bidder",
}

assert set(DUCK_QUERIES) == set(QUERIES)


# ---------------------------------------------------------------------------------------------
# Comparison


def normalise(rows: list[tuple], float_cols: set[int]) -> list[tuple]:
    """Numerics in float_cols as floats (Runnel's and DuckDB's NUMERIC come back as Decimal,
    averages as float); everything else as psycopg / DuckDB return it (int, str, datetime)."""
    return [tuple(float(v) if i in float_cols and v is not None else v for i, v in enumerate(r))
            for r in rows]


def assert_same_rows(name: str, actual: list[tuple], expected: list[tuple], float_cols=()):
    """actual == expected as multisets; the columns in float_cols compared with REL_TOL."""
    float_cols = set(float_cols)
    a, e = normalise(actual, float_cols), normalise(expected, float_cols)
    if not float_cols:
        assert Counter(a) == Counter(e), (
            f"{name}: {len(a)} rows in the view, {len(e)} from DuckDB\n"
            + diff_summary(a, e, float_cols))
        return
    assert len(a) == len(e), (
        f"{name}: {len(a)} rows in the view, {len(e)} from DuckDB\n"
        + diff_summary(a, e, float_cols))

    def key(r):
        return tuple((0, 0) if v is None else (1, v) for v in r)

    def close(i, g, w):
        if i not in float_cols or g is None or w is None:
            return g == w
        return math.isclose(g, w, rel_tol=REL_TOL)

    # Sorted with the floats as the last tie-breakers, equal rows pair up.
    for got, want in zip(sorted(a, key=key), sorted(e, key=key)):
        assert all(close(i, g, w) for i, (g, w) in enumerate(zip(got, want))), (
            f"{name}: first differing row in sorted order: view {got!r}, DuckDB {want!r}\n"
            + diff_summary(a, e, float_cols))


def diff_summary(a: list[tuple], e: list[tuple], float_cols: set[int], n: int = 5) -> str:
    """Rows only on one side (floats rounded to 9 significant digits)."""
    def rounded(rows):
        return Counter(tuple(float(f"{v:.9g}") if i in float_cols and v is not None else v
                             for i, v in enumerate(r)) for r in rows)

    ca, ce = rounded(a), rounded(e)
    extra, missing = ca - ce, ce - ca
    return (f"only in the view ({sum(extra.values())} rows): {list(extra.items())[:n]}\n"
            f"only in DuckDB ({sum(missing.values())} rows): {list(missing.items())[:n]}")


# ---------------------------------------------------------------------------------------------
# The run


class Run:
    """Everything the tests read: the connection, DuckDB with the streams' rows, SHOW output."""

    conn: psycopg.Connection
    duck: duckdb.DuckDBPyConnection
    progress: list[dict]
    watermarks: dict[str, dict]
    timings: dict[str, float]


def load_into_duckdb(duck, conn, stream: str, tmp: str) -> None:
    """The stream's rows, read over pgwire, as a DuckDB table of the same name and types."""
    rows = query(conn, f"SELECT * FROM {stream}")
    path = os.path.join(tmp, f"{stream}.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL)
        for r in rows:
            w.writerow([r"\N" if v is None else
                        v.isoformat(sep=" ") if isinstance(v, datetime) else v for v in r])
    columns = ", ".join(f"'{c}': '{t}'" for c, t in COLUMN_TYPES[stream])
    duck.execute(
        f"CREATE TABLE {stream} AS SELECT * FROM read_csv('{path}', header = false, "
        f"quote = '\"', escape = '\"', nullstr = '\\N', columns = {{{columns}}})"
    )
    (count,) = duck.execute(f"SELECT count(*) FROM {stream}").fetchone()
    assert count == len(rows)


@pytest.fixture(scope="module")
def run(server):
    host, port = server
    r = Run()
    r.timings = {}
    t0 = time.monotonic()
    conn = psycopg.connect(host=host, port=port, user="runnel", password="any", dbname="runnel",
                           autocommit=True)
    tmp = tempfile.mkdtemp(prefix="runnel-nexmark-test-")
    try:
        ddl = stream_ddl(EVENTS, rate=RATE, seed=SEED, event_time_rate=EVENT_TIME_RATE,
                         start_time=START_TIME, partitions=PARTITIONS)
        for stream in STREAMS:
            execute(conn, ddl[stream])
        # Live: the views exist while the generators are still running.
        for name in QUERIES:
            execute(conn, view_ddl(name))
        r.timings["live views created"] = time.monotonic() - t0
        generated = [int(p["offset"] or 0) for p in show_progress(conn) if p["source"] in STREAMS]
        print(f"\nevents generated per stream when the last live view was created: {generated} "
              f"of {EVENTS}")

        state: dict = {}

        def finished():
            rows = [p for p in show_progress(conn) if p["source"] in STREAMS]
            state["rows"] = rows
            # One row per partition of each stream.
            return ({p["source"] for p in rows} == set(STREAMS)
                    and all(p["status"] == "finished" for p in rows))

        wait_until(finished, timeout=TIMEOUT, interval=0.1, what="all generators finished",
                   describe=lambda: repr(state.get("rows")))
        r.timings["generation finished"] = time.monotonic() - t0
        flush(conn)
        r.timings["flush"] = time.monotonic() - t0
        # Backfill: the same views created over the complete logs.
        for name in QUERIES:
            execute(conn, view_ddl(name, f"{name}_backfill"))
        flush(conn)
        r.timings["backfill views created"] = time.monotonic() - t0
        r.progress = show_progress(conn)
        with conn.cursor() as cur:
            cur.execute("SHOW WATERMARKS")
            names = [d.name for d in cur.description]
            r.watermarks = {row[0]: dict(zip(names, row)) for row in cur.fetchall()}

        r.duck = duckdb.connect()
        for m in DUCK_MACROS:
            r.duck.execute(m)
        for stream in STREAMS:
            load_into_duckdb(r.duck, conn, stream, tmp)
        r.timings["rows loaded into duckdb"] = time.monotonic() - t0
        r.conn = conn
        print(f"nexmark test setup timings (s from the first CREATE STREAM): {r.timings}")
        yield r
    finally:
        conn.close()
        shutil.rmtree(tmp, ignore_errors=True)


def parse_ts(text: str) -> datetime:
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt


# ---------------------------------------------------------------------------------------------
# The generator and the clock


def test_generators_finished_with_every_event(run):
    """Each stream's events are cut into PARTITIONS partitions, generated by the server's
    two worker threads: every partition reached the end of the sequence."""
    for stream in STREAMS:
        rows = [p for p in run.progress if p["source"] == stream]
        assert sorted(int(p["partition"]) for p in rows) == list(range(PARTITIONS)), run.progress
        for p in rows:
            assert p["status"] == "finished", p
            assert int(p["offset"]) == EVENTS and int(p["end_offset"]) == EVENTS, p
            assert int(p["lag"]) == 0 and int(p["errors"]) == 0, p


def test_streams_hold_the_nexmark_sequence(run):
    """Each stream holds exactly its kind's events of 0..EVENTS-1 (1 person, 3 auctions and
    46 bids of every 50), event n at START + n / EVENT_TIME_RATE seconds."""
    step_us = 1_000_000 // EVENT_TIME_RATE
    for stream in STREAMS:
        (count, distinct_times) = run.duck.execute(
            f"SELECT count(*), count(DISTINCT date_time) FROM {stream}").fetchone()
        assert count == kind_count(stream, EVENTS) == distinct_times
        numbers = sorted(
            (epoch - int((START - EPOCH) / timedelta(microseconds=1))) // step_us
            for (epoch,) in run.duck.execute(f"SELECT epoch_us(date_time) FROM {stream}").fetchall()
        )
        assert numbers == [n for n in range(EVENTS) if is_kind(stream, n)], stream
        (misaligned,) = run.duck.execute(
            f"SELECT count(*) FROM {stream} "
            f"WHERE (epoch_us(date_time) - {int((START - EPOCH) / timedelta(microseconds=1))}) "
            f"% {step_us} <> 0").fetchone()
        assert misaligned == 0
    # ids: people and auctions numbered in order from 1000; bids go to existing auctions or
    # ones about to be created, from existing people or ones about to join.
    assert run.duck.execute("SELECT min(id), max(id), count(DISTINCT id) FROM person").fetchone() \
        == (1000, 1000 + kind_count("person", EVENTS) - 1, kind_count("person", EVENTS))
    assert run.duck.execute("SELECT min(id), max(id), count(DISTINCT id) FROM auction").fetchone() \
        == (1000, 1000 + kind_count("auction", EVENTS) - 1, kind_count("auction", EVENTS))
    (orphans,) = run.duck.execute(
        "SELECT count(*) FROM bid WHERE auction NOT IN (SELECT id FROM auction)").fetchone()
    assert orphans < 0.01 * kind_count("bid", EVENTS)


def test_watermarks_follow_the_events_and_nothing_is_late(run):
    for stream in STREAMS:
        wm = run.watermarks.get(stream)
        assert wm is not None, run.watermarks
        assert wm["watermark_column"] == "date_time", wm
        assert int(wm["late_events"]) == 0, wm
        (latest,) = run.duck.execute(f"SELECT max(date_time) FROM {stream}").fetchone()
        assert parse_ts(wm["watermark"]) == latest - timedelta(seconds=WATERMARK_DELAY_SECONDS), wm


# ---------------------------------------------------------------------------------------------
# The queries


def expected_rows(run, name: str) -> list[tuple]:
    params = None
    if name == "feature_30m":
        params = [parse_ts(run.watermarks["bid"]["watermark"])]
    return [tuple(r) for r in run.duck.execute(DUCK_QUERIES[name], params).fetchall()]


def test_the_oracle_is_not_trivial(run):
    """The filters and windows that the queries depend on do remove rows in this data."""
    d = run.duck
    wm = parse_ts(run.watermarks["bid"]["watermark"])
    (kept,) = d.execute("SELECT count(*) FROM bid WHERE date_time > CAST(? AS TIMESTAMP) - "
                        "INTERVAL 30 MINUTE", [wm]).fetchone()
    total = kind_count("bid", EVENTS)
    assert 0.5 * total < kept < 0.95 * total, (kept, total)
    (joined, in_time) = d.execute(
        "SELECT count(*), count(*) FILTER (WHERE B.date_time BETWEEN A.date_time AND A.expires) "
        "FROM auction A JOIN bid B ON A.id = B.auction").fetchone()
    assert 0 < in_time < joined, (in_time, joined)
    # Windows start on epoch multiples of 10 s, which the first event (at :03.5) is not.
    (first,) = d.execute("SELECT min(date_time) FROM bid").fetchone()
    assert (first - EPOCH) % timedelta(seconds=10) != timedelta(0)
    (windows,) = d.execute(
        f"SELECT count(DISTINCT window_start) FROM {duck_tumble('bid', 10)}").fetchone()
    assert windows >= 200, windows


@pytest.mark.parametrize("variant", ["live", "backfill"])
@pytest.mark.parametrize("name", list(QUERIES))
def test_view_equals_duckdb(run, name, variant):
    view = name if variant == "live" else f"{name}_backfill"
    expected = expected_rows(run, name)
    assert len(expected) > 0, f"DuckDB's {name} is empty: the comparison would mean nothing"
    actual = [tuple(r) for r in query(run.conn, f"SELECT * FROM {view}")]
    assert_same_rows(view, actual, expected, FLOAT_COLUMNS.get(name, ()))
