"""Client tools against a real `runnel serve`: psql's meta-commands, SQLAlchemy 2 reflection
with the psycopg and psycopg2 drivers, pandas, and session settings.

Every expected psql output below is what PostgreSQL 15 printed for the same objects
(a table `items` with a primary key, a table `views`, a materialized view `avg_price`),
except that Runnel's streams are tables to psql and Runnel has one database and one role.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
import subprocess

import psycopg
import psycopg.errors
import pytest

ITEMS = "CREATE TABLE items (item_id BIGINT PRIMARY KEY, name TEXT, category TEXT)"
VIEWS = (
    "CREATE STREAM views (user_id BIGINT, item_id BIGINT, price DOUBLE PRECISION, "
    "ts TIMESTAMPTZ)"
)
AVG_PRICE = (
    "CREATE MATERIALIZED VIEW avg_price AS SELECT user_id, avg(price) AS avg_price, "
    "count(*) AS n FROM views GROUP BY user_id"
)


@pytest.fixture(scope="module")
def catalog_server(server):
    host, port = server
    with psycopg.connect(host=host, port=port, user="runnel", dbname="runnel", autocommit=True) as c:
        for sql in (ITEMS, VIEWS, AVG_PRICE):
            c.execute(sql)
        c.execute("INSERT INTO items VALUES (1, 'lamp', 'home'), (2, 'book', 'media')")
        c.execute("INSERT INTO views VALUES (42, 1, 30.0, '2026-06-10 10:00:00+00')")
        c.execute("FLUSH")
    return host, port


def psql(server, command: str) -> str:
    host, port = server
    env = dict(os.environ, PGPASSWORD="x", PGCONNECT_TIMEOUT="10")
    result = subprocess.run(
        ["psql", "-X", "-h", host, "-p", str(port), "-U", "runnel", "-d", "runnel", "-c", command],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, f"psql {command!r} failed: {result.stderr}"
    # psql prints "Did not find any relations." to stderr; an error would show up here too.
    return result.stdout + result.stderr


def test_psql_dt_lists_tables_and_streams(catalog_server):
    assert psql(catalog_server, r"\dt") == (
        "        List of relations\n"
        " Schema | Name  | Type  | Owner  \n"
        "--------+-------+-------+--------\n"
        " public | items | table | runnel\n"
        " public | views | table | runnel\n"
        "(2 rows)\n\n"
    )


def test_psql_dm_and_d_list_materialized_views(catalog_server):
    assert psql(catalog_server, r"\dm") == (
        "                List of relations\n"
        " Schema |   Name    |       Type        | Owner  \n"
        "--------+-----------+-------------------+--------\n"
        " public | avg_price | materialized view | runnel\n"
        "(1 row)\n\n"
    )
    assert psql(catalog_server, r"\d") == (
        "                List of relations\n"
        " Schema |   Name    |       Type        | Owner  \n"
        "--------+-----------+-------------------+--------\n"
        " public | avg_price | materialized view | runnel\n"
        " public | items     | table             | runnel\n"
        " public | views     | table             | runnel\n"
        "(3 rows)\n\n"
    )


def test_psql_d_table_shows_columns_and_primary_key(catalog_server):
    assert psql(catalog_server, r"\d items") == (
        '                Table "public.items"\n'
        "  Column  |  Type  | Collation | Nullable | Default \n"
        "----------+--------+-----------+----------+---------\n"
        " item_id  | bigint |           | not null | \n"
        " name     | text   |           |          | \n"
        " category | text   |           |          | \n"
        "Indexes:\n"
        '    "items_pkey" PRIMARY KEY, btree (item_id)\n\n'
    )


def test_psql_d_stream_and_view(catalog_server):
    assert psql(catalog_server, r"\d views") == (
        '                        Table "public.views"\n'
        " Column  |           Type           | Collation | Nullable | Default \n"
        "---------+--------------------------+-----------+----------+---------\n"
        " user_id | bigint                   |           |          | \n"
        " item_id | bigint                   |           |          | \n"
        " price   | double precision         |           |          | \n"
        " ts      | timestamp with time zone |           |          | \n\n"
    )
    assert psql(catalog_server, r"\d avg_price") == (
        '             Materialized view "public.avg_price"\n'
        "  Column   |       Type       | Collation | Nullable | Default \n"
        "-----------+------------------+-----------+----------+---------\n"
        " user_id   | bigint           |           |          | \n"
        " avg_price | double precision |           |          | \n"
        " n         | bigint           |           |          | \n\n"
    )


def test_psql_l_dn_du_df_dv(catalog_server):
    databases = psql(catalog_server, r"\l")
    assert " runnel | runnel | UTF8     | C       | C     |" in databases, databases
    assert "(1 row)" in databases
    assert psql(catalog_server, r"\dn") == (
        " List of schemas\n"
        "  Name  | Owner  \n"
        "--------+--------\n"
        " public | runnel\n"
        "(1 row)\n\n"
    )
    roles = [
        [cell.strip() for cell in line.split("|")]
        for line in psql(catalog_server, r"\du").splitlines()
        if line.count("|") == 2
    ]
    # The bootstrap superuser, and the predefined role that may use Kafka.
    assert ["runnel", "Superuser", "{}"] in roles, roles
    assert ["runnel_kafka", "Cannot login", "{}"] in roles, roles
    assert psql(catalog_server, r"\df") == (
        "                       List of functions\n"
        " Schema | Name | Result data type | Argument data types | Type \n"
        "--------+------+------------------+---------------------+------\n"
        "(0 rows)\n\n"
    )
    assert psql(catalog_server, r"\dv") == "Did not find any relations.\n"


def test_catalog_functions(catalog_server):
    host, port = catalog_server
    with psycopg.connect(host=host, port=port, user="runnel", dbname="runnel", autocommit=True) as c:
        version = c.execute("SELECT pg_catalog.version()").fetchone()[0]
        assert version.startswith("PostgreSQL 15.0 (Runnel "), version
        row = c.execute(
            "SELECT current_database(), current_user, session_user, current_schema(), "
            "current_setting('server_version'), quote_ident('Items'), "
            "format_type(1700, ((10 << 16) | 2) + 4), pg_get_userbyid(10)"
        ).fetchone()
        assert row == ("runnel", "runnel", "runnel", "public", "15.0", '"Items"', "numeric(10,2)", "runnel")
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == c.info.backend_pid
        assert c.execute("SELECT 'items'::regclass = to_regclass('public.items')").fetchone()[0] is True
        assert c.execute("SELECT to_regclass('nothing')").fetchone()[0] is None
        # A reg-type result prints the object's name, as in Postgres; compared, it is an OID.
        cur = c.execute("SELECT 'items'::regclass, 'int4'::regtype, 23::regtype AS t, 'public'::regnamespace")
        assert [d.name for d in cur.description] == ["regclass", "regtype", "t", "regnamespace"]
        assert cur.fetchone() == ("items", "integer", "integer", "public")
        assert c.execute(
            "SELECT c.oid::regclass FROM pg_class c WHERE c.oid = 'items'::regclass"
        ).fetchone() == ("items",)
        with pytest.raises(psycopg.errors.UndefinedTable):
            c.execute("SELECT 'nothing'::regclass")
        definition = c.execute("SELECT pg_get_viewdef('avg_price'::regclass)").fetchone()[0]
        assert "avg(price)" in definition and "GROUP BY user_id" in definition, definition
        assert c.execute(
            "SELECT relkind FROM pg_catalog.pg_class WHERE relname = 'avg_price'"
        ).fetchone() == ("m",)
        assert c.execute(
            "SELECT column_name, ordinal_position, data_type, is_nullable "
            "FROM information_schema.columns WHERE table_name = 'views' ORDER BY ordinal_position"
        ).fetchall() == [
            ("user_id", 1, "bigint", "YES"),
            ("item_id", 2, "bigint", "YES"),
            ("price", 3, "double precision", "YES"),
            ("ts", 4, "timestamp with time zone", "YES"),
        ]
        # Catalog arrays arrive as arrays.
        assert c.execute(
            "SELECT conkey FROM pg_catalog.pg_constraint WHERE conname = 'items_pkey'"
        ).fetchone() == ([1],)


def test_relation_sizes_count_logs_in_blob_files(server):
    """A COPY's log entry is large enough to live in RocksDB's blob files, where the sorted
    files' size estimates see only a reference to it: the size functions count it from the
    log's index, for a stream and for a table."""
    host, port = server
    rows = 40_000
    payload = "x" * 60
    data = "".join(f"{i}\t{payload}{i}\n" for i in range(rows)).encode()
    with psycopg.connect(host=host, port=port, user="runnel", dbname="runnel", autocommit=True) as c:
        c.execute("CREATE STREAM sized_s (id BIGINT, note TEXT)")
        c.execute("CREATE TABLE sized_t (id BIGINT PRIMARY KEY, note TEXT)")
        sizes = {}
        for name in ("sized_s", "sized_t"):
            before = c.execute(f"SELECT pg_relation_size('{name}')").fetchone()[0]
            with c.cursor().copy(f"COPY {name} FROM STDIN") as copy:
                copy.write(data)
            sizes[name] = (before, *c.execute(
                f"SELECT pg_relation_size('{name}'), pg_total_relation_size('{name}'), "
                f"pg_table_size('{name}')"
            ).fetchone())
        for name, (before, relation, total, table) in sizes.items():
            # The rows' text is 2.9 MB; Arrow keeps the ids and offsets besides.
            assert before < 4096, (name, before)
            assert relation >= len(data), (name, relation, len(data))
            assert total >= relation and table >= relation, (name, relation, total, table)


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_sqlalchemy_reflection_and_pandas(catalog_server, driver):
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pandas = pytest.importorskip("pandas")
    host, port = catalog_server
    engine = sqlalchemy.create_engine(f"postgresql+{driver}://runnel:x@{host}:{port}/runnel")
    try:
        inspector = sqlalchemy.inspect(engine)
        assert "public" in inspector.get_schema_names()
        assert {"items", "views"} <= set(inspector.get_table_names())
        assert "avg_price" in inspector.get_materialized_view_names()
        assert inspector.get_view_names() == []
        columns = {c["name"]: c for c in inspector.get_columns("items")}
        assert list(columns) == ["item_id", "name", "category"]
        assert isinstance(columns["item_id"]["type"], sqlalchemy.BigInteger)
        assert columns["item_id"]["nullable"] is False
        assert isinstance(columns["name"]["type"], sqlalchemy.Text)
        view_columns = [c["name"] for c in inspector.get_columns("avg_price")]
        assert view_columns == ["user_id", "avg_price", "n"]
        assert inspector.get_pk_constraint("items") == {
            "constrained_columns": ["item_id"],
            "name": "items_pkey",
            "comment": None,
            "dialect_options": {"postgresql_include": []},
        }
        assert inspector.has_table("items")
        table = sqlalchemy.Table("items", sqlalchemy.MetaData(), autoload_with=engine)
        assert [c.name for c in table.primary_key.columns] == ["item_id"]

        frame = pandas.read_sql_table("items", engine).sort_values("item_id")
        assert frame.to_dict("records") == [
            {"item_id": 1, "name": "lamp", "category": "home"},
            {"item_id": 2, "name": "book", "category": "media"},
        ]
        frame = pandas.read_sql_query("SELECT user_id, n FROM avg_price WHERE user_id = 42", engine)
        assert frame.to_dict("records") == [{"user_id": 42, "n": 1}]

        # to_sql appends to a stream in a transaction; after COMMIT the view it feeds has the
        # rows without a FLUSH (implicit flush). Inside the transaction that wrote the stream
        # the view cannot be read: the writes become visible at COMMIT.
        user = 100 if driver == "psycopg" else 200
        # What to_sql returns against Postgres: psycopg 3's pipelined executemany reports no
        # row count (-1), psycopg2 reports the rows.
        reported = (lambda n: -1) if driver == "psycopg" else (lambda n: n)
        rows = pandas.DataFrame(
            {
                "user_id": [user, user],
                "item_id": [1, 2],
                "price": [2.5, 3.5],
                "ts": pandas.to_datetime(["2026-06-10 10:00:00+00:00", "2026-06-10 10:01:00+00:00"]),
            }
        )
        with engine.connect() as connection:
            with connection.begin():
                assert rows.to_sql("views", connection, if_exists="append", index=False) == reported(2)
                with pytest.raises(pandas.errors.DatabaseError, match="visible at COMMIT"):
                    with connection.begin_nested():
                        pandas.read_sql_query("SELECT n FROM avg_price", connection)
            frame = pandas.read_sql_query(
                f"SELECT avg_price, n FROM avg_price WHERE user_id = {user}", connection
            )
        assert frame.to_dict("records") == [{"avg_price": 3.0, "n": 2}]

        # to_sql creates a table (without a primary key, as pandas does) and appends to it.
        name = f"frame_{driver}"
        frame = pandas.DataFrame({"k": [1, 1, 2], "label": ["a", "a", "b"], "x": [0.5, 0.5, 2.0]})
        assert frame.to_sql(name, engine, if_exists="fail", index=False) == reported(3)
        assert frame.to_sql(name, engine, if_exists="append", index=False) == reported(3)
        back = pandas.read_sql_query(f"SELECT k, label, x FROM {name} ORDER BY k, label", engine)
        assert back.to_dict("records") == [{"k": 1, "label": "a", "x": 0.5}] * 4 + [
            {"k": 2, "label": "b", "x": 2.0}
        ] * 2
        assert sqlalchemy.inspect(engine).has_table(name)
    finally:
        engine.dispose()


