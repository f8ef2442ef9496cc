"""The Copernicus Data Space Ecosystem (CDSE) protocol, as far as CLMS products need it.

Why a sandbox of CDSE: it is where every CLMS product is going, and the client
must be tested against its identity, catalogue, download and S3 services with
their real quirks (another host after the download redirect, a connection cap
shared by everything, short-lived tokens, checksums to verify) on loopback.
Four services share one port, as the sandbox does for every protocol:

- Keycloak's token endpoint (``/auth/realms/CDSE/protocol/openid-connect/token``):
  password (optional ``totp``) and refresh grants for the public ``cdse-public``
  client, answers and errors shaped like Keycloak's.  Lifetimes run on the
  sandbox clock: access tokens live ``ctx.token_lifetime / 6`` (CDSE's 600 s for
  the default hour), refresh tokens ``ctx.token_lifetime``; both can be set
  (``st.access_lifetime = 1`` for 1-second tokens; ``expires_in`` says so).
- The OData catalogue (``/odata/v1/Products``, ``Products(<Id>)``,
  ``Products(<Id>)/Nodes``): the ``$filter`` forms of :mod:`.odata_filter`,
  ``$top`` (default 20, max 1000) / ``$skip`` (max 10,000) / ``$orderby`` /
  ``$count`` / ``$expand=Attributes`` and ``@odata.nextLink``; anonymous (a
  bearer token is accepted and counts the request for its user).  Products
  (:mod:`.cdse_products`) carry an exact ``ContentLength``, ``Checksum`` (MD5,
  plus BLAKE3 when the ``blake3`` package is importable) and ``S3Path``
  (``/eodata/CLMS/<component>/<productType>/<datasetIdentifier>/YYYY/MM/DD/<Name>``,
  the S3 key of the product folder; the folder holds one file).
- The download service (``/download/odata/v1/Products(<Id>)/$value`` and
  ``.../Products(<Id>)/Nodes(<Name>)/Nodes(<file>)/$value``): checks the bearer
  token and answers 307 to a presigned, expiring transfer URL
  (``/s3/eodata/<key>?X-Amz-...``) on ANOTHER HOST NAME, same port: ``localhost``
  when the client addressed ``127.0.0.1`` and ``127.0.0.1`` when it addressed
  ``localhost`` (``st.transfer_host`` overrides).  ``requests`` drops the
  Authorization header on such a redirect; the transfer URL needs none (its
  query string is the credential), and ``st.bearer_on_transfer`` counts
  transfers that carried one anyway.  The transfer serves the file itself (one
  file per product, not zipped) with Range (206 + Content-Range).
  ``$value`` asked of the catalogue answers 301 to the download service.
  With ``st.payload = "zip"`` (the live shape) the download service's ``$value``
  answers 301 to ``/zipper/odata/v1/Products(<Id>)/$value`` on the other host
  name, which checks the bearer token and serves a zip of the product folder.
  ``st.nodes_key`` / ``st.nodes_redirect`` choose the Nodes shapes (see
  :mod:`.cdse_state`).
- S3 (``/eodata/...``, path style, bucket ``eodata``; :mod:`.cdse_s3`):
  GetObject with Range, HeadObject, ListObjects (v1 and v2), AWS SigV4 (header
  or presigned query) verified against the S3 keys, so GDAL ``/vsis3/`` and
  boto3 work unchanged.

Environment a client uses (``Sandbox.env()`` and the ``intake-clms sandbox``
``export`` lines): ``CDSE_TOKEN_URL``, ``CDSE_ODATA_URL`` (``http://127.0.0.1:<port>/odata/v1``),
``CDSE_DOWNLOAD_URL`` (``http://127.0.0.1:<port>/download/odata/v1``; redirects to
``localhost``), ``CDSE_USERNAME``, ``CDSE_PASSWORD``, ``CDSE_S3_ENDPOINT``
(``http://localhost:<port>``: a URL; GDAL wants ``AWS_S3_ENDPOINT=localhost:<port>``,
``AWS_HTTPS=NO``, ``AWS_VIRTUAL_HOSTING=FALSE``), ``CDSE_S3_ACCESS_KEY``,
``CDSE_S3_SECRET_KEY``.

Connection cap: every request to the catalogue, download, transfer and S3
routes counts as in flight for its user (bearer token, presigned credential or
S3 access key; ``anonymous`` otherwise) from arrival until its last byte is
sent.  Beyond ``st.max_concurrent`` (default 4, CDSE's quota) the request is
refused with 429 (``Max session number 4 exceeded``; JSON ``detail``, XML on the S3 API).  A request
that finds the cap full waits up to 100 ms for a slot first (a transfer that
just sent its last byte may not have handed it back yet).  ``st.concurrency()``
gives the peak per user, refused ones included: ``peak <= max_concurrent`` means
the client never tried to exceed the cap.  The token endpoint is not counted.

Route names (service ``cdse``; the endpoint, used by faults and the log, is the
second part): ``cdse.token``, ``cdse.products``, ``cdse.product``,
``cdse.nodes[.*]``, ``cdse.download`` (``$value``), ``cdse.download.node``,
``cdse.download.catalogue`` (the 301), ``cdse.download.s3`` (the transfer:
body faults and ``expired_link`` for endpoint ``download`` act there; a
``status`` fault for ``download`` fires on whichever hop comes first), and
``cdse.s3.object`` / ``cdse.s3.bucket`` (S3 API, endpoint ``s3``).

Faults (``sandbox.faults.add(kind, service="cdse", endpoint=..., **params)``):

- ``status`` with ``status=429, retry_after=N``: a rate limit with Retry-After
  (any endpoint: ``products``, ``download``, ``s3``, ``token``);
- ``bad_checksum`` (endpoint ``download`` or ``s3``; ``offset``): the body's
  bytes differ from the announced MD5 (same length, one byte flipped);
- ``token_cut`` (endpoint ``download``; ``after_bytes``): the transfer is cut
  after that many bytes and every access token issued so far is refused (401)
  until the client refreshes (refresh tokens stay valid);
- ``connection_cap`` (any counted endpoint): 429 as if the cap were exceeded;
- ``token_expiry``: every access and refresh token issued so far expires;
- ``expired_link`` (endpoint ``download``; ``status`` 403/404): the transfer
  URL is refused; body faults ``reset`` / ``truncate`` / ``wrong_length`` /
  ``trickle`` (endpoint ``download`` or ``s3``).

Settings and counters live on :class:`~.cdse_state.CdseState` in
``ctx.state["cdse"]`` (see that module).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from typing import Any, Awaitable, Callable
from urllib.parse import quote, urlencode

from aiohttp import web

from . import cdse_s3
from .cdse_products import MAX_SCAN, CdseProduct, Query, QueryTooBroad
from .cdse_state import (
    CLIENT_ID,
    DOWNLOAD_REDIRECT_STATUS,
    MAX_CONCURRENT,
    MAX_CONCURRENT_DOWNLOADS,
    PRESIGN_LIFETIME,
    S3_PATH,
    SERVICE,
    STATE_KEY,
    CdseState,
)
from .core import SandboxContext, json_error, serve_file
from .odata_filter import FilterError, Predicate, intersects_bbox, parse_filter, parse_orderby

TOKEN_PATH = "/auth/realms/CDSE/protocol/openid-connect/token"
ODATA_PATH = "/odata/v1"
DOWNLOAD_PATH = "/download/odata/v1"
ZIPPER_PATH = "/zipper/odata/v1"
#: Paging limits of the catalogue.
TOP_DEFAULT, TOP_MAX, SKIP_MAX = 20, 1000, 10_000
ANONYMOUS = "anonymous"  # whom an unauthenticated request counts for
_SLOT_GRACE_STEPS = 10  # x 10 ms (real time) waited for a slot before answering 429


# --------------------------------------------------------------------------- helpers


def _odata_error(status: int, code: str, message: str, target: str | None = None) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if target:
        body["target"] = target
    return json_error(status, {"error": body})


def _keycloak_error(status: int, error: str, description: str) -> web.Response:
    return json_error(status, {"error": error, "error_description": description},
                      headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def _origin(request: web.Request) -> str:
    """Scheme://host:port as the client addressed us."""
    return str(request.url.origin())


