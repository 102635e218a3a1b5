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
  of log and has been quiet for `idle_grace` seconds does not hold the watermark back; the run
  loop re-asks `idle_watermark()` on every empty poll, so that happens on a timer too.
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
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from lookout.errors import InputChanged
from lookout.kafka.admin import ensure_topics
from lookout.kafka.clients import consumer_config
from lookout.kafka.config import KafkaConnection
from lookout.kafka.errors import CheckpointMismatch, ConsumerFailed, Fenced
from lookout.kafka.health import with_retry
from lookout.kafka.lock import LOCK_TOPIC, InstanceLock
from lookout.sources.base import Chunk, Source, numbered_ids

log = logging.getLogger("lookout.kafka")

NEVER = -(1 << 62)  # same sentinel as the engine: "no watermark yet"
LOG_CHECK_EVERY = 5.0  # s between checks of the input log (topic id, partition ends) while running
ON_RESET = ("fail", "earliest")


# ---------------------------------------------------------------- the source


@dataclass
class _Pending:
    partition: int
    first: int  # offset of values[0]; offsets are contiguous within a chunk
    values: list[bytes]
    ids: list[str | None] | None = None  # record ids from the `lookout-id` header (`ship`), if any


ID_HEADER = "lookout-id"


def _header_id(headers: list[tuple[str, bytes]] | None) -> str | None:
    """The record id a producer put in the message (lookout ship: the tail's id), else None."""
    if headers:
        for k, v in headers:
            if k == ID_HEADER and v:
                return v.decode("utf-8", "replace")
    return None


