"""The only module that imports the ``kubernetes`` SDK: a small typed REST client over its ApiClient.

Everything above this module sees plain JSON dicts (the API's own camelCase shape, as ``objects.py``
builds them) and jdr's own errors. Kubernetes errors are translated here, once (``raise … from e``):
404 → :class:`KubeNotFound`, 409 → :class:`KubeConflict`, 403 → :class:`KubeForbidden` (with a hint
naming the verb and resource the ServiceAccount lacks), 422 → :class:`KubeInvalid`; anything else is a
:class:`KubeError`. Nothing is swallowed here: "not found is fine" is the caller's decision.

Only the SDK's configuration loading and its HTTP plumbing (``ApiClient.param_serialize``/``call_api``)
are used, not its generated models: one generic path per resource kind keeps the surface small, and
every call goes through :meth:`Kube._call`, which counts it (``calls``) and, when ``JDR_KUBE_AUDIT``
names a file, appends one JSON line per call (verb, resource, namespace, status). The tests compare
that record with the RBAC Role that ``cronjobs/`` grants; it is also a troubleshooting aid.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as _k8s_config
from kubernetes.client.exceptions import ApiException

from dr.errors import DeploymentError

log = logging.getLogger(__name__)

Obj = dict[str, Any]

# The SDK's configuration loaders are untyped; they are used through this one Any-typed name.
k8s_config: Any = _k8s_config

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
AUDIT_ENV = "JDR_KUBE_AUDIT"


@dataclass(frozen=True)
class Resource:
    """One kind of API object: where it lives in the REST path space."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced:
            if not namespace:
                raise ValueError(f"{self.plural} are namespaced: a namespace is required")
            base += f"/namespaces/{_q(namespace)}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{_q(name)}"
        if sub:
            base += f"/{sub}"
        return base


PODS = Resource("", "v1", "pods", "Pod")
PVCS = Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
PVS = Resource("", "v1", "persistentvolumes", "PersistentVolume", namespaced=False)
SECRETS = Resource("", "v1", "secrets", "Secret")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
SNAPSHOTS = Resource("snapshot.storage.k8s.io", "v1", "volumesnapshots", "VolumeSnapshot")
SNAPSHOT_CONTENTS = Resource("snapshot.storage.k8s.io", "v1", "volumesnapshotcontents",
                             "VolumeSnapshotContent", namespaced=False)


# --- errors -----------------------------------------------------------------------------------------


