"""The commands as a user runs them: real subprocesses, real files."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import time

import orjson
import pytest

from lookout.checkpoint import load_meta
from tests.fixtures.records import GOOD


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def test_rules_prints_defaults(lookout_cmd):
    p = run(lookout_cmd + ["rules"])
    assert p.returncode == 0
    for name in ("goal1-topic", "goal2-topic", "goal3-topic", "goal4-topic"):
        assert name in p.stdout
    assert "count > 10" in p.stdout and "avg(request_time)" in p.stdout


@pytest.mark.parametrize(
    "text,needle",
    [
        ("rules: [{name: r, window: 20x, group_by: host}]", "window"),
        ("rules: [{name: r, window: 1s, group_by: nope}]", "group_by"),
        ("rules: [{name: r, window: 1s, group_by: host, aggregate: avg(host)}]", "aggregate"),
        ("rules: [{name: r, window: {size: 1s, hop: 5s}, group_by: host}]", "hop"),
        ("rules: [{name: r, window: 1s, group_by: host, aggregate: avg(request_time), threshold: '> 1', emit: alert}]", "final"),
        ("rules: [{name: r, window: 1s, group_by: host, filter: {colour: red}}]", "colour"),
        ("rules: [{name: r, window: 1s, group_by: host, surprise: 1}]", "surprise"),
        ("rules: [", "YAML"),
    ],
)
def test_bad_rules_exit_2_naming_the_field(lookout_cmd, tmp_path, text, needle):
    f = tmp_path / "rules.yaml"
    f.write_text(text)
    p = run(lookout_cmd + ["rules", "--rules", str(f)])
    assert p.returncode == 2
    assert needle in p.stderr


def test_replay_writes_results_and_dead_letters(lookout_cmd, tmp_path):
    lines = []
    for i in range(30):  # one client, 30 requests in 3 s: goal 1 fires
        lines.append(orjson.dumps({**GOOD, "@timestamp": 1659509511 + i / 10}))
    lines += [b"{broken", orjson.dumps({**GOOD, "status": "999"})]
    inp = tmp_path / "in.ndjson"
    inp.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    p = run(lookout_cmd + ["replay", str(inp), "--out", str(out), "--json"])
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["lines"] == 32 and summary["records"] == 30 and summary["rejected"] == 2
    assert summary["reasons"] == {"invalid-json": 1, "invalid-status": 1}
    g1 = [json.loads(x) for x in (out / "goal1-topic.jsonl").read_text().splitlines()]
    assert g1 and all(r["count"] == 11 and r["client_ip"] == "154.85.126.16" for r in g1)
    assert list(g1[0]) == ["window", "client_ip", "count"]
    g3 = [json.loads(x) for x in (out / "goal3-topic.jsonl").read_text().splitlines()]
    assert g3 == [
        {"window": {"start": "2022-08-03T06:51:00.000Z", "end": "2022-08-03T06:52:00.000Z"}, "country": "US", "count": 30}
    ]
    g4 = [json.loads(x) for x in (out / "goal4-topic.jsonl").read_text().splitlines()]
    assert g4 == [
        {
            "window": {"start": "2022-08-03T06:51:00.000Z", "end": "2022-08-03T06:52:00.000Z"},
            "host": "api_38.example.com",
            "avg(request_time)": 0.28,
        }
    ]
    rej = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    assert [(r["reason"], r["line"], r["raw"]) for r in rej] == [
        ("invalid-json", 31, "{broken"),
        ("invalid-status", 32, lines[31].decode()),
    ]


def test_replay_stdin_and_gzip_agree(lookout_cmd, tmp_path):
    gen = run(lookout_cmd + ["generate", "5000", "--out", str(tmp_path / "g.ndjson")])
    assert gen.returncode == 0
    data = (tmp_path / "g.ndjson").read_bytes()
    (tmp_path / "g.ndjson.gz").write_bytes(gzip.compress(data))
    a = run(lookout_cmd + ["replay", "-", "--out", str(tmp_path / "a"), "--json"], input=data.decode())
    b = run(lookout_cmd + ["replay", str(tmp_path / "g.ndjson.gz"), "--out", str(tmp_path / "b"), "--json"])
    assert a.returncode == 0 and b.returncode == 0
    assert json.loads(a.stdout)["records"] == 5000
    for name in ("goal1-topic", "goal2-topic", "goal3-topic", "goal4-topic"):
        assert (tmp_path / "a" / f"{name}.jsonl").read_text() == (tmp_path / "b" / f"{name}.jsonl").read_text()
    assert (tmp_path / "a" / "goal3-topic.jsonl").read_text()


def test_replay_missing_file_exits_2(lookout_cmd, tmp_path):
    p = run(lookout_cmd + ["replay", str(tmp_path / "nope.ndjson")])
    assert p.returncode == 2 and "no such file" in p.stderr


def test_run_embedded_stops_cleanly_and_resumes(lookout_cmd, tmp_path):
    state, out = tmp_path / "state", tmp_path / "out"
    args = lookout_cmd + ["run", "--state-dir", str(state), "--out", str(out), "--rate", "400", "--seed", "3", "--no-view"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "lookout run stopped" in err
    first = json.loads(run(lookout_cmd + ["count", "--state-dir", str(state)]).stdout)["count"]
    assert first > 400
    assert load_meta(state)["stats"]["records"] == first
    p = run(args + ["--duration", "3"])
    assert p.returncode == 0, p.stderr
    second = json.loads(run(lookout_cmd + ["count", "--state-dir", str(state)]).stdout)["count"]
    assert second > first + 400
    found = run(lookout_cmd + ["search", "--state-dir", str(state), "--limit", "3"])
    rows = [json.loads(x) for x in found.stdout.splitlines()]
    assert len(rows) == 3 and all({"@timestamp", "client_ip", "host", "status"} <= r.keys() for r in rows)
    assert rows[0]["@timestamp"] >= rows[-1]["@timestamp"]


def test_run_sigkill_then_restart_loses_nothing(lookout_cmd, tmp_path):
    """A crash between checkpoints: the restart cuts files back and the store stays consistent."""
    state, out = tmp_path / "state", tmp_path / "out"
    args = lookout_cmd + ["run", "--state-dir", str(state), "--out", str(out), "--rate", "300", "--no-view"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(4)
    proc.kill()
    proc.wait(timeout=10)
    p = run(args + ["--duration", "3"])
    assert p.returncode == 0, p.stderr
    ck = load_meta(state)
    # the store holds exactly what the checkpointed stats say was read
    n = json.loads(run(lookout_cmd + ["count", "--state-dir", str(state)]).stdout)["count"]
    assert n == ck["stats"]["records"] > 0
    for name, size in ck["sinks"]["files"].items():
        f = out / ("rejected.jsonl" if name == "rejected" else f"{name}.jsonl")
        assert f.stat().st_size == size


def test_config_file_sets_defaults_below_flags_and_environment(lookout_cmd, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: [{name: per-host, window: 1 minute, group_by: host, aggregate: count}]")
    cfg = tmp_path / "lookout.yaml"
    cfg.write_text(f"common:\n  rules: {rules}\nreplay:\n  out: {tmp_path / 'from-config'}\n")
    inp = tmp_path / "in.ndjson"
    inp.write_bytes(orjson.dumps(GOOD) + b"\n")
    p = run(lookout_cmd + ["--config", str(cfg), "replay", str(inp), "--json"])
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "from-config" / "per-host.jsonl").read_text().count("\n") == 1
    p = run(lookout_cmd + ["--config", str(cfg), "replay", str(inp), "--out", str(tmp_path / "flag"), "--json"])
    assert p.returncode == 0 and (tmp_path / "flag" / "per-host.jsonl").exists()  # the flag wins
    import os

    env = {**os.environ, "LOOKOUT_RULES": ""}
    p = run(lookout_cmd + ["--config", str(cfg), "rules"], env={**env, "LOOKOUT_CONFIG": ""})
    assert "per-host" in p.stdout
    p = run(lookout_cmd + ["rules"], env={**env, "LOOKOUT_CONFIG": str(cfg)})
    assert "per-host" in p.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: {no-such-option: 1}\n")
    p = run(lookout_cmd + ["--config", str(bad), "rules"])
    assert p.returncode == 2 and "no-such-option" in p.stderr
