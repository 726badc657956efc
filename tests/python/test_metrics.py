"""`--metrics-listen`: Prometheus text at /metrics whose values follow what clients did,
/health from the start, /ready once the server serves."""

from __future__ import annotations

import os
import time
import urllib.request

import psycopg

from kafka_harness import free_port
from runnel_proc import RunnelProcess


def metered_runnel(**kwargs) -> tuple[RunnelProcess, int]:
    """A server (not started) serving its metrics on a free port, and that port."""
    port = free_port()
    return RunnelProcess(extra_args=["--metrics-listen", f"127.0.0.1:{port}"], **kwargs), port


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def metrics(port: int) -> dict[str, float]:
    status, text = get(port, "/metrics")
    assert status == 200, text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_metrics_follow_connections_queries_and_checkpoints():
    proc, port = metered_runnel()
    try:
        started = time.time()
        proc.start()
        assert get(port, "/health") == (200, "ok\n")
        assert get(port, "/ready") == (200, "ready\n")
        assert get(port, "/nothing")[0] == 404
        first = psycopg.connect(host=proc.host, port=proc.port, user="runnel", dbname="runnel", autocommit=True)
        second = psycopg.connect(host=proc.host, port=proc.port, user="runnel", dbname="runnel", autocommit=True)
        before = metrics(port)
        assert before["runnel_connections"] == 2
        first.execute("CREATE TABLE measured (k INT PRIMARY KEY, v TEXT)")
        for i in range(4):
            first.execute("INSERT INTO measured VALUES (%s, 'x')", (i,))
        try:
            first.execute("SELECT no_such_column FROM measured")
        except psycopg.Error:
            pass
        after = metrics(port)
        assert after['runnel_queries_total{outcome="ok"}'] - before['runnel_queries_total{outcome="ok"}'] == 5
        assert after['runnel_queries_total{outcome="error"}'] - before['runnel_queries_total{outcome="error"}'] == 1
        second.close()
        deadline = time.time() + 10
        while metrics(port)["runnel_connections"] != 1 and time.time() < deadline:
            time.sleep(0.05)
        assert metrics(port)["runnel_connections"] == 1
        # The writes are checkpointed within the interval (1 s by default).
        checkpoints = before["runnel_checkpoint_duration_seconds_count"]
        deadline = time.time() + 10
        while metrics(port)["runnel_checkpoint_duration_seconds_count"] <= checkpoints and time.time() < deadline:
            time.sleep(0.1)
        now = metrics(port)
        assert now["runnel_checkpoint_duration_seconds_count"] > checkpoints
        assert abs(now["runnel_checkpoint_last_success_timestamp_seconds"] - time.time()) < 60
        assert now["runnel_state_bytes"] > 0
        assert now["process_resident_memory_bytes"] > 0
        # Sources: the rows each one's log gave the dataflow; views that failed.
        first.execute("CREATE STREAM measured_stream (k INT)")
        first.execute("CREATE MATERIALIZED VIEW failing AS SELECT 1 / (k - k) AS boom FROM measured_stream")
        assert metrics(port)["runnel_failed_views"] == 0
        first.execute("INSERT INTO measured_stream VALUES (1), (2), (3)")
        first.execute("INSERT INTO measured_stream SELECT value FROM generate_series(1, 4)")
        first.execute("FLUSH")
        now = metrics(port)
        assert now['runnel_source_records_total{partition="0",source="measured_stream"}'] == 7
        assert now['runnel_source_records_total{partition="0",source="measured"}'] == 4
        assert now["runnel_failed_views"] == 1
        # Late rows of a stream with a watermark: behind its clock, or without an event time.
        first.execute(
            "CREATE STREAM clocked (ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1 second')"
        )
        first.execute("INSERT INTO clocked VALUES ('2026-01-01 10:00:00')")
        first.execute("INSERT INTO clocked VALUES ('2026-01-01 09:00:00'), (NULL), ('2026-01-01 10:00:05')")
        assert metrics(port)['runnel_late_events_total{stream="clocked"}'] == 2
        # Each dataflow worker's time, processing or waiting (by what for): every worker
        # processed something, and none accounts for more time than the server has run.
        now = metrics(port)
        elapsed = time.time() - started
        busy = {k: v for k, v in now.items() if k.startswith("runnel_worker_busy_seconds_total")}
        workers = sorted(int(k.split('worker="')[1].split('"')[0]) for k in busy)
        assert workers == list(range(len(workers))) and workers
        if os.environ.get("RUNNEL_WORKERS"):
            assert len(workers) == int(os.environ["RUNNEL_WORKERS"])
        for w in workers:
            spent = now[f'runnel_worker_busy_seconds_total{{worker="{w}"}}']
            assert spent > 0
            for waited in ("input", "peers", "control"):
                spent += now[f'runnel_worker_idle_seconds_total{{waiting_for="{waited}",worker="{w}"}}']
            assert 0 < spent <= elapsed
        first.close()
    finally:
        proc.cleanup()


