"""A standby without shared disk (issue 14, item 4): `run --kafka` also writes its checkpoint to
the compacted topic `lookout-checkpoints`; a second instance on its own state dir stands by and,
when the active one is SIGKILLed, restores the last checkpoint from the topic and resumes from its
positions: every result present, repeats only exact and only of what came after that checkpoint.
A checkpoint torn or corrupted in the topic is rejected (CRC) and the one before is used.
Real components: the Kafka-protocol broker (Tansu)."""

from __future__ import annotations

import re
import signal
import threading
import time
import zlib
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from lookout.checkpoint import load_meta
from tests.fixtures.kafka import ProxiedBroker
from tests.integration.kafka.test_kafka import (
    GOALS,
    Run,
    assert_topics_match,
    create_topic,
    file_counts,
    generate,
    produce,
    read_topic,
    replay,
)

pytestmark = pytest.mark.timeout(400)
TOPIC = "lookout-checkpoints"
GROUP = b"lookout-test-inter/"


def _lines_upto(path: Path, size: int) -> int:
    return path.read_bytes()[:size].count(b"\n") if path.exists() else 0


def _checkpoint_messages(bs: str) -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
    return read_topic(bs, TOPIC)


def _wait_all_results(bs: str, expected: dict[str, list[bytes]], run: Run, timeout: float = 120) -> None:
    """Until every goal topic holds each of the replay's results (by id, duplicates aside)."""
    deadline = time.monotonic() + timeout
    while True:
        assert run.proc.poll() is None, run.text()[-3000:]
        got = {g: {v for _, v, _ in read_topic(bs, g, settle=0.3)} for g in GOALS}
        if all(len(got[g]) >= len(expected[g]) for g in GOALS):
            return
        assert time.monotonic() < deadline, f"{ {g: len(v) for g, v in got.items()} }\n{run.text()[-3000:]}"
        time.sleep(1)


def test_standby_on_its_own_state_dir_takes_over_from_the_topic_checkpoint(
    kafka_broker: ProxiedBroker, lookout_cmd: list[str], tmp_path: Path
) -> None:
    bs = kafka_broker.bootstrap
    lines = generate(lookout_cmd, tmp_path / "in.ndjson", 60_000, seed=13)
    expected = replay(lookout_cmd, tmp_path / "in.ndjson", tmp_path / "replay")
    create_topic(bs, "test-inter", 3)
    produce(bs, "test-inter", lines[:30_000])
    # no idle close before the rest arrives (the clock would pass every window of 2022's data)
    a = Run(lookout_cmd, bs, tmp_path, "a", state="state-a", out="out-a", idle="60s")
    a.wait_log("holding the input lock")
    b = Run(lookout_cmd, bs, tmp_path, "b", state="state-b", out="out-b", idle="6s")
    b.wait_log("standing by", timeout=40)
    live = threading.Thread(target=produce, args=(bs, "test-inter", lines[30_000:]), kwargs={"rate": 6_000})
    live.start()
    deadline = time.monotonic() + 60
    while (load_meta(tmp_path / "state-a") or {}).get("position") is None or file_counts(a.out)["goal4-topic"] < 50:
        assert time.monotonic() < deadline, a.text()
        time.sleep(0.1)
    time.sleep(2.5)  # mid-stream: input still arriving, results after the last checkpoint
    a.stop(signal.SIGKILL)
    killed = time.monotonic()
    meta = load_meta(tmp_path / "state-a")
    assert meta is not None
    after_ckpt = sum(
        (a.out / f"{g}.jsonl").read_bytes().count(b"\n") - _lines_upto(a.out / f"{g}.jsonl", meta["sinks"]["files"][g])
        for g in GOALS
    )
    emitted = sum(file_counts(a.out).values())
    b.wait_log("kafka: reading test-inter partitions", timeout=40)
    took = time.monotonic() - killed
    print(f"takeover {took:.1f}s after SIGKILL")
    live.join()
    assert "restored the checkpoint of commit" in b.text() and "(from the checkpoint)" in b.text(), b.text()
    seq = int(re.search(r"restored the checkpoint of commit (\d+)", b.text()).group(1))
    assert seq >= meta["seq"] - 1, (seq, meta["seq"])  # the last commit, or (replica not yet acknowledged) the one before
    _wait_all_results(bs, expected, b)
    assert b.stop() == 0, b.text()[-3000:]
    copies = assert_topics_match(bs, expected)
    print(
        f"takeover {took:.1f}s after SIGKILL; {copies} repeated results on the goal topics; A had emitted {emitted}, "
        f"{after_ckpt} after its last local checkpoint"
    )
    assert took < 30
    # repeats only of what came after the restored checkpoint: at most A's results after its last
    # local commit, one commit's worth (twice A's mean results per commit: a loaded machine makes
    # fewer, bigger commits), and one more when the replica was a commit behind. The files alone
    # do not bound it: the Kafka producer sends from its own thread while the file sink buffers,
    # so the topics can hold results of the unfinished interval that SIGKILL took from the files
    # (CI, at load: 33 repeats with 0 lines after the checkpoint in A's files)
    per_commit = 2 * emitted // max(1, meta["seq"]) + 10
    bound = 2 * after_ckpt + per_commit * (2 if seq < meta["seq"] else 1)
    assert copies <= bound, (copies, bound, after_ckpt, emitted, seq, meta["seq"])
    assert copies < emitted / 2, (copies, emitted)  # re-reading the topic from its start would repeat them all
    # created compacted, with segments small enough for compaction to keep it near one generation
    from confluent_kafka.admin import AdminClient, ConfigResource

    res = ConfigResource(ConfigResource.Type.TOPIC, TOPIC)
    admin = AdminClient({"bootstrap.servers": bs})
    conf = admin.describe_configs([res])[res].result(10)
    assert conf["cleanup.policy"].value == "compact", {k: v.value for k, v in conf.items()}
    # the replica is bounded: a commit's record, not the whole state, and one generation kept live
    msgs = _checkpoint_messages(bs)
    manifests = [v for k, v, _ in msgs if k == GROUP + b"m"]
    deltas = [r for m in manifests for r in orjson.loads(m)["records"][1:2]]
    assert deltas, "no delta was replicated"
    per_commit = sum(len(v or b"") for k, v, _ in msgs if k != GROUP + b"m") / max(1, len(manifests))
    print(f"checkpoint topic: {len(manifests)} commits, {per_commit / 1024:.1f} KiB per commit on average")


