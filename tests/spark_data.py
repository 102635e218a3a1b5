"""Messy input for the Spark differential tests: seed-format records with every value shape the
record contract accepts, out-of-order within the lateness, and lines it rejects."""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone
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
]


def _iso(secs: float, rnd: random.Random) -> str:
    dt = datetime.fromtimestamp(secs, tz=timezone.utc)
    form = rnd.randrange(4)
    if form == 0:
        return dt.isoformat()  # +00:00
    if form == 1:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if form == 2:
        return dt.replace(tzinfo=None).isoformat(sep=" ")  # naive: UTC by the contract
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def messy_records(n: int, seed: int, start: float = 1_659_509_400.0) -> list[str]:
    """n valid records in many shapes, shuffled within 6 s of event time (lateness is 10 s),
    with INVALID_LINES and blank lines mixed in."""
    rnd = random.Random(seed)
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
            rec["client_ip"] = "2001:db8::%x" % rnd.randrange(1, 50)  # IPv6 is valid
        out.append((ts + rnd.uniform(0, 6.0), json.dumps(rec)))
    out.sort(key=lambda t: t[0])
    lines = [line for _, line in out]
    for bad in INVALID_LINES + ["", "   "]:
        lines.insert(rnd.randrange(len(lines)), bad)
    return lines


def write_messy(path: Path, n: int, seed: int, start: float = 1_659_509_400.0) -> Path:
    path.write_text("\n".join(messy_records(n, seed, start)) + "\n")
    return path


def read_lines(path: Path) -> list[str]:
    return sorted(path.read_text().splitlines()) if path.exists() else []


def dead_letters(path: Path) -> list[tuple]:
    """(reason, detail, raw, source) of each dead letter, sorted; line numbers are not compared
    (Spark's file source does not know them)."""
    out = []
    for line in path.read_text().splitlines():
        d = json.loads(line)
        out.append((d["reason"], d["detail"], d["raw"], d.get("source")))
    return sorted(out)


def frame_height(path: Path) -> int:
    return pl.read_ndjson(path).height if path.stat().st_size else 0
