"""Log retention end to end: a real broker (Tansu), a real `runnel serve`, psycopg.

A stream with `retention = '1 byte'` keeps only the last log entry its views have read, so
every earlier entry is deleted soon after it is read. A view created afterwards must still see
everything the stream ingested: a Kafka stream's deleted entries are read again from the topic,
and the view must equal one that was there all along (and, with a start offset, the rows from
that offset). A Nexmark stream's deleted entries are generated again. An embedded stream
has no other copy: a new view over it is refused, naming the earliest position its log still
holds.

The expected answers come from what the test produced (Python oracles), or from views that saw
every row live; nothing asserts on timing, every wait has a generous timeout.
"""

from __future__ import annotations

import random
from collections import defaultdict

import psycopg
import pytest

from kafka_harness import unique_name
from runnel_proc import eventually_equal, execute, flush, query, wait_caught_up, wait_until
from test_kafka_event_time import (
    VIEW_COLUMNS,
    VIEW_SQL,
    create_stream,
    generate_round,
)

TRIM = "1 byte"


def kafka_with(topic: str, **opts: str) -> str:
    items = {"connector": "kafka", "topic": topic, "format": "json", **opts}
    return "WITH (" + ", ".join(f"{k} = '{v}'" for k, v in items.items()) + ")"


def count(conn, relation: str) -> int:
    return query(conn, f"SELECT count(*) FROM {relation}")[0][0]


def wait_trimmed(conn, stream: str, below: int) -> None:
    """Until the stream's log holds fewer than `below` rows (retention deleted the rest)."""
    wait_until(
        lambda: count(conn, stream) < below,
        what=f"retention to trim {stream} below {below} rows",
    )


def view_rows(conn, sql: str) -> list[tuple]:
    flush(conn)
    return sorted(query(conn, sql))


