"""`lookout.kafka.produce` and `lookout.kafka.consume`, the library under `lookout produce` and
`lookout consume`: against the real test broker (Tansu), nothing mocked."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from lookout.kafka.config import KafkaConnection
from lookout.kafka.consume import print_topic
from lookout.kafka.errors import TopicNotFound
from lookout.kafka.produce import file_lines, generated_lines, produce_lines


def test_file_lines_are_sent_as_written(tmp_path: Path) -> None:
    f = tmp_path / "in.txt"
    f.write_bytes(b'a\r\n\nb  \n{"x": 1}\nlast-without-newline')
    assert list(file_lines(str(f))) == [b"a", b"b  ", b'{"x": 1}', b"last-without-newline"]
    assert list(file_lines(str(f), count=2)) == [b"a", b"b  "]


def test_generated_lines_stop_at_count() -> None:
    lines = list(generated_lines(0, count=2500, seed=1))
    assert len(lines) == 2500 and all(line.startswith(b"{") for line in lines)


@pytest.mark.parametrize("count", [5_000, 50_000, None])
def test_unthrottled_generated_lines_are_never_stamped_ahead_of_the_clock(count: int | None) -> None:
    """`lookout produce --rate 0 --count 50000` stamped records from now on at 100 per second:
    the last ones 500 s ahead, past max_future (5 min), so `run` dead-lettered them all as
    future-timestamp. Now they end at the wall clock (a count: the recent past, at 100/s)."""
    got = []
    for line in generated_lines(0, count=count, seed=1):
        got.append(orjson.loads(line)["@timestamp"])
        assert float(got[-1]) <= time.time() + 0.001
        if len(got) == 20_000 and count is None:
            break
    ts = [float(t) for t in got]
    assert ts == sorted(ts)
    if count:
        assert len(ts) == count and time.time() - ts[0] >= count / 100 - 1  # 100 per event-second, ending now


def _read_back(conn: KafkaConnection, topic: str) -> bytes:
    out = io.BytesIO()
    print_topic(conn, topic, from_beginning=True, timeout=3.0, out=out)  # type: ignore[arg-type]
    return out.getvalue()


def test_every_line_is_acknowledged_and_reads_back(kafka_bootstrap: str, kafka_topic: Any) -> None:
    conn = KafkaConnection(kafka_bootstrap)
    topic = kafka_topic("feed")
    lines = [f"line-{i}".encode() for i in range(3000)]
    said: list[str] = []
    o = produce_lines(conn, topic, iter(lines), partitions=1, say=said.append)
    assert o.ok and o.sent == o.acknowledged == 3000 and not o.failed and o.fatal is None, o
    assert _read_back(conn, topic) == b"".join(line + b"\n" for line in lines)


def test_a_stop_request_ends_the_feed_with_everything_sent_acknowledged(kafka_bootstrap: str, kafka_topic: Any) -> None:
    conn = KafkaConnection(kafka_bootstrap)
    topic = kafka_topic("feed")
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()
    t0 = time.monotonic()
    o = produce_lines(conn, topic, generated_lines(200, seed=2), rate=200, partitions=1, stop=stop.is_set, stop_timeout=5)
    assert time.monotonic() - t0 < 10
    assert 0 < o.sent < 2000 and o.ok and o.acknowledged == o.sent, o
    assert len(_read_back(conn, topic).splitlines()) == o.sent


def test_the_rate_is_kept(kafka_bootstrap: str, kafka_topic: Any) -> None:
    conn = KafkaConnection(kafka_bootstrap)
    t0 = time.monotonic()
    o = produce_lines(conn, kafka_topic("feed"), iter([b"x"] * 300), rate=200, partitions=1)
    assert o.ok and o.sent == 300
    assert 1.4 <= time.monotonic() - t0, "300 messages at 200/s take 1.5 s"


def test_consuming_a_missing_topic_is_a_typed_error(kafka_bootstrap: str, kafka_topic: Any) -> None:
    with pytest.raises(TopicNotFound, match="does not exist"):
        print_topic(KafkaConnection(kafka_bootstrap), kafka_topic("missing"), timeout=1.0, out=io.BytesIO())  # type: ignore[arg-type]


def test_a_stop_while_the_broker_is_unreachable_ends_the_wait(lookout_cmd: list[str]) -> None:
    """`lookout produce` against a closed port waits for the broker; SIGTERM ends that wait with
    nothing sent (exit 0, no traceback) instead of killing the process mid-way."""
    import signal
    import subprocess

    from tests.fixtures.ports import free_port

    proc = subprocess.Popen(
        [*lookout_cmd, "produce", "--kafka", f"127.0.0.1:{free_port()}", "--count", "5"],
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)  # past start-up, into the retries
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "produced 0 messages" in err and "Traceback" not in err, err
