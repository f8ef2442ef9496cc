"""The lifecycle engine: its unit of work is one server product, kept once in the product store.

For a request: reopen its view if published (offline; file sizes checked) -> search ->
for every hit not in the store, by access: ``download`` (order -> wait -> fetch when the
hit is ``ordered``, else fetch -> verify -> unpack) or ``window`` (read the pixels under
the bbox from the product's COGs, :mod:`.windows`) -> store (one rename) -> publish the
request's view -> open lazily through assembly, which ends every path in the contract
(:mod:`intake_clms.assemble.contract`).  A window request's stack is written as each
product is stored, while the others are read (:mod:`intake_clms.assemble.stack`): its
publish only closes the file.

Exactly-once ordering: a job's state is written before every step it guards
(``ordering`` before the POST, the order id before any poll).  An order whose answer
was lost, or a job state that cannot be read, makes the engine ask the service for an
order it may already have taken before ordering again.  One process at a time fetches a
product (a file lock per product), so overlapping requests, in one process or many,
share the work; one that waits says so (at growing intervals, naming the holder).  A rerun is
a new try: failed, cancelled or expired orders are not reused.  A transfer fault (a short
body, a dead link) fetches the same order's file again, within bounds, before any new
order; a complete, verified payload is kept until its product is stored, so a fault in
extraction or publish never costs a second download.  A read error in a stored file is
traced to its product by its hashes and the product fetched again.  Nothing here knows a protocol (services do) or a file layout (the store does).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock
import xarray as xr

from ..errors import (ClmsError, LocalStorageError, ParameterError, ServiceError, ServiceUnreachableError,
                      TooManyProductsError)
from ..params import Request
from ..store import FileRecord, Job, ProductRecord, Store, View, ViewProduct
from ..store.activity import holder as lock_holder
from ..store.fsutil import is_local_fault, local_faults, read_json, safe_name, storage_error, write_json_atomic
from ..store.jobs import SPENT
from ..store.products import damaged_on_read, hash_file
from .. import assemble
from ..assemble import Provenance
from . import windows
from ..net.clock import SYSTEM, Clock
from ..net.download import CHUNK, download
from ..errors import (AmbiguousOrderError, CancelledError, DamagedProductError, IntegrityError, OrderExpiredError,
                     OrderFailedError, PreloadError, QuotaError)
from .events import Progress
from .extract import Limits, classify, extract_zip, is_zip, require_data, sniff
from .handle import PreloadHandle, ProgressBar
from ..net.polling import PollPolicy, poll
from ..services.base import DOWNLOAD, WINDOW, Hit, Ready, Service
from .years import newest_year

log = logging.getLogger(__name__)

ORDER_TRIES = 3  # order POSTs after lost answers (each preceded by a look for the order the server took)
FETCH_TRIES = 3  # fetches of one order's file (short body, dropped transfer, expired link) before ordering anew
PAYLOAD = "payload.json"  # beside a complete, verified payload: its name, size and hashes (reused by a rerun)
WAIT_NOTICES = (0.0, 5.0, 15.0, 35.0, 75.0, 155.0, 315.0, 600.0)  # seconds of a lock wait at which it is logged
CANCEL_JOIN = 2.0  # seconds a server-side cancel may take before the local cancel returns


@dataclass
class Options:
    """Tunables of one preload (defaults suit the real services)."""

    workers: int = 4  # concurrent downloads
    poll: PollPolicy = field(default_factory=PollPolicy)
    chunk: int = CHUNK
    limits: Limits = field(default_factory=Limits)
    chunks: Any = None  # dask chunks for opening (None: the files' own)
    max_products: int = 20  # products a request may fetch without the user raising the limit
    entry: str = ""  # the catalog entry asked through (shown by `cache list` and `status`)
    decode: bool = True  # the contract's values: decoded (scale, offset, fill -> NaN), or the stored integers


def open_view(store: Store, request: Request, chunks: Any = None, options: Options | None = None) -> Any:
    """The published view of a request, opened lazily (the contract's Dataset, or a GeoDataFrame), or None.

    Never touches the network: every stored file's size is checked against its product's
    record (no hashing); a mismatch raises DamagedProductError naming the file.
    """
    options = options or Options()
    view = store.views.get(request.key())
    if view is None:
        return None
    provenance = Provenance(entry=view.entry or options.entry, dataset_id=request.dataset_id,
                            dataset_identifier=request.dataset_identifier or "", service=view.service,
                            access=view.access, products=tuple(vp.name for vp in view.products))
    if view.stack:  # window views: the request's pixels in one file of the view (one open, however long the series)
        return windows.open_stacked(store, view, chunks, options.decode, provenance)
    found = store.data_files(view)
    if found is None:
        return None  # a product was removed (cache clean): fetch it again
    files, times = found
    store.views.touch(view.key)
    store.activity().use([vp.key for vp in view.products])
    try:
        return assemble.open_files(view.data_kind, files, times, None if request.file else request.bbox,
                                   chunks=chunks, index_dir=store.views.path(view.key),
                                   names=view.names or None, period=(request.start, request.end),
                                   decode=options.decode, provenance=provenance,
                                   steps=[vp.start for vp in view.products], on_damage=damaged_on_read)
    except ClmsError:
        raise
    except Exception as exc:  # name the file a reader chokes on, not just the library's words
        for path in files:
            try:
                if view.data_kind == "netcdf":
                    xr.open_dataset(path).close()
            except Exception as one:  # noqa: BLE001
                raise IntegrityError(f"cannot read {path}: {one}; `intake-clms cache verify` checks every file") from exc
        raise IntegrityError(f"cannot open the request's files ({exc}); `intake-clms cache verify` checks them") from exc


class Engine:
    """Runs the lifecycle of one request through one service."""

    def __init__(
        self,
        request: Request,
        make_service: Callable[[threading.Event], Service],
        *,
        service_name: str,
        store: Store | None = None,
        options: Options | None = None,
        clock: Clock = SYSTEM,
    ):
        self.request = request
        self.make_service = make_service
        self.service_name = service_name
        self.store = store or Store()
        self.options = options or Options()
        self.clock = clock
        self._stacker: assemble.StackWriter | None = None  # a window request's stack, written as products come
        self._stack_rows: dict[str, int] = {}  # product key -> its time step in the stack

    # -- public

    def start(self, blocking: bool = True, progress_bar: bool | None = None) -> PreloadHandle:
        """Run now (blocking) or in a background thread; the handle reports either way."""
        handle = PreloadHandle()
        progress = Progress(handle)
        if ProgressBar.wanted(progress_bar):
            progress.add(ProgressBar())
        return handle.run(lambda cancel: self.run(progress, cancel), blocking=blocking,
                          on_exit=lambda: progress.stage("closed"))

    def run(self, progress: Progress, cancel: threading.Event) -> xr.Dataset:
        progress.stage("resolve")
        damaged: DamagedProductError | None = None
        try:
            cached = open_view(self.store, self.request, self.options.chunks, self.options)
            if cached is not None:
                self.store.remove_leftovers(quiet=True, once=True)  # a reopen also clears what killed runs left
                progress.stage("open")
                return cached
        except DamagedProductError as exc:
            log.warning("%s; fetching that product again", exc)
            damaged = exc
        except IntegrityError as exc:  # a read error in a stored file: which product is damaged, by its hashes?
            damaged = self._damage_behind(exc)
            log.warning("%s; fetching that product again", damaged)
        self.store.ensure_writable()
        self.store.remove_leftovers()
        if damaged is not None:
            self.store.products.remove(damaged.key)
        activity = self._activity = self.store.activity().listener(self.request.key(), self.options.entry,
                                                                   self.service_name)
        progress.add(activity)
        try:
            return self._fetch_and_open(progress, cancel)
        except ClmsError as exc:
            if damaged is None or isinstance(exc, CancelledError):
                raise
            raise DamagedProductError(damaged.key, damaged.path, f"{damaged.problem}; fetching it again failed: {exc}") from exc
        finally:
            self.store.activity().finish(self.request.key())

    def _damage_behind(self, exc: IntegrityError) -> DamagedProductError:
        """The damaged product behind a read error of the request's view (re-hashed and recorded), else ``exc``."""
        view = self.store.views.get(self.request.key())
        for vp in view.products if view is not None else ():
            problems = self.store.products.verify(vp.key, mark=True) if self.store.products.path(vp.key).is_dir() else []
            if problems:
                return problems[0]
        raise exc

    # -- stages

    def _fetch_and_open(self, progress: Progress, cancel: threading.Event) -> xr.Dataset:
        service = self.make_service(cancel)
        progress.stage("search")
        limit = self.options.max_products
        try:
            found = service.search(self.request, limit=limit)
        except ServiceUnreachableError as exc:
            raise ServiceUnreachableError(
                exc.service, None, f"{exc.message}. This request is not in the cache (a request is kept as asked: "
                "another bbox or other dates is another request, even inside one already read), so it needs "
                f"{exc.service}, which cannot be reached now") from exc
        except TooManyProductsError as exc:
            raise ParameterError(
                "max_products", f"{exc.service} has {exc.total} products for this request, more than "
                f"max_products={limit}: narrow the bbox or the dates, or raise max_products (the keyword, or "
                f"--max-products on the command line; products already in the cache are not fetched again)") from None
        hits = _unique([self._keyed(h) for h in newest_year(_unique(found), self.request, self.options.entry)])
        missing = [h for h in hits if not self._stored(h.key)]
        if len(hits) > limit and len(missing) <= limit:  # stopped early, but most are stored: the whole list
            hits = _unique([self._keyed(h) for h in newest_year(_unique(service.search(self.request)), self.request,
                                                                self.options.entry)])
            missing = [h for h in hits if not self._stored(h.key)]
        if not hits:
            raise ClmsError(f"{service.name}: no product matches {self.request.canonical()}")
        if len(missing) > limit:
            more = "at least " if len(hits) > limit else ""  # the search stopped as soon as it knew
            advice = ("raise max_products (the keyword, or --max-products on the command line)" if more else
                      f"pass max_products={len(missing)} (--max-products {len(missing)} on the command line)")
            raise ParameterError(
                "max_products", f"this request needs {more}{len(missing)} products not in the cache, more than "
                f"max_products={limit}: narrow the bbox or the dates, or {advice} to fetch them all (each may be "
                "an order on your quota)")
        for h in hits:
            progress.product(h.key, h.name, "pending" if h in missing else "cached")
        held: dict[str, filelock.FileLock] = {}
        self._stacker = self._stack_writer(hits)
        try:
            progress.stage("order")
            for h in missing:  # orders go out one by one before any wait: a quota stop costs no time
                if h.ordered and h.access == DOWNLOAD and self._try_lock(h.key, held) and not self._stored(h.key):
                    progress.product(h.key, h.name, "ordering")
                    self._ensure_order(service, h, cancel)
                    progress.product(h.key, h.name, "queued")
            progress.stage("download")
            self._fetch_all(service, missing, held, progress, cancel)
            fetched = {h.key for h in missing}
            for h in hits:  # what was stored before: its rows after the fetched ones (no network, no wait)
                if h.key not in fetched:
                    self._stack(h)
            progress.stage("publish")
            view = self._publish(service.name, hits)
        finally:
            for lock in list(held.values()):
                lock.release()
            held.clear()
            stacker, self._stacker = self._stacker, None
            if stacker is not None:  # not published (a failure): its file goes with its staging folder
                stacker.abandon("the request was not published")
                shutil.rmtree(stacker.target.parent, ignore_errors=True)
        progress.stage("open")
        ds = open_view(self.store, self.request, self.options.chunks, self.options)
        if ds is None:
            raise IntegrityError(f"the view of request {view.key} vanished while it was opened (a concurrent `cache clean`?)")
        from ..store.maintenance import apply_budget

        apply_budget(self.store)  # after the open: this request's products are in use, so they stay
        return ds

    def _keyed(self, hit: Hit) -> Hit:
        """A window hit stands for the product's window under this bbox: its own store key (known offline)."""
        if hit.access != WINDOW:
            return hit
        from dataclasses import replace

        product = hit.extra.get("product_key") or hit.key
        return replace(hit, key=windows.window_key(product, self.request.bbox, self.request.overview_level),
                       extra={**hit.extra, "product_key": product})

    def _stored(self, key: str) -> bool:
        try:
            return self.store.products.check(key) is not None
        except DamagedProductError as exc:
            log.warning("%s; fetching that product again", exc)
            self.store.products.remove(key)
            return False

    def _try_lock(self, key: str, held: dict[str, filelock.FileLock]) -> bool:
        lock = self.store.lock(key)
        try:
            with local_faults(self.store.locks):
                lock.acquire(timeout=0)
        except filelock.Timeout:
            return False  # another process fetches it: wait for it in the download stage
        held[key] = lock
        return True

    def _lock(self, hit: Hit, held: dict[str, filelock.FileLock], cancel: threading.Event,
              progress: Progress | None = None) -> None:
        """Take the product's lock, waiting while another process (or request) fetches it: the wait is logged at
        once, then at growing intervals (:data:`WAIT_NOTICES`), naming the holder and what it is doing."""
        waited, notices = 0.0, iter(WAIT_NOTICES)
        due: float | None = next(notices)
        while hit.key not in held:
            if self._try_lock(hit.key, held):
                return
            if due is not None and waited >= due:
                self._notice_wait(hit, waited, progress)
                due = next(notices, None)
                if due is None:  # then every WAIT_NOTICES[-1] seconds
                    due = waited + WAIT_NOTICES[-1]
                    notices = iter(())
            if cancel.wait(0.2):
                raise CancelledError("cancelled while another process fetches the same product")
            waited += 0.2

    def _notice_wait(self, hit: Hit, waited: float, progress: Progress | None) -> None:
        who = lock_holder(self.store.root, hit.key)
        doing = (f"process {who['pid']} on {who['host']} ({who.get('entry') or 'a preload'}) is {who['stage']} it"
                 + (f", {who['bytes']} of {who['total'] or '?'} bytes" if who.get("bytes") else "")
                 if who else "another request or process holds its lock")
        log.info("%s: waiting %.0f s for %s: %s", self.service_name, waited, hit.name, doing)
        if progress is not None:
            progress.product(hit.key, hit.name, "waiting")
        activity = getattr(self, "_activity", None)
        if activity is not None:
            activity.on_wait(hit.key, hit.name, doing, waited)

    # -- orders

    def _ensure_order(self, service: Service, hit: Hit, cancel: threading.Event) -> str:
        """The live order of this product on this service: reused, found again, or placed (persisted first)."""
        jobs = self.store.jobs
        job, unreadable = jobs.load(service.name, hit.key)
        if job is not None and job.stage == "ordered" and job.order_id:
            return job.order_id
        if (job is not None and job.stage == "ordering") or unreadable:
            found = self._find_order(service, hit, job.since if job is not None else 0.0)
            if found is not None:
                return self._ordered(job or Job(service.name, hit.key, "ordering"), found).order_id  # type: ignore[return-value]
        if job is not None and job.stage in SPENT:
            log.info("%s: %s: the last order %s (%s); ordering anew", service.name, hit.name, job.stage, job.message or "")
        now = self.clock.time()
        job = jobs.save(Job(service.name, hit.key, "ordering", since=now - 60.0, updated=now))
        for attempt in range(1, ORDER_TRIES + 1):
            try:
                return self._ordered(job, service.order(hit)).order_id  # type: ignore[return-value]
            except AmbiguousOrderError as exc:
                found = self._find_order(service, hit, job.since)
                if found is not None:
                    log.info("%s: the answer to the order of %s was lost, but the server has it", service.name, hit.name)
                    return self._ordered(job, found).order_id  # type: ignore[return-value]
                if attempt == ORDER_TRIES:
                    raise
                log.info("%s: %s; the server shows no order of %s, ordering again", service.name, exc.message, hit.name)
                self.clock.sleep(0.5 * attempt, cancel)
        raise AssertionError("unreachable")

    def _find_order(self, service: Service, hit: Hit, since: float) -> str | None:
        try:
            return service.find_order(hit, since)
        except ServiceError as exc:
            log.warning("%s: cannot look for an earlier order of %s (%s); it may be ordered twice", service.name, hit.name, exc)
            return None

    def _ordered(self, job: Job, order_id: str) -> Job:
        return self.store.jobs.save(job.moved("ordered", self.clock.time(), order_id=str(order_id)))

    def _spend(self, service: Service, hit: Hit, stage: str, message: str) -> None:
        job, _ = self.store.jobs.load(service.name, hit.key)
        if job is not None:
            self.store.jobs.save(job.moved(stage, self.clock.time(), message=message[:500]))

    # -- per product

    def _fetch_all(self, service: Service, hits: list[Hit], held: dict[str, filelock.FileLock],
                   progress: Progress, cancel: threading.Event) -> None:
        failures: dict[str, BaseException] = {}
        # window reads are short and many: four times the threads, so that every connection of the service's
        # budget (which bounds the requests) always has a request waiting for it, while threads write, hash and
        # store products (fewer left the last products' reads to the last rounds, with connections idle)
        threads = self.options.workers * (4 if any(h.access == WINDOW for h in hits) else 1)
        pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="intake-clms-dl")
        try:
            # products this request holds the lock of go first: a worker waits for another process's (or
            # request's) product only once its own are under way, so two requests never wait on each other
            work = sorted(hits, key=lambda h: h.key not in held)
            futures = {pool.submit(self._product, service, h, held, progress, cancel): h for h in work}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                for fut in done:
                    exc = fut.exception()
                    if exc is None:
                        continue
                    hit = futures[fut]
                    progress.product(hit.key, hit.name, "failed")
                    if isinstance(exc, (CancelledError, QuotaError, LocalStorageError)):
                        cancel.set()  # stop the others too
                        if isinstance(exc, CancelledError):
                            self._cancel_on_server(service, hits)
                        raise exc
                    failures[hit.key] = exc
                    log.error("%s: product %s failed: %s", service.name, hit.name, exc)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if failures:
            raise PreloadError(failures)

    def _product(self, service: Service, hit: Hit, held: dict[str, filelock.FileLock],
                 progress: Progress, cancel: threading.Event) -> None:
        """wait -> download -> verify -> unpack -> store, for one product (under its lock, released at the end)."""
        self._lock(hit, held, cancel, progress)
        try:
            self._stack(hit, self._fetch_one(service, hit, progress, cancel))
        except OSError as exc:  # a disk-side fault anywhere in the product's steps is the user's to fix
            if is_local_fault(exc):
                raise storage_error(exc, self.store.root) from None
            raise
        finally:
            lock = held.pop(hit.key, None)
            if lock is not None:
                lock.release()

    def _fetch_one(self, service: Service, hit: Hit, progress: Progress,
                   cancel: threading.Event) -> list[tuple[str, Any]] | None:
        """Fetch and store one product; a window product's kept files' names with the windows read (else None)."""
        if self._stored(hit.key):  # another process (or request) stored it meanwhile
            progress.product(hit.key, hit.name, "cached")
            self.store.jobs.remove(service.name, hit.key)
            return None
        if hit.access == WINDOW:
            progress.product(hit.key, hit.name, "reading")
            _, read = windows.fetch(self.store, service, hit, hit.extra.get("product_key", hit.key),
                                    self.request.bbox, self.request.overview_level,
                                    lambda done, total: progress.bytes(hit.key, done, total), cancel, self.clock.time())
            progress.product(hit.key, hit.name, "ready")
            return read
        folder = self.store.download_dir(service.name, hit.key)
        order_id: str | None = None
        kept = self._kept_payload(folder, hit)
        if kept is not None:  # a rerun after a fault in extraction or publish: no second order, no download
            got, checks = kept
            log.info("%s: %s: reusing the complete download %s (size and hashes checked)", service.name, hit.name,
                     got.path.name)
        else:
            got, checks, order_id = self._transfer(service, hit, folder, progress, cancel)
        try:
            progress.product(hit.key, hit.name, "extracting")
            self._store(service.name, hit, got.path, got.size, got.hashes, checks, cancel)
        except IntegrityError as exc:
            shutil.rmtree(folder, ignore_errors=True)  # a bad payload is never reused: a rerun fetches it anew
            if order_id is not None or kept is not None:
                self._spend(service, hit, "failed", str(exc))
            raise
        self.store.jobs.remove(service.name, hit.key)
        shutil.rmtree(folder, ignore_errors=True)  # the payload is kept until the product it makes is stored
        progress.product(hit.key, hit.name, "ready")

    def _transfer(self, service: Service, hit: Hit, folder: Path, progress: Progress,
                  cancel: threading.Event) -> tuple[Any, dict[str, str], str | None]:
        """Order (if needed), wait, download and verify one product's payload; returns (download, checks, order id).

        A transfer fault (a short or cut body, bytes that do not match, a dead link) fetches the same order's
        file again, up to :data:`FETCH_TRIES` times in all, before the order is given up; a dead link asks the
        same order once more (its status may carry a new link); a new order is placed only when the server
        forgot the order or its link stayed dead, and only once.
        """
        fetches, reordered, renewed = 0, False, False
        while True:
            order_id = self._ensure_order(service, hit, cancel) if hit.ordered else None
            fetching = False
            try:
                ready = Ready(size=None, name=hit.name, checksums=dict(hit.checksums))
                if order_id is not None:
                    progress.product(hit.key, hit.name, "queued")
                    ready = poll(lambda: service.poll(order_id), policy=self.options.poll, cancel=cancel,
                                 what=f"order of {hit.name}", service=service.name, clock=self.clock)
                progress.product(hit.key, hit.name, "downloading")
                name = safe_name(ready.name or hit.name)
                checks = {**hit.checksums, **ready.checksums}
                fetching = True
                got = download(lambda offset: service.fetch(hit, order_id, offset), folder / name,
                               service=service.name, chunk=self.options.chunk, cancel=cancel,
                               progress=lambda done, total: progress.bytes(hit.key, done, total),
                               algorithms=[a for a in checks if a in ("md5", "sha256", "sha1")])
                try:
                    self._verify(hit, ready, got.size, got.hashes, checks)
                except IntegrityError:
                    got.path.unlink(missing_ok=True)  # bad bytes are never kept
                    raise
                with local_faults(folder):
                    write_json_atomic(folder / PAYLOAD, {"name": got.path.name, "size": got.size,
                                                         "hashes": got.hashes, "checks": checks})
                return got, checks, order_id
            except OrderExpiredError as exc:
                if fetching and not renewed and order_id is not None:  # a dead link: ask the same order again
                    renewed = True
                    log.info("%s: %s (%s); asking the same order for its file again", service.name, hit.name,
                             exc.message)
                    continue
                if reordered or order_id is None:
                    raise
                reordered, renewed, fetches = True, False, 0
                log.info("%s: %s (%s); ordering again", service.name, hit.name, exc.message)
                self._spend(service, hit, "expired", exc.message)
                shutil.rmtree(folder, ignore_errors=True)
            except OrderFailedError as exc:
                self._spend(service, hit, "failed", exc.message)  # a rerun orders anew
                raise
            except (IntegrityError, ServiceError) as exc:
                if not (fetching and _transfer_fault(exc)):
                    raise
                if fetches + 1 < FETCH_TRIES:
                    fetches += 1
                    if isinstance(exc, IntegrityError):  # what was received is suspect: start that file over
                        for p in folder.glob("*.part"):
                            p.unlink(missing_ok=True)
                    log.info("%s: %s: %s; fetching the same order's file again (%d/%d)", service.name, hit.name,
                             exc, fetches, FETCH_TRIES - 1)
                    self.clock.sleep(min(0.5 * fetches, 5.0), cancel)
                    continue
                if isinstance(exc, IntegrityError) and order_id is not None:
                    self._spend(service, hit, "failed", str(exc))  # a rerun orders anew
                raise

    def _kept_payload(self, folder: Path, hit: Hit) -> tuple[Any, dict[str, str]] | None:
        """A complete payload an earlier run downloaded and verified, if its size and hashes still match."""
        from ..net.download import Downloaded

        meta, _ = read_json(folder / PAYLOAD)
        if not isinstance(meta, dict):
            return self._unrecorded_payload(folder, hit)
        try:
            path = folder / safe_name(str(meta["name"]))
            size, hashes, checks = int(meta["size"]), dict(meta["hashes"]), dict(meta.get("checks") or {})
            if path.stat().st_size != size or not hashes or hash_file(path, tuple(hashes)) != hashes:
                raise ValueError("changed since it was verified")
        except (OSError, KeyError, TypeError, ValueError) as exc:
            log.info("the download of %s in %s cannot be reused (%s); fetching it again", hit.name, folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return Downloaded(path, size, hashes), checks

    def _unrecorded_payload(self, folder: Path, hit: Hit) -> tuple[Any, dict[str, str]] | None:
        """A complete download a killed run renamed into place but did not record (the kill fell between the
        rename and ``payload.json``): reused when the catalogue gave its size and a checksum (CDSE) and the file
        matches both; otherwise (the checks come with the order) it is fetched again."""
        from ..net.download import Downloaded

        checks = {a: str(v).lower() for a, v in hit.checksums.items() if a in ("md5", "sha256", "sha1")}
        path = folder / safe_name(hit.name)
        try:
            if not checks or hit.size is None or not path.is_file() or path.stat().st_size != hit.size:
                return None
            hashes = hash_file(path, tuple(checks))
            if any(hashes.get(a, "").lower() != v for a, v in checks.items()):
                return None
            with local_faults(folder):
                write_json_atomic(folder / PAYLOAD, {"name": path.name, "size": hit.size, "hashes": hashes,
                                                     "checks": dict(hit.checksums)})
        except OSError:
            return None
        return Downloaded(path, hit.size, hashes), dict(hit.checksums)

    @staticmethod
    def _verify(hit: Hit, ready: Ready, size: int, hashes: dict[str, str], checks: dict[str, str]) -> None:
        if ready.size is not None and size != ready.size:
            raise IntegrityError(f"{hit.name}: downloaded {size} bytes, the server announced {ready.size}")
        for algo, expected in checks.items():
            if algo in hashes and hashes[algo].lower() != str(expected).lower():
                raise IntegrityError(f"{hit.name}: {algo} of the download is {hashes[algo]}, the server announced {expected}")

    def _store(self, service: str, hit: Hit, payload: Path, size: int, hashes: dict[str, str],
               checks: dict[str, str], cancel: threading.Event) -> ProductRecord:
        products = self.store.products
        staging = products.new_staging(hit.key)
        try:
            data_dir = staging / "data"
            member_hashes: dict[str, dict[str, str]] = {}  # relative path -> its hashes
            with local_faults(staging):
                if payload.name.lower().endswith(".zip") or is_zip(payload):
                    extracted: dict[str, str] = {}
                    extract_zip(payload, data_dir, self.options.limits, cancel=cancel, hashes=extracted)
                    member_hashes = {rel: {"sha256": h} for rel, h in extracted.items()}
                else:  # the payload is the data file: its hashes are the ones verified while streaming
                    data_dir.mkdir()
                    _link_or_copy(payload, data_dir / payload.name)  # the payload stays until the product is stored
                    member_hashes[payload.name] = dict(hashes)
                require_data(data_dir, payload.name)
                data, other = classify(data_dir)
            files = []
            for path, role in [(p, "data") for p in data] + [(p, "metadata") for p in other]:
                rel = path.relative_to(data_dir).as_posix()
                digest = member_hashes.get(rel, {})
                files.append(FileRecord(path=f"data/{rel}", size=path.stat().st_size, hashes=digest, role=role,
                                        kind=(sniff(path) or assemble.data_kind([path])) if role == "data" else None))
            record = ProductRecord(
                key=hit.key, name=hit.name, files=tuple(files), service=service, start=hit.start, end=hit.end,
                payload={"name": payload.name, "size": size, "hashes": hashes, "announced": checks},
                published=self.clock.time())
            stored = products.put(staging, record)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return stored

    def _cancel_on_server(self, service: Service, hits: list[Hit]) -> None:
        """Tell the server too; a refused or hanging call never blocks the local cancel.

        A job the server confirms cancelled is marked so (a rerun orders anew); one it did not
        confirm stays live (a rerun finds it again instead of spending quota on a second order).
        """
        cancel = getattr(service, "cancel", None)
        if cancel is None:
            return
        jobs = []
        for h in hits:
            job, _ = self.store.jobs.load(service.name, h.key)
            if job is not None and job.stage == "ordered" and job.order_id:
                jobs.append(job)

        def one(job: Job) -> None:
            try:
                cancel(job.order_id)
            except Exception as exc:  # noqa: BLE001 - the local cancel stands whatever the server says
                log.info("%s: the server did not take the cancel (%s)", service.name, exc)
                return
            try:
                self.store.jobs.save(job.moved("cancelled", self.clock.time(), message="cancelled at the user's request"))
            except ClmsError:
                pass

        workers = [threading.Thread(target=one, args=(j,), daemon=True) for j in jobs]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=CANCEL_JOIN / max(1, len(workers)))

    # -- the request's view

    def _stack_writer(self, hits: list[Hit]) -> assemble.StackWriter | None:
        """For a request of kept windows: the stack of its view, written as the products are stored (see
        :mod:`intake_clms.assemble.stack`), in a staging folder that the view is then published from."""
        if not hits or any(h.access != WINDOW for h in hits):
            return None
        ordered = _in_view_order(hits)
        self._stack_rows = {h.key: i for i, h in enumerate(ordered)}
        staging = self.store.views.new_staging(self.request.key())
        return assemble.StackWriter(staging / windows.STACK, [h.start for h in ordered], on_damage=damaged_on_read)

    def _stack(self, hit: Hit, read: list[tuple[str, Any]] | None = None) -> None:
        """Product ``hit`` is stored: its windows become its time step of the stack (when there is one), from
        ``read`` (the windows just read, by kept file name) or else from its kept files.  A stack that cannot
        be written this way is left to the publish; a product read error is the publish's to report, so it
        never fails the fetch here."""
        writer = self._stacker
        if writer is None or writer.broken is not None:
            return
        try:
            if read is not None:
                writer.add_windows(self._stack_rows[hit.key], read)
                return
            rec = self.store.products.check(hit.key)
            if rec is None:
                writer.abandon(f"{hit.name} is not in the store")
                return
            writer.add(self._stack_rows[hit.key], [self.store.products.path(hit.key) / f.path for f in rec.data()])
        except Exception as exc:  # noqa: BLE001 - see the docstring
            writer.abandon(str(exc))

    def _publish(self, service: str, hits: list[Hit]) -> View:
        """The view of this request: its products in time order, the data kind they share, its indexes."""
        ordered = _in_view_order(hits)
        kinds: set[str] = set()
        files: list[Path] = []
        times: list[str | None] = []
        for h in ordered:
            rec = self.store.products.check(h.key)
            if rec is None:
                raise IntegrityError(f"product {h.name} is not in the store after its download (removed meanwhile?)")
            for f in rec.data():
                kinds.add(f.kind or "")
                files.append(self.store.products.path(h.key) / f.path)
                times.append(h.start)
        if len(kinds) != 1 or "" in kinds:
            raise IntegrityError("the products hold no NetCDF, GeoTIFF or vector file" if not kinds - {""}
                                 else f"the products mix {', '.join(sorted(kinds))} files; cannot assemble one dataset")
        kind = kinds.pop()
        names: tuple[str, ...] = ()
        access = WINDOW if any(h.access == WINDOW for h in ordered) else DOWNLOAD
        stacked = access == WINDOW and kind == "geotiff"
        if kind == "geotiff" and not stacked:  # each file's variable, from its header: opening the view reads none
            from ..assemble.tiles import names_of

            names = tuple(names_of(files))
        view = View(
            key=self.request.key(), request=self.request.canonical(), service=service, data_kind=kind,
            access=access, bbox=tuple(self.request.bbox), entry=self.options.entry, created=self.clock.time(), names=names,
            products=tuple(ViewProduct(h.key, h.name, h.start, h.end, access=h.access) for h in ordered),
        )

        writer = self._stacker if stacked else None

        def index(staging: Path) -> None:
            if stacked:  # kept windows: stacked into one file of the view, so a reopen is one open
                from dataclasses import replace

                done = writer.finish() if writer is not None else None  # written while the reads ran
                if done is None:
                    done = assemble.write_stack(files, times, [h.start for h in ordered], staging / windows.STACK,
                                                on_damage=damaged_on_read)
                size, found = done
                holder["view"] = replace(view, stack={"file": windows.STACK, "size": size}, names=tuple(found))
            elif kind == "geotiff":  # written once, before the view is published
                from ..assemble.tiles import index as index_tiles

                index_tiles(files, times, names, staging)

        holder = {"view": view}
        staging = writer.target.parent if writer is not None else None
        published = self.store.views.publish(view, prepare=index, final=lambda: holder["view"], staging=staging)
        self._stacker = None  # its folder is the view's version now
        return published


