"""lookout spark --kafka over a real broker (Tansu), with lookout's Python Data Source connector
(Spark's own Kafka connector is not on this machine's classpath), against lookout replay."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path


from lookout.rules import load_rules_text
from lookout.spark.kafka import ensure_topics
from tests.spark_data import BYTE_LINES, INVALID_LINES, RULES_YAML, messy_bytes

import confluent_kafka  # noqa: E402  (a hard requirement: an import error fails, never skips)
import confluent_kafka.admin  # noqa: E402
import pyspark  # noqa: E402,F401

LATENESS_US = 10_000_000


def _end_us(line: str) -> int:
    end = json.loads(line)["window"]["end"]
    return int(datetime.fromisoformat(end.replace("Z", "+00:00")).timestamp() * 1_000_000)


def test_kafka_mode_matches_replay(kafka_broker, tmp_path: Path) -> None:  # noqa: ANN001
    rules = load_rules_text(RULES_YAML)
    names = [r.name for r in rules.rules]
    lines = messy_bytes(3000, seed=21)  # with every reason code in good and in broken UTF-8
    # A record an hour on closes every window of the data above on Spark too (the stream
    # has no end); compare the windows that closed.
    closing_ts = 1_659_509_400.0 + 3600  # the data spans a few seconds from 1659509400 (spark_data)
    closing = json.dumps({"client_ip": "10.9.9.9", "status": "200", "host": "closing.example.com",
                          "@timestamp": f"{closing_ts:.6f}", "request_time": "0.1"}).encode()
    lines.append(closing)
    data = tmp_path / "in.ndjson"
    data.write_bytes(b"\n".join(lines) + b"\n")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES_YAML)
    exe = Path(sys.executable).parent / "lookout"
    subprocess.run([str(exe), "replay", str(data), "--rules", str(rules_file), "--out", str(tmp_path / "replay"),
                    "--no-progress"], check=True, capture_output=True)
    cutoff = round(closing_ts * 1_000_000) - LATENESS_US
    want = {n: sorted(x for x in (tmp_path / "replay" / f"{n}.jsonl").read_text().splitlines() if _end_us(x) <= cutoff)
            for n in names}
    want_dlq = sorted((d["reason"], d["detail"], d["raw"], d.get("raw_base64")) for d in
                      map(json.loads, (tmp_path / "replay" / "rejected.jsonl").read_text().splitlines()))

    bootstrap = kafka_broker.bootstrap
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([confluent_kafka.admin.NewTopic("test-inter", 3, 1)]).values():
        f.result(10)
    prod = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, x in enumerate(lines):
        if x.strip():  # a Kafka message is one record; blank lines are not sent
            prod.produce("test-inter", x, partition=i % 3 if x != closing else 0)
    assert prod.flush(30) == 0
    ensure_topics(bootstrap, names + ["test-inter-dlq"], partitions=3)  # so the test can assign them now

    log = open(tmp_path / "spark.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([str(exe), "spark", "--kafka", bootstrap, "--rules", str(rules_file), "--master", "local[2]",
                             "--checkpoint", str(tmp_path / "ck"), "--connector", "python"], stdout=log, stderr=log)
    got: dict[str, list[str]] = {n: [] for n in names}
    dlq: list[tuple] = []
    expected = sum(len(v) for v in want.values())
    cons = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "spark-test", "enable.auto.commit": False})
    cons.assign([confluent_kafka.TopicPartition(t, p, 0) for t in names + ["test-inter-dlq"] for p in range(3)])
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and (sum(map(len, got.values())) < expected or len(dlq) < len(want_dlq)):
            assert proc.poll() is None, (tmp_path / "spark.log").read_text()[-4000:]
            for m in cons.consume(1000, timeout=1.0):
                if m.error():
                    continue
                if m.topic() == "test-inter-dlq":
                    d = json.loads(m.value())
                    assert d["source"] == "test-inter" and isinstance(d["offset"], int)
                    dlq.append((d["reason"], d["detail"], d["raw"], d.get("raw_base64")))
                else:
                    got[m.topic()].append(m.value().decode())
        for m in cons.consume(1000, timeout=2.0):  # nothing more should come
            if not m.error():
                (got.get(m.topic()) if m.topic() in got else []).append(m.value().decode())
    finally:
        cons.close()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    assert len(want_dlq) > len(INVALID_LINES) + len(BYTE_LINES) // 2
    assert sum(1 for d in want_dlq if d[0] == "invalid-utf8") == len(BYTE_LINES) // 2
    assert sorted(dlq) == want_dlq
    for n in names:
        assert sorted(got[n]) == want[n], n
    assert any(want[n] for n in ("goal1-topic", "goal3-topic", "goal4-topic"))
