"""The CLMS download API (land.copernicus.eu) as a lifecycle service: data requests and the auxiliary API.

Three ways to get data, chosen from the listing (:mod:`intake_clms.services.clms_api.listing`):

- a pre-packaged file (``file=``): one data request ``{DatasetID, FileID}``;
- a cut-to-order request (EEA and the other queued sources): general items with
  bbox, output format and CRS, and for time series a TemporalFilter split into
  chunks of the dataset's day limit, packed up to 5 items per request;
- LEGACY / LANDCOVER sources: the auxiliary API lists direct file URLs, fetched
  without auth at <= 10 requests/s (shared by every download thread).

A data request is one task on the server: before posting, a queued or running
task of this user for the same items is reused (and on ``DUPLICATED`` found and
reused).  After ``DUPLICATED`` the task is looked for whatever its non-failed state
(queued, running or already finished: the server may have finished it meanwhile).
Statuses are compared without case (the server stores CDSE child tasks as
``QUEUED``).  The POST is sent once: after a lost answer :meth:`ClmsApiService.find_order`
looks for the task among the user's Queued, In_progress and Finished_ok tasks
(``@datarequest_search``) registered since the attempt began.  The engine keeps the
task id in its job state, so a rerun polls it again.  Polls ask
for the one task, never the user's whole history.  Result links are capability
URLs: never logged, fetched without Authorization, and treated as expired on
403/404/410 or once older than ``link_max_age`` (the engine then orders again,
once).  A user cancel also asks the server to cancel, briefly and best effort.
"""

from __future__ import annotations

import datetime as dt
import os
import logging
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import requests

from .listing import ApiDataset, fetch_listing, find_dataset
from ...config import endpoints
from ...errors import ClmsError, CredentialsError, OrderExpiredError, OrderFailedError, ParameterError, ServiceError, UnknownIdentifierError
from ...net.clock import SYSTEM, Clock
from ...net.http import HttpClient, server_message
from ..base import Hit, Ready
from ...params import Request
from .auth import ClmsAuth, load_service_key
from .items import date_in, file_product, general_products, is_world, items_hash, url_name, within_years
from .ratelimit import limiter_for
from ...net.secretlog import hide
from ...store.fsutil import safe_name

log = logging.getLogger(__name__)

SERVICE = "clms"
JSON = {"Accept": "application/json"}
ACTIVE = ("Queued", "In_progress")
FAILED = ("Rejected", "Finished_nok", "Cancelled")
LIVE = ACTIVE + ("Finished_ok",)  # every state but a failure
_KNOWN = {s.lower(): s for s in (*ACTIVE, "Finished_ok", *FAILED)}
DEFAULT_LINK_MAX_AGE = 24 * 3600.0  # seconds; the docs promise 72 h, users saw links die earlier
DEFAULT_FILES_RATE = 10.0  # requests per second to the auxiliary file servers
MAX_UNKNOWN = 5  # polls that may see a status this client does not know before it gives up
CANCEL_TIMEOUT = 1.5  # seconds a server-side cancel may take (the engine gives it 2 s at most)
_NOT_LOGGED_IN = "logged in to use this service"
_DUPLICATED = "same thing at least twice"

def task_status(value: Any) -> str:
    """A task's status in the documented spelling (``QUEUED`` -> ``Queued``); an unknown word as given."""
    text = str(value or "").strip()
    return _KNOWN.get(text.lower(), text)


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


