"""A rotated log is read on beside the new one until idle for `--rotate-wait` (issue 14, item 2).

The permission case with a real nginx: the log is moved aside and nginx told to reopen (USR1),
but the worker cannot open the new file (it runs as an unprivileged user and the log directory
is the master's alone: `open() … failed (13: Permission denied)` in its error log), so it keeps
writing to the moved file. Every request made after the rotation must still be read. Also: the
positions of both files are in the checkpoint (a SIGKILL and restart loses nothing), rotated
`.gz` files are read with `--backfill`, and the tail waits on inotify.
"""

from __future__ import annotations

import gzip
import os
import signal
import time
from pathlib import Path

import pytest

from lookout.sources.fswait import DirWatcher, inotify_available
from lookout.sources.tail import TailSource
from tests.fixtures.nginx import LookoutRun, Nginx, _need_nginx
from tests.integration.nginx.test_run import assert_exactly, client
from tests.unit.sources.test_tail import append, drain, rec, seqs


class UnprivilegedWorkerNginx(Nginx):
    """nginx whose worker cannot reopen the logs after a rotation: as root, the worker runs as
    nobody while the log directory stays root's 0700; otherwise the new log is made read-only
    before the reopen (as a logrotate `create 0640 root adm` would be for a www-data worker)."""

    def config(self) -> str:
        text = super().config()
        return text.replace("user root;\n", "user nobody nogroup;\n") if os.geteuid() == 0 else text

    def rotate_unreopenable(self, suffix: str = ".1") -> Path:
        rotated = self.access_log.with_name(self.access_log.name + suffix)
        os.rename(self.access_log, rotated)
        if os.geteuid() == 0:
            os.chmod(self.access_log.parent, 0o700)
        else:
            self.access_log.touch(0o444)
        self.reopen()
        return rotated


@pytest.fixture
def stuck_nginx(tmp_path: Path):
    _need_nginx()
    n = UnprivilegedWorkerNginx(tmp_path / "nginx", "lookout")
    n.start()
    yield n
    n.stop()


def test_nginx_that_cannot_reopen_keeps_writing_the_moved_file_and_nothing_is_lost(
    stuck_nginx: UnprivilegedWorkerNginx, tmp_path: Path, lookout_cmd: list[str]
) -> None:
    nginx = stuck_nginx
    run = LookoutRun(lookout_cmd, nginx.access_log, tmp_path).start()  # default --rotate-wait (5 min)
    nginx.burst([client(i) for i in range(20)])
    run.wait_for(lambda: run.stored() == 20, "the first 20 stored")
    moved = nginx.rotate_unreopenable(".1")
    deadline = time.monotonic() + 10
    while "Permission denied" not in nginx.error_log.read_text(errors="replace"):
        assert time.monotonic() < deadline, nginx.error_log.read_text(errors="replace")
        time.sleep(0.05)
    for burst in range(5):  # 25 requests after the rotation, with pauses longer than the old 1 s switch
        nginx.burst([client(i) for i in range(20 + 5 * burst, 25 + 5 * burst)])
        time.sleep(1.3)
    nginx.wait_logged(45)
    assert moved.read_bytes().count(b"\n") == 45 and nginx.access_log.read_bytes() == b"", "not the permission case"
    run.wait_for(lambda: run.stored() == 45, "all 45 stored", timeout=30)
    assert "now reading" in run.stderr() and "until it has been idle for 300s" in run.stderr(), run.stderr()
    # a crash now: both positions are in the checkpoint, so the restart goes on in both files
    assert run.stop(signal.SIGKILL) == -signal.SIGKILL
    nginx.burst([client(i) for i in range(45, 55)])  # still into the moved file
    run.start()
    run.wait_for(lambda: run.stored() == 55, "all 55 stored after the restart", timeout=30)
    assert run.stop() == 0
    assert_exactly(run, 55)
    assert "reading on in the rotated" in run.stderr(), run.stderr()


