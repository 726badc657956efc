"""SUBSCRIBE against a real server: the changes a view goes through while rows are inserted,
updated and deleted, through COPY (SUBSCRIBE ...) TO STDOUT and through a cursor with FETCH,
with and without the snapshot, progress rows, privileges, and a fresh subscription after a
reconnect that starts from the view's contents then; a stream's rows and a table's changes,
with and without views reading them, and what dropping them does to a subscriber."""

from __future__ import annotations

import threading
import time
from collections import Counter

import psycopg
import pytest

from runnel_proc import RunnelProcess


@pytest.fixture(scope="module")
def server():
    with RunnelProcess(extra_args=["--checkpoint-interval-ms", "100"]) as proc:
        yield proc


def apply(contents: Counter, rows) -> None:
    """Applies (diff, columns...) rows to a multiset of rows."""
    for diff, *columns in rows:
        contents[tuple(columns)] += diff
        if contents[tuple(columns)] == 0:
            del contents[tuple(columns)]


def view_rows(conn, view: str) -> Counter:
    return Counter(tuple(r) for r in conn.execute(f"SELECT * FROM {view}").fetchall())


def fetch_until(conn, cursor: str, wanted, deadline: float = 30.0) -> list[tuple]:
    """FETCHes (1 s timeout each) until `wanted(rows so far)` holds."""
    rows: list[tuple] = []
    end = time.monotonic() + deadline
    while not wanted(rows):
        assert time.monotonic() < end, f"no more changes came; got {rows}"
        rows.extend(conn.execute(f"FETCH ALL {cursor} WITH (timeout = '1s')").fetchall())
    return rows


def test_a_cursor_receives_exactly_the_changes_the_view_went_through(server):
    with server.connect() as setup, server.connect(autocommit=False) as sub:
        setup.execute("CREATE TABLE sales (id BIGINT PRIMARY KEY, region TEXT, amount BIGINT)")
        setup.execute("INSERT INTO sales VALUES (1, 'eu', 10), (2, 'us', 20)")
        setup.execute("CREATE MATERIALIZED VIEW by_region AS "
                      "SELECT region, sum(amount) AS total, count(*) AS n FROM sales GROUP BY region")
        setup.execute("FLUSH")
        sub.execute("DECLARE c CURSOR FOR SUBSCRIBE by_region")
        columns = [d.name for d in sub.execute("FETCH 0 c").description]
        assert columns == ["runnel_checkpoint", "runnel_diff", "region", "total", "n"]
        # The snapshot: the view's contents, at one checkpoint, as inserts.
        snapshot = fetch_until(sub, "c", lambda rows: len(rows) >= 2)
        assert len({r[0] for r in snapshot}) == 1
        contents: Counter = Counter()
        apply(contents, [r[1:] for r in snapshot])
        assert contents == view_rows(setup, "by_region")
        steps = [
            "INSERT INTO sales VALUES (3, 'eu', 5)",
            "UPDATE sales SET amount = 25 WHERE id = 2",
            "DELETE FROM sales WHERE id = 1",
            "INSERT INTO sales VALUES (4, 'apac', 7), (5, 'apac', 8)",
            "DELETE FROM sales WHERE region = 'apac'",
        ]
        seen = list(snapshot)
        for step in steps:
            setup.execute(step)
            setup.execute("FLUSH")
            expected = view_rows(setup, "by_region")

            def caught_up(rows):
                state: Counter = Counter()
                apply(state, [r[1:] for r in seen + rows])
                return state == expected

            seen.extend(fetch_until(sub, "c", caught_up))
        checkpoints = [r[0] for r in seen]
        assert checkpoints == sorted(checkpoints), "checkpoints never go back"
        assert all(r[1] != 0 for r in seen)
        # An update of a group is its old row out and its new row in, at one checkpoint.
        changes = [r for r in seen[len(snapshot):]]
        assert (-1, "us", 20, 1) in [tuple(r[1:]) for r in changes]
        assert (1, "us", 25, 1) in [tuple(r[1:]) for r in changes]
        sub.execute("COMMIT")


