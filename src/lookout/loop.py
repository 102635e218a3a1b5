"""The loop every long-running command shares (`lookout run`, `lookout ship`): step, and every
commit interval commit what was stepped, until a stop signal, the duration, or the caller ends it.

Guarantees: `commit()` runs only after a step changed something, at most once per
`commit_interval` (a run's commit is flush → checkpoint → acknowledge the input; ship's is wait
for the broker → save the position); the loop never commits on its way out, so the caller makes
the last commit itself, knowing whether a stop deadline passed. A stop request is only a flag
(safe in a signal handler): the step in progress finishes first.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any


class StopRequest:
    """SIGINT/SIGTERM as a flag. The first signal sets `requested` and calls `first`; any later
    one calls `again` (a run: abandon a flush stuck on an unreachable server at once)."""

    def __init__(self, first: Callable[[], None] = lambda: None, again: Callable[[], None] = lambda: None) -> None:
        self.requested = False
        self._first = first
        self._again = again

    def __call__(self, *_: Any) -> None:
        if self.requested:
            self._again()
            return
        self.requested = True
        self._first()

    def install(self) -> None:
        """Handle SIGINT and SIGTERM with this request (main thread only)."""
        signal.signal(signal.SIGINT, self)
        signal.signal(signal.SIGTERM, self)


class DeliveryLoop:
    """Steps until stopped; commits a changed state every `commit_interval` seconds."""

    def __init__(
        self, commit_interval: float, duration: float | None = None, stopped: Callable[[], bool] = lambda: False
    ) -> None:
        self.commit_interval = commit_interval
        self.duration = duration  # seconds from `run()`; None: until stopped
        self.stopped = stopped
        self._ended = False

    def end(self) -> None:
        """End the loop after the current step (the input cannot go on: the caller says why)."""
        self._ended = True

    def run(self, step: Callable[[], bool], commit: Callable[[], None], beat: Callable[[bool], None] = lambda _: None) -> None:
        """`step()` polls once and processes what came; True when it changed anything a commit
        should cover. `beat(dirty)` follows every step (liveness; dirty: changed since the last
        commit). Returns when stopped, ended or past the duration, without a last commit."""
        started = last_commit = time.monotonic()
        dirty = False
        while not self.stopped() and not self._ended:
            if self.duration is not None and time.monotonic() - started >= self.duration:
                break
            dirty = step() or dirty
            beat(dirty)
            now = time.monotonic()
            if dirty and now - last_commit >= self.commit_interval:
                commit()
                last_commit = now
                dirty = False
