"""The record's fields, each described once: the one table every other module reads.

Guarantee: a field's name, kind, column types (polars, Spark, Elasticsearch), what rules may do
with it (group by, aggregate, filter), its value parser with its unknown markers and reason code,
and the nginx variable it comes from are defined here and nowhere else. Records, rules, the
engine, Spark, the Elasticsearch mapping, store queries, output, the generator and the nginx
converter derive their lists from `FIELDS`; adding a field is one `Field(...)` plus its tests.

Value parsers are the contract's reference (records.parse_line applies them to a decoded JSON
object); each raises `Rejected` with the field's stable reason code. Nothing here imports polars
or pyspark at import time: types are given by name.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Kind = Literal["string", "int", "float", "timestamp", "ip"]

UNKNOWN_MARKERS = ("", "-")
# 9998-01-01T00:00:00Z: a window (up to 366 days, rules.MAX_DURATION) of any record still ends
# before year 10000, beyond which no calendar (datetime, ISO-8601 output) can show it
MAX_TS_US = 253_339_228_800 * 1_000_000
MAX_REQUEST_TIME = 1e6  # seconds (11.6 days): anything longer is a broken clock, and sums stay exact in int64 µs
# 1 TB in one response: far above any real body, and like request_time in µs a value int64 sums
# of millions of records cannot overflow
MAX_BYTES = 10**12
_MAX_BYTES_DIGITS = len(str(MAX_BYTES))

# ASCII digits only, on both paths: Python's and polars' `\d` also match Arabic-Indic, fullwidth, ... digits.
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class Rejected(Exception):
    """A line that breaks the contract; `reason` is a stable code, `detail` says why for a human."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------- value parsers (the reference)


def _clip(v: Any) -> str:
    """repr of a value for a rejection's detail, cut so a hostile 5,000-character value stays short."""
    s = repr(v)
    return s if len(s) <= 80 else s[:80] + "…"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_timestamp(v: Any) -> int:
    """Epoch seconds (number or numeric string, fraction allowed) or ISO-8601 → epoch microseconds."""
    if v is None:
        raise Rejected("missing-timestamp", "@timestamp is missing")
    if _is_number(v):
        secs = float(v)
    elif isinstance(v, str):
        if _NUMBER_RE.fullmatch(v):
            secs = float(v)
        else:
            return _parse_iso(v)
    else:
        raise Rejected("invalid-timestamp", f"@timestamp must be a number or a string, not {type(v).__name__}")
    if not math.isfinite(secs):
        raise Rejected("invalid-timestamp", f"@timestamp {_clip(v)} is not finite")
    scaled = secs * 1_000_000  # 1.8e302 seconds is finite but its µs are not: round() would raise
    if not math.isfinite(scaled):
        raise Rejected("invalid-timestamp", f"@timestamp {_clip(v)} is out of range")
    us = round(scaled)  # (then the range: -2e-293 s rounds to 0 µs, the epoch, on every path)
    if not 0 <= us < MAX_TS_US:
        raise Rejected("invalid-timestamp", f"@timestamp {v!r} is out of range")
    return us


_LEAP_SECOND_RE = re.compile(r"^([0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}):60(?=$|[.,Z+-])")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _parse_iso(v: str) -> int:
    """ISO-8601 → epoch µs. A leap second (`23:59:60Z`, or the same instant in another offset) is read
    as the first instant of the next day, as POSIX time does (epoch seconds have no leap seconds);
    `:60` anywhere else is refused."""
    bad = Rejected("invalid-timestamp", f"@timestamp {v!r} is neither epoch seconds nor ISO-8601")
    if not v.isascii():  # fromisoformat's digits must be ASCII digits, like everywhere in the contract
        raise bad
    leap = _LEAP_SECOND_RE.match(v)
    s = f"{leap.group(1)}:59{v[leap.end() :]}" if leap else v
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise bad from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    if leap:
        utc = dt.astimezone(UTC)
        if (utc.hour, utc.minute, utc.second) != (23, 59, 59):
            raise Rejected("invalid-timestamp", f"@timestamp {v!r}: a leap second can only be 23:59:60 UTC")
        dt = dt + timedelta(seconds=1)
    delta = dt - _EPOCH
    us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if not 0 <= us < MAX_TS_US:
        raise Rejected("invalid-timestamp", f"@timestamp {v!r} is out of range")
    return us