class ClmsApiService:
    """The CLMS download API as a lifecycle :class:`~intake_clms.services.base.Service`."""

    name = SERVICE

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
        self.clock: Clock = http.clock
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
            return find_dataset(listing, request.dataset_id).choose(request.download_information)
        except UnknownIdentifierError as first:
            if not request.dataset_identifier:
                raise
            try:
                return find_dataset(listing, request.dataset_identifier).choose(request.download_information)
            except UnknownIdentifierError:
                raise UnknownIdentifierError(
                    f"service='clms': the CLMS download API serves no dataset known for {request.dataset_id} "
                    f"{request.dataset_identifier!r} (no listed dataset has it as its id, UID or download "
                    f"collection); read this entry with service='wekeo'. ({first})"
                ) from None

    def search(self, request: Request, limit: int | None = None) -> list[Hit]:
        """The request's products (worked out from the listing: no paging, so ``limit`` changes nothing)."""
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

    def _aux_products(self, ds: ApiDataset, request: Request) -> list[Hit]:
        """One product per direct file URL of the auxiliary API."""
        params: dict[str, str] = {"dataset_uid": ds.uid, "download_information_id": ds.default_info.id if ds.default_info else ""}
        if ds.source == "LEGACY" and (request.start is None or request.end is None):
            name = "start" if request.start is None else "end"
            raise ParameterError(name, f"{ds.id} (LEGACY source, served by the auxiliary API) needs both start and end "
                                       "dates (YYYY-MM-DD)")
        if request.start is not None:
            params["date_from"] = request.start.isoformat()
        if request.end is not None:
            params["date_to"] = request.end.isoformat()
        if not is_world(request.bbox):
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
        products: list[Hit] = []
        seen: set[str] = set()
        for url in urls:
            name = url_name(url)
            day = date_in(name) or date_in(urlsplit(url).path)
            if ds.source == "LANDCOVER" and day is not None and not within_years(day, request):
                continue  # the LANDCOVER list ignores dates: keep the years asked for
            pid = name if name not in seen else f"{name}-{len(seen)}"
            seen.add(pid)
            products.append(Hit(key=safe_name(f"clms-{ds.id}-{pid}", 200), name=name, ordered=False,
                                start=day.isoformat() if day else None, extra={"dataset": ds.id, "url": url}))
        return products

    # -- order

    def order(self, hit: Hit) -> str:
        """A live task of this user for the same items, else one POST (never retried blindly)."""
        items = list(hit.extra.get("items") or [])
        if not items:
            raise ClmsError(f"clms: product {hit.name} has no request items")
        digest = items_hash(items)
        task_id = self._find(digest, ACTIVE)
        if task_id is not None:
            log.info("clms: reusing task %s for %s", task_id, hit.name)
            return task_id
        return self._post(items, digest, hit)

    def find_order(self, hit: Hit, since: float) -> str | None:
        """A task for these items registered since ``since`` that is queued, running or finished well."""
        return self._find(items_hash(hit.extra.get("items")), LIVE, since)

    def _post(self, items: list[dict[str, Any]], digest: str, hit: Hit) -> str:
        r = self._call("POST", "@datarequest_post", "data request", ok=(200, 201, 400), json={"Datasets": items},
                       idempotent=False)
        body = _json(r)
        if r.status_code == 400 or body.get("status") == "error":
            message = str(body.get("msg") or body.get("message") or server_message(r))
            if _DUPLICATED in message:
                task_id = self._find(digest, LIVE)
                if task_id is not None:
                    log.info("clms: the server has a task for these items already (DUPLICATED); reusing task %s", task_id)
                    return task_id
                raise ServiceError(SERVICE, r.status_code, f"data request for {hit.name} refused as a duplicate of a "
                                   f"task that holds other items too; wait for it or cancel it: {message}")
            raise ServiceError(SERVICE, r.status_code, f"data request for {hit.name} refused: {message}")
        ids = [str(t.get("TaskID")) for t in body.get("TaskIds") or [] if isinstance(t, dict) and t.get("TaskID")]
        if not ids:
            failed = [str(t.get("TaskID")) for t in body.get("ErrorTaskIds") or [] if isinstance(t, dict)]
            raise ServiceError(SERVICE, r.status_code, f"data request for {hit.name}: the server created no task"
                               + (f" (failed tasks: {', '.join(failed)})" if failed else ""))
        if len(ids) > 1:
            log.warning("clms: one data request became %d tasks; following the first", len(ids))
        return ids[0]

    def _find(self, digest: str, statuses: Sequence[str], since: float | None = None) -> str | None:
        """The newest task of this user for exactly these items in one of ``statuses`` (best effort).

        One listing without a ``status`` filter, statuses compared without case: the server stores CDSE
        child tasks as ``QUEUED``, and a filter ``status=Queued`` compared case-sensitively would miss
        them (and the items be ordered twice).  The whole history is one answer instead of one per status.
        """
        try:
            body = _json(self._call("GET", "@datarequest_search", "task search"))
        except ServiceError as exc:
            log.info("clms: could not list the tasks (%s)", exc)
            return None
        best: tuple[float, str] | None = None
        for task_id, task in body.items():
            if not isinstance(task, dict) or task_status(task.get("Status")) not in statuses \
                    or items_hash(task.get("Datasets")) != digest:
                continue
            registered = parse_stamp(task.get("RegistrationDateTime")) or 0.0
            if since is not None and registered and registered < since:
                continue
            if best is None or registered > best[0]:
                best = (registered, str(task_id))
        return best[1] if best else None

    # -- poll

    def _status(self, task_id: str) -> dict[str, Any] | None:
        """The task object, None if the server does not know it (404)."""
        r = self._call("GET", "@datarequest_status_get", "task status", ok=(200, 404), params={"TaskID": task_id})
        if r.status_code == 404:
            return None
        body = _json(r)
        return body

    def poll(self, order_id: str) -> tuple[str, Ready | None]:
        task = self._status(order_id)
        if task is None:
            raise OrderExpiredError(SERVICE, 404, f"task {order_id} is unknown to the server (deleted or expired)")
        status = task_status(task.get("Status"))
        if status in ACTIVE:
            self._unknown.pop(order_id, None)
            return ("queued" if status == "Queued" else "running"), None
        if status == "Finished_ok":
            return "done", self._finished(order_id, task)
        message = str(task.get("Message") or "no message")
        if status in FAILED:
            raise OrderFailedError(SERVICE, None, f"task {order_id} ended {status}: {message}")
        seen = self._unknown[order_id] = self._unknown.get(order_id, 0) + 1
        if seen > MAX_UNKNOWN:
            raise OrderFailedError(SERVICE, None, f"task {order_id} reports status {status!r}, which this client does not "
                               f"know, {seen} times in a row; the order is ended as failed, a rerun orders anew (server message: {message})")
        log.warning("clms: task %s has an unknown status %r; waiting", order_id, status)
        return "running", None

    def _finished(self, task_id: str, task: dict[str, Any]) -> Ready:
        url = task.get("DownloadURL")
        if not url:
            raise ServiceError(SERVICE, None, f"task {task_id} finished without a DownloadURL: {task.get('Message') or ''}")
        now = self.clock.time()
        issued = parse_stamp(task.get("FinalizationDateTime")) or now
        age = now - issued
        if age > self.link_max_age:
            raise OrderExpiredError(
                SERVICE, None, f"the result of task {task_id} was issued {age / 3600:.1f} h ago, more than link_max_age "
                f"({self.link_max_age / 3600:.1f} h): its link may be dead"
            )
        hide(str(url))
        self._links[task_id] = (str(url), issued)
        size = task.get("FileSize")
        try:
            size = int(size) if size not in (None, "") else None
        except (TypeError, ValueError):
            size = None
        return Ready(size=size, name=f"clms-task-{task_id}.zip")

    # -- fetch

    def fetch(self, hit: Hit, order_id: str | None, offset: int) -> requests.Response:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        if not hit.ordered:
            url = str(hit.extra["url"])
            limiter = limiter_for(url, self.files_rate, self.clock)
            if limiter is not None:
                limiter.acquire(self.http.cancel)
            return self.http.request("GET", url, ok=(200, 206, 416), stream=True, headers=headers, what="file download")
        order_id = str(order_id)
        link = self._links.get(order_id)
        if link is None:  # e.g. a rerun after a restart: ask the task again
            state, _ = self.poll(order_id)
            link = self._links.get(order_id)
            if state != "done" or link is None:
                raise ServiceError(SERVICE, None, f"task {order_id} is not finished ({state}); cannot download yet")
        try:
            return self.http.request("GET", link[0], ok=(200, 206, 416), stream=True, headers=headers, what="result download")
        except ServiceError as exc:
            if exc.status in (403, 404, 410):
                self._links.pop(order_id, None)
                raise OrderExpiredError(SERVICE, exc.status, f"the result link of task {order_id} has expired") from None
            raise

    # -- cancel

    def cancel(self, order_id: str) -> None:
        """Ask the server to cancel a task: one short try; a refusal raises ServiceError (the job stays live)."""
        quick = HttpClient(SERVICE, session=self.http.session, attempts=1, timeout=(self.cancel_timeout, self.cancel_timeout))
        r = quick.request("DELETE", f"{self.api}/@datarequest_delete", auth=self.auth, ok=(200, 204, 400, 403, 404),
                          headers=dict(JSON), json={"TaskID": order_id}, what="task cancel")
        if r.status_code in (200, 204):
            log.info("clms: the server cancelled task %s", order_id)
            return
        # 403 "TaskID not registered", 404 "permission denied" (sic), or a firewall's refusal
        raise ServiceError(SERVICE, r.status_code, f"task cancel refused: {server_message(r)}")


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


