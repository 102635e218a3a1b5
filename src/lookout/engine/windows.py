"""Window arithmetic shared by the engine, the reference and the Spark compiler.

Windows follow Spark's `window(ts, size, hop)`: [k*hop, k*hop + size) for integer k, aligned to
the Unix epoch. Time is in integer microseconds. A *pane* is a slice of width gcd(size, hop):
every window is a whole number of panes, so per-pane partial aggregates combine into any window
without copying a record into each of the size/hop windows that contain it.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class WindowMath:
    size: int
    hop: int

    @property
    def pane(self) -> int:
        from math import gcd

        return gcd(self.size, self.hop)

    # --- scalar forms ----------------------------------------------------------------------
    def end(self, k: int) -> int:
        return k * self.hop + self.size

    def last_closed(self, watermark: int) -> int:
        """Highest k whose window has closed at this watermark (end <= watermark)."""
        return (watermark - self.size) // self.hop

    # --- vectorised forms ----------------------------------------------------------------
    def first_end_expr(self, ts: pl.Expr) -> pl.Expr:
        return ((ts - self.size) // self.hop + 1) * self.hop + self.size

    def pane_windows_expr(self, q: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
        """(first k, last k) of the windows that contain pane q (as [q*pane, (q+1)*pane))."""
        pstart = q * self.pane
        # first k: smallest k with k*hop + size >= pstart + pane, i.e. ceil((pstart + pane - size) / hop)
        first = -((self.size - self.pane - pstart) // self.hop)
        return first, pstart // self.hop

    def pane_last_k_expr(self, q: pl.Expr) -> pl.Expr:
        return (q * self.pane) // self.hop
