"""Kafka TLS and SASL options end to end: streams and sinks that authenticate and encrypt, and
the errors a user sees when a handshake fails.

What the test broker can do, and how each part is tested here:
- SASL: Tansu 0.6.0 with `--authentication` requires SASL and offers SCRAM-SHA-256 and
  SCRAM-SHA-512, its users stored with `tansu user create` (which must run while
  authentication is off: the request is refused before authenticating). It does not offer
  PLAIN (its rsasl build lacks the mechanism), so PLAIN is only shown to reach the broker.
- TLS: Tansu 0.6.0 has no working TLS listener (`--cert` and `--key` are mutually exclusive
  flags, and the TLS acceptor it builds is never used). So TLS is terminated by `TlsProxy`
  below, Python's ssl module (OpenSSL) in front of Tansu, with Tansu advertising the proxy's
  address: every connection Runnel makes to that broker is a real TLS connection, verified
  against a test CA, with a client certificate where the proxy requires one.
- The certificates come from the `openssl` command line tool (a test CA, a server certificate
  for 127.0.0.1, a client certificate whose key is encrypted, and an unrelated CA).

Runnel reads the options of a stream when it connects: CREATE STREAM / CREATE SINK connect at
once, so a handshake that fails makes the CREATE fail (08001) with librdkafka's reason; a
stream that exists already reports it in SHOW PROGRESS's `status` while it retries.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import tempfile
import threading
from pathlib import Path

import psycopg
import pytest

from kafka_harness import Broker, tansu_binary, unique_name
from runnel_proc import (
    RunnelProcess,
    eventually_equal,
    execute,
    flush,
    query,
    show_progress,
    wait_caught_up,
    wait_until,
)

KEY_PASSWORD = "k3y-pass"
# The harness's own SASL user on the authenticating brokers (creates topics, produces, reads).
HARNESS_USER, HARNESS_PASSWORD = "harness", "harness-pw"
SCRAM_USERS = {
    # name: (password, tansu's mechanism name, SASL mechanism)
    "alice": ("alice-pw-256", "scram256", "SCRAM-SHA-256"),
    "bob": ("bob pw 512", "scram512", "SCRAM-SHA-512"),
    HARNESS_USER: (HARNESS_PASSWORD, "scram512", "SCRAM-SHA-512"),
}


def kafka_with(topic: str, **opts: str) -> str:
    """WITH (...) with the given options; a key with dots is quoted ("security.protocol")."""
    items = {"connector": "kafka", "topic": topic, "format": "json", **opts}

    def key(k: str) -> str:
        return f'"{k}"' if "." in k else k

    return "WITH (" + ", ".join(f"{key(k)} = '{v}'" for k, v in items.items()) + ")"


def sql_error(conn, sql: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as failed:
        execute(conn, sql)
    return failed.value


def stream_names(conn) -> list[str]:
    return [r[0] for r in query(conn, "SHOW STREAMS")]


# ============================================================================================
# Certificates


class Pki:
    """A test CA and certificates made with the openssl CLI in a temporary directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="runnel-pki-"))
        self.ca, self.ca_key = self._ca("runnel-test-ca")
        self.other_ca, _ = self._ca("some-other-ca")
        # Names that librdkafka's hostname check (ssl.endpoint.identification.algorithm =
        # https, its default) accepts for 127.0.0.1.
        self.server, self.server_key = self._leaf(
            "server", "localhost", "subjectAltName=DNS:localhost,DNS:127.0.0.1,IP:127.0.0.1"
        )
        # Signed by the test CA, but for another host: only endpoint identification refuses it.
        self.wrong_host, self.wrong_host_key = self._leaf(
            "wrong-host", "broker.invalid", "subjectAltName=DNS:broker.invalid"
        )
        self.client, self.client_key = self._leaf(
            "client", "runnel-client", None, key_password=KEY_PASSWORD
        )

    def _run(self, *args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=self.dir)

    def _ca(self, name: str) -> tuple[str, str]:
        cert, key = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        self._run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                  "-out", str(cert), "-days", "2", "-subj", f"/CN={name}")
        return str(cert), str(key)

    def _leaf(self, name: str, cn: str, ext: str | None, key_password: str | None = None):
        cert, key, csr = (self.dir / f"{name}{s}" for s in (".pem", ".key", ".csr"))
        protect = ["-passout", f"pass:{key_password}"] if key_password else ["-nodes"]
        self._run("req", "-newkey", "rsa:2048", *protect, "-keyout", str(key), "-out", str(csr),
                  "-subj", f"/CN={cn}")
        sign = ["x509", "-req", "-in", str(csr), "-CA", self.ca, "-CAkey", self.ca_key,
                "-CAcreateserial", "-out", str(cert), "-days", "2"]
        if ext:
            ext_file = self.dir / f"{name}.ext"
            ext_file.write_text(ext + "\n")
            sign += ["-extfile", str(ext_file)]
        self._run(*sign)
        return str(cert), str(key)

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# ============================================================================================
# A TLS terminator in front of the broker


