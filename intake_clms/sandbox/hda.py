"""WEkEO Harmonised Data Access (HDA) broker, as the official ``hda`` client and eodag meet it.

Routes (route name -> logical endpoint for faults and the log):

==========================================================  ==========================
``POST /identity/gettoken``                                 ``hda.token.identity``
``POST /hda-broker/gettoken``                               ``hda.token.broker``
``POST /hda-broker/refreshtoken``                           ``hda.refresh``
``GET  /hda-broker/api/v1/datasets``                        ``hda.datasets``
``GET  /hda-broker/api/v1/datasets/{dataset_id}``           ``hda.dataset``
``GET  /hda-broker/api/v1/termsaccepted``                   ``hda.terms``
``PUT  /hda-broker/api/v1/termsaccepted/{term_id}``         ``hda.terms_accept``
``GET  /hda-broker/api/v1/dataaccess/queryable/{id}``       ``hda.queryable``
``POST /hda-broker/api/v1/dataaccess/search``               ``hda.search``
``POST /hda-broker/api/v1/dataaccess/download``             ``hda.order``
``HEAD /hda-broker/api/v1/dataaccess/download/{id}``        ``hda.download_head``
``GET  /hda-broker/api/v1/dataaccess/download/{id}``        ``hda.download``
``GET  /hda-broker/api/v1/dataaccess/downloads``            ``hda.downloads`` (eodag's poll)
==========================================================  ==========================

Protocol faults: ``token_expiry`` (any authenticated endpoint: every access
token issued so far expires, then the call answers 401); ``quota``,
``terminal_failure``, ``server_cancel``, ``corrupt_zip``, ``hostile_zip`` are
taken when an order is placed (endpoint ``order``) and bind to that order
(``quota`` takes ``reset_after``: sandbox seconds until the quota frees,
default the whole hour); ``expired_link`` on ``download``/``download_head``
answers 404 (or ``status``) once the order is done, the order itself stays;
``order_expired`` on ``download_head``/``download``/``downloads`` makes the
server forget the order named by the call, whatever its state (as after the
link's expiry or a broker restart): that call and every later one about the
order answer 404 "Download not found", so only a new order gets the file.
Body faults (reset, truncate, ...) act on ``download`` only, never on the HEAD.

Behaviour worth knowing:

- Dataset IDs: ``EO:JRC:DAT:CLMS`` (+ ``datasetIdentifier``; an unknown
  identifier finds nothing, as the CDSE adapter does; paging by
  ``properties.nextIndex``, no ``totalResults``) and the old IDs whose source
  still answers (not migrated, or in transition; a "migrated" product's old ID
  answers 404).  Old IDs page with ``totalResults``/``startIndex``/``itemsPerPage``.
- Delivered files: the new ID gives the CDSE product folder zipped
  (``<product_name>.zip``); an old ID gives its NetCDF as is, or a flat zip of
  the tile / vector file with its metadata (with ``old_zips="folder"``, below:
  ``<id>.zip`` holding ``<id>/``, whatever the format).  The catalogue ``size`` is "ND" for
  about a fifth of the products and a stale figure for another fifth: only
  ``Content-Length`` is true.
- Orders queue for ``ctx.queue_delay`` sandbox seconds ("Queued" for the first
  half, "Running" for the second); HEAD/GET answer 202 meanwhile.  Failed
  orders answer 400 (terminal failure) or 410 (cancelled by the server), or the
  fault's integer ``status``, with ``{"detail": message}``.
- Quota: ``ctx.hda_quota`` distinct products per user per sandbox hour, counted
  on the order; 429 with ``X-Quota-Limit``, ``X-Quota-Remaining`` and
  ``X-Quota-Reset``: epoch milliseconds on the *wall clock* (the instant the
  real clock reaches when the sandbox clock, at its current speed, reaches the
  reset), because clients compare it with ``time.time()``.  The window itself
  is counted in sandbox time.
- Tokens: access tokens live ``ctx.token_lifetime`` sandbox seconds, refresh
  tokens twice that; missing/unknown/expired access tokens get 401, unaccepted
  terms 403.  ``expires_in`` / ``refresh_expires_in`` are given in *real*
  seconds (lifetime / clock speed, rounded down, at least 1), because clients
  count them on their own clock: a client trusting ``expires_in`` renews in
  time even on an accelerated clock (a lifetime shorter than one real second
  still says 1; clock jumps by ``advance()`` are invisible to clients).
  Accounts: the sandbox's HDA credentials, plus ``sandbox-eumetsat`` (same
  password) that logs in only with ``"origin": "eumetsat"``.

Per-user state (tokens, accepted terms, quota use, orders) lives in
``ctx.state["hda"]``; all times are sandbox-clock seconds.

Protocol shapes, one switch per variant (attributes of ``ctx.state["hda"]``; the
sandbox's first shape, then the one live clients show):

- ``paging``: ``"nextIndex"`` (the new ID pages by ``properties.nextIndex``, old
  IDs by ``totalResults``) or ``"totalResults"`` (every dataset by
  ``totalResults``/``startIndex``, as eodag and hda 2.x page the live broker);
- ``listing_ids``: ``"download_id"`` or ``"_id"`` (the downloads listing names
  an order by ``_id``, as eodag reads it);
- ``titles``: ``"title"`` (features carry ``properties.title``) or ``"id"`` (no
  title: a feature is named by its ``id``, as eodag maps it);
- ``repeat_pages``: False, or True (a broken broker that ignores ``startIndex``
  and answers the first page again, while ``totalResults`` says more follow);
- ``old_keys``: ``"optional"`` (an old-ID search may leave out its filters) or
  ``"required"`` (as notebook runs against the live broker send them: an old ID
  whose products have an old ``productType`` needs one of them, CORINE needs a
  ``format``, HR-S&I takes its dates as ``startdate``/``enddate`` only; a search
  without them answers 400 naming the key);
- ``old_zips``: ``"flat"`` (an old ID's zip holds its files at the top) or
  ``"folder"`` (every old-ID delivery is ``<id>.zip`` holding a folder ``<id>/``,
  NetCDFs included, as the live broker delivers HR-S&I products).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import itertools
import json
import secrets
import shutil
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web

from intake_clms.sandbox.core import SandboxContext, json_error, serve_file

NEW_DATASET_ID = "EO:JRC:DAT:CLMS"
API = "/hda-broker/api/v1"
CLMS_TERM = "Copernicus_Land_Monitoring_Service_Data_Policy"
GENERAL_TERM = "Copernicus_General_License"
QUOTA_WINDOW = 3600.0  # sandbox seconds a quota slot stays used
MAX_ITEMS_PER_PAGE = 1000
HOSTILE_VARIANTS = ("slip", "absolute", "symlink", "bomb", "many")  # as datagen makes them
#: Old IDs whose search must name a delivery format (``old_keys="required"``), and the formats offered.
OLD_FORMATS = {"EO:EEA:DAT:CORINE": ("GeoTiff100mt", "GeoPackage", "ESRI fgdb")}
#: Old ID prefixes that take their dates as ``startdate``/``enddate`` (HR-S&I).
STARTDATE_PREFIXES = ("EO:CRYO:DAT:HRSI",)
ORDER_FAULTS = frozenset({"terminal_failure", "server_cancel"})
ZIP_FAULTS = frozenset({"corrupt_zip", "hostile_zip"})


# --------------------------------------------------------------------------- state


@dataclass
class Account:
    username: str
    password: str
    origin: str | None = None  # federated accounts answer only with their origin


@dataclass
class Token:
    user: str
    expires: float


@dataclass
class Order:
    download_id: str
    user: str
    dataset_id: str
    product_id: str
    created: float
    ready_at: float
    fail: dict[str, Any] | None = None  # {"kind", "at", "status", "message"}
    variant: str | None = None  # None | "corrupt" | "hostile:<variant>"


@dataclass
class UserState:
    terms: set[str] = field(default_factory=set)
    quota: list[tuple[float, str]] = field(default_factory=list)  # (time, dataset|product) per counted order


@dataclass
class HdaState:
    accounts: dict[str, Account]
    lock: threading.Lock = field(default_factory=threading.Lock)
    tokens: dict[str, Token] = field(default_factory=dict)
    refresh_tokens: dict[str, Token] = field(default_factory=dict)
    users: dict[str, UserState] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    files_lock: threading.Lock = field(default_factory=threading.Lock)
    paging: str = "nextIndex"
    listing_ids: str = "download_id"
    titles: str = "title"
    repeat_pages: bool = False
    old_keys: str = "optional"
    old_zips: str = "flat"

    def user(self, name: str) -> UserState:
        return self.users.setdefault(name, UserState())


def _state(ctx: SandboxContext) -> HdaState:
    return ctx.state["hda"]


class HdaError(Exception):
    """An HDA error answer, raised anywhere in a handler."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None, body: dict | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers, self.body = status, detail, headers, body

    def response(self) -> web.Response:
        return json_error(self.status, self.body if self.body is not None else {"detail": self.detail}, self.headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _handler(fn: Callable[[web.Request, SandboxContext], Awaitable[web.StreamResponse]], ctx: SandboxContext) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request, ctx)
        except HdaError as exc:
            return exc.response()

    return handle


