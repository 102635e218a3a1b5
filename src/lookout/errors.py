"""The library's exceptions. Library code raises these (never `SystemExit`); the command line
maps them to a message and an exit code (`lookout.cli.errors`), other callers catch them by kind.

    LookoutError
    ├── ConfigError         bad settings or options: the user must change the command (exit 2)
    ├── StateError          the state directory or a checkpoint does not fit this run
    │   └── InputChanged    the input is not the one the checkpoint was taken from (exit 2)
    ├── InputError          input that cannot be read at all (a missing file, a missing topic)
    ├── ServiceUnavailable  a server stayed unreachable or stopped answering
    └── DeliveryError       a server refused data for good; nothing past it was committed
"""

from __future__ import annotations


class LookoutError(Exception):
    """Base of every error lookout raises on purpose; its message is meant for the user."""


class ConfigError(LookoutError, ValueError):
    """Invalid settings or options (a ValueError too, so option validation treats it as one)."""


class StateError(LookoutError):
    """The saved state (checkpoint, position, lock) does not allow going on safely."""


class InputChanged(StateError):
    """The input is not the one the checkpoint was taken from (a topic re-created, a log shorter
    than the checkpointed offsets) or it went away (topic deleted). The run stops after
    committing what it processed; the command has to change (`--on-reset`, another state dir)."""


class InputError(LookoutError):
    """The input cannot be read at all (as opposed to a bad record, which is dead-lettered)."""


class ServiceUnavailable(LookoutError):
    """A server lookout depends on is unreachable or gave up answering."""


class DeliveryError(LookoutError):
    """A server refused data for good; the run stops without committing past it."""
