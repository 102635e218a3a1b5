"""lookout.stopping.StopDeadline on its own: when it abandons, when it ends the process."""

from __future__ import annotations

import threading
import time

import pytest

from lookout.runner import RunOptions
from lookout.stopping import StopDeadline, abandon_at


def _deadline(timeout: float) -> tuple[StopDeadline, dict[str, float], threading.Event]:
    t0 = time.monotonic()
    seen: dict[str, float] = {}
    exited = threading.Event()

    def exit_now(code: int) -> None:
        seen["exit"] = time.monotonic() - t0
        seen["code"] = code
        exited.set()

    d = StopDeadline(timeout, lambda: seen.setdefault("abandon", time.monotonic() - t0), exit_now=exit_now)
    return d, seen, exited


def test_abandons_before_the_deadline_and_exits_at_it() -> None:
    d, seen, exited = _deadline(1.0)
    d.start()
    d.start()  # idempotent
    assert exited.wait(3)
    assert abs(seen["abandon"] - abandon_at(1.0)) < 0.3 and abs(seen["exit"] - 1.0) < 0.3 and seen["code"] == 0
    assert d.abandoned


def test_a_second_signal_abandons_at_once_and_late_sinks_are_aborted_too() -> None:
    d, seen, exited = _deadline(1.0)
    d.start()
    d.now()
    time.sleep(0.2)
    assert seen["abandon"] < 0.2 and d.abandoned
    late: list[bool] = []
    d.also_abandon(lambda: late.append(True))  # a sink made after the abandon is aborted at once
    assert late == [True]
    assert exited.wait(3)


def test_without_exit_now_the_library_never_ends_the_process() -> None:
    d = StopDeadline(0.2)
    d.start()
    time.sleep(0.5)
    assert d.abandoned  # and we are still here


def test_stop_timeout_option() -> None:
    assert RunOptions().stop_timeout == 10.0
    assert RunOptions(stop_timeout="30s").stop_timeout == 30.0
    with pytest.raises(ValueError):
        RunOptions(stop_timeout=-1)
    assert abandon_at(10) == 8.0 and abandon_at(1) == pytest.approx(0.6)


def test_left_bounds_a_wait_by_the_abandon_point() -> None:
    d = StopDeadline(5.0)
    assert d.left(2.0) == 2.0  # no stop requested: the caller's cap
    d.start()
    assert 0.0 < d.left(10.0) <= abandon_at(5.0)
    d.now()
    time.sleep(0.1)
    assert d.left(2.0) == 0.0
