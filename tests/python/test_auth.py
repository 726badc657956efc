"""Authentication and TLS against real `runnel serve` processes, through every client the
project supports: psql, psycopg, asyncpg, node-postgres and pgjdbc.

One server has a superuser password (SCRAM-SHA-256 for everyone) and a certificate this
module generates with `openssl` (a test CA and a server certificate for 127.0.0.1 and
localhost); the others check trust on loopback, `--tls-required`, and start-up refusals.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path

import asyncpg
import psycopg
import pytest

from runnel_proc import RunnelProcess

REPO = Path(__file__).resolve().parents[2]
SUPERUSER_PASSWORD = "super-Secret-1"
ALICE_PASSWORD = "alice pw ü"
WRONG = "not-the-password"


def make_certificates(directory: Path) -> None:
    """ca.crt, and server.crt/server.key signed by it for 127.0.0.1 and localhost."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "2", "-subj", "/CN=runnel test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=localhost")
    (directory / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    os.chmod(directory / "server.key", 0o600)


@pytest.fixture(scope="module")
def certs():
    directory = Path(tempfile.mkdtemp(prefix="runnel-certs-"))
    try:
        make_certificates(directory)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def secured(certs):
    """A server with a superuser password and TLS; users alice (LOGIN, a password) and
    bob (NOLOGIN, a password). Debug logs, so the test can check no password reaches them."""
    password_file = certs / "superuser-password"
    password_file.write_text(SUPERUSER_PASSWORD + "\n")
    proc = RunnelProcess(
        extra_args=[
            "--superuser-password-file", str(password_file),
            "--tls-cert", str(certs / "server.crt"),
            "--tls-key", str(certs / "server.key"),
        ],
        env={"RUNNEL_LOG": "debug"},
    )
    try:
        proc.start()
        with proc.connect(password=SUPERUSER_PASSWORD) as conn:
            conn.execute(f"CREATE USER alice WITH PASSWORD '{ALICE_PASSWORD}'")
            conn.execute("CREATE ROLE bob PASSWORD 'bob-pw'")
        yield proc
    finally:
        proc.cleanup()


def psql(proc: RunnelProcess, user: str, password: str, sql: str, **conninfo: str):
    params = {"host": proc.host, "port": str(proc.port), "user": user, "dbname": "runnel",
              "sslmode": "disable", **conninfo}
    dsn = " ".join(f"{k}={v}" for k, v in params.items())
    return subprocess.run(
        ["psql", "-X", "-At", dsn, "-c", sql],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PGPASSWORD": password},
    )


def login_error(proc: RunnelProcess, user: str = "runnel", password: str = "",
                ssl_mode: str = "disable") -> tuple[str, str]:
    """The SQLSTATE and message a login fails with (asyncpg reports the SQLSTATE of a
    failed connection; libpq, under psycopg, only its message)."""

    async def run():
        try:
            conn = await asyncpg.connect(host=proc.host, port=proc.port, user=user,
                                         password=password, database="runnel", ssl=ssl_mode)
        except asyncpg.PostgresError as error:
            return error.sqlstate, str(error)
        await conn.close()
        raise AssertionError(f"{user} logged in")

    return asyncio.run(run())


def test_psql_logs_in_with_scram_and_fails_alike_for_wrong_password_and_unknown_user(secured):
    ok = psql(secured, "alice", ALICE_PASSWORD, "SELECT current_user")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "alice"
    wrong = psql(secured, "alice", WRONG, "SELECT 1")
    unknown = psql(secured, "nobody", WRONG, "SELECT 1")
    assert wrong.returncode != 0 and unknown.returncode != 0
    assert 'password authentication failed for user "alice"' in wrong.stderr
    assert 'password authentication failed for user "nobody"' in unknown.stderr
    # Nothing else tells the two apart.
    assert wrong.stderr.replace("alice", "X") == unknown.stderr.replace("nobody", "X")


def test_psycopg_and_asyncpg_get_28P01_for_wrong_password_unknown_user_and_nologin_role(
        secured):
    with secured.connect(user="alice", password=ALICE_PASSWORD) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("alice",)
        # libpq's default sslmode=prefer encrypts when the server offers TLS.
        assert conn.pgconn.ssl_in_use
    messages = {}
    for case, user, password in [("wrong", "alice", WRONG), ("unknown", "nobody", WRONG),
                                 ("nologin", "bob", "bob-pw")]:
        with pytest.raises(psycopg.OperationalError) as failed:
            secured.connect(user=user, password=password, sslmode="disable")
        messages[case] = str(failed.value).replace(user, "X")
        assert 'FATAL:  password authentication failed for user "X"' in messages[case]
    assert len(set(messages.values())) == 1, messages
    for user, password in [("alice", WRONG), ("nobody", WRONG), ("bob", "bob-pw")]:
        state, message = login_error(secured, user, password)
        assert (state, message) == ("28P01", f'password authentication failed for user "{user}"')


def test_asyncpg_scram_login(secured):
    async def run():
        conn = await asyncpg.connect(host=secured.host, port=secured.port, user="alice",
                                     password=ALICE_PASSWORD, database="runnel", ssl=False)
        try:
            who = await conn.fetchval("SELECT current_user")
        finally:
            await conn.close()
        with pytest.raises(asyncpg.InvalidPasswordError) as failed:
            await asyncpg.connect(host=secured.host, port=secured.port, user="alice",
                                  password=WRONG, database="runnel", ssl=False)
        return who, failed.value.sqlstate

    assert asyncio.run(run()) == ("alice", "28P01")


def node_login(proc: RunnelProcess, user: str, password: str, ca: Path | None = None) -> dict:
    node_dir = REPO / "tests" / "node"
    node = shutil.which("node")
    assert node and (node_dir / "node_modules" / "pg").is_dir(), \
        "node and tests/node/node_modules/pg are needed (scripts/test.sh installs them)"
    args = [node, str(node_dir / "login.js"), proc.host, str(proc.port), user, password]
    if ca is not None:
        args.append(str(ca))
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_node_postgres_scram_and_tls(secured, certs):
    assert node_login(secured, "alice", ALICE_PASSWORD) == {"user": "alice", "encrypted": False}
    assert node_login(secured, "alice", WRONG)["code"] == "28P01"
    assert node_login(secured, "alice", ALICE_PASSWORD, certs / "ca.crt") == {
        "user": "alice", "encrypted": True}


def jdbc_login(proc: RunnelProcess, user: str, password: str, ca: Path | None = None) -> str:
    jar = "/usr/share/java/postgresql.jar"
    jar = os.environ.get("RUNNEL_PGJDBC_JAR", jar)
    assert os.path.exists(jar), "pgjdbc jar not found (scripts/test.sh installs it)"
    out_dir = tempfile.mkdtemp(prefix="runnel-jdbc-login-")
    try:
        subprocess.run(["javac", "-cp", jar, "-d", out_dir,
                        str(REPO / "tests" / "jdbc" / "JdbcLogin.java")], check=True)
        args = ["java", "-cp", f"{jar}:{out_dir}", "JdbcLogin", proc.host, str(proc.port),
                user, password]
        if ca is not None:
            args.append(str(ca))
        done = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def test_pgjdbc_scram_and_tls(secured, certs):
    assert jdbc_login(secured, "alice", ALICE_PASSWORD) == "ok alice plain"
    assert jdbc_login(secured, "nobody", WRONG).startswith(
        'error 28P01 FATAL: password authentication failed for user "nobody"')
    assert jdbc_login(secured, "alice", ALICE_PASSWORD, certs / "ca.crt") == "ok alice ssl"


def test_tls_verify_full_with_psql_psycopg_and_asyncpg(secured, certs):
    ca = str(certs / "ca.crt")
    for host in ("127.0.0.1", "localhost"):
        done = psql(secured, "alice", ALICE_PASSWORD, "\\conninfo", host=host,
                    sslmode="verify-full", sslrootcert=ca)
        assert done.returncode == 0, done.stderr
        assert "SSL connection" in done.stdout
    # Over TLS, libpq binds SCRAM to the certificate (SCRAM-SHA-256-PLUS).
    bound = psql(secured, "alice", ALICE_PASSWORD, "SELECT 1", sslmode="verify-full",
                 sslrootcert=ca, channel_binding="require")
    assert bound.returncode == 0, bound.stderr
    with secured.connect(user="alice", password=ALICE_PASSWORD, sslmode="verify-full",
                         sslrootcert=ca) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT current_user").fetchone() == ("alice",)
    # A client that trusts another CA refuses the server.
    other = certs / "other-ca"
    other.mkdir(exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    "o.key", "-out", "o.crt", "-days", "1", "-subj", "/CN=other"],
                   cwd=other, check=True, capture_output=True)
    with pytest.raises(psycopg.OperationalError):
        secured.connect(user="alice", password=ALICE_PASSWORD, sslmode="verify-full",
                        sslrootcert=str(other / "o.crt"))

    async def run():
        context = ssl.create_default_context(cafile=ca)
        conn = await asyncpg.connect(host="localhost", port=secured.port, user="alice",
                                     password=ALICE_PASSWORD, database="runnel", ssl=context)
        try:
            return await conn.fetchval("SELECT current_user")
        finally:
            await conn.close()

    assert asyncio.run(run()) == "alice"


