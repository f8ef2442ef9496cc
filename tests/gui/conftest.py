"""Fixtures for the GUI tests: the shared sandbox with its env set, an empty cache, no stray credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from intake_clms.sandbox import Sandbox

from sandbox.conftest import sandbox, sandbox_factory  # noqa: F401  (the shared sandbox fixtures)


@pytest.fixture
def gui_env(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """The sandbox with every service URL and credential pointing at it, and the cache in a fresh folder."""
    for name, value in sandbox.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("INTAKE_CLMS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HDA_RC", str(tmp_path / "no-hdarc"))
    # these tests follow a plot through WEkEO's queue (waits, cancel): keep `auto` on WEkEO
    for name in ("CDSE_USERNAME", "CDSE_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    return sandbox
