"""Parsing on the other cores: worker processes turn NDJSON chunks into parsed chunks, in order.

Guarantee: `ParsePool.parsed(chunks)` yields exactly what `Pipeline.parse` would give for each
chunk, in input order; only where the work runs differs. The engine stays in the calling
process (on its own core); each worker (`python -m lookout.parsepool`) runs `parse_chunk` with a
one-thread polars pool.

Nothing crosses a process boundary as pickle: a chunk goes as raw bytes (a file in a private
tmpfs directory, its name over the worker's stdin), a result comes back the same way as two
Arrow IPC streams (valid records; rejected lines) behind a fixed header (`_encode`). A worker that dies is an error
(`ParseWorkerFailed`), never a silent gap in the input.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from typing import BinaryIO

import polars as pl

from lookout.records import ParsedChunk, Rejection
from lookout.sources.base import Chunk

_HEADER = struct.Struct("<qqqqq")  # lines, fallback, span, bytes of the records stream, bytes of the rejections stream
_REJECTIONS = {"index": pl.Int64, "reason": pl.String, "detail": pl.String, "raw": pl.Binary}


def default_parse_workers() -> int:
    """One parse process per core on a multi-core machine (the engine shares a core with reading
    and sinks); none on one core, where a parse thread overlaps as well as processes would."""
    cores = os.cpu_count() or 1
    return cores if cores > 1 else 0


PIECE_BYTES = 4 << 20  # a parse process holds about ten times its piece at its peak (replay.POOL_CHUNK_BYTES)


def piece_bounds(data: bytes, size: int = PIECE_BYTES) -> list[tuple[int, int]]:
    """(start, end) of whole-line pieces of about `size` bytes (a line longer than `size` is one piece)."""
    out: list[tuple[int, int]] = []
    start = 0
    while len(data) - start > size:
        cut = data.rfind(b"\n", start, start + size)
        if cut < 0:
            cut = data.find(b"\n", start + size)
            if cut < 0:
                break
        out.append((start, cut + 1))
        start = cut + 1
    if start < len(data):
        out.append((start, len(data)))
    return out


def pieces(data: bytes, size: int = PIECE_BYTES) -> list[bytes]:
    """Whole-line pieces of about `size` bytes (a line longer than `size` is one piece)."""
    return [data[a:b] for a, b in piece_bounds(data, size)]


def merged(parts: list[tuple[ParsedChunk, int]]) -> ParsedChunk:
    """One parsed chunk from the parsed pieces of a chunk, each with its count of `\n`-ended
    lines: row `line` and rejection indices count from the chunk's first line, as one parse would."""
    if len(parts) == 1:
        return parts[0][0]
    frames: list[pl.DataFrame] = []
    rejected: list[Rejection] = []
    lines = fallback = offset = 0
    for parsed, newlines in parts:
        frames.append(parsed.records.with_columns(pl.col("line") + offset) if offset else parsed.records)
        rejected += [Rejection(r.index + offset, r.reason, r.detail, r.raw) for r in parsed.rejected]
        lines += parsed.lines
        fallback += parsed.fallback
        offset += newlines
    return ParsedChunk(pl.concat(frames), rejected, lines, fallback)


class ChunkTicket:
    """A chunk handed to the parse processes in whole-line pieces (the workers' tickets, in order)."""

    def __init__(self, pool: ParsePool, parts: list[int]) -> None:
        self.pool = pool
        self.parts = parts

    def result(self) -> ParsedChunk:
        """The chunk's parsed result (the pieces' results merged, in order); call once, in submission
        order. Each piece's lines are counted by its worker (`span`), not again here."""
        return merged([(parsed, parsed.span) for parsed in (self.pool.result(t) for t in self.parts)])


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
    return _HEADER.pack(parsed.lines, parsed.fallback, parsed.span, len(a), len(b)) + a + b


def _decode(data: bytes) -> ParsedChunk:
    if len(data) < _HEADER.size:
        raise ParseWorkerFailed("a parse worker sent a short answer")
    lines, fallback, span, na, nb = _HEADER.unpack_from(data)
    at = _HEADER.size
    recs = pl.read_ipc_stream(data[at : at + na])
    rej = pl.read_ipc_stream(data[at + na : at + na + nb])
    rejected = [Rejection(i, reason, detail, raw) for i, reason, detail, raw in rej.iter_rows()]
    return ParsedChunk(recs, rejected, lines, fallback, span)


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


