"""The declarative rule model: what to count, over which windows, and when to say so.

A rules file is YAML:

    lateness: 10s            # allowed lateness (watermark = max event time - lateness)
    max_future: 5m           # records stamped further ahead of the wall clock are rejected
    rules:
      - name: goal1-topic    # also the output topic / file name
        window: {size: 20s, hop: 1s}   # or `window: 1 minute` for tumbling
        filter: {status: 400-499}      # optional
        group_by: client_ip            # one field or a list
        aggregate: count               # or avg(request_time), sum(..), min(..), max(..)
        threshold: count > 10          # optional
        emit: alert                    # alert | final | update
        incident_gap: 10s              # optional: runs of alerting windows this close are one incident

Validation errors name the rule and the field (`lookout rules` exits 2 on them).

A rules file cannot hurt the machine that reads it: YAML aliases are refused (no expansion
bombs), the file is at most MAX_RULES_BYTES and MAX_RULES rules, every number is finite and
bounded (durations up to MAX_DURATION, thresholds up to MAX_THRESHOLD), a window may put a
record into at most MAX_WINDOWS_PER_RECORD windows (size/hop), and every check is linear.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lookout.notify.config import NotifyTarget, target_labels
from lookout.schema import BY_NAME, FILTERABLE_FIELDS, GROUPABLE_FIELDS, NUMERIC_FIELDS, parse_status_range

__all__ = ["FILTERABLE_FIELDS", "GROUPABLE_FIELDS", "NUMERIC_FIELDS", "parse_status_range"]  # re-exported: the field table's
AGG_FUNCS = ("count", "sum", "avg", "min", "max")

_UNITS_US = {
    "us": 1,
    "microsecond": 1,
    "microseconds": 1,
    "ms": 1_000,
    "millisecond": 1_000,
    "milliseconds": 1_000,
    "s": 1_000_000,
    "sec": 1_000_000,
    "secs": 1_000_000,
    "second": 1_000_000,
    "seconds": 1_000_000,
    "m": 60_000_000,
    "min": 60_000_000,
    "mins": 60_000_000,
    "minute": 60_000_000,
    "minutes": 60_000_000,
    "h": 3_600_000_000,
    "hour": 3_600_000_000,
    "hours": 3_600_000_000,
    "d": 86_400_000_000,
    "day": 86_400_000_000,
    "days": 86_400_000_000,
}
# ASCII digits only: Python's \d also matches Arabic-Indic, fullwidth, ... digits, and float() reads them
_DURATION_RE = re.compile(r"^\s*([0-9]{1,12}(?:\.[0-9]{1,9})?)\s*([a-zA-Z]+)\s*$")

MAX_RULES_BYTES = 1 << 20  # a rules file is written by hand: 1 MiB is thousands of rules
MAX_RULES = 1_000  # each rule is an engine of its own; beyond this a run is a denial of service
MAX_DURATION = 366 * 86_400_000_000  # µs: windows, hops and lateness up to a (leap) year
MAX_WINDOWS_PER_RECORD = 1_000  # size/hop: each record lands in this many windows (20s/1s is 20)
MAX_THRESHOLD = 1e15  # counts and sums of request_time (µs-exact in int64) stay far below this


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the rule and field."""


def _show(v: Any, limit: int = 60) -> str:
    """A user value for an error message, cut short: messages must not grow with the input."""
    r = repr(v) if isinstance(v, (str, int, float, bool, type(None))) else f"a {type(v).__name__}"
    return r if len(r) <= limit else r[: limit - 3] + "..."


def parse_duration(value: Any) -> int:
    """`20s`, `1 minute`, `500ms`, `2h` (or a number of seconds) → microseconds, 0 … MAX_DURATION."""
    if isinstance(value, bool):
        raise ValueError(f"{_show(value)} is not a duration")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or not 0 <= value <= MAX_DURATION / 1_000_000:
            raise ValueError(f"{_show(value)}: a duration must be from 0 to {format_duration(MAX_DURATION)}")
        us = round(value * 1_000_000)
    elif isinstance(value, str):
        m = _DURATION_RE.match(value)
        if not m or m.group(2).lower() not in _UNITS_US:
            raise ValueError(f"{_show(value)} is not a duration (try '20s', '1 minute', '500ms')")
        us = round(float(m.group(1)) * _UNITS_US[m.group(2).lower()])
    else:
        raise ValueError(f"{_show(value)} is not a duration")
    if us > MAX_DURATION:
        raise ValueError(f"{_show(value)}: a duration must be at most {format_duration(MAX_DURATION)}")
    return us


