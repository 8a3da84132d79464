"""Where a z2jh release keeps its users' homes (the storage layout), and which extra volumes to back up.

z2jh ≥ 1.0 renders the chart values the hub reads into its Secret (templates/hub/secret.yaml, key
``values.yaml``); jupyterhub_config.py then configures KubeSpawner from ``singleuser.storage``:

- ``type: dynamic``: a PVC per server (``dynamic.pvcNameTemplate``); jdr finds them by label and spawner
  state (:mod:`.discovery`).
- ``type: static``: every server mounts PVC ``static.pvcName`` with ``subPath: static.subPath`` (default
  ``{username}``), expanded by KubeSpawner (:mod:`.subpath`); a home is a subdirectory of one shared volume.
- ``type: none``: homes are not persisted; jdr refuses (there is nothing it could back up or restore).
- ``extraVolumes`` (a list, or in chart ≥ 3 also a mapping of name to volume) are appended to every server's
  volumes; jdr backs up those named in ``deployment.kubernetes.extra_volumes`` that are PVCs.

jdr's settings (``home_storage``, ``static_claim``, ``static_subpath``, ``slug_scheme``) override what the
Secret says, and :attr:`StorageLayout.origin` records which won so that ``jdr status`` and the logs say
so. When the Secret cannot be read (no Secret, no ``values.yaml``: a release older than z2jh 1.0, or no
right to read it), settings alone decide and ``auto`` means ``dynamic``.

Pure apart from :func:`discover_layout`, which reads one Secret.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field
from typing import Any

import yaml

from dr.deployments.kubernetes.api import SECRETS, Kube, KubeError
from dr.deployments.kubernetes.subpath import check_template
from dr.errors import UsageError
from dr.settings import KubernetesSettings

log = logging.getLogger(__name__)

FROM_HUB = "the hub Secret's values.yaml"
FROM_SETTINGS = "jdr's settings"
DEFAULT = "default"


@dataclass(frozen=True)
class StorageLayout:
    """How homes are stored, and the extra volumes to back up (see the module doc)."""

    kind: str  # "dynamic" or "static"
    claim: str = ""  # static: the shared PVC
    subpath: str = ""  # static: KubeSpawner's subPath template
    scheme: str = "safe"  # KubeSpawner's slug_scheme
    extra: dict[str, str] = field(default_factory=dict)  # extra volume name (as configured) -> PVC name
    origin: dict[str, str] = field(default_factory=dict)  # field -> FROM_HUB / FROM_SETTINGS / DEFAULT

    def describe(self) -> dict[str, Any]:
        """For ``jdr status`` and manifests: the layout and where each part of it came from."""
        doc: dict[str, Any] = {"kind": self.kind, "origin": dict(self.origin)}
        if self.kind == "static":
            doc.update(claim=self.claim, subpath=self.subpath, slug_scheme=self.scheme)
        if self.extra:
            doc["extra_volumes"] = dict(self.extra)
        return doc


def values_from_secret(secret: dict[str, Any] | None) -> dict[str, Any] | None:
    """The chart values in a ``hub`` Secret (key ``values.yaml``), or None when it holds none."""
    data = ((secret or {}).get("data") or {}).get("values.yaml")
    if not data:
        return None
    try:
        doc = yaml.safe_load(base64.b64decode(data))
    except (ValueError, yaml.YAMLError) as e:
        log.warning("the hub Secret's values.yaml cannot be read (%s); using jdr's settings", e)
        return None
    return doc if isinstance(doc, dict) else None


def _get(doc: dict[str, Any] | None, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _extra_volumes(values: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    raw = _get(values, "singleuser.storage.extraVolumes")
    if isinstance(raw, dict):  # chart >= 3: {name: volume}, the name defaulting to the key
        return {str(v.get("name") or k): v for k, v in sorted(raw.items()) if isinstance(v, dict)}
    if isinstance(raw, list):
        return {str(v["name"]): v for v in raw if isinstance(v, dict) and v.get("name")}
    return {}


def decide_layout(values: dict[str, Any] | None, k: KubernetesSettings) -> StorageLayout:
    """The layout from the chart ``values`` (None: unreadable) and the settings ``k`` (pure).

    Raises UsageError (exit 2) naming the setting for a layout jdr cannot back up: ``storage.type: none``,
    an unknown type, static storage without a claim, a subPath template it cannot expand, an extra volume
    that is not a PVC.
    """
    origin: dict[str, str] = {}
    found_type = _get(values, "singleuser.storage.type")
    if k.home_storage != "auto":
        kind = k.home_storage
        origin["kind"] = FROM_SETTINGS
        if found_type and found_type != kind:
            log.warning("deployment.kubernetes.home_storage is %s but the hub Secret says "
                        "singleuser.storage.type: %s; using the setting", kind, found_type)
    elif found_type:
        kind, origin["kind"] = str(found_type), FROM_HUB
    else:
        kind, origin["kind"] = "dynamic", DEFAULT
    if kind == "none":
        raise UsageError("singleuser.storage.type: none (from the hub Secret's values.yaml): the servers keep no "
                         "home volume, so jdr has nothing to back up",
                         hint="set deployment.kubernetes.home_storage to dynamic or static if the chart values "
                              "are not what runs")
    if kind not in ("dynamic", "static"):
        raise UsageError(f"singleuser.storage.type: {kind!r} is not a layout jdr knows (dynamic, static)",
                         hint="set deployment.kubernetes.home_storage")

    def pick(setting: str, value_path: str, fallback: str, name: str) -> str:
        if setting:
            origin[name] = FROM_SETTINGS
            return setting
        found = _get(values, value_path)
        if found:
            origin[name] = FROM_HUB
            return str(found)
        origin[name] = DEFAULT
        return fallback

    scheme = pick(k.slug_scheme, "hub.config.KubeSpawner.slug_scheme", "safe", "slug_scheme")
    if scheme not in ("safe", "escape"):
        raise UsageError(f"deployment.kubernetes.slug_scheme: {scheme!r} is not one of safe, escape")
    claim = subpath = ""
    if kind == "static":
        claim = pick(k.static_claim, "singleuser.storage.static.pvcName", "", "claim")
        if not claim:
            raise UsageError("deployment.kubernetes.static_claim: static home storage needs the shared PVC's name "
                             "(singleuser.storage.static.pvcName is not in the hub Secret)")
        subpath = pick(k.static_subpath, "singleuser.storage.static.subPath", "{username}", "subpath")
        check_template(subpath)
    declared = _extra_volumes(values)
    extra: dict[str, str] = {}
    for name in k.extra_volumes:
        vol = declared.get(name)
        if vol is None:
            extra[name] = name  # a PVC name
        elif (vol.get("persistentVolumeClaim") or {}).get("claimName"):
            extra[name] = str(vol["persistentVolumeClaim"]["claimName"])
        else:
            raise UsageError(f"deployment.kubernetes.extra_volumes: {name!r} is a {_kind_of(vol)} volume in "
                             "singleuser.storage.extraVolumes, not a PVC; jdr backs up PVCs only")
    return StorageLayout(kind=kind, claim=claim, subpath=subpath, scheme=scheme, extra=extra, origin=origin)


def _kind_of(vol: dict[str, Any]) -> str:
    return next((key for key in vol if key != "name"), "nameless")


def discover_layout(kube: Kube, k: KubernetesSettings, hub_secret: str) -> StorageLayout:
    """:func:`decide_layout` from the hub Secret ``hub_secret`` (when readable) and the settings; logs what
    the settings override."""
    values = None
    if k.home_storage == "auto" or k.extra_volumes or not (k.static_claim and k.static_subpath):
        try:
            values = values_from_secret(kube.get_or_none(SECRETS, hub_secret) if hub_secret else None)
        except KubeError as e:
            log.warning("could not read the hub Secret %s (%s); the storage layout comes from jdr's settings",
                        hub_secret, e)
    layout = decide_layout(values, k)
    overridden = sorted(f for f, o in layout.origin.items() if o == FROM_SETTINGS)
    if overridden and values is not None:
        log.info("storage layout: %s from jdr's settings (they override the hub Secret)", ", ".join(overridden))
    return layout
