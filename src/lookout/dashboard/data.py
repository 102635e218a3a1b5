"""What the dashboard's pages and API read: a live run's feed or a stopped run's files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lookout.rules import RuleSet


class DashboardData:
    """Base of `DashboardFeed` (live, in-process) and `StoredRun` (files of a stopped run).

    `snapshot()` is the JSON the pages draw (traffic, rules, incidents, health); `version`
    changes whenever it may have; the API reads results from `out_dir` and raw records from
    `store_dir` in both cases.
    """

    mode = "base"
    version = 0

    def __init__(self, rs: RuleSet, out_dir: Path | None, store_dir: Path | None) -> None:
        self.rs = rs
        self.out_dir = out_dir
        self.store_dir = store_dir

    def snapshot(self) -> bytes:
        raise NotImplementedError

    def incident_list(self) -> list[dict[str, Any]]:
        raise NotImplementedError
