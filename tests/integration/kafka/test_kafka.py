"""`lookout run --kafka` against a real Kafka-protocol broker (Tansu), run as a real subprocess.

Each test gets its own broker (fixture `kafka_broker`, behind a fault proxy), so the goal topics
of one test never mix with another's. The reference answer is always `lookout replay` of the
very records that went through the broker.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from lookout.checkpoint import load_meta
from tests.fixtures.kafka import ProxiedBroker
from tests.fixtures.ports import free_port

GOALS = ["goal1-topic", "goal2-topic", "goal3-topic", "goal4-topic"]
pytestmark = pytest.mark.timeout(240)
_RUNS: list[subprocess.Popen[bytes]] = []


def kill_leftover_runs() -> None:
    """A failed test must not leave `lookout run` processes behind (the autouse fixture in this
    folder's conftest calls it after every test; the supervised child dies with its parent)."""
    while _RUNS:
        proc = _RUNS.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- helpers


def generate(lookout_cmd: list[str], path: Path, n: int, seed: int = 7) -> list[bytes]:
    subprocess.run([*lookout_cmd, "generate", str(n), "--out", str(path), "--seed", str(seed)], check=True)
    return path.read_bytes().splitlines()


def create_topic(bootstrap: str, topic: str, partitions: int = 3) -> None:
    from lookout.kafka.admin import ensure_topics
    from lookout.kafka.config import KafkaConnection

    ensure_topics(KafkaConnection(bootstrap), {topic: partitions})


def produce(bootstrap: str, topic: str, lines: list[bytes], partitions: int | None = 3, rate: float | None = None) -> None:
    """Round-robin over partitions (each partition in file order), or the default partitioner."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 10})
    t0 = time.monotonic()
    for i, line in enumerate(lines):
        kw: dict[str, Any] = {"partition": i % partitions} if partitions else {}
        while True:
            try:
                p.produce(topic, value=line, **kw)
                break
            except BufferError:
                p.poll(0.05)
        if rate:
            while t0 + (i + 1) / rate > time.monotonic():
                p.poll(0.01)
    assert p.flush(30) == 0


def read_topic(bootstrap: str, topic: str, settle: float = 1.0) -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
    """Every message of a topic: (key, value, headers), read until all partitions are at their end."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False, "enable.partition.eof": True}
    )
    md = c.list_topics(topic, timeout=10)
    parts = sorted(md.topics[topic].partitions)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out = []
    at_end: set[int] = set()
    deadline = time.monotonic() + 30
    while len(at_end) < len(parts) and time.monotonic() < deadline:
        for m in c.consume(1000, settle):
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
                continue
            at_end.discard(m.partition())
            out.append((m.key(), m.value(), dict(m.headers() or [])))
    c.close()
    assert len(at_end) == len(parts), f"{topic}: did not reach the end of every partition"
    return out


def replay(lookout_cmd: list[str], path: Path, out: Path) -> dict[str, list[bytes]]:
    subprocess.run([*lookout_cmd, "replay", str(path), "--out", str(out), "--json"], check=True, capture_output=True)
    return {g: (out / f"{g}.jsonl").read_bytes().splitlines() for g in GOALS}


def file_counts(out: Path) -> dict[str, int]:
    counts = {}
    for g in GOALS:
        p = out / f"{g}.jsonl"
        counts[g] = p.read_bytes().count(b"\n") if p.exists() else 0
    return counts


