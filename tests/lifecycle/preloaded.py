"""A cache filled through the catalog against a sandbox, once per test module, the sandbox stopped after;
and a virtual environment with intake + intake-xarray only (what a colleague without intake-clms has).

For the tests that only read what is cached (export, dask.distributed): the sandbox is
gone when they run, so anything that would reach the network fails instead of passing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock
import intake
import pytest

from intake_clms.catalog.resolve import default_catalog_path
from intake_clms.sandbox import Sandbox

from .lifecycle_helpers import FAST

NDVI = "ndvi_global_300m_10daily_v2"  # NetCDF, one global file per dekad
HRL = "eo_eea_dat_hrl_imp"  # GeoTIFF, EPSG:3035 uint8 100 km tiles with nodata
HRL_BBOX = [9.5, 47.8, 10.8, 48.8]  # across four tiles of the EEA grid


#: What a colleague installs: intake and intake-xarray pinned as ours, the file readers, jinja2 (intake 2's
#: V1 catalogs need it to expand ``{{ CATALOG_DIR }}``, but do not declare it).
PLAIN = ["intake==2.0.9", "intake-xarray==2.0.0", "jinja2", "netcdf4", "rioxarray", "zarr", "dask"]


@dataclass
class Preloaded:
    cache: Path
    requests: dict[str, dict[str, Any]]  # label -> (entry, keywords)
    datasets: dict[str, Any]  # label -> what to_dask() gave (lazy; reopens from the cache)
    keys: dict[str, str]  # label -> request key


REQUESTS = {
    "ndvi_alps": (NDVI, {"bbox": [5, 45, 10, 50], "start": "2024-01-01", "end": "2024-01-31"}),
    "hrl_2018": (HRL, {"bbox": HRL_BBOX, "start": "2018-01-01", "end": "2018-12-31"}),
}


def preload(base: Path, requests: dict[str, tuple[str, dict[str, Any]]] = REQUESTS) -> Iterator[Preloaded]:
    """Run a sandbox, preload each request through the bundled catalog into ``base/cache``, stop the sandbox."""
    cache = base / "cache"
    sb = Sandbox(data_dir=base / "sandbox-data", size="tiny", speed=60.0, queue_delay=6.0, seed=0).start()
    datasets, keys = {}, {}
    with pytest.MonkeyPatch.context() as mp:
        try:
            for name, value in sb.env().items():
                mp.setenv(name, value)
            mp.setenv("INTAKE_CLMS_CACHE", str(cache))
            mp.setenv("HDA_RC", str(base / "no-hdarc"))
            cat = intake.open_catalog(str(default_catalog_path()))
            for label, (entry, kw) in requests.items():
                src = getattr(cat, entry)(service="wekeo", **kw, **FAST)
                datasets[label] = src.to_dask()
                keys[label] = src.request.key()
        finally:
            sb.stop()
        for name in sb.env():
            mp.delenv(name, raising=False)
        yield Preloaded(cache, {k: {"entry": e, **kw} for k, (e, kw) in requests.items()}, datasets, keys)


def plain_venv() -> Path:
    """A venv with intake + intake-xarray and the readers only, from the registry; reused between runs."""
    given = os.environ.get("INTAKE_CLMS_PLAIN_VENV")
    if given:
        return Path(given)
    tag = hashlib.sha256(json.dumps([sys.version, PLAIN]).encode()).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / "intake-clms-test-venvs"
    root.mkdir(exist_ok=True)
    venv = root / f"plain-{tag}"
    with filelock.FileLock(str(root / f"plain-{tag}.lock")):
        if (venv / "ready").is_file() and subprocess.run(
                [str(venv / "bin" / "python"), "-c", "import intake, intake_xarray, rioxarray, zarr, netCDF4"],
                capture_output=True).returncode == 0:
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *PLAIN],
                             capture_output=True, text=True, timeout=900)
        assert pip.returncode == 0, pip.stderr[-3000:]
        (venv / "ready").write_text("\n".join(PLAIN))
    return venv
