"""A fault-injecting HTTP reverse proxy for S3 endpoints (SeaweedFS, moto).

The real client (boto3) talks to the proxy; the proxy forwards each request to the real server unless a
:class:`Rule` matches it, in which case it answers with an error status, delays it, resets the connection,
or forwards it and cuts the response body short. SigV4 signatures stay valid because the proxy forwards
the ``Host`` header unchanged (the signature covers the host the client saw).

    with FaultProxy(upstream) as proxy:
        proxy.add(Rule(method="PUT", query="partNumber=2", status=503))
        store = S3Store.from_url(url, endpoint_url=proxy.url)
"""

from __future__ import annotations

import http.client
import itertools
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlsplit

Action = Literal["status", "reset", "drop_body", "delay"]

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
               "upgrade"}


@dataclass
class Rule:
    """Which requests to disturb, and how.

    A request matches when every given criterion holds. The rule fires on the ``nth`` matching request
    and on the ``times - 1`` matching requests after it (``times=None``: on every one from the ``nth`` on).
    """

    method: str | None = None
    query: str | None = None  # substring of the query string, e.g. "partNumber=" or "uploads"
    path: str | None = None  # substring of the path
    has_header: str | None = None  # e.g. "Range"
    action: Action = "status"
    status: int = 503  # for "status"
    code: str = "ServiceUnavailable"  # S3 error code in the XML body, for "status"
    delay: float = 0.0  # for "delay" (seconds before forwarding)
    drop_after: int = 0  # for "drop_body": bytes of the body sent before the connection is closed
    nth: int = 1
    times: int | None = 1
    matched: int = 0
    fired: int = 0

    def matches(self, method: str, path: str, query: str, headers: dict[str, str]) -> bool:
        if self.method is not None and method != self.method:
            return False
        if self.query is not None and self.query not in query:
            return False
        if self.path is not None and self.path not in path:
            return False
        return self.has_header is None or self.has_header.lower() in headers

    def should_fire(self) -> bool:
        """Count a matching request; return whether the rule fires on it."""
        self.matched += 1
        if self.matched < self.nth:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        self.fired += 1
        return True


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    fault: Action | None = None
    status: int | None = None  # the upstream's answer, once forwarded
    arrived: int = 0  # when the request arrived, and
    answered: int | None = None  # when the upstream answered it: ticks of one clock (order, not time)


@dataclass
class FaultProxy:
    """A threaded reverse proxy on 127.0.0.1 (a free port) in front of ``upstream`` (http://host:port)."""

    upstream: str
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        up = urlsplit(self.upstream)
        self._up_host = up.hostname or "127.0.0.1"
        self._up_port = up.port or 80
        self._lock = threading.Lock()
        self._current = threading.local()  # the Seen of the request this handler thread serves
        self._ticks = itertools.count(1)  # Seen.arrived / Seen.answered
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.seen.clear()

    def requests(self, method: str | None = None, query: str | None = None) -> list[Seen]:
        """Requests seen so far (optionally those with ``method`` and ``query`` in the query string)."""
        with self._lock:
            return [s for s in self.seen
                    if (method is None or s.method == method) and (query is None or query in s.query)]

    def _decide(self, method: str, path: str, query: str, headers: dict[str, str]) -> Rule | None:
        with self._lock:
            chosen = None
            for rule in self.rules:
                if rule.matches(method, path, query, headers) and rule.should_fire() and chosen is None:
                    chosen = rule
            self.seen.append(Seen(method, path, query, headers, chosen.action if chosen else None,
                                  arrived=next(self._ticks)))
            self._current.seen = self.seen[-1]
            return chosen


def _make_handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def _handle(self) -> None:
            method = self.command
            parts = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            rule = proxy._decide(method, parts.path, parts.query, headers)
            if rule is not None and rule.action == "status":
                self._error(rule.status, rule.code)
                return
            if rule is not None and rule.action == "reset":
                self._reset()
                return
            if rule is not None and rule.action == "delay":
                time.sleep(rule.delay)
            drop_after = rule.drop_after if rule is not None and rule.action == "drop_body" else None
            self._forward(method, body, drop_after=drop_after)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        def _error(self, status: int, code: str) -> None:
            xml = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                   f"<Message>injected by faultproxy</Message><RequestId>fault</RequestId></Error>").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(xml)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(xml)

        def _reset(self) -> None:
            # SO_LINGER 0: close with RST, as a crashed server or a broken network would.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def _cut(self) -> None:
            # A clean FIN after part of the body: the client gets exactly the bytes sent, then EOF short
            # of Content-Length. (An RST could make the client's kernel discard bytes not yet read.)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self.connection.close()

        def _forward(self, method: str, body: bytes, drop_after: int | None) -> None:
            conn = http.client.HTTPConnection(proxy._up_host, proxy._up_port, timeout=60)
            try:
                fwd = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                conn.request(method, self.path, body=body if body or method in ("PUT", "POST") else None,
                             headers=fwd)
                resp = conn.getresponse()
                with proxy._lock:
                    proxy._current.seen.status = resp.status
                    proxy._current.seen.answered = next(proxy._ticks)
                self.send_response_only(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP_BY_HOP:
                        self.send_header(k, v)
                if resp.getheader("Content-Length") is None and method != "HEAD":
                    # Unknown length: relay to the end of the body and close.
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                if method == "HEAD":
                    return
                sent = 0
                while True:
                    chunk = resp.read(64 * 1024)
                    if not chunk:
                        break
                    if drop_after is not None and sent + len(chunk) > drop_after:
                        self.wfile.write(chunk[: drop_after - sent])
                        self.wfile.flush()
                        self._cut()
                        return
                    self.wfile.write(chunk)
                    sent += len(chunk)
            finally:
                conn.close()

    return Handler
