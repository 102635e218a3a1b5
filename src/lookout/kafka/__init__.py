"""The Kafka layer every Kafka user in lookout shares: one typed connection (`config`), admin
(`admin`: topics), broker health and retry (`health`), the instance lock (`lock`), producer and
consumer settings (`clients`) and typed errors (`errors`). confluent-kafka is imported only
inside functions, so `lookout` works without the kafka extra until Kafka is used."""

from lookout.kafka.config import KafkaConnection, parse_properties
from lookout.kafka.health import BrokerHealth

__all__ = ["BrokerHealth", "KafkaConnection", "parse_properties"]
