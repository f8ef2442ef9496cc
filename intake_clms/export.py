"""Export cached requests as a plain intake catalog that colleagues open without intake-clms.

Why: after preloading, a group wants to share exactly the data it used with people who have no
credentials (and no intake-clms).  :func:`export_catalog` writes ``DIR/catalog.yaml`` plus the
files of the products its requests read; every entry is a plain intake-xarray source that opens
with ``intake`` + ``intake-xarray`` alone, offline:

* NetCDF stacks -> ``driver: netcdf``: the products' files as they came from the server (hard
  links when the folder is on the cache's file system, else copies), stacked along ``time`` in
  the request's order.  The files are whole products (a global file stays global): the request's
  bbox is in ``metadata.bbox``; ``zarr=True`` writes the cropped data instead.
* GeoTIFF mosaics -> ``driver: rasterio``: the tiles, plus one GDAL VRT per date beside them
  whose extent is the request's window on the tiles' grid (the same pixels ``to_dask()`` gives).
  Several dates are named ``mosaic_<date>.vrt`` and stacked along ``time`` by intake's pattern
  reader.
* ``zarr=True`` -> ``driver: zarr``: what ``to_dask()`` returns (cropped to the request's bbox)
  converted with xarray, one store per request.

Each entry keeps the original entry's description and metadata (and ``metadata.plots`` when the
catalog has some) and adds ``metadata.provenance``: the entry, the request, the service, the
products with their files' sizes and sha256, and the export date.  ``SHA256SUMS`` beside the
catalog lets anyone check the copied files (``sha256sum -c SHA256SUMS``).  The catalog is written
last, in one rename, so a failed export leaves no catalog that points at missing files.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from .errors import ClmsError
from .store import ProductRecord, Store, View
from .store.fsutil import local_faults, owned

log = logging.getLogger(__name__)

CATALOG = "catalog.yaml"
SUMS = "SHA256SUMS"
DATA = "data"
PRODUCTS = f"{DATA}/products"  # the products' files, one folder per product (shared by the requests that read it)
MOSAICS = f"{DATA}/mosaics"  # the VRTs of GeoTIFF requests, one folder per exported entry
ZARR = f"{DATA}/zarr"  # converted requests, one store per exported entry
_TEMPLATE = "{{ CATALOG_DIR }}"
#: errno values of ``os.link`` that mean "copy instead" (another file system, no hard links there).
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EACCES, getattr(errno, "EOPNOTSUPP", -1)}
#: Metadata keys of a ``driver: clms`` entry that make no sense in a plain copy.
_DROP_METADATA = ("coverage_bbox", "time_ongoing", "migration_status", "old_source_active")


class ExportError(ClmsError):
    """An export that cannot be done as asked (nothing cached, an unknown entry, a damaged product)."""


@dataclass(frozen=True)
class _Request:
    """One cached request to export: its view, the catalog entry it belongs to, its products' records."""

    view: View
    entry: str  # the catalog entry name ("" when no entry of the catalog serves it)
    records: tuple[ProductRecord, ...]
    name: str = ""  # the exported entry's name


def export_catalog(to: str | os.PathLike[str], entries: Sequence[str] | None = None, *,
                   cache_dir: str | os.PathLike[str] | None = None, zarr: bool = False,
                   catalog: str | os.PathLike[str] | None = None, force: bool = False) -> Path:
    """Write ``to/catalog.yaml`` and the data of the cached requests of ``entries`` (all when None).

    ``entries`` are catalog entry names (or any ID ``intake-clms resolve`` knows); every cached
    request of each is exported (one exported entry per request).  ``zarr``: convert each request
    to a Zarr store cropped to its bbox instead of copying the products' files.  ``catalog``: the
    catalog whose descriptions and metadata are copied (default: the bundled one).  ``force``:
    replace a catalog already in ``to``.  Returns the path of the catalog written.
    """
    from .resolve import load_sources

    store = Store(cache_dir)
    sources = load_sources(catalog)
    chosen = _choose(store, sources, list(entries or []))
    dest = Path(to).expanduser()
    if (dest / CATALOG).exists() and not force:
        raise ExportError(f"{dest} already holds a {CATALOG}; give another folder, or force=True (--force) "
                          "to replace it")
    with local_faults(dest):
        dest.mkdir(parents=True, exist_ok=True)
        out: dict[str, Any] = {}
        sums: dict[str, str] = {}
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        for req in chosen:
            spec = sources.get(req.entry) or {}
            if zarr:
                out[req.name] = _zarr_entry(store, req, spec, dest)
            elif req.view.kind == "netcdf":
                out[req.name] = _netcdf_entry(store, req, spec, dest, sums)
            else:
                out[req.name] = _geotiff_entry(store, req, spec, dest, sums)
            out[req.name]["metadata"]["provenance"] = _provenance(req, out[req.name]["driver"], now, dest)
        _write_text(dest / SUMS, "".join(f"{h}  {p}\n" for p, h in sorted(sums.items())))
        doc = {"metadata": {"version": 1,
                            "description": f"Data exported by intake-clms on {now.date().isoformat()} "
                                           f"({len(out)} request(s)); opens with intake and intake-xarray alone.",
                            "exported_by": f"intake-clms {_version()}", "exported": now.isoformat()},
               "sources": out}
        _write_text(dest / CATALOG, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=110))
    log.info("exported %d request(s) to %s", len(out), dest / CATALOG)
    return dest / CATALOG


