"""CDSE download benchmark (issue 10): one whole product through the lifecycle's CDSE path vs ``curl``.

Why: CDSE downloads go through the download service's redirect (followed by hand,
the token kept back from the transfer host), the process-wide connection budget,
and MD5 + SHA-256 computed while the bytes arrive; none of that may cost more
than a tenth of the throughput a plain HTTP client gets.

The sandbox serves one NetCDF product of ``lai_global_1km_10daily_v2`` made big
(about 1 GiB, 64 MiB with ``--quick``: :class:`BigCdseStore`).  Each run, alternately:

- ``curl -L`` fetches ``Products(<Id>)/$value`` with the bearer token, following the
  redirect to the transfer URL (``-w %{time_total}``: both hops and the body);
- a fresh Python process runs ``ClmsSource(..., service="cdse", access="download").preload()``
  into an empty cache; its download stage is timed from the product entering
  ``downloading`` to it leaving it (both hops, streaming to ``.part`` with the
  hashes, size check, rename), sampled every millisecond; the whole lifecycle too.

Target: download throughput >= 0.9 x curl's (best run of each).
Run: ``python bench/cdse_download_bench.py [--quick] [--runs N]``.
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
from benchlib import MIB, client_env, curl_vs_ours, emit, peak_rss_mib, run_child, write_big_netcdf  # noqa: E402

from intake_clms.sandbox import Sandbox  # noqa: E402
from intake_clms.sandbox.datagen import ProductStore  # noqa: E402

NAME = "cdse_download"
TARGET_RATIO = 0.9
IDENT = "lai_global_1km_10daily_v2"


class BigCdseStore(ProductStore):
    """The sandbox's store, except that the NetCDF products of :data:`IDENT` are about ``nbytes`` each."""

    def __init__(self, data_dir: Path, nbytes: int, **kwargs: Any):
        super().__init__(data_dir, **kwargs)
        self.nbytes = int(nbytes)

    def materialize(self, item: Any) -> Path:
        if item.format != "nc" or item.dataset != self.dataset(IDENT).key:
            return super().materialize(item)
        path = self.root / "big-cdse" / f"{self.nbytes}" / item.name
        start = item.start
        return self._produce(path, lambda tmp: write_big_netcdf(tmp, self.nbytes, start))


def request_of(store: ProductStore) -> dict[str, Any]:
    """The source keywords of the first NetCDF product of :data:`IDENT` (one product)."""
    spec = store.dataset(IDENT)
    (item,) = store.items(spec.key, format="nc", limit=1)
    day = item.start.date().isoformat()
    return {"dataset_id": "EO:JRC:DAT:CLMS", "dataset_identifier": IDENT, "bbox": [5, 45, 10, 50],
            "start": day, "end": day, "service": "cdse", "access": "download"}


# ------------------------------------------------------------------ child: one preload


def child(query: dict[str, Any]) -> int:
    import intake_clms.services.cdse.service  # noqa: F401  (the lifecycle's imports)
    from intake_clms.source import ClmsSource
    from intake_clms.store import Store

    src = ClmsSource(**query)
    t0 = time.perf_counter()
    handle = src.preload(blocking=False, progress_bar=False)
    marks: dict[str, float] = {}
    while not handle.done:
        now = time.perf_counter()
        stages = {p.stage for p in list(handle.products.values())}
        if "downloading" in stages:
            marks.setdefault("download_start", now)
        elif "download_start" in marks:
            marks.setdefault("download_end", now)
        time.sleep(0.001)
    handle.wait()
    t1 = time.perf_counter()
    marks.setdefault("download_end", t1)
    store = Store()
    records = [store.products.record(k) for k in store.products.keys()]
    print(json.dumps({
        "bytes": sum(p.total or 0 for p in handle.products.values()),
        "md5_checked": bool(records) and all(r is not None and r.payload["hashes"].get("md5") == r.payload["announced"].get("md5")
                                             for r in records),
        "download_s": marks["download_end"] - marks["download_start"],
        "lifecycle_s": t1 - t0,
        "peak_rss_mib": peak_rss_mib(),
    }))
    return 0


# ------------------------------------------------------------------ parent


