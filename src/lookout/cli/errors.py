"""How the command line reports the library's errors: `error: <message>` on stderr and an exit
code by kind. The library raises typed exceptions (`lookout.errors`) and never decides exit codes.

Exit codes: 0 done, 1 a failure at run time (a server refused data, the state does not fit, the
input cannot be read), 2 a usage or configuration error (the command has to change).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click

from lookout.errors import ConfigError, InputChanged, LookoutError
from lookout.safe_text import plain

EXIT_FAILURE = 1
EXIT_USAGE = 2

# first match wins; anything else that is a LookoutError exits EXIT_FAILURE
# (InputChanged: the run must be started again with --on-reset or another state dir)
EXIT_CODES: tuple[tuple[type[LookoutError], int], ...] = ((ConfigError, EXIT_USAGE), (InputChanged, EXIT_USAGE))


def exit_code(e: LookoutError) -> int:
    """The process exit code for a library error."""
    return next((code for kind, code in EXIT_CODES if isinstance(e, kind)), EXIT_FAILURE)


class LookoutGroup(click.Group):
    """The `lookout` group: a LookoutError from any command becomes a message and an exit code
    (no traceback: the message is written for the user)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LookoutError as e:
            click.echo(plain(f"error: {e}"), err=True)  # messages may quote input (topic names, server answers)
            ctx.exit(exit_code(e))


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """`error: <message>` on stderr, then exit (a usage error unless said otherwise)."""
    click.echo(f"error: {message}", err=True)
    raise SystemExit(code)


@contextmanager
def usage_errors(*kinds: type[BaseException]) -> Iterator[None]:
    """Errors of these kinds (the user has to change the command) become `error: …` and exit 2."""
    try:
        yield
    except kinds as e:
        fail(str(e))
