"""Commands for real nginx logs: `lookout ship`, `lookout nginx-config`."""

from __future__ import annotations

from lookout.cli import main  # noqa: F401  (commands register on the main group)
