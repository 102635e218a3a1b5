"""The Kafka layer (`lookout.kafka`): one connection parsed once, secrets never shown, broker health
per connection (no module global), topics created idempotently, typed errors. Clients talk to
the real test broker (Tansu) or to a closed loopback port; nothing is mocked."""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from lookout.errors import ConfigError, DeliveryError, LookoutError, StateError
from lookout.kafka.admin import ensure_topics, topic_partitions
from lookout.kafka.clients import consumer_config, producer_config
from lookout.kafka.config import REDACTED, KafkaConnection, parse_properties
from lookout.kafka.errors import CheckpointMismatch, Fenced, KafkaConfigError, KafkaDeliveryError
from tests.fixtures.ports import free_port

SECRET = "hunter2-s3cr3t"


def test_properties_are_parsed_once_and_stripped() -> None:
    conn = KafkaConnection.from_options("127.0.0.1:9092", ["security.protocol = SASL_SSL", "client.id=a=b"])
    assert dict(conn.properties) == {"security.protocol": "SASL_SSL", "client.id": "a=b"}
    with pytest.raises(TypeError):
        conn.properties["x"] = "y"  # type: ignore[index]  # read-only: one parse, shared by every client


@pytest.mark.parametrize("bad", ["noequals", "=value", " =value"])
def test_malformed_property_is_a_config_error(bad: str) -> None:
    with pytest.raises(KafkaConfigError) as e:
        parse_properties(["acks=all", bad])
    assert isinstance(e.value, ConfigError) and isinstance(e.value, ValueError)
    assert "argument 2" in str(e.value)


@pytest.mark.parametrize(
    "key",
    [
        "sasl.password",
        "ssl.key.password",
        "ssl.keystore.password",
        "ssl.key.pem",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.config",
        "SASL.PASSWORD",
    ],
)
def test_secrets_never_appear_in_repr_str_or_redacted(key: str) -> None:
    conn = KafkaConnection.from_options("127.0.0.1:9092", [f"{key}={SECRET}", "sasl.username=lookout"])
    for text in (repr(conn), str(conn), f"{conn}", str(conn.redacted())):
        assert SECRET not in text and REDACTED in text and "lookout" in text, text
    assert conn.client_config()[key] == SECRET  # ... but the client does get it
    assert conn.secret_values() == [SECRET]  # exactly the hidden values, for scrubbing server messages


def test_a_malformed_secret_argument_is_not_echoed() -> None:
    with pytest.raises(KafkaConfigError) as e:
        parse_properties([f"sasl.password {SECRET}"])  # forgot the '='
    assert SECRET not in str(e.value) and REDACTED in str(e.value)


def test_cli_usage_error_hides_the_secret(lookout_cmd: list[str], tmp_path: Path) -> None:
    for cmd in (
        ["run", "--kafka", "127.0.0.1:1", "--duration", "1", "--state-dir", str(tmp_path / "s")],
        ["produce", "--kafka", "127.0.0.1:1", "--count", "1"],
    ):
        p = subprocess.run(
            [*lookout_cmd, *cmd, "--kafka-config", "sasl.username=u", "--kafka-config", f"sasl.password {SECRET}"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert p.returncode == 2, (cmd, p.stderr)
        assert "expected KEY=VALUE" in p.stderr and SECRET not in p.stderr + p.stdout, p.stderr


def test_user_properties_win_over_lookout_defaults() -> None:
    conn = KafkaConnection.from_options("b:1", ["linger.ms=5", "group.id=mine"])
    prod = producer_config(conn, **{"linger.ms": 20})
    assert prod["linger.ms"] == "5" and prod["acks"] == "all" and prod["enable.idempotence"] is True
    assert consumer_config(conn, "lookout-x")["group.id"] == "mine"
    assert consumer_config(conn.without("group.id"), "lookout-x")["group.id"] == "lookout-x"
    assert conn.without("group.id").health is conn.health  # same connection, same outage report
    plain = consumer_config(conn, "g", quiet=False)
    assert "error_cb" not in plain and "logger" not in plain


def test_spark_options_become_a_connection() -> None:
    conn = KafkaConnection.from_spark_options(
        {
            "bootstrap.servers": "b:1",
            "topic": "t",
            "kafka.sasl.password": SECRET,
            "kafka.security.protocol": "SASL_SSL",
            "startingOffsets": "earliest",
        }
    )
    assert conn.bootstrap == "b:1"
    assert dict(conn.properties) == {"sasl.password": SECRET, "security.protocol": "SASL_SSL"}
    assert SECRET not in repr(conn)


def test_empty_bootstrap_is_a_config_error() -> None:
    with pytest.raises(KafkaConfigError):
        KafkaConnection("  ")


def test_health_belongs_to_its_connection(kafka_bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    """A client of a connection to a dead port marks that connection down, once; a connection to the
    live broker in the same process stays up (there is no module-wide health any more)."""
    from confluent_kafka import Producer

    dead = KafkaConnection(f"127.0.0.1:{free_port()}")
    live = KafkaConnection(kafka_bootstrap)
    caplog.set_level(logging.WARNING, logger="lookout.kafka")
    p_dead = Producer(producer_config(dead))
    p_live = Producer(producer_config(live))
    p_live.produce("health-probe", b"x")
    assert p_live.flush(15) == 0
    deadline = time.monotonic() + 15
    while not dead.health.down and time.monotonic() < deadline:
        p_dead.poll(0.2)
    assert dead.health.down and not live.health.down
    said = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(said) == 1 and dead.bootstrap in said[0], said
    p_dead.flush(0)


def test_ensure_topics_creates_once_and_describes(kafka_bootstrap: str, kafka_topic: Any) -> None:
    from confluent_kafka import Consumer

    conn = KafkaConnection(kafka_bootstrap)
    a, b = kafka_topic("adm"), kafka_topic("adm")
    assert ensure_topics(conn, {a: 2, b: 1}) == {a: 2, b: 1}
    assert ensure_topics(conn, {a: 5}) == {a: 2}  # existing topics are left as they are
    c = Consumer(consumer_config(conn, "lookout-test"))
    try:
        assert topic_partitions(c, a) == [0, 1]
        assert topic_partitions(c, kafka_topic("missing")) is None
    finally:
        c.close()


def test_ensure_topics_gives_up_when_told(caplog: pytest.LogCaptureFixture) -> None:
    """Against a closed port it retries, then raises once `give_up_after` has passed (Spark's driver
    must not hang forever); without a limit it would keep retrying (the run loop's behaviour)."""
    conn = KafkaConnection(f"127.0.0.1:{free_port()}")
    t0 = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017 - librdkafka's KafkaException, re-raised as is
        ensure_topics(conn, {"t": 1}, give_up_after=2.0)
    assert 2.0 <= time.monotonic() - t0 < 30


def test_errors_are_typed_by_kind() -> None:
    assert issubclass(Fenced, StateError) and issubclass(CheckpointMismatch, StateError)
    assert issubclass(KafkaDeliveryError, DeliveryError)
    assert all(issubclass(e, LookoutError) for e in (Fenced, CheckpointMismatch, KafkaDeliveryError, KafkaConfigError))
