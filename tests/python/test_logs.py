"""The server's log: JSON lines with `--log-format json`, text without terminal escape codes
when stderr is a file, and at the default level the start-up (version, address, data
directory, what was restored) and every DDL statement with its duration, never its text."""

from __future__ import annotations

import json
import time

from runnel_proc import RunnelProcess


def json_lines(path: str) -> list[dict]:
    events = []
    with open(path) as log:
        for line in log:
            if line.startswith("{"):
                events.append(json.loads(line))
    return events


def test_json_logs_show_start_up_and_ddl():
    proc = RunnelProcess(extra_args=["--log-format", "json"], env={"RUNNEL_LOG": "info"})
    try:
        proc.start()
        with proc.connect() as conn:
            conn.execute("CREATE TABLE logged (k INT PRIMARY KEY)")
            conn.execute("CREATE MATERIALIZED VIEW logged_count AS SELECT count(*) AS n FROM logged")
            try:
                conn.execute("CREATE TABLE logged (k INT PRIMARY KEY)")
            except Exception:
                pass
        proc.stop()
        proc.start()
        proc.stop()
        events = json_lines(proc.log_path)
        starts = [e for e in events if e["message"] == "runnel started"]
        assert len(starts) == 2, events
        assert starts[0]["version"] and starts[0]["address"].startswith("127.0.0.1:")
        assert starts[0]["data_dir"] == proc.data_dir
        assert (starts[0]["tables"], starts[0]["materialized_views"]) == (0, 0)
        # The second start restored what the first created.
        assert (starts[1]["tables"], starts[1]["materialized_views"]) == (1, 1)
        ddl = [(e["message"], e["statement"], e["name"]) for e in events if "statement" in e]
        assert ddl == [
            ("DDL done", "CREATE TABLE", "logged"),
            ("DDL done", "CREATE MATERIALIZED VIEW", "logged_count"),
            ("DDL failed", "CREATE TABLE", "logged"),
        ], ddl
        assert all(e["duration_ms"] >= 0 for e in events if "statement" in e)
        assert all(e["level"] in ("INFO", "WARN", "ERROR") for e in events)
    finally:
        proc.cleanup()


def test_text_logs_have_no_escape_codes_in_a_file():
    proc = RunnelProcess(env={"RUNNEL_LOG": "info"})
    try:
        proc.start()
        proc.stop()
        with open(proc.log_path) as log:
            text = log.read()
        assert "runnel started" in text, text
        assert "\x1b[" not in text
    finally:
        proc.cleanup()


def test_a_kafka_outage_is_logged_once_and_so_is_the_recovery():
    from kafka_harness import Broker, unique_name
    from runnel_proc import show_progress, wait_caught_up, wait_until

    with Broker() as broker:
        topic = broker.create_topic(unique_name("outage"))
        broker.produce(topic, [{"k": 1}])
        proc = RunnelProcess(
            kafka_bootstrap_servers=broker.bootstrap_servers,
            extra_args=["--log-format", "json"],
            env={"RUNNEL_LOG": "info"},
        )
        try:
            proc.start()
            source = unique_name("outage_s")
            with proc.connect() as conn:
                conn.execute(
                    f"CREATE STREAM {source} (k INT) WITH (connector = 'kafka', topic = '{topic}', format = 'json')"
                )
                wait_caught_up(conn, source, broker.high_watermarks(topic))
                broker.stop()
                wait_until(
                    lambda: any((r["status"] or "").startswith("connecting") for r in show_progress(conn, source)),
                    timeout=120,
                    what="the source to notice the broker is gone",
                )
                time.sleep(2)  # more failed polls: still one warning
                broker.start()
                broker.produce(topic, [{"k": 2}])
                wait_caught_up(conn, source, broker.high_watermarks(topic), timeout=120)
            proc.stop()
            messages = [e["message"] for e in json_lines(proc.log_path) if e.get("source") == source]
            assert sum(m.startswith("Kafka source connecting") for m in messages) == 1, messages
            assert "Kafka source running again" in messages, messages
        finally:
            proc.cleanup()
