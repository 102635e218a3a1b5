"""The live feed the run loop updates: per-second counts, rule boards, incidents, bounds, threads."""

from __future__ import annotations

import threading
import time

import orjson
import pytest

from lookout.dashboard.boards import RuleBoard
from lookout.dashboard.feed import DashboardFeed, IncidentBook
from lookout.pipeline import Pipeline
from lookout.rules import RuleSet, load_rules
from lookout.sinks.base import SinkSet
from lookout.sources.base import Chunk
from tests.fixtures.dashboard import T0, burst, rec


def feed_with(rs: RuleSet, *chunks: list[bytes]) -> tuple[DashboardFeed, Pipeline]:
    feed = DashboardFeed(rs, source="test", sinks=["files"])
    p = Pipeline(rs, SinkSet([]))
    for i, lines in enumerate(chunks):
        report = p.step(Chunk("test", data=b"".join(lines), first_line=1 + 1000 * i))
        feed.step(report.results, report.records, p)
    return feed, p


def test_counts_by_status_class_rejected_and_late() -> None:
    rs = load_rules(None)
    lines = [rec(T0 + i * 0.01, "10.0.0.1", "a", status) for i, status in enumerate([200, 201, 301, 404, 404, 500, 503, 503])]
    lines += [b"not json\n", b'{"status": "200"}\n']
    late = [rec(T0 + 100, "10.0.0.2", "a"), rec(T0 - 100, "10.0.0.3", "a")]  # the second is late
    feed, p = feed_with(rs, lines, late)
    s = orjson.loads(feed.snapshot())
    tr = s["traffic"]
    assert {k: sum(tr[k]) for k in ("2xx", "3xx", "4xx", "5xx", "rejected", "late")} == {
        "2xx": 4,
        "3xx": 1,
        "4xx": 2,
        "5xx": 3,
        "rejected": 2,
        "late": 1,
    }  # a late record is still a valid one
    assert tr["t"][-1] == int(time.time()) and len(tr["t"]) == feed.history
    h = s["health"]
    assert h["records"] == 10 and h["rejected"] == 2 and h["late"] == 1 and h["source"] == "test"
    assert h["newest_event"] == "2022-08-03T06:51:40.000Z" and h["watermark"] == "2022-08-03T06:51:30.000Z"
    assert h["event_lag_seconds"] == pytest.approx(time.time() - (T0 + 100), abs=5)
    assert h["checkpoint_age_seconds"] is None
    feed.committed({"notifications queued": 3})
    time.sleep(feed.min_interval)
    h = orjson.loads(feed.snapshot())["health"]
    assert 0 <= h["checkpoint_age_seconds"] < 2 and h["state"] == {"notifications queued": 3}


def test_boards_alerts_and_latest_closed_windows() -> None:
    rs = load_rules(None)
    lines = burst(at=20, n=30) + [rec(T0 + 75 + i, "10.0.0.9", f"h{i % 3}", 200, 0.1 * (i % 3 + 1), "DE") for i in range(5)]
    feed, _ = feed_with(rs, lines)
    rules = {r["name"]: r for r in orjson.loads(feed.snapshot())["rules"]}
    g1 = rules["goal1-topic"]
    assert g1["kind"] == "alerting" and g1["total"] > 0 and g1["alerts"][0]["key"] == {"client_ip": "203.0.113.7"}
    g3 = rules["goal3-topic"]  # the 06:50 minute closed (watermark 06:51:09)
    assert g3["windows"] == [{"start": "2022-08-03T06:50:00.000Z", "end": "2022-08-03T06:51:00.000Z"}]
    assert g3["rows"] == [{"key": {"country": "US"}, "value": 30, "history": [30]}]
    assert rules["goal4-topic"]["rows"][0]["key"] == {"host": "api_1.example.com"}


def test_board_memory_is_bounded() -> None:
    rule = load_rules(None).by_name["goal4-topic"]
    b = RuleBoard(rule, windows=5, max_rows=10)
    for w in range(50):
        for k in range(1000):
            b.add(w * 60_000_000, (w + 1) * 60_000_000, (f"h{k}",), float(k))
    assert len(b.windows) == 5 and all(len(rows) <= 20 for _, rows in b.windows.values())
    s = b.summary()
    assert [r["value"] for r in s["rows"]] == [float(k) for k in range(999, 989, -1)]  # the largest kept
    assert s["rows"][0]["history"] == [999.0] * 5
    b.add(0, 60_000_000, ("old",), 1e9)  # older than everything kept: ignored
    assert min(b.windows) == 45 * 60_000_000
    alerts = RuleBoard(load_rules(None).by_name["goal1-topic"], max_alerts=7)
    for i in range(100):
        alerts.add(i, i + 1, (f"c{i}",), 11)
    assert len(alerts.alerts) == 7 and alerts.total == 100


