"""Lazy window reads of remote Cloud-Optimised GeoTIFFs (the ``remote`` access kind), and keeping them.

Why by window: a 5 x 5 degree area of a global 300 m product is about 1/1700 of
the file, and a COG's internal tiles can be fetched by byte range.  A request's
view names its remote products and, written once at publish by :func:`describe`
from ONE product's header, the pixel grid they share; :func:`open_remote` turns
that into a ``(time, y, x)`` dask array without touching the network.  Each dask
block is one :class:`Block`: a picklable description (GDAL path, pixel window,
expected grid, a :class:`~intake_clms.services.cdse.s3.CredentialRef`), read by
:func:`read_block` wherever dask runs it.  GDAL then fetches only the header and
the internal tiles under that window, at full resolution (an overview only when
``overview_level`` asks), inside a ``rasterio.Env`` scoped to the read and while
holding one slot of the process's CDSE connection budget.  Blocks are aligned to
the file's internal tiles, so no tile is fetched by two blocks.

What is kept: a block read remotely is written to the product store as a small
GeoTIFF product keyed by the product key and its pixel window
(``<key>.w<row>-<col>-<h>x<w>[-o<level>]``), published like any product (staging,
record, one rename).  A later open of the same request finds every block kept and
reads them from disk: offline.  A worker that cannot write the store (another
machine, read-only cache) just skips keeping.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import ClmsError, ServiceError
from .errors import IntegrityError

log = logging.getLogger(__name__)

#: Default block side in pixels (rounded down to a multiple of the file's internal tile size).
BLOCK_TARGET = 2048
KEPT_FILE = "window.tif"

_STATS_LOCK = threading.Lock()
_STATS = {"remote_reads": 0, "tile_bytes": 0, "kept_reads": 0}


def stats(reset: bool = False) -> dict[str, int]:
    """This process's window reads: remote block reads, compressed bytes of the tiles they covered, kept reads."""
    with _STATS_LOCK:
        out = dict(_STATS)
        if reset:
            for k in _STATS:
                _STATS[k] = 0
    return out


