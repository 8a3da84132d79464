"""restore/RUNBOOK.md, section 4 ("The cluster is gone"), executed as written on the test control plane: from
a deleted namespace to a Ready hub with every home back, through the in-cluster restore Job.

The commands are read from the runbook's code block and run in order, each by the nearest equivalent here:
``kubectl create namespace`` (the namespace must be gone), ``helm upgrade --install`` (the z2jh fixture: a
fresh hub on an empty database), ``kubectl apply -k overlays/prod`` (the overlay of cronjobs/README.md built
by the real kustomize, applied server-side), ``kubectl create secret generic jdr-secrets`` (the keys the
command names), ``kubectl apply -f restore/restore-all-job.yaml`` (the shipped Job, as it is), ``kubectl
wait``/``logs``/``rollout status``. A command the test does not know fails it, so the runbook cannot drift.
"""

from __future__ import annotations

import base64
import re
import shlex
import shutil
import time

import pytest
import yaml

from tests.k8s.conftest import jdr_objects
from tests.k8s.kustomize import ROOT, kustomize_build, server_side_apply
from tests.k8s.test_disaster_recovery import backed_up_namespace, check_user_volumes, db_users
from tests.k8s.test_kustomize import documented_overlay

pytestmark = [pytest.mark.k8s, pytest.mark.s3]

RUNBOOK = ROOT / "restore" / "RUNBOOK.md"


def runbook_commands() -> list[str]:
    text = RUNBOOK.read_text()
    section = text[text.index("## 4. The cluster is gone"):text.index("## 5.")]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "RUNBOOK.md section 4 lost its commands"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def job_pod(k8s_cluster, ns, job):
    pods = k8s_cluster.core.list_namespaced_pod(ns, label_selector=f"job-name={job}").items
    return pods[0].metadata.name if pods else None


def run_commands(k8s_cluster, z2jh_namespace, s3_server, tmp_path, old, jdr, ns, commands):
    """Run the runbook's commands in order (see the module doc); returns (new z2jh namespace, job, its log)."""
    new = None
    job = ""
    log = ""
    for line in commands:
        argv = shlex.split(line.replace("jupyterhub jupyterhub/jupyterhub", "RELEASE CHART")
                           .replace("jupyterhub", ns))
        match argv:
            case ["kubectl", "create", "namespace", name]:
                assert name == ns and ns not in {n.metadata.name for n in k8s_cluster.core.list_namespace().items}
            case ["helm", "upgrade", "--install", "RELEASE", "CHART", "--namespace", name, "--values", _]:
                # z2jh installed anew (creates the namespace), the same service token as before (values.yaml)
                new = z2jh_namespace(name=name, users=(), running=())
                assert db_users(new.hub_db_path()) == []
            case ["kubectl", "apply", "-k", "overlays/prod"]:
                shutil.copytree(ROOT / "cronjobs", tmp_path / "cronjobs")
                overlay = tmp_path / "overlays" / "prod"
                overlay.mkdir(parents=True)
                text = documented_overlay().replace("my-hub", ns)
                text = "\n".join(t for t in text.splitlines() if not t.startswith("nameSuffix:"))  # one hub
                assert new is not None
                text = text.replace("s3://my-bucket/jupyterhub", jdr.settings["repository"])
                text = text.replace("http://hub:8081/hub/api", new.hub_api_url)
                (overlay / "kustomization.yaml").write_text(text)
                server_side_apply(k8s_cluster.api, kustomize_build(overlay))
            case ["kubectl", "-n", name, "create", "secret", "generic", "jdr-secrets", *literals]:
                keys = [re.match(r"--from-literal=([A-Z_0-9]+)=", lit).group(1) for lit in literals]
                assert keys == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "JDR_ENCRYPTION_KEY", "JDR_HUB_TOKEN"]
                values = {**s3_server.env(), "JDR_ENCRYPTION_KEY": jdr.env["JDR_TEST_KEY"], "JDR_HUB_TOKEN": old.token}
                # the test's S3 server also needs its endpoint and region (an S3-compatible store would too)
                data = {k: values[k] for k in [*keys, "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"]}
                k8s_cluster.core.create_namespaced_secret(name, {
                    "metadata": {"name": "jdr-secrets"},
                    "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})
            case ["kubectl", "-n", name, "apply", "-f", path]:
                docs = [d for d in yaml.safe_load_all((ROOT / path).read_text()) if d]
                for d in docs:
                    d["metadata"]["namespace"] = name
                server_side_apply(k8s_cluster.api, docs)
                job = docs[0]["metadata"]["name"]
            case ["kubectl", "-n", name, "wait", "--for=condition=complete", _, target]:
                assert target == f"job/{job}"

                def finished():
                    st = k8s_cluster.batch.read_namespaced_job_status(job, name).status
                    return bool(st.succeeded or st.failed)
                k8s_cluster.wait_for(finished, 600, f"job {job}")
                pod = job_pod(k8s_cluster, name, job)
                st = k8s_cluster.batch.read_namespaced_job_status(job, name).status
                assert st.succeeded == 1, k8s_cluster.pod_log(name, pod)[-6000:] if pod else "no pod"
            case ["kubectl", "-n", name, "logs", target]:
                assert target == f"job/{job}"
                log = k8s_cluster.pod_log(name, job_pod(k8s_cluster, name, job))
            case ["kubectl", "-n", name, "rollout", "status", "deployment/hub"]:
                assert new is not None
                new.wait_hub_ready()
                k8s_cluster.wait_for(lambda: (k8s_cluster.apps.read_namespaced_deployment(
                    "hub", name).status.ready_replicas or 0) == 1, 120, "hub Deployment ready")
            case _:
                pytest.fail(f"RUNBOOK.md section 4 has a command this test does not know: {line}")
    return new, job, log


def test_full_disaster_recovery_follows_the_runbook(k8s_cluster, z2jh_namespace, jdr_k8s, s3_server, tmp_path):
    old, jdr, trees, pvcs, users = backed_up_namespace(k8s_cluster, z2jh_namespace, jdr_k8s)
    ns = old.namespace
    commands = runbook_commands()
    assert len(commands) == 8, commands
    t0 = time.monotonic()
    try:
        new, job, log = run_commands(k8s_cluster, z2jh_namespace, s3_server, tmp_path, old, jdr, ns, commands)
    finally:
        # the overlay's cluster-scoped objects (one hub: no nameSuffix)
        for fn in (k8s_cluster.rbac.delete_cluster_role_binding, k8s_cluster.rbac.delete_cluster_role):
            try:
                fn("jdr")
            except Exception as e:
                print(f"warning: cleanup: {e!r}")
    seconds = time.monotonic() - t0
    assert new is not None and job == "jdr-restore-all"
    assert "restore done" in log, log[-4000:]
    # every home is back, the hub runs on the restored database with the restored Secret
    check_user_volumes(k8s_cluster, ns, old, trees, pvcs)
    assert db_users(new.hub_db_path()) == users
    st, info = new.api("GET", "/users/alice", token=old.token)
    assert st == 200 and info["name"] == "alice"
    new.users.update(old.users)
    new.token = old.token
    new.start_server("alice")
    assert (new.user_dir("alice") / "big" / "blob.bin").read_bytes() == bytes(range(256)) * 4096
    assert jdr_objects(k8s_cluster, ns)["pods"] == []
    print(f"\nRUNBOOK section 4 executed ({len(commands)} commands): {seconds:.1f}s to a Ready hub with "
          f"{len(old.users)} homes back")
