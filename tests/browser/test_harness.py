"""The browser tier's own harness: Debian's Chromium starts headless, and a person's login through a real
JupyterHub's form works and is the hub's doing (a wrong password is refused, a second context is another
person). Uses the session's ``serve_hub`` (tests/fixtures/hub_server.py) rather than a hub of its own."""

from __future__ import annotations

from tests.browser.conftest import hub_login
from tests.fixtures.hub_server import PASSWORD, ServeHub


def test_login_through_the_hub_form(serve_hub: ServeHub, new_page, screenshot):
    base = serve_hub.url
    page = new_page()
    # Not logged in: the hub sends the browser to its login form.
    page.goto(f"{base}/hub/home")
    assert "/hub/login" in page.url
    assert page.locator("#login_submit").is_visible()

    # A wrong password is the hub's to refuse: the form comes back, no login cookie.
    page.fill("#username_input", "carol")
    page.fill("#password_input", "not-" + PASSWORD)
    with page.expect_navigation():
        page.click("#login_submit")
    assert "/hub/login" in page.url and "/hub/home" not in page.url
    assert not [c for c in page.context.cookies() if c["name"].startswith("jupyterhub-hub-login")]

    hub_login(page, base, "carol", PASSWORD)
    # The home page names the user the hub authenticated, and the hub set its login cookie.
    assert page.url.startswith(f"{base}/hub/home")
    assert "carol" in page.locator("#login_widget").inner_text()
    assert [c for c in page.context.cookies() if c["name"].startswith("jupyterhub-hub-login")]
    screenshot(page, "hub-home")

    # A second context is a different person: no cookie shared, back to the login form.
    other = new_page()
    other.goto(f"{base}/hub/home")
    assert "/hub/login" in other.url
