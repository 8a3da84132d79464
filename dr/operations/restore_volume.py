"""``jdr restore --volume NAME``: put back one volume of no user (an extra volume, an orphan home).

Such a volume may be mounted by every server (``extraVolumes``): the deployment refuses to write into a
volume that a running pod mounts (dr.deployments.kubernetes.restore.ensure_free), so the operator stops
those servers first; no server is stopped on the operator's behalf.
"""

from __future__ import annotations

from dr.deployments.base import Deployment
from dr.operations.restore import Confirm, RestoreOptions, RestoreResult, restore_one_volume, run_to_restore
from dr.policy.volume_restore import plan_volume_restore
from dr.repository.repository import Repository


def restore_volume(repo: Repository, deployment: Deployment, name: str, opts: RestoreOptions,
                   confirm: Confirm) -> RestoreResult:
    """Restore volume ``name`` from the run ``opts`` picks; the plan is decided and checked first."""
    manifest = run_to_restore(repo, opts)
    plan = plan_volume_restore(manifest, name, paths=opts.paths, into=opts.into)
    return restore_one_volume(repo, deployment, manifest, plan, opts, confirm)
