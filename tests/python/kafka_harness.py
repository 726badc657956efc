"""A real Kafka-compatible broker (Tansu) for the end-to-end tests, plus client helpers.

    broker = Broker()            # free port, sqlite storage in a temporary directory
    broker.start()               # waits until the broker answers metadata requests
    broker.create_topic("events", partitions=3)
    broker.produce("events", [{"uid": 1}, b"raw", None], keys=["1", None, "3"], partition=0)
    broker.consume_all("events")     # [(partition, offset, key, value), ...] bytes or None
    broker.high_watermarks("events") # {partition: high watermark}
    broker.stop(); broker.start()    # same port, same data directory: the data persists
    broker.cleanup()

Environment: RUNNEL_TANSU_BIN overrides the broker binary (default: `tansu` under
$CARGO_HOME/bin or ~/.cargo/bin, else on PATH); TANSU_LOG sets the broker's RUST_LOG (warn).
A missing binary is a test failure, not a skip: CI installs it (scripts/deps.sh,
`cargo install tansu --version 0.6.0 --features libsql`).

Tansu notes (0.6.0, sqlite storage engine), worked around here rather than hidden:
- Consumer-group joins are slow, so nothing here uses a group: partitions are assigned
  explicitly. `group.id` is still set on consumers because librdkafka wants one; no offsets
  are ever committed.
- ListOffsets for a timestamp later than every record of a non-empty partition answers
  offset 0 (Kafka answers -1, "end", which clients turn into the high watermark).
  `offsets_for_times` below maps that back to the Kafka meaning by checking the record
  timestamps, and the Runnel tests only use timestamp positions that some record of every
  partition reaches, so they do not depend on it.
- `create_topic` waits until metadata lists the new topic with all its partitions (a
  precaution; CreateTopics has been synchronous in practice).
- The sqlite URL's path is resolved against the broker's working directory even when it is
  absolute (`sqlite:///tmp/d/tansu.db` opens `./tmp/d/tansu.db`): the broker runs in its data
  directory with `--storage-engine sqlite://tansu.db`.
- Topics are not auto-created (producing to a missing topic times out): every topic a test
  uses, including dead-letter and sink topics, is created first with create_topic().
- Snappy-compressed batches are accepted by Produce but then make every Fetch of that
  partition fail ("UnexpectedType(Snappy)"). The harness producer sends uncompressed batches;
  gzip, lz4 and zstd work too.
- On SIGTERM with clients connected Tansu waits 5 s before exiting; stop() sends SIGINT, which
  exits at once (sqlite is transactional: acknowledged records survive even kill -9).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections import namedtuple
from pathlib import Path
from typing import Any, Sequence

import pytest

try:
    from confluent_kafka import KafkaException, Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic
except ImportError as e:  # pragma: no cover - reported as a failure, not a skip
    raise ImportError(
        "confluent-kafka is needed for the Kafka tests: .venv/bin/pip install confluent-kafka"
    ) from e

STARTUP_TIMEOUT = 60.0
RDKAFKA_LOGGER = logging.getLogger("kafka_harness.rdkafka")
RDKAFKA_LOGGER.addHandler(logging.NullHandler())  # captured by pytest, not printed otherwise
CLIENT_TIMEOUT = 30.0

Record = namedtuple("Record", "partition offset key value timestamp headers")


def tansu_binary() -> str:
    """The broker binary: RUNNEL_TANSU_BIN, else $CARGO_HOME/bin/tansu (~/.cargo by default),
    else `tansu` on PATH.
    Fails the test (never skips) when it is missing."""
    override = os.environ.get("RUNNEL_TANSU_BIN")
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            pytest.fail(f"RUNNEL_TANSU_BIN={override} is not an executable file", pytrace=False)
        return override
    candidate = Path(os.environ.get("CARGO_HOME") or Path.home() / ".cargo") / "bin" / "tansu"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("tansu")
    if found:
        return found
    pytest.fail(
        "the Kafka tests need the Tansu broker binary, which was not found at "
        f"{candidate} or on PATH. Install it with "
        "`cargo install tansu --version 0.6.0 --features libsql` or set RUNNEL_TANSU_BIN.",
        pytrace=False,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique_name(prefix: str) -> str:
    """A fresh name usable both as a topic and as an SQL identifier."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _encode(v: Any) -> bytes | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode()
    return json.dumps(v).encode()  # dicts, lists, numbers: JSON


_LIVE: set = set()


@atexit.register
def _kill_leftover_brokers() -> None:
    # A test run that dies without cleanup must not leave brokers behind.
    for b in list(_LIVE):
        b.kill9()


