"""Request views: what a request's answer is made of, small and published atomically.

A view names the products a request needs and how to read them (the crop, the data
kind, each product's time); it holds no data, so requests that share products share
their files.  A published view is a *version* folder ``views/.<request key>@<hex>/``
holding ``view.json`` and, for GeoTIFF mosaics, the VRT indexes (tile paths relative
to the folder), and a *pointer* ``views/<request key>``: a symlink to the current
version.  A version is built in ``staging/`` (the same depth, so relative paths
survive), renamed to its fresh name (nothing is ever renamed over), and the pointer
is switched in one ``os.replace`` of a new symlink.  So a live view is never removed
before its replacement is in place, two processes publishing the same view both
succeed (the last pointer wins; both versions are complete), and a reader that
resolved the old version keeps reading it: old versions go only once no live process
has opened them (:func:`~.activity.in_use`) and they are older than :data:`GRACE`.
The version's ``view.json`` modification time is the request's last use (touched on
every open; ``cache clean`` is LRU).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import IntegrityError
from .activity import in_use
from .fsutil import fsync_dir, local_faults, owned, read_json, shallow, write_json_atomic

log = logging.getLogger(__name__)

VIEW = "view.json"
VIEW_VERSION = 2  # 2: data kind and access apart, the GeoTIFF files' variable names
#: seconds an old version stays after its replacement even when no live process lists it: a reader
#: that resolved the pointer just before the switch has registered its use by then
GRACE = 60.0
_VERSION = re.compile(r"^\.(?P<key>.+)@[0-9a-f]{16}$")
#: Parsed view records kept per process (by version path: a version never changes once published).
PARSED_KEPT = 64
_PARSED: OrderedDict[str, View] = OrderedDict()
_PARSED_LOCK = threading.Lock()


def in_use_name(version: Path) -> str:
    """The name a live process lists (``in_use`` of its activity record) while it reads a view version."""
    return f"view:{version.name}"


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
        out = shallow(self)  # json copies nothing: asdict's deep copy cost more than the dump
        out["products"] = [shallow(x) for x in self.products]
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
    def __init__(self, root: Path, on_open: Callable[[list[str]], None] | None = None):
        self.root = root / "views"
        self.staging_root = root / "staging"
        self.on_open = on_open  # records in this process's activity what an open request reads

    def pointer(self, key: str) -> Path:
        return self.root / key

    def path(self, key: str) -> Path:
        """The folder of the current version of the view (resolved once: a reader keeps that version)."""
        link = self.pointer(key)
        try:
            return self.root / os.readlink(link)
        except OSError:  # absent, or a folder of the layout before versions
            return link

    def keys(self) -> Iterator[str]:
        try:
            return iter(sorted(n for n in os.listdir(self.root) if not n.startswith(".")))
        except FileNotFoundError:
            return iter(())

    def versions(self, key: str | None = None) -> list[Path]:
        """Every version folder (of one request, or of all)."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        out = []
        for n in sorted(names):
            m = _VERSION.match(n)
            if m and (key is None or m.group("key") == key):
                out.append(self.root / n)
        return out

    def get(self, key: str) -> View | None:
        """The published view, or None (an unreadable one is treated as absent, with a warning).

        A version is never written again once published (a new one gets a new name), so its parsed record
        is kept per process by the version's path: reopening a long series does not parse its products again."""
        version = self.path(key)
        fixed = _VERSION.match(version.name) is not None
        with _PARSED_LOCK:
            view = _PARSED.get(str(version)) if fixed else None
            if view is not None:
                _PARSED.move_to_end(str(version))
                return view
        data, problem = read_json(version / VIEW)
        if data is None and problem is None:
            return None
        try:
            if problem:
                raise ValueError(problem)
            view = View.from_json(data)
            if fixed:
                with _PARSED_LOCK:
                    _PARSED[str(version)] = view
                    while len(_PARSED) > PARSED_KEPT:
                        _PARSED.popitem(last=False)
            return view
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("the request view %s is unreadable (%s); building it again", self.path(key), exc)
            return None

    def last_used(self, key: str) -> float:
        try:
            return (self.path(key) / VIEW).stat().st_mtime
        except OSError:
            return 0.0

    def touch(self, key: str) -> None:
        """Mark the view used now (LRU), and tell the process's activity that it reads this version."""
        version = self.path(key)
        if self.on_open is not None:
            self.on_open([f"view:{key}", in_use_name(version)])
        try:
            os.utime(version / VIEW)
        except OSError:  # a read-only cache still opens
            pass

    def new_staging(self, key: str) -> Path:
        """A staging folder for view ``key``, to fill before :meth:`publish` (removed by the caller on failure;
        a killed process's is a leftover that the next sweep removes)."""
        with local_faults(self.staging_root):
            self.staging_root.mkdir(parents=True, exist_ok=True)
            staging = self.staging_root / owned("view-" + key)
            staging.mkdir()
        return staging

    def publish(self, view: View, prepare: Callable[[Path], None] | None = None,
                final: Callable[[], View] | None = None, staging: Path | None = None) -> View:
        """Write the view in a staging folder (``staging``, from :meth:`new_staging`, else a new one), let
        ``prepare`` add indexes (``final`` then gives the view as they completed it), rename it to a fresh
        version, then switch the pointer to it in one step.  Never fails because another process published
        it meanwhile."""
        with local_faults(self.staging_root):
            staging = staging if staging is not None else self.new_staging(view.key)
            try:
                if prepare is not None:
                    prepare(staging)
                    view = final() if final is not None else view
                write_json_atomic(staging / VIEW, view.to_json())
                self.root.mkdir(parents=True, exist_ok=True)
                version = self.root / f".{view.key}@{secrets.token_hex(8)}"
                os.replace(staging, version)  # a fresh name: nothing is renamed over
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            self._point(view.key, version)
            fsync_dir(self.root)
        self.prune(view.key)
        return view

    def _point(self, key: str, version: Path) -> None:
        """Switch the pointer to ``version`` (one rename of a new symlink over the old one)."""
        pointer = self.pointer(key)
        link = self.root / (owned("." + key + ".ln") + ".tmp")
        os.symlink(version.name, link)
        try:
            try:
                os.replace(link, pointer)
            except OSError:
                if pointer.is_symlink() or not pointer.is_dir():
                    raise
                # a view folder of the layout before versions: it becomes a version (gone after GRACE)
                os.replace(pointer, self.root / f".{key}@{secrets.token_hex(8)}")
                os.replace(link, pointer)
        except BaseException:
            link.unlink(missing_ok=True)
            raise

    def prune(self, key: str | None = None, grace: float = GRACE) -> list[Path]:
        """Remove versions that no pointer names, no live process reads, and older than ``grace`` seconds."""
        versions = self.versions(key)
        if not versions:
            return []
        busy = in_use(self.root.parent)
        current = {self.path(k).name for k in ({key} if key is not None else set(self.keys()))}
        now = time.time()
        removed = []
        for version in versions:
            if version.name in current or in_use_name(version) in busy:
                continue
            try:
                age = now - version.stat().st_mtime
            except OSError:
                continue
            if age < grace:
                continue
            _remove_dir(version)
            removed.append(version)
        return removed

    def in_use(self, key: str, busy: set[str]) -> bool:
        """Whether a live process has this request's view open (any of its versions)."""
        return f"view:{key}" in busy or any(in_use_name(v) in busy for v in self.versions(key))

    def remove(self, key: str) -> None:
        """Unpublish a view: the pointer goes at once; its versions go unless a live process reads them."""
        try:
            if self.pointer(key).is_symlink():
                self.pointer(key).unlink()
            elif self.pointer(key).is_dir():
                _remove_dir(self.pointer(key))
        except FileNotFoundError:
            pass
        self.prune(key, grace=0.0)


def _remove_dir(path: Path) -> None:
    """Rename aside (owner-tagged: a kill leaves a leftover the next run removes), then delete."""
    aside = path.with_name(owned("." + path.name.lstrip(".") + ".trash"))
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def damaged_stack_on_read(path: str | os.PathLike[str], exc: BaseException) -> IntegrityError | None:
    """A read error in a window view's stack (``<store>/views/<version>/<file>``): the file is derived data
    (the kept windows, stacked), so it is removed and the next open stacks the kept windows again, offline;
    the error names the file.  None when ``path`` is not in a view version.  The engine hands it to assembly
    as the stack's ``on_damage`` hook (:mod:`intake_clms.assemble.damage`): module-level, so dask workers run
    it too."""
    p = Path(os.path.normpath(os.fspath(path)))
    version = p.parent
    found = _VERSION.match(version.name)
    if found is None or version.parent.name != "views":
        return None
    try:
        p.unlink()
    except OSError:  # gone already, or a read-only cache: the open checks it all the same
        pass
    return IntegrityError(f"cannot read {p.name}, the stacked windows of request {found.group('key')} "
                          f"({type(exc).__name__}: {str(exc)[:200]}); the next open stacks the kept windows again")
