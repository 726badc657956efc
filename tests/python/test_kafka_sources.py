"""Kafka sources end to end: a real broker (Tansu), a real `runnel serve`, psycopg.

Every test uses fresh topic and object names, produces its records through the harness
(kafka_harness.Broker), computes the expected answer in Python from exactly what it produced
(partitions and offsets from the delivery reports), and polls Runnel until it reports that
answer (ingestion is asynchronous; views are read as of the last checkpoint). Nothing here
asserts on timing; every wait has a generous timeout.

Fixtures (conftest.py): `broker` (session Tansu), `runnel_kafka` (a RunnelProcess started with
--kafka-bootstrap-servers), `kafka_conn` (autocommit psycopg connection).
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict

import pytest
from psycopg.postgres import types as pg_types

from kafka_harness import Broker, header_dict, ms_to_datetime, rfc3339_ms, unique_name
from runnel_proc import (
    PROGRESS_COLUMNS,
    eventually_equal,
    execute,
    flush,
    progress_by_partition,
    query,
    show_progress,
    wait_caught_up,
    wait_until,
)

# 2026-06-10T10:00:00Z in ms: record timestamps are set explicitly from here.
T0 = 1_781_085_600_000


def kafka_with(topic: str, **opts: str) -> str:
    items = {"connector": "kafka", "topic": topic, "format": "json", **opts}
    return "WITH (" + ", ".join(f"{k} = '{v}'" for k, v in items.items()) + ")"


def row_key(row):
    """Sort key for rows that may hold NULLs (each column has one Python type otherwise)."""
    return tuple((0, 0) if x is None else (1, x) for x in row)


def sorted_rows(conn, sql):
    return sorted(query(conn, sql), key=row_key)


def view_rows(conn, sql):
    """A view's rows after a FLUSH (views are read as of the last checkpoint)."""
    flush(conn)
    return sorted(query(conn, sql), key=row_key)


def catch_up(broker, conn, source, topic):
    return wait_caught_up(conn, source, broker.high_watermarks(topic))


# ============================================================================================
# JSON, CSV, metadata columns, aggregates, joins, tables


def test_json_stream_metadata_columns_and_aggregate_view(broker, kafka_conn):
    topic = broker.create_topic(unique_name("events"), partitions=3)
    s, v = unique_name("s"), unique_name("agg")
    rng = random.Random(7)

    def batch(start, n):
        values, keys, parts, stamps, event_times = [], [], [], [], []
        for i in range(start, start + n):
            event_times.append(T0 + i * 1000)
            ev = {"user_id": rng.randrange(8), "ts": rfc3339_ms(T0 + i * 1000), "extra": [1, 2]}
            if i % 7:
                ev["price"] = rng.randrange(0, 400) / 4  # multiples of 0.25: exact float sums
            values.append(ev)
            keys.append(f"key-{i}" if i % 5 else None)
            parts.append(i % 3)
            stamps.append(T0 + 500_000 + i * 10)
        delivered = broker.produce(topic, values, keys=keys, partition=parts, timestamps=stamps)
        return [
            (ev, k, ts, p, off, et)
            for ev, k, ts, (p, off), et in zip(values, keys, stamps, delivered, event_times)
        ]

    produced = batch(0, 150)  # a backlog before the stream exists ...
    execute(
        kafka_conn,
        f"CREATE STREAM {s} (user_id BIGINT, price DOUBLE PRECISION, ts TIMESTAMPTZ, "
        f"_partition INT, _offset BIGINT, _timestamp TIMESTAMPTZ, _key TEXT) {kafka_with(topic)}",
    )
    execute(
        kafka_conn,
        f"CREATE MATERIALIZED VIEW {v} AS SELECT user_id, count(*) AS n, sum(price) AS total, "
        f"avg(price) AS mean FROM {s} GROUP BY user_id",
    )
    produced += batch(150, 150)  # ... and live records after

    expected_rows = sorted(
        [
            (ev["user_id"], ev.get("price"), ms_to_datetime(et), p, off, ms_to_datetime(ts), k)
            for ev, k, ts, p, off, et in produced
        ],
        key=row_key,
    )
    catch_up(broker, kafka_conn, s, topic)
    eventually_equal(
        lambda: sorted_rows(
            kafka_conn, f"SELECT user_id, price, ts, _partition, _offset, _timestamp, _key FROM {s}"
        ),
        expected_rows,
        what="stream rows with metadata columns",
    )
    got = query(kafka_conn, f"SELECT _partition, _offset, _key FROM {s} LIMIT 1")[0]
    assert type(got[0]) is int and type(got[1]) is int and (got[2] is None or type(got[2]) is str)

    groups = defaultdict(list)
    for ev, *_ in produced:
        groups[ev["user_id"]].append(ev.get("price"))
    expected = sorted(
        [
            (u, len(ps), sum(p for p in ps if p is not None) if any(p is not None for p in ps) else None,
             _avg(ps))
            for u, ps in groups.items()
        ],
        key=row_key,
    )

    def read_view():
        return sorted(
            [(u, n, t, None if m is None else round(m, 9))
             for u, n, t, m in view_rows(kafka_conn, f"SELECT user_id, n, total, mean FROM {v}")],
            key=row_key,
        )

    eventually_equal(read_view, expected, what="aggregate view")