# --------------------------------------------------------------------------- helpers


def _iso(value: dt.datetime | dt.date) -> str:
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _utc(value: dt.datetime | dt.date) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def _parse_date(name: str, value: Any) -> dt.datetime | dt.date | None:
    """An aware UTC datetime, or a bare date (which covers its whole day)."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise HdaError(400, f"{name}: expected an ISO 8601 date, got {value!r}")
    text = value.strip()
    try:
        if "T" not in text and " " not in text:
            return dt.date.fromisoformat(text)
        return _utc(dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00")))
    except ValueError:
        raise HdaError(400, f"{name}: expected an ISO 8601 date, got {value!r}") from None


def _parse_bbox(value: Any) -> tuple[float, float, float, float] | None:
    if value in (None, ""):
        return None
    if isinstance(value, str):
        value = value.split(",")
    try:
        west, south, east, north = (float(v) for v in value)
    except (TypeError, ValueError):
        raise HdaError(400, f"bbox: expected [west, south, east, north], got {value!r}") from None
    if south > north or not (-90 <= south <= 90 and -90 <= north <= 90):
        raise HdaError(400, f"bbox: invalid latitudes in {value!r}")
    return west, south, east, north


def _int_param(value: Any, name: str, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise HdaError(400, f"{name}: expected an integer, got {value!r}") from None
    if number < 0:
        raise HdaError(400, f"{name}: must not be negative")
    return number


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HdaError(400, "The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HdaError(400, "The request body must be a JSON object")
    return body


def _wall_clock(ctx: SandboxContext, instant: float) -> float:
    """Wall-clock epoch seconds at which the sandbox clock, at its current speed, reads ``instant``.

    What a client compares with ``time.time()`` (a quota reset): sandbox epoch
    seconds run ``speed`` times fast and would lie about when to come back.
    """
    speed = ctx.clock.speed if ctx.clock.speed > 0 else 1e-9
    return time.time() + (instant - ctx.clock.now()) / speed


def _real_seconds(ctx: SandboxContext, duration: float) -> int:
    """A sandbox duration in whole real seconds (rounded down, at least 1), as clients count ``expires_in``."""
    speed = ctx.clock.speed if ctx.clock.speed > 0 else 1e-9
    return max(1, int(duration / speed))


def _stable_fraction(text: str) -> float:
    """A number in [0, 1) fixed by ``text`` (which features say "ND", ...)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") / 2**32