def value_url(sb: Sandbox, query: dict[str, Any]) -> tuple[str, str, int]:
    """($value URL, bearer token, ContentLength) of the product; listing it also makes the file (once)."""
    env = sb.env()
    day = query["start"]
    flt = (f"Collection/Name eq 'CLMS' and Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'datasetIdentifier' "
           f"and att/OData.CSC.StringAttribute/Value eq '{IDENT}') and Attributes/OData.CSC.StringAttribute/any("
           f"att:att/Name eq 'fileFormat' and att/OData.CSC.StringAttribute/Value eq 'nc') and "
           f"ContentDate/Start ge {day}T00:00:00.000Z and ContentDate/Start lt {day}T23:59:59.999Z")
    found = requests.get(env["CDSE_ODATA_URL"] + "/Products", params={"$filter": flt}, timeout=600).json()["value"]
    assert len(found) == 1, f"expected one product, got {len(found)}"
    form = {"client_id": "cdse-public", "grant_type": "password", "username": env["CDSE_USERNAME"],
            "password": env["CDSE_PASSWORD"]}
    token = requests.post(env["CDSE_TOKEN_URL"], data=form, timeout=30).json()["access_token"]
    return f"{env['CDSE_DOWNLOAD_URL']}/Products({found[0]['Id']})/$value", token, int(found[0]["ContentLength"])


def run_ours(sb: Sandbox, cache: Path, query: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, **client_env(sb, cache), "NETRC": str(cache.parent / "no-netrc")}
    return run_child(__file__, [json.dumps(query)], env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB instead of 1 GiB")
    parser.add_argument("--runs", type=int, default=None, help="runs of each (default 5, quick 2)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    if shutil.which("curl") is None:
        raise SystemExit("cdse_download_bench.py needs curl (the reference): apt-get install curl")
    nbytes = (64 if args.quick else 1024) * MIB
    runs = args.runs or (2 if args.quick else 5)
    work = Path(tempfile.mkdtemp(prefix="intake-clms-cdse-download-bench-"))
    try:
        store = BigCdseStore(work / "sandbox", nbytes, size="tiny")
        query = request_of(store)
        with Sandbox(data_dir=work / "sandbox", store=store, queue_delay=0.0) as sb:
            t = time.perf_counter()
            url, token, size = value_url(sb, query)
            print(f"product of {size / MIB:.0f} MiB ready in {time.perf_counter() - t:.1f} s; {runs} runs of each")
            curl_runs, our_runs = curl_vs_ours(work, url, token, runs, lambda cache: run_ours(sb, cache, query),
                                               follow=True)
            bearer_on_transfer = sb.ctx.state["cdse"].bearer_on_transfer
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert all(o["bytes"] == size for o in our_runs) and all(c["bytes"] == size for c in curl_runs), "size mismatch"
    assert all(o["md5_checked"] for o in our_runs), "the stored product's MD5 is not the catalogue's"
    curl_best = max(c["bytes"] / c["download_s"] for c in curl_runs)
    ours_best = max(o["bytes"] / o["download_s"] for o in our_runs)
    life_best = max(o["bytes"] / o["lifecycle_s"] for o in our_runs)
    ratio = ours_best / curl_best
    results = {
        "size_mib": size / MIB,
        "runs": runs,
        "curl_mib_s": curl_best / MIB,
        "ours_download_mib_s": ours_best / MIB,
        "ours_lifecycle_mib_s": life_best / MIB,
        "ratio": ratio,
        "ratio_lifecycle": life_best / curl_best,
        "curl_s_median": statistics.median(c["download_s"] for c in curl_runs),
        "ours_download_s_median": statistics.median(o["download_s"] for o in our_runs),
        "peak_rss_mib": max(o["peak_rss_mib"] for o in our_runs),
        "bearer_on_transfer": bearer_on_transfer,  # curl -L drops the header on the other host, and so do we
        "targets": {"ratio": f">= {TARGET_RATIO}"},
        "ok": {"ratio": ratio >= TARGET_RATIO},
    }
    print(f"throughput, best of {runs}: ours {ours_best / MIB:.0f} MiB/s (download stage), curl {curl_best / MIB:.0f} "
          f"MiB/s: ratio {ratio:.2f} (target >= {TARGET_RATIO})")
    emit(NAME, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