def test_without_snapshot_only_later_changes_come_and_progress_marks_checkpoints(server):
    with server.connect() as setup, server.connect(autocommit=False) as sub:
        setup.execute("CREATE TABLE ticks (id BIGINT PRIMARY KEY)")
        setup.execute("INSERT INTO ticks VALUES (1), (2)")
        setup.execute("CREATE MATERIALIZED VIEW tick_count AS SELECT count(*) AS n FROM ticks")
        setup.execute("FLUSH")
        sub.execute("DECLARE c CURSOR FOR SUBSCRIBE tick_count WITH (snapshot = false, progress = true)")
        setup.execute("INSERT INTO ticks VALUES (3)")
        setup.execute("FLUSH")
        rows = fetch_until(sub, "c", lambda rows: any(not r[1] for r in rows))
        data = [r for r in rows if not r[1]]
        # No snapshot: the count's change from 2 to 3 only.
        assert sorted((r[2], r[3]) for r in data) == [(-1, 2), (1, 3)]
        progress = [r for r in rows if r[1]]
        assert all(r[2] is None and r[3] is None for r in progress)
        # A checkpoint with no change of the view still shows up, as progress.
        setup.execute("INSERT INTO ticks VALUES (99) ")
        setup.execute("DELETE FROM ticks WHERE id = 99")
        more = fetch_until(sub, "c", lambda rows: any(r[1] for r in rows), deadline=20)
        assert any(r[1] for r in more)
        # With nothing written any more (the DELETE may still be one checkpoint of its own),
        # progress goes on once per checkpoint interval.
        idle = fetch_until(sub, "c", lambda rows: sum(1 for r in rows if r[1]) >= 3, deadline=20)
        marks = [r[0] for r in idle if r[1]]
        assert marks == sorted(marks) and len(set(marks)) == len(marks)
        assert min(marks) > max(r[0] for r in rows + more)
        sub.execute("COMMIT")


