"""A view's backfill reports its progress: NOTICEs to the client that creates it (while its
CREATE MATERIALIZED VIEW runs), a row in SHOW PROGRESS on other connections, and the log
(`view backfill` every few seconds, `view backfill done`). Every number is checked against
the rows the test loaded, never against time."""

from __future__ import annotations

import json
import re
import threading
import time

from runnel_proc import RunnelProcess

# Enough rows that a debug build backfills a per-key aggregate for several seconds (NOTICEs
# start after one), few enough to load in about a second; in several writes (log entries),
# so that progress is reported often whatever the machine's speed.
ROWS = 2_000_000
WRITES = 20

PROGRESS_NOTICE = re.compile(r"backfilling (\S+): (\d+) of (\d+) rows \((\d+)%\), (\d+) rows/s, (.+)")


def json_lines(path: str) -> list[dict]:
    with open(path) as log:
        return [json.loads(line) for line in log if line.startswith("{")]


def test_backfill_progress_reaches_the_client_show_progress_and_the_log():
    proc = RunnelProcess(extra_args=["--log-format", "json"], env={"RUNNEL_LOG": "info"})
    try:
        proc.start()
        with proc.connect() as conn:
            conn.execute("CREATE STREAM clicks (k BIGINT, v BIGINT)")
            step = ROWS // WRITES
            for first in range(1, ROWS + 1, step):
                conn.execute(
                    f"INSERT INTO clicks SELECT value, value % 10 FROM generate_series({first}, {first + step - 1})"
                )
        # Another connection watches SHOW PROGRESS while the view is created.
        seen: list[tuple] = []
        creating = threading.Event()
        finished = threading.Event()
        watch_errors: list[BaseException] = []

        def watch():
            try:
                with proc.connect() as watcher:
                    creating.wait()
                    while not finished.is_set():
                        seen.extend(r for r in watcher.execute("SHOW PROGRESS").fetchall() if r[0] == "per_key")
                        time.sleep(0.05)
            except BaseException as error:  # reported by the main thread
                watch_errors.append(error)

        watcher = threading.Thread(target=watch)
        watcher.start()
        notices: list[str] = []
        # Whether the backfill was still running when the first progress NOTICE reached the
        # client (it was sent while the statement ran, not held back until it ended).
        listed_at_first_notice: list[bool] = []

        def on_notice(diag):
            notices.append(diag.message_primary)
            if PROGRESS_NOTICE.fullmatch(diag.message_primary) and not listed_at_first_notice:
                rows = probe.execute("SHOW PROGRESS").fetchall()
                listed_at_first_notice.append(any(r[0] == "per_key" for r in rows))

        try:
            with proc.connect() as creator, proc.connect() as probe:
                creator.add_notice_handler(on_notice)
                creating.set()
                creator.execute(
                    "CREATE MATERIALIZED VIEW per_key AS SELECT k, sum(v) AS total FROM clicks GROUP BY k"
                )
                finished.set()
                assert creator.execute("SELECT count(*) FROM per_key").fetchone()[0] == ROWS
        finally:
            finished.set()
            creating.set()
            watcher.join()
        assert not watch_errors, watch_errors

        # NOTICEs: done <= total, total = the stream's rows, the percentage of those numbers.
        progress = [PROGRESS_NOTICE.fullmatch(n) for n in notices]
        progress = [m for m in progress if m]
        assert progress, f"no progress NOTICE among {notices}"
        for m in progress:
            name, done, total, percent = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
            assert name == "per_key"
            assert total == ROWS
            assert 0 <= done <= total
            assert percent == 100 * done // total
        dones = [int(m.group(2)) for m in progress]
        assert dones == sorted(dones), dones
        assert listed_at_first_notice == [True]

        # SHOW PROGRESS, seen from the other connection during the backfill.
        assert seen, "SHOW PROGRESS never listed the view while it was backfilled"
        for source, partition, offset, end_offset, lag, _rate, backfill, errors, _last, status in seen:
            assert status == "backfilling view"
            assert partition is None
            assert int(end_offset) == ROWS
            assert 0 <= int(offset) <= ROWS
            assert int(lag) == ROWS - int(offset)
            assert backfill.endswith("%")
        # Once the view exists, it is no longer listed.
        with proc.connect() as conn:
            assert [r for r in conn.execute("SHOW PROGRESS").fetchall() if r[0] == "per_key"] == []

        # The log: one `view backfill done` with every row, and consistent progress lines.
        events = json_lines(proc.log_path)
        done_lines = [e for e in events if e["message"] == "view backfill done"]
        assert [(e["view"], e["rows"]) for e in done_lines] == [("per_key", ROWS)], done_lines
        assert done_lines[0]["duration_ms"] > 0
        for e in (e for e in events if e["message"] == "view backfill"):
            assert e["view"] == "per_key"
            assert e["rows_total"] == ROWS
            assert 0 <= e["rows_done"] <= ROWS
            assert e["level"] == "INFO"
    finally:
        proc.cleanup()


def test_a_kafka_stream_is_backfilled_from_its_log_and_counted_alike(broker):
    """A view over a Kafka stream is backfilled from the stream's local log, so its
    progress counts the records ingested, like an embedded stream's rows."""
    from kafka_harness import unique_name
    from runnel_proc import wait_caught_up

    topic = broker.create_topic(unique_name("progress"), partitions=2)
    records = 3000
    broker.produce(topic, [{"k": i} for i in range(records)], partition=[i % 2 for i in range(records)])
    proc = RunnelProcess(
        kafka_bootstrap_servers=broker.bootstrap_servers,
        extra_args=["--log-format", "json"],
        env={"RUNNEL_LOG": "info"},
    )
    try:
        proc.start()
        source, view = unique_name("progress_s"), unique_name("progress_v")
        with proc.connect() as conn:
            conn.execute(
                f"CREATE STREAM {source} (k INT) WITH (connector = 'kafka', topic = '{topic}', format = 'json')"
            )
            wait_caught_up(conn, source, broker.high_watermarks(topic))
            conn.execute(f"CREATE MATERIALIZED VIEW {view} AS SELECT k % 7 AS m, count(*) AS n FROM {source} GROUP BY 1")
            assert conn.execute(f"SELECT sum(n) FROM {view}").fetchone()[0] == records
        done = [e for e in json_lines(proc.log_path) if e["message"] == "view backfill done"]
        assert [(e["view"], e["rows"]) for e in done] == [(view, records)], done
    finally:
        proc.cleanup()
