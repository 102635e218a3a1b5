"""The dashboard's routes: pages, static files, the JSON API and the live event stream.

`dashboard_routes(data)` is a plain Starlette route list, so it can be mounted into any
Starlette app (the `--http` server of `lookout run` adds /metrics and /healthz beside it);
`dashboard_app(data)` wraps it with the security headers for a server of its own.

Read-only. Every query parameter is checked: an unknown, repeated or malformed one is a 400
whose JSON names the field; an error inside is a 500 without a traceback. The pages load only
files served from here (strict Content-Security-Policy, no inline script), and the script puts
every value into the page with textContent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookout import store
from lookout.dashboard.data import DashboardData
from lookout.dashboard.files import query_results
from lookout.records import parse_timestamp

log = logging.getLogger("lookout.dashboard")
STATIC = Path(__file__).parent / "static"
MAX_LIMIT = 1000
MAX_VALUE = 2048  # longest query value taken (records may carry long hosts; a DNS name is at most 253)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class BadParameter(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json", headers={"cache-control": "no-store"})


def _params(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in request.query_params.multi_items():
        if k not in allowed:
            raise BadParameter(k, f"unknown parameter {k!r} (allowed: {', '.join(allowed)})")
        if k in out:
            raise BadParameter(k, f"{k} given more than once")
        if len(v) > MAX_VALUE or any(ord(c) < 32 for c in v):
            raise BadParameter(k, f"{k}: too long or contains control characters")
        out[k] = v
    return out


def _limit(p: dict[str, str], default: int) -> int:
    v = p.get("limit")
    if v is None or v == "":
        return default
    if not (v.isascii() and v.isdigit() and len(v) <= 9) or not 1 <= int(v) <= MAX_LIMIT:
        raise BadParameter("limit", f"limit {v!r}: a whole number from 1 to {MAX_LIMIT}")
    return int(v)


def _time(p: dict[str, str], name: str) -> int | None:
    v = p.get(name)
    if v is None or v == "":
        return None
    try:
        us = parse_timestamp(v)
    except Exception:  # noqa: BLE001 - any parse failure is the caller's bad input
        raise BadParameter(name, f"{name} {v!r}: use ISO-8601 (2022-08-03T06:51:40Z) or epoch seconds") from None
    if us is None or not 0 <= us < 253402300800_000000:  # year 1970 .. 9999
        raise BadParameter(name, f"{name} {v!r}: out of range")
    return us


Handler = Callable[[Request], Awaitable[Response]]


def _api(fn: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await fn(request)
        except BadParameter as e:
            return json_response({"error": str(e), "field": e.field}, 400)
        except Exception:  # noqa: BLE001 - logged here; the client gets no traceback
            log.exception("dashboard API error on %s", request.url.path)
            return json_response({"error": "internal error (see the server's log)"}, 500)

    return wrapped


def dashboard_routes(data: DashboardData) -> list[BaseRoute]:
    """The dashboard as routes: `/`, `/static/…`, `/api/…`, `/api/events`."""

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    @_api
    async def stats(request: Request) -> Response:
        _params(request, ())
        body = await run_in_threadpool(data.snapshot)
        return Response(body, media_type="application/json", headers={"cache-control": "no-store"})

    @_api
    async def incidents(request: Request) -> Response:
        p = _params(request, ("status", "rule", "limit"))
        status = p.get("status")
        if status not in (None, "", "firing", "resolved"):
            raise BadParameter("status", f"status {status!r}: firing or resolved")
        rule = p.get("rule")
        if rule and rule not in data.rs.by_name:
            raise BadParameter("rule", f"rule {rule!r} is not in the rules")
        limit = _limit(p, 200)
        docs = await run_in_threadpool(data.incident_list)
        docs = [d for d in docs if (not status or d.get("status") == status) and (not rule or d.get("rule") == rule)]
        return json_response({"incidents": docs[:limit]})

    @_api
    async def results(request: Request) -> Response:
        name = request.path_params["rule"]
        rule = data.rs.by_name.get(name)
        if rule is None:
            return json_response({"error": f"no rule named {name!r}", "field": "rule"}, 404)
        p = _params(request, ("since", "until", "limit", *rule.group_by))
        since, until, limit = _time(p, "since"), _time(p, "until"), _limit(p, 100)
        key = {f: p[f] for f in rule.group_by if p.get(f)}
        if data.out_dir is None:
            return json_response({"rule": name, "results": []})
        rows = await run_in_threadpool(query_results, data.out_dir / f"{name}.jsonl", since, until, key, limit)
        return json_response({"rule": name, "results": rows})

    @_api
    async def records(request: Request) -> Response:
        p = _params(request, (*store.QUERY_FIELDS, "since", "until", "limit"))
        limit = _limit(p, 100)
        _time(p, "since")
        _time(p, "until")
        try:
            store.Query.from_options(status=p.get("status") or None)
        except ValueError:
            raise BadParameter("status", f"status {p['status']!r}: use 404, 400-499 or 4xx") from None
        q = store.Query.from_options(**{k: (v or None) for k, v in p.items() if k != "limit"})
        if data.store_dir is None:
            return json_response({"records": []})
        rows = await run_in_threadpool(_search, data.store_dir, q, limit)
        return json_response({"records": rows})

    async def events(request: Request) -> Response:
        """Server-sent events: the snapshot whenever it changed (checked every 0.5 s), a comment
        every 15 s to keep proxies from closing the stream."""
        try:
            _params(request, ())
        except BadParameter as e:
            return json_response({"error": str(e), "field": e.field}, 400)

        async def stream() -> Any:
            last = b""
            quiet = 0.0
            yield b"retry: 2000\n\n"
            while True:
                body = await run_in_threadpool(data.snapshot)
                if body != last:
                    last = body
                    quiet = 0.0
                    yield b"event: snapshot\ndata: " + body + b"\n\n"
                elif quiet >= 15:
                    quiet = 0.0
                    yield b": keep-alive\n\n"
                await asyncio.sleep(0.5)
                quiet += 0.5

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"cache-control": "no-store", "x-accel-buffering": "no"}
        )

    return [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/api/stats", stats, methods=["GET"]),
        Route("/api/incidents", incidents, methods=["GET"]),
        Route("/api/results/{rule}", results, methods=["GET"]),
        Route("/api/records", records, methods=["GET"]),
        Route("/api/events", events, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]


def _search(store_dir: Path, q: store.Query, limit: int) -> list[dict[str, Any]]:
    """The store is written while we read: a part merged away between listing and reading is
    read again from the new listing."""
    import duckdb

    for attempt in range(3):
        try:
            return store.search(store_dir, q, limit)
        except duckdb.IOException:
            if attempt == 2:
                raise
    return []


class SecurityHeaders:
    """Adds the Content-Security-Policy and friends to every response of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *((k, v) for k, v in SECURITY_HEADERS if k not in names)]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def dashboard_app(data: DashboardData, middleware: list[Middleware] | None = None) -> Starlette:
    """A Starlette app serving only the dashboard (what `lookout serve` runs)."""
    return Starlette(routes=dashboard_routes(data), middleware=[*(middleware or []), Middleware(SecurityHeaders)])
