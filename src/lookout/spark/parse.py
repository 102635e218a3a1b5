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

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lookout.records import INPUT_FIELDS, MAX_TS_US

# Written after the input (files mode) to push the watermark past every window, so the last
# windows close exactly as `lookout replay` closes them at end of input. Never a record: the
# input marks it (column `flush_ts`, set from where the row comes from, never from its text).
FLUSH_LINE = '{"lookout-flush": "end-of-input"}'
FLUSH_TS_US = MAX_TS_US - 1_000_000

_NUMBER = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$"
# from_json hands a number/bool/object in a string field over as its text: ask the raw line.
_NON_STRING_VALUE = r'"(?:host|country|method|server)"\s*:\s*[-0-9tf\[{]'
# from_json reads the first object of `{..} {..}` or `{..} junk`; the reference calls it invalid.
_WELL_FORMED = r"^\s*\{.*\}\s*$"
_TWO_OBJECTS = r"\}\s*\{"
_BLANK = r"^[ \t\r\n\x0b\x0c]*$"

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


def _reference(line: bytes | None) -> tuple | None:
    """records.parse_line on one doubtful line (its bytes): the typed record, or (.., reason, detail)."""
    if line is None:
        return None
    from lookout.records import Rejected, parse_line

    try:
        r = parse_line(bytes(line))
    except Rejected as e:
        return (None,) * 8 + (e.reason, e.detail)
    return (r["ts"], r["status"], r["request_time"], r["client_ip"], r["host"], r["country"], r["method"],
            r["server"], None, None)


_reference_udf = F.udf(_reference, RECORD_SCHEMA, useArrow=False)


def _unknown_to_null(c: Column) -> Column:
    return F.when(c.isin("", "-"), F.lit(None)).otherwise(c)


def parse(lines: DataFrame) -> DataFrame:
    """`value` (one raw line per row) and `flush_ts` (null, or the event time of a row that only
    moves the watermark: end of input, a heartbeat), plus any other columns, kept →
    RECORD_FIELDS + `value` + `flush`. Blank lines are dropped (not records, as in lookout
    replay). A row is valid when `reason` is null; `flush` marks the watermark-only rows."""
    v = F.col("value")
    flush = F.col("flush_ts").isNotNull()
    lines = lines.filter(flush | ~v.rlike(_BLANK))
    # Spark strings hold the line's bytes as read (the text source and a binary→string cast do
    # not decode): invalid UTF-8 is still there to be seen, and goes to the reference parser.
    utf8 = F.is_valid_utf8(v)
    j = F.from_json(v, _DECODE)
    df = lines.withColumn("_j", j)
    ts_s, st_s, rt_s = F.col("_j.`@timestamp`"), F.col("_j.status"), F.col("_j.request_time")
    ts_us = F.bround(F.when(ts_s.rlike(_NUMBER), F.expr("try_cast(_j.`@timestamp` AS DOUBLE)")) * F.lit(1e6), 0)
    status = F.when(st_s.rlike(r"^\d{1,3}$"), st_s.cast("int"))
    rt_unknown = rt_s.isNull() | rt_s.isin("", "-")
    rt = F.when(rt_s.rlike(_NUMBER), F.expr("try_cast(_j.request_time AS DOUBLE)"))
    rt_ok = rt_unknown | (rt.isNotNull() & ~F.isnan(rt) & (rt < F.lit(float("inf"))) & (rt >= 0))
    host = F.col("_j.host")
    ok = (
        utf8 & v.rlike(_WELL_FORMED) & ~v.rlike(_TWO_OBJECTS) & ~v.rlike(_NON_STRING_VALUE)
        & ts_us.isNotNull() & (ts_us >= 0) & (ts_us < F.lit(float(MAX_TS_US)))
        & status.between(100, 599)
        & F.col("_j.client_ip").rlike(_IPV4)
        & (F.length(host) > 0)
        & rt_ok
    )
    ok = F.coalesce(ok, F.lit(False))
    fast = F.struct(
        ts_us.cast("long").alias("ts"), status.alias("status"),
        F.when(rt_unknown, F.lit(None).cast("double")).otherwise(rt).alias("request_time"),
        F.col("_j.client_ip").alias("client_ip"), host.alias("host"),
        _unknown_to_null(F.col("_j.country")).alias("country"),
        _unknown_to_null(F.col("_j.method")).alias("method"),
        _unknown_to_null(F.col("_j.server")).alias("server"),
        F.lit(None).cast("string").alias("reason"), F.lit(None).cast("string").alias("detail"),
    )
    df = df.withColumn("_ok", ok).withColumn("flush", flush)
    slow = _reference_udf(F.when(~F.col("_ok") & ~F.col("flush"), v.cast("binary")))
    flush_rec = F.struct(F.col("flush_ts").alias("ts"), *[F.lit(None).cast(f.dataType).alias(f.name)
                                                           for f in RECORD_SCHEMA.fields[1:]])
    df = df.withColumn("_r", F.when(F.col("flush"), flush_rec).when(F.col("_ok"), fast).otherwise(slow))
    keep = [c for c in lines.columns if c != "flush_ts"]
    return df.select(*keep, "flush", *[F.col("_r")[f].alias(f) for f in RECORD_FIELDS])