_SHM_MIN_FREE = 512 << 20  # a container's /dev/shm is often 64 MiB: too small for the chunks in flight


def _shm_dir() -> str | None:
    """/dev/shm when it is a writable directory with room (tmpfs: chunk files never touch a disk),
    else the default temp dir (a disk's page cache serves files this short-lived almost as well)."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    roomy = st.f_bavail * st.f_frsize >= _SHM_MIN_FREE
    return "/dev/shm" if roomy and os.access("/dev/shm", os.W_OK | os.X_OK) else None


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_MALLOC_KEEP = 64 << 20


def keep_freed_memory() -> None:
    """Let glibc's malloc reuse freed buffers of up to 64 MiB instead of returning them to the
    kernel at once. Chunks, pieces and their results are MiB-sized bytes objects allocated and
    freed every step; by default each is a fresh mmap whose pages the kernel faults in and zeroes
    again (measured: a parse process took 230k page faults and 0.6 s of system time per 200k
    messy lines; with this 70k and 0.35 s). Memory stays bounded: at most 128 MiB of free heap is
    kept before it is trimmed. Does nothing where the C library is not glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _MALLOC_KEEP)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MALLOC_KEEP)
    except (OSError, AttributeError):  # not glibc (musl, macOS): its allocator's defaults stand
        pass


_DIR_PREFIX = "lookout-parse-"


