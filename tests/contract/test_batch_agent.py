"""``jdr agent backup-volumes`` (a batch mover) on a file:// repository: each volume its own archive and its
own result, one volume's failure isolated, and a batch's results too large for the termination message
handed over through the repository (as the jdr process reads them: dr.deployments.kubernetes.mover)."""

from __future__ import annotations

import json

from dr.archive.index import load_index
from dr.deployments.kubernetes import agent
from dr.deployments.kubernetes.agent import RESULT_LIMIT, emit_result
from dr.deployments.kubernetes.mover import _result
from dr.model import Artifact, new_run_id
from dr.repository.artifacts import drain
from dr.repository.file import FileStore
from dr.repository.repository import Repository
from dr.util.timefmt import utcnow


def test_each_volume_of_a_batch_gets_its_own_archive_and_result(tmp_path):
    repo = Repository.open(FileStore(tmp_path / "repo"), create=True)
    run = new_run_id(utcnow())
    roots = {}
    for key in ("a", "c"):
        roots[key] = tmp_path / key
        (roots[key] / "sub").mkdir(parents=True)
        (roots[key] / "sub" / f"{key}.txt").write_text(f"volume {key}\n")
    roots["b"] = tmp_path / "gone"  # its PVC mount vanished: this volume fails, the batch goes on
    out = agent.backup_volumes(repo, run=run, volumes=[(k, roots[k], None) for k in ("a", "b", "c")],
                               excludes=(), level=1, threads=1)
    assert out["status"] == "batch" and set(out["volumes"]) == {"a", "b", "c"}
    assert out["volumes"]["b"]["status"] == "failed" and out["volumes"]["b"]["error"]
    for key in ("a", "c"):
        res = out["volumes"][key]
        assert res["status"] == "ok" and res["files"] == 1, res
        index = Artifact.from_dict(res["index"])
        with repo.open_artifact(index) as raw:
            names = sorted(load_index(raw))
            drain(raw)
        other = "c" if key == "a" else "a"
        assert f"sub/{key}.txt".encode() in names and f"sub/{other}.txt".encode() not in names, names
    assert out["volumes"]["a"]["archive"]["key"] != out["volumes"]["c"]["archive"]["key"]

    # an unchanged volume (its previous fingerprint given) uploads nothing
    again = agent.backup_volumes(repo, run=new_run_id(utcnow()), excludes=(), level=1, threads=1,
                                 volumes=[("a", roots["a"], out["volumes"]["a"]["fingerprint"])])
    assert again["volumes"]["a"]["unchanged"] is True and again["volumes"]["a"]["archive"] is None


def test_fifty_results_travel_through_the_repository(tmp_path):
    repo = Repository.open(FileStore(tmp_path / "repo"), create=True)
    run = new_run_id(utcnow())
    one = {"status": "ok", "unchanged": False, "fingerprint": "f" * 64, "files": 3, "bytes": 100,
           "archive": {"key": f"data/{run}/volumes/x.tar.zst", "size": 1, "sha256": "0" * 64},
           "index": {"key": f"data/{run}/volumes/x.idx.zst", "size": 1, "sha256": "0" * 64},
           "warnings": [], "owner": [1000, 100], "seconds": 0.1}
    results = {"status": "batch", "volumes": {f"user{i:02}": one for i in range(50)}}
    assert len(json.dumps(results)) > RESULT_LIMIT
    term = tmp_path / "termination-log"
    emit_result(results, repo, run, "jdr-bkb-x", term)
    message = term.read_text()
    assert len(message.encode()) <= RESULT_LIMIT and "result_key" in message
    pod = {"status": {"phase": "Succeeded", "containerStatuses": [
        {"state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": message}}}]}}
    assert _result(pod, "jdr-bkb-x", repo) == results
    assert list(repo.store.list(f"data/{run}/results/")) == []  # removed once read
