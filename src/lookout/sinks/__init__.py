"""Where results, dead letters and raw records go: thin adapters behind one interface (base.Sink)."""

from lookout.sinks.base import Sink, SinkSet

__all__ = ["Sink", "SinkSet"]
