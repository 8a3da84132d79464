"""The ownership rule of a restore --as another user (dr/policy/owners.py)."""

from __future__ import annotations

from dr.policy.owners import owner_map


def test_root_stays_root_and_every_other_owner_becomes_the_target() -> None:
    m = owner_map((2001, 2001))
    assert m(1000, 100) == (2001, 2001)  # the backed-up home's owner
    assert m(0, 0) == (0, 0)  # an administrator's root-owned file
    assert m(0, 100) == (0, 2001)
    assert m(65534, 65534) == (2001, 2001)  # a third user gets nothing in the target home
    assert m(1000, 0) == (2001, 0)
