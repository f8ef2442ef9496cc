"""The intake driver behind every catalog entry (``driver: clms``).

Creating a source only validates its parameters (unknown keywords, values,
and the product's coverage from the catalog metadata): no network, no file system
beyond what intake itself does, because intake's GUI instantiates every entry
of a catalog when it shows it.  Reading hands the validated request to the
backend of the chosen service.
"""

from __future__ import annotations

from typing import Any

from intake.source.base import DataSource, Schema

from . import __version__
from .config import available_services
from .errors import ClmsError
from .params import Request, check_coverage, check_credentials, check_keywords
from .services import service_chain


class ClmsSource(DataSource):
    """A CLMS product, read through WEkEO HDA, the CLMS download API or CDSE into xarray."""

    name = "clms"
    container = "xarray"
    version = __version__
    partition_access = True

    def __init__(
        self,
        dataset_id: str,
        dataset_identifier: str | None = None,
        bbox: Any = None,
        start: Any = None,
        end: Any = None,
        service: str = "auto",
        cache_dir: str | None = None,
        metadata: dict[str, Any] | None = None,
        file: str | None = None,
        output_format: str | None = None,
        crs: str | None = None,
        download_information: str | None = None,
        overview_level: int | None = None,
        **kwargs: Any,
    ):
        check_keywords(kwargs)  # a typo (bbx=, wrokers=) must not silently run on the defaults
        self.request = Request.build(
            dataset_id, dataset_identifier, bbox, start, end, service, file=file, output_format=output_format, crs=crs,
            download_information=download_information, overview_level=overview_level,
        )
        check_coverage(self.request, metadata)
        check_credentials(self.request.service, kwargs)
        self.cache_dir = cache_dir
        self.options = kwargs
        self._ds = None
        super().__init__(metadata=metadata)

    def services(self) -> list[str]:
        """The services a read would ask now, in order: the one named, or ``auto``'s chain (by migration status
        and the credentials at hand).  Chosen here only, once per read."""
        return service_chain(self.request.service, (self.metadata or {}).get("migration_status"), available_services())

    @property
    def service(self) -> str:
        """The first service a read would ask now (``auto`` resolved against the credentials at hand)."""
        return self.services()[0]

    def _get_schema(self) -> Schema:
        # Offline on purpose: the real shape is only known after the product is fetched.
        return Schema(datashape=None, dtype=None, shape=None, npartitions=1, extra_metadata={})

    def to_dask(self):
        """Run the preload lifecycle (blocking) and return a lazy, dask-backed ``xarray.Dataset``."""
        if self._ds is None:
            self._ds = self.preload(blocking=True).result()
        return self._ds

    def preload(self, blocking: bool = True, progress_bar: bool | None = None, **options):
        """Fetch the product into the cache now (or in the background) and return a PreloadHandle.

        ``blocking=False`` returns at once; ``handle.wait()``, ``handle.cancel()``,
        ``handle.status`` and ``handle.progress`` follow the run.  Options
        (``workers``, ``poll_deadline``, ...) override the entry's.
        """
        from .engine.preload import preload

        handle = preload(self, self.services(), blocking=blocking, progress_bar=progress_bar, **options)
        if blocking:
            self._ds = self._checked(handle.result())
        return handle

    def _checked(self, data: Any) -> Any:
        """The opened data if this driver's container holds it: an ``xarray.Dataset`` here (vector
        products open as GeoDataFrames, for :class:`~intake_clms.vector_source.ClmsVectorSource`)."""
        import xarray as xr

        if not isinstance(data, xr.Dataset):
            raise ClmsError(f"{self.request.dataset_identifier or self.request.dataset_id} holds vector features "
                            f"({type(data).__name__}), not rasters: open it with driver 'clms_vector' "
                            "(intake_clms.vector_source.ClmsVectorSource), which gives a GeoDataFrame")
        return data

    def reads(self) -> dict[str, int]:
        """What this request's stored answer cost, from the cache (no network; zeros before a preload):
        ``products``, ``bytes_read`` (a window's compressed tiles, a download's whole payload) and
        ``products_size`` (the whole products' size), so ``products_size / bytes_read`` is what reading
        by window saved."""
        from .engine.windows import reads
        from .store import Store

        store = Store(self.options.get("cache_dir") or self.cache_dir)
        view = store.views.get(self.request.key())
        return reads(store, [vp.key for vp in view.products] if view is not None else [])

    def read(self):
        """Load the whole product into memory."""
        return self.to_dask().load()

    def _get_partition(self, i: int):
        return self.to_dask()

    def _close(self) -> None:
        if self._ds is not None:
            self._ds.close()
        self._ds = None
