"""The embedded store of raw records: Parquet files partitioned by hour of event time, queried
with DuckDB.

It is the no-services answer to the seed's `curl …/test-inter/_count`: `lookout count` and
`lookout search` read it while the pipeline writes it.

Layout: STORE/<YYYY-MM-DDTHH>/part-<first seq>-<last seq>-<level>.parquet. Each flush (one per
commit, sequence number `seq`) writes one level-0 file into each hour its records fall in. Once
a checkpoint covers them, small files (below a quarter of `target_bytes`) are merged: a run of
neighbouring ones of one level into one file of the next level, once there are `fan_in` of them
or they add up to `target_bytes`;
an hour that has had no write for `cold_after` commits gets its small files merged whatever
their number. So the cost of a merge is bounded (below 1.25 x target_bytes read and written),
each record is rewritten about log_fan_in(target / flush size) times, never with the whole
history, and an hour ends in few files. Retention deletes whole hours.

Guarantees: a file appears whole (written to a temporary name, fsynced, renamed); a merge
writes its output before deleting its inputs, and a reader (or a restart) ignores any file
whose range another file of the same hour covers, so nothing is counted twice; files newer
than the last checkpoint are dropped on restart (`drop_after`) and written again.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from lookout.durable import fsync_dir, place
from lookout.schema import BY_NAME, parse_timestamp

log = logging.getLogger("lookout.store")
HOUR_US = 3_600_000_000
PART_RE = re.compile(r"^part-(\d+)-(\d+)(?:-(\d+))?\.parquet$")  # legacy files (flat, before partitions) have no level
HOUR_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2})$")


@dataclass
class Query:
    """A search over raw records; every set field must match (`path` as a prefix)."""

    client_ip: str | None = None
    host: str | None = None
    country: str | None = None
    method: str | None = None
    status: tuple[int, int] | None = None
    since_us: int | None = None
    until_us: int | None = None
    path: str | None = None  # prefix of the request path (`/api/` matches `/api/v1?x=1`)

    @classmethod
    def from_options(
        cls,
        client_ip: str | None = None,
        host: str | None = None,
        country: str | None = None,
        method: str | None = None,
        status: str | None = None,
        since: str | None = None,
        until: str | None = None,
        path: str | None = None,
    ) -> Query:
        """Command-line / HTTP query values, read like a rules file's filters (lookout.schema)."""
        st = None
        if status:  # read like a rules file's status filter: 404, 400-499 or 4xx, within 100-599
            try:
                st = BY_NAME["status"].filter_value(status)
            except ValueError as e:
                raise ValueError(f"--status: {e} (use 404, 400-499 or 4xx)") from None
        if client_ip is not None:  # stored addresses are canonical (records.parse_client_ip): so is the query
            try:
                client_ip = BY_NAME["client_ip"].filter_value(client_ip)
            except ValueError as e:
                raise ValueError(f"--client-ip: {e}") from None
        return cls(client_ip, host, country, method, st, _time(since, "--since"), _time(until, "--until"), path=path or None)

    def terms(self) -> dict[str, str]:
        """Fields that must equal a value."""
        return {f: v for f in _TERM_FIELDS if (v := getattr(self, f)) is not None}

    def ranges(self) -> dict[str, tuple[int, int]]:
        """Fields that must lie in [lo, hi]."""
        return {"status": self.status} if self.status else {}

    def prefixes(self) -> dict[str, str]:
        """Fields that must start with a value."""
        return {"path": self.path} if self.path is not None else {}


# Query's fields compared by equality: the record's text fields it has (path is a prefix)
# The record fields a query filters on (`lookout search` options, the dashboard's /api/records).
QUERY_FIELDS: tuple[str, ...] = ("client_ip", "host", "country", "method", "status", "path")
_TERM_FIELDS = tuple(
    f.name for f in dataclasses.fields(Query) if f.name in BY_NAME and not BY_NAME[f.name].ranged and f.name not in ("path",)
)


class StoreMissing(ValueError):
    """A query names a state dir or store that does not exist (a typo must not read as 'no records')."""


def require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise StoreMissing(f"{what} {path}: no such directory")


def query_dir(state_dir: Path, store_dir: Path | None = None) -> Path:
    """The store a query reads: `store_dir`, else the run's STATE_DIR/store. A state dir or store
    that does not exist raises StoreMissing (a typo must not read as 0 records)."""
    if store_dir is not None:
        require_dir(store_dir, "--store")
        return store_dir
    require_dir(state_dir, "--state-dir")
    return state_dir / "store"


