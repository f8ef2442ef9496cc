"""The CLMS download API (land.copernicus.eu) as a lifecycle backend: data requests and the auxiliary API.

Three ways to get data, chosen from the listing (:mod:`intake_clms.clms_listing`):

- a pre-packaged file (``file=``): one data request ``{DatasetID, FileID}``;
- a cut-to-order request (EEA and the other queued sources): general items with
  bbox, output format and CRS, and for time series a TemporalFilter split into
  chunks of the dataset's day limit, packed up to 5 items per request;
- LEGACY / LANDCOVER sources: the auxiliary API lists direct file URLs, fetched
  without auth at <= 10 requests/s (shared by every download thread).

A data request is one task on the server: before posting, a queued or running
task of this user for the same items is reused (and on ``DUPLICATED`` found and
reused), as is a finished one whose link we recorded as still fresh.  Polls ask
for the one task, never the user's whole history.  Result links are capability
URLs: never logged, fetched without Authorization, and treated as expired on
403/404/410 or once older than ``link_max_age`` (the engine then orders again,
once).  A user cancel also asks the server to cancel, briefly and best effort.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import requests

from ..clms_listing import FORMAT_CONVERSION, ApiDataset, ApiFile, canonical_format, fetch_listing, find_dataset
from ..config import cache_dir as default_cache_dir
from ..config import endpoints
from ..errors import ClmsError, CredentialsError, ParameterError, ServiceError, UnknownIdentifierError
from ..lifecycle.backend import Product, Ready
from ..lifecycle.cache import write_json_atomic
from ..lifecycle.errors import CancelledError, OrderExpiredError
from ..lifecycle.http import HttpClient, server_message
from ..lifecycle.reader import LifecycleReader
from ..params import Request
from .clms_auth import ClmsAuth, load_service_key

log = logging.getLogger(__name__)

SERVICE = "clms"
JSON = {"Accept": "application/json"}
ACTIVE = ("Queued", "In_progress")
FAILED = ("Rejected", "Finished_nok", "Cancelled")
MAX_ITEMS = 5  # general items per data request (the server refuses more)
DIRECT = "direct:"  # order ids of auxiliary-API files: the file URL follows
WORLD = (-180.0, -90.0, 180.0, 90.0)
WGS84 = "EPSG:4326"
DEFAULT_LINK_MAX_AGE = 24 * 3600.0  # seconds; the docs promise 72 h, users saw links die earlier
DEFAULT_FILES_RATE = 10.0  # requests per second to the auxiliary file servers
MAX_UNKNOWN = 5  # polls that may see a status this client does not know before it gives up
RECORD_KEEP = 7 * 86400.0  # seconds a task stays in the per-user record
CANCEL_TIMEOUT = 1.5  # seconds a server-side cancel may take (the engine gives it 2 s at most)
_NOT_LOGGED_IN = "logged in to use this service"
_DUPLICATED = "same thing at least twice"

# --------------------------------------------------------------------------- small helpers


def parse_stamp(text: Any) -> float | None:
    """Epoch seconds of an API timestamp; naive ones (older tasks) are UTC."""
    if not text:
        return None
    try:
        stamp = dt.datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return stamp.timestamp()


def _epoch_ms(day: dt.date, end_of_day: bool = False) -> int:
    seconds = calendar.timegm(day.timetuple()) + (86399 if end_of_day else 0)
    return seconds * 1000


def _stamp_text(value: Any) -> str:
    """A TemporalFilter bound as the server stores it (``YYYY-MM-DD HH:MM:SS`` UTC), from ms or text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) or (isinstance(value, str) and value.isdigit()):
        stamp = dt.datetime.fromtimestamp(int(value) / 1000.0, tz=dt.timezone.utc)
        return stamp.strftime("%Y-%m-%d %H:%M:%S")
    return str(value or "").replace("T", " ")[:19]


