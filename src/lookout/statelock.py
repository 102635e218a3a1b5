"""One process per state dir: an exclusive flock on STATE_DIR/lock, held while `run` or `ship` runs.

Two writers on one state dir would write every result twice and tear the store apart, so the
second is refused at once, naming the holder's PID (written into the lock file). The kernel
drops a flock when its holder dies, SIGKILL included: a crashed run never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

LOCK_FILE = "lock"


class StateDirBusy(Exception):
    """Another process holds the state dir."""


class StateDirLock:
    """Taken in the constructor (or `StateDirBusy`); `release()` gives it back."""

    def __init__(self, state_dir: Path, wait: float = 0.0) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self._holder()
                    os.close(self._fd)
                    self._fd = None
                    who = f"process {holder}" if holder else "another process"
                    raise StateDirBusy(
                        f"{state_dir} is in use by {who} (lock {self.path}); "
                        f"one lookout per state dir: stop it or give this one another --state-dir"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def _holder(self) -> int | None:
        try:
            text = os.pread(self._fd, 32, 0).decode("ascii", "replace").strip()  # type: ignore[arg-type]
        except OSError:
            return None
        return int(text) if text.isascii() and text.isdigit() else None

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
