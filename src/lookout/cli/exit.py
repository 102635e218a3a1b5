"""Ending the process without the interpreter's shutdown, for `lookout run`'s bounded stop.

Why: at the stop deadline a sink's worker thread may still be blocked in a socket read to a frozen
server; a normal exit joins such threads (concurrent.futures does at shutdown) and would wait for
it. Only the command line ends the process; the library (lookout.stopping) is handed this.
"""

from __future__ import annotations

import logging
import os
import sys


def hard_exit(code: int = 0) -> None:
    """Flush the log and stdio, then end the process at once."""
    for h in logging.getLogger().handlers:
        try:
            h.flush()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(code)