def test_set_show_reset(catalog_server):
    host, port = catalog_server
    with psycopg.connect(host=host, port=port, user="runnel", dbname="runnel", autocommit=True,
                         options="-c statement_timeout=5s") as c:
        assert c.execute("SHOW statement_timeout").fetchone() == ("5000",)
        assert c.execute("SHOW server_version").fetchone() == ("15.0",)
        assert c.execute("SHOW search_path").fetchone() == ('"$user", public',)
        assert c.info.parameter_status("TimeZone") == "UTC"
        c.execute("SET TIME ZONE 'Europe/Berlin'")
        assert c.info.parameter_status("TimeZone") == "Europe/Berlin"
        assert c.execute("SHOW timezone").fetchone() == ("Europe/Berlin",)
        assert c.execute("SELECT current_setting('TimeZone')").fetchone() == ("Europe/Berlin",)
        c.execute("SET application_name = 'catalog-test'")
        assert c.info.parameter_status("application_name") == "catalog-test"
        c.execute("RESET TimeZone")
        assert c.info.parameter_status("TimeZone") == "UTC"
        with pytest.raises(psycopg.errors.UndefinedObject):
            c.execute("SET no_such_setting = 1")
        with pytest.raises(psycopg.errors.UndefinedObject):
            c.execute("SHOW no_such_setting")
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            c.execute("SET TimeZone = 'Mars/Olympus'")
        names = [row[0] for row in c.execute("SHOW ALL").fetchall()]
        assert "TimeZone" in names and "search_path" in names
        c.execute("SELECT set_config('extra_float_digits', '2', false)")
        assert c.execute("SHOW extra_float_digits").fetchone() == ("2",)
        assert c.execute(
            "SELECT setting FROM pg_settings WHERE name = 'extra_float_digits'"
        ).fetchone() == ("2",)
    with psycopg.connect(host=host, port=port, user="runnel", dbname="runnel") as c:
        c.execute("SET LOCAL extra_float_digits = 3")
        assert c.execute("SHOW extra_float_digits").fetchone() == ("3",)
        c.rollback()
        assert c.execute("SHOW extra_float_digits").fetchone() == ("1",)


