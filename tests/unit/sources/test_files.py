"""file_chunks: whole lines, every byte once, line numbers that match the file, whatever the block size."""

from __future__ import annotations

import gzip
import random

import pytest

from lookout.sources.files import BOM, file_chunks


def _lines(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    # short and long lines (some longer than the block), empty ones, \r\n endings
    return [b"x" * rng.choice([0, 1, 5, 40, 300, 5000]) + rng.choice([b"\n", b"\r\n"]) for _ in range(400)]


@pytest.mark.parametrize("block", [1, 7, 64, 1000, 4096, 1 << 20])
@pytest.mark.parametrize("tail", [b"", b"no newline at the end"])
@pytest.mark.parametrize("gz", [False, True])
def test_chunks_are_whole_lines_in_order(tmp_path, block, tail, gz):
    data = b"".join(_lines(block)) + tail
    path = tmp_path / ("in.ndjson.gz" if gz else "in.ndjson")
    path.write_bytes(gzip.compress(BOM + data) if gz else BOM + data)
    chunks = list(file_chunks(str(path), chunk_bytes=block))
    assert b"".join(c.data for c in chunks) == data  # every byte once, in order, the BOM skipped
    assert all(c.data.endswith(b"\n") for c in chunks[:-1]) and all(c.data for c in chunks)
    line = 1
    for c in chunks:
        assert c.first_line == line
        line += c.data.count(b"\n")
    assert chunks[-1].position == len(data) + len(BOM)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.ndjson"
    path.write_bytes(b"")
    assert list(file_chunks(str(path))) == []
