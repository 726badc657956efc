"""Point lookups of keyed views are seeks: `SELECT * FROM v WHERE k = 42` reads that key, not
the whole view (key_lookup.rs). EXPLAIN shows a `ViewKeyLookup` leaf with the rows it read, so
the test sees how much was read without timing anything; the answers are checked against the
rows computed here.
"""

from __future__ import annotations


KEYS = 20_000


def explain(conn, sql: str) -> str:
    rows = conn.execute("EXPLAIN " + sql).fetchall()
    return "\n".join(str(r[-1]) for r in rows)


def test_point_lookups_read_only_their_keys(conn):
    conn.execute("CREATE STREAM kl_s (k BIGINT, g TEXT, x BIGINT)")
    conn.execute(
        "CREATE MATERIALIZED VIEW kl_v AS SELECT k, count(*) AS n, sum(x) AS total FROM kl_s GROUP BY k"
    )
    conn.execute(
        "CREATE MATERIALIZED VIEW kl_g AS SELECT g, k, count(*) AS n FROM kl_s GROUP BY g, k"
    )
    with conn.cursor().copy("COPY kl_s FROM STDIN WITH (FORMAT csv)") as copy:
        copy.write("".join(f"{i},g{i % 10},{i * 3}\n" for i in range(KEYS)))
    conn.execute("FLUSH")

    assert conn.execute("SELECT * FROM kl_v WHERE k = 4242").fetchall() == [(4242, 1, 12726)]
    plan = explain(conn, "SELECT * FROM kl_v WHERE k = 4242")
    assert "ViewKeyLookup: kl_v key k = 4242, rows=1" in plan, plan

    rows = conn.execute("SELECT k, total FROM kl_v WHERE k IN (7, 19999, 20000) ORDER BY k").fetchall()
    assert rows == [(7, 21), (19999, 59997)]
    plan = explain(conn, "SELECT * FROM kl_v WHERE k IN (7, 19999, 20000)")
    assert "ViewKeyLookup: kl_v key k IN (" in plan and "rows=2" in plan, plan

    # The first column of the key: its rows only (one seek per vnode).
    rows = conn.execute("SELECT count(*), sum(k) FROM kl_g WHERE g = 'g3'").fetchone()
    expected = [i for i in range(KEYS) if i % 10 == 3]
    assert rows == (len(expected), sum(expected))
    plan = explain(conn, "SELECT * FROM kl_g WHERE g = 'g3'")
    assert f"ViewKeyLookup: kl_g key prefix g = g3, rows={len(expected)}" in plan, plan

    # No filter on the key: the whole view, no lookup.
    plan = explain(conn, "SELECT * FROM kl_v WHERE total = 3")
    assert "ViewKeyLookup" not in plan, plan
    assert conn.execute("SELECT k FROM kl_v WHERE total = 3").fetchall() == [(1,)]


def test_tables_are_looked_up_by_primary_key(conn):
    conn.execute("CREATE TABLE kl_t (id BIGINT PRIMARY KEY, name TEXT)")
    with conn.cursor().copy("COPY kl_t FROM STDIN WITH (FORMAT csv)") as copy:
        copy.write("".join(f"{i},n{i}\n" for i in range(KEYS)))
    assert conn.execute("SELECT name FROM kl_t WHERE id = 77").fetchall() == [("n77",)]
    plan = explain(conn, "SELECT * FROM kl_t WHERE id = 77")
    assert "TableKeyLookup: kl_t key id = 77, rows=1" in plan, plan
    plan = explain(conn, "SELECT * FROM kl_t WHERE name = 'n77'")
    assert "KeyLookup" not in plan, plan
