"""The record contract on Spark through lookout's own parser, a batch of lines at a time (issue 13).

`mapInArrow` hands each Arrow batch of raw lines to `records.parse_lines`, the parser `lookout
replay` runs, so reasons, details and values are the reference's by construction (no second
implementation in Spark SQL to keep in step), invalid UTF-8 included: lines travel as bytes.
It is also faster than Spark SQL's `from_json` plus regular expressions (polars, vectorised).

Per split (per partition outside files mode) it also keeps the running maximum event time of
the valid records (`cm`), in input order: with the watermark of the batches before, that is the per-record watermark the embedded
engine judges lateness by (engine/core.py), so a record late for `lookout replay` is late here.
Files mode splits a staged chunk into several partitions parsed at once (one per core); each
then ends with a *summary* row (`pmax`: its maximum valid event time, `part`: where its split
starts in the file), from which the stateful step raises a record's watermark by every split
before its own (panes.py): the running maximum over the whole input, as replay keeps it.

The future guard (lookout.clock, issue 18) runs here too, as in replay's pipeline: the wall clock
is read as each batch is parsed, and a record stamped more than `max_future` ahead of it becomes
a rejected line (`future-timestamp`). Here and not in a later filter: it must neither reach the
watermark nor raise the running maximum `cm` that later records' lateness is judged by.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa

from lookout.schema import BY_COLUMN, VALUE_COLUMNS

# Input: value (binary), source, partition, offset, flush_ts (non-null: a row that only moves
# the watermark: end of input, a heartbeat). Output: one row per record, rejected line and
# flush row (blank lines are no records, as in replay). Record columns: lookout.schema's.
_SPARK_ARROW = {"int": pa.int32(), "long": pa.int64(), "double": pa.float64(), "string": pa.string()}
PARSED_SCHEMA = (
    "rid long, ts long, "
    + "".join(f"{c} {BY_COLUMN[c].spark}, " for c in VALUE_COLUMNS)
    + "reason string, detail string, raw binary, source string, partition int, offset long, flush boolean, cm long, "
    + "part long, pmax long, off long"
)
_ARROW = pa.schema(
    [
        ("rid", pa.int64()),
        ("ts", pa.int64()),
        *[(c, _SPARK_ARROW[BY_COLUMN[c].spark]) for c in VALUE_COLUMNS],
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw", pa.binary()),
        ("source", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("flush", pa.bool_()),
        ("cm", pa.int64()),
        ("part", pa.int64()),  # files: the split's start in its chunk file (input order of splits)
        ("pmax", pa.int64()),  # non-null: a summary row, the split's maximum valid event time
        ("off", pa.int64()),  # files: the record's byte offset in its staged chunk file (raw, source: NULL)
    ]
)

CHUNK_NAME = "{:06d}.ndjson"  # files mode: staged chunk n's file name; `part` >> PART_SHIFT is n
PART_SHIFT = 40


def chunk_line(stage: str, part: int, off: int) -> bytes:
    """Files mode: the raw line at byte `off` of the staged chunk of split `part` (a late record's
    dead letter: on-time records cross the shuffle without their line)."""
    with open(f"{stage}/{CHUNK_NAME.format(part >> PART_SHIFT)}", "rb") as f:
        f.seek(off)
        return f.readline().rstrip(b"\n")


def _first_line_offset(uri: str, start: int) -> int | None:
    """Where the first line of the split starting at byte `start` of a staged chunk begins, as
    Spark's line reader (Hadoop's LineRecordReader) finds it: a split other than the first skips
    through the first newline at or after its start (the split before reads that line).
    None when the file is not local (the rows then carry their raw line)."""
    from urllib.parse import unquote, urlparse

    if start == 0:
        return 0
    u = urlparse(uri)
    if u.scheme not in ("", "file"):
        return None
    try:
        with open(unquote(u.path), "rb") as f:
            f.seek(start)
            pos = start
            while block := f.read(1 << 16):
                nl = block.find(b"\n")
                if nl >= 0:
                    return pos + nl + 1
                pos += len(block)
    except OSError:
        return None
    return None


ArrowFn = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


def parser(max_future: int | None) -> ArrowFn:
    """The mapInArrow function, with the future guard at `max_future` µs (None: no guard)."""

    def parse(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return parse_batches(batches, max_future)

    return parse


def parse_batches(batches: Iterator[pa.RecordBatch], max_future: int | None = None) -> Iterator[pa.RecordBatch]:
    """Raw lines → PARSED_SCHEMA rows (see the module docstring)."""
    import polars as pl
    from pyspark import TaskContext

    from lookout.clock import FUTURE_REASON, FutureGuard, now_us
    from lookout.records import parse_chunk, parse_lines

    guard = FutureGuard(max_future) if max_future is not None else None

    ctx = TaskContext.get()
    base = (ctx.partitionId() if ctx is not None else 0) << 40  # rid: unique within a micro-batch
    seq = 0
    running: dict[int | None, int] = {}  # split (None: not files mode) -> max valid event time so far
    next_off: dict[int, int | None] = {}  # files: split -> byte offset of its next line in the chunk file
    for batch in batches:
        n = batch.num_rows
        if n == 0:
            continue
        inp = pl.from_arrow(batch).with_columns(i=pl.int_range(n, dtype=pl.Int64))  # type: ignore[union-attr]
        inp = inp.with_columns(off=_offsets(inp, next_off))
        values = batch.column("value").to_pylist()
        flushing = inp.get_column("flush_ts").is_not_null().to_list()
        lines = [b"" if (v is None or f) else v for v, f in zip(values, flushing, strict=True)]
        # one chunk (parse_chunk, the fast path) unless a line holds a newline (a Kafka message may)
        parsed = parse_lines(lines) if any(b"\n" in x for x in lines) else parse_chunk(b"\n".join(lines) + b"\n")
        records, rej_i, rej_reason, rej_detail = parsed.records, [], [], []
        for r in parsed.rejected:
            rej_i.append(r.index)
            rej_reason.append(r.reason)
            rej_detail.append(r.detail)
        if guard is not None:
            records, future = guard.split(records, now_us())  # the clock when the batch is parsed
            if future is not None:
                ahead = future.to_list()
                rej_i += ahead
                rej_reason += [FUTURE_REASON] * len(ahead)
                rej_detail += [guard.detail] * len(ahead)
        recs = records.rename({"line": "i"}).with_columns(
            pl.col("i").cast(pl.Int64), pl.col("status").cast(pl.Int32), _ok=pl.lit(True)
        )
        rej = pl.DataFrame(
            {"i": rej_i, "reason": rej_reason, "detail": rej_detail},
            schema={"i": pl.Int64, "reason": pl.String, "detail": pl.String},
        )
        df = (
            inp.join(recs, on="i", how="left")
            .join(rej, on="i", how="left")
            .filter(pl.col("_ok").is_not_null() | pl.col("reason").is_not_null() | pl.col("flush_ts").is_not_null())
        )
        # per split: a task may read several splits (Spark packs small ones together, largest
        # first, so not in input order): each keeps its own running maximum and summary row
        df = df.sort("i").with_columns(_carry=pl.col("part").replace_strict(running, default=None, return_dtype=pl.Int64))
        cm = pl.max_horizontal(
            pl.when(pl.col("_ok").is_not_null()).then(pl.col("ts")).cum_max().forward_fill().over("part"), pl.col("_carry")
        )
        df = df.with_columns(
            rid=pl.lit(base + seq) + pl.col("i"),
            ts=pl.coalesce("flush_ts", "ts"),
            flush=pl.col("flush_ts").is_not_null(),
            cm=cm,
        )
        seq += n
        for part, top in df.group_by("part").agg(pl.col("cm").max()).iter_rows():
            if top is not None:
                running[part] = top
        out = df.select(
            "rid",
            "ts",
            *VALUE_COLUMNS,
            "reason",
            "detail",
            # a valid record with its offset leaves its line and source behind (rebuilt if late)
            pl.when(pl.col("reason").is_not_null() | pl.col("off").is_null()).then(pl.col("value")).alias("raw"),
            pl.when(pl.col("reason").is_not_null() | pl.col("off").is_null()).then(pl.col("source")).alias("source"),
            pl.col("partition").cast(pl.Int32),
            pl.col("offset").cast(pl.Int64),
            "flush",
            pl.col("cm").cast(pl.Int64),
            pl.col("part").cast(pl.Int64),
            pmax=pl.lit(None, dtype=pl.Int64),
            off=pl.when(pl.col("reason").is_null()).then(pl.col("off")),
        )
        yield from out.to_arrow(compat_level=pl.CompatLevel.oldest()).cast(_ARROW).to_batches()
    for k, (part, top) in enumerate(sorted((p, t) for p, t in running.items() if p is not None)):
        yield _summary(base + seq + k, part, top)


def _offsets(inp, next_off: dict[int, int | None]):  # noqa: ANN001, ANN202
    """Files mode: each row's byte offset in its staged chunk file (a line is its bytes and a
    newline there: app._stage_inputs), from where its split's first line begins and the lengths
    of the lines before it; `next_off` carries each split on from batch to batch (a split's
    lines come in order). NULL outside files mode or when the file cannot be read here."""
    import polars as pl

    if inp.get_column("part").null_count() == inp.height:
        return pl.lit(None, dtype=pl.Int64)
    length = pl.col("value").bin.size().fill_null(0).cast(pl.Int64) + 1
    per = inp.group_by("part", maintain_order=True).agg(pl.col("source").first(), length.sum().alias("_n"))
    base: dict[int, int | None] = {}
    for part, uri, total in per.iter_rows():
        if part is None:
            continue
        if part not in next_off:
            next_off[part] = _first_line_offset(uri, part & ((1 << PART_SHIFT) - 1))
        b = next_off[part]
        base[part] = b
        next_off[part] = None if b is None else b + total
    start = pl.col("part").replace_strict(base, default=None, return_dtype=pl.Int64)
    return (start + length.cum_sum().over("part") - length).alias("off")


def _summary(rid: int, part: int, pmax: int) -> pa.RecordBatch:
    """The split's summary row (see the module docstring); its `ts` is its own maximum, so the
    watermark, the maximum over every row, is what the split's records made it."""
    row = {f.name: [None] for f in _ARROW}
    row.update(rid=[rid], ts=[pmax], flush=[False], part=[part], pmax=[pmax])
    return pa.RecordBatch.from_pydict(row, schema=_ARROW)