def test_incident_book_orders_folds_and_bounds() -> None:
    book = IncidentBook(limit=10)
    book.add({"id": "old", "status": "firing", "start": "2022-01-01T00:00:00.000Z", "end": "x"})
    book.add({"id": "new", "status": "firing", "start": "2022-01-02T00:00:00.000Z", "end": "x"})
    book.add({"id": "m", "status": "merged", "start": "2022-01-03T00:00:00.000Z", "end": "x"})
    book.add({"id": "old", "status": "resolved", "start": "2022-01-01T00:00:00.000Z", "end": "2022-01-01T00:01:00.000Z"})
    assert [(d["id"], d["status"]) for d in book.listing()] == [("new", "firing"), ("old", "resolved")]
    for i in range(30):
        book.add({"id": f"r{i}", "status": "resolved", "start": "s", "end": f"{i:03d}"})
    assert len(book.by_id) == 10 and "new" in book.by_id  # firing ones survive the bound


def test_feed_add_incidents_bumps_version() -> None:
    feed = DashboardFeed(load_rules(None))
    v = feed.version
    feed.add_incidents([])
    assert feed.version == v
    feed.add_incidents(
        [
            {
                "id": "x",
                "status": "firing",
                "rule": "goal1-topic",
                "key": {"client_ip": "1.2.3.4"},
                "start": "a",
                "end": "b",
                "windows": 1,
                "peak": 11,
                "value": 11,
            }
        ]
    )
    assert feed.version == v + 1 and orjson.loads(feed.snapshot())["incidents"][0]["id"] == "x"


def test_snapshot_while_the_loop_steps_from_another_thread() -> None:
    rs = load_rules(None)
    feed = DashboardFeed(rs, min_interval=0)
    p = Pipeline(rs, SinkSet([]))
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():  # far more often than the server's 0.25 s
                orjson.loads(feed.snapshot())
                time.sleep(0.002)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    th = threading.Thread(target=reader)
    th.start()
    n = 0
    for i in range(200):
        lines = [rec(T0 + i + j * 0.01, f"10.0.{i % 5}.{j}", f"h{j % 7}", 200 + 100 * (j % 4)) for j in range(50)]
        report = p.step(Chunk("t", data=b"".join(lines), first_line=1 + 50 * i))
        feed.step(report.results, report.records, p)
        n += len(lines)
    stop.set()
    th.join()
    assert not errors
    s = orjson.loads(feed.snapshot())
    assert sum(sum(s["traffic"][k]) for k in ("2xx", "3xx", "4xx", "5xx")) == n


def test_prefill_from_the_output_files_of_an_earlier_run(tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "out"
    out.mkdir()
    (out / "goal3-topic.jsonl").write_bytes(
        b'{"window":{"start":"2022-08-03T06:50:00.000Z","end":"2022-08-03T06:51:00.000Z"},"country":"US","count":7}\n'
        b'{"window":{"start":"2022-08-03T06:51:00.000Z","end":"2022-08-03T06:52:00.000Z"},"country":"US","count":9}\n'
        b'{"window":{"start":"2022-08-03T06:52:00.000Z","end":"2022-08-03T0'
    )  # a line being written
    (out / "incidents.jsonl").write_bytes(
        orjson.dumps(
            {"id": "i1", "status": "firing", "rule": "goal1-topic", "key": {"client_ip": "1.2.3.4"}, "start": "a", "end": "b"}
        )
        + b"\n"
    )
    feed = DashboardFeed(load_rules(None), out_dir=out)
    feed.prefill()
    s = orjson.loads(feed.snapshot())
    g3 = next(r for r in s["rules"] if r["name"] == "goal3-topic")
    assert g3["rows"] == [{"key": {"country": "US"}, "value": 9, "history": [7, 9]}]
    assert [d["id"] for d in s["incidents"]] == ["i1"]
