"""One SIGTERM ends `lookout run` within `--stop-timeout`, whatever a sink or the broker does
(issue 14, item 5): exit 0, only what was acknowledged is committed, and a restart re-reads the
rest, so nothing is lost. Real components: the Kafka-protocol broker behind the fault proxy
(killed), and the OpenSearch-compatible server (SIGSTOPped)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.fixtures.elasticsearch import EsServer, http_json
from tests.fixtures.kafka import ProxiedBroker
from tests.integration.kafka.test_kafka import assert_topics_match, counts, create_topic, file_counts, generate, produce, replay

pytestmark = pytest.mark.timeout(300)
LOOKOUT = str(Path(sys.executable).parent / "lookout")
STOP_TIMEOUT = 5.0
SLACK = 1.5  # interpreter exit, signal delivery


def _start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([LOOKOUT, "run", "--no-view", *args], stdout=subprocess.DEVNULL, stderr=open(log, "ab"), env=env)  # noqa: SIM115


def _sigterm_and_time(proc: subprocess.Popen[bytes], log: Path) -> tuple[int, float]:
    assert proc.poll() is None, log.read_text()
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return rc, time.monotonic() - t0


@pytest.mark.parametrize("fault", ["gone", "hung"])
def test_broker_gone_sigterm_exits_within_stop_timeout_and_restart_loses_nothing(
    kafka_broker: ProxiedBroker, tmp_path: Path, fault: str
) -> None:
    """gone: connections refused. hung: the broker takes connections and requests and never answers
    (the producer's flush, the offset commit and the checkpoint topic's write all wait on it)."""
    bs = kafka_broker.bootstrap
    lookout = [LOOKOUT]
    lines = generate(lookout, tmp_path / "in.ndjson", 60_000, seed=11)
    expected = replay(lookout, tmp_path / "in.ndjson", tmp_path / "replay")
    create_topic(bs, "test-inter", 3)
    produce(bs, "test-inter", lines)
    log = tmp_path / "run.log"
    args = [
        "--kafka",
        bs,
        "--idle-timeout",
        "2s",
        "--state-dir",
        str(tmp_path / "state"),
        "--out",
        str(tmp_path / "out"),
        "--stop-timeout",
        f"{STOP_TIMEOUT}s",
    ]
    proc = _start(args, log)
    deadline = time.monotonic() + 90
    while file_counts(tmp_path / "out")["goal4-topic"] < 20:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    kafka_broker.stop() if fault == "gone" else kafka_broker.hang()
    time.sleep(3)  # results produced after this wait for a broker that is not there
    rc, took = _sigterm_and_time(proc, log)
    text = log.read_text()
    assert rc == 0, text
    assert took <= STOP_TIMEOUT + SLACK, f"took {took:.1f}s to stop:\n{text[-3000:]}"
    assert "re-read on restart" in text and "lookout run stopped:" in text, text[-3000:]
    print(f"stopped {took:.1f}s after SIGTERM with the broker {fault}")

    kafka_broker.start() if fault == "gone" else kafka_broker.resume()
    proc2 = _start([a if a != f"{STOP_TIMEOUT}s" else "10s" for a in args], log)
    try:
        deadline = time.monotonic() + 150
        while file_counts(tmp_path / "out") != counts(expected):
            assert proc2.poll() is None and time.monotonic() < deadline, (
                f"{file_counts(tmp_path / 'out')} != {counts(expected)}\n{log.read_text()[-3000:]}"
            )
            time.sleep(0.2)
        rc2, _ = _sigterm_and_time(proc2, log)
    finally:
        if proc2.poll() is None:
            proc2.kill()
            proc2.wait()
    assert rc2 == 0, log.read_text()[-3000:]
    for g in expected:  # files were cut back to the last acknowledged checkpoint: exactly the replay's results
        assert sorted((tmp_path / "out" / f"{g}.jsonl").read_bytes().splitlines()) == sorted(expected[g])
    assert_topics_match(bs, expected)


def test_broker_gone_before_the_first_checkpoint_restart_repeats_nothing_in_the_files(
    kafka_broker: ProxiedBroker, tmp_path: Path
) -> None:
    """The first results reach the files before the first commit (a backlog is read faster than
    the commit interval); with the broker lost then, the run stops without any checkpoint of its
    reading. The restart reads from the beginning, so it must also start the outputs from where
    they stood before anything was read: the result files end up exactly the replay's, not the
    first run's part followed by everything again (the CI failure: 311 results on goal1 for 159)."""
    from lookout.checkpoint import load_meta

    bs = kafka_broker.bootstrap
    lookout = [LOOKOUT]
    lines = generate(lookout, tmp_path / "in.ndjson", 60_000, seed=11)
    expected = replay(lookout, tmp_path / "in.ndjson", tmp_path / "replay")
    create_topic(bs, "test-inter", 3)
    produce(bs, "test-inter", lines)
    log, state, out = tmp_path / "run.log", tmp_path / "state", tmp_path / "out"
    args = ["--kafka", bs, "--idle-timeout", "2s", "--state-dir", str(state), "--out", str(out), "--stop-timeout", "3s"]
    proc = _start(args, log)
    deadline = time.monotonic() + 90
    while sum(file_counts(out).values()) == 0:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.005)
    kafka_broker.stop()  # the first commit's flush now waits for a broker that is not there
    written = file_counts(out)
    rc, _ = _sigterm_and_time(proc, log)
    assert rc == 0, log.read_text()
    meta = load_meta(state)
    # what this test is about: nothing of the input was checkpointed, results were written
    assert meta is None or meta["position"] is None, f"a commit got through first: {meta and meta['position']}"
    assert sum(written.values()) > 0

    kafka_broker.start()
    proc2 = _start(args, log)
    try:
        deadline = time.monotonic() + 150
        while file_counts(out) != counts(expected):
            assert proc2.poll() is None and time.monotonic() < deadline, (
                f"{file_counts(out)} != {counts(expected)} (first run wrote {written})\n{log.read_text()[-3000:]}"
            )
            assert all(n <= counts(expected)[g] for g, n in file_counts(out).items()), (  # already more than the replay: fail now
                f"{file_counts(out)} != {counts(expected)} (first run wrote {written})\n{log.read_text()[-3000:]}"
            )
            time.sleep(0.2)
        rc2, _ = _sigterm_and_time(proc2, log)
    finally:
        if proc2.poll() is None:
            proc2.kill()
            proc2.wait()
    assert rc2 == 0, log.read_text()[-3000:]
    for g in expected:
        assert sorted((out / f"{g}.jsonl").read_bytes().splitlines()) == sorted(expected[g])
    assert_topics_match(bs, expected)


