"""One record, one id, end to end (issue 14, item 3): `ship` SIGKILLed after producing but before
saving its position re-sends those lines on restart; they carry the same `lookout-id` header, so
`lookout run --kafka` indexes each request once in Elasticsearch, stores it once, and counts it
once. Real nginx, real Kafka-protocol broker, real OpenSearch-compatible server."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.fixtures.elasticsearch import http_json
from tests.fixtures.nginx import Nginx
from tests.integration.nginx.test_ship import Reader, client

pytestmark = pytest.mark.timeout(240)

RULES = "lateness: 1s\nrules: [{name: per-second, window: 1s, group_by: server, aggregate: count, emit: final}]\n"


def _count(url: str, index: str) -> int:
    http_json("POST", f"{url}/{index}/_refresh")
    status, body = http_json("GET", f"{url}/{index}/_count", timeout=5)
    return body["count"] if status == 200 else 0


def _counted(out: Path) -> int:
    p = out / "per-second.jsonl"
    return sum(orjson.loads(x)["count"] for x in p.read_bytes().splitlines()) if p.exists() else 0


def _ship(cmd: list[str], nginx: Nginx, bs: str, topic: str, state: Path, err: Path, interval: str) -> subprocess.Popen:
    with open(err, "ab") as fh:
        return subprocess.Popen(
            [
                *cmd,
                "ship",
                str(nginx.access_log),
                "--kafka",
                bs,
                "--topic",
                topic,
                "--state-dir",
                str(state),
                "--duration",
                "120",
                "--commit-interval",
                interval,
            ],
            stdout=subprocess.DEVNULL,
            stderr=fh,
        )


def test_ship_sigkill_and_restart_yields_no_duplicate_document_and_no_double_count(
    nginx: Nginx, kafka_bootstrap: str, kafka_topic: Callable[[str], str], es_url: str, tmp_path: Path, lookout_cmd: list[str]
) -> None:
    topic, index = kafka_topic("ship-dup"), f"t-dup-{time.monotonic_ns()}"
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    out, err = tmp_path / "out", tmp_path / "run.err"
    ship_state, ship_err = tmp_path / "ship", tmp_path / "ship.err"
    ship = _ship(lookout_cmd, nginx, kafka_bootstrap, topic, ship_state, ship_err, "60")  # never saves its position
    reader = Reader(kafka_bootstrap, topic)
    run = None
    try:
        nginx.burst([client(i) for i in range(40)])
        reader.until(40)
        ship.send_signal(signal.SIGKILL)  # produced and acknowledged, position not saved
        ship.wait(10)
        nginx.burst([client(i) for i in range(40, 60)])  # while ship is down
        ship = _ship(lookout_cmd, nginx, kafka_bootstrap, topic, ship_state, ship_err, "1")
        reader.until(100)
        msgs = reader.settle(1.5)
        ids = Counter(dict(m.headers() or [])["lookout-id"] for m in msgs)
        assert len(msgs) == 100 and len(ids) == 60 and sorted(ids.values()) == [1] * 20 + [2] * 40, (
            len(msgs),
            len(ids),
            Counter(ids.values()),
        )  # the crash did repeat 40 records, with their ids

        with open(err, "wb") as fh:
            run = subprocess.Popen(
                [
                    *lookout_cmd,
                    "run",
                    "--kafka",
                    kafka_bootstrap,
                    "--topic",
                    topic,
                    "--rules",
                    str(rules),
                    "--idle-timeout",
                    "2s",
                    "--no-view",
                    "--state-dir",
                    str(tmp_path / "state"),
                    "--out",
                    str(out),
                    "--elasticsearch",
                    es_url,
                    "--es-index",
                    index,
                ],
                stdout=subprocess.DEVNULL,
                stderr=fh,
            )
        deadline = time.monotonic() + 90
        while _counted(out) < 60 or _count(es_url, index) < 60:
            assert run.poll() is None and time.monotonic() < deadline, (
                _counted(out),
                _count(es_url, index),
                err.read_text()[-3000:],
            )
            time.sleep(0.3)
        time.sleep(2)  # anything more would show up now
        run.send_signal(signal.SIGTERM)
        assert run.wait(30) == 0, err.read_text()
    finally:
        reader.close()
        for p in (ship, run):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    text = err.read_text()
    assert _counted(out) == 60, text[-3000:]  # each request counted once
    assert _count(es_url, index) == 60, text[-3000:]  # one document per request
    store = subprocess.run([*lookout_cmd, "count", "--state-dir", str(tmp_path / "state")], capture_output=True, text=True)
    assert orjson.loads(store.stdout) == {"count": 60}
    assert "60 valid" in text and "40 duplicates skipped" in text, text[-2000:]
    clients = {
        r["client_ip"]
        for r in map(
            orjson.loads,
            subprocess.run(
                [*lookout_cmd, "search", "--state-dir", str(tmp_path / "state"), "--limit", "1000"],
                capture_output=True,
                check=True,
            ).stdout.splitlines(),
        )
    }
    assert clients == {client(i) for i in range(60)}
