"""pytest plugin: the test Kubernetes cluster and the z2jh-shaped namespace.

Register it once, in the top-level tests/conftest.py:  pytest_plugins = ["tests.controlplane.fixtures"]

Fixtures
  k8s_cluster      (session)  a started KubeCluster (see harness.py): real kube-apiserver,
                              kube-controller-manager, kube-scheduler, etcd; node agents node-a, node-b;
                              storage agent (StorageClass jdr-test, VolumeSnapshotClass jdr-test-snapclass).
  k8s_namespace    (function) a fresh namespace name (its `default` ServiceAccount exists); deleted after.
  k8s_env          (function) sets KUBECONFIG to the admin kubeconfig for the test (monkeypatch); returns it.
  z2jh_namespace   (function) factory: z2jh_namespace(name=None, release=None, running=("alice",), ...)
                              -> Z2JHNamespace (see z2jh.py); every namespace made is deleted after the test.
"""

from __future__ import annotations

import atexit
import os

import pytest

from .harness import KubeCluster


@pytest.fixture(scope="session")
def k8s_cluster():
    cluster = KubeCluster()
    atexit.register(cluster.stop)  # backstop if the session is torn down abnormally
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def k8s_namespace(k8s_cluster):
    name = k8s_cluster.create_namespace()
    yield name
    # deletion goes on in the background (the real namespace controller finalizes it, ~5-15 s);
    # tests/controlplane/test_controlplane.py::test_namespace_deletion_completes checks that it completes
    k8s_cluster.delete_namespace(name, wait=False)


@pytest.fixture
def k8s_env(k8s_cluster, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(k8s_cluster.kubeconfig))
    return k8s_cluster.kubeconfig


@pytest.fixture
def z2jh_namespace(k8s_cluster, tmp_path_factory):
    from .z2jh import Z2JHNamespace

    made: list[Z2JHNamespace] = []

    def factory(name: str | None = None, release: str | None = None, running=("alice",), **kw):
        ns = Z2JHNamespace(k8s_cluster, name=name, release=release, running=tuple(running),
                           workdir=tmp_path_factory.mktemp("z2jh"), **kw)
        made.append(ns)
        ns.create()
        return ns

    yield factory
    for ns in made:
        if os.environ.get("JDR_CONTROLPLANE_KEEP"):
            continue
        try:
            ns.delete(wait=False)
        except Exception as e:
            print(f"warning: z2jh namespace cleanup: {e!r}")
