"""`lookout run --http`: /metrics scraped and parsed with prometheus_client's parser equals the
run's own counts; /healthz; a non-loopback bind needs a token (401 without it)."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families

from lookout.http import HttpServer, create_app
from lookout.http.metrics import Health
from tests.fixtures.ports import free_port
from tests.fixtures.receiver import Receiver
from tests.integration.notify.test_notify import RULES, traffic


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def scrape(url: str, token: str | None = None) -> dict[str, list]:
    status, body = get(url + "/metrics", token)
    assert status == 200, body
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(m: dict[str, list], name: str, **labels: str) -> float:
    found = [v for lb, v in m.get(name, []) if all(lb.get(k) == x for k, x in labels.items())]
    assert len(found) == 1, (name, labels, m.get(name))
    return found[0]


def wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_metrics_equal_the_runs_counts(lookout_cmd, tmp_path: Path, receiver: Receiver):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES + 'notify:\n  - {type: webhook, url: "${RECV}/hook", name: hook}\n')
    log, out = tmp_path / "access.log", tmp_path / "out"
    lines = traffic(0, 60, [10, 30])
    late = orjson.dumps({"@timestamp": 1_659_509_400 + 1, "client_ip": "10.1.1.1", "host": "h", "status": 200})
    log.write_bytes(b"\n".join([*lines, b"{not json", b'{"@timestamp": 1}', late]) + b"\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        lookout_cmd
        + [
            "run",
            "--tail",
            str(log),
            "--rules",
            str(rules),
            "--state-dir",
            str(tmp_path / "s"),
            "--out",
            str(out),
            "--idle-timeout",
            "1s",
            "--no-view",
            "--http",
            f"127.0.0.1:{port}",
        ],
        env={**os.environ, "RECV": receiver.url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: len(receiver.accepted()) == 4, 60, "4 notifications (2 incidents)")

        def settled() -> bool:
            m = scrape(url)
            return value(m, "lookout_incidents_firing", rule="burst") == 0 and value(m, "lookout_notification_queue") == 0

        wait_until(settled, 30, "incidents resolved, outbox empty")
        time.sleep(1.5)  # a commit after the last step
        m = scrape(url)
        status, body = get(url + "/healthz")
        assert status == 200 and orjson.loads(body)["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    # the run's own counts: its files and its summary
    rejected = [orjson.loads(x) for x in (out / "rejected.jsonl").read_bytes().splitlines()]
    inc = Counter(orjson.loads(x)["status"] for x in (out / "incidents.jsonl").read_bytes().splitlines())
    results = (out / "burst.jsonl").read_bytes().count(b"\n")
    assert value(m, "lookout_records_total", source="tail") == len(lines) + 1  # the late record is valid
    for reason, n in Counter(r["reason"] for r in rejected).items():
        assert value(m, "lookout_rejected_total", reason=reason) == n
    assert value(m, "lookout_rejected_total", reason="late") == 1
    assert value(m, "lookout_results_total", rule="burst") == results > 0
    assert value(m, "lookout_incidents_total", rule="burst", status="firing") == inc["firing"] == 2
    assert value(m, "lookout_incidents_total", rule="burst", status="resolved") == inc["resolved"] == 2
    assert value(m, "lookout_notifications_total", target="hook", outcome="sent") == 4
    assert value(m, "lookout_checkpoint_seconds_count") > 0
    assert value(m, "lookout_watermark_seconds") > 1_659_509_400
    assert value(m, "lookout_event_lag_seconds") > 0
    assert [v for _, v in m["lookout_build_info"]] == [1.0]
    for samples in m.values():  # never a client IP (or any address) as a label value
        for labels, _ in samples:
            for v in labels.values():
                try:
                    ipaddress.ip_address(v)
                    raise AssertionError(f"address as a label: {v}")
                except ValueError:
                    pass
                assert v != "h"


def test_non_loopback_needs_a_token_and_requests_without_it_get_401(lookout_cmd, tmp_path: Path):
    port = free_port()
    base = lookout_cmd + ["run", "--state-dir", str(tmp_path / "s"), "--out", str(tmp_path / "o"), "--no-view", "--rate", "50"]
    p = subprocess.run(base + ["--http", f"0.0.0.0:{port}", "--duration", "1"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "needs --http-token" in p.stderr
    env = {**os.environ, "LOOKOUT_HTTP_TOKEN": "t0ken-xyz"}
    proc = subprocess.Popen(base + ["--http", f"0.0.0.0:{port}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _up(url), 30, "http up")
        assert get(url + "/metrics")[0] == 401
        assert get(url + "/metrics", "wrong")[0] == 401
        status, body = get(url + "/metrics", "t0ken-xyz")
        assert status == 200 and b"lookout_records_total" in body
        assert get(url + "/healthz")[0] == 200  # health checks need no secret
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and b"t0ken-xyz" not in err


def _up(url: str) -> bool:
    try:
        return get(url + "/healthz")[0] in (200, 503)
    except OSError:
        return False


def test_busy_port_fails_at_start_and_off_serves_nothing(lookout_cmd, tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = subprocess.run(
            lookout_cmd
            + [
                "run",
                "--state-dir",
                str(tmp_path / "s"),
                "--out",
                str(tmp_path / "o"),
                "--no-view",
                "--duration",
                "1",
                "--http",
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert p.returncode == 2 and f"127.0.0.1:{port}" in p.stderr and "--http off" in p.stderr


def test_healthz_is_503_when_the_loop_stalls():
    from prometheus_client import CollectorRegistry

    health = Health(commit_interval=1.0)
    port = free_port()
    srv = HttpServer(create_app(CollectorRegistry(), health.check), "127.0.0.1", port)
    srv.start()
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        wait_until(lambda: _up(f"http://127.0.0.1:{port}"), 10, "up")
        assert get(url)[0] == 200
        health.beat_at -= 60  # the loop has not gone round for a minute
        assert get(url)[0] == 503
        health.beat(dirty=True)
        assert get(url)[0] == 200
        health.dirty_since -= 120  # read but not checkpointed for two minutes
        status, body = get(url)
        assert status == 503 and orjson.loads(body)["uncommitted_seconds"] >= 120
    finally:
        srv.stop()
