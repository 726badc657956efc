"""pgjdbc, the PostgreSQL JDBC driver, against a real `runnel serve` process.

tests/jdbc/JdbcClient.java holds the checks (prepared statements with typed parameters,
batches, result metadata, SQLSTATEs); this test compiles it against the driver jar Debian
ships (package libpostgresql-jdbc-java, installed by scripts/test.sh) and runs it against the
module's server. The Java program exits non-zero if any check fails and prints each check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DRIVER_JARS = ["/usr/share/java/postgresql.jar"]


def driver_jar() -> str:
    for jar in [os.environ.get("RUNNEL_PGJDBC_JAR", "")] + DRIVER_JARS:
        if jar and os.path.exists(jar):
            return jar
    pytest.fail("pgjdbc jar not found: install libpostgresql-jdbc-java or set RUNNEL_PGJDBC_JAR")


def test_pgjdbc_client(server):
    host, port = server
    jar = driver_jar()
    for tool in ("javac", "java"):
        assert shutil.which(tool), f"{tool} not found (scripts/test.sh installs a JDK)"
    out_dir = tempfile.mkdtemp(prefix="runnel-jdbc-")
    try:
        subprocess.run(
            ["javac", "-cp", jar, "-d", out_dir, str(REPO / "tests" / "jdbc" / "JdbcClient.java")],
            check=True,
        )
        run = subprocess.run(
            ["java", "-cp", f"{jar}:{out_dir}", "JdbcClient", host, str(port)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        print(run.stdout)
        print(run.stderr)
        assert run.returncode == 0, f"JDBC checks failed:\n{run.stdout}\n{run.stderr}"
        assert "all checks passed" in run.stdout
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
