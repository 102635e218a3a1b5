"""Record values on the terminal are data, never markup or control sequences (issue 17).

The live view and `consume` are driven in a real terminal (tmux, fixed size); the screen is read
back with `capture-pane`. Hostile values: rich markup, ANSI CSI/OSC sequences, \\r, \\n, bidi override.
"""

from __future__ import annotations

import io
import logging
import os
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from lookout.safe_text import SafeFormatter, escape_controls, json_line, markup, plain, text

SRC = str(Path(__file__).resolve().parents[3] / "src")

# value sent -> what the screen must show (the escaped text); each starts with a marker
HOSTILE = {
    "m1[/]evil[bold red]x": "m1[/]evil[bold red]x",
    "m2[link=http://x]y": "m2[link=http://x]y",
    "m3\x1b[2J": "m3\\x1b[2J",
    "m4\x1b]0;pwned\x07": "m4\\x1b]0;pwned\\x07",
    "m5\rX": "m5\\rX",
    "m6\nY": "m6\\nY",
    "m7\u202eZ": "m7\\u202eZ",
}
RAW_CONTROL = [chr(c) for c in [*range(0, 9), *range(11, 32), 127, *range(0x80, 0xA0)]] + ["\u202e"]


# ------------------------------------------------------------------------------ the helper itself


@pytest.mark.parametrize("value", [*HOSTILE, "\x9b2J", "a\u2028b", "tab\there", "\x00nul"])
def test_plain_has_no_control_characters_left(value: str) -> None:
    out = plain(value)
    assert not any(ch in out for ch in RAW_CONTROL + ["\n", "\t", "\u2028"]), repr(out)
    assert text(value).plain == out
    assert markup(value).replace("\\[", "[") == out


def test_plain_keeps_ordinary_text() -> None:
    assert plain("münchen.example.com [ok] 東京") == "münchen.example.com [ok] 東京"
    assert escape_controls("a\x1b[2Jb\r\n") == "a\\x1b[2Jb\\r\\n"


def test_json_line_stays_the_same_json_value() -> None:
    obj = {"host": "x\x9b2J\u202e\x7f\u2028", "k": "\x1b[31m"}
    s = json_line(orjson.dumps(obj).decode())
    assert orjson.loads(s) == obj
    assert not any(ch in s for ch in RAW_CONTROL), repr(s)


def test_log_formatter_cannot_be_forged() -> None:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(SafeFormatter("%(levelname)s %(message)s"))
    lg = logging.getLogger(f"test.safe.{uuid.uuid4().hex}")
    lg.addHandler(handler)
    lg.propagate = False
    lg.warning("host %s", "a\nERROR forged line\x1b[2J")
    try:
        raise ValueError("bad value\r\nERROR forged too")
    except ValueError:
        lg.exception("failed on %s", "\x1b]0;t\x07")
    lines = buf.getvalue().splitlines()
    assert lines[0] == "WARNING host a\\nERROR forged line\\x1b[2J"
    assert lines[1] == "ERROR failed on \\x1b]0;t\\x07"
    assert lines[-1] == "ValueError: bad value\\r\\nERROR forged too"
    assert not any(line.startswith("ERROR forged") for line in lines)
    assert "\x1b" not in buf.getvalue()


# ------------------------------------------------------------------------------ a real terminal


class Tmux:
    """A private tmux server (own socket) with one pane of a fixed size running `command`."""

    def __init__(self, tmp: Path, command: str, width: int = 160, height: int = 50) -> None:
        self.socket = f"lookout-test-{uuid.uuid4().hex[:8]}"
        conf = tmp / "tmux.conf"
        conf.write_text("set -g remain-on-exit on\nset -g history-limit 5000\n")
        self.tmux(["-f", str(conf), "new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height), command])

    def tmux(self, args: list[str]) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True, timeout=20).stdout

    def screen(self) -> str:
        return self.tmux(["capture-pane", "-p", "-t", "t"])

    def title(self) -> str:
        return self.tmux(["display-message", "-p", "-t", "t", "#{pane_title}"]).strip()

    def pane_dead(self) -> bool:
        return self.tmux(["display-message", "-p", "-t", "t", "#{pane_dead}"]).strip() == "1"

    def keys(self, *keys: str) -> None:
        self.tmux(["send-keys", "-t", "t", *keys])

    def wait_for(self, pred: Callable[[str], bool], timeout: float = 60.0, what: str = "") -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if pred(screen):
                return screen
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}; screen:\n{screen}")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=20)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[[str], Tmux]]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is part of the test contract (apt-get install tmux)")
    made: list[Tmux] = []

    def start(command: str) -> Tmux:
        t = Tmux(tmp_path, command)
        made.append(t)
        return t

    yield start
    for t in made:
        t.kill()


