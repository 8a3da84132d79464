"""The self-service audit trail: every download and restore — who, for whom, what, which run, when, and
the outcome — appended to a JSON-lines file, logged, and sent to the configured webhooks
(:mod:`dr.notify`, event ``self-service``, the record under ``audit``)."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dr.notify import Event, Webhook, notify_all
from dr.util.timefmt import iso, utcnow

log = logging.getLogger("dr.serve.audit")


@dataclass(frozen=True)
class AuditRecord:
    action: str  # download | restore
    actor: str  # the hub user who asked
    user: str  # whose files
    run: str
    server: str
    path: str
    entry: int
    outcome: str  # ok | refused | failed
    detail: str = ""
    files: int = 0
    bytes: int = 0
    target: str = ""  # where a restore put the files
    time: str = field(default_factory=lambda: iso(utcnow()))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AuditLog:
    """Appends records to ``path`` (one JSON object a line; "" for none), logs them, and sends them to
    ``webhooks`` from a background thread (a slow webhook never delays a download)."""

    def __init__(self, path: str, webhooks: Sequence[Webhook] = (), deployment: str = "") -> None:
        self.path = Path(path) if path else None
        self.webhooks = list(webhooks)
        self.deployment = deployment
        self._lock = threading.Lock()

    def record(self, rec: AuditRecord) -> None:
        doc = rec.to_dict()
        line = json.dumps(doc, ensure_ascii=False, sort_keys=True)
        log.info("self-service %s by %s for %s: run %s %s %r: %s%s", rec.action, rec.actor, rec.user, rec.run,
                 rec.server or "(default server)", rec.path, rec.outcome,
                 f" ({rec.detail})" if rec.detail else "")
        if self.path is not None:
            with self._lock:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    os.write(fd, line.encode("utf-8") + b"\n")
                finally:
                    os.close(fd)
        if self.webhooks:
            who = rec.actor if rec.actor == rec.user else f"{rec.actor} (for {rec.user})"
            event = Event(kind="self-service", run=rec.run, status="ok" if rec.outcome == "ok" else "failed",
                          summary=f"{who}: {rec.action} of {rec.path!r} from run {rec.run}: {rec.outcome}",
                          counts={"files": rec.files, "bytes": rec.bytes}, deployment=self.deployment,
                          audit=doc)
            threading.Thread(target=notify_all, args=(self.webhooks, event), daemon=True,
                             name="jdr-audit-webhook").start()
