"""``jdr serve`` end to end: a real hub (DummyAuthenticator, real OAuth login through the hub's own
pages), jdr serve started by the hub as a managed service, real backups of a local deployment
(tests/fixtures/hub_server.py). What a user does: see their backups, find yesterday's notebook, preview
it, download it and a folder, restore it into ~/restored/ or over the current file; what an administrator
sees; the limits and the audit trail."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import zipfile
from pathlib import Path

import pytest

from dr.serve.app import build_context
from dr.settings import load_settings
from tests.fixtures.hub_server import NOTEBOOK_V1, NOTEBOOK_V2, SERVE_UIDS, ServeHub, xsrf_of
from tests.serveutil import entry_id, entry_url, listing, run_url, start_restore, user_url, wait_job


def test_login_through_the_hub_and_see_own_runs_newest_first(serve_hub: ServeHub) -> None:
    s = serve_hub.login("alice")
    r = s.get(serve_hub.service, timeout=60)  # -> hub authorize -> callback -> /u/alice/
    assert r.status_code == 200, r.text[:500]
    assert r.url == user_url(serve_hub, "alice")
    assert any("/hub/api/oauth2/authorize" in h.url for h in r.history), [h.url for h in r.history]
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in r.text and "<style" not in r.text and " on" + "click=" not in r.text
    shown = re.findall(r"/run/([^/]+)/\?server=", r.text)
    assert shown == list(reversed(serve_hub.runs)), shown  # newest first, one row per run (one server)
    # Dates: ISO for the browser's script to show in its zone, text in the configured zone meanwhile.
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT', r.text)


def test_browse_preview_and_search_every_version(serve_hub: ServeHub) -> None:
    s = serve_hub.service_session("alice")
    old, new = serve_hub.runs
    names = listing(s, serve_hub, "alice", old)
    assert {"thesis.ipynb", "notes", "project", "big.bin", "etc-link"} <= set(names)
    eid = names["thesis.ipynb"]
    r = s.get(entry_url(serve_hub, "alice", old, eid, "preview"), timeout=30)
    assert r.status_code == 200
    # The notebook is rendered cell by cell, everything escaped: its HTML output is text, not markup.
    assert "Thesis, chapter 1" in r.text
    assert "&lt;b&gt;42&lt;/b&gt;" in r.text and "<b>42</b>" not in r.text
    assert "Chapter 2" not in r.text  # yesterday's version
    r2 = s.get(entry_url(serve_hub, "alice", new, entry_id(s, serve_hub, "alice", new, "thesis.ipynb"),
                         "preview"), timeout=30)
    assert "Chapter 2 &lt;script&gt;alert(1)&lt;/script&gt;" in r2.text and "<script>alert" not in r2.text
    todo = entry_id(s, serve_hub, "alice", old, "notes/todo.txt")
    r3 = s.get(entry_url(serve_hub, "alice", old, todo, "preview"), timeout=30)
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in r3.text or "&lt;script&gt;" in r3.text
    # Search: every version of thesis.ipynb across runs (yesterday's and today's), none of bob's.
    r4 = s.get(user_url(serve_hub, "alice") + "search", params={"q": "thesis"}, timeout=30)
    assert r4.status_code == 200
    rows = re.findall(r'<tr>\s*<td class="name">([^<]*)</td>\s*<td>([^<]*)</td>.*?<td>(.*?)</td>\s*</tr>',
                      r4.text, re.S)
    assert [row[0].strip() for row in rows] == ["thesis.ipynb", "thesis.ipynb"], rows
    runs_per_version = [re.findall(r'class="version"[^>]*>([^<]+)<', row[2]) for row in rows]
    assert sorted(map(tuple, runs_per_version)) == sorted([(new,), (old,)])
    assert "owner" not in r4.text and "bob" not in r4.text


def test_download_a_file_and_a_folder_as_zip(serve_hub: ServeHub, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    s = serve_hub.service_session("alice")
    old = serve_hub.runs[0]
    eid = entry_id(s, serve_hub, "alice", old, "thesis.ipynb")
    r = s.get(entry_url(serve_hub, "alice", old, eid, "download"), timeout=60)
    assert r.status_code == 200 and r.headers["Content-Disposition"].startswith("attachment")
    assert json.loads(r.content) == NOTEBOOK_V1
    folder = entry_id(s, serve_hub, "alice", old, "project")
    r = s.get(entry_url(serve_hub, "alice", old, folder, "download"), timeout=60)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/zip"
    # The zip's size was known before its first byte (the browser's progress), and is exactly what came.
    assert int(r.headers["Content-Length"]) == len(r.content)
    # Every file's bytes are the index's (its SHA-256, read by jdr's own code); folders come as folders,
    # links as links: the target is the entry's data, never what it points to (the server reads no
    # /etc/passwd, whether the target is absolute or climbs out of the home).
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the catalog this test's reader caches
    ctx = build_context(load_settings(serve_hub.config, serve_hub.env))
    _, item = ctx.service.volume("alice", old, "")
    index = {e.path.decode(): e for e in ctx.service.entries(item)}
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert sorted(z.namelist()) == ["project/", "project/analysis.py", "project/data/",
                                        "project/data/table.csv", "project/data/up-link", "project/passwd-link"]
        for name in ("project/analysis.py", "project/data/table.csv"):
            assert hashlib.sha256(z.read(name)).hexdigest() == index[name].sha256, name
        links = {n: z.read(n) for n in ("project/passwd-link", "project/data/up-link")}
        assert links == {"project/passwd-link": b"/etc/passwd", "project/data/up-link": b"../../../etc/passwd"}
        assert all(stat.S_ISLNK(z.getinfo(n).external_attr >> 16) for n in links)
        assert z.getinfo("project/data/").is_dir()
    assert Path("/etc/passwd").read_bytes()[:64] not in r.content
    audit = [a for a in serve_hub.audit() if a["action"] == "download" and a["actor"] == "alice"]
    assert {(a["path"], a["outcome"], a["run"]) for a in audit} >= {("thesis.ipynb", "ok", old),
                                                                      ("project", "ok", old)}


def test_restore_yesterdays_notebook_into_restored_then_replace(serve_hub: ServeHub) -> None:
    s = serve_hub.service_session("alice")
    old = serve_hub.runs[0]
    home = serve_hub.home("alice")
    current = (home / "thesis.ipynb").read_bytes()
    eid = entry_id(s, serve_hub, "alice", old, "thesis.ipynb")
    r = start_restore(s, serve_hub, "alice", old, eid)
    assert r.status_code == 303, r.text[:300]
    job_page = serve_hub.url + r.headers["Location"]
    page = s.get(job_page, timeout=30)
    assert page.status_code == 200 and 'id="job"' in page.text
    job = wait_job(s, job_page)
    assert job["state"] == "done", job
    # The job page shown after the end carries the notice itself (no script needed to see it).
    assert re.search(r'id="notice" class="notice ok">Your restore of thesis.ipynb is complete', s.get(
        job_page, timeout=30).text)
    target = Path(job["target"])
    assert target.parent == home / "restored" and re.fullmatch(r"\d{4}-\d\d-\d\d(-\d+)?", target.name)
    restored = target / "thesis.ipynb"
    assert json.loads(restored.read_bytes()) == NOTEBOOK_V1
    st = os.lstat(restored)
    assert (st.st_uid, st.st_gid) == (SERVE_UIDS["alice"], 100)
    assert (os.lstat(target).st_uid, os.lstat(home / "restored").st_uid) == (SERVE_UIDS["alice"],) * 2
    assert (home / "thesis.ipynb").read_bytes() == current  # nothing existing was touched
    rec = serve_hub.webhook.wait_for(lambda e: e.get("event") == "self-service"
                                     and e["audit"]["action"] == "restore" and e["audit"]["outcome"] == "ok")
    assert rec["audit"]["user"] == "alice" and rec["audit"]["run"] == old
    # Replace: yesterday's version over the current file, which is kept beside it.
    r = start_restore(s, serve_hub, "alice", old, eid, mode="replace")
    assert r.status_code == 303
    job = wait_job(s, serve_hub.url + r.headers["Location"])
    assert job["state"] == "done", job
    assert json.loads((home / "thesis.ipynb").read_bytes()) == NOTEBOOK_V1
    kept = Path(job["previous"])
    assert kept.parent == home and re.fullmatch(r"thesis\.jdr-\d{8}T\d{6}Z(-\d+)?\.ipynb", kept.name)
    assert kept.read_bytes() == current and json.loads(current) == NOTEBOOK_V2
    assert os.lstat(home / "thesis.ipynb").st_uid == SERVE_UIDS["alice"]
    actions = [(a["action"], a["outcome"]) for a in serve_hub.audit() if a["actor"] == "alice"]
    assert actions.count(("restore", "ok")) >= 2


def test_limits_size_one_restore_at_a_time_and_download_rate(serve_hub: ServeHub) -> None:
    s = serve_hub.service_session("alice")
    old = serve_hub.runs[0]
    big = entry_id(s, serve_hub, "alice", old, "big.bin")
    r = start_restore(s, serve_hub, "alice", old, big)
    assert r.status_code == 413 and "ask an administrator" in r.text
    assert not list((serve_hub.home("alice") / "restored").glob("*/big.bin"))
    # One restore per user at a time: the first waits in its extraction (test hook) while the second asks.
    notes = entry_id(s, serve_hub, "alice", old, "notes")
    with serve_hub.hold_restores():
        first = start_restore(s, serve_hub, "alice", old, notes)
        assert first.status_code == 303
        second = start_restore(s, serve_hub, "alice", old, notes)
        assert second.status_code == 409 and "already running" in second.text
    assert wait_job(s, serve_hub.url + first.headers["Location"])["state"] == "done"
    # Downloads: carol may start 12 an hour; the 13th is refused with Retry-After.
    c = serve_hub.service_session("carol")
    small = entry_id(c, serve_hub, "carol", old, "small.txt")
    url = entry_url(serve_hub, "carol", old, small, "download")
    codes = [c.get(url, timeout=30).status_code for _ in range(12)]
    assert codes == [200] * 12
    refused = c.get(url, timeout=30)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert any(a["actor"] == "carol" and a["detail"] == "rate limit" for a in serve_hub.audit())


def test_admin_acts_for_any_user_and_reads_the_audit_log(serve_hub: ServeHub) -> None:
    a = serve_hub.service_session("admin")
    old = serve_hub.runs[0]
    r = a.get(user_url(serve_hub, "alice"), timeout=30)
    assert r.status_code == 200 and f"/run/{old}/" in r.text
    eid = entry_id(a, serve_hub, "alice", old, "project/analysis.py")
    d = a.get(entry_url(serve_hub, "alice", old, eid, "download"), timeout=30)
    assert d.status_code == 200 and d.content == b"import math\nprint(math.pi)\n"
    rec = [x for x in serve_hub.audit() if x["actor"] == "admin" and x["action"] == "download"]
    assert rec and rec[-1]["user"] == "alice" and rec[-1]["path"] == "project/analysis.py"
    page = a.get(serve_hub.service + "audit", timeout=30)
    assert page.status_code == 200 and "project/analysis.py" in page.text
    # Not for users.
    alice = serve_hub.service_session("alice")
    assert alice.get(serve_hub.service + "audit", timeout=30).status_code == 403


def test_every_post_needs_the_xsrf_token(serve_hub: ServeHub) -> None:
    s = serve_hub.service_session("alice")
    old = serve_hub.runs[0]
    eid = entry_id(s, serve_hub, "alice", old, "project/analysis.py")
    before = sorted(p.name for p in (serve_hub.home("alice") / "restored").glob("*")) \
        if (serve_hub.home("alice") / "restored").exists() else []
    for data in ({"mode": "into"}, {"mode": "into", "_xsrf": "forged"}):
        r = s.post(entry_url(serve_hub, "alice", old, eid, "restore"), data=data, allow_redirects=False,
                   timeout=30)
        assert r.status_code == 403, (data, r.status_code)
    after = sorted(p.name for p in (serve_hub.home("alice") / "restored").glob("*")) \
        if (serve_hub.home("alice") / "restored").exists() else []
    assert after == before
    # The token of one user's page is refused in another user's session.
    bob = serve_hub.service_session("bob")
    bob_token = xsrf_of(bob, bob.get(run_url(serve_hub, "bob", old), timeout=30).text)
    r = s.post(entry_url(serve_hub, "alice", old, eid, "restore"), data={"_xsrf": bob_token, "mode": "into"},
               allow_redirects=False, timeout=30)
    assert r.status_code == 403
