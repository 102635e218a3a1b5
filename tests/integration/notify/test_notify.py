"""Notifications (issue 10 part 2) against a real HTTP receiver the tests start: at-least-once
through a receiver outage and a SIGKILL, idempotency keys, permanent refusals dead-lettered,
payload formats, validation at start, and `replay` silent unless --notify."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import orjson

from lookout.engine import Engine
from lookout.incidents import IncidentTracker
from lookout.notify.outbox import Outbox
from lookout.notify.sender import Notifier
from lookout.records import parse_chunk
from lookout.rules import load_rules_text
from tests.fixtures.receiver import Receiver

BASE = 1_659_509_400

RULES = """
lateness: 1s
rules:
  - {name: burst, window: {size: 5s, hop: 1s}, group_by: client_ip, aggregate: count, threshold: count > 5}
"""


def traffic(t0: float, t1: float, bursts: list[float]) -> list[bytes]:
    """Background traffic (2 records/s, 20 rotating clients: none alerts) plus, at each burst
    time, 10 requests in one second from a client of its own."""
    recs = []
    i = 0
    t = t0
    while t < t1:
        recs.append({"@timestamp": round(BASE + t, 3), "client_ip": f"10.0.0.{i % 20}", "host": "h", "status": 200})
        i += 1
        t += 0.5
    for b in bursts:
        recs += [
            {"@timestamp": round(BASE + b + j * 0.1, 3), "client_ip": f"10.9.0.{int(b)}", "host": "h", "status": 200}
            for j in range(10)
        ]
    recs.sort(key=lambda r: r["@timestamp"])
    return [orjson.dumps(r) for r in recs]


def incidents(out: Path) -> list[dict]:
    p = out / "incidents.jsonl"
    return [orjson.loads(x) for x in p.read_bytes().splitlines()] if p.exists() else []


def test_run_notifies_every_transition_through_an_outage_and_a_sigkill(lookout_cmd, tmp_path, receiver: Receiver):
    refuse_until = [float("inf")]  # 503 until a few seconds after the restart
    receiver.answer = lambda path, body: 503 if time.time() < refuse_until[0] else 200
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES + 'notify:\n  - {type: webhook, url: "${RECV}/hook", name: hook}\n')
    log, state, out = tmp_path / "access.log", tmp_path / "state", tmp_path / "out"
    log.write_bytes(b"\n".join(traffic(0, 70, [10, 30, 50])) + b"\n")
    env = {**os.environ, "RECV": receiver.url}
    args = lookout_cmd + [
        "run",
        "--tail",
        str(log),
        "--rules",
        str(rules),
        "--state-dir",
        str(state),
        "--out",
        str(out),
        "--idle-timeout",
        "2s",
        "--no-view",
    ]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while len(incidents(out)) < 4:  # committed: firing and resolved lines of the first bursts
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.5)  # the sender is retrying
    finally:
        proc.kill()  # SIGKILL while notifications wait in the outbox
        proc.wait(10)
    assert not receiver.accepted()
    with open(log, "ab") as f:  # more traffic arrives while lookout is down
        f.write(b"\n".join(traffic(70, 140, [90, 110, 130])) + b"\n")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    refuse_until[0] = time.time() + 3
    try:

        def done() -> bool:
            inc = incidents(out)
            want = {f"{d['id']}:{d['status']}" for d in inc}
            got = {r.headers["idempotency-key"] for r in receiver.accepted()}
            return len(inc) == 12 and want <= got

        receiver.wait_for(done, 60, "every firing and resolved")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    inc = incidents(out)
    keys = [f"{d['id']}:{d['status']}" for d in inc]
    assert len(keys) == len(set(keys)) == 12  # the file: each transition once, across the crash
    assert sorted(d["key"]["client_ip"] for d in inc if d["status"] == "firing") == [
        f"10.9.0.{b}" for b in (10, 110, 130, 30, 50, 90)
    ]
    assert {d["status"] for d in inc} == {"firing", "resolved"}
    for r in receiver.requests:  # nothing else arrives; a repeat carries the same key and body
        assert r.path == "/hook"
        body = orjson.loads(r.body)
        assert r.headers["idempotency-key"] == f"{body['id']}:{body['status']}" in keys
        assert body == next(d for d in inc if f"{d['id']}:{d['status']}" == r.headers["idempotency-key"])
    assert sum(r.answered == 503 for r in receiver.requests) >= 2
    assert not Outbox(state).size()


def _transitions(rs):
    eng, tr = Engine(rs), IncidentTracker(rs)
    lines = traffic(0, 40, [10, 25])
    trans = tr.step(eng.process(parse_chunk(b"\n".join(lines)).records), eng.watermark)
    return trans + tr.step(eng.close_all(), eng.watermark) + tr.resolve_all()


def test_permanent_refusals_are_dead_lettered_and_transient_ones_retried(tmp_path, receiver: Receiver, monkeypatch):
    t_start = time.time()
    receiver.answer = lambda path, body: 400 if path == "/bad" else (503 if time.time() < t_start + 2 else 200)
    receiver.reply = b"no\x1b[2J\nway"  # a hostile answer must not reach the log raw
    monkeypatch.setenv("RECV", receiver.url)
    rs = load_rules_text(
        RULES + 'notify:\n  - {type: webhook, url: "${RECV}/bad", name: bad}\n'
        '  - {type: webhook, url: "${RECV}/good", name: good}\n'
    )
    trans = _transitions(rs)
    assert [t.status for t in trans].count("firing") == 2
    n = Notifier(rs, tmp_path)
    n.recover(0)
    n.start()
    n.add(trans)
    n.stage(1)
    n.release(1)
    receiver.wait_for(lambda: len([r for r in receiver.accepted() if r.path == "/good"]) == 4, 30, "4 notifications")
    n.stop(drain=5)
    bad = [r for r in receiver.requests if r.path == "/bad"]
    assert len(bad) == 4  # one request each: a 400 is not retried
    assert n.counts[("bad", "dead")] == 4 and n.counts[("good", "sent")] == 4 and n.counts[("good", "retried")] >= 1
    dead = Outbox(tmp_path).dead()
    assert [d["idem"] for d in dead] == [t.idempotency_key for t in trans]
    assert all(d["reason"] == "HTTP 400: no\\x1b[2J\\x0away" for d in dead), dead[0]
    good = [orjson.loads(r.body)["status"] for r in receiver.accepted() if r.path == "/good"]
    assert good == [t.status for t in trans]  # in order: a resolved never overtakes its firing


def test_outbox_drops_rows_of_a_checkpoint_that_never_landed(tmp_path):
    box = Outbox(tmp_path)
    box.stage([("t", "a:firing", b"{}")], 1)
    box.release(1)
    box.stage([("t", "b:firing", b"{}")], 2)  # crash before checkpoint 2 was written
    box.close()
    box = Outbox(tmp_path)
    assert box.recover(1) == 1
    head = box.head("t")
    assert head is not None and head.idem == "a:firing" and box.size() == 1


def test_alertmanager_and_slack_payloads(tmp_path, receiver: Receiver, monkeypatch):
    monkeypatch.setenv("RECV", receiver.url)
    rs = load_rules_text(
        RULES + 'notify:\n  - {type: alertmanager, url: "${RECV}", rules: [burst]}\n  - {type: slack, url: "${RECV}/slack"}\n'
    )
    trans = _transitions(rs)
    n = Notifier(rs, tmp_path)
    n.recover(0)
    n.start()
    n.add(trans)
    n.stage(1)
    n.release(1)
    receiver.wait_for(lambda: len(receiver.accepted()) == 8, 30, "8 notifications")
    n.stop()
    am = [r for r in receiver.requests if r.path == "/api/v2/alerts"]
    sl = [orjson.loads(r.body)["text"] for r in receiver.requests if r.path == "/slack"]
    assert len(am) == 4 and len(sl) == 4
    assert [t.status for t in trans] == ["firing", "firing", "resolved", "resolved"]
    firing, resolved = orjson.loads(am[0].body)[0], orjson.loads(am[2].body)[0]
    assert firing["labels"] == {"alertname": "burst", "client_ip": "10.9.0.10"} and "endsAt" not in firing
    assert resolved["labels"] == firing["labels"] and resolved["startsAt"] == firing["startsAt"]
    assert resolved["endsAt"] == trans[2].doc["end"] and resolved["annotations"]["peak"] == "10"
    assert sl[0] == ":rotating_light: burst: 10.9.0.10 sent 10 requests in 5s (limit 5), since 06:50:06 UTC"
    assert sl[2].startswith("Resolved: 10.9.0.10 sent 10 requests in 5s (limit 5), since 06:50:06 UTC until")


def test_replay_notifies_only_with_the_flag(lookout_cmd, tmp_path, receiver: Receiver):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES + 'notify:\n  - {type: webhook, url: "${RECV}/hook"}\n')
    data = tmp_path / "in.ndjson"
    data.write_bytes(b"\n".join(traffic(0, 40, [10, 25])) + b"\n")
    env = {**os.environ, "RECV": receiver.url}
    base = lookout_cmd + ["replay", str(data), "--rules", str(rules), "--state-dir", str(tmp_path / "st")]
    subprocess.run(base + ["--out", str(tmp_path / "a")], env=env, check=True, capture_output=True)
    assert receiver.requests == []
    subprocess.run(base + ["--out", str(tmp_path / "b"), "--notify"], env=env, check=True, capture_output=True)
    keys = sorted(r.headers["idempotency-key"] for r in receiver.requests)
    assert keys == sorted(f"{d['id']}:{d['status']}" for d in incidents(tmp_path / "b")) and len(keys) == 4


def test_bad_targets_fail_at_start_with_the_field_named_and_secrets_never_printed(lookout_cmd, tmp_path):
    rules = tmp_path / "rules.yaml"
    env = {**os.environ, "HOOK": "https://hooks.example.com/T000/SECRET-PART", "TOKEN": "s3cr3t-token"}
    cases = [
        ('  - {type: pager, url: "http://127.0.0.1:1/x"}', "notify.0.type"),
        ('  - {type: webhook, url: "not a url"}', "notify.0.url"),
        ('  - {type: webhook, url: "${MISSING_VAR}"}', "notify.0.url: environment variable MISSING_VAR is not set"),
        ('  - {type: webhook, url: "http://127.0.0.1:1/x", rules: [nope]}', "notify.0.rules: unknown rule(s) nope"),
    ]
    for line, needle in cases:
        rules.write_text(RULES + "notify:\n" + line + "\n")
        for cmd in (
            ["rules", "--rules", str(rules)],
            [
                "run",
                "--rules",
                str(rules),
                "--state-dir",
                str(tmp_path / "s"),
                "--out",
                str(tmp_path / "o"),
                "--no-view",
                "--duration",
                "1",
            ],
        ):
            p = subprocess.run(lookout_cmd + cmd, env=env, capture_output=True, text=True, timeout=60)
            assert p.returncode == 2 and needle in p.stderr, (cmd, p.stderr)
    rules.write_text(RULES + 'notify:\n  - {type: slack, url: "${HOOK}", headers: {Authorization: "Bearer ${TOKEN}"}}\n')
    p = subprocess.run(lookout_cmd + ["rules", "--rules", str(rules)], env=env, capture_output=True, text=True, check=True)
    assert "${HOOK}" in p.stdout and "Bearer ${TOKEN}" in p.stdout
    assert "SECRET-PART" not in p.stdout + p.stderr and "s3cr3t" not in p.stdout + p.stderr


def test_a_hanging_receiver_times_out_and_is_retried(tmp_path, receiver: Receiver, monkeypatch):
    calls = []

    def answer(path: str, body: bytes) -> int:
        calls.append(time.time())
        if len(calls) == 1:
            time.sleep(3)  # hangs past the target's 1 s timeout
        return 200

    receiver.answer = answer
    monkeypatch.setenv("RECV", receiver.url)
    rs = load_rules_text(RULES + 'notify:\n  - {type: webhook, url: "${RECV}/hook", name: slow, timeout: 1}\n')
    trans = _transitions(rs)
    n = Notifier(rs, tmp_path)
    n.recover(0)
    n.start()
    t0 = time.time()
    n.add(trans)
    n.stage(1)
    n.release(1)
    receiver.wait_for(lambda: len({r.headers["idempotency-key"] for r in receiver.accepted()}) == 4, 30, "all four")
    n.stop()
    assert n.counts[("slow", "retried")] >= 1 and calls[1] - t0 < 2.9  # did not wait for the hung answer


def test_a_real_alertmanager_accepts_firing_and_resolved(tmp_path, receiver: Receiver, monkeypatch):
    """Our alertmanager payload against the real thing: Alertmanager takes the alerts and routes
    them to its own webhook receiver as firing, then resolved."""
    from tests.fixtures.alertmanager import start_alertmanager

    am = start_alertmanager(tmp_path, receiver.url + "/from-am")
    try:
        monkeypatch.setenv("AM", am.url)
        rs = load_rules_text(RULES + 'notify:\n  - {type: alertmanager, url: "${AM}", name: am}\n')
        trans = _transitions(rs)
        n = Notifier(rs, tmp_path)
        n.recover(0)
        n.start()

        def routed(status: str) -> set[str]:
            out = set()
            for r in receiver.accepted():
                msg = orjson.loads(r.body)
                out |= {a["labels"]["client_ip"] for a in msg["alerts"] if a["status"] == status}
            return out

        n.add([t for t in trans if t.status == "firing"])
        n.stage(1)
        n.release(1)
        receiver.wait_for(lambda: routed("firing") == {"10.9.0.10", "10.9.0.25"}, 30, "alertmanager routing firing")
        with urllib.request.urlopen(am.url + "/api/v2/alerts", timeout=5) as r:
            active = orjson.loads(r.read())
        assert {a["labels"]["alertname"] for a in active} == {"burst"}
        assert all(a["annotations"]["incident_id"] in {t.id for t in trans} for a in active)
        n.add([t for t in trans if t.status == "resolved"])
        n.stage(2)
        n.release(2)
        receiver.wait_for(lambda: routed("resolved") == {"10.9.0.10", "10.9.0.25"}, 30, "alertmanager routing resolved")
        n.stop()
        assert n.counts[("am", "sent")] == 4 and not n.counts[("am", "dead")]
    finally:
        am.stop()


def test_too_many_undelivered_is_said_once_per_spell_not_per_commit(tmp_path, caplog):
    """A receiver down for long: every commit asks for the undelivered rows (the checkpoint topic
    carries them); the warning that the checkpoint carries only the oldest comes once a spell."""
    rs = load_rules_text(RULES + 'notify:\n  - {type: webhook, url: "http://127.0.0.1:9/x", name: x}\n')
    n = Notifier(rs, tmp_path)
    n.outbox.stage([("x", f"k{i}:firing", b"{}") for i in range(5)], 1)
    with caplog.at_level(logging.INFO, logger="lookout.notify"):
        for _ in range(10):
            assert [k for _, k, _ in n.undelivered(limit=3)] == ["k0:firing", "k1:firing", "k2:firing"]
        n.outbox.con.execute("DELETE FROM outbox WHERE idem IN ('k0:firing', 'k1:firing', 'k2:firing')")
        assert len(n.undelivered(limit=3)) == 2
    said = [r.getMessage() for r in caplog.records]
    assert sum("more than 3 notifications undelivered" in m for m in said) == 1, said
    assert sum("back under 3" in m for m in said) == 1, said