def item_key(entry: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies a request item, the same for what we post and what a task lists under ``Datasets``."""
    key: dict[str, Any] = {"DatasetID": str(entry.get("DatasetID") or "")}
    if entry.get("FileID"):
        key["FileID"] = str(entry["FileID"])
        return key
    key["OutputFormat"] = canonical_format(entry.get("OutputFormat")) or str(entry.get("OutputFormat") or "")
    gcs = str(entry.get("OutputGCS") or "")
    m = re.search(r"EPSG/\d+/(\d+)$", gcs)  # CDSE tasks store an OGC CRS URI
    key["OutputGCS"] = f"EPSG:{m.group(1)}" if m else gcs.upper()
    box = entry.get("BoundingBox")
    if isinstance(box, (list, tuple)) and len(box) == 4:
        try:
            key["BoundingBox"] = [round(float(v), 6) for v in box]
        except (TypeError, ValueError):
            key["BoundingBox"] = list(box)
    nuts = entry.get("NUTS") or entry.get("NUTSID")
    if nuts:
        key["NUTS"] = str(nuts).upper()
    tf = entry.get("TemporalFilter")
    if isinstance(tf, Mapping):
        key["TemporalFilter"] = [_stamp_text(tf.get("StartDate")), _stamp_text(tf.get("EndDate"))]
    return key


def items_hash(items: Iterable[Mapping[str, Any]] | None) -> str:
    """A stable digest of a set of request items (order does not matter)."""
    keys = sorted(json.dumps(item_key(i), sort_keys=True) for i in (items or []) if isinstance(i, Mapping))
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32]


def _is_world(bbox: Sequence[float]) -> bool:
    return all(abs(a - b) < 1e-9 for a, b in zip(bbox, WORLD))


def _url_name(url: str) -> str:
    return unquote(PurePosixPath(urlsplit(url).path).name) or "file"


_DAY8 = re.compile(r"(?<!\d)((?:19|20)\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])")
_YEAR = re.compile(r"(?<![\dA-Za-z])((?:19|20)\d{2})(?![\d])")


def _date_in(name: str) -> dt.date | None:
    """The first date written in a file name (YYYYMMDD, else a lone year), or None."""
    m = _DAY8.search(name)
    if m:
        try:
            return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            pass
    m = _YEAR.search(name)
    return dt.date(int(m.group(1)), 1, 1) if m else None


class RateLimiter:
    """At most ``rate`` request starts in any window of ``period`` seconds (plus 5 % for network jitter)."""

    def __init__(self, rate: float, period: float = 1.0):
        self.rate = max(1, int(rate))
        self.period = period * 1.05
        self._starts: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self, cancel: threading.Event | None = None) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                while self._starts and now - self._starts[0] >= self.period:
                    self._starts.popleft()
                if len(self._starts) < self.rate:
                    self._starts.append(now)
                    return
                wait = self.period - (now - self._starts[0])
            if cancel is not None:
                if cancel.wait(wait):
                    raise CancelledError("cancelled")
            else:
                time.sleep(wait)


_LIMITERS: dict[tuple[str, float], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def limiter_for(url: str, rate: float) -> RateLimiter | None:
    """The process-wide limiter of a file host (shared by every download thread and preload); None if off."""
    if not rate or rate <= 0:
        return None
    key = (urlsplit(url).netloc.lower(), float(rate))
    with _LIMITERS_LOCK:
        return _LIMITERS.setdefault(key, RateLimiter(rate))


class _SecretFilter(logging.Filter):
    """Redacts capability links from urllib3's DEBUG request lines (``"GET /fme/<secret>/... HTTP/1.1"``)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            hidden = text
            for secret in list(self.secrets):
                hidden = hidden.replace(secret, "<result link>")
            if hidden != text:
                record.msg, record.args = hidden, ()
        return True


_SECRETS = _SecretFilter()
logging.getLogger("urllib3.connectionpool").addFilter(_SECRETS)


def _hide(url: str) -> None:
    """Keep a result link (its path and query: the capability) out of every log line."""
    parts = urlsplit(url)
    _SECRETS.secrets.add(parts.path + (f"?{parts.query}" if parts.query else ""))
    _SECRETS.secrets.add(url)


class TaskRecords:
    """What this user's tasks were ordered for and when their links were issued (a small JSON file).

    The API cannot say whether a link still works, so reuse of a finished task
    relies on this record: items digest, issue time, and whether the link died.
    """

    _locks: dict[Path, threading.Lock] = {}

    def __init__(self, path: Path):
        self.path = path
        with _LIMITERS_LOCK:  # one lock per file, shared by every preload of this process
            self._lock = self._locks.setdefault(path, threading.Lock())

    def load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}

    def update(self, task_id: str, **fields: Any) -> None:
        with self._lock:
            data = self.load()
            now = time.time()
            entry = data.setdefault(str(task_id), {"recorded": now})
            entry.update(fields)
            data = {k: v for k, v in data.items() if now - float(v.get("recorded") or now) < RECORD_KEEP}
            try:
                write_json_atomic(self.path, data)
            except OSError as exc:  # a hint only: never fail a download over it
                log.warning("clms: cannot write the task record %s (%s)", self.path, exc)

    def get(self, task_id: str) -> dict[str, Any]:
        return dict(self.load().get(str(task_id)) or {})


