"""Event time over Kafka end to end: a real broker (Tansu), a real `runnel serve`, psycopg.

Covers the event-time clock of a Kafka stream (`WATERMARK FOR ts AS ts - INTERVAL '5 seconds'`)
and the views that read it:

1. `test_partition_watermarks_and_idleness`: the watermark is per partition (max ts - delay),
   combined by the minimum over partitions that are not idle; a partition that never sent
   holds it back until it is idle (`idle_timeout`); a row behind the watermark is dropped
   and counted (`late_events`), a row ahead of it is kept; the watermark never moves back.
2. `test_live_views_equal_replayed_views_and_the_oracle`: a 3-partition topic, random events
   (out of order, late, NULL event times) produced in rounds while a NOW() feature, TUMBLE,
   HOP, EMIT ON WINDOW CLOSE and per-event OVER feature (RANGE 30 minutes) views run live. The live views equal a Python computation
   over the rows the stream kept and its final watermark, and the same views built later by
   replay (`WITH (start = 'earliest')`) equal the live ones row for row.
3. `test_new_stream_over_the_same_topic_replays_identically`: on a 1-partition topic (the
   ingestion order is the topic order, so the clock can be simulated exactly in Python), a
   second stream created later over the same topic gets the same rows, watermark, late count
   and view contents as the first one.

Every expected value is computed here from the events the test produced (or, where the
interleaving of partitions is not observable, from the rows the stream kept). Nothing asserts
on timing; every wait polls with a generous deadline. Randomness is seeded.

Fixtures (conftest.py): `broker` (session Tansu), `runnel_kafka` (a RunnelProcess started with
--kafka-bootstrap-servers), `kafka_conn` (autocommit psycopg connection).
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

from kafka_harness import rfc3339_ms, unique_name
from runnel_proc import (
    DEFAULT_TIMEOUT,
    eventually_equal,
    execute,
    flush,
    progress_by_partition,
    query,
    wait_caught_up,
    wait_until,
)

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# 2026-01-01T10:00:00Z in ms: event times are built from here.
T0 = int((datetime(2026, 1, 1, 10, 0, 0, tzinfo=timezone.utc) - EPOCH).total_seconds()) * 1000
SECOND = 1000  # ms
MINUTE = 60 * SECOND
DELAY = 5 * SECOND  # WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
WATERMARK_CLAUSE = "WATERMARK FOR ts AS ts - INTERVAL '5 seconds'"


# ============================================================================================
# Helpers


def kafka_with(topic: str, **opts: str) -> str:
    items = {"connector": "kafka", "topic": topic, "format": "json", "start": "earliest", **opts}
    return "WITH (" + ", ".join(f"{k} = '{v}'" for k, v in items.items()) + ")"


def create_stream(conn, name: str, topic: str, extra_columns: str = "", **opts: str) -> None:
    execute(
        conn,
        f"CREATE STREAM {name} (uid BIGINT, price DOUBLE PRECISION, ts TIMESTAMPTZ{extra_columns}, "
        f"{WATERMARK_CLAUSE}) {kafka_with(topic, **opts)}",
    )


def event(uid: int, price: float, ts_ms: int | None) -> dict:
    ev = {"uid": uid, "price": price}
    if ts_ms is not None:
        ev["ts"] = rfc3339_ms(ts_ms)
    return ev  # no "ts" field: a NULL event time


def _ms(ev: dict) -> int:
    """The event time (ms) of an event dict built by event()."""
    dt = datetime.strptime(ev["ts"].replace("Z", "+0000"),
                           "%Y-%m-%dT%H:%M:%S.%f%z" if "." in ev["ts"] else "%Y-%m-%dT%H:%M:%S%z")
    return micros(dt) // 1000


def micros(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1)


def pg_text(ms: int) -> str:
    """The text SHOW WATERMARKS prints for a whole-second instant: 2026-01-01 10:00:15+00."""
    assert ms % 1000 == 0
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S+00")


_WM_TEXT = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(\.\d+)?\+00$")


def parse_watermark(text: str | None) -> int | None:
    """SHOW WATERMARKS' watermark text as microseconds since the epoch (None for NULL)."""
    if text is None:
        return None
    m = _WM_TEXT.match(text)
    assert m, f"unexpected watermark text {text!r}"
    whole = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    frac = m.group(2) or ".0"
    return micros(whole) + round(float(frac) * 1_000_000)


