"""The record contract: what an input line must look like, and why it is rejected when it does not.

One place decides validity. `parse_line` is the reference (one line, plain Python, exact
reasons); `parse_chunk` is the fast path used by every source: it decodes a whole chunk of
NDJSON at once with polars and sends only the rows it cannot vouch for to `parse_line`.
The two are held equal by property tests (tests/unit/test_records.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import polars as pl

from lookout.linescan import Scan, scan
from lookout.schema import (  # noqa: F401 - the value parsers and limits are part of this module's interface
    BY_COLUMN,
    BY_NAME,
    INPUT_FIELDS,
    MAX_BYTES,
    MAX_REQUEST_TIME,
    MAX_TS_US,
    NUMERIC_FIELDS,
    OPTIONAL_STRING_FIELDS,
    RECORD_COLUMNS,
    STRING_FIELDS,
    UNKNOWN_MARKERS,
    Rejected,
    parse_bytes,
    parse_client_ip,
    parse_host,
    parse_optional_string,
    parse_record,
    parse_request_time,
    parse_status,
    parse_timestamp,
)

# Columns of a parsed batch (lookout.schema's fields). `ts` is event time in integer microseconds
# since the epoch (UTC); `line` the index of the line within its chunk (source positions derive from it).
SCHEMA: dict[str, pl.DataType] = {
    **{c: BY_COLUMN[c].polars_dtype() for c in RECORD_COLUMNS},
    "line": pl.Int64(),
}

_IPV4_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_PATTERN = rf"^{_IPV4_OCTET}\.{_IPV4_OCTET}\.{_IPV4_OCTET}\.{_IPV4_OCTET}$"


@dataclass
class Rejection:
    index: int  # line index within the chunk
    reason: str
    detail: str
    raw: bytes


@dataclass
class ParsedChunk:
    """Valid rows (columns of SCHEMA, in input order) and the rejected lines of one chunk."""

    records: pl.DataFrame
    rejected: list[Rejection] = field(default_factory=list)
    lines: int = 0  # lines seen (blank lines excluded)
    fallback: int = 0  # lines the fast path handed to `parse_line` one by one (broken lines, mostly)
    span: int = -1  # parse_chunk: lines of the chunk, blank ones included (what `line` counts); -1: not counted


# ---------------------------------------------------------------- reference (one line)


def parse_object(obj: Any) -> dict[str, Any]:
    """Validate one decoded JSON value; returns the typed record (keys of SCHEMA minus `line`)."""
    if not isinstance(obj, dict):
        raise Rejected("not-an-object", f"line is JSON {type(obj).__name__}, not an object")
    return parse_record(obj)


_FIELD_KEYS: tuple[bytes, ...] = tuple(f'"{f}"'.encode() for f in INPUT_FIELDS)


def duplicate_field(line: bytes) -> str | None:
    """The first contract field named twice at the top level of a valid JSON object line, if any.

    RFC 8259 leaves duplicate names open and parsers differ (orjson keeps the last, polars the
    first), so the contract refuses them: a record must not mean two things. Other keys are
    ignored, their duplicates too. Keys are compared decoded (`"ho\\u0073t"` is `host`).
    """
    if b"\\" not in line and all(line.count(k) <= 1 for k in _FIELD_KEYS):
        return None  # every key is literal and no field name occurs twice anywhere in the line
    try:
        pairs = json.loads(line, object_pairs_hook=lambda p: p)
    except RecursionError:
        raise Rejected("invalid-json", "nested too deeply") from None
    seen: set[str] = set()
    for key, _ in pairs:
        if key in _FIELD_SET:
            if key in seen:
                return key
            seen.add(key)
    return None


_FIELD_SET = frozenset(INPUT_FIELDS)


def parse_line(line: bytes) -> dict[str, Any]:
    """The reference parser: one raw line → typed record, or `Rejected` with the reason."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Rejected("invalid-utf8", f"not valid UTF-8 at byte {e.start}") from None
    try:
        obj = orjson.loads(line)  # strict: lone surrogates, raw control characters, NaN are refused
    except orjson.JSONDecodeError as e:
        raise Rejected("invalid-json", str(e)) from None
    if isinstance(obj, dict):
        dup = duplicate_field(line)
        if dup is not None:
            raise Rejected("duplicate-key", f"{dup} appears twice")
    return parse_object(obj)


