"""A small client of the JupyterHub REST API (``/hub/api``): users, their servers' state, stopping servers.

jdr registers as a JupyterHub service whose role grants ``list:users``, ``read:users``,
``admin:server_state`` and ``admin:servers``. Only the standard library is used (``urllib.request``).
The token travels in the ``Authorization`` header and nowhere else: it is never logged, never part of
an error message, and never sent across a redirect to another origin (scheme, host or port): a hub (or
anything in front of it) that redirects elsewhere gets the request without credentials.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from dr.errors import ConfigError, HubApiError

log = logging.getLogger(__name__)

PAGINATION_MEDIA_TYPE = "application/jupyterhub-pagination+json"


class HubHttpError(HubApiError):
    """The hub answered a request with an HTTP error. ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, *, status: int, hub_message: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.hub_message = hub_message


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


class _NoCredentialsAcrossOrigins(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, but drops ``Authorization`` when the origin changes."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(req.full_url) != _origin(new.full_url):
            new.remove_header("Authorization")
            log.warning("the hub API redirected to another origin (%s://%s:%s); following without the token",
                        *_origin(new.full_url))
        return new


_OPENER = urllib.request.build_opener(_NoCredentialsAcrossOrigins)


class HubApi:
    """The Hub REST API at ``url`` (e.g. ``http://hub:8081/hub/api``), authenticated by ``token``."""

    def __init__(self, url: str, token: str, timeout: float = 30.0, poll_interval: float = 0.5) -> None:
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError as e:
            raise ConfigError(f"hub_api.url: not a URL: {url!r} ({e})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"hub_api.url must be an http(s) URL, not {url!r}")
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.poll_interval = poll_interval

    def __repr__(self) -> str:  # never show the token
        return f"HubApi({self.url!r})"

    # --- users -------------------------------------------------------------------------------------

    def get_user(self, name: str) -> dict[str, Any] | None:
        """The user model of ``name`` (with stopped servers, and their state when the token may see it);
        None when the hub has no such user."""
        try:
            user = self._json("GET", _user_path(name), query={"include_stopped_servers": "1"})
        except HubHttpError as e:
            if e.status == 404:
                return None
            raise
        if not isinstance(user, dict):
            raise HubHttpError(f"the hub answered GET /users/{name} with an unexpected document", status=200)
        return user

    def list_users(self, page_size: int = 200) -> list[dict[str, Any]]:
        """Every user model, fetched page by page (JupyterHub ≥ 2 pagination; older hubs answer at once)."""
        return list(self.iter_users(page_size))

    def iter_users(self, page_size: int = 200) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            body = self._json("GET", "/users", query={"offset": str(offset), "limit": str(page_size)},
                              accept=PAGINATION_MEDIA_TYPE)
            if isinstance(body, list):  # a hub without pagination returns the whole list
                yield from body
                return
            if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                raise HubHttpError("the hub answered GET /users with an unexpected document", status=200)
            items: list[dict[str, Any]] = body["items"]
            yield from items
            following = (body.get("_pagination") or {}).get("next")
            if not following or not items:
                return
            offset = int(following.get("offset", offset + len(items)))

    # --- servers -----------------------------------------------------------------------------------

    def server_model(self, name: str, server: str = "") -> dict[str, Any] | None:
        """The server model of one of ``name``'s servers; None when the hub has no such server.
        Raises HubHttpError (status 404) when the hub has no such user."""
        user = self._require_user(name)
        servers = user.get("servers")
        if not isinstance(servers, dict):
            raise HubHttpError(
                f"the hub does not show the servers of user {name!r} to this token",
                status=403, hint="grant the jdr service the read:servers (or admin:servers) scope")
        model = servers.get(server)
        return model if isinstance(model, dict) else None

    def server_state(self, name: str, server: str = "") -> dict[str, Any]:
        """The spawner state of one of ``name``'s servers, running or not ({} when it has none).
        Needs the ``admin:server_state`` scope; KubeSpawner keeps ``pvc_name`` there."""
        model = self.server_model(name, server)
        if model is None:
            return {}
        if "state" not in model:
            raise HubHttpError(
                f"the hub does not show the server state of user {name!r} to this token",
                status=403, hint="grant the jdr service the admin:server_state scope")
        state = model.get("state")
        return state if isinstance(state, dict) else {}

    def is_running(self, name: str, server: str = "") -> bool:
        """True when the server is running, starting or stopping (anything but fully stopped)."""
        return _is_active(self.server_model(name, server))

    def start_server(self, name: str, server: str = "", wait: float = 120.0) -> None:
        """Start one of ``name``'s servers and wait until it is ready (used by demos and tests)."""
        path = _server_path(name, server)
        status, _ = self._request("POST", path, body={})
        if status == 201:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            model = self.server_model(name, server)
            if model is not None and model.get("ready") and not model.get("pending"):
                return
            if model is None or (not model.get("pending") and not model.get("ready")):
                raise HubHttpError(f"the server of user {name!r} stopped while starting", status=500)
            time.sleep(self.poll_interval)
        raise HubApiError(f"the server {_label(name, server)} did not become ready within {wait:.0f}s")

    def stop_server(self, name: str, server: str = "", wait: float = 300.0) -> None:
        """Stop one of ``name``'s servers and return once the hub reports it stopped.

        A server that is not running is fine (nothing to do). Raises HubHttpError (status 404) for an
        unknown user, and HubApiError when the server is still not stopped after ``wait`` seconds.
        """
        path = _server_path(name, server)
        try:
            status, _ = self._request("DELETE", path)
        except HubHttpError as e:
            if e.status == 400:  # "… is not running"
                log.debug("server %s is not running: %s", _label(name, server), e.hub_message)
                return
            if e.status == 404:
                self._require_user(name)  # raises for an unknown user
                return  # a named server that does not exist is not running either
            raise
        if status == 204:
            return
        deadline = time.monotonic() + wait
        while True:
            model = self.server_model(name, server)
            if not _is_active(model):
                log.info("server %s stopped", _label(name, server))
                return
            if time.monotonic() >= deadline:
                raise HubApiError(
                    f"the server {_label(name, server)} did not stop within {wait:.0f}s "
                    f"(pending: {(model or {}).get('pending')})",
                    hint="check the hub's log; the spawner may be stuck")
            time.sleep(self.poll_interval)

    # --- plumbing ----------------------------------------------------------------------------------

    def _require_user(self, name: str) -> dict[str, Any]:
        user = self.get_user(name)
        if user is None:
            raise HubHttpError(f"JupyterHub has no user {name!r}", status=404,
                               hint="check the username (it is case-sensitive)")
        return user

    def _json(self, method: str, path: str, *, query: dict[str, str] | None = None,
              accept: str = "application/json") -> Any:
        _, body = self._request(method, path, query=query, accept=accept)
        return body

    def _request(self, method: str, path: str, *, query: dict[str, str] | None = None,
                 body: Any = None, accept: str = "application/json") -> tuple[int, Any]:
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - scheme checked
        request.add_header("Authorization", f"token {self._token}")
        request.add_header("Accept", accept)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        log.debug("hub api %s %s", method, path)
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                raw = response.read()
                status = int(response.status)
        except urllib.error.HTTPError as e:
            message = _hub_message(e)
            hint = None
            if e.code in (401, 403):
                # JupyterHub answers 403, not 401, to an unknown token: it is a request with no scopes.
                hint = ("check the hub API token (hub_api.token_env) and that the jdr service's role "
                        "grants list:users, read:users, admin:server_state and admin:servers")
            raise HubHttpError(f"hub API {method} {path} failed: HTTP {e.code}"
                               + (f": {message}" if message else ""),
                               status=e.code, hub_message=message, hint=hint) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise HubHttpError(f"cannot reach the hub API at {self.url}: {reason}", status=0,
                               hint="check hub_api.url and that this host may reach the hub") from None
        if not raw:
            return status, None
        try:
            return status, json.loads(raw)
        except ValueError:
            raise HubHttpError(f"hub API {method} {path} answered HTTP {status} with a body that is not "
                               "JSON", status=status) from None


def _user_path(name: str) -> str:
    return "/users/" + urllib.parse.quote(name, safe="")


def _server_path(name: str, server: str) -> str:
    if server:
        return _user_path(name) + "/servers/" + urllib.parse.quote(server, safe="")
    return _user_path(name) + "/server"


def _label(name: str, server: str) -> str:
    return f"{name!r}" + (f" (server {server!r})" if server else "")


def _is_active(model: dict[str, Any] | None) -> bool:
    if model is None:
        return False
    if model.get("stopped") is True and not model.get("pending"):
        return False
    return bool(model.get("ready") or model.get("pending"))


def _hub_message(e: urllib.error.HTTPError) -> str:
    """The hub's own error text: JupyterHub answers ``{"status": 400, "message": "…"}``."""
    try:
        raw = e.read()
    except OSError:
        return e.reason if isinstance(e.reason, str) else ""
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:200].strip()
    if isinstance(doc, dict) and doc.get("message"):
        return str(doc["message"])
    return e.reason if isinstance(e.reason, str) else ""
