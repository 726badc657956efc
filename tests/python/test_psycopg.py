"""psycopg 3 against a real `runnel serve` process, over the extended query protocol.

psycopg 3 sends every `cursor.execute(sql, params)` as Parse/Bind/Describe/Execute with `$n`
placeholders (server-side parameters); `prepare=True` makes it a named prepared statement that
is reused. The tests create streams, tables and views, write through parameters, executemany
and COPY, FLUSH, and check contents and Python result types. Every expected value is computed
here from the inputs.

The `server` fixture (conftest.py) starts the server; RUNNEL_BIN names the binary.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import psycopg
import psycopg.errors
import pytest
from psycopg.postgres import types as pg_types


_names = itertools.count()


def unique(prefix: str) -> str:
    """A fresh object name, so tests sharing one server never collide."""
    return f"{prefix}_{next(_names)}"


def oid(name: str) -> int:
    return pg_types.get(name).oid


# --------------------------------------------------------------------------------------------
# Test data. Prices are multiples of 0.25 so float sums are exact in any order.

UTC = timezone.utc
PLUS2 = timezone(timedelta(hours=2))
MINUS5 = timezone(timedelta(hours=-5))

EVENTS = [
    # id, user_id, qty, price, name, ok, ts, amount
    (1, 10, 3, 2.5, "apple", True, datetime(2026, 6, 10, 12, 0, 0, tzinfo=UTC), Decimal("12.34")),
    (2, 10, -1, 0.25, "pear", False, datetime(2026, 6, 10, 14, 30, 15, 250000, tzinfo=PLUS2), Decimal("-0.01")),
    (3, 11, 7, None, "apple", None, datetime(2026, 6, 9, 23, 59, 59, tzinfo=MINUS5), Decimal("100.00")),
    (4, 12, None, 9.75, None, True, None, None),
    (5, 11, 2, 1.0, "straße ✓", False, datetime(2026, 1, 1, 0, 0, 0, 1000, tzinfo=UTC), Decimal("0.50")),
    (6, 10, 0, 3.25, "it's", True, datetime(2025, 12, 31, 23, 0, 0, tzinfo=UTC), Decimal("99999.99")),
]

EVENT_COLUMNS = "id, user_id, qty, price, name, ok, ts, amount"


def create_events(cur, name: str) -> None:
    cur.execute(
        f"CREATE STREAM {name} (id BIGINT, user_id BIGINT, qty INT, price DOUBLE PRECISION, "
        "name TEXT, ok BOOLEAN, ts TIMESTAMPTZ, amount NUMERIC(12, 2))"
    )


def insert_sql(name: str) -> str:
    return f"INSERT INTO {name} ({EVENT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"


def per_user(rows):
    """The expected contents of the per-user aggregate view, computed from the inputs."""
    groups = defaultdict(list)
    for r in rows:
        groups[r[1]].append(r)
    out = {}
    for user, rs in groups.items():
        qtys = [r[2] for r in rs if r[2] is not None]
        prices = [r[3] for r in rs if r[3] is not None]
        tss = [r[6] for r in rs if r[6] is not None]
        amounts = [r[7] for r in rs if r[7] is not None]
        out[user] = (
            user,
            len(rs),
            sum(qtys) if qtys else None,
            sum(prices) if prices else None,
            max(tss) if tss else None,
            sum(amounts) if amounts else None,
            sum(1 for r in rs if r[5]),
        )
    return out


PER_USER_VIEW = (
    "SELECT user_id, count(*) AS n, sum(qty) AS total_qty, sum(price) AS total_price, "
    "max(ts) AS last_ts, sum(amount) AS total_amount, count(*) FILTER (WHERE ok) AS n_ok "
    "FROM {src} GROUP BY user_id"
)


def check_per_user(cur, view: str, rows) -> None:
    cur.execute(f"SELECT user_id, n, total_qty, total_price, last_ts, total_amount, n_ok FROM {view}")
    got = {r[0]: r for r in cur.fetchall()}
    expected = per_user(rows)
    assert got == expected
    for r in got.values():
        assert type(r[0]) is int and type(r[1]) is int and type(r[6]) is int
        assert r[2] is None or type(r[2]) is int
        assert r[3] is None or type(r[3]) is float
        assert r[4] is None or (isinstance(r[4], datetime) and r[4].tzinfo is not None)
        assert r[5] is None or type(r[5]) is Decimal


def check_event_rows(got, expected) -> None:
    """Rows read back equal the inputs, with the right Python types."""
    assert sorted(got, key=lambda r: r[0]) == sorted(expected, key=lambda r: r[0])
    for r in got:
        assert type(r[0]) is int and type(r[1]) is int
        assert r[2] is None or type(r[2]) is int
        assert r[3] is None or type(r[3]) is float
        assert r[4] is None or type(r[4]) is str
        assert r[5] is None or type(r[5]) is bool
        assert r[6] is None or (isinstance(r[6], datetime) and r[6].tzinfo is not None)
        assert r[7] is None or type(r[7]) is Decimal


# --------------------------------------------------------------------------------------------


def test_insert_parameters_of_every_type_and_read_back(conn):
    s, v = unique("events"), unique("per_user")
    with conn.cursor() as cur:
        create_events(cur, s)
        cur.execute(f"CREATE MATERIALIZED VIEW {v} AS " + PER_USER_VIEW.format(src=s))
        # Half through a named prepared statement, half through the unnamed one.
        for i, row in enumerate(EVENTS):
            cur.execute(insert_sql(s), row, prepare=(i % 2 == 0))
            assert cur.rowcount == 1
        cur.execute("FLUSH")
        cur.execute(f"SELECT {EVENT_COLUMNS} FROM {s}")
        check_event_rows(cur.fetchall(), EVENTS)
        check_per_user(cur, v, EVENTS)


def test_row_description_type_oids(conn):
    s = unique("events")
    with conn.cursor() as cur:
        create_events(cur, s)
        cur.execute(insert_sql(s), EVENTS[0])
        cur.execute(
            f"SELECT id, qty, price, name, ok, ts, amount, CAST(qty AS SMALLINT) AS q2, "
            f"CAST(ts AS DATE) AS d, CAST(price AS REAL) AS p4 FROM {s}"
        )
        got = [(d.name, d.type_code) for d in cur.description]
        # TEXT columns may be described as text or varchar; both are right.
        assert got[3] in (("name", oid("text")), ("name", oid("varchar")))
        got[3] = ("name", None)
        assert got == [
            ("id", oid("int8")),
            ("qty", oid("int4")),
            ("price", oid("float8")),
            ("name", None),
            ("ok", oid("bool")),
            ("ts", oid("timestamptz")),
            ("amount", oid("numeric")),
            ("q2", oid("int2")),
            ("d", oid("date")),
            ("p4", oid("float4")),
        ]
        row = cur.fetchone()
        assert row[:7] == (1, 3, 2.5, "apple", True, EVENTS[0][6], Decimal("12.34"))
        assert type(row[7]) is int and row[7] == 3
        assert row[8] == EVENTS[0][6].date()
        assert type(row[9]) is float and row[9] == 2.5


@pytest.mark.parametrize("prepare", [True, False])
def test_select_with_where_parameters(conn, prepare):
    s = unique("events")
    with conn.cursor() as cur:
        create_events(cur, s)
        cur.executemany(insert_sql(s), EVENTS)
        cur.execute("FLUSH")

        def select(sql, params):
            cur.execute(sql, params, prepare=prepare)
            return cur.fetchall()

        # The same statement with several parameter values (reused when prepared).
        for min_qty in (-1, 0, 2, 100):
            got = select(f"SELECT id FROM {s} WHERE qty > %s ORDER BY id", (min_qty,))
            assert got == [(r[0],) for r in sorted(EVENTS) if r[2] is not None and r[2] > min_qty]
        for name in ("apple", "it's", "straße ✓", "nothing"):
            got = select(f"SELECT id, price FROM {s} WHERE name = %s ORDER BY id", (name,))
            assert got == [(r[0], r[3]) for r in sorted(EVENTS) if r[4] == name]
        for p in (0.25, 2.5, 9.75):
            got = select(f"SELECT count(*) FROM {s} WHERE price >= %s", (p,))
            assert got == [(sum(1 for r in EVENTS if r[3] is not None and r[3] >= p),)]
        cutoff = datetime(2026, 6, 10, 9, 0, 0, tzinfo=PLUS2)  # 07:00 UTC
        got = select(f"SELECT id FROM {s} WHERE ts >= %s ORDER BY id", (cutoff,))
        assert got == [(r[0],) for r in sorted(EVENTS) if r[6] is not None and r[6] >= cutoff]
        got = select(f"SELECT id FROM {s} WHERE amount > %s ORDER BY id", (Decimal("0.5"),))
        assert got == [(r[0],) for r in sorted(EVENTS) if r[7] is not None and r[7] > Decimal("0.5")]
        got = select(f"SELECT id FROM {s} WHERE ok = %s ORDER BY id", (False,))
        assert got == [(r[0],) for r in sorted(EVENTS) if r[5] is False]
        # Several parameters of different types in one statement, and one used twice.
        got = select(
            f"SELECT id, qty + %s AS q FROM {s} WHERE user_id = %s AND (name = %s OR qty < %s) ORDER BY id",
            (100, 10, "pear", 1),
        )
        expected = [
            (r[0], None if r[2] is None else r[2] + 100)
            for r in sorted(EVENTS)
            if r[1] == 10 and (r[4] == "pear" or (r[2] is not None and r[2] < 1))
        ]
        assert got == expected
        got = select(f"SELECT %s::BIGINT * 2, %s::TEXT || 'x', %s::DOUBLE PRECISION / 2", (21, "ab", 5.0))
        assert got == [(42, "abx", 2.5)]
        # A NULL parameter: comparisons with NULL match nothing.
        assert select(f"SELECT id FROM {s} WHERE qty = %s", (None,)) == []


def test_executemany_into_table_with_updates_and_deletes(conn):
    items, s, v = unique("items"), unique("events"), unique("by_category")
    with conn.cursor() as cur:
        cur.execute(
            f"CREATE TABLE {items} (item_id BIGINT, category TEXT, price NUMERIC(10, 2), "
            "active BOOLEAN, PRIMARY KEY (item_id))"
        )
        create_events(cur, s)
        cur.execute(
            f"CREATE MATERIALIZED VIEW {v} AS SELECT i.category, count(*) AS n, "
            f"sum(e.qty) AS total_qty, sum(i.price) AS list_total "
            f"FROM {s} e JOIN {items} i ON e.user_id = i.item_id GROUP BY i.category"
        )
        table = {
            10: ["fruit", Decimal("1.10"), True],
            11: ["veg", Decimal("2.25"), False],
            12: ["fruit", None, None],
            13: ["veg", Decimal("0.05"), True],
        }
        cur.executemany(
            f"INSERT INTO {items} (item_id, category, price, active) VALUES (%s, %s, %s, %s)",
            [(k, *vals) for k, vals in table.items()],
        )
        cur.executemany(insert_sql(s), EVENTS)
        cur.execute(f"UPDATE {items} SET price = %s, category = %s WHERE item_id = %s",
                    (Decimal("3.50"), "veg", 12), prepare=True)
        assert cur.rowcount == 1
        table[12][0], table[12][1] = "veg", Decimal("3.50")
        cur.execute(f"UPDATE {items} SET active = %s WHERE category = %s", (False, "veg"), prepare=True)
        n_veg = sum(1 for vals in table.values() if vals[0] == "veg")
        assert cur.rowcount == n_veg
        for vals in table.values():
            if vals[0] == "veg":
                vals[2] = False
        cur.execute(f"DELETE FROM {items} WHERE item_id = %s", (11,), prepare=True)
        assert cur.rowcount == 1
        del table[11]
        cur.execute(f"DELETE FROM {items} WHERE item_id = %s", (99,), prepare=True)
        assert cur.rowcount == 0
        cur.execute("FLUSH")

        cur.execute(f"SELECT item_id, category, price, active FROM {items}")
        got = {r[0]: list(r[1:]) for r in cur.fetchall()}
        assert got == table
        for r in got.values():
            assert r[1] is None or type(r[1]) is Decimal

        expected = defaultdict(lambda: [0, None, None])
        for e in EVENTS:
            if e[1] in table:
                acc = expected[table[e[1]][0]]
                acc[0] += 1
                if e[2] is not None:
                    acc[1] = e[2] if acc[1] is None else acc[1] + e[2]
                price = table[e[1]][1]
                if price is not None:
                    acc[2] = price if acc[2] is None else acc[2] + price
        cur.execute(f"SELECT category, n, total_qty, list_total FROM {v}")
        got = {r[0]: list(r[1:]) for r in cur.fetchall()}
        assert got == dict(expected)
        for r in got.values():
            assert type(r[0]) is int
            assert r[2] is None or type(r[2]) is Decimal


def test_copy_rows_then_view(conn):
    """COPY FROM STDIN with psycopg's row writer (text format), without booleans."""
    s, v = unique("copied"), unique("copied_agg")
    rows = [
        (1, 10, 3, 2.5, "apple", datetime(2026, 6, 10, 12, 0, tzinfo=UTC), Decimal("1.25")),
        (2, 10, None, None, None, None, None),
        (3, 11, -4, 0.75, "pear", datetime(2026, 6, 10, 12, 0, 1, 500000, tzinfo=PLUS2), Decimal("-3.00")),
        (4, 11, 5, 1.5, "straße ✓", datetime(2025, 1, 2, 3, 4, 5, tzinfo=MINUS5), Decimal("7.77")),
    ] + [(100 + i, 12 + i % 3, i, i * 0.25, f"bulk{i % 5}", None, Decimal(i) / 4) for i in range(200)]
    with conn.cursor() as cur:
        cur.execute(
            f"CREATE STREAM {s} (id BIGINT, user_id BIGINT, qty INT, price DOUBLE PRECISION, "
            "name TEXT, ts TIMESTAMPTZ, amount NUMERIC(12, 2))"
        )
        cur.execute(
            f"CREATE MATERIALIZED VIEW {v} AS SELECT user_id, count(*) AS n, sum(qty) AS sq, "
            f"sum(price) AS sp, max(ts) AS mt, sum(amount) AS sa, count(DISTINCT name) AS dn "
            f"FROM {s} GROUP BY user_id"
        )
        with cur.copy(f"COPY {s} FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)
        assert cur.rowcount == len(rows)
        cur.execute("FLUSH")

        cur.execute(f"SELECT id, user_id, qty, price, name, ts, amount FROM {s}")
        assert sorted(cur.fetchall()) == sorted(rows)

        cur.execute(f"SELECT user_id, n, sq, sp, mt, sa, dn FROM {v}")
        got = {r[0]: r for r in cur.fetchall()}
        expected = {}
        for user in {r[1] for r in rows}:
            rs = [r for r in rows if r[1] == user]

            def agg(i, f):
                vals = [r[i] for r in rs if r[i] is not None]
                return f(vals) if vals else None

            expected[user] = (
                user,
                len(rs),
                agg(2, sum),
                agg(3, sum),
                agg(5, max),
                agg(6, sum),
                len({r[4] for r in rs if r[4] is not None}),
            )
        assert got == expected
        for r in got.values():
            assert type(r[1]) is int and type(r[6]) is int
            assert r[3] is None or type(r[3]) is float
            assert r[5] is None or type(r[5]) is Decimal


def test_copy_rows_with_booleans(conn):
    """psycopg writes booleans in COPY text format as t/f, as Postgres does."""
    s = unique("copied_bool")
    rows = [(1, True), (2, False), (3, None)]
    with conn.cursor() as cur:
        cur.execute(f"CREATE STREAM {s} (id BIGINT, ok BOOLEAN)")
        with cur.copy(f"COPY {s} FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)
        cur.execute(f"SELECT id, ok FROM {s} ORDER BY id")
        assert cur.fetchall() == rows


def test_copy_text_escapes(conn):
    """COPY text format escapes: backslash, tab, newline and carriage return inside values."""
    s = unique("copied_text")
    rows = [(1, "tab\there"), (2, "new\nline"), (3, "back\\slash"), (4, "cr\rhere"), (5, "\\N"), (6, "")]
    with conn.cursor() as cur:
        cur.execute(f"CREATE STREAM {s} (id BIGINT, t TEXT)")
        with cur.copy(f"COPY {s} FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)
        cur.execute(f"SELECT id, t FROM {s} ORDER BY id")
        assert cur.fetchall() == rows


def test_integers_out_of_range_are_22003_in_copy_and_parameters(conn):
    """Digits that do not fit the column's integer type are out of range (22003), as Postgres
    says, in COPY and in a bound parameter; text that is not a number is bad input (22P02)."""
    s = unique("copied_small")
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {s} (id INT PRIMARY KEY, v SMALLINT)")
        with pytest.raises(psycopg.errors.NumericValueOutOfRange) as err:
            with cur.copy(f"COPY {s} FROM STDIN") as copy:
                copy.write("1\t7\n2\t70000\n")
        assert 'value "70000" is out of range for type smallint' in str(err.value)
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            with cur.copy(f"COPY {s} FROM STDIN") as copy:
                copy.write("3\tseven\n")
        with pytest.raises(psycopg.errors.NumericValueOutOfRange):
            cur.execute(f"INSERT INTO {s} VALUES (4, %s::smallint)", ("99999",), prepare=True)
        cur.execute(f"SELECT count(*) FROM {s}")
        assert cur.fetchone() == (0,)


def test_copy_csv_distinguishes_empty_string_from_null(conn):
    """In CSV, an unquoted empty field is NULL and a quoted one ("") is the empty string."""
    s = unique("copied_csv")
    with conn.cursor() as cur:
        cur.execute(f"CREATE STREAM {s} (id BIGINT, t TEXT, x DOUBLE PRECISION)")
        with cur.copy(f"COPY {s} FROM STDIN (FORMAT csv)") as copy:
            copy.write('1,"",0.5\n2,,\n3,"a,b",1.25\n4,"say ""hi""",\n')
        cur.execute(f"SELECT id, t, x FROM {s} ORDER BY id")
        assert cur.fetchall() == [(1, "", 0.5), (2, None, None), (3, "a,b", 1.25), (4, 'say "hi"', None)]


def test_binary_results(conn):
    """Results in binary format when the client asks for it."""
    s = unique("events")
    with conn.cursor() as cur:
        create_events(cur, s)
        cur.executemany(insert_sql(s), EVENTS)
    with conn.cursor(binary=True) as cur:
        cur.execute(f"SELECT {EVENT_COLUMNS} FROM {s}")
        check_event_rows(cur.fetchall(), EVENTS)
        cur.execute(f"SELECT {EVENT_COLUMNS} FROM {s} WHERE id = %s", (3,), prepare=True)
        check_event_rows(cur.fetchall(), [r for r in EVENTS if r[0] == 3])


def test_errors_have_sqlstate_and_connection_survives(conn):
    s = unique("events")
    with conn.cursor() as cur:
        create_events(cur, s)
        cur.execute(insert_sql(s), EVENTS[0])

        with pytest.raises(psycopg.errors.UndefinedColumn) as err:
            cur.execute(f"SELECT nope FROM {s}")
        assert err.value.sqlstate == "42703"
        assert "nope" in str(err.value)

        # The same through a prepared statement with parameters.
        with pytest.raises(psycopg.errors.UndefinedColumn) as err:
            cur.execute(f"SELECT id FROM {s} WHERE nope = %s", (1,), prepare=True)
        assert err.value.sqlstate == "42703"

        with pytest.raises(psycopg.errors.UndefinedTable) as err:
            cur.execute("SELECT * FROM no_such_relation_anywhere")
        assert err.value.sqlstate == "42P01"

        with pytest.raises(psycopg.errors.UndefinedColumn) as err:
            cur.execute(f"CREATE MATERIALIZED VIEW {unique('bad')} AS SELECT nope FROM {s}")
        assert err.value.sqlstate == "42703"

        # A value that does not fit the column: some data or type error, never a dead connection.
        with pytest.raises(psycopg.Error) as err:
            cur.execute(f"INSERT INTO {s} (id) VALUES (%s)", ("not a number",))
        assert err.value.sqlstate is not None and err.value.sqlstate[:2] in ("22", "42")

        with pytest.raises(psycopg.errors.SyntaxError) as err:
            cur.execute("SELEC 1")
        assert err.value.sqlstate == "42601"

        # The connection keeps working, prepared statements included.
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        cur.execute(insert_sql(s), EVENTS[1], prepare=True)
        cur.execute("FLUSH")
        cur.execute(f"SELECT count(*) FROM {s} WHERE id >= %s", (0,), prepare=True)
        assert cur.fetchone() == (2,)


def test_prepare_threshold_zero_reuses_statements(server):
    """With prepare_threshold=0 every statement is prepared; many executions reuse them."""
    host, port = server
    s, v = unique("events"), unique("per_user")
    with psycopg.connect(host=host, port=port, user="runnel", dbname="runnel", autocommit=True) as c:
        c.prepare_threshold = 0
        with c.cursor() as cur:
            create_events(cur, s)
            cur.execute(f"CREATE MATERIALIZED VIEW {v} AS " + PER_USER_VIEW.format(src=s))
            rows = []
            for i in range(60):
                base = EVENTS[i % len(EVENTS)]
                row = (1000 + i, base[1] + i % 4, *base[2:])
                cur.execute(insert_sql(s), row)
                rows.append(row)
                if i % 20 == 19:
                    cur.execute("FLUSH")
                    check_per_user(cur, v, rows)


def test_result_column_names_follow_postgres(conn):
    """Unaliased result columns are named as Postgres names them: the column, the function,
    the cast's type name, or ?column?; aliases win."""
    s = unique("named")
    with conn.cursor() as cur:
        cur.execute(f"CREATE STREAM {s} (k INT, name TEXT)")
        cur.execute(f"INSERT INTO {s} VALUES (1, 'a'), (2, 'b')")
        cur.execute(
            f"SELECT k, count(*), CAST(k * 2 AS BIGINT), k + 1, upper(name), max(k) AS top "
            f"FROM {s} GROUP BY k, name ORDER BY k LIMIT 5"
        )
        assert [d.name for d in cur.description] == ["k", "count", "int8", "?column?", "upper", "top"]
        assert cur.fetchall() == [(1, 1, 2, 2, "A", 1), (2, 1, 4, 3, "B", 2)]
        cur.execute("SELECT 1.5 * 2, CAST(1.005 AS NUMERIC(10,2))")
        assert [d.name for d in cur.description] == ["?column?", "numeric"]
        assert cur.fetchall() == [(Decimal("3.0"), Decimal("1.01"))]
        # A cast of a column or a function call keeps its name; of anything else, the type's.
        cur.execute(f"SELECT k::text, upper(name)::varchar, (k + 1)::bigint, '1 day'::interval FROM {s} LIMIT 1")
        assert [d.name for d in cur.description] == ["k", "upper", "int8", "interval"]
        assert len(cur.fetchall()) == 1


# --------------------------------------------------------------------------------------------
# Transactions, as psycopg's default (non-autocommit) mode and its transaction blocks use them.


def test_transactions_commit_rollback_and_savepoints(server, conn):
    host, port = server
    items, events, counts = unique("tx_items"), unique("tx_events"), unique("tx_counts")
    conn.execute(f"CREATE TABLE {items} (k INT PRIMARY KEY, v TEXT)")
    conn.execute(f"CREATE STREAM {events} (k INT)")
    conn.execute(f"CREATE MATERIALIZED VIEW {counts} AS SELECT count(*) AS n FROM {events}")
    with psycopg.connect(host=host, port=port, user="runnel", dbname="runnel") as c:
        # psycopg opens a transaction before the first statement; rollback() drops its writes.
        c.execute(f"INSERT INTO {items} VALUES (1, 'a')")
        c.execute(f"INSERT INTO {events} VALUES (1), (2)")
        c.rollback()
        assert c.execute(f"SELECT count(*) FROM {items}").fetchone() == (0,)
        assert c.execute(f"SELECT count(*) FROM {events}").fetchone() == (0,)
        c.rollback()

        # An error aborts the transaction until rollback.
        c.execute(f"INSERT INTO {items} VALUES (1, 'a')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute(f"INSERT INTO {items} VALUES (1, 'b')")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            c.execute("SELECT 1")
        c.rollback()

        # Nested transaction blocks are savepoints: the inner one's failure undoes only it.
        with c.transaction():
            c.execute(f"INSERT INTO {events} VALUES (10)")
            with pytest.raises(psycopg.errors.UndefinedTable):
                with c.transaction():
                    c.execute(f"INSERT INTO {events} VALUES (20)")
                    c.execute("SELECT * FROM no_such_relation")
        assert c.execute(f"SELECT n FROM {counts}").fetchone() == (1,)
        c.commit()

        # A transaction cannot read what it wrote (its writes become visible at COMMIT).
        c.execute(f"INSERT INTO {events} VALUES (30)")
        with pytest.raises(psycopg.errors.InvalidTransactionState, match="visible at COMMIT"):
            c.execute(f"SELECT n FROM {counts}")
        c.rollback()
        c.execute(f"INSERT INTO {events} VALUES (30)")
        c.commit()
        assert c.execute(f"SELECT n FROM {counts}").fetchone() == (2,)
        c.commit()


def test_named_cursor_pages_through_a_large_result(server):
    """A server-side cursor hands out a result a FETCH at a time, pulled from the query as it
    runs (the result is never collected whole)."""
    host, port = server
    with psycopg.connect(host=host, port=port, user="runnel", dbname="runnel") as c:
        with c.cursor(name="big") as cur:
            cur.itersize = 5000
            cur.execute("SELECT value FROM generate_series(1, 300000)")
            total, rows = 0, 0
            for (value,) in cur:
                total += value
                rows += 1
        assert (rows, total) == (300000, 300000 * 300001 // 2)
        c.commit()


# --------------------------------------------------------------------------------------------
# json, jsonb and uuid are their Postgres types: described with their OIDs, so psycopg loads
# dicts and UUIDs, in text and in binary results; input is checked and normalised as Postgres
# does (jsonb key order and spacing, uuid case and hyphens).


def test_json_jsonb_uuid_are_their_postgres_types(conn):
    import uuid

    table = unique("typed_docs")
    view = unique("typed_docs_v")
    u = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, doc JSONB, raw JSON, u UUID)")
    cur.execute(
        f"INSERT INTO {table} VALUES (1, %s, %s, %s)",
        ('{"b": 1, "a": [1, 2]}', '{"b":1,  "a":2}', "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"),
    )
    cur.execute(f"CREATE MATERIALIZED VIEW {view} AS SELECT id, doc -> 'a' AS a, u FROM {table}")
    for binary in (False, True):
        c = conn.cursor(binary=binary)
        c.execute(f"SELECT doc, raw, u, doc::text AS doc_text, doc -> 'a' AS a FROM {table}")
        assert [d.type_code for d in c.description] == [
            oid("jsonb"), oid("json"), oid("uuid"), oid("text"), oid("jsonb")
        ]
        assert c.fetchall() == [
            ({"a": [1, 2], "b": 1}, {"b": 1, "a": 2}, u, '{"a": [1, 2], "b": 1}', [1, 2])
        ], f"binary={binary}"
        c.execute(f"SELECT a, u FROM {view}")
        assert [d.type_code for d in c.description] == [oid("jsonb"), oid("uuid")]
        assert c.fetchall() == [([1, 2], u)]
    # The text forms, as Postgres prints them.
    cur.execute(f"SELECT doc::text, raw::text, u::text FROM {table}")
    assert cur.fetchone() == ('{"a": [1, 2], "b": 1}', '{"b":1,  "a":2}', str(u))
    cur.execute("""SELECT '{"b":2,"a":1,"a":3}'::jsonb::text, '{X}'::text""")
    assert cur.fetchone() == ('{"a": 3, "b": 2}', "{X}")
    # Equal jsonb values compare equal whatever their spelling.
    cur.execute("""SELECT '{"a":1, "b":[1,2]}'::jsonb = '{ "b" : [1, 2], "a" : 1 }'::jsonb""")
    assert cur.fetchone() == (True,)
    # Catalog and information_schema name the types.
    cur.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        f"WHERE table_name = '{table}' ORDER BY ordinal_position"
    )
    assert cur.fetchall() == [("id", "integer"), ("doc", "jsonb"), ("raw", "json"), ("u", "uuid")]
    for bad_sql, params in (
        (f"INSERT INTO {table} VALUES (2, %s, NULL, NULL)", ("{bad",)),
        (f"INSERT INTO {table} VALUES (2, NULL, %s, NULL)", ("[1,",)),
        (f"INSERT INTO {table} VALUES (2, NULL, NULL, %s)", ("a0eebc99",)),
        ("SELECT %s::uuid", ("xyz",)),
    ):
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            cur.execute(bad_sql, params)
    with cur.copy(f"COPY {table} (id, doc, u) FROM STDIN") as copy:
        copy.write_row((3, '{"z": {"y": 1}}', "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12}"))
    cur.execute(f"SELECT doc, u FROM {table} WHERE id = 3")
    assert cur.fetchone() == ({"z": {"y": 1}}, uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12"))


def test_list_parameters_are_arrays(conn):
    """psycopg passes a Python list as a Postgres array (its text form with the array's OID):
    `= ANY(%s)` filters by it, as with Postgres."""
    table = unique("any_param")
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, name TEXT)")
    cur.executemany(f"INSERT INTO {table} VALUES (%s, %s)", [(1, "a"), (2, "b,c"), (3, 'd"e')])
    cur.execute(f"SELECT id FROM {table} WHERE id = ANY(%s) ORDER BY id", ([1, 3],))
    assert cur.fetchall() == [(1,), (3,)]
    cur.execute(f"SELECT id FROM {table} WHERE name = ANY(%s) ORDER BY id", (["b,c", 'd"e', None],))
    assert cur.fetchall() == [(2,), (3,)]
    cur.execute("SELECT %s::text[]", (["x", "y,z", None],))
    assert cur.fetchone() == (["x", "y,z", None],)
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        cur.execute(f"SELECT id FROM {table} WHERE id = ANY(%s::int[])", ("{1,x}",))


def test_copy_from_reads_timestamptz_in_the_session_time_zone(conn):
    """As in Postgres, COPY FROM reads a timestamptz without an offset in the session's
    TimeZone, and one with an offset as that instant."""
    table = unique("copy_tz")
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, at TIMESTAMPTZ)")
    cur.execute("SET TIME ZONE 'Europe/Berlin'")
    try:
        with cur.copy(f"COPY {table} FROM STDIN") as copy:
            copy.write("1\t2026-06-10 12:00:00\n2\t2026-01-10 12:00\n3\t2026-06-10 12:00:00+00\n")
        with cur.copy(f"COPY {table} FROM STDIN (FORMAT csv)") as copy:
            copy.write("4,2026-06-10 08:30:00\n")
    finally:
        cur.execute("SET TIME ZONE 'UTC'")
    cur.execute(f"SELECT id, at FROM {table} ORDER BY id")
    assert cur.fetchall() == [
        (1, datetime(2026, 6, 10, 10, 0, tzinfo=UTC)),  # CEST is UTC+2
        (2, datetime(2026, 1, 10, 11, 0, tzinfo=UTC)),  # CET is UTC+1
        (3, datetime(2026, 6, 10, 12, 0, tzinfo=UTC)),
        (4, datetime(2026, 6, 10, 6, 30, tzinfo=UTC)),
    ]


def test_intervals_and_date_style_from_the_startup_options(server):
    """psycopg sends timedelta parameters as interval text and reads interval text back; a
    DateStyle given in the connection's options applies to the session's text output."""
    import datetime

    host, port = server
    with psycopg.connect(host=host, port=port, user="runnel", dbname="runnel", autocommit=True) as c:
        c.execute("CREATE TABLE py_intervals (k INT PRIMARY KEY, d INTERVAL, day DATE)")
        span = datetime.timedelta(days=-1, seconds=3600, microseconds=250)
        c.execute("INSERT INTO py_intervals VALUES (1, %s, %s)", (span, datetime.date(2024, 7, 1)))
        assert c.execute("SELECT d FROM py_intervals").fetchone()[0] == span
        assert c.execute("SELECT d::text FROM py_intervals").fetchone()[0] == "-1 days +01:00:00.00025"
    with psycopg.connect(
        host=host, port=port, user="runnel", dbname="runnel", autocommit=True,
        options="-c DateStyle=SQL,DMY -c IntervalStyle=iso_8601",
    ) as c:
        row = c.execute("SELECT current_setting('DateStyle'), day::text, d::text FROM py_intervals").fetchone()
        assert row == ("SQL, DMY", "01/07/2024", "P-1DT1H0.00025S")


def test_copy_reads_dates_in_the_date_style_order(server):
    """COPY FROM reads a spreadsheet's dates as Postgres does: numeric dates in the session's
    DateStyle order (MDY by default), month names, AM/PM, times without seconds."""
    import datetime

    host, port = server
    rows = "1,12/25/2025,12/25/2025 08:30 PM\n2,\"Dec 26, 2025\",2025-12-26 10:00\n"
    with psycopg.connect(host=host, port=port, user="runnel", dbname="runnel", autocommit=True) as c:
        c.execute("CREATE TABLE py_dates (k INT PRIMARY KEY, day DATE, ts TIMESTAMP)")
        with c.cursor().copy("COPY py_dates FROM STDIN (FORMAT csv)") as copy:
            copy.write(rows)
        assert c.execute("SELECT day, ts FROM py_dates ORDER BY k").fetchall() == [
            (datetime.date(2025, 12, 25), datetime.datetime(2025, 12, 25, 20, 30)),
            (datetime.date(2025, 12, 26), datetime.datetime(2025, 12, 26, 10, 0)),
        ]
    with psycopg.connect(
        host=host, port=port, user="runnel", dbname="runnel", autocommit=True, options="-c DateStyle=ISO,DMY"
    ) as c:
        with c.cursor().copy("COPY py_dates (k, day) FROM STDIN (FORMAT csv)") as copy:
            copy.write("3,01/02/2026\n")
        assert c.execute("SELECT day FROM py_dates WHERE k = 3").fetchone() == (datetime.date(2026, 2, 1),)
