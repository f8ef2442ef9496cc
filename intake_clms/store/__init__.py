"""The local store: products downloaded once, request views, per-service job state, cleaning.

Layout under the cache folder (``INTAKE_CLMS_CACHE``, else the user cache dir)::

    v1/products/<key>/          complete, immutable products with their records
    v1/views/<request key>      each request's view: a pointer to its current version (see views.py)
    v1/views/.<request key>@<hex>/   a version of the view (products, crop, indexes)
    v1/jobs/<service>/<key>.json   one service's order of one product
    v1/downloads/<service>/<key>/  payloads being downloaded (``.part``, resumable), and complete verified ones
                                   (``payload.json``: size, hashes) kept until their product is stored
    v1/damaged/<key>.json       damage a read (or ``cache verify``) found in a stored product
    v1/staging/                 products and views being built (renamed into place)
    v1/locks/<key>.lock         one process at a time fetches a product
    v1/running/<host>.<pid>.json   what running processes do (``intake-clms status``)

The store knows nothing of services' protocols: it keeps what the engine hands it.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import filelock

from ..config import cache_dir
from .activity import ProcessActivity
from .fsutil import is_dead_leftover, local_faults, owned, safe_name
from .jobs import Job, JobStore
from .products import FileRecord, ProductRecord, ProductStore
from .views import View, ViewProduct, ViewStore

log = logging.getLogger(__name__)

LAYOUT = "v1"
#: Stores a reopen of this process has swept for leftovers (see :meth:`Store.remove_leftovers`).
_SWEPT: set[Path] = set()
_ACTIVITY: dict[Path, ProcessActivity] = {}

__all__ = ["FileRecord", "Job", "ProductRecord", "Store", "View", "ViewProduct"]


class Store:
    """One cache folder's store."""

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.base = cache_dir(root)
        self.root = self.base / LAYOUT
        self.products = ProductStore(self.root)
        self.views = ViewStore(self.root, on_open=lambda names: self.activity().use(names))
        self.jobs = JobStore(self.root)
        self.downloads = self.root / "downloads"
        self.locks = self.root / "locks"

    def data_files(self, view: View) -> tuple[list[Path], list[str | None]] | None:
        """A view's stored data files in its products' order, each with its product's date (no hashing: the
        record's sizes are checked); None when a product is no longer stored (removed, or damaged)."""
        files: list[Path] = []
        times: list[str | None] = []
        for vp in view.products:
            rec = self.products.check(vp.key)
            if rec is None:
                return None
            for f in rec.data():
                files.append(self.products.path(vp.key) / f.path)
                times.append(vp.start)
        return files, times

    def ensure_writable(self) -> None:
        """Create the layout; a cache path that is a file, read-only or full raises LocalStorageError."""
        with local_faults(self.root):
            for sub in ("products", "staging", "views", "jobs", "downloads", "locks"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            probe = self.root / (owned(".probe") + ".tmp")
            probe.write_bytes(b"")
            probe.unlink()

    def lock(self, key: str) -> filelock.FileLock:
        return filelock.FileLock(str(self.locks / f"{safe_name(key, 200)}.lock"), thread_local=False)

    def download_dir(self, service: str, key: str) -> Path:
        return self.downloads / safe_name(service) / key

    def activity(self) -> ProcessActivity:
        act = _ACTIVITY.get(self.root)
        if act is None:
            act = _ACTIVITY[self.root] = ProcessActivity(self.root)
        return act

    def remove_leftovers(self, quiet: bool = False, once: bool = False) -> list[Path]:
        """Remove what dead processes left: staging folders, trash, temp files, status records; downloads of
        stored products.  ``quiet``: a read-only store is left as it is (a reopen must still work).
        ``once``: only if this process has not swept this store yet (a sweep scans the whole store: a reopen,
        milliseconds however large the cache, must not pay it every time; a fetch always sweeps)."""
        if once:
            if self.root in _SWEPT:
                return []
            _SWEPT.add(self.root)
        try:
            return self._remove_leftovers()
        except OSError:
            if not quiet:
                raise
            return []

    def _remove_leftovers(self) -> list[Path]:
        from .activity import live_records

        live_records(self.root)  # drops the status records of dead processes
        removed = []
        for path in self.products.leftovers():
            _remove(path)
            removed.append(path)
        for folder in (self.views.root, self.jobs.root, self.root / "running"):
            if not folder.is_dir():
                continue
            for path in folder.rglob(".*"):
                if is_dead_leftover(path.name):
                    _remove(path)
                    removed.append(path)
        removed += self.views.prune()
        for job in self.jobs.all():  # a kill between a product's rename and its job's removal
            if self.products.path(job.key).is_dir():
                self.jobs.remove(job.service, job.key)
                removed.append(self.jobs.path(job.service, job.key))
        if self.downloads.is_dir():
            for service in self.downloads.iterdir():
                for folder in list(service.iterdir()) if service.is_dir() else []:
                    if (self.products.path(folder.name)).is_dir():
                        shutil.rmtree(folder, ignore_errors=True)
                        removed.append(folder)
        if removed:
            log.info("removed %d leftover(s) of interrupted runs", len(removed))
        return removed


def _remove(path: Path) -> None:
    """A leftover file, folder or symlink (a view pointer being switched: the link goes, never its target)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