def parse_status(v: Any) -> int:
    if v is None:
        raise Rejected("missing-status", "status is missing")
    if isinstance(v, int) and not isinstance(v, bool):
        n = v
    elif isinstance(v, float) and v.is_integer():  # JSON has one number type: 201.0 is 201
        n = int(v)
    elif isinstance(v, str) and v.isascii() and v.isdigit():
        digits = v.lstrip("0") or "0"
        if len(digits) > 3:  # before int(): a 5,000-digit string must not raise (Python's 4,300-digit limit)
            raise Rejected("invalid-status", f"status {_clip(v)} is outside 100-599")
        n = int(digits)
    else:
        raise Rejected("invalid-status", f"status {_clip(v)} is not an integer")
    if not 100 <= n <= 599:
        raise Rejected("invalid-status", f"status {n} is outside 100-599")
    return n


def parse_request_time(v: Any) -> float | None:
    if v is None or (isinstance(v, str) and v in UNKNOWN_MARKERS):
        return None
    if _is_number(v):
        x = float(v)
    elif isinstance(v, str) and _NUMBER_RE.fullmatch(v):
        x = float(v)
    else:
        raise Rejected("invalid-request_time", f"request_time {v!r} is not a number")
    if not math.isfinite(x) or x < 0 or x > MAX_REQUEST_TIME:
        raise Rejected("invalid-request_time", f"request_time {v!r} must be a number from 0 to {MAX_REQUEST_TIME:g} seconds")
    return x + 0.0  # -0.0 + 0.0 is 0.0: one zero


def parse_bytes(v: Any) -> int | None:
    """$body_bytes_sent: an integer from 0 to MAX_BYTES (a JSON number, or ASCII digits); `-`
    (Apache's `%b` for none) and "" are unknown."""
    if v is None or (isinstance(v, str) and v in UNKNOWN_MARKERS):
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        n = v
    elif isinstance(v, float) and v.is_integer():  # JSON has one number type: 512.0 is 512
        n = int(v)
    elif isinstance(v, str) and v.isascii() and v.isdigit():
        digits = v.lstrip("0") or "0"
        if len(digits) > _MAX_BYTES_DIGITS:  # before int(): a 5,000-digit string must not cost (or raise)
            raise Rejected("invalid-bytes", f"bytes {v[:40]!r}… is larger than {MAX_BYTES}")
        n = int(digits)
    else:
        shown = repr(v) if not isinstance(v, str) or len(v) <= 80 else repr(v[:80]) + "…"
        raise Rejected("invalid-bytes", f"bytes {shown} is not an integer")
    if not 0 <= n <= MAX_BYTES:
        raise Rejected("invalid-bytes", f"bytes {n} is outside 0-{MAX_BYTES}")
    return n


def parse_client_ip(v: Any) -> str:
    if v is None:
        raise Rejected("missing-client_ip", "client_ip is missing")
    if not isinstance(v, str):
        raise Rejected("invalid-client_ip", f"client_ip must be a string, not {type(v).__name__}")
    try:
        ip = ipaddress.ip_address(v)
    except ValueError:
        raise Rejected("invalid-client_ip", f"client_ip {v!r} is not an IPv4 or IPv6 address") from None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            raise Rejected(
                "invalid-client_ip", f"client_ip {v!r} has a zone id (%...), which names a local interface, not a client"
            )
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
    # one client, one text: an IPv4-mapped address is its IPv4 address, IPv6 is compressed lower case
    return str(ip)


def parse_host(v: Any) -> str:
    if v is None:
        raise Rejected("missing-host", "host is missing")
    if not isinstance(v, str):
        raise Rejected("invalid-host", f"host must be a string, not {type(v).__name__}")
    if not v:
        raise Rejected("invalid-host", "host is empty")
    return v


def parse_optional_string(name: str, v: Any) -> str | None:
    """Any JSON string (`-` and "" are unknown). No other check: values a client chooses (path,
    user agent, referer) must not be able to get their request left out of every count."""
    if v is None or (isinstance(v, str) and v in UNKNOWN_MARKERS):
        return None
    if not isinstance(v, str):
        raise Rejected(f"invalid-{name}", f"{name} must be a string, not {type(v).__name__}")
    return v


# ---------------------------------------------------------------- filter values (rules, queries)


def _show(x: Any) -> str:
    s = repr(x)
    return s if len(s) <= 60 else s[:57] + "..."


