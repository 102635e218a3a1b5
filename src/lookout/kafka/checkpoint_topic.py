"""The run's checkpoint replicated to a compacted Kafka topic, so a standby on another machine
(its own state dir, no shared disk) takes over from the last commit instead of the topic's start.

Guarantee: a standby restores only a checkpoint that was written whole: every record the manifest
lists is there with its length and CRC-32, else it falls back to the longest whole prefix (the
commit before), and says so. What came after the restored commit is read and produced again:
exact repeats only, as after any crash. The replica is never needed for correctness: when a write
to it fails, the standby simply finds an older commit there (more repeats), never a wrong one.

Layout (topic `lookout-checkpoints`, one partition, compacted: TOPIC_CONFIG), for each deployment
(the consumer group, `lookout-<input topic>` unless group.id is set) and writer session:
- the records of the local checkpoint (lookout.checkpoint: a snapshot, then one delta per commit;
  the duplicate guard's ids are a journal, so a delta holds only the ids of its interval), each
  cut into chunks of at most CHUNK bytes under keys `<group>/c/<session>/<gen>/<record>/<chunk>`;
- after a commit's chunks, the manifest under key `<group>/m`: JSON naming the session,
  generation, and each record's chunk count, length and CRC. One partition and an idempotent
  producer keep the order, so a manifest is never read before the chunks it lists;
- when a new snapshot's manifest is out, tombstones for the previous generation's chunks, so
  compaction keeps one generation: the topic is bounded by about twice a snapshot plus its log.
A reader applies the tombstones as it reads (memory stays bounded on a broker that compacts late).
The blobs are the format of lookout.checkpoint: JSON and Parquet, never code.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from lookout.checkpoint import Checkpointer, CheckpointError, Loaded, SaveInfo, decode
from lookout.kafka.admin import ensure_topics
from lookout.kafka.clients import consumer_config, producer_config
from lookout.kafka.config import KafkaConnection

log = logging.getLogger("lookout.kafka")

CHECKPOINT_TOPIC = "lookout-checkpoints"
CHUNK = 256 * 1024  # bytes per message: well under the brokers' default 1 MB message limit
MANIFEST_FORMAT = 1
# Compaction only cleans closed segments: small, time-bounded ones keep what a standby must read
# near one generation (Kafka's defaults, 1 GB and 7 days, would leave it all in the active one).
TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.bytes": str(64 << 20),
    "segment.ms": str(10 * 60 * 1000),
    "min.cleanable.dirty.ratio": "0.1",
    "delete.retention.ms": str(60 * 60 * 1000),  # tombstones: long enough for a reader mid-way
}


def deployment_group(conn: KafkaConnection, topic: str) -> str:
    """The deployment's name: the same as the Kafka source's group (lookout.sources.kafka)."""
    return conn.properties.get("group.id") or f"lookout-{topic}"


@dataclass
class Replicated:
    """A checkpoint read back from the topic: its records, the last commit's metadata."""

    loaded: Loaded
    meta: dict[str, Any]
    offset: int  # of the manifest
    records: int  # records restored (snapshot + deltas)
    keys: list[bytes] = field(default_factory=list)  # the deployment's live chunk keys (tombstoned when replaced)


