"""The generator as a `run` source: records at --rate per second, event time = now."""

from __future__ import annotations

import time
from typing import Any

from lookout.sources.base import Chunk, Source
from lookout.sources.generator import Generator, GeneratorConfig


class GeneratorSource(Source):
    name = "generator"

    def __init__(self, rate: float, seed: int | None = None, interval: float = 0.2) -> None:
        self.gen = Generator(GeneratorConfig(rate=rate, seed=seed))
        self.interval = interval
        self.last = time.time()
        self.gen.clock = self.last
        self.carry = 0.0

    def restore(self, position: Any) -> None:
        if position is not None:
            self.gen.seq = int(position)  # record ids continue where they stopped

    def poll(self, timeout: float) -> Chunk | None:
        wait = self.last + self.interval - time.time()
        if wait > 0:
            if wait > timeout:
                time.sleep(timeout)
                return None
            time.sleep(wait)
        now = time.time()
        self.carry += (now - self.last) * self.gen.cfg.rate
        n = int(self.carry)
        self.carry -= n
        first = self.gen.seq
        data = self.gen.ndjson(n, until=now)
        self.last = now
        return Chunk(source="generator", data=data, first_line=first, position=self.gen.seq)
