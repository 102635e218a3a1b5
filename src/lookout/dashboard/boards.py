"""Per-rule summaries the dashboard shows, bounded in memory, fed live or from result files.

A rule with a threshold is an *alerting* rule: its board keeps the most recent alerting windows
(the incidents panel shows what they add up to). A rule without one is an *aggregate* rule: its
board keeps the latest `windows` windows, each with at most `max_rows` keys (the largest
values: goal 3's busiest countries, goal 4's slowest hosts), so memory does not grow with the
number of keys or with time.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lookout.dashboard.files import MAX_BYTES, result_rows
from lookout.output import iso_ms

if TYPE_CHECKING:
    import polars as pl
from lookout.rules import Rule


def rule_kind(rule: Rule) -> str:
    return "alerting" if rule.threshold is not None else "aggregate"


def record_filter(rule: Rule) -> dict[str, str]:
    """The rule's filter as /api/records parameters, when the search can express it (one status
    range); the incident drill-down then lists only the records the rule counted."""
    out: dict[str, str] = {}
    for fld, vals in rule.filter.conditions:
        if fld == "status" and len(vals) == 1:
            lo, hi = vals[0]
            out["status"] = str(lo) if lo == hi else f"{lo}-{hi}"
    return out


def describe_rule(rule: Rule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "kind": rule_kind(rule),
        "emit": rule.effective_emit,
        "description": rule.description or "",
        "window": rule.window.describe(),
        "group_by": list(rule.group_by),
        "value": rule.agg.output_name,
        "threshold": str(rule.threshold_spec) if rule.threshold_spec else None,
        "record_filter": record_filter(rule),
    }


class RuleBoard:
    """One rule's recent results. Not thread-safe on its own: the feed holds its lock."""

    def __init__(self, rule: Rule, windows: int = 15, max_rows: int = 60, max_alerts: int = 100) -> None:
        self.rule = rule
        self.kind = rule_kind(rule)
        self.windows: dict[int, tuple[int, dict[tuple, Any]]] = {}  # start -> (end, key -> value)
        self.keep_windows = windows
        self.max_rows = max_rows
        self.alerts: deque[dict[str, Any]] = deque(maxlen=max_alerts)
        self.total = 0

    def add(self, start: int, end: int, key: tuple, value: Any) -> None:
        self.total += 1
        if self.kind == "alerting":
            self.alerts.append(
                {
                    "start": iso_ms(start),
                    "end": iso_ms(end),
                    "key": dict(zip(self.rule.group_by, key, strict=False)),
                    "value": value,
                }
            )
            return
        if start not in self.windows:
            if self.windows and len(self.windows) >= self.keep_windows and start < min(self.windows):
                return  # older than everything kept
            self.windows[start] = (end, {})
            while len(self.windows) > self.keep_windows:
                del self.windows[min(self.windows)]
        rows = self.windows[start][1]
        rows[key] = value
        if len(rows) > 2 * self.max_rows:  # amortised trim to the largest values
            keep = sorted(rows.items(), key=lambda kv: _num(kv[1]), reverse=True)[: self.max_rows]
            rows.clear()
            rows.update(keep)

    def load_file(self, path: Path) -> None:
        """Fill from the rule's result file (its newest lines): a stopped run, or a restarted
        one whose dashboard should not start empty. Alerting boards need only the last rows."""
        max_bytes = (1 << 20) if self.kind == "alerting" else MAX_BYTES
        for start, end, key, value in result_rows(path, self.rule.agg.output_name, self.rule.group_by, max_bytes):
            self.add(start, end, key, value)

    def add_frame(self, frame: pl.DataFrame) -> None:
        """An engine result frame (_start, _end, <group_by...>, value); only what can be shown
        is looked at, so a burst of thousands of rows costs a sort, not a Python loop."""
        if self.kind == "alerting":
            self.total += frame.height
            self.total -= min(frame.height, self.alerts.maxlen or 0)
            frame = frame.tail(self.alerts.maxlen or 0)
        elif frame.height > 4 * self.max_rows:
            self.total += frame.height - 2 * self.max_rows
            frame = frame.sort(frame.columns[-1], descending=True, nulls_last=True).head(2 * self.max_rows)
        for start, end, *key, value in frame.iter_rows():
            self.add(start, end, tuple(key), value)

    def summary(self) -> dict[str, Any]:
        d = describe_rule(self.rule)
        d["total"] = self.total
        if self.kind == "alerting":
            d["alerts"] = list(reversed(self.alerts))[:50]
            return d
        starts = sorted(self.windows)
        d["windows"] = [{"start": iso_ms(s), "end": iso_ms(self.windows[s][0])} for s in starts]
        if starts:
            latest = self.windows[starts[-1]][1]
            top = sorted(latest.items(), key=lambda kv: _num(kv[1]), reverse=True)[: self.max_rows]
            d["rows"] = [
                {
                    "key": dict(zip(self.rule.group_by, k, strict=False)),
                    "value": v,
                    "history": [self.windows[s][1].get(k) for s in starts],
                }
                for k, v in top
            ]
        else:
            d["rows"] = []
        return d


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) else float("-inf")
