"""Shared constants and builders of the lifecycle tests."""

from __future__ import annotations

from typing import Any

from intake_clms.source import ClmsSource

NDVI = {"dataset_id": "EO:JRC:DAT:CLMS", "dataset_identifier": "ndvi_global_300m_10daily_v2"}
BBOX = [5, 45, 10, 50]
FAST = {"poll_first": 0.05, "poll_cap": 0.2, "poll_deadline": 30, "backoff": 0.01}



def ndvi_source(start: str = "2024-01-01", end: str = "2024-01-31", **kw: Any) -> ClmsSource:
    """The NDVI 300 m 10-daily v2 entry as the catalog would build it, with fast polling."""
    return ClmsSource(**NDVI, bbox=BBOX, start=start, end=end, service="wekeo", **{**FAST, **kw})
