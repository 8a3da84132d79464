"""Webhooks: both shapes received by a real HTTP server on loopback; errors become False and a warning."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dr.notify import MAX_FAILURES, Event, Webhook, notify_all

TOKEN = "T000/B000/XXXXsecretXXXX"


class Receiver:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.delay = 0.0


@pytest.fixture
def receiver() -> Iterator[tuple[str, Receiver]]:
    rec = Receiver()
    done = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            rec.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                 "json": json.loads(body)})
            if rec.delay:
                done.wait(rec.delay)
            self.send_response(rec.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/services/{TOKEN}", rec
    finally:
        done.set()
        server.shutdown()
        server.server_close()


def failed_backup(n_failures: int = 2) -> Event:
    return Event(kind="backup", run="20261125T020000Z-abcdef", status="partial",
                 summary="backup 20261125T020000Z-abcdef partial: 40 of 42 volumes",
                 counts={"volumes": 42, "failed": n_failures},
                 failures=[f"user{i}: permission denied" for i in range(n_failures)],
                 time=datetime(2026, 11, 25, 2, 14, 9, tzinfo=UTC), deployment="jhub")


def test_json_shape(receiver: tuple[str, Receiver]) -> None:
    url, rec = receiver
    assert Webhook(url).notify(failed_backup())
    [req] = rec.requests
    assert req["method"] == "POST"
    assert req["path"] == f"/services/{TOKEN}"
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["json"] == {
        "source": "jdr", "version": 1, "event": "backup", "outcome": "failure", "status": "partial",
        "run": "20261125T020000Z-abcdef", "time": "2026-11-25T02:14:09.000000Z",
        "summary": "backup 20261125T020000Z-abcdef partial: 40 of 42 volumes",
        "counts": {"volumes": 42, "failed": 2},
        "failures": ["user0: permission denied", "user1: permission denied"], "deployment": "jhub",
    }


def test_slack_shape(receiver: tuple[str, Receiver]) -> None:
    url, rec = receiver
    assert Webhook(url, kind="slack").notify(failed_backup(n_failures=MAX_FAILURES + 5))
    body = rec.requests[0]["json"]
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith(":x: jdr backup partial (jhub): backup 20261125T020000Z-abcdef partial")
    types = [b["type"] for b in body["blocks"]]
    assert types == ["header", "section", "section", "section", "context"]
    assert body["blocks"][0]["text"] == {"type": "plain_text", "text": "jdr backup partial (jhub)"}
    assert "`20261125T020000Z-abcdef`" in body["blocks"][1]["text"]["text"]
    assert {"type": "mrkdwn", "text": "*volumes*\n42"} in body["blocks"][2]["fields"]
    failures = body["blocks"][3]["text"]["text"]
    assert failures.count("•") == MAX_FAILURES
    assert failures.endswith("… and 5 more")
    for block in body["blocks"]:
        if "text" in block:
            assert len(block["text"]["text"]) <= 3000


def test_success_not_sent_unless_asked(receiver: tuple[str, Receiver]) -> None:
    url, rec = receiver
    ok = Event(kind="drill", run="r1", status="ok", summary="drill ok: RTO 10 min, RPO 5 h")
    assert ok.outcome == "success"
    assert Webhook(url).notify(ok)  # not wanted, so nothing to do, and not a failure
    assert rec.requests == []
    assert Webhook(url, on=("failure", "success")).notify(ok)
    assert [r["json"]["outcome"] for r in rec.requests] == ["success"]


def test_server_error_is_false_and_a_warning_without_the_token(receiver: tuple[str, Receiver],
                                                                caplog: pytest.LogCaptureFixture) -> None:
    url, rec = receiver
    rec.status = 500
    with caplog.at_level(logging.INFO, logger="dr.notify"):
        assert not Webhook(url).notify(failed_backup())
    assert len(rec.requests) == 1
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "127.0.0.1" in record.getMessage() and "HTTP 500" in record.getMessage()
    assert "secret" not in caplog.text and "/services" not in caplog.text


def test_timeout_and_unreachable_are_false(receiver: tuple[str, Receiver],
                                           caplog: pytest.LogCaptureFixture) -> None:
    url, rec = receiver
    rec.delay = 5
    with caplog.at_level(logging.WARNING, logger="dr.notify"):
        assert not Webhook(url, timeout=0.5).notify(failed_backup())
        assert not Webhook(f"http://127.0.0.1:1/hook/{TOKEN}", timeout=2).notify(failed_backup())
    assert caplog.text.count("webhook to 127.0.0.1 failed") == 2
    assert "secret" not in caplog.text


def test_notify_all_reports_any_failure(receiver: tuple[str, Receiver]) -> None:
    url, rec = receiver
    hooks = [Webhook(url), Webhook(url, kind="slack"), Webhook("http://127.0.0.1:1/x", timeout=2)]
    assert not notify_all(hooks, failed_backup())
    assert len(rec.requests) == 2
    assert notify_all(hooks[:2], failed_backup())


def test_bad_configuration_is_refused_without_echoing_the_url() -> None:
    with pytest.raises(ValueError, match="scheme 'ftp'") as e:
        Webhook(f"ftp://example.org/{TOKEN}")
    assert "secret" not in str(e.value)
    with pytest.raises(ValueError, match="kind"):
        Webhook("https://example.org/x", kind="teams")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'on'"):
        Webhook("https://example.org/x", on=("always",))  # type: ignore[arg-type]
    assert "secret" not in repr(Webhook(f"https://hooks.example.org/{TOKEN}"))
