"""Wires one step: a chunk of lines → records → engine → sinks. Owns the accounting.

Every line ends up in exactly one of: a valid record, or a dead letter with a reason. Valid
records that are late for some rule are dead-lettered too (reason `late`, with the rules) and
still published raw. The caller (replay, run, the Kafka loop) decides when to flush sinks and
acknowledge input; `Pipeline` never does I/O of its own.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import polars as pl

from lookout.engine import Engine, EngineOutput
from lookout.output import ResultBatch, dead_letter, format_results, iso_ms
from lookout.records import ParsedChunk, parse_chunk, parse_lines
from lookout.rules import RuleSet
from lookout.sinks.base import Sink, SinkSet
from lookout.sources.base import Chunk


@dataclass
class Stats:
    lines: int = 0
    records: int = 0
    rejected: int = 0
    late: int = 0
    reasons: Counter = field(default_factory=Counter)
    results: Counter = field(default_factory=Counter)
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
            "reasons": dict(self.reasons),
            "results": dict(self.results),
            "refused": {name: refused for name, (_, refused) in self.delivery.items()},
            "seconds": round(el, 3),
            "events_per_second": round(self.lines / el) if el > 0 else None,
        }


@dataclass
class StepReport:
    results: list[ResultBatch]
    records: pl.DataFrame | None = None


class Pipeline:
    def __init__(self, ruleset: RuleSet, sink: Sink) -> None:
        self.ruleset = ruleset
        self.engine = Engine(ruleset)
        self.sink = sink
        self.stats = Stats()
        self._wants_records = sink.wants_records if isinstance(sink, SinkSet) else type(sink).write_records is not Sink.write_records

    @staticmethod
    def parse(chunk: Chunk) -> ParsedChunk:
        """Parsing needs no pipeline state, so callers may run it ahead in another thread."""
        return parse_chunk(chunk.data) if chunk.data is not None else parse_lines(chunk.lines or [])

    def step(self, chunk: Chunk, parsed: ParsedChunk | None = None) -> StepReport:
        if parsed is None:
            parsed = self.parse(chunk)
        st = self.stats
        st.lines += parsed.lines
        recs = parsed.records
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
        wms = chunk.watermarks(recs.get_column("ts")) if chunk.watermarks is not None and recs.height else None
        out = self.engine.process(recs, wms)
        if out.late is not None:
            self._late(chunk, out)
        if self._wants_records and recs.height:
            self.sink.write_records(recs, chunk.ids(recs.get_column("line")))
        return StepReport(self._emit(out), recs)

    def _late(self, chunk: Chunk, out: EngineOutput) -> None:
        assert out.late is not None
        wm = iso_ms(self.engine.watermark) if self.engine.watermark > 0 else None
        entries = []
        for line, rules in out.late.iter_rows():
            detail = f"arrived after its window closed in {', '.join(rules)}"
            entries.append(dead_letter("late", detail, chunk.raw_line(line), chunk.source, chunk.first_line + line,
                                       rules=rules, watermark=wm))
        self.stats.late += len(entries)
        self.stats.reasons["late"] += len(entries)
        self.sink.write_rejected(entries)

    def _emit(self, out: EngineOutput) -> list[ResultBatch]:
        batches = []
        for name, frame in out.results.items():
            rb = format_results(self.ruleset.by_name[name], frame)
            self.sink.write_results(rb)
            self.stats.results[name] += len(rb)
            batches.append(rb)
        return batches

    def close_windows(self) -> list[ResultBatch]:
        """End of input or idle input: close every open window and emit what it holds."""
        return self._emit(self.engine.close_all())
