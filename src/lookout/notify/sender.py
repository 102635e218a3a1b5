"""Delivery of incident notifications: at-least-once, in order per target, across crashes.

The run loop hands each step's transitions to `Notifier.add`; at its commit it `stage`s them in
the outbox (fsynced) before writing the checkpoint and `release`s them after (see outbox.py).
One sender thread per target takes the oldest released row, POSTs it with
`Idempotency-Key: <incident id>:<status>`, and deletes it only on a 2xx. 408, 429, 5xx and
transport errors are retried with capped exponential backoff and jitter (a `Retry-After` is
honoured up to the cap), for as long as it takes; any other answer (4xx, 3xx) is permanent: it is
logged, counted and moved to the outbox's dead-letter table with the reason. Logs name the
target's label, never its URL or headers (they may hold secrets).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import urllib3

from lookout.notify.config import NotifyTarget, target_labels
from lookout.notify.formats import FORMATS
from lookout.notify.outbox import OUTBOX_FILE, Outbox, Pending

if TYPE_CHECKING:
    from lookout.incidents import Transition
    from lookout.rules import RuleSet

log = logging.getLogger("lookout.notify")

TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
USER_AGENT = "lookout-notify/0.1"
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


def _printable(text: str) -> str:
    """A receiver's answer as it may appear in a log line: control characters escaped."""
    return text.translate(_CONTROL)


def backoff(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Capped exponential backoff with jitter in [0.5, 1) of the step, so senders do not come
    back in lockstep after an outage."""
    return min(cap, base * 2 ** min(attempt, 16)) * (0.5 + random.random() / 2)


class TargetSender(threading.Thread):
    """Delivers one target's outbox rows, oldest first."""

    def __init__(self, label: str, target: NotifyTarget, outbox_path: Path, notifier: Notifier) -> None:
        super().__init__(name=f"lookout-notify-{label}", daemon=True)
        self.label = label
        self.url = target.resolved_url()
        self.headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **target.resolved_headers()}
        self.outbox_path = outbox_path
        self.notifier = notifier
        self.http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(5.0, target.timeout), read=target.timeout), retries=False
        )
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._failing_since: float | None = None

    def run(self) -> None:
        box = Outbox(self.outbox_path.parent, self.outbox_path.name)
        try:
            while not self.stopping.is_set():
                head = box.head(self.label)
                now = time.time()
                if head is None or head.next_at > now:
                    self.wake.wait(1.0 if head is None else min(1.0, head.next_at - now))
                    self.wake.clear()
                    continue
                self._deliver(box, head)
        finally:
            box.close()

    def _deliver(self, box: Outbox, p: Pending) -> None:
        headers = {**self.headers, "Idempotency-Key": p.idem}
        status: int | None = None
        try:
            r = self.http.request("POST", self.url, body=p.body, headers=headers, redirect=False)
            status = r.status
            reason = f"HTTP {r.status}: {_printable(r.data[:300].decode('utf-8', 'replace'))}"
            retry_after = r.headers.get("Retry-After")
        except urllib3.exceptions.HTTPError as e:
            reason, retry_after = f"{type(e).__name__}", None
        if status is not None and 200 <= status < 300:
            box.ack(p.seq)
            self.notifier.count(self.label, "sent")
            if self._failing_since is not None:
                log.warning("notify %s: delivering again after %.0f s of failures", self.label, time.time() - self._failing_since)
                self._failing_since = None
            return
        if status is None or status in TRANSIENT:
            delay = backoff(p.attempts)
            if retry_after and retry_after.isdigit():
                delay = max(delay, min(float(retry_after), 30.0))
            box.retry_later(p.seq, delay, reason)
            self.notifier.count(self.label, "retried")
            if self._failing_since is None:
                self._failing_since = time.time()
                log.warning("notify %s: %s; retrying with backoff (kept in the outbox)", self.label, reason)
            return
        box.dead_letter(p, status, reason)
        self.notifier.count(self.label, "dead")
        log.error("notify %s: refused for good (%s); dead-lettered %s", self.label, reason, p.idem)


UNDELIVERED_LIMIT = 10_000  # undelivered notifications a checkpoint carries (a receiver down for long)


class Notifier:
    """Routes transitions to targets and owns their sender threads."""

    def __init__(self, rs: RuleSet, state_dir: Path, outbox_file: str = OUTBOX_FILE) -> None:
        self.rs = rs
        self.targets = list(zip(target_labels(rs.notify), rs.notify, strict=False))
        self.outbox = Outbox(state_dir, outbox_file)
        self.pending: list[tuple[str, str, bytes]] = []
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._over_limit = False  # said once per spell, not on every commit
        self.senders = [TargetSender(label, t, self.outbox.path, self) for label, t in self.targets]

    def count(self, target: str, outcome: str) -> None:
        with self._lock:
            self.counts[(target, outcome)] += 1

    def snapshot_counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self.counts)

    def labels(self) -> list[str]:
        return [label for label, _ in self.targets]

    def add(self, transitions: list[Transition]) -> None:
        """One notification per transition per target that wants the rule."""
        for t in transitions:
            rule = self.rs.by_name.get(t.rule.name)
            for label, target in self.targets:
                if target.wants(t.rule.name):
                    self.pending.append((label, t.idempotency_key, FORMATS[target.type](t.doc, rule)))

    def stage(self, ckpt: int) -> None:
        rows, self.pending = self.pending, []
        self.outbox.stage(rows, ckpt)

    def release(self, ckpt: int) -> None:
        if self.outbox.release(ckpt):
            for s in self.senders:
                s.wake.set()

    def recover(self, ckpt: int) -> None:
        dropped = self.outbox.recover(ckpt)
        if dropped:
            log.info("notify: %d notification(s) staged after the last checkpoint dropped (derived again)", dropped)

    def undelivered(self, limit: int = UNDELIVERED_LIMIT) -> list[tuple[str, str, str]]:
        """Rows not yet acknowledged, for the checkpoint (a standby sends them if this instance dies)."""
        rows = self.outbox.undelivered(limit + 1)
        over = len(rows) > limit
        if over and not self._over_limit:
            log.warning("notify: more than %d notifications undelivered; the checkpoint carries the oldest %d", limit, limit)
        elif self._over_limit and not over:
            log.info("notify: undelivered notifications back under %d; the checkpoint carries them all", limit)
        self._over_limit = over
        return rows[:limit]

    def adopt(self, rows: list[tuple[str, str, str]], ckpt: int) -> None:
        """The instance before died with these undelivered: they are sent from here (receivers
        drop repeats by Idempotency-Key)."""
        added = self.outbox.adopt(rows, ckpt)
        if added:
            log.info("notify: %d notification(s) the instance before had not delivered are sent from here", added)
            for s in self.senders:
                s.wake.set()

    def start(self) -> None:
        for s in self.senders:
            s.start()

    def queued(self) -> int:
        """Rows in the outbox; callable from any thread (its own short-lived connection)."""
        import sqlite3

        con = sqlite3.connect(str(self.outbox.path), timeout=5)
        try:
            return int(con.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        finally:
            con.close()

    def stop(self, drain: float = 5.0) -> None:
        """Give the senders up to `drain` seconds to empty the outbox; what is left is sent by the
        next start."""
        deadline = time.monotonic() + drain
        while self.outbox.size() and time.monotonic() < deadline:
            time.sleep(0.05)
        for s in self.senders:
            s.stopping.set()
            s.wake.set()
        for s in self.senders:
            s.join(timeout=15)
        left = self.outbox.size()
        if left:
            log.warning("notify: %d notification(s) left in the outbox; the next start delivers them", left)
        self.outbox.close()
