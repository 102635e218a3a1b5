"""`lookout run --tail` on the access log of a real nginx, driven by real HTTP requests."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.fixtures.nginx import BAD_HOST, GOOD_HOST, LookoutRun, Nginx


def client(i: int) -> str:
    """A distinct client address per request number (so a lost or doubled line shows)."""
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def assert_exactly(run: LookoutRun, n: int) -> None:
    """The store holds requests 0..n-1, each exactly once."""
    rows = run.search()
    seen = Counter(r["client_ip"] for r in rows)
    assert len(rows) == n, f"{len(rows)} stored, expected {n}"
    assert sorted(seen) == sorted(client(i) for i in range(n)), "gaps"
    assert max(seen.values()) == 1, f"duplicates: {[k for k, v in seen.items() if v > 1][:5]}"
    assert len({r["id"] for r in rows}) == n
    assert run.count() == n


@pytest.mark.parametrize("fmt", ["lookout", "combined"])
def test_a_burst_from_one_client_raises_goal1(
    fmt: str, request: pytest.FixtureRequest, tmp_path: Path, lookout_cmd: list[str]
) -> None:
    ng: Nginx = request.getfixturevalue("nginx" if fmt == "lookout" else "nginx_combined")
    extra = ("--host", "web-1") if fmt == "combined" else ()
    run = LookoutRun(lookout_cmd, ng.access_log, tmp_path, *extra).start()
    calm = ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
    for i in range(25):  # 25 from the noisy one, 5 each from the calm ones, interleaved
        ng.request("203.0.113.7")
        if i % 5 == 0:
            ng.burst(calm)
    took = run.wait_for(lambda: any(a["client_ip"] == "203.0.113.7" for a in run.results("goal1-topic")), "the goal-1 alert")
    assert took < 15
    run.wait_for(lambda: run.stored() == 40, "40 records stored")
    assert run.stop() == 0
    alerts = run.results("goal1-topic")
    assert {a["client_ip"] for a in alerts} == {"203.0.113.7"} and all(a["count"] > 10 for a in alerts)
    assert "40 lines, 40 valid, 0 rejected" in run.stderr()
    rows = run.search("--client-ip", "203.0.113.7")
    assert len(rows) == 25
    if fmt == "lookout":  # the JSON format carries host, server, request_time and country (nginx's geo)
        assert {(r["host"], r["server"], r["country"]) for r in rows} == {(GOOD_HOST, "test-nginx", "NL")}
        assert all(r["request_time"] >= 0 for r in rows)
    else:  # combined: host from --host, no country, no request_time
        assert {r["host"] for r in rows} == {"web-1"}
        assert all("country" not in r and "request_time" not in r for r in rows)


FIELD_RULES = """
lateness: 10s
rules:
  - {name: path-404, window: 1 minute, filter: {status: 404}, group_by: path, aggregate: count, threshold: count > 2}
  - {name: bytes-client, window: 1 minute, group_by: client_ip, aggregate: sum(bytes), threshold: sum(bytes) > 100}
