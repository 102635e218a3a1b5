"""Follow an access log like `tail -F`, and remember exactly where reading stopped.

A file is known by its *identity*: device + inode + a fingerprint of its first line (so a new
file that happens to get an old inode is not mistaken for the old one). The position handed to
the runner (and written by `commit` to STATE_DIR/tail-position.json) is that identity plus the
byte offset and line number after the last whole line emitted, and the same for every rotated
file still being read (`rotated`): a restart resumes each of them.

- First run (no position): read the file from its start; wait for it to appear if missing. With
  `backfill`, the rotated files beside it (`access.log.1`, `access.log.2.gz`, …) are read first,
  oldest first, gzip ones decompressed.
- Rotation by rename (logrotate + nginx USR1 / `nginx -s reopen`): as soon as a new file stands at
  the path it is read, and the old one is read *as well* until it has been idle for `rotate_wait`
  (default 5 min, like Filebeat's close_inactive and Fluent Bit's Rotate_Wait): nginx workers
  reopen asynchronously, and one that cannot reopen (a permission mistake in logrotate's `create`)
  keeps writing to the moved file. When two rotations came before we got to the middle file, the
  chain is followed through it (modification times order the chain).
- copytruncate: the file shrinks below our offset (or its first line changes) → start again
  at 0. Lines written between our last read and the copy are taken from the copy when it is
  found beside the log (same first line, longer than our offset).
- Restart: the checkpointed file is looked for at the path, then beside it (renamed by a
  rotation while lookout was down: `access.log.1`, `access.log-20240101`, …); the rest of it is
  read before the new file. If it is gone, that is logged (its unread tail cannot be had).
  The first checkpoint, written at start before anything is read, already names the file
  (`start_position`). One case stays open: a log still *empty* at that checkpoint has no first
  line to know a copytruncate copy by, so if the run dies before its next checkpoint and the log
  is copied and truncated meanwhile, the restart reads only the truncated log.
- Only whole lines are emitted: a partial last line waits for its newline (a rotated file's
  unterminated last line is emitted once the file is left, since nothing can complete it; the
  runner asks for it with `read_unterminated` when input is idle and when it stops).
- Waiting: on inotify where available (lookout.sources.fswait), polling otherwise.
- A line longer than `read_bytes` (4 MiB) is one dead letter (`line-too-long`, its first KiB
  kept) with its true line number, however long it is; it is skipped, never held in memory.

Record ids (for Elasticsearch) are `<fingerprint>-<byte offset of the line>`: the same line of
the same file always gets the same id, so a replay after a crash overwrites instead of adding.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import time
import zlib
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from lookout.durable import write_atomic
from lookout.errors import ConfigError
from lookout.sources.base import Chunk, Source, numbered_ids
from lookout.sources.files import BOM
from lookout.sources.fswait import DirWatcher
from lookout.sources.nginx import LineConverter, converter_for

log = logging.getLogger("lookout.tail")

POSITION_FILE = "tail-position.json"
FP_BYTES = 256  # fingerprint: the first line, at most this many bytes
READ_BYTES = 4 << 20  # per poll: bounded steps on a first run over a big log; also the longest line read
LONG_LINE_KEPT = 1024  # bytes of an over-long line kept in its dead letter
LINE_TOO_LONG = "line-too-long"
SKIP_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip")
ROTATE_WAIT = 300.0  # seconds a rotated file is still read after its last growth
MAX_ROTATED = 16  # rotated files read at once (open descriptors); beyond, the idlest is finished early


def fingerprint(head: bytes) -> str | None:
    """Hash of a file's first line (or first FP_BYTES bytes); None while that is not written yet."""
    nl = head.find(b"\n")
    if nl >= 0:
        head = head[: nl + 1]
    elif len(head) < FP_BYTES:
        return None
    return hashlib.blake2b(head[:FP_BYTES], digest_size=8).hexdigest()


def _head(fd: int) -> bytes:
    return os.pread(fd, FP_BYTES, 0)


