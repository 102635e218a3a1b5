"""`lookout replay`: files in, results and dead letters out, as fast as the machine allows.

A damaged input file does not cost the others: what was read before the damage is processed,
the next file is read, and the damage is reported in the outcome (the CLI exits 3 on it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lookout.factory import SinkPlan, build_sinks
from lookout.parsepool import ParsePool, default_parse_workers
from lookout.pipeline import Pipeline, Stats
from lookout.records import ParsedChunk
from lookout.rules import RuleSet
from lookout.sinks.base import Sink
from lookout.sources.base import Chunk
from lookout.sources.files import InputDamaged, check_readable, file_chunks, input_size

# One engine step per this many bytes of input (60-70k records): the engine's cost is mostly per
# step (measured on the messy benchmark input, four default rules: 2.6 µs/record in steps of 20k
# records, 1.2-1.4 at 80-100k, 1.3 at 200k). The parse processes get it in pieces of
# parsepool.PIECE_BYTES (each holds about ten times its piece at its peak), so their memory does
# not grow with it. This process's memory does (the engine's windows of a step, three chunks in
# flight): measured peak PSS of a clean replay, all processes, 359 MiB at 4 MiB, 379 at 8, 457 at
# 16, 492 at 20 (the limit is 500).
POOL_CHUNK_BYTES = 12 << 20


@dataclass
class ReplayOutcome:
    stats: Stats
    damaged: list[InputDamaged] = field(default_factory=list)


def _parsed_ahead(chunks: Iterator[Chunk], depth: int = 2) -> Iterator[tuple[Chunk, ParsedChunk]]:
    """Read and parse the next chunks in a worker thread while the engine works on this one.
    polars releases the GIL, so the two overlap on two cores; order is kept."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="parse") as pool:
        pending: deque = deque()
        it = iter(chunks)

        def next_parsed() -> tuple[Chunk, ParsedChunk] | None:
            chunk = next(it, None)
            return None if chunk is None else (chunk, Pipeline.parse(chunk))

        for _ in range(depth):
            pending.append(pool.submit(next_parsed))
        while pending:
            item = pending.popleft().result()
            if item is None:
                break
            pending.append(pool.submit(next_parsed))
            yield item


def replay(
    inputs: list[str],
    rs: RuleSet,
    out_dir: Path,
    store_dir: str | None = None,
    es_url: str | None = None,
    progress: bool = False,
    sink: Sink | None = None,
    notify_dir: Path | None = None,
    notify_wait: float = 30.0,
    parse_workers: int | None = None,
) -> ReplayOutcome:
    """Raises `InputUnreadable` (before any output is touched) or `OutputUnwritable`.
    `notify_dir`: send the rules' notifications through an outbox there (a backfill does not
    notify unless asked); at the end wait up to `notify_wait` s for them to be delivered."""
    for path in inputs:
        check_readable(path)
    outcome = ReplayOutcome(Stats())
    sinks = sink or build_sinks(rs, SinkPlan(out_dir, store_dir=Path(store_dir) if store_dir else None, es_url=es_url))
    pipe = Pipeline(rs, sinks, keep_results=False)
    notifier = None
    if notify_dir is not None and rs.notify:
        from lookout.notify.outbox import REPLAY_OUTBOX_FILE
        from lookout.notify.sender import Notifier

        notifier = Notifier(rs, notify_dir, REPLAY_OUTBOX_FILE)
        notifier.recover(0)  # replay has no checkpoints: its rows are released as soon as staged
        notifier.start()

    def notify(transitions: list) -> None:
        if notifier is not None and transitions:
            notifier.add(transitions)
            notifier.stage(0)
            notifier.release(0)

    bar = None
    if progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

        bar = Progress(
            TextColumn("[bold]replay"),
            BarColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[lines]:,} lines"),
            transient=True,
        )
        task = bar.add_task("replay", total=input_size(inputs), lines=0)
        bar.start()
    workers = default_parse_workers() if parse_workers is None else parse_workers
    pool = ParsePool(workers) if workers else None
    try:
        for path in inputs:
            done_before = 0
            try:
                ahead = pool.parsed(file_chunks(path, POOL_CHUNK_BYTES)) if pool is not None else _parsed_ahead(file_chunks(path))
                for chunk, parsed in ahead:
                    notify(pipe.step(chunk, parsed).incidents)
                    if bar is not None:
                        bar.update(task, advance=chunk.position - done_before, lines=pipe.stats.lines)
                        done_before = chunk.position
            except InputDamaged as e:
                outcome.damaged.append(e)
        notify(pipe.close_windows().incidents)
        sinks.close()
        pipe.stats.delivery = sinks.delivery()
    finally:
        if pool is not None:
            pool.close()
        if bar is not None:
            bar.stop()
        if notifier is not None:
            notifier.stop(drain=notify_wait)
    outcome.stats = pipe.stats
    return outcome