def test_copy_subscribe_streams_changes_as_they_happen(server):
    with server.connect() as setup:
        setup.execute("CREATE TABLE events (id BIGINT PRIMARY KEY, kind TEXT)")
        setup.execute("CREATE MATERIALIZED VIEW kinds AS SELECT kind, count(*) AS n FROM events GROUP BY kind")
        setup.execute("INSERT INTO events VALUES (1, 'a')")
        setup.execute("FLUSH")
    lines: list[str] = []
    got_b = threading.Event()

    def subscribe():
        # A COPY that never ends is left by closing the connection.
        conn = server.connect()
        try:
            with conn.cursor().copy("COPY (SUBSCRIBE kinds) TO STDOUT") as copy:
                for row in copy.rows():
                    lines.append("\t".join(str(v) for v in row))
                    if row[2] == "b":
                        got_b.set()
                        break
        except psycopg.Error:
            pass
        finally:
            conn.close()

    reader = threading.Thread(target=subscribe, daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while not lines and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lines, "the snapshot row did not come"
    # The snapshot row came before any new write: rows are sent as they happen.
    assert lines[0].split("\t")[1:] == ["1", "a", "1"]
    with server.connect() as setup:
        setup.execute("INSERT INTO events VALUES (2, 'b')")
    assert got_b.wait(30), lines
    assert lines[-1].split("\t")[1:] == ["1", "b", "1"]


def test_subscribe_needs_select(server):
    with server.connect() as conn:
        conn.execute("CREATE TABLE secret (id BIGINT PRIMARY KEY)")
        conn.execute("CREATE STREAM secret_stream (id BIGINT)")
        conn.execute("CREATE MATERIALIZED VIEW secret_count AS SELECT count(*) AS n FROM secret")
        conn.execute("CREATE ROLE peeker LOGIN")
    for relation in ["secret_count", "secret", "secret_stream"]:
        with server.connect(user="peeker") as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SUBSCRIBE {relation}")
    with server.connect() as conn:
        conn.execute("GRANT SELECT ON secret_stream TO peeker")
    with server.connect(user="peeker", autocommit=False) as conn:
        conn.execute("DECLARE c CURSOR FOR SUBSCRIBE secret_stream")
        with server.connect() as writer:
            writer.execute("INSERT INTO secret_stream VALUES (7)")
        rows = fetch_until(conn, "c", lambda rows: len(rows) >= 1)
        assert [tuple(r[1:]) for r in rows] == [(1, 7)]
        conn.execute("COMMIT")


def test_a_new_subscription_after_reconnecting_starts_from_the_current_contents(server):
    with server.connect() as setup:
        setup.execute("CREATE TABLE r (id BIGINT PRIMARY KEY, v BIGINT)")
        setup.execute("CREATE MATERIALIZED VIEW r_sum AS SELECT sum(v) AS s FROM r")
        setup.execute("INSERT INTO r VALUES (1, 1)")
        setup.execute("FLUSH")
        first = server.connect(autocommit=False)
        first.execute("DECLARE c CURSOR FOR SUBSCRIBE r_sum")
        fetch_until(first, "c", lambda rows: len(rows) >= 1)
        first.close()  # the subscriber goes away; the dataflow drops it
        setup.execute("INSERT INTO r VALUES (2, 2)")
        setup.execute("FLUSH")
        with server.connect(autocommit=False) as again:
            again.execute("DECLARE c CURSOR FOR SUBSCRIBE r_sum")
            rows = fetch_until(again, "c", lambda rows: len(rows) >= 1)
            assert [(r[1], r[2]) for r in rows] == [(1, 3)]
            setup.execute("UPDATE r SET v = 10 WHERE id = 1")
            setup.execute("FLUSH")
            more = fetch_until(again, "c", lambda rows: len(rows) >= 2)
            assert sorted((r[1], r[2]) for r in more) == [(-1, 3), (1, 12)]
            again.execute("COMMIT")


def test_dropping_the_view_ends_the_subscription_with_an_error(server):
    with server.connect() as setup, server.connect(autocommit=False) as sub:
        setup.execute("CREATE TABLE gone (id BIGINT PRIMARY KEY)")
        setup.execute("CREATE MATERIALIZED VIEW gone_count AS SELECT count(*) AS n FROM gone")
        sub.execute("DECLARE c CURSOR FOR SUBSCRIBE gone_count")
        fetch_until(sub, "c", lambda rows: len(rows) >= 1)
        setup.execute("DROP MATERIALIZED VIEW gone_count")
        with pytest.raises(psycopg.errors.UndefinedTable) as ended:
            fetch_until(sub, "c", lambda rows: False)
        assert "dropped" in str(ended.value)


def test_a_stream_s_rows_come_as_inserts_whether_or_not_a_view_reads_it(server):
    with server.connect() as setup, server.connect(autocommit=False) as sub:
        setup.execute("CREATE STREAM clicks (user_id BIGINT, url TEXT)")
        setup.execute("INSERT INTO clicks VALUES (1, '/a'), (2, '/b'), (1, '/a')")
        # Nothing reads the stream yet: the subscription is its only reader.
        sub.execute("DECLARE c CURSOR FOR SUBSCRIBE TO clicks")
        columns = [d.name for d in sub.execute("FETCH 0 c").description]
        assert columns == ["runnel_checkpoint", "runnel_diff", "user_id", "url"]
        snapshot = fetch_until(sub, "c", lambda rows: sum(r[1] for r in rows) >= 3)
        assert len({r[0] for r in snapshot}) == 1, "the snapshot is one checkpoint's"
        contents: Counter = Counter()
        apply(contents, [r[1:] for r in snapshot])
        assert contents == Counter({(1, "/a"): 2, (2, "/b"): 1})
        setup.execute("INSERT INTO clicks VALUES (3, '/c')")
        setup.execute("INSERT INTO clicks VALUES (3, '/c'), (4, NULL)")
        later = fetch_until(sub, "c", lambda rows: sum(r[1] for r in rows) >= 3)
        assert all(r[1] > 0 for r in later), "a stream only grows"
        assert min(r[0] for r in later) >= snapshot[0][0]
        apply(contents, [r[1:] for r in later])
        assert contents == view_rows(setup, "clicks")
        # A view created while the subscription reads the stream sees every row once, and
        # the subscription goes on with the rows that follow.
        setup.execute("CREATE MATERIALIZED VIEW clicks_per_user AS "
                      "SELECT user_id, count(*) AS n FROM clicks GROUP BY user_id")
        setup.execute("INSERT INTO clicks VALUES (5, '/e')")
        setup.execute("FLUSH")
        assert dict(setup.execute("SELECT user_id, n FROM clicks_per_user").fetchall()) == {
            1: 2, 2: 1, 3: 2, 4: 1, 5: 1}
        more = fetch_until(sub, "c", lambda rows: sum(r[1] for r in rows) >= 1)
        assert [tuple(r[1:]) for r in more] == [(1, 5, "/e")]
        sub.execute("COMMIT")
        # A second subscription, to a stream a view now reads, starts from all of it.
        sub.execute("DECLARE d CURSOR FOR SUBSCRIBE clicks WITH (snapshot = true)")
        again = fetch_until(sub, "d", lambda rows: sum(r[1] for r in rows) >= 7)
        state: Counter = Counter()
        apply(state, [r[1:] for r in again])
        assert state == view_rows(setup, "clicks")
        setup.execute("INSERT INTO clicks VALUES (6, '/f')")
        newest = fetch_until(sub, "d", lambda rows: len(rows) >= 1)
        assert [tuple(r[1:]) for r in newest] == [(1, 6, "/f")]
        sub.execute("COMMIT")


def test_a_table_s_inserts_updates_and_deletes_come_as_diffs(server):
    with server.connect() as setup, server.connect(autocommit=False) as sub:
        setup.execute("CREATE TABLE prices (sku TEXT PRIMARY KEY, price BIGINT)")
        setup.execute("INSERT INTO prices VALUES ('a', 1), ('b', 2)")
        setup.execute("UPDATE prices SET price = 3 WHERE sku = 'b'")
        sub.execute("DECLARE c CURSOR FOR SUBSCRIBE prices")
        snapshot = fetch_until(sub, "c", lambda rows: len(rows) >= 2)
        # The contents, not the history: b's first price is not in it.
        assert sorted(tuple(r[1:]) for r in snapshot) == [(1, "a", 1), (1, "b", 3)]
        contents: Counter = Counter()
        apply(contents, [r[1:] for r in snapshot])
        steps = [
            "INSERT INTO prices VALUES ('c', 4)",
            "UPDATE prices SET price = 10 WHERE sku = 'a'",
            "DELETE FROM prices WHERE sku = 'b'",
        ]
        seen: list[tuple] = []
        for step in steps:
            setup.execute(step)
            expected = view_rows(setup, "prices")

            def caught_up(rows):
                state = Counter(contents)
                apply(state, [r[1:] for r in seen + rows])
                return state == expected

            seen.extend(fetch_until(sub, "c", caught_up))
        changes = sorted(tuple(r[1:]) for r in seen)
        assert changes == [(-1, "a", 1), (-1, "b", 3), (1, "a", 10), (1, "c", 4)]
        sub.execute("COMMIT")


def test_dropping_a_stream_ends_its_subscription_with_an_error(server):
    with server.connect() as setup, server.connect(autocommit=False) as sub:
        setup.execute("CREATE STREAM doomed (id BIGINT)")
        setup.execute("INSERT INTO doomed VALUES (1)")
        sub.execute("DECLARE c CURSOR FOR SUBSCRIBE doomed")
        fetch_until(sub, "c", lambda rows: len(rows) >= 1)
        setup.execute("DROP STREAM doomed")
        with pytest.raises(psycopg.errors.UndefinedTable) as ended:
            fetch_until(sub, "c", lambda rows: False)
        assert "dropped" in str(ended.value)


def test_a_subscriber_that_stops_reading_is_disconnected_and_never_holds_views_up():
    # A buffer of 8 events: a checkpoint that changes the view is two (changes, mark).
    with RunnelProcess(extra_args=["--checkpoint-interval-ms", "100",
                                   "--subscribe-buffer", "8"]) as proc:
        with proc.connect() as setup, proc.connect(autocommit=False) as slow:
            setup.execute("CREATE TABLE t (id BIGINT PRIMARY KEY)")
            setup.execute("CREATE MATERIALIZED VIEW t_ids AS SELECT id FROM t")
            setup.execute("INSERT INTO t VALUES (0)")
            setup.execute("FLUSH")
            slow.execute("DECLARE c CURSOR FOR SUBSCRIBE t_ids")
            assert slow.execute("FETCH 1 c WITH (timeout = '10s')").fetchall()[0][1:] == (1, 0)
            # Each FLUSH commits a checkpoint that changes the view; the subscriber reads none.
            for i in range(1, 21):
                setup.execute(f"INSERT INTO t VALUES ({i})")
                setup.execute("FLUSH")
            # The dataflow went on without it.
            assert setup.execute("SELECT count(*) FROM t_ids").fetchone() == (21,)
            # It gets what was buffered, then the reason it was dropped (a row at a time: an
            # error ends a FETCH, and the client drops the rows that came before it).
            got: list[tuple] = []
            with pytest.raises(psycopg.errors.ConfigurationLimitExceeded) as ended:
                for _ in range(30):
                    got.extend(slow.execute("FETCH 1 c WITH (timeout = '1s')").fetchall())
            assert "too slow" in str(ended.value)
            assert 1 <= len(got) < 20, got
            assert [r[2] for r in got] == list(range(1, len(got) + 1))