def _avg(prices):
    xs = [p for p in prices if p is not None]
    return round(sum(xs) / len(xs), 9) if xs else None


def test_csv_stream(broker, kafka_conn):
    topic = broker.create_topic(unique_name("csv"), partitions=2)
    s = unique_name("c")
    # Fields in declared column order, metadata columns skipped: id, name, price, qty.
    lines = [
        ("1,apple,2.5,3", (1, "apple", 2.5, 3)),
        ('2,"pear, green",0.25,1', (2, "pear, green", 0.25, 1)),
        ("3,banana,10,7", (3, "banana", 10.0, 7)),
        ("4,kiwi,-1.75,0", (4, "kiwi", -1.75, 0)),
    ]
    delivered = broker.produce(topic, [l for l, _ in lines[:2]], partition=0)
    execute(
        kafka_conn,
        f"CREATE STREAM {s} (id BIGINT, name TEXT, _offset BIGINT, price DOUBLE PRECISION, "
        f"_partition INT, qty INT) {kafka_with(topic, format='csv')}",
    )
    delivered += broker.produce(topic, [l for l, _ in lines[2:]], partition=[1, 0])
    expected = sorted(
        [(*row, p, off) for (_, row), (p, off) in zip(lines, delivered)], key=row_key
    )
    catch_up(broker, kafka_conn, s, topic)
    eventually_equal(
        lambda: sorted_rows(kafka_conn, f"SELECT id, name, price, qty, _partition, _offset FROM {s}"),
        expected,
        what="CSV stream rows",
    )


def test_join_stream_with_kafka_table(broker, kafka_conn):
    orders_topic = broker.create_topic(unique_name("orders"), partitions=3)
    items_topic = broker.create_topic(unique_name("items"), partitions=2)
    orders, items, v = unique_name("orders"), unique_name("items"), unique_name("per_cat")
    rng = random.Random(11)

    table: dict[int, dict] = {}

    def put_items(rows):
        # One partition per key, so "latest per key" is well defined.
        broker.produce(
            items_topic, rows, keys=[{"item_id": r["item_id"]} for r in rows],
            partition=[r["item_id"] % 2 for r in rows],
        )
        for r in rows:
            table[r["item_id"]] = r

    put_items([{"item_id": i, "name": f"item{i}", "category": f"cat{i % 3}"} for i in range(10)])
    order_list = [{"order_id": n, "item_id": rng.randrange(12), "qty": rng.randrange(1, 5)} for n in range(200)]
    broker.produce(orders_topic, order_list[:100], partition=[n % 3 for n in range(100)])

    execute(kafka_conn, f"CREATE STREAM {orders} (order_id BIGINT, item_id BIGINT, qty BIGINT) {kafka_with(orders_topic)}")
    execute(
        kafka_conn,
        f"CREATE TABLE {items} (item_id BIGINT PRIMARY KEY, name TEXT, category TEXT) {kafka_with(items_topic)}",
    )
    execute(
        kafka_conn,
        f"CREATE MATERIALIZED VIEW {v} AS SELECT i.category, count(*) AS n, sum(o.qty) AS qty "
        f"FROM {orders} o JOIN {items} i ON o.item_id = i.item_id GROUP BY i.category",
    )
    broker.produce(orders_topic, order_list[100:], partition=[n % 3 for n in range(100, 200)])
    # Changes to the table flow through the join: a moved item, a new category, a deletion.
    put_items([{"item_id": 4, "name": "item4", "category": "moved"},
               {"item_id": 10, "name": "item10", "category": "cat-new"}])
    broker.produce(items_topic, [None], keys=[{"item_id": 7}], partition=7 % 2)
    del table[7]

    per_cat: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for o in order_list:
        item = table.get(o["item_id"])
        if item is not None:
            per_cat[item["category"]][0] += 1
            per_cat[item["category"]][1] += o["qty"]
    expected = sorted([(c, n, q) for c, (n, q) in per_cat.items()], key=row_key)

    catch_up(broker, kafka_conn, orders, orders_topic)
    catch_up(broker, kafka_conn, items, items_topic)
    eventually_equal(
        lambda: view_rows(kafka_conn, f"SELECT category, n, qty FROM {v}"), expected, what="join view"
    )


