"""The delivery protocol on the base classes: sources say whether they may read (`acquire`) and
whether they are caught up; sinks save and restore their own checkpoint state and can be aborted.
The run loop calls these methods and knows no concrete source or sink."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from lookout import store
from lookout.records import SCHEMA
from lookout.sinks.base import Sink, SinkSet
from lookout.sinks.files import FileSink
from lookout.sinks.store import StoreSink
from lookout.sources.base import Source


def _records(n: int, start: int = 0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            **{c: [None] * n for c in SCHEMA},  # the optional fields unknown
            "ts": [1_659_509_511_000_000 + i for i in range(start, start + n)],
            "status": [200] * n,
            "request_time": [0.1] * n,
            "client_ip": ["1.2.3.4"] * n,
            "host": ["h"] * n,
            "country": ["US"] * n,
            "method": ["GET"] * n,
            "server": ["s"] * n,
            "line": list(range(start, start + n)),
        },
        schema=SCHEMA,
    )


def _ids(n: int, start: int = 0) -> pl.Series:
    return pl.Series("id", [f"t:{i}" for i in range(start, start + n)])


def test_sinks_checkpoint_and_restore_their_own_output(tmp_path: Path) -> None:
    files = FileSink(tmp_path / "out", ["r"], append=True, fsync=True)
    st = StoreSink(tmp_path / "store")
    sinks = SinkSet([files, st, Sink()])
    files.write_rejected([b'{"a":1}'])
    sinks.write_records(_records(5), _ids(5))
    sinks.flush()
    saved = sinks.checkpoint()
    assert set(saved) == {"files", "store"}  # the plain Sink has nothing to save
    json.dumps(saved)  # plain data
    files.write_rejected([b'{"b":2}', b'{"c":3}'])
    sinks.write_records(_records(7, 5), _ids(7, 5))
    sinks.flush()  # output ran ahead of the checkpoint (a crash would happen here)
    assert store.count(tmp_path / "store") == 12
    sinks.restore(saved)
    sinks.close()
    assert (tmp_path / "out" / "rejected.jsonl").read_bytes() == b'{"a":1}\n'
    assert store.count(tmp_path / "store") == 5


def test_base_defaults_need_no_probing() -> None:
    class Plain(Source):
        def poll(self, timeout: float) -> None:
            return None

    src = Plain()
    assert src.acquire(lambda: False) is True and src.caught_up() is True
    aborted = []

    class Waiting(Sink):
        name = "waiting"

        def abort(self) -> None:
            aborted.append(self.name)

    SinkSet([Sink(), Waiting()]).abort()  # the plain sink's default abort is a no-op
    assert aborted == ["waiting"]
