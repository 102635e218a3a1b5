"""Parsing on the other cores: worker processes turn NDJSON chunks into parsed chunks, in order.

Guarantee: `ParsePool.parsed(chunks)` yields exactly what `Pipeline.parse` would give for each
chunk, in input order; only where the work runs differs. The engine stays in the calling
process (on its own core); each worker (`python -m lookout.parsepool`) runs `parse_chunk` with a
one-thread polars pool.

Nothing crosses a process boundary as pickle: a chunk goes as raw bytes (length-prefixed, over
the worker's stdin), a result comes back on its stdout as two Arrow IPC streams (valid records;
rejected lines) behind a fixed header (`_encode`). A worker that dies is an error
(`ParseWorkerFailed`), never a silent gap in the input.
"""

from __future__ import annotations

import io
import os
import queue
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator
from typing import BinaryIO

import polars as pl

from lookout.records import ParsedChunk, Rejection
from lookout.sources.base import Chunk

_HEADER = struct.Struct("<qqqq")  # lines, fallback, bytes of the records stream, bytes of the rejections stream
_REJECTIONS = {"index": pl.Int64, "reason": pl.String, "detail": pl.String, "raw": pl.Binary}


def default_parse_workers() -> int:
    """One parse process per core on a multi-core machine (the engine shares a core with reading
    and sinks); none on one core, where a parse thread overlaps as well as processes would."""
    cores = os.cpu_count() or 1
    return cores if cores > 1 else 0


class ParseWorkerFailed(RuntimeError):
    """A parse worker process died or answered something that is not a result."""


def _encode(parsed: ParsedChunk) -> bytes:
    recs = io.BytesIO()
    parsed.records.write_ipc_stream(recs)
    rej = io.BytesIO()
    pl.DataFrame(
        {
            "index": [r.index for r in parsed.rejected],
            "reason": [r.reason for r in parsed.rejected],
            "detail": [r.detail for r in parsed.rejected],
            "raw": [r.raw for r in parsed.rejected],
        },
        schema=_REJECTIONS,
    ).write_ipc_stream(rej)
    a, b = recs.getvalue(), rej.getvalue()
    return _HEADER.pack(parsed.lines, parsed.fallback, len(a), len(b)) + a + b


def _decode(data: bytes) -> ParsedChunk:
    if len(data) < _HEADER.size:
        raise ParseWorkerFailed("a parse worker sent a short answer")
    lines, fallback, na, nb = _HEADER.unpack_from(data)
    at = _HEADER.size
    recs = pl.read_ipc_stream(io.BytesIO(data[at : at + na]))
    rej = pl.read_ipc_stream(io.BytesIO(data[at + na : at + na + nb]))
    rejected = [Rejection(i, reason, detail, raw) for i, reason, detail, raw in rej.iter_rows()]
    return ParsedChunk(recs, rejected, lines, fallback)


_LEN = struct.Struct("<Q")


def _send(f: BinaryIO, data: bytes) -> None:
    f.write(_LEN.pack(len(data)))
    f.write(data)
    f.flush()


def _recv_frame(f: BinaryIO) -> bytes | None:
    head = f.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    (n,) = _LEN.unpack(head)
    data = f.read(n)
    return data if len(data) == n else None


def worker_main() -> None:
    """A parse worker: length-prefixed chunks on stdin, length-prefixed results on stdout; an empty
    chunk or end of input ends it."""
    import signal

    from lookout.records import parse_chunk

    # Ctrl-C reaches the whole foreground process group: the parent stops in order and ends its
    # workers by closing their input, so the signal is not theirs to act on (no traceback, no early exit)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames may reach the parent's pipe
    while data := _recv_frame(inp):
        _send(out, _encode(parse_chunk(data)))


class ParsePool:
    """`workers` parse processes (`python -m lookout.parsepool`), started once: plain child processes
    with pipes, so nothing of this process (its main module, threads, locks) is re-run or inherited."""

    def __init__(self, workers: int) -> None:
        env = {**os.environ, "POLARS_MAX_THREADS": "1"}  # one core each: the engine keeps the other busy
        self.procs: list[subprocess.Popen[bytes]] = []
        # a reader and a writer thread per worker: answers are taken as soon as they come and chunks
        # are handed over when the worker is ready, so neither side ever waits for the other's pipe
        self.answers: list[queue.Queue[bytes | None]] = []
        self.requests: list[queue.Queue[bytes]] = []
        self._next = 0
        for _ in range(workers):
            p = subprocess.Popen(
                [sys.executable, "-m", "lookout.parsepool"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
            )
            self.procs.append(p)
            q: queue.Queue[bytes | None] = queue.Queue()
            self.answers.append(q)
            threading.Thread(target=self._read, args=(p.stdout, q), daemon=True, name="lookout-parse-read").start()
            r: queue.Queue[bytes] = queue.Queue()
            self.requests.append(r)
            threading.Thread(target=self._write, args=(p.stdin, r), daemon=True, name="lookout-parse-write").start()

    @staticmethod
    def _read(f: BinaryIO, answers: queue.Queue[bytes | None]) -> None:
        try:
            while (data := _recv_frame(f)) is not None:
                answers.put(data)
        except (OSError, ValueError):
            pass
        answers.put(None)

    @staticmethod
    def _write(f: BinaryIO, requests: queue.Queue[bytes]) -> None:
        try:
            while True:
                data = requests.get()
                _send(f, data)
                if not data:
                    f.close()
                    return
        except (OSError, ValueError):  # the worker is gone; its reader reports it
            return

    def _recv(self, k: int) -> ParsedChunk:
        data = self.answers[k].get()
        if data is None:
            try:
                code = self.procs[k].wait(1)
            except subprocess.TimeoutExpired:
                code = None
            raise ParseWorkerFailed(f"parse worker {k} died (exit code {code})")
        return _decode(data)

    def submit(self, data: bytes) -> int:
        """Hand NDJSON bytes to the next worker; `result(ticket)` gives its parsed chunk. Results of
        one worker come back in the order given, so callers take them in submission order."""
        if not data:
            raise ValueError("empty chunk: b'' is the end-of-input frame; parse empty chunks in process")
        k = self._next
        self._next = (k + 1) % len(self.procs)
        self.requests[k].put(data)
        return k

    def result(self, ticket: int) -> ParsedChunk:
        return self._recv(ticket)

    def parsed(self, chunks: Iterator[Chunk], depth: int = 2) -> Iterator[tuple[Chunk, ParsedChunk]]:
        """Each chunk with its parsed result, in order; up to `depth` chunks in flight per worker.
        Chunks without NDJSON bytes (`lines` sources) are parsed here."""
        from lookout.pipeline import Pipeline

        pending: deque[tuple[Chunk, int | None]] = deque()
        k = 0
        it = iter(chunks)
        limit = depth * len(self.procs)
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
                if not chunk.data:  # `lines` chunks, and empty ones (b"" is the workers' end-of-input)
                    pending.append((chunk, None))
                else:
                    self.requests[k].put(chunk.data)
                    pending.append((chunk, k))
                    k = (k + 1) % len(self.procs)
            if not pending:
                if failure is not None:
                    raise failure
                return
            chunk, worker = pending.popleft()
            yield chunk, (Pipeline.parse(chunk) if worker is None else self._recv(worker))

    def close(self) -> None:
        for r in self.requests:
            r.put(b"")  # the writer sends it after any chunk still queued, then closes the pipe
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()

    def __enter__(self) -> ParsePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    worker_main()
