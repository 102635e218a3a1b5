"""Seed-format records made up on the spot: the seed's data producer, with a realistic mix.

Same fields and value shapes as the seed (every value a string, `@timestamp` epoch seconds
with microseconds), but a status mix that looks like a healthy site (about 6% 4xx, where the
seed's 3-in-8 would put every host over the goal-2 threshold) and, now and then, an injected
burst: one client hammering, or one host throwing 4xx, so alerts stand out in a demo.
Vectorised with numpy so the benchmark can make millions of lines quickly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import polars as pl

from lookout.schema import SEED_FIELDS

SERVERS = [f"s_v{i}" for i in range(1, 6)]
METHODS = ["GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE", "PATCH"]
COUNTRIES = ["US", "DE", "IR", "FR", "GB", "NL", "IN", "BR", "CA", "JP", "SE", "TR"]
COUNTRY_WEIGHTS = np.array([30, 12, 12, 8, 8, 6, 6, 5, 4, 4, 3, 2], dtype=float)
STATUSES = ["200", "201", "204", "301", "304", "400", "401", "403", "404", "429", "500", "502", "503"]
STATUS_WEIGHTS = np.array([70, 6, 3, 3, 6, 1.2, 1, 0.8, 2.5, 0.5, 1, 0.5, 0.5], dtype=float)
HOSTS = [f"api_{i}.example.com" for i in range(1, 41)]


EVENT_RATE = 100.0  # records per second of event time when nothing else sets it


@dataclass
class GeneratorConfig:
    rate: float = EVENT_RATE  # records per second of event time
    clients: int = 2000
    burst_every: float = 45.0  # seconds of event time between injected bursts (0: none)
    seed: int | None = None


class Generator:
    """Makes records for consecutive spans of event time."""

    def __init__(self, cfg: GeneratorConfig, start: float | None = None) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.clock = time.time() if start is None else start
        # Keep per-client and per-host rates what they are at 100 records/s, whatever the rate,
        # so thresholds are crossed by the injected bursts, not by ordinary traffic.
        clients = max(cfg.clients, int(cfg.rate * 20))
        self.hosts = np.array(
            HOSTS if cfg.rate <= 100 else [f"api_{i}.example.com" for i in range(1, int(cfg.rate * 0.4) + 1)], dtype=object
        )
        self.ips = np.array([f"{a}.{b}.{c}.{d}" for a, b, c, d in self.rng.integers(1, 255, size=(clients, 4))], dtype=object)
        self.next_burst = self.clock + (cfg.burst_every / 3 if cfg.burst_every else float("inf"))
        self.bursts: list[dict] = []  # active bursts: their records are made as event time reaches them
        self.burst_kind = 0
        self.seq = 0

    def records(self, n: int, until: float | None = None) -> pl.DataFrame:
        """n records spread evenly up to `until` (default: n / rate seconds on), plus burst records
        falling in the same span (never ahead of it: event time only moves with the clock)."""
        rng = self.rng
        start = self.clock
        end = until if until is not None else start + n / self.cfg.rate
        ts = np.sort(rng.uniform(start, end, size=n)) if n else np.empty(0)
        cols = {
            "server": np.array(SERVERS, dtype=object)[rng.integers(0, len(SERVERS), n)],
            "client_ip": self.ips[rng.integers(0, len(self.ips), n)],
            "method": np.array(METHODS, dtype=object)[rng.integers(0, len(METHODS), n)],
            "status": np.array(STATUSES, dtype=object)[rng.choice(len(STATUSES), n, p=STATUS_WEIGHTS / STATUS_WEIGHTS.sum())],
            "request_time": np.round(rng.gamma(2.0, 0.12, n), 2),
            "host": self.hosts[rng.integers(0, len(self.hosts), n)],
            "country": np.array(COUNTRIES, dtype=object)[
                rng.choice(len(COUNTRIES), n, p=COUNTRY_WEIGHTS / COUNTRY_WEIGHTS.sum())
            ],
            "ts": ts,
        }
        df = pl.DataFrame(cols)
        while self.next_burst < end:
            self.bursts.append(self._new_burst(self.next_burst))
            self.next_burst += self.cfg.burst_every
        parts = [self._burst_records(b, start, end) for b in self.bursts]
        self.bursts = [b for b in self.bursts if b["end"] > end]
        parts = [p for p in parts if p.height]
        if parts:
            df = pl.concat([df, *parts]).sort("ts")
        self.clock = end
        self.seq += df.height
        # every value a string, as in the seed; the columns in the seed's key order
        values = {
            "request_time": pl.col("request_time").round(2).cast(pl.String),
            "@timestamp": pl.col("ts").round(6).cast(pl.String),
        }
        return df.select(values.get(f, pl.col(f)).alias(f) for f in SEED_FIELDS)

    def _new_burst(self, at: float) -> dict:
        """One client hammering (goal 1) or one host answering 4xx (goal 2)."""
        rng = self.rng
        kind = self.burst_kind
        self.burst_kind ^= 1
        span = 5.0 if kind == 0 else 12.0
        times = at + np.sort(rng.uniform(0, span, int(rng.integers(30, 60))))
        return {
            "kind": kind,
            "times": times,
            "end": at + span,
            "client": self.ips[rng.integers(0, len(self.ips))],
            "host": self.hosts[int(rng.integers(0, len(self.hosts)))],
        }

    def _burst_records(self, b: dict, start: float, end: float) -> pl.DataFrame:
        rng = self.rng
        ts = b["times"][(b["times"] >= start) & (b["times"] < end)]
        n = len(ts)
        kind = b["kind"]
        return pl.DataFrame(
            {
                "server": np.array(SERVERS, dtype=object)[rng.integers(0, len(SERVERS), n)],
                "client_ip": np.full(n, b["client"], dtype=object) if kind == 0 else self.ips[rng.integers(0, len(self.ips), n)],
                "method": np.full(n, "GET" if kind == 0 else "POST", dtype=object),
                "status": np.full(n, "200", dtype=object)
                if kind == 0
                else np.array(["404", "403", "401"], dtype=object)[rng.integers(0, 3, n)],
                "request_time": np.round(rng.gamma(2.0, 0.05, n), 2),
                "host": self.hosts[rng.integers(0, len(self.hosts), n)] if kind == 0 else np.full(n, b["host"], dtype=object),
                "country": np.array(COUNTRIES, dtype=object)[rng.integers(0, len(COUNTRIES), n)],
                "ts": ts,
            },
            schema_overrides={"ts": pl.Float64, "request_time": pl.Float64},
        )

    def ndjson(self, n: int, until: float | None = None) -> bytes:
        df = self.records(n, until)
        return df.write_ndjson().encode() if df.height else b""


def generate_file(
    path: str | BinaryIO, count: int, rate: float = 100.0, start: float = 1_659_509_400.0, seed: int = 7, chunk: int = 200_000
) -> None:
    """Write `count` seed-format lines (the benchmark input) to a new file, or to an open binary
    stream as it is (stdout: `>> file` appends, because the shell opened it for appending)."""
    if not isinstance(path, str):
        _write_records(path, count, rate, start, seed, chunk)
        path.flush()
        return
    with open(path, "wb") as f:
        _write_records(f, count, rate, start, seed, chunk)


def _write_records(f: BinaryIO, count: int, rate: float, start: float, seed: int, chunk: int) -> None:
    gen = Generator(GeneratorConfig(rate=rate, seed=seed), start=start)
    written = 0
    while written < count:
        n = min(chunk, count - written)
        df = gen.records(n)
        df = df.head(count - written)
        f.write(df.write_ndjson().encode())
        written += df.height
