"""The lifecycle engine: resolve -> search -> order -> wait -> download -> verify -> extract ->
assemble -> publish -> open, driving any :class:`~intake_clms.lifecycle.backend.Backend`.

One process at a time drives a request (file lock); its progress is persisted
in the cache's state file after every step, so a killed run resumes without a
second order and with Range-resumed downloads.  A published product reopens
with no network call at all.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xarray as xr

from ..errors import ClmsError
from ..params import Request
from . import assemble
from .backend import Backend, Product, Ready
from .cache import CacheEntry, safe_name
from .download import CHUNK, download
from .errors import CancelledError, IntegrityError, OrderExpiredError, PreloadError, QuotaError
from .extract import Limits, classify, extract_zip, is_zip, require_data, sniff
from .handle import PreloadHandle
from .polling import PollPolicy, poll

log = logging.getLogger(__name__)


@dataclass
class Options:
    """Tunables of one preload (defaults suit the real services)."""

    workers: int = 4  # concurrent downloads
    poll: PollPolicy = field(default_factory=PollPolicy)
    chunk: int = CHUNK
    limits: Limits = field(default_factory=Limits)
    chunks: Any = None  # dask chunks for opening (None: the files' own)


def open_cached(request: Request, cache_root: str | os.PathLike[str] | None = None, chunks: Any = None) -> xr.Dataset | None:
    """The published product of a request, opened lazily, or None; never touches the network."""
    entry = CacheEntry(request, cache_root)
    manifest = entry.published()
    if manifest is None:
        return None
    # crop to this request's area: a pre-packaged file is cached once for every area asked of it
    return assemble.open_manifest(entry.product, {**manifest, "bbox": list(request.bbox)}, chunks)


def _quietly(cancel: Callable[[str], None], order_id: str, service: str) -> None:
    try:
        cancel(order_id)
    except Exception as exc:  # noqa: BLE001 - the local cancel stands whatever the server says
        log.info("%s: the server did not take the cancel (%s)", service, exc)


class Engine:
    """Runs the lifecycle of one request against one backend."""

    def __init__(
        self,
        request: Request,
        backend_factory: Callable[[threading.Event], Backend],
        *,
        cache_root: str | os.PathLike[str] | None = None,
        options: Options | None = None,
    ):
        self.request = request
        self.backend_factory = backend_factory
        self.entry = CacheEntry(request, cache_root)
        self.options = options or Options()

    # -- public

    def start(self, blocking: bool = True, progress_bar: bool | None = None) -> PreloadHandle:
        """Run now (blocking) or in a background thread; the handle reports either way."""
        handle = PreloadHandle(progress_bar)
        if blocking:
            self._run(handle)
        else:
            handle._thread = threading.Thread(target=self._run, args=(handle,), name="intake-clms-preload", daemon=True)
            handle._thread.start()
        return handle

    # -- stages

    def _run(self, handle: PreloadHandle) -> None:
        try:
            handle._finish(self._lifecycle(handle))
        except BaseException as exc:  # reported through the handle, raised by wait()
            handle._finish(error=exc)

    def _lifecycle(self, handle: PreloadHandle) -> xr.Dataset:
        handle._set_stage("resolve")
        cached = open_cached(self.request, self.entry.root.parent, self.options.chunks)
        if cached is not None:
            return cached
        cancel = handle.cancel_event
        handle._set_stage("lock")
        self.entry.acquire(cancel)
        try:
            if self.entry.published() is not None:  # another process finished while we waited
                return open_cached(self.request, self.entry.root.parent, self.options.chunks)  # type: ignore[return-value]
            backend = self.backend_factory(cancel)
            state = self.entry.load_state()
            products = self._search(handle, backend, state)
            handle._open_bar()
            for p in products:
                handle._product(p.id, p.name)
            self._order_all(handle, backend, products)
            self._process_all(handle, backend, products)
            handle._set_stage("publish")
            manifest = self._publish(products)
        finally:
            self.entry.release()
        handle._set_stage("open")
        return assemble.open_manifest(self.entry.product, {**manifest, "bbox": list(self.request.bbox)}, self.options.chunks)

    def _search(self, handle: PreloadHandle, backend: Backend, state: dict[str, Any]) -> list[Product]:
        handle._set_stage("search")
        found = state.get("search")
        if found is None:
            products = backend.search(self.request)
            if not products:
                raise ClmsError(f"{backend.service}: no product matches {self.request.canonical()}")
            self.entry.state_search(products)
            return products
        return [Product(**p) for p in found]

    def _order_all(self, handle: PreloadHandle, backend: Backend, products: list[Product]) -> None:
        """Orders go out one by one before any wait, so a quota stop happens before any time is spent."""
        handle._set_stage("order")
        for p in products:
            st = self.entry.product_state(p.id)
            if st.get("stage") == "ready" or st.get("order_id"):
                continue
            order_id = backend.order(p)
            self.entry.update(product=p.id, order_id=order_id, stage="ordered", ordered_at=time.time())
            handle.products[p.id].stage = "ordered"

    def _process_all(self, handle: PreloadHandle, backend: Backend, products: list[Product]) -> None:
        handle._set_stage("download")
        failures: dict[str, BaseException] = {}
        pool = ThreadPoolExecutor(max_workers=max(1, self.options.workers), thread_name_prefix="intake-clms-dl")
        try:
            futures = {pool.submit(self._process, handle, backend, p): p for p in products}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                for fut in done:
                    exc = fut.exception()
                    if exc is None:
                        continue
                    pid = futures[fut].id
                    handle.products[pid].error, handle.products[pid].stage = exc, "failed"
                    if isinstance(exc, (CancelledError, QuotaError)):
                        handle.cancel_event.set()  # stop the others too
                        if isinstance(exc, CancelledError):
                            self._cancel_on_server(backend, products)
                        raise exc
                    failures[pid] = exc
                    log.error("%s: product %s failed: %s", backend.service, pid, exc)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if failures:
            raise PreloadError(failures)

    def _process(self, handle: PreloadHandle, backend: Backend, p: Product) -> None:
        """wait -> download -> verify -> extract for one product, each step persisted."""
        status = handle.products[p.id]
        st = self.entry.product_state(p.id)
        if st.get("stage") == "ready" and self._ready_dir(p).is_dir():
            status.stage = "ready"
            status.bytes = status.total = int(st.get("size") or 0)
            return
        cancel = handle.cancel_event
        name, target = "", Path()
        for attempt in range(2):  # a second round only after the server forgot the order or its link died
            order_id = st.get("order_id") or self._reorder(backend, p)
            status.stage = "queued"
            try:
                ready = self._wait(backend, order_id, p, cancel)
                status.stage = "downloading"
                name = safe_name(ready.name or p.name)
                target = self.entry.work / "downloads" / safe_name(p.id) / name
                self.entry.update(product=p.id, stage="downloading", name=name, size=ready.size, catalogue_size=p.size)
                if not target.exists():
                    download(
                        lambda offset: backend.fetch(order_id, offset),
                        target,
                        service=backend.service,
                        chunk=self.options.chunk,
                        progress=lambda done, total: handle._bytes(p.id, done, total),
                        cancel=cancel,
                    )
                break
            except OrderExpiredError as exc:
                if attempt:
                    raise
                log.info("%s: %s (%s); ordering again", backend.service, p.name, exc.message)
                self.entry.update(product=p.id, order_id=None, stage="expired")
                shutil.rmtree(self.entry.work / "downloads" / safe_name(p.id), ignore_errors=True)
                st = {}
        size = target.stat().st_size
        handle._bytes(p.id, size, size)
        if ready.size is not None and size != ready.size:
            target.unlink()
            raise IntegrityError(f"{p.name}: downloaded {size} bytes, the server announced {ready.size}")
        status.stage = "extracting"
        self.entry.update(product=p.id, stage="verified", size=size)
        ready_dir = self._ready_dir(p)
        shutil.rmtree(ready_dir, ignore_errors=True)
        try:
            if name.lower().endswith(".zip") or is_zip(target):
                extract_zip(target, ready_dir, self.options.limits, cancel=cancel)
            else:
                ready_dir.mkdir(parents=True)
                os.replace(target, ready_dir / name)
            require_data(ready_dir, name)
        except IntegrityError:
            shutil.rmtree(ready_dir, ignore_errors=True)  # no half-ready folder (e.g. an archive without data)
            target.unlink(missing_ok=True)  # a bad archive is not kept: a rerun fetches it anew
            self.entry.update(product=p.id, stage="failed", order_id=None)
            raise
        target.unlink(missing_ok=True)
        self.entry.update(product=p.id, stage="ready")
        status.stage = "ready"

    def _wait(self, backend: Backend, order_id: str, p: Product, cancel: threading.Event) -> Ready:
        def check() -> tuple[str, Ready | None]:
            return backend.poll(order_id)

        return poll(check, policy=self.options.poll, cancel=cancel, what=f"order of {p.name}", service=backend.service)

    def _cancel_on_server(self, backend: Backend, products: list[Product]) -> None:
        """Tell the server too, when the backend can; a refused or hanging call never blocks the local cancel."""
        cancel = getattr(backend, "cancel", None)
        if cancel is None:
            return
        orders = []
        for p in products:
            st = self.entry.product_state(p.id)
            if st.get("order_id") and st.get("stage") in ("ordered", "downloading", "expired"):
                orders.append(st["order_id"])
        workers = [threading.Thread(target=_quietly, args=(cancel, o, backend.service), daemon=True) for o in orders]
        for w in workers:
            w.start()
        deadline = time.monotonic() + 2.0
        for w in workers:
            w.join(timeout=max(0.0, deadline - time.monotonic()))

    def _reorder(self, backend: Backend, p: Product) -> str:
        order_id = backend.order(p)
        self.entry.update(product=p.id, order_id=order_id, stage="ordered", ordered_at=time.time())
        return order_id

    def _ready_dir(self, p: Product) -> Path:
        return self.entry.work / "ready" / safe_name(p.id)

    def _publish(self, products: list[Product]) -> dict[str, Any]:
        """Data files go into the manifest; metadata and documents are kept beside them, listed apart."""
        files: dict[str, Path] = {}
        entries: list[dict[str, Any]] = []
        metadata: list[str] = []
        kinds: set[str] = set()
        for p in sorted(products, key=lambda q: (q.start or "", q.id)):
            base = self._ready_dir(p)
            data, other = classify(base)
            for path in data:
                rel = f"data/{safe_name(p.id)}/{path.relative_to(base).as_posix()}"
                files[rel] = path
                entries.append({"path": rel, "product": p.id, "start": p.start, "end": p.end})
                kinds.add(sniff(path) or assemble.data_kind([path]))
            for path in other:
                rel = f"data/{safe_name(p.id)}/{path.relative_to(base).as_posix()}"
                files[rel] = path
                metadata.append(rel)
        if len(kinds) != 1:
            raise IntegrityError(
                "the products hold no NetCDF or GeoTIFF file" if not kinds
                else "the products mix NetCDF and GeoTIFF files; cannot assemble one Dataset"
            )
        manifest = {
            "kind": kinds.pop(),
            "files": entries,
            "metadata": metadata,
            "bbox": list(self.request.bbox),
            "request": self.request.canonical(),
            "published": time.time(),
        }

        def index(staging: Path) -> None:
            if manifest["kind"] == "geotiff":  # the mosaic index is written once, before the product is published
                assemble.index_geotiff([staging / e["path"] for e in entries], [e["start"] for e in entries])

        return self.entry.publish(files, manifest, prepare=index)
