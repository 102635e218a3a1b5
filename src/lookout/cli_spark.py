"""Commands for the spark integration (registered on the main group)."""

from __future__ import annotations
