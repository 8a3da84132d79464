"""Mover pods: short-lived pods of jdr's own image running ``jdr agent …`` next to a volume.

:class:`PodCache` keeps the namespace's pods current from one list and one watch (an informer), so that
waiting for a mover is a wait on a watch, never a poll, and "which pod mounts this PVC, on which node" is
answered from fresh state right before a mover is created. :class:`Movers` runs one mover to completion:
create, wait, read the result from the termination message, and delete the pod — also when it failed or
timed out (``try/finally``). :meth:`Movers.run_as_owner` runs a volume's mover as the volume's owner and,
when the mover finds that the volume belongs to someone else or to several users, runs it again as
them (or privileged, logged as the exception it is).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from dr.crypto.keys import load_identity
from dr.deployments.kubernetes.api import PODS, Kube, KubeConflict, KubeError, KubeGone, Obj
from dr.deployments.kubernetes.objects import (
    MANAGED_BY,
    MoverConfig,
    MoverSpec,
    Security,
    as_owner,
    container_result,
    make_mover_pod,
    mover_env,
    pending_reason,
    pod_claims,
    pod_is_active,
)
from dr.errors import DeploymentError, JdrError
from dr.repository.repository import Repository
from dr.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

WATCH_SECONDS = 240


def mover_config(settings: Settings, image: str, *, service_account: str = "") -> MoverConfig:
    """What every mover of one deployment (or drill) shares. The public recipients are derived here from
    the identity this process holds, so that movers that only write never receive the identity."""
    k = settings.deployment.kubernetes
    enc = settings.encryption
    recipients: tuple[str, ...] = ()
    text = os.environ.get(enc.key_env, "") if enc.key_env else ""
    if text:
        recipients = (str(load_identity(text=text).recipient), *enc.recipients)
    return MoverConfig(image=image, command=tuple(k.mover_command), env=mover_env(settings),
                       env_from_secret=k.mover_env_from_secret, secret_keys=tuple(k.mover_secret_keys),
                       key_env=enc.key_env, recipients=recipients, service_account=service_account,
                       timeout=k.mover_timeout, labels=dict(k.pod_labels), requests=dict(k.mover_requests),
                       limits=dict(k.mover_limits))


class MoverFailed(DeploymentError):
    """A mover pod failed, timed out, or vanished; the message says why (with the agent's own error).
    ``kind``: the class name of the agent's own error when it reported one (e.g. ``UsageError``)."""

    kind: str = ""


class PodCache:
    """The pods of one namespace, kept current by a list and a watch in a background thread."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self._pods: dict[str, Obj] = {}
        self._gone: set[str] = set()  # names deleted since they were last seen (until re-created)
        self._cond = threading.Condition()
        self._version = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PodCache:
        self._relist()
        self._thread = threading.Thread(target=self._loop, name=f"jdr-pods-{self.namespace}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _relist(self) -> None:
        items, version = self.kube.list(PODS, self.namespace)
        with self._cond:
            self._pods = {p["metadata"]["name"]: p for p in items}
            self._version = version
            self._cond.notify_all()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for kind, obj in self.kube.watch(PODS, self.namespace, resource_version=self._version,
                                                 timeout_seconds=WATCH_SECONDS):
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or self._version)
                    with self._cond:
                        if kind != "BOOKMARK":
                            name = obj["metadata"]["name"]
                            if kind == "DELETED":
                                self._pods.pop(name, None)
                                self._gone.add(name)
                            else:
                                self._pods[name] = obj
                                self._gone.discard(name)
                        self._version = version
                        self._cond.notify_all()
                    if self._stop.is_set():
                        return
            except KubeGone:
                self._safe_relist()
            except JdrError as e:
                log.warning("watching pods in %s: %s; listing again", self.namespace, e)
                self._stop.wait(1.0)
                self._safe_relist()

    def _safe_relist(self) -> None:
        try:
            self._relist()
        except JdrError as e:
            log.warning("listing pods in %s: %s", self.namespace, e)
            self._stop.wait(2.0)

    # --- queries ---------------------------------------------------------------------------------

    def get(self, name: str) -> Obj | None:
        with self._cond:
            return self._pods.get(name)

    def pods(self) -> list[Obj]:
        with self._cond:
            return list(self._pods.values())

    def users_of(self, claim: str) -> list[Obj]:
        """Pods that hold ``claim`` (not yet terminated)."""
        return [p for p in self.pods() if claim in pod_claims(p) and pod_is_active(p)]

    def node_of(self, claim: str, exclude_jdr: bool = True) -> str:
        """The node where a running pod (not jdr's own, by default) mounts ``claim``, or ""."""
        for p in self.users_of(claim):
            if exclude_jdr and ((p.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY) == "jdr":
                continue
            node = (p.get("spec") or {}).get("nodeName")
            if node:
                return str(node)
        return ""

    def wait(self, check: Callable[[PodCache], T | None], timeout: float) -> T | None:
        """Wait (on watch events) until ``check(self)`` returns something; None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = check(self)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 5.0))

    def was_deleted(self, name: str) -> bool:
        with self._cond:
            return name in self._gone

    def forget(self, name: str) -> None:
        """A pod of this name was just created: an earlier deletion of the name no longer counts."""
        with self._cond:
            self._gone.discard(name)


class Movers:
    """Runs mover pods for one deployment (thread-safe: many movers may run at once)."""

    def __init__(self, kube: Kube, cache: PodCache, cfg: MoverConfig) -> None:
        self.kube = kube
        self.cache = cache
        self.cfg = cfg
        self.started = 0  # movers created (for reports and tests)
        self._lock = threading.Lock()

    def run(self, spec: MoverSpec, repo: Repository | None = None) -> dict[str, Any]:
        """Run one mover to its end and return its JSON result; delete the pod whatever happens.

        Raises MoverFailed when the pod fails without a result, times out, or vanishes, and the
        KubeError of a refused create (403/409/422).
        """
        body = make_mover_pod(spec, self.cfg)
        name = spec.name
        try:
            self.kube.create(PODS, body, self.cache.namespace)
        except KubeConflict:
            # A pod of the same name: left by an earlier attempt of this very run. Replace it.
            log.warning("mover %s exists already (an earlier attempt); replacing it", name)
            self._delete_and_wait(name, 60)
            self.kube.create(PODS, body, self.cache.namespace)
        self.cache.forget(name)
        with self._lock:
            self.started += 1
        finished = False
        try:
            pod = self.cache.wait(lambda c: _finished(c, name), self.cfg.timeout + 30)
            if pod is None:
                current = self.cache.get(name) or {}
                raise MoverFailed(f"mover pod {name} did not finish within {self.cfg.timeout}s "
                                  f"({pending_reason(current)})",
                                  hint="raise deployment.kubernetes.mover_timeout, or check why the pod is "
                                       "stuck (kubectl describe pod)")
            if pod.get("_deleted"):
                raise MoverFailed(f"mover pod {name} was deleted before it finished")
            finished = True
            return _result(pod, name, repo)
        finally:
            try:
                if finished:
                    self.kube.delete(PODS, name, self.cache.namespace, grace_seconds=0)
                else:
                    # It may still be writing: make sure it is gone before anyone else touches the volume.
                    self._delete_and_wait(name, 120)
            except KubeError as e:
                log.warning("could not delete mover pod %s: %s", name, e)

    def run_as_owner(self, spec: MoverSpec, repo: Repository | None, *, privileged: Security,
                     label: str) -> tuple[dict[str, Any], Security]:
        """Run a volume's mover as ``spec.security`` (a user); when the mover answers ``wrong-user``, run it
        again as the single owner it found on the volume, else as ``privileged``. Returns the result and
        the security it ran with (recorded, so the next mover starts right)."""
        sec = spec.security
        tried: list[Security] = []
        while True:
            result = self.run(spec if not tried else replace(spec, name=_retry_name(spec.name, len(tried)),
                                                             security=sec), repo)
            if result.get("status") != "wrong-user":
                return result, sec
            tried.append(sec)
            reason = str(result.get("reason") or "")
            owner = result.get("owner")
            if sec.privileged or len(tried) > 2:
                raise MoverFailed(f"{label}: the mover could not do its job ({reason})")
            if owner and not any(t.uid == int(owner[0]) and not t.privileged for t in tried):
                sec = as_owner(int(owner[0]), int(owner[1]), writes=spec.security.fs_group is not None)
                log.info("%s: %s (read from the volume): running the mover as uid %d, gid %d", label, reason,
                         sec.uid, sec.gid)
            else:
                sec = privileged
                log.warning("%s: %s: running the mover as %s — the documented exception to Pod Security "
                            "'restricted' (a volume with several owners)", label, reason, sec.describe())

    def _delete_and_wait(self, name: str, timeout: float) -> None:
        self.kube.delete(PODS, name, self.cache.namespace, grace_seconds=5)
        if self.cache.wait(lambda c: True if c.get(name) is None else None, timeout) is None:
            raise MoverFailed(f"mover pod {name} did not go away within {timeout:.0f}s")


def _retry_name(name: str, attempt: int) -> str:
    return f"{name[:58].rstrip('-')}-r{attempt}"


def _finished(cache: PodCache, name: str) -> Obj | None:
    pod = cache.get(name)
    if pod is None:
        return {"_deleted": True} if cache.was_deleted(name) else None
    phase = (pod.get("status") or {}).get("phase")
    return pod if phase in ("Succeeded", "Failed") else None


def _result(pod: Obj, name: str, repo: Repository | None) -> dict[str, Any]:
    code, reason, message = container_result(pod)
    doc = _parse_message(message)
    if doc is not None and "result_key" in doc and repo is not None:
        key = str(doc["result_key"])
        doc = json.loads(repo.store.get(key))
        try:
            repo.store.delete(key)
        except JdrError as e:
            log.debug("could not remove the result object %s: %s", key, e)
    if doc is not None and (code == 0 or doc.get("status") == "failed"):
        if doc.get("status") == "failed":
            failed = MoverFailed(str(doc.get("error") or "the mover failed"), hint=doc.get("hint"))
            failed.kind = str(doc.get("kind") or "")
            raise failed
        return doc
    phase_reason = (pod.get("status") or {}).get("reason") or ""
    tail = message.strip().splitlines()[-5:] if message else []
    raise MoverFailed(f"mover pod {name} failed (exit code {code}, {reason or phase_reason or 'no reason'})"
                      + (": " + " | ".join(tail) if tail else ""))


def _parse_message(message: str) -> dict[str, Any] | None:
    """The agent's JSON result: the whole message, or (logs as fallback) the last line that is JSON."""
    for text in (message, *reversed(message.strip().splitlines())):
        text = text.strip()
        if text.startswith("{"):
            try:
                doc = json.loads(text)
            except ValueError:
                continue
            if isinstance(doc, dict) and ("status" in doc or "result_key" in doc):
                return doc
    return None
