"""Restore jobs of the running service: started by a POST, watched by the page until they end."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

_KEEP = 3600.0  # seconds a finished job stays visible


@dataclass
class Job:
    id: str
    user: str  # whose home
    actor: str  # who started it
    run: str
    server: str
    path: str
    replace: bool
    state: str = "running"  # running | done | failed
    files: int = 0
    bytes: int = 0
    total_bytes: int = 0
    target: str = ""
    previous: str = ""
    error: str = ""
    started: float = field(default_factory=time.time)
    ended: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "run": self.run, "server": self.server, "path": self.path,
                "replace": self.replace, "files": self.files, "bytes": self.bytes,
                "total_bytes": self.total_bytes, "target": self.target, "previous": self.previous,
                "error": self.error}


class Jobs:
    """Jobs by id. :meth:`get` returns a job only to the user it belongs to (an administrator acting
    for that user included: the caller passes the user the request is authorized for)."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def new(self, **kw: Any) -> Job:
        job = Job(id=secrets.token_urlsafe(12), **kw)
        with self._lock:
            now = time.time()
            for k in [k for k, j in self._jobs.items() if j.ended and now - j.ended > _KEEP]:
                del self._jobs[k]
            self._jobs[job.id] = job
        return job

    def get(self, job_id: str, user: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        return job if job is not None and job.user == user else None
