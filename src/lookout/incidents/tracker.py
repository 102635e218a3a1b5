"""Incident tracking on event time, driven by the engine's output and watermark.

Definition (issue 10). An *incident* of (rule, key) is a connected run of that key's alerting
windows: sorted by start, a window joins the current run when its start is at or before the
run's end plus the rule's `incident_gap` (default 0: windows that overlap or touch). Only
threshold rules with `emit: alert` or `emit: final` have incidents.

Transitions, each emitted once:
- `firing`: the step in which the incident's first window alerts (for `alert` rules the moment
  the alert row itself is emitted; for `final` rules when the window closes);
- `merged`: a firing incident that a later window connects to an earlier-starting one is closed,
  naming the incident it joined (`merged_into`); the earlier one carries on with both runs;
- `resolved`: once the watermark has closed every window whose start is at or before the
  incident's end plus the gap, so no later window can join it (and at end of input / idle, via
  `resolve_all`). Its start, end, window count and peak are final.

Guarantees: the resolved incidents (rule, key, start, end, windows, peak) are a function of the
input alone, whatever the batch cuts (tests/unit/incidents/test_incidents.py holds them equal to a brute-force
reference). `peak` is the most extreme *final* window value in the threshold's direction (the
highest for `>`/`>=`, the lowest for `<`/`<=`); on a firing line it is the most extreme value
known so far. An incident's id is a hash of (rule, key, start of its first window when it
fired): stable across restarts (the tracker's state is checkpointed with the engine's, as JSON),
and the same for any batch cut when records arrive in order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import polars as pl

from lookout.engine.core import EngineOutput
from lookout.output import integer_valued, iso_ms
from lookout.rules import Rule, RuleSet

INCIDENTS_NAME = "lookout-incidents"  # Kafka topic and Elasticsearch index
STATE_VERSION = 1


def incident_id(rule: str, key: tuple[Any, ...], first_start: int) -> str:
    raw = orjson.dumps(["incident", rule, list(key), first_start])
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


@dataclass
class Incident:
    id: str
    start: int  # microseconds, start of the first window
    end: int  # end of the last window
    windows: int  # how many windows alerted
    peak: Any  # most extreme value seen (final values once every window closed)
    value: Any  # the value of the window that fired


@dataclass
class Transition:
    """One incident line: what every sink and notifier gets."""

    status: str  # firing | resolved | merged
    rule: Rule
    key: tuple[Any, ...]
    incident: Incident
    merged_into: str | None = None
    doc: dict[str, Any] = field(init=False, default_factory=dict)
    line: bytes = field(init=False, default=b"")

    def freeze(self) -> None:
        """Render the line from the incident as it stands at the end of the step (a firing line
        counts every window that alerted in the step that opened it)."""
        inc = self.incident
        doc: dict[str, Any] = {
            "id": inc.id,
            "status": self.status,
            "rule": self.rule.name,
            "key": {f: v for f, v in zip(self.rule.group_by, self.key, strict=False)},
            "start": iso_ms(inc.start),
            "end": iso_ms(inc.end),
            "windows": inc.windows,
            "peak": inc.peak,
            "value": inc.value,
        }
        if self.merged_into is not None:
            doc["merged_into"] = self.merged_into
        self.doc = doc
        self.line = orjson.dumps(doc)

    @property
    def id(self) -> str:
        return self.incident.id

    @property
    def idempotency_key(self) -> str:
        return f"{self.incident.id}:{self.status}"


def tracks(rule: Rule) -> bool:
    return rule.threshold_spec is not None and rule.effective_emit in ("alert", "final")


class _RuleIncidents:
    """Open incidents of one rule, per key, sorted by start."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.gap = rule.incident_gap
        self.hop = rule.window.hop
        self.size = rule.window.size
        t = rule.threshold_spec
        assert t is not None
        self.higher_is_worse = t.op in (">", ">=")
        self.as_int = integer_valued(rule)  # as the results print it: count, sum/min/max of status or bytes
        self.open: dict[tuple[Any, ...], list[Incident]] = {}

    def _num(self, v: Any) -> Any:
        return None if v is None else int(v) if self.as_int else float(v)

    def _extreme(self, a: Any, b: Any) -> Any:
        if a is None:
            return b
        if b is None:
            return a
        return max(a, b) if self.higher_is_worse else min(a, b)

    def add_window(self, key: tuple[Any, ...], start: int, end: int, value: Any, out: list[Transition]) -> None:
        """A window of this key alerted (alert rules) or closed meeting the threshold (final rules)."""
        value = self._num(value)
        incs = self.open.setdefault(key, [])
        joined = [i for i in incs if start <= i.end + self.gap and i.start <= end + self.gap]
        if not joined:
            inc = Incident(incident_id(self.rule.name, key, start), start, end, 1, value, value)
            incs.append(inc)
            incs.sort(key=lambda i: i.start)
            out.append(Transition("firing", self.rule, key, inc))
            return
        survivor = min(joined, key=lambda i: (i.start, i.id))
        survivor.start = min(survivor.start, start)
        survivor.end = max(survivor.end, end)
        survivor.windows += 1
        survivor.peak = self._extreme(survivor.peak, value)
        for other in joined:
            if other is survivor:
                continue
            incs.remove(other)
            out.append(Transition("merged", self.rule, key, other, merged_into=survivor.id))
            survivor.start = min(survivor.start, other.start)
            survivor.end = max(survivor.end, other.end)
            survivor.windows += other.windows
            survivor.peak = self._extreme(survivor.peak, other.peak)

    def final_value(self, key: tuple[Any, ...], start: int, end: int, value: Any) -> None:
        """An alerted window closed (alert rules): its final value counts towards the peak."""
        for inc in self.open.get(key, ()):
            if inc.start <= start and end <= inc.end:
                inc.peak = self._extreme(inc.peak, self._num(value))
                return

    def advance(self, watermark: int, out: list[Transition]) -> None:
        """Resolve incidents no later window can join: every window starting at or before
        end + gap has closed (its end is at or below the watermark)."""
        for key in list(self.open):
            incs = self.open[key]
            keep = []
            for inc in incs:
                k_max = (inc.end + self.gap) // self.hop
                if k_max * self.hop + self.size <= watermark:
                    out.append(Transition("resolved", self.rule, key, inc))
                else:
                    keep.append(inc)
            if keep:
                self.open[key] = keep
            else:
                del self.open[key]

    def resolve_all(self, out: list[Transition]) -> None:
        for key, incs in sorted(self.open.items(), key=lambda kv: repr(kv[0])):
            for inc in incs:
                out.append(Transition("resolved", self.rule, key, inc))
        self.open.clear()

    def firing(self) -> int:
        return sum(len(v) for v in self.open.values())


