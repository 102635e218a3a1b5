"""The `notify:` section of a rules file: where incident transitions are sent.

    notify:
      - type: slack                       # webhook | alertmanager | slack
        url: ${SLACK_WEBHOOK_URL}         # ${VAR}: taken from the environment at start
        rules: [goal1-topic]              # optional: only these rules' incidents
        headers: {Authorization: "Bearer ${TOKEN}"}   # optional
        name: oncall                      # optional: the label in metrics and logs
        timeout: 10                       # optional: seconds per request (then retried)

Validated when the rules are loaded (exit 2 with the field named). Values taken from the
environment are secrets: they are never printed (`lookout rules` shows the `${VAR}` form, logs
name the target, never its URL).
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand(value: str, env: dict[str, str] | None = None) -> str:
    """`${VAR}` → the environment's value; ValueError names a missing variable (never a value)."""
    env = os.environ if env is None else env

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in env:
            raise ValueError(f"environment variable {name} is not set")
        return env[name]

    return _VAR_RE.sub(sub, value)


class NotifyTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["webhook", "alertmanager", "slack"]
    url: str
    rules: tuple[str, ...] | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    timeout: float = Field(default=10.0, gt=0, le=300)  # seconds per request: a hanging receiver is retried

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        resolved = expand(v)
        parts = urlsplit(resolved)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL" + ("" if _VAR_RE.search(v) else f": {v!r}"))
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError("the URL has an invalid port") from None
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", k):
                raise ValueError(f"header name {k!r} is not a valid HTTP header name")
            if any(c in expand(str(val)) for c in "\r\n"):
                raise ValueError(f"header {k}: value contains a line break")
        return {k: str(val) for k, val in v.items()}

    @field_validator("rules", mode="before")
    @classmethod
    def _rules(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    def resolved_url(self) -> str:
        url = expand(self.url)
        if self.type == "alertmanager" and not urlsplit(url).path.rstrip("/").endswith("/api/v2/alerts"):
            url = url.rstrip("/") + "/api/v2/alerts"
        return url

    def resolved_headers(self) -> dict[str, str]:
        return {k: expand(v) for k, v in self.headers.items()}

    def wants(self, rule: str) -> bool:
        return self.rules is None or rule in self.rules

    def to_dict(self) -> dict[str, Any]:
        """As written (the `${VAR}` form); literal header values are masked."""
        d: dict[str, Any] = {"type": self.type, "url": self.url}
        if self.name:
            d["name"] = self.name
        if self.rules is not None:
            d["rules"] = list(self.rules)
        if self.timeout != 10.0:
            d["timeout"] = self.timeout
        if self.headers:
            d["headers"] = {k: v if _VAR_RE.search(v) else "<redacted>" for k, v in self.headers.items()}
        return d


def target_labels(targets: tuple[NotifyTarget, ...]) -> list[str]:
    """Each target's label in metrics and logs: its `name`, else `<type>-<n>` (never the URL)."""
    return [t.name or f"{t.type}-{i}" for i, t in enumerate(targets)]
