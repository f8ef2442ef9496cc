"""Request views: what a request's answer is made of, small and published atomically.

A view names the products a request needs and how to read them (the crop, the data
kind, each product's time); it holds no data, so requests that share products share
their files.  ``views/<request key>/`` holds ``view.json`` and, for GeoTIFF mosaics,
the VRT indexes (tile paths relative to the folder).  It is built in ``staging/`` (the
same depth, so relative paths survive) and renamed into place.  Its modification
time is the request's last use (touched on every open; ``cache clean`` is LRU).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .fsutil import fsync_dir, local_faults, owned, read_json, remove_tree, write_json_atomic

log = logging.getLogger(__name__)

VIEW = "view.json"
VIEW_VERSION = 2  # 2: data kind and access apart, the GeoTIFF files' variable names


@dataclass(frozen=True)
class ViewProduct:
    key: str
    name: str
    start: str | None = None
    end: str | None = None
    access: str = "download"  # download (the whole product) | window (the pixels under the bbox, kept)


@dataclass(frozen=True)
class View:
    key: str
    request: dict[str, Any]
    service: str
    data_kind: str  # netcdf | geotiff | vector
    bbox: tuple[float, float, float, float]
    products: tuple[ViewProduct, ...]
    access: str = "download"  # download | window (how its products were reached)
    entry: str = ""  # the catalog entry it was asked through (for people reading `cache list`)
    created: float = 0.0
    names: tuple[str, ...] = ()  # GeoTIFF views: each data file's variable (in product order)
    stack: dict[str, Any] | None = None  # window views: {"file": name in the view folder, "size": bytes}
    version: int = VIEW_VERSION

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["products"] = [asdict(p) for p in self.products]
        return out

    @classmethod
    def from_json(cls, data: Any) -> View:
        if not isinstance(data, dict) or data.get("version") != VIEW_VERSION:
            raise ValueError("not a view of this version")
        products = tuple(ViewProduct(**p) for p in data["products"])
        fields = {k: data[k] for k in ("key", "request", "service", "data_kind", "access", "entry", "created", "stack")
                  if k in data}
        return cls(products=products, bbox=tuple(data["bbox"]), names=tuple(data.get("names") or ()),
                   **fields)  # type: ignore[arg-type]


class ViewStore:
    def __init__(self, root: Path):
        self.root = root / "views"
        self.staging_root = root / "staging"

    def path(self, key: str) -> Path:
        return self.root / key

    def keys(self) -> Iterator[str]:
        try:
            return iter(sorted(n for n in os.listdir(self.root) if not n.startswith(".")))
        except FileNotFoundError:
            return iter(())

    def get(self, key: str) -> View | None:
        """The published view, or None (an unreadable one is treated as absent, with a warning)."""
        data, problem = read_json(self.path(key) / VIEW)
        if data is None and problem is None:
            return None
        try:
            if problem:
                raise ValueError(problem)
            return View.from_json(data)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("the request view %s is unreadable (%s); building it again", self.path(key), exc)
            return None

    def last_used(self, key: str) -> float:
        try:
            return (self.path(key) / VIEW).stat().st_mtime
        except OSError:
            return 0.0

    def touch(self, key: str) -> None:
        try:
            os.utime(self.path(key) / VIEW)
        except OSError:  # a read-only cache still opens
            pass

    def publish(self, view: View, prepare: Callable[[Path], None] | None = None,
                final: Callable[[], View] | None = None) -> View:
        """Write the view in a staging folder, let ``prepare`` add indexes (``final`` then gives the view as
        they completed it), rename it into place (replacing)."""
        with local_faults(self.staging_root):
            self.staging_root.mkdir(parents=True, exist_ok=True)
            staging = self.staging_root / owned("view-" + view.key)
            staging.mkdir()
            try:
                if prepare is not None:
                    prepare(staging)
                    view = final() if final is not None else view
                write_json_atomic(staging / VIEW, view.to_json())
                self.root.mkdir(parents=True, exist_ok=True)
                final = self.path(view.key)
                remove_tree(final)
                os.replace(staging, final)
                fsync_dir(self.root)
            except BaseException:
                remove_tree(staging)
                raise
        return view

    def remove(self, key: str) -> None:
        remove_tree(self.path(key))