def test_kafka_table_updates_and_tombstones(broker, kafka_conn):
    topic = broker.create_topic(unique_name("items"), partitions=3)
    t = unique_name("items")
    rng = random.Random(5)
    latest: dict[int, dict] = {}
    values, keys, parts = [], [], []

    def key_for(k, form):
        # Both key encodings of the spec: a JSON object of the key columns, or the bare value.
        return json.dumps({"item_id": k}) if form % 2 == 0 else json.dumps(k)

    step = 0
    for round_ in range(4):
        for k in range(30):
            step += 1
            if round_ > 0 and rng.random() < 0.3:
                values.append(None)  # tombstone: deletes the row whose key is the record key
                latest.pop(k, None)
            else:
                row = {"item_id": k, "name": f"n{k}-{round_}-{rng.randrange(1000)}", "price": rng.randrange(100)}
                values.append(row)
                latest[k] = {"item_id": k, "name": row["name"]}
            keys.append(key_for(k, step))
            parts.append(k % 3)  # every record of a key in one partition: order is defined

    # Half the records before the table exists, half after.
    half = len(values) // 2
    broker.produce(topic, values[:half], keys=keys[:half], partition=parts[:half])
    execute(kafka_conn, f"CREATE TABLE {t} (item_id BIGINT PRIMARY KEY, name TEXT) {kafka_with(topic)}")
    broker.produce(topic, values[half:], keys=keys[half:], partition=parts[half:])
    # A tombstone for a key that never existed changes nothing.
    broker.produce(topic, [None], keys=[json.dumps({"item_id": 999})], partition=0)

    expected = sorted([(r["item_id"], r["name"]) for r in latest.values()])
    catch_up(broker, kafka_conn, t, topic)
    eventually_equal(
        lambda: sorted(query(kafka_conn, f"SELECT item_id, name FROM {t}")), expected, what="table contents"
    )


def test_kafka_table_text_key_forms(broker, kafka_conn):
    topic = broker.create_topic(unique_name("skus"), partitions=1)
    t = unique_name("skus")
    rows = [{"sku": f"sku-{c}", "qty": i} for i, c in enumerate("abcdef")]
    broker.produce(topic, rows, keys=[json.dumps({"sku": r["sku"]}) for r in rows])
    execute(kafka_conn, f"CREATE TABLE {t} (sku TEXT PRIMARY KEY, qty BIGINT) {kafka_with(topic)}")
    # Tombstones with each key form: JSON object, bare JSON string, non-JSON text.
    broker.produce(
        topic, [None, None, None, {"sku": "sku-a", "qty": 100}],
        keys=[json.dumps({"sku": "sku-b"}), json.dumps("sku-c"), "sku-d", json.dumps("sku-a")],
    )
    expected = [("sku-a", 100), ("sku-e", 4), ("sku-f", 5)]
    catch_up(broker, kafka_conn, t, topic)
    eventually_equal(lambda: sorted(query(kafka_conn, f"SELECT sku, qty FROM {t}")), expected, what="table contents")


# ============================================================================================
# Stream start positions


def _produce_numbered(broker, topic, partitions, per_partition, first_id=0, stamp=None):
    """`per_partition` records {"id": n} into each partition; returns [(id, partition, offset)]."""
    values, parts, stamps = [], [], []
    n = first_id
    for p in range(partitions):
        for i in range(per_partition):
            values.append({"id": n})
            parts.append(p)
            stamps.append(stamp(p, i) if stamp else None)
            n += 1
    delivered = broker.produce(topic, values, partition=parts, timestamps=stamps if stamp else None)
    return [(v["id"], p, off) for v, (p, off) in zip(values, delivered)]


def _stream_ids(conn, s):
    return sorted(r[0] for r in query(conn, f"SELECT id FROM {s}"))


