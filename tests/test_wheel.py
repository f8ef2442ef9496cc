"""Issue 17, installing from a wheel: `pip wheel .` (no deprecation warning, nothing left in the checkout),
the wheel installed with its documented extra in a fresh venv (pip's cache reused), and the documented
commands run from that venv against the sandbox, with none of the test extra's packages at hand."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from readme_blocks import blocks, readme_block, run_block, user_env

from intake_clms.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[1]
_NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache",
                                      "results", "*.quicklook.png")


@dataclass
class Installed:
    bin: Path
    build_log: str
    base: Path


def _pip(python: Path | str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("wheel")
    had_build = (ROOT / "build").exists()
    src = base / "src"  # a copy of the sources: setuptools' build/ and egg-info land there, not in the checkout
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCES, symlinks=True)
    built = _pip(sys.executable, "wheel", "--no-deps", "-v", "-w", str(base / "dist"), str(src))
    assert built.returncode == 0, built.stderr[-3000:]
    assert (ROOT / "build").exists() == had_build
    wheel = next((base / "dist").glob("intake_clms-*.whl"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # pip's cache is reused; no byte-compiling of every dependency up front (the modules used compile on import)
    installed = _pip(venv / "bin" / "python", "install", "--quiet", "--no-compile", "--disable-pip-version-check",
                     f"{wheel}[demo]")
    assert installed.returncode == 0, installed.stderr[-3000:]
    yield Installed(venv / "bin", built.stdout + built.stderr, base)


@pytest.fixture(scope="module")
def sandbox_env(wheel_venv: Installed) -> Iterator[dict[str, str]]:
    sb = Sandbox(data_dir=wheel_venv.base / "sandbox-data", size="tiny", speed=60.0, queue_delay=6.0, seed=0).start()
    try:
        yield sb.env()
    finally:
        sb.stop()


def _user(wheel_venv: Installed, name: str, **extra: str) -> tuple[Path, dict[str, str]]:
    home = wheel_venv.base / name
    home.mkdir()
    env = user_env(home, wheel_venv.bin, **extra)
    env.pop("PYTHONPATH", None)  # the wheel's package, not a checkout's
    return home, env


pytestmark = pytest.mark.slow  # about a minute on an idle 2-core machine: mostly installing the dependencies


def test_pyproject_builds_without_deprecation_and_the_venv_is_the_wheels(wheel_venv):
    assert "project.license" not in wheel_venv.build_log and "SetuptoolsDeprecationWarning" not in wheel_venv.build_log
    home, env = _user(wheel_venv, "probe")
    probe = subprocess.run(
        ["python", "-c", "import importlib.util as u, intake_clms; print(intake_clms.__file__); "
                         "print([m for m in ('boto3', 'pytest', 'matplotlib') if u.find_spec(m)])"],
        cwd=home, env=env, capture_output=True, text=True, executable=str(wheel_venv.bin / "python"))
    assert probe.returncode == 0, probe.stderr
    where, extras = probe.stdout.splitlines()
    assert where.startswith(str(wheel_venv.base / "venv")) and extras == "['matplotlib']"


def test_documented_commands_run_from_the_wheel(wheel_venv, sandbox_env):
    home, env = _user(wheel_venv, "user", **sandbox_env)
    (home / "catalogs").symlink_to(ROOT / "catalogs")  # the README's snippets open catalogs/clms.yaml
    script = "\n".join([
        "intake-clms --help > /dev/null",
        "intake-clms list --search corine",
        "intake-clms resolve EO:CLMS:DAT:CLMS_GLOBAL_NDVI_300M_V1_10DAILY_NETCDF",
        "intake-clms preload forest-type-2015 --service clms --file FTY_2015_100m_eu_03035_d02_Full --quiet",
        "intake-clms cache list | head -3",
        "python -c 'import intake_clms; print(len(list(intake_clms.open_catalog())))'",  # the bundled catalog
    ])
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=home, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "eo_eea_dat_corine" in out.stdout and "ndvi_global_300m_10daily_v1\tmigrated" in out.stdout
    assert "preloaded forest-type-2015: 1 product(s)" in out.stderr and out.stdout.splitlines()[-1] == "152"
    python_blocks = [b for b in blocks() if b.kind == "python" and ("intake_clms.resolve(" in b.text or "list(cat)" in b.text)]
    assert len(python_blocks) == 2  # the catalog and the resolve snippets, offline
    for block in python_blocks:
        ran = run_block(block, home, env)
        assert ran.returncode == 0, ran.stderr[-3000:]


def test_the_readme_sandbox_preload_and_the_demo_run_from_the_wheel(wheel_venv):
    """S3 window reads need no boto3 (the keys reach GDAL through a rasterio session of our own)."""
    home, env = _user(wheel_venv, "sandbox-user")
    out = run_block(next(b for b in blocks() if b.tag == "sandbox"), home, env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "preloaded ndvi_global_300m_10daily_v2: 1 product(s)" in out.stderr
    demo = subprocess.run(["python", "-m", "intake_clms.demo"], cwd=home, env=env, capture_output=True, text=True,
                          timeout=600, executable=str(wheel_venv.bin / "python"))
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert readme_block("sandbox")