def connect(settings: dict[str, Any], cancel: threading.Event, clock: Clock = SYSTEM) -> ClmsApiService:
    """The CLMS download API for one preload.

    Settings (source keywords): ``service_key`` (path of the key JSON),
    ``link_max_age`` (seconds, default 24 h), ``listing_max_age`` (seconds,
    default 1 day), ``files_rate`` (auxiliary downloads per second, default 10),
    ``attempts`` and ``backoff`` (retries).
    """
    s = settings
    key = load_service_key(s.get("service_key"))
    backoff = float(s.get("backoff", 0.5))
    http = HttpClient(SERVICE, cancel=cancel, attempts=int(s.get("attempts", 5)), backoff=backoff, clock=clock)
    api = endpoints().clms_api
    auth = ClmsAuth(key, api_url=api, http=HttpClient(SERVICE, session=http.session, attempts=3, backoff=backoff, clock=clock))
    return ClmsApiService(
        http,
        auth,
        api_url=api,
        cache_dir=s.get("cache_dir"),
        link_max_age=float(s.get("link_max_age", DEFAULT_LINK_MAX_AGE)),
        listing_max_age=float(s.get("listing_max_age", 86400.0)),
        files_rate=float(s.get("files_rate", DEFAULT_FILES_RATE)),
    )
