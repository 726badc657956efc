"""Privileges against a real server with passwords: owners, GRANT/REVOKE of SELECT, INSERT,
UPDATE and DELETE, CREATE on schema public, PUBLIC, role membership, the `runnel_kafka` role
that guards connecting the server to Kafka brokers, and what psql's \\dp and \\du show.
Each role holds one privilege; every statement kind is tried by a role without it (42501)."""

from __future__ import annotations

import os
import subprocess

import psycopg
import pytest
from psycopg import errors

from runnel_proc import RunnelProcess

SUPER = "super-pw"
ROLES = ["owner", "reader", "writer", "updater", "deleter", "nobody", "creator"]


@pytest.fixture(scope="module")
def server(broker):
    proc = RunnelProcess(
        env={"RUNNEL_SUPERUSER_PASSWORD": SUPER},
        kafka_bootstrap_servers=broker.bootstrap_servers,
    )
    try:
        proc.start()
        with as_role(proc, "runnel") as conn:
            for role in ROLES:
                conn.execute(f"CREATE USER {role} PASSWORD '{role}-pw'")
            conn.execute("GRANT CREATE ON SCHEMA public TO owner, creator")
        with as_role(proc, "owner") as conn:
            conn.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT)")
            conn.execute("CREATE STREAM s (id BIGINT, v BIGINT)")
            conn.execute("INSERT INTO t VALUES (1, 10), (2, 20)")
            conn.execute("INSERT INTO s VALUES (1, 5)")
            conn.execute("CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM t")
            conn.execute("GRANT SELECT ON t, mv TO reader")
            conn.execute("GRANT INSERT ON TABLE t TO writer")
            conn.execute("GRANT UPDATE ON t TO updater")
            conn.execute("GRANT DELETE ON t TO deleter")
        yield proc
    finally:
        proc.cleanup()


def as_role(proc: RunnelProcess, role: str) -> psycopg.Connection:
    password = SUPER if role == "runnel" else f"{role}-pw"
    return proc.connect(user=role, password=password)


def denied(conn: psycopg.Connection, sql: str) -> str:
    with pytest.raises(errors.InsufficientPrivilege) as failed:
        conn.execute(sql)
    return str(failed.value)


def test_a_role_without_privileges_is_denied_every_statement_kind(server):
    with as_role(server, "nobody") as conn:
        assert denied(conn, "SELECT * FROM t") == "permission denied for table t"
        assert denied(conn, "SELECT * FROM mv") == "permission denied for materialized view mv"
        assert denied(conn, "SELECT * FROM s") == "permission denied for table s"
        denied(conn, "INSERT INTO t VALUES (9, 9)")
        denied(conn, "UPDATE t SET v = 0")
        denied(conn, "DELETE FROM t")
        denied(conn, "COPY t TO STDOUT")
        denied(conn, "COPY (SELECT v FROM t) TO STDOUT")
        with pytest.raises(errors.InsufficientPrivilege):
            with conn.cursor().copy("COPY t FROM STDIN") as copy:
                copy.write("3\t30\n")
        with conn.transaction():
            denied(conn, "DECLARE c CURSOR FOR SELECT * FROM t")
        assert denied(conn, "DROP TABLE t") == "must be owner of table t"
        denied(conn, "DROP MATERIALIZED VIEW mv")
        denied(conn, "COMMENT ON TABLE t IS 'x'")
        denied(conn, "GRANT SELECT ON t TO nobody")
        assert denied(conn, "CREATE TABLE n (a BIGINT)") == "permission denied for schema public"
        denied(conn, "CREATE STREAM n (a BIGINT)")
        denied(conn, "CREATE MATERIALIZED VIEW n AS SELECT 1 AS one")
        denied(conn, "CREATE ROLE x")
        denied(conn, "GRANT runnel_kafka TO nobody")
        # The system catalogs stay readable: clients list what exists.
        names = {r[0] for r in conn.execute("SELECT relname FROM pg_class").fetchall()}
        assert {"t", "s", "mv"} <= names


def test_each_privilege_allows_exactly_its_statement(server):
    with as_role(server, "reader") as conn:
        assert conn.execute("SELECT v FROM t ORDER BY id").fetchall() == [(10,), (20,)]
        assert conn.execute("SELECT n FROM mv").fetchall() == [(2,)]
        denied(conn, "INSERT INTO t VALUES (3, 30)")
        # A join needs SELECT on every relation it reads.
        denied(conn, "SELECT * FROM t JOIN s ON t.id = s.id")
    with as_role(server, "writer") as conn:
        conn.execute("INSERT INTO t VALUES (3, 30)")
        with conn.cursor().copy("COPY t FROM STDIN") as copy:
            copy.write("4\t40\n")
        denied(conn, "SELECT * FROM t")
        denied(conn, "INSERT INTO t SELECT id + 100, v FROM s")
        denied(conn, "UPDATE t SET v = 0")
    with as_role(server, "updater") as conn:
        conn.execute("UPDATE t SET v = v + 1")
        # A WHERE clause reads the table: that needs SELECT, as in Postgres.
        denied(conn, "UPDATE t SET v = 0 WHERE id = 1")
        denied(conn, "DELETE FROM t")
    with as_role(server, "deleter") as conn:
        denied(conn, "DELETE FROM t WHERE id = 4")
        denied(conn, "SELECT * FROM t")
    with as_role(server, "owner") as conn:
        assert conn.execute("SELECT id, v FROM t ORDER BY id").fetchall() == [
            (1, 11), (2, 21), (3, 31), (4, 41)]
        conn.execute("GRANT SELECT ON t TO deleter")
    with as_role(server, "deleter") as conn:
        conn.execute("DELETE FROM t WHERE id = 4")
    with as_role(server, "owner") as conn:
        conn.execute("REVOKE SELECT ON t FROM deleter")
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (3,)
    with as_role(server, "deleter") as conn:
        denied(conn, "SELECT * FROM t")


