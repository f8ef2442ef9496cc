"""``intake-clms doctor`` against the sandbox: every service healthy; one endpoint on a closed port names that
service and exits 1; no secret (password, key, token) ever printed; services without credentials do not fail."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

import intake_clms
from intake_clms.cli import main
from intake_clms.sandbox import Sandbox, clms_api

from sandbox.conftest import sandbox, sandbox_factory  # noqa: F401


@pytest.fixture
def env(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:  # noqa: F811
    for name, value in sandbox.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("INTAKE_CLMS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HDA_RC", str(tmp_path / "no-hdarc"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    from intake_clms.services.cdse import auth

    auth.forget_managers()
    return sandbox


def secrets_of(sb: Sandbox) -> list[str]:
    env = sb.env()
    key = json.loads(Path(env["CLMS_SERVICE_KEY"]).read_text())
    found = [env["HDA_PASSWORD"], env["CDSE_PASSWORD"], env.get("CDSE_S3_SECRET_KEY", ""),
             *key["private_key"].splitlines()[1:3]]
    found += list(clms_api.state(sb.ctx).tokens)  # CLMS bearer tokens handed out during the run
    found += list(sb.ctx.state["hda"].tokens)
    found += list(sb.ctx.state["cdse"].grants)
    return [s for s in found if s and len(s) >= 6]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the with-block ends


def test_every_service_healthy_against_the_sandbox(env: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "every configured service is healthy" in out
    for service in ("wekeo", "clms", "cdse"):
        rows = [line for line in out.splitlines() if line.startswith(service)]
        assert rows and all(" ok " in f" {line} " for line in rows), rows
    assert "environment (HDA_USER, HDA_PASSWORD)" in out and "CLMS_SERVICE_KEY" in out
    assert "token" in out and "quota" in out and "ndvi_global_300m_10daily_v2" in out
    for secret in secrets_of(env):
        assert secret not in out


@pytest.mark.parametrize("variable, service", [("HDA_URL", "wekeo"), ("CLMS_API_URL", "clms"),
                                               ("CDSE_ODATA_URL", "cdse")])
def test_a_closed_port_names_the_service_and_exits_1(env: Sandbox, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str], variable: str, service: str) -> None:
    monkeypatch.setenv(variable, f"http://127.0.0.1:{closed_port()}/nothing")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert f"failing: {service}" in out
    assert any(line.startswith(service) and "FAIL" in line and "endpoint" in line for line in out.splitlines())
    for secret in secrets_of(env):
        assert secret not in out


def test_unconfigured_services_do_not_fail(env: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HDA_USER", "HDA_PASSWORD", "CDSE_USERNAME", "CDSE_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    report = intake_clms.doctor()
    assert report.ok and report.failed() == []
    assert {r.service for r in report.rows if r.ok is None} == {"wekeo", "cdse"}
    assert all(r.ok for r in report.rows if r.service == "clms")
