"""Messy input for the Spark differential tests: seed-format records with every value shape the
record contract accepts, out-of-order within the lateness, and lines it rejects."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from lookout.sources.generator import Generator, GeneratorConfig

RULES_YAML = """
lateness: 10s
rules:
  - name: goal1-topic
    window: {size: 20s, hop: 1s}
    group_by: client_ip
    aggregate: count
    threshold: count > 10
    emit: alert
  - name: goal2-topic
    window: {size: 30s, hop: 1s}
    filter: {status: 400-499}
    group_by: host
    aggregate: count
    threshold: count > 15
    emit: alert
  - name: goal3-topic
    window: 1 minute
    filter: {status: 200-299}
    group_by: country
    aggregate: count
    emit: final
  - name: goal4-topic
    window: 1 minute
    group_by: host
    aggregate: avg(request_time)
    emit: final
  - name: hop-45s-15s
    window: {size: 45s, hop: 15s}
    filter: {method: [GET, POST]}
    group_by: [host, method]
    aggregate: count
    threshold: count >= 12
    emit: alert
  - name: min-rt
    window: 30s
    group_by: server
    aggregate: min(request_time)
  - name: max-rt
    window: {size: 2m, hop: 30s}
    group_by: country
    aggregate: max(request_time)
    threshold: max(request_time) > 0.9
    emit: final
  - name: sum-rt-by-status
    window: 1 minute
    filter: {request_time: 0.1-5}
    group_by: status
    aggregate: sum(request_time)
  - name: avg-status
    window: {size: 20s, hop: 10s}
    group_by: [server, country]
    aggregate: avg(status)
    threshold: "> 230"
    emit: final
  - name: slow-clients
    window: 10s
    filter: {status: [5xx, 429]}
    group_by: client_ip
    aggregate: max(status)
  - name: path-404
    window: 1 minute
    filter: {status: 404, bytes: 0-100000}
    group_by: path
    aggregate: count
    emit: final
  - name: bytes-per-client
    window: {size: 1 minute, hop: 30s}
    filter: {path: [/, /api/items, /login]}
    group_by: [client_ip, user_agent]
    aggregate: sum(bytes)
    threshold: sum(bytes) > 1000.5
    emit: final
  - name: avg-bytes-by-referer
    window: 1 minute
    group_by: referer
    aggregate: avg(bytes)