# --------------------------------------------------------------------------- what to export


def _choose(store: Store, sources: dict[str, dict[str, Any]], wanted: list[str]) -> list[_Request]:
    """The cached requests to export, each with its entry, records and exported name."""
    from .lifecycle.errors import DamagedProductError

    cached: list[tuple[View, str]] = []
    for key in store.views.keys():
        view = store.views.get(key)
        if view is not None:
            cached.append((view, _entry_of(view, sources)))
    if not cached:
        raise ExportError(f"the cache {store.base} holds no request to export; preload one first "
                          "(`intake-clms preload ENTRY ...`)")
    names = sorted({e or v.key for v, e in cached})
    if wanted:
        picked: list[tuple[View, str]] = []
        for want in wanted:
            targets = _targets(want, sources)
            hits = [(v, e) for v, e in cached if e in targets or v.key == want]
            if not hits:
                raise ExportError(f"no cached request of {want!r}; the cache holds requests of: {', '.join(names)}")
            picked += [h for h in hits if h not in picked]
    else:
        picked = cached
    out: list[_Request] = []
    for view, entry in picked:
        label = entry or view.key
        if view.kind not in ("netcdf", "geotiff") or any(vp.access != "stored" for vp in view.products):
            raise ExportError(f"the cached request {view.key} of {label} reads {view.kind} data, which cannot be "
                              "exported yet (only NetCDF stacks and GeoTIFF mosaics)")
        records = []
        for vp in view.products:
            try:
                rec = store.products.check(vp.key)
            except DamagedProductError as exc:
                raise ExportError(f"cannot export {label}: {exc}; `intake-clms cache verify` checks the cache") from None
            if rec is None:
                raise ExportError(f"cannot export {label}: its product {vp.name} is no longer in the cache "
                                  f"(removed by `cache clean`?); preload the request again")
            records.append(rec)
        out.append(_Request(view, entry, tuple(records)))
    return _named(out)


def _targets(want: str, sources: dict[str, dict[str, Any]]) -> set[str]:
    """Entry names meant by ``want``: the entry itself, or the entries an ID resolves to (old IDs too)."""
    from .resolve import build_index

    if want in sources:
        return {want}
    return set(build_index(sources).get("".join(want.split()).lower()) or ()) or {want}


def _entry_of(view: View, sources: dict[str, dict[str, Any]]) -> str:
    """The catalog entry a request came through: the recorded one, else the one whose args match it."""
    if view.entry:
        return view.entry
    ds_id = view.request.get("dataset_id")
    ident = view.request.get("dataset_identifier")
    matches = sorted(name for name, spec in sources.items()
                     if (spec.get("args") or {}).get("dataset_id") == ds_id
                     and ((spec.get("args") or {}).get("dataset_identifier") or None) == (ident or None))
    return matches[0] if matches else (ident or "")


def _named(reqs: list[_Request]) -> list[_Request]:
    """Exported names: the entry's name, suffixed with the request key when one entry has several requests."""
    count: dict[str, int] = {}
    for r in reqs:
        count[r.entry] = count.get(r.entry, 0) + 1
    out = []
    for r in sorted(reqs, key=lambda r: (r.entry, r.view.request.get("start") or "", r.view.key)):
        base = _identifier(r.entry) if r.entry else "request"
        out.append(replace(r, name=base if r.entry and count[r.entry] == 1 else f"{base}_{r.view.key[:8]}"))
    return out


def _identifier(text: str) -> str:
    name = re.sub(r"\W+", "_", text).strip("_") or "entry"
    return name if not name[0].isdigit() else f"e_{name}"


# --------------------------------------------------------------------------- entries


