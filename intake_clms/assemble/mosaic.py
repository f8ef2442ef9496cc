"""Lazy mosaics of GeoTIFF tiles, placed by their geotransforms (never by file names).

Why not just ``rioxarray.open_rasterio`` on a GDAL VRT: with GDAL 3.10 a VRT read
whose source tile is missing, unreadable or corrupt does *not* fail: GDAL prints
an error and fills the area with nodata, so a damaged cache would silently yield
holes.  So the mosaic is read by our own small dask reader, which opens only the
tiles under each chunk and raises :class:`IntegrityError` naming the tile.

The VRT is still written, beside the tiles, with paths relative to itself (the
cache folder can move): it is the product's mosaic index (reopening reads one
small XML file instead of every tile's header) and lets GDAL tools (QGIS,
``gdalinfo``) open the cached product as one raster.

Steps: :func:`read_tile` reads one header; :func:`plan` checks that CRS,
resolution, dtype, band count and nodata agree and that the tiles sit on one
pixel grid, and places them; :func:`vrt_xml` / :func:`write_vrt` /
:func:`read_vrt` write and read the index; :func:`open_mosaic` does all of it
for one date's tiles (reusing the index when present); :func:`stack` crops
several dates to a bbox window on their common grid and stacks them lazily.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import IntegrityError
from . import grid, raster

log = logging.getLogger(__name__)

#: Resolutions agree when they differ by less than this fraction.
RES_TOLERANCE = 1e-6
#: A tile is on the common grid when its origin is within this fraction of a pixel of a grid node.
ALIGN_TOLERANCE = 0.01
#: Default chunks are the tiles themselves; tiles bigger than about this many bytes are split.
CHUNK_BYTES = 16 * 2**20
#: Marks VRTs written by this module (and their layout version) so :func:`read_vrt` trusts only those.
VRT_MARK = "intake_clms_mosaic"
VRT_VERSION = "2"  # 2: the band's name, packing and CF tags
#: Faster opens: no directory listing to look for side-car files (.aux.xml, .ovr) we never use.
_GDAL_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}

_GDAL_TYPES = {
    "uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
    "uint64": "UInt64", "int64": "Int64", "float32": "Float32", "float64": "Float64",
}
_NUMPY_TYPES = {v: k for k, v in _GDAL_TYPES.items()}


# --------------------------------------------------------------------------- headers


@dataclass(frozen=True)
class TileInfo:
    """What a tile's header says (no pixel read)."""

    path: Path
    crs: Any  # rasterio.crs.CRS or None
    transform: Any  # affine.Affine
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    block: tuple[int, int]  # (rows, cols) of one internal block
    band: raster.Band = raster.Band()  # the first band's name, packing and CF attributes


def read_tile(path: str | os.PathLike[str]) -> TileInfo:
    """Read one tile's header only (CRS, geotransform, size, bands, dtype, nodata, block size)."""
    import rasterio

    with rasterio.Env(**_GDAL_ENV):
        return _read_tile(Path(path))


def read_tiles(paths: Sequence[str | os.PathLike[str]]) -> list[TileInfo]:
    """Read many tiles' headers (one GDAL environment for all: cheaper than one per tile)."""
    import rasterio

    with rasterio.Env(**_GDAL_ENV):
        return [_read_tile(Path(p)) for p in paths]


def _read_tile(path: Path) -> TileInfo:
    import rasterio

    try:
        with rasterio.open(path) as ds:
            dtypes = set(ds.dtypes)
            if len(dtypes) > 1:
                raise IntegrityError(f"tile {path.name!r} mixes band dtypes {sorted(dtypes)}; cannot mosaic it")
            return TileInfo(path, ds.crs, ds.transform, ds.width, ds.height, ds.count, ds.dtypes[0],
                            ds.nodata, tuple(ds.block_shapes[0]), raster.band_of(ds))  # type: ignore[arg-type]
    except IntegrityError:
        raise
    except Exception as exc:  # rasterio errors, OSError
        raise IntegrityError(f"cannot read the header of tile {str(path)!r}: {exc}") from exc


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Placed:
    """One tile placed on the mosaic grid: pixel offsets of its upper-left corner, its size."""

    path: Path
    col: int
    row: int
    width: int
    height: int
    block: tuple[int, int]


