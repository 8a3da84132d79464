"""The worker's HTTP endpoint (standard library only): ``/healthz`` (JSON) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dr.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)


class HealthServer:
    """Serves until :meth:`close`, in a daemon thread. ``port`` 0 picks a free port (see ``address``)."""

    def __init__(self, host: str, port: int, report: Callable[[], tuple[bool, dict[str, Any]]],
                 render_metrics: Callable[[], bytes]) -> None:
        class Handler(BaseHTTPRequestHandler):
            server_version = "jdr-worker"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path in ("/healthz", "/health", "/"):
                    try:
                        healthy, doc = report()
                    except Exception:
                        log.exception("health report failed")
                        healthy, doc = False, {"status": "error"}
                    self._send(200 if healthy else 503, "application/json",
                               json.dumps(doc, indent=1).encode("utf-8"))
                elif path == "/metrics":
                    self._send(200, CONTENT_TYPE, render_metrics())
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found\n")

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("health endpoint: " + format, *args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="jdr-health", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
