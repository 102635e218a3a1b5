"""`lookout run` with the delta-log checkpoints: exact restarts after SIGKILL (also with the
last commit torn mid-append), an old pickle checkpoint refused, --retention parsed."""

from __future__ import annotations

import json
import pickle
import random
import subprocess
import time
from pathlib import Path

import duckdb

from lookout import store
from lookout.checkpoint import frame, load_meta, read_frames


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def assert_consistent(lookout_cmd: list[str], state: Path, out: Path) -> int:
    """Everything on disk is exactly what the last whole commit says: the store holds the
    generator's records 0..n-1 once each, the result files have the checkpointed sizes."""
    meta = load_meta(state)
    n = meta["stats"]["records"]
    files = store.data_files(state / "store")
    got = (
        duckdb.connect()
        .execute("SELECT count(*), count(DISTINCT id), max(CAST(split_part(id, ':', 2) AS BIGINT)) FROM read_parquet(?)", [files])
        .fetchone()
    )
    assert got == (n, n, n - 1), (got, n)
    assert meta["position"] == n  # the generator's position is its next record id
    for name, size in meta["sinks"]["files"].items():
        f = out / ("rejected.jsonl" if name == "rejected" else f"{name}.jsonl")
        assert f.stat().st_size == size
    assert json.loads(run(lookout_cmd + ["count", "--state-dir", str(state)]).stdout)["count"] == n
    return n


def test_sigkill_with_the_last_commit_torn_mid_append_resumes_from_the_one_before(lookout_cmd, tmp_path):
    state, out = tmp_path / "state", tmp_path / "out"
    args = lookout_cmd + ["run", "--state-dir", str(state), "--out", str(out), "--rate", "3000", "--no-view"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def log_frames() -> int:
        logs = sorted((state / "checkpoint").glob("log-*.lkc"))
        return len(read_frames(logs[-1].read_bytes())[0]) if logs else 0

    deadline = time.monotonic() + 90
    while log_frames() < 3:  # a snapshot and a few delta records (start-up is slow on a busy machine)
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.kill()
    proc.wait(timeout=10)
    logs = sorted((state / "checkpoint").glob("log-*.lkc"))
    data = logs[-1].read_bytes()
    frames, end = read_frames(data)
    assert len(frames) >= 2
    # the crash hit in the middle of writing the last record: cut it in half
    last = len(frame(frames[-1]))
    logs[-1].write_bytes(data[: end - last // 2])
    before = load_meta(state)
    p = run(args + ["--duration", "3"])
    assert p.returncode == 0, p.stderr
    assert f"resumed from checkpoint at {before['position']}" in p.stderr
    n = assert_consistent(lookout_cmd, state, out)
    assert n > before["stats"]["records"]


def test_repeated_sigkills_at_random_moments_lose_and_repeat_nothing(lookout_cmd, tmp_path):
    state, out = tmp_path / "state", tmp_path / "out"
    args = lookout_cmd + ["run", "--state-dir", str(state), "--out", str(out), "--rate", "5000", "--no-view"]
    rnd = random.Random(21)
    for _ in range(4):
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.5 + rnd.random() * 2)  # anywhere in a commit: flush, log append, merge
        proc.kill()
        proc.wait(timeout=10)
    p = run(args + ["--duration", "2"])
    assert p.returncode == 0, p.stderr
    assert assert_consistent(lookout_cmd, state, out) > 5_000


class Boom:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (__import__("os").system, (f"touch {self.marker}",))


def test_old_pickle_checkpoint_is_refused_with_what_to_do(lookout_cmd, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    marker = tmp_path / "ran"
    (state / "checkpoint.pkl").write_bytes(pickle.dumps(Boom(marker)))
    p = run(lookout_cmd + ["run", "--state-dir", str(state), "--out", str(tmp_path / "out"), "--no-view", "--duration", "2"])
    assert p.returncode == 2
    assert "checkpoint.pkl" in p.stderr and "never loads" in p.stderr and "mv " in p.stderr
    assert not marker.exists()


def test_retention_option(lookout_cmd, tmp_path):
    p = run(lookout_cmd + ["run", "--retention", "soon", "--state-dir", str(tmp_path), "--no-view", "--duration", "1"])
    assert p.returncode == 2 and "duration" in p.stderr
    p = run(
        lookout_cmd
        + [
            "run",
            "--retention",
            "off",
            "--state-dir",
            str(tmp_path / "s"),
            "--out",
            str(tmp_path / "o"),
            "--no-view",
            "--duration",
            "1.5",
        ]
    )
    assert p.returncode == 0, p.stderr
