"""Webhook notifications for backups, prunes and drills: generic JSON, or a Slack-compatible message.

A notification never fails the operation that sends it: :meth:`Webhook.notify` returns False and logs a
warning when the endpoint cannot be reached or answers with an error. Webhook URLs often carry their secret
in the path or query (Slack's ``/services/T…/B…/XXXX``), so only the URL's host is ever logged.

Generic JSON body (``kind="json"``), version 1::

    {
      "source": "jdr", "version": 1,
      "event": "backup",                  # backup | prune | drill
      "outcome": "failure",               # success | failure
      "status": "partial",                # the operation's own status (complete, partial, failed, ok, …)
      "run": "20261125T020000Z-a1b2c3",   # the run concerned ("" when none)
      "time": "2026-11-25T02:14:09.000000Z",
      "summary": "backup 20261125T020000Z-a1b2c3 partial: 41 of 42 volumes",
      "counts": {"volumes": 42, "failed": 1},
      "failures": ["bob: permission denied reading .cache/x"],
      "deployment": "jhub"                # optional, "" when not set
    }

Slack-compatible body (``kind="slack"``; also accepted by Mattermost and Rocket.Chat incoming webhooks):
``{"text": <one-line fallback>, "blocks": [header, summary section, counts as fields, failures]}``, with the
failure list cut to :data:`MAX_FAILURES` lines and every text within Slack's block limits.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from dr.util.timefmt import iso, utcnow

log = logging.getLogger(__name__)

EventKind = Literal["backup", "prune", "drill", "copy", "self-service"]
Outcome = Literal["success", "failure"]
SUCCESS_STATUSES = frozenset({"complete", "ok", "success", "succeeded"})
MAX_FAILURES = 20
_SLACK_TEXT_LIMIT = 2900  # Slack allows 3000 characters in a section's text
_SLACK_HEADER_LIMIT = 150


@dataclass(frozen=True)
class Event:
    """Something worth telling an administrator about."""

    kind: EventKind
    run: str
    status: str  # "complete", "partial", "failed" for backups; "ok" or "failed" for prune and drill
    summary: str
    counts: Mapping[str, int] = field(default_factory=dict)
    failures: Sequence[str] = ()
    time: datetime = field(default_factory=utcnow)
    deployment: str = ""
    # A self-service audit record (``jdr serve``: who, for whom, what, which run), sent as "audit".
    audit: Mapping[str, Any] = field(default_factory=dict)

    @property
    def outcome(self) -> Outcome:
        return "success" if self.status in SUCCESS_STATUSES else "failure"

    def to_json(self) -> dict[str, Any]:
        return {
            "source": "jdr", "version": 1, "event": self.kind, "outcome": self.outcome, "status": self.status,
            "run": self.run, "time": iso(self.time), "summary": self.summary, "counts": dict(self.counts),
            "failures": list(self.failures), "deployment": self.deployment,
        } | ({"audit": dict(self.audit)} if self.audit else {})

    def to_slack(self) -> dict[str, Any]:
        icon = ":white_check_mark:" if self.outcome == "success" else ":x:"
        where = f" ({self.deployment})" if self.deployment else ""
        title = f"jdr {self.kind} {self.status}{where}"
        text = f"{icon} {title}: {self.summary}"
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": _cut(title, _SLACK_HEADER_LIMIT)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": _cut(
                f"{icon} {self.summary}" + (f"\nRun `{self.run}`" if self.run else ""), _SLACK_TEXT_LIMIT)}},
        ]
        if self.counts:
            # Slack allows at most 10 fields in a section.
            blocks.append({"type": "section", "fields": [
                {"type": "mrkdwn", "text": f"*{name}*\n{count}"}
                for name, count in list(self.counts.items())[:10]
            ]})
        if self.failures:
            shown = [f"• {_cut(f, 300)}" for f in self.failures[:MAX_FAILURES]]
            if len(self.failures) > MAX_FAILURES:
                shown.append(f"… and {len(self.failures) - MAX_FAILURES} more")
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(
                "*Failures*\n" + "\n".join(shown), _SLACK_TEXT_LIMIT)}})
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": iso(self.time)}]})
        return {"text": _cut(text, _SLACK_TEXT_LIMIT), "blocks": blocks}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Webhook:
    """POSTs events to one URL. ``on`` chooses the outcomes that are sent: failures only by default."""

    def __init__(self, url: str, kind: Literal["json", "slack"] = "json",
                 on: Sequence[Outcome] = ("failure",), timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # Say what is wrong without echoing the URL, which may hold a token.
            raise ValueError(f"webhook URL must be http(s)://host/…, got scheme {parts.scheme!r}")
        if kind not in ("json", "slack"):
            raise ValueError(f"webhook kind must be 'json' or 'slack', got {kind!r}")
        unknown = set(on) - {"success", "failure"}
        if unknown:
            raise ValueError(f"webhook 'on' accepts 'success' and 'failure', got {sorted(unknown)}")
        self.url = url
        self.kind = kind
        self.on = tuple(on)
        self.timeout = timeout
        self.host = parts.hostname

    def __repr__(self) -> str:
        return f"Webhook(host={self.host!r}, kind={self.kind!r}, on={self.on!r})"

    def wants(self, event: Event) -> bool:
        # Self-service downloads and restores are an audit trail: every one is sent (issue 13).
        return event.kind == "self-service" or event.outcome in self.on

    def body(self, event: Event) -> dict[str, Any]:
        return event.to_slack() if self.kind == "slack" else event.to_json()

    def notify(self, event: Event) -> bool:
        """Send ``event`` if its outcome is one this webhook is for. True when sent (a 2xx answer) or not
        wanted; False, with a warning logged, when sending failed. Never raises for a delivery problem."""
        if not self.wants(event):
            return True
        data = json.dumps(self.body(event)).encode("utf-8")
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked to be http(s) above
            self.url, data=data, method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "jdr"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                status = response.status
        except urllib.error.HTTPError as e:
            log.warning("webhook to %s refused the %s %s notification: HTTP %s", self.host, event.kind,
                        event.outcome, e.code)
            return False
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or type(e).__name__
            log.warning("webhook to %s failed for the %s %s notification: %s", self.host, event.kind,
                        event.outcome, reason)
            return False
        if not 200 <= status < 300:
            log.warning("webhook to %s answered HTTP %s to the %s %s notification", self.host, status,
                        event.kind, event.outcome)
            return False
        log.info("sent %s %s notification to %s", event.kind, event.outcome, self.host)
        return True


def notify_all(webhooks: Sequence[Webhook], event: Event) -> bool:
    """Send ``event`` to every webhook; True when none failed."""
    results = [w.notify(event) for w in webhooks]
    return all(results)