# ---------------------------------------------------------------- fast path (one chunk)

_DECODE_SCHEMA = {f: pl.String for f in INPUT_FIELDS}
# polars hands over a JSON number/bool/object/array in a string field as its text. Values that
# could be such text are checked against the raw line; client_ip needs no check (no such text
# is an IP address).
_MAYBE_NOT_STRING = r"^(?:-?[0-9]|true$|false$|\[|\{)"  # a JSON number is a digit or - and a digit
_GUARDED = ("host", *OPTIONAL_STRING_FIELDS)  # string fields where any text is a valid value
_NON_STRING_VALUE = re.compile(rb'"(?:' + "|".join(re.escape(f) for f in _GUARDED).encode() + rb')"\s*:\s*[-0-9tf\[{]')
_UNKNOWN = list(UNKNOWN_MARKERS)
_BYTES_DIGITS = rf"^[0-9]{{1,{len(str(MAX_BYTES))}}}$"  # up to MAX_BYTES' digits; longer ones (leading zeros) go to parse_line


def _optional_string(name: str) -> pl.Expr:
    return pl.when(pl.col(name).is_in(_UNKNOWN)).then(None).otherwise(pl.col(name))


_OPTIONAL = tuple(f.name for f in BY_NAME.values() if not f.required)


def _vectorised(df: pl.DataFrame) -> pl.DataFrame:
    """Typed columns plus `ok`: the rows this path can vouch for. Others go to `parse_line`."""
    # Soundness over completeness: this path only has to never accept what parse_line would
    # reject; anything it does not accept goes to parse_line. polars' float cast takes the JSON
    # number grammar plus inf/nan (refused by is_finite below), nothing parse_line would refuse.
    # An optional field no line of the chunk has (null_count is metadata: free) is a typed null
    # column, with no work per row: a chunk without the newer fields costs what it did before them.
    absent = {f for f in _OPTIONAL if df.get_column(f).null_count() == df.height}

    def value(name: str, expr: pl.Expr) -> pl.Expr:
        return pl.lit(None, dtype=SCHEMA[name]) if name in absent else expr

    ts_us = (pl.col("@timestamp").cast(pl.Float64, strict=False) * 1_000_000).round(0, mode="half_to_even")
    # a 3-byte string that casts to 100..599 can only be three digits
    status_s = pl.col("status")
    status = pl.when(status_s.str.len_bytes() == 3).then(status_s.cast(pl.Int32, strict=False))
    rt_s = pl.col("request_time")
    rt_unknown = rt_s.is_null() | rt_s.is_in(_UNKNOWN)
    rt = rt_s.cast(pl.Float64, strict=False)
    # bytes: ASCII digits only (a JSON number's text is digits too; 512.0, 1e3 go to parse_line)
    by_s = pl.col("bytes")
    by_unknown = by_s.is_null() | by_s.is_in(_UNKNOWN)
    by = pl.when(by_s.str.contains(_BYTES_DIGITS)).then(by_s.cast(pl.Int64, strict=False))
    out = df.select(
        # integer µs where finite and in range (ISO timestamps are filled in later, exactly, as integers)
        ts=pl.when(ts_us.is_finite() & (ts_us >= 0) & (ts_us < MAX_TS_US)).then(ts_us.cast(pl.Int64, strict=False)),
        status=status,
        # one zero: -0 is 0.0
        request_time=value("request_time", pl.when(rt_unknown).then(None).when(rt == 0).then(0.0).otherwise(rt)),
        client_ip=pl.col("client_ip"),
        host=pl.col("host"),
        **{f: value(f, _optional_string(f)) for f in OPTIONAL_STRING_FIELDS},
        bytes=value("bytes", pl.when(by_unknown).then(None).otherwise(by)),
        rt_ok=pl.lit(True)
        if "request_time" in absent
        else rt_unknown | (rt.is_not_null() & rt.is_finite() & (rt >= 0) & (rt <= MAX_REQUEST_TIME)),
        by_ok=pl.lit(True) if "bytes" in absent else by_unknown | (by.is_not_null() & (by <= MAX_BYTES)),
    )
    guarded = [pl.col(f).str.contains(_MAYBE_NOT_STRING) for f in _GUARDED if f not in absent]
    maybe_not_string = pl.any_horizontal(guarded).fill_null(False) if guarded else pl.lit(False)
    return out.with_columns(ip_ok=pl.col("client_ip").str.contains(_IPV4_PATTERN).fill_null(False), check=maybe_not_string)


