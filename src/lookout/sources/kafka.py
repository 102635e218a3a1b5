"""Kafka input for `lookout run --kafka`: the seed's `test-inter` topic, read with confluent-kafka.

Why it looks the way it does:
- *One instance reads every partition* (manual assignment, no consumer-group split): the rules
  group by client, host and country, so splitting partitions between instances would split
  keys and publish wrong counts. Exclusivity comes from a lock: a one-partition topic
  (`lookout-lock`) that every instance subscribes to in the group `<group.id>.lock`. Kafka's
  group protocol gives that partition to exactly one member; whoever holds it is active, the
  others stand by in `acquire()` and take over when the holder leaves or its session expires.
- *The checkpoint is the source of truth*: `restore(position)` seeks to the offsets saved with
  the engine state; offsets are also committed to the group, but only for monitoring (lag) and
  as a fencing check when a lock that was lost comes back.
- *Event time per partition* (as Flink does): the watermark is the minimum over partitions of
  their highest event time, minus the allowed lateness, so reading one partition's backlog
  faster than another's cannot make the other's records late. A partition that is at its end
  of log and has been quiet for `idle_grace` seconds does not hold the watermark back.
- *Chunks are per partition with contiguous offsets*, so a dead letter's `source` is
  `<topic>/<partition>` and its `line` is the exact offset.
- *The log is checked against the checkpoint* at start, every few seconds and when the broker
  is back: the topic id (saved with the offsets) and each partition's log end. A re-created
  topic or a log shorter than the checkpoint is `InputChanged` (`on_reset="fail"`) or read from
  its beginning, loudly (`"earliest"`); a deleted topic stops the run cleanly. A lock topic
  that disappeared (broker restarted empty) is re-created and the lock group rejoined.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import polars as pl

from lookout.sources.base import Chunk, InputChanged, Source, numbered_ids

log = logging.getLogger("lookout.kafka")

LOCK_TOPIC = "lookout-lock"
LOG_CHECK_EVERY = 5.0  # s between checks of the input log (topic id, partition ends) while running
ON_RESET = ("fail", "earliest")
NEVER = -(1 << 62)  # same sentinel as the engine: "no watermark yet"
_DOWN_CODES = {"_TRANSPORT", "_ALL_BROKERS_DOWN", "_RESOLVE", "_TIMED_OUT", "_AUTHENTICATION", "_SSL"}


# ---------------------------------------------------------------- shared client plumbing

class BrokerHealth:
    """Says clearly when the brokers become unreachable and when they are back, once per outage.

    librdkafka reconnects by itself (with backoff); what the user needs is one readable line
    rather than a stream of socket errors, so its own log is kept at ERROR-only and this speaks."""

    CONFIRM = 1.0  # s: one disconnect is not an outage (brokers close idle connections; see error())

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.first_error: float | None = None  # a connection error not yet confirmed by another
        self.last_reason = ""
        self._last_said = 0.0
        self._lock = threading.Lock()

    def error(self, err: Any, bootstrap: str) -> None:
        code = err.name() if hasattr(err, "name") else str(err)
        with self._lock:
            if code not in _DOWN_CODES:
                log.warning("kafka: %s", err.str() if hasattr(err, "str") else err)
                return
            now = time.monotonic()
            self.last_reason = err.str() if hasattr(err, "str") else str(err)
            if self.first_error is not None and now - self.first_error > 30 * self.CONFIRM:
                self.first_error = None  # an old, lone disconnect confirms nothing
            if self.down_since is None and (self.first_error is None or now - self.first_error < self.CONFIRM):
                # a broker closing an idle client's connection looks like "all brokers down" to that
                # client: an outage is said when a second error comes 1 s later or, 1 s after the
                # first, the brokers do not even take a TCP connection (_probe)
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
                log.warning("kafka: broker %s still unreachable after %.0f s (%s); still retrying",
                            bootstrap, now - self.down_since, self.last_reason)

    def _declare(self, bootstrap: str, now: float) -> None:
        self.down_since = self.first_error or now
        self._last_said = now
        log.warning("kafka: broker %s unreachable (%s); retrying with backoff, nothing is committed "
                    "until it is back", bootstrap, self.last_reason)

    def _probe(self, bootstrap: str, since: float) -> None:
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
        self.first_error = None
        if self.down_since is None:
            return
        with self._lock:
            if self.down_since is not None:
                log.warning("kafka: broker reachable again after %.1f s; carrying on", time.monotonic() - self.down_since)
                self.down_since = None

    @property
    def down(self) -> bool:
        return self.down_since is not None


HEALTH = BrokerHealth()


def client_config(bootstrap: str, extra: dict[str, str] | None = None, **defaults: Any) -> dict[str, Any]:
    """librdkafka settings: our defaults, then the user's pass-through properties (they win)."""
    client_log = logging.getLogger("lookout.kafka.client")
    if client_log.level == logging.NOTSET:
        client_log.setLevel(logging.CRITICAL)  # BrokerHealth reports outages in one line instead
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "logger": client_log,
        "log.connection.close": False,
        "error_cb": lambda err: HEALTH.error(err, bootstrap),
        **defaults,
    }
    conf.update(extra or {})
    return conf


