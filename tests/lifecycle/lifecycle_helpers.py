"""Shared constants and builders of the lifecycle tests."""

from __future__ import annotations

from typing import Any

from intake_clms.net.clock import FakeClock
from intake_clms.source import ClmsSource

NDVI = {"dataset_id": "EO:JRC:DAT:CLMS", "dataset_identifier": "ndvi_global_300m_10daily_v2"}
BBOX = [5, 45, 10, 50]
FAST = {"poll_first": 0.05, "poll_cap": 0.2, "poll_deadline": 30, "backoff": 0.01}



def ndvi_source(start: str = "2024-01-01", end: str = "2024-01-31", **kw: Any) -> ClmsSource:
    """The NDVI 300 m 10-daily v2 entry as the catalog would build it, with fast polling."""
    return ClmsSource(**NDVI, bbox=BBOX, start=start, end=end, service="wekeo", **{**FAST, **kw})


def store(cache: Any = None):
    """The product store the sources of a test use (INTAKE_CLMS_CACHE unless given)."""
    from intake_clms.store import Store

    return Store(cache)


def view_of(src: ClmsSource, cache: Any = None):
    """The published view of a source's request, or None."""
    return store(cache or src.cache_dir).views.get(src.request.key())


def stored_files(src: ClmsSource, pattern: str = "*", cache: Any = None) -> list:
    """The files of the products a source's view names (record.json excluded)."""
    st = store(cache or src.cache_dir)
    view = st.views.get(src.request.key())
    assert view is not None, "the request has no published view"
    return sorted(p for vp in view.products for p in st.products.path(vp.key).rglob(pattern)
                  if p.is_file() and p.name != "record.json")


def assert_nothing_published(src: ClmsSource, cache: Any = None) -> None:
    """No view, no stored product, no staging folder: a failed run leaves nothing that opens."""
    st = store(cache or src.cache_dir)
    assert st.views.get(src.request.key()) is None
    assert not list(st.products.keys())
    assert not (st.root / "staging").exists() or not any((st.root / "staging").iterdir())


class Lockstep(FakeClock):
    """A fake clock whose sleeps also move the sandbox's clock: client and server age together, no real sleep."""

    def __init__(self, sb: Any):
        import time

        super().__init__(time.time())
        self.sb = sb

    def sleep(self, seconds: float, cancel: Any = None) -> None:
        super().sleep(seconds, cancel)
        self.sb.clock.advance(seconds)