def _ok_expr() -> pl.Expr:
    """The rows `_vectorised` (with ISO timestamps and canonical IPs filled in) can vouch for."""
    return (
        pl.col("ts").is_not_null()
        & (pl.col("ts") >= 0)
        & (pl.col("ts") < MAX_TS_US)
        & pl.col("status").is_between(100, 599)
        & pl.col("ip_ok")
        & (pl.col("host").str.len_bytes() > 0).fill_null(False)
        & pl.col("rt_ok")
        & pl.col("by_ok")
    ).fill_null(False)


_FIELD_KEY_PATTERN = '"(?:' + "|".join(re.escape(f) for f in INPUT_FIELDS) + ')"'


_COLON = ord(":")


def _unvouched_rows(df: pl.DataFrame, text: bytes, row_lines: list[bytes] | None) -> list[int] | None:
    """Rows (positions in df) polars may have read differently from parse_line, or None for none.

    polars decodes keys silently and keeps the first of two equal keys; parse_line decodes keys
    and refuses a field named twice. Every key is followed by a `:` and each field polars found
    has a key of its own, so when the chunk holds exactly as many `:` as fields found, no row
    repeats a field (one memchr-speed count; seed-like lines pass it). Otherwise the literal
    field keys are counted (one vectorised pass; a key can only differ from its literal text
    through a `\\u` escape); if those are still more than the fields found, or the chunk has a
    `\\u` escape, only the lines with a `\\u` or a field key seen twice go to the reference.
    """
    escaped = text.find(b"\\") >= 0 and b"\\u" in text  # memchr first: the two-byte search is slower
    if not escaped:
        found = df.select(pl.sum_horizontal(pl.all().is_not_null().sum())).item()
        if int(np.count_nonzero(np.frombuffer(text, np.uint8) == _COLON)) == found:  # vectorised: half of bytes.count
            return None
        keys = pl.Series([text.decode("utf-8", "replace")]).str.count_matches(_FIELD_KEY_PATTERN).item()
        if keys == found:
            return None
    lines = row_lines if row_lines is not None else split_lines(text)
    return [k for k, raw in enumerate(lines) if (escaped and b"\\u" in raw) or any(raw.count(key) > 1 for key in _FIELD_KEYS)]


def _typed_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA, orient="row") if rows else pl.DataFrame(schema=SCHEMA)


def _finish(df: pl.DataFrame) -> pl.DataFrame:
    return df.select(pl.col(c).cast(t) for c, t in SCHEMA.items())


def _slow(lines: list[bytes], indices: list[int]) -> tuple[list[dict[str, Any]], list[Rejection]]:
    good: list[dict[str, Any]] = []
    bad: list[Rejection] = []
    for i in indices:
        raw = lines[i]
        try:
            rec = parse_line(raw)
        except Rejected as r:
            bad.append(Rejection(i, r.reason, r.detail, raw))
        else:
            rec["line"] = i
            good.append(rec)
    return good, bad


def split_lines(chunk: bytes) -> list[bytes]:
    """Lines of a chunk without their terminators (a final newline does not make an empty line)."""
    lines = chunk.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]


def parse_lines(lines: list[bytes]) -> ParsedChunk:
    """Parse a list of raw lines (one record each; blank lines are skipped, not records)."""
    keep = [i for i, ln in enumerate(lines) if ln.strip()]
    if any(b"\n" in ln for ln in lines):  # a message with an embedded newline: one by one
        return _parse_indexed_slow(lines, keep)
    if len(keep) != len(lines):
        return _parse_indexed(lines, keep)
    return _parse_indexed(lines, None)


