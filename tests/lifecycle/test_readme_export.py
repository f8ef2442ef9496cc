"""Issue 11: the README's "Sharing a project catalog" and "dask.distributed" commands, run as written
against a cache preloaded from the sandbox (stopped before the commands run), with no credentials."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from readme_blocks import readme_block

from .preloaded import PLAIN, Preloaded, plain_venv, preload

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Preloaded]:
    yield from preload(tmp_path_factory.mktemp("readme-export"))


def _env(tmp_path: Path, cache: Path) -> dict[str, str]:
    """A user's shell: the project's console scripts on PATH, the cache, no credentials."""
    return {"PATH": f"{BIN}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
            "INTAKE_CLMS_CACHE": str(cache)}


def _bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_the_readme_export_commands_work_as_written(cached, tmp_path):
    env = _env(tmp_path, cached.cache)
    run = _bash(readme_block("export"), tmp_path, env)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "shared" / "catalog.yaml").is_file() and (tmp_path / "shared-zarr" / "catalog.yaml").is_file()
    assert "wrote 2 entries" in run.stderr and "wrote 1 entry" in run.stderr

    # the colleague's side: the install line names exactly the packages the venv test uses (built once, cached)
    script = readme_block("export-open")
    install, rest = script.split("\n", 1)
    assert install.startswith("python -m venv plain && plain/bin/pip install ")
    assert sorted(install.split("pip install ", 1)[1].split()) == sorted(PLAIN)
    (tmp_path / "plain").symlink_to(plain_venv())
    run = _bash(rest, tmp_path, {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"})
    assert run.returncode == 0, run.stderr
    assert "['eo_eea_dat_hrl_imp', 'ndvi_global_300m_10daily_v2']" in run.stdout
    assert "NDVI" in run.stdout and "Traceback" not in run.stderr
    total = int(run.stdout.strip().splitlines()[-1])
    ours = cached.datasets["hrl_2018"].IMP  # the product's name (CLMS_IMP_2018_...), decoded: nodata is NaN
    assert total == int(ours.sum().values), "the same pixels, nodata left out"


@pytest.mark.slow
def test_the_readme_distributed_example_runs_as_written(cached, tmp_path):
    code = readme_block("distributed")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(tmp_path, cached.cache),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    mean = cached.datasets["ndvi_alps"].NDVI.mean("time").values
    assert f"{float(mean[0, 0]):.3f}"[:4] in run.stdout and "(lat: 5, lon: 5)" in run.stdout