# --------------------------------------------------------------------------- the backend


class ClmsApiClient:
    """The CLMS download API as a lifecycle :class:`~intake_clms.lifecycle.backend.Backend`."""

    service = SERVICE

    def __init__(
        self,
        http: HttpClient,
        auth: ClmsAuth,
        *,
        api_url: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        link_max_age: float = DEFAULT_LINK_MAX_AGE,
        listing_max_age: float = 86400.0,
        files_rate: float = DEFAULT_FILES_RATE,
        cancel_timeout: float = CANCEL_TIMEOUT,
    ):
        self.http, self.auth = http, auth
        self.api = (api_url or endpoints().clms_api).rstrip("/")
        self.cache_dir = cache_dir
        self.link_max_age = float(link_max_age)
        self.listing_max_age = float(listing_max_age)
        self.files_rate = float(files_rate)
        self.cancel_timeout = float(cancel_timeout)
        digest = hashlib.sha256(f"{self.api}|{auth.user_id}".encode()).hexdigest()[:16]
        self.records = TaskRecords(default_cache_dir(cache_dir) / "clms-api" / f"tasks-{digest}.json")
        self._links: dict[str, tuple[str, float]] = {}  # TaskID -> (DownloadURL, issued epoch); never logged
        self._unknown: dict[str, int] = {}

    # -- API calls

    def _call(self, method: str, path: str, what: str, ok: tuple[int, ...] = (200,), **kw: Any) -> requests.Response:
        """An authenticated JSON call; a 200 saying "log in" (how the add-on answers a lost session) re-grants once."""
        url = f"{self.api}/{path}"
        for attempt in range(2):
            r = self.http.request(method, url, auth=self.auth, ok=ok, what=what, headers=dict(JSON), **kw)
            if not _asks_login(r):
                return r
            if attempt == 0:
                log.info("clms: %s answered that the session is not logged in; granting a new token", what)
                self.auth.renew()
        raise CredentialsError(f"clms: {what}: the API keeps answering {server_message(r)!r} with a freshly granted "
                               f"token; check that the service key {self.auth.key.path} belongs to an active account")

    # -- search

    def listing(self) -> list[ApiDataset]:
        return fetch_listing(self.api, cache_dir=self.cache_dir, max_age=self.listing_max_age, session=self.http.session)

    def dataset(self, request: Request, listing: Sequence[ApiDataset] | None = None) -> ApiDataset:
        """The listing's dataset for a request: by dataset_id, else by the WEkEO datasetIdentifier's mapping."""
        listing = self.listing() if listing is None else listing
        try:
            return find_dataset(listing, request.dataset_id)
        except UnknownIdentifierError as first:
            if not request.dataset_identifier:
                raise
            try:
                return find_dataset(listing, request.dataset_identifier)
            except UnknownIdentifierError:
                raise UnknownIdentifierError(
                    f"service='clms': the CLMS download API serves no dataset known for {request.dataset_id} "
                    f"{request.dataset_identifier!r} (no listed dataset has it as its id, UID or download "
                    f"collection); read this entry with service='wekeo'. ({first})"
                ) from None

    def search(self, request: Request) -> list[Product]:
        ds = self.dataset(request)
        if request.file:
            return [file_product(ds, request.file)]
        if ds.auxiliary:
            return self._aux_products(ds, request)
        if not ds.cut_to_order:
            files = ", ".join(f.file for f in ds.downloadable_files)
            offer = f"pre-packaged files (file=...): {files}" if files else "no pre-packaged file either"
            alt = "; its data is on WEkEO: use service='wekeo'" if ds.source == "WEKEO" else ""
            raise ParameterError(
                "file", f"{ds.id} ({ds.source or 'no'} source) takes no cut-to-order request through the CLMS API; "
                f"it offers {offer}{alt}"
            )
        return general_products(ds, request)

    def _aux_products(self, ds: ApiDataset, request: Request) -> list[Product]:
        """One product per direct file URL of the auxiliary API."""
        params: dict[str, str] = {"dataset_uid": ds.uid, "download_information_id": ds.infos[0].id}
        if ds.source == "LEGACY" and (request.start is None or request.end is None):
            name = "start" if request.start is None else "end"
            raise ParameterError(name, f"{ds.id} (LEGACY source, served by the auxiliary API) needs both start and end "
                                       "dates (YYYY-MM-DD)")
        if request.start is not None:
            params["date_from"] = request.start.isoformat()
        if request.end is not None:
            params["date_to"] = request.end.isoformat()
        if not _is_world(request.bbox):
            params.update(zip(("x_min", "y_min", "x_max", "y_max"), (f"{v:.6f}" for v in request.bbox)))
        r = self._call("GET", "@get-download-file-urls", "auxiliary file list", params=params)
        try:
            body = r.json()
        except ValueError:
            raise ServiceError(SERVICE, r.status_code, "auxiliary file list: the answer is not JSON") from None
        if isinstance(body, dict):
            message = body.get("msg") or body.get("message") or "no file list"
            raise ServiceError(SERVICE, r.status_code, f"auxiliary file list for {ds.id}: {message}")
        urls = [u for u in body if isinstance(u, str) and u.startswith(("http://", "https://"))] if isinstance(body, list) else []
        products: list[Product] = []
        seen: set[str] = set()
        for url in urls:
            name = _url_name(url)
            day = _date_in(name) or _date_in(urlsplit(url).path)
            if ds.source == "LANDCOVER" and day is not None and not _within_years(day, request):
                continue  # the LANDCOVER list ignores dates: keep the years asked for
            pid = name if name not in seen else f"{name}-{len(seen)}"
            seen.add(pid)
            products.append(Product(id=pid, name=name, start=day.isoformat() if day else None,
                                    extra={"kind": "direct", "dataset": ds.id, "url": url}))
        return products

    # -- order

    def order(self, product: Product) -> str:
        extra = product.extra or {}
        if extra.get("kind") == "direct":
            return DIRECT + str(extra["url"])
        items = list(extra.get("items") or [])
        if not items:
            raise ClmsError(f"clms: product {product.id} has no request items (a cache from another version?)")
        digest = items_hash(items)
        task_id = self._find_active(digest) or self._find_recorded(digest)
        if task_id is not None:
            log.info("clms: reusing task %s for %s", task_id, product.name)
            return task_id
        return self._post(items, digest, product)

    def _post(self, items: list[dict[str, Any]], digest: str, product: Product) -> str:
        r = self._call("POST", "@datarequest_post", "data request", ok=(200, 201, 400), json={"Datasets": items})
        body = _json(r)
        if r.status_code == 400 or body.get("status") == "error":
            message = str(body.get("msg") or body.get("message") or server_message(r))
            if _DUPLICATED in message:
                task_id = self._find_active(digest)
                if task_id is not None:
                    log.info("clms: the server has these items queued already (DUPLICATED); reusing task %s", task_id)
                    self.records.update(task_id, items=digest)
                    return task_id
                raise ServiceError(SERVICE, r.status_code, f"data request for {product.name} refused as a duplicate of a "
                                   f"queued task that holds other items too; wait for it or cancel it: {message}")
            raise ServiceError(SERVICE, r.status_code, f"data request for {product.name} refused: {message}")
        ids = [str(t.get("TaskID")) for t in body.get("TaskIds") or [] if isinstance(t, dict) and t.get("TaskID")]
        if not ids:
            failed = [str(t.get("TaskID")) for t in body.get("ErrorTaskIds") or [] if isinstance(t, dict)]
            raise ServiceError(SERVICE, r.status_code, f"data request for {product.name}: the server created no task"
                               + (f" (failed tasks: {', '.join(failed)})" if failed else ""))
        if len(ids) > 1:
            log.warning("clms: one data request became %d tasks; following the first", len(ids))
        self.records.update(ids[0], items=digest, ordered=time.time())
        return ids[0]

    def _find_active(self, digest: str) -> str | None:
        """A Queued / In_progress task of this user for exactly these items (best effort: None on any error)."""
        for status in ACTIVE:
            try:
                body = _json(self._call("GET", "@datarequest_search", f"{status} task search", params={"status": status}))
            except ServiceError as exc:
                log.info("clms: could not list %s tasks (%s); not reusing", status, exc)
                continue
            for task_id, task in body.items():
                if isinstance(task, dict) and task.get("Status", status) in ACTIVE \
                        and items_hash(task.get("Datasets")) == digest:
                    return str(task_id)
        return None

    def _find_recorded(self, digest: str) -> str | None:
        """A finished task we ordered for these items whose link is still fresh (checked with the server)."""
        now = time.time()
        candidates = sorted(
            ((tid, rec) for tid, rec in self.records.load().items()
             if rec.get("items") == digest and not rec.get("dead") and not rec.get("cancelled")),
            key=lambda kv: -float(kv[1].get("recorded") or 0),
        )
        for task_id, rec in candidates[:3]:
            issued = rec.get("issued")
            if issued is not None and now - float(issued) > self.link_max_age:
                continue
            try:
                task = self._status(task_id)
            except ServiceError:
                continue
            if task is None or task.get("Status") != "Finished_ok" or not task.get("DownloadURL"):
                continue
            issued = parse_stamp(task.get("FinalizationDateTime")) or float(issued or now)
            if now - issued <= self.link_max_age:
                _hide(str(task["DownloadURL"]))
                self._links[task_id] = (str(task["DownloadURL"]), issued)
                return task_id
        return None

    # -- poll

    def _status(self, task_id: str) -> dict[str, Any] | None:
        """The task object, None if the server does not know it (404)."""
        r = self._call("GET", "@datarequest_status_get", "task status", ok=(200, 404), params={"TaskID": task_id})
        if r.status_code == 404:
            return None
        body = _json(r)
        return body

    def poll(self, order_id: str) -> tuple[str, Ready | None]:
        if order_id.startswith(DIRECT):
            return "done", Ready(size=None, name=_url_name(order_id[len(DIRECT):]))
        task = self._status(order_id)
        if task is None:
            self.records.update(order_id, dead=True)
            raise OrderExpiredError(SERVICE, 404, f"task {order_id} is unknown to the server (deleted or expired)")
        status = str(task.get("Status") or "")
        if status in ACTIVE:
            self._unknown.pop(order_id, None)
            return ("queued" if status == "Queued" else "running"), None
        if status == "Finished_ok":
            return "done", self._finished(order_id, task)
        message = str(task.get("Message") or "no message")
        if status in FAILED:
            if status == "Cancelled" and self.records.get(order_id).get("cancelled"):
                raise OrderExpiredError(SERVICE, None, f"task {order_id} was cancelled at your request earlier")
            self.records.update(order_id, dead=True)
            raise ServiceError(SERVICE, None, f"task {order_id} ended {status}: {message}")
        seen = self._unknown[order_id] = self._unknown.get(order_id, 0) + 1
        if seen > MAX_UNKNOWN:
            raise ServiceError(SERVICE, None, f"task {order_id} reports status {status!r}, which this client does not "
                               f"know, {seen} times in a row; giving up (server message: {message})")
        log.warning("clms: task %s has an unknown status %r; waiting", order_id, status)
        return "running", None

    def _finished(self, task_id: str, task: dict[str, Any]) -> Ready:
        url = task.get("DownloadURL")
        if not url:
            raise ServiceError(SERVICE, None, f"task {task_id} finished without a DownloadURL: {task.get('Message') or ''}")
        now = time.time()
        issued = parse_stamp(task.get("FinalizationDateTime")) or now
        age = now - issued
        if age > self.link_max_age:
            self.records.update(task_id, dead=True, issued=issued)
            raise OrderExpiredError(
                SERVICE, None, f"the result of task {task_id} was issued {age / 3600:.1f} h ago, more than link_max_age "
                f"({self.link_max_age / 3600:.1f} h): its link may be dead"
            )
        _hide(str(url))
        self._links[task_id] = (str(url), issued)
        self.records.update(task_id, issued=issued)
        size = task.get("FileSize")
        try:
            size = int(size) if size not in (None, "") else None
        except (TypeError, ValueError):
            size = None
        return Ready(size=size, name=f"clms-task-{task_id}.zip")

    # -- fetch

    def fetch(self, order_id: str, offset: int) -> requests.Response:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        if order_id.startswith(DIRECT):
            url = order_id[len(DIRECT):]
            limiter = limiter_for(url, self.files_rate)
            if limiter is not None:
                limiter.acquire(self.http.cancel)
            return self.http.request("GET", url, ok=(200, 206), stream=True, headers=headers, what="file download")
        link = self._links.get(order_id)
        if link is None:  # e.g. a rerun after a restart: ask the task again
            state, _ = self.poll(order_id)
            link = self._links.get(order_id)
            if state != "done" or link is None:
                raise ServiceError(SERVICE, None, f"task {order_id} is not finished ({state}); cannot download yet")
        try:
            return self.http.request("GET", link[0], ok=(200, 206), stream=True, headers=headers, what="result download")
        except ServiceError as exc:
            if exc.status in (403, 404, 410):
                self._links.pop(order_id, None)
                self.records.update(order_id, dead=True)
                raise OrderExpiredError(SERVICE, exc.status, f"the result link of task {order_id} has expired") from None
            raise

    # -- cancel

    def cancel(self, order_id: str) -> None:
        """Ask the server to cancel a task: one short try; its swapped 403/404 refusals are only logged."""
        if order_id.startswith(DIRECT):
            return
        quick = HttpClient(SERVICE, session=self.http.session, attempts=1, timeout=(self.cancel_timeout, self.cancel_timeout))
        r = quick.request("DELETE", f"{self.api}/@datarequest_delete", auth=self.auth, ok=(200, 204, 400, 403, 404),
                          headers=dict(JSON), json={"TaskID": order_id}, what="task cancel")
        if r.status_code in (200, 204):
            self.records.update(order_id, cancelled=True)
            log.info("clms: the server cancelled task %s", order_id)
        else:  # 403 "TaskID not registered", 404 "permission denied" (sic), or a firewall's refusal
            log.info("clms: the server did not cancel task %s (HTTP %d: %s)", order_id, r.status_code, server_message(r))