def test_timestamptz_printed_in_session_time_zone(catalog_server):
    out = psql(
        catalog_server,
        "SET TIME ZONE 'Europe/Berlin'; SELECT TIMESTAMPTZ '2026-06-10 10:00:00+00' AS summer, "
        "TIMESTAMPTZ '2026-01-10 10:00:00.5+00' AS winter",
    )
    assert "2026-06-10 12:00:00+02 | 2026-01-10 11:00:00.5+01" in out, out


def test_timestamptz_literals_read_in_session_time_zone(catalog_server):
    host, port = catalog_server
    with psycopg.connect(host=host, port=port, user="runnel", dbname="runnel", autocommit=True) as c:
        c.execute("SET TIME ZONE 'America/New_York'")
        # As in Postgres: a literal without an offset is a time in the session's zone (EDT in
        # June, EST in January); one with an offset keeps it.
        row = c.execute(
            "SELECT '2026-06-10 10:00'::timestamptz, TIMESTAMPTZ '2026-01-10 10:00', "
            "CAST('2026-06-10 10:00+00' AS timestamp with time zone)"
        ).fetchone()
        utc = [value.astimezone(timezone.utc).replace(tzinfo=None) for value in row]
        assert utc == [
            datetime(2026, 6, 10, 14, 0),
            datetime(2026, 1, 10, 15, 0),
            datetime(2026, 6, 10, 10, 0),
        ]
        # A string compared with a timestamptz column is read in the session's zone too.
        c.execute("CREATE TABLE zoned_events (id BIGINT PRIMARY KEY, at TIMESTAMPTZ)")
        c.execute(
            "INSERT INTO zoned_events VALUES (1, TIMESTAMPTZ '2026-06-10 13:30:00+00'), "
            "(2, TIMESTAMPTZ '2026-06-10 14:30:00+00')"
        )
        after = c.execute(
            "SELECT id FROM zoned_events WHERE at > '2026-06-10 10:00' ORDER BY id"
        ).fetchall()
        assert after == [(2,)]
        between = c.execute(
            "SELECT id FROM zoned_events WHERE at BETWEEN '2026-06-10 09:00' AND "
            "'2026-06-10 10:00' ORDER BY id"
        ).fetchall()
        assert between == [(1,)]
        # And so is a string inserted into a timestamptz column.
        c.execute("INSERT INTO zoned_events VALUES (3, '2026-06-10 10:00')")
        at = c.execute("SELECT at FROM zoned_events WHERE id = 3").fetchone()[0]
        assert at.astimezone(timezone.utc).replace(tzinfo=None) == datetime(2026, 6, 10, 14, 0)


