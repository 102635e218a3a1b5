"""The event-time window engine: pure, batch-at-a-time, Spark's window semantics.

Vocabulary (Apache Beam's):
- *window*: [k*hop, k*hop + size), aligned to the epoch (see windows.py);
- *watermark*: highest event time seen minus the allowed lateness, advanced per record, and
  never past the wall clock minus the lateness when the caller passes the clock (`now`): a
  record stamped ahead of the clock cannot make the present late. `advance()` moves it with no
  record (idle input: the clock; idle Kafka partitions: their event time); a window *closes*
  when the watermark reaches its end, and its state is freed;
- *late*: a record one of whose windows had already closed when it arrived. It is left out of
  that rule (counted nowhere in it) and reported, so totals never depend on batch boundaries;
- *trigger*: `alert` emits a (window, key) once, as soon as its condition first holds, with the
  value at that moment; `final` emits once when the window closes; `update` re-emits every
  (window, key) whose value changed in a batch.

State is per-key *panes* of width gcd(size, hop) holding partial aggregates, so a record costs
the same for a 20 s/1 s hopping window as for a tumbling one. Work is done with polars on
whole batches; Python touches only aggregated rows (and, for sum/min/max alerts, the records
of the few windows that cross their threshold in a batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import polars as pl

from lookout.checkpoint import CheckpointError, decode, encode
from lookout.engine.windows import WindowMath
from lookout.records import SCHEMA
from lookout.rules import Rule, RuleSet, Threshold
from lookout.schema import BY_NAME, scale

NEVER = -(1 << 62)  # a watermark / window index below any real one
EXPLODE_ROWS = 250_000  # peak rows of one pane-to-window explosion; bigger ones go in key slices

_PARTIAL_COLS = ("cnt", "n", "s", "mn", "mx")


def _filter_expr(rule: Rule) -> pl.Expr:
    expr = pl.lit(True)
    for fld, values in rule.filter.conditions:
        col = pl.col(fld)
        if BY_NAME[fld].ranged:
            part = pl.lit(False)
            for lo, hi in values:
                part = part | col.is_between(lo, hi)
            expr = expr & part.fill_null(False)
        else:
            expr = expr & col.is_in(list(values)).fill_null(False)
    for k in rule.group_by:
        expr = expr & pl.col(k).is_not_null()
    return expr


@dataclass
class RuleOutput:
    results: pl.DataFrame | None  # columns: _start, _end, <group_by...>, value
    late_lines: pl.Series | None  # `line` of records late for this rule
    closed_alerts: pl.DataFrame | None = None  # alert mode: final values of alerted windows that closed


class RuleRunner:
    """One rule's panes, watermark bookkeeping and emission."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.w = WindowMath(rule.window.size, rule.window.hop)
        self.keys = list(rule.group_by)
        self.agg = rule.agg
        self.mode = rule.effective_emit
        self.threshold: Threshold | None = rule.threshold_spec
        self.panes: pl.DataFrame | None = None  # keys..., q, partial columns
        self.closed_k = NEVER  # every window k <= closed_k has closed
        # alert mode: (keys..., k) of windows that alerted and are still open; their final values
        # are reported when they close (incidents need each window's peak, not just the crossing)
        self.alerted: pl.DataFrame | None = None
        self._closed_alerts: pl.DataFrame | None = None
        self._touched: list[pl.DataFrame] = []  # (keys, q) changed since the last checkpoint
        self._saved = False  # whether the last checkpoint holds a panes table (not None)
        self._tracking = False  # changes are tracked from the first checkpoint on (replay takes none)
        self._filter = _filter_expr(rule)
        self._has_value = self.agg.field is not None
        self._pcols = ["cnt", "n", "s", "mn", "mx"] if self._has_value else ["cnt"]
        self._scale = scale(self.agg.field)  # integer units of the summed field (request_time: µs)
        # only the columns this rule reads travel through its filter
        needed = {"ts", "_wm", "line", *self.keys, *(f for f, _ in rule.filter.conditions)}
        if self.agg.field:
            needed.add(self.agg.field)
        self._columns = sorted(needed)

    # ---- partial aggregates -----------------------------------------------------------------
    def _partial_exprs(self) -> list[pl.Expr]:
        exprs = [pl.len().cast(pl.Int64).alias("cnt")]
        if self._has_value:
            v = pl.col("_v")
            exprs += [v.count().cast(pl.Int64).alias("n"), v.sum().alias("s"), v.min().alias("mn"), v.max().alias("mx")]
        return exprs

    def _merge_exprs(self) -> list[pl.Expr]:
        exprs = [pl.col("cnt").sum()]
        if self._has_value:
            exprs += [pl.col("n").sum(), pl.col("s").sum(), pl.col("mn").min(), pl.col("mx").max()]
        return exprs

    def _cond_expr(self, suffix: str = "", halve: bool = False) -> pl.Expr:
        """The threshold tested on partial columns, in integer units (request_time in µs), so the
        test is exact: polars rewrites division by a constant as an inexact multiplication."""
        t = self.threshold
        assert t is not None
        f = self.agg.func
        col = {"count": "cnt", "sum": "s", "avg": "s", "min": "mn", "max": "mx"}[f]
        lhs = pl.col(col + suffix)
        if f == "count":
            rhs: Any = t.value
        elif self._scale != 1 or float(t.value).is_integer():
            rhs = round(t.value * self._scale)
            if f == "avg":  # s / n  op  x   <=>  s  op  x * n   (n > 0)
                rhs = pl.col("n" + suffix) * rhs
        elif f == "avg":  # an integer field against a fraction: s op x * n, x * n exact for any real n
            rhs = pl.col("n" + suffix) * t.value
        else:  # an integer s against a fraction x: s > x <=> s > floor(x), s >= x <=> s >= ceil(x)
            rhs = math.floor(t.value) if t.op in (">", "<=") else math.ceil(t.value)
        if halve:
            lhs = lhs * 2
        op = {">": lhs > rhs, ">=": lhs >= rhs, "<": lhs < rhs, "<=": lhs <= rhs}[t.op]
        if f != "count":
            op = op & (pl.col("n" + suffix) > 0)
        return op.fill_null(False)

    def _values(self, df: pl.DataFrame) -> pl.Series:
        """Final aggregate values from partial columns. Divisions run in numpy (exact IEEE
        division: 50000 / 1e6 == 0.05), not in polars."""
        f = self.agg.func
        if f == "count":
            return df.get_column("cnt").alias("value")
        n = df.get_column("n").to_numpy()
        col = {"sum": "s", "avg": "s", "min": "mn", "max": "mx"}[f]
        raw = df.get_column(col).fill_null(0).to_numpy().astype(np.float64 if self._scale != 1 or f == "avg" else np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            if f == "avg":
                vals = raw / (n * self._scale)
            elif self._scale != 1:
                vals = raw / self._scale
            else:
                vals = raw
        return pl.Series("value", vals).set(pl.Series(n == 0), None)

    def _value_column(self) -> pl.Expr:
        fld = self.agg.field
        if fld is None:
            return pl.lit(None)
        if self._scale != 1:
            # Summed as integer microseconds: exact, so results do not depend on summation order
            # (threads, batch boundaries). nginx's $request_time has millisecond resolution.
            return (pl.col(fld) * self._scale).round(0).cast(pl.Int64)
        return pl.col(fld).cast(pl.Int64)

    # ---- exploding panes into the windows that contain them ---------------------------------
    def _explode(
        self, panes: pl.DataFrame, k_lo: int | None = None, k_hi: int | None = None, only: pl.DataFrame | None = None
    ) -> pl.DataFrame:
        """Windows (keys, k) with their merged partials; `only` (keys + k) keeps just those windows,
        inside each slice, so the result is no bigger than what the caller needs."""
        # Each pane is copied into every window containing it before the group-by folds them: with
        # many keys that intermediate is the peak of a run (10,000 hosts on a 30 s/1 s window: ~12M
        # rows). Windows never mix keys, so slices of keys explode one after another, each bounded.
        slices = -(-panes.height * -(-self.w.size // self.w.hop) // EXPLODE_ROWS)
        if slices > 1:
            parts = panes.with_columns(_slice=pl.struct(self.keys).hash(seed=0) % slices).partition_by(
                "_slice", include_key=False
            )
            return pl.concat([self._explode_slice(p, k_lo, k_hi, only) for p in parts])
        return self._explode_slice(panes, k_lo, k_hi, only)

    def _explode_slice(
        self, panes: pl.DataFrame, k_lo: int | None, k_hi: int | None, only: pl.DataFrame | None = None
    ) -> pl.DataFrame:
        first, last = self.w.pane_windows_expr(pl.col("q"))
        if k_lo is not None:
            first = pl.max_horizontal(first, pl.lit(k_lo))
        if k_hi is not None:
            last = pl.min_horizontal(last, pl.lit(k_hi))
        out = panes.with_columns(k=pl.int_ranges(first, last + 1)).explode("k").drop_nulls("k")
        if only is not None:
            out = out.join(only, on=self.keys + ["k"], how="semi")
        return out.group_by(self.keys + ["k"]).agg(self._merge_exprs())

    def _windows_frame(self, df: pl.DataFrame, value: pl.Series | None = None) -> pl.DataFrame:
        out = df.select(
            (pl.col("k") * self.w.hop).alias("_start"),
            (pl.col("k") * self.w.hop + self.w.size).alias("_end"),
            *[pl.col(k) for k in self.keys],
        )
        return out.with_columns(self._values(df) if value is None else value.alias("value"))

    # ---- one batch --------------------------------------------------------------------------
    def process(self, df: pl.DataFrame, wm_end: int) -> RuleOutput:
        sel = df.select(self._columns).filter(self._filter)
        late_lines = None
        results: list[pl.DataFrame] = []
        if sel.height:
            first_end = self.w.first_end_expr(pl.col("ts"))
            on_time = first_end > pl.col("_wm")
            if not sel.select(on_time.all()).item():
                late_lines = sel.filter(~on_time).get_column("line")
                sel = sel.filter(on_time)
            if sel.height:
                delta = (
                    sel.lazy()
                    .select(*self.keys, q=pl.col("ts") // self.w.pane, _v=self._value_column())
                    .group_by(self.keys + ["q"])
                    .agg(self._partial_exprs())
                    .collect()
                )
                old = self.panes
                if self._tracking:
                    self._touched.append(delta.select(self.keys + ["q"]))
                if self.mode == "alert":
                    alerts = self._alerts(old, delta, sel)
                    if alerts is not None:
                        results.append(alerts)
                        fired = alerts.select(*self.keys, k=pl.col("_start") // self.w.hop)
                        self.alerted = fired if self.alerted is None else pl.concat([self.alerted, fired])
                self.panes = delta if old is None else self._merge(old, delta)
                if self.mode == "update":
                    touched = delta.select(self.keys).unique()
                    after = self._explode(self.panes.join(touched, on=self.keys, how="semi"), k_lo=self.closed_k + 1)
                    changed = self._explode(delta, k_lo=self.closed_k + 1).select(self.keys + ["k"])
                    after = after.join(changed, on=self.keys + ["k"], how="semi")
                    if self.threshold is not None:
                        after = after.filter(self._cond_expr())
                    results.append(self._windows_frame(after).sort("_start", *self.keys))
        closed = self._close(self.w.last_closed(wm_end))
        if closed is not None:
            results.append(closed)
        out = pl.concat(results) if results else None
        return RuleOutput(out if out is not None and out.height else None, late_lines, self.take_closed_alerts())

    def take_closed_alerts(self) -> pl.DataFrame | None:
        out, self._closed_alerts = self._closed_alerts, None
        return out

    def _merge(self, old: pl.DataFrame, delta: pl.DataFrame) -> pl.DataFrame:
        """Fold a batch's panes into the state. Only panes up to the newest old one can exist in
        both; the rest (most of an in-order batch) are appended without regrouping."""
        if old.height == 0:
            return delta
        newest = old.get_column("q").max()
        overlap = delta.filter(pl.col("q") <= newest)
        if overlap.height == 0:
            return pl.concat([old, delta])
        merged = pl.concat([old, overlap]).group_by(self.keys + ["q"]).agg(self._merge_exprs())
        return pl.concat([merged, delta.filter(pl.col("q") > newest)])

    def _alerts(self, old: pl.DataFrame | None, delta: pl.DataFrame, sel: pl.DataFrame) -> pl.DataFrame | None:
        # Prune before exploding panes into windows. Cut time into buckets of one window size:
        # any window lies within two neighbouring buckets b, b+1 (b = its start's bucket). count,
        # sum and max only grow with more records and min only shrinks, so a window can meet the
        # condition only if the two buckets together do. Only such (key, b) are looked at closely.
        size = self.w.size
        bucket = (pl.col("q") * self.w.pane) // size
        live = (delta if old is None else pl.concat([old, delta])).with_columns(_b=bucket)
        per_bucket = live.group_by(self.keys + ["_b"]).agg(self._merge_exprs())
        # Cheap first cut: if two buckets together meet `> X` (values >= 0), one of them alone
        # meets `> X/2` (for count and sum; for max and min one bucket meets the condition itself).
        strong = per_bucket.filter(self._cond_expr(halve=self.agg.func in ("count", "sum")))
        if strong.height == 0:
            return None
        near = pl.concat([strong.select(self.keys + ["_b"]), strong.select(*self.keys, _b=pl.col("_b") - 1)]).unique()
        per_bucket = per_bucket.join(
            pl.concat([near, near.with_columns(_b=pl.col("_b") + 1)]).unique(), on=self.keys + ["_b"], how="semi"
        )
        nxt = per_bucket.with_columns(_b=pl.col("_b") - 1)
        pairs = pl.concat([per_bucket, nxt]).group_by(self.keys + ["_b"]).agg(self._merge_exprs())
        cand = pairs.filter(self._cond_expr()).select(self.keys + ["_b"])
        if cand.height == 0:
            return None
        # panes that can sit in a candidate window: buckets b and b+1 of each candidate (key, b)
        pane_buckets = pl.concat([cand, cand.with_columns(_b=pl.col("_b") + 1)]).unique()

        def windows(panes: pl.DataFrame, k_lo: int = NEVER, k_hi: int | None = None) -> pl.DataFrame:
            p = panes.with_columns(_b=bucket).join(pane_buckets, on=self.keys + ["_b"], how="semi").drop("_b")
            w = self._explode(p, k_lo=max(self.closed_k + 1, k_lo), k_hi=k_hi)
            return w.with_columns(_b=(pl.col("k") * self.w.hop) // size).join(cand, on=self.keys + ["_b"], how="semi").drop("_b")

        d = windows(delta)
        if d.height == 0:
            return None
        if old is not None:  # only the windows the batch touched matter (joined on them below)
            o = windows(old, d.get_column("k").min(), d.get_column("k").max())  # type: ignore[arg-type]
            j = d.join(o, on=self.keys + ["k"], how="left", suffix="_o")
        else:
            j = d.with_columns(*[pl.lit(None, dtype=d.schema[c]).alias(c + "_o") for c in self._pcols])
        merged = [
            (pl.col("cnt") + pl.col("cnt_o").fill_null(0)).alias("cnt_a"),
        ]
        if self._has_value:
            merged += [
                (pl.col("n") + pl.col("n_o").fill_null(0)).alias("n_a"),
                (pl.col("s") + pl.col("s_o").fill_null(0)).alias("s_a"),
                pl.min_horizontal("mn", "mn_o").alias("mn_a"),
                pl.max_horizontal("mx", "mx_o").alias("mx_a"),
            ]
        j = j.with_columns(merged)
        crossing = j.filter(self._cond_expr("_a") & ~self._cond_expr("_o"))
        if crossing.height == 0:
            return None
        if self.agg.func == "count":
            t = self.threshold
            assert t is not None
            first_true = math.floor(t.value) + 1 if t.op == ">" else math.ceil(t.value)
            # Each record adds exactly 1, so the count at the crossing is the first count that holds.
            value = pl.max_horizontal(pl.lit(first_true), pl.col("cnt_o").fill_null(0) + 1)
            out = self._windows_frame(crossing, crossing.select(value).to_series())
        else:
            out = self._replay_crossings(crossing, sel)
        return out.sort("_start", *self.keys)

    def _replay_crossings(self, crossing: pl.DataFrame, sel: pl.DataFrame) -> pl.DataFrame:
        """The value at the moment of crossing for sum/min/max: replay the window's records in order."""
        t = self.threshold
        assert t is not None
        f = self.agg.func
        rows = []
        for row in crossing.iter_rows(named=True):
            start, end = row["k"] * self.w.hop, row["k"] * self.w.hop + self.w.size
            key_match = pl.lit(True)
            for k in self.keys:
                key_match = key_match & (pl.col(k) == row[k])
            recs = sel.filter(key_match & (pl.col("ts") >= start) & (pl.col("ts") < end)).select(self._value_column())
            acc = {"sum": row["s_o"], "min": row["mn_o"], "max": row["mx_o"]}[f] if row["n_o"] else None
            value = None
            for x in recs.to_series().to_list():
                if x is None:
                    continue
                acc = x if acc is None else (acc + x if f == "sum" else min(acc, x) if f == "min" else max(acc, x))
                if t.holds(acc / self._scale):
                    value = acc / self._scale if self._scale != 1 else acc
                    break
            rows.append({"_start": start, "_end": end, **{k: row[k] for k in self.keys}, "value": value})
        schema = {"_start": pl.Int64, "_end": pl.Int64, **{k: crossing.schema[k] for k in self.keys}}
        return pl.DataFrame(rows, schema_overrides=schema)

    def _close(self, k_close: int) -> pl.DataFrame | None:
        """Close windows up to k_close: emit them (final mode) and free panes no open window needs."""
        if k_close <= self.closed_k:
            return None
        out = None
        panes = self.panes
        if self.mode == "alert" and self.alerted is not None and self.alerted.height:
            self._final_values_of_alerted(k_close)
        if panes is not None and panes.height:
            if self.mode == "final":
                if self.w.size == self.w.hop:  # tumbling: a pane is a window
                    done = panes.filter(pl.col("q") <= k_close).rename({"q": "k"})
                else:
                    done = self._explode(panes, k_lo=self.closed_k + 1, k_hi=k_close)
                if self.threshold is not None:
                    done = done.filter(self._cond_expr())
                if done.height:
                    out = self._windows_frame(done).sort("_start", *self.keys)
            keep = self.w.pane_last_k_expr(pl.col("q")) > k_close
            self.panes = panes.filter(keep)
        self.closed_k = k_close
        return out

    def advance(self, watermark: int) -> pl.DataFrame | None:
        """Close the windows this watermark closes (no record needed): emit and free them."""
        return self._close(self.w.last_closed(watermark))

    def _final_values_of_alerted(self, k_close: int) -> None:
        """Final values of the alerted windows closing now (k <= k_close), before their panes go."""
        assert self.alerted is not None
        done = self.alerted.filter(pl.col("k") <= k_close)
        if done.height == 0:
            return
        self.alerted = self.alerted.filter(pl.col("k") > k_close)
        assert self.panes is not None
        panes = self.panes.join(done.select(self.keys).unique(), on=self.keys, how="semi")
        wins = self._explode(panes, k_lo=int(done.get_column("k").min()), k_hi=k_close, only=done.unique())
        frame = self._windows_frame(wins).sort("_start", *self.keys)
        self._closed_alerts = frame if self._closed_alerts is None else pl.concat([self._closed_alerts, frame])

    def close_all(self) -> pl.DataFrame | None:
        if self.panes is None or self.panes.height == 0:
            return None
        last = self.panes.select(self.w.pane_last_k_expr(pl.col("q")).max()).item()
        return self._close(last)

    # ---- checkpoints ------------------------------------------------------------------------
    def pane_schema(self) -> pl.Schema:
        """Column names and types of this rule's panes, as `process` builds them."""
        empty = pl.LazyFrame(schema={k: v for k, v in SCHEMA.items() if k in self._columns})
        return (
            empty.select(*self.keys, q=pl.col("ts") // self.w.pane, _v=self._value_column())
            .group_by(self.keys + ["q"])
            .agg(self._partial_exprs())
            .collect_schema()
        )

    def changed_panes(self, full: bool) -> pl.DataFrame | None:
        """Pane rows to save: all of them (full), or those changed since the last call. Rows
        dropped meanwhile need no record: they are exactly those with pane_last_k <= closed_k."""
        touched, self._touched = self._touched, []
        first, self._saved = not self._saved, self.panes is not None
        untracked, self._tracking = not self._tracking, True
        if self.panes is None:
            return None
        if full or untracked:
            return self.panes
        if first:  # the first rows saved carry the table's schema, even when empty
            return self.panes.join(pl.concat(touched).unique(), on=self.keys + ["q"], how="semi") if touched else self.panes
        if not touched:
            return None
        keys = pl.concat(touched).unique()
        # sorted by key: neighbouring rows share prefixes, and the delta compresses ~10-25% better
        return self.panes.join(keys, on=self.keys + ["q"], how="semi").sort(self.keys + ["q"])

    def load_panes(self, parts: list[pl.DataFrame], exists: bool, closed_k: int, replayed: bool) -> None:
        """Snapshot rows then delta rows, oldest first: the newest row per (key, pane) wins, and
        panes of closed windows are dropped, as `_close` dropped them."""
        self._touched = []
        self._tracking = True
        self.closed_k = closed_k
        self._saved = exists
        if not exists or not parts:
            self.panes = None
            return
        panes = pl.concat(parts, how="vertical") if len(parts) > 1 else parts[0]
        if replayed:
            panes = panes.unique(subset=self.keys + ["q"], keep="last", maintain_order=True)
            panes = panes.filter(self.w.pane_last_k_expr(pl.col("q")) > closed_k)
        self.panes = panes

    def open_window_end(self) -> int | None:
        """End of the newest window that still holds state (None when none does)."""
        if self.panes is None or self.panes.height == 0:
            return None
        return self.w.end(self.panes.select(self.w.pane_last_k_expr(pl.col("q")).max()).item())


@dataclass
class EngineOutput:
    results: dict[str, pl.DataFrame] = field(default_factory=dict)  # rule name -> emitted rows
    closed_alerts: dict[str, pl.DataFrame] = field(default_factory=dict)  # alert rules: final values of alerted windows
    late: pl.DataFrame | None = None  # columns: line, rules (list of rule names)

    @property
    def late_count(self) -> int:
        return 0 if self.late is None else self.late.height


class Engine:
    """Feeds batches of parsed records (records.SCHEMA) through every rule."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        self.lateness = ruleset.lateness
        self.max_ts: int | None = None
        self.watermark = NEVER  # only moves forward; advance() and close_all() raise it too
        self.runners = [RuleRunner(r) for r in ruleset.rules]
        self.by_name = {r.rule.name: r for r in self.runners}

    def process(self, batch: pl.DataFrame, watermarks: pl.Series | None = None, now: int | None = None) -> EngineOutput:
        """Run one batch in arrival order. `watermarks` (per record) overrides the default
        max-event-time watermark, e.g. the minimum over Kafka partitions. `now` (wall clock, µs)
        caps the watermark at now - lateness, so no record can move it ahead of the clock."""
        if batch.height == 0:
            return EngineOutput()
        ts = batch.get_column("ts")
        if watermarks is None:
            running = ts.cum_max()
            if self.max_ts is not None:
                running = running.clip(lower_bound=self.max_ts)
            wm = running - self.lateness
        else:
            wm = watermarks.cast(pl.Int64).cum_max()
        if now is not None:
            wm = wm.clip(upper_bound=now - self.lateness)
        wm = wm.clip(lower_bound=self.watermark)
        batch_max = ts.max()
        self.max_ts = batch_max if self.max_ts is None else max(self.max_ts, batch_max)
        wm_end = int(wm[-1])
        self.watermark = wm_end
        df = batch.with_columns(_wm=wm)
        out = EngineOutput()
        late_parts = []
        for r in self.runners:
            ro = r.process(df, wm_end)
            if ro.results is not None:
                out.results[r.rule.name] = ro.results
            if ro.closed_alerts is not None:
                out.closed_alerts[r.rule.name] = ro.closed_alerts
            if ro.late_lines is not None and len(ro.late_lines):
                late_parts.append(pl.DataFrame({"line": ro.late_lines, "rule": r.rule.name}))
        if late_parts:
            out.late = pl.concat(late_parts).group_by("line", maintain_order=True).agg(rules=pl.col("rule")).sort("line")
        return out

    def advance(self, watermark: int) -> EngineOutput:
        """Move the watermark to `watermark` (never back) without a record, closing and emitting
        the windows it closes; windows ending after it stay open. The run loop calls it on idle
        input with the wall clock minus the lateness, and with idle Kafka partitions' watermark."""
        out = EngineOutput()
        if watermark <= self.watermark:
            return out
        self.watermark = watermark
        for r in self.runners:
            res = r.advance(watermark)
            if res is not None:
                out.results[r.rule.name] = res
            fin = r.take_closed_alerts()
            if fin is not None:
                out.closed_alerts[r.rule.name] = fin
        return out

    def close_all(self) -> EngineOutput:
        """End of input (replay): close every open window, emit finals and free state. Records
        for windows closed here are late from now on, so a live source never calls this."""
        out = EngineOutput()
        newest = [e for r in self.runners if (e := r.open_window_end()) is not None]
        for r in self.runners:
            res = r.close_all()
            if res is not None:
                out.results[r.rule.name] = res
            fin = r.take_closed_alerts()
            if fin is not None:
                out.closed_alerts[r.rule.name] = fin
        if newest:
            self.watermark = max(self.watermark, max(newest))
        return out

    def open_window_end(self) -> int | None:
        """End of the newest window that holds state in any rule (None when none does)."""
        ends = [e for r in self.runners if (e := r.open_window_end()) is not None]
        return max(ends) if ends else None

    def open_state_rows(self) -> int:
        return sum(r.panes.height for r in self.runners if r.panes is not None)

    # ---- checkpoints ------------------------------------------------------------------------
    # Scalar fields saved as JSON, with their type (checked on restore). A new engine field is
    # saved by naming it here; a checkpoint without it restores the field's initial value.
    STATE_FIELDS: dict[str, type] = {"max_ts": int, "watermark": int}

    def checkpoint_state(self, full: bool) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
        """Header (JSON-able) and tables of a checkpoint: the whole state (full) or what changed
        since the previous call. Each call starts a new interval of change tracking."""
        header: dict[str, Any] = {
            "kind": "engine-snapshot" if full else "engine-delta",
            "fields": {f: getattr(self, f) for f in self.STATE_FIELDS},
            "runners": {},
        }
        if full:
            header["rules"] = self.ruleset.windows_dict()
        tables: dict[str, pl.DataFrame] = {}
        for r in self.runners:
            rows = r.changed_panes(full)
            header["runners"][r.rule.name] = {
                "closed_k": r.closed_k,
                "panes": r.panes is not None,
                "alerted": r.alerted is not None,
            }
            if rows is not None:
                tables[f"panes/{r.rule.name}"] = rows
            if r.alerted is not None:  # open alerted windows: few, saved whole in every record
                tables[f"alerted/{r.rule.name}"] = r.alerted
        return header, tables

    def restore_state(
        self,
        snapshot: tuple[dict[str, Any], dict[str, pl.DataFrame]],
        deltas: list[tuple[dict[str, Any], dict[str, pl.DataFrame]]] = (),
    ) -> None:  # type: ignore[assignment]
        head, _ = snapshot
        if head.get("kind") != "engine-snapshot":
            raise CheckpointError(f"expected an engine snapshot, found {head.get('kind')!r}")
        if head.get("rules") != orjson.loads(orjson.dumps(self.ruleset.windows_dict())):
            raise CheckpointError("checkpoint was written with different rules; remove the state dir to start over")
        parts: dict[str, list[pl.DataFrame]] = {r.rule.name: [] for r in self.runners}
        alerted: dict[str, pl.DataFrame] = {}
        last = head
        for h, tables in [snapshot, *deltas]:
            alerted = {n.removeprefix("alerted/"): df for n, df in tables.items() if n.startswith("alerted/")}
            if h.get("kind") not in ("engine-snapshot", "engine-delta"):
                raise CheckpointError(f"unexpected engine record {h.get('kind')!r}")
            for name, df in tables.items():
                if not name.startswith("panes/"):
                    continue  # alerted windows (above) or another component's table
                rule = name.removeprefix("panes/")
                if rule not in parts:
                    raise CheckpointError(f"checkpoint holds state for an unknown rule {rule!r}")
                want = self.by_name[rule].pane_schema()
                if df.schema != want:
                    raise CheckpointError(f"checkpoint panes of {rule!r} have columns {dict(df.schema)}, expected {dict(want)}")
                parts[rule].append(df)
            last = h
        for f in self.STATE_FIELDS:
            if f in last["fields"]:
                v, kind = last["fields"][f], self.STATE_FIELDS[f]
                if v is not None and not isinstance(v, kind) or isinstance(v, bool):
                    raise CheckpointError(f"checkpoint field {f} is {v!r}, expected {kind.__name__} or null")
                setattr(self, f, v)
        for r in self.runners:
            s = last["runners"][r.rule.name]
            r.load_panes(parts[r.rule.name], s["panes"], int(s["closed_k"]), replayed=bool(deltas))
            r.alerted = alerted.get(r.rule.name) if s.get("alerted") else None

    def snapshot(self) -> bytes:
        """The whole state as one self-describing blob (see lookout.checkpoint)."""
        return encode(*self.checkpoint_state(full=True))

    def delta(self) -> bytes:
        """What changed since the last snapshot()/delta(), as one blob."""
        return encode(*self.checkpoint_state(full=False))

    def restore(self, blob: bytes, deltas: list[bytes] = ()) -> None:  # type: ignore[assignment]
        self.restore_state(decode(blob), [decode(d) for d in deltas])

    def restore_checked(
        self,
        snapshot: tuple[dict[str, Any], dict[str, pl.DataFrame]],
        deltas: list[tuple[dict[str, Any], dict[str, pl.DataFrame]]],
    ) -> None:
        """restore_state, with any malformed content reported as a CheckpointError."""
        try:
            self.restore_state(snapshot, deltas)
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - a well-framed blob with content this version cannot use
            raise CheckpointError(f"checkpoint content is malformed: {type(e).__name__}: {e}") from None
