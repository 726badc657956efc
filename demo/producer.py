#!/usr/bin/env python3
"""Demo data for Runnel: per-user recommendations (a compacted topic) and a stream of events.

Creates the topics (unless --no-create-topics):
  events                  3 partitions   {"uid": 196, "item_id": 42, "price": 12.5, "ts": "2026-06-10T10:00:00.123Z"}
  recommendations         compacted      key 196, value {"uid": 196, "items": "17,42,301"}
  recommendation-events   compacted      (written by Runnel's CREATE SINK in demo.sql)

then produces one recommendations row per user, then events at --rate per second (forever,
or --events of them), re-recommending a random user every --rec-update-every events so the
table side of the join changes too. Keys are the uid as JSON text (`196`), which Runnel reads
as a one-column primary key.

    pip install confluent-kafka
    python demo/producer.py --bootstrap 127.0.0.1:29092            # the docker-compose broker
    python demo/producer.py --bootstrap 127.0.0.1:9092 --events 1000
    python demo/producer.py --dry-run --events 5                   # print, no Kafka needed

Every option has an environment fallback (BOOTSTRAP, RATE, EVENTS, USERS, ...; see --help).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from datetime import datetime, timezone

EVENTS_TOPIC = "events"
RECS_TOPIC = "recommendations"
SINK_TOPIC = "recommendation-events"


def env(name: str, default):
    """The environment variable `name` converted to the type of `default`, else `default`."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    try:
        return type(default)(raw)
    except ValueError:
        sys.exit(f"producer: environment variable {name}={raw!r} is not a valid {type(default).__name__}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Produce Runnel's demo topics (events, recommendations).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--bootstrap", default=env("BOOTSTRAP", "127.0.0.1:29092"),
                   help="Kafka bootstrap servers (env BOOTSTRAP)")
    p.add_argument("--rate", type=float, default=env("RATE", 20.0),
                   help="events per second, 0 = as fast as possible (env RATE)")
    p.add_argument("--events", type=int, default=env("EVENTS", 0),
                   help="number of events to produce, 0 = run until stopped (env EVENTS)")
    p.add_argument("--users", type=int, default=env("USERS", 1000),
                   help="uids are 1..USERS (env USERS)")
    p.add_argument("--items", type=int, default=env("ITEMS", 500),
                   help="item_ids are 1..ITEMS (env ITEMS)")
    p.add_argument("--partitions", type=int, default=env("PARTITIONS", 3),
                   help="partitions of the events topic when it is created (env PARTITIONS)")
    p.add_argument("--rec-update-every", type=int, default=env("REC_UPDATE_EVERY", 200),
                   help="re-recommend a random user every N events, 0 = never (env REC_UPDATE_EVERY)")
    p.add_argument("--bad-every", type=int, default=env("BAD_EVERY", 0),
                   help="every Nth event is malformed JSON (to see error counters in SHOW PROGRESS), "
                        "0 = never (env BAD_EVERY)")
    p.add_argument("--seed", type=int, default=env("SEED", 7), help="random seed (env SEED)")
    p.add_argument("--no-create-topics", action="store_true", default=env("NO_CREATE_TOPICS", False),
                   help="do not create the topics (env NO_CREATE_TOPICS)")
    p.add_argument("--wait", type=float, default=env("WAIT", 120.0),
                   help="seconds to wait for the broker to become reachable (env WAIT)")
    p.add_argument("--dry-run", action="store_true", default=env("DRY_RUN", False),
                   help="print records as `topic<TAB>key<TAB>value` lines instead of producing")
    args = p.parse_args(argv)
    if args.users < 1 or args.items < 1 or args.partitions < 1:
        p.error("--users, --items and --partitions must be at least 1")
    if args.rate < 0 or args.events < 0 or args.rec_update_every < 0 or args.bad_every < 0:
        p.error("--rate, --events, --rec-update-every and --bad-every must not be negative")
    if args.dry_run and args.events == 0:
        p.error("--dry-run needs --events N (it would print forever)")
    return args


# ---------------------------------------------------------------------------------------------
# Records


def rfc3339_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def recommendation(rng: random.Random, uid: int, n_items: int) -> tuple[str, str]:
    items = rng.sample(range(1, n_items + 1), k=min(3, n_items))
    value = {"uid": uid, "items": ",".join(str(i) for i in items)}
    return str(uid), json.dumps(value, separators=(",", ":"))


def event(rng: random.Random, n_users: int, n_items: int) -> tuple[str, str]:
    uid = rng.randint(1, n_users)
    value = {
        "uid": uid,
        "item_id": rng.randint(1, n_items),
        "price": round(rng.uniform(1.0, 200.0), 2),
        "ts": rfc3339_now(),
    }
    return str(uid), json.dumps(value, separators=(",", ":"))


def bad_event(rng: random.Random, n_users: int) -> tuple[str, str]:
    uid = rng.randint(1, n_users)
    return str(uid), '{"uid": %d, "item_id": "not-a-number", "price": ' % uid  # truncated JSON


