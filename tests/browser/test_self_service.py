"""``jdr serve`` in a real browser (issue 13): a person logs in to the hub, opens the jdr service from the
hub's Services menu, finds yesterday's notebook, previews, downloads and restores it, and sees the in-page
notice when the restore is done; another person tries every URL of the first one's session and reaches
nothing. Screenshots of each main page go to the test output (tests/browser/conftest.py says where).

The hub, the service and the backups are ``serve_hub`` (tests/fixtures/hub_server.py): a real jupyterhub
with DummyAuthenticator, ``jdr serve`` started by the hub, two real ``jdr backup`` runs of the local
deployment (``runs[0]`` "yesterday", then today after alice changed her thesis).
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

from tests.browser.conftest import hub_login
from tests.fixtures.hub_server import NOTEBOOK_V1, PASSWORD, SERVE_UIDS, ServeHub

# Names that exist only in alice's home: none of them may ever appear on a page bob is shown.
ALICE_ONLY = ("alice", "todo.txt", "table.csv", "analysis.py", "big.bin", "etc-link", "Thesis, chapter 1")


def open_service_from_hub(page: Any, hub: ServeHub, user: str) -> None:
    """Log in through the hub's form, then open jdr from the hub's Services menu (a click, not a URL): the
    service's OAuth round trip through the hub ends on the user's own runs page."""
    hub_login(page, hub.url, user, PASSWORD)
    page.get_by_role("button", name="Services").or_(page.get_by_text("Services", exact=True)).first.click()
    page.locator("a.dropdown-item", has_text="jdr").click()
    page.wait_for_url(f"{hub.service}u/{user}/")


def row_of(page: Any, name: str) -> Any:
    """The file-browser row whose name cell is exactly ``name`` (a folder shows as ``name/``)."""
    return page.locator("table.files tbody tr").filter(
        has=page.locator("td.name", has_text=re.compile(rf"^\s*{re.escape(name)}/?(\s|$)")))


def test_alice_finds_previews_downloads_and_restores_yesterdays_notebook(serve_hub: ServeHub, new_page,
                                                                         screenshot, tmp_path):
    yesterday, today = serve_hub.runs
    home = serve_hub.home("alice")
    page = new_page()
    open_service_from_hub(page, serve_hub, "alice")

    # Runs list: newest first, one row per backup, dates shown by the page's script in the browser's zone.
    rows = page.locator("table.runs tbody tr")
    assert rows.count() == 2
    hrefs = [rows.nth(i).locator("a.open").get_attribute("href") for i in range(2)]
    assert [f"/run/{today}/" in hrefs[0], f"/run/{yesterday}/" in hrefs[1]] == [True, True], hrefs
    first_time = rows.nth(1).locator("time")
    assert first_time.get_attribute("title"), "the local-time script did not run (CSP or a script error)"
    screenshot(page, "runs")

    # Search: every version of thesis.ipynb, found by typing into the page's search box.
    page.fill("form.search input[name=q]", "thesis.ipynb")
    page.click("form.search button[type=submit]")
    page.wait_for_url(re.compile(r".*/search\?q=thesis\.ipynb"))
    versions = page.locator("table.versions tbody tr")
    assert versions.count() == 2
    assert sorted(versions.locator("a.version").all_inner_texts()) == sorted([yesterday, today])
    assert "owner" not in page.content()  # bob's thesis.ipynb is not alice's
    screenshot(page, "search")

    # Yesterday's backup, the oldest row of the runs list: the file browser.
    page.go_back()
    page.locator("table.runs tbody tr").nth(1).locator("a.open").click()
    page.wait_for_url(re.compile(rf".*/run/{re.escape(yesterday)}/.*"))
    names = {t.strip() for t in page.locator("table.files td.name").all_inner_texts()}
    assert {"thesis.ipynb", "notes/", "project/", "big.bin"} <= {n.split(" ")[0] for n in names}, names
    screenshot(page, "files")

    # Download the notebook: the browser's own download; the bytes are yesterday's.
    with page.expect_download() as dl:
        row_of(page, "thesis.ipynb").get_by_role("link", name="Download").click()
    saved = tmp_path / "thesis.ipynb"
    dl.value.save_as(saved)
    assert dl.value.suggested_filename == "thesis.ipynb"
    assert json.loads(saved.read_bytes()) == NOTEBOOK_V1

    # And the project folder as a zip: what is in it is what is in alice's home (unchanged since). The
    # page's progress bar follows the response (its Content-Length is the zip's exact size) to 100 %.
    with page.expect_download() as dlz:
        row_of(page, "project").get_by_role("link", name="Zip").click()
    zpath = tmp_path / "project.zip"
    dlz.value.save_as(zpath)
    assert dlz.value.suggested_filename == "project.zip"
    progress = page.locator("#download-progress")
    progress.locator(".pct").filter(has_text="100 %").wait_for()
    bar = progress.locator("progress")
    assert bar.evaluate("b => [b.value, b.max]") == [zpath.stat().st_size] * 2
    assert "Downloaded project.zip" in progress.inner_text() and "ok" in (progress.get_attribute("class") or "")
    screenshot(page, "download-progress")
    with zipfile.ZipFile(zpath) as z:
        assert sorted(z.namelist()) == ["project/", "project/analysis.py", "project/data/",
                                        "project/data/table.csv", "project/data/up-link", "project/passwd-link"]
        assert z.read("project/passwd-link") == b"/etc/passwd"  # a link, as a link
        assert z.read("project/data/table.csv") == (home / "project/data/table.csv").read_bytes()

    # Preview: the notebook rendered read-only, yesterday's version (no chapter 2).
    row_of(page, "thesis.ipynb").get_by_role("link", name="Preview").click()
    page.wait_for_url(re.compile(r".*/preview\?.*"))
    preview = page.locator("div.preview")
    assert "Thesis, chapter 1" in preview.inner_text()
    assert "Chapter 2" not in preview.inner_text()
    screenshot(page, "preview")

    # Restore into ~/restored/<date>/. The restore is held in its extraction until the job page is shown,
    # so the page's script sees it running and must itself notice the end (the in-page notification).
    current = (home / "thesis.ipynb").read_bytes()
    with serve_hub.hold_restores():
        page.get_by_role("button", name="Restore into ~/restored/").click()
        page.wait_for_url(re.compile(r".*/job/[A-Za-z0-9_-]+$"))
        assert page.locator("#job").get_attribute("data-state") == "running"
        assert page.locator("#notice").is_hidden()
    notice = page.locator("#notice")
    notice.wait_for(state="visible")
    assert "complete" in notice.inner_text(), notice.inner_text()
    status = page.locator("#job-status").inner_text()
    screenshot(page, "restore-done")
    m = re.search(r"in (\S+?)\.?$", status.strip())
    assert m, status
    target = Path(m.group(1))
    assert target.parent == home / "restored" and re.fullmatch(r"\d{4}-\d\d-\d\d(-\d+)?", target.name), target
    restored = target / "thesis.ipynb"
    assert restored.read_bytes() == json.dumps(NOTEBOOK_V1).encode()
    assert restored.stat().st_uid == SERVE_UIDS["alice"]
    assert (home / "thesis.ipynb").read_bytes() == current  # nothing existing touched


def _alice_urls(serve_hub: ServeHub, page: Any) -> dict[str, str]:
    """Every kind of URL alice's session reaches, taken from her pages (not built from the code)."""
    yesterday = serve_hub.runs[0]
    base = f"{serve_hub.service}u/alice/"
    page.goto(f"{base}run/{yesterday}/?server=")
    thesis = row_of(page, "thesis.ipynb")
    urls = {
        "runs": base,
        "search": f"{base}search?q=thesis.ipynb",
        "files": page.url,
        "preview": serve_hub.url + thesis.get_by_role("link", name="Preview").get_attribute("href"),
        "download": serve_hub.url + thesis.get_by_role("link", name="Download").get_attribute("href"),
        "zip": serve_hub.url + row_of(page, "project").get_by_role("link", name="Zip").get_attribute("href"),
        "restore": serve_hub.url + thesis.locator("form.restore").get_attribute("action"),
        "folder": serve_hub.url + row_of(page, "project").locator("a").first.get_attribute("href"),
    }
    with serve_hub.hold_restores():  # a job of alice's, so bob can try its page too
        thesis.get_by_role("button", name="Restore").click()
        page.wait_for_url(re.compile(r".*/job/[A-Za-z0-9_-]+$"))
        urls["job"] = page.url
        urls["job.json"] = page.url + ".json"
    page.locator("#notice").wait_for(state="visible")
    return urls


