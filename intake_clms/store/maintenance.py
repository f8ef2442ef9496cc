"""Looking after the store: list, verify, clean (and the size budget), what is running.

What ``intake-clms cache list|verify|clean`` and ``intake-clms status`` call; each has a
Python equivalent here.  Cleaning is least recently used first and never removes a
product that a live process is fetching (its lock is held) or that an open request of a
live process reads (listed in its activity record), nor a request view a live process has
open (any of its versions, whatever the option); a product is removed whole, in one
rename, so a reader never sees half of one.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import filelock

from ..errors import DamagedProductError
from . import Store
from .activity import in_use, live_records
from .fsutil import tree_size
from .jobs import SPENT

log = logging.getLogger(__name__)


@dataclass
class ProductRow:
    key: str
    name: str
    service: str
    size: int
    last_used: float
    status: str  # complete | in progress | failed | damaged
    why: str = ""
    requests: list[str] = field(default_factory=list)


@dataclass
class RequestRow:
    key: str
    entry: str
    service: str
    products: int
    size: int
    last_used: float
    status: str  # complete | incomplete


@dataclass
class Listing:
    requests: list[RequestRow]
    products: list[ProductRow]


def list_cache(store: Store) -> Listing:
    """Requests and products with readable names, service, size, last use and status (no hashing)."""
    products: dict[str, ProductRow] = {}
    for key in store.products.keys():
        path = store.products.path(key)
        try:
            rec = store.products.check(key)  # sizes and damage found by reads: a truncated product is not complete
        except DamagedProductError as exc:
            products[key] = ProductRow(key, key, "?", tree_size(path), path.stat().st_mtime, "damaged", exc.problem)
            continue
        if rec is None:
            continue
        products[key] = ProductRow(key, rec.name, rec.service, rec.size, rec.published, "complete")
    for job in store.jobs.all():
        if job.key in products:
            continue
        status = "failed" if job.stage in SPENT else "in progress"
        products[job.key] = ProductRow(job.key, job.key, job.service, 0, job.updated, status,
                                       f"{job.stage}: {job.message}" if job.message else job.stage)
    requests = []
    for key in store.views.keys():
        view = store.views.get(key)
        if view is None:
            continue
        used = store.views.last_used(key)
        have = [products.get(vp.key) for vp in view.products]
        for row in have:
            if row is not None:
                row.requests.append(key)
                row.last_used = max(row.last_used, used)
        complete = all(r is not None and r.status == "complete" for r in have)
        requests.append(RequestRow(key, view.entry or view.request.get("dataset_identifier") or view.request.get("dataset_id", ""),
                                   view.service, len(view.products), sum(r.size for r in have if r is not None), used,
                                   "complete" if complete else "incomplete"))
    return Listing(sorted(requests, key=lambda r: -r.last_used), sorted(products.values(), key=lambda r: -r.last_used))


def verify_cache(store: Store) -> list[DamagedProductError]:
    """Every problem of every stored product (sizes and content hashes)."""
    problems: list[DamagedProductError] = []
    for key in store.products.keys():
        problems.extend(store.products.verify(key, mark=True))  # so that `cache list` and `clean --failed` see it
    return problems


def parse_size(text: str) -> int:
    """'500M', '2G', '1.5T', '1000' (bytes) -> bytes."""
    units = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    t = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in units else ""
    try:
        return int(float(t[: len(t) - len(unit)] or "x") * units[unit])
    except ValueError:
        from ..errors import ParameterError

        raise ParameterError("size", f"cannot read {text!r}; expected a size such as 500M, 2G or 1000000") from None


def parse_age(text: str) -> float:
    """'30d', '12h', '90m', '3600' (seconds) -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    t = str(text).strip().lower()
    unit = t[-1:] if t[-1:] in units else "s"
    try:
        return float(t.rstrip("smhdw") or "x") * units[unit]
    except ValueError:
        from ..errors import ParameterError

        raise ParameterError("older_than", f"cannot read {text!r}; expected an age such as 30d, 12h or 90m") from None


def _free(store: Store, key: str) -> bool:
    """Whether no process is fetching this product now (its lock can be taken)."""
    lock = store.lock(key)
    try:
        lock.acquire(timeout=0)
    except (filelock.Timeout, OSError):
        return False
    lock.release()
    return True


def clean_cache(store: Store, *, failed: bool = False, older_than: float | None = None, max_size: int | None = None,
                now: float | None = None) -> list[str]:
    """Remove what is asked, least recently used first; returns what was removed (names).

    ``failed``: job states of failed, cancelled or expired orders, and damaged products (sizes, or damage a read
    or ``cache verify`` found), kept windows included.
    ``older_than`` (seconds): requests and products not used for that long.
    ``max_size`` (bytes): products (LRU) until the store fits.  Leftovers of dead processes always go.
    """
    now = time.time() if now is None else now
    removed = [str(p) for p in store.remove_leftovers()]
    busy = in_use(store.root)
    listing = list_cache(store)
    if failed:
        for job in store.jobs.all():
            if job.stage in SPENT:
                store.jobs.remove(job.service, job.key)
                removed.append(f"job {job.service}/{job.key} ({job.stage})")
        for row in listing.products:
            if row.status == "damaged" and row.key not in busy and _free(store, row.key):
                store.products.remove(row.key)
                removed.append(f"product {row.name} (damaged)")
    gone: set[str] = set()
    if older_than is not None:
        for req in listing.requests:
            if now - req.last_used > older_than and not store.views.in_use(req.key, busy):
                store.views.remove(req.key)
                removed.append(f"request {req.key} ({req.entry})")
        for row in listing.products:
            if row.status == "complete" and now - row.last_used > older_than and row.key not in busy and _free(store, row.key):
                store.products.remove(row.key)
                gone.add(row.key)
                removed.append(f"product {row.name}")
    if max_size is not None:
        rows = [r for r in listing.products if r.status == "complete" and r.key not in gone]
        total = sum(r.size for r in rows)
        for row in sorted(rows, key=lambda r: r.last_used):
            if total <= max_size:
                break
            if row.key in busy or not _free(store, row.key):
                continue
            store.products.remove(row.key)
            gone.add(row.key)
            total -= row.size
            removed.append(f"product {row.name} ({row.size} bytes)")
    if gone:  # views that named a removed product would only fetch it again: drop them too
        for req in listing.requests:
            view = store.views.get(req.key)
            if view is None or store.views.in_use(req.key, busy):
                continue
            if any(vp.key in gone for vp in view.products):
                store.views.remove(req.key)
    return removed


def apply_budget(store: Store) -> list[str]:
    """``INTAKE_CLMS_CACHE_MAX`` (optional, e.g. 20G): clean LRU products down to it (after each publish)."""
    budget = os.environ.get("INTAKE_CLMS_CACHE_MAX")
    if not budget:
        return []
    removed = clean_cache(store, max_size=parse_size(budget))
    if removed:
        log.info("cache budget %s: removed %d item(s)", budget, len(removed))
    return removed


def running(store: Store) -> list[dict[str, Any]]:
    """Preloads in progress in any process of this store: stage, products, bytes, orders."""
    out = []
    for rec in live_records(store.root):
        for key, pre in (rec.get("preloads") or {}).items():
            out.append({"pid": rec.get("pid"), "host": rec.get("host"), "request": key, **pre})
    for job in store.jobs.all():
        if job.stage in ("ordering", "ordered") and not store.products.path(job.key).is_dir():
            out.append({"job": True, "service": job.service, "product": job.key, "stage": job.stage,
                        "order_id": job.order_id})
    return out
