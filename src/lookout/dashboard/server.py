"""`lookout serve`: the dashboard of a stopped run on its own uvicorn server.

Loopback by default; any other address needs a token, and then every path but the page shell
(`/`, `/static/…`: no data in them) needs `Authorization: Bearer TOKEN` (401 otherwise). The
page reads the token from its URL fragment (`#token=…`, never sent to a server or logged) and
sends it with every API call. The socket is bound before serving, so a busy port is an error
at start. (`lookout run --http` serves the same routes on the metrics server of issue 10.)
"""

from __future__ import annotations

import hmac
import socket
from collections.abc import Callable
from dataclasses import dataclass

from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from lookout.dashboard.app import dashboard_app
from lookout.dashboard.data import DashboardData
from lookout.http.bind import is_loopback, split_host_port

PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = frozenset({"/", "/healthz"})


class ServeError(ValueError):
    """A bad --http address, a non-loopback one without a token, or a port that cannot be bound."""


@dataclass(frozen=True)
class Bind:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


def parse_address(value: str) -> Bind:
    """`127.0.0.1:8080`, `[::1]:8080`, `localhost:0` → Bind."""
    pair = split_host_port(value)
    if pair is None:
        raise ServeError(f"--http {value!r}: expected HOST:PORT (e.g. 127.0.0.1:8080)")
    return Bind(*pair)


def check_token(bind: Bind, token: str | None) -> None:
    if not is_loopback(bind.host) and not token:
        raise ServeError(
            f"--http {bind.host}:{bind.port} is not a loopback address: it needs --http-token TOKEN "
            "(or LOOKOUT_HTTP_TOKEN); API requests then need 'Authorization: Bearer TOKEN'"
        )


class BearerAuth:
    """401 without the right bearer token, except for the page shell (constant-time compare)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIXES):
            got = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(got, self.expected):
                resp = PlainTextResponse("unauthorized\n", status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)


def bind_socket(bind: Bind) -> socket.socket:
    family = socket.AF_INET6 if ":" in bind.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind.host, bind.port))
    except OSError as e:
        sock.close()
        raise ServeError(f"--http {bind.host}:{bind.port}: {e.strerror or e}") from None
    sock.listen(128)
    return sock


def serve(data: DashboardData, address: str, token: str | None, announce: Callable[[str], None] = print) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn handles them in the main thread)."""
    import uvicorn

    bind = parse_address(address)
    check_token(bind, token)
    sock = bind_socket(bind)
    bind = Bind(bind.host, sock.getsockname()[1])
    app = dashboard_app(data, middleware=[Middleware(BearerAuth, token=token)] if token else None)
    # open event streams never end by themselves: give them a second on shutdown, then cancel them
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", server_header=False, timeout_graceful_shutdown=1
        )
    )
    announce(f"lookout dashboard ({data.mode} run): {bind.url}" + ("#token=…" if token else ""))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
