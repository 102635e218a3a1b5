"""Bounded stopping: one stop request ends `lookout run` within `--stop-timeout`, whatever a sink
or the broker does.

Guarantee, from the first SIGTERM/SIGINT:
- until `timeout - margin` the run finishes normally: last flush, checkpoint, commit;
- then (or at once on a second signal) waiting is abandoned: `abandon()` makes every pending and
  later flush raise instead of waiting (sinks' `abort()`), so the run skips its last checkpoint.
  Only what was acknowledged before (the previous checkpoint) stays committed; a restart re-reads
  the rest, so nothing is lost, and repeats are exact (stable ids);
- just before `timeout` (`exit_at`: room for the teardown) the front end's `exit_now(0)` ends
  the process even if something still blocks (a worker stuck in a socket read to a frozen
  server, a client library's close); the command line passes lookout.cli.exit.hard_exit. Every
  state file is replaced atomically, so this is no less safe than the SIGKILL a supervisor
  would send next (Kubernetes: 30 s after SIGTERM, systemd: 90 s).
A watchdog thread, because the main thread may itself be the one blocked in C code.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("lookout.run")

DEFAULT_STOP_TIMEOUT = 10.0  # seconds
REREAD = "what was not acknowledged is re-read on restart (nothing is lost)"


def abandon_at(timeout: float) -> float:
    """Seconds after the stop request at which pending flushes are abandoned: late enough for a
    healthy flush, early enough to wind down before the hard deadline."""
    return max(0.0, timeout - min(2.0, timeout * 0.4))


def exit_at(timeout: float) -> float:
    """Seconds after the stop request at which the process ends itself: a little before the
    timeout, so that its teardown and the supervising parent's exit (lookout.supervise) also fit
    in it (measured: up to 2-3 s more on a loaded 2-core machine without this margin and the
    parent's hard exit)."""
    return max(0.0, timeout - min(0.5, timeout * 0.1))


class StopDeadline:
    """Started by the first stop request; calls `abandon` at the soft deadline and ends the
    process at the hard one. `abandoned` tells the run loop that a failing flush was ours."""

    def __init__(
        self, timeout: float, abandon: Callable[[], None] = lambda: None, exit_now: Callable[[int], None] | None = None
    ) -> None:
        self.timeout = timeout
        self._abandon = [abandon]
        self.exit_now = exit_now  # None: the library never ends the process; only abandons
        self.abandoned = False
        self.started: float | None = None
        self._lock = threading.Lock()
        self._now = threading.Event()  # set: abandon without waiting (second signal)

    def start(self) -> None:
        """First stop request (idempotent). Safe to call from a signal handler."""
        with self._lock:
            if self.started is not None:
                return
            self.started = time.monotonic()
        threading.Thread(target=self._watch, name="lookout-stop-deadline", daemon=True).start()

    def also_abandon(self, fn: Callable[[], None]) -> None:
        """Also call `fn` when abandoning (at once if that already happened): sinks made after
        the stop request (set-up may block on an unreachable server before the run loop)."""
        with self._lock:
            self._abandon.append(fn)
            done = self.abandoned
        if done:
            fn()

    def left(self, cap: float) -> float:
        """Seconds a wait may still take: `cap`, at most until pending flushes are abandoned, and 0 after."""
        if self.abandoned:
            return 0.0
        if self.started is None:
            return cap
        return max(0.0, min(cap, self.started + abandon_at(self.timeout) - time.monotonic()))

    def now(self) -> None:
        """Second stop request: abandon pending flushes at once (the hard deadline stays)."""
        self.start()
        self._now.set()

    def abandon(self, why: str) -> None:
        with self._lock:
            if self.abandoned:
                return
            self.abandoned = True
        log.warning("%s: abandoning pending flushes; nothing unacknowledged is committed, %s", why, REREAD)
        for fn in list(self._abandon):
            fn()

    def _watch(self) -> None:
        assert self.started is not None
        soft = self.started + abandon_at(self.timeout)
        if not self._now.wait(max(0.0, soft - time.monotonic())):
            self.abandon(f"stop timeout: still flushing {abandon_at(self.timeout):.1f}s after the stop request")
        else:
            self.abandon("second stop signal")
        if self.exit_now is None:
            return
        hard = self.started + exit_at(self.timeout)
        time.sleep(max(0.0, hard - time.monotonic()))
        log.error("stop timeout (%.1fs) reached, still blocked in %s: exiting now; %s", self.timeout, _main_at(), REREAD)
        self.exit_now(0)


def _main_at() -> str:
    """Where the main thread is (innermost calls), for the log: what held up the stop."""
    frame = sys._current_frames().get(threading.main_thread().ident or 0)
    if frame is None:
        return "?"
    return " <- ".join(f"{f.name} ({Path(f.filename).name}:{f.lineno})" for f in reversed(traceback.extract_stack(frame)[-4:]))
