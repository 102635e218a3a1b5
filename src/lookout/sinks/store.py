"""Raw records into the embedded store (see lookout.store)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from lookout.sinks.base import Sink
from lookout.store import StoreWriter


class StoreSink(Sink):
    name = "store"

    def __init__(self, store_dir: Path) -> None:
        self.writer = StoreWriter(store_dir)

    def write_records(self, records: pl.DataFrame, ids: pl.Series) -> None:
        self.writer.add(records, ids)

    def flush(self) -> None:
        self.writer.flush()

    def checkpoint(self) -> int:
        """The last part file's sequence number: files after it are dropped on restore."""
        return self.writer.seq

    def restore(self, state: int) -> None:
        self.writer.drop_after(state)