def _count(url: str, index: str) -> int:
    status, body = http_json("GET", f"{url}/{index}/_count", timeout=5)
    return body["count"] if status == 200 else 0


def test_frozen_elasticsearch_sigterm_exits_within_stop_timeout_and_restart_loses_nothing(
    tmp_path: Path, es_private_server: EsServer
) -> None:
    srv = es_private_server
    state, out, log = tmp_path / "state", tmp_path / "out", tmp_path / "run.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKOUT_ES")}  # default 30 s request timeout
    args = ["--rate", "500", "--state-dir", str(state), "--out", str(out), "--elasticsearch", srv.url, "--es-index", "t-stop"]
    proc = _start([*args, "--stop-timeout", f"{STOP_TIMEOUT}s"], log, env)
    try:
        deadline = time.monotonic() + 30
        while _count(srv.url, "t-stop") < 1000:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        with srv.frozen():
            time.sleep(3)  # the run loop now waits on the frozen server (bulk in flight, flush blocked)
            rc, took = _sigterm_and_time(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert rc == 0, text
    assert took <= STOP_TIMEOUT + SLACK, f"took {took:.1f}s to stop:\n{text[-3000:]}"
    assert "re-read on restart" in text, text[-3000:]
    print(f"stopped {took:.1f}s after SIGTERM with Elasticsearch frozen")
    first = re.findall(r"lookout run stopped: ([\d,]+) lines, ([\d,]+) valid", text)
    assert first, text
    read_before = int(first[-1][1].replace(",", ""))  # (some of them acknowledged by ES, not committed)

    # the restart regenerates from the last checkpoint: long enough to pass what the first run read
    subprocess.run(
        [LOOKOUT, "run", "--no-view", *args, "--duration", f"{read_before / 500 + 3:.0f}"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "ab"),
    )  # noqa: SIM115
    text = log.read_text()
    m = re.findall(r"lookout run stopped: ([\d,]+) lines, ([\d,]+) valid", text)
    assert m, text
    valid = int(m[-1][1].replace(",", ""))
    assert valid > read_before, (valid, read_before)
    http_json("POST", f"{srv.url}/t-stop/_refresh")
    assert _count(srv.url, "t-stop") == valid, text[-3000:]  # not one lost, not one twice
    store = subprocess.run([LOOKOUT, "count", "--state-dir", str(state)], capture_output=True, text=True, env=env)
    assert orjson.loads(store.stdout) == {"count": valid}
    status, doc = http_json("GET", f"{srv.url}/t-stop/_doc/generator:{valid - 1}")
    assert status == 200 and doc["found"]


def test_sigterm_while_set_up_waits_on_a_frozen_server_is_bounded_too(tmp_path: Path, es_private_server: EsServer) -> None:
    """Before the run loop (index templates put at start-up) the stop is bounded as well."""
    srv = es_private_server
    log = tmp_path / "run.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKOUT_ES")}
    with srv.frozen():
        proc = _start(
            [
                "--rate",
                "100",
                "--state-dir",
                str(tmp_path / "state"),
                "--out",
                str(tmp_path / "out"),
                "--elasticsearch",
                srv.url,
                "--es-index",
                "t-setup",
                "--stop-timeout",
                f"{STOP_TIMEOUT}s",
            ],
            log,
            env,
        )
        time.sleep(4)  # imports, then the first request to the frozen server
        rc, took = _sigterm_and_time(proc, log)
    text = log.read_text()
    assert rc == 0, text
    assert took <= STOP_TIMEOUT + SLACK, f"took {took:.1f}s to stop:\n{text[-3000:]}"
    assert not (tmp_path / "state" / "checkpoint.pkl").exists()  # nothing was read, nothing committed
