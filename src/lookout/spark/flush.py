"""Rows that only move the watermark: the end of the input (files) and heartbeats (Kafka).

Such a row is marked by where it comes from (column `flush_ts`: the staged end-of-input file,
the Kafka source's heartbeat partition), never by its text, so no input line can pose as one.
Its event time is `flush_ts`; it is no record: no result, no dead letter.
"""

from __future__ import annotations

# The text of the staged end-of-input file (for a human who looks; the row is known by its file).
FLUSH_LINE = '{"lookout-flush": "end-of-input"}'
# 9999-12-31T23:59:59Z, the last second Spark's timestamps hold: past every window (a record is
# stamped before records.MAX_TS_US, 9998-01-01, and its windows end before year 10000), so the
# watermark then closes them all, as `lookout replay` does at end of input.
FLUSH_TS_US = 253_402_300_799 * 1_000_000
