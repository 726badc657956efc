"""A `runnel serve` process that tests can start, kill -9 and restart on the same data directory.

Used by every Python test (the `server` fixture in conftest.py starts one without Kafka).

    proc = RunnelProcess(kafka_bootstrap_servers=broker.bootstrap_servers)
    proc.start()                    # waits for "runnel listening on HOST:PORT"
    with proc.connect() as conn:    # psycopg 3 connection, autocommit
        ...
    proc.kill9()                    # SIGKILL, no flush, no checkpoint
    proc.start()                    # same data directory (the port may change: use proc.port)
    proc.stop()                     # SIGTERM (the server flushes and checkpoints)
    proc.cleanup()                  # stop if running, delete the temporary data directory

Environment: RUNNEL_BIN (default: target/debug/runnel under the repository root), RUNNEL_LOG
(default warn). The server's stderr is appended to `<tmp>/runnel-stderr.log`; `log_tail()`
returns its end, for assertion messages.

Also here: small polling helpers shared by the Kafka tests (`wait_until`, `eventually_equal`,
`show_progress`, `wait_caught_up`).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import psycopg

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 120


_LIVE: set = set()


@atexit.register
def _kill_leftover_servers() -> None:
    for p in list(_LIVE):
        p.kill9()


def runnel_binary() -> str:
    binary = os.environ.get("RUNNEL_BIN") or str(REPO / "target" / "debug" / "runnel")
    if not os.path.isabs(binary):
        binary = str(REPO / binary)
    return binary


class RunnelProcess:
    def __init__(
        self,
        *,
        kafka_bootstrap_servers: str | None = None,
        data_dir: str | None = None,
        extra_args: tuple[str, ...] | list[str] = (),
        env: dict[str, str] | None = None,
        binary: str | None = None,
    ):
        self.binary = binary or runnel_binary()
        assert os.path.exists(self.binary), (
            f"runnel binary not found at {self.binary} (build it or set RUNNEL_BIN)"
        )
        self._own_tmp = data_dir is None
        self.tmp = tempfile.mkdtemp(prefix="runnel-kafka-") if data_dir is None else data_dir
        self.data_dir = os.path.join(self.tmp, "data")
        self.log_path = os.path.join(self.tmp, "runnel-stderr.log")
        self.kafka_bootstrap_servers = kafka_bootstrap_servers
        self.extra_args = list(extra_args)
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.host: str | None = None
        self.port: int | None = None
        self.starts = 0

    # ---------------------------------------------------------------------------------------
    def command(self) -> list[str]:
        cmd = [self.binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", self.data_dir]
        if self.kafka_bootstrap_servers:
            cmd += ["--kafka-bootstrap-servers", self.kafka_bootstrap_servers]
        return cmd + self.extra_args

    def start(self, timeout: float = STARTUP_TIMEOUT) -> tuple[str, int]:
        """Start the server on the data directory and wait until it prints its address."""
        assert self.proc is None or self.proc.poll() is not None, "runnel is already running"
        self.starts += 1
        log = open(self.log_path, "a")
        log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n")
        log.flush()
        proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "RUNNEL_LOG": os.environ.get("RUNNEL_LOG", "warn"), **self.env},
        )
        log.close()
        found: dict[str, str] = {}
        ready = threading.Event()

        def read_stdout():
            # Parse the address, then keep draining so the server never blocks on a full pipe.
            for line in proc.stdout:
                m = re.match(r"runnel listening on (\S+):(\d+)", line)
                if m and not ready.is_set():
                    found["host"], found["port"] = m.group(1), m.group(2)
                    ready.set()
            ready.set()

        threading.Thread(target=read_stdout, daemon=True).start()
        self.proc = proc
        _LIVE.add(self)
        if not ready.wait(timeout):
            self.kill9()
            raise AssertionError(f"runnel did not print its address in {timeout}s\n{self.log_tail()}")
        if "port" not in found:
            code = proc.wait()
            raise AssertionError(
                f"runnel exited before listening (exit code {code})\n{self.log_tail()}"
            )
        self.host, self.port = found["host"], int(found["port"])
        return self.host, self.port

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL: the process gets no chance to flush or checkpoint."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM and wait (SIGKILL if it does not exit in time). Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def restart(self) -> tuple[str, int]:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        self.stop()
        _LIVE.discard(self)
        if self._own_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---------------------------------------------------------------------------------------
    def connect(self, **kwargs: Any) -> psycopg.Connection:
        assert self.port is not None, "runnel has not been started"
        args = dict(
            host=self.host, port=self.port, user="runnel", password="any", dbname="runnel",
            autocommit=True, connect_timeout=10,
        )
        args.update(kwargs)
        return psycopg.connect(**args)

    def log_tail(self, n: int = 60) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                lines = f.readlines()
        except OSError:
            return "(no runnel log)"
        return "--- runnel stderr (tail) ---\n" + "".join(lines[-n:])

    def __enter__(self) -> "RunnelProcess":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()


def threads_named(pid: int, prefix: str) -> int:
    """How many of process `pid`'s threads have a name starting with `prefix` (Linux keeps
    the first 15 bytes of a thread's name, so `runnel-kafka-<source>` shows as `runnel-kafka-..`)."""
    count = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as f:
                count += f.read().startswith(prefix)
        except FileNotFoundError:  # the thread ended meanwhile
            pass
    return count