def test_rotated_file_is_read_beside_the_new_one_and_left_when_idle(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    append(log, b"".join(rec(i) for i in range(10)))
    src = TailSource(log, state_dir=tmp_path / "state", rotate_wait=1.5)
    got = seqs(drain(src))
    os.rename(log, tmp_path / "access.log.1")
    append(log, b"".join(rec(i) for i in range(10, 20)))  # the new file, read at once
    got += seqs(drain(src))
    assert got == list(range(20))
    append(tmp_path / "access.log.1", b"".join(rec(i) for i in range(20, 25)))  # a late worker, still old file
    append(log, b"".join(rec(i) for i in range(25, 30)))
    chunks = drain(src)
    assert sorted(seqs(chunks)) == list(range(20, 30))
    pos = chunks[-1].position
    assert [r["name"] for r in pos["rotated"]] == [str(tmp_path / "access.log.1")] and pos["name"] == str(log)
    time.sleep(1.6)  # idle for rotate_wait: the rotated file is left, and the position says so
    chunks = drain(src)
    assert seqs(chunks) == [] and chunks and "rotated" not in chunks[-1].position
    append(tmp_path / "access.log.1", rec(30))  # too late: no longer read
    append(log, rec(31))
    assert seqs(drain(src)) == [31]
    src.close()


def test_restart_reads_on_in_the_rotated_file_from_its_checkpoint(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    append(log, b"".join(rec(i) for i in range(10)))
    src = TailSource(log, state_dir=tmp_path / "state", rotate_wait=60)
    got = seqs(drain(src))
    os.rename(log, tmp_path / "access.log.1")
    append(log, b"".join(rec(i) for i in range(10, 20)))
    chunks = drain(src)
    got += seqs(chunks)
    src.commit(chunks[-1].position)
    src.close()
    append(tmp_path / "access.log.1", b"".join(rec(i) for i in range(20, 25)))  # while stopped
    append(log, b"".join(rec(i) for i in range(25, 30)))
    again = TailSource(log, state_dir=tmp_path / "state", rotate_wait=60)
    from lookout.sources.tail import load_position

    again.restore(load_position(tmp_path / "state"))
    got += seqs(drain(again))
    assert sorted(got) == list(range(30)) and len(got) == 30
    again.close()


def test_backfill_reads_rotated_gz_files_oldest_first_then_the_log(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    now = time.time()
    parts = {"access.log.3.gz": range(0, 10), "access.log.2.gz": range(10, 20), "access.log.1": range(20, 30)}
    for age, (name, rng) in enumerate(parts.items()):
        data = b"".join(rec(i) for i in rng)
        p = tmp_path / name
        p.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        os.utime(p, (now - 300 + age * 60, now - 300 + age * 60))
    append(log, b"".join(rec(i) for i in range(30, 40)))
    src = TailSource(log, state_dir=tmp_path / "state", rotate_wait=60, backfill=True, read_bytes=700)
    chunks = drain(src)
    assert seqs(chunks) == list(range(40))
    # a crash in the middle of a .gz: the position says where, the restart goes on from there
    src.close()
    src = TailSource(log, state_dir=tmp_path / "state", rotate_wait=60, backfill=True, read_bytes=700)
    first = []
    while not first or first[-1].meta["file"] != str(tmp_path / "access.log.2.gz"):
        first.append(src.poll(0.5))
    pos = first[-1].position
    src.close()
    again = TailSource(log, state_dir=tmp_path / "state", rotate_wait=60, backfill=True, read_bytes=700)
    again.restore(pos)
    assert seqs(first) + seqs(drain(again)) == list(range(40))
    again.close()
    # ids: the same line of the same file gets the same id, whether read from the .gz or not
    ids = [
        c.ids(c_recs.get_column("line")).to_list()
        for c in chunks
        for c_recs in [__import__("lookout.records", fromlist=["parse_chunk"]).parse_chunk(c.data).records]
    ]
    flat = [i for x in ids for i in x]
    assert len(flat) == len(set(flat)) == 40


def test_the_tail_waits_on_inotify_and_wakes_on_a_write(tmp_path: Path) -> None:
    assert inotify_available(), "inotify is expected on Linux (inotify_simple installed)"
    w = DirWatcher(tmp_path)
    w.wait(0.01)
    assert w.mode == "inotify"
    t0 = time.monotonic()
    w.wait(0.3)  # nothing happens: the whole timeout
    assert time.monotonic() - t0 >= 0.25
    import threading

    threading.Timer(0.2, lambda: append(tmp_path / "x.log", b"x\n")).start()
    t0 = time.monotonic()
    w.wait(5.0)
    took = time.monotonic() - t0
    assert 0.15 <= took < 1.0, took  # woken by the write, not by the timeout
    w.close()
    log = tmp_path / "access.log"
    src = TailSource(log, state_dir=tmp_path / "state")
    assert src.poll(0.05) is None
    threading.Timer(0.3, lambda: append(log, rec(0))).start()
    t0 = time.monotonic()
    chunk = src.poll(5.0)
    while chunk is not None and not chunk.data:
        chunk = src.poll(5.0)
    assert chunk is not None and seqs([chunk]) == [0] and time.monotonic() - t0 < 1.5
    assert src.watcher.mode == "inotify"
    src.close()


def test_run_tail_backfill_reads_rotated_gz_history_and_equals_replay(tmp_path: Path, lookout_cmd: list[str]) -> None:
    """`lookout run --tail LOG --backfill`: the rotated history (.gz and plain) then the log, in
    order, gives exactly the results of a replay of all of it."""
    import subprocess

    whole = tmp_path / "all.ndjson"
    subprocess.run([*lookout_cmd, "generate", "3000", "--out", str(whole), "--seed", "5"], check=True)
    subprocess.run([*lookout_cmd, "replay", str(whole), "--out", str(tmp_path / "ref")], check=True, capture_output=True)
    lines = whole.read_bytes().splitlines(keepends=True)
    logs = tmp_path / "logs"
    logs.mkdir()
    now = time.time()
    for k, (name, part) in enumerate(
        [("access.log.2.gz", lines[:1000]), ("access.log.1", lines[1000:2000]), ("access.log", lines[2000:])]
    ):
        p = logs / name
        p.write_bytes(gzip.compress(b"".join(part)) if name.endswith(".gz") else b"".join(part))
        os.utime(p, (now - 300 + 60 * k, now - 300 + 60 * k))
    res = subprocess.run(
        [
            *lookout_cmd,
            "run",
            "--tail",
            str(logs / "access.log"),
            "--backfill",
            "--log-format",
            "json",
            "--state-dir",
            str(tmp_path / "state"),
            "--out",
            str(tmp_path / "out"),
            "--no-view",
            "--duration",
            "6",
            "--idle-timeout",
            "1s",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "3,000 valid" in res.stderr and "0 late" in res.stderr, res.stderr
    for g in ("goal1-topic", "goal2-topic", "goal3-topic", "goal4-topic"):
        got = sorted((tmp_path / "out" / f"{g}.jsonl").read_bytes().splitlines())
        assert got == sorted((tmp_path / "ref" / f"{g}.jsonl").read_bytes().splitlines()), g


def test_rotations_faster_than_rotate_wait_keep_the_open_files_bounded(tmp_path: Path) -> None:
    from lookout.sources.tail import MAX_ROTATED

    log = tmp_path / "access.log"
    src = TailSource(log, state_dir=tmp_path / "state", rotate_wait=600)
    n = 0
    got: list[int] = []
    for r in range(MAX_ROTATED + 4):
        append(log, b"".join(rec(i) for i in range(n, n + 5)))
        n += 5
        got += seqs(drain(src, idle=0.15))
        os.rename(log, tmp_path / f"access.log.{r + 1:03d}")
        time.sleep(0.01)  # (modification times order the chain)
    append(log, rec(n))
    n += 1
    got += seqs(drain(src, idle=0.3))
    assert sorted(got) == list(range(n)) and len(got) == n  # nothing lost, nothing twice
    assert len(src.draining) <= MAX_ROTATED
    src.close()


def test_a_missing_directory_is_polled_until_it_exists_then_watched(tmp_path: Path) -> None:
    d = tmp_path / "later"
    w = DirWatcher(d)
    t0 = time.monotonic()
    w.wait(1.0)
    assert w.mode == "polling" and time.monotonic() - t0 < 0.2  # the fallback: a short sleep
    d.mkdir()
    time.sleep(1.05)  # a watch is retried at most once a second
    w.wait(0.01)
    assert w.mode == "inotify"
    w.close()
