"""The record contract (lookout.records) as a Spark plan: raw lines in, typed records or rejections out.

Same design as records.parse_chunk: a vectorised path in Spark SQL vouches for the common,
well-formed rows; every row it cannot vouch for goes to the reference parser
(`records.parse_line`) in a Python UDF, so reasons and details are the reference's own.
The UDF gets NULL for vouched rows (Spark evaluates a UDF on every row of its operator, so
routing by argument keeps the Python cost proportional to the doubtful rows).

Timestamps are parsed here, not with the seed's `F.from_unixtime('@timestamp')`: Spark 4's
ANSI casts refuse "1659509511.865323" as BIGINT, and the contract wants microseconds anyway.
"""

from __future__ import annotations

import re

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lookout.records import INPUT_FIELDS, MAX_REQUEST_TIME, MAX_TS_US

# Written after the input (files mode) to push the watermark past every window, so the last
# windows close exactly as `lookout replay` closes them at end of input. Never a record.
FLUSH_TS_US = MAX_TS_US - 1_000_000
FLUSH_LINE = f'{{"@timestamp": {FLUSH_TS_US // 1_000_000}, "lookout-flush": "end-of-input"}}'

_NUMBER = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$"
# from_json hands a number/bool/object in a string field over as its text: ask the raw line.
_NON_STRING_VALUE = r'"(?:host|country|method|server)"\s*:\s*[-0-9tf\[{]'
# from_json reads the first object of `{..} {..}` or `{..} junk`; the reference calls it invalid.
_WELL_FORMED = r"^\s*\{.*\}\s*$"
_TWO_OBJECTS = r"\}\s*\{"
_BLANK = r"^[ \t\r\n\x0b\x0c]*$"
# Keys: a `\u` escape may spell a field's name (or hide a lone surrogate): ask the reference.
# A field named twice: from_json and parse_line must not pick different ones (parse_line refuses
# it, `duplicate-key`); a line whose literal field keys are no more than the fields found has none.
_FIELD_KEY = '"(?:' + "|".join(re.escape(f) for f in INPUT_FIELDS) + ')"'

_DECODE = T.StructType([T.StructField(f, T.StringType()) for f in INPUT_FIELDS])

RECORD_SCHEMA = T.StructType([
    T.StructField("ts", T.LongType()),
    T.StructField("status", T.IntegerType()),
    T.StructField("request_time", T.DoubleType()),
    T.StructField("client_ip", T.StringType()),
    T.StructField("host", T.StringType()),
    T.StructField("country", T.StringType()),
    T.StructField("method", T.StringType()),
    T.StructField("server", T.StringType()),
    T.StructField("reason", T.StringType()),
    T.StructField("detail", T.StringType()),
])
RECORD_FIELDS = [f.name for f in RECORD_SCHEMA.fields]


def _reference(line: str | None) -> tuple | None:
    """records.parse_line on one doubtful line: the typed record, or (.., reason, detail)."""
    if line is None:
        return None
    from lookout.records import Rejected, parse_line

    try:
        r = parse_line(line.encode("utf-8"))
    except Rejected as e:
        return (None,) * 8 + (e.reason, e.detail)
    return (r["ts"], r["status"], r["request_time"], r["client_ip"], r["host"], r["country"], r["method"],
            r["server"], None, None)


_reference_udf = F.udf(_reference, RECORD_SCHEMA, useArrow=False)


def _unknown_to_null(c: Column) -> Column:
    return F.when(c.isin("", "-"), F.lit(None)).otherwise(c)