def _visit(page: Any, url: str) -> tuple[int, bytes]:
    """Open ``url`` in the page as a person would (address bar); (status, body) of what the browser got. A
    download has no page: then the same request is made with the page's cookies to see its bytes."""
    from playwright.sync_api import Error as PlaywrightError

    try:
        resp = page.goto(url)
    except PlaywrightError as exc:
        if "Download is starting" not in str(exc):
            raise
        r = page.context.request.get(url)
        return r.status, r.body()
    assert resp is not None, url
    return resp.status, resp.body()


def test_bob_reaches_none_of_alices_urls(serve_hub: ServeHub, new_page, screenshot):
    alice = new_page()
    open_service_from_hub(alice, serve_hub, "alice")
    urls = _alice_urls(serve_hub, alice)
    restored_before = sorted(p.name for p in (serve_hub.home("alice") / "restored").iterdir())

    bob = new_page()
    open_service_from_hub(bob, serve_hub, "bob")
    assert not any(n in bob.content() for n in ALICE_ONLY)
    screenshot(bob, "bob-runs")

    # The same URLs, and the variants a curious user would try: another spelling of alice's name, bob's
    # name with alice's run/entry/job ids, path tricks. Each answers an error page or bob's own data.
    variants = dict(urls)
    for key, url in urls.items():
        for alias in ("ALICE", "%61lice", "bob%2F..%2Falice"):
            variants[f"{key}@{alias}"] = url.replace("/u/alice/", f"/u/{alias}/")
        variants[f"{key}@bob"] = url.replace("/u/alice/", "/u/bob/")
    variants["files@user-param"] = urls["files"] + "&user=alice"
    variants["runs@user-param"] = f"{serve_hub.service}?user=alice"

    alice_bytes = json.dumps(NOTEBOOK_V1).encode()
    for key, url in variants.items():
        # alice's own URLs are opened in bob's browser tab; the variants go through the same browser
        # context's cookies without rendering a page each (the same request, a fraction of the time).
        if key in urls:
            status, body = _visit(bob, url)
        else:
            r = bob.context.request.get(url)
            status, body = r.status, r.body()
        if key.endswith(("@bob", "@user-param")) and status == 200:
            # Bob's own URL with alice's ids, or a user parameter (ignored: identity comes from the hub):
            # whatever it shows is bob's, never alice's bytes or names.
            assert alice_bytes not in body, (key, url)
        else:
            # 405: a GET of a restore URL (POST only) is refused before anything is looked up.
            allowed = (403, 404, 405) if key.startswith("restore") else (403, 404)
            assert status in allowed, (key, url, status)
        text = body.decode(errors="replace")
        assert not [n for n in ALICE_ONLY if n in text], (key, url, [n for n in ALICE_ONLY if n in text])
        assert b"1,1\n2,4\n" not in body, (key, url)

    # Restore: a form post from bob's page, with bob's own XSRF token, to alice's restore URL. The same post
    # to bob's own restore URL is the control: it is accepted (303 to his job page), so the refusals below
    # are the authorization's doing, not a missing token's.
    bob.goto(f"{serve_hub.service}u/bob/run/{serve_hub.runs[0]}/?server=")
    own = serve_hub.url + row_of(bob, "bob-private.txt").locator("form.restore").get_attribute("action")
    post = """async ([url]) => {
        const token = (document.cookie.match(/(?:^|;\\s*)_xsrf=([^;]*)/) || [])[1] || "";
        const body = new URLSearchParams({_xsrf: decodeURIComponent(token), mode: "into"});
        // The header too: the redirected GET of the job page is a script request, which the hub's
        // XSRF check covers as well.
        const r = await fetch(url, {method: "POST", body, credentials: "same-origin",
                                    headers: {"X-XSRFToken": decodeURIComponent(token)}});
        return [r.status, r.redirected ? r.url : ""]; }"""
    status, job = bob.evaluate(post, [own])
    assert status == 200 and re.search(r"/u/bob/job/[A-Za-z0-9_-]+$", job), (status, job)
    bob.goto(job)  # let bob's restore end, so later tests of the session find no restore of his running
    bob.wait_for_function("() => document.getElementById('job').dataset.state !== 'running'")
    for url in (urls["restore"], urls["restore"].replace("/u/alice/", "/u/ALICE/")):
        status, job = bob.evaluate(post, [url])
        assert status in (403, 404) and not job, (url, status, job)
    bob.goto(urls["files"])  # what bob sees at alice's file browser
    screenshot(bob, "bob-refused")
    assert sorted(p.name for p in (serve_hub.home("alice") / "restored").iterdir()) == restored_before