def _location(dataset_id: str, product_id: str) -> str:
    raw = json.dumps([dataset_id, product_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_location(location: str) -> tuple[str, str] | None:
    try:
        raw = base64.urlsafe_b64decode(location + "=" * (-len(location) % 4))
        dataset_id, product_id = json.loads(raw)
        return str(dataset_id), str(product_id)
    except (binascii.Error, ValueError, TypeError):
        return None


# --------------------------------------------------------------------------- catalogue


def _old_source_active(spec: Any) -> bool:
    """Whether a migrated dataset's old WEkEO ID still answers ("transition"), or died with the move ("migrated")."""
    return getattr(spec, "migration_status", None) != "migrated"


def _catalogue(ctx: SandboxContext) -> dict[str, list[Any]]:
    """Every dataset ID HDA answers to, with the store datasets behind it."""
    ids: dict[str, list[Any]] = {}
    for spec in ctx.store.datasets():
        if not spec.dataset_id:
            continue  # a CLMS-API-only dataset
        ids.setdefault(spec.dataset_id, []).append(spec)
        if spec.dataset_id == NEW_DATASET_ID and _old_source_active(spec):
            for old in spec.old_ids:
                ids.setdefault(old, []).append(spec)
    return ids


def _specs_for(ctx: SandboxContext, dataset_id: str) -> list[Any]:
    specs = _catalogue(ctx).get(dataset_id)
    if not specs:
        raise HdaError(404, f"Dataset {dataset_id} not found")
    return specs


def _terms_for(dataset_id: str) -> list[str]:
    return [GENERAL_TERM, CLMS_TERM] if dataset_id == NEW_DATASET_ID else [CLMS_TERM]


def _all_terms(ctx: SandboxContext) -> list[str]:
    return [GENERAL_TERM, CLMS_TERM]


def _dataset_doc(dataset_id: str, specs: list[Any]) -> dict[str, Any]:
    if dataset_id == NEW_DATASET_ID:
        title = "Copernicus Land Monitoring Service products (CDSE)"
        abstract = (
            "All CLMS products served from the Copernicus Data Space Ecosystem; "
            "select one with the datasetIdentifier query parameter."
        )
    else:
        title = dataset_id.split(":")[-1].replace("_", " ")
        abstract = f"CLMS product {dataset_id} (legacy WEkEO dataset)."
    west = min(s.bbox[0] for s in specs)
    south = min(s.bbox[1] for s in specs)
    east = max(s.bbox[2] for s in specs)
    north = max(s.bbox[3] for s in specs)
    return {
        "dataset_id": dataset_id,
        "title": title,
        "abstract": abstract,
        "terms": _terms_for(dataset_id),
        "metadata": {
            "bbox": [west, south, east, north],
            "temporal_extent": [
                _iso(min(s.start for s in specs)),
                _iso(max(s.end for s in specs)),
            ],
            "datasetIdentifiers": sorted({s.dataset_identifier or s.key for s in specs})
            if dataset_id == NEW_DATASET_ID
            else [],
        },
    }


def _queryable(dataset_id: str, specs: list[Any]) -> dict[str, Any]:
    props: dict[str, Any] = {
        "dataset_id": {"title": "Dataset", "type": "string", "const": dataset_id},
        "bbox": {
            "title": "Bounding box",
            "type": "array",
            "items": {"type": "number"},
            "minItems": 4,
            "maxItems": 4,
        },
        "itemsPerPage": {"type": "integer", "default": 100, "maximum": MAX_ITEMS_PER_PAGE},
        "startIndex": {"type": "integer", "default": 0},
    }
    required = ["dataset_id"]
    if dataset_id == NEW_DATASET_ID:
        idents = sorted({s.dataset_identifier or s.key for s in specs})
        props["datasetIdentifier"] = {"title": "Dataset identifier", "type": "string", "enum": idents}
        props["productType"] = {"title": "Product type", "type": "string"}
        props["startdate"] = {"title": "Start date", "type": "string", "format": "date-time"}
        props["enddate"] = {"title": "End date", "type": "string", "format": "date-time"}
        required.append("datasetIdentifier")
    else:
        types = sorted({s.product_type for s in specs if s.product_type} | {t for s in specs for t in s.old_product_types})
        if types:
            props["productType"] = {"title": "Product type", "type": "string", "enum": types}
        if dataset_id in OLD_FORMATS:
            props["format"] = {"title": "Format", "type": "string", "enum": list(OLD_FORMATS[dataset_id])}
        first, last = ("startdate", "enddate") if dataset_id.startswith(STARTDATE_PREFIXES) else ("start", "end")
        props[first] = {"title": "Start date", "type": "string", "format": "date-time"}
        props[last] = {"title": "End date", "type": "string", "format": "date-time"}
    return {
        "type": "object",
        "title": dataset_id,
        "properties": props,
        "required": required,
        "constraints": [],  # only useful to the WEkEO web UI; clients drop it
    }


# --------------------------------------------------------------------------- auth


def _issue(ctx: SandboxContext, user: str) -> dict[str, Any]:
    st = _state(ctx)
    now = ctx.clock.now()
    access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    refresh_life = 2 * ctx.token_lifetime
    with st.lock:
        st.tokens[access] = Token(user, now + ctx.token_lifetime)
        st.refresh_tokens[refresh] = Token(user, now + refresh_life)
    return {
        "access_token": access,
        "refresh_token": refresh,
        "expires_in": _real_seconds(ctx, ctx.token_lifetime),
        "refresh_expires_in": _real_seconds(ctx, refresh_life),
        "token_type": "Bearer",
        "scope": "openid profile email",
    }


def _authenticate(request: web.Request, ctx: SandboxContext) -> str:
    """The user behind the bearer token, or a 401."""
    st = _state(ctx)
    now = ctx.clock.now()
    fault = ctx.faults.take(request.get("sandbox_service", "hda"), request.get("sandbox_endpoint", "*"), {"token_expiry"})
    if fault is not None:
        with st.lock:
            for token in st.tokens.values():
                token.expires = min(token.expires, now)
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="hda-broker"'}
    if scheme.lower() != "bearer" or not value.strip():
        raise HdaError(401, "Not authenticated", challenge)
    with st.lock:
        token = st.tokens.get(value.strip())
    if token is None:
        raise HdaError(401, "Invalid token", challenge)
    if now >= token.expires:
        raise HdaError(401, "Token expired", challenge)
    return token.user


def _require_terms(ctx: SandboxContext, user: str, dataset_id: str) -> None:
    st = _state(ctx)
    with st.lock:
        accepted = set(st.user(user).terms)
    missing = [t for t in _terms_for(dataset_id) if t not in accepted]
    if missing:
        raise HdaError(403, f"Terms and conditions not accepted for {dataset_id}: {', '.join(missing)}")


async def gettoken(request: web.Request, ctx: SandboxContext) -> web.StreamResponse:
    """JSON ``username``/``password`` (+ optional ``origin`` for federated accounts) -> tokens."""
    if request.content_type == "application/json":
        body = await _json_body(request)
    else:
        body = dict(await request.post())
    username, password = body.get("username"), body.get("password")
    if not username or not password:
        raise HdaError(400, "", body={"error": "invalid_request", "error_description": "username and password are required"})
    account = _state(ctx).accounts.get(str(username))
    origin = body.get("origin") or None
    if account is None or not secrets.compare_digest(account.password, str(password)) or account.origin != origin:
        raise HdaError(401, "", body={"error": "invalid_grant", "error_description": "Invalid user credentials"})
    return web.json_response(_issue(ctx, account.username))


async def refreshtoken(request: web.Request, ctx: SandboxContext) -> web.StreamResponse:
    """Form ``refresh_token`` -> new tokens; 400 for a missing, unknown or expired one."""
    form = await request.post()
    value = str(form.get("refresh_token") or "")
    if not value:
        raise HdaError(400, "", body={"error": "invalid_request", "error_description": "refresh_token is required"})
    st = _state(ctx)
    with st.lock:
        token = st.refresh_tokens.get(value)
    if token is None or ctx.clock.now() >= token.expires:
        raise HdaError(400, "", body={"error": "invalid_grant", "error_description": "Token is not active"})
    return web.json_response(_issue(ctx, token.user))


# --------------------------------------------------------------------------- catalogue routes


async def datasets(request: web.Request, ctx: SandboxContext) -> web.StreamResponse:
    _authenticate(request, ctx)
    start = _int_param(request.query.get("startIndex"), "startIndex", 0)
    per_page = min(_int_param(request.query.get("itemsPerPage"), "itemsPerPage", 100), MAX_ITEMS_PER_PAGE)
    catalogue = _catalogue(ctx)
    docs = [_dataset_doc(ds, specs) for ds, specs in sorted(catalogue.items())]
    page = docs[start : start + per_page]
    return web.json_response(
        {"features": page, "properties": {"totalResults": len(docs), "startIndex": start, "itemsPerPage": per_page}}
    )


async def dataset(request: web.Request, ctx: SandboxContext) -> web.StreamResponse:
    _authenticate(request, ctx)
    dataset_id = request.match_info["dataset_id"]
    return web.json_response(_dataset_doc(dataset_id, _specs_for(ctx, dataset_id)))


async def terms_list(request: web.Request, ctx: SandboxContext) -> web.StreamResponse:
    user = _authenticate(request, ctx)
    st = _state(ctx)
    with st.lock:
        accepted = set(st.user(user).terms)
    features = [{"term_id": t, "accepted": t in accepted} for t in _all_terms(ctx)]
    return web.json_response({"features": features, "properties": {"totalResults": len(features)}})


async def terms_accept(request: web.Request, ctx: SandboxContext) -> web.StreamResponse:
    """``PUT termsaccepted/{term}`` with ``{"accepted": true}``."""
    user = _authenticate(request, ctx)
    term = request.match_info["term_id"]
    if term not in _all_terms(ctx):
        raise HdaError(404, f"Term {term} not found")
    body = await _json_body(request)
    accepted = body.get("accepted")
    if not isinstance(accepted, bool):
        raise HdaError(400, 'Expected a body {"accepted": true}')
    st = _state(ctx)
    with st.lock:
        terms = st.user(user).terms
        if accepted:
            terms.add(term)
        else:
            terms.discard(term)
    return web.json_response({"term_id": term, "accepted": accepted})


async def queryable(request: web.Request, ctx: SandboxContext) -> web.StreamResponse:
    _authenticate(request, ctx)
    dataset_id = request.match_info["dataset_id"]
    return web.json_response(_queryable(dataset_id, _specs_for(ctx, dataset_id)))


# --------------------------------------------------------------------------- search


def _select(ctx: SandboxContext, dataset_id: str, query: dict[str, Any]) -> list[Any]:
    """The store datasets a search covers (empty for an unknown datasetIdentifier, as the CDSE adapter does)."""
    specs = _specs_for(ctx, dataset_id)
    if dataset_id == NEW_DATASET_ID:
        ident = query.get("datasetIdentifier")
        if not ident:
            raise HdaError(400, f"datasetIdentifier is required for {NEW_DATASET_ID}")
        return [s for s in specs if ident in (s.dataset_identifier, s.key)]
    product_type = query.get("productType")
    if product_type:
        typed = [s for s in specs if product_type == s.product_type or product_type in s.old_product_types]
        if typed:
            return typed  # several products behind one old ID: productType picks
    return specs


def _check_old_keys(dataset_id: str, specs: list[Any], query: dict[str, Any]) -> None:
    """``old_keys="required"``: the keys an old ID's search must carry (400 naming the first one missing)."""
    types = sorted({t for s in specs for t in s.old_product_types})
    if types and query.get("productType") not in types:
        raise HdaError(400, f"productType is required for {dataset_id}; expected one of {', '.join(types)}")
    formats = OLD_FORMATS.get(dataset_id)
    if formats and query.get("format") not in formats:
        raise HdaError(400, f"format is required for {dataset_id}; expected one of {', '.join(formats)}")
    if dataset_id.startswith(STARTDATE_PREFIXES):
        wrong = [k for k in ("start", "end") if k in query]
        if wrong:
            raise HdaError(400, f"unknown parameter {wrong[0]!r} for {dataset_id}; its dates are startdate and enddate")


def _item_format(spec: Any, dataset_id: str) -> str | None:
    """Which of a dataset's formats a search lists: CDSE's native one for the new ID; the
    legacy plain GeoTIFF tiles for an old ID where the store has them."""
    if dataset_id != NEW_DATASET_ID and spec.tiled and "tif" in spec.formats:
        return "tif"
    return None


def _search_page(
    ctx: SandboxContext, dataset_id: str, specs: list[Any], bbox: Any, start: Any, end: Any, first: int, per_page: int
) -> tuple[list[Any], bool, int | None]:
    """(items of the page, whether more follow, total or None for the new ID), without listing
    everything: an hourly product has tens of thousands of items."""
    store = ctx.store
    chained = itertools.chain.from_iterable(
        store.iter_items(s.key, bbox, start, end, format=_item_format(s, dataset_id)) for s in specs
    )
    paging, repeat = _state(ctx).paging, _state(ctx).repeat_pages
    at = 0 if repeat else first
    page = list(itertools.islice(chained, at, at + per_page + 1))
    more = len(page) > per_page
    total = None
    if dataset_id != NEW_DATASET_ID or paging == "totalResults" or repeat:
        total = sum(store.count(s.key, bbox, start, end, format=_item_format(s, dataset_id)) for s in specs)
    return page[:per_page], more, total


def _feature(item: Any, dataset_id: str, titles: str = "title") -> dict[str, Any]:
    west, south, east, north = item.bbox
    # The catalogue size is not the delivered size: sometimes unknown ("ND"),
    # sometimes a stale figure, otherwise the generator's hint for the data file
    # (a delivered zip is larger).
    fraction = _stable_fraction(item.id)
    size: int | str = "ND" if fraction < 0.2 else int(item.size_hint * 1.1) if fraction < 0.4 else int(item.size_hint)
    return {
        "type": "Feature",
        "id": item.id,
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
        },
        "properties": {
            "location": _location(dataset_id, item.id),
            **({"title": item.name} if titles == "title" else {}),
            "size": size,
            "startdate": _iso(item.start),
            "enddate": _iso(item.end),
        },
    }


async def search(request: web.Request, ctx: SandboxContext) -> web.StreamResponse:
    """``POST dataaccess/search``: flat JSON query, paged by nextIndex (new ID) or totalResults (old IDs)."""
    user = _authenticate(request, ctx)
    query = await _json_body(request)
    dataset_id = query.get("dataset_id")
    if not dataset_id or not isinstance(dataset_id, str):
        raise HdaError(400, "dataset_id is required")
    specs = _select(ctx, dataset_id, query)
    _require_terms(ctx, user, dataset_id)
    if dataset_id != NEW_DATASET_ID and _state(ctx).old_keys == "required":
        _check_old_keys(dataset_id, _specs_for(ctx, dataset_id), query)
    bbox = _parse_bbox(query.get("bbox"))
    start = end = None
    for name in ("startdate", "start", "dtstart"):
        if query.get(name):
            start = _parse_date(name, query[name])
            break
    for name in ("enddate", "end", "dtend"):
        if query.get(name):
            end = _parse_date(name, query[name])
            break
    first = _int_param(query.get("startIndex"), "startIndex", 0)
    per_page = _int_param(query.get("itemsPerPage"), "itemsPerPage", 100)
    if per_page == 0 or per_page > MAX_ITEMS_PER_PAGE:
        raise HdaError(400, f"itemsPerPage must be between 1 and {MAX_ITEMS_PER_PAGE}")
    if ctx.page_cap is not None:
        per_page = min(per_page, ctx.page_cap)
    loop = asyncio.get_running_loop()
    page, more, total = await loop.run_in_executor(
        None, _search_page, ctx, dataset_id, specs, bbox, start, end, first, per_page
    )
    props: dict[str, Any] = {"itemsPerPage": per_page, "startIndex": first}
    if total is None:
        if more:
            props["nextIndex"] = first + per_page  # no totalResults from the CDSE adapter
    else:
        props["totalResults"] = total
    return web.json_response(
        {"type": "FeatureCollection", "features": [_feature(i, dataset_id, _state(ctx).titles) for i in page], "properties": props}
    )


# --------------------------------------------------------------------------- orders


def _quota_headers(ctx: SandboxContext, limit: int, remaining: int, reset: float | None = None) -> dict[str, str]:
    """``X-Quota-*`` headers; ``reset`` is a sandbox-clock instant, sent as wall-clock epoch milliseconds."""
    headers = {"X-Quota-Limit": str(limit), "X-Quota-Remaining": str(max(0, remaining))}
    if reset is not None:
        headers["X-Quota-Reset"] = str(int(_wall_clock(ctx, reset) * 1000))
    return headers


def _served_kind(dataset_id: str, item: Any, old_zips: str = "flat") -> str:
    """``folder_zip`` (new ID: the CDSE product folder, zipped), ``raw`` (an old ID's NetCDF, as
    is), ``zip`` (an old ID's tile or vector file with its metadata, zipped flat) or ``nested``
    (``old_zips="folder"``: any old-ID product zipped in a folder named after it)."""
    if dataset_id == NEW_DATASET_ID:
        return "folder_zip"
    if old_zips == "folder":
        return "nested"
    return "raw" if item.format == "nc" else "zip"


async def order(request: web.Request, ctx: SandboxContext) -> web.StreamResponse:
    """``POST dataaccess/download`` -> ``{"download_id"}``; counts the hourly quota."""
    user = _authenticate(request, ctx)
    body = await _json_body(request)
    dataset_id, product_id, location = body.get("dataset_id"), body.get("product_id"), body.get("location")
    if not dataset_id or not product_id or not location:
        raise HdaError(400, "dataset_id, product_id and location are required")
    specs = _specs_for(ctx, dataset_id)
    _require_terms(ctx, user, dataset_id)
    if _decode_location(str(location)) != (dataset_id, product_id):
        raise HdaError(400, "location does not match dataset_id and product_id")
    try:
        item = ctx.store.item(product_id)
    except KeyError:
        item = None
    if item is None or item.dataset not in {s.key for s in specs}:
        raise HdaError(404, f"Product {product_id} not found in {dataset_id}")
    service, endpoint = request.get("sandbox_service", "hda"), request.get("sandbox_endpoint", "order")
    st = _state(ctx)
    now = ctx.clock.now()
    limit = ctx.hda_quota
    quota_fault = ctx.faults.take(service, endpoint, {"quota"})
    if quota_fault is not None:
        headers = _quota_headers(ctx, limit, 0, now + float(quota_fault.params.get("reset_after", QUOTA_WINDOW)))
        raise HdaError(429, "Quota exceeded: too many downloads in the last hour", headers)
    key = f"{dataset_id}|{product_id}"
    with st.lock:
        used = st.user(user).quota
        used[:] = [(t, k) for t, k in used if t > now - QUOTA_WINDOW]
        if not any(k == key for _, k in used):
            if len(used) >= limit:
                reset = min(t for t, _ in used) + QUOTA_WINDOW
                headers = _quota_headers(ctx, limit, 0, reset)
                raise HdaError(429, "Quota exceeded: too many downloads in the last hour", headers)
            used.append((now, key))
        remaining = limit - len(used)
    kind = _served_kind(dataset_id, item, st.old_zips)
    new = Order(
        download_id=secrets.token_hex(16),
        user=user,
        dataset_id=dataset_id,
        product_id=product_id,
        created=now,
        ready_at=now + ctx.queue_delay,
    )
    fault = ctx.faults.take(service, endpoint, ORDER_FAULTS)
    if fault is not None:
        cancel = fault.kind == "server_cancel"
        status = fault.params.get("http_status", fault.params.get("status"))
        new.fail = {
            "kind": fault.kind,
            "at": now + (ctx.queue_delay / 2 if cancel else ctx.queue_delay),
            "status": int(status) if isinstance(status, int) or str(status).isdigit() else (410 if cancel else 400),
            "message": str(
                fault.params.get("message") or ("The order was cancelled by the server" if cancel else "Task Error: the order failed")
            ),
        }
    if kind != "raw":
        zfault = ctx.faults.take(service, endpoint, ZIP_FAULTS)
        if zfault is not None:
            if zfault.kind == "corrupt_zip":
                new.variant = "corrupt"
            else:
                variant = str(zfault.params.get("variant", "slip"))
                if variant not in HOSTILE_VARIANTS:
                    variant = "slip"
                new.variant = f"hostile:{variant}"
    with st.lock:
        st.orders[new.download_id] = new
    if new.fail is None:  # the server prepares the file while the order queues
        asyncio.get_running_loop().run_in_executor(None, _prepare_quietly, ctx, new)
    headers = _quota_headers(ctx, limit, remaining)
    return web.json_response({"download_id": new.download_id, "message": None}, headers=headers)


def _order_state(order: Order, now: float) -> tuple[str, str | None]:
    """(eodag status word, message): Queued, Running, Done or Error."""
    if order.fail is not None and now >= order.fail["at"]:
        return "Error", order.fail["message"]
    if now < order.created + (order.ready_at - order.created) / 2:
        return "Queued", None
    if now < order.ready_at:
        return "Running", None
    if order.fail is not None:
        return "Error", order.fail["message"]
    return "Done", None


def _find_order(request: web.Request, ctx: SandboxContext, user: str) -> Order:
    """The caller's order named in the path, or 404 (also after an ``order_expired`` fault forgot it)."""
    st = _state(ctx)
    download_id = request.match_info["download_id"]
    _expire_order_on_fault(request, ctx, user, download_id)
    with st.lock:
        found = st.orders.get(download_id)
    if found is None or found.user != user:
        raise HdaError(404, "Download not found")
    return found


def _expire_order_on_fault(request: web.Request, ctx: SandboxContext, user: str, download_id: str | None) -> None:
    """With an ``order_expired`` fault pending for this endpoint, forget the named order of ``user``
    (every order of ``user`` when the call names none)."""
    if ctx.faults.take(request.get("sandbox_service", "hda"), request.get("sandbox_endpoint", "*"), {"order_expired"}) is None:
        return
    st = _state(ctx)
    with st.lock:
        for key in [k for k, o in st.orders.items() if o.user == user and download_id in (None, k)]:
            del st.orders[key]


# --------------------------------------------------------------------------- product files


def _product_name(item: Any, kind: str) -> str:
    """The delivered file name: the NetCDF as is, else the product name with ``.zip``."""
    if kind == "raw":
        return item.name
    if kind == "folder_zip":
        return f"{item.product_name or item.stem}.zip"  # CDSE product names end in _nc / _cog / _geojson
    return f"{item.stem}.zip"


def _variant_copy(store: Any, base: Path, target: Path, variant: str) -> None:
    """A copy of the product zip made corrupt (one data member fails its CRC) or hostile (one
    entry a careless extractor would obey), with the generator's own recipes."""
    from intake_clms.sandbox import datagen

    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    try:
        shutil.copyfile(base, tmp)
        if variant == "corrupt":
            datagen._corrupt_member(tmp)
        else:
            with zipfile.ZipFile(tmp, "a", allowZip64=True) as zf:
                datagen._add_hostile(zf, variant.split(":", 1)[1], store.bomb_bytes, store.many_entries)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def _build_product_file(ctx: SandboxContext, order: Order) -> tuple[Path, str, str]:
    """(path, file name, content type) of what an order delivers; generated once, cached under the data dir."""
    store = ctx.store
    item = store.item(order.product_id)
    kind = _served_kind(order.dataset_id, item, _state(ctx).old_zips)
    name = _product_name(item, kind)
    hostile = corrupt = None
    if order.variant == "corrupt":
        corrupt = True
    elif order.variant is not None:
        hostile = order.variant.split(":", 1)[1]
    if kind == "raw":
        path = Path(store.materialize(item))
    elif kind in ("zip", "nested"):
        data = Path(store.materialize(item))
        layout = "folder" if kind == "nested" else "flat"
        path = Path(store.result_zip([data], layout=layout, name=item.stem, hostile=hostile, corrupt=bool(corrupt)))
    else:
        path = Path(store.product_zip(item))
        if order.variant is not None:
            target = Path(ctx.data_dir) / "hda" / f"{order.variant.replace(':', '-')}_{name}"
            with _state(ctx).files_lock:
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _variant_copy(store, path, target, order.variant)
            path = target
    content_type = "application/x-netcdf" if kind == "raw" and name.endswith(".nc") else "application/zip"
    return path, name, content_type


def _prepare_quietly(ctx: SandboxContext, order: Order) -> None:
    try:
        _build_product_file(ctx, order)
    except Exception:  # noqa: BLE001 - the download will report it
        pass


async def _deliverable(request: web.Request, ctx: SandboxContext) -> tuple[Path, str, str]:
    """The file of a finished order for the calling user, or the HDA answer for any other state."""
    user = _authenticate(request, ctx)
    found = _find_order(request, ctx, user)
    status, message = _order_state(found, ctx.clock.now())
    if status in ("Queued", "Running"):
        raise HdaError(202, "", body={"download_id": found.download_id, "status": status, "message": "Download in progress"})
    if status == "Error":
        assert found.fail is not None
        raise HdaError(found.fail["status"], str(message), body={"detail": message, "status": status})
    fault = ctx.faults.take(request.get("sandbox_service", "hda"), request.get("sandbox_endpoint", "*"), {"expired_link"})
    if fault is not None:
        raise HdaError(int(fault.params.get("status", 404)), "Download not found or expired")
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, _build_product_file, ctx, found)
    except KeyError:
        raise HdaError(404, f"Product {found.product_id} not found") from None


