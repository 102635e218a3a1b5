"""`KEY=VALUE` option arguments (`--kafka-config`, Spark's `--conf`) parsed one way.

Guarantee: a malformed argument raises a `ConfigError` that names the option and the argument's
position, and never echoes an argument that `is_secret` says may hold a secret. Keys and values
are stripped of surrounding white space (`a = b` is `a=b`); everything after the first `=` is the
value, so a value may contain `=`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from lookout.errors import ConfigError

REDACTED = "<redacted>"


def parse_pairs(
    pairs: Iterable[str],
    option: str,
    is_secret: Callable[[str], bool] = lambda _: False,
    error: type[ConfigError] = ConfigError,
) -> dict[str, str]:
    """`KEY=VALUE` strings → a dict, in order (a repeated key: the last one wins)."""
    out: dict[str, str] = {}
    for i, kv in enumerate(pairs, 1):
        k, sep, v = kv.partition("=")
        if not sep or not k.strip():
            shown = REDACTED if is_secret(kv) else repr(kv)
            raise error(f"{option} {shown} (argument {i}): expected KEY=VALUE")
        out[k.strip()] = v.strip()
    return out
