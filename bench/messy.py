"""Messy benchmark input: the generator's records the way real log shippers deliver them (seeded).

Starting from the clean generated records (`lookout generate`), each line is rewritten with a
seeded mix that real systems produce: numbers as JSON numbers or as strings, a few percent
ISO-8601 timestamps (Z, offsets, fractions, space separator) and IPv6 clients (several spellings,
IPv4-mapped), unknown `request_time` / `country` as `"-"`, extra nested fields, keys in another
order, and about 0.6 % broken lines of a dozen kinds (`BROKEN_KINDS`). The mix is fixed by the
seed, so every run of the benchmark reads the same bytes.

    .venv/bin/python bench/messy.py N OUT [--seed 11]
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from lookout.sources.generator import Generator, GeneratorConfig  # noqa: E402

# share of lines taking each messy variant (independently drawn per field)
P_STATUS_NUMBER = 0.35
P_RT_NUMBER = 0.35
P_RT_UNKNOWN = 0.02
P_TS_NUMBER = 0.30
P_TS_ISO = 0.03
P_IPV6 = 0.03
P_COUNTRY_UNKNOWN = 0.01
P_EXTRA = 0.25
P_SHUFFLED = 0.05
P_BROKEN = 0.006

IPV6_POOL = 400
BROKEN_KINDS = (
    "truncated",
    "invalid-utf8",
    "array",
    "number",
    "null",
    "string",
    "combined-log",
    "concatenated",
    "nan",
    "control-char",
    "lone-surrogate",
    "duplicate-key",
    "missing-host",
    "bad-status",
)
_UTC = UTC


def _ipv6_pool(rng: np.random.Generator) -> list[str]:
    """IPv6 clients in the spellings logs hold: compressed, full upper case, IPv4-mapped."""
    out = []
    for i in range(IPV6_POOL):
        groups = [0x2001, 0xDB8, int(rng.integers(0, 65536)), int(rng.integers(0, 65536)), 0, 0, 0, int(rng.integers(1, 65536))]
        style = i % 4
        if style == 0:
            out.append(f"2001:db8:{groups[2]:x}:{groups[3]:x}::{groups[7]:x}")
        elif style == 1:
            out.append(":".join(f"{g:04X}" for g in groups))
        elif style == 2:
            a, b, c, d = rng.integers(1, 255, 4)
            out.append(f"::ffff:{a}.{b}.{c}.{d}")
        else:
            out.append(f"fe80::{groups[2]:x}:{groups[7]:x}")
    return out


def _iso(ts: float, k: int) -> str:
    dt = datetime.fromtimestamp(ts, _UTC)
    if k == 0:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    if k == 1:
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    if k == 2:
        local = dt.astimezone(timezone(timedelta(hours=2)))
        return local.strftime("%Y-%m-%dT%H:%M:%S.%f") + "+02:00"
    return dt.strftime("%Y-%m-%d %H:%M:%S")


def _broken(kind: str, line: bytes, rng: np.random.Generator) -> bytes:
    if kind == "truncated":
        return line[: int(rng.integers(1, len(line) - 1))]
    if kind == "invalid-utf8":
        return line.replace(b'"host":"', b'"host":"\xff\xfe', 1)
    if kind == "array":
        return b"[" + line + b"]"
    if kind == "number":
        return b"1659509511"
    if kind == "null":
        return b"null"
    if kind == "string":
        return b'"' + line.replace(b'"', b"'") + b'"'
    if kind == "combined-log":
        return b'10.1.2.3 - - [03/Aug/2022:06:51:51 +0000] "GET / HTTP/1.1" 200 612 "-" "curl/8.0"'
    if kind == "concatenated":
        return line + line
    if kind == "nan":
        return line.replace(b'"request_time":', b'"request_time":NaN,"x":', 1)
    if kind == "control-char":
        return line.replace(b'"host":"', b'"host":"a\tb', 1)
    if kind == "lone-surrogate":
        return line.replace(b'"host":"', b'"host":"\\ud800', 1)
    if kind == "duplicate-key":
        return line[:-1] + b',"status":"404"}'
    if kind == "missing-host":
        return line.replace(b'"host":', b'"hostname":', 1)
    return line.replace(b'"status":', b'"status":"2OO","was":', 1)  # bad-status


def messy_lines(clean: list[dict], rng: np.random.Generator) -> list[bytes]:
    n = len(clean)
    pool = _ipv6_pool(rng)
    u = rng.random((n, 10))
    iso_kind = rng.integers(0, 4, n)
    v6 = rng.integers(0, len(pool), n)
    broken_kind = rng.integers(0, len(BROKEN_KINDS), n)
    out = []
    for i, r in enumerate(clean):
        ui = u[i]
        d = dict(r)
        if ui[0] < P_STATUS_NUMBER:
            d["status"] = int(d["status"])
        if ui[1] < P_RT_UNKNOWN:
            d["request_time"] = "-"
        elif ui[1] < P_RT_UNKNOWN + P_RT_NUMBER:
            d["request_time"] = float(d["request_time"])
        if ui[2] < P_TS_ISO:
            d["@timestamp"] = _iso(float(d["@timestamp"]), int(iso_kind[i]))
        elif ui[2] < P_TS_ISO + P_TS_NUMBER:
            d["@timestamp"] = float(d["@timestamp"])
        if ui[3] < P_IPV6:
            d["client_ip"] = pool[int(v6[i])]
        if ui[4] < P_COUNTRY_UNKNOWN:
            d["country"] = "-"
        if ui[5] < P_EXTRA:
            d["upstream"] = {"addr": f"10.0.{i % 250}.{i % 7}:8080", "times": [0.01, float(ui[6])], "cache": None}
            d["tls"] = {"version": "TLSv1.3", "resumed": bool(ui[7] < 0.5)}
        if ui[8] < P_SHUFFLED:
            d = dict(reversed(list(d.items())))
        line = orjson.dumps(d)
        if ui[9] < P_BROKEN:
            line = _broken(BROKEN_KINDS[int(broken_kind[i])], line, rng)
        out.append(line)
    return out


def generate_messy(path: Path, count: int, seed: int = 11, chunk: int = 200_000) -> None:
    gen = Generator(GeneratorConfig(rate=100.0, seed=7), start=1_659_509_400.0)
    rng = np.random.default_rng(seed)
    written = 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        while written < count:
            df = gen.records(min(chunk, count - written)).head(count - written)
            f.write(b"\n".join(messy_lines(df.to_dicts(), rng)) + b"\n")
            written += df.height
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("count", type=int)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    generate_messy(Path(args.out), args.count, args.seed)


if __name__ == "__main__":
    main()