def test_role_statements_and_catalog(secured):
    with secured.connect(password=SUPERUSER_PASSWORD) as conn:
        conn.execute("CREATE ROLE carol LOGIN PASSWORD 'carol-1'")
        with pytest.raises(psycopg.errors.DuplicateObject):
            conn.execute("CREATE ROLE carol")
        rows = conn.execute(
            "SELECT rolname, rolsuper, rolcanlogin, rolpassword FROM pg_roles ORDER BY rolname"
        ).fetchall()
        assert ("carol", False, True, "********") in rows
        assert ("runnel", True, True, "********") in rows
        # Stored as a SCRAM verifier, never the password; only superusers see it.
        (verifier,) = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'carol'").fetchone()
        assert verifier.startswith("SCRAM-SHA-256$4096:") and "carol-1" not in verifier
    with secured.connect(user="carol", password="carol-1") as carol:
        # Not a superuser: no role management, but her own password.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            carol.execute("CREATE ROLE dave")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            carol.execute("ALTER ROLE alice PASSWORD 'x'")
        carol.execute("ALTER ROLE carol PASSWORD 'carol-2'")
    assert login_error(secured, "carol", "carol-1")[0] == "28P01"
    with secured.connect(user="carol", password="carol-2") as carol:
        assert carol.execute("SELECT current_user").fetchone() == ("carol",)
    with secured.connect(password=SUPERUSER_PASSWORD) as conn:
        conn.execute("ALTER ROLE carol NOLOGIN")
        assert login_error(secured, "carol", "carol-2")[0] == "28P01"
        conn.execute("DROP ROLE carol")
        with pytest.raises(psycopg.errors.UndefinedObject):
            conn.execute("DROP ROLE carol")
        with pytest.raises(psycopg.errors.DependentObjectsStillExist):
            conn.execute("DROP ROLE runnel")
    # \du lists the roles with their attributes.
    du = psql(secured, "runnel", SUPERUSER_PASSWORD, "\\du")
    assert du.returncode == 0, du.stderr
    assert "alice" in du.stdout and "Superuser" in du.stdout
    assert "bob" in du.stdout and "Cannot login" in du.stdout