def parse_chunk(chunk: bytes) -> ParsedChunk:
    """Parse NDJSON bytes made of whole lines. Row `line` = index among the chunk's lines.

    Lines a vectorised decoder cannot take (not an object, broken, control bytes, invalid UTF-8,
    NaN, `\\u` escapes, blank) are found first by one byte scan and blanked out of the chunk, so
    one bad line does not cost its chunk; they go to `parse_line` one by one, as do lines in a
    small piece the decoder still refuses (`_decode`). `fallback` counts them all.
    """
    if not chunk:
        return ParsedChunk(pl.DataFrame(schema=SCHEMA), span=0)
    sc = scan(chunk)
    return _from_scanned(_decode(sc.text, len(sc.rows)), chunk, sc)


_LEAF_ROWS = 64  # a piece this small that still does not decode goes to parse_line line by line


def _decode(text: bytes, rows: int) -> pl.DataFrame:
    """`rows` rows of the decoded NDJSON `text`. When the decoder refuses it (a line broken in a way
    the scan does not know), the text is halved until the pieces that fail are small; their rows
    come back all null, so the caller hands them to parse_line. One such line costs ~log2(rows)
    decodes of shrinking pieces, not its chunk."""
    if not rows:
        return pl.DataFrame(schema=_DECODE_SCHEMA)
    try:
        df = pl.read_ndjson(text, schema=_DECODE_SCHEMA)
        if df.height == rows:
            return df
    except Exception:  # noqa: BLE001 - polars raises several types for one bad line; the halves find it
        pass
    if not text.endswith(b"\n"):
        text += b"\n"
    newlines = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 0x0A)
    frames: list[pl.DataFrame] = []

    def piece(lo: int, hi: int) -> None:
        start = int(newlines[lo - 1]) + 1 if lo else 0
        part = text[start : int(newlines[hi - 1]) + 1]
        try:
            df = pl.read_ndjson(part, schema=_DECODE_SCHEMA)
            if df.height == hi - lo:
                frames.append(df)
                return
        except Exception:  # noqa: BLE001
            pass
        if hi - lo <= _LEAF_ROWS:
            frames.append(pl.DataFrame(schema=_DECODE_SCHEMA).clear(hi - lo))
            return
        mid = (lo + hi) // 2
        piece(lo, mid)
        piece(mid, hi)

    piece(0, rows)
    return pl.concat(frames)


_ISO_RE = (
    r"^([0-9]{4}-[0-9]{2}-[0-9]{2})[T ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{6}|[0-9]{3}))?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})?$"
)


def _iso_us(s: pl.Series) -> pl.Series:
    """Epoch µs of the ISO-8601 strings in the one strict form that is read alike by fromisoformat
    and by this arithmetic (date, T or space, hh:mm:ss, 3 or 6 fraction digits, Z or ±hh:mm, or no
    zone = UTC); null for anything else (leap seconds, other forms), which parse_line then reads."""
    g = s.str.extract_groups(_ISO_RE).struct.unnest()
    g.columns = ["date", "h", "m", "s", "frac", "tz"]
    frac = pl.col("frac")
    tz = pl.col("tz")
    off_h = tz.str.slice(1, 2).cast(pl.Int64, strict=False)
    off_m = tz.str.slice(4, 2).cast(pl.Int64, strict=False)
    sign = pl.when(tz.str.starts_with("-")).then(-1).otherwise(1)
    offset = pl.when(tz.is_null() | (tz == "Z")).then(0).otherwise(sign * (off_h * 3600 + off_m * 60))
    h, m, sec = (pl.col(c).cast(pl.Int64) for c in ("h", "m", "s"))
    days = pl.col("date").str.to_date("%Y-%m-%d", strict=False).cast(pl.Int64)
    micro = (
        pl.when(frac.is_null())
        .then(0)
        .when(frac.str.len_bytes() == 3)
        .then(frac.cast(pl.Int64) * 1000)
        .otherwise(frac.cast(pl.Int64))
    )
    valid = (h <= 23) & (m <= 59) & (sec <= 59) & (tz.is_null() | (tz == "Z") | ((off_h <= 23) & (off_m <= 59)))
    us = (days * 86_400 + h * 3600 + m * 60 + sec - offset) * 1_000_000 + micro
    return g.select(pl.when(valid).then(us).otherwise(None)).to_series()


