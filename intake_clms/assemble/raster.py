"""The one raster reader: every GeoTIFF pixel the package returns is read here, local tile or remote COG.

Why one: two readers (a mosaic reader for stored tiles, a window reader for remote
COGs) read ``chunks=`` differently and named the variable differently, so one request
gave two Datasets.  Here a raster is a :class:`RasterSource`: a GDAL path (a local
file, ``/vsis3/...`` or ``/vsicurl/...``) and, for a remote one, a
:class:`RasterAccess` that the *service* hands over (its GDAL settings and
credentials, its connection budget).  This module imports no service.

- :func:`header_of` / :class:`Header`: what one header says (grid, dtype, nodata, the
  band's name, packing and CF attributes, internal tiling, overviews);
- :func:`using`: work on one open file; local datasets stay open per thread (a dask
  worker thread reads many chunks of one tile: the mosaic reader goes through here),
  remote reads run inside the access's scoped GDAL environment and one slot of its
  connection budget, and a failure names the file (for a local file, what the source's
  ``on_damage`` hook makes of it, see :mod:`.damage`, else an :class:`IntegrityError`: a
  damaged tile never reads as nodata);
- :func:`read_window`: one open of a remote file for its header and the pixels under a
  bbox (the crop rule of :mod:`.grid`), with the compressed bytes of the tiles it covered;
- :func:`write_window`: the pixels read, kept as a small GeoTIFF with the same band
  metadata, so a kept window opens like any stored tile.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from ..errors import ClmsError, IntegrityError
from . import damage, grid

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Band tags copied into the Dataset as CF attributes (and written back when a window is kept).
CF_TAGS = ("long_name", "standard_name", "units", "flag_values", "flag_meanings", "flag_masks")
#: Faster opens: no directory listing to look for side-car files (.aux.xml, .ovr) we never use.
LOCAL_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
#: Open local datasets kept per thread (a chunk read reuses the tile opened by the previous one).
OPEN_PER_THREAD = 32


class RasterAccess(Protocol):
    """How a remote raster is reached; a service implements it (no secret in its repr or pickle)."""

    def env(self) -> contextlib.AbstractContextManager[Any]:
        """GDAL settings and credentials for reads, scoped to the block."""

    def slot(self, opening: bool = False) -> contextlib.AbstractContextManager[Any]:
        """One connection of the service's budget, held for the read; ``opening``: the request opens a file
        (its header), which a budget may serve first so that every file's read starts early."""

    def failed(self, exc: Exception, shown: str, attempt: int) -> bool:
        """A read failed: True to try again (credentials renewed, a transient fault), else False; may instead
        raise the service's own error (with the HTTP status)."""


@dataclass(frozen=True)
class RasterSource:
    """One raster file: where it is and, if remote, how to reach it."""

    path: str
    access: Any = None  # a RasterAccess for a remote path; None for a local file
    name: str = ""  # what messages show (a file name, never a URL with its query)
    on_damage: Any = None  # a local stored file: what a read error means (a picklable :data:`.damage.OnDamage`)

    @property
    def shown(self) -> str:
        return self.name or self.path.rsplit("/", 1)[-1].split("?", 1)[0]

    def __repr__(self) -> str:
        return f"RasterSource({self.shown!r}, remote={self.access is not None})"


@dataclass(frozen=True)
class Band:
    """A band's name and meaning: what the Dataset's variable is called and how its integers decode."""

    name: str = ""  # the band's description ("" when the file has none)
    scale: float = 1.0
    offset: float = 0.0
    attrs: dict[str, Any] = field(default_factory=dict)  # CF attributes from the band's tags and units