def _netcdf_entry(store: Store, req: _Request, spec: dict[str, Any], dest: Path, sums: dict[str, str]) -> dict:
    """A ``netcdf`` source over the products' files in time order (opened like ``to_dask()``, uncropped)."""
    paths = []
    for rec in req.records:
        copied = _copy_product(store, rec, dest, sums)
        paths += [copied[f.path] for f in rec.data()]
    urls = [f"{_TEMPLATE}/{p}" for p in paths]
    args: dict[str, Any] = {"urlpath": urls if len(urls) > 1 else urls[0], "chunks": {}, "path_as_pattern": False}
    kwargs: dict[str, Any] = {"engine": "netcdf4"}
    if len(urls) > 1:  # xarray.open_mfdataset, with the options intake-clms stacks time steps with
        args.update(combine="nested", concat_dim="time")
        kwargs.update(data_vars="minimal", coords="minimal", compat="override", join="override",
                      combine_attrs="drop_conflicts")
    args["xarray_kwargs"] = kwargs
    note = (f"Whole products as delivered; the request covered bbox {list(req.view.bbox)} "
            "(metadata.bbox): select it with ds.sel(lon=..., lat=...).")
    return {"driver": "netcdf", "description": _description(req, spec, note), "args": args,
            "metadata": _metadata(req, spec)}


def _geotiff_entry(store: Store, req: _Request, spec: dict[str, Any], dest: Path, sums: dict[str, str]) -> dict:
    """A ``rasterio`` source over one VRT per date, cut to the request's window, beside the copied tiles."""
    from .lifecycle import assemble, mosaic

    tiles: list[Path] = []
    times: list[str | None] = []
    for rec, vp in zip(req.records, req.view.products):
        copied = _copy_product(store, rec, dest, sums)
        for f in rec.data():
            tiles.append(dest / copied[f.path])
            times.append(vp.start)
    ours = _open_ours(store, req)
    (var,) = ours.data_vars.values()
    window = ours.rio.transform()
    height, width = var.sizes["y"], var.sizes["x"]
    folder = dest / MOSAICS / req.name
    _fresh_dir(folder)
    vrts = []
    for when, paths in assemble._geotiff_dates(tiles, times):
        whole = mosaic.open_mosaic(paths, write=False)
        vrt = folder / ("mosaic.vrt" if when is None else f"mosaic_{_stamp(when)}.vrt")
        mosaic.write_vrt(_cut(whole, window, width, height), vrt)
        vrts.append(vrt)
    rel = f"{MOSAICS}/{req.name}"
    urlpath = (f"{_TEMPLATE}/{rel}/{vrts[0].name}" if len(vrts) == 1
               else f"{_TEMPLATE}/{rel}/mosaic_{{time:%Y%m%dT%H%M%S}}.vrt")
    args: dict[str, Any] = {"urlpath": urlpath, "chunks": {}, "xarray_kwargs": {"mask_and_scale": False}}
    if len(vrts) > 1:
        args["concat_dim"] = "time"
    else:
        args["path_as_pattern"] = False
    dates = "" if len(vrts) == 1 else ", stacked along time"
    note = (f"A GDAL VRT mosaic of the tiles cut to the request's window{dates}; native dtype and nodata "
            f"(mask_and_scale off); dims (band, y, x).")
    md = _metadata(req, spec)
    md["crs"] = str(ours.rio.crs)
    return {"driver": "rasterio", "description": _description(req, spec, note), "args": args, "metadata": md}


def _zarr_entry(store: Store, req: _Request, spec: dict[str, Any], dest: Path) -> dict:
    """A ``zarr`` source: what ``to_dask()`` gives, cropped to the request's bbox, converted with xarray."""
    ds = _open_ours(store, req)
    rel = f"{ZARR}/{req.name}.zarr"
    target = dest / rel
    tmp = target.with_name(owned("." + target.name))
    try:
        _for_zarr(ds).to_zarr(tmp, mode="w", consolidated=True, zarr_format=2)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    note = (f"Converted to Zarr, cropped to the request's bbox {list(req.view.bbox)}; values as intake-clms "
            "gives them (CF scaling applied, native integer dtypes with their nodata in _FillValue).")
    md = _metadata(req, spec)
    if ds.rio.crs is not None:
        md["crs"] = str(ds.rio.crs)
    return {"driver": "zarr", "description": _description(req, spec, note),
            "args": {"urlpath": f"{_TEMPLATE}/{rel}", "consolidated": True, "mask_and_scale": False},
            "metadata": md}


def _open_ours(store: Store, req: _Request) -> Any:
    """The request's Dataset exactly as ``to_dask()`` opens it from the cache (no network)."""
    from .lifecycle import assemble

    files, times = [], []
    for rec, vp in zip(req.records, req.view.products):
        for f in rec.data():
            files.append(store.products.path(rec.key) / f.path)
            times.append(vp.start)
    return assemble.open_files(req.view.kind, files, times, list(req.view.bbox),
                               index_dir=store.views.path(req.view.key))


