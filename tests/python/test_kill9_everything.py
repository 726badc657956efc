"""kill -9 with every kind of operator, a Kafka upsert table and both sink modes in the graph.

A producer thread writes events (2 partitions, with a watermark), quotes (a second stream with
a watermark) and item updates with tombstones (a Kafka upsert table) while the test kill -9s
the server at random moments at least 20 times. The graph holds TUMBLE, EMIT ON WINDOW CLOSE,
SESSION, a NOW() temporal filter, OVER with a RANGE frame, top-N, an interval join, an ASOF
join, a join with the Kafka table, UNION ALL and a view over a view, an append sink of the
EMIT ON WINDOW CLOSE view and an upsert sink of the join with the table.

At the end every stream holds each produced record exactly once, the table the last value of
each key, and each view equals its batch query over the streams and the table at the final
watermark (as in the differential tests). The sinks, which deliver at least once
(docs/kafka.md, "Sinks"): the append topic has each closed window of the EMIT ON WINDOW CLOSE
view, with the view's values, and no other; a window sent more than once (a round the broker
acknowledged just before a kill) has the same values every time; the upsert topic ends with
each key's current row.

RUNNEL_CRASH_SEED replays a run (the seed is printed).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from datetime import datetime, timedelta, timezone

from kafka_harness import unique_name
from runnel_proc import RunnelProcess, execute, flush, query, wait_caught_up, wait_until

MIN_KILLS = 20
EVENTS = 6000
QUOTES = 1500
ITEMS = 10
DELAY_S = 5
BASE = datetime(2026, 6, 10, 10, 0, 0, tzinfo=timezone.utc)


def rfc3339(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sql_ts(t: datetime) -> str:
    return f"TIMESTAMPTZ '{t.strftime('%Y-%m-%d %H:%M:%S.%f')}+00'"


VIEWS = {
    "v_tumble": "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS sv "
                "FROM TUMBLE(ev, ts, INTERVAL '10 seconds') GROUP BY k, window_start, window_end",
    "v_eowc": "SELECT k, window_start, window_end, count(*) AS n, max(v) AS mx "
              "FROM TUMBLE(ev, ts, INTERVAL '10 seconds') GROUP BY k, window_start, window_end "
              "EMIT ON WINDOW CLOSE",
    "v_session": "SELECT k, window_start, window_end, count(*) AS n "
                 "FROM SESSION(ev, ts, INTERVAL '2 seconds', k) GROUP BY k, window_start, window_end",
    "v_recent": "SELECT k, count(*) AS n, sum(v) AS sv FROM ev "
                "WHERE ts > NOW() - INTERVAL '20 seconds' GROUP BY k",
    "v_over": "SELECT id, k, sum(v) OVER (PARTITION BY k ORDER BY ts "
              "RANGE BETWEEN INTERVAL '5 seconds' PRECEDING AND CURRENT ROW) AS s5 FROM ev",
    "v_top": "SELECT * FROM (SELECT k, id, v, row_number() OVER (PARTITION BY k "
             "ORDER BY v DESC, id) AS rn FROM ev) AS x WHERE rn <= 3",
    "v_ijoin": "SELECT a.k, count(*) AS n FROM ev a JOIN qt b ON a.k = b.k "
               "AND b.ts BETWEEN a.ts - INTERVAL '1 second' AND a.ts GROUP BY a.k",
    "v_asof": "SELECT l.id, r.id AS rid, r.px FROM ev l ASOF JOIN qt r "
              "MATCH_CONDITION (l.ts >= r.ts) ON l.k = r.k",
    "v_cat": "SELECT i.cat, count(*) AS n, sum(e.v) AS sv FROM ev e JOIN items i "
             "ON e.item = i.item_id GROUP BY i.cat",
    "v_union": "SELECT src, count(*) AS n FROM (SELECT 'ev' AS src, k FROM ev WHERE v > 50 "
               "UNION ALL SELECT 'qt' AS src, k FROM qt) AS u GROUP BY src",
    "v_vov": "SELECT k, sum(n) AS total, count(*) AS windows FROM v_tumble GROUP BY k",
}

# Batch queries the views must equal where a view's own query cannot run ad hoc as it is.
ORACLES = {
    "v_eowc": "SELECT * FROM (SELECT k, window_start, window_end, count(*) AS n, max(v) AS mx "
              "FROM TUMBLE(ev, ts, INTERVAL '10 seconds') GROUP BY k, window_start, window_end) "
              "AS o WHERE window_end <= {WM}",
    "v_recent": "SELECT k, count(*) AS n, sum(v) AS sv FROM ev "
                "WHERE ts > {WM} - INTERVAL '20 seconds' GROUP BY k",
    "v_asof": "SELECT l.id, m.rid, m.px FROM ev l LEFT JOIN (SELECT l2.id AS lid, r.id AS rid, "
              "r.px, row_number() OVER (PARTITION BY l2.id ORDER BY r.ts DESC, r.id DESC) AS rn "
              "FROM ev l2 JOIN qt r ON l2.k = r.k AND l2.ts >= r.ts) AS m "
              "ON m.lid = l.id AND m.rn = 1",
    "v_vov": "SELECT k, sum(n) AS total, count(*) AS windows FROM (SELECT k, window_start, "
             "count(*) AS n FROM TUMBLE(ev, ts, INTERVAL '10 seconds') "
             "GROUP BY k, window_start, window_end) AS t GROUP BY k",
}


def generate(rng: random.Random):
    """Events in bounded disorder (less than the delay within a partition, so none is late
    whatever the partitions' relative progress), quotes with distinct (k, ts), item updates."""
    events = []
    for i in range(EVENTS):
        ts = BASE + timedelta(milliseconds=i * 50 - rng.randrange(0, 3000))
        events.append({"id": i, "k": rng.randrange(8), "item": rng.randrange(ITEMS),
                       "v": rng.randrange(1, 101), "ts": ts})
    quotes, seen = [], set()
    for j in range(QUOTES):
        k = rng.randrange(8)
        ts = BASE + timedelta(milliseconds=j * 200 - rng.randrange(0, 2000))
        while (k, ts) in seen:
            ts += timedelta(milliseconds=1)
        seen.add((k, ts))
        quotes.append({"id": 100_000 + j, "k": k, "ts": ts, "px": rng.randrange(1, 1000)})
    items = []
    for _ in range(300):
        item_id = rng.randrange(ITEMS)
        if rng.random() < 0.1:
            items.append((item_id, None))
        else:
            items.append((item_id, {"item_id": item_id, "cat": rng.choice("abcd"),
                                    "price": rng.randrange(1, 50)}))
    return events, quotes, items


def test_kill_9_with_every_operator_a_kafka_table_and_both_sinks(broker):
    seed = int(os.environ.get("RUNNEL_CRASH_SEED", random.randrange(1 << 32)))
    print(f"kill -9 test: seed {seed} (set RUNNEL_CRASH_SEED to replay)")
    rng = random.Random(seed)
    events, quotes, items = generate(rng)
    ev_topic = broker.create_topic(unique_name("k9_ev"), partitions=2)
    qt_topic = broker.create_topic(unique_name("k9_qt"))
    items_topic = broker.create_topic(unique_name("k9_items"))
    eowc_topic = broker.create_topic(unique_name("k9_eowc_out"))
    cat_topic = broker.create_topic(unique_name("k9_cat_out"))

    proc = RunnelProcess(kafka_bootstrap_servers=broker.bootstrap_servers,
                         extra_args=["--checkpoint-interval-ms", "200"])
    try:
        proc.start()
        with proc.connect() as conn:
            # A long idle timeout: the watermark is the minimum over both partitions all along.
            execute(conn, f"CREATE STREAM ev (id BIGINT, k BIGINT, item BIGINT, v BIGINT, "
                          f"ts TIMESTAMPTZ, WATERMARK FOR ts AS ts - INTERVAL '{DELAY_S} seconds') "
                          f"WITH (connector = 'kafka', topic = '{ev_topic}', format = 'json', "
                          f"idle_timeout = '1 hour')")
            execute(conn, f"CREATE STREAM qt (id BIGINT, k BIGINT, px BIGINT, ts TIMESTAMPTZ, "
                          f"WATERMARK FOR ts AS ts - INTERVAL '{DELAY_S} seconds') "
                          f"WITH (connector = 'kafka', topic = '{qt_topic}', format = 'json', "
                          f"idle_timeout = '1 hour')")
            execute(conn, f"CREATE TABLE items (item_id BIGINT PRIMARY KEY, cat TEXT, price BIGINT) "
                          f"WITH (connector = 'kafka', topic = '{items_topic}', format = 'json')")
            for name, sql in VIEWS.items():
                execute(conn, f"CREATE MATERIALIZED VIEW {name} AS {sql}")
            execute(conn, f"CREATE SINK eowc_out FROM v_eowc WITH (connector = 'kafka', "
                          f"topic = '{eowc_topic}', mode = 'append')")
            execute(conn, f"CREATE SINK cat_out FROM v_cat WITH (connector = 'kafka', "
                          f"topic = '{cat_topic}', mode = 'upsert')")

        produce_errors: list[BaseException] = []

        def producer():
            prng = random.Random(seed + 1)
            try:
                qi = ii = 0
                for start in range(0, EVENTS, 200):
                    chunk = events[start:start + 200]
                    broker.produce(ev_topic, [{**e, "ts": rfc3339(e["ts"])} for e in chunk],
                                   partition=[e["id"] % 2 for e in chunk])
                    q = quotes[qi:qi + 50]
                    qi += 50
                    if q:
                        broker.produce(qt_topic, [{**x, "ts": rfc3339(x["ts"])} for x in q])
                    it = items[ii:ii + 10]
                    ii += 10
                    if it:
                        broker.produce(items_topic, [v for _, v in it],
                                       keys=[{"item_id": k} for k, _ in it])
                    # About 15 s of production: most kills land while records arrive.
                    time.sleep(prng.uniform(0.2, 0.8))
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                produce_errors.append(e)

        t = threading.Thread(target=producer, daemon=True)
        t.start()
        kills = 0
        while kills < MIN_KILLS or t.is_alive():
            time.sleep(rng.uniform(0.2, 1.5))
            proc.kill9()
            kills += 1
            proc.start()
        t.join()
        assert not produce_errors, produce_errors

        with proc.connect() as conn:
            try:
                for source, topic in (("ev", ev_topic), ("qt", qt_topic), ("items", items_topic)):
                    wait_caught_up(conn, source, broker.high_watermarks(topic), timeout=180)
                flush(conn)
                check_inputs(conn, events, quotes, items)
                watermark = min(max(e["ts"] for e in events if e["id"] % 2 == p) for p in (0, 1)) \
                    - timedelta(seconds=DELAY_S)
                for name, sql in VIEWS.items():
                    oracle = ORACLES.get(name, sql.replace(" EMIT ON WINDOW CLOSE", ""))
                    oracle = oracle.replace("{WM}", sql_ts(watermark))
                    got = sorted(query(conn, f"SELECT * FROM {name}"), key=repr)
                    want = sorted(query(conn, oracle), key=repr)
                    assert got == want, f"view {name} after {kills} kills differs from\n  {oracle}"
                check_sinks(conn, broker, eowc_topic, cat_topic)
            except AssertionError as e:
                raise AssertionError(f"{e}\n(seed {seed}, {kills} kills)\n{proc.log_tail()}") from None
        print(f"kill -9 test: passed, seed {seed}, {kills} kills")
    finally:
        proc.cleanup()


def check_inputs(conn, events, quotes, items) -> None:
    """Each produced record exactly once in its stream; the table holds each key's last value."""
    assert query(conn, "SELECT count(*), count(DISTINCT id) FROM ev") == [(EVENTS, EVENTS)]
    assert sorted(query(conn, "SELECT id, k, v FROM ev")) == sorted(
        (e["id"], e["k"], e["v"]) for e in events)
    assert query(conn, "SELECT count(*), count(DISTINCT id) FROM qt") == [(QUOTES, QUOTES)]
    last: dict[int, dict | None] = {}
    for k, v in items:
        last[k] = v
    expected_items = sorted((v["item_id"], v["cat"], v["price"]) for v in last.values() if v)
    assert sorted(query(conn, "SELECT item_id, cat, price FROM items")) == expected_items


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def check_sinks(conn, broker, eowc_topic: str, cat_topic: str) -> None:
    view = {(k, ws): (n, mx) for k, ws, _we, n, mx in query(conn, "SELECT * FROM v_eowc")}

    def windows_in_topic():
        seen: dict[tuple, set] = {}
        for _p, _o, _key, value in broker.consume_all(eowc_topic):
            r = json.loads(value)
            assert r["_op"] == "insert", r  # an EMIT ON WINDOW CLOSE view only inserts
            seen.setdefault((r["k"], parse_ts(r["window_start"])), set()).add((r["n"], r["mx"]))
        return seen

    seen = wait_until(lambda: (s := windows_in_topic()) and set(s) == set(view) and s,
                      timeout=60, what="the append sink to deliver every closed window",
                      describe=lambda: f"{len(windows_in_topic())} windows in the topic, "
                                       f"{len(view)} in the view")
    for window, values in seen.items():
        assert values == {view[window]}, (window, values, view[window])
    records = len(broker.consume_all(eowc_topic))
    print(f"kill -9 test: {len(view)} closed windows, {records} records in the append topic "
          f"({records - len(view)} sent again)")

    cat_view = {cat: (n, sv) for cat, n, sv in query(conn, "SELECT cat, n, sv FROM v_cat")}

    def upserted():
        latest: dict = {}
        for _p, _o, key, value in broker.consume_all(cat_topic):
            latest[json.loads(key)["cat"]] = None if value is None else json.loads(value)
        return {c: (v["n"], v["sv"]) for c, v in latest.items() if v} == cat_view

    wait_until(upserted, timeout=60, what="the upsert sink to end with the view's rows")
