"""A z2jh-shaped namespace: what the Zero to JupyterHub chart creates that jdr touches, with a real hub.

- Deployment `<p>hub` (labels component=hub, app=jupyterhub, release=<rel>; Recreate; 1 replica; runs as
  uid 1000) running the real `jupyterhub` from the venv with the real KubeSpawner (jupyterhub-kubespawner),
  its DB on PVC `<p>hub-db-dir` mounted at /srv/jupyterhub, config from ConfigMap `<p>hub`, Secret `<p>hub`
  with the chart's keys, ServiceAccount/Role/RoleBinding `<p>hub` as the chart makes them, Service `<p>hub`.
- The hub DB is made beforehand with `jupyterhub.orm`: users (default alice, bob with a named server
  `analysis`, alice@example.com, Émile), API tokens, spawner state {"pvc_name": ...} (KubeSpawner >= 7).
- User PVCs as KubeSpawner makes them (labels, annotations, names from KubeSpawner's own slug code, per user
  scheme `safe` or legacy `escape`), each with a small home directory (uid 1000, gid 100).
- Users listed in `running` get their server started through the hub REST API, so KubeSpawner creates pod
  `jupyter-<slug>` mounting the PVC at /home/jovyan; the pod runs tests/controlplane/singleuser.py (HTTP 200
  on the spawner's port) instead of jupyterhub-singleuser.
- The proxy (CHP) is not run: the hub uses an in-process null proxy class; tests talk to the hub API at
  `hub_api_url` (http://127.0.0.1:<port>/hub/api) with the `jdr` service token (`token`).

`<p>` is "" when release is None (fullnameOverride: "") and "<release>-" otherwise; the `release` label
is the release name ("jupyterhub" when None).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import sqlite3
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import yaml
from kubernetes.client.rest import ApiException

from .procs import free_port

HERE = Path(__file__).resolve().parent
CHART_VERSION = "4.1.0"
HUB_IMAGE = f"quay.io/jupyterhub/k8s-hub:{CHART_VERSION}"
SINGLEUSER_IMAGE = f"quay.io/jupyterhub/k8s-singleuser-sample:{CHART_VERSION}"

DEFAULT_USERS = (
    {"name": "alice"},
    {"name": "bob", "servers": ["", "analysis"]},
    {"name": "alice@example.com", "slug_scheme": "escape"},
    {"name": "Émile"},
)


def kubespawner_names(username: str, server: str, namespace: str, scheme: str) -> dict[str, str]:
    """pod/pvc names and labels exactly as KubeSpawner 7 computes them (its own code)."""
    from kubespawner.slugs import is_valid_label, safe_slug
    from kubespawner.spawner import KubeSpawner

    fake = SimpleNamespace(name=server, user=SimpleNamespace(name=username, id=0), slug_scheme=scheme,
                           _namespace_default=lambda: namespace)
    expand = KubeSpawner._expand_user_properties
    return {
        "pvc_name": expand(fake, "claim-{user_server}"),
        "pod_name": expand(fake, "jupyter-{user_server}"),
        "username_label": safe_slug(username, is_valid=is_valid_label),
        "servername_label": safe_slug(server, is_valid=is_valid_label),
    }


def merge_values(base: dict, extra: dict) -> dict:
    """Helm's merge of values files: mappings merged key by key, anything else replaced by ``extra``'s."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge_values(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@dataclass
class Z2JHUser:
    name: str
    server_name: str
    slug_scheme: str
    pvc_name: str
    pod_name: str
    token: str = ""
    running: bool = False
    labels: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}/{self.server_name}" if self.server_name else self.name


