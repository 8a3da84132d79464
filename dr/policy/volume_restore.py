"""Planning ``jdr restore --volume NAME``: one volume of no user (an extra volume, an orphan home, a PVC
that maps to no user), chosen by the name the operator knows it by (pure)."""

from __future__ import annotations

from dr.errors import NotFoundError
from dr.model import Manifest, VolumeItem
from dr.policy.restore_plan import RestorePlan, VolumeStep, check_into, check_paths


def names_of(item: VolumeItem) -> set[str]:
    """The names ``--volume`` accepts for ``item``: its key, its extra volume's name, its PVC, and (a
    directory of a shared volume) its subdirectory and ``<PVC>/<subdirectory>``."""
    pvc = str((item.source.get("pvc") or {}).get("name") or "")
    sub = str(item.source.get("subPath") or "")
    names = {item.key, str(item.source.get("extra_volume") or "")}
    names |= {sub, f"{pvc}/{sub}"} if sub else {pvc}
    return names - {""}


def plan_volume_restore(manifest: Manifest, name: str, *, paths: tuple[str, ...] = (),
                        into: str | None = None) -> RestorePlan:
    """Plan restoring the volume of no user called ``name`` (see :func:`names_of`) into itself.

    Raises NotFoundError (exit 2) when the run holds no such volume, or did not back it up.
    """
    hits = [v for v in manifest.volumes if v.user is None and name in names_of(v)]
    if not hits:
        known = sorted(n for v in manifest.volumes if v.user is None
                       for n in (v.source.get("extra_volume"), (v.source.get("pvc") or {}).get("name"),
                                 v.source.get("subPath")) if n)
        raise NotFoundError(f"run {manifest.run} holds no volume {name!r} (of no user)",
                            hint=f"volumes in this run: {', '.join(sorted(set(known))[:20]) or 'none'}; "
                                 "a user's home is restored with --user")
    item = hits[0]
    if item.status != "ok":
        raise NotFoundError(f"run {manifest.run} did not back up volume {name!r}: {item.error or item.status}",
                            hint="pick an earlier run with --run or --at")
    check_paths(paths)
    if into is not None:
        check_into(into)
    return RestorePlan(run=manifest.run, volumes=(VolumeStep(item=item, target_user=None, paths=paths,
                                                             into=into),))
