"""Results and dead letters as JSON-lines files: DIR/<rule>.jsonl and DIR/rejected.jsonl."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, TYPE_CHECKING

from lookout.sinks.base import Sink

if TYPE_CHECKING:
    from lookout.output import ResultBatch

REJECTED_FILE = "rejected.jsonl"


class FileSink(Sink):
    name = "files"

    def __init__(self, out_dir: str | Path, rules: list[str], append: bool = False, fsync: bool = False) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        mode = "ab" if append else "wb"
        self.fsync = fsync
        self.files: dict[str, IO[bytes]] = {r: open(self.dir / f"{r}.jsonl", mode) for r in rules}  # noqa: SIM115
        self.rejected = open(self.dir / REJECTED_FILE, mode)  # noqa: SIM115

    def write_results(self, batch: ResultBatch) -> None:
        if batch.lines:
            self.files[batch.rule.name].write(b"\n".join(batch.lines) + b"\n")

    def write_rejected(self, entries: list[bytes]) -> None:
        if entries:
            self.rejected.write(b"\n".join(entries) + b"\n")

    def flush(self) -> None:
        for f in (*self.files.values(), self.rejected):
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())

    def close(self) -> None:
        self.flush()
        for f in (*self.files.values(), self.rejected):
            f.close()

    def truncate_to(self, sizes: dict[str, int]) -> None:
        """Cut files back to a checkpoint's sizes, so a resumed run writes nothing twice."""
        for name, f in (*self.files.items(), ("rejected", self.rejected)):
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
        return out
