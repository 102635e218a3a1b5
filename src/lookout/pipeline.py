"""Wires one step: a chunk of lines → records → engine → sinks. Owns the accounting.

Every line ends up in exactly one of: a valid record, or a dead letter with a reason. Valid
records that are late for some rule are dead-lettered too (reason `late`, with the rules) and
still published raw. Records stamped too far ahead of the wall clock are rejected here, before
any watermark sees them (`future-timestamp`, lookout.clock), whatever the source. The caller
(replay, run, the Kafka loop) decides when to flush sinks and acknowledge input; `Pipeline`
never does I/O of its own beyond one log line when this machine's clock looks wrong (ClockDoubt).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import polars as pl

from lookout.clock import FUTURE_REASON, Clock, ClockDoubt, FutureGuard, now_us
from lookout.engine import Engine, EngineOutput
from lookout.engine.dedup import SeenIds
from lookout.incidents import IncidentTracker, Transition
from lookout.output import ResultBatch, dead_letter, format_results, iso_ms
from lookout.records import ParsedChunk, parse_chunk, parse_lines
from lookout.rules import RuleSet
from lookout.sinks.base import Sink
from lookout.sources.base import Chunk

log = logging.getLogger("lookout.pipeline")


@dataclass
class Stats:
    lines: int = 0
    records: int = 0
    rejected: int = 0
    late: int = 0
    duplicates: int = 0  # records skipped because their id was already counted (lookout.engine.dedup)
    reasons: Counter = field(default_factory=Counter)
    results: Counter = field(default_factory=Counter)
    incidents: dict[str, dict[str, int]] = field(default_factory=dict)  # rule -> status -> transitions
    started: float = field(default_factory=time.perf_counter)
    # per sink that can refuse documents (Elasticsearch): (accepted, refused for good), set at the end
    delivery: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def refused_everything(self) -> list[str]:
        """Sinks that were sent documents and accepted none: the output is missing, not partial."""
        return [name for name, (ok, refused) in self.delivery.items() if refused and not ok]

    def as_dict(self) -> dict:
        el = self.elapsed
        return {
            "lines": self.lines,
            "records": self.records,
            "rejected": self.rejected,
            "late": self.late,
            "duplicates": self.duplicates,
            "reasons": dict(self.reasons),
            "results": dict(self.results),
            "refused": {name: refused for name, (_, refused) in self.delivery.items()},
            "incidents": {r: dict(c) for r, c in self.incidents.items()},
            "seconds": round(el, 3),
            "events_per_second": round(self.lines / el) if el > 0 else None,
        }


@dataclass
class StepReport:
    results: list[ResultBatch]
    records: pl.DataFrame | None = None
    incidents: list[Transition] = field(default_factory=list)


RESULT_SLICE = 2_000  # results are formatted and handed to the sinks this many at a time


class Pipeline:
    def __init__(
        self, ruleset: RuleSet, sink: Sink, keep_results: bool = True, clock: Clock = time.time, dedup: bool = False
    ) -> None:
        """`keep_results=False`: steps return no formatted results (replay: nobody reads them), so a
        step with half a million alerts holds one slice of them at a time, not all."""
        self.ruleset = ruleset
        self.keep_results = keep_results
        self.engine = Engine(ruleset)
        # live input may repeat a record under a new offset (a `ship` crash): skip ids already counted
        horizon = max((r.window.size for r in ruleset.rules), default=0) + ruleset.lateness
        self.dedup = SeenIds(horizon) if dedup else None
        self.clock = clock
        self.guard = FutureGuard(ruleset.max_future)
        self.clock_doubt = ClockDoubt()
        self._clock_watermark: int | None = None  # the watermark the last idle close set
        self.incidents = IncidentTracker(ruleset)
        self.sink = sink
        self.stats = Stats()
        self._wants_records = sink.wants_records

    @staticmethod
    def parse(chunk: Chunk) -> ParsedChunk:
        """Parsing needs no pipeline state, so callers may run it ahead in another thread."""
        return parse_chunk(chunk.data) if chunk.data is not None else parse_lines(chunk.lines or [])

    def step(self, chunk: Chunk, parsed: ParsedChunk | None = None) -> StepReport:
        if parsed is None:
            parsed = self.parse(chunk)
        st = self.stats
        st.lines += parsed.lines
        now = now_us(self.clock)
        by_clock = self._clock_watermark == self.engine.watermark  # not moved by data since the idle close
        recs, future = self.guard.split(parsed.records, now)
        ids = None
        if self.dedup is not None and chunk.repeatable_ids and recs.height:
            ids = chunk.ids(recs.get_column("line"))
            keep = self.dedup.first_seen(ids, recs.get_column("ts"))
            dups = recs.height - int(keep.sum())
            if dups:
                st.duplicates += dups
                recs, ids = recs.filter(keep), ids.filter(keep)
        st.records += recs.height
        if parsed.rejected:
            st.rejected += len(parsed.rejected)
            entries = []
            # a source may know better why a line is unreadable (e.g. not a combined-format line)
            known = chunk.meta.get("reasons") or {}
            for r in parsed.rejected:
                reason, detail = known.get(r.index, (r.reason, r.detail))
                st.reasons[reason] += 1
                entries.append(dead_letter(reason, detail, r.raw, chunk.source, chunk.first_line + r.index))
            self.sink.write_rejected(entries)
        if future is not None:
            self._future(chunk, future)
        wms = chunk.watermarks(recs.get_column("ts")) if chunk.watermarks is not None and recs.height else None
        out = self.engine.process(recs, wms, now=now)
        if out.late is not None:
            self._late(chunk, out)
        if recs.height or future is not None:
            said = self.clock_doubt.observe(
                recs.height - out.late_count, 0 if future is None else len(future), out.late_count if by_clock else 0
            )
            if said:
                log.warning("%s", said)
        if self.dedup is not None:
            self.dedup.evict(self.engine.watermark)
        if self._wants_records and recs.height:
            self.sink.write_records(recs, ids if ids is not None else chunk.ids(recs.get_column("line")))
        results = self._emit(out)
        return StepReport(results, recs, self._emit_incidents(self.incidents.step(out, self.engine.watermark)))

    def _future(self, chunk: Chunk, lines: pl.Series) -> None:
        detail = self.guard.detail
        entries = [
            dead_letter(FUTURE_REASON, detail, chunk.raw_line(i), chunk.source, chunk.first_line + i) for i in lines.to_list()
        ]
        self.stats.rejected += len(entries)
        self.stats.reasons[FUTURE_REASON] += len(entries)
        self.sink.write_rejected(entries)

    def _late(self, chunk: Chunk, out: EngineOutput) -> None:
        assert out.late is not None
        wm = iso_ms(self.engine.watermark) if self.engine.watermark > 0 else None
        entries = []
        for line, rules in out.late.iter_rows():
            detail = f"arrived after its window closed in {', '.join(rules)}"
            entries.append(
                dead_letter(
                    "late", detail, chunk.raw_line(line), chunk.source, chunk.first_line + line, rules=rules, watermark=wm
                )
            )
        self.stats.late += len(entries)
        self.stats.reasons["late"] += len(entries)
        self.sink.write_rejected(entries)

    def _emit(self, out: EngineOutput) -> list[ResultBatch]:
        batches = []
        for name, frame in out.results.items():
            for part in frame.iter_slices(RESULT_SLICE):  # streamed: formatted lines live one slice at a time
                rb = format_results(self.ruleset.by_name[name], part)
                self.sink.write_results(rb)
                self.stats.results[name] += len(rb)
                if self.keep_results:
                    batches.append(rb)
        return batches

    def advance(self, watermark: int) -> StepReport:
        """Move the watermark without a record (idle Kafka partitions, the idle clock), never past
        the clock's bound; emit the windows that closes and the incidents it resolves."""
        out = self.engine.advance(min(watermark, now_us(self.clock) - self.ruleset.lateness))
        results = self._emit(out)
        return StepReport(results, None, self._emit_incidents(self.incidents.step(out, self.engine.watermark)))

    def idle_advance(self) -> StepReport:
        """Input is idle: the watermark follows the wall clock, to now - lateness, but no further
        than the end of the newest open window (with nothing open there is nothing to close, and
        a backlog that comes later should not be made late for nothing). So an open window closes
        once the clock is `lateness` past its end, and a record stamped now is never late; a quiet
        key's incident resolves when that watermark passes, not before."""
        newest = self.engine.open_window_end()
        if newest is None:
            return StepReport([], None, [])
        report = self.advance(newest)
        self._clock_watermark = self.engine.watermark  # for ClockDoubt: records late against this are the clock's doing
        return report

    def _emit_incidents(self, transitions: list[Transition]) -> list[Transition]:
        if transitions:
            self.sink.write_incidents(transitions)
            for t in transitions:
                c = self.stats.incidents.setdefault(t.rule.name, {})
                c[t.status] = c.get(t.status, 0) + 1
        return transitions

    def close_windows(self) -> StepReport:
        """End of input (replay of finite files): close every open window and emit what it holds;
        every open incident resolves (nothing more is expected to join it). Never for live input:
        windows still open on the clock would make the present late."""
        out = self.engine.close_all()
        results = self._emit(out)
        trans = self.incidents.step(out, self.engine.watermark) + self.incidents.resolve_all()
        return StepReport(results, None, self._emit_incidents(trans))
