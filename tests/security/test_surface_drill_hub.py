"""The hub a local drill starts on the restored database admits nobody (docs/SECURITY.md, item 11).

The restored database holds production's users and admins. ``jdr drill --start-hub`` is paused (test
hook ``drill-hub-up``) while its hub answers; then: it listens on 127.0.0.1 only, and logging in — as the
admin alice, as anyone — fails. The same login procedure succeeds on a hub with the dummy authenticator
(the fixture's), so the check can fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.cookiejar import CookieJar
from pathlib import Path

from dr.operations.sandbox import create_sandbox
from tests.fixtures.hub import HubProcess, HubServer, HubUser, build_hub_db
from tests.fixtures.sandbox import JDR

POINT = "drill-hub-up"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def login(base: str, user: str, password: str) -> tuple[int, set[str]]:
    """POST the hub's login form as a browser does (xsrf token from the form, its cookie); returns the
    HTTP status and the names of the cookies the hub set."""
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect)
    with opener.open(base + "/hub/login", timeout=30) as r:
        page = r.read().decode()
    found = re.search(r'name="_xsrf" value="([^"]+)"', page)
    assert found, page[:2000]
    form = urllib.parse.urlencode({"username": user, "password": password, "_xsrf": found.group(1)}).encode()
    try:
        with opener.open(urllib.request.Request(base + "/hub/login", data=form), timeout=30) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    return status, {c.name for c in jar}


def _listen_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on ``port`` (IPv4 and IPv6), from /proc/net."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, hexport = local.rsplit(":", 1)
                if state == "0A" and int(hexport, 16) == port:
                    found.add(addr)
    return found


def test_drill_hub_admits_nobody(tmp_path: Path, jupyterhub_process: Callable[..., HubProcess]) -> None:
    sb = create_sandbox(tmp_path / "prod", users=("alice", "bob"))
    build_hub_db(sb.hub_db, [HubUser("alice", admin=True, servers={"": HubServer()}),
                             HubUser("bob", servers={"": HubServer()})])
    scratch = tmp_path / "scratch"
    config = tmp_path / "jdr.yaml"
    config.write_text(f"deployment:\n  kind: local\n  hub_db: {sb.hub_db}\n  homes: {sb.homes}\n"
                      f"repository: file://{tmp_path / 'repo'}\ndrill:\n  scratch: {scratch}\n")
    env = {**os.environ, "JDR_CONFIG": str(config), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    backup = subprocess.run([JDR, "backup"], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert backup.returncode == 0, backup.stderr

    drill = subprocess.Popen([JDR, "drill", "--start-hub"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**env, "JDR_TEST_PAUSE_AT": POINT})
    hub_pid = 0
    try:
        assert drill.stderr is not None
        seen = []
        for line in drill.stderr:
            seen.append(line)
            if line.strip() == f"jdr-test-paused-at {POINT}":
                break
        else:
            raise AssertionError("the drill never started its hub:\n" + "".join(seen[-40:]))
        (hub_config,) = scratch.glob("*/hub-run/jupyterhub_config.py")
        (marker,) = scratch.glob("*/.jdr-drill.json")
        hub_pid = int(json.loads(marker.read_text())["hub_pid"])
        port = int(re.search(r"c\.JupyterHub\.hub_port = (\d+)", hub_config.read_text()).group(1))  # type: ignore[union-attr]
        assert _listen_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else

        base = f"http://127.0.0.1:{port}"
        for user, password in (("alice", "alice"), ("alice", ""), ("bob", "anything"), ("admin", "admin")):
            status, cookies = login(base, user, password)
            assert status == 403, (user, status, cookies)
            assert "jupyterhub-hub-login" not in cookies and "jupyterhub-session-id" not in cookies, cookies
    finally:
        drill.send_signal(signal.SIGKILL)
        drill.wait(30)
        if hub_pid:
            with contextlib.suppress(OSError):
                os.killpg(hub_pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while Path(f"/proc/{hub_pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)

    # The control: the same login on a hub with the dummy authenticator lets alice in.
    control = jupyterhub_process(users=("alice",))
    status, cookies = login(control.url.removesuffix("/hub/api"), "alice", "whatever")
    assert status == 302 and "jupyterhub-hub-login" in cookies, (status, cookies)
