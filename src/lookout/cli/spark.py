"""`lookout spark`: the rules on Apache Spark Structured Streaming (`lookout.spark`)."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from lookout.cli.errors import fail, usage_errors
from lookout.cli.options import (
    duration_option,
    idle_timeout_option,
    json_option,
    kafka_option,
    lateness_option,
    out_option,
    rules_option,
    ruleset,
    topic_option,
)
from lookout.errors import ConfigError
from lookout.keyvalue import parse_pairs
from lookout.rules import parse_duration


@click.command("spark")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="NDJSON file to read (repeatable; .gz too). Trigger availableNow, then stop.",
)
@out_option("With --input: directory for <rule>.jsonl and rejected.jsonl.")
@kafka_option(
    "kafka",
    required=False,
    metavar="BOOTSTRAP",
    help="Kafka bootstrap servers: read --topic, write the rules' topics and <topic>-dlq.",
)
@topic_option()
@click.option(
    "--starting-offsets",
    type=click.Choice(["earliest", "latest"]),
    default="earliest",
    show_default=True,
    help="Kafka: where a new checkpoint starts reading.",
)
@click.option(
    "--connector",
    type=click.Choice(["auto", "spark", "python"]),
    default="auto",
    show_default=True,
    help="Kafka: Spark's spark-sql-kafka-0-10 when on the classpath (auto), or lookout's own "
    "Python Data Source over confluent-kafka.",
)
@duration_option("Kafka: stop after this many seconds, closing and emitting every open window first (Python connector).")
@idle_timeout_option(
    "Kafka (Python connector): input quiet this long moves the watermark to now − lateness, closing the windows it passes."
)
@rules_option
@lateness_option
@click.option("--master", default=None, help="Spark master URL (default local[*]; under spark-submit, its own).")
@click.option("--conf", "conf", multiple=True, metavar="KEY=VALUE", help="Spark configuration (repeatable).")
@click.option(
    "--checkpoint",
    default=None,
    type=click.Path(file_okay=False),
    help="Checkpoint directory (Kafka default: .lookout-state/spark; --input: a temporary one).",
)
@json_option()
def spark(
    inputs: tuple[str, ...],
    out_dir: str,
    kafka: str | None,
    topic: str,
    starting_offsets: str,
    connector: str,
    duration: float | None,
    idle_timeout: str,
    rules_path: str | None,
    lateness: str | None,
    master: str | None,
    conf: tuple[str, ...],
    checkpoint: str | None,
    as_json: bool,
) -> None:
    """Run the rules on Apache Spark Structured Streaming (results identical to `lookout replay`)."""
    if bool(inputs) == bool(kafka):
        fail("give either --input FILE... or --kafka BOOTSTRAP")
    for p in inputs:
        if not Path(p).is_file():
            fail(f"{p}: no such file")
    rs = ruleset(rules_path, lateness)
    try:
        idle_s = parse_duration(idle_timeout) / 1e6
    except ValueError as e:
        fail(f"--idle-timeout: {e}")
    try:
        from lookout.spark.compile import UnsupportedRule, check_rules
    except ImportError:
        fail("pyspark is not installed (pip install 'lookout[spark]')")
    with usage_errors(UnsupportedRule, ConfigError):
        check_rules(rs)
        spark_conf = parse_pairs(conf, "--conf")
    from lookout.spark import app

    if inputs:
        stats = app.run_files(list(inputs), rs, Path(out_dir), master=master, conf=spark_conf, checkpoint=checkpoint)
    else:

        def progress(st: app.SparkStats) -> None:
            if not as_json:
                if st.batches == 0:
                    click.echo(f"kafka connector: {st.connector}", err=True)
                else:
                    click.echo(f"batches {st.batches}  rows {st.input_rows:,}  late {st.late:,}", err=True)

        try:
            stats = app.run_kafka(
                kafka,
                topic,
                rs,
                master=master,
                conf=spark_conf,
                checkpoint=checkpoint,  # type: ignore[arg-type]
                starting_offsets=starting_offsets,
                duration=duration,
                connector=connector,
                on_progress=progress,
                idle_timeout=idle_s,
            )
        except KeyboardInterrupt:
            return
    d = stats.as_dict()
    if as_json:
        click.echo(orjson.dumps(d).decode())
        return
    click.echo("lookout spark")
    click.echo(f" input rows     {d['input_rows']:,}")
    if inputs:
        click.echo(f" rejected       {d['rejected']:,}")
        for name, n in d["results"].items():
            click.echo(f" → {name}  {n:,} results")
    click.echo(f" late           {d['late']:,} records (dead-lettered, reason late)")
    click.echo(f" time           {d['seconds']:.2f} s")
    if inputs:
        click.echo(f" output         {out_dir}/")
