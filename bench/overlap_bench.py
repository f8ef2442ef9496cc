"""Overlap benchmark (issue 9): three overlapping requests of the same products cost what one costs.

Three requests of the NDVI 300 m 10-daily entry for the same three dekads, differing
only by their bbox (``[5,45,10,50]``, ``[6,45,10,50]``, ``[5,46,10,50]``), go through
``service="wekeo"`` against the sandbox, each scenario into an empty cache:

- ``one``: the first request alone (the reference);
- ``sequential``: the three one after another (blocking preloads);
- ``concurrent``: the three at once, as background preloads in one process
  (``src.preload(blocking=False)``), then waited for.

From the sandbox's event log: orders placed (HDA order POSTs), downloads (HDA
download GETs) and bytes sent by the download endpoint.  The product store keeps a
product once and a per-product lock lets one preload fetch it while the others wait,
so both ratios (three requests / one request) must be exactly 1.  Each scenario also
checks that the three requests opened, with their own crops, on the same stored products.

Concurrent preloads still running after ``--timeout`` seconds are cancelled and the
trial counts as not completed (its traffic is still reported).

Targets: orders and bytes downloaded of the three = one request's (ratio 1.0), sequential and
concurrent; every concurrent trial completes.
Run: ``python bench/overlap_bench.py [--quick] [--trials N] [--timeout S]`` (quick: tiny products, one trial).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import client_env, emit, environment  # noqa: E402

from intake_clms.sandbox import Sandbox  # noqa: E402
from intake_clms.source import ClmsSource  # noqa: E402
from intake_clms.store import Store  # noqa: E402

NAME = "overlap"
ENTRY = {"dataset_id": "EO:JRC:DAT:CLMS", "dataset_identifier": "ndvi_global_300m_10daily_v2",
         "start": "2024-01-01", "end": "2024-01-31", "service": "wekeo"}  # three dekads
BBOXES = ([5, 45, 10, 50], [6, 45, 10, 50], [5, 46, 10, 50])
FAST_POLL = {"poll_first": 0.05, "poll_cap": 0.2}


def source(cache: Path, bbox: list[float]) -> ClmsSource:
    return ClmsSource(**ENTRY, bbox=bbox, cache_dir=str(cache), **FAST_POLL)


def traffic(sb: Sandbox) -> dict[str, int]:
    """What the sandbox served since its log was last cleared: orders, downloads, bytes, searches."""
    gets = sb.log.entries("hda", "download", "GET")
    return {
        "orders": sb.log.count("hda", "order", "POST"),
        "downloads": len(gets),
        "bytes": sum(e.bytes_sent for e in gets),
        "searches": sb.log.count("hda", "search"),
    }


def check_views(cache: Path, sources: list[ClmsSource], datasets: list[Any]) -> dict[str, int]:
    """The requests' views name the same products; the store holds each once; each dataset has its own crop."""
    store = Store(cache)
    keys = []
    for src in sources:
        view = store.views.get(src.request.key())
        assert view is not None, f"no view for the request with bbox {src.request.bbox}"
        keys.append(tuple(sorted(vp.key for vp in view.products)))
    assert len(set(keys)) == 1, f"the overlapping requests' views name different products: {keys}"
    stored = list(store.products.keys())
    assert sorted(stored) == sorted(keys[0]), f"the store holds {stored}, the views name {keys[0]}"
    extents = {(float(ds["x"].min()) if "x" in ds.coords else float(ds["lon"].min()),
                float(ds["y"].min()) if "y" in ds.coords else float(ds["lat"].min())) for ds in datasets}
    assert len(extents) == len(datasets), f"the requests did not get their own crops: {extents}"
    return {"products_in_store": len(stored), "views": len(sources)}