def _canonical_ips(values: pl.Series) -> pl.Series:
    """Canonical client IPs (null where parse_client_ip refuses), computed once per distinct value
    and remembered across chunks (a bounded memo of a pure function): logs repeat their clients,
    so this costs per client, not per line or per chunk."""
    distinct = values.unique().drop_nulls().to_list()
    memo = _CANONICAL_IPS
    if len(memo) > _CANONICAL_IPS_MAX:
        memo.clear()
    canon: list[str | None] = []
    for v in distinct:
        if v not in memo:
            try:
                memo[v] = parse_client_ip(v)
            except Rejected:
                memo[v] = None
        canon.append(memo[v])
    return values.replace_strict(distinct, canon, default=None, return_dtype=pl.String)


_CANONICAL_IPS: dict[str, str | None] = {}
_CANONICAL_IPS_MAX = 100_000  # entries (~10 MiB at most); cleared, not evicted one by one, when full


_QUOTE, _SPACE = ord('"'), ord(" ")


def _tail_code(name: bytes) -> int:
    return int.from_bytes(name[-4:], "little")


# The contract's field names told apart by their last four bytes (distinct, checked at import)
# and their length. Every name has at least four bytes.
_FIELD_NAMES = [f.encode() for f in INPUT_FIELDS]
_TAIL_CODES = np.array([_tail_code(n) for n in _FIELD_NAMES], dtype=np.uint32)
_NAME_LENGTHS = np.array([len(n) for n in _FIELD_NAMES], dtype=np.int64)
_SORTED_CODES = np.sort(_TAIL_CODES)
_SORTED_LENGTHS = _NAME_LENGTHS[np.argsort(_TAIL_CODES)]
assert len(set(_TAIL_CODES.tolist())) == len(_FIELD_NAMES) and _NAME_LENGTHS.min() >= 4


