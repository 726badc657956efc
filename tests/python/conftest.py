"""Shared fixtures: a real `runnel serve` process per test module.

Environment: RUNNEL_BIN (default: target/debug/runnel under the repository root).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 120


@pytest.fixture(scope="module")
def server():
    binary = os.environ.get("RUNNEL_BIN") or str(REPO / "target" / "debug" / "runnel")
    if not os.path.isabs(binary):
        binary = str(REPO / binary)
    assert os.path.exists(binary), f"runnel binary not found at {binary} (build it or set RUNNEL_BIN)"
    data_dir = tempfile.mkdtemp(prefix="runnel-psycopg-")
    proc = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", os.path.join(data_dir, "data")],
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
        env={**os.environ, "RUNNEL_LOG": os.environ.get("RUNNEL_LOG", "warn")},
    )
    found: dict[str, str] = {}
    ready = threading.Event()

    def read_stdout():
        # Parse the address, then keep draining so the server never blocks on a full pipe.
        for line in proc.stdout:
            m = re.match(r"runnel listening on (\S+):(\d+)", line)
            if m and not ready.is_set():
                found["host"], found["port"] = m.group(1), m.group(2)
                ready.set()
        ready.set()

    threading.Thread(target=read_stdout, daemon=True).start()
    try:
        assert ready.wait(STARTUP_TIMEOUT), "runnel did not print its address in time"
        assert "port" in found, f"runnel exited before listening (exit code {proc.poll()})"
        yield found["host"], int(found["port"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Kafka end-to-end fixtures (tests/python/test_kafka_*.py). Imported lazily so the other tests
# need neither confluent-kafka nor the Tansu broker. RUNNEL_TANSU_BIN names the broker binary;
# a missing broker fails the Kafka tests (it does not skip them).


@pytest.fixture(scope="session")
def broker():
    """One Tansu broker (sqlite storage in a temporary directory) for the whole session."""
    from kafka_harness import Broker

    b = Broker()
    b.start()
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture(scope="module")
def runnel_kafka(broker):
    """A `runnel serve --kafka-bootstrap-servers <broker>` process per test module
    (a runnel_proc.RunnelProcess: start(), kill9(), stop(), connect())."""
    from runnel_proc import RunnelProcess

    proc = RunnelProcess(kafka_bootstrap_servers=broker.bootstrap_servers)
    proc.start()
    try:
        yield proc
    finally:
        proc.cleanup()


@pytest.fixture
def kafka_conn(runnel_kafka):
    """An autocommit psycopg connection to the module's Kafka-enabled Runnel server."""
    with runnel_kafka.connect() as c:
        yield c
