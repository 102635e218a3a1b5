"""A RuleSet as ONE Spark streaming aggregation: parsed records → (rule, window, key, value) rows.

Every rule's windows come out of one `explode` (each record becomes one row per (rule, window)
that it counts in), so the records are parsed once and grouped once for all rules. Spark's
`window()` cannot do that (one window spec per projection), so window indices are computed
here with the same arithmetic as engine/windows.py: [k*hop, k*hop + size), epoch-aligned.

Watermark: `withWatermark` on the records' event time (max event time − lateness, as in the
embedded engine); the window end carries Spark's watermark metadata, exactly as Spark's own
`window()` column does, so a (rule, window, key) is emitted in append mode once its window has
closed, and rows for already-closed windows are dropped (Spark's numRowsDroppedByWatermark).

Values are computed as the embedded engine computes them (engine/core.py RuleRunner):
request_time summed as integer microseconds, so avg/sum are identical, not merely close.
"""

from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lookout.rules import GROUPABLE_FIELDS, Rule, RuleSet

KEY_FIELDS: tuple[str, ...] = GROUPABLE_FIELDS
WATERMARK_DELAY_KEY = "spark.watermarkDelayMs"  # Spark's EventTimeWatermark.delayKey


class UnsupportedRule(ValueError):
    """A rule the Spark engine cannot run with results identical to the embedded engine."""


def check_rules(rs: RuleSet) -> None:
    for r in rs.rules:
        if r.effective_emit == "update":
            raise UnsupportedRule(f"rule {r.name}: emit: update is not supported by lookout spark (use final or alert)")
        if r.effective_emit == "alert" and r.agg.func != "count":
            raise UnsupportedRule(
                f"rule {r.name}: emit: alert on {r.agg.output_name} is not supported by lookout spark (its value "
                f"depends on arrival order within a window, which Spark does not keep); use emit: final")
    if rs.lateness % 1000:
        raise UnsupportedRule("lateness must be whole milliseconds on Spark (its watermark has millisecond precision)")


def _filter(rule: Rule) -> Column:
    cond = F.lit(True)
    for fld, values in rule.filter.conditions:
        col = F.col(fld)
        if fld in ("status", "request_time"):
            part = F.lit(False)
            for lo, hi in values:
                part = part | col.between(F.lit(lo), F.lit(hi))
        else:
            part = col.isin(list(values))
        cond = cond & F.coalesce(part, F.lit(False))
    for k in rule.group_by:
        cond = cond & F.col(k).isNotNull()
    return cond


def _floor_div(a: str, b: int) -> Column:
    """Exact floor division of a bigint SQL expression (a double would lose microseconds)."""
    return F.expr(f"(({a}) - pmod({a}, {b})) div {b}")


def _value_input(rule: Rule) -> Column:
    """The per-record input of the aggregate, as in RuleRunner._value_column."""
    fld = rule.agg.field
    if fld is None:
        return F.lit(None).cast("long")
    if fld == "request_time":
        # exact integer microseconds, rounded half to even as polars does in the embedded engine
        return F.bround(F.col(fld) * F.lit(1_000_000), 0).cast("long")
    return F.col(fld).cast("long")


def _windows(rule: Rule, index: int) -> Column:
    """array<struct> of the (rule, window, key, v) rows one record contributes to this rule."""
    size, hop = rule.window.size, rule.window.hop
    first = _floor_div(f"ts - {size}", hop) + 1  # oldest window containing ts
    last = _floor_div("ts", hop)
    keys = [(F.col(k) if k in rule.group_by else F.lit(None).cast("int" if k == "status" else "string")).alias(k)
            for k in KEY_FIELDS]
    v = _value_input(rule)
    rows = F.transform(
        F.sequence(first, last),
        lambda k: F.struct(F.lit(index).alias("r"), (k * F.lit(hop)).alias("start"),
                           (k * F.lit(hop) + F.lit(size)).alias("end"), *keys, v.alias("v")),
    )
    return F.when(_filter(rule), rows)


def _value(rule: Rule) -> Column:
    """The aggregate from the window's partials (cnt, n, s, mn, mx), as RuleRunner._value_expr."""
    f, fld = rule.agg.func, rule.agg.field
    if f == "count":
        return F.col("cnt").cast("double")
    scale = 1_000_000 if fld == "request_time" else 1
    n = F.col("n")
    if f == "avg":
        v = F.col("s").cast("double") / (n * F.lit(scale)).cast("double")
    else:
        v = F.col({"sum": "s", "min": "mn", "max": "mx"}[f]).cast("double") / F.lit(float(scale))
    return F.when(n > 0, v)


def _holds(rule: Rule, value: Column) -> Column:
    t = rule.threshold_spec
    if t is None:
        return F.lit(True)
    lit = F.lit(float(t.value))
    cmp = {">": value > lit, ">=": value >= lit, "<": value < lit, "<=": value <= lit}[t.op]
    return F.coalesce(cmp, F.lit(False))


def _emitted(rule: Rule) -> tuple[Column, Column]:
    """(keep this window?, value to report) for a closed window of this rule."""
    value = _value(rule)
    keep = _holds(rule, value)
    if rule.effective_emit == "alert":
        t = rule.threshold_spec
        assert t is not None and rule.agg.func == "count"
        # Each record adds 1, so the count at the moment the condition first held is the first
        # count that satisfies it (and a window has at least one record).
        first_true = math.floor(t.value) + 1 if t.op == ">" else math.ceil(t.value)
        value = F.lit(float(max(first_true, 1)))
    return keep, value


def compile_rules(records: DataFrame, rs: RuleSet) -> DataFrame:
    """Valid parsed records (streaming) → rows (r, start, end, <KEY_FIELDS>, value) of results:
    r = index of the rule in rs.rules, start/end in epoch microseconds, value a double."""
    check_rules(rs)
    delay_ms = rs.lateness // 1000
    ev = records.withColumn("_ev", F.timestamp_micros("ts")).withWatermark("_ev", f"{delay_ms} milliseconds")
    # The end-of-input line moves the watermark (above) but is no record of any rule. (Not a
    # Filter: the optimizer would push it below the watermark, which would then never see it.)
    arrays = [F.coalesce(F.when(~F.col("flush"), _windows(r, i)), F.array()) for i, r in enumerate(rs.rules)]
    rows = ev.select(F.explode(F.concat(*arrays) if len(arrays) > 1 else arrays[0]).alias("w")).select("w.*")
    rows = rows.select(
        "r", "start",
        F.timestamp_micros("end").alias("w_end", metadata={WATERMARK_DELAY_KEY: delay_ms}),
        *KEY_FIELDS, "v",
    )
    agg = rows.groupBy("r", "start", "w_end", *KEY_FIELDS).agg(
        F.count(F.lit(1)).alias("cnt"), F.count("v").alias("n"), F.sum("v").alias("s"),
        F.min("v").alias("mn"), F.max("v").alias("mx"),
    )
    keep, value = F.lit(False), F.lit(None).cast("double")
    for i, r in enumerate(rs.rules):
        k, val = _emitted(r)
        keep = F.when(F.col("r") == i, k).otherwise(keep)
        value = F.when(F.col("r") == i, val).otherwise(value)
    out = agg.filter(keep).select(
        "r", "start", F.unix_micros("w_end").alias("end"), *KEY_FIELDS, value.alias("value"))
    return out