@dataclass(frozen=True)
class Header:
    """What one raster file's header says (no pixel read)."""

    crs: str | None
    transform: tuple[float, ...]  # affine a, b, c, d, e, f
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    block: tuple[int, int]  # (rows, cols) of one internal tile
    band: Band = field(default_factory=Band)
    overviews: tuple[int, ...] = ()

    @property
    def affine(self) -> Any:
        from affine import Affine

        return Affine(*self.transform[:6])

    def footprint(self) -> tuple[float, float, float, float]:
        t = self.affine
        xs = (t.c, t.c + self.width * t.a)
        ys = (t.f, t.f + self.height * t.e)
        return min(xs), min(ys), max(xs), max(ys)

    def window(self, bbox: Sequence[float] | None) -> tuple[int, int, int, int]:
        """(row, col, height, width) of the crop of a lon/lat bbox (:mod:`.grid`'s rule)."""
        return grid.centre_window(self.affine, self.width, self.height, grid.bbox_in(self.crs, bbox, self.footprint()))


def band_of(ds: Any, index: int = 1) -> Band:
    """The band's description, scale/offset and CF tags (``units`` from GDAL's unit type)."""
    tags = ds.tags(index)
    attrs: dict[str, Any] = {k: tags[k] for k in CF_TAGS if tags.get(k) not in (None, "")}
    unit = ds.units[index - 1] if ds.units else None
    if unit:
        attrs["units"] = unit
    return Band(name=ds.descriptions[index - 1] or "", scale=float(ds.scales[index - 1]),
                offset=float(ds.offsets[index - 1]), attrs=attrs)


def header_of(ds: Any) -> Header:
    """The header of an open rasterio dataset."""
    dtypes = set(ds.dtypes)
    if len(dtypes) > 1:
        raise IntegrityError(f"{ds.name}: mixes band dtypes {sorted(dtypes)}; cannot read it as one variable")
    bh, bw = ds.block_shapes[0]
    return Header(crs=ds.crs.to_wkt() if ds.crs else None, transform=tuple(ds.transform)[:6], width=ds.width,
                  height=ds.height, count=ds.count, dtype=ds.dtypes[0],
                  nodata=None if ds.nodata is None else float(ds.nodata), block=(bh, bw), band=band_of(ds),
                  overviews=tuple(ds.overviews(1)))


# --------------------------------------------------------------------------- opening


_LOCAL = threading.local()


def _cached(path: str) -> Any:
    """A local dataset opened once per thread (closed when evicted), opened again when the file changed: a
    product fetched again after damage sits at the same path, and a handle on the old file (or GDAL's cache
    of its blocks) must not answer for the new one."""
    import os

    import rasterio

    cache: OrderedDict[str, tuple[Any, tuple[int, int, int]]] = _LOCAL.__dict__.setdefault("open", OrderedDict())
    st = os.stat(path)
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    held = cache.get(path)
    if held is not None and not held[0].closed and held[1] == stamp:
        cache.move_to_end(path)
        return held[0]
    if held is not None:
        held[0].close()
    with rasterio.Env(**LOCAL_ENV):
        ds = rasterio.open(path)
    cache[path] = (ds, stamp)
    while len(cache) > OPEN_PER_THREAD:
        _, (old, _) = cache.popitem(last=False)
        old.close()
    return ds


def using(src: RasterSource, work: Callable[[Any], T], level: int | None = None,
          head: Callable[[Any], Any] | None = None) -> T:
    """``work(dataset)`` on the source opened: local datasets cached per thread; a remote one inside its
    access's environment, tried again when the access says so (a renewed token).

    A remote file's budget slot is held for what sends requests, not between them: the open (the header
    read) in one slot, ``work`` (the pixel read) in another, with ``head(dataset)`` (what the header says:
    the window to read) run in between, outside any slot, so the budget's connections carry requests
    back to back while this thread parses.  ``work`` then receives the dataset and ``head``'s answer."""
    import rasterio

    if src.access is None:
        try:
            if level is None:
                return work(_cached(src.path))
            with rasterio.open(src.path, overview_level=level) as ds:
                return work(ds)
        except ClmsError:
            raise
        except Exception as exc:  # rasterio, GDAL or OS errors: the stored file is damaged or gone
            raise damage.read_error(src.path, src.shown, exc, src.on_damage) from exc
    attempt = 0
    while True:
        attempt += 1
        try:
            with src.access.env():
                kwargs = {} if level is None else {"overview_level": level}
                with src.access.slot(opening=True):
                    ds = rasterio.open(src.path, **kwargs)
                with ds:
                    if head is None:
                        with src.access.slot():
                            return work(ds)
                    told = head(ds)
                    with src.access.slot():
                        return work(ds, told)  # type: ignore[call-arg]
        except ClmsError:
            raise
        except Exception as exc:  # noqa: BLE001 - the access says what a failure means (raises, or asks again)
            if not src.access.failed(exc, src.shown, attempt):
                raise ClmsError(f"reading {src.shown} failed: {exc}") from exc


