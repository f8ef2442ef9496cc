"""The intake driver of vector entries (``driver: clms_vector``): a CLMS vector product as a GeoDataFrame.

Vector products (water levels, Urban Atlas, ...) go through the very lifecycle of
raster ones (same keywords, validation, services, product store, offline reopen);
only the container differs, so this is :class:`~intake_clms.source.ClmsSource` with
``container = "dataframe"``: ``read()`` gives a ``geopandas.GeoDataFrame`` of the
features whose geometry intersects the bbox, in the request's dates (see
:func:`intake_clms.assemble.vector.open_vector`), in the data's own CRS.

geopandas is imported only when data is read: creating a source stays as light as
for raster entries (intake's GUI instantiates every entry it shows).
"""

from __future__ import annotations

import math
from typing import Any

from .errors import ClmsError
from .source import ClmsSource

#: Rows per partition of ``to_dask()`` (vector products are read whole; this only splits the work).
ROWS_PER_PARTITION = 250_000


class ClmsVectorSource(ClmsSource):
    """A CLMS vector product, read through WEkEO HDA, the CLMS download API or CDSE into a GeoDataFrame."""

    name = "clms_vector"
    container = "dataframe"

    def read(self):
        """Run the preload lifecycle (blocking) and return the features as a ``geopandas.GeoDataFrame``."""
        if self._ds is None:
            self.preload(blocking=True)
        return self._ds

    def to_dask(self):
        """A ``dask_geopandas.GeoDataFrame`` partitioned from :meth:`read` (needs dask-geopandas).

        The files are read whole first (vector products are small next to rasters); the
        partitions split later work.  Without dask-geopandas, use :meth:`read`.
        """
        try:
            import dask_geopandas
        except ImportError:
            raise ClmsError("to_dask() of a vector entry needs dask-geopandas: pip install 'intake-clms[vector-dask]' "
                            "(read() gives the GeoDataFrame without it)") from None
        frame = self.read()
        return dask_geopandas.from_geopandas(frame, npartitions=max(1, math.ceil(len(frame) / ROWS_PER_PARTITION)))

    def _checked(self, data: Any) -> Any:
        import geopandas as gpd

        if not isinstance(data, gpd.GeoDataFrame):
            if callable(getattr(type(data), "close", None)):
                data.close()
            raise ClmsError(f"{self.request.dataset_identifier or self.request.dataset_id} holds raster data "
                            f"({type(data).__name__}), not vector features: open it with driver 'clms' (ClmsSource), "
                            "which gives an xarray Dataset")
        return data

    def _get_partition(self, i: int) -> Any:
        return self.read()

    def _close(self) -> None:
        self._ds = None  # a GeoDataFrame holds no open file
