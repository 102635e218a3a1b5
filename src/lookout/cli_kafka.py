"""Commands for the Kafka integration: `lookout produce`, `lookout consume`."""

from __future__ import annotations

from lookout.cli import main  # noqa: F401  (commands register on the main group)
