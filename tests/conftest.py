"""Shared pytest configuration. Fixture modules live in tests/fixtures/ and are loaded as plugins,
so each real component (S3 server, hub databases, the Hub process, the control plane) has one home."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).parent

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in (_HERE / "fixtures").glob("*.py") if not p.name.startswith("_")
)
if (_HERE / "controlplane" / "fixtures.py").exists():
    pytest_plugins.append("tests.controlplane.fixtures")