@dataclass
class OpenFile:
    """The file being read and how far: offset/line are after the last line emitted."""

    fd: int
    dev: int
    ino: int
    name: str
    offset: int = 0
    line: int = 1
    fp: str | None = None
    last_growth: float = 0.0
    mtime_ns: int = 0  # last modification seen: orders the files of a rotation chain
    scan: int | None = None  # inside an over-long line starting at `offset`: scanned up to here

    def position(self) -> dict[str, Any]:
        return {
            "dev": self.dev,
            "ino": self.ino,
            "fp": self.fp,
            "offset": self.offset,
            "line": self.line,
            "name": self.name,
            "mtime_ns": self.mtime_ns,
        }

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class BackfillFile:
    """A rotated file read once from start to end on `--backfill` (gzip decompressed as read).
    Its offset counts decompressed bytes, so ids (`<fingerprint>-<offset>`) are the same whether a
    line is read from `access.log.1` or, after logrotate compressed it, from `access.log.1.gz`."""

    def __init__(self, path: Path, fp: str | None, offset: int = 0, line: int = 1) -> None:
        self.path = path
        self.name = str(path)
        self.fp = fp
        self.offset = offset
        self.line = line
        self.gz = path.name.endswith(".gz")
        self._fh: Any = None
        self._carry = b""

    @classmethod
    def probe(cls, path: Path) -> BackfillFile | None:
        try:
            with gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb") as fh:
                fp = fingerprint(fh.read(FP_BYTES))
        except (OSError, EOFError, zlib.error) as e:
            log.warning("%s: cannot be read for the backfill (%s); skipped", path, e)
            return None
        return cls(path, fp)

    def position(self) -> dict[str, Any]:
        return {"name": self.name, "fp": self.fp, "offset": self.offset, "line": self.line}

    def read(self, n: int) -> tuple[bytes, int] | None:
        """(whole lines, bytes they take in the file) from the offset on; None at the end."""
        if self._fh is None:
            self._fh = gzip.open(self.path, "rb") if self.gz else open(self.path, "rb")  # noqa: SIM115
            self._fh.seek(self.offset)  # gzip: decompresses up to it
        data = self._carry + self._fh.read(n)
        self._carry = b""
        if not data:
            return None
        cut = data.rfind(b"\n")
        if cut < 0:
            more = self._fh.read(1)
            if more:  # a line longer than a read: keep it whole
                self._carry = data + more
                return b"", 0
            return data + b"\n", len(data)  # the unterminated end of the file
        self._carry = data[cut + 1 :]
        return data[: cut + 1], cut + 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:  # gone since it was listed
        return 0


def _open(path: Path) -> OpenFile | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        if isinstance(e, PermissionError):
            log.warning("%s: %s", path, e)
        return None
    st = os.fstat(fd)
    f = OpenFile(fd, st.st_dev, st.st_ino, str(path), last_growth=time.monotonic(), mtime_ns=st.st_mtime_ns)
    f.fp = fingerprint(_head(fd))
    return f