def test_view_metrics_follow_the_changes_the_test_made():
    """Per view: its rows against count(*), the changes its contents went through against
    what the test's writes did to it, freshness samples per checkpoint, rows after a restart."""
    proc, port = metered_runnel()
    try:
        proc.start()
        with proc.connect() as conn:
            conn.execute("CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT)")
            conn.execute("CREATE MATERIALIZED VIEW rich AS SELECT id, balance FROM accounts WHERE balance >= 100")
            changes = 0
            conn.execute("INSERT INTO accounts VALUES (1, 100), (2, 200), (3, 50), (4, 300)")
            changes += 3  # 3 is not rich
            conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id IN (1, 2)")
            changes += 4  # each: its old row deleted, its new row inserted
            conn.execute("UPDATE accounts SET balance = 500 WHERE id = 3")
            changes += 1  # 3 becomes rich: an insert only
            conn.execute("UPDATE accounts SET balance = 0 WHERE id = 4")
            changes += 1  # 4 is no longer rich: a delete only
            conn.execute("DELETE FROM accounts WHERE id = 4")  # not in the view: no change
            conn.execute("FLUSH")
            rows = conn.execute("SELECT count(*) FROM rich").fetchone()[0]
            assert rows == 3
            values = metrics(port)
            assert values['runnel_view_rows{view="rich"}'] == rows
            assert values['runnel_view_changes_total{view="rich"}'] == changes
            # Freshness: one sample per checkpoint that changed the view.
            samples = values.get('runnel_view_freshness_seconds_count{view="rich"}', 0)
            conn.execute("INSERT INTO accounts VALUES (5, 1000)")
            conn.execute("FLUSH")
            values = metrics(port)
            assert values['runnel_view_freshness_seconds_count{view="rich"}'] > samples
            assert values['runnel_view_freshness_seconds_sum{view="rich"}'] >= 0
            assert values['runnel_view_rows{view="rich"}'] == 4
            assert values['runnel_view_changes_total{view="rich"}'] == changes + 1
        # After a restart the rows are restored with the view; changes count from the start.
        proc.stop()
        proc.start()
        with proc.connect() as conn:
            rows = conn.execute("SELECT count(*) FROM rich").fetchone()[0]
        values = metrics(port)
        assert values['runnel_view_rows{view="rich"}'] == rows == 4
        assert values['runnel_view_changes_total{view="rich"}'] == 0
    finally:
        proc.cleanup()


