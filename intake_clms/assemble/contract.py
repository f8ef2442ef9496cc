"""What a request returns, whatever served it: the one function every raster path ends in.

One request has one answer: the same entry and arguments give the same Dataset whichever
service, access kind, cache state, export or dask worker served it.  Readers hand
:func:`normalise` the *stored integers* with their packing in the attributes (NetCDF
opened with ``mask_and_scale=False``, GeoTIFFs as read), already cropped by
:mod:`.grid`'s rule; this module makes the rest identical:

- **variables**: the product's own names (``NDVI``, ``LAI``, ...: a NetCDF's variables with
  both spatial dimensions); a GeoTIFF band is named by its description, else by
  :func:`variable_name` from its file name (``c_gls_NDVI300_...`` -> ``NDVI``,
  ``IMD_2018_010m_...`` -> ``IMD``, ``U2018_CLC2018_...`` -> ``CLC``), never ``band_data``;
- **dimensions**: ``time`` first, then ``lat``/``lon`` on a geographic grid or ``y``/``x`` on a
  projected one; pixel-centre coordinates (rounded to 1e-9 of a unit so both spellings of a
  grid agree); the product's own orientation;
- **values**: decoded by default (fill values -> NaN, then ``raw * scale_factor + add_offset``
  in float32 for 8- and 16-bit integers, float64 above), the packing kept in ``encoding`` so
  ``to_netcdf`` writes the integers back; ``decode=False`` returns the stored integers with
  ``scale_factor``, ``add_offset`` and ``_FillValue`` in the attributes, on every path;
- **time**: the product's nominal date (one step per product; a product holding several
  steps keeps its own);
- **CRS**: one CF grid-mapping variable ``spatial_ref`` (rioxarray's form) and the
  coordinates' CF attributes;
- **attributes**: the variable's CF attributes (units, long_name, standard_name, flags);
  the Dataset's are ``Conventions`` and the provenance (``clms_*``: entry, dataset,
  service, access, products), which differ between paths without changing anything else.
  No path of the cache ever shows in the data or its encoding.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from ..errors import IntegrityError
from . import grid

#: Variable attributes that are the product's meaning (kept); everything else is encoding or noise.
CF_ATTRS = ("units", "long_name", "standard_name", "flag_values", "flag_meanings", "flag_masks")
PACKING = ("scale_factor", "add_offset", "_FillValue")
SPATIAL = (("lon", "lat"), ("longitude", "latitude"), ("x", "y"))
CONVENTIONS = "CF-1.8"


@dataclass(frozen=True)
class Provenance:
    """Where an answer came from: Dataset attributes only, never anything else of it."""

    entry: str = ""
    dataset_id: str = ""
    dataset_identifier: str = ""
    service: str = ""
    access: str = ""  # download | window
    products: tuple[str, ...] = ()

    def attrs(self) -> dict[str, str]:
        out = {"clms_entry": self.entry, "clms_dataset_id": self.dataset_id,
               "clms_dataset_identifier": self.dataset_identifier, "clms_service": self.service,
               "clms_access": self.access, "clms_products": ", ".join(self.products)}
        return {k: v for k, v in out.items() if v}


_CGLS = re.compile(r"^c_gls_([A-Za-z][A-Za-z-]*?)(?:\d+)?(?:-RT\d+)?_", re.IGNORECASE)
#: A file-name token that names something: letters (digits inside allowed), then digits (a year, a resolution).
_WORD = re.compile(r"([A-Za-z][A-Za-z0-9]*?)\d*")
_EXTENSION = re.compile(r"\.(?:tiff?|nc|vrt|zip)$", re.IGNORECASE)


def variable_name(band_name: str, file_name: str) -> str:
    """A GeoTIFF band's variable name: its description, else the product's short name from the file name.

    The short name is the first token of the file name made of letters (then digits): ``IMD_2018_010m_...``
    -> ``IMD``, ``NDVI300`` -> ``NDVI``.  A single letter before digits is a code, not a name (CORINE's
    update ``U2018``, a version ``V2020``, a tile ``E42N30``): ``U2018_CLC2018_V2020_20u1`` -> ``CLC``; it
    is taken only when no token has a longer name.
    """
    if band_name and band_name.strip() and not re.fullmatch(r"(?i)band[ _]?\d*", band_name.strip()):
        return band_name.strip()
    # a leading tile code (E000N60_) or the programme's prefix (CLMS_IMP_...) is no product's name
    stem = re.sub(r"^(?:[EW]\d{2,3}[NS]\d{2,3}|CLMS)_", "", _EXTENSION.sub("", file_name.rsplit("/", 1)[-1]))
    m = _CGLS.match(stem)
    if m:
        return m.group(1).upper()
    words = [w.group(1) for token in re.split(r"[_.-]", stem) if (w := _WORD.fullmatch(token))]
    name = next((w for w in words if len(w) > 1), words[0] if words else "")
    return name.upper() if name else "value"


def spatial_dims(ds: xr.Dataset | xr.DataArray) -> tuple[str, str]:
    """(x, y) dimension names as found."""
    for x, y in SPATIAL:
        if x in ds.dims and y in ds.dims:
            return x, y
    raise IntegrityError(f"cannot find the spatial dimensions among {list(ds.dims)}")


def crop(ds: xr.Dataset, crs: Any, bbox: Sequence[float] | None) -> xr.Dataset:
    """The pixels whose centres lie in the lon/lat bbox (:mod:`.grid`'s rule), on stored coordinates."""
    x, y = spatial_dims(ds)
    xs, ys = np.asarray(ds[x].values, dtype="float64"), np.asarray(ds[y].values, dtype="float64")
    if xs.size == 0 or ys.size == 0:
        return ds
    dx = (xs[-1] - xs[0]) / (xs.size - 1) if xs.size > 1 else float(ds[x].attrs.get("step") or 0.0)
    dy = (ys[-1] - ys[0]) / (ys.size - 1) if ys.size > 1 else float(ds[y].attrs.get("step") or 0.0)
    extent = (min(xs[0], xs[-1]) - abs(dx) / 2, min(ys[0], ys[-1]) - abs(dy) / 2,
              max(xs[0], xs[-1]) + abs(dx) / 2, max(ys[0], ys[-1]) + abs(dy) / 2)
    box = grid.bbox_in(crs, bbox, extent)
    if box is None:
        return ds
    west, south, east, north = box
    out = ds.isel({x: grid.coord_range(xs, west, east), y: grid.coord_range(ys, south, north)})
    return out.assign_coords({x: out[x].assign_attrs(step=dx), y: out[y].assign_attrs(step=dy)})


def _packing(var: xr.DataArray) -> tuple[float, float, Any]:
    attrs, enc = var.attrs, var.encoding
    scale = attrs.get("scale_factor", enc.get("scale_factor", 1.0))
    offset = attrs.get("add_offset", enc.get("add_offset", 0.0))
    fill = attrs.get("_FillValue", enc.get("_FillValue", attrs.get("missing_value")))
    return float(np.asarray(scale).ravel()[0]), float(np.asarray(offset).ravel()[0]), fill


def _cf(attrs: Mapping[str, Any], dtype: np.dtype) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in CF_ATTRS:
        value = attrs.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if key in ("flag_values", "flag_masks"):
            items = value.replace(",", " ").split() if isinstance(value, str) else np.atleast_1d(value).tolist()
            value = np.asarray([int(float(v)) for v in items], dtype=dtype if dtype.kind in "iu" else "int64")
        else:
            value = str(value)
        out[key] = value
    return out


@dataclass(frozen=True)
class _Form:
    """A stored variable's contract: its meaning (CF attributes), packing and the dtype it decodes to."""

    meaning: dict[str, Any]
    raw: np.dtype
    target: np.dtype
    scale: float
    offset: float
    fill: Any  # in the raw dtype for integers; None when there is none

    def raw_attrs(self) -> dict[str, Any]:
        """``decode=False``: the packing in the precision it decodes with (a file's float32 and a COG's double agree)."""
        return {**self.meaning, "scale_factor": self.target.type(self.scale), "add_offset": self.target.type(self.offset),
                **({} if self.fill is None else {"_FillValue": self.fill})}

    def decoded_encoding(self) -> dict[str, Any]:
        """Decoded values keep their packing in ``encoding`` (``to_netcdf`` writes the integers back)."""
        return {"dtype": self.raw, "scale_factor": self.scale, "add_offset": self.offset,
                **({} if self.fill is None else {"_FillValue": self.fill})}


def _form(var: xr.DataArray, raw: np.dtype) -> _Form:
    """``raw``: the stored dtype (``var``'s own when it holds the stored values)."""
    scale, offset, fill = _packing(var)
    fill_value = None if fill is None else np.asarray(fill).astype(raw)[()] if raw.kind in "iu" else fill
    target = np.dtype("float32") if raw.kind in "iu" and raw.itemsize <= 2 else np.dtype("float64")
    return _Form(_cf(var.attrs, raw), raw, target, scale, offset, fill_value)


def _decode(raw: np.ndarray, *, fill: Any, scale: float, offset: float, target: np.dtype) -> np.ndarray:
    """Stored integers to values: fill -> NaN, then ``* scale + offset`` in ``target`` precision (the same
    arithmetic, in the same order, as xarray's CF decoding of the stored form)."""
    data = raw.astype(target)
    if fill is not None:
        data[raw == fill] = np.nan
    if scale != 1.0:
        data *= target.type(scale)
    if offset != 0.0:
        data += target.type(offset)
    return data


def _value(var: xr.DataArray, decode: bool) -> xr.DataArray:
    form = _form(var, var.dtype)
    if not decode:
        out = var.copy()
        out.attrs = form.raw_attrs()
        out.encoding = {"dtype": form.raw}
        return out
    if form.raw.kind in "iu":  # one operation a block (not four array operations: a graph of one layer)
        decode_block = functools.partial(_decode, fill=form.fill, scale=form.scale, offset=form.offset,
                                         target=form.target)
        if isinstance(var.data, np.ndarray):
            data = var.copy(data=decode_block(var.data))
        else:
            data = var.copy(data=var.data.map_blocks(decode_block, dtype=form.target))
    else:  # stored as floats: only the fill value to mask
        fill = form.fill
        data = var if fill is None or (isinstance(fill, float) and np.isnan(fill)) else var.where(var != fill)
    data.attrs = form.meaning
    data.encoding = form.decoded_encoding()
    return data


@functools.lru_cache(maxsize=64)
def _crs_form(crs: str, nx: str, ny: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """rioxarray's CF form of a CRS (the ``spatial_ref`` attributes, the x and y coordinates' attributes),
    worked out once per CRS on a one-pixel Dataset: parsing a CRS costs milliseconds every open."""
    import rioxarray  # noqa: F401  (registers .rio)

    one = xr.Dataset({"v": ((ny, nx), np.zeros((1, 1), "uint8"))}, coords={ny: [0.0], nx: [0.0]})
    one = one.rio.set_spatial_dims(x_dim=nx, y_dim=ny).rio.write_crs(crs).rio.write_coordinate_system()
    return dict(one["spatial_ref"].attrs), dict(one[nx].attrs), dict(one[ny].attrs)


def normalise(ds: xr.Dataset, *, crs: Any, times: Sequence[Any] | None, decode: bool = True,
              provenance: Provenance | None = None) -> xr.Dataset:
    """The contract's Dataset from a reader's raw one (see the module docstring)."""
    import rioxarray  # noqa: F401  (registers .rio: users read ds.rio.crs from what we return)

    x, y = spatial_dims(ds)
    geographic = grid.is_geographic(crs)
    nx, ny = ("lon", "lat") if geographic else ("x", "y")
    keep = [n for n in ds.data_vars if x in ds[n].dims and y in ds[n].dims]
    if not keep:
        raise IntegrityError("the products hold no variable on a spatial grid")
    out = ds[keep].reset_coords(drop=True)
    if "time" not in out.dims:
        out = out.expand_dims("time")
    if times is not None and out.sizes["time"] == len(times):  # a product's nominal date (NaT when unknown)
        out = out.assign_coords(time=np.array([np.datetime64("NaT") if t is None else t for t in times],
                                              dtype="datetime64[ns]"))
    if "time" in out.indexes and out.sizes["time"] > 1:
        out = out.sortby("time")
    out = out.rename({x: nx, y: ny}) if (x, y) != (nx, ny) else out
    out = out.assign_coords({nx: grid.regular(np.asarray(out[nx].values), out[nx].attrs.get("step")),
                             ny: grid.regular(np.asarray(out[ny].values), out[ny].attrs.get("step"))})
    variables = {}
    for name in keep:
        var = out[name]
        order = ["time"] + [d for d in var.dims if d not in ("time", nx, ny)] + [ny, nx]
        variables[name] = _value(var.transpose(*order), decode)
    result = xr.Dataset(variables, coords={"time": out["time"].values, ny: out[ny].values, nx: out[nx].values})
    result.attrs = {"Conventions": CONVENTIONS, **(provenance.attrs() if provenance else {})}
    grid_mapping, x_attrs, y_attrs = _crs_form(str(crs or "EPSG:4326"), nx, ny)
    result = result.assign_coords(spatial_ref=xr.Variable((), np.int64(0), dict(grid_mapping)))
    result[nx].attrs.update(x_attrs)
    result[ny].attrs.update(y_attrs)
    for name in result.data_vars:
        result[name].encoding["grid_mapping"] = "spatial_ref"
    for name in result.variables:
        for key in ("source", "original_shape", "preferred_chunks", "chunksizes", "zlib", "complevel", "shuffle",
                    "fletcher32", "contiguous", "coordinates"):
            result[name].encoding.pop(key, None)
    result["time"].encoding = {}
    result.encoding = {}
    return result


def from_stored(ds: xr.Dataset, *, decode: bool, provenance: Provenance | None = None) -> xr.Dataset | None:
    """The contract's Dataset from a file :func:`normalise` wrote (``decode=False``, ``to_netcdf``), opened with
    ``decode_coords="all"`` and ``mask_and_scale=decode``: xarray's own lazy decoding (the same float32
    arithmetic as :func:`normalise`'s, one task per chunk instead of four array operations) and the stored
    attributes re-labelled, with no CRS parsed again.  None when the file is not in that form (the caller
    then normalises it)."""
    import rioxarray  # noqa: F401  (registers .rio: users read ds.rio.crs from what we return)

    if "spatial_ref" not in ds.coords or "time" not in ds.dims:
        return None
    names = list(ds.data_vars)
    if not names:
        return None
    forms = {}
    for name in names:
        var = ds[name]
        raw = np.dtype(var.encoding.get("dtype", var.dtype))
        forms[name] = _form(var, raw)
        if decode and raw.kind in "iu" and var.dtype != forms[name].target:
            return None  # xarray decodes this width otherwise: normalise's arithmetic decides
    for name, form in forms.items():  # re-labelled in place: the Dataset was opened for this call alone
        var = ds.variables[name]
        var.attrs = dict(form.meaning) if decode else form.raw_attrs()
        var.encoding = ({**form.decoded_encoding(), "grid_mapping": "spatial_ref"} if decode
                        else {"dtype": form.raw, "grid_mapping": "spatial_ref"})
    for name in ds.coords:
        coord = ds.variables[name]
        coord.attrs.pop("_FillValue", None)
        coord.encoding = {}
    ds.attrs = {"Conventions": CONVENTIONS, **(provenance.attrs() if provenance else {})}
    ds.encoding = {}
    return ds


__all__ = ["CONVENTIONS", "Provenance", "crop", "from_stored", "normalise", "spatial_dims", "variable_name"]
