"""The Hub API client against a real ``jupyterhub`` process (tests/fixtures/hub.py: ``shared_jupyterhub``).

The shared hub stops servers slowly (1.5 s against a 0.5 s slow-stop timeout), so ``DELETE`` answers
202 and ``stop_server`` has to wait for the stop to finish, as with a pod on Kubernetes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dr.errors import HubApiError
from dr.hubapi import HubApi, HubHttpError
from dr.hubdb import capture_database, head_revision
from tests.fixtures.hub import HubProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def api(shared_jupyterhub: HubProcess) -> HubApi:
    return HubApi(shared_jupyterhub.url, shared_jupyterhub.token, poll_interval=0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def test_start_check_and_stop_a_users_server(shared_jupyterhub: HubProcess, api: HubApi) -> None:
    assert not api.is_running("alice")
    shared_jupyterhub.start_server("alice")
    assert api.is_running("alice")
    state = api.server_state("alice")
    assert state["pvc_name"] == "claim-alice"  # remembered from the ORM-made database
    pid = state["pid"]
    assert _alive(pid)

    started = time.monotonic()
    api.stop_server("alice", wait=30)
    assert time.monotonic() - started >= 1.0  # it waited through the hub's 202
    assert not api.is_running("alice")
    assert not _alive(pid)
    assert api.server_state("alice") == {"pvc_name": "claim-alice"}  # state of a stopped server


def test_stopping_a_stopped_server_is_fine(api: HubApi) -> None:
    assert not api.is_running("bob")
    started = time.monotonic()
    api.stop_server("bob")
    api.stop_server("bob")
    assert time.monotonic() - started < 5
    assert not api.is_running("bob")


def test_a_named_server(shared_jupyterhub: HubProcess, api: HubApi) -> None:
    shared_jupyterhub.start_server("carol", "gpu")
    assert api.is_running("carol", "gpu")
    assert not api.is_running("carol")
    assert api.server_state("carol", "gpu")["pvc_name"] == "claim-carol--gpu"
    api.stop_server("carol", "gpu")
    assert not api.is_running("carol", "gpu")
    api.stop_server("carol", "no-such-server")  # a server that does not exist is not running
    assert api.server_model("carol", "no-such-server") is None


@pytest.mark.parametrize("name", ["alice@example.com", "Émile"])
def test_usernames_that_need_quoting(shared_jupyterhub: HubProcess, api: HubApi, name: str) -> None:
    user = api.get_user(name)
    assert user is not None and user["name"] == name
    shared_jupyterhub.start_server(name)
    assert api.is_running(name)
    api.stop_server(name)
    assert not api.is_running(name)


def test_server_state_of_a_user_without_a_running_server(api: HubApi) -> None:
    assert api.server_state("alice@example.com") == {"pvc_name": "claim-alice-40example-2ecom"}


def test_a_stop_that_takes_too_long_names_the_user(shared_jupyterhub: HubProcess, api: HubApi) -> None:
    shared_jupyterhub.start_server("bob")
    with pytest.raises(HubApiError, match=r"'bob'.*did not stop within"):
        api.stop_server("bob", wait=0.2)
    api.stop_server("bob", wait=30)  # the stop in progress is awaited, not restarted
    assert not api.is_running("bob")


def test_an_unknown_user(api: HubApi) -> None:
    assert api.get_user("mallory") is None
    with pytest.raises(HubHttpError, match="no user 'mallory'") as caught:
        api.stop_server("mallory")
    assert caught.value.status == 404
    with pytest.raises(HubHttpError, match="no user 'mallory'"):
        api.is_running("mallory")
    with pytest.raises(HubHttpError, match="no user 'mallory'"):
        api.server_state("mallory")


def test_a_wrong_token_is_refused_without_showing_it(shared_jupyterhub: HubProcess,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    secret = "wrong-" + shared_jupyterhub.token[:20]
    bad = HubApi(shared_jupyterhub.url, secret)
    caplog.set_level(logging.DEBUG)
    for call in (lambda: bad.get_user("alice"), lambda: bad.stop_server("alice"), bad.list_users):
        with pytest.raises(HubApiError) as caught:
            call()
        err = caught.value
        assert isinstance(err, HubHttpError) and err.status == 403
        assert "403" in str(err)
        for text in (str(err), repr(err), err.hint or "", err.hub_message, repr(bad)):
            assert secret not in text and shared_jupyterhub.token not in text
    assert secret not in caplog.text


def test_list_users_pages_through_everyone(shared_jupyterhub: HubProcess, api: HubApi) -> None:
    names = sorted(u["name"] for u in api.list_users(page_size=2))
    assert names == sorted(["alice", "bob", "alice@example.com", "Émile", "carol"])
    assert sorted(u["name"] for u in api.list_users()) == names


def test_an_unreachable_hub(shared_jupyterhub: HubProcess) -> None:
    dead = HubApi("http://127.0.0.1:9/hub/api", shared_jupyterhub.token, timeout=2)
    with pytest.raises(HubHttpError, match="cannot reach the hub API") as caught:
        dead.get_user("alice")
    assert caught.value.status == 0
    assert shared_jupyterhub.token not in str(caught.value)


def test_capture_the_live_hubs_database(shared_jupyterhub: HubProcess, api: HubApi, tmp_path: Path) -> None:
    shared_jupyterhub.start_server("alice")
    try:
        info = capture_database(shared_jupyterhub.db_path, tmp_path / "hub.sqlite")
    finally:
        api.stop_server("alice")
    assert info.revision == head_revision()
    alice = info.server("alice")
    assert alice is not None and alice.running and alice.pvc_name == "claim-alice"
    assert alice.state.get("pid")


def test_the_factory_starts_a_fresh_hub(jupyterhub_process: Callable[..., HubProcess]) -> None:
    hub = jupyterhub_process(users=["dave", "eve@example.org"])
    api = HubApi(hub.url, hub.token, poll_interval=0.1)
    assert sorted(u["name"] for u in api.list_users()) == ["dave", "eve@example.org"]
    hub.start_server("eve@example.org")
    pid = api.server_state("eve@example.org")["pid"]
    hub.stop()  # the hub stops the servers it runs when it shuts down
    assert not _alive(pid)
