"""`lookout check` against the real test services (Tansu broker, osmem server) and against what
goes wrong in deployments: closed ports, a service that accepts and never answers, wrong
credentials (an auth-checking proxy in front of osmem, which has no security of its own), an
unwritable or occupied state dir. Each must give one clear ✘ line, no traceback, in bounded time,
and never print a secret."""

from __future__ import annotations

import base64
import fcntl
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fixtures.elasticsearch import http_json
from tests.fixtures.ports import free_port

SECRET = "pw-9f3c1e-never-print"


def check(
    lookout_cmd: list[str], *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, str, float]:
    t0 = time.monotonic()
    r = subprocess.run(
        [*lookout_cmd, "check", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    return r.returncode, out, time.monotonic() - t0


def line(out: str, name: str, mark: str) -> str:
    """The (first) line of check `name` with that mark; fails listing the output otherwise."""
    for ln in out.splitlines():
        if ln.startswith(f"{mark} {name} ") and ln[2:].split("  ")[0].strip() == name:
            return ln
    pytest.fail(f"no {mark} {name!r} line in:\n{out}")


class AuthProxy:
    """Basic auth in front of a real server: wrong or missing credentials get Elasticsearch's 401."""

    def __init__(self, target: str, user: str, password: str) -> None:
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        host = target.removeprefix("http://")

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                if self.headers.get("Authorization") != expected:
                    status, out = (
                        401,
                        orjson.dumps(
                            {
                                "error": {"type": "security_exception", "reason": "unable to authenticate user for REST request"},
                                "status": 401,
                            }
                        ),
                    )
                else:
                    conn = http.client.HTTPConnection(host, timeout=30)
                    conn.request(
                        self.command,
                        self.path,
                        body=body or None,
                        headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
                    )
                    r = conn.getresponse()
                    status, out = r.status, r.read()
                    conn.close()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers: a hung service."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


def test_dry_run_checks_options_and_rules_without_network(lookout_cmd: list[str], tmp_path: Path) -> None:
    closed = free_port()
    rc, out, took = check(
        lookout_cmd,
        "--dry-run",
        "--kafka",
        f"127.0.0.1:{closed}",
        "--elasticsearch",
        f"http://elastic:{SECRET}@127.0.0.1:{closed}",
        "--kafka-config",
        f"sasl.password={SECRET}",
        "--state-dir",
        "/sys/kernel/x",
        cwd=tmp_path,
    )
    assert rc == 0, out
    assert "not contacted (--dry-run)" in line(out, "kafka", "✔")
    assert "not contacted" in line(out, "elasticsearch", "✔")
    assert "sasl.password=<redacted>" in line(out, "kafka config", "✔")
    assert SECRET not in out
    assert not (tmp_path / ".lookout-state").exists()

    bad_rules = tmp_path / "rules.yaml"
    bad_rules.write_text("rules:\n  - name: x\n    window: 1 minute\n    aggregate: median(nope)\n")
    rc, out, _ = check(lookout_cmd, "--dry-run", "--rules", str(bad_rules), cwd=tmp_path)
    assert rc == 1 and line(out, "rules", "✘")
    rc, out, _ = check(lookout_cmd, "--dry-run", "--kafka", "k:9092", "--kafka-config", "no-equals-sign", cwd=tmp_path)
    bad = line(out, "kafka config", "✘")
    assert rc == 1 and bad.endswith("--kafka-config 'no-equals-sign' (argument 1): expected KEY=VALUE"), out
    assert "options" not in out and "pydantic" not in out and "\\x0a" not in out, out  # words, not pydantic's dump
    # a malformed argument that looks secret is not echoed back
    rc, out, _ = check(
        lookout_cmd,
        "--dry-run",
        "--kafka",
        "k:9092",
        "--kafka-config",
        "acks=all",
        "--kafka-config",
        f"sasl.password:{SECRET}",
        cwd=tmp_path,
    )
    assert rc == 1 and "--kafka-config <redacted> (argument 2): expected KEY=VALUE" in line(out, "kafka config", "✘")
    assert SECRET not in out
    rc, out, _ = check(lookout_cmd, "--dry-run", "--rate", "-1", cwd=tmp_path)
    assert rc == 1 and line(out, "options", "✘").endswith("rate: --rate must be positive"), out
    rc, out, _ = check(lookout_cmd, "--dry-run", "--kafka", " ", cwd=tmp_path)
    assert rc == 1 and "bootstrap servers must not be empty" in line(out, "kafka", "✘")


def test_everything_reachable(
    lookout_cmd: list[str], kafka_bootstrap: str, kafka_topic: Any, es_url: str, tmp_path: Path
) -> None:
    from lookout.kafka import KafkaConnection
    from lookout.kafka.admin import ensure_topics

    topic = kafka_topic("check")
    ensure_topics(KafkaConnection(kafka_bootstrap), {topic: 2})
    index = f"idx-{topic}"
    assert http_json("PUT", f"{es_url}/_index_template/lookout-{index}", {"index_patterns": [index]})[0] == 200
    rc, out, took = check(
        lookout_cmd,
        "--kafka",
        kafka_bootstrap,
        "--topic",
        topic,
        "--elasticsearch",
        es_url,
        "--es-index",
        index,
        "--state-dir",
        str(tmp_path / "state"),
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert rc == 0, out
    k = line(out, "kafka", "✔")
    assert "1 broker(s)" in k and "APIs (Produce v0-" in k and "InitProducerId" in k
    topics = line(out, "kafka topics", "✔")
    assert f"exist: {topic} (2 partitions)" in topics and f"will be created by run: {topic}-dlq" in topics
    assert "write access not verified" in line(out, "kafka access", "!")  # Tansu reports no ACLs
    assert "input lock free (group lookout-" in line(out, "kafka lock", "✔")
    assert "opensearch 3." in line(out, "elasticsearch", "✔")
    assert f"templates exist: lookout-{index}" in line(out, "elasticsearch templates", "✔")
    assert "probe put and deleted" in line(out, "elasticsearch access", "✔")
    status, templates = http_json("GET", f"{es_url}/_index_template")
    assert not [t["name"] for t in templates["index_templates"] if t["name"].startswith("lookout-check-probe-")]
    assert "will be created" in line(out, "state dir", "✔")
    assert took < 15


def test_closed_ports_and_a_hung_service_fail_clearly_in_bounded_time(
    lookout_cmd: list[str], tmp_path: Path, silent_port: int
) -> None:
    closed = free_port()
    rc, out, took = check(
        lookout_cmd,
        "--kafka",
        f"127.0.0.1:{closed}",
        "--elasticsearch",
        f"http://127.0.0.1:{closed}",
        "--timeout",
        "2",
        cwd=tmp_path,
    )
    assert rc == 1
    assert "Connection refused" in line(out, "kafka", "✘")
    assert "Connection refused" in line(out, "elasticsearch", "✘")
    assert took < 2 * 2 + 1 + 3  # the bound, plus process start-up
    rc, out, took = check(
        lookout_cmd,
        "--kafka",
        f"127.0.0.1:{silent_port}",
        "--elasticsearch",
        f"http://127.0.0.1:{silent_port}",
        "--timeout",
        "2",
        cwd=tmp_path,
    )
    assert rc == 1
    assert "cannot reach" in line(out, "kafka", "✘")
    assert "timed out" in line(out, "elasticsearch", "✘")
    assert took < 2 * 2 + 1 + 3


@pytest.fixture
def trickling_port() -> Iterator[int]:
    """An HTTP server that answers one byte every 0.2 s and never finishes its headers: no single
    read times out, so only the check's overall bound can end the wait."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    def trickle(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while not stop.wait(0.2):
                    conn.sendall(b"y")  # a header that never ends
            except OSError:
                return

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    stop.set()
    srv.close()


def test_a_service_that_never_finishes_answering_is_cut_off(lookout_cmd: list[str], tmp_path: Path, trickling_port: int) -> None:
    rc, out, took = check(lookout_cmd, "--elasticsearch", f"http://127.0.0.1:{trickling_port}", "--timeout", "1", cwd=tmp_path)
    assert rc == 1
    assert "no answer within 3 s (the service hangs)" in line(out, "elasticsearch", "✘")
    assert took < 3 + 3


def test_a_configuration_librdkafka_refuses(lookout_cmd: list[str], tmp_path: Path) -> None:
    rc, out, _ = check(
        lookout_cmd,
        "--kafka",
        f"127.0.0.1:{free_port()}",
        "--kafka-config",
        "no.such.property=1",
        "--kafka-config",
        f"sasl.password={SECRET}",
        cwd=tmp_path,
    )
    assert rc == 1 and "librdkafka refused the configuration" in line(out, "kafka", "✘")
    assert "sasl.password=<redacted>" in line(out, "kafka config", "✔") and SECRET not in out


def test_the_group_id_names_the_lock_group_checked(lookout_cmd: list[str], kafka_broker: Any, tmp_path: Path) -> None:
    """The lock group is the one run's source would join: `<group.id>.lock` when the user sets group.id."""
    rc, out, _ = check(lookout_cmd, "--kafka", kafka_broker.bootstrap, "--kafka-config", "group.id=my-deploy", cwd=tmp_path)
    assert rc == 0, out
    assert "group my-deploy.lock is" in line(out, "kafka lock", "✔")


def test_wrong_credentials_are_named_and_never_printed(lookout_cmd: list[str], es_url: str, tmp_path: Path) -> None:
    proxy = AuthProxy(es_url, "lookout", "right-" + SECRET)
    try:
        rc, out, _ = check(
            lookout_cmd, "--elasticsearch", proxy.url, "--es-user", "lookout", "--es-password", SECRET, cwd=tmp_path
        )
        assert rc == 1
        bad = line(out, "elasticsearch", "✘")
        assert "HTTP 401, credentials refused (user lookout)" in bad and "security_exception" in bad
        assert SECRET not in out
        url_with_secret = proxy.url.replace("http://", f"http://lookout:{SECRET}@")
        rc, out, _ = check(lookout_cmd, "--elasticsearch", url_with_secret, cwd=tmp_path)
        assert rc == 1 and SECRET not in out
        rc, out, _ = check(
            lookout_cmd,
            "--elasticsearch",
            proxy.url,
            cwd=tmp_path,
            env={"LOOKOUT_ES_USER": "lookout", "LOOKOUT_ES_PASSWORD": "right-" + SECRET},
        )
        assert rc == 0, out
        assert "opensearch" in line(out, "elasticsearch", "✔")
        assert SECRET not in out
    finally:
        proxy.close()


def test_unwritable_state_dir(lookout_cmd: list[str], tmp_path: Path) -> None:
    plain = tmp_path / "a-file"
    plain.write_text("x")
    rc, out, _ = check(lookout_cmd, "--state-dir", str(plain / "state"), cwd=tmp_path)
    assert rc == 1 and f"{plain} is a regular file" in line(out, "state dir", "✘")
    rc, out, _ = check(lookout_cmd, "--out", str(plain / "out"), cwd=tmp_path)
    assert rc == 1 and "is a regular file" in line(out, "output dir", "✘")
    if os.geteuid() == 0:
        # root ignores permission bits; sysfs refuses to create files even for root
        assert Path("/sys/kernel").is_dir(), "sysfs is not mounted: no directory root cannot write"
        denied = "/sys/kernel"
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        denied = str(ro)
    rc, out, _ = check(lookout_cmd, "--state-dir", denied, cwd=tmp_path)
    assert rc == 1 and "is not writable (Permission denied)" in line(out, "state dir", "✘")


def test_state_dir_contents_and_a_lock_held_by_another_process(lookout_cmd: list[str], tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "store").mkdir(parents=True)
    (state / "checkpoint").mkdir()
    (state / "checkpoint" / "snapshot-00000001.lkc").write_bytes(b"1234")
    rc, out, _ = check(lookout_cmd, "--state-dir", str(state), cwd=tmp_path)
    assert rc == 0, out
    contents = [ln for ln in out.splitlines() if ln.startswith("✔ state dir") and "contents:" in ln][0]
    assert "checkpoint (1 files, 4 bytes, written" in contents and "embedded store (0 parquet files)" in contents
    # an old pickle checkpoint is named as one lookout refuses (never loaded)
    (state / "checkpoint.pkl").write_bytes(b"\x80\x05N.")
    rc, out, _ = check(lookout_cmd, "--state-dir", str(state), cwd=tmp_path)
    assert rc == 1 and "old pickle checkpoint" in out, out
    (state / "checkpoint.pkl").unlink()

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl, sys, time; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); "
                "print('locked', flush=True); time.sleep(60)"
            ),
            str(state / "lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        rc, out, _ = check(lookout_cmd, "--state-dir", str(state), cwd=tmp_path)
        assert rc == 1
        assert f"flock lock held by PID {holder.pid}" in line(out, "state dir", "✘")
        with open(state / "lock") as f:  # the check only read /proc/locks: the holder still has it
            with pytest.raises(BlockingIOError):
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        holder.kill()
        holder.wait()


def test_kafka_lock_holder_is_reported(lookout_cmd: list[str], kafka_broker: Any, tmp_path: Path) -> None:
    from confluent_kafka import Consumer

    from lookout.kafka import KafkaConnection
    from lookout.kafka.admin import ensure_topics
    from lookout.kafka.lock import LOCK_TOPIC

    ensure_topics(KafkaConnection(kafka_broker.bootstrap), {"test-inter": 1, LOCK_TOPIC: 1})
    assigned = threading.Event()
    c = Consumer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "group.id": "lookout-test-inter.lock",
            "client.id": "the-active-one",
            "session.timeout.ms": 6000,
        }
    )
    c.subscribe([LOCK_TOPIC], on_assign=lambda *_: assigned.set())
    try:
        deadline = time.monotonic() + 20
        while not assigned.is_set() and time.monotonic() < deadline:
            c.poll(0.2)
        assert assigned.is_set()
        rc, out, _ = check(lookout_cmd, "--kafka", kafka_broker.bootstrap, cwd=tmp_path)
        assert rc == 0, out
        held = line(out, "kafka lock", "!")
        assert "lookout-test-inter.lock is stable" in held and "another lookout run is active" in held
        # a real Kafka broker lists the members; Tansu answers the group state without them
        assert "the-active-one on" in held or "members not listed by the broker" in held
    finally:
        c.close()
