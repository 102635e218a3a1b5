"""Wait for a change in a log's directory: inotify where the kernel has it, a short sleep else.

Why: a tail that polls wakes 20 times a second whether or not nginx wrote anything, and sees a
line up to one poll interval late. With inotify (via `inotify_simple`, a thin ctypes wrapper) the
tail sleeps until a file in the directory is written, created, renamed or removed. Polling stays
the fallback (no inotify, a directory that does not exist yet, watches exhausted), and every wait
is capped so a missed event (a rotated file moved to another directory) costs at most `cap`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("lookout.tail")

POLL = 0.05  # seconds between looks without inotify


class DirWatcher:
    """`wait(timeout)` returns early when something in `directory` changes (inotify), or after
    min(timeout, POLL) without it."""

    def __init__(self, directory: Path, cap: float = 1.0) -> None:
        self.directory = directory
        self.cap = cap
        self._ino: Any = None
        self._tried = 0.0  # when a watch was last attempted (a missing directory is retried)
        self.mode = "polling"

    def _watch(self) -> None:
        now = time.monotonic()
        if self._ino is not None or now - self._tried < 1.0:
            return
        self._tried = now
        try:
            from inotify_simple import INotify, flags
        except ImportError:  # not Linux, or not installed: polling
            return
        try:
            ino = INotify()
        except OSError as e:  # inotify instances exhausted
            log.debug("inotify unavailable (%s): polling", e)
            return
        mask = (
            flags.MODIFY
            | flags.CREATE
            | flags.MOVED_TO
            | flags.MOVED_FROM
            | flags.DELETE
            | flags.ATTRIB
            | flags.CLOSE_WRITE
            | flags.DELETE_SELF
            | flags.MOVE_SELF
        )
        try:
            ino.add_watch(str(self.directory), mask)
        except OSError as e:  # no such directory yet, or no watches left
            ino.close()
            log.debug("inotify watch on %s failed (%s): polling", self.directory, e)
            return
        self._ino = ino
        self.mode = "inotify"

    def wait(self, timeout: float) -> None:
        self._watch()
        if self._ino is None:
            time.sleep(max(0.0, min(POLL, timeout)))
            return
        try:
            events = self._ino.read(timeout=int(max(0.0, min(timeout, self.cap)) * 1000))
        except OSError as e:
            log.debug("inotify read failed (%s): polling", e)
            self.close()
            return
        from inotify_simple import flags

        if any(ev.mask & flags.IGNORED for ev in events):  # the directory itself went away: watch again later
            self.close()

    def close(self) -> None:
        if self._ino is not None:
            try:
                self._ino.close()
            except OSError:
                pass
            self._ino = None
            self.mode = "polling"


def inotify_available() -> bool:
    """For tests and the log: can this process watch a directory with inotify?"""
    w = DirWatcher(Path(os.getcwd()))
    w._watch()
    ok = w.mode == "inotify"
    w.close()
    return ok