def parse_status_range(x: Any) -> tuple[int, int]:
    """A status (404), a range (400-499, 400..499, 400 to 499) or a class (4xx), within 100-599.
    Shared by rules and queries (`lookout search --status`)."""
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    if isinstance(x, int) and not isinstance(x, bool):
        lo = hi = x
    else:
        s = str(x).strip().lower()
        if re.fullmatch(r"[1-5]xx", s):
            base = int(s[0]) * 100
            return (base, base + 99)
        m = re.fullmatch(r"([0-9]{3})\s*(?:-|\.\.|to)\s*([0-9]{3})", s)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
        elif re.fullmatch(r"[0-9]{3}", s):
            lo = hi = int(s)
        else:
            raise ValueError(f"status {_show(x)} is not a status, range (400-499) or class (4xx)")
    if not (100 <= lo <= 599 and 100 <= hi <= 599):
        raise ValueError(f"status {_show(x)} is outside 100-599")
    if lo > hi:
        raise ValueError(f"status range {_show(x)} is empty")
    return (lo, hi)


def parse_request_time_range(x: Any) -> tuple[float, float]:
    """request_time value or range (0.5-2), seconds from 0 to the contract's maximum."""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        lo = hi = float(x)
    else:
        m = re.fullmatch(r"\s*([0-9]{1,12}(?:\.[0-9]{1,9})?)\s*-\s*([0-9]{1,12}(?:\.[0-9]{1,9})?)\s*", str(x))
        if not m:
            raise ValueError(f"request_time {_show(x)} is not a number or range (0.5-2)")
        lo, hi = float(m.group(1)), float(m.group(2))
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= MAX_REQUEST_TIME and 0 <= hi <= MAX_REQUEST_TIME):
        raise ValueError(f"request_time {_show(x)} must be from 0 to {MAX_REQUEST_TIME:g} seconds")
    if lo > hi:
        raise ValueError(f"request_time range {_show(x)} is empty")
    return (lo, hi)


