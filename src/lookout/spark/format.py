"""Result and dead-letter messages, made by lookout.output itself as `lookout replay` makes them.

They come out of the stateful operator (panes.py) already formatted by lookout.output's
format_results / dead_letter (Spark's `to_json` would write `5.0E-4` where lookout writes
`0.0005`), as rows (topic, key, value, late); the sinks deliver them as they are.
"""

from __future__ import annotations

from typing import Any


def messages(rows: list[Any]) -> tuple[list[tuple], int]:
    """One micro-batch's output rows → ((topic, key, value) messages, late records among them)."""
    return [(r[0], r[1], r[2]) for r in rows], sum(1 for r in rows if r[3])