# ---------------------------------------------------------------------------------------------
# Sinks for records: Kafka, or stdout for --dry-run


class DryRun:
    def produce(self, topic: str, key: str, value: str) -> None:
        sys.stdout.write(f"{topic}\t{key}\t{value}\n")

    def poll(self) -> None:
        pass

    def flush(self) -> int:
        sys.stdout.flush()
        return 0

    errors = 0


class KafkaOut:
    def __init__(self, bootstrap: str):
        from confluent_kafka import Producer

        self.errors = 0
        self._producer = Producer({
            "bootstrap.servers": bootstrap,
            "client.id": "runnel-demo-producer",
            "linger.ms": 10,
            "enable.idempotence": True,
        })

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self.errors += 1
            if self.errors <= 10:
                print(f"producer: delivery to {msg.topic()} failed: {err}", file=sys.stderr)

    def produce(self, topic: str, key: str, value: str) -> None:
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, on_delivery=self._delivered)
                break
            except BufferError:  # local queue full: let deliveries drain
                self._producer.poll(0.1)
        self._producer.poll(0)

    def poll(self) -> None:
        self._producer.poll(0)

    def flush(self) -> int:
        return self._producer.flush(30)


def wait_for_broker(bootstrap: str, timeout: float):
    from confluent_kafka.admin import AdminClient

    # log_level 0: no librdkafka connection-refused spam while the broker starts; the loop
    # below reports instead.
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=5)
            return admin
        except Exception as e:  # KafkaException: transport failure, all brokers down, ...
            if time.monotonic() >= deadline:
                sys.exit(f"producer: Kafka at {bootstrap} not reachable after {timeout:.0f}s: {e}")
            print(f"producer: waiting for Kafka at {bootstrap} ({e})", file=sys.stderr)
            time.sleep(2)


def create_topics(admin, partitions: int) -> None:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    compact = {"cleanup.policy": "compact"}
    wanted = [
        NewTopic(EVENTS_TOPIC, num_partitions=partitions, replication_factor=1),
        NewTopic(RECS_TOPIC, num_partitions=1, replication_factor=1, config=compact),
        NewTopic(SINK_TOPIC, num_partitions=1, replication_factor=1, config=compact),
    ]
    for name, future in admin.create_topics(wanted, request_timeout=30).items():
        try:
            future.result()
            print(f"producer: created topic {name}", file=sys.stderr)
        except KafkaException as e:
            if e.args and e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                print(f"producer: topic {name} already exists", file=sys.stderr)
            else:
                sys.exit(f"producer: could not create topic {name}: {e}")


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)

    stopping = False

    def stop(signum, frame):  # PID 1 in a container has no default SIGTERM action
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    if args.dry_run:
        out = DryRun()
    else:
        admin = wait_for_broker(args.bootstrap, args.wait)
        if not args.no_create_topics:
            create_topics(admin, args.partitions)
        out = KafkaOut(args.bootstrap)

    # The table side first, so the join has something to match from the first event on.
    for uid in range(1, args.users + 1):
        out.produce(RECS_TOPIC, *recommendation(rng, uid, args.items))
    if out.flush() != 0 or out.errors:
        print("producer: some recommendations were not delivered", file=sys.stderr)
    log = sys.stderr
    print(f"producer: {args.users} recommendations -> {RECS_TOPIC}; "
          f"events -> {EVENTS_TOPIC} at {args.rate or 'max'}/s"
          + (f", {args.events} in total" if args.events else ", until stopped"), file=log)

    sent = 0
    started = last_report = time.monotonic()
    while not stopping and (args.events == 0 or sent < args.events):
        if args.bad_every and (sent + 1) % args.bad_every == 0:
            out.produce(EVENTS_TOPIC, *bad_event(rng, args.users))
        else:
            out.produce(EVENTS_TOPIC, *event(rng, args.users, args.items))
        sent += 1
        if args.rec_update_every and sent % args.rec_update_every == 0:
            out.produce(RECS_TOPIC, *recommendation(rng, rng.randint(1, args.users), args.items))

        now = time.monotonic()
        if args.rate > 0:
            # Pace against the start time, so the average rate is exact.
            ahead = started + sent / args.rate - now
            if ahead > 0:
                time.sleep(min(ahead, 1.0))
        else:
            out.poll()
        if not args.dry_run and now - last_report >= 10:
            print(f"producer: {sent} events ({sent / (now - started):.1f}/s)", file=log)
            last_report = now

    remaining = out.flush()
    elapsed = max(time.monotonic() - started, 1e-9)
    print(f"producer: done, {sent} events in {elapsed:.1f}s; "
          f"{out.errors} delivery errors, {remaining} undelivered", file=log)
    return 1 if (out.errors or remaining) else 0


if __name__ == "__main__":
    sys.exit(main())
