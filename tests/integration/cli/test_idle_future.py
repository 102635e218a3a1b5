"""Quiet spells and clocks from the future through the real commands (issues 16 and 18):
`lookout replay` and `lookout run --tail` / the generator, as subprocesses on real files.
The Kafka cases are in test_kafka_idle_future.py."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import orjson

FUTURE_TS = 4102444800  # 2100-01-01


def _rec(ts: float, client: str = "10.1.1.1", status: int = 200, host: str = "web.example.com") -> bytes:
    return orjson.dumps(
        {
            "@timestamp": round(ts, 6),
            "client_ip": client,
            "host": host,
            "status": str(status),
            "request_time": "0.12",
            "country": "US",
            "method": "GET",
            "server": "s1",
        }
    )


def _dead_letters(out: Path) -> list[dict]:
    f = out / "rejected.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []


def _results(out: Path, rule: str) -> list[dict]:
    f = out / f"{rule}.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []


def _append(path: Path, lines: list[bytes]) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(x + b"\n" for x in lines))


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    return err


def _wait_for(pred: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return pred()


def test_replay_one_record_from_2100_among_3000(lookout_cmd: list[str], tmp_path: Path) -> None:
    """The issue's case: 3,000 records 0.1 s apart, ten minutes old, record 1,000 stamped in the
    year 2100 → exactly one `future-timestamp`, zero late, results of the input without it."""
    start = time.time() - 600
    lines = [_rec(start + 0.1 * i, f"10.1.{i % 4}.1", 404 if i % 6 == 0 else 200, f"h{i % 3}.example.com") for i in range(3000)]
    poisoned = list(lines)
    poisoned[999] = orjson.dumps({**orjson.loads(lines[999]), "@timestamp": str(FUTURE_TS)})
    (tmp_path / "poisoned.ndjson").write_bytes(b"\n".join(poisoned) + b"\n")
    (tmp_path / "clean.ndjson").write_bytes(b"\n".join(lines[:999] + lines[1000:]) + b"\n")
    summaries = {}
    for name in ("poisoned", "clean"):
        p = subprocess.run(
            [*lookout_cmd, "replay", str(tmp_path / f"{name}.ndjson"), "--out", str(tmp_path / name), "--json", "--no-progress"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert p.returncode == 0, p.stderr
        summaries[name] = json.loads(p.stdout)
    s = summaries["poisoned"]
    assert s["late"] == 0 and s["rejected"] == 1 and s["records"] == 2999
    assert s["reasons"] == {"future-timestamp": 1}
    (dl,) = _dead_letters(tmp_path / "poisoned")
    assert dl["reason"] == "future-timestamp" and dl["line"] == 1000 and str(FUTURE_TS) in dl["raw"]
    for rule in ("goal1-topic", "goal2-topic", "goal3-topic", "goal4-topic"):
        got = (tmp_path / "poisoned" / f"{rule}.jsonl").read_bytes()
        assert got == (tmp_path / "clean" / f"{rule}.jsonl").read_bytes(), rule
        assert got, rule
    assert summaries["clean"]["results"] == s["results"]


def _tail(lookout_cmd: list[str], tmp_path: Path, log: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            *lookout_cmd,
            "run",
            "--tail",
            str(log),
            "--state-dir",
            str(tmp_path / "state"),
            "--out",
            str(tmp_path / "out"),
            "--no-view",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_run_tail_quiet_spell_then_the_present_is_not_late(lookout_cmd: list[str], tmp_path: Path) -> None:
    """Records at the present, a quiet spell longer than the idle timeout, records at the present
    again: zero late; a client's requests before and after the pause count together; a burst
    right after the pause is alerted."""
    log = tmp_path / "access.log"
    log.write_bytes(b"")
    proc = _tail(lookout_cmd, tmp_path, log, "--idle-timeout", "2s")
    try:
        now = time.time()
        _append(log, [_rec(now + 0.01 * i, "10.1.1.1") for i in range(6)])
        time.sleep(5)  # > idle timeout: the idle advance runs
        now = time.time()
        _append(log, [_rec(now + 0.01 * i, "10.1.1.1") for i in range(6)])  # 12 in 20 s with the first 6
        _append(log, [_rec(now + 0.01 * i, "10.2.2.2") for i in range(15)])  # a burst after the pause
        assert _wait_for(lambda: len({a["client_ip"] for a in _results(tmp_path / "out", "goal1-topic")}) == 2, 15)
    finally:
        err = _stop(proc)
    assert "the watermark follows the clock" in err  # the quiet spell did count as idle
    assert "27 valid, 0 rejected, 0 late" in err
    assert _dead_letters(tmp_path / "out") == []
    alerts = _results(tmp_path / "out", "goal1-topic")
    assert {a["client_ip"] for a in alerts} == {"10.1.1.1", "10.2.2.2"}
    assert {a["count"] for a in alerts} == {11}


def test_run_tail_backlog_then_silence_emits_every_window(lookout_cmd: list[str], tmp_path: Path) -> None:
    """Old records (an hour ago, 3 minutes of them), then nothing: once idle, every window is
    emitted, exactly as replay emits them at end of input."""
    start = time.time() - 3600
    lines = [_rec(start + 0.2 * i, f"10.1.{i % 3}.1", 404 if i % 4 == 0 else 200, f"h{i % 2}.example.com") for i in range(900)]
    data = tmp_path / "backlog.ndjson"
    data.write_bytes(b"\n".join(lines) + b"\n")
    p = subprocess.run(
        [*lookout_cmd, "replay", str(data), "--out", str(tmp_path / "replay"), "--no-progress"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    log = tmp_path / "access.log"
    log.write_bytes(data.read_bytes())
    proc = _tail(lookout_cmd, tmp_path, log, "--idle-timeout", "1s")
    want = (tmp_path / "replay" / "goal3-topic.jsonl").read_text().splitlines()
    try:
        _wait_for(lambda: len(_results(tmp_path / "out", "goal3-topic")) == len(want), 20)
    finally:
        _stop(proc)
    for rule in ("goal1-topic", "goal2-topic", "goal3-topic", "goal4-topic"):
        got = sorted((tmp_path / "out" / f"{rule}.jsonl").read_text().splitlines())
        assert got == sorted((tmp_path / "replay" / f"{rule}.jsonl").read_text().splitlines()), rule
        assert got, rule


def test_run_tail_one_record_from_the_future(lookout_cmd: list[str], tmp_path: Path) -> None:
    """A clock-skewed line in a live log: rejected `future-timestamp`, and every record after it
    is counted (a burst after it is alerted), none late."""
    log = tmp_path / "access.log"
    log.write_bytes(b"")
    proc = _tail(lookout_cmd, tmp_path, log, "--idle-timeout", "30s")
    try:
        now = time.time()
        _append(log, [_rec(now + 0.01 * i, "10.1.1.1") for i in range(5)])
        _append(log, [_rec(FUTURE_TS, "10.9.9.9"), _rec(now + 420, "10.9.9.9")])  # 2100, and 7 minutes ahead
        time.sleep(1)
        now = time.time()
        _append(log, [_rec(now + 0.01 * i, "10.2.2.2") for i in range(15)])
        assert _wait_for(lambda: _results(tmp_path / "out", "goal1-topic"), 15)
    finally:
        err = _stop(proc)
    dls = _dead_letters(tmp_path / "out")
    assert [d["reason"] for d in dls] == ["future-timestamp", "future-timestamp"]
    assert [d["line"] for d in dls] == [6, 7]
    assert "20 valid, 2 rejected, 0 late" in err and "dead letters by reason: future-timestamp: 2" in err
    assert {a["client_ip"] for a in _results(tmp_path / "out", "goal1-topic")} == {"10.2.2.2"}


def test_run_tail_says_once_when_this_machines_clock_looks_behind(lookout_cmd: list[str], tmp_path: Path) -> None:
    """A log written by machines whose clocks are right, read on one whose clock is an hour slow
    (a standby on a badly set machine): every record is `future-timestamp`; the run says once, in
    words, that its own clock is the likely culprit, and again when records agree with it."""
    log = tmp_path / "access.log"
    log.write_bytes(b"")
    proc = _tail(lookout_cmd, tmp_path, log, "--idle-timeout", "30s")
    try:
        ahead = time.time() + 3600
        for k in range(3):  # 3,000 records in three writes: one warning, not three
            _append(log, [_rec(ahead + k + 0.001 * i, f"10.3.{i % 200}.1") for i in range(1000)])
            time.sleep(0.3)
        assert _wait_for(lambda: len(_dead_letters(tmp_path / "out")) == 3000, 30)
        now = time.time()
        _append(log, [_rec(now + 0.01 * i, "10.2.2.2") for i in range(5)])
        time.sleep(1.5)
    finally:
        err = _stop(proc)
    assert err.count("is this machine's clock behind?") == 1, err[-3000:]
    assert err.count("records are on time by this machine's clock again") == 1, err[-3000:]
    assert "5 valid, 3,000 rejected, 0 late" in err, err[-3000:]


def test_run_tail_says_once_when_this_machines_clock_looks_ahead(lookout_cmd: list[str], tmp_path: Path) -> None:
    """The other way round: this machine's clock an hour ahead of the log's. After a quiet spell
    the watermark follows this clock, so every record after it is late; the run says once that
    its clock may be ahead (or the records later than lateness allows), and again when on time."""
    log = tmp_path / "access.log"
    log.write_bytes(b"")
    proc = _tail(lookout_cmd, tmp_path, log, "--idle-timeout", "1s")
    try:
        behind = time.time() - 3600  # the log's clock, an hour behind this machine's
        _append(log, [_rec(behind + 0.01 * i, f"10.4.{i % 200}.1") for i in range(200)])
        assert _wait_for(lambda: False, 2.5) is False  # quiet: the watermark follows this machine's clock
        _append(log, [_rec(behind + 3 + 0.001 * i, f"10.4.{i % 200}.1") for i in range(1200)])
        assert _wait_for(lambda: len(_dead_letters(tmp_path / "out")) == 1200, 30)
        now = time.time()
        _append(log, [_rec(now + 0.01 * i, "10.2.2.2") for i in range(5)])
        time.sleep(1.5)
    finally:
        err = _stop(proc)
    assert err.count("is this machine's clock ahead") == 1, err[-3000:]
    assert err.count("records are on time by this machine's clock again") == 1, err[-3000:]
    assert "1,405 valid, 0 rejected, 1,200 late" in err, err[-3000:]


def test_run_generator_quiet_between_records_closes_windows_by_the_clock(lookout_cmd: list[str], tmp_path: Path) -> None:
    """The generator at one record per 8 s: between records input is idle, so the record's
    1 s window closes once the clock is `lateness` past it (not when the next record comes, nor
    never), and nothing is late."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("lateness: 1s\nrules: [{name: per-second, window: 1s, group_by: server, aggregate: count, emit: final}]\n")
    p = subprocess.run(
        [
            *lookout_cmd,
            "run",
            "--rate",
            "0.125",
            "--seed",
            "5",
            "--idle-timeout",
            "1s",
            "--duration",
            "13.5",
            "--rules",
            str(rules),
            "--state-dir",
            str(tmp_path / "state"),
            "--out",
            str(tmp_path / "out"),
            "--no-view",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert "the watermark follows the clock" in p.stderr
    assert "1 lines, 1 valid, 0 rejected, 0 late" in p.stderr
    (rec,) = [
        json.loads(x)
        for x in subprocess.run(
            [*lookout_cmd, "search", "--state-dir", str(tmp_path / "state")],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        ).stdout.splitlines()
    ]
    (res,) = _results(tmp_path / "out", "per-second")
    assert res["server"] == rec["server"] and res["count"] == 1
    assert _dead_letters(tmp_path / "out") == []
