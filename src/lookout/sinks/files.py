"""Results, incidents and dead letters as JSON-lines files: DIR/<rule>.jsonl, DIR/incidents.jsonl
and DIR/rejected.jsonl."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, TYPE_CHECKING

from lookout.sinks.base import Sink

if TYPE_CHECKING:
    from lookout.incidents import Transition
    from lookout.output import ResultBatch

REJECTED_FILE = "rejected.jsonl"
INCIDENTS_FILE = "incidents.jsonl"


class OutputUnwritable(Exception):
    """An output directory (--out, --store, --state-dir) that cannot be created or written."""


def ensure_writable_dir(path: Path, what: str) -> None:
    """Create `path` if needed; `OutputUnwritable` with one clear line if it cannot hold our files."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputUnwritable(f"{what} {path}: cannot create it: {e.strerror or e}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputUnwritable(f"{what} {path}: not writable")


class FileSink(Sink):
    name = "files"

    def __init__(self, out_dir: str | Path, rules: list[str], append: bool = False, fsync: bool = False) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        mode = "ab" if append else "wb"
        self.fsync = fsync
        self.files: dict[str, IO[bytes]] = {r: open(self.dir / f"{r}.jsonl", mode) for r in rules}  # noqa: SIM115
        self.rejected = open(self.dir / REJECTED_FILE, mode)  # noqa: SIM115
        self.incidents = open(self.dir / INCIDENTS_FILE, mode)  # noqa: SIM115

    def write_results(self, batch: ResultBatch) -> None:
        if batch.lines:
            self.files[batch.rule.name].write(b"\n".join(batch.lines) + b"\n")

    def write_rejected(self, entries: list[bytes]) -> None:
        if entries:
            self.rejected.write(b"\n".join(entries) + b"\n")

    def write_incidents(self, transitions: list[Transition]) -> None:
        if transitions:
            self.incidents.write(b"\n".join(t.line for t in transitions) + b"\n")

    def _all(self) -> tuple[IO[bytes], ...]:
        return (*self.files.values(), self.rejected, self.incidents)

    def flush(self) -> None:
        for f in self._all():
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())

    def close(self) -> None:
        self.flush()
        for f in self._all():
            f.close()

    def truncate_to(self, sizes: dict[str, int]) -> None:
        """Cut files back to a checkpoint's sizes, so a resumed run writes nothing twice."""
        for name, f in (*self.files.items(), ("rejected", self.rejected), ("incidents", self.incidents)):
            size = sizes.get(name)
            if size is not None and f.tell() > size:
                f.flush()
                f.truncate(size)
                f.seek(size)

    def checkpoint(self) -> dict[str, int]:
        return self.sizes()

    def restore(self, state: dict[str, int]) -> None:
        self.truncate_to(state)

    def sizes(self) -> dict[str, int]:
        self.flush()
        out = {name: f.tell() for name, f in self.files.items()}
        out["rejected"] = self.rejected.tell()
        out["incidents"] = self.incidents.tell()
        return out