class KubeError(DeploymentError):
    """The Kubernetes API refused or failed a request. ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.reason = reason


class KubeNotFound(KubeError):
    """404: the object (or its namespace) does not exist."""


class KubeConflict(KubeError):
    """409: already exists, or a resourceVersion/uid precondition failed."""


class KubeForbidden(KubeError):
    """403: RBAC denied the request, or an admission policy/quota refused it."""


class KubeInvalid(KubeError):
    """422: the object was rejected as invalid."""


class KubeGone(KubeError):
    """410: a watch's or list's resourceVersion is too old; list again."""


_BY_STATUS: dict[int, type[KubeError]] = {404: KubeNotFound, 409: KubeConflict, 403: KubeForbidden,
                                          422: KubeInvalid, 410: KubeGone}
_VERB_BY_METHOD = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def _translate(e: ApiException, verb: str, res: Resource, namespace: str | None, name: str | None,
               sub: str | None) -> KubeError:
    status = int(e.status or 0)
    message, reason = _status_message(e.body)
    what = res.plural + (f"/{sub}" if sub else "")
    target = f"{what} {name!r}" if name else what
    where = f" in namespace {namespace!r}" if namespace and res.namespaced else ""
    text = f"Kubernetes API: {verb} {target}{where} failed: HTTP {status}" + (f": {message}" if message else "")
    hint = None
    if status == 403:
        if "exceeded quota" in message or "violates PodSecurity" in message or "admission" in message:
            hint = "an admission policy or a ResourceQuota of the namespace refused the request"
        else:
            group = res.group or '""'
            hint = (f"grant jdr's ServiceAccount the verb {verb!r} on {what} (apiGroup {group})"
                    f"{where}; see cronjobs/role.yaml")
    elif status == 401:
        hint = "the Kubernetes credentials were rejected: check the kubeconfig or the ServiceAccount token"
    cls = _BY_STATUS.get(status, KubeError)
    return cls(text, status=status, reason=reason or str(e.reason or ""), hint=hint)


def _status_message(body: Any) -> tuple[str, str]:
    if not body:
        return "", ""
    try:
        doc = json.loads(body)
    except (TypeError, ValueError):
        return str(body)[:300], ""
    if isinstance(doc, dict):
        return str(doc.get("message", ""))[:1000], str(doc.get("reason", ""))
    return "", ""


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


# --- the client ---------------------------------------------------------------------------------------


class Kube:
    """Typed access to the API server for one default namespace. Thread-safe (one pool of connections)."""

    def __init__(self, api_client: Any, namespace: str, audit_path: str | None = None) -> None:
        self._api = api_client
        self.namespace = namespace
        self.calls: Counter[tuple[str, str]] = Counter()  # (verb, resource[/sub]) -> count
        self._lock = threading.Lock()
        self._audit_path = audit_path if audit_path is not None else os.environ.get(AUDIT_ENV) or None

    @classmethod
    def connect(cls, kubeconfig: str = "", namespace: str = "", pool_size: int = 0) -> Kube:
        """Connect with ``kubeconfig`` (a path), else in-cluster config, else ``$KUBECONFIG``/``~/.kube/config``.

        The namespace defaults to the pod's own (in-cluster), else the kubeconfig context's, else
        ``default``. ``pool_size``: HTTP connections kept open (one per concurrent request, watches
        included). Raises DeploymentError when no configuration can be loaded.
        """
        cfg = k8s_client.Configuration()
        if pool_size:
            cfg.connection_pool_maxsize = pool_size
        ctx_namespace = ""
        try:
            if kubeconfig:
                k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
                ctx_namespace = _context_namespace(kubeconfig)
            else:
                try:
                    k8s_config.load_incluster_config(client_configuration=cfg)
                    if IN_CLUSTER_NAMESPACE.exists():
                        ctx_namespace = IN_CLUSTER_NAMESPACE.read_text().strip()
                except k8s_config.ConfigException:
                    k8s_config.load_kube_config(client_configuration=cfg)
                    ctx_namespace = _context_namespace(None)
        except (k8s_config.ConfigException, OSError, ValueError) as e:
            raise DeploymentError(f"cannot load a Kubernetes configuration: {e}",
                                  hint="set deployment.kubernetes.kubeconfig, $KUBECONFIG, or run in a pod "
                                       "with a ServiceAccount") from e
        api = k8s_client.ApiClient(cfg)
        return cls(api, namespace or ctx_namespace or "default")

    def close(self) -> None:
        self._api.close()

    # --- verbs -------------------------------------------------------------------------------------

    def get(self, res: Resource, name: str, namespace: str | None = None, sub: str | None = None) -> Obj:
        return self._json("GET", "get", res, namespace, name, sub)

    def get_or_none(self, res: Resource, name: str, namespace: str | None = None) -> Obj | None:
        try:
            return self.get(res, name, namespace)
        except KubeNotFound:
            return None

    def list(self, res: Resource, namespace: str | None = None, *, label_selector: str = "",
             field_selector: str = "", limit: int = 500) -> tuple[list[Obj], str]:
        """Every matching object, paginated (``limit`` per page); returns (items, resourceVersion).

        The resourceVersion is that of the first page, from which a watch sees every later change.
        """
        items: list[Obj] = []
        cont = ""
        version = ""
        while True:
            query: dict[str, Any] = {"limit": limit}
            if label_selector:
                query["labelSelector"] = label_selector
            if field_selector:
                query["fieldSelector"] = field_selector
            if cont:
                query["continue"] = cont
            page = self._json("GET", "list", res, namespace, None, None, query=query)
            items += page.get("items") or []
            meta = page.get("metadata") or {}
            version = version or str(meta.get("resourceVersion", ""))
            cont = str(meta.get("continue") or "")
            if not cont:
                return items, version

    def create(self, res: Resource, body: Obj, namespace: str | None = None, *, dry_run: bool = False) -> Obj:
        query = {"dryRun": "All"} if dry_run else None
        return self._json("POST", "create", res, namespace, None, None, body=body, query=query)

    def replace(self, res: Resource, name: str, body: Obj, namespace: str | None = None) -> Obj:
        return self._json("PUT", "update", res, namespace, name, None, body=body)

    def patch(self, res: Resource, name: str, patch: Obj, namespace: str | None = None,
              sub: str | None = None) -> Obj:
        """A JSON merge patch (RFC 7386)."""
        return self._json("PATCH", "patch", res, namespace, name, sub, body=patch,
                          content_type="application/merge-patch+json")

    def delete(self, res: Resource, name: str, namespace: str | None = None, *,
               grace_seconds: int | None = None, uid: str | None = None,
               propagation: str | None = "Background") -> bool:
        """Delete; returns False if it was already gone (404). ``uid``: only that incarnation."""
        body: Obj = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        if uid:
            body["preconditions"] = {"uid": uid}
        if propagation:
            body["propagationPolicy"] = propagation
        try:
            self._json("DELETE", "delete", res, namespace, name, None, body=body)
        except KubeNotFound:
            return False
        return True

    def watch(self, res: Resource, namespace: str | None = None, *, resource_version: str,
              label_selector: str = "", field_selector: str = "",
              timeout_seconds: int = 60) -> Iterator[tuple[str, Obj]]:
        """Watch events (type, object) from ``resource_version`` on; ends when the server closes the stream.

        BOOKMARK events are yielded too (their object carries only ``metadata.resourceVersion``).
        Raises KubeGone when the version is too old (list again) and KubeError for other errors.
        """
        query: dict[str, Any] = {"watch": "true", "resourceVersion": resource_version,
                                 "allowWatchBookmarks": "true", "timeoutSeconds": timeout_seconds}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        resp = self._call("GET", "watch", res, namespace, None, None, query=query,
                          timeout=(10.0, timeout_seconds + 30.0))
        raw = resp.response
        try:
            buf = b""
            for chunk in raw.stream(65536, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield self._event(line, res)
            if buf.strip():
                yield self._event(buf, res)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            # The stream broke (API server restart, idle proxy): the caller re-watches from its last version.
            log.debug("watch of %s ended: %s", res.plural, e)
        finally:
            raw.release_conn()

    # --- plumbing ----------------------------------------------------------------------------------

    @staticmethod
    def _event(line: bytes, res: Resource) -> tuple[str, Obj]:
        ev = json.loads(line)
        obj = ev.get("object") or {}
        if ev.get("type") == "ERROR":
            status = int(obj.get("code") or 0)
            cls = _BY_STATUS.get(status, KubeError)
            raise cls(f"Kubernetes API: watch of {res.plural} failed: {obj.get('message', '')}", status=status,
                      reason=str(obj.get("reason", "")))
        return str(ev.get("type")), obj

    def _json(self, method: str, verb: str, res: Resource, namespace: str | None, name: str | None,
              sub: str | None, *, body: Any = None, query: dict[str, Any] | None = None,
              content_type: str = "application/json") -> Obj:
        resp = self._call(method, verb, res, namespace, name, sub, body=body, query=query,
                          content_type=content_type)
        data = resp.read()
        doc = json.loads(data) if data else {}
        return doc if isinstance(doc, dict) else {"value": doc}

    def _call(self, method: str, verb: str, res: Resource, namespace: str | None, name: str | None,
              sub: str | None, *, body: Any = None, query: dict[str, Any] | None = None,
              content_type: str = "application/json", timeout: Any = (10.0, 60.0)) -> Any:
        ns = (namespace or self.namespace) if res.namespaced else None
        path = res.path(ns, name, sub)
        reads = method == "GET"
        attempts = 4 if reads else 1
        for attempt in range(1, attempts + 1):
            status = 0
            try:
                _, url, headers, _, _ = self._api.param_serialize(
                    method=method, resource_path=path, query_params=list((query or {}).items()),
                    header_params={"Accept": "application/json", "Content-Type": content_type},
                    auth_settings=["BearerToken"])
                resp = self._api.call_api(method, url, header_params=headers, body=body,
                                          _request_timeout=timeout)
                status = int(resp.status)
                if status >= 400:
                    resp.read()
                    raise ApiException(http_resp=resp)
                return resp
            except ApiException as e:
                status = int(e.status or 0)
                if reads and attempt < attempts and (status == 429 or status >= 500):
                    time.sleep(0.5 * attempt)
                    continue
                raise _translate(e, verb, res, ns, name, sub) from e
            except (urllib3.exceptions.HTTPError, OSError) as e:
                if reads and attempt < attempts:
                    time.sleep(0.5 * attempt)
                    continue
                raise KubeError(f"cannot reach the Kubernetes API ({verb} {res.plural}): {e}",
                                hint="check the API server address and the network") from e
            finally:
                self._record(verb, res, sub, ns, status)
        raise AssertionError("unreachable")  # pragma: no cover

    def _record(self, verb: str, res: Resource, sub: str | None, namespace: str | None, status: int) -> None:
        what = res.plural + (f"/{sub}" if sub else "")
        with self._lock:
            self.calls[(verb, what)] += 1
        if self._audit_path:
            line = json.dumps({"verb": verb, "group": res.group, "resource": what, "namespace": namespace or "",
                               "status": status}) + "\n"
            fd = os.open(self._audit_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)

    @property
    def total_calls(self) -> int:
        with self._lock:
            return sum(self.calls.values())


def _context_namespace(config_file: str | None) -> str:
    try:
        _, current = k8s_config.list_kube_config_contexts(config_file=config_file)
    except (k8s_config.ConfigException, OSError, ValueError):
        return ""
    return str(((current or {}).get("context") or {}).get("namespace") or "")
