"""Parse-ahead for `lookout run`: the next chunks are parsed in a thread while the engine works.

Guarantee: chunks come out in the order the source gave them, each with exactly what
`Pipeline.parse` returns for it; at most `depth` chunks are polled ahead of the engine and none
is dropped (`drain` hands back the ones in flight before the loop stops, idles or commits). The
source is polled only from the caller's thread; only parsing (which needs no source or pipeline
state, and spends its time in polars/numpy with the GIL released) runs in the worker.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from lookout.pipeline import Pipeline
from lookout.records import ParsedChunk
from lookout.sources.base import Chunk, Source


class ParseAhead:
    def __init__(self, source: Source, depth: int = 2) -> None:
        self.source = source
        self.depth = depth
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lookout-parse")
        self.pending: deque[tuple[Chunk, Future[ParsedChunk]]] = deque()

    def poll(self, timeout: float) -> tuple[Chunk, ParsedChunk] | None:
        """The oldest chunk polled, parsed; waits up to `timeout` for input only when none is in flight."""
        while len(self.pending) < self.depth:
            chunk = self.source.poll(0 if self.pending else timeout)
            if chunk is None:
                break
            self.pending.append((chunk, self.pool.submit(Pipeline.parse, chunk)))
        if not self.pending:
            return None
        chunk, parsed = self.pending.popleft()
        return chunk, parsed.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
