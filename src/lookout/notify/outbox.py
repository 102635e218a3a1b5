"""The durable outbox: incident notifications waiting to be delivered, in STATE_DIR/notify.sqlite.

Why SQLite (the standard library's): atomic multi-row commits, fsync on commit
(`synchronous=FULL`, WAL), safe concurrent use by the run loop and the sender thread, and a
crash (SIGKILL) at any point leaves either the old or the new content, never a torn file.

Rows are *staged* under a checkpoint number before the run loop writes that checkpoint, and
*released* (sendable) once it is written. On restart, staged rows of a checkpoint that never
landed are dropped: the restored engine derives them again. So nothing is sent that the
restored state does not also know about, and nothing committed is lost. A row leaves the outbox
only after a 2xx (or a permanent refusal, which moves it to the dead-letter table with the
reason).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

OUTBOX_FILE = "notify.sqlite"
REPLAY_OUTBOX_FILE = "notify-replay.sqlite"  # replay --notify: never touches a run's outbox

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  target TEXT NOT NULL,            -- the target's label
  idem TEXT NOT NULL,              -- Idempotency-Key: incident id + status
  body BLOB NOT NULL,              -- the incident line (JSON)
  ckpt INTEGER NOT NULL,           -- staged for this checkpoint number
  released INTEGER NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_at REAL NOT NULL DEFAULT 0, -- unix time of the next attempt
  last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (target, released, seq);
CREATE TABLE IF NOT EXISTS dead (
  seq INTEGER PRIMARY KEY, target TEXT NOT NULL, idem TEXT NOT NULL, body BLOB NOT NULL,
  status INTEGER, reason TEXT NOT NULL, at REAL NOT NULL
);
"""


@dataclass
class Pending:
    seq: int
    target: str
    idem: str
    body: bytes
    attempts: int
    next_at: float


def connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=True)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.executescript(_SCHEMA)
    return con


class Outbox:
    """One connection per thread: the run loop stages and releases, the sender takes and acks."""

    def __init__(self, state_dir: Path, file: str = OUTBOX_FILE) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / file
        self.con = connect(self.path)

    def stage(self, rows: list[tuple[str, str, bytes]], ckpt: int) -> None:
        """(target, idempotency key, body) rows for checkpoint `ckpt`, durable on return."""
        if not rows:
            return
        with self.con:
            self.con.execute("BEGIN IMMEDIATE")
            self.con.executemany(
                "INSERT INTO outbox (target, idem, body, ckpt) VALUES (?, ?, ?, ?)", [(t, k, b, ckpt) for t, k, b in rows]
            )

    def release(self, ckpt: int) -> int:
        """Checkpoint `ckpt` is written: its rows (and any older) may be sent."""
        cur = self.con.execute("UPDATE outbox SET released = 1 WHERE released = 0 AND ckpt <= ?", (ckpt,))
        return cur.rowcount

    def recover(self, ckpt: int) -> int:
        """At start, with the restored checkpoint's number: release what it covers, drop what it
        does not (the restored state emits those transitions again). Returns rows dropped."""
        self.release(ckpt)
        return self.con.execute("DELETE FROM outbox WHERE released = 0 AND ckpt > ?", (ckpt,)).rowcount

    def undelivered(self, limit: int) -> list[tuple[str, str, str]]:
        """(target, idempotency key, body) of every row not yet acknowledged, oldest first, at most
        `limit`: what a standby must still send if this instance dies (the checkpoint topic)."""
        rows = self.con.execute("SELECT target, idem, body FROM outbox ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [(t, k, bytes(b).decode("utf-8", "replace")) for t, k, b in rows]

    def adopt(self, rows: list[tuple[str, str, str]], ckpt: int) -> int:
        """A dead instance's undelivered rows (from its checkpoint), released at once; a row this
        outbox already holds (same target and key) is not added twice. Returns rows added."""
        added = 0
        with self.con:
            self.con.execute("BEGIN IMMEDIATE")
            for t, k, b in rows:
                if self.con.execute("SELECT 1 FROM outbox WHERE target = ? AND idem = ?", (t, k)).fetchone() is None:
                    self.con.execute(
                        "INSERT INTO outbox (target, idem, body, ckpt, released) VALUES (?, ?, ?, ?, 1)", (t, k, b.encode(), ckpt)
                    )
                    added += 1
        return added

    def head(self, target: str) -> Pending | None:
        """The target's oldest released row: a target's notifications go out in order (a
        `resolved` never overtakes its `firing`)."""
        row = self.con.execute(
            "SELECT seq, target, idem, body, attempts, next_at FROM outbox "
            "WHERE target = ? AND released = 1 ORDER BY seq LIMIT 1",
            (target,),
        ).fetchone()
        return None if row is None else Pending(*row)

    def ack(self, seq: int) -> None:
        self.con.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def retry_later(self, seq: int, delay: float, error: str) -> None:
        self.con.execute(
            "UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ? WHERE seq = ?",
            (time.time() + delay, error[:500], seq),
        )

    def dead_letter(self, p: Pending, status: int | None, reason: str) -> None:
        with self.con:
            self.con.execute("BEGIN IMMEDIATE")
            self.con.execute(
                "INSERT INTO dead (seq, target, idem, body, status, reason, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (p.seq, p.target, p.idem, p.body, status, reason[:2000], time.time()),
            )
            self.con.execute("DELETE FROM outbox WHERE seq = ?", (p.seq,))

    # ---- inspection -----------------------------------------------------------------------
    def size(self) -> int:
        return int(self.con.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def dead(self) -> list[dict]:
        rows = self.con.execute("SELECT seq, target, idem, status, reason FROM dead ORDER BY seq").fetchall()
        return [dict(zip(("seq", "target", "idem", "status", "reason"), r, strict=False)) for r in rows]

    def close(self) -> None:
        self.con.close()
