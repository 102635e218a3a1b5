"""Issue 22: a dependency that comes back different, signals, and the edges of input files.

Real subprocesses against real files, the test broker and the test search server.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

SRC = str(Path(__file__).resolve().parents[3] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC}
_RUNS: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _kill_leftover_runs():  # noqa: ANN202
    """A failed test must not leave a `lookout run` behind: it would reconnect to whatever broker
    later takes its port and hold that broker's input lock (seen: a later test stood by)."""
    yield
    while _RUNS:
        proc = _RUNS.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_generate_appends_to_stdout_opened_for_append(lookout_cmd: list[str], tmp_path: Path) -> None:
    """`lookout generate N >> file` keeps what the file had (it used to open /dev/stdout, truncating it)."""
    target = tmp_path / "x"
    target.write_text("hello\n")
    with open(target, "ab") as out:
        p = subprocess.run(lookout_cmd + ["generate", "2"], stdout=out, stderr=subprocess.PIPE, timeout=60, env=ENV)
    assert p.returncode == 0, p.stderr
    lines = target.read_bytes().splitlines()
    assert len(lines) == 3 and lines[0] == b"hello"
    assert all("client_ip" in orjson.loads(line) for line in lines[1:])
    # through a shell, as the issue reproduced it
    sh = f"echo hello > {target}; PYTHONPATH={SRC} {' '.join(lookout_cmd)} generate 2 >> {target}; wc -l < {target}"
    assert subprocess.run(["sh", "-c", sh], capture_output=True, text=True, timeout=60).stdout.strip() == "3"


# ------------------------------------------------------------------------------ input file edges


def rec(i: int, status: int = 200) -> bytes:
    return orjson.dumps(
        {
            "client_ip": f"10.{i // 62_500 % 250}.{i // 250 % 250}.{i % 250 + 1}",
            "status": str(status),
            "host": "h.test",
            "request_time": "0.1",
            "@timestamp": str(1_700_000_000 + i),
        }
    )


def summary_lines(stderr: str) -> tuple[int, int]:
    """(lines, valid) from `lookout run stopped: N lines, M valid, ...`."""
    m = re.search(r"lookout run stopped: ([\d,]+) lines, ([\d,]+) valid", stderr)
    assert m, stderr
    return int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))


def replay_lines(lookout_cmd: list[str], path: Path, out: Path) -> dict:
    p = subprocess.run(
        lookout_cmd + ["replay", str(path), "--out", str(out), "--json"], capture_output=True, timeout=120, env=ENV
    )
    assert p.returncode == 0, p.stderr
    return orjson.loads(p.stdout)


def tail_run_args(lookout_cmd: list[str], log: Path, tmp_path: Path, *extra: str) -> list[str]:
    """`lookout run --tail LOG` with this test's state dir and output dir, no live view."""
    return [
        *lookout_cmd,
        "run",
        "--tail",
        str(log),
        "--state-dir",
        str(tmp_path / "st"),
        "--out",
        str(tmp_path / "out"),
        "--no-view",
        *extra,
    ]