class CheckpointTopic:
    """Writer and reader of one deployment's checkpoint in the topic."""

    def __init__(self, conn: KafkaConnection, group: str, topic: str = CHECKPOINT_TOPIC) -> None:
        self.conn = conn.without("group.id")
        self.group = group
        self.topic = topic
        self.prefix = f"{group}/".encode()
        self.session = f"{int(time.time() * 1000):x}-{os.getpid()}"
        self._producer: Any = None
        self._gen: int | None = None  # generation the topic holds from this writer (None: out of step)
        self._records: list[dict[str, int]] = []
        self._keys: list[bytes] = []  # chunk keys of the current generation
        self._stale: list[bytes] = []  # chunk keys to tombstone once the next manifest is out
        self.failed = 0
        self.bytes_sent = 0
        self.aborted = False

    def ensure(self) -> None:
        ensure_topics(self.conn, {self.topic: 1}, configs={self.topic: TOPIC_CONFIG})

    # ---- writing --------------------------------------------------------------------------------
    def _produce(self, key: bytes, value: bytes | None) -> None:
        from confluent_kafka import Producer

        if self._producer is None:
            self._producer = Producer(
                producer_config(
                    self.conn,
                    **{"linger.ms": 5, "compression.type": "none", "message.max.bytes": CHUNK + (64 << 10)},
                )
            )
        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key, partition=0, on_delivery=self._delivered)
                break
            except BufferError:
                if self.aborted:  # a bounded stop: drop it (the topic keeps the commit before)
                    self._gen = None
                    return
                self._producer.poll(0.1)
        if value is not None:
            self.bytes_sent += len(value)

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed += 1
            self._gen = None  # the manifest may now list a record that is not there: start over
            log.warning(
                "kafka: checkpoint replica write to %s failed (%s); the next commit writes a new snapshot", self.topic, err
            )

    def publish(self, info: SaveInfo, ckpt: Checkpointer) -> int:
        """One commit's record (as written to the state dir) to the topic, then the manifest.
        Returns the bytes sent. Not waited for: a replica behind by a commit costs repeats only.
        A delta that does not continue what the topic holds is skipped, and the next local save
        is made a snapshot (`ckpt.force_snapshot`)."""
        if self._producer is not None:
            self._producer.poll(0)
        if info.kind == "snapshot":
            self._stale += self._keys
            self._gen, self._records, self._keys = info.gen, [], []
        elif self._gen != info.gen:
            ckpt.force_snapshot = True
            return 0
        sent0 = self.bytes_sent
        n = len(self._records)
        blob = info.blob
        chunks = [blob[i : i + CHUNK] for i in range(0, len(blob), CHUNK)] or [b""]
        for i, c in enumerate(chunks):
            key = self.prefix + f"c/{self.session}/{info.gen}/{n}/{i}".encode()
            self._produce(key, c)
            self._keys.append(key)
        self._records.append({"chunks": len(chunks), "bytes": len(blob), "crc": zlib.crc32(blob)})
        manifest = {
            "format": MANIFEST_FORMAT,
            "session": self.session,
            "gen": info.gen,
            "records": self._records,
            "at": time.time(),
        }
        self._produce(self.prefix + b"m", orjson.dumps(manifest))
        for key in self._stale:  # the previous generation: no manifest refers to it any more
            self._produce(key, None)
        self._stale = []
        self._producer.poll(0)
        return self.bytes_sent - sent0

    def forget(self, keys: list[bytes]) -> None:
        """Chunk keys of a generation found in the topic at start: tombstoned after our first snapshot."""
        self._stale += keys

    def flush(self, timeout: float) -> int:
        """Wait up to `timeout` s for the broker; returns how many messages are still unacknowledged."""
        return self._producer.flush(timeout) if self._producer is not None else 0

    def close(self, timeout: float = 2.0) -> None:
        # (no wait for a broker known to be unreachable: a standby then finds the commit before)
        left = self.flush(0.0 if self.aborted or self.conn.health.down else timeout)
        if left:
            log.warning(
                "kafka: %d checkpoint replica messages not acknowledged at stop (a standby finds the commit before)", left
            )
        self._producer = None

    # ---- reading --------------------------------------------------------------------------------
    def read(self, timeout: float = 120.0) -> Replicated | None:
        """The deployment's last whole checkpoint in the topic (None: none there). A manifest whose
        records are not all there, or fail their length or CRC, gives its longest whole prefix;
        the log says what was rejected."""
        from confluent_kafka import Consumer, KafkaError, TopicPartition

        c = Consumer(
            consumer_config(
                self.conn, f"{self.group}.checkpoint-reader", **{"enable.partition.eof": True, "fetch.max.bytes": 64 << 20}
            )
        )
        try:
            lo, hi = c.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=10)
            if hi <= lo:
                return None
            c.assign([TopicPartition(self.topic, 0, lo)])
            values: dict[bytes, bytes] = {}
            manifests: list[tuple[int, bytes]] = []  # (offset, value): the last few, newest last
            deadline = time.monotonic() + timeout
            at = lo
            while at < hi:
                if time.monotonic() > deadline:
                    raise CheckpointError(f"reading {self.topic} took over {timeout:.0f} s (at offset {at} of {hi})")
                for m in c.consume(1000, 1.0):
                    if m.error() is not None:
                        if m.error().code() != KafkaError._PARTITION_EOF:
                            log.debug("kafka: checkpoint topic read: %s", m.error())
                        continue
                    at = m.offset() + 1
                    key = m.key() or b""
                    if not key.startswith(self.prefix):
                        continue
                    if key == self.prefix + b"m":
                        if m.value() is not None:
                            manifests = [*manifests[-3:], (m.offset(), m.value())]
                    elif m.value() is None:
                        values.pop(key, None)
                    else:
                        values[key] = m.value()
        finally:
            c.close()
        for offset, raw in reversed(manifests):
            got = self._assemble(offset, raw, values)
            if got is not None:
                got.keys = list(values)  # every live chunk of this deployment: replaced by our first snapshot
                return got
        return None

    def _assemble(self, offset: int, raw: bytes, values: dict[bytes, bytes]) -> Replicated | None:
        try:
            man = orjson.loads(raw)
            session, gen, recs = str(man["session"]), int(man["gen"]), list(man["records"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.error("kafka: checkpoint manifest at %s offset %d is not readable; ignoring it", self.topic, offset)
            return None
        blobs: list[bytes] = []
        for n, r in enumerate(recs):
            ks = [self.prefix + f"c/{session}/{gen}/{n}/{i}".encode() for i in range(int(r["chunks"]))]
            blob = b"".join(values.get(k, b"") for k in ks)
            bad = None
            if any(k not in values for k in ks) or len(blob) != int(r["bytes"]):
                bad = f"record {n} is truncated ({len(blob)} of {r['bytes']} bytes)"
            elif zlib.crc32(blob) != int(r["crc"]):
                bad = f"record {n} fails its CRC"
            if bad is not None:
                log.error(
                    "kafka: checkpoint in %s (manifest at offset %d, %d records): %s; rejected, %s",
                    self.topic,
                    offset,
                    len(recs),
                    bad,
                    f"falling back to the commit before it (record {n - 1})" if n else "falling back to an older checkpoint",
                )
                break
            blobs.append(blob)
        if not blobs:
            return None
        try:
            meta = decode(blobs[-1])[0]["meta"]
        except (CheckpointError, KeyError, TypeError) as e:
            log.error("kafka: checkpoint in %s (manifest at offset %d) is not usable (%s); ignoring it", self.topic, offset, e)
            return None
        return Replicated(Loaded(blobs[0], blobs[1:]), meta, offset, len(blobs))


class Replica:
    """The run's side of the replica: choose the newer of the state dir's checkpoint and the
    topic's at start, publish each commit after it is durable locally."""

    def __init__(self, topic: CheckpointTopic) -> None:
        self.topic = topic

    def restore(self, ckpt: Checkpointer, engine: Any, local_outputs: dict[str, Any]) -> dict[str, Any] | None:
        """Restore `engine` from the newer checkpoint (by commit sequence `seq`, which a takeover
        carries on); the metadata to resume from. From the topic, the outputs of this instance
        (`local_outputs`: files, store) continue from where they stand: they are its own."""
        from lookout.checkpoint import decode as decode_blob

        local = ckpt.files.load()
        local_meta = decode_blob(local.deltas[-1] if local.deltas else local.snapshot)[0].get("meta") if local else None
        try:
            self.topic.ensure()
            remote = self.topic.read()
        except Exception as e:  # noqa: BLE001 - the replica is an optimisation; the state dir and the input are the truth
            log.error("kafka: could not read the checkpoint topic %s (%s); going on from this state dir", self.topic.topic, e)
            remote = None
        ckpt.force_snapshot = True  # the topic gets a whole snapshot from this writer first
        local_seq = int((local_meta or {}).get("seq", 0))
        if remote is not None:
            self.topic.forget(remote.keys)
        if remote is not None and int(remote.meta.get("seq", 0)) > local_seq:
            meta = ckpt.restore(remote.loaded, engine, f"topic {self.topic.topic}")
            log.warning(
                "restored the checkpoint of commit %d from topic %s (%d records, written %.1f s ago by the instance "
                "before; this state dir had commit %d); what came after it is read again",
                int(remote.meta.get("seq", 0)),
                self.topic.topic,
                remote.records,
                max(0.0, time.time() - float(remote.meta.get("at", time.time()))),
                local_seq,
            )
            # the outbox stays this instance's; the dead one's undelivered rows are adopted into it
            return {
                **meta,
                "sinks": local_outputs,
                "notify_ckpt": int((local_meta or {}).get("notify_ckpt", 0)),
                "adopt_outbox": [tuple(r) for r in meta.get("outbox", [])],
            }
        return ckpt.restore(local, engine, str(ckpt.path)) if local is not None else None

    def publish(self, info: SaveInfo, ckpt: Checkpointer) -> int:
        return self.topic.publish(info, ckpt)

    def abort(self) -> None:
        self.topic.aborted = True

    def close(self, wait: float) -> None:
        self.topic.close(wait)
