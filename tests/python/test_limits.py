"""One statement, or one client, never hurts the server: statements an attacker would try end in
a result or a typed error while other sessions keep being answered, and the server's limits on
connections, handshakes, message size and query memory hold (docs/operations.md, "Limits").

One server for the module, started with small limits so that they are cheap to reach.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import psycopg
import pytest

from runnel_proc import RunnelProcess, wait_until

MAX_CONNECTIONS = 6
MAX_MESSAGE_BYTES = 200_000
QUERY_MEMORY_MB = 64


@pytest.fixture(scope="module")
def limited():
    proc = RunnelProcess(extra_args=[
        "--max-connections", str(MAX_CONNECTIONS),
        "--handshake-timeout-ms", "1000",
        "--max-message-bytes", str(MAX_MESSAGE_BYTES),
        "--query-memory-mb", str(QUERY_MEMORY_MB),
    ])
    proc.start()
    try:
        yield proc
    finally:
        proc.cleanup()


def sqlstate_of(conn: psycopg.Connection, sql: str) -> str | None:
    try:
        conn.execute(sql).fetchall()
    except psycopg.Error as e:
        return e.sqlstate
    return None


class Bystander:
    """Another session asking `SELECT 1` over and over while a hostile statement runs: it
    records the longest wait for an answer, so the test can say no session went unanswered
    for the whole of the hostile statement (each answer must come; none is timed)."""

    def __init__(self, proc: RunnelProcess):
        self.conn = proc.connect()
        self.answers = 0
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                assert self.conn.execute("SELECT 1").fetchone() == (1,)
                self.answers += 1
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.errors.append(e)

    def __enter__(self) -> "Bystander":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        self.conn.close()


def nested(open_: str, inner: str, close: str, depth: int) -> str:
    return f"SELECT {open_ * depth}{inner}{close * depth}"


def test_statements_an_attacker_tries_end_in_a_result_or_54001(limited):
    hostile = [
        # sqlparser's speculative parsing was exponential past its recursion limit: 48 nested
        # ARRAY[ held a core for hours. They are planned now; past the limit, 54001.
        (nested("ARRAY[", "1", "]", 48), None),
        (nested("ARRAY[", "1", "]", 120), "54001"),
        ("SELECT " + "CAST(" * 24 + "1 + AS INT)" + " AS INT)" * 23, "54001"),
        # Left-deep chains overflowed a thread's stack and aborted the process.
        ("SELECT " + "1+" * 915 + "1", None),
        (" UNION ALL ".join(["SELECT 1"] * 416), None),
        ("SELECT " + "1+" * 5000 + "1", "54001"),
        (" UNION ALL ".join(["SELECT 1"] * 3000), "54001"),
    ]
    with limited.connect() as conn, Bystander(limited) as bystander:
        for sql, expected in hostile:
            assert sqlstate_of(conn, sql) == expected, sql[:60]
        assert conn.execute("SELECT " + "1+" * 915 + "1").fetchone() == (916,)
        rows = conn.execute(" UNION ALL ".join(["SELECT 1"] * 416)).fetchall()
        assert rows == [(1,)] * 416
    assert not bystander.errors, bystander.errors
    assert bystander.answers > 0
    assert limited.running()


def test_a_deep_view_is_maintained(limited):
    """The dataflow thread evaluates what the planner accepted: 900 nested terms in a view."""
    with limited.connect() as conn:
        conn.execute("CREATE STREAM deep_in (x BIGINT)")
        conn.execute("CREATE MATERIALIZED VIEW deep AS SELECT " + "x+" * 900 + "x AS y FROM deep_in")
        conn.execute("INSERT INTO deep_in VALUES (1), (2)")
        conn.execute("FLUSH")
        assert conn.execute("SELECT y FROM deep ORDER BY y").fetchall() == [(901,), (1802,)]
        assert sqlstate_of(
            conn, "CREATE MATERIALIZED VIEW deeper AS SELECT " + "x+" * 5000 + "x FROM deep_in"
        ) == "54001"


def test_connections_beyond_the_limit_are_refused_with_53300(limited):
    conns = [limited.connect() for _ in range(MAX_CONNECTIONS)]
    try:
        with pytest.raises(psycopg.OperationalError) as refused:
            limited.connect()
        assert refused.value.sqlstate == "53300" or "too many clients" in str(refused.value)
        conns.pop().close()
        # The slot is free once the server has seen the close.
        wait_until(lambda: try_connect(limited), timeout=30)
    finally:
        for c in conns:
            c.close()


def try_connect(proc: RunnelProcess) -> bool:
    try:
        proc.connect().close()
        return True
    except psycopg.OperationalError:
        return False


def test_a_silent_client_is_disconnected_after_the_handshake_timeout(limited):
    silent = socket.create_connection((limited.host, limited.port))
    half = socket.create_connection((limited.host, limited.port))
    try:
        # A startup message and then nothing: the server asks for no password on loopback
        # without one, so `half` sends only the first 4 bytes of its startup message.
        half.sendall(struct.pack("!I", 80))
        for s in (silent, half):
            s.settimeout(30)
            assert s.recv(1) == b"", "the server should close a connection that never logs in"
        # Logged-in sessions are not subject to it.
        with limited.connect() as conn:
            time.sleep(1.5)
            assert conn.execute("SELECT 2").fetchone() == (2,)
    finally:
        silent.close()
        half.close()


def test_messages_longer_than_the_limit_fail_with_54000(limited):
    long_literal = "x" * (MAX_MESSAGE_BYTES + 1)
    with limited.connect() as conn:
        assert sqlstate_of(conn, f"SELECT length('{long_literal}')") == "54000"
        # Parameters count too (the extended protocol's Bind).
        with pytest.raises(psycopg.Error) as failed:
            conn.execute("SELECT length(%s)", (long_literal,))
        assert failed.value.sqlstate == "54000"
        # The connection goes on.
        assert conn.execute("SELECT length(%s)", ("x" * 1000,)).fetchone() == (1000,)
        # COPY data is not a statement: it is not limited.
        conn.execute("CREATE STREAM long_rows (t TEXT)")
        with conn.cursor().copy("COPY long_rows FROM STDIN") as copy:
            copy.write_row((long_literal,))
        assert conn.execute("SELECT length(t) FROM long_rows").fetchone() == (len(long_literal),)


def test_a_query_beyond_its_memory_fails_with_53200_and_the_next_one_runs(limited):
    with limited.connect() as conn:
        # Neither an aggregation's array nor a hash join's build side can spill: 20 and 4
        # million values do not fit in 64 MiB.
        aggregate = "SELECT array_length(array_agg(value), 1) FROM generate_series(1, 20000000)"
        join = (
            "SELECT count(*) FROM (SELECT value AS x FROM generate_series(1, 4000000)) a "
            "JOIN (SELECT value AS y FROM generate_series(1, 4000000)) b ON x = y"
        )
        assert sqlstate_of(conn, aggregate) == "53200"
        assert sqlstate_of(conn, join) == "53200"
        assert conn.execute("SELECT count(*) FROM generate_series(1, 1000)").fetchone() == (1000,)
        # A sort spills to disk instead.
        assert conn.execute(
            "SELECT value FROM generate_series(1, 3000000) ORDER BY value DESC OFFSET 2999999"
        ).fetchall() == [(1,)]