def format_duration(us: int) -> str:
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000), ("s", 1_000_000), ("ms", 1_000)):
        if us % size == 0:
            return f"{us // size}{unit}"
    return f"{us}us"


class Window(BaseModel):
    """Spark's window(ts, size, hop): windows [k*hop, k*hop + size), aligned to the epoch."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    size: int  # microseconds
    hop: int

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, v: Any) -> Any:
        if isinstance(v, (str, int, float)) and not isinstance(v, bool):
            size = parse_duration(v)
            return {"size": size, "hop": size}
        if isinstance(v, dict):
            v = dict(v)
            if "size" not in v:
                raise ValueError("a window needs a size")
            v["size"] = parse_duration(v["size"])
            v["hop"] = parse_duration(v["hop"]) if v.get("hop") is not None else v["size"]
            if "slide" in v:  # Spark's word for hop
                v["hop"] = parse_duration(v.pop("slide"))
        return v

    @model_validator(mode="after")
    def _check(self) -> Window:
        if self.size <= 0 or self.hop <= 0:
            raise ValueError("window size and hop must be positive")
        if self.hop > self.size:
            raise ValueError("hop must not exceed size (windows would leave gaps)")
        if self.size % 1000 or self.hop % 1000:
            raise ValueError("window size and hop must be whole milliseconds")
        per_record = -(-self.size // self.hop)
        if per_record > MAX_WINDOWS_PER_RECORD:
            raise ValueError(
                f"size/hop = {per_record:,} windows per record; the limit is {MAX_WINDOWS_PER_RECORD:,} "
                f"(each record is counted in every window it falls in: use a longer hop)"
            )
        return self

    @property
    def tumbling(self) -> bool:
        return self.size == self.hop

    @property
    def pane(self) -> int:
        """Width of the panes that windows are built from: gcd(size, hop)."""
        return math.gcd(self.size, self.hop)

    def describe(self) -> str:
        if self.tumbling:
            return f"tumbling {format_duration(self.size)}"
        return f"{format_duration(self.size)} hopping {format_duration(self.hop)}"


@dataclass(frozen=True)
class Aggregate:
    func: str  # count | sum | avg | min | max
    field: str | None  # None for count

    @property
    def output_name(self) -> str:
        """Spark's column name for the aggregate: count, avg(request_time), ..."""
        return "count" if self.func == "count" else f"{self.func}({self.field})"


_AGG_RE = re.compile(r"^\s*(count|sum|avg|min|max)\s*(?:\(\s*([A-Za-z_@][\w@]*)?\s*\))?\s*$")
_THRESHOLD_RE = re.compile(r"^\s*(?:(.{1,40}?)\s*)?(>=|<=|>|<)\s*([-+]?[0-9]{1,16}(?:\.[0-9]{1,9})?)\s*$")


def parse_aggregate(v: Any) -> Aggregate:
    if isinstance(v, dict) and len(v) == 1:
        ((func, fld),) = v.items()
        v = f"{func}({fld})" if fld else str(func)
    if not isinstance(v, str):
        raise ValueError(f"{v!r} is not an aggregate (count, avg(request_time), sum(..), min(..), max(..))")
    m = _AGG_RE.match(v)
    if not m:
        raise ValueError(f"{v!r} is not an aggregate (count, avg(request_time), sum(..), min(..), max(..))")
    func, fld = m.group(1), m.group(2)
    if func == "count":
        return Aggregate("count", None)
    if fld is None:
        raise ValueError(f"{func} needs a numeric field, e.g. {func}(request_time)")
    if fld not in NUMERIC_FIELDS:
        raise ValueError(f"{func}({fld}): {fld!r} is not numeric (numeric fields: {', '.join(NUMERIC_FIELDS)})")
    return Aggregate(func, fld)


