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
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..assemble import raster
from ..errors import CancelledError, IntegrityError, ServiceError
from ..store import FileRecord, ProductRecord, Store
from ..store.fsutil import local_faults, safe_name
from ..store.products import hash_file
from ..services.base import Hit


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
