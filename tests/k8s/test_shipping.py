"""The ``cronjobs/`` kustomize base and the restore Jobs: their arguments parse through the CLI. (The real
kustomize build and server-side apply are in tests/k8s/test_kustomize.py.)"""

from __future__ import annotations

import click
import pytest
import yaml

from dr.cli.main import cli
from tests.k8s.shipping import CRONJOBS, build, cronjob_args


def test_every_cronjob_argument_list_parses_through_the_cli():
    docs = build()
    found = cronjob_args(docs)
    assert {"jdr-backup", "jdr-prune", "jdr-drill"} <= set(found)
    for name, args in found.items():
        ctx = parse(list(args))  # raises click.UsageError on any drift
        # a CronJob that meets another jdr process's lock (a long prune, a restore) waits for it
        assert ctx.params["wait_for_lock"] == 3600, name


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


def test_restore_jobs_arguments_parse_and_run_as_the_cronjobs_account():
    from pathlib import Path

    for name, flag in (("restore-all-job.yaml", "everything"), ("restore-hub-job.yaml", "hub")):
        job = yaml.safe_load((Path(__file__).resolve().parents[2] / "restore" / name).read_text())
        pod = job["spec"]["template"]["spec"]
        c = pod["containers"][0]
        assert c["command"] == ["jdr"]
        assert parse(list(c["args"])).params[flag] is True and "--yes" in c["args"]
        assert pod["serviceAccountName"] == "jdr" and pod["securityContext"]["runAsNonRoot"] is True
        assert {"configMapRef": {"name": "jdr-config"}} in c["envFrom"]
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_click_rejects_drifted_arguments():
    assert parse(["--json", "backup", "--method", "snapshot"]).params["method"] == "snapshot"
    with pytest.raises(click.UsageError):
        parse(["backup", "--no-such-option"])
    with pytest.raises(click.UsageError):
        parse(["no-such-command"])


def test_the_copy_cronjob_parses_and_holds_no_kubernetes_rights():
    docs = build(CRONJOBS / "copy")
    assert cronjob_args(docs) == {"jdr-copy": ["copy", "--wait-for-lock", "1h"]}
    assert parse(cronjob_args(docs)["jdr-copy"]).params["wait_for_lock"] == 3600
    cron = next(d for d in docs if d["kind"] == "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    # The copy needs no Kubernetes API: its own ServiceAccount, bound to no Role, and no token mounted.
    assert pod["serviceAccountName"] == "jdr-copy" and pod["automountServiceAccountToken"] is False
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")
    assert sa["metadata"]["name"] == "jdr-copy" and sa["automountServiceAccountToken"] is False
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]
    (c,) = pod["containers"]
    # Its own Secret (repository credentials only): not jdr-secrets, which holds the encryption key.
    assert {"secretRef": {"name": "jdr-copy-secrets"}} in c["envFrom"]
    assert {"secretRef": {"name": "jdr-secrets"}} not in c["envFrom"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and pod["securityContext"]["runAsNonRoot"]
