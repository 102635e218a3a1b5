"""The HTTP side of `lookout run`: Prometheus metrics and a health check (and, mounted into the
same app, whatever pages come later). Loopback by default; any other address needs a token."""

from lookout.http.app import create_app
from lookout.http.bind import HttpBindError, HttpConfigError, parse_bind
from lookout.http.server import HttpServer

__all__ = ["HttpBindError", "HttpConfigError", "HttpServer", "create_app", "parse_bind"]
