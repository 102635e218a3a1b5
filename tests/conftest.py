"""Shared test set-up. Each integration keeps its service fixtures in tests/fixtures/<area>.py."""

from __future__ import annotations

import gzip
import os
import shutil
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.elasticsearch",
    "tests.fixtures.nginx",
    "tests.fixtures.receiver",
]


# `lookout run` serves metrics on 127.0.0.1:8080 by default; tests run in parallel, so every
# `lookout run` a test starts inherits --http off unless the test passes its own free port.
os.environ.setdefault("LOOKOUT_HTTP", "off")


@pytest.fixture
def lookout_cmd() -> list[str]:
    """The installed console script, run as a real subprocess."""
    exe = Path(sys.executable).parent / "lookout"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "lookout"]


@pytest.fixture(scope="session")
def apache_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real combined-format log (tests/data/README.md), decompressed once per session."""
    src = DATA / "apache_logs.gz"
    if not src.exists():
        pytest.fail(f"{src} is missing: the test data set is part of the repository")
    out = tmp_path_factory.mktemp("data") / "apache_logs"
    with gzip.open(src, "rb") as fin, out.open("wb") as fout:
        shutil.copyfileobj(fin, fout)
    return out
