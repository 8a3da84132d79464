"""The hand-written header fast path writes exactly the bytes tarfile writes."""

from __future__ import annotations

import random
import tarfile

import pytest

from dr.archive import tarfmt

KINDS = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE]


@pytest.mark.parametrize("seed", range(20))
def test_fast_header_equals_tarfile(seed: int) -> None:
    rng = random.Random(seed)
    fast_hits = 0
    for _ in range(500):
        kind = rng.choice(KINDS)
        name = "/".join("".join(rng.choice("abcdefghij_.-0123") for _ in range(rng.randint(1, 30)))
                        for _ in range(rng.randint(1, 4))).encode()
        link = b"target/x" * rng.randint(0, 14) if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else b""
        mtime_ns = rng.choice([0, 1_700_000_000 * 10**9, rng.randint(0, 2**40) * 10**9 + rng.randint(0, 10**9 - 1)])
        args = {"mode": rng.choice([0o644, 0o755, 0o4755, 0o1777, 0o600]), "uid": rng.choice([0, 1000, 65534, 8**7 - 1]),
                    "gid": rng.choice([0, 100, 2**21 - 1]), "mtime_ns": mtime_ns,
                    "size": rng.choice([0, 1, 511, 512, 10**9, 8**11 - 1]) if kind == tarfile.REGTYPE else 0,
                    "linkname": link}
        fast = tarfmt._fast_header(name, kind, args["mode"], args["uid"], args["gid"], args["mtime_ns"],
                                   args["size"], args["linkname"])
        slow = tarfmt._tarfile_header(name, kind, **args)
        if fast is not None:
            fast_hits += 1
            assert fast == slow, (name, kind, args)
    assert fast_hits > 250  # the comparison above really ran on the fast path


def test_fast_path_declines_what_needs_pax_names() -> None:
    assert tarfmt._fast_header("é".encode(), tarfile.REGTYPE, 0o644, 0, 0, 0, 0, b"") is None
    assert tarfmt._fast_header(b"x" * 101, tarfile.REGTYPE, 0o644, 0, 0, 0, 0, b"") is None
    assert tarfmt._fast_header(b"a", tarfile.REGTYPE, 0o644, 8**7, 0, 0, 0, b"") is None
    assert tarfmt._fast_header(b"a", tarfile.REGTYPE, 0o644, 0, 0, -5, 0, b"") is None
    assert tarfmt._fast_header(b"a", tarfile.REGTYPE, 0o644, 0, 0, 0, 8**11, b"") is None
