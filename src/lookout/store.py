"""The embedded store of raw records: Parquet files per flush, queried with DuckDB.

It is the no-services answer to the seed's `curl …/test-inter/_count`: `lookout count` and
`lookout search` read it while the pipeline writes it (files appear atomically by rename).
"""

from __future__ import annotations

import os
import re
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
        st = None
        if status:
            s = status.strip().lower()
            if re.fullmatch(r"[1-5]xx", s):
                st = (int(s[0]) * 100, int(s[0]) * 100 + 99)
            elif m := re.fullmatch(r"(\d{3})-(\d{3})", s):
                st = (int(m.group(1)), int(m.group(2)))
            elif re.fullmatch(r"\d{3}", s):
                st = (int(s), int(s))
            else:
                raise ValueError(f"--status {status!r}: use 404, 400-499 or 4xx")
        return cls(client_ip, host, country, method, st, _time(since, "--since"), _time(until, "--until"))


def _time(v: str | None, opt: str) -> int | None:
    if v is None:
        return None
    try:
        return parse_timestamp(v)
    except Exception:  # noqa: BLE001
        raise ValueError(f"{opt} {v!r}: use ISO-8601 or epoch seconds") from None


def _files(store_dir: Path) -> list[str]:
    return sorted(str(p) for p in store_dir.glob(FILE_GLOB))


def _connect() -> Any:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    return con


def count(store_dir: Path) -> int:
    files = _files(store_dir)
    if not files:
        return 0
    return int(_connect().execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchone()[0])


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
    cur = _connect().execute(sql, [files, *params, limit])
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

    def file_count(self) -> int:
        return len(_files(self.dir))

    def drop_after(self, seq: int) -> None:
        """After a crash: remove files written after the checkpoint (they will be written again)."""
        for f in _files(self.dir):
            if _range(f)[1] > seq:
                os.unlink(f)
        self.seq = self.committed = seq