HUB_CONFIG = r'''
# jupyterhub_config.py for the jdr test z2jh namespace (shaped like the chart's, without z2jh.py)
import os
from pathlib import Path

from jupyterhub.proxy import Proxy

SECRET = Path("/usr/local/etc/jupyterhub/secret")
SETTINGS = __SETTINGS__


def secret(key):
    return (SECRET / key).read_text()


class NullProxy(Proxy):
    """No CHP in the test namespace: routes are kept in memory."""
    should_start = False
    _routes = {}

    async def add_route(self, routespec, target, data):
        self._routes[routespec] = {"routespec": routespec, "target": target, "data": data}

    async def delete_route(self, routespec):
        self._routes.pop(routespec, None)

    async def get_all_routes(self):
        return dict(self._routes)


c.JupyterHub.proxy_class = NullProxy
c.JupyterHub.cleanup_servers = False
c.JupyterHub.db_url = SETTINGS.get("db_url") or "sqlite:///jupyterhub.sqlite"
# as the chart's jupyterhub_config.py (since z2jh 1.0): hub.db.password from the mounted Secret into the
# environment the database client reads
if (SECRET / "hub.db.password").exists():
    os.environ["MYSQL_PWD" if SETTINGS["db_type"] == "mysql" else "PGPASSWORD"] = secret("hub.db.password")
if SETTINGS["db_type"] == "mysql" and os.environ.get("MYSQL_PWD"):
    # only libmysqlclient reads MYSQL_PWD; PyMySQL (the MySQL driver in z2jh's hub image) ignores it, so a
    # z2jh hub on PyMySQL hands it over in hub.extraConfig, as here (jdr's refusal hint says so)
    c.JupyterHub.db_kwargs = {"connect_args": {"password": os.environ["MYSQL_PWD"]}}
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{SETTINGS['hub_port']}"
c.JupyterHub.hub_connect_url = f"http://127.0.0.1:{SETTINGS['hub_port']}"
c.JupyterHub.bind_url = f"http://127.0.0.1:{SETTINGS['proxy_port']}"
c.JupyterHub.cookie_secret = bytes.fromhex(secret("hub.config.JupyterHub.cookie_secret"))
c.ConfigurableHTTPProxy.auth_token = secret("hub.config.ConfigurableHTTPProxy.auth_token")
c.CryptKeeper.keys = [secret("hub.config.CryptKeeper.keys").split(";")[0]]
c.JupyterHub.allow_named_servers = True
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.last_activity_interval = 3600
c.JupyterHub.services = [{"name": "jdr", "api_token": secret("hub.services.jdr.apiToken")}]
c.JupyterHub.load_roles = [{
    "name": "jdr",
    "description": "jdr backup/DR service",
    "scopes": ["admin:users", "admin:servers", "admin:server_state", "list:users", "read:users",
               "delete:servers"],
    "services": ["jdr"],
}]

if SETTINGS.get("render_values"):
    # hub.services / hub.loadRoles of the chart values, rendered as z2jh's own jupyterhub_config.py does
    # (chart 4): dicts keyed by name made lists, each service's api_token read from the hub Secret's
    # `hub.services.<name>.apiToken`, every other key (url, oauth_*...) passed to JupyterHub as it is.
    import yaml

    values = yaml.safe_load((SECRET / "values.yaml").read_text())
    c.JupyterHub.services = []
    c.JupyterHub.load_roles = []
    for key, service in (values["hub"].get("services") or {}).items():
        service.setdefault("name", key)
        service.pop("apiToken", None)
        service["api_token"] = secret(f"hub.services.{key}.apiToken")
        c.JupyterHub.services.append(service)
    for key, role in (values["hub"].get("loadRoles") or {}).items():
        role.setdefault("name", key)
        c.JupyterHub.load_roles.append(role)

c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.KubeSpawner.namespace = os.environ["POD_NAMESPACE"]
c.KubeSpawner.slug_scheme = SETTINGS["slug_scheme"]
c.KubeSpawner.common_labels = SETTINGS["common_labels"]
c.KubeSpawner.extra_labels = {"hub.jupyter.org/network-access-hub": "true"}
c.KubeSpawner.image = SETTINGS["singleuser_image"]
c.KubeSpawner.cmd = [SETTINGS["python"], SETTINGS["singleuser"]]
c.KubeSpawner.uid = 1000
c.KubeSpawner.fs_gid = 100
# what Pod Security `restricted` asks of a pod (z2jh's defaults since chart 4 are alike)
c.KubeSpawner.container_security_context = {"runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
c.KubeSpawner.pod_security_context = {"seccompProfile": {"type": "RuntimeDefault"}}
c.KubeSpawner.storage_pvc_ensure = True
c.KubeSpawner.storage_class = SETTINGS["storage_class"]
c.KubeSpawner.storage_capacity = "1Gi"
c.KubeSpawner.storage_access_modes = ["ReadWriteOnce"]
c.KubeSpawner.volumes = [{"name": "volume-{user_server}",
                          "persistentVolumeClaim": {"claimName": "{pvc_name}"}}]
c.KubeSpawner.volume_mounts = [{"name": "volume-{user_server}", "mountPath": "/home/jovyan"}]
c.KubeSpawner.start_timeout = 60
c.KubeSpawner.http_timeout = 30
c.KubeSpawner.delete_grace_period = 1
c.KubeSpawner.services_enabled = False
c.KubeSpawner.events_enabled = False


def pick_port(spawner):
    # every simulated pod shares the host's network: give each server its own port
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        spawner.port = s.getsockname()[1]


c.KubeSpawner.pre_spawn_hook = pick_port

if SETTINGS.get("static"):  # singleuser.storage.type: static, as z2jh's jupyterhub_config.py renders it
    c.KubeSpawner.storage_pvc_ensure = False
    c.KubeSpawner.volumes = [{"name": "home", "persistentVolumeClaim": {"claimName": SETTINGS["static"]["pvcName"]}}]
    c.KubeSpawner.volume_mounts = [{"mountPath": "/home/jovyan", "name": "home",
                                    "subPath": SETTINGS["static"]["subPath"]}]
c.KubeSpawner.volumes.extend(SETTINGS.get("extra_volumes", []))
c.KubeSpawner.volume_mounts.extend(SETTINGS.get("extra_volume_mounts", []))
'''


