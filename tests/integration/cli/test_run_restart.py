"""`lookout run` restarted on input it has already read: the windows restored from the checkpoint
close on quiet input like any others, so the last minutes' results are not held back forever."""

from __future__ import annotations

import subprocess
from pathlib import Path

GOALS = ["goal1-topic", "goal2-topic", "goal3-topic", "goal4-topic"]


def _lines(out: Path) -> dict[str, list[bytes]]:
    return {g: sorted((out / f"{g}.jsonl").read_bytes().splitlines()) if (out / f"{g}.jsonl").exists() else [] for g in GOALS}


def test_restart_with_nothing_new_closes_the_restored_windows(lookout_cmd: list[str], tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    subprocess.run([*lookout_cmd, "generate", "3000", "--out", str(log), "--seed", "3"], check=True)
    subprocess.run([*lookout_cmd, "replay", str(log), "--out", str(tmp_path / "ref")], check=True, capture_output=True)
    expected = _lines(tmp_path / "ref")
    common = [
        "--tail",
        str(log),
        "--log-format",
        "json",
        "--state-dir",
        str(tmp_path / "state"),
        "--out",
        str(tmp_path / "out"),
        "--no-view",
    ]
    # first run: reads everything, stops before input is quiet long enough to close the windows
    first = subprocess.run(
        [*lookout_cmd, "run", *common, "--duration", "4", "--idle-timeout", "10m"], capture_output=True, text=True, timeout=120
    )
    assert first.returncode == 0, first.stderr
    assert _lines(tmp_path / "out") != expected, "the first run must leave windows open for this test to mean anything"
    # restart: nothing new arrives; after the idle timeout the restored windows close
    second = subprocess.run(
        [*lookout_cmd, "run", *common, "--duration", "6", "--idle-timeout", "1s"], capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 0, second.stderr
    assert "resumed from checkpoint" in second.stderr and "input idle for" in second.stderr, second.stderr
    assert _lines(tmp_path / "out") == expected
