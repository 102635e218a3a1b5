"""`lookout search` / `count` refuse bad parameters with exit 2 and one line (issue 20)."""

from __future__ import annotations

import json
import subprocess

import orjson
import pytest

GOOD = {
    "server": "s_v3",
    "client_ip": "154.85.126.16",
    "method": "PUT",
    "status": "404",
    "request_time": "0.28",
    "host": "api_38.example.com",
    "country": "US",
    "@timestamp": "1659509511.865323",
}


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def store(lookout_cmd, tmp_path):
    inp = tmp_path / "in.ndjson"
    inp.write_bytes(b"".join(orjson.dumps({**GOOD, "@timestamp": 1659509511 + i}) + b"\n" for i in range(5)))
    st = tmp_path / "store"
    p = run(lookout_cmd + ["replay", str(inp), "--out", str(tmp_path / "out"), "--store", str(st)])
    assert p.returncode == 0, p.stderr
    return st


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--limit", "-1"], "--limit"),
        (["--limit", "0"], "--limit"),
        (["--limit", "99999999999999999999"], "--limit"),
        (["--limit", "100001"], "--limit"),
        (["--status", "600"], "100-599"),
        (["--status", "500-400"], "empty"),
        (["--status", "099"], "100-599"),
        (["--status", "٤٠٤"], "--status"),
        (["--status", "4xx5"], "--status"),
        (["--client-ip", "fe80::1%eth0"], "--client-ip"),
        (["--since", "yesterday"], "--since"),
    ],
)
def test_bad_search_parameters_exit_2(lookout_cmd, store, args, needle):
    p = run(lookout_cmd + ["search", "--store", str(store), *args])
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert needle in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert p.stdout == ""


def test_good_search_parameters(lookout_cmd, store):
    def found(*args: str) -> int:
        p = run(lookout_cmd + ["search", "--store", str(store), *args])
        assert p.returncode == 0, p.stderr
        return len(p.stdout.splitlines())

    assert found("--limit", "100000") == 5 and found("--limit", "2") == 2
    assert found("--status", "404") == found("--status", "4xx") == found("--status", "400-499") == 5
    assert found("--status", "500-599") == 0
    assert found("--client-ip", "::ffff:154.85.126.16") == 5  # read like records: one client, one key


@pytest.mark.parametrize("cmd", ["count", "search"])
def test_missing_state_dir_is_an_error(lookout_cmd, tmp_path, cmd):
    for flag in ("--state-dir", "--store"):
        p = run(lookout_cmd + [cmd, flag, str(tmp_path / "nonexistent")])
        assert p.returncode == 2 and "no such directory" in p.stderr and p.stdout == "", p


def test_count_of_an_existing_store(lookout_cmd, store, tmp_path):
    p = run(lookout_cmd + ["count", "--store", str(store)])
    assert p.returncode == 0 and json.loads(p.stdout) == {"count": 5}
    empty = tmp_path / "empty-state"
    empty.mkdir()
    p = run(lookout_cmd + ["count", "--state-dir", str(empty)])  # a state dir before the first write: 0, not an error
    assert p.returncode == 0 and json.loads(p.stdout) == {"count": 0}