def show_watermarks(conn) -> dict[str, dict[str, str | None]]:
    with conn.cursor() as cur:
        cur.execute("SHOW WATERMARKS")
        names = [d.name for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
    assert names == [
        "stream", "watermark_column", "delay", "watermark", "late_events", "partitions",
        "idle_partitions",
    ], names
    return {r["stream"]: r for r in rows}


def watermark_row(conn, stream: str) -> dict[str, str | None]:
    rows = show_watermarks(conn)
    assert stream in rows, f"SHOW WATERMARKS has no row for {stream}: {sorted(rows)}"
    return rows[stream]


def row_key(row):
    return tuple((0, 0) if x is None else (1, x) for x in row)


def view_rows(conn, sql: str) -> list[tuple]:
    """A view's rows after a FLUSH (views are read as of the last checkpoint), sorted."""
    flush(conn)
    return sorted(query(conn, sql), key=row_key)


def catch_up(broker, conn, stream: str, topic: str):
    return wait_caught_up(conn, stream, broker.high_watermarks(topic))


def window_key(uid: int, start_us: int, size_us: int) -> tuple[int, int, int]:
    return (uid, start_us, start_us + size_us)


def tumble_oracle(rows, size_ms: int, closed_by: int | None = None) -> list[tuple]:
    """[(uid, window_start_us, window_end_us, n, total)] over stream rows [(uid, price, ts_us)];
    with closed_by (µs), only windows whose end is at or before it."""
    size = size_ms * 1000
    acc: dict[tuple, list] = defaultdict(lambda: [0, 0.0])
    for uid, price, ts in rows:
        k = window_key(uid, ts // size * size, size)
        acc[k][0] += 1
        acc[k][1] += price
    return sorted(
        (k + (n, total)) for k, (n, total) in acc.items() if closed_by is None or k[2] <= closed_by
    )


def hop_oracle(rows, slide_ms: int, size_ms: int) -> list[tuple]:
    """[(uid, window_start_us, window_end_us, n, total, top)]: every window [start, start+size)
    with start a multiple of slide that holds the row."""
    slide, size = slide_ms * 1000, size_ms * 1000
    acc: dict[tuple, list] = {}
    for uid, price, ts in rows:
        start = ts // slide * slide
        while start + size > ts:
            k = window_key(uid, start, size)
            a = acc.setdefault(k, [0, 0.0, price])
            a[0] += 1
            a[1] += price
            a[2] = max(a[2], price)
            start -= slide
    return sorted(k + tuple(v) for k, v in acc.items())


def recent_oracle(rows, watermark_us: int, window_ms: int) -> list[tuple]:
    """`WHERE ts > NOW() - window GROUP BY uid` with NOW() = the watermark:
    [(uid, avg_price rounded to 9 digits, n)]."""
    bound = watermark_us - window_ms * 1000
    acc: dict[int, list] = defaultdict(lambda: [0, 0.0])
    for uid, price, ts in rows:
        if ts > bound:
            acc[uid][0] += 1
            acc[uid][1] += price
    return sorted((uid, round(total / n, 9), n) for uid, (n, total) in acc.items())


def over_oracle(rows, window_ms: int) -> list[tuple]:
    """Each row with the average price of its user's rows in [ts - window, ts] (RANGE frames
    include the current row's peers): [(uid, ts_us, price, avg rounded to 9 digits)]."""
    by_user: dict[int, list] = defaultdict(list)
    for uid, price, ts in rows:
        by_user[uid].append((ts, price))
    out = []
    for uid, events in by_user.items():
        for ts, price in events:
            frame = [p for t, p in events if ts - window_ms * 1000 <= t <= ts]
            out.append((uid, ts, price, round(sum(frame) / len(frame), 9)))
    return sorted(out)


def as_micros_rows(rows, ts_columns: tuple[int, ...]) -> list[tuple]:
    return sorted(
        tuple(micros(x) if i in ts_columns else x for i, x in enumerate(r)) for r in rows
    )


def round_avg(rows, column: int) -> list[tuple]:
    return sorted(
        tuple(round(x, 9) if i == column else x for i, x in enumerate(r)) for r in rows
    )


def stream_rows(conn, stream: str, columns: str = "uid, price, ts") -> list[tuple]:
    """The stream's rows as [(uid, price, ts_us, ...)]."""
    return sorted(
        (r[0], r[1], micros(r[2])) + tuple(r[3:])
        for r in query(conn, f"SELECT {columns} FROM {stream}")
    )


# ============================================================================================
# 1. Per-partition watermarks and idle partitions

HEARTBEAT_UID = -1


class Heartbeat:
    """Keeps chosen partitions active (never idle): each beat() produces, to every such
    partition, one record at that partition's largest event time so far, which is never late
    (the watermark trails it by the delay) and never moves the clock."""

    def __init__(self, broker, topic: str):
        self.broker, self.topic = broker, topic
        self.at: dict[int, int] = {}  # partition -> event time (ms) of its beats
        self.sent: list[tuple[int, int]] = []  # (partition, ts) of every beat record
        self.last = 0.0

    def beat(self) -> None:
        if not self.at:
            return
        parts = sorted(self.at)
        self.broker.produce(
            self.topic, [event(HEARTBEAT_UID, 0.0, self.at[p]) for p in parts], partition=parts
        )
        self.sent += [(p, self.at[p]) for p in parts]
        self.last = time.monotonic()

    def wait(self, fn, timeout: float = DEFAULT_TIMEOUT, what: str = "condition", interval=0.3):
        """wait_until(fn), beating between polls (idle_timeout is 2 s; a beat every 0.3 s)."""

        def poll():
            self.beat()
            return fn()

        return wait_until(poll, timeout=timeout, interval=interval, what=what)


def test_partition_watermarks_and_idleness(broker, kafka_conn):
    conn = kafka_conn
    topic = broker.create_topic(unique_name("wm_idle"), partitions=2)
    s = unique_name("s")
    create_stream(conn, s, topic, idle_timeout="2 seconds")
    hb = Heartbeat(broker, topic)
    produced: list[tuple[int, dict]] = []  # (partition, event) of every non-heartbeat record
    seen_watermarks: list[int] = []  # every watermark observed, in order

    def wm_state():
        row = watermark_row(conn, s)
        wm = parse_watermark(row["watermark"])
        if wm is not None:
            seen_watermarks.append(wm)
        return row

    def produce(partition: int, events: list[dict]) -> list[tuple[int, int]]:
        delivered = broker.produce(topic, events, partition=partition)
        produced.extend((partition, ev) for ev in events)
        return delivered

    def wait_read_past(delivered: list[tuple[int, int]], what: str):
        """Until SHOW PROGRESS shows every given (partition, offset) consumed (beating)."""
        need: dict[int, int] = {}
        for p, off in delivered:
            need[p] = max(need.get(p, 0), off + 1)

        def done():
            rows = progress_by_partition(conn, s)
            return all(p in rows and int(rows[p]["offset"]) >= o for p, o in need.items())

        hb.wait(done, what=what)

    def wait_watermark_row(expected: dict[str, str], what: str):
        state = {}

        def check():
            row = wm_state()
            state["row"] = row
            return all(row[k] == v for k, v in expected.items())

        try:
            hb.wait(check, what=what)
        except AssertionError:
            raise AssertionError(f"{what}: last SHOW WATERMARKS row {state.get('row')} "
                                 f"expected {expected}") from None
        return state["row"]

    row = watermark_row(conn, s)
    assert row["watermark_column"] == "ts" and row["delay"] == "00:00:05", row
    assert row["late_events"] == "0" and row["watermark"] is None, row
    # (`partitions` reads 1 until the ingestion thread has registered the topic's partitions.)
    eventually_equal(lambda: watermark_row(conn, s)["partitions"], "2", what="partitions")

    # Partition 0 only, out of order but never by more than the delay, so none of these is
    # late however the clock moves meanwhile. Partition 1 sends nothing.
    p0_offsets = [0, 3, 1, 8, 6, 12, 10, 20, 17, 16]
    p0_events = [event(i, 1.0 + i, T0 + o * SECOND) for i, o in enumerate(p0_offsets)]
    produce(0, p0_events)
    p0_max = T0 + max(p0_offsets) * SECOND
    hb.at[0] = p0_max  # partition 0 stays active from now on

    # Until partition 1 is idle the watermark may be NULL (not asserted: timing). Once it is
    # idle, partition 0 alone sets the watermark.
    wm1 = p0_max - DELAY
    wait_watermark_row(
        {"idle_partitions": "1", "watermark": pg_text(wm1), "late_events": "0", "partitions": "2"},
        "partition 1 idle and the watermark at partition 0's max ts - 5 s",
    )

    # Partition 1 wakes up with a record behind the watermark: dropped, counted, consumed.
    late = event(100, 99.0, wm1 - 3 * SECOND)
    delivered = produce(1, [late])
    wait_read_past(delivered, "the late record's offset consumed")
    wait_watermark_row({"late_events": "1", "watermark": pg_text(wm1)}, "late_events = 1")
    assert query(conn, f"SELECT * FROM {s} WHERE uid = 100") == [], "a late row was kept"

    # A record ahead of the watermark (but behind partition 0's max): kept; partition 1 is
    # active again; its own watermark (p1 max - 5 s) is lower than the stream's, which does
    # not move backwards.
    p1_ahead = wm1 + 3 * SECOND
    delivered = produce(1, [event(101, 7.25, p1_ahead)])
    p1_max = p1_ahead
    hb.at[1] = p1_max
    wait_read_past(delivered, "the on-time record of partition 1 consumed")
    got = query(conn, f"SELECT uid, price, ts FROM {s} WHERE uid = 101")
    assert [(u, p, micros(t)) for u, p, t in got] == [(101, 7.25, p1_ahead * 1000)], got
    wait_watermark_row(
        {"idle_partitions": "0", "watermark": pg_text(wm1), "late_events": "1"},
        "both partitions active, the watermark unchanged",
    )

    # Both active: partition 0 far ahead alone does not move the clock (partition 1 holds it
    # back at p1 max - 5 s, below the current watermark) ...
    p0_max = T0 + 100 * SECOND
    delivered = produce(0, [event(102, 3.5, p0_max)])
    hb.at[0] = p0_max
    wait_read_past(delivered, "partition 0's far-ahead record consumed")
    wait_watermark_row(
        {"idle_partitions": "0", "watermark": pg_text(max(wm1, min(p0_max, p1_max) - DELAY))},
        "partition 0 far ahead: the watermark held back by partition 1",
    )
    # ... and partition 1 a little ahead moves it to the minimum of the two.
    p1_max = T0 + 30 * SECOND
    delivered = produce(1, [event(103, 4.75, p1_max)])
    hb.at[1] = p1_max
    wm2 = min(p0_max, p1_max) - DELAY
    assert wm2 > wm1
    wait_read_past(delivered, "partition 1's record consumed")
    wait_watermark_row(
        {"idle_partitions": "0", "watermark": pg_text(wm2), "late_events": "1", "partitions": "2"},
        "the watermark = min over partitions of (max ts - 5 s)",
    )
    assert seen_watermarks == sorted(seen_watermarks), f"the watermark moved back: {seen_watermarks}"
    assert seen_watermarks[-1] == wm2 * 1000

    # Every record but the late one is in the stream, heartbeats included; nothing else.
    hb.at.clear()
    hw = broker.high_watermarks(topic)
    assert sum(hw.values()) == len(produced) + len(hb.sent)
    catch_up(broker, conn, s, topic)
    expected = sorted(
        [(ev["uid"], ev["price"], _ms(ev) * 1000) for _, ev in produced if ev is not late]
        + [(HEARTBEAT_UID, 0.0, ts * 1000) for _, ts in hb.sent]
    )
    assert stream_rows(conn, s) == expected
    row = watermark_row(conn, s)
    assert int(row["late_events"]) + len(expected) == len(produced) + len(hb.sent)


# ============================================================================================
# 2. Live views versus the same views replayed, and versus a Python oracle

RECENT_SQL = (
    "SELECT uid, avg(price) AS avg_price, count(*) AS n FROM {s} "
    "WHERE ts > NOW() - INTERVAL '30 minutes' GROUP BY uid"
)
TUMBLE_SQL = (
    "SELECT uid, window_start, window_end, count(*) AS n, sum(price) AS total "
    "FROM TUMBLE({s}, ts, INTERVAL '1 minute') GROUP BY uid, window_start, window_end"
)
HOP_SQL = (
    "SELECT uid, window_start, window_end, count(*) AS n, sum(price) AS total, max(price) AS top "
    "FROM HOP({s}, ts, INTERVAL '1 minute', INTERVAL '5 minutes') "
    "GROUP BY uid, window_start, window_end"
)
EOWC_SQL = TUMBLE_SQL + " EMIT ON WINDOW CLOSE"
# The per-event feature: each event with its user's 30-minute average as of its own time.
OVER_SQL = (
    "SELECT uid, ts, price, avg(price) OVER (PARTITION BY uid ORDER BY ts "
    "RANGE BETWEEN INTERVAL '30 minutes' PRECEDING AND CURRENT ROW) AS avg_30m FROM {s}"
)
VIEW_COLUMNS = {
    "recent": "uid, avg_price, n",
    "tumble": "uid, window_start, window_end, n, total",
    "hop": "uid, window_start, window_end, n, total, top",
    "eowc": "uid, window_start, window_end, n, total",
    "over": "uid, ts, price, avg_30m",
}
VIEW_SQL = {
    "recent": RECENT_SQL,
    "tumble": TUMBLE_SQL,
    "hop": HOP_SQL,
    "eowc": EOWC_SQL,
    "over": OVER_SQL,
}


def generate_round(rng: random.Random, first: int, n: int, partitions: int, allow_far: bool):
    """n events [(partition, event)] with indices first.., event times mostly increasing
    (1.5 s apart), some up to 20 s out of order, a few far behind (late) and a few without an
    event time. Every partition gets at least one record."""
    out = []
    for i in range(first, first + n):
        base = T0 + i * 1500
        r = rng.random()
        if r < 0.80:
            ts = base + rng.randrange(0, 1500)
        elif r < 0.97:
            ts = base - rng.randrange(0, 20 * SECOND)
        elif r < 0.99 and allow_far:
            ts = base - rng.randrange(60 * MINUTE, 120 * MINUTE)  # far behind: late
        elif r < 0.995:
            ts = None
        else:
            ts = base + rng.randrange(0, 1500)
        part = (i - first) if i - first < partitions else rng.randrange(partitions)
        out.append((part, event(rng.randrange(20), rng.randrange(0, 400) / 4, ts)))
    assert {p for p, _ in out} == set(range(partitions))
    return out


def test_live_views_equal_replayed_views_and_the_oracle(broker, kafka_conn):
    conn = kafka_conn
    topic = broker.create_topic(unique_name("wm_replay"), partitions=3)
    s = unique_name("s")
    # A long idle_timeout: no partition ever goes idle, so none stops holding the clock back.
    create_stream(conn, s, topic, extra_columns=", _partition INT", idle_timeout="1 hour")
    live = {k: unique_name(f"live_{k}") for k in VIEW_SQL}
    for k, name in live.items():
        execute(conn, f"CREATE MATERIALIZED VIEW {name} AS {VIEW_SQL[k].format(s=s)}")

    rng = random.Random(20260101)
    produced: list[tuple[int, dict]] = []
    rounds, per_round = 5, 600
    far_behind = []
    for r in range(rounds):
        batch = generate_round(rng, r * per_round, per_round, 3, allow_far=r > 0)
        # Far-behind records after the first round are behind a watermark every partition
        # has already moved past: certainly late.
        if r > 0:
            far_behind += [ev for _, ev in batch if "ts" in ev and _ms(ev) < T0 - 30 * MINUTE]
        broker.produce(topic, [ev for _, ev in batch], partition=[p for p, _ in batch])
        produced += batch
        catch_up(broker, conn, s, topic)
    assert far_behind, "the generator made no far-behind events"
    no_time = sum(1 for _, ev in produced if "ts" not in ev)
    assert no_time > 0

    # What the stream kept, its clock, and the accounting.
    rows = stream_rows(conn, s, "uid, price, ts, _partition")
    wm = watermark_row(conn, s)
    assert wm["partitions"] == "3" and wm["idle_partitions"] == "0", wm
    late = int(wm["late_events"])
    assert late + len(rows) == len(produced), (late, len(rows), len(produced))
    assert late >= len(far_behind) + no_time
    far_bound = (T0 - 30 * MINUTE) * 1000
    assert not [r for r in rows if r[2] < far_bound], "a far-behind (late) row was kept"
    # Every kept row is a produced one (as a multiset, with its partition).
    produced_keys = Counter(
        (ev["uid"], ev["price"], _ms(ev) * 1000, p) for p, ev in produced if "ts" in ev
    )
    kept_keys = Counter(rows)
    assert not kept_keys - produced_keys, f"rows nobody produced: {kept_keys - produced_keys}"
    assert sum((produced_keys - kept_keys).values()) == late - no_time
    # No partition was idle, so the final watermark is min over partitions of (max kept ts)
    # minus the delay (each partition's max only grows, so the minimum did too).
    per_partition_max = {}
    for _, _, ts, p in rows:
        per_partition_max[p] = max(per_partition_max.get(p, ts), ts)
    assert sorted(per_partition_max) == [0, 1, 2]
    watermark = parse_watermark(wm["watermark"])
    assert watermark == min(per_partition_max.values()) - DELAY * 1000, (wm, per_partition_max)

    # The live views against the oracle over the stream's rows and its watermark.
    kept = [(u, p, ts) for u, p, ts, _ in rows]
    expected = {
        "recent": recent_oracle(kept, watermark, 30 * MINUTE),
        "tumble": tumble_oracle(kept, MINUTE),
        "hop": hop_oracle(kept, MINUTE, 5 * MINUTE),
        "eowc": tumble_oracle(kept, MINUTE, closed_by=watermark),
        "over": over_oracle(kept, 30 * MINUTE),
    }
    assert expected["eowc"] and len(expected["eowc"]) < len(expected["tumble"])
    assert len(expected["recent"]) > 0

    def normalised(kind: str, got: list[tuple]) -> list[tuple]:
        if kind == "recent":
            return round_avg(got, 1)
        if kind == "over":
            return round_avg(as_micros_rows(got, (1,)), 3)
        return as_micros_rows(got, (1, 2))

    def read(kind: str, name: str) -> list[tuple]:
        return view_rows(conn, f"SELECT {VIEW_COLUMNS[kind]} FROM {name}")

    live_contents = {}
    for k, name in live.items():
        eventually_equal(lambda: normalised(k, read(k, name)), expected[k], what=f"live {k} view")
        live_contents[k] = read(k, name)

    # The same views built later by replaying what the stream ingested: identical rows.
    replayed = {k: unique_name(f"replay_{k}") for k in VIEW_SQL}
    for k, name in replayed.items():
        execute(
            conn,
            f"CREATE MATERIALIZED VIEW {name} WITH (start = 'earliest') AS {VIEW_SQL[k].format(s=s)}",
        )
    for k, name in replayed.items():
        eventually_equal(lambda: read(k, name), live_contents[k], what=f"replayed {k} view")
    # Nothing moved meanwhile.
    for k, name in live.items():
        assert read(k, name) == live_contents[k], f"live {k} view changed"
    assert watermark_row(conn, s)["watermark"] == wm["watermark"]


# ============================================================================================
# 3. A second stream over the same topic


def simulate_one_partition(events: list[dict]):
    """The clock of a one-partition stream over `events` in topic order:
    (kept rows [(uid, price, ts_us)], watermark_us or None, late count)."""
    watermark, high, late, kept = None, None, 0, []
    for ev in events:
        if "ts" not in ev:
            late += 1
            continue
        ts = _ms(ev)
        if watermark is not None and ts < watermark:
            late += 1
            continue
        kept.append((ev["uid"], ev["price"], ts * 1000))
        if high is None or ts > high:
            high = ts
            watermark = max(watermark if watermark is not None else ts - DELAY, ts - DELAY)
    return sorted(kept), None if watermark is None else watermark * 1000, late


def test_new_stream_over_the_same_topic_replays_identically(broker, kafka_conn):
    conn = kafka_conn
    topic = broker.create_topic(unique_name("wm_second"), partitions=1)
    a, b = unique_name("a"), unique_name("b")
    rng = random.Random(31337)
    events = [ev for _, ev in generate_round(rng, 0, 400, 1, allow_far=True)]
    broker.produce(topic, events, partition=0)

    create_stream(conn, a, topic)
    views = {}
    for k in ("recent", "eowc"):
        views[(a, k)] = unique_name(f"{a}_{k}")
        execute(conn, f"CREATE MATERIALIZED VIEW {views[(a, k)]} AS {VIEW_SQL[k].format(s=a)}")
    catch_up(broker, conn, a, topic)

    create_stream(conn, b, topic)
    for k in ("recent", "eowc"):
        views[(b, k)] = unique_name(f"{b}_{k}")
        execute(conn, f"CREATE MATERIALIZED VIEW {views[(b, k)]} AS {VIEW_SQL[k].format(s=b)}")

    def check(all_events):
        kept, watermark, late = simulate_one_partition(all_events)
        assert late > 0 and watermark is not None
        expected = {
            "recent": recent_oracle(kept, watermark, 30 * MINUTE),
            "eowc": tumble_oracle(kept, MINUTE, closed_by=watermark),
        }
        assert expected["recent"] and expected["eowc"]
        contents = {}
        for stream in (a, b):
            catch_up(broker, conn, stream, topic)
            assert stream_rows(conn, stream) == kept, f"stream {stream}"
            row = watermark_row(conn, stream)
            assert (parse_watermark(row["watermark"]), int(row["late_events"])) == (watermark, late), row
            for k in ("recent", "eowc"):
                name = views[(stream, k)]
                sql = f"SELECT {VIEW_COLUMNS[k]} FROM {name}"
                norm = (lambda g: round_avg(g, 1)) if k == "recent" else (lambda g: as_micros_rows(g, (1, 2)))
                eventually_equal(lambda: norm(view_rows(conn, sql)), expected[k], what=f"{name}")
                contents[(stream, k)] = view_rows(conn, sql)
        for k in ("recent", "eowc"):
            assert contents[(a, k)] == contents[(b, k)], f"{k}: stream A's view != stream B's"
        ra, rb = watermark_row(conn, a), watermark_row(conn, b)
        assert (ra["watermark"], ra["late_events"]) == (rb["watermark"], rb["late_events"])

    check(events)
    # More events while both streams are live: still the same.
    more = [ev for _, ev in generate_round(rng, 400, 200, 1, allow_far=True)]
    broker.produce(topic, more, partition=0)
    check(events + more)
