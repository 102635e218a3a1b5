"""A stopped or finished run (or a `replay` backfill), read from its files for `lookout serve`.

Same snapshot shape as the live feed, built from: the embedded store (records per second by
status class over the newest `history` seconds of *event* time), the result files (each rule's
board), `incidents.jsonl` and `rejected.jsonl` in the output directory, and the checkpoint's
age. The snapshot is rebuilt when a file changed, at most every `min_interval` seconds, so
`serve` on a state dir another process still writes shows its progress.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from lookout import store
from lookout.dashboard.boards import RuleBoard
from lookout.dashboard.data import DashboardData
from lookout.dashboard.feed import SERIES, IncidentBook
from lookout.dashboard.files import json_lines
from lookout.output import iso_ms
from lookout.rules import RuleSet

INCIDENTS_FILE = "incidents.jsonl"  # issue 10's file name in the output directory
REJECTED_FILE = "rejected.jsonl"
CHECKPOINT_DIR = "checkpoint"  # lookout.checkpoint's files: only their modification times are read


class StoredRun(DashboardData):
    mode = "stored"

    def __init__(
        self,
        rs: RuleSet,
        out_dir: Path,
        state_dir: Path,
        store_dir: Path | None = None,
        history: int = 300,
        min_interval: float = 2.0,
    ) -> None:
        super().__init__(rs, out_dir, store_dir or state_dir / "store")
        self.state_dir = state_dir
        self.history = history
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._checked = 0.0
        self._data = b""
        self._incidents: list[dict[str, Any]] = []

    def _files_stamp(self) -> tuple:
        paths = [self.out_dir / f"{r.name}.jsonl" for r in self.rs.rules]
        paths += [self.out_dir / INCIDENTS_FILE, self.out_dir / REJECTED_FILE]
        paths += [Path(p) for p in store.data_files(self.store_dir)]
        out = []
        for p in paths:
            try:
                s = p.stat()
                out.append((str(p), s.st_size, s.st_mtime_ns))
            except FileNotFoundError:
                pass
        return tuple(out)

    def _refresh(self) -> None:
        now = time.monotonic()
        if self._stamp is not None and now - self._checked < self.min_interval:
            return
        self._checked = now
        stamp = self._files_stamp()
        if stamp == self._stamp:
            return
        doc, incidents = self._build()
        self._data = orjson.dumps(doc)
        self._incidents = incidents
        self._stamp = stamp
        self.version += 1

    def snapshot(self) -> bytes:
        with self._lock:
            self._refresh()
            return self._data

    def incident_list(self) -> list[dict[str, Any]]:
        with self._lock:
            self._refresh()
            return self._incidents

    def _build(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        boards = []
        for r in self.rs.rules:
            b = RuleBoard(r)
            b.load_file(self.out_dir / f"{r.name}.jsonl")
            boards.append(b.summary())
        book = IncidentBook(limit=5000)
        for d in json_lines(self.out_dir / INCIDENTS_FILE):
            book.add(d)
        incidents = book.listing(1000)
        reasons = Counter(str(d.get("reason")) for d in json_lines(self.out_dir / REJECTED_FILE))
        traffic, newest, total = self._traffic()
        ck = self.state_dir / CHECKPOINT_DIR
        times = [p.stat().st_mtime for p in ck.iterdir() if p.is_file()] if ck.is_dir() else []
        ckpt_age = round(time.time() - max(times), 1) if times else None
        health = {
            "source": f"stored run: {self.state_dir}",
            "sinks": ["files", "store"],
            "records": total,
            "rejected": sum(n for k, n in reasons.items() if k != "late"),
            "late": reasons.get("late", 0),
            "reasons": dict(reasons),
            "results": {b["name"]: b["total"] for b in boards},
            "newest_event": iso_ms(newest) if newest is not None else None,
            "watermark": None,
            "event_lag_seconds": None,
            "checkpoint_age_seconds": ckpt_age,
            "records_per_second": None,
        }
        doc = {
            "mode": self.mode,
            "version": self.version + 1,
            "now": iso_ms(int(time.time() * 1e6)),
            "traffic": traffic,
            "rules": boards,
            "incidents": incidents[:50],
            "health": health,
        }
        return doc, incidents

    def _traffic(self) -> tuple[dict[str, Any], int | None, int]:
        """Records per event-time second and status class over the newest `history` seconds."""
        files = store.data_files(self.store_dir)
        empty: dict[str, Any] = {"t": [], **{k: [] for k in SERIES}, "axis": "event time"}
        if not files:
            return empty, None, 0
        con = store.connect()
        total, oldest, newest = con.execute("SELECT count(*), min(ts), max(ts) FROM read_parquet(?)", [files]).fetchone()
        if newest is None:
            return empty, None, int(total)
        end = int(newest // 1_000_000)
        start = max(end - self.history + 1, int(oldest // 1_000_000))
        rows = con.execute(
            "SELECT ts // 1000000 AS sec, status // 100 AS cls, count(*) FROM read_parquet(?) WHERE ts >= ? GROUP BY ALL",
            [files, start * 1_000_000],
        ).fetchall()
        t = list(range(start, end + 1))
        series = {k: [0] * len(t) for k in SERIES}
        for sec, cls, n in rows:
            name = f"{int(cls)}xx"
            if name in series and start <= sec <= end:
                series[name][int(sec) - start] += int(n)
        return {"t": t, **series, "axis": "event time"}, int(newest), int(total)