def test_start_earliest(broker, kafka_conn):
    topic = broker.create_topic(unique_name("early"), partitions=2)
    s = unique_name("s")
    before = _produce_numbered(broker, topic, 2, 10)
    execute(kafka_conn, f"CREATE STREAM {s} (id BIGINT) {kafka_with(topic, start='earliest')}")
    after = _produce_numbered(broker, topic, 2, 5, first_id=100)
    catch_up(broker, kafka_conn, s, topic)
    eventually_equal(lambda: _stream_ids(kafka_conn, s), sorted(r[0] for r in before + after))


def test_start_latest(broker, kafka_conn):
    topic = broker.create_topic(unique_name("late"), partitions=3)
    s = unique_name("s")
    _produce_numbered(broker, topic, 3, 10)
    before_marks = broker.high_watermarks(topic)
    execute(kafka_conn, f"CREATE STREAM {s} (id BIGINT) {kafka_with(topic, start='latest')}")
    # 'latest' is resolved when the stream starts: wait until Runnel reports its positions (the
    # end offsets at creation) before producing more, so the test does not race the resolution.
    wait_until(
        lambda: (lambda rows: set(rows) == set(before_marks)
                 and all(rows[p]["offset"] is not None and int(rows[p]["offset"]) == before_marks[p]
                         for p in before_marks))(progress_by_partition(kafka_conn, s)),
        what="the 'latest' positions to be resolved",
        describe=lambda: repr(show_progress(kafka_conn, s)),
    )
    after = _produce_numbered(broker, topic, 3, 4, first_id=1000)
    catch_up(broker, kafka_conn, s, topic)
    eventually_equal(lambda: _stream_ids(kafka_conn, s), sorted(r[0] for r in after))


def test_start_offsets(broker, kafka_conn):
    topic = broker.create_topic(unique_name("offs"), partitions=3)
    s = unique_name("s")
    before = _produce_numbered(broker, topic, 3, 10)
    start = {0: 3, 1: 7, 2: 10}
    spec = "offsets:" + ",".join(f"{p}={o}" for p, o in start.items())
    execute(kafka_conn, f"CREATE STREAM {s} (id BIGINT, _partition INT, _offset BIGINT) {kafka_with(topic, start=spec)}")
    after = _produce_numbered(broker, topic, 3, 2, first_id=500)
    expected = sorted(r for r in before + after if r[2] >= start[r[1]])
    catch_up(broker, kafka_conn, s, topic)
    eventually_equal(lambda: sorted(query(kafka_conn, f"SELECT id, _partition, _offset FROM {s}")), expected)


def test_start_timestamp(broker, kafka_conn):
    topic = broker.create_topic(unique_name("times"), partitions=3)
    s = unique_name("s")

    # Partition p: record i at T0 + i * 1000 * (p + 1), except one late record in partition 0
    # (offset 7 carries T0): it is after the start offset, so it is read (positions, not a filter).
    def stamp(p, i):
        return T0 if (p, i) == (0, 7) else T0 + i * 1000 * (p + 1)

    before = _produce_numbered(broker, topic, 3, 10, stamp=stamp)
    cut = T0 + 5000  # first offsets with timestamp >= cut: p0 -> 5 (equal), p1 -> 3, p2 -> 2
    first = {0: 5, 1: 3, 2: 2}
    assert broker.offsets_for_times(topic, cut) == first  # the broker agrees with the spec's rule
    execute(
        kafka_conn,
        f"CREATE STREAM {s} (id BIGINT, _partition INT, _offset BIGINT, _timestamp TIMESTAMPTZ) "
        f"{kafka_with(topic, start='timestamp:' + rfc3339_ms(cut))}",
    )
    after = _produce_numbered(broker, topic, 3, 2, first_id=500, stamp=lambda p, i: T0 + 60_000 + i)
    stamps = {(p, off): stamp(p, off) for _, p, off in before}
    stamps.update({(p, off): T0 + 60_000 + (off - 10) for _, p, off in after})
    expected = sorted(
        (i, p, off, ms_to_datetime(stamps[(p, off)])) for i, p, off in before + after if off >= first[p]
    )
    catch_up(broker, kafka_conn, s, topic)
    eventually_equal(
        lambda: sorted(query(kafka_conn, f"SELECT id, _partition, _offset, _timestamp FROM {s}")), expected
    )


# ============================================================================================
# Views with a start position