def _field_keys_per_line(arr: np.ndarray, at: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per line of the chunk: at least how many of its keys name a contract field (each one
    counted, nested or repeated), and the lines with a `:` after a space (a key may precede it:
    those lines are counted differently, by the caller).

    A key is `"` + name + `"` + optional whitespace + `:`; whitespace other than a space is a
    control byte (the scan's suspects), and only a `\\u` escape can make a key's text differ from
    its name (the scan's suspects too). So every contract key of a line the scan lets through
    ends in `":` or ` :`. For each `":`, the four bytes before the closing quote and the opening
    quote where the name of that ending must start are compared (vectorised over the chunk): a
    key that matches without being the field (`"xxerver"`, a `"` before a `:` in a string value,
    which needs an escaped quote) only adds to the count, and more keys than fields found sends
    a line to parse_line, never the other way."""
    before = arr[np.maximum(at - 1, 0)]
    ends = at[before == _QUOTE]  # the `:` of each `":`
    ends = ends[ends >= 6]  # room for `"` + four bytes + `"` before it
    tail = arr[ends - 5].astype(np.uint32)
    for shift, back in ((8, 4), (16, 3), (24, 2)):
        tail |= arr[ends - back].astype(np.uint32) << shift
    which = np.minimum(np.searchsorted(_SORTED_CODES, tail), len(_SORTED_CODES) - 1)
    hit = _SORTED_CODES[which] == tail
    ends = ends[hit]
    opening = ends - 2 - _SORTED_LENGTHS[which[hit]]
    ok = opening >= 0
    found = ends[ok][arr[opening[ok]] == _QUOTE]
    marks = np.searchsorted(found, starts)  # `found` is sorted: keys before each line's start
    counts = np.diff(np.append(marks, len(found)))
    spaced = np.unique(np.searchsorted(starts, at[before == _SPACE], side="right") - 1)
    return counts, spaced


def _repeated_field_rows(chunk: bytes, sc: Scan, df: pl.DataFrame) -> np.ndarray:
    """Rows (decoder positions) whose line may name a contract field twice.

    polars keeps the first of two equal keys; parse_line refuses a field named twice. Every key is
    followed by a `:` and each field polars found has a key of its own, so when the chunk holds as
    many `:` as fields found, no line repeats a field (the common case for seed-like lines). Else
    the contract keys of each line are counted (`_field_keys_per_line`, vectorised over the chunk's
    bytes): a row with more of them than fields found (a repeat, a field name in a nested object,
    a field whose value is null) goes to parse_line. Lines with a `:` after a space have their
    keys counted by a regex instead. Escaped keys never get here: the scan sends every line with a
    `\\u` escape to parse_line."""
    found = df.select(pl.sum_horizontal(pl.all().is_not_null())).to_series().to_numpy()
    arr = np.frombuffer(chunk, dtype=np.uint8)
    at = np.flatnonzero(arr == _COLON)
    if len(at) == int(found.sum()):  # no line has a `:` beyond its fields' keys (suspect lines included)
        return np.empty(0, dtype=np.int64)
    per_line, spaced = _field_keys_per_line(arr, at, sc.starts)
    rows = np.flatnonzero(per_line[sc.rows] > found)
    if len(spaced):
        other = np.flatnonzero(np.isin(sc.rows, spaced) & ~np.isin(sc.rows, sc.suspects))
        if len(other):
            keys = sc.text_rows(other).str.count_matches(_FIELD_KEY_PATTERN).to_numpy()
            rows = np.union1d(rows[~np.isin(rows, other)], other[keys > found[other]])
    return rows


def _from_scanned(df: pl.DataFrame, chunk: bytes, scan: Scan) -> ParsedChunk:
    """Typed rows for the lines the scan let through; suspects and unvouched rows go to parse_line."""
    typed = _vectorised(df).with_columns(line=pl.Series("line", scan.rows, dtype=pl.Int64))
    need_ts = typed.get_column("ts").is_null() & df.get_column("@timestamp").is_not_null()
    if need_ts.any():
        idx = need_ts.arg_true()
        iso = _iso_us(df.get_column("@timestamp").gather(idx))
        typed = typed.with_columns(typed.get_column("ts").scatter(idx, iso))
    need_ip = ~typed.get_column("ip_ok") & typed.get_column("client_ip").is_not_null()
    if need_ip.any():
        idx = need_ip.arg_true()
        ips = _canonical_ips(typed.get_column("client_ip").gather(idx))
        typed = typed.with_columns(
            typed.get_column("client_ip").scatter(idx, ips),
            typed.get_column("ip_ok").scatter(idx, ips.is_not_null()),
        )
    typed = typed.with_columns(ok=_ok_expr())
    n_lines = len(scan.starts)
    drop = np.zeros(df.height, dtype=bool)
    if len(scan.rows) == n_lines and len(scan.suspects):  # suspects were blanked in place: rows to leave out
        drop[scan.suspects] = True
    drop[_repeated_field_rows(chunk, scan, df)] = True
    if typed.get_column("check").any():  # a string field whose text could be a non-string JSON value
        rows = typed.select((pl.col("check") & pl.col("ok")).arg_true()).to_series().to_list()
        lines = scan.rows
        drop[[r for r in rows if _NON_STRING_VALUE.search(scan.line(int(lines[r]), chunk))]] = True
    ok = typed.get_column("ok").to_numpy() & ~drop
    slow = set(scan.suspects.tolist())
    slow.update(scan.rows[~ok & ~np.isin(scan.rows, scan.suspects)].tolist())
    blank = 0
    good: list[dict[str, Any]] = []
    bad: list[Rejection] = []
    for i in sorted(slow):
        raw = scan.line(i, chunk)
        if not raw.strip():
            blank += 1
            continue
        try:
            rec = parse_line(raw)
        except Rejected as r:
            bad.append(Rejection(i, r.reason, r.detail, raw))
        else:
            rec["line"] = i
            good.append(rec)
    fast = _finish(typed.filter(pl.Series(ok)))
    recs = pl.concat([fast, _typed_frame(good)]).sort("line") if good else fast
    return ParsedChunk(recs, bad, n_lines - blank, fallback=len(slow) - blank, span=n_lines)


def _parse_indexed(lines: list[bytes], keep: list[int] | None) -> ParsedChunk:
    """Decode the chunk's lines; lines that do not decode on their own go to the reference path."""
    idx = keep if keep is not None else list(range(len(lines)))
    sub = [lines[i] for i in idx]
    try:
        df = pl.read_ndjson(b"\n".join(sub) + b"\n", schema=_DECODE_SCHEMA) if sub else None
        if df is not None and df.height != len(sub):
            raise ValueError("row count mismatch")
    except Exception:  # noqa: BLE001
        good, bad = [], []
        undecodable: list[int] = []
        for i in idx:
            try:
                ln = lines[i]
                ln.decode("utf-8")
                if not isinstance(orjson.loads(ln), dict):
                    raise ValueError
            except Exception:  # noqa: BLE001
                undecodable.append(i)
        if not undecodable:  # polars refuses what every line's own decoder takes: no retry loop, one by one
            return _parse_indexed_slow(lines, idx)
        g, b = _slow(lines, undecodable)
        bad.extend(b)
        good.extend(g)
        broken = set(undecodable)
        rest = [i for i in idx if i not in broken]
        if rest:
            inner = _parse_indexed(lines, rest)
            frames = [inner.records]
            if good:
                frames.append(_typed_frame(good))
            recs = pl.concat(frames).sort("line")
            return ParsedChunk(recs, sorted(inner.rejected + bad, key=lambda r: r.index), len(idx))
        return ParsedChunk(_typed_frame(good), bad, len(idx))
    if df is None:
        return ParsedChunk(pl.DataFrame(schema=SCHEMA), [], 0)
    return _from_decoded(df, b"\n".join(sub), lines, idx)


def _parse_indexed_slow(lines: list[bytes], idx: list[int]) -> ParsedChunk:
    good, bad = _slow(lines, idx)
    return ParsedChunk(_typed_frame(good), bad, len(idx))


def _from_decoded(df: pl.DataFrame, text: bytes, lines: list[bytes] | None, idx: list[int] | None) -> ParsedChunk:
    n = df.height
    typed = _vectorised(df).with_columns(ok=_ok_expr())
    line_no = pl.Series("line", idx, dtype=pl.Int64) if idx is not None else pl.int_range(0, n, eager=True).alias("line")
    typed = typed.with_columns(line_no)
    unvouched = _unvouched_rows(df, text, [lines[i] for i in idx] if lines is not None and idx is not None else None)
    if unvouched:
        typed = typed.with_columns(ok=pl.col("ok") & ~pl.int_range(0, n).is_in(unvouched))
    if typed.get_column("check").any():
        if lines is None:
            lines = split_lines(text)
        # A string field whose text could have come from a non-string JSON value: ask the raw line.
        rows = typed.filter(pl.col("check") & pl.col("ok")).get_column("line").to_list()
        bad = [i for i in rows if _NON_STRING_VALUE.search(lines[i])]
        if bad:
            typed = typed.with_columns(ok=pl.col("ok") & ~pl.col("line").is_in(bad))
    ok = typed.get_column("ok")
    if ok.all():
        return ParsedChunk(_finish(typed), [], n)
    if lines is None:
        lines = split_lines(text)
    pos = typed.filter(~pl.col("ok")).get_column("line").to_list()
    good, bad = _slow(lines, pos)
    frames = [_finish(typed.filter(pl.col("ok")))]
    if good:
        frames.append(_typed_frame(good))
    recs = pl.concat(frames, how="vertical").sort("line") if len(frames) > 1 else frames[0]
    return ParsedChunk(recs, bad, n)
