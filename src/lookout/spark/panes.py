"""The embedded engine's pane logic as Spark's stateful operator: one processor per key bucket.

A record becomes one row per rule it passes (4 for the default rules), hashed to a bucket by
(rule, group key); `applyInPandasWithState` hands each bucket's rows of a micro-batch to
`process`, which runs engine/core.py's RuleRunner on them: per-key panes of gcd(size, hop)
(one pane update per record and rule, where one state row per window was 20-30), alerts as
soon as they hold, finals when the watermark closes the window. State per bucket is the
runners' panes as Arrow IPC bytes and their closed window index: data, never code.

Lateness is the embedded engine's, not Spark's: a record is late for a rule when its oldest
window had closed at its arrival, by the watermark Spark had at the start of the micro-batch,
raised by the running maximum event time of the batch up to the record (arrow_parse.py), the
watermark `lookout replay` uses per record. Late records come out as rows of their own, to be
dead-lettered (one dead letter per record, with the rules it was late for, by the sink).
Spark's own late-row filter is kept out: the column that carries the watermark metadata into
the operator is NULL (Spark drops rows whose event time is at or below the watermark, which
is not the engine's rule: a record older than the watermark can still be on time for a rule
whose window is open).

Rejected lines pass through unchanged in state, formatted as dead letters here, so one query
both parses the input once and emits everything (an aggregation could not emit them at once).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from lookout.errors import StateError
from lookout.rules import RuleSet

OUTPUT_SCHEMA = "topic string, key string, value string, late boolean"


def state_schema(rs: RuleSet) -> str:
    """Per bucket: the rules' fingerprint, each rule's closed window index (JSON list), each
    rule's panes (Arrow IPC). (Array columns in this state break PySpark's schema round trip.)"""
    return "rules string, closed string, " + ", ".join(f"p{i} binary" for i in range(len(rs.rules)))


REJECTED = -1  # rule index of a rejected line's row
SUMMARY = -2  # rule index of a split's summary row (files mode: arrow_parse.py), one in every bucket
FLUSH = -3  # rule index of the end-of-input row (files mode), one in every bucket: close every window
NO_WATERMARK = -(1 << 62)


@lru_cache(maxsize=8)
def _rules(yaml_text: str) -> RuleSet:
    from lookout.rules import load_rules_text

    return load_rules_text(yaml_text, "spark rules")


def fingerprint(yaml_text: str) -> str:
    return hashlib.sha256(yaml_text.encode()).hexdigest()[:16]


class StateMismatch(StateError):
    """The checkpoint's state was written with other rules."""