def _sum_by_group(records):
    out: dict[int, list[int]] = {}
    for g, x in records:
        acc = out.setdefault(g, [0, 0])
        acc[0] += 1
        acc[1] += x
    return sorted((g, n, t) for g, (n, t) in out.items())


def _produce_groups(broker, topic, partitions, per_partition, rng, stamp=None):
    """Records {"g": ..., "x": ...}; returns [(g, x, partition, offset, timestamp)]."""
    values, parts, stamps = [], [], []
    for p in range(partitions):
        for i in range(per_partition):
            values.append({"g": rng.randrange(5), "x": rng.randrange(100)})
            parts.append(p)
            stamps.append(stamp(p, i) if stamp else None)
    delivered = broker.produce(topic, values, partition=parts, timestamps=stamps if stamp else None)
    return [(v["g"], v["x"], p, off, ts) for v, (p, off), ts in zip(values, delivered, stamps)]


VIEW_SQL = "SELECT g, count(*) AS n, sum(x) AS total FROM {s} GROUP BY g"


def test_views_with_start_offsets_replay_identically(broker, kafka_conn):
    topic = broker.create_topic(unique_name("replay"), partitions=3)
    s, v1, v2 = unique_name("s"), unique_name("v1"), unique_name("v2")
    rng = random.Random(3)
    execute(kafka_conn, f"CREATE STREAM {s} (g BIGINT, x BIGINT) {kafka_with(topic)}")
    before = _produce_groups(broker, topic, 3, 12, rng)
    catch_up(broker, kafka_conn, s, topic)
    # Partition 2 is not named: it starts at offset 0.
    for v in (v1, v2):
        execute(kafka_conn, f"CREATE MATERIALIZED VIEW {v} WITH (start = 'offsets:0=2,1=5') AS " + VIEW_SQL.format(s=s))
    after = _produce_groups(broker, topic, 3, 4, rng)  # then the views stay live
    start = {0: 2, 1: 5, 2: 0}
    expected = _sum_by_group((g, x) for g, x, p, off, _ in before + after if off >= start[p])
    catch_up(broker, kafka_conn, s, topic)
    for v in (v1, v2):
        eventually_equal(lambda: view_rows(kafka_conn, f"SELECT g, n, total FROM {v}"), expected, what=v)
    assert view_rows(kafka_conn, f"SELECT g, n, total FROM {v1}") == view_rows(kafka_conn, f"SELECT g, n, total FROM {v2}")


def test_view_with_start_latest(broker, kafka_conn):
    topic = broker.create_topic(unique_name("vlate"), partitions=2)
    s, v = unique_name("s"), unique_name("v")
    rng = random.Random(4)
    execute(kafka_conn, f"CREATE STREAM {s} (g BIGINT, x BIGINT) {kafka_with(topic)}")
    _produce_groups(broker, topic, 2, 10, rng)
    catch_up(broker, kafka_conn, s, topic)  # everything so far is ingested before the view exists
    execute(kafka_conn, f"CREATE MATERIALIZED VIEW {v} WITH (start = 'latest') AS " + VIEW_SQL.format(s=s))
    after = _produce_groups(broker, topic, 2, 6, rng)
    catch_up(broker, kafka_conn, s, topic)
    expected = _sum_by_group((g, x) for g, x, *_ in after)
    eventually_equal(lambda: view_rows(kafka_conn, f"SELECT g, n, total FROM {v}"), expected)


def test_view_with_start_timestamp(broker, kafka_conn):
    topic = broker.create_topic(unique_name("vtime"), partitions=2)
    s, v = unique_name("s"), unique_name("v")
    rng = random.Random(6)
    execute(kafka_conn, f"CREATE STREAM {s} (g BIGINT, x BIGINT) {kafka_with(topic)}")
    # Partition 0: one record per second; partition 1: one every 3 seconds, plus a late record
    # at offset 6 (timestamp T0) that comes after the start offset and so is included.
    stamp = lambda p, i: T0 if (p, i) == (1, 6) else T0 + i * 1000 * (1 + 2 * p)  # noqa: E731
    before = _produce_groups(broker, topic, 2, 10, rng, stamp=stamp)
    catch_up(broker, kafka_conn, s, topic)
    cut = T0 + 6000  # p0: offset 6 (equal), p1: offset 2 (6000)
    first = {0: 6, 1: 2}
    execute(
        kafka_conn,
        f"CREATE MATERIALIZED VIEW {v} WITH (start = 'timestamp:{rfc3339_ms(cut)}') AS " + VIEW_SQL.format(s=s),
    )
    after = _produce_groups(broker, topic, 2, 3, rng, stamp=lambda p, i: T0 + 100_000 + i)
    catch_up(broker, kafka_conn, s, topic)
    expected = _sum_by_group((g, x) for g, x, p, off, _ in before + after if off >= first[p])
    eventually_equal(lambda: view_rows(kafka_conn, f"SELECT g, n, total FROM {v}"), expected)