class TlsProxy:
    """Accepts TLS connections on 127.0.0.1 (with `client_ca`, only from clients with a
    certificate that CA signed) and relays the plaintext to the broker's port. Counts the
    completed handshakes and keeps the client certificates' common names, so a test can show
    that TLS, and the client certificate, were really used."""

    def __init__(self, backend_port: int, cert: str, key: str, client_ca: str | None = None):
        self.backend_port = backend_port
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        if client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(client_ca)
        self.handshakes = 0
        self.client_names: set[str] = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        start = asyncio.start_server(self._relay, "127.0.0.1", 0, ssl=context)
        self.server = asyncio.run_coroutine_threadsafe(start, self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _relay(self, client_r, client_w) -> None:
        # Called once the TLS handshake has succeeded.
        self.handshakes += 1
        peer = client_w.get_extra_info("peercert")
        if peer:
            self.client_names.add(dict(x[0] for x in peer["subject"])["commonName"])
        try:
            broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.backend_port)
        except OSError:
            client_w.close()
            return

        async def pump(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                writer.close()

        await asyncio.gather(pump(client_r, broker_w), pump(broker_r, client_w))

    def close(self) -> None:
        async def shutdown():
            self.server.close()
            relays = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in relays:
                t.cancel()
            await asyncio.gather(*relays, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


# ============================================================================================
# Brokers that need TLS, SASL or both


class SecureBroker(Broker):
    """A Tansu broker behind a TlsProxy (`tls`) and/or requiring SASL SCRAM (`sasl`), with the
    SCRAM_USERS. The harness's own clients (topics, producing, reading back) use the same
    security as Runnel must."""

    def __init__(self, pki: Pki, *, tls: bool, sasl: bool):
        super().__init__()
        self.pki = pki
        self.tls = tls
        self.sasl = sasl
        self.authentication = False  # until the users exist
        self.proxy = TlsProxy(self.port, pki.server, pki.server_key, client_ca=pki.ca) if tls else None

    @property
    def bootstrap_servers(self) -> str:
        return self.proxy.address if self.proxy else f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = super().command()
        if self.proxy:
            # Clients learn the broker's address from metadata: it must be the proxy's.
            cmd[cmd.index("--advertised-listener-url") + 1] = f"tcp://{self.proxy.address}"
        if self.authentication:
            cmd.append("--authentication")
        return cmd

    def _client_conf(self, **extra):
        conf = super()._client_conf(**extra)
        if self.proxy:
            conf.update({
                "ssl.ca.location": self.pki.ca,
                "ssl.certificate.location": self.pki.client,
                "ssl.key.location": self.pki.client_key,
                "ssl.key.password": KEY_PASSWORD,
            })
        if self.authentication:
            conf.update({
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": HARNESS_USER,
                "sasl.password": HARNESS_PASSWORD,
            })
        conf["security.protocol"] = {
            (False, False): "plaintext", (True, False): "ssl",
            (False, True): "sasl_plaintext", (True, True): "sasl_ssl",
        }[(self.proxy is not None, self.authentication)]
        return conf

    def start(self, timeout: float = 60) -> "SecureBroker":
        super().start(timeout)
        if self.sasl and not self.authentication:
            # Users can only be created while authentication is off; they persist in sqlite.
            for name, (password, mechanism, _) in SCRAM_USERS.items():
                subprocess.run(
                    [tansu_binary(), "user", "create", "--broker", f"tcp://127.0.0.1:{self.port}",
                     "--mechanism", mechanism, name, password],
                    check=True, capture_output=True, timeout=30,
                )
            self._close_clients()
            self.stop()
            self.authentication = True
            super().start(timeout)
        return self

    def cleanup(self) -> None:
        super().cleanup()
        if self.proxy:
            self.proxy.close()

    def client_options(self, user: str | None = None, password_file: str | None = None) -> dict[str, str]:
        """Runnel's WITH options for this broker, as `user` (SCRAM) with a client certificate."""
        opts = {"bootstrap_servers": self.bootstrap_servers}
        protocol = {(True, True): "sasl_ssl", (True, False): "ssl",
                    (False, True): "sasl_plaintext", (False, False): "plaintext"}
        opts["security.protocol"] = protocol[(self.proxy is not None, user is not None)]
        if self.proxy:
            opts.update({
                "ssl.ca.location": self.pki.ca,
                "ssl.certificate.location": self.pki.client,
                "ssl.key.location": self.pki.client_key,
                "ssl.key.password": KEY_PASSWORD,
            })
        if user is not None:
            password, _, mechanism = SCRAM_USERS[user]
            opts.update({"sasl.mechanism": mechanism, "sasl.username": user})
            if password_file:
                opts["sasl.password.file"] = password_file
            else:
                opts["sasl.password"] = password
        return opts


@pytest.fixture(scope="module")
def pki():
    p = Pki()
    try:
        yield p
    finally:
        p.cleanup()


def _secure_broker(pki, **kind):
    b = SecureBroker(pki, **kind)
    b.start()
    return b


@pytest.fixture(scope="module")
def tls_broker(pki):
    b = _secure_broker(pki, tls=True, sasl=False)
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture(scope="module")
def sasl_broker(pki):
    b = _secure_broker(pki, tls=False, sasl=True)
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture(scope="module")
def sasl_ssl_broker(pki):
    b = _secure_broker(pki, tls=True, sasl=True)
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture
def secret_dir():
    d = tempfile.mkdtemp(prefix="runnel-secrets-")
    try:
        yield Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ============================================================================================
# Helpers


def ingest_and_check(broker, conn, options: dict[str, str], n: int = 20) -> str:
    """A stream with `options` over a fresh topic and a view over it: the rows produced reach
    the view. Returns the stream's name."""
    topic = broker.create_topic(unique_name("sec"), partitions=2)
    s, v = unique_name("s"), unique_name("v")
    execute(conn, f"CREATE STREAM {s} (k BIGINT, x BIGINT) {kafka_with(topic, **options)}")
    execute(conn, f"CREATE MATERIALIZED VIEW {v} AS SELECT k, count(*) AS n, sum(x) AS total FROM {s} GROUP BY k")
    rows = [{"k": i % 3, "x": i} for i in range(n)]
    broker.produce(topic, rows[: n // 2], partition=0)
    broker.produce(topic, rows[n // 2:], partition=1)
    wait_caught_up(conn, s, broker.high_watermarks(topic))
    expected = sorted(
        (k, sum(1 for r in rows if r["k"] == k), sum(r["x"] for r in rows if r["k"] == k))
        for k in {r["k"] for r in rows}
    )

    def view():
        flush(conn)
        return sorted(query(conn, f"SELECT k, n, total FROM {v}"))

    eventually_equal(view, expected, what=f"view {v} over {s}")
    return s


def sink_and_read_back(broker, conn, options: dict[str, str]) -> None:
    """A sink with `options` writes an embedded table's rows; the harness reads them back."""
    t, topic = unique_name("t"), broker.create_topic(unique_name("sink"))
    execute(conn, f"CREATE TABLE {t} (id BIGINT PRIMARY KEY, name TEXT)")
    execute(conn, f"INSERT INTO {t} VALUES (1, 'one'), (2, 'two'), (3, 'three')")
    execute(conn, f"CREATE SINK {unique_name('out')} FROM {t} {kafka_with(topic, mode='upsert', **options)}")

    def delivered():
        latest = {json.loads(k)["id"]: json.loads(v) for _p, _o, k, v in broker.consume_all(topic)}
        return sorted((i, r["name"]) for i, r in latest.items())

    eventually_equal(delivered, [(1, "one"), (2, "two"), (3, "three")], what=f"records in {topic}")


# ============================================================================================
# Against the plaintext test broker


def test_explicit_plaintext_options_ingest_end_to_end(broker, kafka_conn):
    # Both spellings: "security.protocol" quoted, security_protocol as an identifier.
    ingest_and_check(broker, kafka_conn, {"security.protocol": "PLAINTEXT"})
    ingest_and_check(broker, kafka_conn, {"security_protocol": "plaintext"})


def test_tls_against_a_plaintext_broker_fails_and_says_why(broker, kafka_conn, pki):
    topic = broker.create_topic(unique_name("notls"))
    s = unique_name("s")
    err = sql_error(
        kafka_conn,
        f"CREATE STREAM {s} (k BIGINT) "
        + kafka_with(topic, **{"security.protocol": "ssl", "ssl.ca.location": pki.ca}),
    )
    # The options reached librdkafka: it spoke TLS to a broker that does not, and the same
    # stream without them works (test_explicit_plaintext_options_ingest_end_to_end). Tansu
    # never answers the TLS ClientHello (it waits for the rest of what it reads as a huge
    # frame), so the handshake only times out and librdkafka logs no reason within the 5 s the
    # CREATE waits; a Kafka broker closes at once and the error then says "connecting to a
    # PLAINTEXT broker listener?".
    assert err.sqlstate == "08001", err
    assert str(err).startswith("kafka: "), err
    assert s not in stream_names(kafka_conn)


def test_option_errors(broker, kafka_conn, secret_dir):
    topic = broker.create_topic(unique_name("opts"))
    missing = secret_dir / "no-such-file"
    sasl = {"security.protocol": "sasl_plaintext", "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "u"}
    cases = [
        # A password file that is not there: read when connecting, named in the error.
        ({**sasl, "sasl.password.file": str(missing)}, "58P01",
         f"sasl.password.file '{missing}': cannot read it"),
        ({**sasl, "sasl.password.file": "relative/pw"}, "22023", "must be an absolute path"),
        ({"security.protocol": "tls"}, "22023", "security.protocol 'tls' is not supported"),
        ({**sasl, "sasl.mechanism": "GSSAPI", "sasl.password": "hunter2"}, "22023",
         "sasl.mechanism 'GSSAPI' is not supported"),
        ({"sasl.username": "u"}, "22023", "use 'sasl_plaintext' or 'sasl_ssl'"),
        ({"ssl.keystore.location": "/x"}, "22023", "unknown option 'ssl.keystore.location'"),
    ]
    for options, state, message in cases:
        s = unique_name("s")
        err = sql_error(kafka_conn, f"CREATE STREAM {s} (k BIGINT) {kafka_with(topic, **options)}")
        assert (err.sqlstate, message in str(err)) == (state, True), (options, str(err))
        assert "hunter2" not in str(err)
        assert s not in stream_names(kafka_conn)
    # Sinks take the same options and give the same errors.
    err = sql_error(
        kafka_conn,
        f"CREATE SINK {unique_name('k')} FROM {unique_name('nothing')} "
        + kafka_with(topic, **{**sasl, "sasl.mechanism": "PLAIN", "sasl.password.file": "pw"}),
    )
    assert err.sqlstate == "22023" and "must be an absolute path" in str(err), err


# ============================================================================================
# TLS (through the proxy)


def test_tls_with_client_certificate_stream_and_sink(tls_broker, kafka_conn):
    before = tls_broker.proxy.handshakes
    options = tls_broker.client_options()
    ingest_and_check(tls_broker, kafka_conn, options)
    sink_and_read_back(tls_broker, kafka_conn, options)
    assert tls_broker.proxy.handshakes > before
    assert "runnel-client" in tls_broker.proxy.client_names


def test_tls_failures_are_reported(tls_broker, kafka_conn, pki):
    topic = tls_broker.create_topic(unique_name("tlsfail"))
    good = tls_broker.client_options()
    no_client_cert = {k: v for k, v in good.items()
                      if k not in ("ssl.certificate.location", "ssl.key.location", "ssl.key.password")}
    cases = [
        # The broker's certificate is not signed by the CA given.
        ({**good, "ssl.ca.location": pki.other_ca}, "08001", "certificate verify failed"),
        # The proxy requires a client certificate, and hangs up on a client without one
        # (librdkafka sees the TLS close or, when the hang-up wins the race, a reset).
        (no_client_cert, "08001", ("ssl connection closed by peer", "connection reset by peer")),
        # librdkafka cannot decrypt the client key: the client is not even created.
        ({**good, "ssl.key.password": "wrong-pass"}, "22023", "ssl.key.location failed"),
    ]
    for options, state, message in cases:
        s = unique_name("s")
        err = sql_error(kafka_conn, f"CREATE STREAM {s} (k BIGINT) {kafka_with(topic, **options)}")
        messages = message if isinstance(message, tuple) else (message,)
        assert err.sqlstate == state and any(m in str(err).lower() for m in messages), \
            (options, str(err))
        assert "wrong-pass" not in str(err) and KEY_PASSWORD not in str(err)
        assert s not in stream_names(kafka_conn)


def test_tls_endpoint_identification(tls_broker, kafka_conn, pki):
    # A second proxy to the same broker with a certificate for another host name. Only the
    # first connection (metadata) goes to it; the broker's advertised address is the good one.
    wrong = TlsProxy(tls_broker.port, pki.wrong_host, pki.wrong_host_key)
    try:
        topic = tls_broker.create_topic(unique_name("hostname"))
        options = {**tls_broker.client_options(), "bootstrap_servers": wrong.address}
        err = sql_error(kafka_conn, f"CREATE STREAM {unique_name('s')} (k BIGINT) {kafka_with(topic, **options)}")
        assert err.sqlstate == "08001" and "certificate verify failed" in str(err).lower(), err
        assert wrong.handshakes == 0  # librdkafka refused the certificate
        options["ssl.endpoint.identification.algorithm"] = "none"
        s = unique_name("s")
        execute(kafka_conn, f"CREATE STREAM {s} (k BIGINT) {kafka_with(topic, **options)}")
        assert wrong.handshakes >= 1  # the same certificate, now accepted
        tls_broker.produce(topic, [{"k": 1}, {"k": 2}])
        wait_caught_up(kafka_conn, s, tls_broker.high_watermarks(topic))
        eventually_equal(lambda: sorted(query(kafka_conn, f"SELECT k FROM {s}")), [(1,), (2,)])
    finally:
        wrong.close()


# ============================================================================================
# SASL SCRAM (plaintext transport)


def test_scram_sha_256_and_512_stream_and_sink(sasl_broker, kafka_conn, secret_dir):
    ingest_and_check(sasl_broker, kafka_conn, sasl_broker.client_options("alice"))
    # bob's password comes from a file (with a trailing newline, and spaces inside).
    pw = secret_dir / "bob.pw"
    pw.write_text(SCRAM_USERS["bob"][0] + "\n")
    options = sasl_broker.client_options("bob", password_file=str(pw))
    ingest_and_check(sasl_broker, kafka_conn, options)
    sink_and_read_back(sasl_broker, kafka_conn, options)


def test_sasl_failures_are_reported(sasl_broker, kafka_conn, secret_dir):
    topic = sasl_broker.create_topic(unique_name("saslfail"))
    alice = sasl_broker.client_options("alice")
    wrong_file = secret_dir / "wrong.pw"
    wrong_file.write_text("not-alices-password\n")
    cases = [
        ({**alice, "sasl.password": "not-alices-password"}, "sasl authentication"),
        ({k: v for k, v in alice.items() if k != "sasl.password"} | {"sasl.password.file": str(wrong_file)},
         "sasl authentication"),
        # Tansu does not offer PLAIN: the mechanism is refused in the handshake.
        ({**alice, "sasl.mechanism": "PLAIN"}, "plain"),
        # No SASL at all against a broker that requires it.
        ({"bootstrap_servers": sasl_broker.bootstrap_servers}, ""),
    ]
    for options, message in cases:
        s = unique_name("s")
        err = sql_error(kafka_conn, f"CREATE STREAM {s} (k BIGINT) {kafka_with(topic, **options)}")
        assert err.sqlstate == "08001" and message in str(err).lower(), (options, str(err))
        assert "not-alices-password" not in str(err)
        assert s not in stream_names(kafka_conn)


def test_password_file_is_read_at_each_connection(sasl_broker, secret_dir):
    """A stream's password file is read whenever it connects: after a restart with a wrong
    password in it, the stream reports the failure in its status and ingests nothing; once the
    file is fixed it reconnects by itself and catches up. The password never reaches the log."""
    pw = secret_dir / "alice.pw"
    pw.write_text(SCRAM_USERS["alice"][0] + "\n")
    inline_secret = SCRAM_USERS["bob"][0]
    proc = RunnelProcess(env={"RUNNEL_LOG": "debug"})
    try:
        proc.start()
        topic = sasl_broker.create_topic(unique_name("rotate"))
        s, inline = unique_name("s"), unique_name("inline")
        with proc.connect() as conn:
            execute(conn, f"CREATE STREAM {s} (k BIGINT) "
                    + kafka_with(topic, **sasl_broker.client_options("alice", password_file=str(pw))))
            execute(conn, f"CREATE STREAM {inline} (k BIGINT) "
                    + kafka_with(topic, **sasl_broker.client_options("bob")))
            sasl_broker.produce(topic, [{"k": 1}])
            wait_caught_up(conn, s, sasl_broker.high_watermarks(topic))
            wait_caught_up(conn, inline, sasl_broker.high_watermarks(topic))
        proc.stop()

        pw.write_text("a-wrong-password\n")
        proc.start()
        with proc.connect() as conn:
            rows = wait_until(
                lambda: [r for r in show_progress(conn, s)
                         if "sasl authentication" in (r["status"] or "").lower()],
                what=f"{s}'s status to report the failed authentication",
                describe=lambda: repr(show_progress(conn, s)),
            )
            assert rows[0]["status"].startswith("connecting"), rows
            # The other stream (inline password) is not affected.
            sasl_broker.produce(topic, [{"k": 2}])
            wait_caught_up(conn, inline, sasl_broker.high_watermarks(topic))
            assert query(conn, f"SELECT count(*) FROM {s}") == [(1,)]

            pw.write_text(SCRAM_USERS["alice"][0] + "\n")
            wait_caught_up(conn, s, sasl_broker.high_watermarks(topic), timeout=90)
            assert sorted(query(conn, f"SELECT k FROM {s}")) == [(1,), (2,)]
        proc.stop()
        log = Path(proc.log_path).read_text(errors="replace")
        assert "sasl" in log.lower(), "the debug log should show the Kafka clients at work"
        for secret in (inline_secret, SCRAM_USERS["alice"][0]):
            assert secret not in log, f"a password is in the server log: {secret!r}"
    finally:
        proc.cleanup()


# ============================================================================================
# SASL over TLS


def test_sasl_ssl_stream_and_sink(sasl_ssl_broker, kafka_conn, secret_dir):
    before = sasl_ssl_broker.proxy.handshakes
    pw = secret_dir / "bob.pw"
    pw.write_text(SCRAM_USERS["bob"][0] + "\n")
    options = sasl_ssl_broker.client_options("bob", password_file=str(pw))
    assert options["security.protocol"] == "sasl_ssl"
    ingest_and_check(sasl_ssl_broker, kafka_conn, options)
    sink_and_read_back(sasl_ssl_broker, kafka_conn, options)
    assert sasl_ssl_broker.proxy.handshakes > before
    # Wrong password over TLS: the TLS handshake succeeds, the authentication does not.
    topic = sasl_ssl_broker.create_topic(unique_name("saslssl"))
    bad = {**sasl_ssl_broker.client_options("alice"), "sasl.password": "nope"}
    err = sql_error(kafka_conn, f"CREATE STREAM {unique_name('s')} (k BIGINT) {kafka_with(topic, **bad)}")
    assert err.sqlstate == "08001" and "sasl authentication" in str(err).lower(), err
