"""CDSE's S3 endpoint (``eodata.dataspace.copernicus.eu``) in the sandbox: path style, bucket ``eodata``.

Why real S3 rather than a file server: the client reads COG windows through
GDAL ``/vsis3/`` and boto3, unchanged, and must be tested with the requests
those libraries really send (SigV4 signatures, HEAD, Range GETs, directory
listings).  So every request's AWS Signature Version 4 is recomputed here from
the request and the secret key (HMAC-SHA256, header or presigned-query form)
and compared; nothing is taken on trust.

Routes (same port as the other services; the host name is free, ``Sandbox.env()``
gives ``CDSE_S3_ENDPOINT=http://localhost:<port>``):

- ``GET|HEAD /eodata/<key>`` (route ``cdse.s3.object``, fault endpoint ``s3``):
  GetObject with a single Range (206 + Content-Range, 416 beyond the end) and
  HeadObject; 404 ``NoSuchKey`` for unknown keys.
- ``GET /eodata`` and ``/eodata/`` (route ``cdse.s3.bucket``): ListObjects v1
  (``prefix``, ``delimiter``, ``marker``, ``max-keys``) and v2 (``list-type=2``,
  ``continuation-token``, ``start-after``, ``fetch-owner``), ``encoding-type=url``.
  Keys are listed in lexicographic order; a page holds at most
  :data:`MAX_OBJECTS_PER_PAGE` objects (their files are generated so ``Size``
  is exact), common prefixes need no file.

Keys: ``CLMS/<component>/<productType>/<datasetIdentifier>/YYYY/MM/DD/<Name>/<file>``,
i.e. a catalogue product's ``S3Path`` without ``/eodata/`` plus its one file.

Credentials: ``st.s3_keys`` (access key -> (secret, user); the sandbox's are
``CDSE_S3_ACCESS_KEY`` / ``CDSE_S3_SECRET_KEY`` of ``Sandbox.env()``).  Any region
in the credential scope is accepted (CDSE's is ``default``; GDAL and boto3 sign
with ``us-east-1`` unless told).  Errors are S3 XML, status 403:
``AccessDenied`` (unsigned), ``InvalidAccessKeyId``, ``SignatureDoesNotMatch``,
``RequestTimeTooSkewed`` (``X-Amz-Date`` more than ``st.s3_max_skew`` seconds
from the wall clock), ``AccessDenied`` "Request has expired" (presigned).
Requests count towards the user's connection cap (see :mod:`.cdse`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import calendar
import datetime as dt
import hashlib
import hmac
import secrets
import time
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import quote, unquote
from xml.sax.saxutils import escape

from aiohttp import web

from .cdse_state import STATE_KEY
from .core import serve_file

if TYPE_CHECKING:
    from .cdse_products import CdseProduct
    from .cdse_state import CdseState

BUCKET = "eodata"
ALGORITHM = "AWS4-HMAC-SHA256"
#: Objects per listing page at most (each needs its file for an exact Size).
MAX_OBJECTS_PER_PAGE = 25
_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_LAST_MODIFIED = "2024-01-01T00:00:00.000Z"  # fixed: listings must not depend on the wall clock
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def s3_error(status: int, code: str, message: str, resource: str) -> web.Response:
    """An S3-style XML error (what an object store answers)."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"<Resource>{escape(resource)}</Resource><RequestId>{secrets.token_hex(8).upper()}</RequestId></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml")


# --------------------------------------------------------------------------- SigV4


def _auth_fields(header: str) -> dict[str, str] | None:
    """``Credential``, ``SignedHeaders``, ``Signature`` of an ``AWS4-HMAC-SHA256 ...`` header."""
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        return None
    fields = {}
    for part in rest.split(","):
        name, _, value = part.strip().partition("=")
        fields[name] = value
    return fields if {"Credential", "SignedHeaders", "Signature"} <= set(fields) else None


def access_key_of(request: web.Request) -> str | None:
    """The access key a request is signed with (header or presigned query), unverified."""
    fields = _auth_fields(request.headers.get("Authorization", ""))
    credential = fields["Credential"] if fields else request.query.get("X-Amz-Credential", "")
    return credential.split("/", 1)[0] or None


