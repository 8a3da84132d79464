"""Who a self-service restore mover runs as on Kubernetes (dr.deployments.kubernetes.live_restore): the
running server's ids, else the owner the backup recorded, else the configured default; never root."""

from __future__ import annotations

import pytest

from dr.deployments.kubernetes.live_restore import user_security
from dr.errors import DeploymentError


def server(container_sc=None, pod_sc=None, name="notebook"):
    return {"metadata": {"name": "jupyter-alice"},
            "spec": {"securityContext": pod_sc or {},
                     "containers": [{"name": "sidecar", "securityContext": {"runAsUser": 4242}},
                                    {"name": name, "securityContext": container_sc or {}}]}}


def ids(sec):
    return sec.uid, sec.gid, sec.fs_group, sec.privileged


def test_the_running_servers_ids_win_and_its_fsgroup_is_kept():
    # KubeSpawner: runAsUser on the "notebook" container, fsGroup on the pod (no runAsGroup)
    pod = server({"runAsUser": 1000}, {"fsGroup": 100})
    assert ids(user_security(pod, {"owner": [2000, 200]}, 1000, 100)) == (1000, 100, 100, False)
    pod = server({"runAsUser": 1001, "runAsGroup": 101}, {"runAsUser": 7, "fsGroup": 100})
    assert ids(user_security(pod, {}, 1000, 100)) == (1001, 101, 100, False)
    pod = server({}, {"runAsUser": 1002, "runAsGroup": 102})  # the pod's, without fsGroup: none
    assert ids(user_security(pod, {}, 1000, 100)) == (1002, 102, None, False)


def test_without_a_running_server_the_recorded_owner_then_the_default():
    assert ids(user_security(None, {"owner": [2000, 200]}, 1000, 100)) == (2000, 200, None, False)
    assert ids(user_security(None, {}, 1000, 100)) == (1000, 100, None, False)
    assert ids(user_security(server({}, {}), {}, 1000, 100)) == (1000, 100, None, False)


@pytest.mark.parametrize("pod,source", [(server({"runAsUser": 0}), {}), (None, {"owner": [0, 0]})])
def test_never_as_root(pod, source):
    with pytest.raises(DeploymentError, match="never runs a privileged mover"):
        user_security(pod, source, 1000, 100)