def parse(lines: DataFrame) -> DataFrame:
    """`value` (one raw line per row, plus any other columns, kept) → RECORD_FIELDS + `value`
    + `flush`. Blank lines are dropped (not records, as in lookout replay). A row is valid when
    `reason` is null; `flush` marks the end-of-input line."""
    v = F.col("value")
    lines = lines.filter(~v.rlike(_BLANK))
    j = F.from_json(v, _DECODE)
    df = lines.withColumn("_j", j)
    ts_s, st_s, rt_s = F.col("_j.`@timestamp`"), F.col("_j.status"), F.col("_j.request_time")
    ts_us = F.bround(F.when(ts_s.rlike(_NUMBER), F.expr("try_cast(_j.`@timestamp` AS DOUBLE)")) * F.lit(1e6), 0)
    status = F.when(st_s.rlike(r"^\d{1,3}$"), st_s.cast("int"))
    rt_unknown = rt_s.isNull() | rt_s.isin("", "-")
    rt = F.when(rt_s.rlike(_NUMBER), F.expr("try_cast(_j.request_time AS DOUBLE)"))
    rt_ok = rt_unknown | (rt.isNotNull() & ~F.isnan(rt) & (rt >= 0) & (rt <= F.lit(MAX_REQUEST_TIME)))
    host = F.col("_j.host")
    found = sum((F.col(f"_j.`{f}`").isNotNull().cast("int") for f in INPUT_FIELDS), F.lit(0))
    ok = (
        v.rlike(_WELL_FORMED) & ~v.rlike(_TWO_OBJECTS) & ~v.rlike(_NON_STRING_VALUE)
        & ~v.contains("\\u") & (F.regexp_count(v, F.lit(_FIELD_KEY)) == found)
        & ts_us.isNotNull() & (ts_us >= 0) & (ts_us < F.lit(float(MAX_TS_US)))
        & status.between(100, 599)
        & F.col("_j.client_ip").rlike(_IPV4)
        & (F.length(host) > 0)
        & rt_ok
    )
    ok = F.coalesce(ok, F.lit(False))
    flush = v == F.lit(FLUSH_LINE)
    fast = F.struct(
        ts_us.cast("long").alias("ts"), status.alias("status"),
        F.when(rt_unknown, F.lit(None).cast("double")).when(rt == 0, F.lit(0.0)).otherwise(rt).alias("request_time"),
        F.col("_j.client_ip").alias("client_ip"), host.alias("host"),
        _unknown_to_null(F.col("_j.country")).alias("country"),
        _unknown_to_null(F.col("_j.method")).alias("method"),
        _unknown_to_null(F.col("_j.server")).alias("server"),
        F.lit(None).cast("string").alias("reason"), F.lit(None).cast("string").alias("detail"),
    )
    df = df.withColumn("_ok", ok).withColumn("flush", flush)
    slow = _reference_udf(F.when(~F.col("_ok") & ~F.col("flush"), v))
    flush_rec = F.struct(F.lit(FLUSH_TS_US).alias("ts"), *[F.lit(None).cast(f.dataType).alias(f.name)
                                                           for f in RECORD_SCHEMA.fields[1:]])
    df = df.withColumn("_r", F.when(F.col("flush"), flush_rec).when(F.col("_ok"), fast).otherwise(slow))
    keep = [c for c in lines.columns]
    return df.select(*keep, "flush", *[F.col("_r")[f].alias(f) for f in RECORD_FIELDS])


def reject_future(parsed: DataFrame, max_future_us: int) -> DataFrame:
    """lookout.clock's future guard in the plan, before any watermark sees the rows: a valid
    record stamped more than `max_future_us` ahead of the wall clock (the micro-batch's
    current_timestamp) gets reason `future-timestamp`, so it is dead-lettered like the other
    rejections and never reaches withWatermark's max event time."""
    from lookout.clock import FUTURE_REASON, FutureGuard

    ahead = (F.col("reason").isNull() & ~F.col("flush")
             & (F.col("ts") > F.unix_micros(F.current_timestamp()) + F.lit(max_future_us)))
    cols = parsed.columns
    return (parsed.withColumn("_future", F.coalesce(ahead, F.lit(False)))
            .withColumn("reason", F.when(F.col("_future"), F.lit(FUTURE_REASON)).otherwise(F.col("reason")))
            .withColumn("detail", F.when(F.col("_future"), F.lit(FutureGuard(max_future_us).detail)).otherwise(F.col("detail")))
            .select(*cols))

