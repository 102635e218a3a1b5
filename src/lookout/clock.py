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
    """Notices when this machine's clock, not the records, is likely wrong; the records are still
    handled as the guarantees above say, this only puts the likely cause into words, once a spell:
    - `SUSPECT` valid records in a row all from the future: the clock is behind (a standby on a
      machine an hour slow would dead-letter every live record as `future-timestamp`);
    - `SUSPECT` in a row all late while the watermark is where the clock put it (an idle close,
      after a quiet spell): the clock is ahead, or the records come later than `lateness` allows.
    Said again when records are on time."""

    SUSPECT = 1000

    def __init__(self) -> None:
        self.future = 0
        self.late = 0
        self.said = False

    def observe(self, on_time: int, future: int, late_by_clock: int) -> str | None:
        """After a step: valid records counted on time, rejected as from the future, and late
        against a watermark the clock set. Returns what to log, if anything."""
        if on_time:
            self.future = self.late = 0
            if self.said:
                self.said = False
                return "records are on time by this machine's clock again"
            return None
        self.future += future
        self.late += late_by_clock
        if self.said:
            return None
        if self.future >= self.SUSPECT:
            self.said = True
            return (
                f"the last {self.future:,} valid records were all more than max_future ahead of this machine's clock "
                "(dead letters future-timestamp): is this machine's clock behind? (check NTP)"
            )
        if self.late >= self.SUSPECT:
            self.said = True
            return (
                f"the last {self.late:,} valid records were all late against a watermark this machine's clock set "
                "(the idle close after a quiet spell): is this machine's clock ahead (check NTP), or do records "
                "arrive later than the rules' lateness allows?"
            )
        return None
