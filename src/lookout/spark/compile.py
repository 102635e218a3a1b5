"""A RuleSet as ONE Spark streaming plan: raw lines in, every result and dead letter out.

    lines ─ mapInArrow(parse_batches) ─ [filters on records] ─ withWatermark ─ one row per
    (record, rule it passes), bucketed by (rule, key) ─ applyInPandasWithState(panes.process)

1. Parse (arrow_parse.py): lookout's own parser on Arrow batches of raw bytes.
2. Watermark: `withWatermark` on the records' event time (max event time − lateness, as in the
   embedded engine). Rows that only move the watermark (`flush`: end of input, heartbeats)
   pass it and go no further.
3. Each valid record becomes one row per rule whose filter it passes (a rejected line: one row
   of its own), hashed to one of `spark.lookout.buckets` buckets by (rule, group key).
4. State (panes.py): per bucket, the embedded engine's RuleRunner: per-key panes of
   gcd(size, hop), alerts when they hold, finals when the watermark closes the window, late
   records reported one by one.

Values, thresholds and lateness are computed by the embedded engine's own code, so results are
identical to `lookout replay`, not merely close.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lookout.errors import ConfigError
from lookout.rules import GROUPABLE_FIELDS, Rule, RuleSet
from lookout.schema import BY_NAME, VALUE_COLUMNS

KEY_FIELDS: tuple[str, ...] = GROUPABLE_FIELDS
WATERMARK_DELAY_KEY = "spark.watermarkDelayMs"  # Spark's EventTimeWatermark.delayKey
# State buckets, the stateful stage's unit of parallelism and of state: Spark conf
# `spark.lookout.buckets` (default 8), fixed for a checkpoint (checked: panes.StateMismatch).
BUCKETS_CONF = "spark.lookout.buckets"
DEFAULT_BUCKETS = 8


class UnsupportedRule(ConfigError):
    """A rule the Spark engine cannot run with results identical to the embedded engine."""


def check_rules(rs: RuleSet) -> None:
    for r in rs.rules:
        if r.effective_emit == "update":
            raise UnsupportedRule(f"rule {r.name}: emit: update is not supported by lookout spark (use final or alert)")
        if r.effective_emit == "alert" and r.agg.func != "count":
            raise UnsupportedRule(
                f"rule {r.name}: emit: alert on {r.agg.output_name} is not supported by lookout spark (its value "
                f"depends on arrival order within a window, which Spark does not keep); use emit: final"
            )
    if rs.lateness % 1000:
        raise UnsupportedRule("lateness must be whole milliseconds on Spark (its watermark has millisecond precision)")


def _filter(rule: Rule) -> Column:
    cond = F.lit(True)
    for fld, values in rule.filter.conditions:
        col = F.col(fld)
        if BY_NAME[fld].ranged:
            part = F.lit(False)
            for lo, hi in values:
                part = part | col.between(F.lit(lo), F.lit(hi))
        else:
            part = col.isin(list(values))
        cond = cond & F.coalesce(part, F.lit(False))
    for k in rule.group_by:
        cond = cond & F.col(k).isNotNull()
    return cond


def parse_lines(lines: DataFrame, max_future: int | None = None) -> DataFrame:
    """`value` (string or binary; its bytes), `source`, `partition`, `offset`, `flush_ts` →
    arrow_parse.PARSED_SCHEMA rows; records more than `max_future` µs ahead of the wall clock
    rejected (`future-timestamp`) by the parser itself, before any watermark or running maximum."""
    from lookout.spark.arrow_parse import PARSED_SCHEMA, parser

    return lines.select(
        F.col("value").cast("binary").alias("value"),
        F.col("source").cast("string").alias("source"),
        F.col("partition").cast("int").alias("partition"),
        F.col("offset").cast("long").alias("offset"),
        F.col("flush_ts").cast("long").alias("flush_ts"),
        (F.col("part") if "part" in lines.columns else F.lit(None)).cast("long").alias("part"),
    ).mapInArrow(parser(max_future), PARSED_SCHEMA)


def with_watermark(records: DataFrame, rs: RuleSet) -> DataFrame:
    """The event-time watermark: max event time − lateness (Spark's, per micro-batch)."""
    return records.withColumn("_ev", F.timestamp_micros("ts")).withWatermark("_ev", f"{rs.lateness // 1000} milliseconds")


def _bucket(rs: RuleSet, buckets: int) -> Column:
    """The buckets of a row (an array): its (rule, key)'s, every bucket for a summary row."""
    from lookout.spark.panes import FLUSH, SUMMARY

    b = F.pmod(F.col("rid"), F.lit(buckets))  # rejected lines: spread
    for i, r in enumerate(rs.rules):
        b = F.when(F.col("r") == i, F.pmod(F.xxhash64(F.lit(i), *[F.col(k) for k in r.group_by]), F.lit(buckets))).otherwise(b)
    every = F.sequence(F.lit(0), F.lit(buckets - 1))
    return F.when(F.col("r").isin(SUMMARY, FLUSH), every).otherwise(F.array(b.cast("int")))


def _spark_hash_int(x: int) -> int:
    """Spark's `hash()` of an int column: Murmur3_x86_32.hashInt(x, seed 42), as a signed int.
    Computed here rather than asked of Spark: a job on a fresh session cost ~5 s of start-up."""
    m = 0xFFFFFFFF

    def rotl(v: int, r: int) -> int:
        return ((v << r) | (v >> (32 - r))) & m

    k1 = rotl((x & m) * 0xCC9E2D51 & m, 15) * 0x1B873593 & m
    h1 = rotl(42 ^ k1, 13)
    h1 = (h1 * 5 + 0xE6546B64) & m
    h1 ^= 4
    h1 ^= h1 >> 16
    h1 = h1 * 0x85EBCA6B & m
    h1 ^= h1 >> 13
    h1 = h1 * 0xC2B2AE35 & m
    h1 ^= h1 >> 16
    return h1 - (1 << 32) if h1 >= 1 << 31 else h1


def balanced_labels(buckets: int, partitions: int) -> list[int]:
    """One group label per bucket such that Spark's shuffle (pmod(hash(label), partitions), the
    partitioning of the stateful operator's input) puts the same number of buckets in each state
    partition. Labels 0..buckets-1 hash unevenly: 8 buckets on 4 partitions went 1/3/0/4, so
    one core did half the work while a partition stood empty."""
    free: dict[int, list[int]] = {}
    for x in range(64 * max(buckets, partitions)):
        free.setdefault(_spark_hash_int(x) % partitions, []).append(x)
    return [free[i % partitions].pop(0) for i in range(buckets)]


RECORD_FIELDS = VALUE_COLUMNS


def _read_by(rule: Rule) -> set[str]:
    """The record fields a rule's runner reads: its keys, its filter's fields, its value."""
    return {*rule.group_by, *(f for f, _ in rule.filter.conditions), *([rule.agg.field] if rule.agg.field else [])}


def _only_where_read(rs: RuleSet, field: str) -> Column:
    """`field` on the rows of the rules that read it, NULL on the others: narrower rows to
    shuffle and hand to Python (a rejected line's row needs none)."""
    users = [i for i, r in enumerate(rs.rules) if field in _read_by(r)]
    return (
        F.when(F.col("r").isin(users), F.col(field)).alias(field)
        if users
        else F.lit(None).cast(BY_NAME[field].spark).alias(field)
    )


def rule_rows(
    stamped: DataFrame, rs: RuleSet, buckets: int, labels: list[int] | None = None, close_in_batch: bool = False
) -> DataFrame:
    """One row per (valid record, rule whose filter it passes), one per rejected line, one per
    bucket for a split's summary row (arrow_parse.py); `r` the rule's index (panes.REJECTED for a
    rejected line, panes.SUMMARY for a summary), `b` its bucket. Flush rows end here,
    after the watermark saw them (a filter on the exploded rule index: the optimizer cannot push
    it below the watermark, which would then never see them).

    Only one row of a record, its *carrier* (the row of the first rule it passes), carries the
    raw line and where it came from, with `passes` (bit i: rule i): lateness is decided from
    event time and watermark alone, so the carrier's bucket can dead-letter a late record with
    every rule it was late for, and the raw bytes cross the shuffle once, not once per rule.
    In files mode a valid record carries the byte offset of its line in its staged chunk (`off`)
    instead of the line and its source: only a late one needs them, read back in panes.py."""
    from lookout.spark.panes import FLUSH, REJECTED, SUMMARY

    summary = F.col("pmax").isNotNull()
    valid = ~F.col("flush") & F.col("reason").isNull() & ~summary
    which = [F.when(valid & _filter(r), F.lit(i)) for i, r in enumerate(rs.rules)]
    which.append(F.when(~F.col("flush") & F.col("reason").isNotNull(), F.lit(REJECTED)))
    which.append(F.when(summary, F.lit(SUMMARY)))
    if close_in_batch:  # files: the end of input closes every window in its own batch (no extra batch)
        which.append(F.when(F.col("flush"), F.lit(FLUSH)))
    rows = (
        stamped.withColumn("_rs", F.filter(F.array(*which), lambda x: x.isNotNull()))
        .withColumn(
            "passes",
            F.when(valid, F.aggregate("_rs", F.lit(0).cast("long"), lambda acc, x: acc + F.pow(F.lit(2), x).cast("long"))),
        )  # exact: 2^k
        # explode_outer, then the filter: an explode lets Spark infer `size(_rs) > 0` and push
        # it below the watermark, which would then never see the flush rows
        .withColumn("r", F.explode_outer("_rs"))
        .filter(F.col("r").isNotNull())
        .withColumn("_b", F.explode_outer(_bucket(rs, buckets)))
    )
    carrier = F.col("r") == F.array_min("_rs")
    # The watermark stays defined for the stateful operator (its column keeps the metadata) but
    # is NULL, so Spark's own late-row filter keeps every row: lateness is judged in panes.py.
    delay = rs.lateness // 1000
    b = F.col("_b") if labels is None else F.array(*[F.lit(x) for x in labels])[F.col("_b")]
    return rows.select(
        "r",
        b.alias("b"),
        "rid",
        "ts",
        "cm",
        *[_only_where_read(rs, f) for f in RECORD_FIELDS],
        "passes",
        "reason",
        "detail",
        *[F.when(carrier, F.col(c)).alias(c) for c in ("raw", "source", "partition", "offset", "off")],
        "part",
        "pmax",
        F.lit(None).cast("timestamp").alias("_ev", metadata={WATERMARK_DELAY_KEY: delay}),
    )


def compile_plan(
    lines: DataFrame,
    rs: RuleSet,
    dlq_topic: str,
    sources: dict[str, str] | None = None,
    fresh: bool = False,
    stage: str | None = None,
) -> DataFrame:
    """Streaming lines → panes.OUTPUT_SCHEMA rows (results, dead letters, late records). `fresh`:
    the checkpoint is new (files mode), so buckets get balanced labels (a checkpoint keeps its
    shuffle partitions, and labels from another count would address other state rows)."""
    from pyspark.sql.streaming.state import GroupStateTimeout

    from lookout.spark.panes import OUTPUT_SCHEMA, make_processor, state_schema

    check_rules(rs)
    records = parse_lines(lines, rs.max_future)  # the future guard: before the watermark sees the row
    buckets = int(lines.sparkSession.conf.get(BUCKETS_CONF, str(DEFAULT_BUCKETS)))
    spark = lines.sparkSession
    labels = balanced_labels(buckets, int(spark.conf.get("spark.sql.shuffle.partitions"))) if fresh else None
    rows = rule_rows(with_watermark(records, rs), rs, buckets, labels, close_in_batch=fresh)
    return rows.groupBy("b").applyInPandasWithState(
        make_processor(rs.to_yaml(), dlq_topic, buckets, sources, stage),
        OUTPUT_SCHEMA,
        state_schema(rs),
        "append",
        GroupStateTimeout.EventTimeTimeout,
    )