class Z2JHNamespace:
    """A z2jh-shaped namespace (see module doc). Main attributes:

    namespace, release (label value), prefix ("" or "<release>-"), names: hub_deployment, hub_secret,
    hub_db_pvc, hub_service, hub_configmap, hub_serviceaccount; hub_port, hub_url (http://127.0.0.1:P),
    hub_api_url (hub_url + /hub/api), token (the jdr service's API token), users ({key: Z2JHUser}, key
    "name" or "name/server"), pvc_names ({key: pvc name}), cookie_secret, proxy_token, crypt_key.
    """

    def __init__(self, cluster, name: str | None = None, release: str | None = None,
                 running=("alice",), users=DEFAULT_USERS, slug_scheme: str = "safe",
                 workdir: Path | None = None, start_hub: bool = True, timeout: float = 90,
                 pod_security: str | None = "restricted", static: dict | None = None,
                 extra_volumes: dict[str, str] | None = None, hub_values: dict | None = None,
                 hub_db: dict | None = None):
        self.k = cluster
        # hub_values: chart values under `hub` an operator adds (hub.services, hub.loadRoles, as documented
        # in cronjobs/README.md), merged into the Secret's values.yaml as Helm merges values files; when
        # given, the hub's services and roles are exactly theirs, rendered as the chart does (see
        # HUB_CONFIG), instead of the built-in `jdr` service and role. The `jdr` service's apiToken, if given, is `token`.
        self.hub_values = json.loads(json.dumps(hub_values)) if hub_values else None
        # Pod Security Admission level enforced on the namespace (label pod-security.kubernetes.io/enforce):
        # the hub, the servers and every jdr mover of the common case must pass `restricted`, as in a
        # hardened cluster; None leaves the namespace unlabelled (the cluster default: privileged).
        self.pod_security = pod_security
        # static: {"pvcName": ..., "subPath": template} for singleuser.storage.type static (one RWX PVC of
        # homes, made here; each user's home the subdirectory KubeSpawner's expansion names, as `home_dirs`);
        # extra_volumes: {volume name: PVC name} mounted into every server at /mnt/<name> (made here).
        self.static = dict(static) if static else None
        self.extra_volumes = dict(extra_volumes or {})
        # hub_db: {"type": "postgres"|"mysql", "url": SQLAlchemy URL without password, "password": ...}: the
        # hub on a database server as z2jh configures it (hub.db.type/url in values.yaml, the password in the
        # Secret's key hub.db.password, which the hub's config sets as PGPASSWORD/MYSQL_PWD); no hub-db-dir PVC.
        self.hub_db = dict(hub_db) if hub_db else None
        self.home_dirs: dict[str, str] = {}  # user key -> subdirectory of the static PVC
        self.namespace = name or f"z2jh-{uuid.uuid4().hex[:6]}"
        self.release = release or "jupyterhub"
        self.prefix = f"{release}-" if release else ""
        self.hub_deployment = f"{self.prefix}hub"
        self.hub_secret = f"{self.prefix}hub"
        self.hub_configmap = f"{self.prefix}hub"
        self.hub_serviceaccount = f"{self.prefix}hub"
        self.hub_service = f"{self.prefix}hub"
        self.hub_db_pvc = f"{self.prefix}hub-db-dir"
        self.slug_scheme = slug_scheme
        self.running = list(running)
        self.user_specs = [dict(u) for u in users]
        self.workdir = Path(workdir) if workdir else Path(os.environ.get("TMPDIR", "/tmp")) / self.namespace
        self.start_hub = start_hub
        self.timeout = timeout
        self.hub_port = free_port()
        self.proxy_port = free_port()
        self.hub_url = f"http://127.0.0.1:{self.hub_port}"
        self.hub_api_url = f"{self.hub_url}/hub/api"
        self.token = secrets.token_hex(32)
        if self.hub_values:  # the token jdr's backups use: the service with the `admin:servers` role
            roles = (self.hub_values.get("loadRoles") or {}).values()
            backup = next((n for r in roles if "admin:servers" in r.get("scopes", ()) for n in r.get("services", ())),
                          "jdr")
            self.token = ((self.hub_values.get("services") or {}).get(backup) or {}).get("apiToken") or self.token
        self.cookie_secret = secrets.token_hex(32)
        self.proxy_token = secrets.token_hex(32)
        self.crypt_key = secrets.token_hex(32)
        self.users: dict[str, Z2JHUser] = {}
        self.chart_labels = {"app": "jupyterhub", "heritage": "Helm", "release": self.release,
                             "chart": f"jupyterhub-{CHART_VERSION}"}
        for spec in self.user_specs:
            scheme = spec.get("slug_scheme", slug_scheme)
            for server in spec.get("servers", [""]):
                n = kubespawner_names(spec["name"], server, self.namespace, scheme)
                u = Z2JHUser(name=spec["name"], server_name=server, slug_scheme=scheme, pvc_name=n["pvc_name"],
                             pod_name=kubespawner_names(spec["name"], server, self.namespace,
                                                        slug_scheme)["pod_name"],
                             labels={"hub.jupyter.org/username": n["username_label"]})
                self.users[u.key] = u
        for r in self.running:
            if r not in self.users:
                raise ValueError(f"running user {r!r} is not among the users {list(self.users)}")

    # -- convenience --------------------------------------------------------------------------------
    @property
    def pvc_names(self) -> dict[str, str]:
        return {k: u.pvc_name for k, u in self.users.items()}

    def user(self, key: str) -> Z2JHUser:
        return self.users[key]

    def pvc_dir(self, pvc_name: str) -> Path:
        """Host directory of a PVC in this namespace."""
        return self.k.pvc_dir(self.namespace, pvc_name)

    def user_dir(self, key: str) -> Path:
        return self.pvc_dir(self.users[key].pvc_name)

    def hub_db_path(self) -> Path:
        return self.pvc_dir(self.hub_db_pvc) / "jupyterhub.sqlite"

    def write_file(self, pvc_name: str, rel: str, data: bytes | str, uid: int = 1000, gid: int = 100,
                   mode: int = 0o644) -> Path:
        root = self.pvc_dir(pvc_name)
        p = root / rel
        for d in reversed(p.relative_to(root).parents[:-1]):  # directories the user makes, owned by them
            if not (root / d).exists():
                (root / d).mkdir()
                os.chown(root / d, uid, gid)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        os.chown(p, uid, gid)
        p.chmod(mode)
        return p

    def read_file(self, pvc_name: str, rel: str) -> bytes:
        return (self.pvc_dir(pvc_name) / rel).read_bytes()

    def api(self, method: str, path: str, body=None, token: str | None = None, timeout: float = 30):
        """Call the hub REST API; returns (status, parsed JSON or None)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.hub_api_url}{path}", data=data, method=method,
                                     headers={"Authorization": f"token {token or self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def hub_pod(self):
        pods = self.k.core.list_namespaced_pod(
            self.namespace, label_selector=f"component=hub,release={self.release}").items
        pods = [p for p in pods if p.metadata.deletion_timestamp is None]
        return pods[0] if pods else None

    def hub_log(self) -> str:
        p = self.hub_pod()
        return self.k.pod_log(self.namespace, p.metadata.name) if p else "(no hub pod)"

    # -- create -------------------------------------------------------------------------------------
    def create(self) -> Z2JHNamespace:
        t0 = time.monotonic()
        k, ns = self.k, self.namespace
        self.workdir.mkdir(parents=True, exist_ok=True)
        k.create_namespace(ns, labels={"pod-security.kubernetes.io/enforce": self.pod_security,
                                       "pod-security.kubernetes.io/enforce-version": "latest"}
                           if self.pod_security else None)
        self._rbac()
        self._secret()
        self._configmap()
        self._hub_db_pvc()
        self._user_pvcs()
        self._hub_db()
        self._service()
        self._deployment(replicas=1 if self.start_hub else 0)
        if self.start_hub:
            self.wait_hub_ready()
            for key in self.running:
                self.start_server(key)
        self.create_seconds = time.monotonic() - t0
        return self

    def _labels(self, component: str, **extra) -> dict:
        return {"component": component, **self.chart_labels, **extra}

    def _rbac(self) -> None:
        k, ns, name = self.k, self.namespace, self.hub_serviceaccount
        k.core.create_namespaced_service_account(ns, {"metadata": {"name": name, "labels": self._labels("hub")}})
        k.rbac.create_namespaced_role(ns, {
            "metadata": {"name": name, "labels": self._labels("hub")},
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "persistentvolumeclaims", "secrets", "services"],
                 "verbs": ["get", "watch", "list", "create", "delete"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "watch", "list"]},
            ]})
        k.rbac.create_namespaced_role_binding(ns, {
            "metadata": {"name": name, "labels": self._labels("hub")},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
            "roleRef": {"kind": "Role", "name": name, "apiGroup": "rbac.authorization.k8s.io"}})

    def values(self) -> dict:
        """The subset of chart values the Secret's values.yaml carries (with ``hub_values`` merged)."""
        values = self._base_values()
        if self.hub_values:  # the operator's services and roles, exactly: not merged with the built-in ones
            hub = {k: v for k, v in values["hub"].items() if k not in ("services", "loadRoles")}
            values["hub"] = merge_values(hub, self.hub_values)
        return values

    def _service_tokens(self) -> dict[str, str]:
        """The hub Secret's `hub.services.<name>.apiToken` keys (the chart's secret.yaml)."""
        services = self.values()["hub"].get("services") or {}
        return {f"hub.services.{k}.apiToken": v.get("apiToken") or secrets.token_hex(32)
                for k, v in services.items()}

    def _base_values(self) -> dict:
        return {
            "fullnameOverride": "" if not self.prefix else None,
            "hub": {
                "config": {"JupyterHub": {"cookie_secret": self.cookie_secret},
                           "ConfigurableHTTPProxy": {"auth_token": self.proxy_token},
                           "CryptKeeper": {"keys": [self.crypt_key]},
                           **({"KubeSpawner": {"slug_scheme": self.slug_scheme}} if self.static else {})},
                "services": {"jdr": {"apiToken": self.token}},
                "loadRoles": {"jdr": {"services": ["jdr"], "scopes": ["admin:users", "admin:servers",
                                                                     "admin:server_state"]}},
                "db": ({"type": self.hub_db["type"], "url": self.hub_db["url"]} if self.hub_db else
                       {"type": "sqlite-pvc", "pvc": {"storage": "1Gi", "accessModes": ["ReadWriteOnce"]}}),
            },
            "singleuser": {"storage": self._storage_values(), "uid": 1000, "fsGid": 100},
        }

    def _storage_values(self) -> dict:
        extra = {"extraVolumes": [{"name": n, "persistentVolumeClaim": {"claimName": c}}
                                  for n, c in self.extra_volumes.items()],
                 "extraVolumeMounts": [{"name": n, "mountPath": f"/mnt/{n}"} for n in self.extra_volumes]}
        if self.static:
            return {"type": "static", "static": dict(self.static), "homeMountPath": "/home/jovyan", **extra}
        return {"type": "dynamic", "capacity": "1Gi",
                "dynamic": {"storageClass": self.k.storage_class, "pvcNameTemplate": "claim-{user_server}",
                            "volumeNameTemplate": "volume-{user_server}"},
                "homeMountPath": "/home/jovyan", **(extra if self.extra_volumes else {})}

    def _secret(self) -> None:
        data = {
            "values.yaml": yaml.safe_dump(self.values()),
            "hub.config.ConfigurableHTTPProxy.auth_token": self.proxy_token,
            "hub.config.JupyterHub.cookie_secret": self.cookie_secret,
            "hub.config.CryptKeeper.keys": self.crypt_key,
            "hub.services.jdr.apiToken": self.token,
            **(self._service_tokens() if self.hub_values else {}),
            **({"hub.db.password": self.hub_db["password"]} if self.hub_db and self.hub_db.get("password") else {}),
        }
        self.k.core.create_namespaced_secret(self.namespace, {
            "metadata": {"name": self.hub_secret, "labels": self._labels("hub")}, "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})

    def _configmap(self) -> None:
        settings = {
            "hub_port": self.hub_port, "proxy_port": self.proxy_port, "slug_scheme": self.slug_scheme,
            "common_labels": dict(self.chart_labels.items()),
            "singleuser_image": SINGLEUSER_IMAGE, "python": "python",
            "singleuser": str(HERE / "singleuser.py"), "storage_class": self.k.storage_class,
            "static": self.static,
            "render_values": bool(self.hub_values),
            "db_url": self.hub_db["url"] if self.hub_db else "",
            "db_type": self.hub_db["type"] if self.hub_db else "sqlite-pvc",
            "extra_volumes": [{"name": n, "persistentVolumeClaim": {"claimName": c}}
                              for n, c in self.extra_volumes.items()],
            "extra_volume_mounts": [{"name": n, "mountPath": f"/mnt/{n}"} for n in self.extra_volumes],
        }
        cfg = HUB_CONFIG.replace("__SETTINGS__", repr(settings))
        self.k.core.create_namespaced_config_map(self.namespace, {
            "metadata": {"name": self.hub_configmap, "labels": self._labels("hub")},
            "data": {"jupyterhub_config.py": cfg,
                     "checksum_hook-image-puller": "jdr-test"}})

    def _pvc(self, name: str, labels: dict, annotations: dict | None = None, modes=("ReadWriteOnce",)) -> None:
        self.k.core.create_namespaced_persistent_volume_claim(self.namespace, {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "labels": labels, "annotations": annotations or {}},
            "spec": {"accessModes": list(modes), "resources": {"requests": {"storage": "1Gi"}},
                     "storageClassName": self.k.storage_class}})

    def _hub_db_pvc(self) -> None:
        if not self.hub_db:
            self._pvc(self.hub_db_pvc, self._labels("hub"))

    def _shared_pvcs(self) -> None:
        """The static layout's shared PVC, each user's home a subdirectory of it; the extra volumes."""
        from types import SimpleNamespace

        from kubespawner.spawner import KubeSpawner

        for claim in [self.static["pvcName"]] if self.static else []:
            self._pvc(claim, {}, modes=("ReadWriteMany",))
        for claim in self.extra_volumes.values():
            self._pvc(claim, {}, modes=("ReadWriteMany",))
        for claim in [*([self.static["pvcName"]] if self.static else []), *self.extra_volumes.values()]:
            self.k.wait_pvc_bound(self.namespace, claim)
            os.chown(self.pvc_dir(claim), 1000, 100)
        for key, u in self.users.items() if self.static else []:
            fake = SimpleNamespace(name=u.server_name, user=SimpleNamespace(name=u.name, id=0),
                                   slug_scheme=self.slug_scheme, _namespace_default=lambda: self.namespace)
            sub = KubeSpawner._expand_user_properties(fake, self.static["subPath"])
            self.home_dirs[key] = sub
            rel = f"{sub}/README.md"
            self.write_file(self.static["pvcName"], rel, f"# home of {u.name}\n")
        for claim in self.extra_volumes.values():
            self.write_file(claim, "shared/data.csv", "a,b\n1,2\n")

    def home_dir(self, key: str) -> Path:
        """A user's home: their PVC, or their subdirectory of the static PVC."""
        if self.static:
            return self.pvc_dir(self.static["pvcName"]) / self.home_dirs[key]
        return self.user_dir(key)

    def _user_pvcs(self) -> None:
        import jupyterhub
        import kubespawner

        if self.static:
            self._shared_pvcs()
            return
        self._shared_pvcs()

        for u in self.users.values():
            labels = {**self.chart_labels, **u.labels,
                      "app.kubernetes.io/component": "singleuser-server", "component": "singleuser-storage"}
            ann = {"hub.jupyter.org/username": u.name,
                   "hub.jupyter.org/kubespawner-version": kubespawner.__version__,
                   "hub.jupyter.org/jupyterhub-version": jupyterhub.__version__}
            if u.server_name:
                ann["hub.jupyter.org/servername"] = u.server_name
            self._pvc(u.pvc_name, labels, ann)
        for u in self.users.values():
            self.k.wait_pvc_bound(self.namespace, u.pvc_name)
            d = self.pvc_dir(u.pvc_name)
            os.chown(d, 1000, 100)
            d.chmod(0o2775)
            self.write_file(u.pvc_name, "README.md", f"# home of {u.name} ({u.server_name or 'default'})\n")
            self.write_file(u.pvc_name, "work/notebook.ipynb", json.dumps(
                {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
            os.chown(d / "work", 1000, 100)

    def _hub_db_url(self) -> str:
        """The SQLAlchemy URL of the hub DB as this process reaches it (with the password)."""
        if not self.hub_db:
            return f"sqlite:///{self.pvc_dir(self.hub_db_pvc) / 'jupyterhub.sqlite'}"
        head, tail = self.hub_db["url"].split("://", 1)
        user, rest = tail.split("@", 1)
        return f"{head}://{user}:{urllib.parse.quote(self.hub_db['password'], safe='')}@{rest}"

    def _hub_db(self) -> None:
        """Make the hub DB with JupyterHub's ORM, in the hub-db-dir volume, owned by uid 1000 (or in the
        database server of ``hub_db``)."""
        from jupyterhub import orm

        if not self.hub_db:
            self.k.wait_pvc_bound(self.namespace, self.hub_db_pvc)
        session = orm.new_session_factory(self._hub_db_url())()
        try:
            # the hub's own OAuth client row (made at first start-up) is needed for API tokens
            if not session.query(orm.OAuthClient).filter_by(identifier="jupyterhub").first():
                session.add(orm.OAuthClient(identifier="jupyterhub", description="JupyterHub",
                                            secret=secrets.token_hex(16), redirect_uri="/hub/oauth_callback"))
                session.commit()
            by_name: dict[str, orm.User] = {}
            for u in self.users.values():
                ou = by_name.get(u.name)
                if ou is None:
                    ou = by_name[u.name] = orm.User(name=u.name)
                    session.add(ou)
                    session.commit()
                    u.token = ou.new_api_token(note="jdr-test", expires_in=None)
                else:
                    u.token = self.users[u.name].token if u.name in self.users else ""
                sp = orm.Spawner(user=ou, name=u.server_name)
                sp.state = {"pvc_name": u.pvc_name}
                session.add(sp)
                session.commit()
        finally:
            session.close()
        if self.hub_db:
            return
        d = self.pvc_dir(self.hub_db_pvc)
        db = d / "jupyterhub.sqlite"
        for p in d.iterdir():
            os.chown(p, 1000, 1000)
        os.chown(d, 1000, 1000)
        # double-check with plain sqlite: the state is where jdr will look for it
        con = sqlite3.connect(db)
        try:
            n = con.execute("select count(*) from spawners where state like '%pvc_name%'").fetchone()[0]
        finally:
            con.close()
        assert n == len(self.users), n

    def _service(self) -> None:
        self.k.core.create_namespaced_service(self.namespace, {
            "metadata": {"name": self.hub_service, "labels": self._labels("hub"),
                         "annotations": {"prometheus.io/scrape": "true", "prometheus.io/path": "/hub/metrics",
                                         "prometheus.io/port": "8081"}},
            "spec": {"type": "ClusterIP", "selector": {"component": "hub", "release": self.release},
                     "ports": [{"name": "hub", "port": 8081, "targetPort": "http", "protocol": "TCP"}]}})

    def _deployment(self, replicas: int) -> None:
        sel = {"component": "hub", "app": "jupyterhub", "release": self.release}
        tpl_labels = {**sel, "hub.jupyter.org/network-access-proxy-api": "true",
                      "hub.jupyter.org/network-access-proxy-http": "true",
                      "hub.jupyter.org/network-access-singleuser": "true"}
        venv_bin = str(Path(sys.executable).parent)
        container = {
            "name": "hub", "image": HUB_IMAGE,
            "args": ["jupyterhub", "--config", "/usr/local/etc/jupyterhub/jupyterhub_config.py",
                     "--upgrade-db"],
            "workingDir": "/srv/jupyterhub",
            "ports": [{"name": "http", "containerPort": self.hub_port}],
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "allowPrivilegeEscalation": False,
                                "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
            "env": [
                {"name": "PYTHONUNBUFFERED", "value": "1"},
                {"name": "HELM_RELEASE_NAME", "value": self.release},
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "CONFIGPROXY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {
                    "name": self.hub_secret, "key": "hub.config.ConfigurableHTTPProxy.auth_token"}}},
                {"name": "PATH", "value": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin"},
            ],
            "volumeMounts": [
                {"name": "config", "mountPath": "/usr/local/etc/jupyterhub/jupyterhub_config.py",
                 "subPath": "jupyterhub_config.py"},
                {"name": "secret", "mountPath": "/usr/local/etc/jupyterhub/secret/"},
                {"name": "pvc", "mountPath": "/srv/jupyterhub"},  # an emptyDir with hub_db
            ],
            "readinessProbe": {"httpGet": {"path": "/hub/health", "port": "http"}, "periodSeconds": 2},
        }
        dep = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": self.hub_deployment, "labels": self._labels("hub")},
            "spec": {
                "replicas": replicas, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": sel},
                "template": {
                    "metadata": {"labels": tpl_labels,
                                 "annotations": {"checksum/config-map": "jdr-test", "checksum/secret": "jdr-test"}},
                    "spec": {
                        "serviceAccountName": self.hub_serviceaccount,
                        "securityContext": {"fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
                        "terminationGracePeriodSeconds": 5,
                        "volumes": [
                            {"name": "config", "configMap": {"name": self.hub_configmap}},
                            {"name": "secret", "secret": {"secretName": self.hub_secret}},
                            {"name": "pvc", "persistentVolumeClaim": {"claimName": self.hub_db_pvc}}
                            if not self.hub_db else {"name": "pvc", "emptyDir": {}},
                        ],
                        "containers": [container],
                    },
                },
            },
        }
        self.k.apps.create_namespaced_deployment(self.namespace, dep)

    # -- hub control ---------------------------------------------------------------------------------
    def wait_hub_ready(self, timeout: float | None = None) -> None:
        timeout = timeout or self.timeout

        def up():
            p = self.hub_pod()
            if p is not None and p.status and p.status.phase in ("Failed", "Succeeded"):
                raise RuntimeError(f"hub pod exited:\n{self.hub_log()[-4000:]}")
            try:
                st, _body = self.api("GET", "/")
            except OSError:
                return False
            return st == 200
        try:
            self.k.wait_for(up, timeout, f"hub in {self.namespace} to answer its API", interval=0.3)
        except TimeoutError as e:
            raise TimeoutError(f"{e}\nhub log:\n{self.hub_log()[-4000:]}") from None
        self.k.wait_for(lambda: (self.k.apps.read_namespaced_deployment(
            self.hub_deployment, self.namespace).status.ready_replicas or 0) == 1, 30, "hub deployment ready")

    def _server_path(self, key: str) -> str:
        u = self.users[key]
        from urllib.parse import quote
        name = quote(u.name, safe="")
        if u.server_name:
            return f"/users/{name}/servers/{quote(u.server_name, safe='')}"
        return f"/users/{name}/server"

    def start_server(self, key: str, timeout: float = 60) -> None:
        st, body = self.api("POST", self._server_path(key))
        if st not in (201, 202, 400):  # 400: already running
            raise RuntimeError(f"starting {key}: {st} {body}\n{self.hub_log()[-3000:]}")
        u = self.users[key]

        def ready():
            st, info = self.api("GET", f"/users/{self._server_path(key).split('/')[2]}")
            srv = (info or {}).get("servers", {}).get(u.server_name) if st == 200 else None
            return srv is not None and srv.get("ready")
        try:
            self.k.wait_for(ready, timeout, f"server {key} to be ready", interval=0.5)
        except TimeoutError as e:
            raise TimeoutError(f"{e}\nhub log:\n{self.hub_log()[-4000:]}") from None
        u.running = True

    def stop_server(self, key: str, timeout: float = 60) -> None:
        st, body = self.api("DELETE", self._server_path(key))
        if st not in (202, 204):
            raise RuntimeError(f"stopping {key}: {st} {body}")
        u = self.users[key]
        self.k.wait_gone(self.k.core.read_namespaced_pod, u.pod_name, self.namespace, timeout=timeout,
                         what=f"pod {u.pod_name} to be deleted")
        u.running = False

    def scale_hub(self, replicas: int, wait: bool = True) -> None:
        self.k.apps.patch_namespaced_deployment_scale(self.hub_deployment, self.namespace,
                                                      {"spec": {"replicas": replicas}})
        if not wait:
            return
        if replicas == 0:
            self.k.wait_for(lambda: self.hub_pod() is None and not self.k.core.list_namespaced_pod(
                self.namespace, label_selector=f"component=hub,release={self.release}").items,
                60, "hub pod gone")
        else:
            self.wait_hub_ready()

    # -- delete -------------------------------------------------------------------------------------
    def delete(self, wait: bool = True, timeout: float = 120) -> None:
        try:
            self.k.delete_namespace(self.namespace, wait=wait, timeout=timeout)
        except ApiException as e:
            if e.status != 404:
                raise
        shutil.rmtree(self.workdir, ignore_errors=True)
