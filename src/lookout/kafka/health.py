"""Broker reachability, said once per outage, and retrying until the broker answers.

librdkafka reconnects by itself (with backoff); what the user needs is one readable line when
the brokers become unreachable and one when they are back, not a stream of socket errors. A
`BrokerHealth` belongs to a connection (`KafkaConnection.health`), never to the module: two
pipelines in one process do not report each other's outages.

One disconnect is not an outage: a broker closing an idle client's connection looks like "all
brokers down" to that client. An outage is said when a second error confirms the first within
`CONFIRM` s or, `CONFIRM` s after the first, the brokers do not even take a TCP connection.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("lookout.kafka")
T = TypeVar("T")

# librdkafka error names that mean "cannot reach or talk to the brokers" (vs. one bad request)
DOWN_CODES = frozenset({"_TRANSPORT", "_ALL_BROKERS_DOWN", "_RESOLVE", "_TIMED_OUT", "_AUTHENTICATION", "_SSL"})


class BrokerHealth:
    """Tracks whether the brokers are reachable; logs the change, not every failed attempt."""

    CONFIRM = 1.0  # s: one disconnect is not an outage (brokers close idle connections; see error())

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.up_since = 0.0  # monotonic time the last outage ended (0: none yet)
        self.first_error: float | None = None  # a connection error not yet confirmed by another
        self.last_reason = ""
        self._last_said = 0.0
        self._lock = threading.Lock()

    def error(self, err: Any, bootstrap: str) -> None:
        """librdkafka's error callback (any thread)."""
        code = err.name() if hasattr(err, "name") else str(err)  # a KafkaError, or anything else
        text = err.str() if hasattr(err, "str") else str(err)
        with self._lock:
            if code not in DOWN_CODES:
                log.warning("kafka: %s", text)
                return
            now = time.monotonic()
            self.last_reason = text
            if self.first_error is not None and now - self.first_error > 30 * self.CONFIRM:
                self.first_error = None  # an old, lone disconnect confirms nothing
            if self.down_since is None and (self.first_error is None or now - self.first_error < self.CONFIRM):
                # unconfirmed: said when a second error comes CONFIRM s later, or when the brokers
                # do not take a TCP connection CONFIRM s after the first (_probe)
                if self.first_error is None:
                    self.first_error = now
                    timer = threading.Timer(self.CONFIRM, self._probe, (bootstrap, now))
                    timer.daemon = True
                    timer.start()
                return
            if self.down_since is None:
                self._declare(bootstrap, now)
            elif now - self._last_said >= 30:
                self._last_said = now
                log.warning(
                    "kafka: broker %s still unreachable after %.0f s (%s); still retrying",
                    bootstrap,
                    now - self.down_since,
                    self.last_reason,
                )

    def _declare(self, bootstrap: str, now: float) -> None:
        self.down_since = self.first_error or now
        self._last_said = now
        log.warning(
            "kafka: broker %s unreachable (%s); retrying with backoff, nothing is committed until it is back",
            bootstrap,
            self.last_reason,
        )

    def _probe(self, bootstrap: str, since: float) -> None:
        """CONFIRM s after a lone error: brokers that refuse a TCP connection are down."""
        if self.first_error != since or self.down_since is not None:
            return  # answered since, or already said
        for addr in bootstrap.split(","):
            host, _, port = addr.strip().rpartition("://")[2].rpartition(":")
            try:
                socket.create_connection((host.strip("[]"), int(port)), timeout=1.0).close()
                return  # it takes connections: a lone disconnect, unless another error confirms it
            except (OSError, ValueError):
                continue
        with self._lock:
            if self.first_error == since and self.down_since is None:
                self._declare(bootstrap, time.monotonic())

    def ok(self) -> None:
        """Something succeeded against the broker."""
        self.first_error = None
        if self.down_since is None:
            return
        with self._lock:
            if self.down_since is not None:
                self.up_since = time.monotonic()
                log.warning("kafka: broker reachable again after %.1f s; carrying on", self.up_since - self.down_since)
                self.down_since = None

    @property
    def down(self) -> bool:
        return self.down_since is not None


def with_retry(
    what: str,
    fn: Callable[[], T],
    health: BrokerHealth,
    stop: Callable[[], bool] = lambda: False,
    give_up_after: float | None = None,
) -> T:
    """Call fn until it succeeds: the broker may be down at start, and that is not a reason to die.
    Gives up (re-raising the last error) when `stop()` says so or after `give_up_after` seconds."""
    delay = 0.5
    t0 = time.monotonic()
    while True:
        try:
            out = fn()
            health.ok()
            return out
        except Exception as e:  # KafkaException and friends: report and retry
            if stop() or (give_up_after is not None and time.monotonic() - t0 >= give_up_after):
                raise
            log.warning("kafka: %s failed (%s); retrying in %.1f s (%.0f s so far)", what, e, delay, time.monotonic() - t0)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
