"""Options more than one command takes, declared once: each decorator is the option as users know it
(name, default, environment variable); where commands word its help differently, the help is a
parameter, so every command's `--help` reads as it always has."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from lookout.cli.errors import usage_errors
from lookout.rules import RulesError, RuleSet, load_rules, parse_duration

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]


def stack(*decorators: Decorator) -> Decorator:
    """Several option decorators as one, in the order they are listed (that is their --help order)."""

    def apply(f: F) -> F:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


# --- rules -------------------------------------------------------------------------------------

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


def ruleset(rules_path: str | None, lateness: str | None) -> RuleSet:
    """The rules `--rules` and `--lateness` name; invalid ones are a usage error (exit 2)."""
    with usage_errors(RulesError, ValueError):
        rs = load_rules(rules_path)
        if lateness is not None:
            rs = rs.with_lateness(parse_duration(lateness))
        return rs


# --- files and the store -----------------------------------------------------------------------


def out_option(help: str) -> Decorator:
    return click.option("--out", "out_dir", default="lookout-out", show_default=True, type=click.Path(file_okay=False), help=help)


def state_dir_option(help: str | None = None, default: str = ".lookout-state") -> Decorator:
    return click.option("--state-dir", default=default, show_default=True, type=click.Path(file_okay=False), help=help)


def store_option(help: str | None = None) -> Decorator:
    return click.option("--store", "store_dir", default=None, type=click.Path(file_okay=False), help=help)


def elasticsearch_option(help: str) -> Decorator:
    return click.option("--elasticsearch", "es_url", envvar="LOOKOUT_ELASTICSEARCH", default=None, help=help)


def stored_records_options(store_help: str | None = None) -> Decorator:
    """Where `count` and `search` find the raw records: the embedded store or Elasticsearch."""
    return stack(
        state_dir_option(),
        store_option(store_help),
        elasticsearch_option("Ask Elasticsearch instead."),
        click.option("--index", default="test-inter", show_default=True),
    )


def _es_env(ctx: click.Context, param: click.Parameter, value: object) -> None:
    """An --es-* option sets the LOOKOUT_ES_* variable the Elasticsearch sink reads (replay and
    run hand the sink only the URL; see docs/elasticsearch.md)."""
    if value is not None and value is not False:
        os.environ[str(param.envvar)] = "true" if value is True else str(value)


_ES_OPTIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("--es-index", "LOOKOUT_ES_INDEX", {"metavar": "NAME", "help": "Index for raw records [default: test-inter]."}),
    (
        "--es-daily",
        "LOOKOUT_ES_DAILY",
        {"is_flag": True, "default": None, "help": "Daily indices NAME-YYYY.MM.DD (by event time) behind the alias NAME."},
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

# Elasticsearch index, results, auth and TLS options (each also an environment variable)
es_options = stack(*(click.option(name, envvar=env, expose_value=False, callback=_es_env, **kw) for name, env, kw in _ES_OPTIONS))


# --- Kafka -------------------------------------------------------------------------------------

KAFKA_HELP = "Kafka bootstrap servers."


def kafka_option(dest: str = "bootstrap", required: bool = True, help: str = KAFKA_HELP, metavar: str | None = None) -> Decorator:
    # (no default at all when required: click 8.5 takes an explicit default=None as a value given)
    optional: dict[str, Any] = {} if required else {"default": None}
    return click.option("--kafka", dest, envvar="LOOKOUT_KAFKA", required=required, metavar=metavar, help=help, **optional)


kafka_config_option = click.option(
    "--kafka-config",
    "kafka_config",
    multiple=True,
    metavar="KEY=VALUE",
    help="librdkafka property passed through (repeatable), e.g. security.protocol=SASL_SSL.",
)


def topic_option(help: str | None = "Kafka input topic.") -> Decorator:
    return click.option("--topic", default="test-inter", show_default=True, help=help)


def partitions_option(help: str = "Partitions if the topic has to be created.") -> Decorator:
    return click.option("--partitions", default=3, show_default=True, help=help)


def connection(bootstrap: str, kafka_config: tuple[str, ...]) -> Any:
    """`--kafka` and `--kafka-config` as one `KafkaConnection`; a malformed property is a usage error."""
    from lookout.kafka.config import KafkaConnection
    from lookout.kafka.errors import KafkaConfigError

    with usage_errors(KafkaConfigError):
        return KafkaConnection.from_options(bootstrap, kafka_config)


# --- nginx logs --------------------------------------------------------------------------------

# how `run --tail` and `ship` read an access log
log_format_options = stack(
    click.option("--log-format", type=click.Choice(["auto", "json", "combined"]), default="auto", show_default=True),
    click.option(
        "--host",
        "log_host",
        default=None,
        help="Host for combined-format lines (they carry none). Default: this machine's name.",
    ),
    click.option("--geoip", default=None, type=click.Path(dir_okay=False), help="MaxMind-format country database."),
)


def rotate_wait_option(help: str) -> Decorator:
    return click.option("--rotate-wait", default="5m", show_default=True, help=help)


# --- running -----------------------------------------------------------------------------------


def duration_option(help: str = "Stop after this many seconds.") -> Decorator:
    return click.option("--duration", type=float, default=None, help=help)


def idle_timeout_option(help: str) -> Decorator:
    return click.option("--idle-timeout", default="30s", show_default=True, help=help)


def json_option(help: str = "Print the summary as JSON.") -> Decorator:
    return click.option("--json", "as_json", is_flag=True, help=help)


def http_options(metavar: str, help: str, token_help: str) -> Decorator:
    """Where the HTTP server listens, and the token a non-loopback address needs."""
    return stack(
        click.option(
            "--http", "http", envvar="LOOKOUT_HTTP", default="127.0.0.1:8080", show_default=True, metavar=metavar, help=help
        ),
        click.option("--http-token", "http_token", envvar="LOOKOUT_HTTP_TOKEN", default=None, help=token_help),
    )
