"""uvicorn in a background thread, on a socket bound before the thread starts (so a busy port
is an error at start, not a log line later). uvicorn installs no signal handlers outside the
main thread, so SIGINT/SIGTERM stay with the run loop."""

from __future__ import annotations

import logging
import socket
import threading

import uvicorn
from starlette.types import ASGIApp

from lookout.http.bind import HttpBindError

log = logging.getLogger("lookout.http")


class HttpServer:
    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        self.host, self.port = host, port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as e:
            self.sock.close()
            raise HttpBindError(
                f"--http {host}:{port}: {e.strerror or e} (choose another with --http HOST:PORT, or --http off)"
            ) from None
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        cfg = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", server_header=False, timeout_graceful_shutdown=1
        )  # open event streams never end by themselves
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, name="lookout-http", daemon=True)

    def start(self) -> None:
        self.thread.start()
        log.info(
            "http: dashboard, metrics and health on http://%s:%d/ (/metrics, /healthz)",
            f"[{self.host}]" if ":" in self.host else self.host,
            self.port,
        )

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
