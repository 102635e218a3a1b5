"""Commands for the nginx integration (registered on the main group)."""

from __future__ import annotations
