"""Skip a record whose id has already been counted: one record, one count, end to end.

Why: `lookout ship` re-sends what it produced after its last saved position when it crashes,
and those copies arrive on the topic at new offsets. Each carries the record's id (header
`lookout-id`: the tail's `<file fingerprint>-<byte offset>`), so the run can recognise it. Only
such ids can repeat at a new position (`Chunk.repeatable_ids`); offsets, line numbers and the
generator's sequence cannot, and cost nothing here.

Guarantee: a record whose id was seen is dropped (counted as a duplicate) as long as it could
still be counted in an open window: ids are kept while their event time is within `horizon` of
the watermark (the longest window plus the lateness); an older copy is late for every window
anyway. Memory is bounded by input rate x horizon. Look-ups go by a 64-bit hash in sorted arrays
(a step costs a binary search per record, not a pass over everything kept) and a hash match is
confirmed on the id string, so no record is ever dropped for another's. The state is data: a
table of (id, ts) rows, checkpointed with the engine (Arrow IPC) and restored on start.
"""

from __future__ import annotations

import io

import numpy as np
import polars as pl

SCHEMA = {"id": pl.String, "ts": pl.Int64}


class _Part:
    """Ids sorted by hash, with their event times."""

    def __init__(self, frame: pl.DataFrame) -> None:
        frame = frame.with_columns(h=pl.col("id").hash()).sort("h")
        self.h = frame.get_column("h").to_numpy()
        self.ids = frame.get_column("id")
        self.ts = frame.get_column("ts")
        self.ts_max = int(self.ts.max()) if frame.height else 0  # type: ignore[arg-type]
        self._blob: bytes | None = None

    def blob(self) -> bytes:
        """Arrow IPC of the part, made once (a part never changes): a commit re-encodes only new parts."""
        if self._blob is None:
            buf = io.BytesIO()
            self.frame().write_ipc(buf, compression="zstd")
            self._blob = buf.getvalue()
        return self._blob

    def __len__(self) -> int:
        return len(self.h)

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame({"id": self.ids, "ts": self.ts}, schema=SCHEMA)

    def contains(self, h: np.ndarray, ids: pl.Series) -> np.ndarray:
        """For each (hash, id): is this exact id here?"""
        if not len(self.h):
            return np.zeros(len(h), dtype=bool)
        at = np.searchsorted(self.h, h)
        hit = (at < len(self.h)) & (self.h[np.minimum(at, len(self.h) - 1)] == h)
        found = np.zeros(len(h), dtype=bool)
        for i in np.flatnonzero(hit):  # candidates: (nearly) only real repeats, so few
            j, want = int(at[i]), ids[int(i)]
            while j < len(self.h) and self.h[j] == h[i]:
                if self.ids[j] == want:
                    found[i] = True
                    break
                j += 1
        return found


class SeenIds:
    """Ids counted recently, in parts (one per step with repeatable ids), merged when they pile up."""

    def __init__(self, horizon_us: int, max_parts: int = 8) -> None:
        self.horizon = horizon_us
        self.max_parts = max_parts
        self.parts: list[_Part] = []
        self._cutoff: int | None = None  # event time below which ids are no longer needed
        self._added: list[pl.DataFrame] = []  # rows remembered since the last take_added()

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def first_seen(self, ids: pl.Series, ts: pl.Series) -> pl.Series:
        """True for each record whose id is new (also among this batch); remembers them."""
        ids = ids.cast(pl.String).rename("id")
        fresh = ids.is_first_distinct().to_numpy().copy()
        if self.parts:
            h = ids.hash().to_numpy()
            for p in self.parts:
                fresh &= ~p.contains(h, ids)
        keep = pl.Series("fresh", fresh)
        new = pl.DataFrame({"id": ids, "ts": ts}, schema=SCHEMA).filter(keep)
        if new.height:
            self.parts.append(_Part(new))
            self._added.append(new)
        while len(self.parts) > self.max_parts:
            self._merge_smallest_pair()
        return keep

    def _merge_smallest_pair(self) -> None:
        """Tiered: merge the two neighbours (parts are in arrival order) with the fewest rows, dropping
        what is past the horizon, so a big old part is rarely rewritten (nor re-encoded)."""
        sizes = [len(a) + len(b) for a, b in zip(self.parts[:-1], self.parts[1:], strict=True)]
        i = sizes.index(min(sizes))
        merged = pl.concat([self.parts[i].frame(), self.parts[i + 1].frame()], rechunk=True)
        if self._cutoff is not None:
            merged = merged.filter(pl.col("ts") >= self._cutoff)
        self.parts[i : i + 2] = [_Part(merged)] if merged.height else []

    def evict(self, watermark: int) -> None:
        """Forget ids whose event time is more than the horizon behind the watermark: parts wholly
        behind it at once, single rows when their part is merged. (Memory: at most about twice
        what the horizon holds.)"""
        if watermark <= 0:
            return
        self._cutoff = watermark - self.horizon
        self.parts = [p for p in self.parts if p.ts_max >= self._cutoff]

    def table(self) -> pl.DataFrame:
        return pl.concat([p.frame() for p in self.parts], rechunk=True) if self.parts else pl.DataFrame(schema=SCHEMA)

    def take_added(self) -> pl.DataFrame:
        """The rows remembered since the previous call: what a checkpoint delta saves, instead of
        the whole table (megabytes per commit at 10k ids/s)."""
        added, self._added = self._added, []
        return pl.concat(added, rechunk=True) if added else pl.DataFrame(schema=SCHEMA)

    def to_bytes(self) -> list[bytes]:
        """The state as data: one Arrow IPC (id, ts) table per part (hashes are recomputed on load)."""
        return [p.blob() for p in self.parts]

    def load_table(self, df: pl.DataFrame) -> None:
        """The state from `table()` (a checkpoint's table): one part; hashes are recomputed."""
        if dict(df.schema) != SCHEMA:
            raise ValueError(f"dedup state has columns {dict(df.schema)}, expected {SCHEMA}")
        self.parts = [_Part(df)] if df.height else []

    def load_bytes(self, blobs: list[bytes]) -> None:
        parts = []
        for blob in blobs:
            df = pl.read_ipc(io.BytesIO(blob))
            if dict(df.schema) != SCHEMA:
                raise ValueError(f"dedup state has columns {dict(df.schema)}, expected {SCHEMA}")
            if df.height:
                parts.append(_Part(df))
        self.parts = parts
