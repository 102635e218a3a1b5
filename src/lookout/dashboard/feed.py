"""The live feed: what `lookout run` knows, summarised per second for the dashboard.

Guarantees:
- The run loop pays one vectorised pass per step (a bincount of status classes; results are
  already small) and a lock held for microseconds. Browsers never reach the loop: they read a
  snapshot that is built at most once per `min_interval` and shared by every client, so an open
  dashboard does not slow the pipeline.
- No raw record reaches a browser through the feed: only per-second counts, rule results,
  incidents and pipeline health.
- Memory is bounded: `history` seconds of counts, a fixed number of windows and rows per rule
  (boards.py), `max_incidents` incidents.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import polars as pl

from lookout.dashboard.boards import RuleBoard
from lookout.dashboard.data import DashboardData
from lookout.output import ResultBatch, iso_ms
from lookout.rules import RuleSet

if TYPE_CHECKING:
    from lookout.pipeline import Pipeline

CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
SERIES = ("2xx", "3xx", "4xx", "5xx", "rejected", "late")


class IncidentBook:
    """The incidents by id, as their latest line says (issue 10's incidents.jsonl format).
    Firing ones are all kept (up to `limit`); resolved and merged ones only the newest."""

    def __init__(self, limit: int = 500) -> None:
        self.by_id: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.limit = limit

    def add(self, doc: dict[str, Any]) -> None:
        iid = str(doc.get("id", ""))
        self.by_id.pop(iid, None)
        self.by_id[iid] = doc
        while len(self.by_id) > self.limit:
            old = next((k for k, d in self.by_id.items() if d.get("status") != "firing"), None)
            self.by_id.pop(old if old is not None else next(iter(self.by_id)))

    def listing(self, limit: int = 200) -> list[dict[str, Any]]:
        """Firing first (newest start first), then the rest by end, newest first; merged ones
        are folded into the incident they joined and left out."""
        docs = [d for d in self.by_id.values() if d.get("status") != "merged"]
        firing = sorted((d for d in docs if d.get("status") == "firing"), key=lambda d: str(d.get("start")), reverse=True)
        done = sorted((d for d in docs if d.get("status") != "firing"), key=lambda d: str(d.get("end")), reverse=True)
        return (firing + done)[:limit]


class DashboardFeed(DashboardData):
    """Thread-safe: the run loop calls `step`, `add_incidents` and `committed`; the HTTP server's
    thread calls `snapshot`."""

    mode = "live"

    def __init__(
        self,
        rs: RuleSet,
        out_dir: Path | None = None,
        store_dir: Path | None = None,
        source: str = "",
        sinks: Iterable[str] = (),
        history: int = 300,
        min_interval: float = 0.25,
    ) -> None:
        super().__init__(rs, out_dir, store_dir)
        self.source = source
        self.sinks = list(sinks)
        self.history = history
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self.version = 0
        self.started = time.time()
        self.boards = {r.name: RuleBoard(r) for r in rs.rules}
        self.incidents = IncidentBook()
        self._seconds: OrderedDict[int, np.ndarray] = OrderedDict()  # wall second -> SERIES counts
        self._last_rejected = 0
        self._last_late = 0
        self._health: dict[str, Any] = {}
        self._last_commit: float | None = None
        self._state: dict[str, Any] = {}
        self._cache: tuple[int, float, bytes] | None = None

    def prefill(self) -> None:
        """Before the loop starts: the latest windows and incidents from the output files, so
        the dashboard of a restarted run does not start empty (counts per second start at 0)."""
        if self.out_dir is None:
            return
        from lookout.dashboard.files import json_lines

        with self._lock:
            for b in self.boards.values():
                b.load_file(self.out_dir / f"{b.rule.name}.jsonl")
                b.total = 0  # the panel's total counts this run's rows
            for d in json_lines(self.out_dir / "incidents.jsonl"):
                self.incidents.add(d)
            self.version += 1

    # ---- called by the run loop --------------------------------------------------------------
    def step(
        self,
        results: list[ResultBatch],
        records: pl.DataFrame | None,
        pipeline: Pipeline,
        incidents: Iterable[dict[str, Any]] = (),
    ) -> None:
        """One run-loop step: its valid records (counted by status class, never kept), its
        results, its incident lines (issue 10's `Transition.doc`), and the pipeline's counters."""
        counts = np.zeros(len(SERIES), dtype=np.int64)
        if records is not None and records.height:
            by_class = np.bincount(records.get_column("status").to_numpy() // 100, minlength=6)
            counts[:4] = by_class[2:6]
        st = pipeline.stats
        late = st.late
        rejected = st.rejected
        eng = pipeline.engine
        now = time.time()
        with self._lock:
            counts[4] = rejected - self._last_rejected
            counts[5] = late - self._last_late
            self._last_rejected, self._last_late = rejected, late
            sec = int(now)
            cur = self._seconds.get(sec)
            if cur is None:
                self._seconds[sec] = counts
                while len(self._seconds) > self.history:
                    self._seconds.popitem(last=False)
            else:
                cur += counts
            for rb in results:
                self._add_results(rb)
            for d in incidents:
                self.incidents.add(d)
            self._health = {
                "lines": st.lines,
                "records": st.records,
                "rejected": rejected,
                "late": late,
                "reasons": dict(st.reasons),
                "results": dict(st.results),
                "watermark": iso_ms(eng.watermark) if eng.watermark > 0 else None,
                "newest_event": iso_ms(eng.max_ts) if eng.max_ts is not None else None,
                "event_lag_seconds": round(now - eng.max_ts / 1e6, 3) if eng.max_ts is not None else None,
            }
            self.version += 1

    def _add_results(self, rb: ResultBatch) -> None:
        board = self.boards.get(rb.rule.name)
        if board is not None:
            board.add_frame(rb.frame)

    def add_incidents(self, docs: Iterable[dict[str, Any]]) -> None:
        """Incident lines as issue 10 writes them (`Transition.doc`)."""
        with self._lock:
            n = 0
            for d in docs:
                self.incidents.add(d)
                n += 1
            if n:
                self.version += 1

    def committed(self, state: dict[str, Any] | None = None) -> None:
        """After each checkpoint; `state` adds rows to the health panel (e.g. sink errors,
        notifications queued: issue 10), name -> short value."""
        with self._lock:
            self._last_commit = time.time()
            if state is not None:
                self._state = {str(k): v for k, v in state.items()}
            self.version += 1

    # ---- called by the HTTP server -----------------------------------------------------------
    def snapshot(self) -> bytes:
        """The whole dashboard state as JSON, rebuilt at most every `min_interval` (one build
        serves every client)."""
        now = time.monotonic()
        cache = self._cache
        # at most every min_interval; and at least every second, so the time axis and ages move on
        if cache is not None and (now - cache[1] < self.min_interval or (cache[0] == self.version and now - cache[1] < 1.0)):
            return cache[2]
        with self._lock:
            version = self.version
            doc = self._build(time.time())
        data = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
        self._cache = (version, now, data)
        return data

    def incident_list(self) -> list[dict[str, Any]]:
        with self._lock:
            return self.incidents.listing()

    def _build(self, now: float) -> dict[str, Any]:
        end = int(now)
        start = end - self.history + 1
        t = list(range(start, end + 1))
        series = {k: [0] * len(t) for k in SERIES}
        for sec, c in self._seconds.items():
            if start <= sec <= end:
                i = sec - start
                for j, k in enumerate(SERIES):
                    series[k][i] = int(c[j])
        recent = [sum(series[k][-6:-1]) for k in ("2xx", "3xx", "4xx", "5xx")]
        health = dict(self._health)
        health.update(
            {
                "source": self.source,
                "sinks": self.sinks,
                "uptime_seconds": round(now - self.started, 1),
                "records_per_second": round(sum(recent) / 5, 1),
                "checkpoint_age_seconds": round(now - self._last_commit, 1) if self._last_commit else None,
                "state": dict(self._state),
            }
        )
        return {
            "mode": self.mode,
            "version": self.version,
            "now": iso_ms(int(now * 1e6)),
            "traffic": {"t": t, **series, "axis": "processing time"},
            "rules": [b.summary() for b in self.boards.values()],
            "incidents": self.incidents.listing(50),
            "health": health,
        }
