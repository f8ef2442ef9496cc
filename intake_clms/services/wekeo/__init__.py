"""WEkEO Harmonised Data Access (HDA): credentials, tokens, terms, search, order, poll, fetch.

Conventions follow the official ``hda`` client: ``HDA_URL`` is the broker base
(``.../hda-broker/``), the token comes from ``<host>/identity/gettoken`` (the
pre-July-2026 ``<broker>/gettoken`` as a fallback), credentials from explicit
arguments, then ``HDA_USER``/``HDA_PASSWORD``, then ``~/.hdarc`` (or ``HDA_RC``).
Tokens are fetched when first needed and renewed on 401/403 or expiry, so a
queue wait longer than a token's life goes through.

WEkEO is the service; HDA (Harmonised Data Access) is its protocol.  An order POST
is sent once: when its answer is lost, :meth:`WekeoService.find_order` looks the
order up in the user's download listing (``GET dataaccess/downloads``) before the
engine orders again; listing entries name their order by ``download_id`` or
``_id`` (as eodag reads the live broker).

Search pages follow ``properties.nextIndex`` or ``totalResults``/``startIndex``,
whichever the answer carries, and stop at a page that brings no product not
seen before (a broker that ignores ``startIndex`` would otherwise repeat its
first page until ``totalResults``).  A feature without ``properties.title`` is
named by its ``id``.  A search on an old dataset ID carries the keys that dataset expects
(product type, format, its date key names: :mod:`.queries`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import threading
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from ...config import endpoints, hdarc_path
from ...errors import CredentialsError, OrderExpiredError, OrderFailedError, ServiceError, TooManyProductsError
from ...net.clock import SYSTEM, Clock
from ...net.http import HttpClient, server_message
from ..base import Hit, Ready, product_key
from ...params import Request
from .queries import date_keys, old_id_keys

log = logging.getLogger(__name__)

SERVICE = "wekeo"
NEW_DATASET_ID = "EO:JRC:DAT:CLMS"
PAGE = 100
_ORIGINS = (None, "eumetsat", "cmems")


def read_credentials(user: str | None = None, password: str | None = None) -> tuple[str, str]:
    """(user, password): explicit arguments, then HDA_USER/HDA_PASSWORD, then the .hdarc file."""
    if user and password:
        return user, password
    env_user, env_password = os.environ.get("HDA_USER"), os.environ.get("HDA_PASSWORD")
    if env_user and env_password:
        return env_user, env_password
    path = hdarc_path()
    if path.is_file():
        found: dict[str, str] = {}
        for line in path.read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep:
                found[key.strip().lower()] = value.strip()
        if found.get("user") and found.get("password"):
            return found["user"], found["password"]
    raise CredentialsError(
        "no WEkEO HDA credentials found; give them (1) as arguments (username=..., password=...), "
        "(2) in the environment variables HDA_USER and HDA_PASSWORD, or "
        f"(3) in {path} (or the file named by HDA_RC) as lines 'user: ...' and 'password: ...'"
    )


def _token_urls(broker: str) -> list[str]:
    parts = urlsplit(broker)
    return [f"{parts.scheme}://{parts.netloc}/identity/gettoken", f"{broker}/gettoken"]


class HdaAuth:
    """Bearer tokens obtained at request time, renewed by refresh token or a new login (thread-safe)."""

    def __init__(self, http: HttpClient, broker: str, user: str, password: str, clock: Clock = SYSTEM):
        self.http, self.broker, self.clock = http, broker, clock
        self._user, self._password = user, password
        self._access: str | None = None
        self._refresh: str | None = None
        self._expires = 0.0
        self._margin = 60.0
        self._origin: str | None = None
        self._lock = threading.Lock()

    def headers(self) -> dict[str, str]:
        with self._lock:
            if self._access is None or self.clock.time() > self._expires - self._margin:
                self._renew_locked()
            return {"Authorization": f"Bearer {self._access}"}

    def renew(self) -> None:
        with self._lock:
            self._renew_locked()

    def _store(self, body: dict[str, Any]) -> None:
        self._access = body["access_token"]
        self._refresh = body.get("refresh_token")
        life = float(body.get("expires_in") or 3600)
        self._expires = self.clock.time() + life
        self._margin = min(60.0, life / 10)  # renew a little early, but a short-lived token is still used

    def _renew_locked(self) -> None:
        if self._refresh:
            r = self.http.request(
                "POST", f"{self.broker}/refreshtoken", data={"refresh_token": self._refresh}, ok=(200, 400, 401, 403), what="token refresh"
            )
            if r.status_code == 200:
                self._store(r.json())
                return
            self._refresh = None
        self._login()

    def _login(self) -> None:
        last: ServiceError | None = None
        for url in _token_urls(self.broker):
            origins = (self._origin,) + tuple(o for o in _ORIGINS if o != self._origin)
            for origin in origins:
                body = {"username": self._user, "password": self._password}
                if origin:
                    body["origin"] = origin
                r = self.http.request("POST", url, json=body, ok=(200, 400, 401, 403, 404), what="login")
                if r.status_code == 200:
                    self._origin = origin
                    self._store(r.json())
                    return
                last = ServiceError(SERVICE, r.status_code, f"login: {server_message(r) or 'refused'}")
                if r.status_code == 404:
                    break  # this token endpoint does not exist here: try the other one
        if last is not None and last.status in (400, 401, 403):
            raise CredentialsError(f"WEkEO HDA refused the credentials of user {self._user!r}: {last.message}")
        raise last or ServiceError(SERVICE, None, "login failed")


def _filename(response: requests.Response) -> str | None:
    m = re.search(r'filename\*?=(?:UTF-8\'\')?"?([^";]+)"?', response.headers.get("Content-Disposition", ""))
    return os.path.basename(m.group(1)) if m else None


def _iso(day: dt.date | None, end: bool) -> str | None:
    if day is None:
        return None
    return f"{day.isoformat()}T23:59:59.999Z" if end else f"{day.isoformat()}T00:00:00.000Z"


class WekeoService:
    """WEkEO through the HDA protocol, as a lifecycle :class:`~intake_clms.services.base.Service`."""

    name = SERVICE

    def __init__(self, http: HttpClient, user: str, password: str, broker: str | None = None):
        self.http = http
        self.broker = (broker or endpoints().hda).rstrip("/")
        self.api = f"{self.broker}/api/v1"
        self.auth = HdaAuth(http, self.broker, user, password, clock=http.clock)
        self._terms_done: set[str] = set()

    def _call(self, method: str, path: str, what: str, ok: tuple[int, ...] = (200,), **kw: Any) -> requests.Response:
        return self.http.request(method, f"{self.api}/{path}", auth=self.auth, ok=ok, what=what, **kw)

    def accept_terms(self, dataset_id: str) -> None:
        """Accept the dataset's terms once per session (a missing acceptance looks like a 403 later)."""
        if dataset_id in self._terms_done:
            return
        doc = self._call("GET", f"datasets/{quote(dataset_id, safe='')}", "dataset description").json()
        for term in doc.get("terms") or []:
            self._call("PUT", f"termsaccepted/{quote(str(term), safe='')}", "terms acceptance", json={"accepted": True})
        self._terms_done.add(dataset_id)

    def search(self, request: Request, limit: int | None = None) -> list[Hit]:
        """Every product of the request, or, with ``limit``, stops as soon as more than ``limit`` are found."""
        dataset_id = request.dataset_id
        self.accept_terms(dataset_id)
        page = PAGE if limit is None else max(1, min(PAGE, limit + 1))
        query: dict[str, Any] = {"dataset_id": dataset_id, "bbox": list(request.bbox), "itemsPerPage": page}
        new = dataset_id == NEW_DATASET_ID
        if new:
            if not request.dataset_identifier:
                raise ServiceError(SERVICE, None, f"{NEW_DATASET_ID} needs a datasetIdentifier")
            query["datasetIdentifier"] = request.dataset_identifier
        else:
            query.update(old_id_keys(dataset_id))  # productType, format: what the old dataset expects
        names = ("startdate", "enddate") if new else date_keys(dataset_id)
        for name, value in zip(names, (_iso(request.start, False), _iso(request.end, True))):
            if value:
                query[name] = value
        products: list[Hit] = []
        seen: set[str] = set()
        index = 0
        while True:
            body = self._call("POST", "dataaccess/search", "search", json={**query, "startIndex": index}).json()
            features = body.get("features") or []
            fresh = [f for f in features if str(f.get("id")) not in seen]
            if features and not fresh:
                log.warning("%s: search page at startIndex %d repeats products already listed; stopping", SERVICE, index)
                break
            for f in fresh:
                seen.add(str(f.get("id")))
                props = f.get("properties") or {}
                size = props.get("size")
                title = str(props.get("title") or f["id"])
                products.append(
                    Hit(
                        key=product_key(title),
                        name=title,
                        ordered=True,
                        size=int(size) if isinstance(size, (int, float)) and size > 0 else None,
                        start=props.get("startdate"),
                        end=props.get("enddate"),
                        extra={"dataset_id": dataset_id, "product_id": str(f["id"]), "location": props.get("location")},
                    )
                )
            paging = body.get("properties") or {}
            total = paging.get("totalResults")
            if limit is not None and index == 0 and isinstance(total, int) and total > limit:
                raise TooManyProductsError(SERVICE, total, limit)
            if limit is not None and len(products) > limit:
                break  # enough to refuse the request (the engine asks again without a limit if it must)
            if paging.get("nextIndex") is not None:  # CDSE-backed EO:JRC:DAT:CLMS
                nxt = int(paging["nextIndex"])
            elif paging.get("totalResults") is not None:
                nxt = int(paging.get("startIndex", index)) + len(features)
                if nxt >= int(paging["totalResults"]):
                    break
            else:
                break
            if not features or nxt <= index:
                break
            index = nxt
        return products

    def order(self, hit: Hit) -> str:
        """One POST, never retried blindly: a lost answer raises AmbiguousOrderError (see find_order)."""
        body = {"dataset_id": hit.extra["dataset_id"], "product_id": hit.extra["product_id"], "location": hit.extra["location"]}
        answer = self._call("POST", "dataaccess/download", "order", ok=(200, 201, 202), json=body, idempotent=False).json()
        return str(answer["download_id"])

    def find_order(self, hit: Hit, since: float) -> str | None:
        """The newest live order of this product in the user's download listing (it has no dates: ``since``
        is not checked), or None."""
        body = self._call("GET", "dataaccess/downloads", "order listing").json()
        found = None
        for f in body.get("features") or []:
            order_id = f.get("download_id") or f.get("_id")
            if order_id and str(f.get("product_id")) == hit.extra["product_id"] \
                    and f.get("dataset_id") == hit.extra["dataset_id"] \
                    and str(f.get("status", "")).lower() not in ("error", "failed", "cancelled"):
                found = str(order_id)
        return found

    def poll(self, order_id: str) -> tuple[str, Ready | None]:
        try:
            r = self._call("HEAD", f"dataaccess/download/{quote(order_id, safe='')}", "order status", ok=(200, 202))
        except ServiceError as exc:
            if exc.status == 404:
                raise OrderExpiredError(SERVICE, 404, "the order is unknown to the server (expired)") from None
            if exc.status is None or exc.status >= 500:
                raise
            raise OrderFailedError(SERVICE, exc.status, f"order failed: {self._order_message(order_id) or exc.message}") from None
        r.close()
        if r.status_code == 202:
            return "running", None
        length = r.headers.get("Content-Length")
        return "done", Ready(size=int(length) if length and length.isdigit() else None, name=_filename(r))

    def _order_message(self, order_id: str) -> str | None:
        """A HEAD answer has no body: the failure's message comes from the downloads listing."""
        try:
            body = self._call("GET", "dataaccess/downloads", "order listing", params={"download_id": order_id}).json()
            features = body.get("features") or []
            return features[0].get("message") if features else None
        except (ServiceError, ValueError):
            return None

    def fetch(self, hit: Hit, order_id: str | None, offset: int) -> requests.Response:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            return self._call("GET", f"dataaccess/download/{quote(str(order_id), safe='')}", "download", ok=(200, 206, 416),
                              stream=True, headers=headers)
        except ServiceError as exc:
            if exc.status in (404, 410):
                raise OrderExpiredError(SERVICE, exc.status, "the download is no longer available (expired)") from None
            raise


def connect(settings: dict[str, Any], cancel: threading.Event, clock: Clock = SYSTEM) -> WekeoService:
    """The WEkEO service for one preload: credentials from the settings, the environment or ~/.hdarc."""
    user, password = read_credentials(settings.get("username"), settings.get("password"))
    http = HttpClient(SERVICE, cancel=cancel, attempts=int(settings.get("attempts", 5)),
                      backoff=float(settings.get("backoff", 0.5)), clock=clock)
    return WekeoService(http, user, password)