async def download_head(request: web.Request, ctx: SandboxContext) -> web.StreamResponse:
    """``HEAD dataaccess/download/{id}``: 202 queued/running, 200 with the file's headers when ready."""
    path, name, content_type = await _deliverable(request, ctx)
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Content-Type": content_type}
    return web.FileResponse(path, headers=headers)  # HEAD: headers incl. Content-Length, no body


async def download_get(request: web.Request, ctx: SandboxContext) -> web.StreamResponse:
    """``GET dataaccess/download/{id}``: the file (Range, Content-Length, Content-Disposition; body faults)."""
    path, name, content_type = await _deliverable(request, ctx)
    return await serve_file(request, path, ctx, filename=name, content_type=content_type)


async def downloads(request: web.Request, ctx: SandboxContext) -> web.StreamResponse:
    """eodag's poll: ``GET dataaccess/downloads?download_id=...`` -> ``features[0].status``/``message``."""
    user = _authenticate(request, ctx)
    st = _state(ctx)
    wanted = request.query.get("download_id")
    _expire_order_on_fault(request, ctx, user, wanted)
    with st.lock:
        mine = [o for o in st.orders.values() if o.user == user and (wanted is None or o.download_id == wanted)]
    now = ctx.clock.now()
    features = []
    for o in sorted(mine, key=lambda o: o.created):
        status, message = _order_state(o, now)
        features.append(
            {
                ("_id" if st.listing_ids == "_id" else "download_id"): o.download_id,
                "dataset_id": o.dataset_id,
                "product_id": o.product_id,
                "status": status,
                "message": message,
                "url": f"{ctx.base_url}{API}/dataaccess/download/{o.download_id}" if status == "Done" else None,
            }
        )
    return web.json_response(
        {"features": features, "properties": {"totalResults": len(features), "startIndex": 0, "itemsPerPage": len(features)}}
    )


