"""`lookout ship`: tail an nginx log into a Kafka topic, at-least-once.

The seed's data producer, for real logs: many nginx servers each run a shipper, one pipeline
(`lookout run --kafka`) reads the topic. Every line read is produced (converted to the seed
schema when it is combined; passed on as written when it cannot be read, so the consumer's
record contract dead-letters it with a reason instead of it vanishing here). The read position
is saved only after the broker has acknowledged every message up to it (acks=all, idempotent
producer): a crash re-sends at most the last interval, never skips. Each message carries its
record id (header `lookout-id`), so `lookout run --kafka` recognises those re-sent copies: one
document in Elasticsearch and one count per line, whatever the crashes.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from lookout.factory import TailInput
from lookout.kafka.admin import ensure_topics
from lookout.kafka.clients import produce, producer_config
from lookout.kafka.config import KafkaConnection
from lookout.kafka.errors import KafkaDeliveryError
from lookout.loop import DeliveryLoop, StopRequest
from lookout.safe_text import setup_logging
from lookout.sources.tail import ROTATE_WAIT, load_position, save_position
from lookout.statelock import StateDirLock

log = logging.getLogger("lookout.ship")
REASON_HEADER = "lookout-reason"
ID_HEADER = "lookout-id"  # the record id (the tail's `<fingerprint>-<offset>`); lookout.sources.kafka reads it


@dataclass
class ShipOptions:
    path: Path
    kafka: KafkaConnection
    topic: str = "test-inter"
    state_dir: Path = Path(".lookout-ship")
    log_format: str = "auto"
    host: str | None = None
    geoip: Path | None = None
    partitions: int = 3
    duration: float | None = None
    commit_interval: float = 1.0
    rotate_wait: float = ROTATE_WAIT  # seconds a rotated log is still read after its last growth


def ship_producer_config(opts: ShipOptions) -> dict[str, Any]:
    """acks=all + idempotence (lookout.kafka.clients): a message counts as shipped only once every
    in-sync replica has it, and librdkafka's retries cannot write it twice. --kafka-config wins."""
    return producer_config(opts.kafka, **{"linger.ms": 20, "client.id": "lookout-ship"})


class Shipper:
    """Poll the tail, produce each line, and save the position once it is acknowledged."""

    def __init__(self, opts: ShipOptions) -> None:
        from confluent_kafka import Producer

        self.opts = opts
        self.stop = StopRequest()
        self.final = False  # the last commit: a stop request may then give up waiting
        self.source = TailInput(
            opts.path, opts.state_dir, log_format=opts.log_format, host=opts.host, geoip=opts.geoip, rotate_wait=opts.rotate_wait
        ).open()
        ensure_topics(opts.kafka, {opts.topic: opts.partitions}, stop=lambda: self.stop_requested)
        self.producer = Producer(ship_producer_config(opts))
        self.errors: list[str] = []
        self.pending: Any = None  # position of the last chunk produced, not yet acknowledged
        self.lines = 0
        self.unreadable = 0
        self.acked = 0

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))
        else:
            self.acked += 1

    def _produce(self, value: bytes, key: str, headers: list[tuple[str, bytes]] | None) -> None:
        produce(self.producer, self.opts.topic, value, key, headers, self._delivered)  # waits while the queue is full

    def ship_chunk(self, chunk: Any) -> None:
        data: bytes = chunk.data or b""
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        ids = chunk.record_ids(pl.Series("line", range(len(lines)), dtype=pl.Int64)).to_list() if chunk.record_ids else None
        reasons: dict[int, tuple[str, str]] = chunk.meta.get("reasons", {})
        for i, line in enumerate(lines):
            if not line.strip():
                continue  # blank lines are not records (the pipeline skips them too)
            rid = ids[i] if ids else f"{chunk.first_line + i}"
            headers = [(ID_HEADER, rid.encode())]  # the run uses it as the record's id (no duplicate after a crash)
            if i in reasons:
                self.unreadable += 1
                headers.append((REASON_HEADER, reasons[i][0].encode()))
            self._produce(line, rid, headers)
            self.lines += 1
        self.pending = chunk.position
        self.producer.poll(0)

    def commit(self) -> None:
        """Wait until every produced message is acknowledged, then save the position."""
        while True:
            left = self.producer.flush(5.0)
            if self.errors:
                raise KafkaDeliveryError(
                    f"Kafka did not take {len(self.errors)} record(s): {self.errors[0]}; "
                    "position not saved, a restart re-sends from the last saved one"
                )
            if left == 0:
                break
            if self.stop_requested:  # one signal ends it within 5 s, whichever commit it interrupts
                raise KafkaDeliveryError(
                    f"stopped with {left} record(s) not acknowledged by Kafka; the position was "
                    "not saved past them, so the next start sends them again"
                )
            log.warning("waiting for Kafka to acknowledge %d record(s)", left)
        if self.pending is not None:
            save_position(self.opts.state_dir, self.pending)
            self.pending = None

    @property
    def stop_requested(self) -> bool:
        return self.stop.requested

    def _step(self) -> bool:
        """One poll of the log: the lines read are produced (acknowledged at the next commit)."""
        chunk = self.source.poll(0.2)
        if chunk is None:
            self.producer.poll(0)
            return False
        self.ship_chunk(chunk)
        return True

    def run(self) -> int:
        saved = load_position(self.opts.state_dir)
        self.source.restore(saved)
        if saved is None and (start := self.source.start_position()) is not None:
            # the log's file named before anything is sent: a crash before the first position
            # save still finds that file if it is renamed while `ship` is down (as `run` does)
            save_position(self.opts.state_dir, start)
        loop = DeliveryLoop(self.opts.commit_interval, self.opts.duration, stopped=lambda: self.stop.requested)
        loop.run(self._step, self.commit)
        self.final = True
        self.commit()
        self.source.close()
        conv = self.source.conv
        sys.stderr.write(
            f"lookout ship stopped: {self.lines:,} records to {self.opts.topic} ({conv.json_lines:,} JSON, "
            f"{conv.combined_lines:,} combined, {self.unreadable:,} unreadable sent as written with header "
            f"{REASON_HEADER}); position in {self.opts.state_dir}/\n"
        )
        return 0

    def request_stop(self, *_: Any) -> None:
        self.stop()


def run_ship(opts: ShipOptions) -> int:
    """Raises `StateDirBusy` when another process ships from the same state dir."""
    setup_logging(logging.INFO)
    lock = StateDirLock(opts.state_dir)
    try:
        shipper = Shipper(opts)
        shipper.stop.install()
        return shipper.run()
    finally:
        lock.release()