def _canonical_query(raw_query: str, drop_signature: bool) -> str:
    pairs = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        name, value = unquote(name), unquote(value)
        if drop_signature and name == "X-Amz-Signature":
            continue
        pairs.append((quote(name, safe="-_.~"), quote(value, safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signature(request: web.Request, secret: str, scope: str, amz_date: str, signed_headers: str,
              payload_hash: str, presigned: bool) -> str:
    """The SigV4 signature of this request as the holder of ``secret`` computes it."""
    raw_path, _, raw_query = request.raw_path.partition("?")
    canonical_headers = "".join(
        f"{name}:{','.join(' '.join(v.split()) for v in request.headers.getall(name, []))}\n"
        for name in signed_headers.split(";")
    )
    canonical = "\n".join((request.method, quote(unquote(raw_path), safe="/~"),
                           _canonical_query(raw_query, presigned), canonical_headers, signed_headers, payload_hash))
    to_sign = "\n".join((ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()))
    date, region, service, _ = scope.split("/")
    return hmac.new(_signing_key(secret, date, region, service), to_sign.encode(), hashlib.sha256).hexdigest()


def _amz_time(amz_date: str) -> float | None:
    try:
        return calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return None


def verify(request: web.Request, st: CdseState) -> tuple[str | None, web.Response | None]:
    """(user, None) for a correctly signed request, else (None, the S3 error to answer)."""
    resource = request.path
    fields = _auth_fields(request.headers.get("Authorization", ""))
    query = request.query
    presigned = fields is None and query.get("X-Amz-Algorithm") == ALGORITHM
    if fields is not None:
        credential, signed_headers, given = fields["Credential"], fields["SignedHeaders"], fields["Signature"]
        amz_date = request.headers.get("x-amz-date", "")
        payload_hash = request.headers.get("x-amz-content-sha256", _EMPTY_SHA256)
    elif presigned:
        credential, signed_headers = query.get("X-Amz-Credential", ""), query.get("X-Amz-SignedHeaders", "")
        given, amz_date = query.get("X-Amz-Signature", ""), query.get("X-Amz-Date", "")
        payload_hash = "UNSIGNED-PAYLOAD"
    else:
        return None, s3_error(403, "AccessDenied", "Access Denied", resource)
    key, _, scope = credential.partition("/")
    found = st.s3_keys.get(key)
    if found is None:
        return None, s3_error(403, "InvalidAccessKeyId",
                              "The AWS Access Key Id you provided does not exist in our records.", resource)
    secret, user = found
    when = _amz_time(amz_date)
    scope_parts = scope.split("/")
    if when is None or len(scope_parts) != 4 or scope_parts[0] != amz_date[:8] or scope_parts[3] != "aws4_request" \
            or "host" not in signed_headers.split(";"):
        return None, s3_error(403, "AuthorizationHeaderMalformed",
                              "The authorization header is malformed; the Credential is mal-formed.", resource)
    expected = signature(request, secret, scope, amz_date, signed_headers, payload_hash, presigned)
    if not hmac.compare_digest(expected, given):
        return None, s3_error(403, "SignatureDoesNotMatch",
                              "The request signature we calculated does not match the signature you provided. "
                              "Check your key and signing method.", resource)
    now = time.time()  # clients sign with the wall clock, not the sandbox's
    if presigned:
        try:
            lifetime = int(query.get("X-Amz-Expires", "0"))
        except ValueError:
            lifetime = -1
        if now > when + lifetime:
            return None, s3_error(403, "AccessDenied", "Request has expired", resource)
    elif st.s3_max_skew is not None and abs(now - when) > st.s3_max_skew:
        return None, s3_error(403, "RequestTimeTooSkewed",
                              "The difference between the request time and the current time is too large.", resource)
    return user, None


# --------------------------------------------------------------------------- objects


def _ptype(spec: Any) -> str:
    return spec.product_type or spec.short_name.lower()


def find_object(st: CdseState, key: str) -> CdseProduct | None:
    """The product whose one file has this key (``CLMS/.../<Name>/<file>``), or None."""
    parts = key.split("/")
    if len(parts) != 9 or parts[0] != "CLMS":
        return None
    try:
        item = st.ctx.store.item(parts[7])
    except (KeyError, ValueError):
        return None
    if str(item.format).lower() not in ("nc", "cog") or item.name != parts[8]:
        return None
    product = st.product(item)
    if product.identifier is None or product.s3_key != f"/{BUCKET}/{key}":
        return None
    return product


async def _object(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE_KEY]
    user, problem = verify(request, st)
    if problem is not None:
        return problem
    key = request.match_info["key"]
    product = await asyncio.to_thread(find_object, st, key)
    if product is None:
        return s3_error(404, "NoSuchKey", "The specified key does not exist.", f"/{BUCKET}/{key}")
    path = await asyncio.to_thread(st.path, product)
    content_type = "application/x-netcdf" if product.fmt == "nc" else "image/tiff"
    response = await serve_file(request, path, st.ctx, filename=product.file_name, content_type=content_type,
                                extra_headers={"x-amz-request-id": secrets.token_hex(8).upper()})
    response.headers.pop("Content-Disposition", None)
    return response


# --------------------------------------------------------------------------- listing


class _Tree:
    """The bucket's folder tree, walked lazily in key order from what the store offers on CDSE."""

    def __init__(self, st: CdseState):
        self.st = st
        self.specs = [s for s in st.specs()]
        self._dates: dict[str, list[dt.date]] = {}

    def dates(self, spec: Any) -> list[dt.date]:
        if spec.key not in self._dates:
            seen: list[dt.date] = []
            for start in self.st.ctx.store.step_starts(spec.key):
                if not seen or seen[-1] != start.date():
                    seen.append(start.date())
            self._dates[spec.key] = seen
        return self._dates[spec.key]

    def children(self, parts: tuple[str, ...]) -> list[tuple[str, Any]]:
        """(name, payload) of a folder's entries; folder names end with ``/``, payload is the product of a file."""
        depth = len(parts)
        specs = self.specs
        if depth == 0:
            return [("CLMS/", None)]
        if depth >= 2:
            specs = [s for s in specs if s.component == parts[1]]
        if depth >= 3:
            specs = [s for s in specs if _ptype(s) == parts[2]]
        if depth >= 4:
            specs = [s for s in specs if s.dataset_identifier == parts[3]]
        if depth == 1:
            return [(n + "/", None) for n in sorted({s.component for s in specs})]
        if depth == 2:
            return [(n + "/", None) for n in sorted({_ptype(s) for s in specs})]
        if depth == 3:
            return [(n + "/", None) for n in sorted({s.dataset_identifier for s in specs})]
        dates = sorted({d for s in specs for d in self.dates(s)})
        if depth == 4:
            return [(f"{y:04d}/", None) for y in sorted({d.year for d in dates})]
        if depth == 5:
            return [(f"{m:02d}/", None) for m in sorted({d.month for d in dates if d.year == int(parts[4])})]
        if depth == 6:
            return [(f"{d.day:02d}/", None) for d in dates if (d.year, d.month) == (int(parts[4]), int(parts[5]))]
        day = dt.date(int(parts[4]), int(parts[5]), int(parts[6]))
        products = {}
        for spec in specs:
            for fmt in ("nc", "cog"):
                if fmt not in spec.formats:
                    continue
                for item in self.st.ctx.store.iter_items(spec.key, start=day, end=day, format=fmt):
                    if item.start.date() == day:
                        products[item.product_name] = (spec, item)
        if depth == 7:
            return [(name + "/", None) for name in sorted(products)]
        if depth == 8 and parts[7] in products:
            spec, item = products[parts[7]]
            return [(item.name, self.st.product(item, spec))]
        return []

    def walk(self, prefix: str, delimiter: str, after: str) -> Iterator[tuple[str, Any]]:
        """(key, product) of objects and (common prefix, None) in key order, past ``after``."""
        last_prefix = None

        def visit(parts: tuple[str, ...], path: str) -> Iterator[tuple[str, Any]]:
            nonlocal last_prefix
            for name, payload in self.children(parts):
                full = path + name
                if not (full.startswith(prefix) or prefix.startswith(full)):
                    continue
                if after and full < after and not after.startswith(full):
                    continue  # the whole subtree sorts before the marker
                rest = full[len(prefix):] if full.startswith(prefix) else ""
                if delimiter and delimiter in rest:
                    common = prefix + rest.split(delimiter, 1)[0] + delimiter
                    if common != last_prefix and common > after:
                        last_prefix = common
                        yield common, None
                    continue
                if name.endswith("/"):
                    if len(parts) < 9:
                        yield from visit(parts + (name[:-1],), full)
                elif full > after:
                    yield full, payload

        yield from visit((), "")


def _list_page(st: CdseState, prefix: str, delimiter: str, after: str, max_keys: int) -> tuple[list, list, bool]:
    """(objects, common prefixes, truncated) of one page; object files are generated for their size."""
    objects: list[tuple[str, Any]] = []
    prefixes: list[str] = []
    walker = _Tree(st).walk(prefix, delimiter, after)
    for key, product in walker:
        if len(objects) + len(prefixes) >= max_keys or len(objects) >= MAX_OBJECTS_PER_PAGE:
            return objects, prefixes, True
        if product is None:
            prefixes.append(key)
        else:
            st.ensure_content(product)
            objects.append((key, product))
    return objects, prefixes, False


async def _bucket(request: web.Request) -> web.Response:
    st = request.app[STATE_KEY]
    _, problem = verify(request, st)
    if problem is not None:
        return problem
    q = request.query
    v2 = q.get("list-type") == "2"
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
    encode = q.get("encoding-type") == "url"
    try:
        max_keys = max(0, min(1000, int(q.get("max-keys", "1000"))))
    except ValueError:
        return s3_error(400, "InvalidArgument", "max-keys must be an integer", f"/{BUCKET}")
    after = q.get("marker", "")
    if v2:
        token = q.get("continuation-token")
        try:
            after = base64.urlsafe_b64decode(token.encode()).decode() if token else q.get("start-after", "")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return s3_error(400, "InvalidArgument", "The continuation token provided is incorrect", f"/{BUCKET}")
    objects, prefixes, truncated = await asyncio.to_thread(_list_page, st, prefix, delimiter, after, max_keys)

    def enc(text: str) -> str:
        return escape(quote(text, safe="/") if encode else text)

    out = ['<?xml version="1.0" encoding="UTF-8"?>', f'<ListBucketResult xmlns="{_NS}">',
           f"<Name>{BUCKET}</Name><Prefix>{enc(prefix)}</Prefix><MaxKeys>{max_keys}</MaxKeys>"]
    if delimiter:
        out.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
    if encode:
        out.append("<EncodingType>url</EncodingType>")
    out.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
    last = max([k for k, _ in objects] + prefixes, default="")
    if v2:
        out.append(f"<KeyCount>{len(objects) + len(prefixes)}</KeyCount>")
        if q.get("continuation-token"):
            out.append(f"<ContinuationToken>{escape(q['continuation-token'])}</ContinuationToken>")
        if q.get("start-after"):
            out.append(f"<StartAfter>{enc(q['start-after'])}</StartAfter>")
        if truncated:
            token = base64.urlsafe_b64encode(last.encode()).decode()
            out.append(f"<NextContinuationToken>{token}</NextContinuationToken>")
    else:
        out.append(f"<Marker>{enc(q.get('marker', ''))}</Marker>")
        if truncated:
            out.append(f"<NextMarker>{enc(last)}</NextMarker>")
    owner = "<Owner><ID>eodata</ID><DisplayName>eodata</DisplayName></Owner>" if (not v2 or q.get("fetch-owner") == "true") else ""
    for key, product in objects:
        out.append(f"<Contents><Key>{enc(key)}</Key><LastModified>{_LAST_MODIFIED}</LastModified>"
                   f"<ETag>&quot;{product.md5}&quot;</ETag><Size>{product.size}</Size>{owner}"
                   "<StorageClass>STANDARD</StorageClass></Contents>")
    for common in prefixes:
        out.append(f"<CommonPrefixes><Prefix>{enc(common)}</Prefix></CommonPrefixes>")
    out.append("</ListBucketResult>")
    return web.Response(text="".join(out), content_type="application/xml")


def setup(app: web.Application, st: CdseState) -> None:
    """Add the S3 bucket and object routes (called by :func:`intake_clms.sandbox.cdse.setup`)."""
    app[STATE_KEY] = st
    app.router.add_get(f"/{BUCKET}", _bucket, name="cdse.s3.bucket")
    app.router.add_get(f"/{BUCKET}/", _bucket, name="cdse.s3.bucket_slash")
    app.router.add_get(f"/{BUCKET}/{{key:.+}}", _object, name="cdse.s3.object")


__all__ = ["BUCKET", "MAX_OBJECTS_PER_PAGE", "access_key_of", "find_object", "s3_error", "setup", "signature",
           "verify"]