"""

INVALID_LINES = [
    "this is not json",
    "[1, 2, 3]",
    "42",
    '{"status": "200", "client_ip": "1.2.3.4", "host": "h"}',
    '{"@timestamp": "yesterday", "status": "200", "client_ip": "1.2.3.4", "host": "h"}',
    '{"@timestamp": 1659509500.5, "status": "abc", "client_ip": "1.2.3.4", "host": "h"}',
    '{"@timestamp": 1659509500.5, "status": 700, "client_ip": "1.2.3.4", "host": "h"}',
    '{"@timestamp": 1659509500.5, "client_ip": "1.2.3.4", "host": "h"}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "999.1.2.3", "host": "h"}',
    '{"@timestamp": 1659509500.5, "status": 200, "host": "h"}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4"}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": 5}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": ""}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": "h", "request_time": "slow"}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": "h", "request_time": -1}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": "h", "country": 7}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": "h", "method": true}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": "h", "server": [1]}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": "h"} trailing',
    '{"@timestamp": -5, "status": 200, "client_ip": "1.2.3.4", "host": "h"}',
    '{"@timestamp": "1e400", "status": 200, "client_ip": "1.2.3.4", "host": "h"}',
    '{"@timestamp": 1659509500.5, "status": 200.5, "client_ip": "1.2.3.4", "host": "h"}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": 1234, "host": "h"}',
    '{"@timestamp": 1659509500.5, "status": true, "client_ip": "1.2.3.4", "host": "h"}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": "h", "request_time": "1e400"}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": "h"',
    # issue 20: what a fast path could read differently from the reference
    '{"@timestamp": 1659509500.5, "status": "200", "client_ip": "1.2.3.4", "host": "h", "status": "404"}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": "h", "ho\\u0073t": "x"}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "ho\\u0073t": {"evil": 1}}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": "\\ud800evil"}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": "h", "request_time": 9.3e12}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "fe80::1%eth0", "host": "h"}',
    '{"@timestamp": "١٦٥٩٥٠٩٥٠٠", "status": 200, "client_ip": "1.2.3.4", "host": "h"}',
    '\ufeff{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": "h"}',  # a BOM
    '{"@timestamp": "9998-01-01T00:00:00Z", "status": 200, "client_ip": "1.2.3.4", "host": "h"}',
    '{"@timestamp": 253339228800, "status": 200, "client_ip": "1.2.3.4", "host": "h"}',
    '{"@timestamp": "2016-12-31T12:00:60Z", "status": 200, "client_ip": "1.2.3.4", "host": "h"}',  # no leap second then
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "١.٢.٣.٤", "host": "h"}',
    '{"@timestamp": 1659509500.5, "status": "２０１", "client_ip": "1.2.3.4", "host": "h"}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": "h", "request_time": "٠.٥"}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "::ffff:1.2.3.4%0", "host": "h"}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": "h", "host": "h"}',
    # issue 9: the optional fields' own reasons
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": "h", "bytes": "-5"}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": "h", "bytes": 1.5}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": "h", "bytes": "10000000000000"}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": "h", "path": 404}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": "h", "user_agent": ["x"]}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": "h", "referer": {"a": 1}}',
    '{"@timestamp": 1659509500.5, "status": 200, "client_ip": "1.2.3.4", "host": "h", "path": "/a", "pa\\u0074h": "/b"}',
]


# Lines that differ only in their bytes, for every reason code of the record contract (and for
# valid records): X is replaced by valid UTF-8 in one twin and by bytes that are not UTF-8 in
# the other, so the first twin has the line's own reason (or none) and the second `invalid-utf8`.
_TWIN_TEMPLATES: list[bytes] = [
    b'{"host": "X", broken',
    b'["X", 1]',
    b'{"status": "200", "client_ip": "1.2.3.4", "host": "X"}',
    b'{"@timestamp": "X", "status": "200", "client_ip": "1.2.3.4", "host": "h"}',
    b'{"@timestamp": T10.5, "client_ip": "1.2.3.4", "host": "X"}',
    b'{"@timestamp": T10.5, "status": "X", "client_ip": "1.2.3.4", "host": "h"}',
    b'{"@timestamp": T10.5, "status": 200, "host": "X"}',
    b'{"@timestamp": T10.5, "status": 200, "client_ip": "1.2.3.X", "host": "h"}',
    b'{"@timestamp": T10.5, "status": 200, "client_ip": "1.2.3.4", "country": "X"}',
    b'{"@timestamp": T10.5, "status": 200, "client_ip": "1.2.3.4", "host": 5, "server": "X"}',
    b'{"@timestamp": T10.5, "status": 200, "client_ip": "1.2.3.4", "host": "h", "request_time": "X"}',
    b'{"@timestamp": T10.5, "status": 200, "client_ip": "1.2.3.4", "host": "h", "country": 7, "server": "X"}',
    b'{"@timestamp": T10.5, "status": 200, "client_ip": "1.2.3.4", "host": "X", "method": true}',
    b'{"@timestamp": T10.5, "status": 200, "client_ip": "1.2.3.4", "host": "X", "server": [1]}',
    # valid records: the twin with good bytes makes results (goal4 by host, goal3 by country, ...)
    b'{"@timestamp": T10.5, "status": 200, "client_ip": "10.7.7.7", "host": "X.example.com", "request_time": 0.5}',
    b'{"@timestamp": "T11.25", "status": "404", "client_ip": "10.7.7.8", "host": "h", "country": "X", "method": "GET"}',
    b'{"@timestamp": T12, "status": 200, "client_ip": "10.7.7.9", "host": "h", "server": "sX", "method": "X"}',
]
_GOOD_BYTES = [b"h\xc3\xa9llo", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80x", b"\xc3\xbc\xc3\x9f"]
# latin-1, not UTF-8 / a reversed BOM / an overlong "/" / a UTF-16 surrogate / a cut 3-byte
# sequence / a code point past U+10FFFF / a lone continuation byte
_BAD_BYTES = [b"h\xe9llo", b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80", b"x\x80"]


START = 1_659_509_400.0


def _at(line: bytes, start: float) -> bytes:
    """`T<seconds>` in a template line → the epoch time `start` + seconds."""
    return re.sub(rb"\bT(\d+(?:\.\d+)?)", lambda m: f"{start + float(m.group(1)):.2f}".encode(), line)


def utf8_twins(start: float = START) -> list[tuple[bytes, bytes]]:
    """(line in valid UTF-8, the same line with other bytes that are not UTF-8), one per template."""
    return [
        (
            _at(t.replace(b"X", _GOOD_BYTES[i % len(_GOOD_BYTES)]), start),
            _at(t.replace(b"X", _BAD_BYTES[i % len(_BAD_BYTES)]), start),
        )
        for i, t in enumerate(_TWIN_TEMPLATES)
    ]


def byte_lines(start: float = START) -> list[bytes]:
    return [x for pair in utf8_twins(start) for x in pair]


BYTE_LINES: list[bytes] = byte_lines()
# Files only: a bare CR inside a line is JSON whitespace (one line for replay, where Spark's text
# source would split it), and a CRLF ending is no part of the line.
# Valid records whose values the contract normalizes (issue 20): canonical client IPs, -0 as 0.
NORMALIZED_LINES: list[bytes] = [
    b'{"@timestamp": T15.5, "status": "404", "client_ip": "::FFFF:102:304", "host": "norm.example.com", "request_time": "-0"}',
    b'{"@timestamp": T16.5, "status": 404, "client_ip": "2001:DB8:0:0::1", "host": "norm.example.com", "request_time": -0.0}',
]
CR_LINES: list[bytes] = [
    b'{"@timestamp": T13.5,\r"status": 200, "client_ip": "10.7.7.10", "host": "cr.example.com"}',
    b'{"@timestamp": T14.5, "status": 200, "client_ip": "10.7.7.11", "host": "crlf.example.com"}\r',
]


def _iso(secs: float, rnd: random.Random) -> str:
    dt = datetime.fromtimestamp(secs, tz=UTC)
    form = rnd.randrange(4)
    if form == 0:
        return dt.isoformat()  # +00:00
    if form == 1:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if form == 2:
        return dt.replace(tzinfo=None).isoformat(sep=" ")  # naive: UTC by the contract
    return dt.astimezone(UTC).isoformat(timespec="milliseconds")


def messy_records(n: int, seed: int, start: float = 1_659_509_400.0) -> list[str]:
    """n valid records in many shapes, shuffled within 6 s of event time (lateness is 10 s),
    with INVALID_LINES and blank lines mixed in."""
    rnd = random.Random(seed)
    extra = random.Random(seed * 7 + 1)  # the optional fields (issue 9): their own stream, the rest unchanged
    gen = Generator(GeneratorConfig(rate=120.0, clients=300, burst_every=40.0, seed=seed), start=start)
    df = gen.records(n)
    rows = df.to_dicts()
    out: list[tuple[float, str]] = []
    for row in rows:
        ts = float(row["@timestamp"])
        rec: dict = dict(row)
        r = rnd.random()
        if r < 0.15:
            rec["@timestamp"] = _iso(ts, rnd)
        elif r < 0.45:
            rec["@timestamp"] = ts  # a JSON number
        if rnd.random() < 0.5:
            rec["status"] = int(rec["status"])
        elif rnd.random() < 0.02:
            rec["status"] = float(rec["status"])  # 201.0 is 201
        x = rnd.random()
        if x < 0.3:
            rec["request_time"] = float(rec["request_time"])
        elif x < 0.34:
            rec["request_time"] = "-"
        elif x < 0.36:
            rec["request_time"] = ""
        elif x < 0.38:
            rec["request_time"] = None
        elif x < 0.40:
            rec["request_time"] = round(rnd.random() * 2, 3)
        if rnd.random() < 0.03:
            rec["country"] = "-"
        if rnd.random() < 0.02:
            del rec["method"]
        if rnd.random() < 0.01:
            rec["client_ip"] = f"2001:db8::{rnd.randrange(1, 50):x}"  # IPv6 is valid
        if extra.random() < 0.7:  # nginx's extended log_format; the others are older records without them
            rec["path"] = extra.choice(["/", "/api/items", "/login", "/static/app.js?v=2", "-", "<script>"])
            rec["bytes"] = extra.choice([0, 512, "2048", "-", 100_000, "17", 512.0, ""])
            rec["user_agent"] = extra.choice(["curl/8.5", "Mozilla/5.0 (X11)", "-", "\u00e9\u0000"])
            rec["referer"] = extra.choice(["https://example.com/", "-", ""])
        out.append((ts + rnd.uniform(0, 6.0), json.dumps(rec)))
    out.sort(key=lambda t: t[0])
    lines = [line for _, line in out]
    for bad in INVALID_LINES + ["", "   "]:
        lines.insert(rnd.randrange(len(lines)), bad)
    return lines


# Records far behind the others (lateness is 10 s), each placed after the records of the time
# in its key: late for some rules (their oldest window had closed) and on time for others.
LATE_LINES: list[tuple[float, bytes]] = [
    (
        40.0,
        b'{"@timestamp": T10.5, "status": 404, "client_ip": "10.8.8.1", "host": "late.example.com", '
        b'"country": "LT", "method": "GET", "request_time": 0.2}',
    ),
    (
        60.0,
        b'{"@timestamp": T25, "status": 200, "client_ip": "10.8.8.2", "host": "api_1.example.com", '
        b'"country": "US", "method": "POST", "server": "s_1", "request_time": 0.9}',
    ),
    (74.0, b'{"@timestamp": T1, "status": 503, "client_ip": "10.8.8.3", "host": "late.example.com", "request_time": 3}'),
]


def messy_bytes(n: int, seed: int, start: float = START, cr_lines: bool = False, late: bool = False) -> list[bytes]:
    """messy_records as bytes, with byte_lines (every reason code twice, in good and in broken
    UTF-8), NORMALIZED_LINES and optionally CR_LINES mixed in near their event time (records come 120 a second)."""
    rnd = random.Random(seed + 1)
    lines = [x.encode() for x in messy_records(n, seed, start)]
    for x in byte_lines(start) + [_at(c, start) for c in NORMALIZED_LINES + (CR_LINES if cr_lines else [])]:
        m = re.search(rb"T?(1\d{9}\.?\d*)", x)
        at = round((float(m.group(1)) - start) * 120) if m else rnd.randrange(len(lines))
        lines.insert(min(len(lines), max(0, at + rnd.randrange(-120, 120))), x)
    if late:
        for when, x in LATE_LINES:
            lines.insert(min(len(lines), round(when * 120)), _at(x, start))
    return lines


def write_messy(path: Path, n: int, seed: int, start: float = START, late: bool = False) -> Path:
    path.write_bytes(b"\n".join(messy_bytes(n, seed, start, cr_lines=True, late=late)) + b"\n")
    return path


def read_lines(path: Path) -> list[str]:
    return sorted(path.read_text().splitlines()) if path.exists() else []


def dead_letters(path: Path) -> list[tuple]:
    """(reason, detail, raw, raw_base64, source) of each dead letter, sorted; line numbers are not compared
    (Spark's file source does not know them)."""
    out = []
    for line in path.read_text().splitlines():
        d = json.loads(line)
        out.append((d["reason"], d["detail"], d["raw"], d.get("raw_base64"), d.get("source")))
    return sorted(out)


def frame_height(path: Path) -> int:
    return pl.read_ndjson(path).height if path.stat().st_size else 0
