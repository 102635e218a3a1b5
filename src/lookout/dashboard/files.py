"""Reading the run's output files (results, incidents, dead letters) for the dashboard.

Files are read from their end and only up to `max_bytes` (the newest lines are the ones a
dashboard shows), so a result file of many gigabytes costs the same as a small one. A line
being appended while we read (no newline yet) is left out; a line that is not JSON is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

MAX_BYTES = 16 << 20


def tail_lines(path: Path, max_bytes: int = MAX_BYTES) -> list[bytes]:
    """The complete lines within the last `max_bytes` of the file, oldest first."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            start = max(0, size - max_bytes)
            f.seek(start)
            data = f.read(size - start)
    except (FileNotFoundError, IsADirectoryError):
        return []
    lines = data.split(b"\n")
    lines.pop()  # after the last newline: empty, or a line still being written
    if start > 0 and lines:
        lines.pop(0)  # cut in the middle
    return [ln for ln in lines if ln.strip()]


def json_lines(path: Path, max_bytes: int = MAX_BYTES) -> Iterator[dict[str, Any]]:
    for ln in tail_lines(path, max_bytes):
        try:
            obj = orjson.loads(ln)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            yield obj


def iso_us(s: Any) -> int | None:
    """`2022-08-03T06:51:40.000Z` → epoch microseconds (None when it is not such a string)."""
    if not isinstance(s, str):
        return None
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    return round(dt.timestamp() * 1_000_000)


def result_rows(
    path: Path, value_name: str, group_by: tuple[str, ...], max_bytes: int = MAX_BYTES
) -> Iterator[tuple[int, int, tuple, Any]]:
    """(start, end, key, value) of each result line (the seed's JSON)."""
    for obj in json_lines(path, max_bytes):
        w = obj.get("window")
        if not isinstance(w, dict):
            continue
        start, end = iso_us(w.get("start")), iso_us(w.get("end"))
        if start is None or end is None:
            continue
        yield start, end, tuple(obj.get(f) for f in group_by), obj.get(value_name)


def query_results(
    path: Path, since_us: int | None, until_us: int | None, key: dict[str, str], limit: int
) -> list[dict[str, Any]]:
    """Result lines whose window starts in [since, until) and whose key fields equal `key`
    (compared as text), newest `limit` of them, oldest first."""
    out: list[dict[str, Any]] = []
    for obj in json_lines(path):
        w = obj.get("window")
        start = iso_us(w.get("start")) if isinstance(w, dict) else None
        if start is None:
            continue
        if since_us is not None and start < since_us:
            continue
        if until_us is not None and start >= until_us:
            continue
        if any(str(obj.get(f)) != v for f, v in key.items()):
            continue
        out.append(obj)
    return out[-limit:]