"""


@pytest.mark.parametrize("fmt", ["lookout", "combined"])
def test_path_user_agent_referer_and_bytes_reach_rules_and_the_store(
    fmt: str, request: pytest.FixtureRequest, tmp_path: Path, lookout_cmd: list[str]
) -> None:
    """Issue 9: both log formats carry the four optional fields, as nginx writes them, through `run --tail`."""
    ng: Nginx = request.getfixturevalue("nginx" if fmt == "lookout" else "nginx_combined")
    rules = tmp_path / "rules.yaml"
    rules.write_text(FIELD_RULES)
    extra = ("--host", "web-1") if fmt == "combined" else ()
    run = LookoutRun(lookout_cmd, ng.access_log, tmp_path, "--rules", str(rules), *extra).start()
    agent = 'probe/1.0 "quoted" \\back <b>markup</b> [red]x[/red]'  # escaped by nginx, read back as sent
    sent = 0
    for i in range(6):
        hdrs = {"User-Agent": agent, "Referer": f"https://ref.example/p?i={i}"}
        assert ng.request("203.0.113.9", BAD_HOST, f"/missing/x.php?id={i % 2}", headers=hdrs) == 404
        sent += ng.last_body
        assert ng.request(client(i), GOOD_HOST, "/ok", headers={"User-Agent": "curl/8"}) == 200
    # a Latin-1 User-Agent (http.client sends str headers as Latin-1): nginx's escape=json writes the
    # byte as it came, which is not UTF-8; the request must still count
    assert ng.request(client(99), GOOD_HOST, "/ok", headers={"User-Agent": "caf\u00e9"}) == 200
    run.wait_for(lambda: run.stored() == 13, "13 records stored")
    run.wait_for(lambda: len(run.results("path-404")) == 2 and run.results("bytes-client"), "the path and bytes alerts")
    assert run.stop() == 0
    assert "13 lines, 13 valid, 0 rejected" in run.stderr()
    assert {(a["path"], a["count"]) for a in run.results("path-404")} == {("/missing/x.php?id=0", 3), ("/missing/x.php?id=1", 3)}
    (alert,) = run.results("bytes-client")
    assert alert["client_ip"] == "203.0.113.9" and alert["sum(bytes)"] > 100
    rows = run.search("--path", "/missing/")
    assert len(rows) == 6 and sum(r["bytes"] for r in rows) == sent > 0
    assert {r["path"] for r in rows} == {"/missing/x.php?id=0", "/missing/x.php?id=1"}
    assert {r["user_agent"] for r in rows} == {agent}
    assert sorted(r["referer"] for r in rows) == [f"https://ref.example/p?i={i}" for i in range(6)]
    ok = [r for r in run.search("--path", "/ok") if r["user_agent"] == "curl/8"]
    assert len(ok) == 6 and {r["bytes"] for r in ok} == {3} and all("referer" not in r for r in ok)
    (latin1,) = run.search("--client-ip", client(99))
    assert latin1["user_agent"] == "caf\ufffd"  # the byte that is not UTF-8 (combined: nginx's \xE9) is U+FFFD in both


def test_a_host_answering_many_404s_raises_goal2(nginx: Nginx, tmp_path: Path, lookout_cmd: list[str]) -> None:
    run = LookoutRun(lookout_cmd, nginx.access_log, tmp_path).start()
    for i in range(20):  # 20 different clients (no goal-1 noise), each one 404 and one 200
        assert nginx.request(client(i), BAD_HOST, f"/missing/{i}") == 404
        assert nginx.request(client(i), GOOD_HOST) == 200
    run.wait_for(lambda: any(a["host"] == BAD_HOST for a in run.results("goal2-topic")), "the goal-2 alert")
    run.wait_for(lambda: run.stored() == 40, "40 records stored")
    assert run.stop() == 0
    alerts = run.results("goal2-topic")
    assert {a["host"] for a in alerts} == {BAD_HOST} and all(a["count"] > 15 for a in alerts)
    assert run.results("goal1-topic") == []


def test_rotation_in_the_middle_loses_nothing(nginx: Nginx, tmp_path: Path, lookout_cmd: list[str]) -> None:
    run = LookoutRun(lookout_cmd, nginx.access_log, tmp_path).start()
    nginx.burst([client(i) for i in range(30)])
    run.wait_for(lambda: run.stored() == 30, "the first 30 stored")
    nginx.burst([client(i) for i in range(30, 45)])  # possibly not read yet when the log is renamed
    nginx.rotate(".1")
    nginx.burst([client(i) for i in range(45, 60)])
    nginx.rotate(".2")  # a second rotation straight after
    nginx.burst([client(i) for i in range(60, 90)])
    nginx.wait_logged(90)
    run.wait_for(lambda: run.stored() == 90, "all 90 stored", timeout=30)
    assert run.stop() == 0
    assert_exactly(run, 90)
    assert "rotated" in run.stderr()


def test_copytruncate_loses_nothing(nginx: Nginx, tmp_path: Path, lookout_cmd: list[str]) -> None:
    run = LookoutRun(lookout_cmd, nginx.access_log, tmp_path).start()
    nginx.burst([client(i) for i in range(30)])
    run.wait_for(lambda: run.stored() == 30, "the first 30 stored")
    nginx.burst([client(i) for i in range(30, 40)])
    nginx.copytruncate()
    nginx.burst([client(i) for i in range(40, 60)])
    run.wait_for(lambda: run.stored() == 60, "all 60 stored", timeout=30)
    assert run.stop() == 0
    assert_exactly(run, 60)
    assert "truncated" in run.stderr()


def test_a_crash_before_any_line_is_read_still_finds_the_log_renamed_while_down(
    nginx: Nginx, tmp_path: Path, lookout_cmd: list[str]
) -> None:
    """The first checkpoint (written at start, before anything is read) names the log's file, not
    "nothing read": killed before its next one, a restart finds that file renamed beside the log
    and reads it before the new one. (CI found the race: the store showed the first lines at the
    flush and SIGKILL came before their checkpoint; the restart read only the new file.)"""
    run = LookoutRun(lookout_cmd, nginx.access_log, tmp_path).start()
    ckpt = tmp_path / "state" / "checkpoint"
    run.wait_for(lambda: ckpt.is_dir() and any(ckpt.glob("snapshot-*")), "the first checkpoint")
    assert run.stop(signal.SIGKILL) == -signal.SIGKILL
    nginx.burst([client(i) for i in range(20)])
    nginx.rotate(".1")
    nginx.burst([client(i) for i in range(20, 40)])
    run.start()
    run.wait_for(lambda: run.stored() == 40, "all 40 stored after the restart", timeout=30)
    assert run.stop() == 0
    assert_exactly(run, 40)
    assert "rotated while stopped" in run.stderr()


def test_a_restart_resumes_where_it_stopped(nginx: Nginx, tmp_path: Path, lookout_cmd: list[str]) -> None:
    run = LookoutRun(lookout_cmd, nginx.access_log, tmp_path).start()
    nginx.burst([client(i) for i in range(40)])
    run.wait_for(lambda: run.stored() == 40, "the first 40 stored")
    nginx.burst([client(i) for i in range(40, 50)])
    assert run.stop(signal.SIGKILL) == -signal.SIGKILL  # a crash, maybe between two checkpoints
    nginx.burst([client(i) for i in range(50, 70)])  # while lookout is down …
    nginx.rotate(".1")  # … the log is rotated …
    nginx.burst([client(i) for i in range(70, 90)])  # … and the new one written
    run.start()
    run.wait_for(lambda: run.stored() == 90, "all 90 stored after the restart", timeout=30)
    assert run.stop() == 0
    assert_exactly(run, 90)
    assert "rotated while stopped" in run.stderr()  # the checkpointed file was found renamed beside the log
    run.start()  # a clean restart with nothing new: nothing read again
    run.wait_for(lambda: run.stderr().count("resumed from checkpoint") >= 2, "the second resume")
    nginx.burst([client(i) for i in range(90, 100)])
    run.wait_for(lambda: run.stored() == 100, "the next 10 stored")
    assert run.stop() == 0
    assert_exactly(run, 100)
