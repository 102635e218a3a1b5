"""The unit a source hands to the pipeline: whole lines, plus what is needed to acknowledge them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl


@dataclass
class Chunk:
    """Whole input lines from one source.

    Either `data` (NDJSON bytes, the fast path) or `lines` (one message each) is set. `line`
    numbers in parsed records index these lines from 0; `first_line` maps them back to the
    source (1-based line number for files, sequence number for the generator).
    """

    source: str
    data: bytes | None = None
    lines: list[bytes] | None = None
    first_line: int = 1
    position: Any = None  # handed back to the source's commit() once the chunk is delivered
    # Per-record watermark override (Kafka: minimum over partitions); gets the valid records'
    # event times (`ts`, in arrival order) and returns one watermark per record.
    watermarks: Callable[[pl.Series], pl.Series] | None = None
    # Stable id per record (Kafka: topic-partition-offset); gets the `line` column.
    record_ids: Callable[[pl.Series], pl.Series] | None = None
    # The ids came from the producer (Kafka header `lookout-id`) and may repeat at a new position
    # (a producer's re-send after a crash): the run skips those already counted (engine.dedup).
    repeatable_ids: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def ids(self, line: pl.Series) -> pl.Series:
        if self.record_ids is not None:
            return self.record_ids(line)
        return numbered_ids(f"{self.source}:", line + self.first_line)

    def raw_line(self, index: int) -> bytes:
        if self.lines is not None:
            return self.lines[index]
        if "_split" not in self.meta:
            from lookout.records import split_lines

            self.meta["_split"] = split_lines(self.data or b"")
        return self.meta["_split"][index]


def numbered_ids(prefix: str, numbers: pl.Series) -> pl.Series:
    """`prefix + number` for each number, built column-wise (a Python loop here cost ~10% of a run)."""
    return pl.select(pl.concat_str([pl.lit(prefix), numbers.cast(pl.String)]).alias("id")).to_series()


class Source:
    """What `lookout run` reads from. The run loop calls `poll` repeatedly; after everything from
    the chunks up to `position` is durable downstream (sinks flushed, engine state checkpointed)
    it calls `commit(position)`. On start, `restore(position)` gets the last checkpointed position
    (None on a first start), so nothing is skipped and nothing counted twice."""

    name = "source"

    # True for a source whose input one instance reads at a time (Kafka's instance lock): a second
    # instance stands by in acquire() and, on takeover, may find the old one still exiting.
    stands_by = False

    def acquire(self, stop: Callable[[], bool]) -> bool:
        """Wait until this instance may read (a source with exclusive input, e.g. Kafka's instance
        lock, stands by here). False: `stop()` said to give up first. Nothing is read before."""
        return True

    def restore(self, position: Any) -> None:
        pass

    def start_position(self) -> Any:
        """Where a first start stands right after `restore(None)`, before anything is read: the
        run's first checkpoint records it, so a crash before the next one resumes from the same
        place, not from "nothing known" (a tailed log renamed while lookout was down is then
        still found). None: the source has nothing better than a fresh start."""
        return None

    def poll(self, timeout: float) -> Chunk | None:  # None: nothing arrived within timeout
        raise NotImplementedError

    def read_unterminated(self) -> Chunk | None:
        """A last line that lacks its newline, taken as whole because input is idle or stopping
        (files); None when there is none or the source has no such thing."""
        return None

    def commit(self, position: Any) -> None:
        pass

    def caught_up(self) -> bool:
        """Is the input quiet because everything has been read (not because a broker is
        unreachable)? The run loop lets the clock move the watermark on idle input only then."""
        return True

    def readable_since(self) -> float:
        """Monotonic time since which the source has been able to read without a break (0: always).
        The run loop counts quiet input from the later of this and the last record: a broker outage
        or a lost lock is not a quiet spell, so the idle close waits a full --idle-timeout after it."""
        return 0.0

    def idle_watermark(self) -> int | None:
        """The event-time watermark this source vouches for while nothing arrives (re-asked on
        every empty poll). None: no opinion; records alone move it (single-stream sources)."""
        return None

    def lag(self) -> dict[tuple[str, int], int]:
        """(topic, partition) → messages not yet read, where the source can tell (Kafka)."""
        return {}

    def close(self) -> None:
        pass
