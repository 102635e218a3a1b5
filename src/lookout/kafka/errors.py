"""Kafka failures, typed: each is also one of the library's kinds (`lookout.errors`), so the CLI
maps it to a message and an exit code without knowing Kafka."""

from __future__ import annotations

from lookout.errors import ConfigError, DeliveryError, InputError, LookoutError, ServiceUnavailable, StateError


class KafkaLayerError(LookoutError):
    """Base of the Kafka layer's errors."""


class KafkaConfigError(KafkaLayerError, ConfigError):
    """A `--kafka-config` property or connection setting is invalid."""


class KafkaDeliveryError(KafkaLayerError, DeliveryError):
    """The broker refused a message for good (or a flush was abandoned); nothing past it is committed."""


class ConsumerFailed(KafkaLayerError, ServiceUnavailable):
    """librdkafka reported a fatal consumer error; the client cannot go on."""


class Fenced(KafkaLayerError, StateError):
    """Another instance made progress while this one had lost the input lock."""


class CheckpointMismatch(KafkaLayerError, StateError):
    """The checkpoint in the state directory belongs to another topic."""


class TopicNotFound(KafkaLayerError, InputError):
    """The topic to read does not exist."""
