"""The no-argument global call, refused: how long it takes and what it sends, on every service.

What it measures (issue 16, item 4), against the sandbox over real HTTP with ``--latency`` added to every
response (default 50 ms): ``ClmsSource(dataset_id="EO:JRC:DAT:CLMS",
dataset_identifier="ndvi_global_300m_10daily_v2", service=S).to_dask()`` with no bbox and no dates (the whole
global NDVI 300 m series, 2020 to now) through WEkEO, CDSE and the CLMS download API, and the CLMS API's
auxiliary files of a global dataset (``global-dynamic-land-cover``, no bbox or dates, ``max_products=4``: its
newest year's tiles of the default area are more than 4).  Each call runs in a fresh process with a fresh cache
(imports done before the clock starts, their time reported as ``import_s``; the sandbox's files made beforehand
by an untimed run), twice: on the sandbox's own pages and on a server with small pages (``page_cap``: 5 items a
page, where reading the whole listing would take about 50 pages).  Per call: the wall time from
``ClmsSource(...)`` to the refusal, the refusal's first words, catalogue requests (search pages, the CLMS
listing's pages, the auxiliary file list), orders (HDA orders, CLMS data requests) and every request sent.

Target: every call refused in < 2 s with 0 orders (and no download).

Run: ``python bench/refusal_bench.py [--quick] [--latency 0.05]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import Sandbox, client_env, emit, run_child

NDVI = {"dataset_id": "EO:JRC:DAT:CLMS", "dataset_identifier": "ndvi_global_300m_10daily_v2"}
#: case -> (service, source keywords)
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "wekeo": ("wekeo", NDVI),
    "cdse": ("cdse", NDVI),
    "clms": ("clms", NDVI),
    "clms_files": ("clms", {"dataset_id": "global-dynamic-land-cover", "max_products": 4}),
}
PAGES = {"default": None, "small": 5}
CATALOGUE = {("hda", "search"), ("cdse", "products"), ("clms", "search"), ("clms", "get_download_file_urls")}
ORDERS = {("hda", "order"), ("clms", "datarequest_post")}
#: what a refusal may send besides the catalogue: credentials and terms; anything else is a download
SETUP = {("hda", "token"), ("hda", "dataset"), ("hda", "terms_accept"), ("clms", "token")}
TARGET_S = 2.0


def child(case: str) -> None:
    """Runs in a fresh process: the call of ``case`` from ``ClmsSource(...)`` to its refusal."""
    t0 = time.perf_counter()
    service, kw = CASES[case]
    from intake_clms.errors import ClmsError
    from intake_clms.services import SERVICES
    from intake_clms.source import ClmsSource

    import intake_clms.engine.core  # noqa: F401  (imports before the clock starts)

    importlib.import_module(SERVICES[service])
    imported = time.perf_counter()
    refusal = ""
    try:
        ClmsSource(**kw, service=service, poll_first=0.05, poll_cap=0.2).to_dask()
    except ClmsError as exc:
        refusal = str(exc)
    wall = time.perf_counter() - imported
    print(json.dumps({"wall_s": wall, "import_s": imported - t0, "refusal": refusal}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small pages only, low latency, no warm-up: a smoke run")
    ap.add_argument("--latency", type=float, default=None, help="seconds added to every sandbox response")
    ap.add_argument("--child", metavar="CASE", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return 0
    latency = args.latency if args.latency is not None else (0.005 if args.quick else 0.05)
    pages = {"small": PAGES["small"]} if args.quick else PAGES
    results: dict[str, Any] = {"latency_s": latency, "page_cap": PAGES["small"], "runs": {}}
    script = str(Path(__file__).resolve())
    with tempfile.TemporaryDirectory(prefix="refusal-bench-") as tmp:
        work = Path(tmp)
        sb = Sandbox(data_dir=work / "sandbox", latency=0.0, speed=60.0).start()
        try:
            for label, cap in pages.items():
                sb.ctx.page_cap = cap
                results["runs"][label] = {}
                for case in CASES:
                    base = {**client_env(sb, work / f"warm-{label}-{case}"), "NETRC": str(work / "no-netrc")}
                    if not args.quick:
                        run_child(script, [case], base, timeout=600)  # the sandbox makes its files (not timed)
                    env = {**base, **client_env(sb, work / f"cache-{label}-{case}")}
                    sb.ctx.latency = latency
                    before = len(sb.log.entries())
                    got = run_child(script, [case], env, timeout=600)
                    sb.ctx.latency = 0.0
                    sent = [(e.service, e.endpoint) for e in sb.log.entries()[before:]]
                    row = {
                        "wall_s": got["wall_s"], "import_s": got["import_s"],
                        "refusal": got["refusal"][:160], "refused": bool(got["refusal"]),
                        "catalogue_requests": sum(1 for c in sent if c in CATALOGUE),
                        "orders": sum(1 for c in sent if c in ORDERS),
                        "downloads": sum(1 for c in sent if c not in CATALOGUE | ORDERS | SETUP),
                        "requests": len(sent),
                    }
                    results["runs"][label][case] = row
                    print(f"{label:>7} pages, {case:<10}: {row['wall_s']:.2f} s to the refusal ({row['catalogue_requests']} "
                          f"catalogue requests, {row['orders']} orders, {row['downloads']} downloads, {row['requests']} "
                          f"requests; imports {row['import_s']:.2f} s before): {row['refusal'][:90]}", flush=True)
        finally:
            sb.stop()
    rows = [r for runs in results["runs"].values() for r in runs.values()]
    results.update(wall_s=max(r["wall_s"] for r in rows), orders=sum(r["orders"] + r["downloads"] for r in rows),
                   catalogue_requests=max(r["catalogue_requests"] for r in rows))  # the worst call, for the table
    results["targets"] = {"wall_s": f"< {TARGET_S:g} s per call", "orders": "0 (and no download)"}
    results["ok"] = {"wall_s": all(r["refused"] and r["wall_s"] < TARGET_S for r in rows),
                     "orders": results["orders"] == 0}
    emit("refusal", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