@dataclass(frozen=True)
class Mosaic:
    """Tiles on one pixel grid: the union extent, its georeferencing, and each tile's place."""

    crs: Any
    transform: Any  # of the union's upper-left pixel
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    block: tuple[int, int]
    tiles: tuple[Placed, ...]
    overlapping: bool  # some tiles overlap: their nodata pixels must not hide the others' data
    vrt: Path | None = None  # the index file, when there is one
    band: raster.Band = raster.Band()  # the first band's name, packing and CF attributes (shared by the tiles)

    @property
    def res(self) -> tuple[float, float]:
        return float(self.transform.a), float(-self.transform.e)

    def bounds(self) -> tuple[float, float, float, float]:
        """left, bottom, right, top in the mosaic's CRS."""
        t = self.transform
        return t.c, t.f + self.height * t.e, t.c + self.width * t.a, t.f


def _name(path: Path) -> str:
    return path.name


def _same_nodata(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a == b or (math.isnan(a) and math.isnan(b))


def _check_geometry(info: TileInfo) -> None:
    if info.crs is None:
        raise IntegrityError(f"tile {_name(info.path)!r} has no CRS; cannot place it in a mosaic")
    t = info.transform
    if t.b != 0 or t.d != 0:
        raise IntegrityError(f"tile {_name(info.path)!r} has a rotated geotransform {tuple(t)[:6]}; cannot mosaic it")
    if not (t.a > 0 and t.e < 0):
        raise IntegrityError(f"tile {_name(info.path)!r} is not north-up (pixel size {t.a}, {t.e}); cannot mosaic it")


def check_compatible(ref: TileInfo | Mosaic, other: TileInfo | Mosaic, ref_name: str, other_name: str,
                     res_tolerance: float = RES_TOLERANCE) -> None:
    """Raise :class:`IntegrityError` unless two tiles (or mosaics) share CRS, resolution, dtype, bands, nodata."""

    def fail(what: str, a: Any, b: Any) -> None:
        raise IntegrityError(f"{other_name} has {what} {b} where {ref_name} has {a}: "
                             f"the tiles of one mosaic must share their {what}")

    if ref.crs != other.crs:
        fail("CRS", ref.crs.to_string() if ref.crs else None, other.crs.to_string() if other.crs else None)
    ra, re_ = float(ref.transform.a), float(-ref.transform.e)
    oa, oe = float(other.transform.a), float(-other.transform.e)
    if abs(oa - ra) > res_tolerance * ra or abs(oe - re_) > res_tolerance * re_:
        fail("resolution", (ra, re_), (oa, oe))
    if ref.dtype != other.dtype:
        fail("dtype", ref.dtype, other.dtype)
    if ref.count != other.count:
        fail("band count", ref.count, other.count)
    if not _same_nodata(ref.nodata, other.nodata):
        fail("nodata value", ref.nodata, other.nodata)
    if (ref.band.scale, ref.band.offset) != (other.band.scale, other.band.offset):
        fail("scale and offset", (ref.band.scale, ref.band.offset), (other.band.scale, other.band.offset))


def _grid_offset(origin: float, ref_origin: float, res: float, who: str, axis: str,
                 tolerance: float = ALIGN_TOLERANCE) -> int:
    """Whole pixels between two origins; raise when they are not on one grid."""
    steps = (origin - ref_origin) / res
    whole = round(steps)
    if abs(steps - whole) > tolerance:
        raise IntegrityError(
            f"{who} is not aligned on the mosaic's pixel grid: its {axis} origin {origin!r} is "
            f"{abs(steps - whole):.3f} pixel off the grid through {ref_origin!r} (pixel size {res!r}); "
            f"cannot mosaic without resampling"
        )
    return int(whole)


def plan(infos: Sequence[TileInfo], *, res_tolerance: float = RES_TOLERANCE,
         align_tolerance: float = ALIGN_TOLERANCE) -> Mosaic:
    """Check the tiles agree and sit on one pixel grid, and place them by their geotransforms."""
    from affine import Affine

    if not infos:
        raise IntegrityError("no tile to mosaic")
    infos = sorted(infos, key=lambda i: (-i.transform.f, i.transform.c, str(i.path)))  # by place, never by name
    for info in infos:
        _check_geometry(info)
    # The reference is what most tiles share, so the error names the odd tile, not an innocent one.
    ref = _majority(infos, lambda i: (i.crs.to_wkt() if i.crs else None, f"{i.transform.a:.6g}",
                                      f"{i.transform.e:.6g}", i.dtype, i.count, repr(i.nodata)))
    for info in infos:
        check_compatible(ref, info, f"tile {_name(ref.path)!r}", f"tile {_name(info.path)!r}", res_tolerance)
    ref = _majority(infos, lambda i: (_phase(i.transform.c, ref.transform.c, ref.transform.a),
                                      _phase(i.transform.f, ref.transform.f, ref.transform.e)))
    a, e = float(ref.transform.a), float(ref.transform.e)
    offsets = []
    for info in infos:
        col = _grid_offset(info.transform.c, ref.transform.c, a, f"tile {_name(info.path)!r}", "x", align_tolerance)
        row = _grid_offset(info.transform.f, ref.transform.f, e, f"tile {_name(info.path)!r}", "y", align_tolerance)
        offsets.append((col, row))
    col0 = min(c for c, _ in offsets)
    row0 = min(r for _, r in offsets)
    placed = tuple(
        Placed(info.path, col - col0, row - row0, info.width, info.height, info.block)
        for info, (col, row) in zip(infos, offsets)
    )
    width = max(p.col + p.width for p in placed)
    height = max(p.row + p.height for p in placed)
    transform = Affine(a, 0.0, ref.transform.c + col0 * a, 0.0, e, ref.transform.f + row0 * e)
    return Mosaic(ref.crs, transform, width, height, ref.count, ref.dtype, ref.nodata, ref.block, placed,
                  _overlap(placed), band=ref.band)


def _majority(infos: Sequence[TileInfo], key: Any) -> TileInfo:
    """The first tile among those sharing the most common ``key``."""
    counts: dict[Any, int] = {}
    for info in infos:
        counts[key(info)] = counts.get(key(info), 0) + 1
    best = max(counts.values())
    return next(i for i in infos if counts[key(i)] == best)


def _phase(origin: float, ref_origin: float, res: float) -> float:
    """Where an origin falls between two grid nodes (in pixels, -0.5..0.5, rounded): 0 when aligned."""
    steps = (origin - ref_origin) / res
    return round(steps - round(steps), 2) + 0.0


def _overlap(tiles: Sequence[Placed]) -> bool:
    boxes = sorted((p.row, p.col, p.row + p.height, p.col + p.width) for p in tiles)
    for i, (r0, c0, r1, c1) in enumerate(boxes):
        for s0, d0, s1, d1 in boxes[i + 1:]:
            if s0 >= r1:
                break
            if d0 < c1 and c0 < d1:
                return True
    return False


# --------------------------------------------------------------------------- the VRT index


def _fmt(value: float) -> str:
    return repr(float(value))


def vrt_xml(mosaic: Mosaic, base: Path | None = None) -> str:
    """The mosaic as GDAL VRT XML; tile paths relative to ``base`` (the VRT's folder), else absolute."""
    gdal_type = _GDAL_TYPES.get(mosaic.dtype)
    if gdal_type is None:
        raise IntegrityError(f"dtype {mosaic.dtype} has no GDAL VRT equivalent")
    root = ET.Element("VRTDataset", rasterXSize=str(mosaic.width), rasterYSize=str(mosaic.height))
    if mosaic.crs is not None:
        srs = ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="2,1" if mosaic.crs.is_geographic else "1,2")
        srs.text = mosaic.crs.to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(_fmt(v) for v in mosaic.transform.to_gdal())
    md = ET.SubElement(root, "Metadata")
    ET.SubElement(md, "MDI", key=VRT_MARK).text = VRT_VERSION
    by, bx = mosaic.block
    for band in range(1, mosaic.count + 1):
        vband = ET.SubElement(root, "VRTRasterBand", dataType=gdal_type, band=str(band),
                              blockXSize=str(bx), blockYSize=str(by))
        if mosaic.nodata is not None:
            ET.SubElement(vband, "NoDataValue").text = _fmt(mosaic.nodata)
        if band == 1:
            _band_xml(vband, mosaic.band)
        for tile in mosaic.tiles:
            # ComplexSource + NODATA only when tiles overlap (slower, but a tile's nodata must not hide data).
            complex_ = mosaic.overlapping and mosaic.nodata is not None
            src = ET.SubElement(vband, "ComplexSource" if complex_ else "SimpleSource")
            if base is not None:
                name = ET.SubElement(src, "SourceFilename", relativeToVRT="1")
                name.text = Path(os.path.relpath(tile.path, base)).as_posix()
            else:
                name = ET.SubElement(src, "SourceFilename", relativeToVRT="0")
                name.text = str(Path(tile.path).resolve())
            ET.SubElement(src, "SourceBand").text = str(band)
            ET.SubElement(src, "SourceProperties", RasterXSize=str(tile.width), RasterYSize=str(tile.height),
                          DataType=gdal_type, BlockXSize=str(tile.block[1]), BlockYSize=str(tile.block[0]))
            ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(tile.width), ySize=str(tile.height))
            ET.SubElement(src, "DstRect", xOff=str(tile.col), yOff=str(tile.row),
                          xSize=str(tile.width), ySize=str(tile.height))
            if complex_:
                ET.SubElement(src, "NODATA").text = _fmt(mosaic.nodata)  # type: ignore[arg-type]
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _band_xml(vband: ET.Element, band: raster.Band) -> None:
    """The band's name, packing and CF tags, as GDAL writes them in a VRT (``gdalinfo`` shows them too)."""
    if band.name:
        ET.SubElement(vband, "Description").text = band.name
    if band.attrs.get("units"):
        ET.SubElement(vband, "UnitType").text = str(band.attrs["units"])
    ET.SubElement(vband, "Offset").text = _fmt(band.offset)
    ET.SubElement(vband, "Scale").text = _fmt(band.scale)
    tags = {k: v for k, v in band.attrs.items() if k != "units"}
    if tags:
        md = ET.SubElement(vband, "Metadata")
        for key, value in sorted(tags.items()):
            ET.SubElement(md, "MDI", key=key).text = str(value)