def test_public_grants_reach_every_role_and_revoke_takes_them_back(server):
    with as_role(server, "owner") as conn:
        conn.execute("GRANT SELECT ON s TO PUBLIC")
    with as_role(server, "nobody") as conn:
        assert conn.execute("SELECT v FROM s").fetchall() == [(5,)]
    with as_role(server, "owner") as conn:
        conn.execute("REVOKE SELECT ON s FROM PUBLIC")
    with as_role(server, "nobody") as conn:
        denied(conn, "SELECT v FROM s")


def test_creating_a_view_needs_create_and_select_on_what_it_reads(server):
    with as_role(server, "creator") as conn:
        assert denied(conn, "CREATE MATERIALIZED VIEW cv AS SELECT sum(v) AS total FROM t") \
            == "permission denied for table t"
    with as_role(server, "owner") as conn:
        conn.execute("GRANT SELECT ON t TO creator")
    with as_role(server, "creator") as conn:
        conn.execute("CREATE MATERIALIZED VIEW cv AS SELECT sum(v) AS total FROM t")
        assert conn.execute("SELECT total FROM cv").fetchone()[0] is not None
        conn.execute("COMMENT ON MATERIALIZED VIEW cv IS 'mine'")
    with as_role(server, "reader") as conn:
        denied(conn, "SELECT * FROM cv")
        denied(conn, "DROP MATERIALIZED VIEW cv")
    with as_role(server, "runnel") as conn:
        (owner,) = conn.execute(
            "SELECT matviewowner FROM pg_matviews WHERE matviewname = 'cv'").fetchone()
        assert owner == "creator"
        with pytest.raises(errors.DependentObjectsStillExist):
            conn.execute("DROP ROLE creator")
    with as_role(server, "creator") as conn:
        conn.execute("DROP MATERIALIZED VIEW cv")


def test_kafka_needs_membership_in_runnel_kafka(server, broker):
    from kafka_harness import unique_name

    topic = unique_name("priv")
    broker.create_topic(topic)
    create = (f"CREATE STREAM k_{topic} (a BIGINT) WITH (connector = 'kafka', "
              f"topic = '{topic}', format = 'json')")
    with as_role(server, "creator") as conn:
        said = denied(conn, create)
        assert "runnel_kafka" in said
        denied(conn, f"CREATE SINK k_sink FROM t WITH (connector = 'kafka', topic = '{topic}')")
        # A generator makes no connection: CREATE on the schema is enough.
        conn.execute("CREATE STREAM gen (auction BIGINT) WITH (connector = 'nexmark', "
                     "table = 'bid', events = '1')")
    with as_role(server, "runnel") as conn:
        conn.execute("GRANT runnel_kafka TO creator")
    with as_role(server, "creator") as conn:
        conn.execute(create)
        # Naming a file the server reads (and sends to the broker) is for superusers only.
        said = denied(conn, create.replace(f"k_{topic}", f"k3_{topic}").replace(
            "format = 'json'",
            "format = 'json', \"security.protocol\" = 'sasl_plaintext', "
            "\"sasl.mechanism\" = 'SCRAM-SHA-256', \"sasl.username\" = 'u', "
            "\"sasl.password.file\" = '/etc/passwd'"))
        assert "sasl.password.file" in said and "superusers" in said
    with as_role(server, "runnel") as conn:
        conn.execute("REVOKE runnel_kafka FROM creator")
    with as_role(server, "creator") as conn:
        denied(conn, create.replace(f"k_{topic}", f"k2_{topic}"))


def psql(proc: RunnelProcess, command: str) -> str:
    done = subprocess.run(
        ["psql", "-X", "-h", proc.host, "-p", str(proc.port), "-U", "runnel", "-d", "runnel",
         "-c", command],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PGPASSWORD": SUPER},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_psql_dp_and_du_show_privileges_and_memberships(server):
    with as_role(server, "runnel") as conn:
        conn.execute("GRANT runnel_kafka TO writer")
    dp = psql(server, "\\dp t")
    assert "owner=arwd/owner" in dp and "reader=r/owner" in dp
    assert "writer=a/owner" in dp and "updater=w/owner" in dp and "deleter=d/owner" in dp
    du = psql(server, "\\du writer")
    assert "runnel_kafka" in du


def test_privileges_survive_a_restart(server):
    server.restart()
    with as_role(server, "reader") as conn:
        # Rows 1, 2 and 3 are left (the earlier tests wrote them).
        assert conn.execute("SELECT n FROM mv").fetchone() == (3,)
        denied(conn, "INSERT INTO t VALUES (8, 8)")
    with as_role(server, "nobody") as conn:
        denied(conn, "SELECT * FROM t")
        denied(conn, "CREATE TABLE z (a BIGINT)")
    with as_role(server, "creator") as conn:
        conn.execute("CREATE TABLE z (a BIGINT)")


def test_privilege_functions_answer_for_the_role(server):
    with as_role(server, "reader") as conn:
        row = conn.execute(
            "SELECT has_table_privilege('t', 'SELECT'), has_table_privilege('t', 'INSERT'), "
            "has_table_privilege('writer', 't', 'INSERT'), "
            "has_table_privilege('t'::regclass, 'select, delete'), "
            "has_schema_privilege('public', 'CREATE'), has_schema_privilege('public', 'USAGE'), "
            "has_schema_privilege('owner', 'public', 'CREATE')"
        ).fetchone()
        assert row == (True, False, True, True, False, True, True)
