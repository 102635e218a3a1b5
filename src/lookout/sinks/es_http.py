"""A small JSON-over-HTTP client for Elasticsearch 8.x/9.x and OpenSearch 2.x/3.x.

Why not the official `elasticsearch` client: it refuses any server that does not answer with
`X-Elastic-Product: Elasticsearch` (so: every OpenSearch), and its 9.x release sends
`Accept: application/vnd.elasticsearch+json; compatible-with=9`, which Elasticsearch 8.x and
OpenSearch reject with HTTP 406. `opensearch-py` has the mirror-image problems. The APIs lookout
needs (`/_bulk`, `/_index_template`, `/_count`, `/_search`, `/_refresh`, `GET /`) have had the
same request and response shapes on all four servers, so plain `application/json` over urllib3
works with every one of them, with no product check and no version-compatibility headers.
Retries are not done here (urllib3's are off): the sink decides what is worth retrying.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import orjson

from lookout.errors import ConfigError, DeliveryError, ServiceUnavailable
from lookout.safe_text import plain

log = logging.getLogger("lookout.elasticsearch")

USER_AGENT = "lookout/0.1 (+urllib3)"
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class ElasticsearchError(ServiceUnavailable, DeliveryError):
    """The server refused for good (bad credentials, a bulk it will never accept) or stayed away
    past `max_retry_time`. It propagates out of flush before any offset or position is committed
    (nothing in the run loop catches it), so the next start reads the same input again; the
    command line reports it and exits 1."""

    def __init__(self, message: str) -> None:
        super().__init__(plain(f"elasticsearch: {message}"))  # the server's words may quote record values
        self.message = message


class ElasticsearchConfigError(ElasticsearchError, ConfigError):
    """Settings the sink cannot work with (the command has to change: exit 2)."""


def _env_bool(name: str, default: bool) -> bool:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    return v.strip().lower() in ("1", "true", "yes", "on")


def _env_num(name: str, default: float | None, cast: Callable[[str], Any] = float) -> Any:
    v = os.environ.get(name)
    return default if v is None or v == "" else cast(v)


@dataclass
class EsConfig:
    """Everything the sink and the query helpers need; `from_url` fills it from the URL, the
    LOOKOUT_ES_* environment and command-line overrides (in that order of precedence, lowest first)."""

    url: str = "http://localhost:9200"  # scheme://host:port[/prefix], userinfo removed
    username: str | None = None
    password: str | None = None
    api_key: str | None = None  # the base64 "id:key" token, or "id:key"
    ca_certs: str | None = None
    verify: bool = True
    timeout: float = 30.0  # seconds per request (connect and read)
    index: str = "test-inter"
    daily: bool = False  # <index>-YYYY.MM.DD by event time, all behind the alias <index>
    results: bool = False  # also index each rule's results into <results_prefix><rule>
    results_prefix: str = "lookout-"
    bulk_bytes: int = 5 << 20
    bulk_docs: int = 5000
    concurrency: int = 2  # bulk requests in flight
    max_retry_time: float | None = None  # None: retry for as long as it takes (input waits)
    refresh_on_close: bool = True

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> EsConfig:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        user = unquote(parts.username) if parts.username else None
        pw = unquote(parts.password) if parts.password else None
        host = parts.hostname or "localhost"
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
        base = urlunsplit((parts.scheme or "http", netloc, parts.path.rstrip("/"), "", ""))
        cfg = cls(
            url=base,
            # credentials in the URL win over the environment's
            username=user if user is not None else os.environ.get("LOOKOUT_ES_USER") or None,
            password=pw if user is not None else os.environ.get("LOOKOUT_ES_PASSWORD") or None,
            api_key=os.environ.get("LOOKOUT_ES_API_KEY") or None,
            ca_certs=os.environ.get("LOOKOUT_ES_CA_CERTS") or None,
            verify=_env_bool("LOOKOUT_ES_VERIFY", True) and not _env_bool("LOOKOUT_ES_INSECURE", False),
            timeout=_env_num("LOOKOUT_ES_TIMEOUT", 30.0),
            index=os.environ.get("LOOKOUT_ES_INDEX") or "test-inter",
            daily=_env_bool("LOOKOUT_ES_DAILY", False),
            results=_env_bool("LOOKOUT_ES_RESULTS", False),
            results_prefix=os.environ.get("LOOKOUT_ES_RESULTS_PREFIX", "lookout-"),
            bulk_bytes=_env_num("LOOKOUT_ES_BULK_BYTES", 5 << 20, int),
            bulk_docs=_env_num("LOOKOUT_ES_BULK_DOCS", 5000, int),
            concurrency=_env_num("LOOKOUT_ES_CONCURRENCY", 2, int),
            max_retry_time=_env_num("LOOKOUT_ES_MAX_RETRY_TIME", None),
        )
        overrides = {k: v for k, v in overrides.items() if v is not None}
        cfg = replace(cfg, **overrides)
        if cfg.bulk_docs < 1 or cfg.bulk_bytes < 1 or cfg.concurrency < 1:
            raise ElasticsearchConfigError("bulk sizes and concurrency must be positive")
        return cfg


@dataclass
class Response:
    status: int
    data: Any  # decoded JSON, or None
    text: bytes

    def error_reason(self) -> str:
        """`type: reason` from an Elasticsearch error body, or the raw text."""
        return error_reason(self.data.get("error") if isinstance(self.data, dict) else None) or self.text[:300].decode(
            "utf-8", "replace"
        )


def error_reason(err: Any) -> str:
    if isinstance(err, dict):
        s = f"{err.get('type', 'error')}: {err.get('reason', '')}".rstrip(": ")
        cause = err.get("caused_by")
        if isinstance(cause, dict) and cause.get("reason"):
            s += f" (caused by {cause.get('type', 'error')}: {cause['reason']})"
        return s
    return "" if err is None else str(err)


class EsClient:
    """One connection pool, plain JSON in and out. Thread-safe (urllib3 pools are)."""

    def __init__(self, cfg: EsConfig) -> None:
        import urllib3

        self.cfg = cfg
        self.headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if cfg.api_key:
            key = cfg.api_key
            if ":" in key:  # "id:key" as printed by the create-API-key response
                key = base64.b64encode(key.encode()).decode()
            self.headers["Authorization"] = f"ApiKey {key}"
        elif cfg.username is not None:
            token = base64.b64encode(f"{cfg.username}:{cfg.password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        kw: dict[str, Any] = {}
        if cfg.url.startswith("https"):
            if cfg.verify:
                kw["cert_reqs"] = "CERT_REQUIRED"
                if cfg.ca_certs:
                    kw["ca_certs"] = cfg.ca_certs
            else:
                kw["cert_reqs"] = ssl.CERT_NONE
                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=max(4, cfg.concurrency + 2),
            retries=False,
            timeout=urllib3.Timeout(connect=min(10.0, cfg.timeout), read=cfg.timeout),
            **kw,
        )
        self.transport_errors: tuple[type[BaseException], ...] = (urllib3.exceptions.HTTPError, OSError)

    def needs_new_connection(self) -> bool:
        """True when no pooled keep-alive connection is still open: the next request connects anew,
        maybe to another server process than the last one (restarted on the same port)."""
        from urllib3.util.connection import is_connection_dropped

        pool = self.pool.connection_from_url(self.cfg.url)
        idle = [c for c in list(pool.pool.queue) if c is not None and getattr(c, "sock", None) is not None]  # type: ignore[union-attr]
        return not any(not is_connection_dropped(c) for c in idle)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | dict | list | None = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> Response:
        """Send one request; raises a transport error (see `transport_errors`) when no answer came."""
        url = self.cfg.url + path
        if params:
            url += "?" + "&".join(f"{quote(k)}={quote(str(v))}" for k, v in params.items())
        headers = dict(self.headers)
        data: bytes | None
        if body is None:
            data = None
        else:
            data = body if isinstance(body, bytes) else orjson.dumps(body)
            headers["Content-Type"] = content_type
        r = self.pool.request(method, url, body=data, headers=headers, preload_content=True)
        text = r.data or b""
        try:
            decoded = orjson.loads(text) if text else None
        except orjson.JSONDecodeError:
            decoded = None
        return Response(r.status, decoded, text)


class Outage:
    """Says clearly, once and then every `every` seconds, that the server is not taking data
    and that lookout is waiting for it; and says when it is back."""

    def __init__(self, url: str, every: float = 10.0) -> None:
        self.url = url
        self.every = every
        self.lock = threading.Lock()
        self.since: float | None = None
        self.last_log = 0.0
        self.failures = 0
        # set by any failure: the server may have been restarted (empty) since; the sink checks
        # what it still holds before it sends documents again
        self.suspect = threading.Event()

    def failed(self, what: str, reason: str, delay: float) -> None:
        now = time.monotonic()
        self.suspect.set()
        with self.lock:
            self.failures += 1
            if self.since is None:
                self.since = now
                self.last_log = now
                log.warning(
                    "elasticsearch at %s: %s failed (%s); retrying in %.1fs - input waits, nothing is dropped",
                    self.url,
                    what,
                    reason,
                    delay,
                )
            elif now - self.last_log >= self.every:
                self.last_log = now
                log.warning(
                    "elasticsearch at %s still not taking data after %.0fs (%d failed attempts, last: %s); still retrying",
                    self.url,
                    now - self.since,
                    self.failures,
                    reason,
                )

    def ok(self) -> None:
        with self.lock:
            if self.since is not None:
                log.warning(
                    "elasticsearch at %s answering again after %.1fs (%d failed attempts)",
                    self.url,
                    time.monotonic() - self.since,
                    self.failures,
                )
                self.since = None
                self.failures = 0


@dataclass
class Backoff:
    """Exponential backoff with jitter: attempt n waits base*2^n (capped) times a factor in
    [0.5, 1), so many writers do not come back in lockstep."""

    base: float = 0.25
    cap: float = 15.0

    def delay(self, attempt: int) -> float:
        return min(self.cap, self.base * (2 ** min(attempt, 16))) * (0.5 + random.random() / 2)


def call(
    client: EsClient,
    method: str,
    path: str,
    body: Any = None,
    *,
    what: str,
    outage: Outage,
    max_retry_time: float | None,
    content_type: str = "application/json",
    params: dict[str, str] | None = None,
    backoff: Backoff | None = None,
    stop: threading.Event | None = None,
    before_send: Callable[[], str | None] | None = None,
) -> Response:
    """One request, retried on transport errors and transient statuses (429, 5xx, 408) with
    backoff; any other answer (2xx or a permanent 4xx) is returned to the caller. `stop` set
    ends the retrying with ElasticsearchError (the process is shutting down). `before_send`
    runs before each attempt: a reason string (the server is not ready for it) makes the
    attempt count as failed; its transport errors count the same way."""
    backoff = backoff or Backoff()
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            not_ready = before_send() if before_send is not None else None
            if not_ready is None:
                r = client.request(method, path, body, content_type=content_type, params=params)
        except client.transport_errors as e:
            reason = f"{type(e).__name__}: {e}"
        else:
            if not_ready is not None:
                reason = not_ready
            elif r.status not in TRANSIENT_STATUS:
                outage.ok()
                return r
            else:
                reason = f"HTTP {r.status} {r.error_reason()}"
        waited = time.monotonic() - started
        if max_retry_time is not None and waited >= max_retry_time:
            raise ElasticsearchError(f"{what}: gave up after {waited:.0f}s ({reason})")
        d = backoff.delay(attempt)
        outage.failed(what, reason, d)
        if stop is not None and stop.wait(d):
            raise ElasticsearchError(f"{what}: stopped while retrying ({reason}); nothing was committed")
        if stop is None:
            time.sleep(d)
        attempt += 1
