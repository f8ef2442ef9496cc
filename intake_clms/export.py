"""Export cached requests as a plain intake catalog that colleagues open without intake-clms.

Why: after preloading, a group wants to share exactly the data it used with people who have no
credentials (and no intake-clms).  :func:`export_catalog` writes ``DIR/catalog.yaml`` plus one data
file per request; every entry is a plain intake-xarray source that opens with ``intake`` +
``intake-xarray`` (+ the format's reader: netCDF4 or zarr) alone, offline.

What is written is what ``to_dask()`` returned, not the files behind it (one request, one answer):
the same variables, crop, time steps, decoded values and CRS.  The Dataset is written with its
packing (the stored integers with ``scale_factor``/``add_offset``/``_FillValue`` in float32, so
xarray decodes them back to the same float32 values) and its CF grid mapping (``spatial_ref``, which
rioxarray reads), as NetCDF (``driver: netcdf``, the default) or Zarr (``driver: zarr``).  Window
requests export like any other: their pixels are in the store.

Each entry keeps the original entry's description and metadata (and ``metadata.plots`` when the
catalog has some) and adds ``metadata.provenance``: the entry, the request, the service and access,
the source products with their files' sizes and sha256, and the export date.  ``SHA256SUMS`` beside
the catalog lets anyone check the written files (``sha256sum -c SHA256SUMS``).  Every file is written
under a temporary name and renamed, the catalog last, so a failed export leaves no catalog that
points at missing files.
"""

from __future__ import annotations

import datetime as dt
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
from .store.products import hash_file

log = logging.getLogger(__name__)

CATALOG = "catalog.yaml"
SUMS = "SHA256SUMS"
DATA = "data"
_TEMPLATE = "{{ CATALOG_DIR }}"
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
                   catalog: str | os.PathLike[str] | None = None, force: bool = False,
                   requests: Sequence[str] | None = None) -> Path:
    """Write ``to/catalog.yaml`` and the Datasets of the cached requests of ``entries`` (all when None).

    ``entries`` are catalog entry names (or any ID ``intake-clms resolve`` knows); every cached
    request of each is exported (one exported entry per request); ``requests`` picks requests by
    key (as ``intake-clms cache list`` shows them; a unique prefix is enough).  ``zarr``: write Zarr
    stores instead of NetCDF files.  ``catalog``: the catalog whose descriptions and metadata are
    copied (default: the bundled one).  ``force``: replace a catalog already in ``to``.  Returns the
    path of the catalog written.
    """
    from .catalog.resolve import load_sources

    store = Store(cache_dir)
    sources = load_sources(catalog)
    chosen = _choose(store, sources, list(entries or []), list(requests or []))
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
            out[req.name] = _entry(store, req, spec, dest, "zarr" if zarr else "netcdf", sums)
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


def _choose(store: Store, sources: dict[str, dict[str, Any]], wanted: list[str], keys: list[str]) -> list[_Request]:
    """The cached requests to export, each with its entry, records and exported name."""
    from .errors import DamagedProductError

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
    if keys:
        chosen = []
        for key in keys:
            hits = [(v, e) for v, e in picked if v.key.startswith(key)]
            if len(hits) != 1:
                shown = ", ".join(f"{v.key} ({e or '?'})" for v, e in picked) or "none"
                raise ExportError(f"--request {key}: {'no' if not hits else 'more than one'} cached request has that "
                                  f"key; the cached requests are: {shown}")
            chosen += [h for h in hits if h not in chosen]
        picked = chosen
    out: list[_Request] = []
    for view, entry in picked:
        label = entry or view.key
        if view.data_kind not in ("netcdf", "geotiff"):
            raise ExportError(f"the cached request {view.key} of {label} holds {view.data_kind} data, which cannot be "
                              "exported yet (only rasters)")
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
    from .catalog.resolve import build_index

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


def _entry(store: Store, req: _Request, spec: dict[str, Any], dest: Path, fmt: str, sums: dict[str, str]) -> dict:
    """One ``netcdf`` or ``zarr`` source holding what ``to_dask()`` gives for the request."""
    ds = _open_ours(store, req)
    rel = f"{DATA}/{req.name}.{'zarr' if fmt == 'zarr' else 'nc'}"
    target = dest / rel
    tmp = target.with_name(owned("." + target.name))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        packed = _packed(ds, fmt)
        if fmt == "zarr":
            packed.chunk({d: (1 if d == "time" else min(n, 1024)) for d, n in packed.sizes.items()}).to_zarr(
                tmp, mode="w", consolidated=True, zarr_format=2)
        else:
            packed.to_netcdf(tmp, engine="netcdf4")
            sums[rel] = hash_file(tmp)["sha256"]
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink()
    args: dict[str, Any] = {"urlpath": f"{_TEMPLATE}/{rel}", "chunks": {}}
    if fmt == "zarr":
        args["consolidated"] = True
    else:
        args["xarray_kwargs"] = {"engine": "netcdf4"}
    note = (f"What intake-clms gave for the request (cropped to bbox {list(req.view.bbox)}, decoded values, "
            f"CRS in spatial_ref), written as {'Zarr' if fmt == 'zarr' else 'NetCDF'}.")
    md = _metadata(req, spec)
    if ds.rio.crs is not None:
        md["crs"] = ds.rio.crs.to_string()
    return {"driver": fmt, "description": _description(req, spec, note), "args": args, "metadata": md}


def _open_ours(store: Store, req: _Request) -> Any:
    """The request's Dataset exactly as ``to_dask()`` opens it from the cache (no network)."""
    from .engine.core import Options, open_view
    from .params import REQUEST_PARAMETERS, Request

    request = Request.build(**{k: v for k, v in req.view.request.items() if k in REQUEST_PARAMETERS})
    ds = open_view(store, request, options=Options(entry=req.entry))
    if ds is None:
        raise ExportError(f"the cached request {req.view.key} can no longer be opened offline; preload it again")
    return ds


def _packed(ds: Any, fmt: str) -> Any:
    """The Dataset with its packing as encoding (float32 scale and offset, so xarray decodes to float32).

    Zarr keeps attributes as JSON, where a float32 scale factor reads back as float64 (and would decode
    to float64): Zarr stores get the decoded float32 values themselves.
    """
    import numpy as np

    out = ds.copy()
    for name in out.data_vars:
        if fmt == "zarr":
            out[name].encoding = {"dtype": out[name].dtype}
            continue
        enc = dict(out[name].encoding)
        keep = {k: enc[k] for k in ("dtype", "_FillValue") if k in enc}
        if "scale_factor" in enc or "add_offset" in enc:
            keep["scale_factor"] = np.float32(enc.get("scale_factor", 1.0))
            keep["add_offset"] = np.float32(enc.get("add_offset", 0.0))
        keep["zlib"] = True
        out[name].encoding = keep
    return out


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
        files = [{"path": f.path, "size": f.size, **({"sha256": f.hashes["sha256"]} if "sha256" in f.hashes else {}),
                  "role": f.role} for f in rec.files]
        products.append({"name": rec.name, "key": rec.key, "start": vp.start, "end": vp.end,
                         "service": rec.service or v.service, "files": files,
                         **({"payload": rec.payload} if rec.payload else {})})
    return {"entry": req.entry, "request": v.request, "request_key": v.key, "service": v.service, "access": v.access,
            "format": driver, "products": products, "exported": now.isoformat(),
            "exported_by": f"intake-clms {_version()}"}


def _version() -> str:
    from . import __version__

    return __version__


# --------------------------------------------------------------------------- files


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(owned("." + path.name) + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


__all__ = ["ExportError", "export_catalog"]
