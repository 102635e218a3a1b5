"""TailSource on real files: whole lines only, rotation, truncation, positions, record ids."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import orjson
import polars as pl

from lookout.records import parse_chunk
from lookout.sources.tail import TailSource, load_position

HOST = "h.test"


def rec(i: int) -> bytes:
    return (
        orjson.dumps(
            {"client_ip": f"10.0.{i // 256}.{i % 256}", "status": "200", "host": HOST, "@timestamp": str(1_700_000_000 + i)}
        )
        + b"\n"
    )


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def drain(src: TailSource, idle: float = 0.3, limit: float = 10.0) -> list:
    """Poll until nothing new arrives for `idle` seconds; the chunks read."""
    chunks = []
    quiet_since = time.monotonic()
    end = time.monotonic() + limit
    while time.monotonic() < end:
        c = src.poll(0.05)
        if c is None:
            if time.monotonic() - quiet_since >= idle:
                break
            continue
        chunks.append(c)
        quiet_since = time.monotonic()
    return chunks


def seqs(chunks: list) -> list[int]:
    """The record numbers (from client_ip) of every line read, in order."""
    out = []
    for c in chunks:
        p = parse_chunk(c.data)
        assert not p.rejected, p.rejected
        for ip in p.records.get_column("client_ip").to_list():
            _, _, a, b = ip.split(".")
            out.append(int(a) * 256 + int(b))
    return out


def src_for(path: Path, tmp: Path, **kw) -> TailSource:
    return TailSource(path, state_dir=tmp / "state", rotate_wait=0.3, **kw)


def test_reads_from_start_and_waits_for_whole_lines(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    append(log, rec(0) + rec(1) + rec(2)[:10])  # a partial third line
    src = src_for(log, tmp_path)
    chunks = drain(src)
    assert seqs(chunks) == [0, 1]
    assert chunks[-1].position["offset"] == len(rec(0) + rec(1))
    append(log, rec(2)[10:] + rec(3))
    assert seqs(drain(src)) == [2, 3]
    src.close()


def test_waits_for_the_file_to_appear(tmp_path: Path) -> None:
    log = tmp_path / "later.log"
    src = src_for(log, tmp_path)
    assert src.poll(0.2) is None
    append(log, rec(0))
    assert seqs(drain(src)) == [0]


def test_restore_resumes_without_gaps_or_duplicates(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    append(log, b"".join(rec(i) for i in range(50)))
    src = src_for(log, tmp_path)
    first = drain(src)
    pos = first[-1].position
    src.commit(pos)
    src.close()
    assert load_position(tmp_path / "state") == pos
    append(log, b"".join(rec(i) for i in range(50, 80)))
    again = src_for(log, tmp_path)
    again.restore(load_position(tmp_path / "state"))
    assert seqs(first) + seqs(drain(again)) == list(range(80))


def test_rename_rotation_finishes_the_old_file_first(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    append(log, b"".join(rec(i) for i in range(10)))
    src = src_for(log, tmp_path)
    got = seqs(drain(src))
    os.rename(log, tmp_path / "access.log.1")
    append(tmp_path / "access.log.1", b"".join(rec(i) for i in range(10, 15)))  # written before the reopen
    append(log, b"".join(rec(i) for i in range(15, 30)))  # the new file
    got += seqs(drain(src, idle=1.0))
    assert got == list(range(30))


def test_rotation_while_stopped_is_found_beside_the_log(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    append(log, b"".join(rec(i) for i in range(10)))
    src = src_for(log, tmp_path)
    chunks = drain(src)
    pos = chunks[-1].position
    src.close()
    append(log, b"".join(rec(i) for i in range(10, 20)))
    os.rename(log, tmp_path / "access.log-20240101")
    append(log, b"".join(rec(i) for i in range(20, 25)))
    again = src_for(log, tmp_path)
    again.restore(pos)
    assert seqs(chunks) + seqs(drain(again, idle=1.0)) == list(range(25))


def test_two_rotations_before_the_middle_file_was_read(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    append(log, b"".join(rec(i) for i in range(10)))
    src = src_for(log, tmp_path)
    got = seqs(drain(src))
    os.rename(log, tmp_path / "access.log.1")
    append(log, b"".join(rec(i) for i in range(10, 20)))  # B: rotated away before it was ever opened
    os.rename(log, tmp_path / "access.log.2")
    append(log, b"".join(rec(i) for i in range(20, 30)))  # C
    got += seqs(drain(src, idle=1.5))
    assert got == list(range(30))


def test_a_checkpointed_file_that_is_gone_is_logged_and_the_chain_goes_on(tmp_path: Path, caplog) -> None:
    log = tmp_path / "access.log"
    append(log, b"".join(rec(i) for i in range(10)))
    src = src_for(log, tmp_path)
    pos = drain(src)[-1].position
    src.close()
    append(log, b"".join(rec(i) for i in range(10, 12)))  # never read: its file gets deleted
    os.unlink(log)
    time.sleep(0.01)
    append(log, b"".join(rec(i) for i in range(12, 20)))  # B
    os.rename(log, tmp_path / "access.log.1")
    append(log, b"".join(rec(i) for i in range(20, 25)))  # C
    again = src_for(log, tmp_path)
    with caplog.at_level("WARNING", logger="lookout.tail"):
        again.restore(pos)
    assert "was not read" in caplog.text
    assert seqs(drain(again, idle=1.0)) == list(range(12, 25))


def test_copytruncate_restarts_at_zero_and_reads_the_copy_tail(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    append(log, b"".join(rec(i) for i in range(20)))
    src = src_for(log, tmp_path)
    got = seqs(drain(src))
    append(log, b"".join(rec(i) for i in range(20, 25)))  # not read yet when the copy is taken
    shutil.copyfile(log, tmp_path / "access.log.1")
    os.truncate(log, 0)
    append(log, b"".join(rec(i) for i in range(25, 27)))  # shorter than before: a shrink
    got += seqs(drain(src, idle=1.0))
    assert got == list(range(27))


def test_truncated_and_regrown_past_the_offset_is_noticed(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    append(log, b"".join(rec(i) for i in range(5)))
    src = src_for(log, tmp_path)
    got = seqs(drain(src))
    os.truncate(log, 0)
    append(log, b"".join(rec(i) for i in range(100, 120)))  # longer than the old content
    got += seqs(drain(src))
    assert got == list(range(5)) + list(range(100, 120))


def test_record_ids_are_deterministic_and_unique(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    append(log, b"".join(rec(i) for i in range(30)))
    ids = []
    for _ in range(2):
        src = TailSource(log, read_bytes=1000)  # several chunks
        run = []
        for c in drain(src):
            n = len(parse_chunk(c.data).records)
            run += c.ids(pl.Series("line", range(n), dtype=pl.Int64)).to_list()
        src.close()
        ids.append(run)
    assert ids[0] == ids[1] and len(set(ids[0])) == 30
    offsets = [int(i.rsplit("-", 1)[1]) for i in ids[0]]
    assert offsets == [sum(len(rec(j)) for j in range(i)) for i in range(30)]


def test_first_line_numbers_follow_the_file(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    append(log, b"".join(rec(i) for i in range(30)))
    src = TailSource(log, read_bytes=700)
    chunks = drain(src)
    assert len(chunks) > 2
    expected = 1
    for c in chunks:
        assert c.first_line == expected
        expected += c.data.count(b"\n")
    assert expected == 31


def test_a_writer_racing_the_reader_loses_nothing(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    n = 3000

    def write() -> None:
        with open(log, "ab", buffering=0) as f:
            for i in range(n):
                line = rec(i)
                f.write(line[:7])  # split writes: the reader sees partial lines
                f.write(line[7:])
                if i == n // 2:
                    os.rename(log, tmp_path / "access.log.1")
                    f.close()
                    break
        with open(log, "ab", buffering=0) as f:
            for i in range(n // 2 + 1, n):
                f.write(rec(i))

    src = src_for(log, tmp_path)
    t = threading.Thread(target=write)
    append(log, b"")
    # the reader has the file open before the writer starts: under load the writer could otherwise
    # write half and rotate before the first poll, and a file rotated before the tail ever saw it is
    # history (--backfill's), not a line lost (the full suite on a loaded machine hit exactly that)
    assert src.poll(0.05) is None and src.cur is not None
    t.start()
    got = seqs(drain(src, idle=1.5))
    t.join()
    assert got == list(range(n))


def test_byte_order_mark_at_file_start_is_skipped(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    append(log, b"\xef\xbb\xbf" + rec(0) + rec(1))
    src = src_for(log, tmp_path)
    chunks = drain(src)
    assert seqs(chunks) == [0, 1]  # the first record is a record, not invalid-json
    assert chunks[-1].position["offset"] == 3 + len(rec(0) + rec(1))
    src.close()