# ============================================================================================
# Bad records

GOOD = [{"id": i, "name": f"n{i}", "price": i / 4} for i in range(1, 21)]
BAD = [
    b'{"id": 100, "name": ',            # malformed JSON
    b"not json at all",                 # malformed JSON
    b'{"id": "seven", "name": "x"}',    # wrong type (text for BIGINT)
    b'{"id": 101, "price": "cheap"}',   # wrong type (text for DOUBLE PRECISION)
    b'{"name": "no id"}',               # missing NOT NULL field
]
BAD_STREAM_COLUMNS = "(id BIGINT NOT NULL, name TEXT, price DOUBLE PRECISION)"


def _mixed_records():
    """GOOD and BAD interleaved, spread over two partitions, keyed."""
    rng = random.Random(9)
    recs = [("good", g) for g in GOOD] + [("bad", b) for b in BAD]
    rng.shuffle(recs)
    values = [r for _, r in recs]
    keys = [f"k{i}" for i in range(len(recs))]
    parts = [i % 2 for i in range(len(recs))]
    return recs, values, keys, parts


def _errors(rows):
    return {r["errors"] for r in rows.values()}


def test_bad_records_skip(broker, kafka_conn):
    topic = broker.create_topic(unique_name("bad"), partitions=2)
    s = unique_name("s")
    recs, values, keys, parts = _mixed_records()
    broker.produce(topic, values[:10], keys=keys[:10], partition=parts[:10])
    execute(kafka_conn, f"CREATE STREAM {s} {BAD_STREAM_COLUMNS} {kafka_with(topic, on_error='skip')}")
    broker.produce(topic, values[10:], keys=keys[10:], partition=parts[10:])
    rows = catch_up(broker, kafka_conn, s, topic)
    eventually_equal(
        lambda: sorted(query(kafka_conn, f"SELECT id, name, price FROM {s}")),
        sorted((g["id"], g["name"], g["price"]) for g in GOOD),
        what="good records",
    )
    rows = wait_until(
        lambda: (lambda r: r if _errors(r) == {str(len(BAD))} else None)(progress_by_partition(kafka_conn, s)),
        what=f"errors = {len(BAD)} on every partition row",
        describe=lambda: repr(show_progress(kafka_conn, s)),
    )
    for r in rows.values():
        assert r["last_error"], r
        assert r["status"] == "running", r


def test_bad_records_dead_letter_topic(broker, kafka_conn):
    topic = broker.create_topic(unique_name("bad"), partitions=2)
    dlq = broker.create_topic(unique_name("dlq"), partitions=1)
    s = unique_name("s")
    recs, values, keys, parts = _mixed_records()
    delivered = broker.produce(topic, values, keys=keys, partition=parts)
    execute(kafka_conn, f"CREATE STREAM {s} {BAD_STREAM_COLUMNS} {kafka_with(topic, on_error='dlq:' + dlq)}")
    catch_up(broker, kafka_conn, s, topic)
    eventually_equal(
        lambda: sorted(query(kafka_conn, f"SELECT id FROM {s}")), sorted((g["id"],) for g in GOOD), what="good records"
    )
    wait_until(
        lambda: _errors(progress_by_partition(kafka_conn, s)) == {str(len(BAD))},
        what="error counters", describe=lambda: repr(show_progress(kafka_conn, s)),
    )

    # The raw value of every bad record, with its key and where it came from.
    expected = sorted(
        (p, off, k.encode(), v)
        for (kind, v), k, (p, off) in zip(recs, keys, delivered) if kind == "bad"
    )

    def dead_letters():
        out = []
        for r in broker.consume_records(dlq):
            h = header_dict(r.headers)
            assert h.get("runnel.source.topic") == topic, h
            assert h.get("runnel.error"), h
            out.append((int(h["runnel.source.partition"]), int(h["runnel.source.offset"]), r.key, r.value))
        return sorted(out)

    eventually_equal(dead_letters, expected, what="dead-letter records")


