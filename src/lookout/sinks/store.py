"""Raw records into the embedded store (see lookout.store)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from lookout.sinks.base import Sink
from lookout.store import StoreWriter


class StoreSink(Sink):
    name = "store"

    def __init__(self, store_dir: Path, retention_us: int | None = None) -> None:
        self.writer = StoreWriter(store_dir, retention_us=retention_us)

    def write_records(self, records: pl.DataFrame, ids: pl.Series) -> None:
        self.writer.add(records, ids)

    def flush(self) -> None:
        self.writer.flush()
