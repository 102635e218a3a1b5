"""Log formats: combined parsing on 10,000 real lines, JSON pass-through, GeoIP, the printed config."""

from __future__ import annotations

import subprocess
from collections import Counter
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from lookout.nginx_config import nginx_config
from lookout.records import parse_chunk
from lookout.sources.nginx import INVALID_COMBINED, LineConverter, converter_for, parse_time_local
from tests.fixtures.nginx import Nginx, free_port, nginx_binary, write_mmdb


def _lines(p: Path) -> list[bytes]:
    return p.read_bytes().split(b"\n")[:-1]


def test_every_apache_line_parses_and_passes_the_contract(apache_logs: Path) -> None:
    conv = LineConverter("auto", host="web-1")
    out, reasons = conv.convert(apache_logs.read_bytes())
    assert reasons == {} and conv.combined_lines == 10_000 and conv.unparsed_lines == 0
    parsed = parse_chunk(out)
    assert parsed.lines == 10_000 and parsed.rejected == [] and parsed.records.height == 10_000


def test_fields_match_an_independent_reading_of_every_line(apache_logs: Path) -> None:
    """Client, status, method, time, path, bytes, referer and user agent of each line, against a plain split + strptime."""
    conv = LineConverter("combined", host="web-1")
    raw = _lines(apache_logs)
    recs = parse_chunk(conv.convert(b"\n".join(raw) + b"\n")[0]).records
    assert recs.height == len(raw)
    checked = 0
    for line, got in zip(raw, recs.iter_rows(named=True), strict=False):
        text = line.decode("utf-8", "replace")
        before, request, after = text.split('"', 2)[0], text.split('"')[1], text.split('"')[2]
        ts = datetime.strptime(before[before.index("[") + 1 : before.index("]")], "%d/%b/%Y:%H:%M:%S %z")
        assert got["client_ip"] == before.split()[0]
        assert got["status"] == int(after.split()[0])
        assert got["method"] == request.split()[0]
        assert got["ts"] == int(ts.timestamp()) * 1_000_000
        assert got["host"] == "web-1" and got["country"] is None and got["request_time"] is None
        words = request.split(" ")
        assert got["path"] == (words[1] if len(words) > 1 and words[1] not in ("", "-") else None)
        sent = after.split()[1]
        assert got["bytes"] == (None if sent == "-" else int(sent))
        if "\\" not in text and text.count('"') == 6:  # quoted fields, whole and without escapes: a plain split reads them
            quoted = text.split('"')
            assert got["referer"] == (None if quoted[3] in ("", "-") else quoted[3])
            assert got["user_agent"] == (None if quoted[5] in ("", "-") else quoted[5])
            checked += 1
    assert checked > 9_900
    assert recs.get_column("bytes").sum() == sum(int(x) for ln in raw if (x := ln.split(b'"')[2].split()[1]) != b"-")
    statuses = Counter(recs.get_column("status").to_list())
    assert statuses[200] == sum(1 for ln in raw if b'" 200 ' in ln)
    assert statuses[404] == sum(1 for ln in raw if b'" 404 ' in ln) > 0
    first = recs.row(0, named=True)
    assert (first["client_ip"], first["method"], first["status"]) == ("83.149.9.216", "GET", 200)
    assert first["ts"] == 1_431_857_103_000_000  # 17/May/2015:10:05:03 +0000


def test_time_local_offsets_are_honoured() -> None:
    same = [
        b"17/May/2015:10:05:03 +0000",
        b"17/May/2015:15:35:03 +0530",
        b"17/May/2015:03:05:03 -0700",
        b"18/May/2015:00:05:03 +1400",
    ]
    assert {parse_time_local(s) for s in same} == {1_431_857_103}
    assert parse_time_local(b"29/Feb/2016:00:00:00 +0000") == 1_456_704_000
    for bad in (
        b"29/Feb/2015:00:00:00 +0000",
        b"17/Foo/2015:10:05:03 +0000",
        b"17/May/2015:25:05:03 +0000",
        b"17/May/2015 10:05:03",
        b"",
    ):
        assert parse_time_local(bad) is None


def test_bad_lines_reach_the_contract_with_reasons() -> None:
    ok = b'10.1.2.3 - - [17/May/2015:10:05:03 +0200] "GET / HTTP/1.1" 200 12 "-" "curl"'
    lines = [
        ok,
        b"garbage that is no log line",
        b'web.example - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "-" "-"',  # hostname, not address
        b'10.1.2.3 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" - 1 "-" "-"',  # no status
        b'10.1.2.3 - - [31/Feb/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "-" "-"',  # no such day
        b'10.1.2.3 - - [17/May/2015:10:05:03 +0000] "-" 400 0 "-" "-"',  # nginx: a request it could not read
        b'{"client_ip":"10.9.9.9","status":"503","host":"j.test","@timestamp":"1431857103.5"}',  # JSON in auto
        b"",
    ]
    conv = LineConverter("auto", host="web-1")
    out, reasons = conv.convert(b"\n".join(lines) + b"\n")
    assert out.count(b"\n") == len(lines)  # one output line per input line: numbering stays exact
    assert reasons == {1: (INVALID_COMBINED, "not an nginx combined-format line nor a JSON object")}
    parsed = parse_chunk(out)
    why = {r.index: r.reason for r in parsed.rejected}
    assert why == {1: "invalid-json", 2: "invalid-client_ip", 3: "invalid-status", 4: "invalid-timestamp"}
    assert parsed.rejected[0].raw == lines[1]  # the dead letter keeps the line as written
    good = parsed.records.sort("line").iter_rows(named=True)
    r0, r5, r6 = next(good), next(good), next(good)
    assert r0["ts"] == 1_431_849_903_000_000 and r0["client_ip"] == "10.1.2.3"  # +0200 → 08:05:03Z
    assert r5["status"] == 400 and r5["method"] is None  # a 400 with no request still counts for goal 2
    assert r6["host"] == "j.test" and r6["ts"] == 1_431_857_103_500_000
    assert parsed.lines == len(parsed.rejected) + parsed.records.height == 7  # blank line: not a record


