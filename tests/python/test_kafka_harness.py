"""The Kafka test harness against the real broker, without Runnel: if these fail, the Kafka
end-to-end tests' failures are about the broker or the harness, not about Runnel."""

from __future__ import annotations

import json

from kafka_harness import Broker, header_dict, unique_name

T0 = 1_781_085_600_000


def test_produce_consume_watermarks_and_times(broker):
    topic = broker.create_topic(unique_name("h"), partitions=3)
    assert broker.partitions(topic) == [0, 1, 2]
    assert broker.high_watermarks(topic) == {0: 0, 1: 0, 2: 0}
    n = 30
    delivered = broker.produce(
        topic,
        [{"i": i} for i in range(n)],
        keys=[f"k{i}" if i % 4 else None for i in range(n)],
        partition=[i % 3 for i in range(n)],
        timestamps=[T0 + i * 1000 for i in range(n)],
        headers=[[("h", str(i).encode())] for i in range(n)],
    )
    assert [p for p, _ in delivered] == [i % 3 for i in range(n)]
    assert [off for _, off in delivered] == [i // 3 for i in range(n)]
    tomb = broker.produce(topic, [None, b"\xff raw"], keys=["gone", None], partition=0)
    assert tomb == [(0, 10), (0, 11)]
    assert broker.high_watermarks(topic) == {0: 12, 1: 10, 2: 10}

    records = broker.consume_records(topic)
    assert [(r.partition, r.offset) for r in records] == sorted(
        [(i % 3, i // 3) for i in range(n)] + [(0, 10), (0, 11)]
    )
    for r in records:
        if r.partition == 0 and r.offset >= 10:
            continue
        i = json.loads(r.value)["i"]
        assert r.key == (f"k{i}".encode() if i % 4 else None)
        assert r.timestamp == T0 + i * 1000  # CreateTime is kept
        assert header_dict(r.headers) == {"h": str(i)}
    assert (records[10].key, records[10].value) == (b"gone", None)  # a tombstone stays null
    assert (records[11].key, records[11].value) == (None, b"\xff raw")
    assert broker.consume_all(topic)[0] == (0, 0, None, b'{"i": 0}')

    # First offset with timestamp >= T per partition; past the last record: the high watermark.
    assert broker.offsets_for_times(topic, T0 + 4000) == {0: 2, 1: 1, 2: 1}
    assert broker.offsets_for_times(topic, T0) == {0: 0, 1: 0, 2: 0}
    assert broker.offsets_for_times(topic, T0 + 10**9)[1] == 10


def test_broker_restart_keeps_data_on_the_same_port():
    with Broker() as b:
        port = b.port
        topic = b.create_topic(unique_name("r"), partitions=2)
        b.produce(topic, [f"v{i}" for i in range(10)], partition=[i % 2 for i in range(10)])
        before = b.consume_all(topic)
        b.stop()
        b.start()
        assert b.port == port
        assert b.consume_all(topic) == before
        assert b.produce(topic, ["after"], partition=1) == [(1, 5)]
        b.kill9()
        b.start()
        assert b.high_watermarks(topic) == {0: 5, 1: 6}