class KafkaSource(Source):
    """All partitions of one input topic, one chunk per partition run of contiguous offsets."""

    name = "kafka"
    stands_by = True

    def __init__(
        self,
        conn: KafkaConnection,
        topic: str,
        partitions: int = 3,
        lateness: int = 10_000_000,
        batch: int = 200_000,  # messages per consume(): fewer, bigger engine steps (parsed in pieces, ahead.py)
        idle_grace: float = 2.0,
        on_reset: str = "fail",
    ) -> None:
        if on_reset not in ON_RESET:
            raise ValueError(f"on_reset must be one of {', '.join(ON_RESET)}, not {on_reset!r}")
        self.on_reset = on_reset
        self.topic_id: str | None = None  # of the log the offsets refer to
        self._admin: Any = None
        self._log_checked = 0.0
        self._was_down = False
        self._out_of_range: set[int] = set()  # partitions whose fetch said our offset is outside the log
        # group.id names this deployment (offsets and the lock group); it is set apart so the
        # lock consumer's own group id is not overridden by the user's.
        self.group = conn.properties.get("group.id") or f"lookout-{topic}"
        self.conn = conn.without("group.id")
        self.health = conn.health
        self.bootstrap = conn.bootstrap
        self.topic = topic
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
        self.lock: InstanceLock | None = None
        self.committed_ok: dict[int, int] = {}  # last offsets the group acknowledged from us
        self._caught_up_checked = 0.0
        self._caught_up = False
        self._resumed_at = 0.0  # monotonic time the input lock came back after being lost

    # ---- exclusivity ------------------------------------------------------------------------
    @property
    def lock_held(self) -> bool:
        return self.lock is not None and self.lock.held

    @property
    def lock_lost_at(self) -> float | None:
        return self.lock.lost_at if self.lock is not None else None

    @lock_lost_at.setter
    def lock_lost_at(self, value: float | None) -> None:
        if self.lock is not None:
            self.lock.lost_at = value

    def acquire(self, stop: Callable[[], bool] = lambda: False) -> bool:
        """Block until this instance holds the input lock (lookout.kafka.lock). False when asked to stop first."""
        if self.lock_held:
            return True
        ensure_topics(self.conn, {self.topic: self.create_partitions, LOCK_TOPIC: 1}, stop)
        if self.lock is None:
            self.lock = InstanceLock(self.conn, self.group, self.topic)
            self.lock.on_lost = self._lock_lost
        return self.lock.acquire(stop)

    def _lock_lost(self) -> None:
        if self.consumer is not None:
            log.warning("kafka: lost the input lock (session expired or the group rebalanced); pausing input")

    def _check_fence(self) -> None:
        """The lock came back after being lost: go on only if nobody committed progress meanwhile."""
        from confluent_kafka import TopicPartition

        tps = [TopicPartition(self.topic, p) for p in self.partitions]
        got = with_retry("reading the group's committed offsets", lambda: self.consumer.committed(tps, timeout=5), self.health)
        theirs = {tp.partition: tp.offset for tp in got if tp.offset >= 0}
        mine = dict(self.committed_ok)  # the group's offsets at start, then our acknowledged commits
        if theirs != mine:
            raise Fenced(
                f"another instance committed progress on {self.topic} while this one had lost the input "
                f"lock (group offsets {theirs}, ours {mine}); exiting without committing. Restart to resume "
                "from the checkpoint."
            )
        log.warning(
            "kafka: input lock is back after %.1f s and nobody else made progress; resuming",
            time.monotonic() - (self.lock_lost_at or time.monotonic()),
        )
        self.lock_lost_at = None
        self._resumed_at = time.monotonic()
        self._caught_up_checked = 0.0  # ask the broker again, not a verdict from before the loss

    # ---- Source interface ---------------------------------------------------------------------
    def restore(self, position: Any) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.acquire()
        counts = ensure_topics(self.conn, {self.topic: self.create_partitions})
        self.partitions = list(range(counts[self.topic]))
        if position is not None:
            if position.get("topic") != self.topic:
                raise CheckpointMismatch(
                    f"the checkpoint is for topic {position.get('topic')!r}, not {self.topic!r}; use another --state-dir"
                )
            self.offsets = {int(p): int(o) for p, o in position["offsets"].items()}
            self.maxts = {int(p): int(t) for p, t in position["maxts"].items()}
            self.topic_id = position.get("topic_id")
        conf = consumer_config(
            self.conn,
            self.group,
            **{
                # an offset outside the log is an error to us, never a silent jump: _check_log decides
                "enable.auto.offset.store": False,
                "auto.offset.reset": "error",
                "enable.partition.eof": True,
                "on_commit": self._committed,
                # big fetches, a deep prefetch queue and a short broker wait: a backlog streams in
                # instead of arriving one half-second fetch at a time (measured: 2x on Tansu)
                "fetch.max.bytes": 64 << 20,
                "max.partition.fetch.bytes": 16 << 20,
                "fetch.wait.max.ms": 10,
                "queued.min.messages": 1_000_000,
            },
        )
        self.consumer = Consumer(conf)
        self._check_log("at start", with_retry("reading the topic's id and log ends", self._topic_state, self.health))
        self._log_checked = time.monotonic()
        self.consumer.assign([TopicPartition(self.topic, p, self.offsets.get(p, OFFSET_BEGINNING)) for p in self.partitions])
        self.committed_ok = with_retry("reading the group's committed offsets", self._group_offsets, self.health)
        start = ", ".join(f"{p}@{self.offsets[p]}" if p in self.offsets else f"{p}@earliest" for p in self.partitions)
        log.info(
            "kafka: reading %s partitions %s (from the %s)",
            self.topic,
            start,
            "checkpoint" if position is not None else "beginning: no checkpoint yet",
        )

    # ---- is it still the log the checkpoint was taken from? --------------------------------------
    def _topic_state(self) -> tuple[str, dict[int, tuple[int, int]]] | None:
        """The input topic's id and each partition's (log start, log end); None when it does not exist."""
        from confluent_kafka import KafkaError, KafkaException, TopicCollection, TopicPartition
        from confluent_kafka.admin import AdminClient

        if self._admin is None:
            self._admin = AdminClient(self.conn.client_config())
        try:
            desc = self._admin.describe_topics(TopicCollection([self.topic]), request_timeout=5)[self.topic].result()
        except KafkaException as e:
            if e.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return None
            raise
        marks = {
            pi.id: self.consumer.get_watermark_offsets(TopicPartition(self.topic, pi.id), timeout=5) for pi in desc.partitions
        }
        self.health.ok()
        return str(desc.topic_id), marks

    def _check_log(self, when: str, state: tuple[str, dict[int, tuple[int, int]]] | None) -> None:
        """Compare the checkpointed offsets and topic id with the log as it is: a re-created topic
        or a log that ends before our offsets is never read on from silently."""
        if state is None:
            raise InputChanged(
                f"kafka topic {self.topic} does not exist any more ({when}: deleted, or the broker came "
                f"back empty). Nothing after the last checkpoint was lost; once the topic is there again, "
                f"start lookout with --on-reset earliest to read it from its beginning."
            )
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
                log.warning(
                    "kafka: %s/%d: offsets %d to %d were deleted (retention) before lookout read them; reading on from %d",
                    self.topic,
                    p,
                    o,
                    lo - 1,
                    lo,
                )
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
            raise InputChanged(
                f"kafka: {self.topic} is not the log the checkpoint was taken from ({when}): {what}. "
                f"Start again with --on-reset earliest to read every partition of {self.topic} from its "
                f"beginning as it is now (results already published stay), or use a new --state-dir."
            )
        log.error(
            "kafka: %s is not the log the checkpoint was taken from (%s): %s; --on-reset earliest: reading every "
            "partition from its beginning",
            self.topic,
            when,
            what,
        )
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
        back = self._was_down and not self.health.down
        self._was_down = self.health.down
        if self.consumer is None or (not back and now - self._log_checked < LOG_CHECK_EVERY):
            return
        self._log_checked = now
        try:
            state = self._topic_state()
        except Exception as e:  # noqa: BLE001 - unreachable: BrokerHealth says so; checked again when back
            log.debug("kafka: log check failed: %s", e)
            return
        self._check_log("after the broker was unreachable" if back else "while reading", state)

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
                        self.lock.recreate_if_gone()
                    except Exception as e:  # noqa: BLE001 - unreachable: BrokerHealth says so
                        log.debug("kafka: lock topic check failed: %s", e)
                self.lock.poll(timeout)
                if not self.lock_held:
                    msg = self.consumer.poll(0)  # serves commit callbacks; may also return a message:
                    if msg is not None:  # keep it for when the lock is back, never drop it
                        self._split([msg])
                    return None
                self._check_log(
                    "when the input lock came back",
                    with_retry("reading the topic's id and log ends", self._topic_state, self.health),
                )
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
        # a partition is at its end when its end-of-partition event comes after its last message
        # (one batch often holds both: the event must not be undone by the messages before it)
        at_end: set[int] = set()
        if any(m.error() is not None for m in msgs):
            good = []
            for m in msgs:
                err = m.error()
                if err is None:
                    good.append(m)
                    at_end.discard(m.partition())
                elif err.code() == KafkaError._PARTITION_EOF:
                    self.eof[m.partition()] = True
                    at_end.add(m.partition())
                    self.health.ok()
                elif err.fatal():
                    raise ConsumerFailed(f"kafka consumer failed: {err.str()}")
                elif err.code() == KafkaError._AUTO_OFFSET_RESET:
                    self._out_of_range.add(m.partition())
                    self._log_checked = 0.0  # our offset is outside the log: find out why now
                else:
                    self.health.error(err, self.bootstrap)
            msgs = good
        # The per-message cost is the Kafka path's bottleneck: one pass per attribute, in C-level
        # comprehensions, then slices per partition.
        parts = [m.partition() for m in msgs]
        # an empty message is dead-lettered (not-an-object), never skipped unseen; a whitespace-only
        # one is a blank line to the parser, which would skip it, so it is marked the same way
        vals = [m.value() or b"null" for m in msgs]
        vals = [v if v[:1].strip() or v.strip() else b"null" for v in vals]
        offs = [m.offset() for m in msgs]
        # ids carried in a header (`ship`): the same record re-sent after a crash keeps its id
        hdrs = [m.headers() for m in msgs]
        rids: list[str | None] | None = [_header_id(h) for h in hdrs] if any(hdrs) else None
        ids: dict[int, list[str | None]] = {}
        if len(set(parts)) == 1:
            values[parts[0]], offsets[parts[0]] = vals, offs
            if rids is not None:
                ids[parts[0]] = rids
        else:
            for i, (p, v, o) in enumerate(zip(parts, vals, offs, strict=True)):
                if p in values:
                    values[p].append(v)
                    offsets[p].append(o)
                else:
                    values[p], offsets[p] = [v], [o]
                if rids is not None:
                    ids.setdefault(p, []).append(rids[i])
        if values:
            self.health.ok()
        for p, offs in offsets.items():
            self.eof[p] = p in at_end
            vals = values[p]
            pids = ids.get(p)
            if offs[-1] - offs[0] == len(offs) - 1:  # contiguous (offsets only grow): one chunk
                self.pending.append(_Pending(p, offs[0], vals, pids))
                continue
            start = 0
            for i in range(1, len(offs) + 1):  # a gap (transaction marker, compaction): new chunk
                if i == len(offs) or offs[i] != offs[i - 1] + 1:
                    self.pending.append(_Pending(p, offs[start], vals[start:i], pids[start:i] if pids else None))
                    start = i

    def _chunk(self, pend: _Pending) -> Chunk:
        p, first, lines = pend.partition, pend.first, pend.values
        self.offsets[p] = first + len(lines)
        self.last_seen[p] = time.monotonic()
        # maxts is the live map, read when the position is checkpointed (after this chunk's step):
        # with chunks polled ahead of the engine, a copy taken now would miss the steps between
        position = {"topic": self.topic, "offsets": dict(self.offsets), "maxts": self.maxts, "topic_id": self.topic_id}
        topic = self.topic
        # The fast path (one NDJSON buffer, parsed like a file chunk) when no message holds a newline.
        data = b"\n".join([*lines, b""])  # the final newline in the same copy (a batch is tens of MiB)
        flat = data.count(b"\n") == len(lines)

        given = pl.Series("given", pend.ids, dtype=pl.String) if pend.ids is not None else None

        def record_ids(line: pl.Series) -> pl.Series:
            own = numbered_ids(f"{topic}-{p}-", line + first)
            if given is None:
                return own
            return pl.select(pl.coalesce(given.gather(line), own).alias("id")).to_series()

        def watermarks(ts: pl.Series) -> pl.Series:
            return self._watermarks(p, ts, position)

        return Chunk(
            source=f"{topic}/{p}",
            data=data if flat else None,
            lines=None if flat else lines,
            first_line=first,
            position=position,
            watermarks=watermarks,
            record_ids=record_ids,
            repeatable_ids=given is not None,
        )

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

    def idle_watermark(self) -> int | None:
        """The per-partition watermark with no new record, re-evaluated by the run loop on every
        empty poll: the minimum over live partitions of their highest event time, minus the
        lateness. A partition at its end of log and quiet for `idle_grace` does not count (as in
        `_watermarks`), so an empty or drained partition releases the watermark on a timer, not
        only when the next record arrives (Flink's withIdleness). All idle: the highest."""
        now = time.monotonic()
        live, idle = [], []
        for q in self.partitions:
            m = self.maxts.get(q)
            if self._idle(q, now):
                if m is not None:
                    idle.append(m)
            elif m is None:  # never heard from, not known to be empty: it may hold older records
                return None
            else:
                live.append(m)
        if live:
            return min(live) - self.lateness
        return max(idle) - self.lateness if idle else None

    def readable_since(self) -> float:
        """Now while the broker is unreachable or the lock is lost; else the end of the last outage or
        lock loss. Without this, an outage longer than --idle-timeout let the clock close every window
        a second after the broker was back, before the backlog written meanwhile was read: all late."""
        if self.health.down or not self.lock_held or self.lock_lost_at is not None:
            return time.monotonic()
        return max(self.health.up_since, self._resumed_at)

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
            self.health.ok()
        except Exception as e:  # noqa: BLE001 - unreachable broker: not caught up
            log.debug("kafka: end-of-log check failed: %s", e)
            ok = False
        self._caught_up = ok
        return ok

    def lag(self) -> dict[tuple[str, int], int]:
        """Per partition, the end offset the consumer last saw (cached: no broker round trip)
        minus the next offset to read."""
        if self.consumer is None:
            return {}
        from confluent_kafka import TopicPartition

        out = {}
        for p in self.partitions:
            try:
                lo, hi = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            except Exception:  # noqa: BLE001 - not known yet
                continue
            if hi >= 0:
                out[(self.topic, p)] = max(0, hi - self.offsets.get(p, lo if lo >= 0 else 0))
        return out

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
            self.lock.close()  # leave the lock group now, so a standby takes over at once
            self.lock = None
