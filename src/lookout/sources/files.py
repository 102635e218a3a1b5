"""NDJSON files (plain, .gz, or `-` for stdin) read in large chunks of whole lines."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path
from typing import BinaryIO, Iterator

from lookout.sources.base import Chunk

CHUNK_BYTES = 16 << 20  # big enough for polars to parse in parallel, small enough to stay lean


def _open(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    p = Path(path)
    with open(p, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(p, "rb")  # type: ignore[return-value]
    return open(p, "rb")  # noqa: SIM115


def file_chunks(path: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Chunk]:
    """Chunks of whole lines; the last line may lack its newline."""
    # the absolute path: record ids (Elasticsearch _id) must not depend on how the path was typed
    name = "stdin" if path == "-" else str(Path(path).resolve())
    f = _open(path)
    line_no = 1
    offset = 0
    carry = b""
    try:
        while True:
            block = f.read(chunk_bytes)
            if not block:
                break
            data = carry + block
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            carry = data[cut + 1:]
            data = data[: cut + 1]
            offset += len(data)
            yield Chunk(source=name, data=data, first_line=line_no, position=offset)
            line_no += data.count(b"\n")
        if carry:
            offset += len(carry)
            yield Chunk(source=name, data=carry, first_line=line_no, position=offset)
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def input_size(paths: list[str]) -> int | None:
    """Total bytes to read (for a progress bar), when knowable."""
    total = 0
    for p in paths:
        if p == "-" or p.endswith(".gz"):
            return None
        try:
            total += Path(p).stat().st_size
        except OSError:
            return None
    return total
