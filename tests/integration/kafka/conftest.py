"""Every Kafka integration test: no `lookout run` left behind by a failed test (those started
through test_kafka.Run, which the other modules here share)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.kafka.test_kafka import kill_leftover_runs


@pytest.fixture(autouse=True)
def _kill_leftover_runs() -> Iterator[None]:
    yield
    kill_leftover_runs()