def test_copy_to_stdout_text_csv_binary_and_psql(catalog_server, tmp_path):
    host, port = catalog_server
    with psycopg.connect(host=host, port=port, user="runnel", dbname="runnel", autocommit=True) as c:
        c.execute("CREATE TABLE copy_src (k BIGINT PRIMARY KEY, label TEXT, x DOUBLE PRECISION)")
        c.execute(
            "INSERT INTO copy_src VALUES (1, 'plain', 0.5), (2, 'tab\there, comma', NULL), "
            "(3, 'quote \"q\" and back\\slash', -2.25), (4, '', 1e20)"
        )
        text = b""
        with c.cursor().copy("COPY copy_src TO STDOUT") as copy:
            for chunk in copy:
                text += bytes(chunk)
        # Postgres's text format: tab-separated, \N for NULL, backslash escapes.
        assert sorted(text.decode().splitlines()) == [
            "1\tplain\t0.5",
            "2\ttab\\there, comma\t\\N",
            '3\tquote "q" and back\\\\slash\t-2.25',
            "4\t\t1e+20",
        ]
        csv = b""
        with c.cursor().copy(
            "COPY (SELECT k, label, x FROM copy_src ORDER BY k) TO STDOUT WITH (FORMAT csv, HEADER)"
        ) as copy:
            for chunk in copy:
                csv += bytes(chunk)
        assert csv.decode().splitlines() == [
            "k,label,x",
            "1,plain,0.5",
            '2,"tab\there, comma",',
            '3,"quote ""q"" and back\\slash",-2.25',
            '4,"",1e+20',
        ]
        # Binary: psycopg decodes the values with the types it is told.
        with c.cursor().copy("COPY (SELECT k, label FROM copy_src ORDER BY k) TO STDOUT (FORMAT binary)") as copy:
            copy.set_types(["int8", "text"])
            rows = list(copy.rows())
        assert rows == [(1, "plain"), (2, "tab\there, comma"), (3, 'quote "q" and back\\slash'), (4, "")]
        # What COPY TO wrote, COPY FROM reads back as the same rows.
        c.execute("CREATE TABLE copy_dst (k BIGINT PRIMARY KEY, label TEXT, x DOUBLE PRECISION)")
        with c.cursor().copy("COPY copy_dst FROM STDIN") as copy:
            copy.write(text)
        assert c.execute("SELECT k, label, x FROM copy_dst ORDER BY k").fetchall() == c.execute(
            "SELECT k, label, x FROM copy_src ORDER BY k"
        ).fetchall()
    # psql's \copy writes the file on the client.
    target = tmp_path / "features.csv"
    psql(catalog_server, f"\\copy (SELECT k, x FROM copy_src WHERE x IS NOT NULL ORDER BY k) to '{target}' csv header")
    assert target.read_text().splitlines() == ["k,x", "1,0.5", "3,-2.25", "4,1e+20"]


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_named_cursors_page_through_a_result(catalog_server, driver):
    host, port = catalog_server
    query = "SELECT v FROM generate_series(1, 2500) AS t(v) ORDER BY v"
    if driver == "psycopg":
        with psycopg.connect(host=host, port=port, user="runnel", dbname="runnel") as c:
            with c.cursor(name="pages") as cur:
                cur.execute(query)
                first = cur.fetchmany(1000)
                second = cur.fetchmany(1000)
                rest = cur.fetchall()
            c.commit()
    else:
        psycopg2 = pytest.importorskip("psycopg2")
        c = psycopg2.connect(host=host, port=port, user="runnel", dbname="runnel")
        try:
            with c.cursor(name="pages") as cur:
                cur.itersize = 700
                cur.execute(query)
                first = cur.fetchmany(1000)
                second = cur.fetchmany(1000)
                rest = list(cur)
            c.commit()
        finally:
            c.close()
    assert [r[0] for r in first] == list(range(1, 1001))
    assert [r[0] for r in second] == list(range(1001, 2001))
    assert [r[0] for r in rest] == list(range(2001, 2501))


