"""The Hub API token never crosses an origin (docs/SECURITY.md, item 11): two real HTTP servers on
loopback, the "hub" redirecting to the other; the other records the headers it receives."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dr.hubapi import HubApi

TOKEN = "secret-token-" + "x" * 40


class Recorder(ThreadingHTTPServer):
    """Answers every GET with a user model, or with a redirect to ``redirect_to`` + path when set."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[dict[str, str]] = []
        self.redirect_to: str | None = None
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_GET(self) -> None:
        self.server.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        if self.server.redirect_to is not None and not self.path.startswith("/final"):
            self.send_response(302)
            self.send_header("Location", self.server.redirect_to + "/final" + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"name": "alice", "servers": {}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def servers() -> Iterator[tuple[Recorder, Recorder]]:
    hub, other = Recorder(), Recorder()
    yield hub, other
    for s in (hub, other):
        s.shutdown()
        s.server_close()


def test_token_not_sent_to_another_port(servers: tuple[Recorder, Recorder]) -> None:
    hub, other = servers
    hub.redirect_to = other.base
    user = HubApi(hub.base + "/hub/api", TOKEN).get_user("alice")
    assert user == {"name": "alice", "servers": {}}
    assert hub.seen[0]["authorization"] == f"token {TOKEN}"  # the hub itself gets it
    assert len(other.seen) == 1 and other.seen[0]["path"].startswith("/final/hub/api/users/alice")
    assert "authorization" not in other.seen[0], other.seen[0]


def test_token_not_sent_to_another_host(servers: tuple[Recorder, Recorder]) -> None:
    hub, other = servers
    # Same address and port, another host name: another origin all the same.
    hub.redirect_to = other.base.replace("127.0.0.1", "localhost")
    HubApi(hub.base + "/hub/api", TOKEN).get_user("alice")
    assert other.seen and "authorization" not in other.seen[0], other.seen


def test_token_kept_on_a_redirect_within_the_hub(servers: tuple[Recorder, Recorder]) -> None:
    hub, _ = servers
    hub.redirect_to = hub.base  # e.g. a trailing-slash redirect: same scheme, host and port
    HubApi(hub.base + "/hub/api", TOKEN).get_user("alice")
    assert len(hub.seen) == 2 and hub.seen[1]["path"].startswith("/final/")
    assert hub.seen[1]["authorization"] == f"token {TOKEN}"
