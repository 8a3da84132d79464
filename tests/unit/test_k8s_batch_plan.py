"""How backup volumes are cut into batch movers (dr.deployments.kubernetes.batch.plan): pure, no cluster."""

from __future__ import annotations

from collections import Counter

from dr.deployments.base import Volume
from dr.deployments.kubernetes.batch import Entry, plan
from dr.deployments.kubernetes.objects import READER, as_owner

USER = as_owner(1000, 100, writes=False)


def entry(i: int, node: str = "", place: str = "", security=USER) -> Entry:
    vol = Volume(key=f"u{i:04}", user=f"u{i:04}", server="", source={"pvc": {"name": f"claim-u{i:04}"}})
    return Entry(vol=vol, prev=None, claim=f"claim-u{i:04}", sub_path=None, node=node, place=place,
                 security=security)


def keys(batches):
    return [e.vol.key for b in batches for e in b.entries]


def test_a_thousand_unmounted_volumes_fill_whole_waves_of_at_most_mover_batch():
    entries = [entry(i) for i in range(1000)]
    batches = plan(entries, size=25, concurrency=16, node_concurrency=2)
    assert len(batches) == 48  # 40 needed at 25 each, rounded up to three waves of 16
    assert sorted(keys(batches)) == sorted(e.vol.key for e in entries)  # each volume exactly once
    sizes = [len(b.entries) for b in batches]
    assert max(sizes) <= 25 and max(sizes) - min(sizes) <= 1


def test_few_volumes_use_the_concurrency_rather_than_one_pod():
    batches = plan([entry(i) for i in range(10)], size=25, concurrency=16, node_concurrency=2)
    assert [len(b.entries) for b in batches] == [1] * 10
    batches = plan([entry(i) for i in range(10)], size=25, concurrency=4, node_concurrency=2)
    assert sorted(len(b.entries) for b in batches) == [2, 2, 3, 3]


def test_volumes_in_use_are_grouped_per_node_and_never_mixed_with_others():
    entries = ([entry(i, node="node-a") for i in range(0, 30)] + [entry(i, node="node-b") for i in range(30, 35)]
               + [entry(i) for i in range(35, 100)] + [entry(i, place="node-a") for i in range(100, 104)])
    batches = plan(entries, size=10, concurrency=4, node_concurrency=2)
    for b in batches:
        assert {(e.node, e.place) for e in b.entries} == {(b.node, b.place)}
        assert len(b.entries) <= 10
    per = Counter((b.node, b.place) for b in batches)
    assert per[("node-a", "")] == 4  # 30 volumes: 3 pods of 10, rounded up to whole waves of 2
    assert per[("node-b", "")] == 2  # 5 volumes, two may run at once there
    assert per[("", "node-a")] == 2
    assert per[("", "")] == 8  # 65 volumes: 7 of 10, rounded up to whole waves of 4
    # the first batches started are one of each group: every node busy from the start
    assert {(b.node, b.place) for b in batches[:4]} == set(per)
    assert sorted(keys(batches)) == sorted(e.vol.key for e in entries)


def test_movers_of_different_users_are_different_pods():
    entries = [entry(i) for i in range(6)] + [entry(i, security=READER) for i in range(6, 8)]
    batches = plan(entries, size=25, concurrency=1, node_concurrency=1)
    assert sorted((b.security.profile, len(b.entries)) for b in batches) == [("as-user", 6), ("reader", 2)]
    assert all({e.security for e in b.entries} == {b.security} for b in batches)


def test_nothing_to_do_is_no_batch():
    assert plan([], size=25, concurrency=4, node_concurrency=2) == []
