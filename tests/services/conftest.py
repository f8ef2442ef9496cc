"""Fixtures of the service tests: the sandbox (shared fixture) with its CDSE environment, and a fresh process state."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from intake_clms.sandbox import Sandbox

from sandbox.conftest import sandbox, sandbox_factory  # noqa: F401  (the shared sandbox fixtures)


def use_cdse(sb: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """Point every CDSE_* (and HDA_*) variable at ``sb``, the cache at an empty folder, hide any ~/.netrc or
    .hdarc, and drop the token managers, connection budget and GDAL's cache of remote files other tests left
    in this process (another sandbox may have served other bytes under the same URL: a port is reused)."""
    from intake_clms.net import gdalio
    from intake_clms.services.cdse import auth, budget

    gdalio.forget()

    for name, value in sb.env().items():
        monkeypatch.setenv(name, value)
    for name in ("CDSE_TOTP", "CDSE_MAX_CONNECTIONS", "CLMS_SERVICE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INTAKE_CLMS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HDA_RC", str(tmp_path / "no-hdarc"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    auth.forget_managers()
    monkeypatch.setattr(budget, "_BUDGET", None)
    return sb


@pytest.fixture
def cdse_env(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:  # noqa: F811
    """The default test sandbox (clock 60x), with the CDSE environment."""
    return use_cdse(sandbox, tmp_path, monkeypatch)


@pytest.fixture
def cdse_still(sandbox_factory: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:  # noqa: F811
    """A sandbox whose clock moves only when told (speed 0): with a Lockstep clock, client and server age
    together exactly, so 1-second tokens have no real-time race."""
    return use_cdse(sandbox_factory(speed=0.0), tmp_path, monkeypatch)
