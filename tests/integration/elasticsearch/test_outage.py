"""`lookout run --elasticsearch` through a frozen server: the seed's `_count` check grows while
the run goes, the server is SIGSTOPped for 15 s mid-run, and afterwards the index holds exactly
the records the run read - none lost, none twice - while no position was committed during the
freeze (the blocking flush held the run loop)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import orjson

from lookout.checkpoint import load_meta
from tests.fixtures.elasticsearch import EsServer, http_json

LOOKOUT = str(Path(sys.executable).parent / "lookout")


def _count(url: str, index: str) -> int:
    status, body = http_json("GET", f"{url}/{index}/_count", timeout=5)
    return body["count"] if status == 200 else 0


def test_frozen_server_mid_run_loses_and_duplicates_nothing(tmp_path: Path, es_private_server: EsServer) -> None:
    srv = es_private_server
    state, out, err_path = tmp_path / "state", tmp_path / "out", tmp_path / "run.err"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKOUT_ES")}
    env["LOOKOUT_ES_TIMEOUT"] = "3"  # so the freeze shows up as timeouts, retried (and re-sent) by lookout
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [
                LOOKOUT,
                "run",
                "--rate",
                "500",
                "--duration",
                "26",
                "--no-view",
                "--state-dir",
                str(state),
                "--out",
                str(out),
                "--elasticsearch",
                srv.url,
                "--es-index",
                "t-freeze",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    try:
        seen: list[int] = []  # the seed's check: `curl …/test-inter/_count` grows while run goes
        deadline = time.monotonic() + 30
        while len(set(seen)) < 3 and time.monotonic() < deadline:
            n = _count(srv.url, "t-freeze")
            if n and (not seen or n > seen[-1]):
                seen.append(n)
            time.sleep(0.5)
        assert len(seen) >= 3 and seen == sorted(seen), seen
        with srv.frozen():
            time.sleep(5)
            frozen_meta = load_meta(state)
            assert "retrying" in err_path.read_text(), err_path.read_text()
            time.sleep(10)
            assert load_meta(state) == frozen_meta, "a position was committed while the server was frozen"
            assert proc.poll() is None
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = err_path.read_text()
    assert rc == 0, log
    assert "answering again" in log, log
    m = re.search(r"lookout run stopped: ([\d,]+) lines, ([\d,]+) valid", log)
    assert m, log
    valid = int(m.group(2).replace(",", ""))
    assert valid > seen[-1]
    http_json("POST", f"{srv.url}/t-freeze/_refresh")
    assert _count(srv.url, "t-freeze") == valid  # not one lost, not one twice
    store = subprocess.run([LOOKOUT, "count", "--state-dir", str(state)], capture_output=True, text=True, env=env)
    assert orjson.loads(store.stdout) == {"count": valid}
    # ids are the generator's sequence numbers: 0 .. valid-1, each exactly once
    status, doc = http_json("GET", f"{srv.url}/t-freeze/_doc/generator:{valid - 1}")
    assert status == 200 and doc["found"]
    status, doc = http_json("GET", f"{srv.url}/t-freeze/_doc/generator:{valid}")
    assert status == 404 or not doc.get("found")


def test_abort_ends_a_flush_blocked_by_a_frozen_server(es_private_server: EsServer) -> None:
    """flush() blocks while the server is away; abort() (for a shutdown request) makes it raise
    instead, so the caller exits without committing anything unacknowledged."""
    import threading

    import polars as pl
    import pytest

    from lookout.records import SCHEMA
    from lookout.sinks.elasticsearch import ElasticsearchError, ElasticsearchSink

    srv = es_private_server
    sink = ElasticsearchSink.from_url(srv.url, index="t-abort", timeout=1.0)
    recs = pl.DataFrame(
        {
            **{c: [None] for c in SCHEMA},  # the optional fields unknown
            "ts": [1_659_509_511_865_323],
            "status": [200],
            "request_time": [0.2],
            "client_ip": ["1.2.3.4"],
            "host": ["h"],
            "country": ["US"],
            "method": ["GET"],
            "server": ["s"],
            "line": [0],
        },
        schema=SCHEMA,
    )
    sink.write_records(recs, ["t:1"])
    sink.flush()
    sink.write_records(recs, ["t:2"])
    errors: list[BaseException] = []

    def flush() -> None:
        try:
            sink.flush()
        except BaseException as e:  # noqa: BLE001 - ElasticsearchError is a SystemExit
            errors.append(e)

    with srv.frozen():
        t = threading.Thread(target=flush)
        t.start()
        t.join(3)
        assert t.is_alive(), "flush returned while the server was frozen"
        sink.abort()
        t.join(10)
        assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ElasticsearchError), errors
    with pytest.raises(ElasticsearchError):
        sink.close()