def _sweep_stale(parent: str | None) -> None:
    """Remove exchange directories of pools whose process is gone (SIGKILL leaves a few chunk files)."""
    import shutil
    import tempfile

    base = parent or tempfile.gettempdir()
    try:
        names = [n for n in os.listdir(base) if n.startswith(_DIR_PREFIX)]
    except OSError:
        return
    for name in names:
        pid = name[len(_DIR_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or os.path.exists(f"/proc/{pid}"):
            continue
        path = os.path.join(base, name)
        if os.stat(path).st_uid == os.getuid():
            shutil.rmtree(path, ignore_errors=True)


def worker_main() -> None:
    """A parse worker: on stdin, length-prefixed names of chunk files in the exchange directory
    (argv[1]); for each it writes `<name>.out` (the encoded result) and answers on stdout with the
    result's length. An empty name or end of input ends it."""
    import signal

    from lookout.records import parse_chunk

    # Ctrl-C reaches the whole foreground process group: the parent stops in order and ends its
    # workers by closing their input, so the signal is not theirs to act on (no traceback, no early exit)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_freed_memory()
    folder = sys.argv[1]
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames may reach the parent's pipe
    while name := _recv_frame(inp):
        path = os.path.join(folder, os.path.basename(name.decode()))
        with open(path, "rb") as f:
            data = f.read()
        os.unlink(path)
        result = _encode(parse_chunk(data))
        del data
        with open(path + ".out", "wb") as f:
            f.write(result)
        _send(out, _LEN.pack(len(result)))


class ParsePool:
    """`workers` parse processes (`python -m lookout.parsepool`), started once: plain child processes
    with pipes, so nothing of this process (its main module, threads, locks) is re-run or inherited.

    Chunks and results cross as files in a private directory on tmpfs (/dev/shm); the pipes carry
    only their names and lengths. Why not the bytes through the pipes: with pipe threads, each
    64 KiB pipe write or read gives the GIL back to a thread that must wait for the engine to
    release it (the 5 ms switch interval), and that wait, not parsing, set the pace (measured:
    the cores were idle 60 % of a replay). A file is written and read in one system call each,
    and the calling thread does it, so there are no pipe threads. At most `depth` chunks per
    worker (a few MiB each) are in the directory at once; it is removed on close, and a directory
    left by a killed process is removed by the next pool."""

    def __init__(self, workers: int) -> None:
        import tempfile

        keep_freed_memory()  # this process reads and writes every chunk too
        # one core each: the engine keeps the other busy; polars' allocator (jemalloc) keeps freed pages
        # 5 s before giving them back, as glibc's does above (measured: half the page faults of a replay)
        env = {"_RJEM_MALLOC_CONF": "dirty_decay_ms:5000,muzzy_decay_ms:5000", **os.environ, "POLARS_MAX_THREADS": "1"}
        parent = _shm_dir()
        _sweep_stale(parent)
        self.folder = tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-", dir=parent)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.inflight: list[deque[str]] = []  # names sent to each worker, oldest first
        self._seq = 0
        self._next = 0
        for _ in range(workers):
            p = subprocess.Popen(
                [sys.executable, "-m", "lookout.parsepool", self.folder],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
            self.procs.append(p)
            self.inflight.append(deque())

    def _put(self, k: int, data: bytes | memoryview) -> None:
        self._seq += 1
        name = f"c{self._seq}"
        with open(os.path.join(self.folder, name), "wb") as f:
            f.write(data)
        try:
            stdin = self.procs[k].stdin
            assert stdin is not None
            _send(stdin, name.encode())
        except (OSError, ValueError):
            raise ParseWorkerFailed(f"parse worker {k} died (exit code {self.procs[k].poll()})") from None
        self.inflight[k].append(name)

    def _recv(self, k: int) -> ParsedChunk:
        stdout = self.procs[k].stdout
        assert stdout is not None
        head = _recv_frame(stdout)
        name = self.inflight[k].popleft()
        path = os.path.join(self.folder, name)
        if head is None or len(head) != _LEN.size:
            try:
                code = self.procs[k].wait(1)
            except subprocess.TimeoutExpired:
                code = None
            raise ParseWorkerFailed(f"parse worker {k} died (exit code {code})")
        (n,) = _LEN.unpack(head)
        with open(path + ".out", "rb") as f:
            data = f.read()
        os.unlink(path + ".out")
        if len(data) != n:
            raise ParseWorkerFailed(f"parse worker {k} wrote {len(data)} bytes of a {n}-byte result")
        return _decode(data)

    def submit(self, data: bytes | memoryview) -> int:
        """Hand NDJSON bytes to the next worker; `result(ticket)` gives its parsed chunk. Results of
        one worker come back in the order given, so callers take them in submission order."""
        if not data:
            raise ValueError("empty chunk: an empty name is the end-of-input frame; parse empty chunks in process")
        k = self._next
        self._next = (k + 1) % len(self.procs)
        self._put(k, data)
        return k

    def result(self, ticket: int) -> ParsedChunk:
        return self._recv(ticket)

    def submit_chunk(self, data: bytes, piece_bytes: int = PIECE_BYTES) -> ChunkTicket:
        """Hand a chunk of any size to the workers in whole-line pieces of about `piece_bytes`: one
        engine step for the chunk (the engine's cost is mostly per step), while no parse process
        holds more than a piece."""
        with memoryview(data) as view:  # pieces are written from the chunk, not copied out of it first
            return ChunkTicket(self, [self.submit(view[a:b]) for a, b in piece_bounds(data, piece_bytes)])

    def parsed(
        self, chunks: Iterator[Chunk], depth: int = 2, piece_bytes: int = PIECE_BYTES
    ) -> Iterator[tuple[Chunk, ParsedChunk]]:
        """Each chunk with its parsed result, in order. A chunk goes to the workers in pieces of
        about `piece_bytes` (merged back into one result). At least the next chunk is in flight
        while the caller steps the engine on one (more, up to `depth` pieces per worker, when chunks
        are small), so the workers stay busy. Chunks without NDJSON bytes (`lines` sources) are parsed here."""
        from lookout.pipeline import Pipeline

        pending: deque[tuple[Chunk, ChunkTicket | None]] = deque()
        it = iter(chunks)
        limit = depth * len(self.procs)
        in_flight = 0
        failure: BaseException | None = None
        while True:
            while failure is None and (len(pending) < 2 or in_flight < limit):
                try:
                    chunk = next(it, None)
                except Exception as e:  # noqa: BLE001 - e.g. InputDamaged: the chunks before it come first
                    failure = e
                    break
                if chunk is None:
                    break
                if not chunk.data:  # `lines` chunks, and empty ones (an empty frame is the workers' end-of-input)
                    pending.append((chunk, None))
                else:
                    ticket = self.submit_chunk(chunk.data, piece_bytes)
                    in_flight += len(ticket.parts)
                    pending.append((chunk, ticket))
            if not pending:
                if failure is not None:
                    raise failure
                return
            chunk, ticket = pending.popleft()
            if ticket is None:
                yield chunk, Pipeline.parse(chunk)
            else:
                in_flight -= len(ticket.parts)
                yield chunk, ticket.result()

    def close(self) -> None:
        import shutil

        for p in self.procs:
            try:
                if p.stdin is not None:
                    _send(p.stdin, b"")
                    p.stdin.close()
            except (OSError, ValueError):
                pass
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> ParsePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    worker_main()
