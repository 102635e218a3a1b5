"""The loop `run` and `ship` share (`lookout.loop`): commits follow changes at most once per
interval, a stop request or the duration ends it after the step in progress, and it never commits
on its way out (the caller's last commit knows whether a stop deadline passed)."""

from __future__ import annotations

import os
import signal
import time

from lookout.loop import DeliveryLoop, StopRequest


class Script:
    """Steps that report a change on the listed step numbers; records commits by step number."""

    def __init__(self, changes: set[int], stop_at: int | None = None, request: StopRequest | None = None) -> None:
        self.n = 0
        self.changes = changes
        self.commits: list[int] = []
        self.beats: list[bool] = []
        self.stop_at = stop_at
        self.request = request

    def step(self) -> bool:
        self.n += 1
        if self.request is not None and self.n == self.stop_at:
            self.request()
        time.sleep(0.01)
        return self.n in self.changes

    def commit(self) -> None:
        self.commits.append(self.n)


def test_commits_only_after_a_change_and_never_on_the_way_out() -> None:
    stop = StopRequest()
    s = Script(changes={3, 7}, stop_at=12, request=stop)
    DeliveryLoop(0.0, stopped=lambda: stop.requested).run(s.step, s.commit, s.beats.append)
    assert s.n == 12  # the step that saw the stop request finished
    assert s.commits == [3, 7]
    assert s.beats[:3] == [False, False, True] and s.beats[3] is False  # dirty until the commit after step 3


def test_commits_at_most_once_per_interval() -> None:
    commits: list[float] = []
    t0 = time.monotonic()

    def step() -> bool:  # every step a change
        time.sleep(0.01)
        return True

    DeliveryLoop(0.25, duration=1.0).run(step, lambda: commits.append(time.monotonic() - t0))
    assert commits and commits[0] >= 0.25, commits  # not before the first interval passed
    assert all(b - a >= 0.25 for a, b in zip(commits, commits[1:], strict=False)), commits
    assert len(commits) <= 4, commits


def test_duration_and_end_stop_the_loop() -> None:
    s = Script(changes=set())
    t0 = time.monotonic()
    DeliveryLoop(1.0, duration=0.3).run(s.step, s.commit)
    assert 0.3 <= time.monotonic() - t0 < 2 and s.commits == []
    loop = DeliveryLoop(1.0)
    n = {"steps": 0}

    def step() -> bool:
        n["steps"] += 1
        if n["steps"] == 5:
            loop.end()
        return False

    loop.run(step, lambda: None)
    assert n["steps"] == 5


def test_a_second_signal_calls_again() -> None:
    calls: list[str] = []
    old = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    req = StopRequest(first=lambda: calls.append("first"), again=lambda: calls.append("again"))
    try:
        req.install()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert req.requested and calls == ["first"]
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert calls == ["first", "again"]
    finally:
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGINT, old[1])
