"""``jdr serve`` authorization, attacked through the real hub and service (tests/fixtures/hub_server.py).

Threat: a logged-in hub user reaches another user's backups — by editing URLs (user, run, entry ids,
server names, encodings), by replaying another user's XSRF token, by asking for a job id, or without
logging in at all. Every attempt must be refused (403/404) with no byte of the victim's data in the
answer, and nothing restored anywhere. Also: a restore never follows a link the user planted in their
home (``restored`` pointing outside), and every page carries the strict CSP.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from tests.fixtures.hub_server import ServeHub, xsrf_of
from tests.serveutil import entry_id, entry_url, run_url, start_restore, user_url, wait_job

ALICE_SECRETS = ("Thesis, chapter 1", "finish chapter 2", "math.pi", "thesis.ipynb", "todo.txt", "analysis.py")


def _no_alice_data(r: requests.Response) -> None:
    body = r.content
    for s in ALICE_SECRETS:
        assert s.encode() not in body, f"{r.request.method} {r.url} leaked {s!r}"
    assert not body.startswith(b"PK"), "a zip was sent"


def _tree(p: Path) -> list[str]:
    return sorted(str(x.relative_to(p)) for x in p.rglob("*")) if p.exists() else []


def test_bob_cannot_reach_any_of_alices_urls(serve_hub: ServeHub) -> None:
    alice = serve_hub.service_session("alice")
    bob = serve_hub.service_session("bob")
    old, new = serve_hub.runs
    ids = {path: entry_id(alice, serve_hub, "alice", old, path)
           for path in ("thesis.ipynb", "notes", "notes/todo.txt", "project")}
    alice_restored = _tree(serve_hub.home("alice"))
    bob_home = _tree(serve_hub.home("bob"))
    audit_before = len(serve_hub.audit())
    gets = [user_url(serve_hub, "alice"), user_url(serve_hub, "alice") + "search?q=thesis",
            user_url(serve_hub, "ALICE"), user_url(serve_hub, "alice%2F..%2Fbob")]
    for run in (old, new):
        gets.append(run_url(serve_hub, "alice", run))
        gets.append(run_url(serve_hub, "alice", run) + f"&dir={ids['notes']}")
        for eid in ids.values():
            for action in ("preview", "download"):
                gets.append(entry_url(serve_hub, "alice", run, eid, action))
    for url in gets:
        r = bob.get(url, allow_redirects=False, timeout=30)
        assert r.status_code in (403, 404), (url, r.status_code)
        _no_alice_data(r)
    # Bob's own URLs with alice's run and entry ids: his own view of the same run, never her entries.
    for eid in ids.values():
        for action in ("preview", "download"):
            r = bob.get(entry_url(serve_hub, "bob", old, eid, action), allow_redirects=False, timeout=30)
            _no_alice_data(r)
    # POSTs: with bob's own, valid XSRF token, on alice's entries: refused before anything runs.
    token = xsrf_of(bob, bob.get(run_url(serve_hub, "bob", old), timeout=30).text)
    for eid in ids.values():
        for mode in ("into", "replace"):
            r = bob.post(entry_url(serve_hub, "alice", old, eid, "restore"),
                         data={"_xsrf": token, "mode": mode}, allow_redirects=False, timeout=30)
            assert r.status_code in (403, 404), (eid, mode, r.status_code)
            _no_alice_data(r)
    # Alice's job page: not bob's, whoever guesses the id.
    r = start_restore(alice, serve_hub, "alice", old, ids["notes/todo.txt"])
    assert r.status_code == 303
    job_path = r.headers["Location"]
    wait_job(alice, serve_hub.url + job_path)
    job_id = job_path.rsplit("/", 1)[-1]
    for url in (serve_hub.url + job_path, serve_hub.url + job_path + ".json",
                f"{user_url(serve_hub, 'bob')}job/{job_id}", f"{user_url(serve_hub, 'bob')}job/{job_id}.json"):
        r = bob.get(url, allow_redirects=False, timeout=30)
        assert r.status_code in (403, 404), (url, r.status_code)
        assert b"todo.txt" not in r.content
    # Nothing of bob's home changed, alice's only by her own restore; no audit record names bob as
    # having obtained anything of alice's.
    assert _tree(serve_hub.home("bob")) == bob_home
    assert len(_tree(serve_hub.home("alice"))) > len(alice_restored)
    for rec in serve_hub.audit()[audit_before:]:
        assert not (rec["actor"] == "bob" and rec["user"] == "alice"), rec
    # The admin page too.
    assert bob.get(serve_hub.service + "audit", timeout=30).status_code == 403


def test_without_a_hub_login_nothing_is_served(serve_hub: ServeHub) -> None:
    anon = requests.Session()
    old = serve_hub.runs[0]
    for url in (serve_hub.service, user_url(serve_hub, "alice"), run_url(serve_hub, "alice", old),
                entry_url(serve_hub, "alice", old, 1, "download")):
        r = anon.get(url, timeout=30)
        assert r.url.startswith(serve_hub.url + "/hub/login"), (url, r.url)  # sent to the hub's login page
        _no_alice_data(r)
    # A forged service cookie (any value) is not an identity.
    forged = requests.Session()
    forged.cookies.set("jupyterhub-services", "alice", path="/services/jdr/")
    r = forged.get(user_url(serve_hub, "alice"), allow_redirects=False, timeout=30)
    assert r.status_code == 302 and "/hub/" in r.headers["Location"]
    # A token-authenticated API call with another user's name in the URL is no better.
    r = requests.get(user_url(serve_hub, "alice"), headers={"Authorization": "token not-a-token"},
                     allow_redirects=False, timeout=30)
    assert r.status_code in (302, 403)
    _no_alice_data(r)


def test_entry_ids_and_runs_from_the_client_are_only_ids(serve_hub: ServeHub) -> None:
    alice = serve_hub.service_session("alice")
    old = serve_hub.runs[0]
    base = user_url(serve_hub, "alice") + f"run/{old}/entry/"
    for bad in ("-1", "999999", "0", "1e3", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd"):
        r = alice.get(base + bad + "/download", allow_redirects=False, timeout=30)
        assert r.status_code == 404, (bad, r.status_code)
        assert b"root:" not in r.content
    # (".." itself would be resolved by the client; its encoded forms reach the service.)
    for run in ("%2E%2E", "...", "latest", quote("../runs", safe=""), "20990101T000000Z-ffffff"):
        r = alice.get(user_url(serve_hub, "alice") + f"run/{run}/", allow_redirects=False, timeout=30)
        assert r.status_code == 404, (run, r.status_code)
    # A folder's zip holds that folder's entries only: no link is followed (project/passwd-link points
    # at /etc/passwd, project/data/up-link at ../../../etc/passwd: both are in the zip as links, their
    # targets as data), no name climbs out.
    r = alice.get(entry_url(serve_hub, "alice", old, entry_id(alice, serve_hub, "alice", old, "project"),
                            "download"), timeout=60)
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        names = z.namelist()
    assert sorted(names) == ["project/", "project/analysis.py", "project/data/", "project/data/table.csv",
                             "project/data/up-link", "project/passwd-link"]
    assert all(n.startswith("project/") and ".." not in n.split("/") for n in names)
    assert b"root:" not in r.content


def test_a_restore_never_follows_a_link_planted_in_the_home(serve_hub: ServeHub, tmp_path: Path) -> None:
    alice = serve_hub.service_session("alice")
    old = serve_hub.runs[0]
    home = serve_hub.home("alice")
    outside = tmp_path / "outside"
    outside.mkdir()
    restored = home / "restored"
    moved = None
    if restored.exists():
        moved = home / "restored.before-link-test"
        os.rename(restored, moved)
    os.symlink(outside, restored)
    try:
        eid = entry_id(alice, serve_hub, "alice", old, "project/analysis.py")
        r = start_restore(alice, serve_hub, "alice", old, eid)
        assert r.status_code == 303
        job = wait_job(alice, serve_hub.url + r.headers["Location"])
        assert job["state"] == "failed", job
        assert "symlink" in job["error"] or "link" in job["error"]
        assert list(outside.iterdir()) == []  # nothing written through the link
        assert os.readlink(restored) == str(outside)
        rec = serve_hub.audit()[-1]
        assert (rec["action"], rec["outcome"], rec["actor"]) == ("restore", "failed", "alice")
    finally:
        os.unlink(restored)
        if moved is not None:
            os.rename(moved, restored)


@pytest.mark.parametrize("page", ["", "u/alice/", "u/alice/search?q=thesis", "audit", "nope"])
def test_every_page_has_the_strict_csp(serve_hub: ServeHub, page: str) -> None:
    alice = serve_hub.service_session("alice")
    r = alice.get(serve_hub.service + page, timeout=30)
    csp = r.headers.get("Content-Security-Policy", "")
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp, (page, csp)
    assert r.headers.get("X-Content-Type-Options") == "nosniff"
    assert "<script>" not in r.text and " style=" not in r.text