# --------------------------------------------------------------------------- products


def _asks_login(r: requests.Response) -> bool:
    if r.status_code != 200 or "json" not in r.headers.get("Content-Type", ""):
        return False
    try:
        body = r.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("status") == "error" and _NOT_LOGGED_IN in str(body.get("msg", ""))


def _json(r: requests.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        raise ServiceError(SERVICE, r.status_code, f"the answer is not JSON (Content-Type "
                           f"{r.headers.get('Content-Type', '?')})") from None
    if not isinstance(body, dict):
        raise ServiceError(SERVICE, r.status_code, "the answer is not a JSON object")
    return body


def _within_years(day: dt.date, request: Request) -> bool:
    if request.start is not None and day.year < request.start.year:
        return False
    return not (request.end is not None and day.year > request.end.year)


def find_file(ds: ApiDataset, wanted: str) -> ApiFile:
    """A pre-packaged file by its stem (``file``, with or without ``.zip``) or FileID; downloadable only."""
    key = wanted.strip().lower().removesuffix(".zip")
    match = next((f for f in ds.files if f.file.lower() == key or f.id.lower() == key), None)
    allowed = ", ".join(f.file for f in ds.downloadable_files) or "none"
    if match is None:
        raise ParameterError("file", f"{ds.id} has no pre-packaged file {wanted!r}; downloadable files: {allowed}")
    if not match.downloadable:
        raise ParameterError("file", f"{ds.id}: {match.file} is listed but not downloadable (the server has no path "
                                     f"for it); downloadable files: {allowed}")
    return match


def file_product(ds: ApiDataset, wanted: str) -> Product:
    """The one data request of a pre-packaged file."""
    f = find_file(ds, wanted)
    return Product(id=f.file or f.id, name=f.file or f.id,
                   extra={"kind": "task", "dataset": ds.id, "items": [{"DatasetID": ds.uid, "FileID": f.id}]})


def _chunks(start: dt.date, end: dt.date, days: int | None) -> list[tuple[dt.date, dt.date]]:
    """[start, end] in pieces of at most ``days`` days (both ends included)."""
    if not days:
        return [(start, end)]
    out = []
    cur = start
    while cur <= end:
        last = min(end, cur + dt.timedelta(days=days - 1))
        out.append((cur, last))
        cur = last + dt.timedelta(days=1)
    return out


def general_items(ds: ApiDataset, request: Request) -> list[tuple[dict[str, Any], tuple[dt.date, dt.date] | None]]:
    """The cut-to-order items of a request (with the date chunk each covers), validated before any post."""
    info = ds.infos[0]
    native = canonical_format(info.format)
    if request.output_format:
        fmt = canonical_format(request.output_format)
        allowed = FORMAT_CONVERSION.get(native or "", tuple(FORMAT_CONVERSION))
        if fmt is None or fmt not in allowed:
            raise ParameterError("output_format", f"{request.output_format!r} is not an output format of {ds.id} "
                                                  f"({native or info.format or '?'} data); expected one of {', '.join(allowed)}")
    else:
        fmt = native or info.format
    crs_allowed = list(ds.crs) + ([WGS84] if WGS84 not in ds.crs else [])
    if request.crs and ds.crs and request.crs not in crs_allowed:
        raise ParameterError("crs", f"{ds.id} is delivered in {', '.join(crs_allowed)}; got {request.crs}")
    if _is_world(request.bbox):
        files = ", ".join(f.file for f in ds.downloadable_files)
        what = f"choose a pre-packaged file (file=...: {files}) or " if files else ""
        raise ParameterError("bbox", f"{ds.id}: a cut-to-order request needs an area; {what}give bbox=[west, south, east, north]")
    base = {
        "DatasetID": ds.uid,
        "DatasetDownloadInformationID": info.id,
        "OutputFormat": fmt,
        "OutputGCS": request.crs or WGS84,
        "BoundingBox": [float(v) for v in request.bbox],
    }
    if not (ds.timeseries or (ds.limit_days and (request.start or request.end))):
        return [(base, None)]
    start, end = request.start, request.end or ds.end or dt.date.today()
    if start is None:
        limit = f" (at most {ds.limit_days} days per request; longer ranges are split)" if ds.limit_days else ""
        raise ParameterError("start", f"{ds.id} is a time series: give start and end dates{limit}")
    return [
        ({**base, "TemporalFilter": {"StartDate": _epoch_ms(a), "EndDate": _epoch_ms(b, end_of_day=True)}}, (a, b))
        for a, b in _chunks(start, end, ds.limit_days)
    ]


def general_products(ds: ApiDataset, request: Request) -> list[Product]:
    """Cut-to-order items packed up to 5 per data request (one request -> one task -> one zip)."""
    items = general_items(ds, request)
    products = []
    for n in range(0, len(items), MAX_ITEMS):
        group = items[n:n + MAX_ITEMS]
        spans = [span for _, span in group if span is not None]
        if spans:
            first, last = spans[0][0], spans[-1][1]
            pid = f"{ds.id}_{first:%Y%m%d}_{last:%Y%m%d}"
            start, end = first.isoformat(), last.isoformat()
        else:
            pid, start, end = f"{ds.id}_cut", None, None
        products.append(Product(id=pid, name=pid, start=start, end=end,
                                extra={"kind": "task", "dataset": ds.id, "items": [i for i, _ in group]}))
    return products


class ClmsBackend(LifecycleReader):
    """What ``services.BACKENDS["clms"]`` names: reads a ClmsSource through the CLMS download API.

    Options (source keywords): ``service_key`` (path of the key JSON),
    ``link_max_age`` (seconds, default 24 h), ``listing_max_age`` (seconds,
    default 1 day), ``files_rate`` (auxiliary downloads per second, default 10),
    ``attempts`` and ``backoff`` (retries), plus the engine's own options.
    """

    service = SERVICE

    def make_backend(self, cancel: threading.Event) -> ClmsApiClient:
        s = self.settings
        key = load_service_key(s.get("service_key"))
        backoff = float(s.get("backoff", 0.5))
        http = HttpClient(SERVICE, cancel=cancel, attempts=int(s.get("attempts", 5)), backoff=backoff)
        api = endpoints().clms_api
        auth = ClmsAuth(key, api_url=api, http=HttpClient(SERVICE, session=http.session, attempts=3, backoff=backoff))
        return ClmsApiClient(
            http,
            auth,
            api_url=api,
            cache_dir=s.get("cache_dir") or getattr(self.source, "cache_dir", None),
            link_max_age=float(s.get("link_max_age", DEFAULT_LINK_MAX_AGE)),
            listing_max_age=float(s.get("listing_max_age", 86400.0)),
            files_rate=float(s.get("files_rate", DEFAULT_FILES_RATE)),
        )
