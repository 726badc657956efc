"""node-postgres (npm `pg`), run by node against a real `runnel serve`: connect, DDL,
parameterized INSERT and SELECT through the extended protocol, types as node sees them, a
rolled-back transaction, an error's SQLSTATE and position. scripts/test.sh installs `pg`
into tests/node/node_modules."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest

NODE_DIR = pathlib.Path(__file__).resolve().parent.parent / "node"


def test_node_postgres_client(server):
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "pg").is_dir():
        pytest.fail("node and tests/node/node_modules/pg are needed (scripts/test.sh installs them)")
    host, port = server
    done = subprocess.run(
        [node, str(NODE_DIR / "client.js"), host, str(port)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["insert"] == 2
    # BIGINT arrives as a string in node-postgres (it does not fit a JS number), as from
    # Postgres; DOUBLE PRECISION as a number; TIMESTAMPTZ as a Date.
    assert out["rows"] == [
        ["1", "lamp", 9.5, "2026-06-10T10:00:00.000Z"],
        ["2", "book", 12.25, None],
    ]
    assert out["fields"] == [["id", 20], ["name", 25], ["price", 701], ["seen", 1184]]
    assert out["count"] == "2"
    assert out["error"] == ["42703", "8"]
    assert out["version"] == "PostgreSQL"