def _time(v: str | None, opt: str) -> int | None:
    if v is None:
        return None
    try:
        return parse_timestamp(v)
    except Exception:  # noqa: BLE001
        raise ValueError(f"{opt} {v!r}: use ISO-8601 or epoch seconds") from None


def hour_name(hour: int) -> str:
    """`2026-11-28T13`: the hour's directory (zero-padded, so names sort as times do)."""
    t = datetime.fromtimestamp(hour * 3600, tz=UTC)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}"


def _hour_of(name: str) -> int | None:
    m = HOUR_RE.match(name)
    if not m:
        return None
    try:
        t = datetime(*(int(g) for g in m.groups()), tzinfo=UTC)  # type: ignore[misc]
    except ValueError:
        return None
    return int(t.timestamp()) // 3600


@dataclass(frozen=True)
class Part:
    path: Path
    a: int  # first flush sequence number it holds
    b: int  # last
    level: int
    hour: int | None  # None: a legacy file at the top of the store

    @property
    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0


def _parts_in(d: Path, hour: int | None) -> list[Part]:
    out = []
    for p in d.glob("part-*.parquet"):
        m = PART_RE.match(p.name)
        if m:
            out.append(Part(p, int(m.group(1)), int(m.group(2)), int(m.group(3) or 0), hour))
    return sorted(out, key=lambda x: (x.a, -x.b))


def _hours(store_dir: Path) -> list[tuple[int, Path]]:
    out = []
    if store_dir.is_dir():
        for d in store_dir.iterdir():
            h = _hour_of(d.name) if d.is_dir() else None
            if h is not None:
                out.append((h, d))
    return sorted(out)


def _uncovered(parts: list[Part]) -> tuple[list[Part], list[Part]]:
    """(live, covered): a part whose range another part of the same hour covers is a merge's
    input not yet deleted (or being deleted): ignore it."""
    live, covered = [], []
    for p in parts:
        if any(o is not p and o.a <= p.a and p.b <= o.b and (o.a, o.b) != (p.a, p.b) for o in parts):
            covered.append(p)
        else:
            live.append(p)
    return live, covered


def list_parts(store_dir: Path, since_us: int | None = None, until_us: int | None = None) -> list[Part]:
    """The files a query reads: hours outside [since, until) are pruned by name."""
    out = _uncovered(_parts_in(store_dir, None))[0] if store_dir.is_dir() else []
    for h, d in _hours(store_dir):
        if since_us is not None and (h + 1) * HOUR_US <= since_us:
            continue
        if until_us is not None and h * HOUR_US >= until_us:
            continue
        out += _uncovered(_parts_in(d, h))[0]
    return out


def data_files(store_dir: Path, since_us: int | None = None, until_us: int | None = None) -> list[str]:
    return [str(p.path) for p in list_parts(store_dir, since_us, until_us)]


def _query(store_dir: Path, since_us: int | None, until_us: int | None, run: Any) -> Any:
    """Run `run(files)`; a file a concurrent merge deleted between listing and reading means
    listing again (a few times)."""
    for attempt in range(5):
        files = data_files(store_dir, since_us, until_us)
        try:
            return run(files)
        except Exception as e:  # noqa: BLE001 - duckdb's IOException; anything else re-raises below
            if attempt == 4 or "No files found" not in str(e) and "No such file" not in str(e):
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


def connect() -> Any:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    return con


def count(store_dir: Path, since_us: int | None = None, until_us: int | None = None) -> int:
    where, params = _time_where(since_us, until_us)

    def run(files: list[str]) -> int:
        if not files:
            return 0
        return int(connect().execute(f"SELECT count(*) FROM {_READ}" + where, [files, *params]).fetchone()[0])

    return _query(store_dir, since_us, until_us, run)


# Files written before a field existed lack its column: columns are matched by name, missing ones are NULL.
_READ = "read_parquet(?, union_by_name = true)"


def _stored_schema() -> dict[str, pl.DataType]:
    """Columns of a store file: a parsed record without its line number, plus its id."""
    from lookout.records import SCHEMA

    return {**{c: t for c, t in SCHEMA.items() if c != "line"}, "id": pl.String()}


