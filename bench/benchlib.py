"""What the lifecycle benchmarks share: the JSON result line, sandbox environments, a big-product store.

Not a benchmark itself (``bench/run.py`` runs only ``*_bench.py``).  Each benchmark
prints human lines and, last, one JSON object ``{"bench": name, "results": {...}}``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import resource
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as `python bench/x_bench.py` from a source checkout
    sys.path.insert(0, str(ROOT))

from intake_clms.sandbox import Sandbox  # noqa: E402
from intake_clms.sandbox.datagen import ProductStore  # noqa: E402

#: A not-migrated old WEkEO ID whose products HDA delivers as a bare NetCDF (no zip): the
#: download benchmark times the transfer itself, not an extraction.
BIG_DATASET = "EO:CLMS:DAT:CLMS_GLOBAL_LAI_1KM_V1_10DAILY_NETCDF"
BIG_REQUEST = {"dataset_id": BIG_DATASET, "bbox": [5, 45, 10, 50], "start": "2020-01-01", "end": "2020-01-05"}
MIB = 1024 * 1024


def emit(name: str, results: dict[str, Any]) -> None:
    """The benchmark convention's last stdout line."""
    print(json.dumps({"bench": name, "results": results}, sort_keys=True, default=float), flush=True)


def settle() -> None:
    """Write back dirty pages so one run's writes do not slow the next."""
    import time

    os.sync()
    time.sleep(0.2)


def run_child(script: str, args: list[str], env: dict[str, str], timeout: float = 900) -> dict[str, Any]:
    """Run ``script --child ARGS`` in a fresh process; its last stdout line is a JSON result."""
    import subprocess

    done = subprocess.run([sys.executable, script, "--child", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"the preloading process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_curl(url: str, header_file: Path, out: Path, follow: bool = False) -> dict[str, float]:
    """The reference download: ``curl`` to a file, with the Authorization header from ``header_file``."""
    import subprocess

    cmd = ["curl", "-sS", "-f", *(["-L"] if follow else []), "-H", f"@{header_file}", "-o", str(out),
           "-w", "%{time_total} %{size_download}", url]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    seconds, size = done.stdout.split()
    assert int(float(size)) == out.stat().st_size
    return {"bytes": int(float(size)), "download_s": float(seconds)}


def curl_vs_ours(work: Path, url: str, token: str, runs: int, ours: Any, follow: bool = False
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``runs`` alternating downloads of one file: curl, then ``ours(cache_dir)`` (a fresh cache each time)."""
    import shutil

    header = work / "curl-headers"
    header.touch(mode=0o600)
    header.write_text(f"Authorization: Bearer {token}\n")
    curl_runs, our_runs = [], []
    for i in range(runs):
        settle()
        out = work / "out" / f"curl-{i}.nc"
        out.parent.mkdir(exist_ok=True)
        c = run_curl(url, header, out, follow)
        out.unlink()
        curl_runs.append(c)
        settle()
        cache = work / "out" / f"cache-{i}"
        o = ours(cache)
        shutil.rmtree(cache)
        our_runs.append(o)
        print(f"run {i + 1}: curl {c['bytes'] / c['download_s'] / MIB:7.0f} MiB/s | ours: download "
              f"{o['bytes'] / o['download_s'] / MIB:7.0f} MiB/s, whole lifecycle {o['lifecycle_s']:.2f} s, "
              f"peak RSS {o['peak_rss_mib']:.0f} MiB")
    return curl_runs, our_runs


def peak_rss_mib() -> float:
    """Peak resident memory of this process image so far: ``VmHWM`` of /proc/self/status, which starts
    anew at exec (``ru_maxrss`` does not: a child started by fork+exec inherits its parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # not Linux: the best there is


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a block (then restore them)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def client_env(sb: Sandbox, cache: Path) -> dict[str, str]:
    """What a client process needs to use the sandbox's HDA with its own cache (and no ~/.hdarc)."""
    return {**sb.env(), "INTAKE_CLMS_CACHE": str(cache), "HDA_RC": str(cache.parent / "no-hdarc")}


class BigNetcdfStore(ProductStore):
    """The sandbox's product store, except that the products of :data:`BIG_DATASET` are one big
    CF NetCDF each (about ``nbytes``, int16, uncompressed, on a global lat/lon grid).

    The sandbox's size classes top out at a few tens of MB per file and its ``bulk_item`` files
    cannot be ordered through HDA, so the benchmark hands the sandbox this store (``Sandbox(store=)``):
    the server, the protocol and the client path stay the real ones, only the file is bigger.
    """

    def __init__(self, data_dir: Path, nbytes: int, **kwargs: Any):
        super().__init__(data_dir, **kwargs)
        self.nbytes = int(nbytes)

    def materialize(self, item: Any) -> Path:
        if item.dataset != self.dataset(BIG_DATASET).key:
            return super().materialize(item)
        path = self.root / "big" / f"{self.nbytes}" / item.name
        start = item.start
        return self._produce(path, lambda tmp: write_big_netcdf(tmp, self.nbytes, start))


def write_big_netcdf(path: Path, nbytes: int, start: dt.datetime) -> None:
    """A CF NetCDF (time=1, lat, lon) of about ``nbytes``: int16 LAI-like values, written in row blocks."""
    import netCDF4

    cols = 2 * int(np.sqrt(nbytes / 4))  # a 2:1 global grid of int16
    rows = max(1, nbytes // (2 * cols))
    res_y, res_x = 180.0 / rows, 360.0 / cols
    with netCDF4.Dataset(str(path), "w", format="NETCDF4") as ds:
        ds.createDimension("time", 1)
        ds.createDimension("lat", rows)
        ds.createDimension("lon", cols)
        t = ds.createVariable("time", "f8", ("time",))
        t.setncatts({"standard_name": "time", "units": "days since 1970-01-01 00:00:00", "calendar": "standard", "axis": "T"})
        t[:] = [(start.replace(tzinfo=None) - dt.datetime(1970, 1, 1)).total_seconds() / 86400.0]
        lat = ds.createVariable("lat", "f8", ("lat",))
        lat.setncatts({"standard_name": "latitude", "units": "degrees_north", "axis": "Y"})
        lat[:] = 90.0 - res_y * (np.arange(rows) + 0.5)
        lon = ds.createVariable("lon", "f8", ("lon",))
        lon.setncatts({"standard_name": "longitude", "units": "degrees_east", "axis": "X"})
        lon[:] = -180.0 + res_x * (np.arange(cols) + 0.5)
        crs = ds.createVariable("crs", "i4")
        crs.setncatts({"grid_mapping_name": "latitude_longitude", "semi_major_axis": 6378137.0,
                       "inverse_flattening": 298.257223563})
        v = ds.createVariable("LAI", "i2", ("time", "lat", "lon"), contiguous=True, fill_value=np.int16(-1))
        v.set_auto_maskandscale(False)
        v.setncatts({"long_name": "Leaf Area Index", "units": "m2 m-2", "scale_factor": 0.001, "grid_mapping": "crs"})
        step = max(1, (4 * MIB) // (2 * cols))
        base = (np.arange(cols, dtype=np.int32) % 997)[None, :]
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            v[0, r0:r1, :] = ((np.arange(r0, r1, dtype=np.int32)[:, None] * 7 + base) % 7000).astype("i2")
        ds.setncatts({"Conventions": "CF-1.6", "title": "sandbox benchmark product (synthetic)"})
