"""Prometheus metrics of `lookout run`.

The run loop publishes a snapshot of its own counts after each step (`publish`), so a scrape
never reads dictionaries the loop is changing and the counters are exactly the run's counts
(the same ones the checkpoint keeps: they carry on across restarts). Labels are rule names,
reason codes, sink and target labels, Kafka topic/partition — never a client IP or a host.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from lookout.notify.sender import Notifier
    from lookout.pipeline import Pipeline


@dataclass
class Snapshot:
    records: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    results: dict[str, int] = field(default_factory=dict)
    incidents: dict[str, dict[str, int]] = field(default_factory=dict)
    firing: dict[str, int] = field(default_factory=dict)
    watermark_s: float | None = None
    newest_event_s: float | None = None
    sink_errors: dict[str, int] = field(default_factory=dict)
    kafka_lag: dict[tuple[str, int], int] = field(default_factory=dict)


class Health:
    """Alive = the loop went round recently; and what it read is checkpointed in time."""

    def __init__(self, commit_interval: float) -> None:
        self.loop_stale = 10.0 + commit_interval
        self.checkpoint_stale = max(30.0, 10 * commit_interval)
        now = time.monotonic()
        self.beat_at = now
        self.committed_at = now
        self.dirty_since: float | None = None

    def beat(self, dirty: bool) -> None:
        now = time.monotonic()
        self.beat_at = now
        if dirty and self.dirty_since is None:
            self.dirty_since = now
        elif not dirty:
            self.dirty_since = None

    def committed(self) -> None:
        self.committed_at = time.monotonic()
        self.dirty_since = None

    def check(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        loop_age = now - self.beat_at
        uncommitted = 0.0 if self.dirty_since is None else now - self.dirty_since
        details = {
            "loop_seconds_ago": round(loop_age, 3),
            "checkpoint_seconds_ago": round(now - self.committed_at, 3),
            "uncommitted_seconds": round(uncommitted, 3),
        }
        return loop_age <= self.loop_stale and uncommitted <= self.checkpoint_stale, details


class RunMetrics(Collector):
    def __init__(self, source: str, pipeline: Pipeline, notifier: Notifier | None = None) -> None:
        self.source = source
        self.rules = [r.name for r in pipeline.ruleset.rules]
        self.tracked = list(pipeline.incidents.rules)
        self.notifier = notifier
        self._lock = threading.Lock()
        self._snap = Snapshot()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.checkpoint_seconds = Histogram(
            "lookout_checkpoint_seconds",
            "Time to flush the sinks and write a checkpoint.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        build = Gauge("lookout_build_info", "lookout's version (always 1).", ["version"], registry=self.registry)
        try:
            ver = version("lookout")
        except PackageNotFoundError:
            ver = "unknown"
        build.labels(version=ver).set(1)

    def publish(self, pipeline: Pipeline, sink_errors: dict[str, int], kafka_lag: dict[tuple[str, int], int]) -> None:
        st, eng = pipeline.stats, pipeline.engine
        snap = Snapshot(
            records=st.records,
            reasons=dict(st.reasons),
            results=dict(st.results),
            incidents={r: dict(c) for r, c in st.incidents.items()},
            firing=pipeline.incidents.firing(),
            watermark_s=eng.watermark / 1e6 if eng.max_ts is not None else None,
            newest_event_s=eng.max_ts / 1e6 if eng.max_ts is not None else None,
            sink_errors=dict(sink_errors),
            kafka_lag=dict(kafka_lag),
        )
        with self._lock:
            self._snap = snap

    def collect(self) -> Iterator[Any]:
        with self._lock:
            s = self._snap
        c = CounterMetricFamily("lookout_records", "Valid records read.", labels=["source"])
        c.add_metric([self.source], s.records)
        yield c
        c = CounterMetricFamily("lookout_rejected", "Lines dead-lettered, by reason (late included).", labels=["reason"])
        for reason, n in sorted(s.reasons.items()):
            c.add_metric([reason], n)
        yield c
        c = CounterMetricFamily("lookout_results", "Result rows emitted, by rule.", labels=["rule"])
        for rule in self.rules:
            c.add_metric([rule], s.results.get(rule, 0))
        yield c
        c = CounterMetricFamily("lookout_incidents", "Incident transitions, by rule and status.", labels=["rule", "status"])
        g = GaugeMetricFamily("lookout_incidents_firing", "Incidents firing now, by rule.", labels=["rule"])
        for rule in self.tracked:
            for status in ("firing", "resolved", "merged"):
                c.add_metric([rule, status], s.incidents.get(rule, {}).get(status, 0))
            g.add_metric([rule], s.firing.get(rule, 0))
        yield c
        yield g
        if s.watermark_s is not None and s.newest_event_s is not None:
            yield GaugeMetricFamily("lookout_watermark_seconds", "The engine's watermark (Unix time).", value=s.watermark_s)
            yield GaugeMetricFamily(
                "lookout_event_lag_seconds", "Wall clock minus the newest event time seen.", value=time.time() - s.newest_event_s
            )
        c = CounterMetricFamily("lookout_sink_errors", "Items a sink refused for good, by sink.", labels=["sink"])
        for sink, n in sorted(s.sink_errors.items()):
            c.add_metric([sink], n)
        yield c
        if self.notifier is not None:
            c = CounterMetricFamily(
                "lookout_notifications", "Notification attempts, by target and outcome.", labels=["target", "outcome"]
            )
            counts = self.notifier.snapshot_counts()
            for label in self.notifier.labels():
                for outcome in ("sent", "retried", "dead"):
                    c.add_metric([label, outcome], counts.get((label, outcome), 0))
            yield c
            yield GaugeMetricFamily(
                "lookout_notification_queue", "Notifications waiting in the outbox.", value=self.notifier.queued()
            )
        if s.kafka_lag:
            g = GaugeMetricFamily(
                "lookout_kafka_consumer_lag", "Messages behind the partition's end.", labels=["topic", "partition"]
            )
            for (topic, part), n in sorted(s.kafka_lag.items()):
                g.add_metric([topic, str(part)], n)
            yield g