def test_sql_cursors_in_psql(catalog_server):
    out = psql(
        catalog_server,
        "BEGIN; DECLARE c CURSOR FOR SELECT item_id, name FROM items ORDER BY item_id; "
        "FETCH 1 FROM c; FETCH ALL FROM c; FETCH 1 FROM c; CLOSE c; COMMIT",
    )
    assert out == (
        "BEGIN\nDECLARE CURSOR\n"
        " item_id | name \n---------+------\n       1 | lamp\n(1 row)\n\n"
        " item_id | name \n---------+------\n       2 | book\n(1 row)\n\n"
        " item_id | name \n---------+------\n(0 rows)\n\n"
        "CLOSE CURSOR\nCOMMIT\n"
    ), out
    with psycopg.connect(host=catalog_server[0], port=catalog_server[1], user="runnel", dbname="runnel",
                         autocommit=True) as c:
        with pytest.raises(psycopg.errors.NoActiveSqlTransaction):
            c.execute("DECLARE c CURSOR FOR SELECT 1")
        with pytest.raises(psycopg.errors.InvalidCursorName):
            c.execute("FETCH 1 FROM nowhere")


def test_bytea_round_trips(catalog_server):
    host, port = catalog_server
    with psycopg.connect(host=host, port=port, user="runnel", dbname="runnel", autocommit=True) as c:
        c.execute("CREATE TABLE blobs (k BIGINT PRIMARY KEY, v BYTEA)")
        # Hex text input, the escape format, a parameter (psycopg sends bytes in binary).
        c.execute("INSERT INTO blobs VALUES (1, '\\xdeadbeef'), (2, 'a\\\\b\\001')")
        c.execute("INSERT INTO blobs VALUES (%s, %s)", (3, b"\x00\xff\n"))
        c.execute("UPDATE blobs SET v = '\\x0102' WHERE k = 2")
        with c.cursor().copy("COPY blobs FROM STDIN") as copy:
            copy.write(b"4\t\\\\x7f00\n")
        rows = c.execute("SELECT k, v FROM blobs ORDER BY k").fetchall()
        assert rows == [(1, b"\xde\xad\xbe\xef"), (2, b"\x01\x02"), (3, b"\x00\xff\n"), (4, b"\x7f\x00")]
        assert c.execute("SELECT '\\xcafe'::bytea").fetchone() == (b"\xca\xfe",)
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            c.execute("INSERT INTO blobs VALUES (5, '\\xZZ')")