class TailSource(Source):
    """`lookout run --tail PATH` and `lookout ship PATH`: whole new lines of one log, converted
    to seed-schema JSON (see lookout.sources.nginx)."""

    def __init__(
        self,
        path: Path | str,
        state_dir: Path | str | None = None,
        log_format: str = "auto",
        host: str | None = None,
        geoip: Path | str | None = None,
        rotate_wait: float = ROTATE_WAIT,
        read_bytes: int = READ_BYTES,
        converter: LineConverter | None = None,
        backfill: bool = False,
    ) -> None:
        self.path = Path(path)
        self.name = f"tail {self.path}"
        self.state_dir = Path(state_dir) if state_dir is not None else None
        try:
            self.conv = converter or converter_for(log_format, host, geoip)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.rotate_wait = rotate_wait
        self.read_bytes = read_bytes
        self.watcher = DirWatcher(self.path.parent)
        self.backfill = backfill
        self.cur: OpenFile | None = None
        self.draining: list[OpenFile] = []  # rotated files still read until idle for rotate_wait
        self.backlog: list[BackfillFile] = []  # --backfill: rotated files to read first, oldest first
        self._turn = 0  # which file is looked at first (round robin: a busy rotated file starves none)
        self.restored = False
        self.announced_wait = False
        self.seen: dict[tuple[int, int, str | None], None] = {}  # files left (or draining) this session, oldest first

    # ---------------------------------------------------------------- position

    def restore(self, position: Any) -> None:
        """Open the file the position refers to (or the log from its start when None)."""
        self.restored = True
        for f in [self.cur, *self.draining, *self.backlog]:
            if f is not None:
                f.close()
        self.cur, self.draining, self.backlog = None, [], []
        if position is None:
            if self.backfill:
                self._start_backfill()
            self.cur = _open(self.path)  # held from now: a rotation during the backfill loses nothing
            return
        pos = dict(position)
        for bp in pos.pop("backfill", None) or []:
            self._restore_backfill(bp)
        for rp in pos.pop("rotated", None) or []:
            self._restore_rotated(rp)
        if "dev" not in pos:  # no current file then (waiting for it to appear)
            self.cur = _open(self.path)
            return
        found = self._find(pos)
        if found is None:
            log.warning(
                "%s: the checkpointed file (%s, fingerprint %s) is not found as it was (deleted, "
                "compressed or truncated while lookout was stopped); whatever it held after byte %d "
                "was not read. Going on with the next file.",
                self.path,
                pos.get("name"),
                pos.get("fp"),
                pos["offset"],
            )
            self.cur = self._next_file(pos.get("mtime_ns", 0), pos.get("fp"))
            return
        found.offset, found.line = pos["offset"], pos["line"]
        self.cur = found
        if found.name != str(self.path):
            log.info("%s: finishing %s (rotated while stopped) from byte %d", self.path, found.name, found.offset)

    def _start_backfill(self) -> None:
        """First start with --backfill: every rotated file beside the log, oldest first."""
        d, base = self.path.parent, self.path.name
        try:
            names = sorted(n for n in os.listdir(d) if n.startswith(base) and n != base)
        except OSError:
            names = []
        files = []
        for n in names:
            if n.endswith(SKIP_SUFFIXES) and not n.endswith(".gz"):
                log.warning("%s: %s is compressed in a format the backfill does not read; skipped", self.path, n)
                continue
            f = BackfillFile.probe(d / n)
            if f is not None:
                files.append(f)
        files.sort(key=lambda f: _mtime(f.path))
        self.backlog = files
        if files:
            log.info(
                "%s: backfill: reading %d rotated files first, oldest first (%s)",
                self.path,
                len(files),
                ", ".join(f.path.name for f in files),
            )

    def _restore_backfill(self, bp: dict[str, Any]) -> None:
        """A backfill file not finished at the checkpoint: found by its first line (it may have been
        renamed or compressed since)."""
        d, base = self.path.parent, self.path.name
        try:
            names = [n for n in os.listdir(d) if n.startswith(base) and n != base]
        except OSError:
            names = []
        order = sorted(names, key=lambda n: (n != Path(bp["name"]).name, n.endswith(".gz")))
        for n in order:
            if n.endswith(SKIP_SUFFIXES) and not n.endswith(".gz"):
                continue
            f = BackfillFile.probe(d / n)
            if f is not None and f.fp == bp["fp"]:
                f.offset, f.line = bp["offset"], bp["line"]
                self.backlog.append(f)
                return
        log.warning(
            "%s: the backfill file %s (fingerprint %s) is gone; whatever it held after byte %d was not read",
            self.path,
            bp["name"],
            bp["fp"],
            bp["offset"],
        )

    def _step_backfill(self) -> Chunk | None:
        f = self.backlog[0]
        try:
            got = f.read(self.read_bytes)
        except (OSError, EOFError, zlib.error) as e:
            log.warning("%s: reading %s stopped at byte %d (%s); the rest of it is not read", self.path, f.name, f.offset, e)
            got = None
        if got is None:
            self.backlog.pop(0)
            f.close()
            log.info("%s: backfill: read %s (%d lines)", self.path, f.name, f.line - 1)
            return Chunk(source=f.name, data=b"", first_line=f.line, position=self.position(), meta={"file": f.name})
        data, consumed = got
        if not data:
            return None
        return self._chunk(f, data, consumed)  # type: ignore[arg-type]  # same fields as OpenFile

    def _restore_rotated(self, rp: dict[str, Any]) -> None:
        """A rotated file that was still being read at the checkpoint: read on from its offset."""
        f = self._find(rp)
        if f is None or any((f.dev, f.ino) == (d.dev, d.ino) for d in self.draining):
            if f is not None:
                f.close()
            log.warning(
                "%s: the rotated file %s (fingerprint %s) that was still being read is gone; whatever it "
                "held after byte %d was not read",
                self.path,
                rp.get("name"),
                rp.get("fp"),
                rp["offset"],
            )
            return
        f.offset, f.line = rp["offset"], rp["line"]
        self.draining.append(f)
        self._seen(f)
        log.info("%s: reading on in the rotated %s from byte %d", self.path, f.name, f.offset)

    def _seen(self, f: OpenFile) -> None:
        self.seen[(f.dev, f.ino, f.fp)] = None
        while len(self.seen) > 64:
            self.seen.pop(next(iter(self.seen)))

    def _find(self, pos: dict[str, Any]) -> OpenFile | None:
        """The file a position refers to: at the path, renamed beside it, or a copy beside it."""
        cands = [self.path] + self._siblings()
        copy: OpenFile | None = None
        for p in cands:
            f = _open(p)
            if f is None:
                continue
            size = os.fstat(f.fd).st_size
            same_fp = pos["fp"] is None or f.fp == pos["fp"]
            if same_fp and size >= pos["offset"] and (f.dev, f.ino) == (pos["dev"], pos["ino"]):
                if copy is not None:
                    copy.close()
                return f
            if pos["fp"] is not None and f.fp == pos["fp"] and size >= pos["offset"] and copy is None:
                copy = f  # copytruncate's copy: same content, another inode
                continue
            f.close()
        return copy

    def _renamed_to(self, f: OpenFile) -> str | None:
        """The name a rotated file has now (found beside the log by its inode), for logs and positions."""
        for p in self._siblings():
            try:
                st = os.stat(p)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (f.dev, f.ino):
                return str(p)
        return None

    def _siblings(self) -> list[Path]:
        """Rotated versions of the log beside it, newest first (compressed ones cannot be read)."""
        d, base = self.path.parent, self.path.name
        try:
            names = [n for n in os.listdir(d) if n.startswith(base) and n != base and not n.endswith(SKIP_SUFFIXES)]
        except OSError:
            return []
        return sorted((d / n for n in names), key=_mtime, reverse=True)

    def _next_file(self, after_ns: int, fp: str | None) -> OpenFile | None:
        """The file that follows one left at modification time `after_ns`: a rotated file beside
        the log written since (two rotations before we got to the middle one, or while stopped),
        oldest first; else the file at the path. Copies of the file left (same first line) and
        files already read are not candidates."""
        best: OpenFile | None = None
        for p in self._siblings():
            f = _open(p)
            if f is None:
                continue
            if (
                f.mtime_ns < after_ns
                or (f.dev, f.ino, f.fp) in self.seen
                or (fp is not None and f.fp == fp)
                or (best is not None and f.mtime_ns >= best.mtime_ns)
            ):
                f.close()
                continue
            if best is not None:
                best.close()
            best = f
        if best is not None:
            log.info("%s: reading %s first (rotated before it was read)", self.path, best.name)
            return best
        return _open(self.path)

    def start_position(self) -> dict[str, Any] | None:
        """The log's identity at offset 0 (None while it does not exist yet)."""
        return self.position()

    def position(self) -> dict[str, Any] | None:
        """The current file's position, plus `rotated`: those of rotated files still being read."""
        pos = self.cur.position() if self.cur is not None else None
        if self.draining:
            pos = {**(pos or {}), "rotated": [d.position() for d in self.draining]}
        if self.backlog:
            pos = {**(pos or {}), "backfill": [b.position() for b in self.backlog]}
        return pos

    def commit(self, position: Any) -> None:
        """Record the delivered position in STATE_DIR/tail-position.json (atomic replace)."""
        if self.state_dir is None or position is None:
            return
        save_position(self.state_dir, position)

    def close(self) -> None:
        for f in [self.cur, *self.draining, *self.backlog]:
            if f is not None:
                f.close()
        self.cur, self.draining, self.backlog = None, [], []
        self.watcher.close()
        self.conv.close()

    # ---------------------------------------------------------------- reading

    def poll(self, timeout: float) -> Chunk | None:
        if not self.restored:
            self.restore(None)
        deadline = time.monotonic() + timeout
        while True:
            chunk = self._step()
            if chunk is not None:
                return chunk
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.watcher.wait(left)  # inotify: until something in the directory changes

    def _step(self) -> Chunk | None:
        """One look at each file (the current one and rotated ones still read), in turn; with a
        backfill pending, that first (the current file is held open meanwhile, unread)."""
        if self.backlog:
            return self._step_backfill()
        files = [*self.draining, None]  # None: the current file
        self._turn = (self._turn + 1) % len(files)
        for f in files[self._turn :] + files[: self._turn]:
            chunk = self._step_current() if f is None else self._step_rotated(f)
            if chunk is not None:
                return chunk
        return None

    def _step_rotated(self, f: OpenFile) -> Chunk | None:
        """New lines of a rotated file; once it has been idle for rotate_wait, it is left (the
        returned empty chunk carries the position without it, so a restart does not look for it)."""
        st = os.fstat(f.fd)
        size, f.mtime_ns = st.st_size, st.st_mtime_ns
        if size > f.offset:
            chunk = self._read(f, size)
            if chunk is not None:
                return chunk
        if time.monotonic() - f.last_growth < self.rotate_wait:
            return None
        if size > f.offset:  # an unterminated last line: nothing will complete it now
            tail = self._read(f, size, final=True)
            if tail is not None:
                return tail
        self.draining.remove(f)
        f.close()
        log.info(
            "%s: finished the rotated %s at byte %d (line %d): idle for %.0fs",
            self.path,
            f.name,
            f.offset,
            f.line - 1,
            self.rotate_wait,
        )
        return Chunk(source=f.name, data=b"", first_line=f.line, position=self.position(), meta={"file": f.name})

    def _step_current(self) -> Chunk | None:
        """One look at the current file: new whole lines, or a rotation/truncation handled, or nothing."""
        if self.cur is None:
            self.cur = _open(self.path)
            if self.cur is None:
                if not self.announced_wait:
                    log.info("%s: waiting for the file to appear", self.path)
                    self.announced_wait = True
                return None
        f = self.cur
        if f.fp is None:
            f.fp = fingerprint(_head(f.fd))
        elif f.offset > 0 and fingerprint(_head(f.fd)) != f.fp:
            self._truncated(f, "its first line changed")
            return None
        st = os.fstat(f.fd)
        size, f.mtime_ns = st.st_size, st.st_mtime_ns
        if size < f.offset:
            self._truncated(f, f"it shrank to {size} bytes from {f.offset}")
            return None
        if size > f.offset:
            chunk = self._read(f, size)
            if chunk is not None:
                return chunk
        return self._maybe_switch(f, size)

    def read_unterminated(self) -> Chunk | None:
        """The file's last line though it has no newline (input idle, or stopping), once every
        whole line before it has been read; None when there is none."""
        f = self.cur
        if f is None:
            return None
        size = os.fstat(f.fd).st_size
        if f.scan is not None:  # an over-long line is pending: it ends here
            return self._read(f, size, final=True)
        if size <= f.offset or b"\n" in os.pread(f.fd, min(self.read_bytes, size - f.offset), f.offset):
            return None  # nothing, or whole lines are still to be read: the last line is not next
        return self._read(f, size, final=True)

    def _read(self, f: OpenFile, size: int, final: bool = False) -> Chunk | None:
        if f.scan is not None:
            return self._skip_long_line(f, size, final)
        data = os.pread(f.fd, min(self.read_bytes, size - f.offset), f.offset)
        if f.offset == 0 and data.startswith(BOM):  # a byte-order mark is not part of the first record
            f.offset = len(BOM)
            data = data[len(BOM) :]
        if not data:
            return None
        f.last_growth = time.monotonic()
        cut = data.rfind(b"\n")
        if cut < 0:
            if len(data) >= self.read_bytes:  # longer than any line we read: skip to its end
                f.scan = f.offset
                return self._skip_long_line(f, size, final)
            if not final:
                return None  # a partial line: wait for its newline
            data += b"\n"  # the unterminated end of a rotated file, or of idle/stopping input
            consumed = len(data) - 1
        else:
            data = data[: cut + 1]
            consumed = len(data)
        if f.fp is None:
            f.fp = fingerprint(_head(f.fd)) or fingerprint(data)
        return self._chunk(f, data, consumed)

    def _skip_long_line(self, f: OpenFile, size: int, final: bool) -> Chunk | None:
        """Scan an over-long line for its end without keeping it; at its end (newline, or end of
        input when `final`) emit it as one dead letter at its own line number."""
        assert f.scan is not None
        end = None
        while f.scan < size:
            block = os.pread(f.fd, min(self.read_bytes, size - f.scan), f.scan)
            if not block:
                break
            f.last_growth = time.monotonic()
            self.rotated_at = None
            nl = block.find(b"\n")
            if nl >= 0:
                end = f.scan + nl
                break
            f.scan += len(block)
        if end is None:
            if not final:
                return None
            end = f.scan
        length = end - f.offset
        head = os.pread(f.fd, min(LONG_LINE_KEPT, length), f.offset)
        # the head plus a marker can never parse as a record, so it is dead-lettered with our reason
        placeholder = head + b" [...]\n"
        f.scan = None
        start, first_line, prefix = f.offset, f.line, f"{f.fp}-"
        f.offset = end + 1 if end < size else end
        f.line += 1
        detail = (
            f"line of {length:,} bytes is longer than the {self.read_bytes:,}-byte limit; "
            f"its first {min(length, LONG_LINE_KEPT):,} bytes are kept here"
        )
        return Chunk(
            source=f.name,
            data=placeholder,
            first_line=first_line,
            position=f.position(),
            record_ids=lambda line: numbered_ids(prefix, pl.Series([start], dtype=pl.Int64).gather(line)),
            meta={"reasons": {0: (LINE_TOO_LONG, detail)}, "file": f.name},
        )

    def _chunk(self, f: OpenFile, raw: bytes, consumed: int) -> Chunk:
        lines = raw.split(b"\n")
        lines.pop()  # raw ends with a newline
        starts = list(accumulate((len(ln) + 1 for ln in lines[:-1]), initial=f.offset))  # byte offset of each line
        data, reasons = self.conv.convert(raw)
        first_line = f.line
        f.offset += consumed
        f.line += len(lines)
        prefix = f"{f.fp}-"

        def record_ids(line: pl.Series) -> pl.Series:
            return numbered_ids(prefix, pl.Series(starts, dtype=pl.Int64).gather(line))

        meta: dict[str, Any] = {"reasons": reasons} if reasons else {}
        meta["file"] = f.name
        return Chunk(source=f.name, data=data, first_line=first_line, position=self.position(), record_ids=record_ids, meta=meta)

    def _truncated(self, f: OpenFile, why: str) -> None:
        """copytruncate: read what the copy holds beyond our offset, then the log from 0."""
        pos = f.position()
        copy = None
        for p in self._siblings():
            c = _open(p)
            if c is None:
                continue
            if c.fp == pos["fp"] and os.fstat(c.fd).st_size > pos["offset"] and (c.dev, c.ino) != (f.dev, f.ino):
                copy = c
                break
            c.close()
        if copy is not None:
            log.info("%s was truncated (%s): finishing its copy %s from byte %d first", self.path, why, copy.name, pos["offset"])
            copy.offset, copy.line = pos["offset"], pos["line"]
            f.close()
            self.cur = copy
            return
        log.info("%s was truncated (%s): reading it again from the start", self.path, why)
        f.offset, f.line = 0, 1
        f.fp = fingerprint(_head(f.fd))
        f.last_growth = time.monotonic()

    def _maybe_switch(self, f: OpenFile, size: int) -> Chunk | None:
        """At the end of the file: a new file at the path means a rotation. Read the new one now
        (or a rotated one written since, first) and keep reading this one beside it until it has
        been idle for rotate_wait. The empty chunk returned carries the new position."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None  # renamed, new one not created yet (nginx reopens on USR1): keep reading the old
        if (st.st_dev, st.st_ino) == (f.dev, f.ino):
            return None
        self._seen(f)
        nxt = self._next_file(f.mtime_ns, f.fp)
        if nxt is None or (nxt.dev, nxt.ino) == (f.dev, f.ino):
            if nxt is not None:
                nxt.close()
            self.seen.pop((f.dev, f.ino, f.fp), None)
            return None
        f.name = self._renamed_to(f) or f.name
        self.draining.append(f)
        if len(self.draining) > MAX_ROTATED:  # rotations faster than rotate_wait: bound the open files
            idlest = min(self.draining, key=lambda d: d.last_growth)
            log.warning(
                "%s: %d rotated files still being read; finishing %s now (read to its end, then left)",
                self.path,
                len(self.draining),
                idlest.name,
            )
            idlest.last_growth = float("-inf")
        log.info(
            "%s: rotated; now reading %s, and %s on from byte %d (line %d) until it has been idle for %.0fs",
            self.path,
            nxt.name,
            f.name,
            f.offset,
            f.line - 1,
            self.rotate_wait,
        )
        self.cur = nxt
        return Chunk(source=nxt.name, data=b"", first_line=nxt.line, position=self.position(), meta={"file": nxt.name})


# ---------------------------------------------------------------- position file (`ship`)


def load_position(state_dir: Path) -> dict[str, Any] | None:
    try:
        return orjson.loads((state_dir / POSITION_FILE).read_bytes())
    except FileNotFoundError:
        return None


def save_position(state_dir: Path, position: dict[str, Any]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(state_dir / POSITION_FILE, orjson.dumps(position))