class Broker:
    def __init__(self, port: int | None = None, data_dir: str | None = None, binary: str | None = None,
                 storage: str = "sqlite"):
        # storage: "sqlite" (correct watermarks and offsets-for-times: the tests) or "memory"
        # (faster, wrong watermarks: load for benchmarks only).
        assert storage in ("sqlite", "memory"), storage
        self.storage = storage
        self.binary = binary or tansu_binary()
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.dir = data_dir or tempfile.mkdtemp(prefix="runnel-tansu-")
        self.db_path = os.path.join(self.dir, "tansu.db")
        self.log_path = os.path.join(self.dir, "tansu.log")
        self.proc: subprocess.Popen | None = None
        self._admin: AdminClient | None = None
        self._producer: Producer | None = None

    # ---------------------------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [
            self.binary, "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            # Tansu resolves the sqlite URL's path against its working directory, even an
            # absolute one (sqlite:///tmp/x.db opens ./tmp/x.db), so run it in self.dir and
            # name the file relatively.
            "--storage-engine",
            f"sqlite://{os.path.basename(self.db_path)}" if self.storage == "sqlite" else "memory://tansu/",
        ]

    def start(self, timeout: float = STARTUP_TIMEOUT) -> "Broker":
        assert not self.running(), "broker already running"
        log = open(self.log_path, "a")
        log.write(f"\n===== {' '.join(self.command())}\n")
        log.flush()
        env = {**os.environ, "RUST_LOG": os.environ.get("TANSU_LOG", "warn")}
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, env=env,
            start_new_session=True,
        )
        log.close()
        _LIVE.add(self)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        admin = AdminClient(self._client_conf())
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"tansu exited with code {self.proc.returncode} during startup\n{self.log_tail()}"
                )
            try:
                md = admin.list_topics(timeout=2)
                if md.brokers:
                    return
            except KafkaException as e:
                last = e
            time.sleep(0.2)
        raise AssertionError(
            f"tansu did not answer metadata requests within {timeout}s (last error {last!r})\n"
            f"{self.log_tail()}"
        )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20) -> None:
        """SIGINT (SIGKILL after `timeout`). The data directory stays; start() again to resume.
        (Tansu takes 5 s to exit on SIGTERM while clients are connected; SIGINT is immediate.
        The sqlite storage is transactional, so either way nothing acknowledged is lost.)"""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        _LIVE.discard(self)

    def kill9(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None
        _LIVE.discard(self)

    def restart(self) -> "Broker":
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        self._close_clients()
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _close_clients(self) -> None:
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None
        self._admin = None

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "--- tansu log (tail) ---\n" + "".join(f.readlines()[-n:])
        except OSError:
            return "(no tansu log)"

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # ---------------------------------------------------------------------------------------
    def _client_conf(self, **extra: Any) -> dict[str, Any]:
        conf = {
            "bootstrap.servers": self.bootstrap_servers,
            "broker.address.family": "v4",
            # librdkafka's log lines (connection refused while the broker starts or is
            # stopped on purpose) go to Python logging, which pytest captures.
            "logger": RDKAFKA_LOGGER,
            "log.connection.close": False,
        }
        conf.update(extra)
        return conf

    @property
    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(self._client_conf())
        return self._admin

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(
                self._client_conf(**{"acks": "all", "linger.ms": 5, "enable.idempotence": False, "compression.type": "none"})
            )
        return self._producer

    def consumer(self) -> Consumer:
        # group.id is required by librdkafka's consumer; we never join or commit.
        return Consumer(
            self._client_conf(**{
                "group.id": f"runnel-test-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
                "isolation.level": "read_uncommitted",
                "fetch.wait.max.ms": 50,
            })
        )

    # ---------------------------------------------------------------------------------------
    def create_topic(self, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> str:
        futures = self.admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
            operation_timeout=CLIENT_TIMEOUT,
            request_timeout=CLIENT_TIMEOUT,
        )
        futures[name].result(timeout=CLIENT_TIMEOUT)
        deadline = time.monotonic() + CLIENT_TIMEOUT
        while True:
            md = self.admin.list_topics(topic=name, timeout=CLIENT_TIMEOUT)
            t = md.topics.get(name)
            if t is not None and t.error is None and len(t.partitions) == partitions:
                return name
            if time.monotonic() > deadline:
                raise AssertionError(f"topic {name} did not appear with {partitions} partitions: {t}")
            time.sleep(0.1)

    def partitions(self, topic: str) -> list[int]:
        md = self.admin.list_topics(topic=topic, timeout=CLIENT_TIMEOUT)
        t = md.topics.get(topic)
        assert t is not None and t.error is None, f"topic {topic} not found: {t and t.error}"
        return sorted(t.partitions)

    def produce(
        self,
        topic: str,
        values: Sequence[Any],
        keys: Sequence[Any] | None = None,
        partition: int | Sequence[int] | None = None,
        timestamps: int | Sequence[int] | None = None,
        headers: Sequence[Any] | None = None,
    ) -> list[tuple[int, int]]:
        """Produce one record per value, flush, and fail on any delivery error.

        values/keys: bytes, str (UTF-8), None (a tombstone / no key) or anything else (JSON).
        partition / timestamps (ms since the epoch, the record's CreateTime): one for all, or
        one per value. Returns [(partition, offset)] in the order of `values`.
        """
        n = len(values)

        def per_record(x, name):
            if x is None or isinstance(x, int):
                return [x] * n
            assert len(x) == n, f"{name} must have one entry per value"
            return list(x)

        keys = list(keys) if keys is not None else [None] * n
        assert len(keys) == n, "keys must have one entry per value"
        parts = per_record(partition, "partition")
        stamps = per_record(timestamps, "timestamps")
        hdrs = list(headers) if headers is not None else [None] * n
        results: list[Any] = [None] * n
        p = self.producer
        for i in range(n):
            def report(err, msg, i=i):
                results[i] = err if err is not None else (msg.partition(), msg.offset())

            kwargs: dict[str, Any] = {"value": _encode(values[i]), "key": _encode(keys[i]),
                                      "on_delivery": report}
            if parts[i] is not None:
                kwargs["partition"] = parts[i]
            if stamps[i] is not None:
                kwargs["timestamp"] = stamps[i]
            if hdrs[i] is not None:
                kwargs["headers"] = hdrs[i]
            while True:
                try:
                    p.produce(topic, **kwargs)
                    break
                except BufferError:
                    p.poll(0.1)
            p.poll(0)
        remaining = p.flush(CLIENT_TIMEOUT)
        assert remaining == 0, f"{remaining} records to {topic} were not delivered in time"
        errors = [r for r in results if not isinstance(r, tuple)]
        assert not errors, f"delivery to {topic} failed: {errors[:5]}"
        return results

    def watermarks(self, topic: str) -> dict[int, tuple[int, int]]:
        c = self.consumer()
        try:
            return {
                p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=CLIENT_TIMEOUT, cached=False)
                for p in self.partitions(topic)
            }
        finally:
            c.close()

    def high_watermarks(self, topic: str) -> dict[int, int]:
        return {p: hi for p, (lo, hi) in self.watermarks(topic).items()}

    def consume_records(self, topic: str, timeout: float = CLIENT_TIMEOUT) -> list[Record]:
        """Every record of every partition, from the low to the high watermark (taken when
        called), ordered by (partition, offset). Explicit assignment, no consumer group."""
        marks = self.watermarks(topic)
        wanted = {p: (lo, hi) for p, (lo, hi) in marks.items() if hi > lo}
        out: list[Record] = []
        if not wanted:
            return out
        c = self.consumer()
        try:
            c.assign([TopicPartition(topic, p, lo) for p, (lo, hi) in wanted.items()])
            done: set[int] = set()
            deadline = time.monotonic() + timeout
            while len(done) < len(wanted):
                if time.monotonic() > deadline:
                    got = {p: sum(1 for r in out if r.partition == p) for p in wanted}
                    raise AssertionError(
                        f"consume_all({topic}) timed out; read per partition {got}, watermarks {wanted}"
                    )
                for msg in c.consume(num_messages=500, timeout=0.05):
                    if msg.error() is not None:
                        if msg.error().code() == -191:  # _PARTITION_EOF
                            p = msg.partition()
                            if p in wanted and msg.offset() >= wanted[p][1]:
                                done.add(p)
                            continue
                        raise AssertionError(f"consume error on {topic}: {msg.error()}")
                    p, off = msg.partition(), msg.offset()
                    if off >= wanted[p][1]:
                        done.add(p)
                        continue
                    ts_type, ts = msg.timestamp()
                    out.append(Record(p, off, msg.key(), msg.value(), ts, msg.headers() or []))
                    if off + 1 >= wanted[p][1]:
                        done.add(p)
        finally:
            c.close()
        out.sort(key=lambda r: (r.partition, r.offset))
        return out

    def consume_all(self, topic: str) -> list[tuple[int, int, bytes | None, bytes | None]]:
        """[(partition, offset, key, value)] for every record, from the beginning to the high
        watermark of each partition."""
        return [(r.partition, r.offset, r.key, r.value) for r in self.consume_records(topic)]

    def offsets_for_times(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        """Kafka's offsetsForTimes: per partition the first offset whose record timestamp is
        >= timestamp_ms, or the high watermark when there is none. (Tansu answers 0 for "none";
        that is corrected here by looking at the record at the answered offset.)"""
        c = self.consumer()
        try:
            parts = self.partitions(topic)
            answers = c.offsets_for_times(
                [TopicPartition(topic, p, timestamp_ms) for p in parts], timeout=CLIENT_TIMEOUT
            )
        finally:
            c.close()
        marks = self.high_watermarks(topic)
        records = None
        out = {}
        for tp in answers:
            off = tp.offset
            if off < 0:
                off = marks[tp.partition]
            elif off == 0 and marks[tp.partition] > 0:
                if records is None:
                    records = self.consume_records(topic)
                first = next(r for r in records if r.partition == tp.partition)
                if first.timestamp < timestamp_ms:
                    off = marks[tp.partition]  # Tansu's "no such record"
            out[tp.partition] = off
        return out


# --------------------------------------------------------------------------------------------
# Small conversions shared by the tests.

def ms_to_datetime(ms: int):
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def rfc3339_ms(ms: int) -> str:
    """RFC 3339 in UTC with a 'Z', milliseconds only when non-zero: 2026-06-10T10:00:00Z."""
    dt = ms_to_datetime(ms)
    if ms % 1000:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def header_dict(headers) -> dict[str, str | None]:
    """confluent_kafka headers [(name, bytes)] as {name: text}."""
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (headers or [])}