def with_retry(what: str, fn: Callable[[], Any], stop: Callable[[], bool] = lambda: False) -> Any:
    """Call fn until it succeeds: the broker may be down at start, and that is not a reason to die."""
    delay = 0.5
    t0 = time.monotonic()
    while True:
        try:
            out = fn()
            HEALTH.ok()
            return out
        except Exception as e:  # noqa: BLE001 - KafkaException and friends: report and retry
            if stop():
                raise
            log.warning("kafka: %s failed (%s); retrying in %.1f s (%.0f s so far)", what, e, delay, time.monotonic() - t0)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def ensure_topics(bootstrap: str, config: dict[str, str] | None, topics: dict[str, int],
                  stop: Callable[[], bool] = lambda: False) -> dict[str, int]:
    """Create missing topics (name -> partitions); return every topic's partition count."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client_config(bootstrap, config))

    def meta() -> dict[str, int]:
        md = admin.list_topics(timeout=5)
        return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}

    existing = with_retry("reading topic metadata", meta, stop)
    missing = [NewTopic(name, n, 1) for name, n in topics.items() if name not in existing]
    if missing:
        def create() -> None:
            for name, fut in admin.create_topics(missing, operation_timeout=10, request_timeout=15).items():
                try:
                    fut.result()
                    log.info("kafka: created topic %s (%d partitions)", name, topics[name])
                except KafkaException as e:
                    if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
        with_retry("creating topics " + ", ".join(t.topic for t in missing), create, stop)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait until metadata shows them
            existing = with_retry("reading topic metadata", meta, stop)
            if all(name in existing for name in topics):
                break
            time.sleep(0.1)
    return {name: existing.get(name, 0) for name in topics}


# ---------------------------------------------------------------- the source

@dataclass
class _Pending:
    partition: int
    first: int  # offset of values[0]; offsets are contiguous within a chunk
    values: list[bytes]


class KafkaSource(Source):
    """All partitions of one input topic, one chunk per partition run of contiguous offsets."""

    name = "kafka"

    def __init__(self, bootstrap: str, topic: str, config: dict[str, str] | None = None, partitions: int = 3,
                 lateness: int = 10_000_000, batch: int = 100_000, idle_grace: float = 2.0,
                 on_reset: str = "fail") -> None:
        if on_reset not in ON_RESET:
            raise ValueError(f"on_reset must be one of {', '.join(ON_RESET)}, not {on_reset!r}")
        self.on_reset = on_reset
        self.topic_id: str | None = None  # of the log the offsets refer to
        self._admin: Any = None
        self._log_checked = 0.0
        self._was_down = False
        self._out_of_range: set[int] = set()  # partitions whose fetch said our offset is outside the log
        self.bootstrap = bootstrap
        self.topic = topic
        self.user_config = dict(config or {})
        self.group = self.user_config.pop("group.id", None) or f"lookout-{topic}"
        self.create_partitions = partitions
        self.lateness = lateness
        self.batch = batch
        self.idle_grace = idle_grace
        self.name = f"kafka:{topic}"
        self.partitions: list[int] = []
        self.offsets: dict[int, int] = {}  # next offset to hand out, per partition
        self.maxts: dict[int, int] = {}  # highest event time of valid records, per partition
        self.eof: dict[int, bool] = {}
        self.last_seen: dict[int, float] = {}
        self.pending: deque[_Pending] = deque()
        self.consumer: Any = None
        self.lock: Any = None
        self.lock_held = False
        self.lock_lost_at: float | None = None
        self.committed_ok: dict[int, int] = {}  # last offsets the group acknowledged from us
        self._caught_up_checked = 0.0
        self._caught_up = False

    # ---- exclusivity ------------------------------------------------------------------------
    def acquire(self, stop: Callable[[], bool] = lambda: False) -> bool:
        """Block until this instance holds the input lock. False when asked to stop first."""
        from confluent_kafka import Consumer

        if self.lock is not None and self.lock_held:
            return True
        ensure_topics(self.bootstrap, self.user_config, {self.topic: self.create_partitions, LOCK_TOPIC: 1}, stop)
        if self.lock is None:
            conf = client_config(self.bootstrap, self.user_config, **{
                "group.id": f"{self.group}.lock", "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                "enable.auto.commit": False, "auto.offset.reset": "latest",
                # sticky: an instance joining the group must not move the lock off the active one
                "partition.assignment.strategy": "cooperative-sticky",
            })
            self.lock = Consumer(conf)
            self.lock.subscribe([LOCK_TOPIC], on_assign=self._lock_assigned, on_revoke=self._lock_revoked,
                                on_lost=self._lock_revoked)
        log.info("kafka: joining %s (group %s.lock) to become the only reader of %s", LOCK_TOPIC, self.group, self.topic)
        t0 = time.monotonic()
        said = False
        while not self.lock_held:
            if stop():
                return False
            self.lock.poll(0.2)
            if not self.lock_held and not said and time.monotonic() - t0 > 12:
                said = True
                log.warning("kafka: another lookout instance holds the input lock for %s (group %s); "
                            "standing by, will take over if it stops", self.topic, self.group)
        if said:
            log.warning("kafka: took over the input lock for %s after %.1f s on standby", self.topic, time.monotonic() - t0)
        else:
            log.info("kafka: holding the input lock for %s", self.topic)
        return True

    def _lock_assigned(self, consumer: Any, parts: list[Any]) -> None:
        if parts:
            self.lock_held = True

    def _lock_revoked(self, consumer: Any, parts: list[Any]) -> None:
        if self.lock_held and parts:  # (cooperative rebalances may revoke nothing)
            self.lock_held = False
            self.lock_lost_at = time.monotonic()
            if self.consumer is not None:
                log.warning("kafka: lost the input lock (session expired or the group rebalanced); pausing input")

    def _check_fence(self) -> None:
        """The lock came back after being lost: go on only if nobody committed progress meanwhile."""
        from confluent_kafka import TopicPartition

        tps = [TopicPartition(self.topic, p) for p in self.partitions]
        got = with_retry("reading the group's committed offsets", lambda: self.consumer.committed(tps, timeout=5))
        theirs = {tp.partition: tp.offset for tp in got if tp.offset >= 0}
        mine = dict(self.committed_ok)  # the group's offsets at start, then our acknowledged commits
        if theirs != mine:
            raise SystemExit(
                f"error: another instance committed progress on {self.topic} while this one had lost the input "
                f"lock (group offsets {theirs}, ours {mine}); exiting without committing. Restart to resume "
                "from the checkpoint.")
        log.warning("kafka: input lock is back after %.1f s and nobody else made progress; resuming",
                    time.monotonic() - (self.lock_lost_at or time.monotonic()))
        self.lock_lost_at = None

    # ---- Source interface ---------------------------------------------------------------------
    def restore(self, position: Any) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.acquire()
        counts = ensure_topics(self.bootstrap, self.user_config, {self.topic: self.create_partitions})
        self.partitions = list(range(counts[self.topic]))
        if position is not None:
            if position.get("topic") != self.topic:
                raise SystemExit(f"error: the checkpoint is for topic {position.get('topic')!r}, not {self.topic!r}; "
                                 "use another --state-dir")
            self.offsets = {int(p): int(o) for p, o in position["offsets"].items()}
            self.maxts = {int(p): int(t) for p, t in position["maxts"].items()}
            self.topic_id = position.get("topic_id")
        conf = client_config(self.bootstrap, self.user_config, **{
            "group.id": self.group, "enable.auto.commit": False, "enable.auto.offset.store": False,
            # an offset outside the log is an error to us, never a silent jump: _check_log decides
            "auto.offset.reset": "error", "enable.partition.eof": True, "on_commit": self._committed,
            # big fetches, a deep prefetch queue and a short broker wait: a backlog streams in
            # instead of arriving one half-second fetch at a time (measured: 2x on Tansu)
            "fetch.max.bytes": 64 << 20, "max.partition.fetch.bytes": 16 << 20,
            "fetch.wait.max.ms": 10, "queued.min.messages": 1_000_000,
        })
        self.consumer = Consumer(conf)
        self._check_log("at start", with_retry("reading the topic's id and log ends", self._topic_state))
        self._log_checked = time.monotonic()
        self.consumer.assign([TopicPartition(self.topic, p, self.offsets.get(p, OFFSET_BEGINNING)) for p in self.partitions])
        self.committed_ok = with_retry("reading the group's committed offsets", self._group_offsets)
        start = ", ".join(f"{p}@{self.offsets[p]}" if p in self.offsets else f"{p}@earliest" for p in self.partitions)
        log.info("kafka: reading %s partitions %s (from the %s)", self.topic, start,
                 "checkpoint" if position is not None else "beginning: no checkpoint yet")

    # ---- is it still the log the checkpoint was taken from? --------------------------------------
    def _topic_state(self) -> tuple[str, dict[int, tuple[int, int]]] | None:
        """The input topic's id and each partition's (log start, log end); None when it does not exist."""
        from confluent_kafka import KafkaError, KafkaException, TopicCollection, TopicPartition
        from confluent_kafka.admin import AdminClient

        if self._admin is None:
            self._admin = AdminClient(client_config(self.bootstrap, self.user_config))
        try:
            desc = self._admin.describe_topics(TopicCollection([self.topic]), request_timeout=5)[self.topic].result()
        except KafkaException as e:
            if e.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return None
            raise
        marks = {pi.id: self.consumer.get_watermark_offsets(TopicPartition(self.topic, pi.id), timeout=5)
                 for pi in desc.partitions}
        HEALTH.ok()
        return str(desc.topic_id), marks

    def _check_log(self, when: str, state: tuple[str, dict[int, tuple[int, int]]] | None) -> None:
        """Compare the checkpointed offsets and topic id with the log as it is: a re-created topic
        or a log that ends before our offsets is never read on from silently."""
        if state is None:
            raise InputChanged(f"kafka topic {self.topic} does not exist any more ({when}: deleted, or the broker came "
                               f"back empty). Nothing after the last checkpoint was lost; once the topic is there again, "
                               f"start lookout with --on-reset earliest to read it from its beginning.")
        tid, marks = state
        problems = []
        skipped = False
        if self.topic_id is not None and tid != self.topic_id:
            problems.append(f"topic {self.topic} was re-created (id {self.topic_id}, now {tid})")
        for p, o in sorted(self.offsets.items()):
            if p not in marks:
                problems.append(f"partition {p} (checkpoint offset {o}) no longer exists")
                continue
            lo, hi = marks[p]
            # A log end before our offset is believed when the topic id cannot tell (a checkpoint
            # without one) or a fetch confirmed it (offset out of range): some brokers (the test
            # broker, after a topic is re-created) answer a wrong log end while serving the records.
            if o > hi and (self.topic_id is None or p in self._out_of_range or tid != self.topic_id):
                problems.append(f"partition {p} ends at offset {hi}, before the checkpoint's {o}")
            elif o < lo:
                log.warning("kafka: %s/%d: offsets %d to %d were deleted (retention) before lookout read them; "
                            "reading on from %d", self.topic, p, o, lo - 1, lo)
                self.offsets[p] = lo
                skipped = True
        first_id = self.topic_id is None
        self.topic_id = tid
        self._out_of_range.clear()
        if not problems:
            if first_id or skipped or set(marks) != set(self.partitions):
                self._follow_partitions(sorted(marks), reassign=skipped)
            return
        what = "; ".join(problems)
        if self.on_reset == "fail":
            raise InputChanged(f"kafka: {self.topic} is not the log the checkpoint was taken from ({when}): {what}. "
                               f"Start again with --on-reset earliest to read every partition of {self.topic} from its "
                               f"beginning as it is now (results already published stay), or use a new --state-dir.")
        log.error("kafka: %s is not the log the checkpoint was taken from (%s): %s; --on-reset earliest: reading every "
                  "partition from its beginning", self.topic, when, what)
        self.offsets, self.maxts, self.committed_ok = {}, {}, {}
        self.pending.clear()
        self.eof.clear()
        self._follow_partitions(sorted(marks), reset=True)

    def _follow_partitions(self, parts: list[int], reset: bool = False, reassign: bool = False) -> None:
        """Read these partitions from self.offsets (partitions without one from their beginning)."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        changed = set(parts) != set(self.partitions)
        self.partitions = parts
        if self.consumer is not None and (reset or reassign or changed) and self.consumer.assignment():
            self.pending.clear()  # fetched beyond self.offsets: fetched again from there
            self.consumer.assign([TopicPartition(self.topic, p, self.offsets.get(p, OFFSET_BEGINNING)) for p in parts])

    def _watch_log(self) -> None:
        """While running: every LOG_CHECK_EVERY s, and as soon as the broker is reachable again."""
        now = time.monotonic()
        back = self._was_down and not HEALTH.down
        self._was_down = HEALTH.down
        if self.consumer is None or (not back and now - self._log_checked < LOG_CHECK_EVERY):
            return
        self._log_checked = now
        try:
            state = self._topic_state()
        except Exception as e:  # noqa: BLE001 - unreachable: BrokerHealth says so; checked again when back
            log.debug("kafka: log check failed: %s", e)
            return
        self._check_log("after the broker was unreachable" if back else "while reading", state)

    def _lock_topic_back(self) -> None:
        """Waiting for the lock: if the lock topic is gone (a broker restarted empty), nobody can
        ever be given it; re-create it and rejoin the group."""
        md = self.lock.list_topics(LOCK_TOPIC, timeout=5)
        HEALTH.ok()
        t = md.topics.get(LOCK_TOPIC)
        if t is not None and t.error is None and t.partitions:
            return
        log.warning("kafka: the lock topic %s is gone (deleted, or the broker came back empty); re-creating it and "
                    "rejoining group %s.lock", LOCK_TOPIC, self.group)
        ensure_topics(self.bootstrap, self.user_config, {LOCK_TOPIC: 1})
        self.lock.unsubscribe()
        self.lock.subscribe([LOCK_TOPIC], on_assign=self._lock_assigned, on_revoke=self._lock_revoked,
                            on_lost=self._lock_revoked)

    def _group_offsets(self) -> dict[int, int]:
        from confluent_kafka import TopicPartition

        got = self.consumer.committed([TopicPartition(self.topic, p) for p in self.partitions], timeout=5)
        return {tp.partition: tp.offset for tp in got if tp.offset >= 0}

    def poll(self, timeout: float) -> Chunk | None:
        if self.lock is not None:
            self.lock.poll(0)
            if not self.lock_held:
                if self.lock_lost_at is not None and time.monotonic() - self.lock_lost_at > 60:
                    log.warning("kafka: still waiting for the input lock (%.0f s)", time.monotonic() - self.lock_lost_at)
                    self.lock_lost_at = time.monotonic()
                if time.monotonic() - self._log_checked >= LOG_CHECK_EVERY:
                    self._log_checked = time.monotonic()
                    try:
                        self._lock_topic_back()
                    except Exception as e:  # noqa: BLE001 - unreachable: BrokerHealth says so
                        log.debug("kafka: lock topic check failed: %s", e)
                self.lock.poll(timeout)
                if not self.lock_held:
                    msg = self.consumer.poll(0)  # serves commit callbacks; may also return a message:
                    if msg is not None:  # keep it for when the lock is back, never drop it
                        self._split([msg])
                    return None
                self._check_log("when the input lock came back",
                                with_retry("reading the topic's id and log ends", self._topic_state))
                self._log_checked = time.monotonic()
                self._check_fence()
        self._watch_log()
        if not self.pending:
            msgs = self.consumer.consume(self.batch, timeout)
            if msgs:
                self._split(msgs)
        if self.pending:
            return self._chunk(self.pending.popleft())
        return None

    def _split(self, msgs: list[Any]) -> None:
        """Group a consume() batch by partition (keeping each partition's order), cut at offset gaps."""
        from confluent_kafka import KafkaError

        values: dict[int, list[bytes]] = {}
        offsets: dict[int, list[int]] = {}
        if any(m.error() is not None for m in msgs):
            good = []
            for m in msgs:
                err = m.error()
                if err is None:
                    good.append(m)
                elif err.code() == KafkaError._PARTITION_EOF:
                    self.eof[m.partition()] = True
                    HEALTH.ok()
                elif err.fatal():
                    raise SystemExit(f"error: kafka consumer failed: {err.str()}")
                elif err.code() == KafkaError._AUTO_OFFSET_RESET:
                    self._out_of_range.add(m.partition())
                    self._log_checked = 0.0  # our offset is outside the log: find out why now
                else:
                    HEALTH.error(err, self.bootstrap)
            msgs = good
        # The per-message cost is the Kafka path's bottleneck: one pass per attribute, in C-level
        # comprehensions, then slices per partition.
        parts = [m.partition() for m in msgs]
        # an empty message is dead-lettered (not-an-object), never skipped unseen; a whitespace-only
        # one is a blank line to the parser, which would skip it, so it is marked the same way
        vals = [m.value() or b"null" for m in msgs]
        vals = [v if v[:1].strip() or v.strip() else b"null" for v in vals]
        offs = [m.offset() for m in msgs]
        if len(set(parts)) == 1:
            values[parts[0]], offsets[parts[0]] = vals, offs
        else:
            for p, v, o in zip(parts, vals, offs):
                if p in values:
                    values[p].append(v)
                    offsets[p].append(o)
                else:
                    values[p], offsets[p] = [v], [o]
        if values:
            HEALTH.ok()
        for p, offs in offsets.items():
            self.eof[p] = False
            vals = values[p]
            if offs[-1] - offs[0] == len(offs) - 1:  # contiguous (offsets only grow): one chunk
                self.pending.append(_Pending(p, offs[0], vals))
                continue
            start = 0
            for i in range(1, len(offs) + 1):  # a gap (transaction marker, compaction): new chunk
                if i == len(offs) or offs[i] != offs[i - 1] + 1:
                    self.pending.append(_Pending(p, offs[start], vals[start:i]))
                    start = i

    def _chunk(self, pend: _Pending) -> Chunk:
        p, first, lines = pend.partition, pend.first, pend.values
        self.offsets[p] = first + len(lines)
        self.last_seen[p] = time.monotonic()
        position = {"topic": self.topic, "offsets": dict(self.offsets), "maxts": dict(self.maxts),
                    "topic_id": self.topic_id}
        topic = self.topic
        # The fast path (one NDJSON buffer, parsed like a file chunk) when no message holds a newline.
        data = b"\n".join(lines) + b"\n"
        flat = data.count(b"\n") == len(lines)

        def record_ids(line: pl.Series) -> pl.Series:
            return numbered_ids(f"{topic}-{p}-", line + first)

        def watermarks(ts: pl.Series) -> pl.Series:
            return self._watermarks(p, ts, position)

        return Chunk(source=f"{topic}/{p}", data=data if flat else None, lines=None if flat else lines,
                     first_line=first, position=position, watermarks=watermarks, record_ids=record_ids)

    def _idle(self, q: int, now: float) -> bool:
        if not self.eof.get(q) or now - self.last_seen.get(q, 0.0) < self.idle_grace:
            return False
        return all(pd.partition != q for pd in self.pending)

    def _watermarks(self, p: int, ts: pl.Series, position: dict[str, Any]) -> pl.Series:
        """Per record: min(this partition's running max, other live partitions' max) - lateness."""
        run = ts.cum_max()
        prev = self.maxts.get(p)
        if prev is not None:
            run = run.clip(lower_bound=prev)
        newmax = int(run[-1])
        self.maxts[p] = newmax
        position["maxts"][p] = newmax
        now = time.monotonic()
        others = []
        for q in self.partitions:
            if q == p or self._idle(q, now):
                continue
            m = self.maxts.get(q)
            if m is None:  # never heard from, not known to be empty: it may hold older records
                return pl.Series("wm", [NEVER] * len(run), dtype=pl.Int64)
            others.append(m)
        if others:
            run = run.clip(upper_bound=min(others))
        return (run - self.lateness).alias("wm")

    def caught_up(self) -> bool:
        """True when every partition has been read to its end (asked of the broker, at most once a
        second). The run loop closes windows on idle input only then: a broker outage or a lost
        lock is not quiet input, and closing windows then would make the backlog late."""
        if not self.lock_held or self.pending or self.consumer is None:
            return False
        now = time.monotonic()
        if now - self._caught_up_checked < 1.0:
            return self._caught_up
        self._caught_up_checked = now
        from confluent_kafka import TopicPartition

        try:
            ok = True
            for p in self.partitions:
                lo, hi = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=2)
                if self.offsets.get(p, lo) < hi:
                    ok = False
            HEALTH.ok()
        except Exception as e:  # noqa: BLE001 - unreachable broker: not caught up
            log.debug("kafka: end-of-log check failed: %s", e)
            ok = False
        self._caught_up = ok
        return ok

    def commit(self, position: Any) -> None:
        """Tell the group where the checkpoint is (for lag monitoring and the lock fence)."""
        from confluent_kafka import TopicPartition

        if position is None or self.consumer is None:
            return
        tps = [TopicPartition(self.topic, int(p), int(o)) for p, o in position["offsets"].items()]
        if tps:
            try:
                self.consumer.commit(offsets=tps, asynchronous=True)
            except Exception as e:  # noqa: BLE001 - monitoring only; the checkpoint already holds it
                log.debug("kafka: offset commit not sent: %s", e)

    def _committed(self, err: Any, parts: list[Any]) -> None:
        if err is None:
            for tp in parts:
                if tp.error is None:
                    self.committed_ok[tp.partition] = tp.offset

    def close(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.poll(0)
                self.consumer.close()
            except Exception as e:  # noqa: BLE001
                log.debug("kafka: consumer close: %s", e)
            self.consumer = None
        if self.lock is not None:
            try:
                self.lock.close()  # leave the lock group now, so a standby takes over at once
            except Exception as e:  # noqa: BLE001
                log.debug("kafka: lock close: %s", e)
            self.lock = None