def shell(lookout_cmd: list[str], args: list[str], stderr: Path) -> str:
    """A command line for the pane: this worktree's code, stderr to a file (the screen is the view's)."""
    return (
        f"env PYTHONPATH={shlex.quote(SRC)} COLUMNS= LINES= "
        + " ".join(shlex.quote(a) for a in lookout_cmd + args)
        + f" 2>{shlex.quote(str(stderr))}"
    )


def records_shown(screen: str) -> int | None:
    for part in screen.split("records ")[1:]:
        digits = part.split()[0].replace(",", "")
        if digits.isdigit():
            return int(digits)
    return None


def rec(host: str, i: int, ts: float, status: int = 404) -> bytes:
    return (
        orjson.dumps(
            {
                "client_ip": f"10.1.{i // 250}.{i % 250 + 1}",
                "status": str(status),
                "host": host,
                "request_time": "0.5",
                "country": "US",
                "method": "GET",
                "server": "s1",
                "@timestamp": f"{ts:.3f}",
            }
        )
        + b"\n"
    )


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_live_view_shows_hostile_values_as_text_and_keeps_counting(terminal: Any, lookout_cmd: list[str], tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"")
    err = tmp_path / "stderr.txt"
    t = terminal(
        shell(
            lookout_cmd,
            [
                "run",
                "--tail",
                str(log),
                "--state-dir",
                str(tmp_path / "state"),
                "--out",
                str(tmp_path / "out"),
                "--idle-timeout",
                "1s",
                "--view",
            ],
            err,
        )
    )
    t.wait_for(lambda s: records_shown(s) == 0, what="the live view")
    title_before = t.title()

    # 20 requests per hostile host in one minute: goal2 (>15 4xx in 30 s) alerts on them and goal4
    # (avg request_time per host per minute) lists them all when the idle close ends the minute
    t0 = 1_700_000_040.0
    data = b"".join(rec(host, i, t0 + i * 0.5) for h, host in enumerate(HOSTILE) for i in range(20))
    append(log, data)
    n_hostile = 20 * len(HOSTILE)
    screen = t.wait_for(
        lambda s: records_shown(s) == n_hostile and all(v in s for v in HOSTILE.values()), what="the hostile values shown as text"
    )
    assert "\x1b" not in screen and "pwned" != t.title() and t.title() == title_before
    assert "evil" in screen and "[bold red]" in screen  # not taken as a style
    assert "[link=http://x]" in screen

    # then well-formed traffic in a later minute: the view keeps counting and shows it
    good = b"".join(rec("good.example.com", i, t0 + 120 + i * 0.1, status=200) for i in range(50))
    append(log, good)
    screen = t.wait_for(
        lambda s: records_shown(s) == n_hostile + 50 and "good.example.com" in s,
        what="well-formed traffic after the hostile values",
    )
    append(log, b"".join(rec("later.example.com", i, t0 + 240 + i * 0.1, status=200) for i in range(30)))
    t.wait_for(lambda s: records_shown(s) == n_hostile + 80, what="more records counted")
    assert not t.pane_dead()
    t.keys("C-c")
    t.wait_for(lambda s: t.pane_dead(), timeout=30, what="a clean stop")
    logged = err.read_text(errors="replace")
    assert "Traceback" not in logged and "could not draw" not in logged, logged
    assert not any(ch in logged.replace("\n", "") for ch in RAW_CONTROL), logged
    results = (tmp_path / "out" / "goal4-topic.jsonl").read_bytes()
    assert all(orjson.dumps(host)[1:-1] in results for host in HOSTILE)  # the data itself is kept as sent


