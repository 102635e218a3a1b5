"""Writes that survive a crash or SIGKILL at any instant: a file is either its old or its new
content, never a torn mix (write to a temporary name, fsync, rename, fsync the directory so the
rename itself is on disk)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable (POSIX only promises it after the directory's fsync)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def place(tmp: Path, path: Path) -> None:
    """Move a fully written `tmp` over `path` durably."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path`'s content with `data`: readers (and a restart after a crash) see all or nothing."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
