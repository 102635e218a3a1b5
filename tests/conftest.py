"""Shared test set-up. Each integration keeps its service fixtures in tests/fixtures/<area>.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

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
def apache_logs() -> Path:
    p = Path(os.environ.get("LOOKOUT_APACHE_LOGS", SHARED_DATA / "apache_logs"))
    if not p.exists():
        pytest.fail(f"{p} is missing: the shared data set is part of the test contract")
    return p