def _transfer_fault(exc: BaseException) -> bool:
    """A fault of one transfer that fetching the same file again may cure (not a refusal, quota or absence)."""
    from ..services import ProductNotThereError

    if isinstance(exc, (CancelledError, QuotaError, ProductNotThereError, OrderExpiredError, LocalStorageError)):
        return False
    if isinstance(exc, IntegrityError):
        return not isinstance(exc, DamagedProductError)
    return isinstance(exc, ServiceError) and (exc.status is None or exc.status >= 500)


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` with ``source``'s bytes: a hard link (no copy, no second disk space), else a copy."""
    try:
        os.link(source, target)
    except OSError as exc:
        if is_local_fault(exc) and exc.errno not in (errno.EPERM, errno.EACCES):
            raise
        shutil.copyfile(source, target)


def _in_view_order(hits: list[Hit]) -> list[Hit]:
    """A view's products in time order (the order of its time steps)."""
    return sorted(hits, key=lambda h: (h.start or "", h.key))


def _unique(hits: list[Hit]) -> list[Hit]:
    """One hit per product key (a search may list a product twice)."""
    seen: dict[str, Hit] = {}
    for h in hits:
        seen.setdefault(h.key, h)
    return list(seen.values())


__all__ = ["DOWNLOAD", "WINDOW", "Engine", "Options", "open_view"]
