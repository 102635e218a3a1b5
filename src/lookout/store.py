"""The embedded store of raw records: Parquet files per flush, queried with DuckDB.

It is the no-services answer to the seed's `curl …/test-inter/_count`: `lookout count` and
`lookout search` read it while the pipeline writes it (files appear atomically by rename).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from lookout.records import parse_timestamp

FILE_GLOB = "part-*.parquet"  # part-<first seq>-<last seq>.parquet (a merge covers a range)


@dataclass
class Query:
    """A search over raw records; every set field must match."""

    client_ip: str | None = None
    host: str | None = None
    country: str | None = None
    method: str | None = None
    status: tuple[int, int] | None = None
    since_us: int | None = None
    until_us: int | None = None

    @classmethod
    def from_options(cls, client_ip: str | None = None, host: str | None = None, country: str | None = None,
                     method: str | None = None, status: str | None = None, since: str | None = None,
                     until: str | None = None) -> "Query":
        from lookout.records import Rejected, parse_client_ip
        from lookout.rules import parse_status_range

        st = None
        if status:  # read like a rules file's status filter: 404, 400-499 or 4xx, within 100-599
            try:
                st = parse_status_range(status)
            except ValueError as e:
                raise ValueError(f"--status: {e} (use 404, 400-499 or 4xx)") from None
        if client_ip is not None:  # stored addresses are canonical (records.parse_client_ip): so is the query
            try:
                client_ip = parse_client_ip(client_ip)
            except Rejected as e:
                raise ValueError(f"--client-ip: {e.detail}") from None
        return cls(client_ip, host, country, method, st, _time(since, "--since"), _time(until, "--until"))


class StoreMissing(ValueError):
    """A query names a state dir or store that does not exist (a typo must not read as 'no records')."""


def require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise StoreMissing(f"{what} {path}: no such directory")


def _time(v: str | None, opt: str) -> int | None:
    if v is None:
        return None
    try:
        return parse_timestamp(v)
    except Exception:  # noqa: BLE001
        raise ValueError(f"{opt} {v!r}: use ISO-8601 or epoch seconds") from None


def _files(store_dir: Path) -> list[str]:
    return sorted(str(p) for p in store_dir.glob(FILE_GLOB))


def connect() -> Any:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    return con


def count(store_dir: Path) -> int:
    files = _files(store_dir)
    if not files:
        return 0
    return int(connect().execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchone()[0])


def search(store_dir: Path, q: Query, limit: int = 20) -> list[dict[str, Any]]:
    files = _files(store_dir)
    if not files:
        return []
    where, params = [], []
    for col in ("client_ip", "host", "country", "method"):
        v = getattr(q, col)
        if v is not None:
            where.append(f"{col} = ?")
            params.append(v)
    if q.status:
        where.append("status BETWEEN ? AND ?")
        params += list(q.status)
    if q.since_us is not None:
        where.append("ts >= ?")
        params.append(q.since_us)
    if q.until_us is not None:
        where.append("ts < ?")
        params.append(q.until_us)
    sql = "SELECT * FROM read_parquet(?)" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY ts DESC LIMIT ?"
    cur = connect().execute(sql, [files, *params, limit])
    cols = [d[0] for d in cur.description]
    out = []
    for row in cur.fetchall():
        r = dict(zip(cols, row))
        ts = r.pop("ts")
        r = {"@timestamp": datetime.fromtimestamp(ts / 1e6, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"), **r}
        out.append({k: v for k, v in r.items() if v is not None})
    return out


def _range(path: str | Path) -> tuple[int, int]:
    _, a, b = Path(path).stem.split("-")
    return int(a), int(b)


class StoreWriter:
    """Appends record batches as Parquet files `part-<seq>-<seq>`; merges committed ones now and then.

    Crash safety: a merge writes `part-<a>-<b>` (fsynced, renamed into place) before deleting the
    parts it covers; on start, parts covered by a larger range are deleted (a merge that did not
    finish deleting), and so are parts newer than the last checkpoint (`drop_after`).
    """

    def __init__(self, store_dir: Path, compact_above: int = 64) -> None:
        self.dir = store_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pending: list[pl.DataFrame] = []
        self.compact_above = compact_above
        for tmp in self.dir.glob("*.tmp"):  # half-written by a crash
            tmp.unlink()
        self._drop_covered()
        files = _files(self.dir)
        self.seq = max((_range(f)[1] for f in files), default=0)
        self.committed = self.seq

    def _drop_covered(self) -> None:
        ranges = sorted((_range(f), f) for f in _files(self.dir))
        for (a, b), f in ranges:
            if any(a2 <= a and b <= b2 and (a2, b2) != (a, b) for (a2, b2), _ in ranges):
                os.unlink(f)

    def add(self, records: pl.DataFrame, ids: pl.Series) -> None:
        self.pending.append(records.drop("line").with_columns(id=pl.Series("id", ids, dtype=pl.String)))

    def flush(self) -> None:
        """Write what is pending as one file (fsynced, then renamed into place)."""
        if not self.pending:
            return
        df = pl.concat(self.pending)
        self.pending = []
        self.seq += 1
        self._write(df, f"part-{self.seq:012d}-{self.seq:012d}.parquet")

    def mark_committed(self) -> int:
        """Called once a checkpoint covers everything written; returns the sequence to record."""
        self.committed = self.seq
        committed = [f for f in _files(self.dir) if _range(f)[1] <= self.committed]
        if len(committed) > self.compact_above:
            self._merge(committed)
        return self.committed

    def _write(self, df: pl.DataFrame, name: str) -> None:
        tmp = self.dir / (name + ".tmp")
        df.write_parquet(tmp, compression="zstd")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / name)

    def _merge(self, files: list[str]) -> None:
        a = min(_range(f)[0] for f in files)
        b = max(_range(f)[1] for f in files)
        self._write(pl.read_parquet(files), f"part-{a:012d}-{b:012d}.parquet")
        for f in files:
            os.unlink(f)

    def drop_after(self, seq: int) -> None:
        """After a crash: remove files written after the checkpoint (they will be written again)."""
        for f in _files(self.dir):
            if _range(f)[1] > seq:
                os.unlink(f)
        self.seq = self.committed = seq
