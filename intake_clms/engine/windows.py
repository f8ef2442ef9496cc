"""The ``window`` access: read only the pixels under the bbox from a product's COGs, keep them as a product.

Why kept as a product of its own: a window read is fetched once, like a download, and
then everything downstream is the same as for stored tiles (one reader, one contract,
offline reopen, exports, dask workers that need no credentials).  Nothing is read by a
dask task and no dask task writes the store: the engine reads each product's window
here, in its worker pool, and publishes it with one rename like any product.

A kept window's key is the product key plus a digest of the bbox and overview level
(:func:`window_key`), known before any network call, so a rerun or an overlapping
request finds it stored.  Each file of the product is opened once (header and pixels in
one open) through the service's :class:`~intake_clms.assemble.raster.RasterSource`; its
record keeps the pixel window, the source's name and the compressed bytes read.

A window view's stack (:data:`STACK`, :mod:`intake_clms.assemble.stack`) is derived data: one
missing, of another size, or unreadable is stacked again from the kept windows, offline
(:func:`open_stacked`, :func:`restack`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import assemble
from ..assemble import raster
from ..errors import CancelledError, IntegrityError, LocalStorageError, ServiceError
from ..store import FileRecord, ProductRecord, Store, View
from ..store.fsutil import local_faults, safe_name
from ..store.products import damaged_on_read, hash_file
from ..store.views import damaged_stack_on_read
from ..services.base import Hit

log = logging.getLogger(__name__)

STACK = "windows.nc"  # a window view's stacked pixels (stored integers, packing, CRS), in the view's folder


def window_key(key: str, bbox: Sequence[float], level: int | None = None) -> str:
    """The store key of a product's window under ``bbox`` (and overview ``level``)."""
    blob = json.dumps([round(float(v), 6) for v in bbox] + [level], separators=(",", ":"))
    return safe_name(f"{key}.w{hashlib.sha256(blob.encode()).hexdigest()[:12]}", 200)


def fetch(store: Store, service: Any, hit: Hit, product: str, bbox: Sequence[float], level: int | None,
          progress: Callable[[int, int | None], None], cancel: threading.Event,
          now: float) -> tuple[ProductRecord, list[tuple[str, raster.Window]]]:
    """Read the product's window from every file the service lists, keep it in the store (one rename); the
    record and each kept file's name with the window read (what the view's stack is written from)."""
    sources = service.sources(hit)
    if not sources:
        raise IntegrityError(f"{hit.name}: the service lists no raster file to read by window")
    staging = store.products.new_staging(hit.key)
    try:
        (staging / "data").mkdir()
        files, done, windows, read = [], 0, [], []
        for index in range(len(sources)):
            if cancel.is_set():
                raise CancelledError("cancelled while reading windows")
            try:
                win = raster.read_window(sources[index], bbox, level)
            except ServiceError as exc:  # a file name derived from the series is not there: list this product
                if exc.status != 404 or index or not hasattr(service, "sources"):
                    raise
                sources = service.sources(hit, listed=True)
                win = raster.read_window(sources[index], bbox, level)
            src = sources[index]
            done += win.tile_bytes
            progress(done, None)
            name = safe_name(src.shown if src.shown.lower().endswith((".tif", ".tiff")) else f"{src.shown}.tif", 120)
            target = staging / "data" / name
            with local_faults(staging):
                raster.write_window(target, win)
            read.append((name, win))
            files.append(FileRecord(path=f"data/{name}", size=target.stat().st_size, hashes=hash_file(target),
                                    role="data", kind="geotiff"))
            row, col, h, w = win.window
            windows.append({"file": src.shown, "row": row, "col": col, "height": h, "width": w, "level": level,
                            "bytes_read": win.tile_bytes})
        record = ProductRecord(key=hit.key, name=f"{hit.name} (window)", files=tuple(files), service=service.name,
                               start=hit.start, end=hit.end, published=now,
                               payload={"product": product, "product_size": hit.size, "window": windows,
                                        "bytes_read": done})
        progress(done, done)
        return store.products.put(staging, record), read
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def open_stacked(store: Store, view: View, chunks: Any, decode: bool, provenance: Any) -> Any:
    """A window view's stack, opened; one that is missing, of another size, or unreadable (derived data: the
    kept windows stacked) is stacked again from the kept windows, offline, as a new version of the view.
    None when that cannot be done here (a kept window removed, a read-only cache): the caller fetches."""
    for attempt in (1, 2):
        stack = store.views.path(view.key) / view.stack["file"]
        try:
            size = stack.stat().st_size
        except OSError:
            size = -1
        if size == view.stack["size"]:
            store.views.touch(view.key)
            store.activity().use([vp.key for vp in view.products])
            try:
                return assemble.open_stack(stack, chunks=chunks, decode=decode, provenance=provenance,
                                           on_damage=damaged_stack_on_read)
            except Exception as exc:  # noqa: BLE001 - a header the library cannot read: damaged in place
                if attempt == 2:
                    raise IntegrityError(f"cannot open {stack.name} of request {view.key} ({exc}), even stacked "
                                         "again; `intake-clms cache verify` checks the kept windows") from exc
                damaged_stack_on_read(stack, exc)
        log.warning("the stacked windows of request %s are missing or damaged; stacking the kept windows again",
                    view.key)
        view = restack(store, view)
        if view is None:
            return None
    return None


def restack(store: Store, view: View) -> View | None:
    """Publish ``view`` again with its stack written anew from its kept windows (None: a window is gone, or
    the cache cannot be written)."""
    from dataclasses import replace

    found = store.data_files(view)
    if found is None:
        return None
    files, times = found
    holder = {"view": view}

    def index(staging: Path) -> None:
        size, names = assemble.write_stack(files, times, [vp.start for vp in view.products], staging / STACK,
                                           on_damage=damaged_on_read)
        holder["view"] = replace(view, stack={"file": STACK, "size": size}, names=tuple(names))

    try:
        return store.views.publish(view, prepare=index, final=lambda: holder["view"])
    except LocalStorageError as exc:
        log.warning("cannot stack the kept windows of request %s again (%s)", view.key, exc)
        return None


def reads(store: Store, keys: Sequence[str]) -> dict[str, int]:
    """What the stored products of a view cost: ``products``, ``bytes_read`` (compressed bytes fetched: a
    window's tiles, a download's payload) and ``products_size`` (the whole products' size as the service
    announced it)."""
    out = {"products": 0, "bytes_read": 0, "products_size": 0}
    for key in keys:
        try:
            rec = store.products.check(key)
        except Exception:  # noqa: BLE001 - statistics only: a damaged product counts as absent
            rec = None
        if rec is None:
            continue
        payload = rec.payload or {}
        out["products"] += 1
        if "window" in payload:
            out["bytes_read"] += int(payload.get("bytes_read") or 0)
            out["products_size"] += int(payload.get("product_size") or 0)
        else:
            out["bytes_read"] += int(payload.get("size") or 0)
            out["products_size"] += int(payload.get("size") or 0)
    return out
