"""Download benchmark (issue 4): a 1 GiB product through the real preload lifecycle vs ``curl``.

The sandbox serves one product of 1 GiB (a bare NetCDF behind an old WEkEO ID,
see ``benchlib.BigNetcdfStore``).  Each run, alternately:

- ``curl`` fetches the finished order's download URL into a file of the work folder
  (``-w %{time_total}``: connect + request + body);
- a fresh Python process runs ``ClmsSource(...).preload()`` into an empty cache in the
  same folder (search, order, poll, download, verify, publish, open).  Its download
  stage is timed from the product entering ``downloading`` to it leaving it (request,
  streaming to ``.part`` with sha256 computed as the bytes arrive, size check, rename),
  sampled every millisecond;
  the whole lifecycle is timed too.  The process reports its peak RSS (``ru_maxrss``).

Targets: download throughput >= 0.9 x curl's (best run of each); peak RSS <= 200 MiB.
Run: ``python bench/download_bench.py [--quick] [--runs N] [--chunk BYTES]`` (quick: 64 MiB).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import BIG_REQUEST, MIB, BigNetcdfStore, client_env, curl_vs_ours, emit, peak_rss_mib, run_child  # noqa: E402

from intake_clms.sandbox import Sandbox  # noqa: E402

NAME = "download"
TARGET_RATIO = 0.9
TARGET_RSS_MIB = 200.0


# ------------------------------------------------------------------ child: one preload


def child(chunk: int | None) -> int:
    """One preload in this process (env points at the sandbox and an empty cache); prints a JSON line."""
    import intake_clms.services.wekeo  # noqa: F401  (the lifecycle's imports: xarray, dask, requests, ...)
    from intake_clms.source import ClmsSource
    from intake_clms.store import Store

    rss_before = peak_rss_mib()
    src = ClmsSource(**BIG_REQUEST, service="wekeo", **({"chunk": chunk} if chunk else {}))
    t0 = time.perf_counter()
    handle = src.preload(blocking=False, progress_bar=False)
    marks: dict[str, float] = {}
    while not handle.done:  # sample the product's stage every millisecond
        now = time.perf_counter()
        stages = {p.stage for p in list(handle.products.values())}
        if "downloading" in stages:
            marks.setdefault("download_start", now)
        elif "download_start" in marks:
            marks.setdefault("download_end", now)
        time.sleep(0.001)
    ds = handle.wait()
    t1 = time.perf_counter()
    marks.setdefault("download_end", t1)
    size = sum(p.total or 0 for p in handle.products.values())
    store = Store()  # INTAKE_CLMS_CACHE: this run's cache
    records = [store.products.record(k) for k in store.products.keys()]
    print(json.dumps({
        "sha256_recorded": bool(records) and all(r is not None and "sha256" in r.payload.get("hashes", {})
                                                 for r in records),
        "bytes": size,
        "download_s": marks["download_end"] - marks["download_start"],
        "lifecycle_s": t1 - t0,
        "variables": sorted(ds.data_vars),
        "rss_before_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
    }))
    return 0


# ------------------------------------------------------------------ parent


def finished_order(sb: Sandbox) -> tuple[str, str]:
    """(download URL, bearer token) of a finished HDA order of the big product, placed by hand (for curl)."""
    creds = sb.credentials["hda"]
    api = sb.urls["hda"]
    token = requests.post(sb.urls["identity"], json=creds, timeout=30).json()["access_token"]
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    dataset = BIG_REQUEST["dataset_id"]
    for term in s.get(f"{api}/datasets/{dataset}", timeout=30).json()["terms"]:
        s.put(f"{api}/termsaccepted/{term}", json={"accepted": True}, timeout=30).raise_for_status()
    query = {"dataset_id": dataset, "bbox": BIG_REQUEST["bbox"], "start": BIG_REQUEST["start"] + "T00:00:00Z",
             "end": BIG_REQUEST["end"] + "T23:59:59Z"}
    features = s.post(f"{api}/dataaccess/search", json=query, timeout=30).json()["features"]
    assert len(features) == 1, f"expected one product, got {len(features)}"
    f = features[0]
    r = s.post(f"{api}/dataaccess/download", json={"dataset_id": dataset, "product_id": f["id"],
                                                   "location": f["properties"]["location"]}, timeout=30)
    r.raise_for_status()
    url = f"{api}/dataaccess/download/{r.json()['download_id']}"
    while s.head(url, timeout=300).status_code == 202:
        time.sleep(0.05)
    return url, token


def run_ours(sb: Sandbox, cache: Path, chunk: int | None) -> dict[str, Any]:
    return run_child(__file__, ["--chunk", str(chunk)] if chunk else [], {**os.environ, **client_env(sb, cache)}, 600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB instead of 1 GiB")
    parser.add_argument("--runs", type=int, default=None, help="runs of each (default 5, quick 2)")
    parser.add_argument("--chunk", type=int, default=None, help="bytes per read (default: the engine's own)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.chunk)
    if shutil.which("curl") is None:
        raise SystemExit("download_bench.py needs curl (the reference): apt-get install curl")
    nbytes = (64 if args.quick else 1024) * MIB
    runs = args.runs or (2 if args.quick else 5)
    work = Path(tempfile.mkdtemp(prefix="intake-clms-download-bench-"))
    try:
        store = BigNetcdfStore(work / "sandbox", nbytes, size="tiny")
        with Sandbox(data_dir=work / "sandbox", store=store, queue_delay=0.0) as sb:
            t = time.perf_counter()
            url, token = finished_order(sb)  # also generates the file (once)
            print(f"product of {nbytes / MIB:.0f} MiB ready in {time.perf_counter() - t:.1f} s; {runs} runs of each")
            curl_runs, our_runs = curl_vs_ours(work, url, token, runs, lambda cache: run_ours(sb, cache, args.chunk))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert all(o["bytes"] == nbytes or abs(o["bytes"] - nbytes) < MIB for o in our_runs), "size mismatch"
    assert all(o["sha256_recorded"] for o in our_runs), "the stored product's record has no sha256 of the download"
    curl_best = max(c["bytes"] / c["download_s"] for c in curl_runs)
    ours_best = max(o["bytes"] / o["download_s"] for o in our_runs)
    life_best = max(o["bytes"] / o["lifecycle_s"] for o in our_runs)
    peak = max(o["peak_rss_mib"] for o in our_runs)
    ratio = ours_best / curl_best
    results = {
        "size_mib": nbytes / MIB,
        "runs": runs,
        "curl_mib_s": curl_best / MIB,
        "ours_download_mib_s": ours_best / MIB,
        "ours_lifecycle_mib_s": life_best / MIB,
        "ratio": ratio,
        "ratio_lifecycle": life_best / curl_best,
        "ours_download_s_median": statistics.median(o["download_s"] for o in our_runs),
        "curl_s_median": statistics.median(c["download_s"] for c in curl_runs),
        "lifecycle_s_median": statistics.median(o["lifecycle_s"] for o in our_runs),
        "peak_rss_mib": peak,
        "rss_after_imports_mib": max(o["rss_before_mib"] for o in our_runs),
        "targets": {"ratio": f">= {TARGET_RATIO}", "peak_rss_mib": f"<= {TARGET_RSS_MIB:.0f}"},
        "ok": {"ratio": ratio >= TARGET_RATIO, "peak_rss_mib": peak <= TARGET_RSS_MIB},
    }
    print(f"throughput, best of {runs}: ours {ours_best / MIB:.0f} MiB/s (download stage), "
          f"{life_best / MIB:.0f} MiB/s (whole lifecycle), curl {curl_best / MIB:.0f} MiB/s -> "
          f"ratio {ratio:.2f} (target >= {TARGET_RATIO}); lifecycle ratio {life_best / curl_best:.2f}")
    print(f"peak RSS of the preloading process: {peak:.0f} MiB (target <= {TARGET_RSS_MIB:.0f}); "
          f"{results['rss_after_imports_mib']:.0f} MiB after imports")
    emit(NAME, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
