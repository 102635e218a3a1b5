"""Damaged and odd inputs and outputs for `lookout replay` (issue 20): real subprocesses, real files.

A truncated or corrupt .gz costs only the damage: lines before it are processed, other files'
results are kept, the exit code (3) says input was damaged; bad paths get one clear line.
"""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.fixtures.records import GOOD


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def records(n: int, client: str, start: float = 1659509511.0) -> bytes:
    """n requests from one client, 10 per second (goal 1 fires for any n > 10)."""
    return b"".join(orjson.dumps({**GOOD, "client_ip": client, "@timestamp": start + i / 10}) + b"\n" for i in range(n))


def goal1_clients(out: Path) -> set[str]:
    return {json.loads(ln)["client_ip"] for ln in (out / "goal1-topic.jsonl").read_text().splitlines()}


def test_truncated_gz_keeps_what_came_before_and_other_files(lookout_cmd, tmp_path):
    good = tmp_path / "good.ndjson"
    good.write_bytes(records(50, "10.0.0.1"))
    full = gzip.compress(records(40_000, "10.0.0.2", start=1659509600.0))
    damaged = tmp_path / "damaged.gz"
    damaged.write_bytes(full[: len(full) // 2])
    after = tmp_path / "after.ndjson"
    after.write_bytes(records(50, "10.0.0.3", start=1659519600.0))
    out = tmp_path / "out"
    p = run(lookout_cmd + ["replay", str(good), str(damaged), str(after), "--out", str(out), "--json"])
    assert p.returncode == 3, p.stderr
    assert "Aborted" not in p.stderr and "Traceback" not in p.stderr
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and str(damaged) in err[0] and "byte" in err[0], p.stderr
    summary = json.loads(p.stdout)
    assert 50 + 50 + 10_000 < summary["lines"] < 50 + 50 + 40_000  # a good part of the damaged file was read
    assert goal1_clients(out) == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}


def test_gzip_magic_that_is_not_gzip(lookout_cmd, tmp_path):
    fake = tmp_path / "fake.gz"
    fake.write_bytes(b"\x1f\x8b this is not gzip\n")
    good = tmp_path / "good.ndjson"
    good.write_bytes(records(50, "10.0.0.1"))
    out = tmp_path / "out"
    p = run(lookout_cmd + ["replay", str(fake), str(good), "--out", str(out), "--json"])
    assert p.returncode == 3
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and "not a gzip file" in err[0] and str(fake) in err[0], p.stderr
    assert goal1_clients(out) == {"10.0.0.1"}


def test_corrupt_gz_is_reported_with_offset(lookout_cmd, tmp_path):
    full = gzip.compress(records(20_000, "10.0.0.2"))
    bad = tmp_path / "corrupt.gz"
    bad.write_bytes(full[:4000] + bytes(64) + full[4064:])
    p = run(lookout_cmd + ["replay", str(bad), "--out", str(tmp_path / "out"), "--json"])
    assert p.returncode == 3 and "Traceback" not in p.stderr
    assert "damaged input at byte" in p.stderr and str(bad) in p.stderr


def test_bom_at_file_start_is_skipped(lookout_cmd, tmp_path):
    f = tmp_path / "bom.ndjson"
    f.write_bytes(b"\xef\xbb\xbf" + records(3, "10.0.0.1"))
    p = run(lookout_cmd + ["replay", str(f), "--out", str(tmp_path / "out"), "--json"])
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["lines"] == 3 and s["records"] == 3 and s["rejected"] == 0


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda d: d, "is a directory"),
        (lambda d: d / "missing.ndjson", "no such file"),
    ],
)
def test_unreadable_inputs_get_one_line(lookout_cmd, tmp_path, make, needle):
    out = tmp_path / "out"
    p = run(lookout_cmd + ["replay", str(make(tmp_path)), "--out", str(out)])
    assert p.returncode == 2
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and needle in err[0], p.stderr
    assert not out.exists()  # nothing was written (or emptied) before the input was checked


@pytest.mark.parametrize("out", ["/proc/self/x", "FILE"])
def test_unwritable_out_gets_one_line(lookout_cmd, tmp_path, out):
    inp = tmp_path / "in.ndjson"
    inp.write_bytes(records(3, "10.0.0.1"))
    if out == "FILE":
        out = str(inp)  # an existing file, not a directory
    p = run(lookout_cmd + ["replay", str(inp), "--out", out])
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert [ln for ln in p.stderr.splitlines() if out in ln and "rror" in ln], p.stderr  # click's usage error or ours


def test_records_at_the_end_of_time_do_not_crash_replay(lookout_cmd, tmp_path):
    """A record whose window would end past year 9999 (where no ISO-8601 can show it) is refused by the
    contract; the latest accepted one still has printable windows. Both used to crash replay's output."""
    inp = tmp_path / "late-in-time.ndjson"
    inp.write_bytes(
        orjson.dumps({**GOOD, "@timestamp": "9999-12-31T23:59:59Z"})
        + b"\n"
        + orjson.dumps({**GOOD, "@timestamp": "9997-12-31T23:59:59Z"})
        + b"\n"
    )
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: [{name: yearly, window: 366d, group_by: host}]")
    for extra in ([], ["--rules", str(rules)]):
        out = tmp_path / f"out{len(extra)}"
        p = run(lookout_cmd + ["replay", str(inp), "--out", str(out), "--json", *extra])
        assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-1500:]
        s = json.loads(p.stdout)
        # year 9997 passes the contract but is far ahead of the wall clock: the future guard
        # (issue 18) refuses it before any window is built, so neither line can crash the output
        assert s["records"] == 0 and s["reasons"] == {"invalid-timestamp": 1, "future-timestamp": 1}


@pytest.mark.parametrize("flag", ["--out", "--state-dir"])
def test_run_with_an_unwritable_directory_gets_one_line(lookout_cmd, tmp_path, flag):
    args = {"--out": str(tmp_path / "out"), "--state-dir": str(tmp_path / "state")}
    args[flag] = "/proc/self/x"
    p = subprocess.run(
        lookout_cmd + ["run", "--no-view", "--duration", "1", *[x for kv in args.items() for x in kv]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-1500:]
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and flag in err[0] and "/proc/self/x" in err[0], p.stderr
