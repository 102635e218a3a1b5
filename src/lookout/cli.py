"""Command line: each command parses its arguments and calls the library. Nothing else lives here."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from lookout.cli_errors import EXIT_USAGE, LookoutGroup
from lookout.rules import RulesError, RuleSet, load_rules, parse_duration

EXIT_INPUT_DAMAGED = 3  # replay: some input was damaged; everything readable was processed


def _load(rules_path: str | None, lateness: str | None) -> RuleSet:
    try:
        rs = load_rules(rules_path)
        if lateness is not None:
            rs = rs.with_lateness(parse_duration(lateness))
        return rs
    except (RulesError, ValueError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)


rules_option = click.option(
    "--rules",
    "rules_path",
    type=click.Path(dir_okay=False),
    envvar="LOOKOUT_RULES",
    help="Rules file (YAML). Default: the built-in rules (the seed's four goals).",
)
lateness_option = click.option(
    "--lateness", default=None, metavar="DURATION", help="Allowed lateness, e.g. 10s (overrides the rules file)."
)


def _es_env(ctx: click.Context, param: click.Parameter, value: object) -> None:
    """An --es-* option sets the LOOKOUT_ES_* variable the Elasticsearch sink reads (replay and
    run hand the sink only the URL; see docs/elasticsearch.md)."""
    if value is not None and value is not False:
        import os

        os.environ[str(param.envvar)] = "true" if value is True else str(value)


def es_options(f):  # noqa: ANN001, ANN201 - a click decorator
    """Elasticsearch index, results, auth and TLS options (each also an environment variable)."""
    for name, env, kw in reversed(
        [
            ("--es-index", "LOOKOUT_ES_INDEX", {"metavar": "NAME", "help": "Index for raw records [default: test-inter]."}),
            (
                "--es-daily",
                "LOOKOUT_ES_DAILY",
                {
                    "is_flag": True,
                    "default": None,
                    "help": "Daily indices NAME-YYYY.MM.DD (by event time) behind the alias NAME.",
                },
            ),
            (
                "--es-results",
                "LOOKOUT_ES_RESULTS",
                {"is_flag": True, "default": None, "help": "Also index each rule's results into lookout-<rule>."},
            ),
            ("--es-user", "LOOKOUT_ES_USER", {"help": "Basic-auth user (or user:password@ in the URL)."}),
            ("--es-password", "LOOKOUT_ES_PASSWORD", {"help": "Basic-auth password."}),
            ("--es-api-key", "LOOKOUT_ES_API_KEY", {"help": "API key (base64 token, or id:key)."}),
            ("--es-ca-certs", "LOOKOUT_ES_CA_CERTS", {"type": click.Path(dir_okay=False), "help": "CA bundle for https."}),
            (
                "--es-insecure",
                "LOOKOUT_ES_INSECURE",
                {"is_flag": True, "default": None, "help": "Do not verify the server's TLS certificate."},
            ),
        ]
    ):
        f = click.option(name, envvar=env, expose_value=False, callback=_es_env, **kw)(f)
    return f


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """A YAML settings file becomes click's default_map: per command, option name -> value;
    a `common:` section applies to every command that has the option. Precedence: command line,
    then environment (LOOKOUT_KAFKA, ...), then this file, then built-in defaults."""
    if not value:
        return
    from lookout.rules import safe_yaml

    try:
        data = safe_yaml(Path(value).read_text(), value) or {}
    except (OSError, UnicodeDecodeError, RulesError) as e:
        raise click.BadParameter(str(e)) from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{value}: expected a mapping of command: {{option: value}}")
    common = data.pop("common", None) or {}
    group = ctx.command
    assert isinstance(group, click.Group)
    default_map: dict[str, dict] = {}

    def key(k: str) -> str:
        return k.lstrip("-").replace("-", "_")

    for name, cmd in group.commands.items():
        # an option is known by its flag (`out`, `idle-timeout`) or its parameter name (`out_dir`)
        names = {key(o): p.name for p in cmd.params for o in [*p.opts, p.name or ""] if o}
        section = data.get(name) or {}
        unknown = {k for k in section if key(k) not in names}
        if unknown:
            raise click.BadParameter(f"{value}: {name}: unknown option(s) {', '.join(sorted(unknown))}")
        merged = {names[key(k)]: v for k, v in common.items() if key(k) in names}
        merged.update({names[key(k)]: v for k, v in section.items()})
        if merged:
            default_map[name] = merged
    stray = set(data) - set(group.commands)
    if stray:
        raise click.BadParameter(f"{value}: unknown command section(s) {', '.join(sorted(stray))}")
    ctx.default_map = default_map


@click.group(cls=LookoutGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="lookout")
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False),
    envvar="LOOKOUT_CONFIG",
    is_eager=True,
    expose_value=False,
    callback=_load_config,
    help="Settings file (YAML): `common:` and per-command sections of option: value.",
)
def main() -> None:
    """lookout: anomaly alerts and per-minute analytics from NGINX access-log streams."""
    from lookout.safe_text import guard_last_resort

    guard_last_resort()


@main.command()
@rules_option
@click.option("--check", is_flag=True, help="Only validate; print nothing on success.")
def rules(rules_path: str | None, check: bool) -> None:
    """Print the effective rules (validated)."""
    rs = _load(rules_path, None)
    if not check:
        click.echo(rs.to_yaml(include_notify=True), nl=False)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@rules_option
@lateness_option
@click.option(
    "--out",
    "out_dir",
    default="lookout-out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory for <rule>.jsonl and rejected.jsonl.",
)
@click.option(
    "--store",
    "store_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Also keep the raw records in an embedded store (Parquet) here, for `lookout count/search`.",
)
@click.option(
    "--elasticsearch",
    "es_url",
    envvar="LOOKOUT_ELASTICSEARCH",
    default=None,
    help="Also index every valid record into Elasticsearch/OpenSearch at this URL.",
)
@es_options
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--notify", is_flag=True, help="Send the rules file's notifications (a backfill does not by default).")
@click.option(
    "--state-dir",
    default=".lookout-state",
    show_default=True,
    type=click.Path(file_okay=False),
    help="With --notify: where the notification outbox lives.",
)
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
    from lookout.replay import replay as run_replay
    from lookout.sinks.files import OutputUnwritable
    from lookout.sources.files import InputUnreadable

    rs = _load(rules_path, lateness)
    show = sys.stderr.isatty() if progress is None else progress
    try:
        outcome = run_replay(
            list(inputs),
            rs,
            Path(out_dir),
            store_dir=store_dir,
            es_url=es_url,
            progress=show,
            notify_dir=Path(state_dir) if notify else None,
        )
    except (InputUnreadable, OutputUnwritable) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    from lookout.live import print_summary

    print_summary(outcome.stats, out_dir, as_json=as_json)
    from lookout.safe_text import plain

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
        sys.exit(1)


@main.command()
@rules_option
@lateness_option
@click.option(
    "--out",
    "out_dir",
    default="lookout-out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory results are appended to.",
)
@click.option(
    "--state-dir",
    default=".lookout-state",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where checkpoints, positions and the embedded store live.",
)
@click.option("--rate", default=100.0, show_default=True, help="Generator: records per second.")
@click.option("--seed", type=int, default=None, help="Generator: random seed.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option(
    "--tail",
    "tail_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Follow an nginx access log instead of generating records.",
)
@click.option(
    "--rotate-wait",
    default="5m",
    show_default=True,
    help="--tail: keep reading a rotated log (beside the new one) until it has been idle this long.",
)
@click.option(
    "--backfill", is_flag=True, help="--tail, first start: read the rotated logs beside it first (oldest first, .gz too)."
)
@click.option("--log-format", type=click.Choice(["auto", "json", "combined"]), default="auto", show_default=True)
@click.option(
    "--host", "log_host", default=None, help="Host for combined-format lines (they carry none). Default: this machine's name."
)
@click.option("--geoip", default=None, type=click.Path(dir_okay=False), help="MaxMind-format country database.")
@click.option("--kafka", "kafka", envvar="LOOKOUT_KAFKA", default=None, help="Kafka bootstrap servers.")
@click.option("--topic", default="test-inter", show_default=True, help="Kafka input topic.")
@click.option(
    "--kafka-config",
    "kafka_config",
    multiple=True,
    metavar="KEY=VALUE",
    help="librdkafka property passed through (repeatable), e.g. security.protocol=SASL_SSL.",
)
@click.option("--partitions", default=3, show_default=True, help="Partitions for topics lookout creates.")
@click.option(
    "--on-reset",
    type=click.Choice(["fail", "earliest"]),
    default="fail",
    show_default=True,
    help="Kafka input re-created or shorter than the checkpoint: stop (exit 2), or read it from its beginning.",
)
@click.option(
    "--idle-timeout",
    default="30s",
    show_default=True,
    help="Once input is quiet this long, a window closes when the wall clock is lateness past its end.",
)
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
@click.option(
    "--elasticsearch",
    "es_url",
    envvar="LOOKOUT_ELASTICSEARCH",
    default=None,
    help="Index every valid record into Elasticsearch/OpenSearch at this URL.",
)
@es_options
@click.option("--view/--no-view", default=None, help="Live terminal view (default: when stdout is a terminal).")
@click.option(
    "--http",
    "http",
    envvar="LOOKOUT_HTTP",
    default="127.0.0.1:8080",
    show_default=True,
    metavar="HOST:PORT|off",
    help="Serve /metrics (Prometheus) and /healthz here; a non-loopback address needs --http-token.",
)
@click.option(
    "--http-token",
    "http_token",
    envvar="LOOKOUT_HTTP_TOKEN",
    default=None,
    help="Bearer token required by every HTTP path but /healthz.",
)
def run(**opts: object) -> None:
    """Run the pipeline: generated records by default, or --tail a log, or --kafka."""
    from lookout.runner import RunOptions, run_pipeline
    from lookout.sinks.files import OutputUnwritable, ensure_writable_dir

    rs = _load(opts.pop("rules_path"), opts.pop("lateness"))  # type: ignore[arg-type]
    view = opts.pop("view")
    if view is None:
        view = sys.stdout.isatty()
    from lookout.statelock import StateDirBusy

    try:
        ro = RunOptions(**opts, view=bool(view))  # type: ignore[arg-type]
    except ValueError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    from lookout import supervise
    from lookout.checkpoint import CheckpointError
    from lookout.http import HttpBindError

    try:
        ensure_writable_dir(ro.out_dir, "--out")
        ensure_writable_dir(ro.state_dir, "--state-dir")
        from lookout.cli_exit import hard_exit

        if ro.kafka and not supervise.is_child():  # a librdkafka crash must still leave a line
            # (the parent holds nothing to clean up: no interpreter shutdown, which takes a second
            # on a loaded machine, after the child's bounded stop)
            hard_exit(supervise.run_supervised(f"reading kafka topic {ro.topic}"))

        # InputChanged (the Kafka log is not the checkpoint's) reaches LookoutGroup: message, exit 2
        code = run_pipeline(rs, ro, exit_now=hard_exit)
    except (StateDirBusy, OutputUnwritable, HttpBindError, CheckpointError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    sys.exit(code)


def _store_dir(state_dir: str, store_dir: str | None) -> Path:
    """The store a query reads; a state dir or store that does not exist is an error (exit 2), not 0 records."""
    from lookout import store

    try:
        if store_dir:
            store.require_dir(Path(store_dir), "--store")
            return Path(store_dir)
        store.require_dir(Path(state_dir), "--state-dir")
    except store.StoreMissing as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    return Path(state_dir) / "store"


@main.command()
@click.option("--state-dir", default=".lookout-state", show_default=True, type=click.Path(file_okay=False))
@click.option(
    "--store", "store_dir", default=None, type=click.Path(file_okay=False), help="Store directory (default: STATE_DIR/store)."
)
@click.option("--elasticsearch", "es_url", envvar="LOOKOUT_ELASTICSEARCH", default=None, help="Ask Elasticsearch instead.")
@click.option("--index", default="test-inter", show_default=True)
@click.option("--since", default=None, help="Only records at or after this time (ISO-8601 or epoch seconds; embedded store).")
@click.option("--until", default=None, help="Only records before this time (embedded store).")
def count(state_dir: str, store_dir: str | None, es_url: str | None, index: str, since: str | None, until: str | None) -> None:
    """Count the raw records stored (the embedded answer to `curl …/test-inter/_count`)."""
    from lookout import store

    if es_url:
        from lookout.sinks.elasticsearch import es_count

        n = es_count(es_url, index)
    else:
        try:
            q = store.Query.from_options(since=since, until=until)
        except ValueError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_USAGE)
        n = store.count(_store_dir(state_dir, store_dir), q.since_us, q.until_us)
    click.echo(orjson.dumps({"count": n}).decode())


@main.command()
@click.option("--state-dir", default=".lookout-state", show_default=True, type=click.Path(file_okay=False))
@click.option("--store", "store_dir", default=None, type=click.Path(file_okay=False))
@click.option("--elasticsearch", "es_url", envvar="LOOKOUT_ELASTICSEARCH", default=None, help="Ask Elasticsearch instead.")
@click.option("--index", default="test-inter", show_default=True)
@click.option("--client-ip", default=None)
@click.option("--host", default=None)
@click.option("--country", default=None)
@click.option("--method", default=None)
@click.option("--status", default=None, help="A status, a range (400-499) or a class (4xx).")
@click.option("--since", default=None, help="ISO-8601 time or epoch seconds.")
@click.option("--until", default=None, help="ISO-8601 time or epoch seconds.")
@click.option(
    "--limit", default=20, show_default=True, type=click.IntRange(1, 100_000), help="At most this many records (1-100,000)."
)
def search(state_dir: str, store_dir: str | None, es_url: str | None, index: str, limit: int, **filters: str | None) -> None:
    """Find stored raw records (newest first), one JSON object per line."""
    from lookout import store

    try:
        query = store.Query.from_options(**filters)
    except ValueError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    if es_url:
        from lookout.sinks.elasticsearch import es_search

        rows = es_search(es_url, index, query, limit)
    else:
        rows = store.search(_store_dir(state_dir, store_dir), query, limit)
    from lookout.safe_text import json_line

    for r in rows:
        click.echo(json_line(orjson.dumps(r).decode()))


@main.command()
@click.argument("count", type=int)
@click.option("--out", "out_path", default="-", show_default=True, help="File to write (default stdout).")
@click.option("--rate", default=100.0, show_default=True, help="Records per second of event time.")
@click.option("--start", default=1_659_509_400.0, show_default=True, help="Event time of the first record (epoch s).")
@click.option("--seed", default=7, show_default=True)
def generate(count: int, out_path: str, rate: float, start: float, seed: int) -> None:
    """Write COUNT seed-format records as NDJSON (test and benchmark input)."""
    from lookout.sources.generator import generate_file

    # stdout as the shell opened it: `>> file` appends (opening /dev/stdout anew would truncate)
    generate_file(sys.stdout.buffer if out_path == "-" else out_path, count, rate=rate, start=start, seed=seed)


# Commands of the integrations live beside their own code's owners; each adds itself to `main`.
from lookout import cli_check, cli_dashboard, cli_deploy, cli_kafka, cli_nginx, cli_spark  # noqa: E402,F401  # noqa: E402,F401  (lookout check, serve, kibana-setup)