def _for_zarr(ds: Any) -> Any:
    """Regular chunks (Zarr needs them); values written as ``to_dask()`` gives them (decoded, same dtype).

    The files' encodings are dropped (a scale factor re-applied on reading would give float64 and
    other values); the time units and calendar are kept.  The entry opens with ``mask_and_scale``
    off, so an integer band keeps its dtype and its nodata value (in ``_FillValue``), as here.
    """
    out = ds.copy()
    for name in out.variables:
        out[name].encoding = {k: v for k, v in out[name].encoding.items() if k in ("units", "calendar")}
    sizes = {d: (1 if d == "time" else min(n, 1024)) for d, n in out.sizes.items()}
    return out.chunk(sizes)


def _cut(whole: Any, window: Any, width: int, height: int) -> Any:
    """The mosaic re-based on the request's window: tiles placed relative to its corner (GDAL clips them)."""
    dc = round((whole.transform.c - window.c) / window.a)
    dr = round((whole.transform.f - window.f) / window.e)
    tiles = tuple(replace(t, col=t.col + dc, row=t.row + dr) for t in whole.tiles
                  if t.col + dc < width and t.col + dc + t.width > 0 and t.row + dr < height and t.row + dr + t.height > 0)
    return replace(whole, transform=window, width=width, height=height, tiles=tiles)


def _stamp(when: Any) -> str:
    import numpy as np

    return str(np.datetime_as_string(when, unit="s")).replace("-", "").replace(":", "")


# --------------------------------------------------------------------------- metadata


def _description(req: _Request, spec: dict[str, Any], note: str) -> str:
    v = req.view
    original = spec.get("description") or f"CLMS product {req.entry or v.request.get('dataset_id')}"
    period = f"{v.request.get('start') or '...'} to {v.request.get('end') or '...'}"
    return (f"{original} Exported by intake-clms: the cached request {v.key} (bbox {list(v.bbox)}, {period}, "
            f"{len(v.products)} product(s) via {v.service}). {note}")


def _metadata(req: _Request, spec: dict[str, Any]) -> dict[str, Any]:
    md = {k: v for k, v in (spec.get("metadata") or {}).items() if k not in _DROP_METADATA}
    md["bbox"] = list(req.view.bbox)
    md["start"] = req.view.request.get("start")
    md["end"] = req.view.request.get("end")
    return md


def _provenance(req: _Request, driver: str, now: dt.datetime, dest: Path) -> dict[str, Any]:
    v = req.view
    products = []
    for rec, vp in zip(req.records, v.products):
        files = [{"path": f"{PRODUCTS}/{_product_dir(rec.key)}/{f.path}" if driver != "zarr" else f.path,
                  "size": f.size, **({"sha256": f.hashes["sha256"]} if "sha256" in f.hashes else {}),
                  "role": f.role} for f in rec.files]
        products.append({"name": rec.name, "key": rec.key, "start": vp.start, "end": vp.end,
                         "service": rec.service or v.service, "files": files,
                         **({"payload": rec.payload} if rec.payload else {})})
    return {"entry": req.entry, "request": v.request, "request_key": v.key, "service": v.service,
            "format": driver, "products": products, "exported": now.isoformat(),
            "exported_by": f"intake-clms {_version()}"}


def _version() -> str:
    from . import __version__

    return __version__


# --------------------------------------------------------------------------- files


def _product_dir(key: str) -> str:
    from .store.fsutil import safe_name

    return safe_name(key, 200)


def _copy_product(store: Store, rec: ProductRecord, dest: Path, sums: dict[str, str]) -> dict[str, str]:
    """Hard-link (else copy) every file of a product under ``dest/data/<key>/``; sizes checked.

    Returns record path -> path relative to ``dest``.
    """
    src_dir = store.products.path(rec.key)
    rel_dir = f"{PRODUCTS}/{_product_dir(rec.key)}"
    out = {}
    for f in rec.files:
        rel = f"{rel_dir}/{f.path}"
        target = dest / rel
        if not _same_file(target, src_dir / f.path, f.size):
            _link_or_copy(src_dir / f.path, target)
        size = target.stat().st_size
        if size != f.size:
            raise ExportError(f"{target} has {size} bytes after copying, the product's record says {f.size}")
        if "sha256" in f.hashes:
            sums[rel] = f.hashes["sha256"]
        out[f.path] = rel
    return out


def _same_file(target: Path, source: Path, size: int) -> bool:
    try:
        a, b = target.stat(), source.stat()
    except FileNotFoundError:
        return False
    return a.st_size == size and (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link when both sit on one file system (no bytes copied), else a copy; placed by one rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(owned("." + target.name) + ".tmp")
    try:
        try:
            os.link(source, tmp)
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _fresh_dir(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(owned("." + path.name) + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


__all__ = ["ExportError", "export_catalog"]
