"""The child of test_kill: one preload against the sandbox named by the environment, then ``OK``.

Run as ``python kill_child.py SCENARIO CACHE [STRETCH]``.  ``STRETCH`` (seconds, default 0)
makes every ``os.replace`` of the process sleep that long before and after it, which
widens the windows between the store's steps (extract, record, publish, view) so
that a kill at a random instant lands in them more often; the engine's logic is
unchanged.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

try:
    from .lifecycle_helpers import BBOX, FAST, NDVI
except ImportError:  # run as a script: this folder is sys.path[0]
    from lifecycle_helpers import BBOX, FAST, NDVI  # type: ignore[no-redef]

FOREST = "forest-type-2015"
TILE = "FTY_2015_100m_eu_03035_d02_E30N20"
CORINE = ("corine-land-cover-2018", "U2018_CLC2018_V2020_20u1")
MONTH = {"start": "2024-01-01", "end": "2024-01-31"}  # three dekads
WINDOW_BBOX = (-180 + 62830.5 / 336, 80 - 10800.5 / 336, -180 + 62880.5 / 336, 80 - 10750.5 / 336)  # in the tiny COGs

# name -> (service, ClmsSource keyword arguments)
SCENARIOS: dict[str, dict[str, Any]] = {
    # WEkEO HDA: three NDVI dekads, three orders
    "wekeo-ndvi": {**NDVI, "bbox": BBOX, **MONTH, "service": "wekeo", **FAST},
    # CLMS download API, pre-packaged file: one task, a zip of several GeoTIFF tiles (mosaic index)
    "clms-tiles": {"dataset_id": CORINE[0], "file": CORINE[1], "service": "clms", **FAST},
    # CLMS download API, pre-packaged single tile
    "clms-tile": {"dataset_id": FOREST, "file": TILE, "service": "clms", **FAST},
    # CLMS download API, cut-to-order NetCDF of three dekads (one task)
    "clms-cut": {**NDVI, "bbox": BBOX, **MONTH, "service": "clms", **FAST},
    # CDSE direct download ($value, redirected to a presigned transfer): three NetCDF dekads, no order
    "cdse-download": {**NDVI, "bbox": BBOX, **MONTH, "service": "cdse", "access": "download", **FAST},
    # CDSE window reads of three COGs over S3; the blocks read are kept in the store (published like products)
    "cdse-window": {**NDVI, "bbox": list(WINDOW_BBOX), "start": "2020-01-01", "end": "2020-01-31", "service": "cdse",
                    "access": "window", **FAST},
}


def source(scenario: str, cache: str):
    from intake_clms.source import ClmsSource

    return ClmsSource(cache_dir=cache, **SCENARIOS[scenario])


def _stretch(seconds: float) -> None:
    real = os.replace

    def slow_replace(src: Any, dst: Any, *a: Any, **kw: Any) -> None:
        time.sleep(seconds)
        real(src, dst, *a, **kw)
        time.sleep(seconds)

    os.replace = slow_replace  # type: ignore[assignment]


def main(argv: list[str]) -> int:
    scenario, cache = argv[0], argv[1]
    if len(argv) > 2 and float(argv[2]) > 0:
        _stretch(float(argv[2]))
    ds = source(scenario, cache).to_dask()
    print("OK", dict(ds.sizes), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
