"""``jdr demo``: backup → disaster → restore → verify on a sandbox hub, with a short report.

Everything runs through the same operations as the real commands, against a real JupyterHub database.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dr.deployments.local import LocalDeployment
from dr.errors import EXIT_FAILED, EXIT_OK
from dr.hubdb.capture import check_integrity, inspect_database
from dr.operations.backup import BackupOptions, run_backup
from dr.operations.restore import RestoreOptions, restore_hub, restore_user
from dr.operations.sandbox import create_sandbox
from dr.operations.verify import verify_runs
from dr.repository.file import FileStore
from dr.repository.repository import Repository
from dr.settings import DeploymentSettings


@dataclass
class DemoReport:
    root: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    ok: bool = True

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_FAILED

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "sandbox": self.root, "steps": self.steps}

    def text(self) -> str:
        lines = ["", "jdr demo report", "==============="]
        for s in self.steps:
            lines.append(f"  [{'ok' if s['ok'] else 'FAIL'}] {s['step']} ({s['seconds']:.2f} s): {s['detail']}")
        lines.append(f"  result: {'SUCCESS' if self.ok else 'FAILURE'}  (sandbox: {self.root})")
        return "\n".join(lines)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_demo(workdir: Path | None, keep: bool = False, echo: Callable[[str], None] | None = None) -> DemoReport:
    say = echo or (lambda _m: None)
    root = workdir or Path(tempfile.mkdtemp(prefix="jdr-demo-"))
    report = DemoReport(root=str(root))

    def step(name: str, fn: Callable[[], str]) -> None:
        if not report.ok:
            return
        say(f"==> {name}")
        t0 = time.monotonic()
        try:
            detail, ok = fn(), True
        except Exception as e:  # the demo reports every failure instead of a traceback
            detail, ok = f"{type(e).__name__}: {e}", False
        report.steps.append({"step": name, "ok": ok, "detail": detail, "seconds": time.monotonic() - t0})
        say(f"    {detail}")
        report.ok = report.ok and ok

    state: dict[str, Any] = {}
    try:
        def build() -> str:
            sb = create_sandbox(root)
            state["sb"] = sb
            state["deployment"] = LocalDeployment(DeploymentSettings(kind="local", hub_db=str(sb.hub_db),
                                                                     homes=sb.homes))
            state["repo"] = Repository.open(FileStore(sb.repository), create=True)
            return (f"hub database with {len(sb.users)} users ({', '.join(sb.users)}) made by JupyterHub's ORM; "
                    f"homes under {Path(sb.homes).parent}")

        def backup() -> str:
            res = run_backup(state["repo"], state["deployment"], BackupOptions())
            state["run"] = res.run
            m = res.manifest
            assert m is not None and res.status == "complete", res.error
            stored = sum(a.size for a in m.artifacts())
            return f"run {res.run}: {len(m.volumes)} homes, {sum(v.files for v in m.volumes)} files, " \
                   f"{sum(v.bytes for v in m.volumes) / 2**20:.1f} MiB read, {stored / 2**20:.1f} MiB stored"

        def incremental() -> str:
            sb = state["sb"]
            (sb.home("bob") / "notebooks" / "new.ipynb").write_text('{"cells": []}')
            res = run_backup(state["repo"], state["deployment"], BackupOptions())
            assert res.manifest is not None
            reused = [v.user for v in res.manifest.volumes if v.reused_from]
            state["run"] = res.run
            return f"run {res.run}: only bob's home changed; {len(reused)} unchanged homes referenced, not re-uploaded"

        def disaster() -> str:
            sb = state["sb"]
            thesis = sb.home("alice") / "notebooks" / "thesis.ipynb"
            state["thesis_sha"] = _sha(thesis)
            thesis.unlink()
            state["db_users"] = inspect_database(sb.hub_db).users
            with open(sb.hub_db, "r+b") as f:  # scribble over the hub database's pages
                f.seek(4096)
                f.write(b"\xde\xad\xbe\xef" * 2048)
            integrity = "unreadable"
            try:
                integrity = check_integrity(sb.hub_db)
            except Exception as e:
                integrity = str(e)
            return f"alice's thesis.ipynb deleted; hub database corrupted (integrity_check: {integrity[:60]})"

        def restore_alice() -> str:
            res = restore_user(state["repo"], state["deployment"], "alice",
                               RestoreOptions(paths=("notebooks/thesis.ipynb",)), lambda _p: True, None)
            thesis = state["sb"].home("alice") / "notebooks" / "thesis.ipynb"
            assert res.status == "done" and _sha(thesis) == state["thesis_sha"], "thesis not restored"
            return f"alice's thesis.ipynb is back, byte for byte ({res.items[0].files} file restored)"

        def restore_db() -> str:
            res = restore_hub(state["repo"], state["deployment"], RestoreOptions(), lambda _p: True)
            info = inspect_database(state["sb"].hub_db)
            assert info.integrity == "ok" and info.users == state["db_users"], "hub database not restored"
            return f"hub database restored: integrity ok, {len(info.users)} users; the corrupt one kept at " \
                   f"{Path(res.hub.previous or '').name if res.hub else '-'}"

        def verify() -> str:
            res = verify_runs(state["repo"], None, deep=True)
            assert res.ok, "; ".join(res.problems)
            return f"deep verify of {len(res.runs)} runs: {res.checked} artifacts, every file checksum matches"

        step("build a sandbox hub", build)
        step("back up", backup)
        step("change one home and back up again", incremental)
        step("disaster: delete a notebook, corrupt the hub database", disaster)
        step("restore the hub database", restore_db)
        step("restore alice's notebook", restore_alice)
        step("verify every run, deeply", verify)
    finally:
        if not keep and workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    return report
