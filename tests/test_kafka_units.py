"""The Kafka source's event-time extraction must agree with records.py, or the per-partition
watermark would differ from the engine's view of the same records."""

from __future__ import annotations

import orjson
import polars as pl

from lookout.records import parse_line
from lookout.sources.kafka import event_times

LINES = [
    b'{"client_ip":"1.2.3.4","host":"h","status":"200","@timestamp":"1659509511.865323"}',
    b'{"client_ip":"1.2.3.4","host":"h","status":"200","@timestamp":1659509512.5}',
    b'{"client_ip":"1.2.3.4","host":"h","status":"200","@timestamp":"2022-08-03T06:51:53.25Z"}',
    b'{"client_ip":"1.2.3.4","host":"h","status":"200","@timestamp":"1659509514.0000005"}',
    b'{"client_ip":"1.2.3.4","host":"h","status":"200","@timestamp":"1659509515"}',
]


def test_event_times_match_the_reference_parser() -> None:
    want = [parse_line(x)["ts"] for x in LINES]
    data = b"\n".join(LINES) + b"\n"
    every = pl.Series("line", range(len(LINES)), dtype=pl.Int64)
    assert event_times(LINES, data, every).to_list() == want
    assert event_times(LINES, None, every).to_list() == want  # messages with newlines: slow path
    some = pl.Series("line", [1, 2, 4], dtype=pl.Int64)
    assert event_times(LINES, data, some).to_list() == [want[1], want[2], want[4]]


def test_event_times_of_a_message_with_an_embedded_newline() -> None:
    obj = orjson.loads(LINES[0])
    line = orjson.dumps(obj, option=orjson.OPT_INDENT_2)  # pretty JSON: newlines inside one message
    assert b"\n" in line
    assert event_times([line], None, pl.Series("line", [0], dtype=pl.Int64)).to_list() == [parse_line(line)["ts"]]