def test_kafka_source_metrics_match_what_was_produced(broker):
    """Per-partition records, lag and bad records of a Kafka stream against the records the
    test produced (partitions from the delivery reports)."""
    from kafka_harness import unique_name
    from runnel_proc import wait_caught_up

    proc, port = metered_runnel(kafka_bootstrap_servers=broker.bootstrap_servers)
    try:
        proc.start()
        topic = broker.create_topic(unique_name("metered"), partitions=2)
        values = [{"k": i} for i in range(9)] + ["not json"]
        delivered = broker.produce(topic, values, partition=[i % 2 for i in range(10)])
        per_partition = {0: 0, 1: 0}
        for partition, _ in delivered:
            per_partition[partition] += 1
        source = unique_name("metered_s")
        with proc.connect() as conn:
            conn.execute(
                f"CREATE STREAM {source} (k INT) WITH (connector = 'kafka', topic = '{topic}', "
                "format = 'json', on_error = 'skip')"
            )
            wait_caught_up(conn, source, broker.high_watermarks(topic))
        values_now = metrics(port)
        for partition, produced in per_partition.items():
            labels = f'partition="{partition}",source="{source}"'
            assert values_now[f"runnel_source_records_total{{{labels}}}"] == produced
            assert values_now[f"runnel_source_lag_records{{{labels}}}"] == 0
        assert values_now[f'runnel_source_bad_records_total{{source="{source}"}}'] == 1
        # A sink: what the broker acknowledged, against what the topic holds.
        out_topic = broker.create_topic(unique_name("metered_out"))
        view, sink = unique_name("metered_v"), unique_name("metered_sink")
        with proc.connect() as conn:
            conn.execute(f"CREATE MATERIALIZED VIEW {view} AS SELECT k FROM {source}")
            conn.execute(
                f"CREATE SINK {sink} FROM {view} WITH (connector = 'kafka', topic = '{out_topic}', "
                "format = 'json', mode = 'append')"
            )
        deadline = time.time() + 60
        while len(broker.consume_all(out_topic)) < 9 and time.time() < deadline:
            time.sleep(0.2)
        assert len(broker.consume_all(out_topic)) == 9
        deadline = time.time() + 30
        sink_series = f'runnel_sink_records_total{{sink="{sink}"}}'
        while metrics(port).get(sink_series) != 9 and time.time() < deadline:
            time.sleep(0.1)
        assert metrics(port)[sink_series] == 9
    finally:
        proc.cleanup()


def test_the_grafana_dashboard_queries_only_exported_metrics(broker):
    """Every metric docs/grafana/runnel-dashboard.json queries is one a server exports (a
    dashboard over renamed or missing metrics would show empty panels without an error)."""
    import json
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "docs/grafana/runnel-dashboard.json").read_text())
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\b((?:runnel|process)_[a-z_]+)", target["expr"]):
                queried.add(name)
    assert queried, "the dashboard queries no metric"
    from kafka_harness import unique_name

    proc, port = metered_runnel(kafka_bootstrap_servers=broker.bootstrap_servers)
    try:
        proc.start()
        # Labelled series exist once there is something to label: a stream with a clock, a
        # Kafka source and a sink.
        topic, out = broker.create_topic(unique_name("dash")), broker.create_topic(unique_name("dash_out"))
        broker.produce(topic, [{"k": 1}])
        source = unique_name("dash_s")
        with proc.connect() as conn:
            conn.execute("CREATE STREAM dash (ts TIMESTAMP, WATERMARK FOR ts AS ts)")
            # A view changed by a write, and a checkpoint: its rows, changes and freshness.
            conn.execute("CREATE MATERIALIZED VIEW dash_view AS SELECT count(*) AS n FROM dash")
            conn.execute("INSERT INTO dash VALUES ('2026-01-01 00:00:00')")
            conn.execute("FLUSH")
            conn.execute(
                f"CREATE STREAM {source} (k INT) WITH (connector = 'kafka', topic = '{topic}', format = 'json')"
            )
            conn.execute(
                f"CREATE SINK {unique_name('dash_sink')} FROM {source} WITH (connector = 'kafka', "
                f"topic = '{out}', format = 'json', mode = 'append')"
            )
        deadline = time.time() + 60
        while "runnel_source_lag_records{" not in get(port, "/metrics")[1] and time.time() < deadline:
            time.sleep(0.2)
        status, text = get(port, "/metrics")
        assert status == 200
        exported = {m.group(1) for m in re.finditer(r"^# TYPE (\S+) ", text, re.M)}
        exported |= {f"{name}_bucket" for name in exported} | {f"{name}_count" for name in exported}
        missing = sorted(queried - exported)
        assert not missing, f"the dashboard queries metrics no server exports: {missing}"
    finally:
        proc.cleanup()