def _band_from_xml(vband: ET.Element) -> raster.Band:
    attrs: dict[str, Any] = {m.get("key"): m.text or "" for m in vband.iterfind("Metadata/MDI")}
    if vband.findtext("UnitType"):
        attrs["units"] = vband.findtext("UnitType")
    return raster.Band(name=vband.findtext("Description") or "", scale=float(vband.findtext("Scale") or 1.0),
                       offset=float(vband.findtext("Offset") or 0.0), attrs=attrs)


def write_vrt(mosaic: Mosaic, path: str | os.PathLike[str]) -> Mosaic:
    """Write the VRT atomically (temp file + rename: readers never see half a file), paths relative to it."""
    path = Path(path)
    text = vrt_xml(mosaic, base=path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return replace(mosaic, vrt=path)


def read_vrt(path: str | os.PathLike[str]) -> Mosaic:
    """Read back a VRT written by :func:`write_vrt` (no tile is opened); anything else is refused."""
    from affine import Affine
    from rasterio.crs import CRS

    path = Path(path)
    try:
        root = ET.parse(path).getroot()
        marks = {m.get("key"): m.text for m in root.iterfind("Metadata/MDI")}
        if marks.get(VRT_MARK) != VRT_VERSION:
            raise ValueError(f"not written by this version of {__name__}")
        srs = root.find("SRS")
        crs = CRS.from_wkt(srs.text) if srs is not None and srs.text else None
        gt = [float(v) for v in root.findtext("GeoTransform", "").split(",")]
        transform = Affine.from_gdal(*gt)
        bands = root.findall("VRTRasterBand")
        first = bands[0]
        dtype = _NUMPY_TYPES[first.get("dataType", "")]
        nodata_text = first.findtext("NoDataValue")
        nodata = float(nodata_text) if nodata_text is not None else None
        block = (int(first.get("blockYSize", "256")), int(first.get("blockXSize", "256")))
        tiles = []
        for src in list(first):
            if src.tag not in ("SimpleSource", "ComplexSource"):
                continue
            fn = src.find("SourceFilename")
            assert fn is not None and fn.text
            tile_path = path.parent / fn.text if fn.get("relativeToVRT") == "1" else Path(fn.text)
            props = src.find("SourceProperties")
            dst = src.find("DstRect")
            assert props is not None and dst is not None
            tiles.append(Placed(tile_path, int(dst.get("xOff", "")), int(dst.get("yOff", "")),
                                int(props.get("RasterXSize", "")), int(props.get("RasterYSize", "")),
                                (int(props.get("BlockYSize", "")), int(props.get("BlockXSize", "")))))
        return Mosaic(crs, transform, int(root.get("rasterXSize", "")), int(root.get("rasterYSize", "")),
                      len(bands), dtype, nodata, block, tuple(tiles), _overlap(tiles), path, _band_from_xml(first))
    except Exception as exc:
        raise IntegrityError(f"cannot read the mosaic index {str(path)!r}: {exc}") from exc


def _index_name(paths: Sequence[Path], base: Path, label: str) -> str:
    """A VRT name bound to the exact tile set (relative paths and sizes): another set never reuses it."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda q: os.path.relpath(q, base)):
        try:
            size = p.stat().st_size
        except OSError as exc:
            raise IntegrityError(f"tile {str(p)!r} of the product is missing or unreadable: {exc}") from exc
        h.update(f"{Path(os.path.relpath(p, base)).as_posix()}\0{size}\n".encode())
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in label)[:40] or "mosaic"
    return f"mosaic-{safe}-{h.hexdigest()[:12]}.vrt"


def open_mosaic(paths: Sequence[str | os.PathLike[str]], label: str = "static", *, write: bool = True,
                index_dir: str | os.PathLike[str] | None = None) -> Mosaic:
    """The mosaic of one date's tiles: reuse its VRT index, else read headers, check, write it.

    The index goes in ``index_dir`` (a request's view folder), else the tiles' common folder;
    if that folder is read-only the mosaic is simply kept in memory (nothing is lost but the
    faster reopen).
    """
    files = [Path(p) for p in paths]
    if not files:
        raise IntegrityError("no tile to mosaic")
    base = Path(os.path.commonpath([str(p.resolve().parent) for p in files]))
    files = [p.resolve() for p in files]
    index = (Path(index_dir) if index_dir is not None else base) / _index_name(files, base, label)
    if index.is_file():
        try:
            return read_vrt(index)
        except IntegrityError as exc:  # unreadable index: rebuild it from the tiles
            log.warning("%s; rebuilding it from the tiles", exc)
    mosaic = plan(read_tiles(files))
    if not write:
        return mosaic
    try:
        return write_vrt(mosaic, index)
    except OSError as exc:
        log.debug("cannot write the mosaic index %s (%s); keeping it in memory", index, exc)
        return mosaic


# --------------------------------------------------------------------------- lazy reading


class _Reader:
    """A numpy-like view of a window of a mosaic; ``reader[band, rows, cols]`` opens only the tiles under it."""

    def __init__(self, mosaic: Mosaic, row0: int, col0: int, height: int, width: int, on_damage: Any = None):
        self.mosaic = mosaic
        self.on_damage = on_damage  # what a tile's read error means (:mod:`.damage`)
        self.row0, self.col0 = row0, col0  # window origin in the mosaic's pixels (may lie outside it)
        self.shape = (mosaic.count, height, width)
        self.dtype = np.dtype(mosaic.dtype)
        self.ndim = 3

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        from rasterio.windows import Window

        (b0, b1, _), (r0, r1, _), (c0, c1, _) = (k.indices(n) for k, n in zip(key, self.shape))
        shape = (b1 - b0, r1 - r0, c1 - c0)
        top, left = self.row0 + r0, self.col0 + c0  # the request in mosaic pixels
        bottom, right = self.row0 + r1, self.col0 + c1
        parts = []
        for tile in self.mosaic.tiles:
            t0, t1 = max(top, tile.row), min(bottom, tile.row + tile.height)
            s0, s1 = max(left, tile.col), min(right, tile.col + tile.width)
            if t0 < t1 and s0 < s1:
                parts.append((tile, Window(s0 - tile.col, t0 - tile.row, s1 - s0, t1 - t0), t0 - top, s0 - left))
        indexes = list(range(b0 + 1, b1 + 1))
        if len(parts) == 1 and parts[0][1].height == shape[1] and parts[0][1].width == shape[2]:
            out = np.empty(shape, dtype=self.dtype)  # one tile covers the chunk (the usual case): read in place
            self._read(parts[0][0], indexes, parts[0][1], out)
            return out
        fill = self.mosaic.nodata if self.mosaic.nodata is not None else 0
        out = np.full(shape, fill, dtype=self.dtype)
        for tile, window, dr, dc in parts:
            data = self._read(tile, indexes, window, None)
            target = out[:, dr:dr + data.shape[1], dc:dc + data.shape[2]]
            if self.mosaic.overlapping and self.mosaic.nodata is not None:
                np.copyto(target, data, where=~_is_nodata(data, self.mosaic.nodata))
            else:
                target[...] = data
        return out

    def _read(self, tile: Placed, indexes: list[int], window: Any, out: np.ndarray | None) -> np.ndarray:
        """One tile's window through the one raster reader; any failure is an :class:`IntegrityError` naming
        the tile (never silent nodata)."""
        src = raster.RasterSource(str(tile.path), name=str(tile.path), on_damage=self.on_damage)

        def work(ds: Any) -> np.ndarray:
            if (ds.width, ds.height, ds.count, ds.dtypes[0]) != (
                    tile.width, tile.height, self.mosaic.count, self.mosaic.dtype):
                raise IntegrityError(
                    f"tile {str(tile.path)!r} changed since the mosaic was built: now "
                    f"{ds.width}x{ds.height}x{ds.count} {ds.dtypes[0]}, expected "
                    f"{tile.width}x{tile.height}x{self.mosaic.count} {self.mosaic.dtype}")
            return ds.read(indexes, window=window, out=out)

        return raster.using(src, work)


def _is_nodata(data: np.ndarray, nodata: float) -> np.ndarray:
    return np.isnan(data) if isinstance(nodata, float) and math.isnan(nodata) else data == nodata


def _axis_chunks(edges: Sequence[int], start: int, stop: int, target: int, block: int) -> tuple[int, ...]:
    """Chunk sizes over [start, stop) that break at every tile edge and split big tiles.

    Small tiles are not merged: a chunk then never needs a tile outside the window read.
    """
    cuts = sorted({start, stop, *(e for e in edges if start < e < stop)})
    pieces: list[int] = []
    for a, b in zip(cuts, cuts[1:]):
        n = b - a
        if n > target:  # a big tile: split in about equal parts, block multiples
            parts = math.ceil(n / target)
            step = max(block, math.ceil(n / parts / block) * block)
            pieces.extend([step] * (n // step))
            if n % step:
                pieces.append(n % step)
        else:
            pieces.append(n)
    return tuple(pieces) or (0,)


def _default_chunks(mosaics: Sequence[Mosaic], shifts: Sequence[tuple[int, int]], row0: int, col0: int,
                    height: int, width: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """One chunk per tile (per piece of a big tile) of every date: a chunk never needs a tile it only grazes."""
    itemsize = np.dtype(mosaics[0].dtype).itemsize * mosaics[0].count
    target = max(256, int(math.sqrt(CHUNK_BYTES / itemsize)))
    ys, xs = set(), set()
    for m, (dr, dc) in zip(mosaics, shifts):
        for t in m.tiles:
            ys.update((t.row + dr - row0, t.row + t.height + dr - row0))
            xs.update((t.col + dc - col0, t.col + t.width + dc - col0))
    by, bx = mosaics[0].block
    return _axis_chunks(sorted(ys), 0, height, target, by), _axis_chunks(sorted(xs), 0, width, target, bx)


def _user_chunks(chunks: Any, dims: Sequence[str]) -> Any:
    """Map an xarray-style chunks argument (dict by dim name, int, tuple) to dask chunks, or None for default."""
    if chunks is None or chunks is True or chunks == "auto" or chunks == {}:
        return None
    if isinstance(chunks, Mapping):
        alias = {"y": "lat", "x": "lon"}  # the contract's names of a geographic grid's dimensions
        return tuple(chunks.get(d, chunks.get(alias.get(d, d), -1 if d == "band" else "auto")) for d in dims)
    return chunks


def stack(groups: Sequence[tuple[np.datetime64 | None, Mosaic]], bbox: Sequence[float] | None = None,
          chunks: Any = None, name: str = "band_data", on_damage: Any = None) -> xr.DataArray:
    """Crop each date's mosaic to the lon/lat ``bbox`` on their common grid (:mod:`.grid`'s rule: the pixels
    whose centres lie in it), stack along ``time``; raw values, the CRS and packing left to the contract.

    Every date shares one pixel grid (checked: CRS, resolution, dtype, nodata, alignment), so the
    window is the same for all and a date missing a tile shows nodata there.  Nothing is read here;
    ``on_damage`` says what a tile's read error means when the pixels are (:mod:`.damage`).
    """
    import dask.array as da
    from affine import Affine
    from dask.base import tokenize

    if not groups:
        raise IntegrityError("no tile to mosaic")
    groups = sorted(groups, key=lambda g: (g[0] is not None, g[0] if g[0] is not None else np.datetime64(0, "ns")))
    times = [t for t, _ in groups]
    if any(t is None for t in times) and len(groups) > 1:
        raise IntegrityError("some tiles have a date and others none; cannot stack them along time")
    mosaics = [m for _, m in groups]
    ref = mosaics[0]
    a, e = ref.transform.a, ref.transform.e
    shifts: list[tuple[int, int]] = []
    names = [f"the mosaic of {'the product' if t is None else str(t)[:19]} ({len(m.tiles)} tiles from "
             f"{_name(m.tiles[0].path)!r})" for t, m in groups]
    for m, who in zip(mosaics, names):
        check_compatible(ref, m, names[0], who)
        shifts.append((_grid_offset(m.transform.f, ref.transform.f, e, who, "y"),
                       _grid_offset(m.transform.c, ref.transform.c, a, who, "x")))
    top = min(r for r, _ in shifts)
    left = min(c for _, c in shifts)
    shifts = [(r - top, c - left) for r, c in shifts]  # each date's place on the union grid
    union_h = max(r + m.height for m, (r, _) in zip(mosaics, shifts))
    union_w = max(c + m.width for m, (_, c) in zip(mosaics, shifts))
    union = Affine(a, 0.0, ref.transform.c + left * a, 0.0, e, ref.transform.f + top * e)
    extent = (union.c, union.f + union_h * e, union.c + union_w * a, union.f)
    box = grid.bbox_in(ref.crs, bbox, extent)
    row0, col0, height, width = grid.centre_window(union, union_w, union_h, box)
    if height == 0 or width == 0:
        raise IntegrityError(f"no pixel of the tiles lies in the requested bbox {list(bbox or [])}; "
                             f"the tiles cover {[round(v, 6) for v in extent]} in {ref.crs}")
    dims = ("band", "y", "x")
    user = _user_chunks(chunks, dims)
    if user is None:
        ych, xch = _default_chunks(mosaics, shifts, row0, col0, height, width)
        dask_chunks: Any = ((ref.count,), ych, xch)
    else:
        dask_chunks = user
    layers = []
    for m, (dr, dc) in zip(mosaics, shifts):
        reader = _Reader(m, row0 - dr, col0 - dc, height, width, on_damage)
        token = tokenize([(str(t.path), t.row, t.col) for t in m.tiles], str(m.vrt), row0 - dr, col0 - dc,
                         height, width, m.dtype, m.nodata, dask_chunks)  # the index name hashes the tile sizes
        layers.append(da.from_array(reader, chunks=dask_chunks, name=f"mosaic-{token}", lock=False, asarray=False,
                                    fancy=False, meta=np.empty((0, 0, 0), dtype=reader.dtype)))
    coords: dict[str, Any] = {} if times[0] is None else {"time": np.array(times, dtype="datetime64[ns]")}
    coords["band"] = np.arange(1, ref.count + 1)
    # Counted from the union's corner, so a pixel has the same coordinate in any crop of the product.
    coords["y"] = xr.DataArray(grid.centres(union.f, union.e, row0, height), dims="y", attrs={"step": union.e})
    coords["x"] = xr.DataArray(grid.centres(union.c, union.a, col0, width), dims="x", attrs={"step": union.a})
    if times[0] is None:
        data = xr.DataArray(layers[0], dims=dims, coords=coords, name=name)
    else:
        data = xr.DataArray(da.stack(layers, axis=0), dims=("time", *dims), coords=coords, name=name)
    if ref.count == 1:
        data = data.squeeze("band", drop=True)
    return data


def parse_time(value: str | None) -> np.datetime64 | None:
    """An ISO date/time (``2015``, ``2015-01-01``, ``...T00:00:00Z``) as naive UTC ``datetime64[ns]``."""
    import pandas as pd

    if value is None or value == "":
        return None
    try:
        ts = pd.Timestamp(str(value))
    except (ValueError, TypeError) as exc:
        raise IntegrityError(f"cannot read the date {value!r} of a tile (expected ISO 8601)") from exc
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return np.datetime64(ts.to_datetime64(), "ns")