# --------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class Grid:
    """The full-resolution pixel grid of a remote COG (what a view keeps; no secret)."""

    width: int
    height: int
    transform: tuple[float, ...]  # affine a, b, c, d, e, f
    block: tuple[int, int]  # internal tile (rows, cols)
    dtype: str
    crs: str | None
    nodata: float | None = None
    overviews: tuple[int, ...] = ()  # decimation factors
    scale: float = 1.0
    offset: float = 0.0
    units: str = ""
    name: str = ""  # the band's description

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Grid:
        d = dict(data)
        d["transform"], d["block"], d["overviews"] = tuple(d["transform"]), tuple(d["block"]), tuple(d.get("overviews") or ())
        return cls(**d)

    def level(self, level: int | None) -> tuple[int, int, Any, tuple[int, int]]:
        """(width, height, affine transform, block) of the full resolution (None) or of overview ``level`` (0 = first)."""
        from affine import Affine

        t = Affine(*self.transform[:6])
        if level is None:
            return self.width, self.height, t, self.block
        if not 0 <= level < len(self.overviews):
            raise ClmsError(f"overview_level={level}: the products have {len(self.overviews)} overview levels "
                            f"(0 to {len(self.overviews) - 1}; factors {list(self.overviews)})")
        f = self.overviews[level]
        w, h = -(-self.width // f), -(-self.height // f)
        return w, h, t @ Affine.scale(self.width / w, self.height / h), self.block


def _grid_of(src: Any) -> Grid:
    bh, bw = src.block_shapes[0]
    return Grid(width=src.width, height=src.height, transform=tuple(src.transform)[:6], block=(bh, bw),
                dtype=src.dtypes[0], crs=src.crs.to_string() if src.crs else None,
                nodata=None if src.nodata is None else float(src.nodata), overviews=tuple(src.overviews(1)),
                scale=float(src.scales[0]), offset=float(src.offsets[0]), units=src.units[0] or "",
                name=src.descriptions[0] or "")


def _files(remote: Mapping[str, Any]) -> list[dict[str, Any]]:
    files = remote.get("files") or ([{"name": remote.get("name"), "key": remote["key"], "href": remote.get("href"),
                                      "size": remote.get("size")}] if remote.get("key") or remote.get("href") else [])
    if not files:
        raise IntegrityError(f"the remote product {remote.get('name')!r} names no file to read")
    return [dict(f, bucket=f.get("bucket") or remote.get("bucket") or "eodata") for f in files]


def describe(remote: Mapping[str, Any], ref: Any) -> list[dict[str, Any]]:
    """The grid of every file of one remote product (one header read each, in a budget slot)."""
    from ..services.cdse.s3 import vsi_path

    return [_remote_open(vsi_path(f, ref.mode), ref, None, lambda src: _grid_of(src).to_json()) for f in _files(remote)]


# --------------------------------------------------------------------------- one block


@dataclass(frozen=True)
class Keep:
    """Where a block read remotely is kept: the store's folder and the kept product's key and labels."""

    store: str
    key: str
    name: str
    start: str | None = None
    end: str | None = None


@dataclass(frozen=True)
class Block:
    """One dask block: a pixel window of one file (remote through ``ref``, or a kept local file)."""

    path: str  # /vsis3/..., /vsicurl/... or a local kept file
    window: tuple[int, int, int, int]  # row, col, height, width in the level's grid
    dtype: str
    level: int | None = None
    ref: Any = None  # CredentialRef for a remote read; None for a kept file
    grid: tuple[int, int, tuple[float, ...]] | None = None  # width, height, transform the file must have
    keep: Keep | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # crs, nodata, scale... for the kept file

    def __repr__(self) -> str:
        return f"Block({self.path!r}, window={self.window}, level={self.level})"


def read_block(block: Block) -> np.ndarray:
    """The block's pixels as ``(1, height, width)`` in the file's dtype (runs on any dask worker)."""
    import rasterio
    from rasterio.windows import Window

    row, col, h, w = block.window
    if block.ref is None:  # kept: from disk
        with rasterio.open(block.path) as src:
            out = src.read(1, window=Window(0, 0, w, h)) if (src.height, src.width) == (h, w) else None
        if out is None:
            raise IntegrityError(f"the kept window {block.path} is not {h} x {w} pixels; `intake-clms cache verify`")
        with _STATS_LOCK:
            _STATS["kept_reads"] += 1
        return out[None]

    def read(src: Any) -> np.ndarray:
        if block.grid is not None:
            width, height, transform = block.grid
            if (src.width, src.height) != (width, height) or not np.allclose(tuple(src.transform)[:6], transform,
                                                                             rtol=0, atol=1e-9):
                raise IntegrityError(f"{_shown(block.path)}: its grid ({src.width} x {src.height}, {tuple(src.transform)[:6]}) "
                                     f"differs from the other products' ({width} x {height}, {transform}); "
                                     "cannot stack them by window")
        data = src.read(1, window=Window(col, row, w, h))
        _count_tiles(src, block)
        return data

    data = _remote_open(block.path, block.ref, block.level, read)
    if block.keep is not None:
        _keep(block, data)
    return data[None]


def _shown(path: str) -> str:
    return path.rsplit("/", 1)[-1] if not path.startswith("/vsicurl/") else path.split("?", 1)[0]


def _remote_open(path: str, ref: Any, level: int | None, work: Any) -> Any:
    """Open ``path`` through GDAL with the read's scoped settings, in one budget slot.  A reset or truncated body
    is read again (bounded, see :mod:`.gdalio`); a 401, or a 403 of an expired transfer link, over HTTPS asks
    for a fresh token and ``$value`` link once."""
    import rasterio
    from rasterio.errors import RasterioIOError

    from ..services.cdse.budget import budget
    from ..services.cdse.s3 import HTTPS, gdal_env
    from . import gdalio

    gdalio.install_scrubber()
    renew = {"token": None, "done": False}

    def attempt(n: int) -> Any:
        with budget().slot():
            with gdal_env(ref, renew["token"]) if ref.mode == HTTPS else gdal_env(ref):
                with rasterio.Env(**gdalio.fresh_read(path, n)):
                    kwargs = {} if level is None else {"overview_level": level}
                    with rasterio.open(path, **kwargs) as src:
                        log.debug("window read of %s (level %s)", _shown(path), level)
                        return work(src)

    def again(exc: BaseException) -> bool:
        if not isinstance(exc, RasterioIOError):
            return False
        if gdalio.http_status(exc) in (401, 403) and ref.mode == HTTPS and not renew["done"]:
            renew["done"] = True  # the token ran out between reads, or the transfer link expired: renew once
            renew["token"] = ref.token(refresh=True)
            return True
        return gdalio.transient(exc)

    try:
        return gdalio.retrying(attempt, attempts=4, retry_if=again, what=f"window read of {_shown(path)}")
    except RasterioIOError as exc:
        where = "CDSE S3" if path.startswith("/vsis3/") else "CDSE HTTPS"
        raise ServiceError("cdse", gdalio.http_status(exc), f"{where} read of {_shown(path)} failed: "
                           f"{gdalio.message(exc)[:300]}") from None


def _count_tiles(src: Any, block: Block) -> None:
    """Add the compressed bytes of the internal tiles under the block to :func:`stats` (from the TIFF tags)."""
    try:
        bh, bw = src.block_shapes[0]
        row, col, h, w = block.window
        total = 0
        for r in range(row // bh, (row + h - 1) // bh + 1):
            for c in range(col // bw, (col + w - 1) // bw + 1):
                total += int(src.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=1) or 0)
    except Exception:  # noqa: BLE001 - statistics only
        total = 0
    with _STATS_LOCK:
        _STATS["remote_reads"] += 1
        _STATS["tile_bytes"] += total


def kept_key(key: str, window: tuple[int, int, int, int], level: int | None) -> str:
    """The store key of a kept window: the product key plus the pixel window (and overview level)."""
    from ..store.fsutil import safe_name

    row, col, h, w = window
    return safe_name(f"{key}.w{row}-{col}-{h}x{w}" + ("" if level is None else f"-o{level}"), 200)


def _keep(block: Block, data: np.ndarray) -> None:
    """Write a block read remotely into the store as a small GeoTIFF product (best effort: never fails the read)."""
    import rasterio
    from affine import Affine

    from ..store import FileRecord, ProductRecord, Store
    from ..store.products import hash_file

    keep = block.keep
    assert keep is not None
    try:
        store = Store(keep.store)
        if store.products.path(keep.key).is_dir() and _kept_file(store, keep.key) is not None:
            return  # kept already (a damaged copy is replaced: see ProductStore.put)
        staging = store.products.new_staging(keep.key)
        try:
            (staging / "data").mkdir()
            target = staging / "data" / KEPT_FILE
            m = block.meta
            row, col, h, w = block.window
            transform = Affine(*m["transform"]) @ Affine.translation(col, row)
            tiled = h >= 256 and w >= 256
            with rasterio.Env(GDAL_PAM_ENABLED="NO"):
                with rasterio.open(target, "w", driver="GTiff", width=w, height=h, count=1, dtype=data.dtype,
                                   crs=m.get("crs"), transform=transform, nodata=m.get("nodata"), compress="DEFLATE",
                                   tiled=tiled, **({"blockxsize": 256, "blockysize": 256} if tiled else {})) as dst:
                    dst.write(data, 1)
                    dst.scales, dst.offsets = (m.get("scale", 1.0),), (m.get("offset", 0.0),)
                    if m.get("name"):
                        dst.set_band_description(1, m["name"])
            rec = ProductRecord(
                key=keep.key, name=keep.name, service="cdse", start=keep.start, end=keep.end,
                files=(FileRecord(path=f"data/{KEPT_FILE}", size=target.stat().st_size, hashes=hash_file(target),
                                  role="data", kind="geotiff"),),
                payload={"window": {"row": row, "col": col, "height": h, "width": w, "level": block.level},
                         "source": _shown(block.path)},
                published=__import__("time").time())
            store.products.put(staging, rec)
        except BaseException:
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
            raise
    except Exception as exc:  # noqa: BLE001 - keeping is an optimisation: the pixels are returned anyway
        log.debug("window of %s not kept in %s (%s)", _shown(block.path), keep.store, type(exc).__name__)


# --------------------------------------------------------------------------- the dataset


def pixel_window(width: int, height: int, transform: Any, crs: str | None,
                 bbox: Sequence[float]) -> tuple[int, int, int, int]:
    """(row, col, height, width) of the grid's pixels under a lon/lat bbox."""
    from rasterio.warp import transform_bounds

    from .mosaic import _window

    box = tuple(bbox)
    if crs and crs.upper() not in ("EPSG:4326", "OGC:CRS84"):
        box = transform_bounds("EPSG:4326", crs, *box, densify_pts=21)
    row0, col0, row1, col1 = _window(transform, width, height, box)
    if row1 <= row0 or col1 <= col0:
        raise IntegrityError(f"the bbox {list(bbox)} lies outside the products' grid")
    return row0, col0, row1 - row0, col1 - col0


def _splits(start: int, length: int, step: int) -> tuple[int, ...]:
    """Chunk lengths covering [start, start+length) with edges on multiples of ``step`` (absolute pixels)."""
    out, pos, end = [], start, start + length
    while pos < end:
        nxt = min(end, (pos // step + 1) * step)
        out.append(nxt - pos)
        pos = nxt
    return tuple(out)


def _chunking(window: tuple[int, int, int, int], block: tuple[int, int], chunks: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    row, col, h, w = window
    if isinstance(chunks, Mapping) and (chunks.get("y") or chunks.get("x")):
        ys, xs = int(chunks.get("y") or h), int(chunks.get("x") or w)
        return _splits(0, h, max(1, ys)), _splits(0, w, max(1, xs))
    if isinstance(chunks, int) and not isinstance(chunks, bool) and chunks > 0:
        return _splits(0, h, chunks), _splits(0, w, chunks)
    bh, bw = block
    return (_splits(row, h, bh * max(1, BLOCK_TARGET // bh)), _splits(col, w, bw * max(1, BLOCK_TARGET // bw)))


def open_remote(products: Sequence[Any], bbox: Sequence[float], *, chunks: Any = None, overview_level: int | None = None,
                store: Any = None, keep: bool = True, ref: Any = None) -> xr.Dataset:
    """The request's remote products as one lazy ``(time, y, x)`` Dataset per file band; no network.

    ``products``: the view's products (``.key``, ``.name``, ``.start``, ``.end``, ``.remote`` with its
    ``grid``).  Blocks already kept in ``store`` are read from disk; the others through ``ref``
    (a :class:`~intake_clms.services.cdse.s3.CredentialRef`; default: S3 if keys are at hand, else HTTPS)
    and, with ``keep``, kept after their read.
    """
    import dask.array as da
    import rioxarray  # noqa: F401  (registers .rio)
    from affine import Affine
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    from ..services.cdse.s3 import CredentialRef, mode, vsi_path
    from .mosaic import parse_time

    if not products:
        raise IntegrityError("the view names no remote product")
    ref = ref or CredentialRef(mode())
    grids = [[Grid.from_json(g) for g in (p.remote.get("grid") or [])] for p in products]
    if any(not g for g in grids):
        raise IntegrityError("a remote product of the view has no grid; open the request again to rebuild its view")
    nfiles = len(grids[0])
    first = grids[0]
    times = [parse_time(p.start) for p in products]
    data_vars: dict[str, xr.DataArray] = {}
    for b in range(nfiles):
        g0 = first[b]
        width, height, transform, blocksize = g0.level(overview_level)
        window = pixel_window(width, height, transform, g0.crs, bbox)
        row, col, h, w = window
        ych, xch = _chunking(window, blocksize, chunks)
        name = f"window-{tokenize([p.key for p in products], b, window, overview_level, ych, xch, ref.mode, keep)}"
        graph: dict[Any, Any] = {}
        for t, p in enumerate(products):
            g = grids[t][b] if b < len(grids[t]) else g0
            if (g.width, g.height, g.dtype) != (g0.width, g0.height, g0.dtype):
                raise IntegrityError(f"{p.name}: its grid ({g.width} x {g.height} {g.dtype}) differs from "
                                     f"{products[0].name}'s ({g0.width} x {g0.height} {g0.dtype})")
            path = vsi_path(_files(p.remote)[b], ref.mode)
            meta = {"transform": tuple(transform)[:6], "crs": g0.crs, "nodata": g0.nodata, "scale": g0.scale,
                    "offset": g0.offset, "name": g0.name}
            y0 = row
            for i, hh in enumerate(ych):
                x0 = col
                for j, ww in enumerate(xch):
                    win = (y0, x0, hh, ww)
                    key = kept_key(p.key if nfiles == 1 else f"{p.key}.b{b}", win, overview_level)
                    kept = _kept_file(store, key)
                    if kept is not None:
                        blk = Block(str(kept), win, g0.dtype, overview_level)
                    else:
                        target = (Keep(str(store.base), key, f"{p.name} window {win}", p.start, p.end)
                                  if keep and store is not None else None)
                        blk = Block(path, win, g0.dtype, overview_level, ref=ref, grid=(width, height, tuple(transform)[:6]),
                                    keep=target, meta=meta)
                    graph[(name, t, i, j)] = (read_block, blk)
                    x0 += ww
                y0 += hh
        hlg = HighLevelGraph.from_collections(name, graph, dependencies=())
        arr = da.Array(hlg, name, chunks=((1,) * len(products), ych, xch), dtype=np.dtype(g0.dtype),
                       meta=np.empty((0, 0, 0), dtype=g0.dtype))
        win_t = transform @ Affine.translation(col, row)
        coords = {"time": np.array(times, dtype="datetime64[ns]"),
                  "y": transform.f + (np.arange(row, row + h) + 0.5) * transform.e,
                  "x": transform.c + (np.arange(col, col + w) + 0.5) * transform.a}
        var = g0.name if nfiles > 1 and g0.name else "band_data"
        da_ = xr.DataArray(arr, dims=("time", "y", "x"), coords=coords, name=var)
        if g0.scale != 1.0 or g0.offset != 0.0:
            da_.attrs.update(scale_factor=g0.scale, add_offset=g0.offset)
        if g0.units:
            da_.attrs["units"] = g0.units
        if g0.crs:
            da_ = da_.rio.write_crs(g0.crs)
        da_ = da_.rio.write_transform(win_t)
        if g0.nodata is not None:
            da_ = da_.rio.write_nodata(np.array(g0.nodata).astype(g0.dtype)[()], encoded=False)
        data_vars[var] = da_
    ds = xr.Dataset(data_vars)
    ds.attrs["source"] = "remote COG windows (CDSE)"
    return ds


def _kept_file(store: Any, key: str) -> Path | None:
    if store is None:
        return None
    try:
        rec = store.products.check(key)
    except ClmsError:
        return None  # damaged: read it remotely again (the new copy loses to nothing: put keeps the first)
    if rec is None or not rec.data():
        return None
    return store.products.path(key) / rec.data()[0].path


def kept_keys(products: Sequence[Any], bbox: Sequence[float], chunks: Any = None,
              overview_level: int | None = None) -> list[str]:
    """The store keys the blocks of these products would be kept under (for cache bookkeeping)."""
    keys = []
    for p in products:
        grids = [Grid.from_json(g) for g in (p.remote.get("grid") or [])]
        for b, g in enumerate(grids):
            width, height, transform, blocksize = g.level(overview_level)
            window = pixel_window(width, height, transform, g.crs, bbox)
            ych, xch = _chunking(window, blocksize, chunks)
            y0 = window[0]
            for hh in ych:
                x0 = window[1]
                for ww in xch:
                    keys.append(kept_key(p.key if len(grids) == 1 else f"{p.key}.b{b}", (y0, x0, hh, ww), overview_level))
                    x0 += ww
                y0 += hh
    return keys


__all__ = ["Block", "Grid", "Keep", "describe", "kept_key", "kept_keys", "open_remote", "read_block", "stats"]
