"""`--http HOST:PORT | off`: parsing and the loopback-or-token rule."""

from __future__ import annotations

import ipaddress


class HttpConfigError(ValueError):
    """A bad --http address, or a non-loopback one without a token (exit 2)."""


class HttpBindError(RuntimeError):
    """The address could not be bound (in use, not ours); `run` stops at start with exit 2."""


def parse_bind(value: str | None) -> tuple[str, int] | None:
    """`127.0.0.1:8080`, `[::1]:8080`, `localhost:9000` → (host, port); `off`/empty → None."""
    if value is None or value.strip().lower() in ("", "off", "none", "false", "no"):
        return None
    pair = split_host_port(value)
    if pair is None or pair[1] == 0:
        raise HttpConfigError(f"--http {value!r}: expected HOST:PORT (e.g. 127.0.0.1:8080) or off")
    return pair


def split_host_port(value: str) -> tuple[str, int] | None:
    """`127.0.0.1:8080`, `[::1]:8080`, `localhost:0` → (host, port), or None when it is not one
    (the port ASCII digits below 65536: `int()` of a 5,000-digit string would raise)."""
    v = value.strip()
    if v.startswith("["):
        host, sep, port = v[1:].partition("]:")
    else:
        host, sep, port = v.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit() and len(port) <= 5) or not int(port) < 65536:
        return None
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_token(bind: tuple[str, int] | None, token: str | None) -> None:
    if bind is not None and not is_loopback(bind[0]) and not token:
        raise HttpConfigError(
            f"--http {bind[0]}:{bind[1]} is not a loopback address: it needs --http-token TOKEN "
            "(or LOOKOUT_HTTP_TOKEN); requests then need 'Authorization: Bearer TOKEN'"
        )
