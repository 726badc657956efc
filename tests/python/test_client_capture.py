"""Replays the introspection SQL that real PostgreSQL clients send, against a real `runnel serve`.

The fixture `client_capture.json` (next to this file) was captured from a PostgreSQL 15.20 server
that these clients talked to: psql 15.20 (`\\d`, `\\d+`, `\\dt`, `\\l`, ...), SQLAlchemy 2.1.9
(reflection, `inspect()`, pandas `read_sql`/`to_sql`) with psycopg 3.3.9 and with psycopg2 2.9.13,
asyncpg 0.32.0, node-postgres 8.23.1, pgjdbc 42.5.5 (DatabaseMetaData, ResultSetMetaData), and
Grafana's PostgreSQL datasource probes (rebuilt from Grafana's source and sent with psycopg 3).
The statements were taken from the server's statement log; the fixture keeps, per client action
and in capture order, the distinct statement texts that are introspection-like (touch
pg_catalog / information_schema / pg_*, call current_setting / set_config / version /
current_schema(s), or are SET / SHOW / BEGIN / COMMIT / ROLLBACK / SAVEPOINT / RELEASE), minus
those that name objects this test does not create (v_plain, typed, new_tbl*). Each statement
carries its protocol kind, its verbatim text and, for the extended protocol, the text parameters
of its first execution. `n` is the statement's 1-based index in the action's list of distinct
texts. node-postgres sent no introspection SQL, so it has no statements.

What is asserted: after creating the captured objects (`items`, the stream `views` and the
materialized view `avg_price`) and rewriting the capture cluster's OIDs of those objects and of
their row types into this server's OIDs, every statement is sent as the client sent it, one
fresh autocommit connection per action:

* simple     -> one Query message, verbatim;
* extended   -> unnamed Parse with unspecified parameter types + Bind (text parameters) +
                Describe portal + Execute + Sync;
* parse-only -> Parse + Describe statement, never executed;

and each one must succeed, except the statements listed in KNOWN_UNSUPPORTED. Those may answer
with an ErrorResponse (any SQLSTATE); if one succeeds, the test emits a warning so the entry can
be removed. A timeout or a lost connection fails the test for every statement, listed or not.
Each client must also have replayed at least one statement successfully.
"""

from __future__ import annotations

import json
import re
import select
import time
import warnings
from pathlib import Path

import psycopg
import pytest
from psycopg import pq

FIXTURE = Path(__file__).with_name("client_capture.json")

# The clients whose captured statements are replayed (node_pg sent no introspection SQL).
CLIENTS = ["psql", "sqla_psycopg", "sqla_psycopg2", "asyncpg", "jdbc", "grafana_sim"]

# Same objects as the capture (PostgreSQL's `views` table is a Runnel stream).
SETUP = [
    "CREATE TABLE items (item_id BIGINT PRIMARY KEY, name TEXT, category TEXT)",
    "CREATE STREAM views (user_id BIGINT, item_id BIGINT, price DOUBLE PRECISION, ts TIMESTAMPTZ)",
    "CREATE MATERIALIZED VIEW avg_price AS SELECT user_id, avg(price) AS avg_price, count(*) AS n "
    "FROM views GROUP BY user_id",
]

# (action, n) -> why Runnel does not run it yet. These may fail with an SQL error.
KNOWN_UNSUPPORTED = {
    ("asyncpg_fetch_composite_triggers_introspection", 2): "asyncpg's composite-type "
    "introspection (WITH RECURSIVE typeinfo_tree), which Postgres's named row type for "
    "`SELECT i FROM items i` makes asyncpg send. Runnel returns such a row as an anonymous "
    "record, which asyncpg decodes without it (test_wire_protocol tests that), so asyncpg "
    "never sends it to Runnel; replayed, DataFusion cannot plan its correlated scalar "
    "subqueries (a recursive CTE for domain base types inside a CASE), 0A000",
}

STATEMENT_TIMEOUT_S = 30.0  # client-side deadline per statement
CONNECT_TIMEOUT_S = 10


class StatementTimeout(Exception):
    pass


def oneline(text: str, n: int = 200) -> str:
    return " ".join(text.split())[:n]


@pytest.fixture(scope="module")
def fixture_data() -> dict:
    with open(FIXTURE, encoding="utf-8") as f:
        return json.load(f)


