"""Many-products benchmark (issue 4): 20 products ordered and downloaded, ours vs the official ``hda`` client.

The same request (NDVI 300 m 10-daily, 20 dekads) goes to two fresh sandboxes
sharing one pre-generated data folder (so neither client pays for, or benefits
from, the other's file generation, orders or tokens), with the same real-time
queue delay per order (sandbox clock at speed 1):

- ``hda`` 2.40 as its documentation shows it: ``Client(config=Configuration(url, user,
  password))``, ``search(query)``, ``results.download(dir)`` with its defaults
  (``max_workers=2``; each worker orders, polls every 1 s x1.1, then streams);
- ours: ``ClmsSource(...).to_dask()`` with the defaults (4 download workers, the default
  ``PollPolicy``): every order placed first, then waited for, downloaded, extracted,
  assembled and opened.

Both must end with all 20 products on disk (checked).  Target: ours / hda <= 0.5.
Run: ``python bench/hda_client_bench.py [--quick]`` (quick: 2 products, 1 s queue; too small for
the ratio to mean anything: it only shows the benchmark works).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import shutil
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import client_env, emit, environment  # noqa: E402

from intake_clms.sandbox import Sandbox  # noqa: E402
from intake_clms.sandbox.datagen import ProductStore  # noqa: E402
from intake_clms.source import ClmsSource  # noqa: E402

NAME = "hda_client"
TARGET_RATIO = 0.5
DATASET = "EO:JRC:DAT:CLMS"
IDENTIFIER = "ndvi_global_300m_10daily_v2"
BBOX = [5, 45, 10, 50]
START = "2024-01-01"
ENDS = {20: "2024-07-15", 2: "2024-01-15"}  # dekads overlapping [START, end]


def pregenerate(data_dir: Path, end: str) -> int:
    """Generate the served zips once, before any timing; returns how many products the request finds."""
    store = ProductStore(data_dir, size="tiny")
    key = store.dataset(IDENTIFIER).key
    items = store.items(key, BBOX, START, end)
    for item in items:
        store.product_zip(item)
    return len(items)


def run_hda(sb: Sandbox, end: str, out: Path) -> dict[str, Any]:
    import hda

    env = sb.env()
    query = {"dataset_id": DATASET, "datasetIdentifier": IDENTIFIER, "bbox": BBOX,
             "startdate": f"{START}T00:00:00.000Z", "enddate": f"{end}T23:59:59.999Z"}
    t = time.perf_counter()
    config = hda.Configuration(url=env["HDA_URL"], user=env["HDA_USER"], password=env["HDA_PASSWORD"],
                               path=str(out.parent / "no-hdarc"))
    client = hda.Client(config=config, progress=False)
    # it warns about the remaining quota on every order and prints each download URL (tqdm.write)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        results = client.search(query)
        results.download(str(out))
    elapsed = time.perf_counter() - t
    files = sorted(out.glob("*.zip"))
    for f in files:
        with zipfile.ZipFile(f) as zf:
            assert zf.testzip() is None, f"corrupt download {f.name}"
    return {"seconds": elapsed, "found": len(results), "files": len(files), "max_workers": client.max_workers,
            "status_calls": sb.log.count("hda", "download_head", "HEAD")}


def run_ours(sb: Sandbox, end: str, cache: Path) -> dict[str, Any]:
    with environment(client_env(sb, cache)):
        t = time.perf_counter()
        src = ClmsSource(dataset_id=DATASET, dataset_identifier=IDENTIFIER, bbox=BBOX, start=START, end=end, service="wekeo")
        handle = src.preload(progress_bar=False)
        ds = handle.result()
        elapsed = time.perf_counter() - t
    ready = sum(p.stage == "ready" for p in handle.products.values())
    return {"seconds": elapsed, "found": len(handle.products), "files": ready, "time_steps": int(ds.sizes.get("time", 0)),
            "status_calls": sb.log.count("hda", "download_head", "HEAD")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 products, 1 s queue delay")
    parser.add_argument("--queue-delay", type=float, default=None, help="real seconds each order queues (default 3, quick 1)")
    args = parser.parse_args(argv)
    n = 2 if args.quick else 20
    delay = args.queue_delay if args.queue_delay is not None else (1.0 if args.quick else 3.0)
    end = ENDS[n]
    logging.getLogger("hda").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="intake-clms-hda-bench-"))
    try:
        data = work / "sandbox"
        found = pregenerate(data, end)
        assert found == n, f"the request finds {found} products, not {n}"
        settings = {"data_dir": data, "size": "tiny", "speed": 1.0, "queue_delay": delay}
        with Sandbox(**settings) as sb:
            theirs = run_hda(sb, end, work / "hda-out")
        with Sandbox(**settings) as sb:
            ours = run_ours(sb, end, work / "cache")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for who, r in (("hda", theirs), ("ours", ours)):
        assert r["found"] == n and r["files"] == n, f"{who} got {r['files']} of {r['found']} products (expected {n})"
    ratio = ours["seconds"] / theirs["seconds"]
    results = {
        "products": n,
        "queue_delay_s": delay,
        "ours_s": ours["seconds"],
        "hda_s": theirs["seconds"],
        "ratio": ratio,
        "hda_max_workers": theirs["max_workers"],
        "ours_status_calls": ours["status_calls"],
        "hda_status_calls": theirs["status_calls"],
        "targets": {"ratio": f"<= {TARGET_RATIO}"},
        "ok": {"ratio": ratio <= TARGET_RATIO},
    }
    print(f"{n} products, {delay:g} s queue each: ours {ours['seconds']:.1f} s ({ours['status_calls']} status calls; "
          f"to_dask() with {ours['time_steps']} time steps), hda {theirs['seconds']:.1f} s "
          f"({theirs['status_calls']} status calls, {theirs['max_workers']} workers) -> ratio {ratio:.2f} (target <= {TARGET_RATIO})")
    emit(NAME, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
