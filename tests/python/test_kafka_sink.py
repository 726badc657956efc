"""Kafka sinks end to end: views written to topics, read back with the harness and compared
with the view's contents and with the answer computed in Python.

Sinks are at least once, so the checks are on what a consumer reconstructs: the latest value
per key for upsert (a tombstone deletes the key), the fold of +/- records for append.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict

from kafka_harness import unique_name
from runnel_proc import eventually_equal, execute, flush, query, wait_caught_up, wait_until


def kafka_with(topic: str, **opts: str) -> str:
    items = {"connector": "kafka", "topic": topic, "format": "json", **opts}
    return "WITH (" + ", ".join(f"{k} = '{v}'" for k, v in items.items()) + ")"


def view_dicts(conn, sql):
    flush(conn)
    with conn.cursor() as cur:
        cur.execute(sql)
        names = [d.name for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]


def reduce_upserts(records):
    """Latest value per key, in (partition, offset) order; a null value deletes the key."""
    state = {}
    for _p, _off, key, value in records:
        k = json.loads(key)
        hk = json.dumps(k, sort_keys=True)
        if value is None:
            state.pop(hk, None)
        else:
            state[hk] = json.loads(value)
    return state


def test_upsert_sink_of_a_stream_table_join(broker, kafka_conn):
    events_topic = broker.create_topic(unique_name("events"), partitions=3)
    recs_topic = broker.create_topic(unique_name("recommendations"), partitions=2)
    out_topic = broker.create_topic(unique_name("recs_out"), partitions=1)
    events, recs = unique_name("events"), unique_name("recommendations")
    v, sink = unique_name("recs_for_events"), unique_name("recs_sink")
    rng = random.Random(196)

    table: dict[int, str] = {}
    uids: list[int] = []

    def put_recs(rows):
        broker.produce(
            recs_topic,
            [None if items is None else {"uid": uid, "items": items} for uid, items in rows],
            keys=[json.dumps({"uid": uid}) for uid, _ in rows],
            partition=[uid % 2 for uid, _ in rows],  # one partition per key
        )
        for uid, items in rows:
            if items is None:
                table.pop(uid, None)
            else:
                table[uid] = items

    def send_events(n):
        batch = [190 + rng.randrange(15) for _ in range(n)]
        broker.produce(events_topic, [{"uid": u} for u in batch], partition=[i % 3 for i in range(n)])
        uids.extend(batch)

    put_recs([(uid, ",".join(f"item{uid * 10 + j}" for j in range(3))) for uid in range(190, 202)])
    send_events(120)
    execute(kafka_conn, f"CREATE STREAM {events} (uid BIGINT) {kafka_with(events_topic)}")
    execute(kafka_conn, f"CREATE TABLE {recs} (uid BIGINT PRIMARY KEY, items TEXT) {kafka_with(recs_topic)}")
    execute(
        kafka_conn,
        f"CREATE MATERIALIZED VIEW {v} AS SELECT e.uid, r.items, count(*) AS n "
        f"FROM {events} e JOIN {recs} r ON e.uid = r.uid GROUP BY e.uid, r.items",
    )

    def expected_rows():
        counts = Counter(u for u in uids if u in table)
        return sorted(({"uid": u, "items": table[u], "n": n} for u, n in counts.items()), key=lambda r: r["uid"])

    def read_view():
        return sorted(view_dicts(kafka_conn, f"SELECT uid, items, n FROM {v}"), key=lambda r: r["uid"])

    wait_caught_up(kafka_conn, events, broker.high_watermarks(events_topic))
    wait_caught_up(kafka_conn, recs, broker.high_watermarks(recs_topic))
    eventually_equal(read_view, expected_rows(), what="view before the sink")

    execute(kafka_conn, f"CREATE SINK {sink} FROM {v} {kafka_with(out_topic, mode='upsert')}")
    # Changes after the sink exists: new events, a changed recommendation, a deletion, a new uid.
    send_events(80)
    put_recs([(196, "item-x,item-y"), (191, None), (203, "item-new")])
    send_events(40)
    put_recs([(196, "item-z")])
    send_events(40)

    wait_caught_up(kafka_conn, events, broker.high_watermarks(events_topic))
    wait_caught_up(kafka_conn, recs, broker.high_watermarks(recs_topic))
    expected = expected_rows()
    eventually_equal(read_view, expected, what="view after the changes")

    expected_topic = {json.dumps({"uid": r["uid"], "items": r["items"]}, sort_keys=True): r for r in expected}

    def read_back():
        records = broker.consume_all(out_topic)
        for _p, _off, key, value in records:
            assert key is not None, "upsert records carry the key"
            k = json.loads(key)
            assert set(k) == {"uid", "items"}, f"key = the GROUP BY columns: {k}"
            if value is not None:
                row = json.loads(value)
                assert {c: row[c] for c in k} == k, f"value {row} does not match key {k}"
        return reduce_upserts(records)

    eventually_equal(read_back, expected_topic, what="upsert sink topic, reduced per key")

    rows = view_dicts(kafka_conn, "SHOW SINKS")
    mine = [r for r in rows if r["name"] == sink]
    assert len(mine) == 1, rows
    assert list(mine[0]) == ["name", "source", "topic", "mode", "status", "delivered"]
    assert (mine[0]["source"], mine[0]["topic"], mine[0]["mode"], mine[0]["status"]) == (v, out_topic, "upsert", "running")
    # Every record read back was acknowledged to the sink (tombstones and updates included).
    assert int(mine[0]["delivered"]) >= len(expected_topic)
    execute(kafka_conn, f"DROP SINK {sink}")
    assert not [r for r in view_dicts(kafka_conn, "SHOW SINKS") if r["name"] == sink]


def test_append_sink_of_an_aggregate_view(broker, kafka_conn):
    topic = broker.create_topic(unique_name("clicks"), partitions=2)
    out_topic = broker.create_topic(unique_name("agg_out"), partitions=2)
    s, v, sink = unique_name("clicks"), unique_name("per_user"), unique_name("agg_sink")
    rng = random.Random(42)
    produced: list[tuple[int, int]] = []

    def send(n):
        batch = [(rng.randrange(6), rng.randrange(1, 50)) for _ in range(n)]
        broker.produce(topic, [{"uid": u, "w": w} for u, w in batch], partition=[i % 2 for i in range(n)])
        produced.extend(batch)

    send(60)
    execute(kafka_conn, f"CREATE STREAM {s} (uid BIGINT, w BIGINT) {kafka_with(topic)}")
    execute(kafka_conn, f"CREATE MATERIALIZED VIEW {v} AS SELECT uid, count(*) AS n, sum(w) AS total FROM {s} GROUP BY uid")
    wait_caught_up(kafka_conn, s, broker.high_watermarks(topic))
    execute(kafka_conn, f"CREATE SINK {sink} FROM {v} {kafka_with(out_topic, mode='append')}")
    # Several separate steps, so groups are updated (a delete and an insert) more than once.
    for _ in range(4):
        send(30)
        wait_caught_up(kafka_conn, s, broker.high_watermarks(topic))
        flush(kafka_conn)

    groups: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for u, w in produced:
        groups[u][0] += 1
        groups[u][1] += w
    expected = sorted(({"uid": u, "n": n, "total": t} for u, (n, t) in groups.items()), key=lambda r: r["uid"])
    eventually_equal(
        lambda: sorted(view_dicts(kafka_conn, f"SELECT uid, n, total FROM {v}"), key=lambda r: r["uid"]),
        expected, what="aggregate view",
    )

    def fold():
        multiset: Counter = Counter()
        for _p, _off, key, value in broker.consume_all(out_topic):
            assert key is None, "append records have no key"
            row = json.loads(value)
            op = row.pop("_op")
            assert op in ("insert", "delete"), row
            multiset[json.dumps(row, sort_keys=True)] += 1 if op == "insert" else -1
        return multiset

    # sum(bigint) is numeric (a Decimal here); the sink writes it as a JSON number.
    want = Counter(
        json.dumps(r, sort_keys=True, default=int)
        for r in view_dicts(kafka_conn, f"SELECT uid, n, total FROM {v}")
    )
    state = wait_until(lambda: (lambda m: m if +m == want else None)(fold()), what="append sink fold",
                       describe=lambda: f"fold {dict(fold())} want {dict(want)}")
    assert all(c >= 0 for c in state.values()), f"more deletes than inserts: {state}"
    assert state == want
