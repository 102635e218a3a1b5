"""One factory (`lookout.factory`) builds the sources and sinks of `run`, `replay` and `ship`:
each kind of source from its own options, the sinks from one plan, files first."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from lookout.factory import GeneratorInput, KafkaInput, SinkPlan, TailInput, build_sinks
from lookout.rules import load_rules
from lookout.runner import RunOptions
from lookout.sinks.base import Sink, SinkSet
from lookout.sinks.files import FileSink, OutputUnwritable
from lookout.sinks.store import StoreSink
from lookout.sources.generator_source import GeneratorSource
from lookout.sources.tail import TailSource

RULES = load_rules(None)


def test_run_options_name_one_source_with_only_its_options(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    tail = RunOptions(tail_path=log, state_dir=tmp_path, rotate_wait="1m", log_format="combined", http="off").input()
    assert tail == TailInput(log, tmp_path, log_format="combined", rotate_wait=60.0) and tail.kind == "tail"
    kafka = RunOptions(kafka="127.0.0.1:9", topic="t", partitions=2, on_reset="earliest", http="off").input()
    assert isinstance(kafka, KafkaInput) and (kafka.topic, kafka.partitions, kafka.on_reset) == ("t", 2, "earliest")
    assert RunOptions(rate=5, seed=3, http="off").input() == GeneratorInput(5.0, 3)
    src = TailInput(log, tmp_path).open(RULES)
    try:
        assert isinstance(src, TailSource)
    finally:
        src.close()
    assert isinstance(GeneratorInput().open(RULES), GeneratorSource)


def test_a_run_and_a_replay_get_their_sinks_from_one_plan(tmp_path: Path) -> None:
    run_plan = RunOptions(out_dir=tmp_path / "out", state_dir=tmp_path / "state", retention="off", http="off").sink_plan()
    assert run_plan.append and run_plan.fsync and run_plan.store_dir == tmp_path / "state" / "store"
    sinks = build_sinks(RULES, run_plan)
    try:
        assert [type(s) for s in sinks.sinks] == [FileSink, StoreSink]
    finally:
        sinks.close()
    replay_sinks = build_sinks(RULES, SinkPlan(tmp_path / "replay"))
    try:
        assert [type(s) for s in replay_sinks.sinks] == [FileSink] and not replay_sinks.wants_records
    finally:
        replay_sinks.close()


def test_an_output_path_that_is_a_file_is_a_typed_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputUnwritable, match="cannot write results there"):
        build_sinks(RULES, SinkPlan(tmp_path / "f"))
    with pytest.raises(OutputUnwritable, match="cannot keep the store there"):
        build_sinks(RULES, SinkPlan(tmp_path / "out", store_dir=tmp_path / "f"))


def test_a_sink_that_takes_records_says_so_on_the_base_class() -> None:
    class Takes(Sink):
        def write_records(self, records: pl.DataFrame, ids: pl.Series) -> None:
            pass

    assert Takes().wants_records and not Sink().wants_records
    assert SinkSet([Sink(), Takes()]).wants_records and not SinkSet([Sink()]).wants_records