def parse_bytes_range(x: Any) -> tuple[int, int]:
    """bytes value (0) or range (1000000-1000000000000), integers from 0 to MAX_BYTES."""
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    if isinstance(x, int) and not isinstance(x, bool):
        lo = hi = x
    else:
        m = re.fullmatch(r"\s*([0-9]{1,13})\s*(?:-\s*([0-9]{1,13})\s*)?", str(x))
        if not m:
            raise ValueError(f"bytes {_show(x)} is not an integer or range (1000-5000)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
    if not (0 <= lo <= MAX_BYTES and 0 <= hi <= MAX_BYTES):
        raise ValueError(f"bytes {_show(x)} must be from 0 to {MAX_BYTES}")
    if lo > hi:
        raise ValueError(f"bytes range {_show(x)} is empty")
    return (lo, hi)


def canonical_client_ip(x: Any) -> str:
    """A client_ip filter value in the records' canonical text, so `::ffff:1.2.3.4` matches 1.2.3.4."""
    try:
        return parse_client_ip(str(x))
    except Rejected as e:
        raise ValueError(e.detail) from None


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Field:
    """One input field of the record contract."""

    name: str  # the key in a JSON line
    kind: Kind
    polars: str  # polars dtype name of the parsed column
    spark: str  # Spark SQL type of the parsed column
    es: str  # Elasticsearch type in the records index
    parse: Callable[[Any], Any]  # JSON value (None when absent) → typed value; raises Rejected
    reason: str  # reason code of a bad value
    nginx: str  # the nginx variable in `lookout nginx-config`'s log_format
    combined: str  # where a combined-format line carries it ("" : it does not)
    required: bool = False
    groupable: bool = False
    aggregatable: bool = False  # sum/avg/min/max (numeric)
    filterable: bool = False
    filter_value: Callable[[Any], Any] = str  # one value of a rules filter / query
    unknown: tuple[str, ...] = ()  # string values that mean "unknown" (null)
    scale: int = 1  # integer units the engine sums in, exactly (request_time: µs)
    column: str = ""  # column in a parsed batch (default: name)
    seed: bool = True  # one of the seed's eight fields (the generator writes them); False: added later, optional

    @property
    def col(self) -> str:
        return self.column or self.name

    @property
    def ranged(self) -> bool:
        """Filters on it are [lo, hi] ranges (numbers), not equality."""
        return self.kind in ("int", "float")

    @property
    def integral(self) -> bool:
        return self.kind == "int"

    def polars_dtype(self) -> Any:
        import polars as pl

        return getattr(pl, self.polars)()


def _optional(name: str) -> Callable[[Any], str | None]:
    def parse(v: Any) -> str | None:
        return parse_optional_string(name, v)

    return parse


def _text(name: str, nginx: str, combined: str, *, seed: bool = True) -> Field:
    """An optional string field: any JSON string; `-` and "" are unknown."""
    return Field(
        name,
        "string",
        "String",
        "string",
        "keyword",
        _optional(name),
        f"invalid-{name}",
        nginx,
        combined,
        groupable=True,
        filterable=True,
        unknown=UNKNOWN_MARKERS,
        seed=seed,
    )


# In the seed's key order; the four after @timestamp are optional additions (issue 9).
FIELDS: tuple[Field, ...] = (
    _text("server", "$hostname", "--server (not in the line)"),
    Field(
        "client_ip",
        "ip",
        "String",
        "string",
        "ip",
        parse_client_ip,
        "invalid-client_ip",
        "$remote_addr",
        "$remote_addr",
        required=True,
        groupable=True,
        filterable=True,
        filter_value=canonical_client_ip,
    ),
    _text("method", "$request_method", '"$request" (first word)'),
    Field(
        "status",
        "int",
        "Int16",
        "int",
        "short",
        parse_status,
        "invalid-status",
        "$status",
        "$status",
        required=True,
        groupable=True,
        aggregatable=True,
        filterable=True,
        filter_value=parse_status_range,
    ),
    Field(
        "request_time",
        "float",
        "Float64",
        "double",
        "float",
        parse_request_time,
        "invalid-request_time",
        "$request_time",
        "",
        aggregatable=True,
        filterable=True,
        filter_value=parse_request_time_range,
        unknown=UNKNOWN_MARKERS,
        scale=1_000_000,
    ),
    Field(
        "host",
        "string",
        "String",
        "string",
        "keyword",
        parse_host,
        "invalid-host",
        "$host",
        "--host (not in the line)",
        required=True,
        groupable=True,
        filterable=True,
    ),
    _text("country", "$lookout_country", "--geoip (not in the line)"),
    Field(
        "@timestamp",
        "timestamp",
        "Int64",
        "long",
        "date",
        parse_timestamp,
        "invalid-timestamp",
        "$msec",
        "[$time_local]",
        required=True,
        column="ts",
    ),
    _text("path", "$request_uri", '"$request" (second word)', seed=False),
    _text("user_agent", "$http_user_agent", '"$http_user_agent"', seed=False),
    _text("referer", "$http_referer", '"$http_referer"', seed=False),
    Field(
        "bytes",
        "int",
        "Int64",
        "long",
        "long",
        parse_bytes,
        "invalid-bytes",
        "$body_bytes_sent",
        "$body_bytes_sent",
        aggregatable=True,
        filterable=True,
        filter_value=parse_bytes_range,
        unknown=UNKNOWN_MARKERS,
        seed=False,
    ),
)

BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
BY_COLUMN: dict[str, Field] = {f.col: f for f in FIELDS}
INPUT_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS)
SEED_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.seed)  # the seed's record, in its key order
# parsed-batch columns of the record values, in batch order (`ts` first)
RECORD_COLUMNS: tuple[str, ...] = ("ts", "status", "request_time", "client_ip", "host", "country", "method", "server") + tuple(
    f.col for f in FIELDS[FIELDS.index(BY_NAME["@timestamp"]) + 1 :]
)
VALUE_COLUMNS: tuple[str, ...] = tuple(c for c in RECORD_COLUMNS if c != "ts")  # fields a rule or query can read
STRING_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.kind in ("string", "ip"))
GROUPABLE_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.groupable)
NUMERIC_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.aggregatable)
FILTERABLE_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.filterable)
OPTIONAL_STRING_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.kind == "string" and not f.required)

assert set(RECORD_COLUMNS) == {f.col for f in FIELDS}, "RECORD_COLUMNS must hold every field once"


def scale(name: str | None) -> int:
    """The integer units a numeric field is summed in (1 for anything else)."""
    return BY_NAME[name].scale if name in BY_NAME else 1


_PARSE_ORDER: tuple[Field, ...] = tuple(BY_COLUMN[c] for c in RECORD_COLUMNS)


def parse_record(obj: dict[str, Any]) -> dict[str, Any]:
    """A decoded JSON object → the typed record (columns of RECORD_COLUMNS). Fields are judged in
    batch-column order, so a line with two bad fields always gets the same (first) reason."""
    return {f.col: f.parse(obj.get(f.name)) for f in _PARSE_ORDER}
