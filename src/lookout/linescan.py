"""One byte scan of an NDJSON chunk: where its lines are, and which ones a vectorised decoder must not see.

Guarantee: every line the scan does not mark as suspect starts with `{`, ends with `}` (before an
optional `\\r`), holds no control byte, no invalid UTF-8, no `\\u` escape, no `NaN`/`Inf` token
and no `}{` or `} {` (two objects on one line). These are the ways real broken lines break; a
line that breaks differently still makes the decoder fail, and the caller then finds it by
halving (records._decode), so the scan decides speed, never validity. Suspect lines are blanked out of
`text` (overwritten with `{}` and spaces, so line numbering holds) or, when one is too short to
hold `{}`, left out of it (`rows` maps decoder rows back to lines).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

_LBRACE, _RBRACE, _CR, _LF = 0x7B, 0x7D, 0x0D, 0x0A


@dataclass
class Scan:
    starts: np.ndarray  # byte offset of each line
    ends: np.ndarray  # byte offset of each line's end, without its `\r\n` / `\n`
    suspects: np.ndarray  # line indices for `parse_line`, ascending
    rows: np.ndarray  # the line of each row `text` decodes to
    text: bytes  # the chunk with suspect lines blanked out or left out

    def line(self, i: int, chunk: bytes) -> bytes:
        return chunk[int(self.starts[i]) : int(self.ends[i])]

    def text_rows(self, rows: np.ndarray) -> pl.Series:
        """The lines of `text` at `rows` as a polars String series (the text is valid UTF-8: lines
        that are not are suspects, never in it). Sliced in Python: measured faster than an Arrow
        array over the whole text and a take (which also imports pyarrow.compute, and with it
        pandas: half a second of CPU in each parse process)."""
        if len(self.rows) == len(self.starts):  # blanked in place: the text's lines are the chunk's
            offsets = np.append(self.starts, len(self.text))
        else:
            nl = np.flatnonzero(np.frombuffer(self.text, dtype=np.uint8) == _LF)
            offsets = np.concatenate(([0], nl + 1))
        text = self.text
        lo, hi = offsets[rows].tolist(), offsets[np.asarray(rows) + 1].tolist()
        return pl.Series([text[a:b] for a, b in zip(lo, hi, strict=True)], dtype=pl.Binary).cast(pl.String)

    def colons(self, chunk: bytes) -> np.ndarray:
        """`:` bytes in the line of each row (every key is followed by one)."""
        at = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == _COLON)
        lines = self.rows
        return np.searchsorted(at, self.ends[lines]) - np.searchsorted(at, self.starts[lines])


def _lines_of(positions: np.ndarray, newlines: np.ndarray) -> np.ndarray:
    return np.searchsorted(newlines, positions, side="left")


# One pass of byte compares finds every byte the checks below look at (faster than a table
# lookup in numpy); the rest is work on the few positions found (a few per line), not on the chunk.
_COLON, _N, _I, _BACKSLASH = 0x3A, 0x4E, 0x49, 0x5C


def _interesting(arr: np.ndarray, ascii_only: bool) -> np.ndarray:
    m = arr < 0x20
    if not ascii_only:
        m |= arr >= 0x80
    for b in (_RBRACE, _N, _I, _BACKSLASH):
        m |= arr == b
    return m


def _at(arr: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return arr[np.minimum(pos, len(arr) - 1)]


def scan(chunk: bytes) -> Scan:
    arr = np.frombuffer(chunk, dtype=np.uint8)
    ascii_only = chunk.isascii()
    hits = np.flatnonzero(_interesting(arr, ascii_only))
    kind = arr[hits]
    newlines = hits[kind == _LF]
    n = len(newlines) + (0 if chunk.endswith(b"\n") else 1)
    starts = np.empty(n, dtype=np.int64)
    starts[0] = 0
    starts[1:] = newlines[: n - 1] + 1
    ends = np.empty(n, dtype=np.int64)
    ends[: len(newlines)] = newlines
    if n > len(newlines):
        ends[-1] = len(chunk)
    full = ends.copy()  # line end before the `\r` strip: the bytes that may be blanked
    last = _at(arr, np.maximum(ends - 1, 0))
    cr = (ends > starts) & (last == _CR)
    ends -= cr
    first = _at(arr, starts)
    last = _at(arr, np.maximum(ends - 1, 0))
    suspect = (ends <= starts) | (first != _LBRACE) | (last != _RBRACE)
    bad_pos = [hits[(kind < 0x20) & (kind != _LF)]]  # control bytes; a `\r` ending its line is let through below
    if not ascii_only:
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError:
            bad_pos.append(hits[kind >= 0x80])
    p = hits[kind == _BACKSLASH]
    bad_pos.append(p[_at(arr, p + 1) == ord("u")])  # a `\\u` escape: keys, surrogates (parse_line decides)
    p = hits[kind == _RBRACE]
    nxt = _at(arr, p + 1)
    bad_pos.append(p[(nxt == _LBRACE) | ((nxt == ord(" ")) & (_at(arr, p + 2) == _LBRACE))])  # `}{`, `} {`
    p = hits[kind == _N]
    bad_pos.append(p[(_at(arr, p + 1) == ord("a")) & (_at(arr, p + 2) == _N)])  # NaN
    p = hits[kind == _I]
    bad_pos.append(p[(_at(arr, p + 1) == ord("n")) & (_at(arr, p + 2) == ord("f"))])  # Infinity
    bad = np.concatenate(bad_pos)
    if len(bad):
        li = _lines_of(bad, newlines)
        keep_cr = (arr[bad] == _CR) & (bad == ends[li])
        suspect[li[~keep_cr]] = True
    bad = np.flatnonzero(suspect)
    if not len(bad):
        return Scan(starts, ends, bad, np.arange(n), chunk)
    if int((full[bad] - starts[bad]).min()) >= 2:  # each bad line can hold `{}`: blank it in place
        buf = bytearray(chunk)
        for s, e in zip(starts[bad].tolist(), full[bad].tolist(), strict=True):
            buf[s:e] = b"{}" + b" " * (e - s - 2)
        return Scan(starts, ends, bad, np.arange(n), bytes(buf))
    keep = np.flatnonzero(~suspect)
    text = b"\n".join([chunk[s:e] for s, e in zip(starts[keep].tolist(), ends[keep].tolist(), strict=True)])
    return Scan(starts, ends, bad, keep, text + b"\n" if text else b"")
