"""A point's long time series by window: wall time against the wire's floor, and its reopen.

What it measures (issue 16), against the sandbox's CDSE over real HTTP with ``--latency`` added to every
response (default 50 ms) and the default connection budget (4):

* **series**: ``to_dask()`` and ``load()`` of a 0.01 degree bbox over N dekads of NDVI 1 km V2 (1999-2020: the
  one NDVI series long enough for 720 dekads), ``access="window"``, in a fresh process (imports done before
  the clock starts, ``distributed`` among them: dask's first compute in a process imports it, a third of a
  second paid once per process whatever the work; so are the package modules the preload imports on first
  use, compiled from source in a process without bytecode, and xarray's plugin entry points; the sandbox's files made beforehand by another process, so
  neither generation nor GDAL's per-process cache is counted).  The floor is what the requests cost at best:
  ``requests / budget x latency``; the target is wall <= 1.5x the floor, <= 2 requests per product plus
  catalogue requests (search pages and the series' one Nodes listing, both reported), and a flat time per
  product as N grows.
* **reopen**: the same request opened again (offline: every service URL points at a closed port) and loaded,
  against ``xarray.open_dataset`` + load of the same cube written as one local NetCDF, best of 5 of each in
  one process (the first open of a process pays one-time set-ups, reported as ``reopen_first_s``); target <= 1.5x.
  Also reported against the same open with ``chunks={}`` (``reopen_over_netcdf_dask``): our Dataset is
  dask-backed, and dask's graph and scheduler cost a load more than the whole plain open of a small cube.

Run: ``python bench/series_bench.py [--quick] [--sizes 18,72,180,720] [--latency 0.05]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import Sandbox, client_env, emit, run_child

ENTRY = {"dataset_id": "EO:JRC:DAT:CLMS", "dataset_identifier": "ndvi_global_1km_10daily_v2"}
BBOX = [7.0, 47.0, 7.01, 47.01]  # a point inside the sandbox's data
BUDGET = 4
CLOSED = "http://127.0.0.1:9"


def _dates(n: int) -> tuple[str, str]:
    start = dt.date(1999, 1, 1)
    return str(start), str(start + dt.timedelta(days=10 * n - 1))


def child(mode: str, n: int, out: str) -> None:
    """Runs in a fresh process: ``series`` times the window preload, ``reopen`` the offline reopen vs NetCDF."""
    import xarray as xr

    import dask.array  # noqa: F401  (imports before the clock starts)
    import distributed  # noqa: F401  (dask's first compute imports it)
    import netCDF4  # noqa: F401
    import rioxarray  # noqa: F401

    import intake_clms.assemble  # noqa: F401
    import intake_clms.assemble.mosaic  # noqa: F401  (imported on first use: publish, open)
    import intake_clms.assemble.netcdf  # noqa: F401
    import intake_clms.engine.core  # noqa: F401
    import intake_clms.engine.preload  # noqa: F401
    import intake_clms.net.gdalio  # noqa: F401
    import intake_clms.services.cdse.service  # noqa: F401
    import intake_clms.store.maintenance  # noqa: F401
    from intake_clms.source import ClmsSource

    from xarray.namedarray.parallelcompat import list_chunkmanagers

    xr.backends.list_engines()  # xarray reads its plugins' entry points once per process (13 ms), like an import
    list_chunkmanagers()

    start, end = _dates(n)
    src = ClmsSource(**ENTRY, bbox=BBOX, start=start, end=end, service="cdse", access="window",
                     max_products=100_000)
    t0 = time.perf_counter()
    ds = src.to_dask()
    ds.load()
    wall = time.perf_counter() - t0
    result: dict[str, Any] = {"wall_s": wall, "steps": int(ds.sizes["time"])}
    if mode == "reopen":  # steady state: best of 5 of each, alternating (the first calls pay one-time set-ups)
        local = Path(out)
        ds.to_netcdf(local)
        ours, ref, lazy = [], [], []
        for _ in range(5):
            t1 = time.perf_counter()
            ClmsSource(**ENTRY, bbox=BBOX, start=start, end=end, service="cdse", access="window",
                       max_products=100_000).to_dask().load()
            ours.append(time.perf_counter() - t1)
            t1 = time.perf_counter()
            xr.open_dataset(local, engine="netcdf4").load()
            ref.append(time.perf_counter() - t1)
            t1 = time.perf_counter()
            xr.open_dataset(local, engine="netcdf4", chunks={}).load()
            lazy.append(time.perf_counter() - t1)
        result.update(wall_s=min(ours), first_s=wall, netcdf_s=min(ref), netcdf_dask_s=min(lazy))
    print(json.dumps(result))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes, low latency: a smoke run")
    ap.add_argument("--sizes", default=None, help="dekads per series, comma-separated (default 18,72,180,720)")
    ap.add_argument("--latency", type=float, default=None, help="seconds added to every sandbox response")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "N", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return 0
    sizes = [int(s) for s in (args.sizes or ("3" if args.quick else "18,72,180,720")).split(",")]
    latency = args.latency if args.latency is not None else (0.005 if args.quick else 0.05)
    results: dict[str, Any] = {"latency_s": latency, "budget": BUDGET, "bbox": BBOX, "series": {}}
    script = str(Path(__file__).resolve())
    with tempfile.TemporaryDirectory(prefix="series-bench-") as tmp:
        work = Path(tmp)
        sb = Sandbox(data_dir=work / "sandbox", latency=0.0, speed=60.0).start()
        try:
            for n in sizes:
                base = {**client_env(sb, work / f"warm-{n}"), "NETRC": str(work / "no-netrc"),
                        "CDSE_MAX_CONNECTIONS": str(BUDGET)}
                run_child(script, ["series", str(n), "-"], base)  # the sandbox makes its files (not timed)
                sb.ctx.latency = latency
                env = {**base, "INTAKE_CLMS_CACHE": str(work / f"cache-{n}")}
                before = len(sb.log.entries())
                got = run_child(script, ["series", str(n), "-"], env)
                entries = sb.log.entries()[before:]
                pages = sum(1 for e in entries if e.endpoint == "products")
                listings = sum(1 for e in entries if e.endpoint == "nodes")
                requests = len(entries)
                floor = requests / BUDGET * latency
                sb.ctx.latency = 0.0
                offline = {**env, **{k: CLOSED for k in env if k.endswith("_URL") or k.endswith("_ENDPOINT")}}
                again = run_child(script, ["reopen", str(n), str(work / f"cube-{n}.nc")], offline)
                results["series"][str(n)] = {
                    "products": got["steps"], "wall_s": got["wall_s"], "requests": requests,
                    "catalogue_pages": pages, "listings": listings,
                    "requests_per_product": (requests - pages - listings) / max(got["steps"], 1),
                    "floor_s": floor, "wall_over_floor": got["wall_s"] / floor if floor else None,
                    "s_per_product": got["wall_s"] / max(got["steps"], 1),
                    "reopen_s": again["wall_s"], "reopen_first_s": again["first_s"], "netcdf_s": again["netcdf_s"],
                    "reopen_over_netcdf": again["wall_s"] / again["netcdf_s"] if again["netcdf_s"] else None,
                    "netcdf_dask_s": again["netcdf_dask_s"],
                    "reopen_over_netcdf_dask": again["wall_s"] / again["netcdf_dask_s"],
                }
                r = results["series"][str(n)]
                print(f"{n:>5} dekads: {r['wall_s']:.2f} s for {requests} requests ({r['requests_per_product']:.2f} per "
                      f"product + {pages} catalogue pages + {listings} listings); floor {floor:.2f} s -> {r['wall_over_floor']:.2f}x; "
                      f"reopen {r['reopen_s'] * 1000:.1f} ms vs one NetCDF {r['netcdf_s'] * 1000:.1f} ms "
                      f"({r['reopen_over_netcdf']:.2f}x; {r['netcdf_dask_s'] * 1000:.1f} ms opened with dask: "
                      f"{r['reopen_over_netcdf_dask']:.2f}x)", flush=True)
        finally:
            sb.stop()
    rows = list(results["series"].values())
    worst = {k: max((r[k] or 0) for r in rows) for k in ("wall_over_floor", "requests_per_product", "reopen_over_netcdf",
                                                          "reopen_over_netcdf_dask")}
    results.update(worst)  # the worst size, for the summary table
    results["targets"] = {"wall_over_floor": "<= 1.5 at each size", "requests_per_product": "<= 2",
                          "reopen_over_netcdf": "<= 1.5"}
    results["ok"] = {
        "wall_over_floor": all((r["wall_over_floor"] or 0) <= 1.5 for r in rows),
        "requests_per_product": all(r["requests_per_product"] <= 2 for r in rows),
        "reopen_over_netcdf": all((r["reopen_over_netcdf"] or 0) <= 1.5 for r in rows),
    }
    emit("series", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