def _transfer_origin(request: web.Request, st: CdseState) -> str:
    """The other host name of the same server, where the download redirect points."""
    url = request.url
    host = st.transfer_host
    if host is None:
        host = {"127.0.0.1": "localhost", "localhost": "127.0.0.1"}.get(url.host or "", url.host or "localhost")
    return str(url.origin().with_host(host))


def _strip_key(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1]
    return text


def _state(request: web.Request) -> CdseState:
    return request.app[STATE_KEY]


def _consume_faults(request: web.Request, st: CdseState) -> None:
    """A pending ``token_expiry`` fault for this endpoint expires every token issued so far."""
    endpoint = request.get("sandbox_endpoint", "*")
    if st.ctx.faults.take(SERVICE, endpoint, {"token_expiry"}) is not None:
        st.expire_all()


# --------------------------------------------------------------------------- handlers: identity


async def _token(request: web.Request) -> web.Response:
    st = _state(request)
    _consume_faults(request, st)
    form = await request.post()
    client_id = form.get("client_id")
    if client_id is None and request.headers.get("Authorization", "").startswith("Basic "):
        try:  # Keycloak also takes the client id from HTTP Basic auth
            client_id = base64.b64decode(request.headers["Authorization"][6:]).decode().partition(":")[0]
        except (ValueError, binascii.Error, UnicodeDecodeError):
            client_id = None
    if client_id != CLIENT_ID:
        return _keycloak_error(401, "invalid_client", "Invalid client or Invalid client credentials")
    grant_type = form.get("grant_type")
    if not grant_type:
        return _keycloak_error(400, "invalid_request", "Missing form parameter: grant_type")
    issuer = _origin(request) + "/auth/realms/CDSE"
    if grant_type == "password":
        username, password = str(form.get("username") or ""), str(form.get("password") or "")
        totp = form.get("totp")
        if not username or not st.check_password(username, password, str(totp) if totp is not None else None):
            return _keycloak_error(401, "invalid_grant", "Invalid user credentials")
        return web.json_response(st.issue(username, str(uuid.uuid4()), issuer),
                                 headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
    if grant_type == "refresh_token":
        token = str(form.get("refresh_token") or "")
        if not token:
            return _keycloak_error(400, "invalid_request", "Missing parameter: refresh_token")
        grant, active = st.grant(token, "refresh")
        if grant is None:
            return _keycloak_error(400, "invalid_grant", "Invalid refresh token")
        if not active:
            return _keycloak_error(400, "invalid_grant", "Token is not active")
        return web.json_response(st.issue(grant.user, grant.session, issuer),
                                 headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
    if grant_type == "client_credentials":
        return _keycloak_error(401, "unauthorized_client", "Public client not allowed to retrieve service account")
    return _keycloak_error(400, "unsupported_grant_type", "Unsupported grant_type")


def _bearer_user(request: web.Request, st: CdseState) -> tuple[str | None, web.Response | None]:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="CDSE"'}
    if scheme.lower() != "bearer" or not token.strip():
        return None, json_error(401, {"detail": "Not authenticated"}, headers=challenge)
    grant, active = st.grant(token.strip(), "access")
    if grant is None:
        return None, json_error(401, {"detail": "Invalid token"}, headers=challenge)
    if not active:
        return None, json_error(401, {"detail": "Expired signature!"}, headers=challenge)
    return grant.user, None


# --------------------------------------------------------------------------- handlers: catalogue

_KNOWN_OPTIONS = {"$filter", "$top", "$skip", "$orderby", "$count", "$expand", "$format"}


def _int_option(query: Any, name: str, default: int, maximum: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise FilterError(f"Invalid value for {name}: {raw!r} is not an integer") from None
    if not 0 <= value <= maximum:
        raise FilterError(f"Invalid value for {name}: {value} (must be between 0 and {maximum})")
    return value


def _expand(query: Any) -> bool:
    raw = query.get("$expand")
    if raw is None:
        return False
    parts = {p.strip() for p in raw.split(",") if p.strip()}
    unknown = parts - {"Attributes"}
    if unknown:
        raise FilterError(f"unsupported $expand {sorted(unknown)}; the sandbox expands Attributes only")
    return "Attributes" in parts


async def _products(request: web.Request) -> web.Response:
    st = _state(request)
    _consume_faults(request, st)
    query = request.query
    unknown = sorted(k for k in query if k.startswith("$") and k not in _KNOWN_OPTIONS)
    if unknown:
        return _odata_error(400, "BadRequest", f"unsupported query option(s) {unknown}", unknown[0])
    target = "$filter"
    try:
        predicates = parse_filter(query.get("$filter", ""))
        target = "$top"
        top = _int_option(query, "$top", TOP_DEFAULT, TOP_MAX)
        if st.ctx.page_cap is not None:
            top = min(top, st.ctx.page_cap)
        target = "$skip"
        skip = _int_option(query, "$skip", 0, SKIP_MAX)
        target = "$orderby"
        order = parse_orderby(query.get("$orderby", ""))
        target = "$expand"
        expand = _expand(query)
        target = "$count"
        count_raw = query.get("$count", "false").lower()
        if count_raw not in ("true", "false"):
            raise FilterError(f"Invalid value for $count: {count_raw!r} (true or false)")
    except FilterError as exc:
        return _odata_error(400, "BadRequest", str(exc), target)

    query_plan = Query.plan(predicates, order)
    try:
        page, more = await asyncio.to_thread(query_plan.page, st, skip, top)
        total = await asyncio.to_thread(query_plan.count, st) if count_raw == "true" else None
    except QueryTooBroad:
        return _odata_error(400, "BadRequest", f"the sandbox looks at no more than {MAX_SCAN} products per request; "
                            "narrow the $filter (datasetIdentifier, ContentDate, Intersects)", "$filter")
    page = [st.remember(p) for p in page]
    await st.ensure_contents(page)
    body: dict[str, Any] = {"@odata.context": "$metadata#Products"}
    if total is not None:
        body["@odata.count"] = total
    body["value"] = [p.to_json(expand) for p in page]
    next_skip = skip + top
    if top and more and next_skip <= SKIP_MAX:
        params = [(k, v) for k, v in query.items() if k != "$skip"] + [("$skip", str(next_skip))]
        body["@odata.nextLink"] = f"{_origin(request)}{ODATA_PATH}/Products?" + urlencode(params, quote_via=quote)
    return web.json_response(body)


async def _product_or_404(st: CdseState, raw_id: str) -> CdseProduct | None:
    return await asyncio.to_thread(st.find, _strip_key(raw_id))


async def _product(request: web.Request) -> web.Response:
    st = _state(request)
    _consume_faults(request, st)
    try:
        expand = _expand(request.query)
    except FilterError as exc:
        return _odata_error(400, "BadRequest", str(exc), "$expand")
    product = await _product_or_404(st, request.match_info["pid"])
    if product is None:
        return _odata_error(404, "NotFound", f"Product {_strip_key(request.match_info['pid'])} not found")
    await st.ensure_contents([product])
    return web.json_response({"@odata.context": "$metadata#Products/$entity", **product.to_json(expand)})


async def _nodes(request: web.Request) -> web.Response:
    """``Products(<Id>)/Nodes`` (the product folder) and ``.../Nodes(<name>)/Nodes`` (its file)."""
    st = _state(request)
    _consume_faults(request, st)
    if st.nodes_redirect and request.path.startswith(ODATA_PATH):  # anonymous Nodes calls answered 301
        location = f"{_origin(request)}{DOWNLOAD_PATH}{request.path[len(ODATA_PATH):]}"
        return web.Response(status=301, headers={"Location": location})
    product = await _product_or_404(st, request.match_info["pid"])
    if product is None:
        return _odata_error(404, "NotFound", f"Product {_strip_key(request.match_info['pid'])} not found")
    base = f"{_origin(request)}{request.path.rsplit('/Nodes', 1)[0]}"
    node = request.match_info.get("node")
    if node is None:
        entry = {"Id": product.name, "Name": product.name, "ContentLength": 0, "ChildrenNumber": 1,
                 "Nodes": {"uri": f"{base}/Nodes({product.name})/Nodes"}}
        return web.json_response({st.nodes_key: [entry]})
    if _strip_key(node) != product.name:
        return _odata_error(404, "NotFound", f"Node {_strip_key(node)} not found")
    await st.ensure_contents([product])
    size = (await asyncio.to_thread(st.path, product)).stat().st_size  # the file's, whatever $value serves
    entry = {"Id": product.file_name, "Name": product.file_name, "ContentLength": size, "ChildrenNumber": 0,
             "Nodes": {"uri": f"{base}/Nodes({product.file_name})/Nodes"}}
    return web.json_response({st.nodes_key: [entry]})


# --------------------------------------------------------------------------- handlers: download


async def _catalogue_value(request: web.Request) -> web.Response:
    """``$value`` asked of the catalogue: moved to the download service (as the real one does)."""
    st = _state(request)
    _consume_faults(request, st)
    location = f"{_origin(request)}{DOWNLOAD_PATH}/Products({request.match_info['pid']})/$value"
    return web.Response(status=301, headers={"Location": location})


async def _download(request: web.Request) -> web.Response:
    st = _state(request)
    _consume_faults(request, st)
    user, problem = _bearer_user(request, st)
    if problem is not None:
        return problem
    product = await _product_or_404(st, request.match_info["pid"])
    if product is None:
        return json_error(404, {"detail": "Not Found"})
    node, file = request.match_info.get("node"), request.match_info.get("file")
    if node is not None and (_strip_key(node) != product.name or _strip_key(file or "") != product.file_name):
        return json_error(404, {"detail": "Not Found"})
    await st.ensure_contents([product])
    if st.payload == "zip" and node is None:  # live: 301 to zipper, which wants the token too
        location = f"{_transfer_origin(request, st)}{ZIPPER_PATH}/Products({request.match_info['pid']})/$value"
        return web.Response(status=301, headers={"Location": location})
    if st.nodes_value == "zipper" and node is not None:  # the same path on zipper, token wanted there too
        location = f"{_transfer_origin(request, st)}{ZIPPER_PATH}{request.path[len(DOWNLOAD_PATH):]}"
        return web.Response(status=301, headers={"Location": location})
    st.remember_s3(product)
    location = st.presign(_transfer_origin(request, st), product, user or "")
    return web.Response(status=st.redirect_status, headers={"Location": location})


async def _zipper(request: web.Request) -> web.StreamResponse:
    """``zipper``'s ``$value``: the product folder zipped, for a valid bearer token only (``payload = "zip"``)."""
    st = _state(request)
    _consume_faults(request, st)
    _, problem = _bearer_user(request, st)
    if problem is not None:
        return problem
    product = await _product_or_404(st, request.match_info["pid"])
    if product is None:
        return json_error(404, {"detail": "Not Found"})
    await st.ensure_contents([product])
    path = await asyncio.to_thread(st.payload_path, product)
    return await serve_file(request, path, st.ctx, filename=f"{product.name}.zip", content_type="application/zip")


async def _zipper_node(request: web.Request) -> web.StreamResponse:
    """``zipper``'s ``Nodes(..)/Nodes(..)/$value`` (``nodes_value = "zipper"``): the file, with Range, for a valid
    bearer token only."""
    st = _state(request)
    _consume_faults(request, st)
    _, problem = _bearer_user(request, st)
    if problem is not None:
        return problem
    product = await _product_or_404(st, request.match_info["pid"])
    node, file = request.match_info["node"], request.match_info["file"]
    if product is None or _strip_key(node) != product.name or _strip_key(file) != product.file_name:
        return json_error(404, {"detail": "Not Found"})
    await st.ensure_contents([product])
    return await serve_file(request, st.path(product), st.ctx, filename=product.file_name,
                            content_type="application/octet-stream")


async def _transfer(request: web.Request) -> web.StreamResponse:
    """The presigned transfer URL the download service redirects to (``/s3/eodata/<key>?X-Amz-...``)."""
    st = _state(request)
    _consume_faults(request, st)
    if "Authorization" in request.headers:
        with st.lock:
            st.bearer_on_transfer += 1
    path = request.path
    resource = path[len(S3_PATH):]
    user, reason = st.verify(path, request.query)
    if user is None:
        if reason == "expired":
            return cdse_s3.s3_error(403, "AccessDenied", "Request has expired", resource)
        if reason == "anonymous":
            return cdse_s3.s3_error(403, "AccessDenied", "Anonymous access is forbidden for this operation", resource)
        return cdse_s3.s3_error(403, "SignatureDoesNotMatch",
                                "The request signature we calculated does not match the signature you provided.",
                                resource)
    fault = st.ctx.faults.take(SERVICE, request.get("sandbox_endpoint", "download"), {"expired_link"})
    if fault is not None:
        status = int(fault.params.get("status", 403))
        if status == 404:
            return cdse_s3.s3_error(404, "NoSuchKey", "The specified key does not exist.", resource)
        return cdse_s3.s3_error(status, "AccessDenied", "Request has expired", resource)
    product = st.by_s3_key(resource)
    if product is None:
        return cdse_s3.s3_error(404, "NoSuchKey", "The specified key does not exist.", resource)
    cut = st.ctx.faults.take(SERVICE, request.get("sandbox_endpoint", "download"), {"token_cut"})
    if cut is not None:
        st.expire_access()  # the client's next $value with this token gets 401 until it refreshes
    file_path = await asyncio.to_thread(st.path, product)
    content_type = "application/x-netcdf" if product.fmt == "nc" else "image/tiff"
    return await serve_file(request, file_path, st.ctx, filename=product.file_name, content_type=content_type,
                            fault=cut)


# --------------------------------------------------------------------------- connection cap


def _request_user(request: web.Request, st: CdseState) -> str | None:
    """Whom a request counts for (None: not counted, e.g. the token endpoint or another service)."""
    name = getattr(request.match_info.route, "name", None) or ""
    if not name.startswith("cdse.") or name == "cdse.token":
        return None
    user: str | None = None
    if name == "cdse.download.s3":
        key = request.query.get("X-Amz-Credential", "").split("/", 1)[0]
        with st.lock:
            user = st.keys.get(key)
    elif name.startswith("cdse.s3."):
        found = st.s3_keys.get(cdse_s3.access_key_of(request) or "")
        user = found[1] if found else None
    else:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            grant, _ = st.grant(token.strip(), "access")
            user = grant.user if grant is not None else None
    return user or ANONYMOUS


def _too_many(request: web.Request, st: CdseState) -> web.Response:
    message = (f"Too Many Requests: Max session number {st.max_concurrent} exceeded "
               f"(at most {st.max_concurrent} concurrent connections per user across OData, download and S3)")
    name = getattr(request.match_info.route, "name", None) or ""
    if name.startswith("cdse.s3."):
        return cdse_s3.s3_error(429, "TooManyRequests", message, request.path)
    return json_error(429, {"detail": message})


def _cap_middleware(st: CdseState) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Count requests in flight per user until their last byte is sent; refuse beyond the cap."""

    @web.middleware
    async def cap(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        user = _request_user(request, st)
        if user is None:
            return await handler(request)
        if st.ctx.faults.take(SERVICE, request.get("sandbox_endpoint", "*"), {"connection_cap"}) is not None:
            return _too_many(request, st)
        for _ in range(_SLOT_GRACE_STEPS):  # a transfer that just ended may not have handed its slot back yet
            if not st.would_exceed(user):
                break
            await asyncio.sleep(0.01)
        if not st.enter(user):
            return _too_many(request, st)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                st.leave(user)

        try:
            response = await handler(request)
        except BaseException:
            release()
            raise
        if response.prepared:  # streamed by the handler already (a body fault)
            release()
            return response
        prepare, write_eof = response.prepare, response.write_eof

        async def prepare_then_maybe_release(req: web.BaseRequest) -> Any:
            try:
                return await prepare(req)
            except BaseException:
                release()
                raise

        async def write_eof_then_release(*args: Any, **kwargs: Any) -> Any:
            try:
                return await write_eof(*args, **kwargs)
            finally:
                release()

        response.prepare = prepare_then_maybe_release  # type: ignore[method-assign]  # hold the slot while sending
        response.write_eof = write_eof_then_release  # type: ignore[method-assign]
        return response

    return cap


# --------------------------------------------------------------------------- setup


def setup(app: web.Application, ctx: SandboxContext) -> None:
    """Add the CDSE token, catalogue, download, transfer and S3 routes (and the connection cap) to the app."""
    existing = ctx.state.get("cdse")
    st = existing if isinstance(existing, CdseState) else CdseState(ctx, existing if isinstance(existing, dict) else None)
    ctx.state["cdse"] = st
    app[STATE_KEY] = st
    app.middlewares.append(_cap_middleware(st))
    r = app.router
    r.add_post(TOKEN_PATH, _token, name="cdse.token")
    r.add_get(f"{ODATA_PATH}/Products", _products, name="cdse.products")
    r.add_get(ODATA_PATH + "/Products({pid})", _product, name="cdse.product")
    r.add_get(ODATA_PATH + "/Products({pid})/$value", _catalogue_value, name="cdse.download.catalogue")
    r.add_get(ODATA_PATH + "/Products({pid})/Nodes", _nodes, name="cdse.nodes")
    r.add_get(ODATA_PATH + "/Products({pid})/Nodes({node})/Nodes", _nodes, name="cdse.nodes.node")
    r.add_get(DOWNLOAD_PATH + "/Products({pid})/Nodes", _nodes, name="cdse.nodes.download")
    r.add_get(DOWNLOAD_PATH + "/Products({pid})/Nodes({node})/Nodes", _nodes, name="cdse.nodes.download_node")
    r.add_get(DOWNLOAD_PATH + "/Products({pid})/$value", _download, name="cdse.download")
    r.add_get(DOWNLOAD_PATH + "/Products({pid})/Nodes({node})/Nodes({file})/$value", _download,
              name="cdse.download.node")
    r.add_get(S3_PATH + "/eodata/{key:.+}", _transfer, name="cdse.download.s3")
    r.add_get(ZIPPER_PATH + "/Products({pid})/$value", _zipper, name="cdse.download.zipper")
    r.add_get(ZIPPER_PATH + "/Products({pid})/Nodes({node})/Nodes({file})/$value", _zipper_node,
              name="cdse.download.zipper_node")
    cdse_s3.setup(app, st)


__all__ = ["ANONYMOUS", "CdseState", "FilterError", "Predicate", "Query", "QueryTooBroad", "intersects_bbox",
           "parse_filter", "setup", "MAX_CONCURRENT", "MAX_CONCURRENT_DOWNLOADS", "PRESIGN_LIFETIME",
           "DOWNLOAD_REDIRECT_STATUS", "MAX_SCAN"]