def test_combined_without_a_host_is_rejected_missing_host(apache_logs: Path) -> None:
    raw = b"\n".join(_lines(apache_logs)[:100]) + b"\n"
    parsed = parse_chunk(LineConverter("combined", host=None).convert(raw)[0])
    assert parsed.records.height == 0 and Counter(r.reason for r in parsed.rejected) == {"missing-host": 100}
    # what `run --tail` and `ship` do instead: this machine's name
    said: list[str] = []
    conv = converter_for("auto", None, None, announce=said.append)
    assert conv.host and said and conv.host in said[0]
    assert parse_chunk(conv.convert(raw)[0]).records.height == 100


def test_json_mode_passes_lines_unchanged() -> None:
    data = b'{"client_ip":"1.2.3.4","status":"200","host":"a","@timestamp":"1"}\n10.0.0.1 - - [x] "GET /" 200 1\n'
    out, reasons = LineConverter("json").convert(data)
    assert out == data and reasons == {}
    assert [r.reason for r in parse_chunk(out).rejected] == ["invalid-json"]


def test_geoip_country_for_combined_and_json_lines(tmp_path: Path) -> None:
    db = write_mmdb(tmp_path / "country.mmdb", {"83.149.9.0/24": "RU", "203.0.113.0/24": "NL"})
    conv = LineConverter("auto", host="web-1", geoip=db)
    lines = [
        b'83.149.9.216 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "-" "-"',
        b'1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "-" "-"',  # not in the database
        b'2001:db8::1 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "-" "-"',  # IPv6, v4-only db
        b'{"client_ip":"203.0.113.9","status":"200","host":"a","country":"-","@timestamp":"1"}',
        b'{"client_ip":"203.0.113.9","status":"200","host":"a","country":"FR","@timestamp":"1"}',  # kept
    ]
    out, _ = conv.convert(b"\n".join(lines) + b"\n")
    recs = parse_chunk(out).records.sort("line")
    assert recs.get_column("country").to_list() == ["RU", None, None, "NL", "FR"]
    conv.close()


def test_geoip_rejects_a_file_that_is_no_database(tmp_path: Path) -> None:
    bad = tmp_path / "no.mmdb"
    bad.write_bytes(b"not a database")
    with pytest.raises(ValueError, match="not a readable MaxMind database"):
        LineConverter("auto", host="h", geoip=bad)


def test_run_tail_over_the_real_log(apache_logs: Path, tmp_path: Path, lookout_cmd: list[str]) -> None:
    """10,000 real lines through `lookout run --tail`: all stored, none rejected, alerts raised."""
    log = tmp_path / "logs" / "access.log"
    log.parent.mkdir()
    log.write_bytes(apache_logs.read_bytes())
    out, state = tmp_path / "out", tmp_path / "state"
    proc = subprocess.run(
        [
            *lookout_cmd,
            "run",
            "--tail",
            str(log),
            "--host",
            "web-1",
            "--lateness",
            "2m",
            "--state-dir",
            str(state),
            "--out",
            str(out),
            "--duration",
            "3.5",
            "--idle-timeout",
            "1s",
            "--no-view",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "10,000 lines, 10,000 valid, 0 rejected, 0 late" in proc.stderr
    count = subprocess.run([*lookout_cmd, "count", "--state-dir", str(state)], capture_output=True, timeout=30)
    assert orjson.loads(count.stdout) == {"count": 10_000}
    alerts = [orjson.loads(x) for x in (out / "goal1-topic.jsonl").read_bytes().splitlines()]
    assert alerts and all(a["count"] > 10 for a in alerts)
    # goal 1 by hand: clients with more than 10 requests in some 20 s window (windows aligned
    # to whole seconds, and the log's times are whole seconds, so a window may start at a request)
    times: dict[str, list[int]] = {}
    for line in _lines(apache_logs):
        text = line.decode("utf-8", "replace")
        stamp = text[text.index("[") + 1 : text.index("]")]
        times.setdefault(text.split()[0], []).append(int(datetime.strptime(stamp, "%d/%b/%Y:%H:%M:%S %z").timestamp()))
    expected = {ip for ip, ts in times.items() if any(sum(t <= u < t + 20 for u in ts) > 10 for t in ts)}
    assert {a["client_ip"] for a in alerts} == expected


def test_printed_config_is_accepted_by_nginx(tmp_path: Path, lookout_cmd: list[str]) -> None:
    if nginx_binary() is None:
        pytest.fail("nginx is not installed: `make test` installs nginx-light")
    printed = subprocess.run(
        [*lookout_cmd, "nginx-config", "--access-log", str(tmp_path / "a.log")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert printed == nginx_config(None, str(tmp_path / "a.log"))
    assert "log_format lookout escape=json" in printed and "$msec" in printed and "geo $lookout_country" in printed
    n = Nginx(tmp_path / "n", "lookout", snippet=printed)
    n.port = free_port()
    (n.root / "logs").mkdir(parents=True)
    (n.root / "tmp").mkdir()
    n.conf.write_text(n.config())
    check = subprocess.run(n._cmd("-t"), capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr


def test_the_docs_show_the_printed_config() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "nginx.md").read_text()
    assert nginx_config() in doc
