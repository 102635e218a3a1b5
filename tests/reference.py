"""A brute-force reference of the engine's semantics: one record at a time, every window explicit.

Written for clarity, not speed, and independent of the engine's panes and batches:
- windows [k*hop, k*hop+size) containing t, straight from the definition;
- watermark after each record = max event time so far - lateness (never lower than before);
- a record whose oldest window has closed (end <= watermark before it) is late for the rule;
- alert: emit once, the first time the condition holds; final: at close; update: on change.

With a wall clock (a `Clock` item in the input sets it for the lines after it):
- a record stamped more than max_future ahead of the clock is rejected and moves nothing;
- the watermark never passes clock - lateness;
- `Clock(now, idle=True)` is the run loop's idle advance: the watermark moves to
  clock - lateness, but no further than the end of the newest window still open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lookout.records import Rejected, parse_line
from lookout.rules import Rule, RuleSet
from lookout.schema import BY_NAME, scale


def _matches(rule: Rule, rec: dict[str, Any]) -> bool:
    for fld, values in rule.filter.conditions:
        v = rec.get(fld)
        if v is None:
            return False
        if BY_NAME[fld].ranged:
            if not any(lo <= v <= hi for lo, hi in values):
                return False
        elif v not in values:
            return False
    return all(rec.get(k) is not None for k in rule.group_by)


def _value(rule: Rule, acc: dict[str, Any]) -> Any:
    f = rule.agg.func
    if f == "count":
        return acc["cnt"]
    if acc["n"] == 0:
        return None
    units = scale(rule.agg.field)
    if f == "avg":
        return acc["s"] / (acc["n"] * units)
    v = {"sum": acc["s"], "min": acc["mn"], "max": acc["mx"]}[f]
    return v / units if units != 1 else v


def _add(rule: Rule, acc: dict[str, Any], rec: dict[str, Any]) -> None:
    acc["cnt"] += 1
    fld = rule.agg.field
    if fld is None or rec.get(fld) is None:
        return
    units = scale(fld)
    x = round(rec[fld] * units) if units != 1 else rec[fld]
    acc["n"] += 1
    acc["s"] += x
    acc["mn"] = x if acc["mn"] is None else min(acc["mn"], x)
    acc["mx"] = x if acc["mx"] is None else max(acc["mx"], x)


Result = tuple[int, int, tuple[Any, ...], Any]  # start, end, key, value
NEVER = -(1 << 62)


@dataclass(frozen=True)
class Clock:
    """The wall clock (epoch µs) from here on; idle=True: the idle advance runs at this moment."""

    now: int
    idle: bool = False


def reference(
    lines: list[bytes | Clock], rs: RuleSet, finals: dict[str, list[Result]] | None = None
) -> tuple[dict[str, list[Result]], int, int]:
    """Results per rule, number of rejected lines (future-stamped ones included), number of late records.
    `finals`, when given, receives every window's final value per rule (whatever the emission mode)."""
    out: dict[str, list[Result]] = {r.name: [] for r in rs.rules}
    state: dict[str, dict[tuple[int, tuple[Any, ...]], dict[str, Any]]] = {r.name: {} for r in rs.rules}
    alerted: dict[str, set] = {r.name: set() for r in rs.rules}
    max_ts: int | None = None
    now: int | None = None
    wm = NEVER
    rejected = late = 0
    for line in lines:
        if isinstance(line, Clock):
            now = line.now
            ends = [k * r.window.hop + r.window.size for r in rs.rules for k, _ in state[r.name]]
            if line.idle and ends:
                wm = max(wm, min(now - rs.lateness, max(ends)))
                _close(rs, state, out, wm, finals)
            continue
        if not line.strip():
            continue
        try:
            rec = parse_line(line)
        except Rejected:
            rejected += 1
            continue
        t = rec["ts"]
        if now is not None and t > now + rs.max_future:
            rejected += 1
            continue
        max_ts = t if max_ts is None else max(max_ts, t)
        wm = max(wm, max_ts - rs.lateness if now is None else min(max_ts, now) - rs.lateness)
        is_late = False
        for rule in rs.rules:
            if not _matches(rule, rec):
                continue
            size, hop = rule.window.size, rule.window.hop
            ks = [k for k in range((t - size) // hop, t // hop + 2) if k * hop <= t < k * hop + size]
            if min(k * hop + size for k in ks) <= wm:
                is_late = True
                continue
            key = tuple(rec[f] for f in rule.group_by)
            mode = rule.effective_emit
            thr = rule.threshold_spec
            for k in ks:
                acc = state[rule.name].setdefault((k, key), {"cnt": 0, "n": 0, "s": 0, "mn": None, "mx": None})
                before = _value(rule, acc)
                _add(rule, acc, rec)
                v = _value(rule, acc)
                if mode == "alert" and (k, key) not in alerted[rule.name] and thr.holds(v):
                    alerted[rule.name].add((k, key))
                    out[rule.name].append((k * hop, k * hop + size, key, v))
                elif mode == "update" and v != before and (thr is None or thr.holds(v)):
                    out[rule.name].append((k * hop, k * hop + size, key, v))
        if is_late:
            late += 1
        _close(rs, state, out, wm, finals)
    _close(rs, state, out, None, finals)
    return out, rejected, late


def _close(rs: RuleSet, state: dict, out: dict, wm: int | None, finals: dict | None = None) -> None:
    for rule in rs.rules:
        st = state[rule.name]
        size, hop = rule.window.size, rule.window.hop
        done = [wk for wk in st if wm is None or wk[0] * hop + size <= wm]
        for k, key in sorted(done, key=lambda x: (x[0], str(x[1]))):
            acc = st.pop((k, key))
            if finals is not None:
                finals.setdefault(rule.name, []).append((k * hop, k * hop + size, key, _value(rule, acc)))
            if rule.effective_emit == "final":
                v = _value(rule, acc)
                thr = rule.threshold_spec
                if thr is None or thr.holds(v):
                    out[rule.name].append((k * hop, k * hop + size, key, v))


Incident = tuple[tuple[Any, ...], int, int, int, Any]  # key, start, end, windows, peak


def reference_incidents(lines: list[bytes], rs: RuleSet) -> dict[str, list[Incident]]:
    """Incidents straight from the definition (issue 10): per threshold rule (alert or final) and
    key, the windows whose final value meets the threshold, sorted by start; a window joins the
    current run when its start is at or before the run's end plus incident_gap. Peak = the most
    extreme final value in the threshold's direction."""
    finals: dict[str, list[Result]] = {}
    reference(lines, rs, finals)
    out: dict[str, list[Incident]] = {}
    for rule in rs.rules:
        thr = rule.threshold_spec
        if thr is None or rule.effective_emit not in ("alert", "final"):
            continue
        higher = thr.op in (">", ">=")
        per_key: dict[tuple[Any, ...], list[tuple[int, int, Any]]] = {}
        for start, end, key, v in finals.get(rule.name, []):
            if thr.holds(v):
                per_key.setdefault(key, []).append((start, end, v))
        incs: list[Incident] = []
        for key, wins in per_key.items():
            wins.sort()
            run: list[Any] | None = None
            for start, end, v in wins:
                if run is not None and start <= run[2] + rule.incident_gap:
                    run[2] = max(run[2], end)
                    run[3] += 1
                    run[4] = max(run[4], v) if higher else min(run[4], v)
                else:
                    if run is not None:
                        incs.append(tuple(run))  # type: ignore[arg-type]
                    run = [key, start, end, 1, v]
            if run is not None:
                incs.append(tuple(run))  # type: ignore[arg-type]
        out[rule.name] = sorted(incs, key=repr)
    return out