def test_bad_records_fail(broker, kafka_conn):
    topic = broker.create_topic(unique_name("bad"), partitions=1)
    s = unique_name("s")
    values = [{"id": 1}, {"id": 2}, {"id": 3}, b'{"id": oops}', {"id": 4}, {"id": 5}]
    broker.produce(topic, values)
    execute(kafka_conn, f"CREATE STREAM {s} {BAD_STREAM_COLUMNS} {kafka_with(topic, on_error='fail')}")
    rows = wait_until(
        lambda: (lambda r: r if r and all((x["status"] or "").startswith("failed") for x in r.values()) else None)(
            progress_by_partition(kafka_conn, s)
        ),
        what="status 'failed: ...'",
        describe=lambda: repr(show_progress(kafka_conn, s)),
    )
    assert all(len(x["status"]) > len("failed") for x in rows.values()), rows  # says why
    # Nothing after the bad record is ingested, even when more arrives.
    broker.produce(topic, [{"id": 6}])
    eventually_equal(lambda: sorted(query(kafka_conn, f"SELECT id FROM {s}")), [(1,), (2,), (3,)])
    assert all(x["status"].startswith("failed") for x in progress_by_partition(kafka_conn, s).values())


# ============================================================================================
# SHOW PROGRESS


def test_show_progress_columns_and_lag(broker, kafka_conn):
    topic = broker.create_topic(unique_name("prog"), partitions=3)
    s, e = unique_name("s"), unique_name("embedded")
    rng = random.Random(2)
    _produce_groups(broker, topic, 3, 400, rng)
    execute(kafka_conn, f"CREATE STREAM {s} (g BIGINT, x BIGINT) {kafka_with(topic)}")
    execute(kafka_conn, f"CREATE STREAM {e} (x BIGINT)")
    execute(kafka_conn, f"INSERT INTO {e} VALUES (1), (2)")

    with kafka_conn.cursor() as cur:
        cur.execute("SHOW PROGRESS")
        assert [d.name for d in cur.description] == PROGRESS_COLUMNS
        text_oids = {pg_types.get("text").oid, pg_types.get("varchar").oid}
        assert all(d.type_code in text_oids for d in cur.description), cur.description

    # While catching up, backfill (when shown) is a percentage.
    seen_backfill = set()

    def check():
        rows = progress_by_partition(kafka_conn, s)
        seen_backfill.update(r["backfill"] for r in rows.values() if r["backfill"] is not None)
        return rows

    marks = broker.high_watermarks(topic)
    rows = wait_until(
        lambda: (lambda r: r if set(r) == set(marks) and all(
            r[p]["offset"] is not None and int(r[p]["offset"]) == marks[p] and r[p]["lag"] == "0" for p in marks
        ) else None)(check()),
        what="lag 0 on every partition",
        describe=lambda: repr(show_progress(kafka_conn, s)),
    )
    for b in seen_backfill:
        assert re.fullmatch(r"\d+(\.\d+)?%", b), b
    for p, r in rows.items():
        assert r["source"] == s and r["partition"] == str(p)
        assert int(r["offset"]) == int(r["end_offset"]) == marks[p]
        assert r["lag"] == "0"
        assert float(r["events_per_sec"]) >= 0
        assert r["errors"] == "0" and r["last_error"] is None
        assert r["status"] == "running"
    # Once caught up, backfill is NULL.
    wait_until(
        lambda: all(r["backfill"] is None for r in progress_by_partition(kafka_conn, s).values()),
        what="backfill NULL once caught up", describe=lambda: repr(show_progress(kafka_conn, s)),
    )
    # An embedded stream has one row, partition NULL.
    embedded = show_progress(kafka_conn, e)
    assert len(embedded) == 1 and embedded[0]["partition"] is None, embedded

    # Lag follows new records and returns to 0.
    _produce_groups(broker, topic, 3, 50, rng)
    catch_up(broker, kafka_conn, s, topic)


# ============================================================================================
# Broker outage