def test_log_lines_escape_values(lookout_cmd: list[str], tmp_path: Path) -> None:
    """A value that reaches a log line (here the tailed path, logged while waiting for it)."""
    hostile = tmp_path / "x\x1b[2J\nERROR forged\u202e.log"
    p = subprocess.run(
        lookout_cmd
        + [
            "run",
            "--tail",
            str(hostile),
            "--state-dir",
            str(tmp_path / "state"),
            "--out",
            str(tmp_path / "out"),
            "--duration",
            "1.5",
            "--no-view",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert p.returncode == 0, p.stderr
    assert "x\\x1b[2J\\nERROR forged\\u202e.log: waiting for the file to appear" in p.stderr
    assert not any(line.startswith("ERROR forged") for line in p.stderr.splitlines())
    assert not any(ch in p.stderr.replace("\n", "") for ch in RAW_CONTROL), p.stderr


def test_consume_shows_hostile_keys_and_values_as_text(
    terminal: Any, lookout_cmd: list[str], kafka_bootstrap: str, kafka_topic: Any, tmp_path: Path
) -> None:
    from confluent_kafka import Producer

    from lookout.kafka.admin import ensure_topics
    from lookout.kafka.config import KafkaConnection

    topic = kafka_topic("hostile")
    ensure_topics(KafkaConnection(kafka_bootstrap), {topic: 1})
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    sent = list(HOSTILE.items())
    for i, (value, _) in enumerate(sent):
        # key hostile, value once as JSON, once as plain (non-JSON) bytes
        p.produce(topic, key=value.encode(), value=orjson.dumps({"host": value, "n": i}))
        p.produce(topic, key=b"plain", value=b"raw:" + value.encode())
    p.produce(topic, key=b"last", value=b'{"host": "done.example.com"}')
    assert p.flush(30) == 0
    err = tmp_path / "stderr.txt"
    t = terminal(
        shell(
            lookout_cmd,
            ["consume", topic, "--kafka", kafka_bootstrap, "--from-beginning", "--max-messages", str(2 * len(sent) + 1)],
            err,
        )
    )
    t.wait_for(lambda s: t.pane_dead(), what="consume to finish")
    screen = t.tmux(["capture-pane", "-p", "-J", "-t", "t", "-S", "-", "-E", "-"])
    assert "done.example.com" in screen, screen
    for _value, shown in sent:
        assert f"key={shown}" in screen, (shown, screen)
        assert f"raw:{shown}" in screen, (shown, screen)
    # JSON values: escaped the JSON way, still one line per string
    assert '"host": "m3\\u001b[2J"' in screen and '"host": "m7\\u202eZ"' in screen and '"host": "m5\\rX"' in screen
    assert '"host": "m1[/]evil[bold red]x"' in screen
    assert t.title() != "pwned"
    assert not any(ch in screen.replace("\n", "") for ch in RAW_CONTROL), screen


def test_consume_raw_piped_keeps_bytes(lookout_cmd: list[str], kafka_bootstrap: str, kafka_topic: Any) -> None:
    """Piped (not a terminal), consume writes the values' bytes as they are: the data contract."""
    from confluent_kafka import Producer

    from lookout.kafka.admin import ensure_topics
    from lookout.kafka.config import KafkaConnection

    topic = kafka_topic("rawpipe")
    ensure_topics(KafkaConnection(kafka_bootstrap), {topic: 1})
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    p.produce(topic, value=orjson.dumps({"host": "m3\x1b[2J\u202e"}))
    assert p.flush(30) == 0
    out = subprocess.run(
        lookout_cmd + ["consume", topic, "--kafka", kafka_bootstrap, "--from-beginning", "--max-messages", "1"],
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == orjson.dumps({"host": "m3\x1b[2J\u202e"}) + b"\n"


# ------------------------------------------------------------------------------ render errors


def test_live_view_render_error_is_logged_once_and_view_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    from rich.console import Console
    from rich.table import Table

    from lookout.live import LiveView
    from lookout.pipeline import Pipeline
    from lookout.rules import load_rules
    from lookout.sinks.base import SinkSet

    rs = load_rules(None)
    pipe = Pipeline(rs, SinkSet([]))

    class Flaky(LiveView):
        mode = "ok"

        def _render(self):  # noqa: ANN202
            if self.mode == "build":
                raise KeyError("window")
            if self.mode == "draw":  # fails only when rich draws it (as markup in a cell did)
                t = Table()
                t.add_column("x")
                t.add_row("[/]evil")
                return t
            return super()._render()

    view = Flaky(rs, pipe, "src")
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100, height=30)

    def draw() -> str:
        """One refresh as rich's refresh thread does it: what Live holds, drawn."""
        buf.seek(0)
        buf.truncate()
        view._last_refresh = 0.0
        view.refresh()
        console.print(view.live.renderable)
        return buf.getvalue()

    with caplog.at_level(logging.ERROR, logger="lookout.view"):
        pipe.stats.records = 5
        assert "records 5" in draw()
        view.mode = "draw"
        for n in (6, 7, 8):
            pipe.stats.records = n
            assert f"records {n:,}" in draw()  # the counters, drawn instead
        view.mode = "build"
        pipe.stats.records = 9
        assert "records 9" in draw()
        view.update([object()])  # a malformed batch: logged, not raised
        view.mode = "ok"
        pipe.stats.records = 10
        out = draw()
        assert "records 10" in out and "incidents" in out
    messages = [r.getMessage() for r in caplog.records if r.name == "lookout.view"]
    assert len(messages) == 3, messages  # one per kind of failure, not one per refresh
    assert any("MarkupError" in m for m in messages) and any("KeyError" in m for m in messages)
    assert view.errors >= 5
