"""A crash leaves a line: `lookout run --kafka` runs its pipeline in a child process and says so
when that child dies of a signal it was not sent.

Why a second process: librdkafka's threads block every signal, so a segmentation fault inside
them (the test broker's metadata for a deleted topic crashes librdkafka 2.16 within 0.2 s, before
any check of ours can see the deletion) kills the process at once - no Python handler, not even
faulthandler, gets to write anything. The parent forwards SIGINT/SIGTERM to the child, exits with
its status, and on a crash writes what the child was doing and that the state dir holds the last
checkpoint. The child dies with the parent (PR_SET_PDEATHSIG), so SIGKILL of the parent is still
SIGKILL of the pipeline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

CHILD_ENV = "LOOKOUT_SUPERVISED"


def is_child() -> bool:
    return os.environ.get(CHILD_ENV) == "1"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def run_supervised(doing: str) -> int:
    """Run this same command line in a child process; its exit status, or 128+signal after a crash."""
    env = {**os.environ, CHILD_ENV: "1"}
    # its own process group: a terminal's Ctrl-C reaches the parent only, which forwards it once
    # (the child takes a second signal as "abandon the pending flush")
    child = subprocess.Popen(
        [sys.executable, "-m", "lookout", *sys.argv[1:]],
        env=env,
        process_group=0,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )  # noqa: PLW1509
    sent: set[int] = set()

    def forward(signum: int, _frame: object) -> None:
        sent.add(signum)
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    rc = child.wait()
    if rc >= 0:
        return rc
    sig = -rc
    if sig in sent:
        return 128 + sig
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    sys.stderr.write(
        f"{stamp} CRITICAL lookout.run: the pipeline process died of {name} while {doing} (a crash in a native "
        f"library: librdkafka does this when a topic it reads is deleted on some brokers); its last log lines are "
        f"above. Nothing after the last checkpoint in the state dir was committed: start lookout again to resume.\n"
    )
    sys.stderr.flush()
    return 128 + sig
