"""Issue 22: a dependency that comes back different, signals, and the edges of input files.

Real subprocesses against real files, the test broker and the test search server.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson

SRC = str(Path(__file__).resolve().parent.parent / "src")
ENV = {**os.environ, "PYTHONPATH": SRC}


def test_generate_appends_to_stdout_opened_for_append(lookout_cmd: list[str], tmp_path: Path) -> None:
    """`lookout generate N >> file` keeps what the file had (it used to open /dev/stdout, truncating it)."""
    target = tmp_path / "x"
    target.write_text("hello\n")
    with open(target, "ab") as out:
        p = subprocess.run(lookout_cmd + ["generate", "2"], stdout=out, stderr=subprocess.PIPE, timeout=60, env=ENV)
    assert p.returncode == 0, p.stderr
    lines = target.read_bytes().splitlines()
    assert len(lines) == 3 and lines[0] == b"hello"
    assert all("client_ip" in orjson.loads(line) for line in lines[1:])
    # through a shell, as the issue reproduced it
    sh = f"echo hello > {target}; PYTHONPATH={SRC} {' '.join(lookout_cmd)} generate 2 >> {target}; wc -l < {target}"
    assert subprocess.run(["sh", "-c", sh], capture_output=True, text=True, timeout=60).stdout.strip() == "3"
