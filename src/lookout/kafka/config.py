"""One Kafka connection setting: the bootstrap servers and the user's librdkafka properties
(security, group id, tuning), parsed once from `--kafka-config KEY=VALUE` and shared by every
client lookout builds (source, sink, `ship`, `produce`/`consume`, Spark).

Guarantee: secret properties (passwords, private keys, OAuth secrets) are never shown: `repr`,
`str` and `redacted()` replace their values, and a malformed `--kafka-config` argument that looks
secret is not echoed back. Everything that logs or prints a connection goes through those.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from lookout.kafka.errors import KafkaConfigError
from lookout.kafka.health import BrokerHealth
from lookout.keyvalue import REDACTED, parse_pairs

# librdkafka properties whose values are secrets; any key naming a password, secret, token or a
# private key is treated the same (see _is_secret), so new ones are covered too.
SECRET_KEYS = frozenset(
    {
        "sasl.password",
        "ssl.key.password",
        "ssl.keystore.password",
        "ssl.key.pem",
        "ssl_key",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.config",
        "sasl.kerberos.keytab",
    }
)
_SECRET_WORDS = ("password", "secret", "token", "jaas", "private", "key.pem", "keytab")


def _is_secret(key: str) -> bool:
    k = key.strip().lower()
    return k in SECRET_KEYS or any(w in k for w in _SECRET_WORDS)


def parse_properties(kvs: Iterable[str]) -> dict[str, str]:
    """`KEY=VALUE` strings → librdkafka properties. A malformed one raises KafkaConfigError (also a
    ValueError) that names it, unless it looks like it holds a secret."""
    return parse_pairs(kvs, "--kafka-config", _is_secret, KafkaConfigError)


@dataclass(frozen=True, repr=False)
class KafkaConnection:
    """Where the brokers are and how to talk to them. `health` is shared by every client built
    from this connection, so an outage is reported once however many clients notice it."""

    bootstrap: str
    properties: Mapping[str, str] = field(default_factory=dict)
    health: BrokerHealth = field(default_factory=BrokerHealth, compare=False)

    def __post_init__(self) -> None:
        if not self.bootstrap or not self.bootstrap.strip():
            raise KafkaConfigError("Kafka bootstrap servers must not be empty")
        object.__setattr__(self, "properties", MappingProxyType(dict(self.properties)))

    @classmethod
    def from_options(cls, bootstrap: str, kafka_config: Iterable[str] = ()) -> KafkaConnection:
        """From the command line: `--kafka BOOTSTRAP` and repeated `--kafka-config KEY=VALUE`."""
        return cls(bootstrap, parse_properties(kafka_config))

    @classmethod
    def from_spark_options(cls, options: Mapping[str, str]) -> KafkaConnection:
        """From a Spark data source's options: `bootstrap.servers` and `kafka.`-prefixed properties."""
        props = {k[len("kafka.") :]: v for k, v in options.items() if k.startswith("kafka.")}
        return cls(options["bootstrap.servers"], props)

    def without(self, *keys: str) -> KafkaConnection:
        """The same connection (and health) minus some user properties (e.g. a group id set apart)."""
        return KafkaConnection(self.bootstrap, {k: v for k, v in self.properties.items() if k not in keys}, self.health)

    def client_config(self, quiet: bool = True, **defaults: Any) -> dict[str, Any]:
        """librdkafka settings: `defaults` first, then the user's properties (they win).

        quiet: librdkafka's own log is kept at CRITICAL (it would print a socket error per retry)
        and its errors go to `health`, which says once per outage that the broker is unreachable."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap}
        if quiet:
            client_log = logging.getLogger("lookout.kafka.client")
            if client_log.level == logging.NOTSET:
                client_log.setLevel(logging.CRITICAL)
            health, bootstrap = self.health, self.bootstrap
            conf.update(
                {"logger": client_log, "log.connection.close": False, "error_cb": lambda err: health.error(err, bootstrap)}
            )
        conf.update(defaults)
        conf.update(self.properties)
        return conf

    def redacted(self) -> dict[str, str]:
        """The properties with secret values replaced: safe to log or print."""
        return {k: REDACTED if _is_secret(k) else v for k, v in self.properties.items()}

    def secret_values(self) -> list[str]:
        """The values `redacted()` hides: for scrubbing text this connection did not build (a
        broker's or librdkafka's error message) before it is shown."""
        return [v for k, v in self.properties.items() if _is_secret(k) and v]

    def __repr__(self) -> str:
        return f"KafkaConnection(bootstrap={self.bootstrap!r}, properties={self.redacted()!r})"

    __str__ = __repr__
