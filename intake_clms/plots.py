"""The quicklook plot of each catalog entry (``metadata.plots``), derived from what the catalog knows.

intake's GUI draws the hvplot specs an entry declares under ``metadata.plots``
(``{name: hvplot keyword arguments}``), and would crash on an entry without
any.  So every generated entry gets one plot, chosen per product family from
the entry's identifier and product type: rasters are an image of the main
variable with a time slider (``groupby: time``), a colour map that reads
naturally for the quantity (greens for vegetation, blues for water and snow,
reds for burnt and sealed surfaces, qualitative maps for classes) and colour
limits from the product's valid range in its delivered units (CF-decoded
physical values for the global NetCDF products, raw class or percent values for
the pan-European GeoTIFF layers).  Vector entries get a points plot of their
features' longitude and latitude.

The specs are a best guess from the catalog's metadata, not from the data: the
GUI (:mod:`intake_clms.gui`) checks a spec against the Dataset it reads and
falls back to the Dataset's main variable, its own dimensions and the data's
range where the guess does not hold.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ClmsError

#: The name of the one plot every entry declares.
PLOT_NAME = "map"
#: GeoTIFF products' variables are named after the product (the contract's ``variable_name``): no fixed name,
#: the plot draws the Dataset's main variable.
GEOTIFF_VARIABLE = None


@dataclass(frozen=True)
class Look:
    """How one product family is drawn: main variable, colour map, colour limits (None: the data's range)."""

    variable: str | None
    cmap: str
    clim: tuple[float, float] | None = None


# Global and regional CGLS products, delivered as CF NetCDF: matched on the identifier's leading
# family token (``ndvi_global_300m_...`` -> ``ndvi``; old IDs ``EO:CLMS:DAT:CLMS_GLOBAL_LAI_...`` -> ``lai``).
# Limits are the products' valid ranges after CF decoding (temperatures in kelvin).
_FAMILIES: dict[str, Look] = {
    "ndvi": Look("NDVI", "RdYlGn", (0.0, 1.0)),
    "lai": Look("LAI", "YlGn", (0.0, 7.0)),
    "fapar": Look("FAPAR", "YlGn", (0.0, 1.0)),
    "fcover": Look("FCOVER", "YlGn", (0.0, 1.0)),
    "dmp": Look("DMP", "YlGn", (0.0, 327.67)),
    "gdmp": Look("GDMP", "YlGn", (0.0, 327.67)),
    "npp": Look("NPP", "YlGn", (0.0, 327.67)),
    "gpp": Look("GPP", "YlGn", (0.0, 327.67)),
    "lst": Look("LST", "inferno", (203.15, 343.15)),
    "lst_tci": Look("TCI", "RdYlBu_r", (0.0, 100.0)),
    "lst_daily_cycle": Look("MEDIAN", "inferno", (203.15, 343.15)),
    "swi": Look("SWI_010", "YlGnBu", (0.0, 100.0)),
    "ssm": Look("ssm", "YlGnBu", (0.0, 100.0)),
    "ba": Look("BA_DEKAD", "Reds", (0.0, 1.0)),
    "wb": Look("WB", "Blues", (0.0, 70.0)),
    "lwq": Look("turbidity_mean", "viridis", (0.0, 100.0)),
    "lswt": Look("LSWT", "RdYlBu_r", (243.15, 313.15)),
    "sce": Look("SCE", "Blues", (0.0, 100.0)),
    "swe": Look("SWE", "Blues", (0.0, 3000.0)),
    "lie": Look("LIE", "Blues", (0.0, 30.0)),
    "toc": Look("TOC_REFL", "gray", (0.0, 1.0)),
    "tocr": Look("TOCR", "gray", (0.0, 1.0)),
    "hf": Look("FRP", "inferno", (0.0, 6000.0)),
    "lc": Look("discrete_classification", "tab20", (0.0, 200.0)),
    "lcm": Look("LCM", "tab10", (10.0, 100.0)),
    "tcd": Look("TCD", "Greens", (0.0, 100.0)),
    "lsp": Look("SOSD", "twilight", (1.0, 366.0)),
    "albh": Look("AL_BH_BB", "gray", (0.0, 1.0)),
    "aldh": Look("AL_DH_BB", "gray", (0.0, 1.0)),
}

# Pan-European layers (HRL, VLCC, WSI, CLC, ...), delivered as uint8 GeoTIFF tiles (nodata 255):
# matched in order on words of the identifier and product type; limits in the raw values.
_LAYERS: tuple[tuple[tuple[str, ...], Look], ...] = (
    (("confidence",), Look(GEOTIFF_VARIABLE, "viridis", (0.0, 100.0))),
    (("imperviousness", "hrl_imp", "sealing"), Look(GEOTIFF_VARIABLE, "Reds", (0.0, 100.0))),
    (("tree_cover_density", "cover_density", "herbaceous_cover"), Look(GEOTIFF_VARIABLE, "Greens", (0.0, 100.0))),
    (("corine", "clc", "lulucf"), Look(GEOTIFF_VARIABLE, "tab20", (1.0, 44.0))),
    (("forest_type", "leaf_type", "crop_types", "seasons", "classification"), Look(GEOTIFF_VARIABLE, "Set2", (0.0, 3.0))),
    (("duration", "dates", "emergence", "harvest", "phenology", "vpp"), Look(GEOTIFF_VARIABLE, "viridis", (1.0, 366.0))),
    (("mowing_events",), Look(GEOTIFF_VARIABLE, "viridis", (0.0, 6.0))),
    (("snow",), Look(GEOTIFF_VARIABLE, "Blues", (0.0, 100.0))),
    (("water", "wetness", "waw", "ice"), Look(GEOTIFF_VARIABLE, "Blues", (0.0, 2.0))),
    (("grassland", "fallow", "bare_soil", "ploughing", "presence", "change"), Look(GEOTIFF_VARIABLE, "YlGn", (0.0, 2.0))),
    (("building_height",), Look(GEOTIFF_VARIABLE, "magma", (0.0, 100.0))),
)

#: Unknown families: the data's own range and a perceptually uniform map.
GENERIC = Look(None, "viridis", None)
GENERIC_LAYER = Look(GEOTIFF_VARIABLE, "viridis", None)


def _text(md: Mapping[str, Any]) -> str:
    return " ".join(str(md.get(k) or "") for k in ("identifier", "dataset_identifier", "product_type")).lower()


def _family(md: Mapping[str, Any]) -> str | None:
    """The CGLS family token of an entry (``lst_tci``, ``ndvi``, ...), longest known match first."""
    ident = str(md.get("dataset_identifier") or "").lower().replace("-", "_")
    if not ident:
        old = re.match(r"^EO:CLMS:DAT:CLMS_GLOBAL_([A-Z]+)_", str(md.get("identifier") or ""), re.IGNORECASE)
        ident = old.group(1).lower() if old else ""
    for name in sorted(_FAMILIES, key=len, reverse=True):
        if ident == name or ident.startswith(name + "_"):
            return name
    return None


def look_for(md: Mapping[str, Any]) -> Look:
    """The colour map, limits and main variable of an entry, from its catalog metadata."""
    family = _family(md)
    if family is not None:
        return _FAMILIES[family]
    text = _text(md).replace("-", "_").replace(":", "_")
    for words, look in _LAYERS:
        if any(w in text for w in words):
            return look
    european = str(md.get("spatial_coverage") or "").lower() == "europe" or text.startswith(("clms_", "eo_eea"))
    return GENERIC_LAYER if european else GENERIC


def raster_plot(look: Look, *, timed: bool = True) -> dict[str, Any]:
    """An hvplot image spec: the main variable, a time slider, the family's colour map and limits."""
    spec: dict[str, Any] = {"kind": "image"}
    if look.variable:
        spec["z"] = look.variable
    if timed:
        spec["groupby"] = "time"
    spec["cmap"] = look.cmap
    if look.clim is not None:
        spec["clim"] = [float(look.clim[0]), float(look.clim[1])]
    return spec


def points_plot() -> dict[str, Any]:
    """An hvplot points spec for vector features (their representative points in lon/lat)."""
    return {"kind": "points", "x": "lon", "y": "lat", "size": 6, "hover_cols": "all"}


def plots_for(md: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``metadata.plots`` of an entry: ``{"map": spec}`` (a points plot for ``is_vector`` entries)."""
    if md.get("is_vector"):
        return {PLOT_NAME: points_plot()}
    static = str(md.get("frequency") or "").strip().lower() == "static"
    return {PLOT_NAME: raster_plot(look_for(md), timed=not static)}


# --------------------------------------------------------------------------- fitting a spec to the data

#: A quicklook never sends more than this many pixels per side to the browser (strided, not resampled).
MAX_PIXELS = 600
#: Layout added to every spec when drawn (kept out of the catalog to keep it small).
LAYOUT = {"data_aspect": 1, "frame_width": 480}
_XY = (("lon", "lat"), ("longitude", "latitude"), ("x", "y"))


def main_variable(ds: Any) -> str:
    """The Dataset's main variable: the largest one with at least two dimensions."""
    gridded = [(int(ds[v].size), str(v)) for v in ds.data_vars if ds[v].ndim >= 2]
    if not gridded:
        raise ValueError(f"nothing to draw as an image: no variable with two dimensions among {list(ds.data_vars)}")
    return max(gridded)[1]


def fit_raster(data: Any, spec: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The Dataset and spec to hand to hvplot: checked against the data, masked, small enough to draw.

    The spec's variable is used when the data has it, else :func:`main_variable`; ``x``/``y``
    are the data's spatial dimensions; a ``groupby`` dimension the data lacks (a static product)
    is dropped and other extra dimensions are cut to their first index; GeoTIFF nodata becomes
    NaN; large grids are strided down to :data:`MAX_PIXELS` per side, then loaded.
    """
    import numpy as np
    import xarray as xr

    spec = {**LAYOUT, **spec}
    ds = data.to_dataset() if isinstance(data, xr.DataArray) else data
    z = spec.get("z") if spec.get("z") in ds.data_vars else main_variable(ds)
    da = ds[z]
    x, y = next(((a, b) for a, b in _XY if a in da.dims and b in da.dims), (da.dims[-1], da.dims[-2]))
    groupby = [g for g in ([spec["groupby"]] if isinstance(spec.get("groupby"), str) else spec.get("groupby") or [])
               if g in da.dims and g not in (x, y)]
    for dim in da.dims:
        if dim not in (x, y, *groupby):
            da = da.isel({dim: 0}, drop=True)
    try:
        import rioxarray  # noqa: F401  (registers .rio)

        nodata = da.rio.nodata
    except Exception:  # no CRS metadata: nothing to mask beyond what xarray decoded
        nodata = None
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        da = da.where(da != nodata)
    steps = {d: -(-da.sizes[d] // MAX_PIXELS) for d in (x, y)}
    if any(s > 1 for s in steps.values()):
        da = da.isel({d: slice(None, None, s) for d, s in steps.items()})
    da = da.load()
    spec.update({"z": z, "x": x, "y": y})
    if spec.get("clim") is not None:  # YAML gives a list; HoloViews takes only a tuple
        spec["clim"] = tuple(float(v) for v in spec["clim"])
    if groupby:
        spec["groupby"] = groupby[0] if len(groupby) == 1 else groupby
    else:
        spec.pop("groupby", None)
    return da.to_dataset(name=z), spec


def fit_points(frame: Any, spec: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A (Geo)DataFrame with the spec's ``x``/``y`` columns: lon/lat of each feature's representative point."""
    spec = {**LAYOUT, **spec}
    x, y = spec.get("x", "lon"), spec.get("y", "lat")
    if len(frame) == 0:  # hvplot would fail on the empty ranges ("cannot convert float NaN to integer")
        raise ClmsError("no feature in the requested area and dates: widen the bbox (or the dates)")
    if (x not in frame.columns or y not in frame.columns) and hasattr(frame, "geometry"):
        geo = frame.to_crs("EPSG:4326") if getattr(frame, "crs", None) is not None else frame
        points = geo.geometry.representative_point()
        frame = frame.assign(**{x: points.x.to_numpy(), y: points.y.to_numpy()})
        frame = frame.drop(columns=[frame.geometry.name])
    if x not in frame.columns or y not in frame.columns:
        raise ValueError(f"nothing to draw as points: no {x!r}/{y!r} columns and no geometry")
    spec.update({"x": x, "y": y})
    return frame, spec