# --------------------------------------------------------------------------------------------
# Polling helpers. Ingestion from Kafka is asynchronous and views are read as of the last
# checkpoint, so tests poll for the expected state (with a generous timeout) and never assert
# on timing.

DEFAULT_TIMEOUT = 60.0


class Timeout(AssertionError):
    pass


def wait_until(
    fn: Callable[[], Any],
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.2,
    what: str = "condition",
    describe: Callable[[], str] | None = None,
) -> Any:
    """Call `fn` until it returns something truthy; return that. Exceptions count as 'not yet'
    (the last one is reported on timeout)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    last_exc: BaseException | None = None
    while True:
        try:
            last = fn()
            last_exc = None
            if last:
                return last
        except (psycopg.Error, OSError) as e:
            last_exc = e
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout}s waiting for {what}; last value: {last!r}"
            if last_exc is not None:
                msg += f"; last error: {last_exc!r}"
            if describe is not None:
                try:
                    msg += "\n" + describe()
                except Exception as e:  # noqa: BLE001 - best effort diagnostics
                    msg += f"\n(describe failed: {e!r})"
            raise Timeout(msg)
        time.sleep(interval)


def eventually_equal(
    fn: Callable[[], Any],
    expected: Any,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.25,
    what: str = "value",
) -> Any:
    """Poll `fn` until it returns `expected`, then return it. On timeout, assert the last value
    equals `expected` so pytest prints a diff."""
    deadline = time.monotonic() + timeout
    last: Any = None
    last_exc: BaseException | None = None
    while True:
        try:
            last = fn()
            last_exc = None
            if last == expected:
                return last
        except (psycopg.Error, OSError) as e:
            last_exc = e
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    if last_exc is not None:
        raise AssertionError(f"{what}: last poll failed with {last_exc!r}") from last_exc
    assert last == expected, f"{what} did not reach the expected value within {timeout}s"
    return last


def query(conn: psycopg.Connection, sql: str, params: Any = None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description is not None else []


def execute(conn: psycopg.Connection, sql: str, params: Any = None) -> None:
    with conn.cursor() as cur:
        cur.execute(sql, params)


PROGRESS_COLUMNS = [
    "source", "partition", "offset", "end_offset", "lag", "events_per_sec", "backfill",
    "errors", "last_error", "status",
]


def show_progress(conn: psycopg.Connection, source: str | None = None) -> list[dict[str, Any]]:
    """SHOW PROGRESS as dicts (all values text or None), optionally only one source's rows.
    The `source` column is taken to hold the stream's / table's name."""
    with conn.cursor() as cur:
        cur.execute("SHOW PROGRESS")
        names = [d.name for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
    if source is not None:
        rows = [r for r in rows if r["source"] == source]
    return rows


def progress_by_partition(conn: psycopg.Connection, source: str) -> dict[int, dict[str, Any]]:
    return {int(r["partition"]): r for r in show_progress(conn, source) if r["partition"] is not None}


def caught_up(rows: dict[int, dict[str, Any]], high_watermarks: dict[int, int]) -> bool:
    """Every partition's committed offset, end offset and lag agree with the broker's high
    watermarks (taken after the test finished producing)."""
    if set(rows) != set(high_watermarks):
        return False
    for p, hw in high_watermarks.items():
        r = rows[p]
        if r["offset"] is None or r["end_offset"] is None or r["lag"] is None:
            return False
        if int(r["offset"]) != hw or int(r["end_offset"]) != hw or int(r["lag"]) != 0:
            return False
    return True


def wait_caught_up(
    conn_or_factory: psycopg.Connection | Callable[[], psycopg.Connection],
    source: str,
    high_watermarks: dict[int, int],
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[int, dict[str, Any]]:
    """Poll SHOW PROGRESS until `source` has read every partition up to the given high
    watermarks (offset == end_offset == high watermark, lag 0). Returns the rows by partition."""

    def get_conn():
        return conn_or_factory() if callable(conn_or_factory) else conn_or_factory

    state: dict[str, Any] = {}

    def check():
        conn = get_conn()
        rows = progress_by_partition(conn, source)
        state["rows"] = rows
        return rows if caught_up(rows, high_watermarks) else None

    return wait_until(
        check,
        timeout=timeout,
        what=f"source {source} to catch up to {high_watermarks}",
        describe=lambda: f"last SHOW PROGRESS rows for {source}: {state.get('rows')!r}",
    )


def flush(conn: psycopg.Connection) -> None:
    execute(conn, "FLUSH")