def test_broker_outage_and_restart_loses_nothing(kafka_conn):
    # A broker of its own (same port and data directory across the restart); the stream names
    # it in WITH (bootstrap_servers = ...), overriding the server's default.
    b = Broker()
    b.start()
    try:
        topic = b.create_topic(unique_name("outage"), partitions=3)
        s, v = unique_name("s"), unique_name("v")
        rng = random.Random(8)
        produced = _produce_groups(b, topic, 3, 50, rng)
        execute(kafka_conn, f"CREATE STREAM {s} (g BIGINT, x BIGINT) {kafka_with(topic, bootstrap_servers=b.bootstrap_servers)}")
        execute(kafka_conn, f"CREATE MATERIALIZED VIEW {v} AS " + VIEW_SQL.format(s=s))
        wait_caught_up(kafka_conn, s, b.high_watermarks(topic))
        eventually_equal(lambda: view_rows(kafka_conn, f"SELECT g, n, total FROM {v}"), _sum_by_group((g, x) for g, x, *_ in produced))

        b.stop()
        # The server keeps answering while the broker is away.
        assert query(kafka_conn, "SELECT 1") == [(1,)]
        assert query(kafka_conn, f"SELECT count(*) FROM {s}") == [(len(produced),)]
        assert sorted(query(kafka_conn, f"SELECT g, n, total FROM {v}")) == _sum_by_group((g, x) for g, x, *_ in produced)
        assert len(progress_by_partition(kafka_conn, s)) == 3
        assert query(kafka_conn, "SELECT 2") == [(2,)]

        b.start()  # same port, same sqlite file
        produced += _produce_groups(b, topic, 3, 50, rng)
        wait_caught_up(kafka_conn, s, b.high_watermarks(topic), timeout=90)
        eventually_equal(lambda: query(kafka_conn, f"SELECT count(*) FROM {s}"), [(len(produced),)])
        eventually_equal(
            lambda: view_rows(kafka_conn, f"SELECT g, n, total FROM {v}"),
            _sum_by_group((g, x) for g, x, *_ in produced),
        )
    finally:
        b.cleanup()


# ============================================================================================
# SUBSCRIBE to Kafka relations


def _fetch_until(conn, cursor, wanted, deadline=60.0):
    import time

    rows = []
    end = time.monotonic() + deadline
    while not wanted(rows):
        assert time.monotonic() < end, f"no more changes came; got {rows}"
        rows.extend(conn.execute(f"FETCH ALL {cursor} WITH (timeout = '1s')").fetchall())
    return rows


def test_subscribe_to_a_kafka_stream_and_table(broker, runnel_kafka, kafka_conn):
    topic = broker.create_topic(unique_name("subs"), partitions=2)
    s = unique_name("subs")
    before = _produce_numbered(broker, topic, 2, 5)
    execute(kafka_conn, f"CREATE STREAM {s} (id BIGINT) {kafka_with(topic)}")
    catch_up(broker, kafka_conn, s, topic)
    with runnel_kafka.connect(autocommit=False) as sub:
        sub.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {s}")
        # The declared columns only: the partition and offset Runnel keeps are not among them.
        assert [d.name for d in sub.execute("FETCH 0 c").description] == [
            "runnel_checkpoint", "runnel_diff", "id"]
        snapshot = _fetch_until(sub, "c", lambda rows: len(rows) >= len(before))
        assert sorted(r[2] for r in snapshot) == sorted(r[0] for r in before)
        assert {r[1] for r in snapshot} == {1}
        after = _produce_numbered(broker, topic, 2, 3, first_id=100)
        later = _fetch_until(sub, "c", lambda rows: len(rows) >= len(after))
        assert sorted(r[2] for r in later) == sorted(r[0] for r in after)
        sub.execute("COMMIT")

    topic = broker.create_topic(unique_name("subt"), partitions=1)
    t = unique_name("subt")
    broker.produce(topic, [{"k": 1, "v": "a"}, {"k": 2, "v": "b"}],
                   keys=[json.dumps({"k": 1}), json.dumps({"k": 2})])
    execute(kafka_conn, f"CREATE TABLE {t} (k BIGINT PRIMARY KEY, v TEXT) {kafka_with(topic)}")
    catch_up(broker, kafka_conn, t, topic)
    with runnel_kafka.connect(autocommit=False) as sub:
        sub.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {t}")
        snapshot = _fetch_until(sub, "c", lambda rows: len(rows) >= 2)
        assert sorted(tuple(r[1:]) for r in snapshot) == [(1, 1, "a"), (1, 2, "b")]
        # An update of key 1 and a tombstone for key 2.
        broker.produce(topic, [{"k": 1, "v": "a2"}, None],
                       keys=[json.dumps({"k": 1}), json.dumps({"k": 2})])
        changes = _fetch_until(sub, "c", lambda rows: len(rows) >= 3)
        assert sorted(tuple(r[1:]) for r in changes) == [(-1, 1, "a"), (-1, 2, "b"), (1, 1, "a2")]
        sub.execute("COMMIT")
