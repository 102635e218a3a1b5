"""`lookout ship`: a real nginx's log into a real Kafka-protocol broker, at-least-once."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson

from lookout.sources.tail import POSITION_FILE
from tests.fixtures.nginx import GOOD_HOST, Nginx


def client(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


class Reader:
    """Everything in a topic, read from the start with a plain consumer."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer

        self.topic = topic
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{topic}", "enable.auto.commit": False})
        self.assigned = False
        self.msgs: list = []

    def _assign(self) -> None:
        """Every partition from the start, once `ship` has created the topic (no group join: fast)."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        md = self.c.list_topics(self.topic, timeout=5).topics.get(self.topic)
        if md is None or md.error is not None or not md.partitions:
            time.sleep(0.1)
            return
        self.c.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in md.partitions])
        self.assigned = True

    def until(self, n: int, timeout: float = 30) -> list:
        deadline = time.monotonic() + timeout
        while len(self.msgs) < n and time.monotonic() < deadline:
            if not self.assigned:
                self._assign()
                continue
            m = self.c.poll(0.2)
            if m is not None and m.error() is None:
                self.msgs.append(m)
        assert len(self.msgs) >= n, f"{len(self.msgs)} messages in the topic, expected {n}"
        return self.msgs

    def settle(self, seconds: float = 1.5) -> list:
        """Read on for a while: anything more than expected would be a duplicate."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            m = self.c.poll(0.1)
            if m is not None and m.error() is None:
                self.msgs.append(m)
        return self.msgs

    def close(self) -> None:
        self.c.close()


def start_ship(cmd: list[str], log: Path, bootstrap: str, topic: str, state: Path, err: Path) -> subprocess.Popen:
    with open(err, "ab") as fh:
        return subprocess.Popen(
            [*cmd, "ship", str(log), "--kafka", bootstrap, "--topic", topic, "--state-dir", str(state), "--duration", "120"],
            stdout=subprocess.DEVNULL,
            stderr=fh,
        )


def test_ship_feeds_kafka_across_rotation_and_restart(
    nginx: Nginx, kafka_bootstrap: str, kafka_topic: Callable[[str], str], tmp_path: Path, lookout_cmd: list[str]
) -> None:
    topic, state, err = kafka_topic("ship"), tmp_path / "ship-state", tmp_path / "ship.err"
    nginx.burst([client(i) for i in range(40)])
    with open(nginx.access_log, "ab") as f:
        f.write(b"this line is no record\n")  # shipped as written, flagged, for the consumer to dead-letter
    nginx.burst([client(i) for i in range(40, 50)])
    proc = start_ship(lookout_cmd, nginx.access_log, kafka_bootstrap, topic, state, err)
    reader = Reader(kafka_bootstrap, topic)
    try:
        reader.until(51)
        nginx.rotate()
        nginx.burst([client(i) for i in range(50, 70)])
        reader.until(71)
        time.sleep(1.5)  # a commit interval: the position covers everything acknowledged
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, err.read_text()
        pos = orjson.loads((state / POSITION_FILE).read_bytes())
        assert pos["ino"] == os.stat(nginx.access_log).st_ino and pos["offset"] == nginx.access_log.stat().st_size
        nginx.burst([client(i) for i in range(70, 80)])  # while the shipper is stopped
        proc = start_ship(lookout_cmd, nginx.access_log, kafka_bootstrap, topic, state, err)
        msgs = reader.until(81)
        msgs = reader.settle()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.close()
    assert len(msgs) == 81, "a clean stop and restart must neither re-send nor skip"
    values = [m.value() for m in msgs]
    bad = [m for m in msgs if m.value() == b"this line is no record"]
    assert len(bad) == 1 and dict(bad[0].headers() or []) == {
        "lookout-reason": b"invalid-combined-line",
        "lookout-id": bad[0].key(),
    }
    assert all(dict(m.headers() or [])["lookout-id"] == m.key() for m in msgs)  # the record id, for the run
    recs = [orjson.loads(v) for v in values if v.startswith(b"{")]
    assert Counter(r["client_ip"] for r in recs) == Counter(client(i) for i in range(80))
    assert {(r["host"], r["server"], r["status"]) for r in recs} == {(GOOD_HOST, "test-nginx", "200")}
    assert all(float(r["@timestamp"]) > 1.6e9 for r in recs)  # $msec: event time from the log line
    keys = [m.key() for m in msgs]
    assert len(set(keys)) == len(keys)  # deterministic ids: <file fingerprint>-<byte offset>
    summaries = [ln for ln in err.read_text().splitlines() if ln.startswith("lookout ship stopped")]
    assert summaries[0].startswith("lookout ship stopped: 71 records") and "1 unreadable" in summaries[0]
    assert summaries[1].startswith("lookout ship stopped: 10 records")


def test_ship_killed_before_its_first_save_finds_the_log_renamed_while_down(
    nginx: Nginx, kafka_bootstrap: str, kafka_topic: Callable[[str], str], tmp_path: Path, lookout_cmd: list[str]
) -> None:
    """A first start saves the log's file at offset 0 before sending anything: killed before its
    next save, a restart reads that file (renamed beside the log meanwhile) before the new one."""
    topic, state, err = kafka_topic("ship-first"), tmp_path / "ship-state", tmp_path / "ship.err"
    proc = start_ship(lookout_cmd, nginx.access_log, kafka_bootstrap, topic, state, err)
    reader = Reader(kafka_bootstrap, topic)
    try:
        deadline = time.monotonic() + 20
        while not (state / POSITION_FILE).exists():
            assert time.monotonic() < deadline, f"no position saved at start:\n{err.read_text()}"
            assert proc.poll() is None, err.read_text()
            time.sleep(0.05)
        proc.kill()
        proc.wait(30)
        nginx.burst([client(i) for i in range(20)])
        nginx.rotate()
        nginx.burst([client(i) for i in range(20, 40)])
        proc = start_ship(lookout_cmd, nginx.access_log, kafka_bootstrap, topic, state, err)
        reader.until(40)
        msgs = reader.settle()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.close()
    recs = [orjson.loads(m.value()) for m in msgs]
    assert Counter(r["client_ip"] for r in recs) == Counter(client(i) for i in range(40))
    assert "rotated while stopped" in err.read_text()


def test_ship_waits_out_a_broker_outage(
    nginx: Nginx, kafka_broker, kafka_topic: Callable[[str], str], tmp_path: Path, lookout_cmd: list[str]
) -> None:
    """Records produced while the broker is away are delivered when it is back; none lost."""
    topic, state, err = kafka_topic("outage"), tmp_path / "ship-state", tmp_path / "ship.err"
    proc = start_ship(lookout_cmd, nginx.access_log, kafka_broker.bootstrap, topic, state, err)
    reader = Reader(kafka_broker.bootstrap, topic)
    try:
        nginx.burst([client(i) for i in range(20)])
        reader.until(20)
        kafka_broker.stop()
        nginx.burst([client(i) for i in range(20, 40)])
        time.sleep(3)
        kafka_broker.start()
        msgs = reader.until(40, timeout=60)
        msgs = reader.settle()
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
        reader.close()
    assert rc == 0, err.read_text()
    seen = Counter(orjson.loads(m.value())["client_ip"] for m in msgs)
    assert set(seen) == {client(i) for i in range(40)}  # at-least-once: all there (idempotence: no doubles)
    assert max(seen.values()) == 1
