"""Result and dead-letter records as JSON, exactly as the seed's Spark jobs wrote them.

Spark's `to_json(struct(*))` in UTC: `{"window":{"start":"2022-08-03T06:51:40.000Z","end":...},
"client_ip":"154.85.126.16","count":11}`. Like Spark, a null aggregate (avg over no known
request_time) is left out rather than written as null.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import polars as pl

from lookout.rules import Rule
from lookout.schema import BY_NAME


def iso_ms(us: int) -> str:
    """Epoch microseconds → `2022-08-03T06:51:40.000Z` (Spark's default JSON timestamp format)."""
    dt = datetime.fromtimestamp(us // 1_000_000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{(us % 1_000_000) // 1000:03d}Z"


def result_id(rule: str, start_us: int, key: tuple[Any, ...]) -> str:
    """Stable id of a (rule, window, key) result: the same result always gets the same id."""
    raw = orjson.dumps([rule, start_us, list(key)])
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


def integer_valued(rule: Rule) -> bool:
    """Whether the rule's values are integers: count, and sum/min/max of an integer field (status, bytes)."""
    agg = rule.agg
    return agg.func == "count" or (agg.func in ("sum", "min", "max") and agg.field is not None and BY_NAME[agg.field].integral)


@dataclass
class ResultBatch:
    """One rule's results from one engine step, formatted once for every sink."""

    rule: Rule
    frame: pl.DataFrame  # _start, _end, <group_by...>, value
    lines: list[bytes]  # the JSON values
    keys: list[str]  # message keys: the group-by value(s)
    ids: list[str]

    def __len__(self) -> int:
        return len(self.lines)


def format_results(rule: Rule, frame: pl.DataFrame) -> ResultBatch:
    name = rule.agg.output_name
    fields = list(rule.group_by)
    is_count = integer_valued(rule)
    lines: list[bytes] = []
    keys: list[str] = []
    ids: list[str] = []
    cache: dict[int, str] = {}
    for row in frame.iter_rows():
        start, end, *kv, value = row
        s = cache.get(start) or cache.setdefault(start, iso_ms(start))
        e = cache.get(end) or cache.setdefault(end, iso_ms(end))
        obj: dict[str, Any] = {"window": {"start": s, "end": e}}
        for f, v in zip(fields, kv, strict=False):
            if v is not None:
                obj[f] = v
        if value is not None:
            obj[name] = int(value) if is_count else float(value)
        lines.append(orjson.dumps(obj))
        keys.append(kv[0] if len(kv) == 1 else orjson.dumps(kv).decode())
        ids.append(result_id(rule.name, start, tuple(kv)))
    keys = [str(k) for k in keys]
    return ResultBatch(rule, frame, lines, keys, ids)


def dead_letter(reason: str, detail: str, raw: bytes, source: str | None, line: int | None, **extra: Any) -> bytes:
    """A dead-letter entry: why the record was dropped, where it came from, and the raw line."""
    obj: dict[str, Any] = {"reason": reason, "detail": detail}
    if source is not None:
        obj["source"] = source
    if line is not None:
        obj["line"] = line
    obj.update(extra)
    try:
        obj["raw"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        obj["raw"] = raw.decode("utf-8", errors="replace")
        import base64

        obj["raw_base64"] = base64.b64encode(raw).decode()
    return orjson.dumps(obj)
