"""Parsing on the other cores: worker processes turn NDJSON chunks into parsed chunks, in order.

Guarantee: `ParsePool.parsed(chunks)` yields exactly what `Pipeline.parse` would give for each
chunk, in input order; only where the work runs differs. The engine stays in the calling
process (on its own core); each worker runs `parse_chunk` with a one-thread polars pool.

Nothing crosses a process boundary as pickle: a chunk goes as raw bytes, a result comes back as
two Arrow IPC streams (valid records; rejected lines) behind a fixed header (`_encode`). A worker
that dies is an error (`ParseWorkerFailed`), never a silent gap in the input.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import queue
import struct
import threading
from collections import deque
from collections.abc import Iterator
from multiprocessing.connection import Connection

import polars as pl

from lookout.records import ParsedChunk, Rejection
from lookout.sources.base import Chunk

_HEADER = struct.Struct("<qqqq")  # lines, fallback, bytes of the records stream, bytes of the rejections stream
_REJECTIONS = {"index": pl.Int64, "reason": pl.String, "detail": pl.String, "raw": pl.Binary}


class ParseWorkerFailed(RuntimeError):
    """A parse worker process died or answered something that is not a result."""


def _encode(parsed: ParsedChunk) -> bytes:
    recs = io.BytesIO()
    parsed.records.write_ipc_stream(recs)
    rej = io.BytesIO()
    pl.DataFrame({"index": [r.index for r in parsed.rejected], "reason": [r.reason for r in parsed.rejected],
                  "detail": [r.detail for r in parsed.rejected], "raw": [r.raw for r in parsed.rejected]},
                 schema=_REJECTIONS).write_ipc_stream(rej)
    a, b = recs.getvalue(), rej.getvalue()
    return _HEADER.pack(parsed.lines, parsed.fallback, len(a), len(b)) + a + b


def _decode(data: bytes) -> ParsedChunk:
    if len(data) < _HEADER.size:
        raise ParseWorkerFailed("a parse worker sent a short answer")
    lines, fallback, na, nb = _HEADER.unpack_from(data)
    at = _HEADER.size
    recs = pl.read_ipc_stream(io.BytesIO(data[at:at + na]))
    rej = pl.read_ipc_stream(io.BytesIO(data[at + na:at + na + nb]))
    rejected = [Rejection(i, reason, detail, raw) for i, reason, detail, raw in rej.iter_rows()]
    return ParsedChunk(recs, rejected, lines, fallback)


def _worker(conn: Connection) -> None:
    from lookout.records import parse_chunk

    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:
            return
        if not data:
            return
        conn.send_bytes(_encode(parse_chunk(data)))


class ParsePool:
    """`workers` parse processes, started once (spawn: no inherited threads or locks)."""

    def __init__(self, workers: int) -> None:
        ctx = mp.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[mp.process.BaseProcess] = []
        # a reader and a writer thread per worker: answers are taken as soon as they come and chunks
        # are handed over when the worker is ready, so neither side ever waits for the other's pipe
        self.answers: list[queue.Queue[bytes | None]] = []
        self.requests: list[queue.Queue[bytes]] = []
        saved = os.environ.get("POLARS_MAX_THREADS")
        os.environ["POLARS_MAX_THREADS"] = "1"  # one core each: the engine keeps the other one busy
        try:
            for _ in range(workers):
                here, there = ctx.Pipe(duplex=True)
                p = ctx.Process(target=_worker, args=(there,), daemon=True, name="lookout-parse")
                p.start()
                there.close()
                self.conns.append(here)
                self.procs.append(p)
                q: queue.Queue[bytes | None] = queue.Queue()
                self.answers.append(q)
                threading.Thread(target=self._read, args=(here, q), daemon=True, name="lookout-parse-read").start()
                r: queue.Queue[bytes] = queue.Queue()
                self.requests.append(r)
                threading.Thread(target=self._write, args=(here, r), daemon=True, name="lookout-parse-write").start()
        finally:
            if saved is None:
                os.environ.pop("POLARS_MAX_THREADS", None)
            else:
                os.environ["POLARS_MAX_THREADS"] = saved

    @staticmethod
    def _read(conn: Connection, answers: queue.Queue[bytes | None]) -> None:
        try:
            while True:
                answers.put(conn.recv_bytes())
        except (EOFError, OSError):
            answers.put(None)

    @staticmethod
    def _write(conn: Connection, requests: queue.Queue[bytes]) -> None:
        try:
            while True:
                data = requests.get()
                conn.send_bytes(data)
                if not data:
                    return
        except OSError:  # the worker is gone; its reader reports it
            return

    def _recv(self, k: int) -> ParsedChunk:
        data = self.answers[k].get()
        if data is None:
            self.procs[k].join(1)
            raise ParseWorkerFailed(f"parse worker {k} died (exit code {self.procs[k].exitcode})")
        return _decode(data)

    def parsed(self, chunks: Iterator[Chunk], depth: int = 2) -> Iterator[tuple[Chunk, ParsedChunk]]:
        """Each chunk with its parsed result, in order; up to `depth` chunks in flight per worker.
        Chunks without NDJSON bytes (`lines` sources) are parsed here."""
        from lookout.pipeline import Pipeline

        pending: deque[tuple[Chunk, int | None]] = deque()
        k = 0
        it = iter(chunks)
        limit = depth * len(self.conns)
        failure: BaseException | None = None
        while True:
            while failure is None and len(pending) < limit:
                try:
                    chunk = next(it, None)
                except Exception as e:  # noqa: BLE001 - e.g. InputDamaged: the chunks before it come first
                    failure = e
                    break
                if chunk is None:
                    break
                if chunk.data is None:
                    pending.append((chunk, None))
                else:
                    self.requests[k].put(chunk.data)
                    pending.append((chunk, k))
                    k = (k + 1) % len(self.conns)
            if not pending:
                if failure is not None:
                    raise failure
                return
            chunk, worker = pending.popleft()
            yield chunk, (Pipeline.parse(chunk) if worker is None else self._recv(worker))

    def close(self) -> None:
        for r in self.requests:
            r.put(b"")  # the writer sends it after any chunk still queued, then stops
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
        for c in self.conns:
            c.close()

    def __enter__(self) -> ParsePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
