"""The record contract: every input class, and the fast (vectorised) path equal to the reference."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookout.records import Rejected, parse_chunk, parse_line

GOOD = {"server": "s_v3", "client_ip": "154.85.126.16", "method": "PUT", "status": "201",
        "request_time": "0.28", "host": "api_38.example.com", "country": "US", "@timestamp": "1659509511.865323"}


def rec(**kw) -> bytes:
    d = {**GOOD, **kw}
    return orjson.dumps({k: v for k, v in d.items() if v is not ...})


def test_seed_record():
    r = parse_line(rec())
    assert r == {"ts": 1659509511865323, "status": 201, "request_time": 0.28, "client_ip": "154.85.126.16",
                 "host": "api_38.example.com", "country": "US", "method": "PUT", "server": "s_v3"}


@pytest.mark.parametrize("ts,us", [
    (1659509511, 1659509511_000000), ("1659509511", 1659509511_000000), (1659509511.5, 1659509511_500000),
    ("2022-08-03T06:51:51Z", 1659509511_000000), ("2022-08-03T06:51:51.250", 1659509511_250000),
    ("2022-08-03T08:51:51+02:00", 1659509511_000000), ("2022-08-03 06:51:51", 1659509511_000000),
])
def test_timestamps(ts, us):
    assert parse_line(rec(**{"@timestamp": ts}))["ts"] == us


@pytest.mark.parametrize("kw,reason", [
    ({"@timestamp": ...}, "missing-timestamp"), ({"@timestamp": None}, "missing-timestamp"),
    ({"@timestamp": "yesterday"}, "invalid-timestamp"), ({"@timestamp": True}, "invalid-timestamp"),
    ({"@timestamp": "nan"}, "invalid-timestamp"), ({"@timestamp": -5}, "invalid-timestamp"),
    ({"status": ...}, "missing-status"), ({"status": "20x"}, "invalid-status"), ({"status": 700}, "invalid-status"),
    ({"status": "99"}, "invalid-status"), ({"status": 201.5}, "invalid-status"), ({"status": True}, "invalid-status"),
    ({"status": " 201"}, "invalid-status"),
    ({"client_ip": ...}, "missing-client_ip"), ({"client_ip": "1.2.3"}, "invalid-client_ip"),
    ({"client_ip": "256.1.1.1"}, "invalid-client_ip"), ({"client_ip": 16909060}, "invalid-client_ip"),
    ({"host": ...}, "missing-host"), ({"host": ""}, "invalid-host"), ({"host": 5}, "invalid-host"),
    ({"host": {"a": 1}}, "invalid-host"),
    ({"request_time": "fast"}, "invalid-request_time"), ({"request_time": -0.1}, "invalid-request_time"),
    ({"request_time": "inf"}, "invalid-request_time"), ({"request_time": 9.3e12}, "invalid-request_time"), ({"request_time": [1]}, "invalid-request_time"),
    ({"country": 1}, "invalid-country"), ({"method": False}, "invalid-method"), ({"server": ["x"]}, "invalid-server"),
])
def test_invalid_fields(kw, reason):
    with pytest.raises(Rejected) as e:
        parse_line(rec(**kw))
    assert e.value.reason == reason
    parsed = parse_chunk(rec() + b"\n" + rec(**kw) + b"\n")
    assert parsed.records.height == 1 and [r.reason for r in parsed.rejected] == [reason]


@pytest.mark.parametrize("line,reason", [
    (b"\xff\xfe{}", "invalid-utf8"), (b"{not json", "invalid-json"), (b"[1, 2]", "not-an-object"),
    (b"42", "not-an-object"), (b"null", "not-an-object"), (b'"str"', "not-an-object"),
])
def test_invalid_lines(line, reason):
    parsed = parse_chunk(rec() + b"\n" + line + b"\n" + rec())
    assert parsed.records.get_column("line").to_list() == [0, 2]
    assert [(r.index, r.reason, r.raw) for r in parsed.rejected] == [(1, reason, line)]


@pytest.mark.parametrize("kw,field,value", [
    ({"request_time": None}, "request_time", None), ({"request_time": "-"}, "request_time", None),
    ({"request_time": ""}, "request_time", None), ({"request_time": ...}, "request_time", None),
    ({"request_time": 0}, "request_time", 0.0), ({"country": "-"}, "country", None), ({"country": ""}, "country", None),
    ({"status": 201}, "status", 201), ({"status": 201.0}, "status", 201), ({"client_ip": "2001:db8::1"}, "client_ip", "2001:db8::1"),
    ({"method": ...}, "method", None), ({"extra": {"nested": [1]}}, "host", "api_38.example.com"),
])
def test_unknowns_and_mixed_types(kw, field, value):
    assert parse_line(rec(**kw))[field] == value
    df = parse_chunk(rec(**kw)).records
    assert df.height == 1 and df.get_column(field).to_list() == [value]


def test_blank_lines_are_skipped_and_numbering_kept():
    parsed = parse_chunk(rec() + b"\n\n" + b"{bad\n" + b"   \n" + rec() + b"\r\n")
    assert parsed.records.get_column("line").to_list() == [0, 4]
    assert [r.index for r in parsed.rejected] == [2]


values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 1000), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "-", "201", "404", "0.28", "1e3", "nan", "abc", "1.2.3.4", "::1", "2022-08-03T06:51:51Z",
                     "1659509511.865323", " 201", "4xx", "201.0", "api.example.com", "5", "true"]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.sampled_from(["a"]), st.integers(), max_size=1),
)
field_names = st.sampled_from(["server", "client_ip", "method", "status", "request_time", "host", "country", "@timestamp"])


@st.composite
def lines(draw):
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.sampled_from([b"{oops", b"[1]", b"7", b"\xff\xfe", b'{"a":1}{"b":2}', b'{"host":"x"} trailing']))
    d = dict(GOOD)
    for _ in range(draw(st.integers(0, 3))):
        f = draw(field_names)
        if draw(st.booleans()):
            d.pop(f, None)
        else:
            d[f] = draw(values)
    try:
        return orjson.dumps(d)
    except TypeError:
        return orjson.dumps(GOOD)


def _ref(line: bytes):
    try:
        return parse_line(line)
    except Rejected as e:
        return e.reason


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(lines(), min_size=1, max_size=30))
def test_fast_path_equals_reference(ls):
    parsed = parse_chunk(b"\n".join(ls) + b"\n")
    got: dict[int, object] = {r.index: r.reason for r in parsed.rejected}
    for row in parsed.records.iter_rows(named=True):
        i = row.pop("line")
        got[i] = row
    want = {i: _ref(ln) for i, ln in enumerate(ls)}
    assert got.keys() == want.keys()
    for i in want:
        g, w = got[i], want[i]
        if isinstance(w, dict):
            assert isinstance(g, dict), (ls[i], g)
            assert g == w, ls[i]
        else:
            assert g == w, ls[i]