def _columns(con: Any, files: list[str]) -> set[str]:
    return {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {_READ}", [files]).fetchall()}


def _time_where(since_us: int | None, until_us: int | None) -> tuple[str, list[int]]:
    where, params = [], []
    if since_us is not None:
        where.append("ts >= ?")
        params.append(since_us)
    if until_us is not None:
        where.append("ts < ?")
        params.append(until_us)
    return (" WHERE " + " AND ".join(where) if where else ""), params


def search(store_dir: Path, q: Query, limit: int = 20) -> list[dict[str, Any]]:
    where, params = [], []
    for col, v in q.terms().items():
        where.append(f"{col} = ?")
        params.append(v)
    for col, (lo, hi) in q.ranges().items():
        where.append(f"{col} BETWEEN ? AND ?")
        params += [lo, hi]
    for col, prefix in q.prefixes().items():
        where.append(f"starts_with({col}, ?)")
        params.append(prefix)
    if q.since_us is not None:
        where.append("ts >= ?")
        params.append(q.since_us)
    if q.until_us is not None:
        where.append("ts < ?")
        params.append(q.until_us)
    sql = f"SELECT * FROM {_READ} WHERE " + " AND ".join(where) if where else f"SELECT * FROM {_READ}"
    sql += " ORDER BY ts DESC LIMIT ?"
    filtered = {*q.terms(), *q.ranges(), *q.prefixes()}

    def run(files: list[str]) -> Any:
        if not files:
            return None
        con = connect()
        if filtered - _columns(con, files):  # a field no file has yet (older stores): nothing can match
            return None
        return con.execute(sql, [files, *params, limit])

    cur = _query(store_dir, q.since_us, q.until_us, run)
    if cur is None:
        return []
    cols = [d[0] for d in cur.description]
    out = []
    for row in cur.fetchall():
        r = dict(zip(cols, row, strict=False))
        ts = r.pop("ts")
        stamp = datetime.fromtimestamp(ts / 1e6, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        r = {"@timestamp": stamp, **r}
        out.append({k: v for k, v in r.items() if v is not None})
    return out


class StoreWriter:
    """Writes flushes into hourly partitions; merges and expires what checkpoints cover.

    `mark_committed()` (called once a checkpoint covers every flush so far) does the upkeep: at
    most one merge, bounded in size, and the deletion of hours past `retention_us`. Retention is
    measured from the newest event time stored (the highest median of a flush, so a few records
    from the future do not count), never from later than the wall clock: a replay of old traffic
    is kept, and a clock in the future cannot expire the store.
    """

    def __init__(
        self,
        store_dir: Path,
        retention_us: int | None = None,
        fan_in: int = 64,
        target_bytes: int = 16 << 20,
        cold_after: int = 120,
    ) -> None:
        self.dir = store_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pending: list[pl.DataFrame] = []
        self.retention_us = retention_us
        self.fan_in = max(2, fan_in)
        self.target_bytes = target_bytes
        self.cold_after = cold_after
        self.merges = 0  # merges done (tests, the soak benchmark)
        for tmp in self.dir.glob("**/*.tmp"):  # half-written by a crash
            tmp.unlink()
        self._drop_covered()
        parts = self._all_parts()
        self.seq = max((p.b for p in parts), default=0)
        self.committed = self.seq
        # the reference time of retention: the newest median event time of a flush (a few records
        # from the future cannot move it), set by the first flush
        self.max_ts: int | None = None
        # the last flush that wrote into each hour (an hour idle for cold_after flushes is "cold")
        self.last_write: dict[int, int] = {h: max((p.b for p in _parts_in(d, h)), default=0) for h, d in _hours(self.dir)}

    def _all_parts(self) -> list[Part]:
        out = _parts_in(self.dir, None)
        for h, d in _hours(self.dir):
            out += _parts_in(d, h)
        return out

    def _drop_covered(self) -> None:
        groups = [_parts_in(self.dir, None)] + [_parts_in(d, h) for h, d in _hours(self.dir)]
        for parts in groups:
            for p in _uncovered(parts)[1]:
                p.path.unlink(missing_ok=True)

    def file_count(self) -> int:
        return len(self._all_parts())

    # ---- writing ---------------------------------------------------------------------------
    def add(self, records: pl.DataFrame, ids: pl.Series) -> None:
        self.pending.append(records.drop("line").with_columns(id=pl.Series("id", ids, dtype=pl.String)))

    def flush(self) -> None:
        """Write what is pending as one level-0 file per hour it touches (fsynced, renamed)."""
        if not self.pending:
            return
        df = pl.concat(self.pending)
        self.pending = []
        self.seq += 1
        mid = df.get_column("ts").median()
        if mid is not None:
            self.max_ts = int(mid) if self.max_ts is None else max(self.max_ts, int(mid))
        name = f"part-{self.seq:012d}-{self.seq:012d}-0.parquet"
        for (hour,), part in df.with_columns(_h=pl.col("ts") // HOUR_US).partition_by("_h", as_dict=True).items():
            d = self.dir / hour_name(int(hour))
            if not d.exists():
                d.mkdir()
                fsync_dir(self.dir)
            self._write(part.drop("_h"), d / name)
            self.last_write[int(hour)] = self.seq

    def _write(self, df: pl.DataFrame, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        df.write_parquet(tmp, compression="zstd")
        place(tmp, path)

    # ---- upkeep ----------------------------------------------------------------------------
    def mark_committed(self) -> int:
        """Called once a checkpoint covers everything written: expire old hours, then do at most
        one merge. Returns the sequence number the checkpoint recorded."""
        self.committed = self.seq
        self.expire()
        self.merge_once()
        return self.committed

    def expire(self) -> int:
        """Delete whole hours older than the retention; returns how many."""
        if self.retention_us is None or self.max_ts is None:
            return 0
        reference = min(self.max_ts, int(time.time() * 1e6))
        gone = 0
        for h, d in _hours(self.dir):
            if (h + 1) * HOUR_US > reference - self.retention_us:
                break
            parts = _parts_in(d, h)
            if any(p.b > self.committed for p in parts):
                continue  # not yet covered by a checkpoint: a crash would write it again
            for p in parts:
                p.path.unlink(missing_ok=True)
            try:
                d.rmdir()
            except OSError:
                continue
            self.last_write.pop(h, None)
            gone += 1
        if gone:
            fsync_dir(self.dir)
            log.info(
                "store retention: deleted %d hour(s) of records older than %s",
                gone,
                datetime.fromtimestamp((reference - self.retention_us) / 1e6, tz=UTC).isoformat(timespec="seconds"),
            )
        return gone

    def _merge_candidate(self, parts: list[Part], cold: bool) -> list[Part] | None:
        """The oldest run of neighbouring small committed files worth merging, bounded in size."""
        # a file of a quarter of the target or more stays as it is: merging two near-target files
        # would rewrite a lot for nothing (measured: 3 s merges of 2 x 16 MB under load)
        small = [p.size < self.target_bytes // 4 and p.b <= self.committed for p in parts]
        i = 0
        while i < len(parts):
            if not small[i]:
                i += 1
                continue
            j = i
            while j < len(parts) and small[j] and (cold or parts[j].level == parts[i].level):
                j += 1
            run, total, take = parts[i:j], 0, []
            for p in run:
                take.append(p)
                total += p.size
                if len(take) >= self.fan_in or total >= self.target_bytes:
                    return take
            if cold and len(take) >= 2:
                return take
            i = j
        return None

    def merge_once(self) -> bool:
        """One bounded merge, if any is due (oldest hour first)."""
        for h, d in _hours(self.dir):
            parts = _parts_in(d, h)
            if len(parts) < 2:
                continue
            cold = self.committed - self.last_write.get(h, 0) >= self.cold_after
            take = self._merge_candidate(parts, cold)
            if take:
                self._merge(d, take)
                return True
        return False

    def _merge(self, d: Path, parts: list[Part]) -> None:
        a, b = parts[0].a, parts[-1].b
        level = max(p.level for p in parts) + 1
        path = d / f"part-{a:012d}-{b:012d}-{level}.parquet"
        tmp = path.with_name(path.name + ".tmp")
        # streamed: memory stays bounded whatever the size of the inputs
        # files from before a field existed lack its column: merged, it is null there
        pl.scan_parquet([p.path for p in parts], schema=_stored_schema(), missing_columns="insert").sink_parquet(
            tmp, compression="zstd"
        )
        place(tmp, path)
        for p in parts:
            p.path.unlink()
        self.merges += 1

    # ---- recovery --------------------------------------------------------------------------
    def drop_after(self, seq: int) -> None:
        """After a crash: remove files written after the checkpoint (they will be written again)."""
        for p in self._all_parts():
            if p.b > seq:
                p.path.unlink()
        for _, d in _hours(self.dir):
            if not any(d.iterdir()):
                d.rmdir()
        self.seq = self.committed = seq
