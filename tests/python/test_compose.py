"""The Docker Compose path: docker-compose.yml parses and wires the services as documented,
the Dockerfile builds and starts `runnel serve` as documented, and demo/ is consistent.

No Docker engine is needed: `docker-compose config` only parses and resolves the file.
docker-compose is a required tool for this test (Debian package `docker-compose`; the test
command installs it with `apt-get install -y docker-compose`).
"""

from __future__ import annotations

import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Variables docker-compose.yml interpolates: unset them so the defaults are what is checked.
COMPOSE_VARS = ("RATE", "USERS", "EVENTS", "BAD_EVERY", "RUNNEL_LOG", "COMPOSE_FILE",
                "COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES")


def compose_command() -> list[str]:
    exe = shutil.which("docker-compose")
    if exe:
        return [exe]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    pytest.fail(
        "docker-compose is not installed. The test command installs it "
        "(`apt-get install -y docker-compose`); run that, then this test again."
    )


def run_compose(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARS}
    return subprocess.run(
        compose_command() + ["-f", str(REPO / "docker-compose.yml"), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )


def yaml_to_obj(text: str, compose_exe: str):
    """Parse YAML with PyYAML if this interpreter has it, else with the interpreter that runs
    docker-compose v1 (a Python program that depends on PyYAML)."""
    try:
        import yaml  # type: ignore

        return yaml.safe_load(text)
    except ImportError:
        pass
    candidates = []
    try:
        first = Path(compose_exe).read_bytes()[:200].split(b"\n", 1)[0]
        if first.startswith(b"#!"):
            candidates.append(first[2:].decode().strip().split()[0])
    except OSError:
        pass
    candidates += ["/usr/bin/python3", "python3"]
    script = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"
    for py in candidates:
        try:
            r = subprocess.run([py, "-c", script], input=text, capture_output=True, text=True)
        except OSError:
            continue
        if r.returncode == 0:
            return json.loads(r.stdout)
    pytest.fail("cannot parse `docker-compose config` output: no Python with PyYAML found")


@pytest.fixture(scope="module")
def config() -> dict:
    cmd = compose_command()
    # docker compose v2 prints JSON on request; v1 only prints YAML.
    r = run_compose("config", "--format", "json")
    if r.returncode == 0 and r.stdout.lstrip().startswith("{"):
        return json.loads(r.stdout)
    r = run_compose("config")
    assert r.returncode == 0, f"docker-compose config failed:\n{r.stderr}"
    return yaml_to_obj(r.stdout, cmd[0])


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["K=V", ...]
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def ports_of(service: dict) -> list[tuple[str, str]]:
    """(published, target) pairs from the short ("127.0.0.1:6875:6875/tcp") or long form."""
    out = []
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            out.append((str(p.get("published", "")), str(p["target"])))
        else:
            parts = str(p).split("/")[0].split(":")
            out.append((parts[-2] if len(parts) > 1 else "", parts[-1]))
    return out


def mounts_of(service: dict) -> list[dict]:
    """Volumes as {source, target, read_only} from the short or long form."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            out.append({"source": str(v.get("source", "")), "target": v["target"],
                        "read_only": bool(v.get("read_only", False))})
        else:
            parts = str(v).split(":")
            mode = parts[2] if len(parts) > 2 else "rw"
            out.append({"source": parts[0], "target": parts[1], "read_only": "ro" in mode.split(",")})
    return out


def depends_healthy(service: dict, on: str) -> bool:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return False  # the short form cannot wait for health
    return (deps.get(on) or {}).get("condition") == "service_healthy"


# --------------------------------------------------------------------------------------------


def test_compose_config_is_valid():
    r = run_compose("config", "-q")
    assert r.returncode == 0, f"docker-compose config -q failed (exit {r.returncode}):\n{r.stderr}"
    assert "is not set" not in r.stderr, f"docker-compose warns about unset variables:\n{r.stderr}"


def test_services_present(config):
    assert {"kafka", "runnel", "producer"} <= set(config["services"]), sorted(config["services"])


def test_kafka_service(config):
    kafka = config["services"]["kafka"]
    image = kafka["image"]
    m = re.fullmatch(r"apache/kafka:(\d+)\.(\d+)\.(\d+)", image)
    assert m and int(m.group(1)) in (3, 4), f"expected the official apache/kafka 3.x/4.x image, got {image}"
    if int(m.group(1)) == 3:
        assert int(m.group(2)) >= 7, f"{image}: KRaft via env vars needs apache/kafka 3.7 or later"
    env = env_of(kafka)
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    node_id = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node_id}@kafka:9093"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert env.get("CLUSTER_ID"), "KRaft storage needs a CLUSTER_ID"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"

    listeners = dict(l.split("://") for l in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(l.split("://") for l in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocols = dict(l.split(":") for l in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert listeners["CONTROLLER"].endswith(":9093")
    assert "CONTROLLER" not in advertised
    assert advertised["PLAINTEXT"] == "kafka:9092", "containers must reach the broker at kafka:9092"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "PLAINTEXT"
    assert set(listeners) == set(protocols), (listeners, protocols)
    # The host listener: advertised as localhost:<port> and published on that port.
    host = [name for name, addr in advertised.items() if addr.startswith(("localhost:", "127.0.0.1:"))]
    assert len(host) == 1, f"expected one host listener, got {advertised}"
    host_port = advertised[host[0]].rsplit(":", 1)[1]
    container_port = listeners[host[0]].rsplit(":", 1)[1]
    assert (host_port, container_port) in ports_of(kafka), ports_of(kafka)

    test = kafka["healthcheck"]["test"]
    assert "kafka-broker-api-versions.sh" in " ".join(test if isinstance(test, list) else [test])
    assert any(m["target"] == env.get("KAFKA_LOG_DIRS") for m in mounts_of(kafka)), \
        "the broker's log dir should be a volume (topics outlive `docker-compose down`)"


def test_runnel_service(config):
    runnel = config["services"]["runnel"]
    build = runnel["build"]
    context = build["context"] if isinstance(build, dict) else build
    assert Path(REPO, context).resolve() == REPO
    assert (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile") == "Dockerfile"
    assert depends_healthy(runnel, "kafka"), runnel.get("depends_on")
    assert ("6875", "6875") in ports_of(runnel), ports_of(runnel)
    assert env_of(runnel)["RUNNEL_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    data = [m for m in mounts_of(runnel) if m["target"] == "/data"]
    assert data, f"no volume on /data: {runnel.get('volumes')}"
    assert data[0]["source"] in (config.get("volumes") or {}), "/data should be a named volume"


def test_producer_service(config):
    producer = config["services"]["producer"]
    assert producer["image"] == "python:3.11-slim"
    assert depends_healthy(producer, "kafka"), producer.get("depends_on")
    env = env_of(producer)
    assert env["BOOTSTRAP"] == "kafka:9092"
    assert float(env["RATE"]) > 0
    demo = [m for m in mounts_of(producer) if Path(m["source"]).resolve() == REPO / "demo"]
    assert demo and demo[0]["read_only"], f"demo/ must be mounted read-only: {producer.get('volumes')}"
    command = producer["command"]
    command = " ".join(command) if isinstance(command, list) else command
    assert "pip install" in command and "confluent-kafka" in command, command
    assert f"{demo[0]['target']}/producer.py" in command, command


# --------------------------------------------------------------------------------------------
# The files the compose file points at


def test_dockerfile():
    text = (REPO / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert froms[0][0] == "rust:1-bookworm", froms
    assert froms[-1][0] == "debian:bookworm-slim", froms
    builder = froms[0][1]
    assert builder, "the build stage needs a name"
    for pkg in ("clang", "libclang-dev", "build-essential", "pkg-config"):
        assert re.search(rf"\b{re.escape(pkg)}\b", text), pkg
    assert re.search(r"cargo build --release\b.*-p runnel", text)
    assert re.search(rf"COPY --from={builder}\s+\S*runnel\s", text)
    assert "ca-certificates" in text
    assert re.search(r"^VOLUME\s+\[?\"?/data\"?\]?\s*$", text, re.M)
    assert re.search(r"^EXPOSE\s+6875\s*$", text, re.M)
    entry = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, re.M)
    assert entry and json.loads(entry.group(1)) == [
        "runnel", "serve", "--listen", "0.0.0.0:6875", "--data-dir", "/data"]


def test_dockerignore_keeps_the_context_small():
    lines = {l.strip().rstrip("/") for l in (REPO / ".dockerignore").read_text().splitlines()}
    for entry in ("target", ".venv", "runnel-data", ".git"):
        assert entry in lines, f".dockerignore should exclude {entry}/"
    # Cargo needs the workspace: never exclude it.
    for needed in ("crates", "Cargo.toml", "Cargo.lock"):
        assert needed not in lines


def test_demo_sql_matches_the_topics():
    sql = (REPO / "demo" / "demo.sql").read_text()
    flat = " ".join(re.sub(r"--[^\n]*", "", sql).split())
    assert re.search(r"CREATE STREAM events \(.*\) WITH \(connector = 'kafka', topic = 'events', format = 'json'", flat)
    assert re.search(r"CREATE TABLE recommendations \( uid BIGINT PRIMARY KEY, items TEXT \) "
                     r"WITH \(connector = 'kafka', topic = 'recommendations', format = 'json'\)", flat)
    assert re.search(r"CREATE MATERIALIZED VIEW \w+ AS SELECT .* JOIN recommendations", flat)
    assert re.search(r"count\(\*\).*avg\(price\).* GROUP BY uid", flat)
    assert re.search(r"CREATE SINK \w+ FROM \w+ WITH \(.*topic = 'recommendation-events'.*mode = 'upsert'", flat)
    assert "SHOW PROGRESS;" in flat
    assert "bootstrap_servers" not in flat, "the broker comes from RUNNEL_KAFKA_BOOTSTRAP_SERVERS"


def test_producer_compiles_and_dry_runs(tmp_path):
    py_compile.compile(str(REPO / "demo" / "producer.py"), cfile=str(tmp_path / "p.pyc"), doraise=True)
    r = subprocess.run(
        [sys.executable, str(REPO / "demo" / "producer.py"), "--dry-run", "--events", "50",
         "--rate", "0", "--users", "200", "--items", "30", "--rec-update-every", "10"],
        capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k not in COMPOSE_VARS + ("BOOTSTRAP", "BAD_EVERY")},
    )
    assert r.returncode == 0, r.stderr
    records = [line.split("\t") for line in r.stdout.splitlines()]
    recs = [(k, json.loads(v)) for t, k, v in records if t == "recommendations"]
    events = [(k, json.loads(v)) for t, k, v in records if t == "events"]
    assert len(events) == 50
    assert len(recs) == 200 + 5  # one per user, then one update every 10 events
    assert [v["uid"] for _, v in recs[:200]] == list(range(1, 201))
    for key, value in recs:
        assert set(value) == {"uid", "items"} and json.loads(key) == value["uid"]
        assert all(1 <= int(i) <= 30 for i in value["items"].split(","))
    for key, value in events:
        assert set(value) == {"uid", "item_id", "price", "ts"}
        assert json.loads(key) == value["uid"] and 1 <= value["uid"] <= 200
        assert 1 <= value["item_id"] <= 30 and isinstance(value["price"], float)
        assert value["ts"].endswith("Z")
        datetime.fromisoformat(value["ts"].replace("Z", "+00:00"))
