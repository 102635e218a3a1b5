"""Event time against the wall clock: the future guard and the clock's bound on the watermark.

Guarantees (held by the pipeline, which every source goes through):
- a record stamped more than `max_future` ahead of the wall clock when it is read is rejected
  (`future-timestamp`): it is counted nowhere and never moves a watermark;
- the watermark never passes `now - lateness`, and on idle input it moves up to exactly that,
  so a record stamped with the present is never late, whatever came (or did not come) before.

The clock is injectable (a callable returning epoch seconds, like `time.time`) so tests can
drive a simulated one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from lookout.rules import format_duration

Clock = Callable[[], float]  # epoch seconds
FUTURE_REASON = "future-timestamp"


def now_us(clock: Clock = time.time) -> int:
    return int(clock() * 1_000_000)


@dataclass(frozen=True)
class FutureGuard:
    max_future: int  # microseconds

    @property
    def detail(self) -> str:
        return f"@timestamp is more than {format_duration(self.max_future)} ahead of the wall clock"

    def split(self, records: pl.DataFrame, now: int) -> tuple[pl.DataFrame, pl.Series | None]:
        """(records not from the future, `line` of those that are, or None when there are none)."""
        if records.height == 0:
            return records, None
        ahead = records.get_column("ts") > now + self.max_future
        if not ahead.any():
            return records, None
        return records.filter(~ahead), records.filter(ahead).get_column("line")


class ClockDoubt:
    """Notices when this machine's clock, not the records, is likely wrong: `SUSPECT` valid records
    in a row all rejected as from the future means the clock is behind (a standby on a machine
    whose clock is an hour slow would dead-letter every live record). Said once per spell, and
    again when records agree with the clock; the records are still rejected (the guard's promise)."""

    SUSPECT = 1000

    def __init__(self) -> None:
        self.streak = 0
        self.said = False

    def observe(self, accepted: int, future: int) -> str | None:
        """After a step: how many valid records were accepted and how many were from the future.
        Returns what to log, if anything."""
        if accepted:
            self.streak = 0
            if self.said:
                self.said = False
                return "records agree with this machine's clock again"
            return None
        self.streak += future
        if self.streak >= self.SUSPECT and not self.said:
            self.said = True
            return (
                f"the last {self.streak:,} valid records were all more than max_future ahead of this machine's clock "
                "(dead letters future-timestamp): is this machine's clock behind? (check NTP)"
            )
        return None