def test_the_admin_acts_for_alice_and_reads_the_audit_log_alice_cannot(serve_hub: ServeHub, new_page,
                                                                       screenshot):
    """The hub's admin (``admin:users``) picks alice on the users page, restores one of her files into
    her home (bytes and owner checked on disk), and finds that restore in the audit log: who, for whom,
    what, which run, when. Alice, no admin, reaches neither the picker nor the audit log."""
    yesterday = serve_hub.runs[0]
    home = serve_hub.home("alice")
    page = new_page()
    open_service_from_hub(page, serve_hub, "admin")
    page.select_option("#pick-user", "alice")
    page.click("#pick-go")
    page.wait_for_url(f"{serve_hub.service}u/alice/")
    assert "Backups of alice" in page.locator("h1").inner_text()
    screenshot(page, "admin-users")

    page.locator("table.runs tbody tr").nth(1).locator("a.open").click()
    page.wait_for_url(re.compile(rf".*/u/alice/run/{re.escape(yesterday)}/.*"))
    row_of(page, "notes").locator("a").first.click()
    page.wait_for_url(re.compile(r".*&dir=\d+$"))
    with serve_hub.hold_restores():  # held until the job page shows it running: its script sees the end
        row_of(page, "todo.txt").get_by_role("button", name="Restore").click()
        page.wait_for_url(re.compile(r".*/u/alice/job/[A-Za-z0-9_-]+$"))
        assert page.locator("#job").get_attribute("data-state") == "running"
    notice = page.locator("#notice")
    notice.wait_for(state="visible")
    assert "complete" in notice.inner_text(), page.locator("#job-status").inner_text()
    m = re.search(r"in (\S+?)\.?$", page.locator("#job-status").inner_text().strip())
    assert m, page.locator("#job-status").inner_text()
    restored = Path(m.group(1)) / "notes" / "todo.txt"
    assert restored.parent.parent.parent == home / "restored"
    assert restored.read_bytes() == (home / "notes" / "todo.txt").read_bytes()
    assert (restored.stat().st_uid, restored.stat().st_gid) == (SERVE_UIDS["alice"], 100)

    page.get_by_role("link", name="Audit log").click()
    page.wait_for_url(f"{serve_hub.service}audit")
    rows = page.locator("table.audit tbody tr")
    cells = [[c.strip() for c in rows.nth(i).locator("td").all_inner_texts()] for i in range(rows.count())]
    mine = [c for c in cells if c[1:6] == ["admin", "alice", "restore", yesterday, "notes/todo.txt"]]
    assert mine and mine[0][6] == "ok", cells[:5]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d", mine[0][0]), mine[0]  # when
    screenshot(page, "audit")

    alice = new_page()
    open_service_from_hub(alice, serve_hub, "alice")
    assert alice.locator("#pick-user").count() == 0 and alice.get_by_role("link", name="Audit log").count() == 0
    for url in (f"{serve_hub.service}audit", f"{serve_hub.service}u/bob/", f"{serve_hub.service}u/admin/"):
        resp = alice.goto(url)
        assert resp is not None and resp.status == 403, (url, resp and resp.status)
        assert "todo.txt" not in alice.content()
