"""lookout spark --kafka over a real broker (Tansu), with lookout's Python Data Source connector
(Spark's own Kafka connector is not on this machine's classpath), against the embedded engine
(`lookout run --kafka` on the same topic, and `lookout replay` on the same lines)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import confluent_kafka  # noqa: E402  (a hard requirement: an import error fails, never skips)
import confluent_kafka.admin  # noqa: E402
import pyspark  # noqa: E402,F401

from lookout.rules import load_rules_text
from lookout.spark.kafka import ensure_topics
from tests.spark_data import BYTE_LINES, INVALID_LINES, RULES_YAML, messy_bytes

EXE = Path(sys.executable).parent / "lookout"
RULES = load_rules_text(RULES_YAML)
NAMES = [r.name for r in RULES.rules]
DLQ = "test-inter-dlq"


def _produce(bootstrap: str, lines: list[bytes]) -> None:
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([confluent_kafka.admin.NewTopic("test-inter", 3, 1)]).values():
        f.result(10)
    prod = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, x in enumerate(lines):
        if x.strip():  # a Kafka message is one record; blank lines are not sent
            prod.produce("test-inter", x, partition=i % 3)
    assert prod.flush(30) == 0
    ensure_topics(bootstrap, NAMES + [DLQ], partitions=3)  # so the test can assign them now


def _replay(tmp_path: Path, lines: list[bytes]) -> tuple[dict[str, list[str]], list[tuple]]:
    data = tmp_path / "in.ndjson"
    data.write_bytes(b"\n".join(lines) + b"\n")
    subprocess.run(
        [
            str(EXE),
            "replay",
            str(data),
            "--rules",
            str(tmp_path / "rules.yaml"),
            "--out",
            str(tmp_path / "replay"),
            "--no-progress",
        ],
        check=True,
        capture_output=True,
    )
    want = {n: sorted((tmp_path / "replay" / f"{n}.jsonl").read_text().splitlines()) for n in NAMES}
    return want, _letters((tmp_path / "replay" / "rejected.jsonl").read_text().splitlines())


def _letters(lines: list) -> list[tuple]:
    return sorted((d["reason"], d["detail"], d["raw"], d.get("raw_base64")) for d in map(json.loads, lines))


class _Outputs:
    """Every rule's topic and the dead-letter topic, read from the start."""

    def __init__(self, bootstrap: str) -> None:
        self.got: dict[str, list[str]] = {n: [] for n in NAMES}
        self.dlq: list[str] = []
        self.cons = confluent_kafka.Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "spark-test", "enable.auto.commit": False}
        )
        self.cons.assign([confluent_kafka.TopicPartition(t, p, 0) for t in NAMES + [DLQ] for p in range(3)])

    def read(self, timeout: float = 1.0) -> None:
        for m in self.cons.consume(1000, timeout=timeout):
            if m.error():
                continue
            if m.topic() == DLQ:
                d = json.loads(m.value())
                assert d["source"] == "test-inter" and isinstance(d["offset"], int)
                self.dlq.append(m.value().decode())
            else:
                self.got[m.topic()].append(m.value().decode())

    def count(self) -> int:
        return sum(map(len, self.got.values()))


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_idle_input_closes_the_last_windows_as_run_does(kafka_broker, tmp_path: Path) -> None:  # noqa: ANN001
    """A finite topic: once it is read and quiet for --idle-timeout, Spark's heartbeat moves the
    watermark to now − lateness (the data is years old: every window closes), so Spark's results
    equal `lookout run --kafka`'s on the same topic, last windows included, with no more traffic."""
    (tmp_path / "rules.yaml").write_text(RULES_YAML)
    lines = messy_bytes(3000, seed=21)  # with every reason code in good and in broken UTF-8
    # issue 18 on Kafka: a record from 2100 mid-topic is dead-lettered (future-timestamp) as run
    # and replay do; were it let through, the watermark would leap to 2100 and all after it be late
    lines.insert(1500, b'{"@timestamp": 4102444800, "status": 200, "client_ip": "10.9.9.9", "host": "future.example.com"}')
    want, want_dlq = _replay(tmp_path, lines)
    assert [d[0] for d in want_dlq].count("future-timestamp") == 1
    bootstrap = kafka_broker.bootstrap
    _produce(bootstrap, lines)

    log = open(tmp_path / "spark.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            str(EXE),
            "spark",
            "--kafka",
            bootstrap,
            "--rules",
            str(tmp_path / "rules.yaml"),
            "--master",
            "local[2]",
            "--checkpoint",
            str(tmp_path / "ck"),
            "--connector",
            "python",
            "--idle-timeout",
            "5s",
        ],
        stdout=log,
        stderr=log,
    )
    out = _Outputs(bootstrap)
    expected = sum(len(v) for v in want.values())
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and (out.count() < expected or len(out.dlq) < len(want_dlq)):
            assert proc.poll() is None, (tmp_path / "spark.log").read_text()[-4000:]
            out.read()
        out.read(timeout=3.0)  # nothing more should come
        assert proc.poll() is None  # the windows were closed by idleness, not by a stop
    finally:
        _stop(proc)
        log.close()
        out.cons.close()

    # the embedded engine on the same topic (it writes its own copy to the result topics: read above already)
    run = subprocess.run(
        [
            str(EXE),
            "run",
            "--kafka",
            bootstrap,
            "--rules",
            str(tmp_path / "rules.yaml"),
            "--out",
            str(tmp_path / "run"),
            "--state-dir",
            str(tmp_path / "run-state"),
            "--idle-timeout",
            "3s",
            "--duration",
            "40",
            "--no-view",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    by_run = {n: sorted((tmp_path / "run" / f"{n}.jsonl").read_text().splitlines()) for n in NAMES}
    assert by_run == want  # the reference agrees with itself over Kafka
    for n in NAMES:
        assert sorted(out.got[n]) == by_run[n], n
    assert _letters(out.dlq) == want_dlq
    assert len(want_dlq) > len(INVALID_LINES) + len(BYTE_LINES) // 2
    assert sum(1 for d in want_dlq if d[0] == "invalid-utf8") == len(BYTE_LINES) // 2
    assert all(want[n] for n in NAMES if n != "goal2-topic")  # (too few 4xx per host here for goal 2)


def test_duration_ends_with_the_final_flush(kafka_broker, tmp_path: Path) -> None:  # noqa: ANN001
    """`--duration` stops by itself after the same final flush as --input: every open window
    closed and emitted (no heartbeat here: the idle timeout is an hour), results equal replay's."""
    (tmp_path / "rules.yaml").write_text(RULES_YAML)
    lines = messy_bytes(2000, seed=22)
    want, want_dlq = _replay(tmp_path, lines)
    bootstrap = kafka_broker.bootstrap
    _produce(bootstrap, lines)
    p = subprocess.run(
        [
            str(EXE),
            "spark",
            "--kafka",
            bootstrap,
            "--rules",
            str(tmp_path / "rules.yaml"),
            "--master",
            "local[2]",
            "--checkpoint",
            str(tmp_path / "ck"),
            "--connector",
            "python",
            "--idle-timeout",
            "1h",
            "--duration",
            "20",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-4000:]
    assert json.loads(p.stdout.strip().splitlines()[-1])["connector"] == "lookout-kafka"
    out = _Outputs(bootstrap)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and out.count() < sum(len(v) for v in want.values()):
            out.read()
        out.read(timeout=2.0)
    finally:
        out.cons.close()
    for n in NAMES:
        assert sorted(out.got[n]) == want[n], n
    assert _letters(out.dlq) == want_dlq
