"""One process per state dir (issue 20): real processes, a real flock."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from lookout.statelock import StateDirBusy, StateDirLock


def _start_run(lookout_cmd: list[str], state: Path, out: Path) -> subprocess.Popen:
    args = lookout_cmd + ["run", "--state-dir", str(state), "--out", str(out), "--rate", "200", "--no-view"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = state / "lock"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the first run holds the state dir
        if lock.exists() and lock.read_text().strip() == str(proc.pid):
            return proc
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the first run never took the lock")


def test_second_run_on_a_state_dir_exits_2_naming_the_holder(lookout_cmd, tmp_path):
    state = tmp_path / "state"
    first = _start_run(lookout_cmd, state, tmp_path / "out1")
    try:
        t0 = time.monotonic()
        second = subprocess.run(
            lookout_cmd + ["run", "--state-dir", str(state), "--out", str(tmp_path / "out2"), "--no-view", "--duration", "20"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2, second.stderr
        assert time.monotonic() - t0 < 15  # at once, not after its --duration
        assert f"process {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert not (tmp_path / "out2" / "goal1-topic.jsonl").exists()  # it wrote nothing
        ship = subprocess.run(
            lookout_cmd + ["ship", str(tmp_path / "access.log"), "--kafka", "127.0.0.1:1", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ship.returncode == 2 and f"process {first.pid}" in ship.stderr, ship.stderr
        assert first.poll() is None  # the holder runs on, untouched
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=30)
    assert first.returncode == 0, err
    # released on a clean stop: the next run takes the state dir
    again = subprocess.run(
        lookout_cmd + ["run", "--state-dir", str(state), "--out", str(tmp_path / "out1"), "--no-view", "--duration", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stderr


def test_sigkill_leaves_no_stale_lock(lookout_cmd, tmp_path):
    state = tmp_path / "state"
    first = _start_run(lookout_cmd, state, tmp_path / "out")
    first.kill()
    first.wait(timeout=10)
    again = subprocess.run(
        lookout_cmd + ["run", "--state-dir", str(state), "--out", str(tmp_path / "out"), "--no-view", "--duration", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stderr


def test_lock_in_process(tmp_path):
    a = StateDirLock(tmp_path / "s")
    with pytest.raises(StateDirBusy, match="in use by process"):
        StateDirLock(tmp_path / "s")
    t0 = time.monotonic()
    with pytest.raises(StateDirBusy):
        StateDirLock(tmp_path / "s", wait=0.5)
    assert time.monotonic() - t0 >= 0.5
    a.release()
    StateDirLock(tmp_path / "s").release()