def test_a_corrupt_checkpoint_in_the_topic_is_rejected_and_the_one_before_used(
    kafka_broker: ProxiedBroker, lookout_cmd: list[str], tmp_path: Path
) -> None:
    bs = kafka_broker.bootstrap
    lines = generate(lookout_cmd, tmp_path / "in.ndjson", 40_000, seed=17)
    expected = replay(lookout_cmd, tmp_path / "in.ndjson", tmp_path / "replay")
    create_topic(bs, "test-inter", 3)
    a = Run(lookout_cmd, bs, tmp_path, "a", state="state-a", out="out-a", idle="60s")
    a.wait_log("holding the input lock")
    produce(bs, "test-inter", lines[:20_000], rate=8_000)
    deadline = time.monotonic() + 60
    while (load_meta(tmp_path / "state-a") or {}).get("stats", {}).get("lines", 0) < 20_000:
        assert time.monotonic() < deadline, a.text()
        time.sleep(0.2)
    time.sleep(1.5)
    a.stop(signal.SIGKILL)
    produce(bs, "test-inter", lines[20_000:])  # all there before B starts: its idle close comes after
    # the last commit's record in the topic: one chunk overwritten with flipped bytes (same key)
    msgs = _checkpoint_messages(bs)
    man = orjson.loads([v for k, v, _ in msgs if k == GROUP + b"m"][-1])
    n = len(man["records"]) - 1
    assert n >= 1, man  # a snapshot and at least one delta
    key = GROUP + f"c/{man['session']}/{man['gen']}/{n}/0".encode()
    chunk = {k: v for k, v, _ in msgs}[key]
    bad = bytes(b ^ 0x5A for b in chunk[:64]) + chunk[64:]
    assert zlib.crc32(bad) != zlib.crc32(chunk)
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bs})
    p.produce(TOPIC, value=bad, key=key, partition=0)
    assert p.flush(10) == 0
    # a new instance on its own state dir: rejects the corrupt record, restores the commit before
    b = Run(lookout_cmd, bs, tmp_path, "b", state="state-b", out="out-b")
    b.wait_log("kafka: reading test-inter partitions", timeout=60)
    text = b.text()
    assert f"record {n} fails its CRC; rejected, falling back to the commit before it" in text, text
    assert "restored the checkpoint of commit" in text and "(from the checkpoint)" in text, text
    _wait_all_results(bs, expected, b)
    assert b.stop() == 0, b.text()[-3000:]
    assert_topics_match(bs, expected)
    # and with the snapshot itself corrupt, nothing whole is left in the topic: the input is read
    # from its beginning (exact repeats only) and the log says so
    msgs = _checkpoint_messages(bs)
    live: dict[bytes, bytes | None] = {}
    for k, v, _ in msgs:
        live[k] = v
    man = orjson.loads(live[GROUP + b"m"])
    key = GROUP + f"c/{man['session']}/{man['gen']}/0/0".encode()
    p.produce(TOPIC, value=b"\x00" * 10, key=key, partition=0)
    assert p.flush(10) == 0
    c = Run(lookout_cmd, bs, tmp_path, "c", state="state-c", out="out-c")
    c.wait_log("kafka: reading test-inter partitions", timeout=60)
    assert "record 0 is truncated" in c.text() or "record 0 fails its CRC" in c.text(), c.text()
    assert "from the beginning: no checkpoint yet" in c.text(), c.text()
    c.wait_results({g: len(v) for g, v in expected.items()})  # its own files: everything, read again
    assert c.stop() == 0
    counts: dict[str, int] = defaultdict(int)
    for g in GOALS:
        counts[g] = len((c.out / f"{g}.jsonl").read_bytes().splitlines())
    assert counts == {g: len(v) for g, v in expected.items()}