def scenario(sb: Sandbox, cache: Path, mode: str, timeout: float) -> dict[str, Any]:
    """Run one scenario into an empty cache; its traffic and time.

    Concurrent preloads still running after ``timeout`` seconds (e.g. waiting for one
    another's product locks) are cancelled and the scenario reported as not completed.
    """
    sb.log.clear()
    bboxes = BBOXES[:1] if mode == "one" else BBOXES
    sources = [source(cache, list(b)) for b in bboxes]
    t = time.perf_counter()
    if mode == "concurrent":
        handles = [s.preload(blocking=False, progress_bar=False) for s in sources]
        deadline = time.monotonic() + timeout
        try:
            datasets = [h.wait(timeout=max(0.0, deadline - time.monotonic())) for h in handles]
        except TimeoutError:
            stuck = [f"{h.stage} ({', '.join(f'{p.name}: {p.stage}' for p in h.products.values())})"
                     for h in handles if not h.done]
            for h in handles:
                h.cancel()
            print(f"concurrent: {len(stuck)} of 3 preloads still running after {timeout:.0f} s, cancelled: "
                  + "; ".join(stuck), flush=True)
            return {**traffic(sb), "products_in_store": len(list(Store(cache).products.keys())), "views": 3,
                    "seconds": time.perf_counter() - t, "completed": False}
    else:
        datasets = [s.preload(progress_bar=False).wait() for s in sources]
    seconds = time.perf_counter() - t
    shape = check_views(cache, sources, datasets)
    for ds in datasets:
        ds.close()
    return {**traffic(sb), **shape, "seconds": seconds, "completed": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny products, one concurrent trial")
    parser.add_argument("--trials", type=int, default=None, help="concurrent trials (default 3, quick 1)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds the concurrent preloads may take before they are cancelled (default 120, quick 30)")
    args = parser.parse_args(argv)
    timeout = args.timeout or (30.0 if args.quick else 120.0)
    trials = args.trials or (1 if args.quick else 3)
    size = "tiny" if args.quick else "small"
    work = Path(tempfile.mkdtemp(prefix="intake-clms-overlap-bench-"))
    runs: dict[str, list[dict[str, Any]]] = {"one": [], "sequential": [], "concurrent": []}
    try:
        with Sandbox(data_dir=work / "sandbox", size=size, speed=100.0, queue_delay=5.0) as sb, \
                environment(client_env(sb, work / "cache")):
            plan = ["one", "sequential"] + ["concurrent"] * trials
            for i, mode in enumerate(plan):
                cache = work / f"cache-{i}-{mode}"
                r = scenario(sb, cache, mode, timeout)
                shutil.rmtree(cache, ignore_errors=True)
                runs[mode].append(r)
                print(f"{mode:10}: {r['orders']} orders, {r['downloads']} downloads, {r['bytes'] / 2**20:.2f} MiB, "
                      f"{r['searches']} searches, {r['products_in_store']} products in the store for {r['views']} "
                      f"request(s), {r['seconds']:.2f} s"
                      + ("" if r["completed"] else " (NOT COMPLETED)"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    one = runs["one"][0]
    seq = runs["sequential"][0]
    # the worst concurrent trial: one that did not complete, else the one that fetched the most
    con = max(runs["concurrent"], key=lambda r: (not r["completed"], r["orders"], r["bytes"], r["downloads"]))

    def ratio(r: dict[str, Any], what: str) -> float:
        return r[what] / one[what] if one[what] else float("nan")

    results = {
        "size_class": size,
        "concurrent_trials": trials,
        "products": one["products_in_store"],
        "one": {k: one[k] for k in ("orders", "downloads", "bytes", "searches", "seconds")},
        "sequential": {k: seq[k] for k in ("orders", "downloads", "bytes", "searches", "seconds")},
        "concurrent": {k: con[k] for k in ("orders", "downloads", "bytes", "searches", "seconds")},
        "sequential_orders_ratio": ratio(seq, "orders"),
        "sequential_downloads_ratio": ratio(seq, "downloads"),
        "sequential_bytes_ratio": ratio(seq, "bytes"),
        "concurrent_orders_ratio": ratio(con, "orders"),
        "concurrent_downloads_ratio": ratio(con, "downloads"),
        "concurrent_bytes_ratio": ratio(con, "bytes"),
        "concurrent_completed": sum(r["completed"] for r in runs["concurrent"]),
    }
    names = ("sequential_orders_ratio", "sequential_bytes_ratio", "concurrent_orders_ratio", "concurrent_bytes_ratio")
    results["targets"] = {**{n: "== 1.0" for n in names}, "concurrent_completed": f"== {trials} (of {trials} trials)"}
    results["ok"] = {**{n: results[n] == 1.0 for n in names}, "concurrent_completed": results["concurrent_completed"] == trials}
    print(f"three overlapping requests / one request: sequential orders {results['sequential_orders_ratio']:.2f}, "
          f"bytes {results['sequential_bytes_ratio']:.2f}; concurrent (worst of {trials}) orders "
          f"{results['concurrent_orders_ratio']:.2f}, bytes {results['concurrent_bytes_ratio']:.2f} (target 1.0); concurrent trials completed: "
          f"{results['concurrent_completed']} of {trials}")
    emit(NAME, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
