"""Exactly-once ingestion through kill -9: no event lost, none counted twice.

A producer thread writes 30,000 events into a 3-partition topic in small chunks while the test
kill -9s the Runnel process at random (seeded) moments and restarts it on the same data
directory, at least 10 times. The server runs two workers, so two reader threads share the
partitions (one reads partitions 0 and 2, the other 1), each committing its own offsets. At the end Runnel must have read every partition to its high
watermark, and the view must equal the answer computed here from the produced events, exactly.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict

from kafka_harness import unique_name
from runnel_proc import (RunnelProcess, eventually_equal, execute, flush, query, threads_named,
                         wait_caught_up)

EVENTS = 30_000
CHUNK = 250
MIN_KILLS = 10
SEED = 20260610


def test_kill_9_during_ingestion_loses_and_duplicates_nothing(broker):
    topic = broker.create_topic(unique_name("eo"), partitions=3)
    s, v = unique_name("s"), unique_name("per_user")
    rng = random.Random(SEED)
    events = [(rng.randrange(50), rng.randrange(1, 1000)) for _ in range(EVENTS)]

    proc = RunnelProcess(
        kafka_bootstrap_servers=broker.bootstrap_servers,
        # Many checkpoints between kills; two workers, so two Kafka reader threads.
        extra_args=["--checkpoint-interval-ms", "200", "--workers", "2"],
    )
    try:
        proc.start()
        with proc.connect() as conn:
            execute(
                conn,
                f"CREATE STREAM {s} (user_id BIGINT, amount BIGINT, _partition INT, _offset BIGINT) "
                f"WITH (connector = 'kafka', topic = '{topic}', format = 'json')",
            )
            execute(
                conn,
                f"CREATE MATERIALIZED VIEW {v} AS SELECT user_id, count(*) AS n, sum(amount) AS total "
                f"FROM {s} GROUP BY user_id",
            )
        # Both readers got partitions and stay (a reader without one ends at once).
        eventually_equal(lambda: threads_named(proc.proc.pid, "runnel-kafka"), 2,
                         what="Kafka reader threads")

        produce_errors: list[BaseException] = []

        def producer():
            prng = random.Random(SEED + 1)
            try:
                for start in range(0, EVENTS, CHUNK):
                    chunk = events[start:start + CHUNK]
                    broker.produce(
                        topic,
                        [{"user_id": u, "amount": a} for u, a in chunk],
                        partition=[(start + i) % 3 for i in range(len(chunk))],
                    )
                    time.sleep(prng.uniform(0, 0.15))
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                produce_errors.append(e)

        t = threading.Thread(target=producer, daemon=True)
        t.start()
        kills = 0
        while kills < MIN_KILLS or t.is_alive():
            time.sleep(rng.uniform(0.1, 1.5))
            proc.kill9()
            kills += 1
            proc.start()
        t.join()
        assert not produce_errors, produce_errors
        assert kills >= MIN_KILLS

        marks = broker.high_watermarks(topic)
        assert sum(marks.values()) == EVENTS, marks

        expected_groups: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for u, a in events:
            expected_groups[u][0] += 1
            expected_groups[u][1] += a
        expected = sorted((u, n, total) for u, (n, total) in expected_groups.items())

        with proc.connect() as conn:
            try:
                wait_caught_up(conn, s, marks, timeout=120)

                def read_view():
                    flush(conn)
                    return sorted(query(conn, f"SELECT user_id, n, total FROM {v}"))

                eventually_equal(read_view, expected, timeout=60, what="view after the kills")
                assert query(conn, f"SELECT count(*) FROM {s}") == [(EVENTS,)]
                # Every offset of every partition exactly once in the stream's log.
                per_partition = sorted(query(
                    conn,
                    f"SELECT _partition, count(*), count(DISTINCT _offset), min(_offset), max(_offset) "
                    f"FROM {s} GROUP BY _partition",
                ))
                assert per_partition == [(p, hw, hw, 0, hw - 1) for p, hw in sorted(marks.items())]
                assert sorted(query(
                    conn, f"SELECT user_id, count(*), sum(amount) FROM {s} GROUP BY user_id"
                )) == expected
            except AssertionError as e:
                raise AssertionError(f"{e}\n(after {kills} kills)\n{proc.log_tail()}") from None
    finally:
        proc.cleanup()