def connect(host: str, port: int, appname: str) -> psycopg.Connection:
    return psycopg.connect(
        host=host,
        port=port,
        user="runnel",
        dbname="runnel",
        autocommit=True,
        sslmode="disable",
        gssencmode="disable",
        connect_timeout=CONNECT_TIMEOUT_S,
        application_name=appname,
        # Server-side limit too (below the client-side deadline), for statements Runnel can stop.
        options="-c statement_timeout=20s",
    )


@pytest.fixture(scope="module")
def capture_server(server, fixture_data):
    """Creates the captured objects; yields (host, port, captured OID -> this server's OID)."""
    host, port = server
    with connect(host, port, "client-capture-setup") as conn:
        for sql in SETUP:
            conn.execute(sql)
        names = sorted({v["object"] for v in fixture_data["captured_oids"].values()})
        inlist = ", ".join(f"'{n}'" for n in names)
        # The same look-ups as the capture's replay tool, first answer with rows wins.
        found: dict[str, tuple[str | None, str | None]] = {}
        for q in (
            "SELECT c.relname, c.oid, c.reltype FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE n.nspname = 'public' AND c.relname IN ({inlist})",
            f"SELECT relname, oid, reltype FROM pg_catalog.pg_class WHERE relname IN ({inlist})",
            f"SELECT relname, oid, reltype FROM pg_class WHERE relname IN ({inlist})",
        ):
            res = conn.pgconn.exec_(q.encode())
            if res.status != pq.ExecStatus.TUPLES_OK or res.nfields < 3:
                continue
            for i in range(res.ntuples):
                v = [res.get_value(i, j) for j in range(3)]
                if v[0] is None:
                    continue
                found[v[0].decode()] = (
                    v[1].decode() if v[1] else None,
                    v[2].decode() if v[2] else None,
                )
            if found:
                break
    mapping: dict[str, str] = {}
    for old, info in fixture_data["captured_oids"].items():
        if info["object"] in found:
            new = found[info["object"]][0 if info["oid_of"] == "relation" else 1]
            if new and new != "0":
                mapping[old] = new
    # The replay tool goes on without a mapping; here a missing OID is a failure of its own.
    missing = sorted(set(fixture_data["captured_oids"]) - set(mapping))
    assert not missing, (
        f"could not find this server's OIDs for captured OIDs {missing} "
        f"({[fixture_data['captured_oids'][m] for m in missing]}); pg_class answered {found}"
    )
    yield host, port, mapping


def remap(s: str | None, rx: re.Pattern | None, mapping: dict[str, str]) -> str | None:
    """Rewrites every captured OID (as a whole number) in a statement text or parameter."""
    if rx is None or s is None:
        return s
    return rx.sub(lambda m: mapping[m.group(0)], s)


# ------------------------------------------------------------------------------------------
# Low-level execution with libpq-style calls (psycopg.pq) and a client-side deadline, so that
# each statement goes out exactly as the captured client sent it and a hang fails the test.


def wait_result(pgconn, deadline: float):
    while pgconn.is_busy():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StatementTimeout()
        r, _, _ = select.select([pgconn.socket], [], [], remaining)
        if r:
            pgconn.consume_input()
    return pgconn.get_result()


def collect(pgconn, deadline: float) -> list:
    results = []
    while True:
        res = wait_result(pgconn, deadline)
        if res is None:
            return results
        results.append(res)
        if res.status in (pq.ExecStatus.COPY_IN, pq.ExecStatus.COPY_BOTH):
            pgconn.put_copy_end(b"client capture replay sends no COPY data")
        elif res.status == pq.ExecStatus.COPY_OUT:
            while True:
                nb, _ = pgconn.get_copy_data(1)
                if nb == -1:
                    break
                if nb == 0:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise StatementTimeout()
                    select.select([pgconn.socket], [], [], remaining)
                    pgconn.consume_input()


def first_error(results) -> tuple[str, str] | None:
    for res in results:
        if res.status == pq.ExecStatus.FATAL_ERROR:
            D = pq.DiagnosticField
            code = res.error_field(D.SQLSTATE)
            msg = res.error_field(D.MESSAGE_PRIMARY) or res.error_message
            return (
                code.decode("utf-8", "replace") if code else "",
                oneline(msg.decode("utf-8", "replace") if msg else "", 500),
            )
    return None


