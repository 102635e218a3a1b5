"""`lookout replay`: files in, results and dead letters out, as fast as the machine allows."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

from lookout.pipeline import Pipeline, Stats
from lookout.records import ParsedChunk
from lookout.rules import RuleSet
from lookout.sinks.base import Sink, SinkSet
from lookout.sinks.files import FileSink
from lookout.sources.base import Chunk
from lookout.sources.files import file_chunks, input_size


def build_sinks(rs: RuleSet, out_dir: Path, store_dir: str | None, es_url: str | None, append: bool = False) -> SinkSet:
    files = FileSink(out_dir, [r.name for r in rs.rules], append=append)
    sinks: list[Sink] = [files]
    if store_dir:
        from lookout.sinks.store import StoreSink

        sinks.append(StoreSink(Path(store_dir)))
    if es_url:
        from lookout.sinks.elasticsearch import ElasticsearchSink

        sinks.append(ElasticsearchSink.from_url(es_url, rules=rs, on_rejected=files.write_rejected))
    return SinkSet(sinks)


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


def replay(inputs: list[str], rs: RuleSet, out_dir: Path, store_dir: str | None = None,
           es_url: str | None = None, progress: bool = False, sink: Sink | None = None) -> Stats:
    sinks = sink or build_sinks(rs, out_dir, store_dir, es_url)
    pipe = Pipeline(rs, sinks)
    bar = None
    if progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

        bar = Progress(TextColumn("[bold]replay"), BarColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                       TextColumn("{task.fields[lines]:,} lines"), transient=True)
        task = bar.add_task("replay", total=input_size(inputs), lines=0)
        bar.start()
    try:
        for path in inputs:
            done_before = 0
            for chunk, parsed in _parsed_ahead(file_chunks(path)):
                pipe.step(chunk, parsed)
                if bar is not None:
                    bar.update(task, advance=chunk.position - done_before, lines=pipe.stats.lines)
                    done_before = chunk.position
        pipe.close_windows()
        sinks.close()
        pipe.stats.delivery = sinks.delivery()
    finally:
        if bar is not None:
            bar.stop()
    return pipe.stats