# --------------------------------------------------------------------------- windows of remote files


@dataclass(frozen=True)
class Window:
    """The pixels of one file under a bbox, as read: data, its header, where it lies, the bytes it cost."""

    data: np.ndarray  # (height, width) in the file's dtype
    header: Header
    window: tuple[int, int, int, int]
    tile_bytes: int

    def kept_header(self) -> Header:
        """What the window kept as a GeoTIFF (:func:`write_window`) says of its grid, CRS, dtype, nodata and band:
        the file's header on the window's grid (its internal tiling is left as the remote file's)."""
        from dataclasses import replace

        from affine import Affine

        row, col, h, w = self.window
        return replace(self.header, transform=tuple(self.header.affine @ Affine.translation(col, row))[:6],
                       width=w, height=h, overviews=())


def read_window(src: RasterSource, bbox: Sequence[float] | None, level: int | None = None) -> Window:
    """One open of ``src``: its header and the pixels whose centres lie in ``bbox`` (lon/lat)."""
    from rasterio.windows import Window as RioWindow

    def where(ds: Any) -> tuple[Header, tuple[int, int, int, int]]:
        head = header_of(ds)
        row, col, h, w = head.window(bbox)
        if h == 0 or w == 0:
            raise IntegrityError(f"{src.shown}: no pixel centre of it lies in the bbox {list(bbox or [])}")
        return head, (row, col, h, w)

    def work(ds: Any, told: tuple[Header, tuple[int, int, int, int]] | None = None) -> Window:
        head, (row, col, h, w) = told or where(ds)
        data = ds.read(1, window=RioWindow(col, row, w, h))
        return Window(data, head, (row, col, h, w), tile_bytes(ds, (row, col, h, w)))

    return using(src, work, level, head=where)


def tile_bytes(ds: Any, window: tuple[int, int, int, int]) -> int:
    """Compressed bytes of the internal tiles under ``window`` (from the TIFF tags; 0 when unknown)."""
    try:
        bh, bw = ds.block_shapes[0]
        row, col, h, w = window
        total = 0
        for r in range(row // bh, (row + h - 1) // bh + 1):
            for c in range(col // bw, (col + w - 1) // bw + 1):
                total += int(ds.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=1) or 0)
        return total
    except Exception:  # noqa: BLE001 - statistics only
        return 0


def write_window(path: Path, win: Window) -> None:
    """Keep a window read remotely as a GeoTIFF with the file's grid, nodata, band name, packing and CF tags."""
    import rasterio

    head, kept = win.header, win.kept_header()
    h, w = kept.height, kept.width
    transform = kept.affine
    tiled = h >= 256 and w >= 256
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype=head.dtype, crs=head.crs,
                           transform=transform, nodata=head.nodata, compress="DEFLATE", tiled=tiled,
                           **({"blockxsize": 256, "blockysize": 256} if tiled else {})) as dst:
            dst.write(win.data, 1)
            dst.scales, dst.offsets = (head.band.scale,), (head.band.offset,)
            if head.band.name:
                dst.set_band_description(1, head.band.name)
            tags = {k: str(v) for k, v in head.band.attrs.items() if k != "units"}
            if tags:
                dst.update_tags(1, **tags)
            if head.band.attrs.get("units"):
                dst.set_band_unit(1, str(head.band.attrs["units"]))


__all__ = ["Band", "Header", "RasterAccess", "RasterSource", "Window", "band_of", "header_of", "read_window",
           "tile_bytes", "using", "write_window"]
