"""Commands for the kafka integration (registered on the main group)."""

from __future__ import annotations
