"""`lookout run --kafka` with idle partitions and a record from the future (issues 16, 18, and
issue 14 item 6), against a real Kafka-protocol broker (Tansu) per test."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fixtures.kafka import ProxiedBroker
from tests.integration.kafka.test_kafka import (  # (leftover runs are killed by this folder's conftest)
    GOALS,
    Run,
    assert_topics_match,
    counts,
    create_topic,
    file_counts,
    generate,
    produce,
    read_topic,
    replay,
)

pytestmark = pytest.mark.timeout(240)
BASE = 1_659_509_400  # 2022-08-03T06:50:00Z, a whole minute


def produce_to(bootstrap: str, topic: str, by_partition: dict[int, list[bytes]]) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 10})
    for part, lines in by_partition.items():
        for line in lines:
            p.produce(topic, value=line, partition=part)
    assert p.flush(30) == 0


def _rec(ts: float, i: int) -> bytes:
    return orjson.dumps(
        {
            "@timestamp": f"{ts:.3f}",
            "client_ip": f"10.0.{i % 50}.1",
            "host": f"h{i % 3}.example.com",
            "status": "200" if i % 31 else "404",
            "request_time": "0.1",
            "country": ["US", "DE"][i % 2],
        }
    )


def test_future_record_is_rejected_and_moves_no_partition_watermark(
    kafka_broker: ProxiedBroker, lookout_cmd: list[str], tmp_path: Path
) -> None:
    """One record stamped in the year 2100 among 3,000 on 3 partitions: dead-lettered
    `future-timestamp` on the DLQ topic, zero late, the goal topics hold exactly the replay of
    the records without it (no window of the year 2100 either)."""
    bs = kafka_broker.bootstrap
    lines = generate(lookout_cmd, tmp_path / "in.ndjson", 3000, seed=9)
    (tmp_path / "clean.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    expected = replay(lookout_cmd, tmp_path / "clean.ndjson", tmp_path / "replay")
    future = orjson.dumps({**orjson.loads(lines[1000]), "@timestamp": "4102444800", "status": "200"})
    create_topic(bs, "test-inter", 3)
    produce(bs, "test-inter", lines[:1000] + [future] + lines[1000:], partitions=3)
    run = Run(lookout_cmd, bs, tmp_path, "run")
    run.wait_results(counts(expected))
    time.sleep(3)  # anything more (a window of 2100) would show up now
    deadline = time.monotonic() + 30
    while not read_topic(bs, "test-inter-dlq"):
        assert time.monotonic() < deadline, run.text()
        time.sleep(0.2)
    assert run.stop() == 0
    assert file_counts(run.out) == counts(expected)
    assert "1 rejected, 0 late" in run.text(), run.text()
    ((_, value, _),) = read_topic(bs, "test-inter-dlq")
    dl = orjson.loads(value)
    assert dl["reason"] == "future-timestamp" and dl["source"] == "test-inter/1" and dl["line"] == 1000 // 3
    assert dl["raw"] == future.decode()
    assert assert_topics_match(bs, expected) == 0


def test_idle_and_empty_partitions_release_the_watermark_on_a_timer(
    kafka_broker: ProxiedBroker, lookout_cmd: list[str], tmp_path: Path
) -> None:
    """Issue 14 item 6 / issue 16: partition 0 holds 2 minutes of a backlog, partition 1 five,
    partition 2 nothing; then silence. Once the partitions are at their end and quiet for the
    idle grace (2 s), the watermark is the highest event time - lateness: the minutes the data
    has passed come out within seconds, long before the idle timeout (120 s), and the minute
    the watermark has not passed stays open."""
    bs = kafka_broker.bootstrap
    p0 = [_rec(BASE + 0.5 * i, i) for i in range(240)]  # 06:50:00 .. 06:51:59.5
    p1 = [_rec(BASE + 0.5 * i + 0.25, i + 7) for i in range(560)]  # .. 06:54:39.75
    merged = sorted(p0 + p1, key=lambda x: float(orjson.loads(x)["@timestamp"]))
    (tmp_path / "all.ndjson").write_bytes(b"\n".join(merged) + b"\n")
    expected = replay(lookout_cmd, tmp_path / "all.ndjson", tmp_path / "replay")
    wm = (BASE + 279.75 - 10) * 1000  # ms: highest event time - lateness
    passed = {g: [x for x in expected[g] if _end_ms(x) <= wm] for g in GOALS}
    assert len(passed["goal3-topic"]) == 8 and len(passed["goal3-topic"]) < len(expected["goal3-topic"])
    create_topic(bs, "test-inter", 3)
    produce_to(bs, "test-inter", {0: p0, 1: p1})
    t0 = time.monotonic()
    run = Run(lookout_cmd, bs, tmp_path, "run", idle="120s")
    run.wait_results(counts(passed), timeout=30)
    took = time.monotonic() - t0
    time.sleep(2)
    assert file_counts(run.out) == counts(passed)  # the last minute is not closed by the timer
    assert run.stop() == 0
    assert "0 late" in run.text() and "the watermark follows the clock" not in run.text(), run.text()
    for g in GOALS:
        assert sorted((run.out / f"{g}.jsonl").read_bytes().splitlines()) == sorted(passed[g]), g
    print(f"minutes the data passed emitted {took:.1f} s after start (idle timeout 120 s)")


def _end_ms(result: bytes) -> int:
    from datetime import datetime

    end: Any = orjson.loads(result)["window"]["end"]
    return int(datetime.fromisoformat(end).timestamp() * 1000)
