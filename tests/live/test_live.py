"""Tiny real requests to the live services (``pytest -m live``): search, fetch one small product, open it, check
it against the Dataset contract, and cancel anything ordered.  Each service runs only with its credentials
(see ``intake_clms.config.available_services``) and is skipped otherwise; never part of the default run's checks
against the sandbox.  They use the real endpoints unless the environment points elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from intake_clms.config import available_services
from intake_clms.health import doctor
from intake_clms.source import ClmsSource

pytestmark = pytest.mark.live

NDVI = {"dataset_id": "EO:JRC:DAT:CLMS", "dataset_identifier": "ndvi_global_300m_10daily_v2",
        "bbox": [5.0, 45.0, 5.5, 45.5], "start": "2024-01-01", "end": "2024-01-10"}


def need(service: str) -> None:
    if service not in available_services():
        pytest.skip(f"no {service} credentials in this environment")


def check_contract(ds) -> None:
    assert "time" in ds.dims and ds.sizes["time"] >= 1
    assert ("lat" in ds.dims and "lon" in ds.dims) or ("y" in ds.dims and "x" in ds.dims)
    assert ds.data_vars and float(next(iter(ds.data_vars.values())).count()) > 0


@pytest.mark.parametrize("service", ["wekeo", "cdse"])
def test_one_ndvi_product(service: str, tmp_path: Path) -> None:
    need(service)
    report = doctor((service,))
    assert report.ok, report.table()
    src = ClmsSource(**NDVI, service=service, cache_dir=str(tmp_path), **({"access": "download"} if service == "cdse" else {}))
    check_contract(src.to_dask())


def test_clms_api_listing_and_one_small_file(tmp_path: Path) -> None:
    need("clms")
    report = doctor(("clms",))
    assert report.ok, report.table()
    # the smallest pre-packaged raster the doctor's search can point at would be ordered here; orders take
    # minutes to hours on the real queue, so only the listing and the token are checked by default
    from intake_clms.services.clms_api.listing import fetch_listing
    from intake_clms.config import endpoints

    listing = fetch_listing(endpoints().clms_api, cache_dir=tmp_path)
    assert len(listing) > 50 and any(d.downloadable_files for d in listing)


def test_clms_api_orders_one_tiny_cut_and_cancels_it(tmp_path: Path) -> None:
    """One real data request (a cut-to-order of a few hundred metres), polled once and cancelled: the task
    protocol end to end (post, status, delete) without waiting on the queue.  The task is cancelled whatever
    happens; a task that finished before the cancel reached it is accepted (nothing is left queued)."""
    import threading

    from intake_clms.config import endpoints
    from intake_clms.errors import OrderFailedError
    from intake_clms.services.clms_api import connect
    from intake_clms.services.clms_api.listing import fetch_listing

    need("clms")
    listing = fetch_listing(endpoints().clms_api, cache_dir=tmp_path)
    cuts = [d for d in listing if d.cut_to_order and d.bbox is not None]
    assert cuts, "no dataset of the listing accepts a cut-to-order request"
    ds = next((d for d in cuts if d.id == "forest-type-2015"), cuts[0])
    w, s, e, n = ds.bbox
    lon, lat = (10.0 if w < 10.0 < e else (w + e) / 2), (50.0 if s < 50.0 < n else (s + n) / 2)  # central Europe
    src = ClmsSource(dataset_id=ds.id, bbox=[lon, lat, lon + 0.01, lat + 0.01], crs="EPSG:3035",
                     service="clms", cache_dir=str(tmp_path))
    svc = connect({"cache_dir": str(tmp_path)}, threading.Event())
    svc.cancel_timeout = 30.0  # the real portal can be slow to answer a delete
    hits = svc.search(src.request)
    assert len(hits) == 1 and hits[0].ordered
    task = svc.order(hits[0])
    try:
        state, _ = svc.poll(task)
        assert state in ("queued", "running", "done")
    finally:
        svc.cancel(task)
    try:
        after, _ = svc.poll(task)
    except OrderFailedError as exc:
        assert "Cancelled" in str(exc)
    else:
        assert after == "done", f"task {task} is still {after} after its cancel"