def _next_close(r: Any) -> int | None:
    """End (µs) of the next window of this runner to close, None when it holds no pane."""
    if r.panes is None or r.panes.height == 0:
        return None
    w = r.w
    q = int(r.panes.get_column("q").min())
    first = -((w.size - w.pane - q * w.pane) // w.hop)
    return w.end(max(first, r.closed_k + 1))


class _Bucket:
    """One bucket's runners, restored lazily: a rule's panes are read (Arrow IPC) only when the
    batch has rows for it or one of its windows closes, and written back only if touched."""

    def __init__(self, rs: RuleSet, row: Any, fp: str) -> None:
        from lookout.engine.core import RuleRunner

        self.fp = fp
        self.runners = [RuleRunner(r) for r in rs.rules]
        n = len(self.runners)
        self.blobs: list[bytes] = [b""] * n
        self.next_end: list[int | None] = [None] * n
        self.loaded = [row is None] * n
        if row is None:
            return
        if row[0] != fp:
            raise StateMismatch("the checkpoint was written with other rules or buckets; use a new --checkpoint")
        for i, (closed_k, nxt) in enumerate(json.loads(row[1])):
            self.runners[i].closed_k = int(closed_k)
            self.next_end[i] = nxt
            self.blobs[i] = bytes(row[2 + i] or b"")

    def runner(self, i: int) -> Any:
        if not self.loaded[i]:
            import polars as pl

            if self.blobs[i]:
                self.runners[i].panes = pl.read_ipc(io.BytesIO(self.blobs[i]))
            self.loaded[i] = True
        return self.runners[i]

    def due(self, i: int, wm: int) -> bool:
        """Does a window of rule i close at this watermark?"""
        nxt = self.next_end[i] if not self.loaded[i] else _next_close(self.runners[i])
        return nxt is not None and nxt <= wm

    def save(self) -> tuple:
        closed = []
        for i, r in enumerate(self.runners):
            if self.loaded[i]:
                self.next_end[i] = _next_close(r)
                if r.panes is None or r.panes.height == 0:
                    self.blobs[i] = b""
                else:
                    buf = io.BytesIO()
                    r.panes.write_ipc(buf)
                    self.blobs[i] = buf.getvalue()
            closed.append([int(r.closed_k), self.next_end[i]])
        return (self.fp, json.dumps(closed), *self.blobs)

    def next_close(self) -> int | None:
        ends = [e for e in self.next_end if e is not None]
        return min(ends) if ends else None


def _late_letters(rs: RuleSet, recs: Any, dlq_topic: str, emit: Any, source_of: Any, raw_of: Any) -> None:
    """One `late` dead letter per carrier row (compile.rule_rows) whose record was late for some
    rule it passes: its oldest window of that rule had closed at the record's watermark `_wm`
    (RuleRunner.process's test, so the rule's own bucket leaves out exactly these rows)."""
    import polars as pl

    from lookout.engine.windows import WindowMath
    from lookout.output import dead_letter, iso_ms

    carriers = recs.filter(pl.col("raw").is_not_null() | pl.col("off").is_not_null())
    if carriers.height == 0:
        return
    flags = []
    for j, rule in enumerate(rs.rules):
        w = WindowMath(rule.window.size, rule.window.hop)
        flags.append(((pl.col("passes") & (1 << j)) != 0) & (w.first_end_expr(pl.col("ts")) <= pl.col("_wm")))
    late = carriers.with_columns(pl.concat_list(flags).alias("_late")).filter(pl.col("_late").list.any())
    for row in late.iter_rows(named=True):
        names = [rs.rules[j].name for j, f in enumerate(row["_late"]) if f]
        src, extra = source_of(row)
        letter = dead_letter(
            "late",
            f"arrived after its window closed in {', '.join(names)}",
            raw_of(row),
            src,
            None,
            **extra,
            rules=names,
            watermark=iso_ms(row["_wm"]),
        )
        emit(dlq_topic, None, letter.decode(), True)


def _with_before(df: Any) -> Any:
    """Column `_pre`: the maximum event time of the splits before a row's own in this micro-batch
    (files mode: a chunk parsed as several splits at once, each ending in a summary row), so with
    `cm` (its own split's running maximum) a record's watermark is replay's, over the whole input.
    Kafka rows have no split: NULL."""
    import polars as pl

    summ = df.filter(pl.col("r") == SUMMARY).select("part", "pmax").unique().sort("part")
    pre = summ.select("part", _pre=pl.col("pmax").cum_max().shift(1))
    return df.join(pre, on="part", how="left")


def make_processor(  # noqa: ANN201
    rules_yaml: str, dlq_topic: str, buckets: int, sources: dict[str, str] | None = None, stage: str | None = None
):
    """The applyInPandasWithState function for these rules and this number of buckets; files
    mode: `sources` (chunk file name → input path) and `stage` (where the chunks are staged)."""
    fp = fingerprint(f"{buckets}\n{rules_yaml}")

    def process(key: tuple, pdfs: Iterator[Any], state: Any) -> Iterator[Any]:
        import pandas as pd
        import polars as pl

        from lookout.output import dead_letter, format_results
        from lookout.records import SCHEMA
        from lookout.schema import VALUE_COLUMNS
        from lookout.spark.arrow_parse import CHUNK_NAME, PART_SHIFT, chunk_line

        rs = _rules(rules_yaml)
        bucket = _Bucket(rs, state.getOption, fp)
        wm_ms = state.getCurrentWatermarkMs()
        wm = wm_ms * 1000 if wm_ms is not None and wm_ms > 0 else NO_WATERMARK
        out: dict[str, list] = {"topic": [], "key": [], "value": [], "late": []}

        def emit(topic: str, key: str | None, value: str, late: bool = False) -> None:
            out["topic"].append(topic)
            out["key"].append(key)
            out["value"].append(value)
            out["late"].append(late)

        def source_of(row: dict) -> tuple[str | None, dict]:
            src = row["source"]
            if src is None and row["off"] is not None and sources:  # files: a record without its line
                src = sources.get(CHUNK_NAME.format(row["part"] >> PART_SHIFT))
            elif sources and src:
                src = sources.get(src.rsplit("/", 1)[-1], src)
            return src, ({} if row["partition"] is None else {"partition": row["partition"], "offset": row["offset"]})

        def raw_of(row: dict) -> bytes:
            if row["raw"] is not None or stage is None:
                return bytes(row["raw"])
            return chunk_line(stage, row["part"], row["off"])

        def results(rule_i: int, frame: pl.DataFrame | None) -> None:
            if frame is None or frame.height == 0:
                return
            rb = format_results(rs.rules[rule_i], frame)
            for k, line in zip(rb.keys, rb.lines, strict=True):
                emit(rs.rules[rule_i].name, k, line.decode())

        recs = None
        wm_close = wm  # windows close by Spark's watermark, or by the end-of-input row of this batch
        if not state.hasTimedOut:
            frames = [pl.from_pandas(p) for p in pdfs if len(p)]
            if frames:
                df = (
                    pl.concat(frames, how="vertical_relaxed")
                    .with_columns(
                        pl.col("r").cast(pl.Int32),
                        pl.col("rid").cast(pl.Int64),
                        pl.col("ts").cast(pl.Int64),
                        pl.col("cm").cast(pl.Int64),
                        *[pl.col(c).cast(SCHEMA[c]) for c in VALUE_COLUMNS],  # pandas made nullable ints floats
                        pl.col("partition").cast(pl.Int32),
                        pl.col("offset").cast(pl.Int64),
                        pl.col("off").cast(pl.Int64),
                        pl.col("passes").cast(pl.Int64),
                        pl.col("part").cast(pl.Int64),
                        pl.col("pmax").cast(pl.Int64),
                    )
                    .pipe(_with_before)
                    .sort("rid")
                )  # input order
                for row in df.filter(pl.col("r") == REJECTED).iter_rows(named=True):
                    src, extra = source_of(row)
                    emit(
                        dlq_topic, None, dead_letter(row["reason"], row["detail"], bytes(row["raw"]), src, None, **extra).decode()
                    )
                flush = df.filter(pl.col("r") == FLUSH).get_column("ts").max()
                if flush is not None:  # the end of the input: after this batch's records, close everything
                    wm_close = max(wm, int(flush) - rs.lateness)  # type: ignore[arg-type]
                recs = df.filter(pl.col("r") >= 0).with_columns(  # records (not rejected, summary, flush rows)
                    _wm=pl.max_horizontal(pl.lit(wm), pl.col("cm") - rs.lateness, pl.col("_pre") - rs.lateness),
                    line=pl.int_range(pl.len()),
                )
                _late_letters(rs, recs, dlq_topic, emit, source_of, raw_of)
        for i in range(len(rs.rules)):
            sel = recs.filter(pl.col("r") == i) if recs is not None else None
            if sel is None or sel.height == 0:
                if bucket.due(i, wm_close):
                    r = bucket.runner(i)
                    results(i, r._close(r.w.last_closed(wm_close)))  # noqa: SLF001 - the engine's own close step
                continue
            r = bucket.runner(i)
            results(i, r.process(sel, wm_close).results)  # its late rows: dead-lettered by their carrier
        state.update(bucket.save())  # also with no panes left: closed_k must survive (lateness)
        nxt = bucket.next_close()
        if nxt is not None:
            # Spark times a key out once the watermark is *past* the timestamp: one ms before the end
            state.setTimeoutTimestamp(max(nxt // 1000 - 1, wm_ms if wm_ms and wm_ms > 0 else 1, 1))
        yield pd.DataFrame(out)

    return process
