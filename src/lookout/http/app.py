"""The Starlette app: /metrics (Prometheus text), /healthz, and routes others mount into it.

With a token, every path but /healthz needs `Authorization: Bearer <token>` (401 otherwise):
a health check must work for load balancers that hold no secret, and it says nothing but
"alive". The comparison is constant-time.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = frozenset({"/healthz", "/"})  # "/" and /static/: the dashboard's page shell, no data
OPEN_PREFIXES = ("/static/",)


class BearerAuth:
    """Pure ASGI middleware: 401 without the right bearer token (except OPEN_PATHS)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope.get("path") not in OPEN_PATHS
            and not scope.get("path", "").startswith(OPEN_PREFIXES)
        ):
            got = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(got, self.expected):
                resp = PlainTextResponse("unauthorized\n", status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    registry: CollectorRegistry,
    health: Callable[[], tuple[bool, dict[str, Any]]],
    token: str | None = None,
    routes: Sequence[BaseRoute] = (),
) -> ASGIApp:
    """`health()` → (healthy, details). `routes` (e.g. a dashboard's Mount) are served beside
    /metrics and /healthz, behind the same token."""

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        ok, details = health()
        return JSONResponse({"status": "ok" if ok else "unhealthy", **details}, status_code=200 if ok else 503)

    app: ASGIApp = Starlette(routes=[Route("/metrics", metrics), Route("/healthz", healthz), *routes])
    if token:
        app = BearerAuth(app, token)
    return app
