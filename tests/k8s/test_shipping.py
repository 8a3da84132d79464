"""The ``cronjobs/`` kustomize base: its CronJobs' arguments parse through the CLI, and the API server
accepts every object (server-side dry run)."""

from __future__ import annotations

import shutil
import subprocess

import click
import pytest
import yaml

from dr.cli.main import cli
from tests.k8s.shipping import build, cronjob_args


def test_every_cronjob_argument_list_parses_through_the_cli():
    docs = build()
    found = cronjob_args(docs)
    assert {"jdr-backup", "jdr-prune", "jdr-drill"} <= set(found)
    for name, args in found.items():
        parse(list(args))  # raises click.UsageError on any drift


def parse(args: list[str]) -> click.Context:
    """Parse ``jdr ARGS`` down to the leaf command, as click would before invoking it (nothing runs)."""
    ctx = cli.make_context("jdr", args)
    group: click.Command = cli
    while isinstance(group, click.Group):
        rest = [*ctx._protected_args, *ctx.args]  # what the group did not parse itself
        name, cmd, rest = group.resolve_command(ctx, rest)
        assert cmd is not None and name is not None, args
        ctx = cmd.make_context(name, list(rest), parent=ctx)
        group = cmd
    return ctx


def test_cronjobs_are_safe_by_construction():
    docs = build()
    for doc in docs:
        if doc["kind"] != "CronJob":
            continue
        assert doc["spec"]["concurrencyPolicy"] == "Forbid", doc["metadata"]["name"]
        job = doc["spec"]["jobTemplate"]["spec"]
        pod = job["template"]["spec"]
        assert pod["serviceAccountName"] == "jdr" and pod["restartPolicy"] == "Never"
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            assert c["resources"]["requests"], doc["metadata"]["name"]
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert {"configMapRef": {"name": "jdr-config"}} in c["envFrom"]
        if doc["metadata"]["name"] in ("jdr-backup", "jdr-prune"):
            rule = job["podFailurePolicy"]["rules"][0]
            assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [2]
    backup = next(d for d in docs if d["metadata"]["name"] == "jdr-backup")
    labels = backup["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert labels["hub.jupyter.org/network-access-hub"] == "true"


@pytest.mark.k8s
def test_kustomize_base_is_accepted_by_the_api_server(k8s_cluster, k8s_namespace):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    docs = build()
    for doc in docs:
        if doc["kind"] == "ClusterRoleBinding":
            for s in doc["subjects"]:
                s["namespace"] = k8s_namespace
    text = yaml.safe_dump_all(docs)
    proc = subprocess.run([kubectl, "--kubeconfig", str(k8s_cluster.kubeconfig), "-n", k8s_namespace, "apply",
                           "--dry-run=server", "-f", "-"], input=text, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    created = [line for line in proc.stdout.splitlines() if "(server dry run)" in line]
    assert len(created) == len(docs), proc.stdout
    # a broken object is refused: the dry run is a real check
    bad = next(d for d in docs if d["kind"] == "CronJob")
    bad["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    proc = subprocess.run([kubectl, "--kubeconfig", str(k8s_cluster.kubeconfig), "-n", k8s_namespace, "apply",
                           "--dry-run=server", "-f", "-"], input=yaml.safe_dump(bad), capture_output=True,
                          text=True)
    assert proc.returncode != 0 and "restartPolicy" in proc.stderr


def test_click_rejects_drifted_arguments():
    assert parse(["--json", "backup", "--method", "snapshot"]).params["method"] == "snapshot"
    with pytest.raises(click.UsageError):
        parse(["backup", "--no-such-option"])
    with pytest.raises(click.UsageError):
        parse(["no-such-command"])
