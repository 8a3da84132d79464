"""``jdr restore --volume NAME``: put back one volume of no user (an extra volume, an orphan home).

Such a volume may be mounted by every server (``extraVolumes``): the deployment refuses to write into a
volume that a running pod mounts (dr.deployments.kubernetes.restore.ensure_free), so the operator stops
those servers first; no server is stopped on the operator's behalf.
"""

from __future__ import annotations

from dr.deployments.base import Deployment
from dr.operations.keys import check_run_keys
from dr.operations.restore import (
    Confirm,
    RestoreOptions,
    RestoreResult,
    _manifest,
    _plan_artifacts,
    _restore_step,
)
from dr.policy.volume_restore import plan_volume_restore
from dr.repository.repository import Repository


def restore_volume(repo: Repository, deployment: Deployment, name: str, opts: RestoreOptions,
                   confirm: Confirm) -> RestoreResult:
    """Restore volume ``name`` from the run ``opts`` picks; the plan is decided and checked first."""
    manifest = _manifest(repo, opts)
    plan = plan_volume_restore(manifest, name, paths=opts.paths, into=opts.into)
    check_run_keys(repo, manifest.run, _plan_artifacts(manifest, plan))
    if opts.dry_run:
        return RestoreResult(plan=plan, status="dry-run")
    if not confirm(plan):
        return RestoreResult(plan=plan, status="cancelled")
    with repo.lock("restore", exclusive=False):
        outcome = _restore_step(repo, deployment, plan.volumes[0], opts)
    return RestoreResult(plan=plan, status="done" if outcome.status == "ok" else "failed", items=[outcome])
