"""A full disk degrades, it does not stop (docs/operations.md, "A full disk").

The server's data directory lives on a small tmpfs of its own; a ballast file fills it until
less than the server's reserve (`--disk-reserve-mb`) is free. Then writes, DDL and checkpoints
fail with 53100 while reads keep working and the server stays up; once the ballast is gone,
writes, checkpoints and Kafka ingestion resume by themselves, with nothing lost or doubled;
and a server killed while the disk is nearly full starts again.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time

import psycopg
import pytest

from runnel_proc import RunnelProcess, wait_until

RESERVE_MB = 16
DISK_MB = 160
MIB = 1 << 20


class SmallDisk:
    """A tmpfs of DISK_MB mounted on a fresh directory, and a ballast file that fills it."""

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="runnel-small-disk-")
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", self.path],
            capture_output=True, text=True)
        if mounted.returncode != 0:
            os.rmdir(self.path)
            pytest.skip(f"mounting a tmpfs needs root here: {mounted.stderr.strip()}")
        self.ballast = os.path.join(self.path, "ballast")

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave_mb: float = RESERVE_MB / 2) -> None:
        """Grows the ballast until about `leave_mb` MiB are free (less than the reserve)."""
        size = os.path.getsize(self.ballast) if os.path.exists(self.ballast) else 0
        grow = self.free_bytes() - int(leave_mb * MIB)
        if grow > 0:
            with open(self.ballast, "ab") as f:
                os.posix_fallocate(f.fileno(), size, grow)
        assert self.free_bytes() < RESERVE_MB * MIB
        # The server measures free space at most every 100 ms.
        time.sleep(0.3)

    def empty(self) -> None:
        if os.path.exists(self.ballast):
            os.remove(self.ballast)

    def cleanup(self) -> None:
        subprocess.run(["umount", "-l", self.path], capture_output=True)
        os.rmdir(self.path)


@pytest.fixture
def small_disk():
    disk = SmallDisk()
    try:
        yield disk
    finally:
        disk.cleanup()


def sqlstate_of(conn: psycopg.Connection, sql: str) -> str | None:
    try:
        conn.execute(sql)
    except psycopg.Error as e:
        return e.sqlstate
    return None


def scalar(conn: psycopg.Connection, sql: str):
    return conn.execute(sql).fetchone()[0]


def test_a_full_disk_refuses_writes_keeps_reads_and_recovers(small_disk: SmallDisk):
    proc = RunnelProcess(data_dir=small_disk.path, extra_args=[
        "--disk-reserve-mb", str(RESERVE_MB),
        # Long enough that the rows inserted below are still only in memory when the disk
        # fills: their checkpoint is the one that has to wait.
        "--checkpoint-interval-ms", "3000",
    ])
    proc.start()
    try:
        with proc.connect() as conn:
            conn.execute("CREATE STREAM s (k BIGINT, v TEXT)")
            conn.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT)")
            conn.execute("CREATE MATERIALIZED VIEW c AS SELECT k, count(*) AS n FROM s GROUP BY k")
            conn.execute("INSERT INTO s SELECT g % 10, 'x' FROM generate_series(1, 1000) AS g")
            conn.execute("INSERT INTO t VALUES (1, 'one')")
            conn.execute("FLUSH")
            # In the log, not yet in a checkpoint, when the disk fills.
            conn.execute("INSERT INTO s SELECT g % 10, 'y' FROM generate_series(1, 500) AS g")
            small_disk.fill()

            assert sqlstate_of(conn, "INSERT INTO s VALUES (1, 'z')") == "53100"
            assert sqlstate_of(conn, "INSERT INTO t VALUES (2, 'two')") == "53100"
            assert sqlstate_of(conn, "UPDATE t SET v = 'uno' WHERE id = 1") == "53100"
            assert sqlstate_of(conn, "CREATE MATERIALIZED VIEW d AS SELECT count(*) FROM s") == "53100"
            assert sqlstate_of(conn, "FLUSH") == "53100"
            try:
                conn.execute("INSERT INTO s VALUES (1, 'z')")
            except psycopg.Error as e:
                assert "disk full" in str(e) and "reads still work" in str(e)
            # Reads work: the view as of its last checkpoint, the stream and the table as
            # written.
            assert scalar(conn, "SELECT sum(n) FROM c") == 1000
            assert scalar(conn, "SELECT count(*) FROM s") == 1500
            assert conn.execute("SELECT * FROM t").fetchall() == [(1, "one")]
            # Several checkpoint intervals pass with the disk full: the server stays up (it used
            # to exit about a second after the disk filled).
            time.sleep(7)
            assert proc.running(), proc.log_tail()
            assert scalar(conn, "SELECT 1") == 1

            small_disk.empty()
            # Checkpoints and writes resume by themselves.
            wait_until(lambda: scalar(conn, "SELECT sum(n) FROM c") == 1500,
                       what="the postponed checkpoint to be written")
            conn.execute("INSERT INTO s VALUES (1, 'z')")
            conn.execute("INSERT INTO t VALUES (2, 'two')")
            conn.execute("CREATE MATERIALIZED VIEW d AS SELECT count(*) AS n FROM s")
            conn.execute("FLUSH")
            assert scalar(conn, "SELECT sum(n) FROM c") == 1501
            assert scalar(conn, "SELECT n FROM d") == 1501
            assert conn.execute("SELECT * FROM t ORDER BY id").fetchall() == [(1, "one"), (2, "two")]
            assert "checkpoints postponed until the disk has room" in proc.log_tail(200)

        # Killed while the disk is nearly full, the server starts again and serves reads.
        small_disk.fill()
        proc.kill9()
        proc.restart()
        with proc.connect() as conn:
            assert scalar(conn, "SELECT sum(n) FROM c") == 1501
            assert scalar(conn, "SELECT n FROM d") == 1501
            # Recovery may have freed some space (RocksDB drops logs it replayed): fill again.
            small_disk.fill()
            assert sqlstate_of(conn, "INSERT INTO s VALUES (2, 'w')") == "53100"
            small_disk.empty()
            wait_until(lambda: sqlstate_of(conn, "INSERT INTO s VALUES (2, 'w')") is None,
                       what="writes to resume after the restart")
            conn.execute("FLUSH")
            assert scalar(conn, "SELECT sum(n) FROM c") == 1502
    finally:
        proc.cleanup()


def test_kafka_ingestion_waits_for_disk_space(small_disk: SmallDisk, broker):
    from kafka_harness import unique_name

    topic = broker.create_topic(unique_name("diskfull"))
    broker.produce(topic, [{"id": i} for i in range(100)])
    proc = RunnelProcess(data_dir=small_disk.path,
                         kafka_bootstrap_servers=broker.bootstrap_servers,
                         extra_args=["--disk-reserve-mb", str(RESERVE_MB)])
    proc.start()
    try:
        with proc.connect() as conn:
            conn.execute(
                f"CREATE STREAM ks (id BIGINT) WITH (connector = 'kafka', topic = '{topic}', "
                "format = 'json', start = 'earliest')")
            conn.execute("CREATE MATERIALIZED VIEW kc AS SELECT count(*) AS n, sum(id) AS s FROM ks")
            wait_until(lambda: scalar(conn, "SELECT n FROM kc") == 100, what="the first 100 records")

            small_disk.fill()
            broker.produce(topic, [{"id": i} for i in range(100, 200)])

            def waiting_status():
                rows = conn.execute("SHOW PROGRESS").fetchall()
                return any("waiting" in str(r) and "disk full" in str(r) for r in rows)

            wait_until(waiting_status, what="SHOW PROGRESS to say the source waits for disk space",
                       describe=lambda: str(conn.execute("SHOW PROGRESS").fetchall()))
            assert scalar(conn, "SELECT count(*) FROM ks") == 100
            assert proc.running(), proc.log_tail()

            small_disk.empty()
            wait_until(lambda: scalar(conn, "SELECT n FROM kc") == 200, what="ingestion to resume")
            conn.execute("FLUSH")
            assert conn.execute("SELECT n, s FROM kc").fetchone() == (200, sum(range(200)))
            assert scalar(conn, "SELECT count(DISTINCT id) FROM ks") == 200
    finally:
        proc.cleanup()
