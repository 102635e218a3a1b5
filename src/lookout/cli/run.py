"""`lookout replay` (files, as fast as the machine allows) and `lookout run` (the long-running
pipeline: generated records, a tailed log or a Kafka topic)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lookout.cli.errors import EXIT_FAILURE, usage_errors
from lookout.cli.options import (
    duration_option,
    elasticsearch_option,
    es_options,
    http_options,
    idle_timeout_option,
    json_option,
    kafka_config_option,
    kafka_option,
    lateness_option,
    log_format_options,
    out_option,
    partitions_option,
    rotate_wait_option,
    rules_option,
    ruleset,
    state_dir_option,
    store_option,
    topic_option,
)

EXIT_INPUT_DAMAGED = 3  # replay: some input was damaged; everything readable was processed


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@rules_option
@lateness_option
@out_option("Directory for <rule>.jsonl and rejected.jsonl.")
@store_option("Also keep the raw records in an embedded store (Parquet) here, for `lookout count/search`.")
@elasticsearch_option("Also index every valid record into Elasticsearch/OpenSearch at this URL.")
@es_options
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@json_option()
@click.option("--notify", is_flag=True, help="Send the rules file's notifications (a backfill does not by default).")
@state_dir_option("With --notify: where the notification outbox lives.")
@click.option(
    "--parse-workers",
    type=click.IntRange(0, 64),
    default=None,
    help="Processes that parse input while the engine runs here (default: one per core, 0 on one core).",
)
def replay(
    inputs: tuple[str, ...],
    rules_path: str | None,
    lateness: str | None,
    out_dir: str,
    store_dir: str | None,
    es_url: str | None,
    progress: bool | None,
    as_json: bool,
    notify: bool,
    state_dir: str,
    parse_workers: int | None,
) -> None:
    """Run the rules over NDJSON files (`-` for stdin, .gz too), as fast as the machine allows."""
    from lookout.live import print_summary
    from lookout.replay import replay as run_replay
    from lookout.safe_text import plain
    from lookout.sinks.files import OutputUnwritable
    from lookout.sources.files import InputUnreadable

    rs = ruleset(rules_path, lateness)
    show = sys.stderr.isatty() if progress is None else progress
    with usage_errors(InputUnreadable, OutputUnwritable):
        outcome = run_replay(
            list(inputs),
            rs,
            Path(out_dir),
            store_dir=store_dir,
            es_url=es_url,
            progress=show,
            notify_dir=Path(state_dir) if notify else None,
        )
    print_summary(outcome.stats, out_dir, as_json=as_json)
    for damage in outcome.damaged:
        click.echo(plain(f"error: {damage}"), err=True)
    _fail_if_all_refused(outcome.stats, out_dir)  # exit 1: output missing outweighs damaged input
    if outcome.damaged:
        sys.exit(EXIT_INPUT_DAMAGED)


def _fail_if_all_refused(stats, out_dir: str) -> None:  # noqa: ANN001 - lookout.pipeline.Stats
    """Exit 1 when a server refused every document it was sent: that output is missing, not partial."""
    for name in stats.refused_everything():
        click.echo(
            f"error: {name} refused every document sent ({stats.delivery[name][1]:,}); they are dead "
            f"letters in {out_dir}/rejected.jsonl",
            err=True,
        )
    if stats.refused_everything():
        sys.exit(EXIT_FAILURE)


@click.command()
@rules_option
@lateness_option
@out_option("Directory results are appended to.")
@state_dir_option("Where checkpoints, positions and the embedded store live.")
@click.option("--rate", default=100.0, show_default=True, help="Generator: records per second.")
@click.option("--seed", type=int, default=None, help="Generator: random seed.")
@duration_option()
@click.option(
    "--tail",
    "tail_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Follow an nginx access log instead of generating records.",
)
@rotate_wait_option("--tail: keep reading a rotated log (beside the new one) until it has been idle this long.")
@click.option(
    "--backfill", is_flag=True, help="--tail, first start: read the rotated logs beside it first (oldest first, .gz too)."
)
@log_format_options
@kafka_option("kafka", required=False)
@topic_option()
@kafka_config_option
@partitions_option("Partitions for topics lookout creates.")
@click.option(
    "--on-reset",
    type=click.Choice(["fail", "earliest"]),
    default="fail",
    show_default=True,
    help="Kafka input re-created or shorter than the checkpoint: stop (exit 2), or read it from its beginning.",
)
@idle_timeout_option("Once input is quiet this long, a window closes when the wall clock is lateness past its end.")
@click.option(
    "--retention",
    default="7d",
    show_default=True,
    metavar="DURATION|off",
    help="Hours of event time the embedded store keeps (whole hours are deleted); `off` keeps all.",
)
@click.option(
    "--stop-timeout",
    default="10s",
    show_default=True,
    help="SIGTERM/SIGINT end the run within this time, whatever a sink or the broker does; "
    "what was not acknowledged by then is re-read on restart.",
)
@click.option(
    "--checkpoint-topic",
    default="lookout-checkpoints",
    show_default=True,
    metavar="TOPIC|off",
    help="--kafka: also write each checkpoint to this compacted topic; a standby on another state dir takes over from it.",
)
@elasticsearch_option("Index every valid record into Elasticsearch/OpenSearch at this URL.")
@es_options
@click.option("--view/--no-view", default=None, help="Live terminal view (default: when stdout is a terminal).")
@http_options(
    metavar="HOST:PORT|off",
    help="Serve /metrics (Prometheus) and /healthz here; a non-loopback address needs --http-token.",
    token_help="Bearer token required by every HTTP path but /healthz.",
)
def run(**opts: object) -> None:
    """Run the pipeline: generated records by default, or --tail a log, or --kafka."""
    from lookout import supervise
    from lookout.checkpoint import CheckpointError
    from lookout.cli.exit import hard_exit
    from lookout.http import HttpBindError
    from lookout.runner import RunOptions, run_pipeline
    from lookout.sinks.files import OutputUnwritable, ensure_writable_dir
    from lookout.statelock import StateDirBusy

    rs = ruleset(opts.pop("rules_path"), opts.pop("lateness"))  # type: ignore[arg-type]
    view = opts.pop("view")
    if view is None:
        view = sys.stdout.isatty()
    with usage_errors(ValueError):
        ro = RunOptions(**opts, view=bool(view))  # type: ignore[arg-type]
    with usage_errors(StateDirBusy, OutputUnwritable, HttpBindError, CheckpointError):
        ensure_writable_dir(ro.out_dir, "--out")
        ensure_writable_dir(ro.state_dir, "--state-dir")
        if ro.kafka and not supervise.is_child():  # a librdkafka crash must still leave a line
            # (the parent holds nothing to clean up: no interpreter shutdown, which takes a second
            # on a loaded machine, after the child's bounded stop)
            hard_exit(supervise.run_supervised(f"reading kafka topic {ro.topic}"))
        # InputChanged (the Kafka log is not the checkpoint's) reaches LookoutGroup: message, exit 2
        code = run_pipeline(rs, ro, exit_now=hard_exit)
    sys.exit(code)