@dataclass(frozen=True)
class Threshold:
    op: str  # > >= < <=
    value: float

    def holds(self, x: float | None) -> bool:
        if x is None:
            return False
        return {">": x > self.value, ">=": x >= self.value, "<": x < self.value, "<=": x <= self.value}[self.op]

    def __str__(self) -> str:
        v = int(self.value) if float(self.value).is_integer() else self.value
        return f"{self.op} {v}"


class Filter(BaseModel):
    """Keep a record when every listed field matches one of its values.

    Numeric fields take values or ranges (`status: 400-499` or `4xx`, `request_time: 0.5-2`,
    `bytes: 1000-5000`); the others compare by equality (lookout.schema says which is which).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    conditions: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, v: Any) -> Any:
        if v is None:
            return {"conditions": ()}
        if isinstance(v, dict) and "conditions" in v:
            return v
        if not isinstance(v, dict):
            raise ValueError("filter must be a mapping of field: value(s)")
        conds = []
        for fld, vals in v.items():
            if fld not in FILTERABLE_FIELDS:
                raise ValueError(f"unknown field {fld!r} (filterable: {', '.join(FILTERABLE_FIELDS)})")
            vals = vals if isinstance(vals, list) else [vals]
            if not vals:
                raise ValueError(f"{fld}: needs at least one value")
            for x in vals:
                if isinstance(x, bool) or not isinstance(x, (str, int, float)):
                    raise ValueError(f"{fld}: {_show(x)} is not a value (a string or a number)")
            vals = [BY_NAME[fld].filter_value(x) for x in vals]  # ranges, canonical addresses, text (errors name the field)
            conds.append((fld, tuple(vals)))
        return {"conditions": tuple(conds)}


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,200}$")
    window: Window
    filter: Filter = Filter()
    group_by: tuple[str, ...]
    aggregate: str = "count"
    threshold: str | None = None
    emit: Literal["alert", "final", "update"] | None = None
    incident_gap: int = 0  # microseconds: alerting windows this close still form one incident
    description: str | None = None

    @field_validator("incident_gap", mode="before")
    @classmethod
    def _incident_gap(cls, v: Any) -> int:
        us = parse_duration(v)
        if us < 0:
            raise ValueError("incident_gap must not be negative")
        return us

    @field_validator("group_by", mode="before")
    @classmethod
    def _group_by(cls, v: Any) -> Any:
        v = [v] if isinstance(v, str) else v
        if not isinstance(v, (list, tuple)) or not v:
            raise ValueError("group_by needs one field or a list of fields")
        for f in v:
            if f not in GROUPABLE_FIELDS:
                raise ValueError(f"cannot group by {f!r} (groupable: {', '.join(GROUPABLE_FIELDS)})")
        if len(set(v)) != len(v):
            raise ValueError("group_by lists a field twice")
        return tuple(v)

    @field_validator("aggregate", mode="before")
    @classmethod
    def _aggregate(cls, v: Any) -> str:
        return parse_aggregate(v).output_name

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold(cls, v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if not math.isfinite(v):
                raise ValueError(f"threshold {_show(v)} must be a finite number")
            return f"> {v}"
        if not isinstance(v, str):
            raise ValueError(f"threshold {_show(v)}: write it like 'count > 10'")
        return v

    @model_validator(mode="after")
    def _check(self) -> Rule:
        agg = self.agg
        if self.threshold is not None:
            m = _THRESHOLD_RE.match(self.threshold)
            if not m:
                raise ValueError(
                    f"threshold {_show(self.threshold)}: write it like 'count > 10' (ASCII digits, at most 16 before the point)"
                )
            subject = m.group(1)
            if subject is not None and subject.replace(" ", "") not in (agg.output_name, "value"):
                raise ValueError(f"threshold {_show(self.threshold)} must test the rule's aggregate {agg.output_name!r}")
            if not 0 <= float(m.group(3)) <= MAX_THRESHOLD:
                raise ValueError(f"threshold {_show(self.threshold)}: the value must be from 0 to {MAX_THRESHOLD:g}")
        if self.effective_emit == "alert":
            if self.threshold_spec is None:
                raise ValueError("emit: alert needs a threshold (e.g. 'count > 10')")
            if not self.monotone_alert:
                raise ValueError(
                    f"emit: alert needs a condition that stays true once true (count/sum/max with > or >=, "
                    f"min with < or <=); {agg.output_name} {self.threshold_spec} can flip back - use emit: final"
                )
        return self

    @property
    def agg(self) -> Aggregate:
        return parse_aggregate(self.aggregate)

    @property
    def threshold_spec(self) -> Threshold | None:
        if self.threshold is None:
            return None
        m = _THRESHOLD_RE.match(self.threshold)
        assert m
        return Threshold(m.group(2), float(m.group(3)))

    @property
    def effective_emit(self) -> str:
        if self.emit is not None:
            return self.emit
        return "alert" if self.threshold is not None else "final"

    @property
    def monotone_alert(self) -> bool:
        """True when the condition can only switch from false to true as records arrive.

        Values are never negative (status >= 100, request_time and bytes >= 0), so count, sum and max only grow
        and min only shrinks.
        """
        t = self.threshold_spec
        if t is None:
            return False
        if self.agg.func in ("count", "sum", "max"):
            return t.op in (">", ">=")
        if self.agg.func == "min":
            return t.op in ("<", "<=")
        return False

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        w = self.window
        d["window"] = format_duration(w.size) if w.tumbling else {"size": format_duration(w.size), "hop": format_duration(w.hop)}
        if self.filter.conditions:
            d["filter"] = {f: [_fmt_cond(f, v) for v in vals] for f, vals in self.filter.conditions}
        d["group_by"] = list(self.group_by) if len(self.group_by) > 1 else self.group_by[0]
        d["aggregate"] = self.aggregate
        if self.threshold_spec is not None:
            d["threshold"] = f"{self.aggregate} {self.threshold_spec}"
        d["emit"] = self.effective_emit
        if self.incident_gap:
            d["incident_gap"] = format_duration(self.incident_gap)
        if self.description:
            d["description"] = self.description
        return d


def _fmt_cond(fld: str, v: Any) -> Any:
    f = BY_NAME[fld]
    if f.ranged:
        lo, hi = v
        if f.integral:
            lo, hi = int(lo), int(hi)
        return lo if lo == hi else f"{lo}-{hi}"
    return v


MAX_FUTURE_BOUNDS = (1_000_000, 86_400_000_000)  # 1 s .. 1 day


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    lateness: int = 10_000_000  # microseconds
    # A record stamped more than this ahead of the wall clock when read is rejected
    # (`future-timestamp`): one skewed clock must not move the watermark years ahead.
    max_future: int = 300_000_000
    rules: tuple[Rule, ...]
    notify: tuple[NotifyTarget, ...] = ()  # where incidents are sent (lookout.notify)

    @field_validator("lateness", mode="before")
    @classmethod
    def _lateness(cls, v: Any) -> int:
        us = parse_duration(v)
        if us < 0:
            raise ValueError("lateness must not be negative")
        return us

    @field_validator("max_future", mode="before")
    @classmethod
    def _max_future(cls, v: Any) -> int:
        us = parse_duration(v)
        lo, hi = MAX_FUTURE_BOUNDS
        if not lo <= us <= hi:
            raise ValueError(
                f"max_future must be between {format_duration(lo)} and {format_duration(hi)} "
                f"(clocks skew by seconds, not days), not {format_duration(us)}"
            )
        return us

    @field_validator("rules", mode="before")
    @classmethod
    def _few_enough(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)) and len(v) > MAX_RULES:
            raise ValueError(f"{len(v):,} rules; the limit is {MAX_RULES:,}")
        return v

    @model_validator(mode="after")
    def _check(self) -> RuleSet:
        if not self.rules:
            raise ValueError("a rules file needs at least one rule")
        names = [r.name for r in self.rules]
        dup = {n for n, c in Counter(names).items() if c > 1}  # linear: 1,000 rules must not cost a million compares
        if dup:
            raise ValueError(f"rule names must be unique: {', '.join(sorted(dup))}")
        if any(n in ("rejected", "records", "incidents") for n in names):
            raise ValueError("'rejected', 'records' and 'incidents' are reserved names")
        for i, t in enumerate(self.notify):
            unknown = [r for r in t.rules or () if r not in names]
            if unknown:
                raise ValueError(f"notify.{i}.rules: unknown rule(s) {', '.join(unknown)}")
        labels = target_labels(self.notify)
        if len(set(labels)) != len(labels):
            raise ValueError("notify: target names must be unique")
        return self

    @cached_property
    def by_name(self) -> dict[str, Rule]:
        return {r.name: r for r in self.rules}

    def to_dict(self) -> dict[str, Any]:
        return {
            "lateness": format_duration(self.lateness),
            "max_future": format_duration(self.max_future),
            "rules": [r.to_dict() for r in self.rules],
        }

    def windows_dict(self) -> dict[str, Any]:
        """What engine state depends on (checkpoints compare it): everything but max_future,
        which only decides which records reach the engine."""
        d = self.to_dict()
        del d["max_future"]
        return d

    def to_yaml(self, include_notify: bool = False) -> str:
        """The rules as YAML; `include_notify` adds the targets as written (`${VAR}`, never a secret)."""
        d = self.to_dict()
        if include_notify and self.notify:
            d["notify"] = [t.to_dict() for t in self.notify]
        return yaml.safe_dump(d, sort_keys=False, width=1000)

    def with_lateness(self, lateness_us: int) -> RuleSet:
        return RuleSet.model_validate(
            {"lateness": f"{lateness_us}us", "max_future": f"{self.max_future}us", "rules": self.rules, "notify": self.notify}
        )


def _format_error(e: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid rules"]
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without aliases: `&a [*a, *a, ...]` nine levels deep is a kilobyte that expands
    to billions of nodes. A rules file has no use for them, so an alias is an error."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a rules file", event.start_mark)
        return super().compose_node(parent, index)


def safe_yaml(text: str, source: str, max_bytes: int = MAX_RULES_BYTES) -> Any:
    """Parse a small YAML document written by hand: size-capped, no aliases, no deep nesting."""
    if len(text) > max_bytes:
        raise RulesError(f"{source}: {len(text):,} bytes; the limit is {max_bytes:,}")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise RulesError(f"{source}: not valid YAML: {e}") from None
    except RecursionError:
        raise RulesError(f"{source}: nested too deeply") from None


def load_rules_text(text: str, source: str = "<rules>") -> RuleSet:
    data = safe_yaml(text, source)
    if isinstance(data, list):
        data = {"rules": data}
    if not isinstance(data, dict):
        raise RulesError(f"{source}: expected a mapping with a 'rules' list")
    rules = data.get("rules")
    try:
        return RuleSet.model_validate(data)
    except ValidationError as e:
        msg = _format_error(e, source)
        if isinstance(rules, list) and len(rules) <= MAX_RULES:
            for i, r in enumerate(rules):
                if isinstance(r, dict) and isinstance(r.get("name"), str) and len(r["name"]) <= 200:
                    msg = msg.replace(f"rules.{i}.", f"rules.{i}({r['name']}).")
        raise RulesError(msg) from None
    except RecursionError:
        raise RulesError(f"{source}: nested too deeply") from None


def load_rules(path: str | Path | None = None) -> RuleSet:
    """The rules in `path`, or the built-in defaults (the seed's four goals)."""
    if path is None:
        text = resources.files("lookout").joinpath("defaults/rules.yaml").read_text()
        return load_rules_text(text, "built-in rules")
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_RULES_BYTES + 1)  # never more: the path may be /dev/zero or a 10 GB log
    except OSError as e:
        raise RulesError(f"{path}: {e.strerror}") from None
    if len(data) > MAX_RULES_BYTES:
        raise RulesError(f"{path}: more than {MAX_RULES_BYTES:,} bytes; the limit is {MAX_RULES_BYTES:,}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RulesError(f"{path}: not UTF-8 text (byte {e.start})") from None
    return load_rules_text(text, str(path))
