"""Safe display text: values from records, messages and brokers shown as data, never as commands.

Guarantee: a string passed through this module cannot restyle (rich markup), move the cursor,
clear the screen, set the window title, break a line or reverse the reading order (ANSI escape
sequences, C0/C1 control characters, DEL, Unicode line separators and bidi overrides) on the
terminal or in a log file. Control characters are shown escaped (`\\x1b`, `\\r`, `\\n`, `\\u202e`), so
the operator still sees what was sent. Everything lookout prints that carries such values goes
through `text()` (rich), `plain()` (plain strings), `json_line()` (JSON text) or `SafeFormatter`
(log lines).
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from typing import IO, Any

from rich.text import Text

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
# bidi embeddings/overrides/isolates and marks, and the Unicode line/paragraph separators
_FORMAT_CHARS = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029]
_UNSAFE = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), *_FORMAT_CHARS]


def _escape_of(cp: int) -> str:
    ch = chr(cp)
    if ch in _NAMED:
        return _NAMED[ch]
    return f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}"


_TABLE = {cp: _escape_of(cp) for cp in _UNSAFE}
# JSON text (orjson, json.dumps) escapes C0 controls itself but leaves DEL, C1 and the format
# characters raw; these become \\uXXXX escapes, so the line stays valid JSON with the same value.
_JSON_TABLE = {cp: f"\\u{cp:04x}" for cp in _UNSAFE if cp >= 0x20}
_UNSAFE_RE = re.compile("[" + "".join(re.escape(chr(cp)) for cp in _UNSAFE) + "]")


def escape_controls(s: str) -> str:
    """`s` with every control/format character replaced by a visible escape (no markup handling)."""
    return s.translate(_TABLE) if _UNSAFE_RE.search(s) else s


def plain(value: Any) -> str:
    """A value as one line of inert text for a plain (non-rich) stream."""
    return escape_controls(value if isinstance(value, str) else str(value))


def text(value: Any, style: str = "") -> Text:
    """A value as a rich `Text` cell: never markup-parsed, control characters escaped."""
    return Text(plain(value), style=style)


def markup(value: Any) -> str:
    """A value to interpolate into a rich markup string (escaped brackets, escaped controls)."""
    from rich.markup import escape

    return escape(plain(value))


def json_line(s: str) -> str:
    """JSON text (from orjson/json) made inert for a terminal while staying the same JSON value."""
    return s.translate(_JSON_TABLE) if _UNSAFE_RE.search(s) else s


def decode(raw: bytes) -> str:
    """Bytes from a broker or a file as inert text (invalid UTF-8 shown as U+FFFD)."""
    return plain(raw.decode("utf-8", "replace"))


class SafeFormatter(logging.Formatter):
    """A log formatter whose lines cannot be forged or turned into terminal commands by the values
    interpolated into them: the message is one line with control characters escaped; a traceback
    keeps its own line breaks but each of its lines is escaped too."""

    def format(self, record: logging.LogRecord) -> str:
        safe = logging.makeLogRecord(record.__dict__)
        safe.msg = escape_controls(record.getMessage())
        safe.args = None
        return super().format(safe)

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        # The traceback's own structure (frames, chain messages) keeps its lines; the exception
        # texts (which may quote values) are escaped whole, so they cannot start a line of their own.
        out = []
        for chunk in traceback.TracebackException(*ei, compact=True).format():
            body = chunk[:-1] if chunk.endswith("\n") else chunk
            if body.lstrip(" |").startswith("File ") or chunk in _TRACEBACK_FRAMING:
                out.append(_escape_lines(body))
            else:
                out.append(escape_controls(body))
        return "\n".join(out)

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return _escape_lines(super().formatStack(stack_info))


_TRACEBACK_FRAMING = {
    "Traceback (most recent call last):\n",
    "\nThe above exception was the direct cause of the following exception:\n\n",
    "\nDuring handling of the above exception, another exception occurred:\n\n",
}


def _escape_lines(s: str) -> str:
    return "\n".join(escape_controls(line) for line in s.split("\n"))


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: int = logging.INFO, stream: IO[str] | None = None) -> None:
    """Long-running commands' logging: one stderr handler with `SafeFormatter` on the root logger
    (as `logging.basicConfig`, nothing is changed when the root logger already has handlers)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(SafeFormatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])


def guard_last_resort() -> None:
    """Commands that configure no logging (replay, search, ...) print warnings through logging's
    last-resort handler, as bare messages: give it the escaping formatter, same output otherwise."""
    handler = logging.StreamHandler()  # resolves sys.stderr when constructed, as the original does
    handler.setLevel(logging.WARNING)
    handler.setFormatter(SafeFormatter("%(message)s"))
    logging.lastResort = handler
