"""The dashboard's JSON API and event stream, through `lookout serve` (a real subprocess on a free
loopback port) on the files of a replay: every endpoint, every bad parameter (400 naming the
field, never a traceback), the token rule, the security headers."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import orjson
import pytest

from tests.fixtures.dashboard import ATTACKER, HOSTILE_HOST, T0, start_serve, traffic

TOKEN = "t0ken-for-tests"


def get(url: str, token: str | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import sys

    d = tmp_path_factory.mktemp("stored")
    before, after = traffic()
    src = d / "in.jsonl"
    src.write_bytes(b"".join(before + after) + b"not json\n")
    out, state = d / "out", d / "state"
    exe = Path(sys.executable).parent / "lookout"
    subprocess.run(
        [str(exe), "replay", str(src), "--out", str(out), "--store", str(state / "store"), "--no-progress"],
        check=True,
        capture_output=True,
    )
    lines = [
        {
            "id": "a",
            "status": "firing",
            "rule": "goal1-topic",
            "key": {"client_ip": ATTACKER},
            "start": "2022-08-03T06:50:04.000Z",
            "end": "2022-08-03T06:50:24.000Z",
            "windows": 1,
            "peak": 11,
            "value": 11,
        },
        {
            "id": "b",
            "status": "firing",
            "rule": "goal2-topic",
            "key": {"host": HOSTILE_HOST},
            "start": "2022-08-03T06:50:10.000Z",
            "end": "2022-08-03T06:50:40.000Z",
            "windows": 3,
            "peak": 17,
            "value": 16,
        },
        {
            "id": "c",
            "status": "firing",
            "rule": "goal1-topic",
            "key": {"client_ip": "10.0.0.1"},
            "start": "2022-08-03T06:50:30.000Z",
            "end": "2022-08-03T06:50:50.000Z",
            "windows": 1,
            "peak": 11,
            "value": 11,
        },
        {
            "id": "c",
            "status": "merged",
            "rule": "goal1-topic",
            "key": {"client_ip": "10.0.0.1"},
            "merged_into": "a",
            "start": "2022-08-03T06:50:30.000Z",
            "end": "2022-08-03T06:50:50.000Z",
            "windows": 1,
            "peak": 11,
            "value": 11,
        },
        {
            "id": "a",
            "status": "resolved",
            "rule": "goal1-topic",
            "key": {"client_ip": ATTACKER},
            "start": "2022-08-03T06:50:04.000Z",
            "end": "2022-08-03T06:50:43.000Z",
            "windows": 20,
            "peak": 30,
            "value": 11,
        },
    ]
    (out / "incidents.jsonl").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines) + b'{"id": "half-writ')
    return state, out


@pytest.fixture(scope="module")
def server(stored: tuple[Path, Path]):
    import sys

    exe = Path(sys.executable).parent / "lookout"
    url, proc = start_serve([str(exe)], *stored)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def token_server(stored: tuple[Path, Path]):
    import sys

    exe = Path(sys.executable).parent / "lookout"
    url, proc = start_serve([str(exe)], *stored, "--http-token", TOKEN)
    yield url
    proc.terminate()
    proc.wait(10)


def test_page_and_static_files_carry_a_strict_csp(server: str) -> None:
    for path in ("", "static/app.js", "static/app.css", "static/vendor/uPlot.iife.min.js", "api/stats"):
        status, headers, body = get(server + path)
        assert status == 200, path
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
        assert headers["x-content-type-options"] == "nosniff"
    _, _, page = get(server)
    assert b"<script>" not in page and b"onload" not in page  # no inline script in the shell
    assert b"https://" not in page and b"http://" not in page  # nothing from elsewhere


def test_stats_summarises_the_stored_run(server: str, stored: tuple[Path, Path]) -> None:
    status, headers, body = get(server + "api/stats")
    assert status == 200 and headers["content-type"] == "application/json"
    s = orjson.loads(body)
    assert s["mode"] == "stored"
    before, after = traffic()
    assert s["health"]["records"] == len(before) + len(after)
    assert s["health"]["rejected"] == 1 and s["health"]["reasons"] == {"invalid-json": 1}
    per_class = {k: sum(s["traffic"][k]) for k in ("2xx", "3xx", "4xx", "5xx")}
    assert sum(per_class.values()) == len(before) + len(after)
    assert per_class["4xx"] == sum(1 for ln in before + after if b'"status":"404"' in ln)
    assert s["traffic"]["t"][0] == T0 and s["traffic"]["axis"] == "event time"
    rules = {r["name"]: r for r in s["rules"]}
    assert rules["goal1-topic"]["kind"] == "alerting" and rules["goal3-topic"]["kind"] == "aggregate"
    assert all(a["key"] == {"client_ip": ATTACKER} for a in rules["goal1-topic"]["alerts"])
    g4 = rules["goal4-topic"]
    values = [r["value"] for r in g4["rows"]]
    assert values == sorted(values, reverse=True) and g4["rows"][0]["value"] == pytest.approx(0.9)
    assert rules["goal2-topic"]["record_filter"] == {"status": "400-499"}


def test_incidents_firing_first_merged_folded_half_line_ignored(server: str) -> None:
    status, _, body = get(server + "api/incidents")
    assert status == 200
    docs = orjson.loads(body)["incidents"]
    assert [(d["id"], d["status"]) for d in docs] == [("b", "firing"), ("a", "resolved")]
    assert docs[1]["windows"] == 20  # the latest line of an incident wins
    _, _, body = get(server + "api/incidents?status=resolved&rule=goal1-topic&limit=5")
    assert [d["id"] for d in orjson.loads(body)["incidents"]] == ["a"]


def test_results_by_rule_since_until_and_key(server: str, stored: tuple[Path, Path]) -> None:
    _, out = stored
    rows = [orjson.loads(ln) for ln in (out / "goal1-topic.jsonl").read_bytes().splitlines()]
    status, _, body = get(server + "api/results/goal1-topic?limit=1000")
    assert status == 200 and orjson.loads(body)["results"] == rows
    since = rows[3]["window"]["start"]
    until = rows[6]["window"]["start"]
    q = urllib.parse.urlencode({"since": since, "until": until, "client_ip": ATTACKER})
    _, _, body = get(server + "api/results/goal1-topic?" + q)
    assert orjson.loads(body)["results"] == rows[3:6]
    _, _, body = get(server + "api/results/goal1-topic?limit=2")
    assert orjson.loads(body)["results"] == rows[-2:]
    _, _, body = get(server + "api/results/goal1-topic?client_ip=10.0.0.1")
    assert orjson.loads(body)["results"] == []
    status, _, body = get(server + "api/results/nope")
    assert status == 404 and orjson.loads(body)["field"] == "rule"


def test_records_same_query_as_search(server: str, stored: tuple[Path, Path]) -> None:
    import sys

    state, _ = stored
    exe = Path(sys.executable).parent / "lookout"
    cli = subprocess.run(
        [
            str(exe),
            "search",
            "--state-dir",
            str(state),
            "--client-ip",
            ATTACKER,
            "--status",
            "2xx",
            "--since",
            "2022-08-03T06:50:21Z",
            "--until",
            str(T0 + 22.5),
            "--limit",
            "100",
        ],
        check=True,
        capture_output=True,
    )
    expected = [orjson.loads(ln) for ln in cli.stdout.splitlines()]
    assert 5 <= len(expected) < 30
    q = urllib.parse.urlencode(
        {"client_ip": ATTACKER, "status": "2xx", "since": "2022-08-03T06:50:21Z", "until": str(T0 + 22.5), "limit": "100"}
    )
    status, _, body = get(server + "api/records?" + q)
    assert status == 200 and orjson.loads(body)["records"] == expected
    _, _, body = get(server + "api/records?" + urllib.parse.urlencode({"host": HOSTILE_HOST, "limit": "3"}))
    recs = orjson.loads(body)["records"]
    assert len(recs) == 3 and all(r["host"] == HOSTILE_HOST for r in recs)
    # a path prefix, as `lookout search --path`: the burst's 30 requests to /login?try=N
    cli = subprocess.run(
        [str(exe), "search", "--state-dir", str(state), "--path", "/login", "--limit", "100"], check=True, capture_output=True
    )
    expected = [orjson.loads(ln) for ln in cli.stdout.splitlines()]
    status, _, body = get(server + "api/records?" + urllib.parse.urlencode({"path": "/login", "limit": "100"}))
    assert status == 200 and orjson.loads(body)["records"] == expected
    assert len(expected) == 30 and all(r["path"].startswith("/login?try=") for r in expected)


@pytest.mark.parametrize(
    "path, field",
    [
        ("api/records?limit=0", "limit"),
        ("api/records?limit=1001", "limit"),
        ("api/records?limit=ten", "limit"),
        ("api/records?limit=-1", "limit"),
        ("api/records?limit=" + "9" * 5000, "limit"),  # int() of over 4,300 digits raises: a 400, not a 500
        ("api/records?status=abc", "status"),
        ("api/records?status=4x", "status"),
        ("api/records?since=yesterday", "since"),
        ("api/records?until=1e400", "until"),
        ("api/records?since=99999999999999999999", "since"),
        ("api/records?until=-5", "until"),
        ("api/records?client_ip=a&client_ip=b", "client_ip"),
        ("api/records?drop=table", "drop"),
        ("api/records?host=" + "a" * 3000, "host"),
        ("api/records?host=%00x", "host"),
        ("api/results/goal1-topic?since=nope", "since"),
        ("api/results/goal1-topic?host=x", "host"),
        ("api/results/goal3-topic?limit=99999", "limit"),
        ("api/incidents?status=open", "status"),
        ("api/incidents?rule=nope", "rule"),
        ("api/incidents?limit=0", "limit"),
        ("api/stats?x=1", "x"),
        ("api/events?x=1", "x"),
    ],
)
def test_bad_parameters_are_400_naming_the_field(server: str, path: str, field: str) -> None:
    status, headers, body = get(server + path)
    assert status == 400, body
    doc = orjson.loads(body)
    assert doc["field"] == field and field in doc["error"]
    assert b"Traceback" not in body and headers["content-type"] == "application/json"


def test_event_stream_sends_the_snapshot(server: str) -> None:
    import http.client

    host, port = server[len("http://") :].rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/api/events")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    lines = []
    while not lines or not lines[-1].startswith(b"data: "):
        lines.append(resp.readline().rstrip(b"\n"))
    conn.close()
    assert lines[0] == b"retry: 2000" and b"event: snapshot" in lines
    assert json.loads(lines[-1][len(b"data: ") :])["mode"] == "stored"


def test_token_required_for_data_not_for_the_page_shell(token_server: str) -> None:
    assert get(token_server)[0] == 200
    assert get(token_server + "static/app.js")[0] == 200
    for path in ("api/stats", "api/incidents", "api/records", "api/results/goal1-topic", "api/events"):
        status, headers, _ = get(token_server + path)
        assert status == 401 and headers.get("www-authenticate") == "Bearer", path
        assert get(token_server + path, token="wrong")[0] == 401
    assert get(token_server + "api/stats", token=TOKEN)[0] == 200


def test_non_loopback_without_token_is_refused_before_binding(stored: tuple[Path, Path], lookout_cmd: list[str]) -> None:
    state, out = stored
    r = subprocess.run(
        [*lookout_cmd, "serve", "--state-dir", str(state), "--out", str(out), "--http", "192.0.2.1:8080"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "--http-token" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([*lookout_cmd, "serve", "--http", "nonsense"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "HOST:PORT" in r.stderr


def test_busy_port_is_an_error_at_start(stored: tuple[Path, Path], lookout_cmd: list[str]) -> None:
    state, out = stored
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = subprocess.run(
            [*lookout_cmd, "serve", "--state-dir", str(state), "--out", str(out), "--http", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr


def test_empty_state_dir_serves_empty_panels(tmp_path: Path, lookout_cmd: list[str]) -> None:
    url, proc = start_serve(lookout_cmd, tmp_path / "state", tmp_path / "out")
    try:
        s = orjson.loads(get(url + "api/stats")[2])
        assert s["health"]["records"] == 0 and s["incidents"] == [] and s["traffic"]["t"] == []
        assert orjson.loads(get(url + "api/records")[2]) == {"records": []}
        assert orjson.loads(get(url + "api/results/goal1-topic")[2])["results"] == []
    finally:
        proc.terminate()
        proc.wait(10)
