"""Helpers for the ``jdr serve`` tests: find runs and entries in the service's pages, start restores and
wait for them (the job's JSON, polled; the job cannot end before the restore has)."""

from __future__ import annotations

import html
import re
import time
from typing import Any
from urllib.parse import quote

import requests

from tests.fixtures.hub_server import ServeHub, xsrf_of


def user_url(sh: ServeHub, user: str) -> str:
    return f"{sh.service}u/{quote(user, safe='')}/"


def run_url(sh: ServeHub, user: str, run: str, server: str = "") -> str:
    return f"{user_url(sh, user)}run/{run}/?server={quote(server, safe='')}"


def entry_url(sh: ServeHub, user: str, run: str, entry: int, action: str, server: str = "") -> str:
    return f"{user_url(sh, user)}run/{run}/entry/{entry}/{action}?server={quote(server, safe='')}"


def listing(s: requests.Session, sh: ServeHub, user: str, run: str, dir_id: int = 0) -> dict[str, int]:
    """Name -> entry id of the entries of one folder of a run, as the files page lists them."""
    r = s.get(run_url(sh, user, run) + f"&dir={dir_id}", timeout=30)
    assert r.status_code == 200, (r.status_code, r.text[:500])
    out: dict[str, int] = {}
    for m in re.finditer(r'<tr class="(\w+)" data-entry="(\d+)">\s*<td class="name">\s*(?:<a [^>]*>)?([^<]*?)/?\s*(?:</a>|<|$)',
                         r.text):
        out[html.unescape(m.group(3)).strip()] = int(m.group(2))
    return out


def entry_id(s: requests.Session, sh: ServeHub, user: str, run: str, path: str) -> int:
    """The entry id of ``path`` in ``run``, walking folders through the pages."""
    dir_id = 0
    parts = path.split("/")
    for i, part in enumerate(parts):
        names = listing(s, sh, user, run, dir_id)
        assert part in names, f"{part!r} not in {sorted(names)}"
        if i == len(parts) - 1:
            return names[part]
        dir_id = names[part]
    raise AssertionError(path)


def start_restore(s: requests.Session, sh: ServeHub, user: str, run: str, entry: int,
                  mode: str = "into") -> requests.Response:
    """POST the restore form of a file's preview page (or the folder's page), with its XSRF token."""
    page = s.get(run_url(sh, user, run), timeout=30)
    token = xsrf_of(s, page.text)
    return s.post(entry_url(sh, user, run, entry, "restore"), data={"_xsrf": token, "mode": mode},
                  allow_redirects=False, timeout=30)


def wait_job(s: requests.Session, job_page: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll the job's JSON until it is no longer running; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        r = s.get(job_page + ".json", timeout=30)
        assert r.status_code == 200, (r.status_code, r.text[:300])
        job: dict[str, Any] = r.json()
        if job["state"] != "running":
            return job
        assert time.monotonic() < deadline, f"restore still running after {timeout}s: {job}"
        time.sleep(0.1)
