"""Shared fixtures: a real `runnel serve` process per test module.

Environment: RUNNEL_BIN (default: target/debug/runnel under the repository root).
"""

from __future__ import annotations

import pytest

from runnel_proc import RunnelProcess

STARTUP_TIMEOUT = 120


@pytest.fixture(scope="module")
def server():
    """A server without Kafka defaults, for the client tests: yields (host, port)."""
    proc = RunnelProcess()
    try:
        yield proc.start(timeout=STARTUP_TIMEOUT)
    finally:
        proc.cleanup()


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


@pytest.fixture
def conn(server):
    """An autocommit psycopg connection to the module's server."""
    import psycopg

    host, port = server
    with psycopg.connect(
        host=host, port=port, user="runnel", password="any", dbname="runnel", autocommit=True
    ) as c:
        yield c
