"""Parse-ahead for `lookout run`: the next chunks are parsed elsewhere while the engine works.

Guarantee: chunks come out in the order the source gave them, each with exactly what
`Pipeline.parse` returns for it; at most `depth` chunks are polled ahead of the engine and none
is dropped unseen (a chunk polled but not stepped is never committed, so it is read again after a
restart). The source is polled only from the caller's thread; only parsing (which needs no source
or pipeline state) runs elsewhere: in parse processes (`ParsePool`) on a multi-core machine, as
`replay` does, else in a thread.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from lookout.parsepool import ChunkTicket, ParsePool
from lookout.pipeline import Pipeline
from lookout.records import ParsedChunk
from lookout.sources.base import Chunk, Source


class ParseAhead:
    def __init__(self, source: Source, depth: int = 2, workers: int = 0) -> None:
        self.source = source
        self.depth = max(depth, workers)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lookout-parse")
        self.procs = ParsePool(workers) if workers else None
        self.pending: deque[tuple[Chunk, Future[ParsedChunk] | ChunkTicket]] = deque()

    def _submit(self, chunk: Chunk) -> Future[ParsedChunk] | ChunkTicket:
        if self.procs is not None and chunk.data:  # an empty chunk (the generator's idle poll) stays here
            return self.procs.submit_chunk(chunk.data)  # a Kafka batch can be tens of MiB: one step, in pieces
        return self.pool.submit(Pipeline.parse, chunk)

    def poll(self, timeout: float) -> tuple[Chunk, ParsedChunk] | None:
        """The oldest chunk polled, parsed; waits up to `timeout` for input only when none is in flight."""
        while len(self.pending) < self.depth:
            chunk = self.source.poll(0 if self.pending else timeout)
            if chunk is None:
                break
            self.pending.append((chunk, self._submit(chunk)))
        if not self.pending:
            return None
        chunk, parsed = self.pending.popleft()
        return chunk, parsed.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.procs is not None:
            self.procs.close()