def _rows(frame: pl.DataFrame, nkeys: int) -> Iterator[tuple[int, int, tuple[Any, ...], Any]]:
    """Rows one at a time (a step can hold hundreds of thousands: never a list of them all)."""
    for r in frame.iter_rows():
        yield r[0], r[1], tuple(r[2 : 2 + nkeys]), r[-1]


class IncidentTracker:
    """Turns each engine step's alert rows and closed windows into incident transitions."""

    def __init__(self, rs: RuleSet) -> None:
        self.rules = {r.name: _RuleIncidents(r) for r in rs.rules if tracks(r)}

    def step(self, out: EngineOutput, watermark: int) -> list[Transition]:
        """New windows first (in start order, so a batch forms runs the way a record-at-a-time
        pass would), then final values of closed alert windows, then resolutions."""
        trans: list[Transition] = []
        for name, ri in self.rules.items():
            nk = len(ri.rule.group_by)
            frame = out.results.get(name)
            if frame is not None and frame.height:
                # start order, as a record-at-a-time pass forms runs; sorted by polars, not in a list
                for start, end, key, value in _rows(frame.sort(frame.columns[: 2 + nk]), nk):
                    ri.add_window(key, start, end, value, trans)
            closed = out.closed_alerts.get(name)
            if closed is not None and closed.height:
                for start, end, key, value in _rows(closed, nk):
                    ri.final_value(key, start, end, value)
            ri.advance(watermark, trans)
        for t in trans:
            t.freeze()
        return trans

    def resolve_all(self) -> list[Transition]:
        """End of input (or idle input): nothing more can join any open incident."""
        trans: list[Transition] = []
        for ri in self.rules.values():
            ri.resolve_all(trans)
        for t in trans:
            t.freeze()
        return trans

    def firing(self) -> dict[str, int]:
        return {name: ri.firing() for name, ri in self.rules.items()}

    # ---- checkpoints: data (JSON), never code ------------------------------------------------
    def snapshot(self) -> bytes:
        return orjson.dumps(
            {
                "version": STATE_VERSION,
                "rules": {
                    name: [[list(key), [asdict(i) for i in incs]] for key, incs in ri.open.items()]
                    for name, ri in self.rules.items()
                },
            }
        )

    def restore(self, blob: bytes) -> None:
        state = orjson.loads(blob)
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"incident state version {state.get('version')!r} is not {STATE_VERSION}")
        for name, ri in self.rules.items():
            ri.open = {tuple(key): [Incident(**i) for i in incs] for key, incs in state["rules"].get(name, [])}