# --------------------------------------------------------------------------- setup


def setup(app: web.Application, ctx: SandboxContext) -> None:
    """Add the HDA routes and this module's state to the sandbox app."""
    creds = ctx.state.get("credentials", {}).get("hda", {"username": "sandbox-user", "password": "sandbox-password"})
    accounts = {creds["username"]: Account(creds["username"], creds["password"])}
    # a federated (EUMETSAT) account: answers only on the client's second try, with "origin"
    federated = Account("sandbox-eumetsat", creds["password"], origin="eumetsat")
    accounts[federated.username] = federated
    ctx.state["hda"] = HdaState(accounts=accounts)

    def h(fn: Callable[[web.Request, SandboxContext], Awaitable[web.StreamResponse]]) -> Handler:
        return _handler(fn, ctx)

    r = app.router
    r.add_post("/identity/gettoken", h(gettoken), name="hda.token.identity")
    r.add_post("/hda-broker/gettoken", h(gettoken), name="hda.token.broker")
    r.add_post("/hda-broker/refreshtoken", h(refreshtoken), name="hda.refresh")
    r.add_get(f"{API}/datasets", h(datasets), name="hda.datasets", allow_head=False)
    r.add_get(f"{API}/datasets/{{dataset_id}}", h(dataset), name="hda.dataset", allow_head=False)
    r.add_get(f"{API}/termsaccepted", h(terms_list), name="hda.terms", allow_head=False)
    r.add_put(f"{API}/termsaccepted/{{term_id}}", h(terms_accept), name="hda.terms_accept")
    r.add_get(f"{API}/dataaccess/queryable/{{dataset_id}}", h(queryable), name="hda.queryable", allow_head=False)
    r.add_post(f"{API}/dataaccess/search", h(search), name="hda.search")
    r.add_post(f"{API}/dataaccess/download", h(order), name="hda.order")
    # HEAD and GET on one path are separate resources so faults can target the poll or the body
    r.add_route("HEAD", f"{API}/dataaccess/download/{{download_id}}", h(download_head), name="hda.download_head")
    r.add_get(f"{API}/dataaccess/download/{{download_id}}", h(download_get), name="hda.download", allow_head=False)
    r.add_get(f"{API}/dataaccess/downloads", h(downloads), name="hda.downloads", allow_head=False)
