"""The command line: one module per command group (`run`: run and replay, `query`: count, search
and serve, `kafka`: produce and consume, `nginx`: nginx-config and ship, `spark`, `check`, `rules`,
`generate`, `deploy`: kibana-setup), options shared by several commands in `options`, the error →
exit-code mapping in `errors`. `root` holds the `lookout` group and registers every command.

Each command parses its options and calls the library; nothing else lives here.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """`lookout.cli.main`, the group (the console script's entry point), imported on first use so
    that importing one command module does not import all of them."""
    if name == "main":
        from lookout.cli.root import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