def run_statement(pgconn, kind: str, sql: str, params: list) -> tuple[str, str] | None:
    """Sends one statement; returns (SQLSTATE, message) of its error, or None on success."""
    deadline = time.monotonic() + STATEMENT_TIMEOUT_S
    if kind == "simple":
        pgconn.send_query(sql.encode("utf-8"))
        return first_error(collect(pgconn, deadline))
    if kind == "parse-only":
        pgconn.send_prepare(b"", sql.encode("utf-8"), None)
        err = first_error(collect(pgconn, deadline))
        if err:
            return err
        pgconn.send_describe_prepared(b"")
        return first_error(collect(pgconn, deadline))
    assert kind == "extended", kind
    values = [None if p is None else p.encode("utf-8") for p in params]
    pgconn.send_query_params(sql.encode("utf-8"), values, None, None, 0)
    return first_error(collect(pgconn, deadline))


# ------------------------------------------------------------------------------------------


def test_fixture_covers_the_clients(fixture_data):
    """Every client with statements is tested, and every KNOWN_UNSUPPORTED entry exists."""
    with_statements = {a["client"] for a in fixture_data["actions"] if a["statements"]}
    assert with_statements == set(CLIENTS)
    present = {(a["action"], s["n"]) for a in fixture_data["actions"] for s in a["statements"]}
    stale = sorted(set(KNOWN_UNSUPPORTED) - present)
    assert not stale, f"KNOWN_UNSUPPORTED names statements that are not in the fixture: {stale}"


@pytest.mark.parametrize("client", CLIENTS)
def test_client_capture_replays(capture_server, fixture_data, client):
    host, port, mapping = capture_server
    rx = re.compile(r"(?<!\d)(%s)(?!\d)" % "|".join(map(re.escape, mapping))) if mapping else None
    actions = [a for a in fixture_data["actions"] if a["client"] == client]

    ok = 0
    replayed = 0
    failures: list[str] = []  # statements that must succeed but did not, and any hang/crash
    known_passing: list[str] = []
    known_failing: list[str] = []
    for action in actions:
        if not action["statements"]:
            continue
        conn = None
        for st in action["statements"]:
            key = (action["action"], st["n"])
            label = f"{action['action']} #{st['n']} [{st['kind']}]"
            sql = remap(st["sql"], rx, mapping)
            params = [remap(p, rx, mapping) for p in st["params"] or []]
            replayed += 1
            if conn is None:
                try:
                    conn = connect(host, port, "client-capture")
                except psycopg.Error as e:
                    failures.append(f"{label}: connect failed: {oneline(str(e), 300)}")
                    continue
            try:
                err = run_statement(conn.pgconn, st["kind"], sql, params)
            except StatementTimeout:
                failures.append(
                    f"{label}: TIMEOUT (no answer in {STATEMENT_TIMEOUT_S:.0f}s) | {oneline(sql)}"
                )
                try:
                    conn.pgconn.get_cancel().cancel()
                except Exception:
                    pass
                conn.close()
                conn = None
                continue
            except Exception as e:  # the connection broke (server crash, protocol error)
                failures.append(
                    f"{label}: CONNECTION LOST {type(e).__name__}: {oneline(str(e), 300)} "
                    f"| {oneline(sql)}"
                )
                conn.close()
                conn = None
                continue
            if conn.pgconn.status != pq.ConnStatus.OK:
                detail = f" [{err[0]}] {err[1]}" if err else ""
                failures.append(
                    f"{label}: CONNECTION LOST after the statement{detail} | {oneline(sql)}"
                )
                conn.close()
                conn = None
                continue
            if err is None:
                ok += 1
                if key in KNOWN_UNSUPPORTED:
                    known_passing.append(f"{label}: {KNOWN_UNSUPPORTED[key]}")
            elif key in KNOWN_UNSUPPORTED:
                known_failing.append(label)
            else:
                failures.append(f"{label}: [{err[0]}] {err[1]} | {oneline(sql)}")
        if conn is not None:
            conn.close()

    if known_passing:
        warnings.warn(
            f"{client}: statements listed in KNOWN_UNSUPPORTED now succeed, remove them: "
            + "; ".join(known_passing)
        )
    assert not failures, (
        f"{client}: {len(failures)} of {replayed} captured statements failed "
        f"({ok} OK, {len(known_failing)} known unsupported):\n" + "\n".join(failures)
    )
    assert replayed > 0 and ok > 0, f"{client}: nothing replayed ({replayed} statements, {ok} OK)"
