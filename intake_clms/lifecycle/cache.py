"""The on-disk cache of one request: layout, persisted state, the inter-process lock, publishing.

Layout under ``<cache root>/<Request.key()>/``::

    state.json      per-request state (orders, stages, sizes, timestamps), written atomically
    .lock           file lock: one process at a time drives the lifecycle of this request
    work/           downloads (``*.part`` while incomplete), extraction temp folders, verified files
    product/        the published product: data files + manifest.json; complete or absent

A killed process leaves ``work/`` and ``state.json`` behind, so the next run
resumes (same orders, Range-resumed downloads) instead of starting over.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import filelock

from ..config import cache_dir
from ..params import Request
from .errors import CancelledError

MANIFEST = "manifest.json"


def safe_name(text: str, limit: int = 120) -> str:
    """A file-system-safe name for an id from a server (no separators, no ``..``, portable characters)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or "item"
    return cleaned[:limit]


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file beside ``path`` then rename: readers see the old or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CacheEntry:
    """The cache folder of one request."""

    def __init__(self, request: Request, root: str | os.PathLike[str] | None = None):
        self.request = request
        self.root = cache_dir(root) / request.key()
        self.state_path = self.root / "state.json"
        self.work = self.root / "work"
        self.product = self.root / "product"
        self._lock = filelock.FileLock(str(self.root / ".lock"))
        self._state_lock = threading.Lock()
        self._state: dict[str, Any] | None = None

    # -- published product

    def published(self) -> dict[str, Any] | None:
        """The manifest of the published product, or None (no network, no lock: publish is atomic)."""
        try:
            return json.loads((self.product / MANIFEST).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def publish(
        self, files: dict[str, Path], manifest: dict[str, Any], prepare: Callable[[Path], None] | None = None
    ) -> dict[str, Any]:
        """Move verified files into a staging folder, write the manifest, rename it to ``product/``.

        ``prepare(staging)`` runs before the rename (e.g. to index tiles), so the published
        folder is never written to again.
        """
        staging = Path(tempfile.mkdtemp(prefix=".publish-", dir=self.root))
        try:
            for rel, src in files.items():
                dest = staging / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dest)
            if prepare is not None:
                prepare(staging)
            write_json_atomic(staging / MANIFEST, manifest)
            if self.product.exists():  # a stale partial publish cannot exist (rename is atomic); a finished one wins
                shutil.rmtree(staging)
                return self.published() or manifest
            os.replace(staging, self.product)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(self.work, ignore_errors=True)
        return manifest

    # -- lock

    def acquire(self, cancel: threading.Event, poll: float = 0.2) -> None:
        """Take the inter-process lock, waiting while another process preloads the same request."""
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                self._lock.acquire(timeout=poll)
                return
            except filelock.Timeout:
                if cancel.is_set():
                    raise CancelledError("cancelled while waiting for another process preloading the same request") from None

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()

    # -- state

    def load_state(self) -> dict[str, Any]:
        """The persisted state (created empty on first use); call with the lock held."""
        with self._state_lock:
            try:
                self._state = json.loads(self.state_path.read_text())
            except (FileNotFoundError, ValueError):
                now = time.time()
                self._state = {"request": self.request.canonical(), "stage": "new", "products": {}, "created": now, "updated": now}
            return json.loads(json.dumps(self._state))

    def update(self, stage: str | None = None, product: str | None = None, **fields: Any) -> None:
        """Change the request's stage, or one product's stage and fields, and persist at once (atomically).

        With ``product``, ``stage`` is that product's stage (what the engine's resume and
        server-side cancel read back); without it, the request's.
        """
        with self._state_lock:
            if self._state is None:
                raise RuntimeError("load_state() first")
            now = time.time()
            if stage is not None and product is None:
                self._state["stage"] = stage
            if product is not None:
                entry = self._state["products"].setdefault(product, {})
                entry.update(fields)
                if stage is not None:
                    entry["stage"] = stage
                entry["updated"] = now
            self._state["updated"] = now
            write_json_atomic(self.state_path, self._state)

    def state_search(self, products: list[Any]) -> None:
        """Persist the search result, so a rerun neither searches nor orders again."""
        from dataclasses import asdict

        with self._state_lock:
            if self._state is None:
                raise RuntimeError("load_state() first")
            self._state["search"] = [asdict(p) for p in products]
            self._state["stage"] = "searched"
            self._state["updated"] = time.time()
            write_json_atomic(self.state_path, self._state)

    def product_state(self, product: str) -> dict[str, Any]:
        with self._state_lock:
            return dict((self._state or {}).get("products", {}).get(product, {}))

