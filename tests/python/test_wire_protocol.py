"""The extended query protocol as clients drive it, against a real `runnel serve`.

asyncpg sends Parse + Describe + Flush and waits for the answer before it sends Sync; an
error found while parsing or describing must therefore reach it at once. A raw socket checks
the messages byte for byte; asyncpg itself checks that its errors arrive promptly.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest


def message(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("!i", len(body) + 4) + body


def read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    header = b""
    while len(header) < 5:
        chunk = sock.recv(5 - len(header))
        assert chunk, "server closed the connection"
        header += chunk
    tag, length = header[:1], struct.unpack("!i", header[1:])[0]
    body = b""
    while len(body) < length - 4:
        chunk = sock.recv(length - 4 - len(body))
        assert chunk, "server closed the connection"
        body += chunk
    return tag, body


def startup(sock: socket.socket) -> None:
    params = b"user\0runnel\0database\0runnel\0\0"
    body = struct.pack("!i", 196608) + params
    sock.sendall(struct.pack("!i", len(body) + 4) + body)
    while True:
        tag, _ = read_message(sock)
        if tag == b"Z":
            return


def error_fields(body: bytes) -> dict[str, str]:
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode()
    return fields


def test_parse_error_is_sent_before_sync(server):
    host, port = server
    with socket.create_connection((host, port), timeout=10) as sock:
        startup(sock)
        parse = message(b"P", b"\0SELEC 1\0" + struct.pack("!h", 0))
        describe = message(b"D", b"S\0")
        flush = message(b"H", b"")
        sock.sendall(parse + describe + flush)
        # No Sync sent: the error must come anyway (the socket timeout fails the test).
        tag, body = read_message(sock)
        assert tag == b"E"
        assert error_fields(body)["C"] == "42601"
        # The rest up to Sync is skipped; Sync then gives ReadyForQuery.
        sock.sendall(message(b"S", b""))
        assert read_message(sock)[0] == b"Z"
        # The connection still works.
        sock.sendall(message(b"Q", b"SELECT 1\0"))
        tags = []
        while True:
            tag, _ = read_message(sock)
            tags.append(tag)
            if tag == b"Z":
                break
        assert tags == [b"T", b"D", b"C", b"Z"]


def test_asyncpg_errors_arrive_and_typed_parameters(server):
    asyncpg = pytest.importorskip("asyncpg")
    host, port = server

    async def run() -> None:
        conn = await asyncpg.connect(host=host, port=port, user="runnel", database="runnel")
        try:
            with pytest.raises(asyncpg.PostgresSyntaxError):
                await asyncio.wait_for(conn.fetch("SELEC 1"), timeout=10)
            with pytest.raises(asyncpg.UndefinedColumnError):
                await asyncio.wait_for(conn.fetch("SELECT no_such_column"), timeout=10)
            assert await asyncio.wait_for(conn.fetchval("SELECT 41 + 1"), timeout=10) == 42
            assert await conn.fetchval("SELECT current_setting('server_version')") == "15.0"
        finally:
            await conn.close()

    asyncio.run(run())


def test_errors_point_at_the_unknown_name(server):
    import psycopg
    import psycopg.errors

    host, port = server
    with psycopg.connect(host=host, port=port, user="runnel", dbname="runnel", autocommit=True) as c:
        c.execute("CREATE TABLE position_probe (k BIGINT PRIMARY KEY, v TEXT)")
        with pytest.raises(psycopg.errors.UndefinedColumn) as error:
            c.execute("SELECT k, no_such_column FROM position_probe")
        assert error.value.diag.statement_position == "11"
        with pytest.raises(psycopg.errors.UndefinedTable) as error:
            c.execute("SELECT * FROM no_such_table")
        assert error.value.diag.statement_position == "15"


# A query that runs for minutes: 10^10 rows counted.
LONG_QUERY = (
    "SELECT count(*) FROM generate_series(1, 100000) AS a CROSS JOIN generate_series(1, 100000) AS b"
)


def test_statement_timeout_stops_a_long_query(server):
    import psycopg
    import psycopg.errors

    host, port = server
    with psycopg.connect(host=host, port=port, user="runnel", dbname="runnel", autocommit=True) as c:
        c.execute("SET statement_timeout = '300ms'")
        with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
            c.execute(LONG_QUERY)
        # The connection is still usable, and the timeout still applies per statement.
        assert c.execute("SELECT 1").fetchone() == (1,)
        c.execute("SET statement_timeout = 0")
        assert c.execute("SELECT count(*) FROM generate_series(1, 10)").fetchone() == (10,)


def test_statement_timeout_stops_a_write_in_a_transaction_block(server):
    import psycopg
    import psycopg.errors

    host, port = server
    with psycopg.connect(host=host, port=port, user="runnel", dbname="runnel", autocommit=True) as c:
        c.execute("CREATE STREAM stopped_writes (n BIGINT)")
    with psycopg.connect(host=host, port=port, user="runnel", dbname="runnel") as c:
        c.execute("SET statement_timeout = '300ms'")
        with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
            c.execute("INSERT INTO stopped_writes " + LONG_QUERY)
        # The stopped statement aborted the block, as any error does; nothing was written.
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            c.execute("SELECT 1")
        c.rollback()
        c.execute("SET statement_timeout = 0")
        assert c.execute("SELECT count(*) FROM stopped_writes").fetchone() == (0,)
        c.commit()


def test_cancel_request_stops_a_long_query(server):
    import threading

    import psycopg
    import psycopg.errors

    host, port = server
    with psycopg.connect(host=host, port=port, user="runnel", dbname="runnel", autocommit=True) as c:
        outcome: list = []

        def run() -> None:
            try:
                c.execute(LONG_QUERY)
                outcome.append("finished")
            except psycopg.errors.QueryCanceled as error:
                outcome.append(str(error))

        worker = threading.Thread(target=run)
        worker.start()
        # Cancel until the query has stopped (a cancel that arrives before the query starts
        # does nothing, as in Postgres).
        for _ in range(300):
            worker.join(timeout=0.2)
            if not worker.is_alive():
                break
            c.cancel()
        worker.join(timeout=60)
        assert outcome == ["canceling statement due to user request"]
        assert c.execute("SELECT 2").fetchone() == (2,)


def test_asyncpg_binary_copy_both_ways(server, tmp_path):
    asyncpg = pytest.importorskip("asyncpg")
    from datetime import datetime, timezone

    host, port = server
    rows = [
        (1, "plain", 0.5, True, datetime(2026, 6, 10, 10, 0, tzinfo=timezone.utc)),
        (2, "tab\tand 'quote'", None, False, datetime(2026, 6, 10, 10, 0, 1, 250000, tzinfo=timezone.utc)),
        (3, None, -2.25, None, None),
    ]

    async def run() -> None:
        conn = await asyncpg.connect(host=host, port=port, user="runnel", database="runnel")
        try:
            await conn.execute(
                "CREATE TABLE async_copy (k BIGINT PRIMARY KEY, label TEXT, x DOUBLE PRECISION, "
                "ok BOOLEAN, ts TIMESTAMPTZ)"
            )
            # Binary COPY FROM STDIN.
            result = await conn.copy_records_to_table("async_copy", records=rows)
            assert result == "COPY 3"
            got = await conn.fetch("SELECT k, label, x, ok, ts FROM async_copy ORDER BY k")
            assert [tuple(r) for r in got] == rows
            # COPY (query) TO STDOUT, written by the server, to a file on the client.
            target = tmp_path / "out.csv"
            await conn.copy_from_query(
                "SELECT k, label FROM async_copy WHERE k < $1 ORDER BY k", 3, output=str(target), format="csv"
            )
            # As Postgres writes CSV: a tab needs no quotes.
            assert target.read_text().splitlines() == ["1,plain", "2,tab\tand 'quote'"]
        finally:
            await conn.close()

    asyncio.run(run())


def test_asyncpg_uuid_and_jsonb_columns(server):
    """asyncpg reads uuid and jsonb in binary: a uuid is 16 bytes, jsonb a version byte and its
    text; binary COPY FROM writes them the same way."""
    asyncpg = pytest.importorskip("asyncpg")
    import json
    import uuid

    host, port = server
    u = uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e")

    async def run() -> None:
        conn = await asyncpg.connect(host=host, port=port, user="runnel", database="runnel")
        try:
            await conn.execute("CREATE TABLE async_typed (k INT PRIMARY KEY, u UUID, doc JSONB)")
            await conn.execute("INSERT INTO async_typed VALUES (1, $1, $2)", str(u).upper(), '{"b":1,"a":2}')
            result = await conn.copy_records_to_table(
                "async_typed", records=[(2, uuid.UUID(int=2), json.dumps({"x": [True, None]}))]
            )
            assert result == "COPY 1"
            got = await conn.fetch("SELECT k, u, doc FROM async_typed ORDER BY k")
            assert [tuple(r) for r in got] == [
                (1, u, '{"a": 2, "b": 1}'),
                (2, uuid.UUID(int=2), '{"x": [true, null]}'),
            ]
            assert await conn.fetchval("SELECT u FROM async_typed WHERE u = $1::uuid", u) == u
        finally:
            await conn.close()

    asyncio.run(run())


def test_asyncpg_intervals_round_trip(server):
    """asyncpg sends a timedelta as a binary interval, which Runnel reads through Postgres's
    text form (`1 day 02:00:00`); binary COPY FROM and a comparison with a parameter work too."""
    asyncpg = pytest.importorskip("asyncpg")
    import datetime

    host, port = server
    day_and_a_bit = datetime.timedelta(days=1, hours=2, microseconds=5)
    negative = datetime.timedelta(hours=-3, minutes=-30)

    async def run() -> None:
        conn = await asyncpg.connect(host=host, port=port, user="runnel", database="runnel")
        try:
            await conn.execute("CREATE TABLE async_intervals (k INT PRIMARY KEY, d INTERVAL)")
            await conn.execute("INSERT INTO async_intervals VALUES (1, $1)", day_and_a_bit)
            await conn.copy_records_to_table("async_intervals", records=[(2, negative)])
            got = await conn.fetch("SELECT k, d FROM async_intervals ORDER BY k")
            assert [tuple(r) for r in got] == [(1, day_and_a_bit), (2, negative)]
            assert await conn.fetchval("SELECT $1::interval", negative) == negative
            bigger = await conn.fetch(
                "SELECT k FROM async_intervals WHERE d > $1", datetime.timedelta(hours=1)
            )
            assert [r["k"] for r in bigger] == [1]
        finally:
            await conn.close()

    asyncio.run(run())


def test_asyncpg_time_and_bare_numeric(server):
    """TIME round-trips in binary (parameters, COPY, results); a bare NUMERIC refuses a value
    it would have to round (22003) instead of storing it rounded."""
    asyncpg = pytest.importorskip("asyncpg")
    import datetime
    from decimal import Decimal

    host, port = server

    async def run() -> None:
        conn = await asyncpg.connect(host=host, port=port, user="runnel", database="runnel")
        try:
            await conn.execute("CREATE TABLE async_times (k INT PRIMARY KEY, t TIME, x NUMERIC)")
            await conn.execute(
                "INSERT INTO async_times VALUES (1, $1, $2)", datetime.time(10, 0, 1, 500000), Decimal("1.5")
            )
            await conn.copy_records_to_table(
                "async_times", records=[(2, datetime.time(23, 59, 59, 999999), Decimal("0.1234567891"))]
            )
            with pytest.raises(asyncpg.exceptions.NumericValueOutOfRangeError):
                await conn.execute("INSERT INTO async_times VALUES (3, NULL, $1)", Decimal("1.123456789012345"))
            with pytest.raises(asyncpg.exceptions.NumericValueOutOfRangeError):
                await conn.copy_records_to_table("async_times", records=[(4, None, Decimal("1e-11"))])
            got = await conn.fetch("SELECT k, t, x FROM async_times ORDER BY k")
            assert [tuple(r) for r in got] == [
                (1, datetime.time(10, 0, 1, 500000), Decimal("1.5")),
                (2, datetime.time(23, 59, 59, 999999), Decimal("0.1234567891")),
            ]
        finally:
            await conn.close()

    asyncio.run(run())


def test_asyncpg_reads_whole_rows_as_records(server):
    """A whole-row reference is an anonymous record (OID 2249), which asyncpg decodes in
    binary field by field, without the type introspection a named composite type needs."""
    asyncpg = pytest.importorskip("asyncpg")
    import datetime
    from decimal import Decimal

    host, port = server

    async def run() -> None:
        conn = await asyncpg.connect(host=host, port=port, user="runnel", database="runnel")
        try:
            await conn.execute(
                "CREATE TABLE async_rows (k BIGINT PRIMARY KEY, name TEXT, price NUMERIC(10,2), ts TIMESTAMPTZ)"
            )
            await conn.execute(
                "INSERT INTO async_rows VALUES (1, 'a b', 9.5, '2024-03-01 12:00:00+00'), (2, NULL, NULL, NULL)"
            )
            rows = await conn.fetch("SELECT r FROM async_rows r ORDER BY k")
            assert [tuple(row["r"]) for row in rows] == [
                (1, "a b", Decimal("9.50"), datetime.datetime(2024, 3, 1, 12, tzinfo=datetime.timezone.utc)),
                (2, None, None, None),
            ]
            assert await conn.fetchval("SELECT row_to_json(r) FROM async_rows r WHERE k = 2") == (
                '{"k":2,"name":null,"price":null,"ts":null}'
            )
        finally:
            await conn.close()

    asyncio.run(run())


def test_parameters_are_described_from_their_casts(server):
    asyncpg = pytest.importorskip("asyncpg")
    host, port = server

    async def run() -> None:
        conn = await asyncpg.connect(host=host, port=port, user="runnel", database="runnel")
        try:
            statement = await conn.prepare("SELECT $1::int + 1 AS a, $2::bigint AS b, $3::text AS c")
            assert [t.name for t in statement.get_parameters()] == ["int4", "int8", "text"]
            # asyncpg binds ints to int4/int8 parameters in binary; a text one would refuse them.
            assert tuple(await statement.fetchrow(41, 7, "x")) == (42, 7, "x")
        finally:
            await conn.close()

    asyncio.run(run())
