"""Fixtures of the S3 fault tests: each runs against SeaweedFS and moto (``upstream``), through a
:class:`tests.faultproxy.FaultProxy` in front of it (``proxy``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faultproxy import FaultProxy
from tests.fixtures.s3 import S3Server


@pytest.fixture(params=["seaweedfs", "moto"])
def upstream(request: pytest.FixtureRequest) -> S3Server:
    server: S3Server = request.getfixturevalue("s3_server" if request.param == "seaweedfs" else "moto_server")
    return server


@pytest.fixture
def bucket(upstream: S3Server) -> str:
    return upstream.new_bucket()


@pytest.fixture
def proxy(upstream: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(upstream.endpoint_url) as p:
        yield p
