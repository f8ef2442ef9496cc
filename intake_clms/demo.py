"""`make demo`: the whole lifecycle of one catalog entry, against the local sandbox or the real WEkEO.

With no WEkEO credentials in the environment (HDA_USER/HDA_PASSWORD or ~/.hdarc)
the demo starts the sandbox and points the client at it; with credentials it
talks to the real service.  Either way: open the catalog, preload one entry with
progress, print the Dataset, save a quicklook PNG, then reopen it from the cache.
Then the same on the CLMS download API, and on CDSE: a window read of the same
entry's COGs, with the bytes it read beside the products' size (a whole download
when this version cannot read by window).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import intake

from .config import available_services
from .catalog.resolve import default_catalog_path, resolve

ENTRY = "ndvi_global_300m_10daily_v2"
QUERY = {"bbox": [5, 45, 10, 50], "start": "2024-01-01", "end": "2024-01-31", "service": "wekeo"}
#: The CDSE part: the same entry's COGs for three dekads, read by window (1 x 1 degree of a global product).
#: Another area than the WEkEO part's: a request already answered is reopened from the cache, whatever the service.
CDSE_QUERY = {"bbox": [-1, 41, 0, 42], "start": "2024-01-01", "end": "2024-01-31", "service": "cdse"}
#: The CLMS download API part: one pre-packaged tile of a pan-European uint8 layer.
API_ENTRY = "forest_type_2015"
API_QUERY = {"file": "FTY_2015_100m_eu_03035_d02_E30N20"}


def _quicklook(ds, path: Path, title: str = ENTRY) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    var = next(v for v in ds.data_vars if ds[v].ndim >= 2 and {"x", "y", "lat", "lon"} & set(ds[v].dims))
    field = ds[var].isel(time=0) if "time" in ds[var].dims else ds[var]
    nodata = field.attrs.get("_FillValue", field.encoding.get("_FillValue"))
    if nodata is not None:  # integer layers keep their nodata value: hide it from the colour scale
        field = field.where(field != nodata)
    fig, ax = plt.subplots(figsize=(6, 5))
    field.plot(ax=ax)
    ax.set_title(f"{title}: {var}")
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="intake-clms-demo-"))
    os.environ.setdefault("INTAKE_CLMS_CACHE", str(work / "cache"))
    with contextlib.ExitStack() as stack:
        sandbox = None
        if "wekeo" not in available_services():
            from .sandbox import Sandbox

            sandbox = stack.enter_context(Sandbox(data_dir=work / "sandbox", speed=30.0, queue_delay=60.0, size="small"))
            os.environ.update(sandbox.env())
            print(f"No WEkEO credentials found: using the local sandbox at {sandbox.urls['base']}")
        else:
            print(f"Using WEkEO at {os.environ.get('HDA_URL', 'the default URL')}")

        cat = intake.open_catalog(str(default_catalog_path()))
        print(f"Catalog: {len(list(cat))} entries; "
              f"EO:CLMS:DAT:CLMS_GLOBAL_NDVI_300M_V2_10DAILY_NETCDF -> "
              f"{resolve('EO:CLMS:DAT:CLMS_GLOBAL_NDVI_300M_V2_10DAILY_NETCDF')}")
        ds = _load_and_show(cat, ENTRY, QUERY, work)

        calls = sandbox.log.count() if sandbox else None
        t0 = time.perf_counter()
        again = getattr(intake.open_catalog(str(default_catalog_path())), ENTRY)(**QUERY).to_dask()
        took = time.perf_counter() - t0
        extra = f", {sandbox.log.count() - calls} HTTP calls" if sandbox else ""
        print(f"Reopened from the cache in {took:.2f} s{extra}; same data: {bool(again.identical(ds))}")

        if "clms" in available_services():
            _clms_api_part(cat, work)
        else:
            print("\nNo CLMS service key (CLMS_SERVICE_KEY): skipping the CLMS download API part.")

        if "cdse" in available_services():
            _cdse_part(cat, work, sandbox)
        else:
            print("\nNo CDSE credentials (CDSE_USERNAME/CDSE_PASSWORD or ~/.netrc): skipping the CDSE part.")
    return 0


def _cdse_part(cat, work: Path, sandbox) -> None:
    """CDSE: the entry's COGs read by window (only the tiles under the bbox), the bytes read beside the products' size."""
    src = getattr(cat, ENTRY)(**CDSE_QUERY, access="window")
    print(f"\nCDSE ({os.environ.get('CDSE_ODATA_URL', 'the default catalogue')}): access='window'")
    before = _cdse_bytes(sandbox)
    _load_and_show(cat, ENTRY, {**CDSE_QUERY, "access": "window"}, work, suffix=".cdse")
    reads = src.reads()
    moved = _cdse_bytes(sandbox)
    read = (moved - before) if moved is not None else reads["bytes_read"]
    size = reads["products_size"]
    if read and size:
        print(f"CDSE window read of {reads['products']} products: {read:,} bytes read of {size:,} "
              f"(the products' size; {size / max(read, 1):.0f}x less)")


def _cdse_bytes(sandbox) -> int | None:
    """Bytes the sandbox's CDSE download and S3 routes sent so far (None against the real service)."""
    if sandbox is None:
        return None
    return sum(e.bytes_sent for e in sandbox.log.entries(service="cdse") if e.endpoint in ("download", "s3"))


def _clms_api_part(cat, work: Path) -> None:
    """The same experience on the CLMS download API: nested catalog listed on opening, a pre-packaged file."""
    api = cat.clms_download_api
    print(f"\nCLMS download API ({os.environ.get('CLMS_API_URL', 'the default URL')}): "
          f"{len(list(api))} downloadable datasets listed from @search")
    _load_and_show(api, API_ENTRY, API_QUERY, work)


def _load_and_show(cat, entry: str, query: dict, work: Path, suffix: str = ""):
    """Preload one entry with a progress bar, print the Dataset, save its quicklook; returns the Dataset."""
    src = getattr(cat, entry)(**query)
    print(f"\n{entry}: {src.description}\nrequest: {query}\n")
    t0 = time.perf_counter()
    src.preload(blocking=True, progress_bar=True)
    ds = src.to_dask()
    print(f"\nPreloaded in {time.perf_counter() - t0:.1f} s; cache: {os.environ['INTAKE_CLMS_CACHE']}\n")
    print(ds)
    png = _quicklook(ds, work / f"{entry}{suffix}.quicklook.png", entry)
    print(f"\nQuicklook saved to {png}")
    return ds


if __name__ == "__main__":
    sys.exit(main())