def test_roles_and_passwords_survive_a_restart_and_never_reach_the_log(secured):
    secured.restart()
    with secured.connect(user="alice", password=ALICE_PASSWORD) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("alice",)
    assert login_error(secured, "alice", WRONG)[0] == "28P01"
    log = Path(secured.log_path).read_text(errors="replace")
    assert "authentication failed" in log and 'user=alice' in log
    for password in (SUPERUSER_PASSWORD, ALICE_PASSWORD, "bob-pw", "carol-1", "carol-2", WRONG):
        assert password not in log


def test_tls_required_refuses_plaintext_with_28000(certs):
    with RunnelProcess(extra_args=["--tls-cert", str(certs / "server.crt"),
                                   "--tls-key", str(certs / "server.key"),
                                   "--tls-required", "true"]) as proc:
        state, message = login_error(proc)
        assert state == "28000" and "requires TLS" in message
        with proc.connect(sslmode="require") as conn:
            assert conn.pgconn.ssl_in_use


def test_trust_on_loopback_without_a_password_still_needs_an_existing_login_role():
    with RunnelProcess() as proc:
        with proc.connect(password="") as conn:
            conn.execute("CREATE ROLE quiet")
            conn.execute("CREATE ROLE talker LOGIN")
        with proc.connect(user="talker", password="") as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("talker",)
        assert login_error(proc, "ghost") == ("28000", 'role "ghost" does not exist')
        assert login_error(proc, "quiet") == ("28000", 'role "quiet" is not permitted to log in')
        # Setting the superuser's password turns SCRAM on for every new connection.
        with proc.connect() as conn:
            conn.execute(f"ALTER ROLE runnel PASSWORD '{SUPERUSER_PASSWORD}'")
        assert login_error(proc, "runnel", WRONG)[0] == "28P01"
        with proc.connect(password=SUPERUSER_PASSWORD) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def refused_start(*args: str, env: dict[str, str] | None = None) -> str:
    """Runs `runnel serve` expecting it to refuse to start; returns what it said."""
    data = tempfile.mkdtemp(prefix="runnel-refused-")
    try:
        done = subprocess.run(
            [os.environ.get("RUNNEL_BIN") or str(REPO / "target" / "debug" / "runnel"),
             "serve", "--data-dir", data, *args],
            capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
        )
        assert done.returncode != 0, done.stdout
        return done.stderr
    finally:
        shutil.rmtree(data, ignore_errors=True)


def test_start_up_refusals(certs):
    said = refused_start("--listen", "0.0.0.0:0")
    assert "refusing to listen on 0.0.0.0:0 without authentication" in said
    loose = certs / "loose.key"
    shutil.copy(certs / "server.key", loose)
    os.chmod(loose, 0o644)
    said = refused_start("--listen", "127.0.0.1:0", "--tls-cert", str(certs / "server.crt"),
                         "--tls-key", str(loose))
    assert "has group or world access" in said and "loose.key" in said
    said = refused_start("--listen", "127.0.0.1:0", "--tls-cert", str(certs / "ext.cnf"),
                         "--tls-key", str(certs / "server.key"))
    assert "holds no PEM certificate" in said
    said = refused_start("--listen", "127.0.0.1:0", "--tls-cert", str(certs / "ca.crt"),
                         "--tls-key", str(certs / "server.key"))
    assert "does not fit the certificate" in said
