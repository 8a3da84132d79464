"""The browser tier's own harness: Debian's Chromium starts headless, and a person's login through a real
JupyterHub's form (DummyAuthenticator) works and is the hub's, not the test's, doing."""

from __future__ import annotations

from tests.browser.conftest import hub_login


def test_login_through_the_hub_form(jupyterhub_process, new_page, screenshot):
    hub = jupyterhub_process(users=("jdrtbr-alice",))
    base = hub.url.removesuffix("/hub/api")

    page = new_page()
    # Not logged in: the hub sends the browser to its login form.
    page.goto(f"{base}/hub/home")
    assert "/hub/login" in page.url
    assert page.locator("#login_submit").is_visible()

    hub_login(page, base, "jdrtbr-alice")
    # The home page names the user the hub authenticated, and the hub set its login cookie.
    assert page.url.startswith(f"{base}/hub/home")
    assert "jdrtbr-alice" in page.locator("body").inner_text()
    cookies = {c["name"] for c in page.context.cookies()}
    assert "jupyterhub-session-id" in cookies or any(c.startswith("jupyterhub-hub-login") for c in cookies)
    screenshot(page, "hub-home")

    # A second context is a different person: no cookie shared, back to the login form.
    other = new_page()
    other.goto(f"{base}/hub/home")
    assert "/hub/login" in other.url