def test_kafka_stream_trimmed_then_new_views_read_the_topic(broker, runnel_kafka):
    conn = runnel_kafka.connect()
    topic = broker.create_topic(unique_name("ret"), partitions=2)
    s = unique_name("s")
    execute(
        conn,
        f"CREATE STREAM {s} (uid BIGINT, price BIGINT) {kafka_with(topic, retention=TRIM)}",
    )
    agg = "SELECT uid, count(*) AS n, sum(price) AS total FROM {s} GROUP BY uid"
    live = unique_name("live")
    execute(conn, f"CREATE MATERIALIZED VIEW {live} AS {agg.format(s=s)}")

    rng = random.Random(14)
    produced = []  # (partition, offset, uid, price)
    for _ in range(4):
        values = [{"uid": rng.randrange(10), "price": rng.randrange(1000)} for _ in range(300)]
        parts = [rng.randrange(2) for _ in values]
        # A record that does not decode: left out, now and when read again.
        values.append("not json")
        parts.append(0)
        positions = broker.produce(topic, values, partition=parts)
        produced += [
            (p, o, v["uid"], v["price"])
            for (p, o), v in zip(positions, values)
            if isinstance(v, dict)
        ]
        wait_caught_up(conn, s, broker.high_watermarks(topic))
        flush(conn)

    def oracle(rows):
        groups = defaultdict(lambda: [0, 0])
        for _, _, uid, price in rows:
            groups[uid][0] += 1
            groups[uid][1] += price
        return sorted((uid, n, total) for uid, (n, total) in groups.items())

    eventually_equal(lambda: view_rows(conn, f"SELECT * FROM {live}"), oracle(produced),
                     what="live view")
    # Every entry but the last one read goes: the stream itself keeps a few rows only.
    wait_trimmed(conn, s, len(produced) // 2)

    # A view created now reads the deleted part from the topic: the same as the live one.
    late = unique_name("late")
    execute(conn, f"CREATE MATERIALIZED VIEW {late} AS {agg.format(s=s)}")
    assert view_rows(conn, f"SELECT * FROM {late}") == oracle(produced)

    # From a position inside the deleted part: exactly the rows at or after it.
    start = {0: produced[len(produced) // 3][1], 1: 17}
    from_start = unique_name("from_start")
    offsets = ",".join(f"{p}={o}" for p, o in start.items())
    execute(
        conn,
        f"CREATE MATERIALIZED VIEW {from_start} WITH (start = 'offsets:{offsets}') "
        f"AS {agg.format(s=s)}",
    )
    expected = oracle([r for r in produced if r[1] >= start[r[0]]])
    assert view_rows(conn, f"SELECT * FROM {from_start}") == expected

    # After a restart the trimmed log, its index and its numbering are where they were.
    conn.close()
    runnel_kafka.restart()
    conn = runnel_kafka.connect()
    more = [{"uid": 3, "price": 5}, {"uid": 11, "price": 7}]
    positions = broker.produce(topic, more, partition=1)
    produced += [(p, o, v["uid"], v["price"]) for (p, o), v in zip(positions, more)]
    wait_caught_up(conn, s, broker.high_watermarks(topic))
    after_restart = unique_name("after_restart")
    execute(conn, f"CREATE MATERIALIZED VIEW {after_restart} AS {agg.format(s=s)}")
    for view in (live, late, after_restart):
        eventually_equal(lambda: view_rows(conn, f"SELECT * FROM {view}"), oracle(produced),
                         what=f"{view} after the restart")
    conn.close()


def test_trimmed_event_time_stream_rebuilds_exactly(broker, runnel_kafka):
    """The clock drops late rows and moves windows: entries rebuilt from the topic run it again
    from its state before each chunk, so every window, EMIT ON WINDOW CLOSE and OVER view
    created after the trim equals the one that saw the stream live."""
    conn = runnel_kafka.connect()
    topic = broker.create_topic(unique_name("ret_wm"), partitions=3)
    s = unique_name("s")
    create_stream(conn, s, topic, idle_timeout="1 hour", retention=TRIM)
    kinds = ["tumble", "eowc", "over"]
    live = {k: unique_name(f"live_{k}") for k in kinds}
    for k, name in live.items():
        execute(conn, f"CREATE MATERIALIZED VIEW {name} AS {VIEW_SQL[k].format(s=s)}")
    rng = random.Random(20261205)
    total = 0
    for r in range(4):
        batch = generate_round(rng, r * 400, 400, 3, allow_far=r > 0)
        broker.produce(topic, [ev for _, ev in batch], partition=[p for p, _ in batch])
        total += len(batch)
        wait_caught_up(conn, s, broker.high_watermarks(topic))
        flush(conn)

    def read(kind: str, name: str) -> list[tuple]:
        return view_rows(conn, f"SELECT {VIEW_COLUMNS[kind]} FROM {name}")

    contents = {k: read(k, name) for k, name in live.items()}
    assert all(contents.values()), contents
    wait_trimmed(conn, s, total // 2)
    for k in kinds:
        name = unique_name(f"rebuilt_{k}")
        execute(conn, f"CREATE MATERIALIZED VIEW {name} AS {VIEW_SQL[k].format(s=s)}")
        assert read(k, name) == contents[k], f"{k} view rebuilt from the topic differs"
    conn.close()


def test_embedded_stream_trimmed_refuses_a_new_view(runnel_kafka):
    conn = runnel_kafka.connect()
    s = unique_name("e")
    execute(conn, f"CREATE STREAM {s} (k BIGINT, x BIGINT) WITH (retention = '{TRIM}')")
    v = unique_name("v")
    execute(conn, f"CREATE MATERIALIZED VIEW {v} AS SELECT k, sum(x) AS x FROM {s} GROUP BY k")
    for i in range(5):
        execute(conn, f"INSERT INTO {s} VALUES ({i % 2}, {i}), ({i % 2}, 100)")
        flush(conn)
    # The view saw every row; the stream keeps the last entry read only.
    assert view_rows(conn, f"SELECT * FROM {v}") == [(0, 306), (1, 204)]
    wait_trimmed(conn, s, 10)
    with pytest.raises(psycopg.Error) as refused:
        execute(conn, f"CREATE MATERIALIZED VIEW {unique_name('w')} AS SELECT * FROM {s}")
    assert refused.value.sqlstate == "55000"
    message = str(refused.value)
    assert s in message and "earliest available position" in message, message
    # The stream goes on: new rows reach the view, and numbering continues after the trim.
    execute(conn, f"INSERT INTO {s} VALUES (1, 1)")
    assert view_rows(conn, f"SELECT * FROM {v}") == [(0, 306), (1, 205)]
    conn.close()


def test_generated_stream_trimmed_is_generated_again_for_a_new_view(runnel_kafka):
    """A Nexmark stream's log keeps recipes (the event numbers an entry holds), so entries
    retention deleted are generated again for a later view, which equals one that was there
    all along."""
    conn = runnel_kafka.connect()
    s = unique_name("bid")
    events = 100_000
    bids = events // 50 * 46
    execute(
        conn,
        f"CREATE STREAM {s} (auction BIGINT, price BIGINT) WITH (connector = 'nexmark', "
        f"table = 'bid', events = '{events}', rate = 'unlimited', retention = '{TRIM}')",
    )
    sql = f"SELECT auction % 7 AS k, count(*) AS n, sum(price) AS p FROM {s} GROUP BY 1"
    v = unique_name("v")
    execute(conn, f"CREATE MATERIALIZED VIEW {v} AS {sql}")
    eventually_equal(
        lambda: query(conn, f"SELECT sum(n)::bigint FROM {v}")[0][0],
        bids,
        what=f"{v} to count every bid",
    )
    wait_trimmed(conn, s, bids)
    w = unique_name("w")
    execute(conn, f"CREATE MATERIALIZED VIEW {w} AS {sql}")
    live = view_rows(conn, f"SELECT * FROM {v}")
    assert sum(n for _, n, _ in live) == bids
    assert view_rows(conn, f"SELECT * FROM {w}") == live
    conn.close()


def test_retention_option_is_checked(runnel_kafka):
    conn = runnel_kafka.connect()
    with pytest.raises(psycopg.Error) as bad:
        execute(conn, f"CREATE STREAM {unique_name('b')} (k BIGINT) WITH (retention = 'soon')")
    assert bad.value.sqlstate == "22023"
    with pytest.raises(psycopg.Error) as table:
        execute(
            conn,
            f"CREATE TABLE {unique_name('t')} (k BIGINT PRIMARY KEY) WITH (retention = '1 day')",
        )
    assert table.value.sqlstate == "42P16"
    # An embedded stream with an ample retention keeps everything a new view reads.
    s = unique_name("kept")
    execute(conn, f"CREATE STREAM {s} (k BIGINT) WITH (retention = '7 days')")
    execute(conn, f"INSERT INTO {s} VALUES (1), (2)")
    v = unique_name("v")
    execute(conn, f"CREATE MATERIALIZED VIEW {v} AS SELECT sum(k) AS k FROM {s}")
    assert view_rows(conn, f"SELECT * FROM {v}") == [(3,)]
    conn.close()