def test_tail_reads_an_unterminated_last_line_at_idle_close(lookout_cmd: list[str], tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"\n".join(rec(i) for i in range(50)))  # no newline after the last line
    p = subprocess.run(
        tail_run_args(lookout_cmd, log, tmp_path, "--idle-timeout", "1s", "--duration", "4"),
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert p.returncode == 0, p.stderr
    assert summary_lines(p.stderr) == (50, 50)
    want = replay_lines(lookout_cmd, log, tmp_path / "replayed")
    assert want["lines"] == want["records"] == 50
    for rule in ("goal3-topic", "goal4-topic"):
        assert (tmp_path / "out" / f"{rule}.jsonl").read_bytes() == (tmp_path / "replayed" / f"{rule}.jsonl").read_bytes()
    # and the position is after it: a restart reads nothing again
    p = subprocess.run(
        tail_run_args(lookout_cmd, log, tmp_path, "--duration", "1.5"),
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert summary_lines(p.stderr) == (50, 50)


def test_tail_reads_an_unterminated_last_line_at_stop(lookout_cmd: list[str], tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"\n".join(rec(i) for i in range(20)))
    proc = subprocess.Popen(
        tail_run_args(lookout_cmd, log, tmp_path, "--idle-timeout", "1h"),
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert summary_lines(err) == (20, 20)


def test_tail_over_long_line_is_one_dead_letter_at_its_line(lookout_cmd: list[str], tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    huge = b'{"host": "' + b"x" * (9 << 20) + b'"}'  # 9 MiB: more than two 4 MiB reads
    lines = [rec(0), rec(1), huge, rec(2), b"not json", rec(3)]
    log.write_bytes(b"\n".join(lines) + b"\n" + b"y" * (5 << 20))  # and an unterminated over-long last line
    p = subprocess.run(
        tail_run_args(lookout_cmd, log, tmp_path, "--idle-timeout", "1s", "--duration", "6"),
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert p.returncode == 0, p.stderr
    assert summary_lines(p.stderr) == (7, 4)
    dead = [orjson.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_bytes().splitlines()]
    assert [(d["reason"], d["line"]) for d in dead] == [("line-too-long", 3), ("invalid-combined-line", 5), ("line-too-long", 7)]
    assert dead[0]["raw"].startswith('{"host": "xxx') and len(dead[0]["raw"]) < 2000
    assert f"{len(huge):,} bytes" in dead[0]["detail"]
    assert f"{5 << 20:,} bytes" in dead[2]["detail"]


def test_run_whose_every_document_is_refused_exits_non_zero(lookout_cmd: list[str], tmp_path: Path, es_url: str) -> None:
    from tests.fixtures.elasticsearch import http_json

    index = f"t-refuse-all-{os.getpid()}"
    status, body = http_json("PUT", f"{es_url}/{index}", {"mappings": {"properties": {"host": {"type": "ip"}}}})
    assert status == 200, body
    log = tmp_path / "access.log"
    log.write_bytes(b"".join(rec(i) + b"\n" for i in range(40)))
    env = {k: v for k, v in ENV.items() if not k.startswith("LOOKOUT_ES")}
    p = subprocess.run(
        tail_run_args(lookout_cmd, log, tmp_path, "--duration", "3", "--elasticsearch", es_url, "--es-index", index),
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert p.returncode == 1, p.stderr
    assert "40 documents refused by elasticsearch" in p.stderr
    assert "elasticsearch refused every document it was sent (40)" in p.stderr
    assert len((tmp_path / "out" / "rejected.jsonl").read_bytes().splitlines()) == 40


# ------------------------------------------------------------------------------ produce and SIGTERM


def _produce(lookout_cmd: list[str], bootstrap: str, topic: str) -> subprocess.Popen:
    return subprocess.Popen(
        lookout_cmd
        + ["produce", "--kafka", bootstrap, "--topic", topic, "--rate", "2000", "--partitions", "2", "--stop-timeout", "3"],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def _stop_within(proc: subprocess.Popen, seconds: float) -> tuple[int, str, float]:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # one signal only
    try:
        _, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"produce ignored SIGTERM for {seconds} s:\n{err}") from None
    return proc.returncode, err, time.monotonic() - t0


def test_produce_ends_on_one_sigterm_after_a_broker_restart(kafka_broker, lookout_cmd: list[str]) -> None:
    proc = _produce(lookout_cmd, kafka_broker.bootstrap, "test-inter")
    time.sleep(4)
    kafka_broker.restart_process()  # comes back empty
    time.sleep(4)
    rc, err, took = _stop_within(proc, 20)
    assert took < 10, err
    assert "Traceback" not in err, err
    if rc == 0:  # everything was acknowledged in the end
        assert "failed" not in err and "not acknowledged" not in err, err
    else:  # or what was not is counted (the idempotent producer may fail for good: unknown producer id)
        assert rc == 1 and re.search(r"; [\d,]+ (not acknowledged|failed)", err), err


def test_produce_reports_undelivered_messages_when_stopped_in_an_outage(kafka_broker, lookout_cmd: list[str]) -> None:
    proc = _produce(lookout_cmd, kafka_broker.bootstrap, "test-inter")
    time.sleep(4)
    kafka_broker.stop()  # nothing is acknowledged any more
    time.sleep(2)
    rc, err, took = _stop_within(proc, 20)
    assert took < 10, err
    assert rc == 1, err
    m = re.search(r"produced ([\d,]+) messages .*; ([\d,]+) not acknowledged", err)
    assert m and int(m.group(2).replace(",", "")) > 0, err
    assert "stopping: waiting at most 3 s" in err


# ------------------------------------------------------------------------------ Elasticsearch restarted empty


def test_elasticsearch_restarted_empty_mid_run_is_detected_typed_and_accounted(tmp_path: Path) -> None:
    """The server is killed mid-run and a new, empty one starts on the same port: lookout puts its
    template back before sending again (typed index, not dynamic), says the acknowledged documents
    are gone and how many, and new + lost = every record read."""
    from lookout.sinks.es_mapping import RECORD_TYPES, mapping_conflicts
    from tests.fixtures.elasticsearch import EsServer, http_json

    srv = EsServer().start()
    err_path = tmp_path / "run.err"
    env = {k: v for k, v in ENV.items() if not k.startswith("LOOKOUT_ES")}
    try:
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(
                lookout_cmd_default()
                + [
                    "run",
                    "--rate",
                    "1000",
                    "--duration",
                    "16",
                    "--no-view",
                    "--state-dir",
                    str(tmp_path / "st"),
                    "--out",
                    str(tmp_path / "out"),
                    "--elasticsearch",
                    srv.url,
                    "--es-index",
                    "t-restart",
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
            )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _count(srv.url, "t-restart") < 2000:
                time.sleep(0.3)
            assert _count(srv.url, "t-restart") >= 2000, err_path.read_text()
            srv.stop()
            time.sleep(3)
            srv.start()  # same port, nothing in it
            rc = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log = err_path.read_text()
        assert rc == 0, log
        m = re.search(r"lost lookout's data \(([^)]*)\): the (\d+) documents it had acknowledged", log)
        assert m, log
        assert "index template lookout-t-restart is gone" in m.group(1)
        lost = int(m.group(2))
        # documents the old server acknowledged (a bulk it took but never answered is sent again, not lost)
        assert lost > 0, log
        valid = summary_lines(log)[1]
        http_json("POST", f"{srv.url}/t-restart/_refresh")
        assert _count(srv.url, "t-restart") + lost == valid, log
        status, mapping = http_json("GET", f"{srv.url}/t-restart/_mapping")
        assert status == 200
        assert mapping_conflicts(mapping["t-restart"]["mappings"], RECORD_TYPES) == []  # typed, not dynamic
        assert f"{lost:,} of the acknowledged documents were lost by the server" in log
        resent = int(re.search(r"; the (\d+) acknowledged since are sent again", log).group(1))
        assert _count(srv.url, "t-restart") >= resent
    finally:
        srv.stop()


def _count(url: str, index: str) -> int:
    from tests.fixtures.elasticsearch import http_json

    try:
        status, body = http_json("GET", f"{url}/{index}/_count", timeout=5)
    except OSError:
        return 0
    return body["count"] if status == 200 else 0


def lookout_cmd_default() -> list[str]:
    import sys

    return [str(Path(sys.executable).parent / "lookout")]


# ------------------------------------------------------------------------------ Kafka: the log changed under the checkpoint


class KafkaRun:
    """`lookout run --kafka` on a state dir, stderr in a file."""

    def __init__(self, lookout_cmd: list[str], bootstrap: str, tmp: Path, name: str, *extra: str) -> None:
        self.log = tmp / f"{name}.log"
        self.proc = subprocess.Popen(
            [
                *lookout_cmd,
                "run",
                "--kafka",
                bootstrap,
                "--idle-timeout",
                "1s",
                "--no-view",
                "--state-dir",
                str(tmp / "state"),
                "--out",
                str(tmp / "out"),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "wb"),
            env=ENV,
        )  # noqa: SIM115
        _RUNS.append(self.proc)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_lines(self, n: int, timeout: float = 60) -> None:
        """Until the run has read n lines in all (its progress is in the checkpoint's stats)."""
        from lookout.checkpoint import CheckpointError, load_meta

        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"exited {self.proc.returncode}:\n{self.text()}"
            try:
                meta = load_meta(self.log.parent / "state")
                if meta is not None and meta["stats"]["lines"] >= n:
                    return
            except (CheckpointError, KeyError):
                pass
            assert time.monotonic() < deadline, f"{n} lines not read within {timeout} s:\n{self.text()}"
            time.sleep(0.2)

    def wait_exit(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"did not exit within {timeout} s:\n{self.text()}") from None

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit()


def _delete_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.delete_topics([topic], operation_timeout=10).values():
        f.result()
    deadline = time.monotonic() + 10
    while topic in admin.list_topics(timeout=5).topics and time.monotonic() < deadline:
        time.sleep(0.1)


def _records(n: int, seed: int) -> list[bytes]:
    return [rec(seed * 100_000 + i) for i in range(n)]


def test_recreated_topic_is_named_and_read_again_only_when_asked(kafka_broker, lookout_cmd: list[str], tmp_path: Path) -> None:
    from tests.integration.kafka.test_kafka import create_topic, produce

    bs = kafka_broker.bootstrap
    create_topic(bs, "test-inter", 3)
    produce(bs, "test-inter", _records(600, 1), partitions=3)
    first = KafkaRun(lookout_cmd, bs, tmp_path, "first")
    first.wait_lines(600)
    assert first.stop() == 0, first.text()

    # the reproduction: delete, re-create with 4 partitions, 225 records each
    _delete_topic(bs, "test-inter")
    create_topic(bs, "test-inter", 4)
    produce(bs, "test-inter", _records(900, 2), partitions=4)
    second = KafkaRun(lookout_cmd, bs, tmp_path, "second")
    assert second.wait_exit() == 2, second.text()
    err = second.text()
    assert "is not the log the checkpoint was taken from" in err and "re-created" in err, err
    assert "--on-reset earliest" in err
    assert "partition 0 ends at offset 225, before the checkpoint's 200" not in err  # 600/3 = 200 < 225: only the id tells

    third = KafkaRun(lookout_cmd, bs, tmp_path, "third", "--on-reset", "earliest")
    third.wait_lines(600 + 900)
    time.sleep(7)  # past a periodic log check: the test broker's wrong log end after a re-create is not a reset
    assert third.stop() == 0, third.text()
    assert "reading every partition from its beginning" in third.text()
    assert summary_lines(third.text()) == (1500, 1500)


def test_log_shorter_than_the_checkpoint_is_named(kafka_broker, lookout_cmd: list[str], tmp_path: Path) -> None:
    """The broker restarted empty (its topics gone) between two runs: the checkpoint's offsets are past the new log's end."""
    from tests.integration.kafka.test_kafka import create_topic, produce

    bs = kafka_broker.bootstrap
    create_topic(bs, "test-inter", 2)
    produce(bs, "test-inter", _records(400, 3), partitions=2)
    first = KafkaRun(lookout_cmd, bs, tmp_path, "first")
    first.wait_lines(400)
    assert first.stop() == 0, first.text()
    kafka_broker.restart_process()  # in-memory broker: every topic gone
    create_topic(bs, "test-inter", 2)
    produce(bs, "test-inter", _records(50, 4), partitions=2)
    second = KafkaRun(lookout_cmd, bs, tmp_path, "second")
    assert second.wait_exit() == 2, second.text()
    err = second.text()
    assert "re-created" in err and "before the checkpoint's 200" in err, err


def test_broker_restarted_empty_while_running_stops_with_a_clear_message(
    kafka_broker, lookout_cmd: list[str], tmp_path: Path
) -> None:
    from tests.integration.kafka.test_kafka import create_topic, produce

    bs = kafka_broker.bootstrap
    create_topic(bs, "test-inter", 2)
    produce(bs, "test-inter", _records(300, 5), partitions=2)
    run = KafkaRun(lookout_cmd, bs, tmp_path, "run")
    run.wait_lines(300)
    kafka_broker.restart_process()
    rc = run.wait_exit(90)
    err = run.text()
    assert rc == 2, err
    assert "does not exist any more" in err and "came back empty" in err, err
    # health lines say the truth: the broker was back before the run stopped, so the last word
    # about it (if any: a restart quicker than the reconnect backoff is no outage) is not "unreachable"
    health = [line for line in err.splitlines() if "unreachable" in line or "reachable again" in line]
    assert not health or "reachable again" in health[-1], err
    assert "the lock topic lookout-lock is gone" in err
    # the next start, once the topic is back, reads it from its beginning when told to
    create_topic(bs, "test-inter", 2)
    produce(bs, "test-inter", _records(100, 6), partitions=2)
    again = KafkaRun(lookout_cmd, bs, tmp_path, "again", "--on-reset", "earliest")
    again.wait_lines(400)
    assert again.stop() == 0, again.text()


def test_topic_deleted_while_running_stops_cleanly(kafka_broker, lookout_cmd: list[str], tmp_path: Path) -> None:
    from tests.integration.kafka.test_kafka import create_topic, produce

    bs = kafka_broker.bootstrap
    create_topic(bs, "test-inter", 2)
    produce(bs, "test-inter", _records(200, 7), partitions=2)
    run = KafkaRun(lookout_cmd, bs, tmp_path, "run")
    run.wait_lines(200)
    _delete_topic(bs, "test-inter")
    rc = run.wait_exit(60)
    err = run.text()
    if rc == 2:  # the deletion was seen first: a clean stop, what was read committed
        assert "kafka topic test-inter does not exist any more (while reading" in err, err
        assert summary_lines(err) == (200, 200)
    else:  # librdkafka crashed on the test broker's metadata first (within 0.2 s): the crash is said
        assert rc == 128 + signal.SIGSEGV, err
        assert "the pipeline process died of SIGSEGV while reading kafka topic test-inter" in err, err
        assert "start lookout again to resume" in err


def test_run_ends_on_one_sigterm_while_elasticsearch_is_frozen(tmp_path: Path, es_private_server) -> None:
    """The flush waits on a frozen server; one SIGTERM ends the run within --stop-timeout, exit 0,
    nothing unacknowledged committed (it used to need a second signal)."""
    srv = es_private_server
    log_file = tmp_path / "access.log"
    log_file.write_bytes(b"".join(rec(i) + b"\n" for i in range(100)))
    env = {k: v for k, v in ENV.items() if not k.startswith("LOOKOUT_ES")}
    env["LOOKOUT_ES_TIMEOUT"] = "3"  # the bound is --stop-timeout plus one request timeout (a request in flight)
    err_path = tmp_path / "run.err"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            lookout_cmd_default()
            + [
                "run",
                "--tail",
                str(log_file),
                "--state-dir",
                str(tmp_path / "st"),
                "--out",
                str(tmp_path / "out"),
                "--no-view",
                "--stop-timeout",
                "3",
                "--elasticsearch",
                srv.url,
                "--es-index",
                "t-stop",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    try:
        pos_file = tmp_path / "st" / "tail-position.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the first 100 lines acknowledged and committed
            if pos_file.exists() and orjson.loads(pos_file.read_bytes())["line"] == 101:
                break
            time.sleep(0.2)
        with srv.frozen():
            with open(log_file, "ab") as f:
                f.write(b"".join(rec(i) + b"\n" for i in range(100, 150)))
            time.sleep(3)  # the next flush is stuck
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(30)
            took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = err_path.read_text()
    assert rc == 0 and took < 15, (rc, took, log)
    assert "is re-read on restart" in log
    pos = orjson.loads((tmp_path / "st" / "tail-position.json").read_bytes())
    assert pos["line"] == 101  # the 50 lines the frozen server never acknowledged are read again on restart


def test_elasticsearch_lost_since_checkpoint_is_sent_again(tmp_path: Path) -> None:
    """Documents acknowledged after the last flush (checkpoint) are kept and sent again to a
    server that came back empty; those before it are counted lost."""
    from concurrent.futures import wait

    import polars as pl

    from lookout.records import SCHEMA
    from lookout.sinks.elasticsearch import ElasticsearchSink
    from tests.fixtures.elasticsearch import EsServer, http_json

    def frame(n: int, start: int) -> tuple[pl.DataFrame, list[str]]:
        recs = pl.DataFrame(
            {
                **{c: [None] * n for c in SCHEMA},  # the optional fields unknown
                "ts": [1_659_509_511_000_000 + i for i in range(n)],
                "status": [200] * n,
                "request_time": [0.2] * n,
                "client_ip": ["1.2.3.4"] * n,
                "host": ["h"] * n,
                "country": ["US"] * n,
                "method": ["GET"] * n,
                "server": ["s"] * n,
                "line": list(range(n)),
            },
            schema=SCHEMA,
        )
        return recs, [f"t:{start + i}" for i in range(n)]

    srv = EsServer().start()
    try:
        sink = ElasticsearchSink.from_url(srv.url, index="t-resend", timeout=2.0)
        sink.write_records(*frame(30, 0))
        sink.flush()  # the caller checkpoints here: these 30 cannot be sent again
        sink.write_records(*frame(20, 30))
        sink._submit()
        wait(set(sink._futures))  # acknowledged, no flush (no checkpoint) yet
        assert sink.stats["indexed"] == 50
        srv.stop()
        srv.start()  # same port, empty
        sink.write_records(*frame(10, 50))
        sink.flush()
        sink.close()
        http_json("POST", f"{srv.url}/t-resend/_refresh")
        status, body = http_json("GET", f"{srv.url}/t-resend/_count")
        assert status == 200 and body["count"] == 30, body  # the 20 sent again + the 10 new
        assert sink.stats["lost"] == 30 and sink.stats["resent"] == 20
        status, doc = http_json("GET", f"{srv.url}/t-resend/_doc/t:35")
        assert status == 200 and doc["found"]
    finally:
        srv.stop()
