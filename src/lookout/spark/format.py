"""Result and dead-letter JSON made by lookout.output itself, inside the Spark plan.

Spark's `to_json` writes doubles with Java's Double.toString (`5.0E-4`, and on Java 17 now and
then a non-shortest digit string), where lookout writes `0.0005`; so the bytes are made by the
same functions `lookout replay` uses. The UDFs run on aggregated rows (results) and on rejected
lines only, never on every record.
"""

from __future__ import annotations

from functools import lru_cache

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lookout.rules import RuleSet
from lookout.spark.compile import KEY_FIELDS

MESSAGE = T.StructType([
    T.StructField("topic", T.StringType()),
    T.StructField("key", T.StringType()),
    T.StructField("value", T.StringType()),
])


@lru_cache(maxsize=8)
def _rules(yaml_text: str) -> RuleSet:
    from lookout.rules import load_rules_text

    return load_rules_text(yaml_text, "spark rules")


def result_message(rules_yaml: str):  # noqa: ANN201 - a Spark UDF
    """UDF (r, start, end, keys struct, value) → struct(topic, key, value) as format_results makes it."""

    def fmt(r: int, start: int, end: int, keys, value: float | None):  # noqa: ANN001, ANN202
        import polars as pl

        from lookout.output import format_results

        rule = _rules(rules_yaml).rules[r]
        data = {"_start": [start], "_end": [end]}
        schema: dict = {"_start": pl.Int64, "_end": pl.Int64}
        for f in rule.group_by:
            data[f] = [keys[f]]
            schema[f] = pl.Int64 if f == "status" else pl.String
        data["value"] = [value]
        schema["value"] = pl.Float64
        rb = format_results(rule, pl.DataFrame(data, schema=schema))
        return (rule.name, rb.keys[0], rb.lines[0].decode())

    return F.udf(fmt, MESSAGE, useArrow=False)


def result_column(rs: RuleSet) -> Column:
    udf = result_message(rs.to_yaml())
    return udf(F.col("r"), F.col("start"), F.col("end"), F.struct(*KEY_FIELDS), F.col("value"))


def dead_letter_message(topic: str, sources: dict[str, str] | None):  # noqa: ANN201
    """UDF (reason, detail, raw bytes, source, partition, offset) → struct(topic, key, value) as
    output.dead_letter makes it (from the raw bytes: invalid UTF-8 keeps its `raw_base64`)."""

    def fmt(reason: str, detail: str, raw: bytes, source: str | None, partition: int | None, offset: int | None):  # noqa: ANN202
        from lookout.output import dead_letter

        src = source
        if sources and source:
            src = sources.get(source.rsplit("/", 1)[-1], source)
        extra = {} if partition is None else {"partition": partition, "offset": offset}
        return (topic, None, dead_letter(reason, detail, bytes(raw), src, None, **extra).decode())

    return F.udf(fmt, MESSAGE, useArrow=False)
