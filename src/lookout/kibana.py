"""`lookout kibana-setup`: put lookout's Kibana saved objects (data views for `test-inter` and
`lookout-incidents`, two visualizations, the incidents list and the overview dashboard) into Kibana.

Guarantees: idempotent - every object has a fixed id and the import runs with `overwrite=true`,
so running it again replaces the same objects and never creates duplicates; it waits (bounded)
for a Kibana that is still starting (connection refused, 503) and retries nothing else; a
refused login or an object Kibana rejects is a `KibanaError` naming it, never a traceback.
The objects live in the package (`lookout/kibana/lookout.ndjson`, also at deploy/kibana/), so
a pipx-installed lookout can set Kibana up without the repository.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from importlib.resources import files
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson

IMPORT_PATH = "/api/saved_objects/_import"
RETRY_STATUS = frozenset({502, 503, 504})  # Kibana starting, or its proxy waiting for it


class KibanaError(Exception):
    """Kibana refused the import, or did not come up in time."""


@dataclass(frozen=True)
class ImportResult:
    url: str  # without userinfo
    imported: int
    objects: list[tuple[str, str, str]]  # (type, id, title)
    attempts: int


def saved_objects() -> bytes:
    """The NDJSON shipped with the package."""
    return files("lookout").joinpath("kibana/lookout.ndjson").read_bytes()


def _space_prefix(space: str | None) -> str:
    return f"/s/{space}" if space and space != "default" else ""


def import_saved_objects(
    url: str,
    user: str | None = None,
    password: str | None = None,
    api_key: str | None = None,
    space: str | None = None,
    wait: float = 120.0,
    timeout: float = 30.0,
    ca_certs: str | None = None,
    verify: bool = True,
    data: bytes | None = None,
) -> ImportResult:
    """POST the saved objects to Kibana's import API (multipart, `overwrite=true`)."""
    import urllib3

    ndjson = saved_objects() if data is None else data
    url, user, password = _split_userinfo(url, user, password)
    headers = {"kbn-xsrf": "lookout", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"ApiKey {api_key}"
    elif user:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password or ''}".encode()).decode()
    kw: dict[str, Any] = {}
    if url.startswith("https"):
        kw = {"cert_reqs": "CERT_REQUIRED", "ca_certs": ca_certs} if verify else {"cert_reqs": "CERT_NONE"}
        if not verify:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=min(10.0, timeout), read=timeout), **kw)
    target = url.rstrip("/") + _space_prefix(space) + IMPORT_PATH + "?overwrite=true"
    deadline = time.monotonic() + wait
    attempts = 0
    while True:
        attempts += 1
        try:
            r = pool.request("POST", target, fields={"file": ("lookout.ndjson", ndjson, "application/ndjson")}, headers=headers)
            status, body = r.status, r.data or b""
            reason = f"HTTP {status}"
        except urllib3.exceptions.HTTPError as e:
            status, body, reason = 0, b"", f"{type(e).__name__}: {e}"
        if status and status not in RETRY_STATUS:
            break
        if time.monotonic() >= deadline:
            raise KibanaError(f"{url}: Kibana not ready after {wait:.0f} s ({reason})")
        time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
    try:
        answer = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        answer = {}
    if status in (401, 403):
        raise KibanaError(f"{url}: HTTP {status}, credentials refused: {_message(answer, body)}")
    if status != 200 or not isinstance(answer, dict):
        raise KibanaError(f"{url}: HTTP {status} from the import API: {_message(answer, body)}")
    errors = answer.get("errors") or []
    if not answer.get("success") or errors:
        what = "; ".join(f"{e.get('type')} {e.get('id')}: {orjson.dumps(e.get('error')).decode()}" for e in errors[:5])
        raise KibanaError(f"{url}: Kibana refused {len(errors)} object(s): {what or _message(answer, body)}")
    objects = [(o["type"], o["id"], (o.get("meta") or {}).get("title", "")) for o in answer.get("successResults") or []]
    return ImportResult(url=url, imported=int(answer.get("successCount", len(objects))), objects=objects, attempts=attempts)


def _split_userinfo(url: str, user: str | None, password: str | None) -> tuple[str, str | None, str | None]:
    """user:password@ in the URL becomes Basic auth and leaves the URL (so it is never printed)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.username is None:
        return urlunsplit(parts), user, password
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=netloc)), unquote(parts.username), unquote(parts.password or "")


def _message(answer: Any, body: bytes) -> str:
    if isinstance(answer, dict) and answer.get("message"):
        return str(answer["message"])[:300]
    return body[:300].decode("utf-8", "replace")