def test_standby_sends_the_notifications_the_dead_instance_had_not_delivered(
    kafka_broker: ProxiedBroker, lookout_cmd: list[str], tmp_path: Path, receiver
) -> None:
    """At least once across a takeover: A's undelivered notifications (its receiver down) ride in
    the topic checkpoint; B adopts them into its own outbox and sends them. Without that, B restores
    A's open incidents, never derives their `firing` again, and the receiver never hears of them."""
    from importlib.resources import files

    bs = kafka_broker.bootstrap
    receiver.answer = lambda path, body: 503  # down: A keeps everything in its outbox
    rules = tmp_path / "rules.yaml"
    defaults = files("lookout").joinpath("defaults/rules.yaml").read_text()
    rules.write_text(defaults + f'\nnotify:\n  - {{type: webhook, url: "{receiver.url}/hook", name: hook}}\n')
    lines = generate(lookout_cmd, tmp_path / "in.ndjson", 60_000, seed=13)
    create_topic(bs, "test-inter", 3)
    produce(bs, "test-inter", lines[:30_000])
    extra = ("--rules", str(rules))
    a = Run(lookout_cmd, bs, tmp_path, "a", state="state-a", out="out-a", idle="60s", extra=extra)
    a.wait_log("holding the input lock")
    b = Run(lookout_cmd, bs, tmp_path, "b", state="state-b", out="out-b", idle="6s", extra=extra)
    b.wait_log("standing by", timeout=40)
    deadline = time.monotonic() + 90
    while not (load_meta(tmp_path / "state-a") or {}).get("outbox"):
        assert time.monotonic() < deadline, a.text()[-3000:]
        time.sleep(0.2)
    live = threading.Thread(target=produce, args=(bs, "test-inter", lines[30_000:]), kwargs={"rate": 6_000})
    live.start()  # input keeps coming, so A keeps committing
    seq = load_meta(tmp_path / "state-a")["seq"]
    while load_meta(tmp_path / "state-a")["seq"] < seq + 2:  # two more commits: the topic has it too
        assert time.monotonic() < deadline, a.text()[-3000:]
        time.sleep(0.2)
    a.stop(signal.SIGKILL)
    owed = {k for _, k, _ in load_meta(tmp_path / "state-a")["outbox"]}
    assert owed and not receiver.accepted()
    receiver.answer = lambda path, body: 200
    live.join()
    b.wait_log("kafka: reading test-inter partitions", timeout=40)

    def delivered() -> set[str]:
        return {r.headers.get("idempotency-key", "") for r in receiver.accepted()}

    receiver.wait_for(lambda: owed <= delivered(), 90, f"the {len(owed)} notifications A owed")
    assert "sent from here" in b.text(), b.text()[-3000:]
    assert b.stop() == 0, b.text()[-3000:]
