"""Fixtures for lifecycle tests: a sandbox (shared fixture), its env vars set, an empty cache, fast polling."""

from __future__ import annotations

from pathlib import Path

import pytest

from intake_clms.sandbox import Sandbox

from sandbox.conftest import sandbox, sandbox_factory  # noqa: F401  (the shared sandbox fixtures)

from .lifecycle_helpers import FAST  # noqa: F401


@pytest.fixture
def hda_env(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """The sandbox, with HDA_* pointing at it and the cache in a fresh folder."""
    for name, value in sandbox.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("INTAKE_CLMS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HDA_RC", str(tmp_path / "no-hdarc"))
    return sandbox

