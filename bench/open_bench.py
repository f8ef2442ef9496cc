"""Open benchmark (issue 4): reopening a cached product with ``to_dask()`` vs ``xarray.open_dataset``.

A single-time-step request of the NDVI 300 m 10-daily entry is preloaded from the
sandbox; then, alternately and several times in this process, a fresh
``ClmsSource(...).to_dask()`` (cache lookup, manifest, lazy open, crop to the bbox,
CRS) and ``xarray.open_dataset`` on the published file are timed (medians).  The
same is done for a three-step request against ``xarray.open_mfdataset`` on its files (with the
same combine options as ours, so the difference is our own work: crop, sort, CRS).

Target: ours <= 1.5 x open_dataset + 100 ms (single step).
Run: ``python bench/open_bench.py [--quick] [--repeat N]`` (quick: tiny products, fewer repeats).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import client_env, emit, environment  # noqa: E402

import xarray as xr  # noqa: E402

from intake_clms.lifecycle.cache import CacheEntry  # noqa: E402
from intake_clms.sandbox import Sandbox  # noqa: E402
from intake_clms.source import ClmsSource  # noqa: E402

NAME = "open"
ENTRY = {"dataset_id": "EO:JRC:DAT:CLMS", "dataset_identifier": "ndvi_global_300m_10daily_v2",
         "bbox": [5, 45, 10, 50], "service": "wekeo"}
SINGLE = {"start": "2024-01-01", "end": "2024-01-05"}  # one dekad
SEVERAL = {"start": "2024-01-01", "end": "2024-01-31"}  # three dekads
FAST_POLL = {"poll_first": 0.05, "poll_cap": 0.2}


def source(cache: Path, dates: dict[str, str]) -> ClmsSource:
    return ClmsSource(**ENTRY, **dates, cache_dir=str(cache), **FAST_POLL)


def published_files(src: ClmsSource, cache: Path) -> list[Path]:
    entry = CacheEntry(src.request, cache)
    manifest = json.loads((entry.product / "manifest.json").read_text())
    return [entry.product / e["path"] for e in manifest["files"]]


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    ds = fn()
    elapsed = time.perf_counter() - t
    ds.close()
    return elapsed


def compare(contenders: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """Median seconds of each, interleaved so drifts of the machine hit all alike (one warm-up each)."""
    for fn in contenders.values():
        timed(fn)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            times[name].append(timed(fn))
    return {name: statistics.median(v) for name, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny products, 5 repeats")
    parser.add_argument("--repeat", type=int, default=None, help="timed opens of each (default 21, quick 5)")
    args = parser.parse_args(argv)
    repeat = args.repeat or (5 if args.quick else 21)
    size = "tiny" if args.quick else "small"
    work = Path(tempfile.mkdtemp(prefix="intake-clms-open-bench-"))
    try:
        with Sandbox(data_dir=work / "sandbox", size=size, speed=100.0, queue_delay=5.0) as sb, \
                environment(client_env(sb, work / "cache")):
            cache = work / "cache"
            for dates in (SINGLE, SEVERAL):
                source(cache, dates).preload(progress_bar=False)
            one = published_files(source(cache, SINGLE), cache)
            three = published_files(source(cache, SEVERAL), cache)
            assert len(one) == 1 and len(three) == 3, (one, three)
            calls_before = len(sb.log.entries())
            single = compare({
                "ours": lambda: source(cache, SINGLE).to_dask(),
                "open_dataset": lambda: xr.open_dataset(one[0]),
                "open_dataset_dask": lambda: xr.open_dataset(one[0], chunks={}),
            }, repeat)
            several = compare({
                "ours": lambda: source(cache, SEVERAL).to_dask(),
                "open_mfdataset": lambda: xr.open_mfdataset(three, combine="nested", concat_dim="time", data_vars="minimal",
                                                            coords="minimal", compat="override"),
            }, repeat)
            network_calls = len(sb.log.entries()) - calls_before
            sizes = sum(f.stat().st_size for f in one)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    allowed = 1.5 * single["open_dataset"] + 0.100
    ok = single["ours"] <= allowed
    results = {
        "size_class": size,
        "repeat": repeat,
        "file_mib": sizes / 2**20,
        "ours_s": single["ours"],
        "open_dataset_s": single["open_dataset"],
        "open_dataset_dask_s": single["open_dataset_dask"],
        "ratio": single["ours"] / single["open_dataset"],
        "ratio_vs_dask": single["ours"] / single["open_dataset_dask"],
        "allowed_s": allowed,
        "three_steps_ours_s": several["ours"],
        "three_steps_open_mfdataset_s": several["open_mfdataset"],
        "three_steps_ratio": several["ours"] / several["open_mfdataset"],
        "network_calls_while_reopening": network_calls,
        "targets": {"ours_s": "<= 1.5 x open_dataset_s + 0.1"},
        "ok": {"ours_s": ok},
    }
    print(f"single step ({sizes / 2**20:.1f} MiB NetCDF, median of {repeat}): to_dask() {single['ours'] * 1e3:.1f} ms, "
          f"xr.open_dataset {single['open_dataset'] * 1e3:.1f} ms (chunks={{}}: {single['open_dataset_dask'] * 1e3:.1f} ms) "
          f"-> {results['ratio']:.2f}x; allowed {allowed * 1e3:.1f} ms")
    print(f"three steps: to_dask() {several['ours'] * 1e3:.1f} ms, xr.open_mfdataset {several['open_mfdataset'] * 1e3:.1f} ms "
          f"-> {results['three_steps_ratio']:.2f}x; network calls while reopening: {network_calls}")
    emit(NAME, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