def test_psql_plus_commands_show_comments(catalog_server):
    """COMMENT ON texts appear where psql shows descriptions (\\dt+, \\d+), and \\d+ prints a
    table's storage and a view's definition as Postgres does."""
    host, port = catalog_server
    with psycopg.connect(host=host, port=port, user="runnel", dbname="runnel", autocommit=True) as c:
        c.execute("COMMENT ON TABLE items IS 'what we sell'")
        c.execute("COMMENT ON COLUMN items.name IS 'shown to buyers'")
        c.execute("COMMENT ON MATERIALIZED VIEW avg_price IS 'per user'")
    listing = psql(catalog_server, r"\dt+ items")
    # The size is RocksDB's estimate of the table's files, which depends on flushes.
    assert re.search(
        r"^ public \| items \| table \| runnel \| permanent   \| heap          \| \d+ (bytes|kB|MB) +\| what we sell$",
        listing,
        re.M,
    ), listing
    described = psql(catalog_server, r"\d+ items").split("\n")
    # psql centres the title over the table.
    assert described[0].strip() == 'Table "public.items"'
    assert described[1:] == [
        "  Column  |  Type  | Collation | Nullable | Default | Storage  | Compression | Stats target |   Description   ",
        "----------+--------+-----------+----------+---------+----------+-------------+--------------+-----------------",
        " item_id  | bigint |           | not null |         | plain    |             |              | ",
        " name     | text   |           |          |         | extended |             |              | shown to buyers",
        " category | text   |           |          |         | extended |             |              | ",
        "Indexes:",
        '    "items_pkey" PRIMARY KEY, btree (item_id)',
        "Access method: heap",
        "",
        "",
    ]
    view = psql(catalog_server, r"\d+ avg_price")
    assert "View definition:\n SELECT user_id, avg(price) AS avg_price, count(*) AS n FROM views GROUP BY user_id;\n" in view, view
    assert psql(catalog_server, r"\dm+").count("per user") == 1
