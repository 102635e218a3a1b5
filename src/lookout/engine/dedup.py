"""Skip a record whose id has already been counted: one record, one count, end to end.

Why: `lookout ship` re-sends what it produced after its last saved position when it crashes,
and those copies arrive on the topic at new offsets. Each carries the record's id (header
`lookout-id`: the tail's `<file fingerprint>-<byte offset>`), so the run can recognise it.

Guarantee: a record whose id was seen is dropped (counted as a duplicate) as long as it could
still be counted in an open window: ids are kept while their event time is within `horizon` of
the watermark (the longest window plus the lateness). An older copy is late for every window
anyway. Memory is bounded by input rate x horizon; exact string ids (no hash collisions, so no
real record is ever dropped for another's). The state is data: a table of (id, ts) rows,
checkpointed with the engine and restored on start.
"""

from __future__ import annotations

import io

import polars as pl

SCHEMA = {"id": pl.String, "ts": pl.Int64}


class SeenIds:
    """Ids counted recently, in parts (one per step) merged when they pile up, so a step costs
    a few hash look-ups rather than a copy of everything kept."""

    def __init__(self, horizon_us: int, max_parts: int = 8) -> None:
        self.horizon = horizon_us
        self.max_parts = max_parts
        self.parts: list[pl.DataFrame] = []
        self._cutoff: int | None = None  # event time below which ids are no longer needed

    def __len__(self) -> int:
        return sum(p.height for p in self.parts)

    def first_seen(self, ids: pl.Series, ts: pl.Series) -> pl.Series:
        """True for each record whose id is new (also among this batch); remembers them."""
        ids = ids.cast(pl.String)
        fresh = ids.is_first_distinct()
        for p in self.parts:
            fresh = fresh & ~ids.is_in(p.get_column("id").implode())
        new = pl.DataFrame({"id": ids, "ts": ts}, schema=SCHEMA).filter(fresh)
        if new.height:
            self.parts.append(new)
        if len(self.parts) > self.max_parts:  # merge, dropping what is past the horizon
            merged = pl.concat(self.parts, rechunk=True)
            self.parts = [merged.filter(pl.col("ts") >= self._cutoff) if self._cutoff is not None else merged]
        return fresh

    def evict(self, watermark: int) -> None:
        """Forget ids whose event time is more than the horizon behind the watermark: parts wholly
        behind it at once, single rows at the next merge (at most `max_parts` steps later)."""
        if watermark <= 0:
            return
        cutoff = watermark - self.horizon
        self._cutoff = cutoff
        self.parts = [p for p in self.parts if p.get_column("ts").max() >= cutoff]  # type: ignore[operator]

    def table(self) -> pl.DataFrame:
        return pl.concat(self.parts, rechunk=True) if self.parts else pl.DataFrame(schema=SCHEMA)

    def to_bytes(self) -> bytes:
        """Arrow IPC of the (id, ts) table: data, never code."""
        buf = io.BytesIO()
        self.table().write_ipc(buf, compression="zstd")
        return buf.getvalue()

    def load_bytes(self, blob: bytes) -> None:
        df = pl.read_ipc(io.BytesIO(blob))
        if dict(df.schema) != SCHEMA:
            raise ValueError(f"dedup state has columns {dict(df.schema)}, expected {SCHEMA}")
        self.parts = [df] if df.height else []
