"""The sink interface. The pipeline calls the write_* methods per step, then `flush()`, and only
then acknowledges the input (commits offsets, saves positions): a sink's flush must return only
once what it was given is durable (fsynced, acknowledged by a broker or a server)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    from lookout.incidents import Transition
    from lookout.output import ResultBatch


class Sink:
    """Base class with no-op defaults: a sink overrides what it takes."""

    name = "sink"

    def write_results(self, batch: ResultBatch) -> None:  # one rule's results
        pass

    def write_rejected(self, entries: list[bytes]) -> None:  # dead-letter JSON lines
        pass

    def write_incidents(self, transitions: list[Transition]) -> None:  # incident lines, in order
        pass

    def write_records(self, records: pl.DataFrame, ids: pl.Series) -> None:  # valid raw records
        pass

    def flush(self) -> None:
        pass

    def checkpoint(self) -> Any:
        """Plain data saved with the run's checkpoint, right after `flush()` (None: nothing to save).
        A sink whose output could run ahead of the checkpoint (appended files) says where it stood."""
        return None

    def restore(self, state: Any) -> None:
        """Cut the output back to what `checkpoint()` returned, before a resumed run writes again."""

    def committed(self) -> None:
        """The checkpoint covering everything written so far is durable: upkeep that may only touch
        committed output (the store's bounded merge and retention) runs here."""

    def abort(self) -> None:
        """A second stop signal: stop waiting on an unreachable server; a pending flush then fails
        (so nothing unacknowledged is committed)."""

    def error_count(self) -> int:
        """Items refused for good so far (dead-lettered or fatal), for metrics."""
        return 0

    def close(self) -> None:
        self.flush()

    def delivery(self) -> dict[str, tuple[int, int]]:
        """For sinks a server may refuse documents to: {sink name: (accepted, refused for good)}
        so far (the refused ones are dead letters); empty for sinks that cannot refuse."""
        return {}

    @property
    def wants_records(self) -> bool:
        """Does this sink take raw records? (The pipeline builds their ids only for a taker.)
        True for a sink that overrides `write_records`."""
        return type(self).write_records is not Sink.write_records


class SinkSet(Sink):
    """Fans each call out to several sinks, in order."""

    name = "sinks"

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def write_results(self, batch: ResultBatch) -> None:
        for s in self.sinks:
            s.write_results(batch)

    def write_rejected(self, entries: list[bytes]) -> None:
        for s in self.sinks:
            s.write_rejected(entries)

    def write_records(self, records: pl.DataFrame, ids: pl.Series) -> None:
        for s in self.sinks:
            s.write_records(records, ids)

    def write_incidents(self, transitions: list[Transition]) -> None:
        for s in self.sinks:
            s.write_incidents(transitions)

    def flush(self) -> None:
        # Downstream sinks first: their flush may hand dead letters (refused documents) to the
        # files sink, which must come after to make them durable in the same flush.
        for s in reversed(self.sinks):
            s.flush()

    def checkpoint(self) -> dict[str, Any]:
        """Each sink's checkpoint state, by sink name."""
        return {s.name: state for s in self.sinks if (state := s.checkpoint()) is not None}

    def restore(self, state: dict[str, Any]) -> None:
        for s in self.sinks:
            if s.name in state:
                s.restore(state[s.name])

    def committed(self) -> None:
        for s in self.sinks:
            s.committed()

    def abort(self) -> None:
        """Stop waiting on unreachable servers; their pending flushes fail (nothing is committed)."""
        for s in self.sinks:
            s.abort()

    def close(self) -> None:
        # Flush all before closing any: a later sink's flush may still hand dead letters to an
        # earlier one (Elasticsearch item rejections go to the files sink's rejected.jsonl).
        self.flush()
        for s in self.sinks:
            s.close()

    def delivery(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for s in self.sinks:
            out.update(s.delivery())
        return out

    def errors(self) -> dict[str, int]:
        return {s.name: s.error_count() for s in self.sinks}

    @property
    def wants_records(self) -> bool:
        return any(s.wants_records for s in self.sinks)
