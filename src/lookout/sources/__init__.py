"""Where input lines come from: the generator, files (and tails), Kafka. Each yields `Chunk`s."""

from lookout.sources.base import Chunk

__all__ = ["Chunk"]