class Run:
    """`lookout run --kafka` as a subprocess, its stderr in a file."""

    def __init__(
        self,
        lookout_cmd: list[str],
        bootstrap: str,
        tmp: Path,
        name: str,
        topic: str = "test-inter",
        state: str = "state",
        out: str = "out",
        idle: str = "2s",
        extra: tuple[str, ...] = (),
    ) -> None:
        self.log = tmp / f"{name}.log"
        self.out = tmp / out
        self.proc = subprocess.Popen(
            [
                *lookout_cmd,
                "run",
                "--kafka",
                bootstrap,
                "--topic",
                topic,
                "--idle-timeout",
                idle,
                "--no-view",
                "--state-dir",
                str(tmp / state),
                "--out",
                str(self.out),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "wb"),
        )  # noqa: SIM115
        _RUNS.append(self.proc)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert self.proc.poll() is None, f"lookout run exited ({self.proc.returncode}):\n{self.text()}"
            assert time.monotonic() < deadline, f"{needle!r} not logged within {timeout} s:\n{self.text()}"
            time.sleep(0.1)

    def wait_results(self, expected: dict[str, int], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while file_counts(self.out) != expected:
            assert self.proc.poll() is None, f"lookout run exited ({self.proc.returncode}):\n{self.text()}"
            assert time.monotonic() < deadline, f"results {file_counts(self.out)} != {expected}:\n{self.text()[-3000:]}"
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(60)


def assert_topics_match(bootstrap: str, expected: dict[str, list[bytes]], rules_group_by: dict[str, str] | None = None) -> int:
    """Each goal topic holds exactly the replay's results; repeats only as exact copies (same id,
    same value). Returns how many exact copies there were."""
    group_by = rules_group_by or {
        "goal1-topic": "client_ip",
        "goal2-topic": "host",
        "goal3-topic": "country",
        "goal4-topic": "host",
    }
    copies = 0
    for g in GOALS:
        msgs = read_topic(bootstrap, g)
        by_id: dict[bytes, set[bytes]] = defaultdict(set)
        for key, value, headers in msgs:
            assert key is not None and key.decode() == str(orjson.loads(value)[group_by[g]]), (g, key, value)
            by_id[headers["lookout-id"]].add(value)
        bad = {k: v for k, v in by_id.items() if len(v) > 1}
        assert not bad, f"{g}: one id with different values: {list(bad.items())[:3]}"
        distinct = sorted(next(iter(v)) for v in by_id.values())
        assert distinct == sorted(expected[g]), f"{g}: {len(distinct)} distinct results, replay has {len(expected[g])}"
        copies += len(msgs) - len(distinct)
    return copies


def counts(expected: dict[str, list[bytes]]) -> dict[str, int]:
    return {g: len(v) for g, v in expected.items()}


# ---------------------------------------------------------------- tests


def test_backlog_on_3_partitions_equals_replay(kafka_broker: ProxiedBroker, lookout_cmd: list[str], tmp_path: Path) -> None:
    """Each partition holds every third record: one consume batch of a partition spans minutes of
    event time, so a watermark taken over all partitions would make the others' records late."""
    bs = kafka_broker.bootstrap
    lines = generate(lookout_cmd, tmp_path / "in.ndjson", 60_000)
    expected = replay(lookout_cmd, tmp_path / "in.ndjson", tmp_path / "replay")
    create_topic(bs, "test-inter", 3)
    produce(bs, "test-inter", lines, partitions=3)
    port = free_port()
    run = Run(lookout_cmd, bs, tmp_path, "run", extra=("--http", f"127.0.0.1:{port}"))
    run.wait_results(counts(expected))
    # consumer lag per partition, read to the end: 0 on each of the 3
    from tests.integration.dashboard.test_metrics import scrape

    lag = scrape(f"http://127.0.0.1:{port}")["lookout_kafka_consumer_lag"]
    assert sorted((lb["topic"], lb["partition"], v) for lb, v in lag) == [("test-inter", str(p), 0.0) for p in range(3)]
    assert run.stop() == 0
    assert "0 late" in run.text() and "0 rejected" in run.text(), run.text()
    for g in GOALS:  # the run's own files too
        assert sorted((run.out / f"{g}.jsonl").read_bytes().splitlines()) == sorted(expected[g])
    assert assert_topics_match(bs, expected) == 0
    assert read_topic(bs, "test-inter-dlq") == []

    # incidents: topic lookout-incidents, key = incident id; the resolved ones equal the replay's
    def resolved(docs: list[dict]) -> list[tuple]:
        return sorted(
            (d["rule"], str(d["key"]), d["start"], d["end"], d["windows"], d["peak"]) for d in docs if d["status"] == "resolved"
        )

    want = [orjson.loads(x) for x in (tmp_path / "replay" / "incidents.jsonl").read_bytes().splitlines()]
    msgs = read_topic(bs, "lookout-incidents")
    got = [orjson.loads(v) for _, v, _ in msgs]
    assert want and resolved(got) == resolved(want)
    assert all(k.decode() == orjson.loads(v)["id"] for k, v, _ in msgs)


def test_seed_flow_produce_run_consume_and_kafka_python(
    kafka_broker: ProxiedBroker, lookout_cmd: list[str], tmp_path: Path
) -> None:
    """The seed README's flow: `lookout produce`, `lookout run --kafka`, `lookout consume goalN-topic`,
    and the seed's own client (kafka-python) reading the goal topics."""
    bs = kafka_broker.bootstrap
    env_cmd = {"env": {**__import__("os").environ, "LOOKOUT_KAFKA": bs}}
    p = subprocess.run(
        [*lookout_cmd, "produce", "--rate", "0", "--count", "5000", "--seed", "3"], capture_output=True, text=True, **env_cmd
    )
    assert p.returncode == 0, p.stderr
    assert "produced 5,000 messages to test-inter" in p.stderr and "msg/s" in p.stderr
    raw = subprocess.run(
        [*lookout_cmd, "consume", "test-inter", "--from-beginning", "--timeout", "1.5"],
        capture_output=True,
        check=True,
        **env_cmd,
    ).stdout
    assert raw.count(b"\n") == 5000
    # consume prints partition by partition; the producer sent them in event-time order
    sent = sorted(raw.splitlines(), key=lambda ln: float(orjson.loads(ln)["@timestamp"]))
    (tmp_path / "sent.ndjson").write_bytes(b"\n".join(sent) + b"\n")
    expected = replay(lookout_cmd, tmp_path / "sent.ndjson", tmp_path / "replay")
    assert sum(map(len, expected.values())) > 0
    run = Run(lookout_cmd, bs, tmp_path, "run")
    run.wait_results(counts(expected))
    assert run.stop() == 0
    for g in GOALS:
        got = subprocess.run(
            [*lookout_cmd, "consume", g, "--from-beginning", "--timeout", "1.5"], capture_output=True, check=True, **env_cmd
        ).stdout.splitlines()
        assert sorted(got) == sorted(expected[g]), g
    # pretty output on request (a terminal gets it by default)
    pretty = subprocess.run(
        [*lookout_cmd, "consume", "goal4-topic", "--from-beginning", "--max-messages", "1", "--pretty"],
        capture_output=True,
        text=True,
        check=True,
        **env_cmd,
    ).stdout
    assert "goal4-topic[" in pretty and '"avg(request_time)"' in pretty

    from kafka import KafkaConsumer  # the seed's test/kafka-consumer.py client

    for g in GOALS:
        kc = KafkaConsumer(g, bootstrap_servers=bs, auto_offset_reset="earliest", consumer_timeout_ms=2500, group_id=None)
        got = [m.value for m in kc]
        kc.close()
        assert sorted(got) == sorted(expected[g]), f"kafka-python read {len(got)} from {g}"


def test_sigkill_mid_stream_and_restart(kafka_broker: ProxiedBroker, lookout_cmd: list[str], tmp_path: Path) -> None:
    """Half the records are a backlog, the rest arrive while running; SIGKILL in the middle, then
    restart: every result is produced, repeats are exact copies, the files hold no repeats."""
    bs = kafka_broker.bootstrap
    lines = generate(lookout_cmd, tmp_path / "in.ndjson", 120_000, seed=11)
    expected = replay(lookout_cmd, tmp_path / "in.ndjson", tmp_path / "replay")
    create_topic(bs, "test-inter", 3)
    produce(bs, "test-inter", lines[:60_000])
    run = Run(lookout_cmd, bs, tmp_path, "run1")
    run.wait_log("reading test-inter partitions")
    import threading

    live = threading.Thread(target=produce, args=(bs, "test-inter", lines[60_000:]), kwargs={"rate": 15_000})
    live.start()
    deadline = time.monotonic() + 60
    while not load_meta(tmp_path / "state") or file_counts(run.out)["goal4-topic"] < 100:
        assert time.monotonic() < deadline, run.text()
        time.sleep(0.1)
    time.sleep(1.5)  # some results produced after the last checkpoint
    run.stop(signal.SIGKILL)
    killed_at = file_counts(run.out)
    live.join()
    assert killed_at != counts(expected), "killed too late to test anything"
    run2 = Run(lookout_cmd, bs, tmp_path, "run2")
    run2.wait_log("(from the checkpoint)")
    run2.wait_results(counts(expected))
    assert run2.stop() == 0
    assert "0 late" in run2.text(), run2.text()
    for g in GOALS:  # files were cut back to the checkpoint: exactly the replay's results
        assert sorted((run.out / f"{g}.jsonl").read_bytes().splitlines()) == sorted(expected[g])
    copies = assert_topics_match(bs, expected)
    print(f"exact copies after SIGKILL: {copies}")


def test_broker_outage_while_running(kafka_broker: ProxiedBroker, lookout_cmd: list[str], tmp_path: Path) -> None:
    """The broker becomes unreachable for longer than the session timeout and the idle timeout
    mid-backlog: the run says so, waits (no window is closed for 'idle' input, during the outage
    or right after it), and carries on: nothing lost.

    The rest of the input is written only once the run is back (broker reachable, lock regained)
    and 1.5 s later, within the 4 s idle timeout counted from then. The old loop counted quiet
    from the last record before the outage and let the clock close every window about a second
    after the broker was back: the rest was all late (CI saw 391 of 400 goal-2 windows)."""
    bs = kafka_broker.bootstrap
    lines = generate(lookout_cmd, tmp_path / "in.ndjson", 100_000, seed=5)
    expected = replay(lookout_cmd, tmp_path / "in.ndjson", tmp_path / "replay")
    create_topic(bs, "test-inter", 3)
    produce(bs, "test-inter", lines[:70_000])
    run = Run(lookout_cmd, bs, tmp_path, "run", idle="4s")
    run.wait_log("reading test-inter partitions")
    deadline = time.monotonic() + 60
    while file_counts(run.out)["goal4-topic"] < 50:
        assert time.monotonic() < deadline, run.text()
        time.sleep(0.05)
    kafka_broker.stop()
    time.sleep(9)  # > session.timeout.ms (6 s) and > --idle-timeout
    assert run.proc.poll() is None, run.text()
    kafka_broker.start()
    run.wait_log("reachable again", timeout=60)
    run.wait_log("nobody else made progress; resuming", timeout=60)
    time.sleep(1.5)
    assert "input idle" not in run.text(), run.text()
    started = time.monotonic()
    produce(bs, "test-inter", lines[70_000:])
    assert time.monotonic() - started < 2.0, "producing took too long for the test's margin"
    run.wait_results(counts(expected), timeout=150)
    assert run.stop() == 0
    text = run.text()
    assert "unreachable" in text and "reachable again" in text, text
    assert "lost the input lock" in text and "nobody else made progress; resuming" in text, text
    assert "0 late" in text, text
    assert assert_topics_match(bs, expected) >= 0


def test_malformed_and_late_records_go_to_the_dlq(kafka_broker: ProxiedBroker, lookout_cmd: list[str], tmp_path: Path) -> None:
    bs = kafka_broker.bootstrap
    lines = generate(lookout_cmd, tmp_path / "in.ndjson", 3000)
    old = json.loads(lines[0])
    old["@timestamp"] = str(float(old["@timestamp"]) - 600)  # 10 minutes before the first record
    bad = [b"this is not json", b'["an", "array"]', b"", b'{"client_ip": "1.2.3.4", "status": "200"}', orjson.dumps(old)]
    create_topic(bs, "test-inter", 1)  # one partition: the late record surely comes after the others
    produce(bs, "test-inter", lines + bad, partitions=1)
    (tmp_path / "all.ndjson").write_bytes(
        b"\n".join(lines + [b"this is not json", b'["an", "array"]', b"null", bad[3], bad[4]]) + b"\n"
    )
    expected = replay(lookout_cmd, tmp_path / "all.ndjson", tmp_path / "replay")
    run = Run(lookout_cmd, bs, tmp_path, "run")
    run.wait_results(counts(expected))
    deadline = time.monotonic() + 30
    while len(read_topic(bs, "test-inter-dlq")) < 5:
        assert time.monotonic() < deadline, run.text()
        time.sleep(0.2)
    assert run.stop() == 0
    dlq = [orjson.loads(v) for _, v, _ in read_topic(bs, "test-inter-dlq")]
    by_line = {d["line"]: d for d in dlq}
    n = len(lines)
    assert sorted(by_line) == [n, n + 1, n + 2, n + 3, n + 4], dlq  # `line` is the offset
    assert all(d["source"] == "test-inter/0" for d in dlq)
    assert by_line[n]["reason"] == "invalid-json" and by_line[n]["raw"] == "this is not json"
    assert by_line[n + 1]["reason"] == "not-an-object"
    assert by_line[n + 2]["reason"] == "not-an-object"  # the empty message: dead-lettered, not skipped
    assert by_line[n + 3]["reason"] == "missing-timestamp"
    assert by_line[n + 4]["reason"] == "late" and "window closed" in by_line[n + 4]["detail"]
    # the same reasons, rules and raw lines as `lookout replay` gives for the same records
    ref = [orjson.loads(x) for x in (tmp_path / "replay" / "rejected.jsonl").read_bytes().splitlines()]
    assert [(d["reason"], d.get("rules"), d["raw"]) for d in ref] == [
        (by_line[n + i]["reason"], by_line[n + i].get("rules"), by_line[n + i]["raw"]) for i in range(5)
    ]
    assert "4 rejected, 1 late" in run.text(), run.text()
    assert_topics_match(bs, expected)


def test_second_instance_stands_by_and_takes_over(kafka_broker: ProxiedBroker, lookout_cmd: list[str], tmp_path: Path) -> None:
    """A second instance on the same input does not split the partitions: it stands by, and takes
    over (from the shared checkpoint) when the first dies."""
    bs = kafka_broker.bootstrap
    lines = generate(lookout_cmd, tmp_path / "in.ndjson", 60_000, seed=9)
    expected = replay(lookout_cmd, tmp_path / "in.ndjson", tmp_path / "replay")
    create_topic(bs, "test-inter", 3)
    produce(bs, "test-inter", lines[:30_000])
    a = Run(lookout_cmd, bs, tmp_path, "a", idle="60s")  # no idle close before the rest arrives
    a.wait_log("holding the input lock")
    b = Run(lookout_cmd, bs, tmp_path, "b")
    b.wait_log("standing by", timeout=40)
    assert "reading test-inter" not in b.text()
    a.stop(signal.SIGKILL)
    b.wait_log("took over the input lock", timeout=40)
    b.wait_log("(from the checkpoint)")
    produce(bs, "test-inter", lines[30_000:])
    b.wait_results(counts(expected))
    assert b.stop() == 0
    assert "0 late" in b.text(), b.text()
    assert_topics_match(bs, expected)
    # and a standby asked to stop while waiting exits cleanly
    c = Run(lookout_cmd, bs, tmp_path, "c", state="state-c", out="out-c")
    c.wait_log("holding the input lock")
    d = Run(lookout_cmd, bs, tmp_path, "d", state="state-d", out="out-d")
    d.wait_log("standing by", timeout=40)
    assert d.stop(signal.SIGINT) == 0
    assert c.stop() == 0


def test_produce_and_consume_on_the_shared_broker(
    kafka_bootstrap: str, kafka_topic: Any, lookout_cmd: list[str], tmp_path: Path
) -> None:
    """The session broker other suites use: `produce --input` sends lines as they are, `consume` returns them."""
    topic = kafka_topic("io")
    src = tmp_path / "lines.ndjson"
    src.write_bytes(b'{"a": 1}\nnot json at all\n{"b": [1, 2]}\n')
    p = subprocess.run(
        [*lookout_cmd, "produce", "--kafka", kafka_bootstrap, "--topic", topic, "--input", str(src), "--partitions", "1"],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0 and f"produced 3 messages to {topic}" in p.stderr, p.stderr
    out = subprocess.run(
        [
            *lookout_cmd,
            "consume",
            topic,
            "--kafka",
            kafka_bootstrap,
            "--from-beginning",
            "--max-messages",
            "3",
            "--timeout",
            "10",
        ],
        capture_output=True,
        check=True,
    ).stdout
    assert out == src.read_bytes()
