"""The Copernicus Data Space Ecosystem (CDSE) protocol, as far as CLMS products need it.

Three services share one port, as the sandbox does for every protocol:

- Keycloak's token endpoint (``/auth/realms/CDSE/protocol/openid-connect/token``):
  password (optional ``totp``) and refresh grants for the public ``cdse-public``
  client, answers and errors shaped like Keycloak's.  Lifetimes run on the
  sandbox clock: access tokens live ``ctx.token_lifetime / 6`` (CDSE's 600 s for
  the default hour), refresh tokens ``ctx.token_lifetime``; a ``token_expiry``
  fault expires every access and refresh token issued so far.
- The OData catalogue (``/odata/v1/Products``): a small but real parser for the
  ``$filter`` forms the CDSE documentation gives for CLMS (collection, string
  attributes such as ``datasetIdentifier`` / ``fileFormat``, ``ContentDate``
  bounds, ``OData.CSC.Intersects``, joined by ``and``), ``$top`` / ``$skip`` /
  ``$orderby`` / ``$count`` / ``$expand=Attributes`` and ``@odata.nextLink``.
  Anything else is refused with 400 naming the part that is not understood, so a
  client cannot silently rely on a filter the sandbox ignores.
- The download service (``/download/odata/v1/Products(<Id>)/$value``): checks the
  bearer token and redirects to a presigned, expiring S3-like URL on the same
  host and port (``/s3/eodata/CLMS/...``), which serves the file with Range
  support and at most :data:`MAX_CONCURRENT_DOWNLOADS` transfers per user.

The redirect stays on the same host:port (only the path changes), so ``requests``
keeps the Authorization header when it follows it (it strips it only when the
host, port or scheme changes) and a client that follows ``Location`` itself, as
CDSETool does, works the same.  The S3 URL needs no header: its query string is
the credential.

Products are the store's items (``ctx.store``) of datasets that have a
``datasetIdentifier``, in format ``nc`` or ``cog``; Id, Name, S3Path and the
attributes come from the store (``Item.uuid``, ``Item.product_name``,
``s3_path()``, ``cdse_attributes()``).  A product is a folder named
``<file stem>_<format>`` holding the one file; ``$value`` serves that file
itself (the sandbox does not zip a one-file product).  ContentLength and MD5 are
exact: the files of a listed page are generated (a few at a time) before it is
answered.  The store lists tens of millions of items, so a query is answered
lazily: dataset, format, time window and area are pushed down to the store, one
time series per dataset and format is walked (backwards for ``desc``) and the
series are merged; a request that would look at more than :data:`MAX_SCAN`
items is refused with 400.

Route names (service ``cdse``; the endpoint is the second part): ``cdse.token``,
``cdse.products``, ``cdse.product``, ``cdse.nodes[.*]`` (Nodes listings on both
hosts), ``cdse.download`` (``$value``), ``cdse.download.node`` (one file of a
product), ``cdse.download.catalogue`` (``$value`` asked of the catalogue: 301 to
the download service, as the real catalogue does) and ``cdse.download.s3`` (the
file transfer itself: body faults and ``expired_link`` faults for endpoint
``download`` act there; a ``status`` fault for ``download`` fires on whichever
hop comes first).

Settings live on the :class:`CdseState` object in ``ctx.state["cdse"]``
(``max_concurrent``, ``presign_lifetime``, ``redirect_status``, ``users``,
``access_lifetime`` / ``refresh_lifetime``); a dict placed there before
:func:`setup` runs is read as overrides.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import heapq
import hmac
import itertools
import re
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import quote, urlencode

import jwt
from aiohttp import web

from .core import SandboxContext, json_error, serve_file

SERVICE = "cdse"
CLIENT_ID = "cdse-public"
TOKEN_PATH = "/auth/realms/CDSE/protocol/openid-connect/token"
ODATA_PATH = "/odata/v1"
DOWNLOAD_PATH = "/download/odata/v1"
S3_PATH = "/s3"
COLLECTION = "CLMS"

#: General users may hold this many download connections at once (CDSE quota).
MAX_CONCURRENT_DOWNLOADS = 4
#: Sandbox seconds a presigned S3 URL stays valid.
PRESIGN_LIFETIME = 3600.0
#: Status of the download service's redirect to the S3-like URL.
DOWNLOAD_REDIRECT_STATUS = 307
#: Paging limits of the catalogue.
TOP_DEFAULT, TOP_MAX, SKIP_MAX = 20, 1000, 10_000
#: Most store items one catalogue request may look at (the store lists tens of millions).
MAX_SCAN = 300_000
#: Files generated at once to fill in ContentLength and MD5 of a page.
GENERATOR_THREADS = 4
_REMEMBERED = 200_000  # products kept by Id
_SLOT_GRACE_STEPS = 10  # x 10 ms (real time) waited for a download slot before answering 429
#: Used when the server gives no CDSE credentials (``ctx.state["cdse"]["users"]``).
DEFAULT_USERS: dict[str, str] = {"sandbox-user@example.org": "sandbox-password"}
SCOPE = "AUDIENCE_PUBLIC openid email profile ondemand_processing user-context"

_ID_NAMESPACE = uuid.UUID("6f0e6a52-2c1b-4d7e-9a8e-3c4b5d6e7f80")
_UTC = dt.timezone.utc


# --------------------------------------------------------------------------- helpers


def _aware(value: dt.datetime | dt.date) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=_UTC) if value.tzinfo is None else value.astimezone(_UTC)


def _iso(value: dt.datetime) -> str:
    """OData DateTimeOffset as CDSE writes it: milliseconds and ``Z``."""
    value = _aware(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _odata_error(status: int, code: str, message: str, target: str | None = None) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if target:
        body["target"] = target
    return json_error(status, {"error": body})


def _keycloak_error(status: int, error: str, description: str) -> web.Response:
    return json_error(status, {"error": error, "error_description": description},
                      headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def _s3_error(status: int, code: str, message: str, resource: str) -> web.Response:
    """An S3-style XML error (what an object store answers)."""
    request_id = secrets.token_hex(8).upper()
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{resource}</Resource><RequestId>{request_id}</RequestId></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml")


def _origin(request: web.Request) -> str:
    """Scheme://host:port as the client addressed us (so redirects keep the same host)."""
    return str(request.url.origin())


def _strip_key(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1]
    return text


# --------------------------------------------------------------------------- products

_DATE_ATTRIBUTES = {"nominalDate", "beginningDateTime", "endingDateTime", "processingDate"}
_PLATFORMS = [  # (file-name token, platformShortName, instrumentShortName)
    ("OLCI", "SENTINEL-3", "OLCI"),
    ("SLSTR", "SENTINEL-3", "SLSTR"),
    ("PROBAV", "PROBA-V", "VEGETATION"),
    ("VGT", "SPOT", "VEGETATION"),
    ("AVHRR", "NOAA", "AVHRR"),
    ("GEO", "MSG", "SEVIRI"),
    ("MSI", "SENTINEL-2", "MSI"),
    ("S2", "SENTINEL-2", "MSI"),
    ("S1", "SENTINEL-1", "SAR-C"),
]


def _platform(file_name: str, global_product: bool) -> tuple[str, str]:
    tokens = set(re.split(r"[_.\-]", file_name.upper()))
    for token, platform, instrument in _PLATFORMS:
        if token in tokens:
            return platform, instrument
    return ("SENTINEL-3", "OLCI") if global_product else ("SENTINEL-2", "MSI")


def _value_type(name: str, value: Any) -> str:
    if name in _DATE_ATTRIBUTES:
        return "DateTimeOffset"
    if isinstance(value, bool):
        return "String"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "Double"
    return "String"


class _Product:
    """One catalogue product: a store item seen through CDSE's vocabulary.

    Cheap to build (scans create many); the S3 path, attributes, size and MD5
    are worked out only when asked for.
    """

    __slots__ = ("item", "spec", "store", "id", "name", "file_name", "fmt", "start", "end", "bbox",
                 "size", "md5", "path", "rank", "_s3_dir", "_attributes")

    def __init__(self, store: Any, spec: Any, item: Any):
        self.store, self.spec, self.item = store, spec, item
        self.id: str = item.uuid
        self.file_name: str = item.name
        self.fmt: str = str(item.format).lower()
        self.name: str = item.product_name or f"{item.name.rsplit('.', 1)[0]}_{self.fmt}"
        self.start, self.end = _aware(item.start), _aware(item.end)
        self.bbox: tuple[float, float, float, float] = tuple(float(v) for v in item.bbox)  # type: ignore[assignment]
        self.size: int | None = None
        self.md5: str | None = None
        self.path: Path | None = None
        self.rank: tuple[int, int] = (0, 0)  # (stream, position): the tie-break of a listing
        self._s3_dir: str | None = None
        self._attributes: list[tuple[str, str, Any]] | None = None

    @property
    def identifier(self) -> str:
        return self.spec.dataset_identifier

    @property
    def origin_date(self) -> dt.datetime:
        return self.end + dt.timedelta(days=2, hours=3)

    @property
    def publication_date(self) -> dt.datetime:
        return self.origin_date + dt.timedelta(hours=1, minutes=17, seconds=42)

    @property
    def s3_dir(self) -> str:
        """``/eodata/CLMS/<component>/<productType>/<datasetIdentifier>/YYYY/MM/DD/<Name>`` (the store's)."""
        if self._s3_dir is None:
            self._s3_dir = self.store.s3_path(self.item)
        return self._s3_dir

    @property
    def s3_key(self) -> str:
        """Object path of the file, below ``/s3``."""
        return f"{self.s3_dir}/{self.file_name}"

    def attributes(self) -> list[tuple[str, str, Any]]:
        """(ValueType, Name, Value) triples, as ``$expand=Attributes`` lists them."""
        if self._attributes is None:
            values = dict(self.store.cdse_attributes(self.item))
            if not values.get("metricGridSpacing"):
                values.pop("metricGridSpacing", None)
            platform, instrument = _platform(self.file_name, values.get("areaOfInterest") == "global")
            values.update(
                beginningDateTime=_iso(self.start),
                endingDateTime=_iso(self.end),
                processingDate=_iso(self.origin_date),
                platformShortName=platform,
                instrumentShortName=instrument,
            )
            rt = re.search(r"-(RT\d)", self.file_name.upper())
            if rt:
                values["consolidationPeriod"] = rt.group(1)
            self._attributes = [(_value_type(k, v), k, v) for k, v in values.items()]
        return self._attributes

    def attribute(self, name: str) -> tuple[str, Any] | None:
        for value_type, attr_name, value in self.attributes():
            if attr_name == name:
                return value_type, value
        return None

    def to_json(self, expand: bool) -> dict[str, Any]:
        west, south, east, north = self.bbox
        ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
        wkt = ", ".join(f"{x:g} {y:g}" for x, y in ring)
        published = _iso(self.publication_date)
        body: dict[str, Any] = {
            "@odata.mediaContentType": "application/octet-stream",
            "Id": self.id,
            "Name": self.name,
            "ContentType": "application/octet-stream",
            "ContentLength": self.size,
            "OriginDate": _iso(self.origin_date),
            "PublicationDate": published,
            "ModificationDate": published,
            "Online": True,
            "EvictionDate": "9999-12-31T23:59:59.999Z",
            "S3Path": self.s3_dir,
            "Checksum": [{"Value": self.md5, "Algorithm": "MD5", "ChecksumDate": published}],
            "ContentDate": {"Start": _iso(self.start), "End": _iso(self.end)},
            "Footprint": f"geography'SRID=4326;POLYGON (({wkt}))'",
            "GeoFootprint": {"type": "Polygon", "coordinates": [ring]},
        }
        if expand:
            body["Attributes"] = [
                {"@odata.type": f"#OData.CSC.{vt}Attribute", "Name": name, "Value": value, "ValueType": vt}
                for vt, name, value in self.attributes()
            ]
        return body


# --------------------------------------------------------------------------- $filter

class FilterError(ValueError):
    """A ``$filter`` the sandbox does not understand; the message names the part."""


_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<geo>geography'(?:[^']|'')*')
  | (?P<str>'(?:[^']|'')*')
  | (?P<date>\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:\d{2})?)
  | (?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_.]*(?:/[A-Za-z_][A-Za-z0-9_.]*)*)
  | (?P<punct>[(),:=])
    """,
    re.VERBOSE,
)
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}
_DATE_PATHS: dict[str, Callable[[_Product], dt.datetime]] = {
    "ContentDate/Start": lambda p: p.start,
    "ContentDate/End": lambda p: p.end,
    "OriginDate": lambda p: p.origin_date,
    "PublicationDate": lambda p: p.publication_date,
    "ModificationDate": lambda p: p.publication_date,
}
_ATTRIBUTE_TYPES = ("String", "Integer", "Double", "DateTimeOffset")


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    pos: int


@dataclass
class Predicate:
    """One term of the ``and`` chain: a test on a product plus what the planner may push down.

    ``kind``: ``collection`` (value: the name), ``dataset`` (datasetIdentifier eq),
    ``format`` (fileFormat eq), ``time`` (value: (field, op, datetime) on
    ContentDate), ``space`` (value: the rings), ``name`` (Name eq) or ``other``.
    """

    text: str
    test: Callable[[_Product], bool]
    identifier: str | None = None  # set for datasetIdentifier eq '...'
    kind: str = "other"
    value: Any = None


def _tokenize(text: str) -> list[_Token]:
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m:
            raise FilterError(f"cannot read $filter at position {pos}: {text[pos:pos + 30]!r}")
        if m.lastgroup != "ws":
            tokens.append(_Token(m.lastgroup or "", m.group(), pos))
        pos = m.end()
    return tokens


def _parse_datetime(text: str) -> dt.datetime:
    value = text.replace("Z", "+00:00")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise FilterError(f"not a DateTimeOffset literal: {text!r}") from exc
    return _aware(parsed)


def _parse_wkt(text: str) -> list[list[tuple[float, float]]]:
    """``SRID=4326;POLYGON((...))`` / MULTIPOLYGON / POINT -> outer rings (a point is a 1-vertex ring)."""
    srid, _, wkt = text.partition(";")
    if not wkt:
        srid, wkt = "SRID=4326", srid
    if srid.strip().upper() != "SRID=4326":
        raise FilterError(f"unsupported spatial reference {srid.strip()!r} (only SRID=4326)")
    wkt = wkt.strip()
    kind = re.match(r"^([A-Za-z]+)\s*\(", wkt)
    if not kind or kind.group(1).upper() not in ("POLYGON", "MULTIPOLYGON", "POINT"):
        raise FilterError(f"unsupported geometry {wkt[:30]!r} (POLYGON, MULTIPOLYGON or POINT)")

    def ring(group: str) -> list[tuple[float, float]]:
        points = []
        for pair in group.split(","):
            xy = pair.split()
            if len(xy) != 2:
                raise FilterError(f"bad coordinate pair {pair.strip()!r} in {kind.group(1)}")
            points.append((float(xy[0]), float(xy[1])))
        return points

    try:
        if kind.group(1).upper() == "POINT":
            inner = re.fullmatch(r"POINT\s*\(([^()]*)\)", wkt, re.IGNORECASE)
            if not inner:
                raise FilterError(f"bad POINT {wkt!r}")
            return [ring(inner.group(1))]
        if kind.group(1).upper() == "POLYGON":
            if not re.fullmatch(r"POLYGON\s*\(\s*(\([^()]*\)\s*,?\s*)+\)", wkt, re.IGNORECASE):
                raise FilterError(f"bad POLYGON {wkt[:40]!r}")
            return [ring(re.findall(r"\(([^()]*)\)", wkt)[0])]
        polygons = re.findall(r"\(\s*\(([^()]*)\)", wkt)
        if not polygons:
            raise FilterError(f"bad MULTIPOLYGON {wkt[:40]!r}")
        return [ring(g) for g in polygons]
    except ValueError as exc:
        if isinstance(exc, FilterError):
            raise
        raise FilterError(f"bad number in {wkt[:40]!r}") from exc


def _point_in_polygon(x: float, y: float, ring: list[tuple[float, float]]) -> bool:
    inside = False
    for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1]):
        if (y1 > y) != (y2 > y):
            cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            if x < cross:
                inside = not inside
    return inside


def _segments_cross(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float], d: tuple[float, float]) -> bool:
    def orient(p, q, r) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    def on_segment(p, q, r) -> bool:
        return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(p[1], q[1])

    d1, d2, d3, d4 = orient(c, d, a), orient(c, d, b), orient(a, b, c), orient(a, b, d)
    if ((d1 > 0) != (d2 > 0)) and ((d3 > 0) != (d4 > 0)) and 0 not in (d1, d2, d3, d4):
        return True
    return (
        (d1 == 0 and on_segment(c, d, a)) or (d2 == 0 and on_segment(c, d, b))
        or (d3 == 0 and on_segment(a, b, c)) or (d4 == 0 and on_segment(a, b, d))
    )


def intersects_bbox(rings: list[list[tuple[float, float]]], bbox: tuple[float, float, float, float]) -> bool:
    """True if any ring (polygon outer ring, or point) touches the lon/lat box."""
    west, south, east, north = bbox
    corners = [(west, south), (east, south), (east, north), (west, north)]
    edges = list(zip(corners, corners[1:] + corners[:1]))
    for ring in rings:
        if any(west <= x <= east and south <= y <= north for x, y in ring):
            return True
        if len(ring) < 3:
            continue
        if any(_point_in_polygon(x, y, ring) for x, y in corners):
            return True
        for p, q in zip(ring, ring[1:] + ring[:1]):
            if any(_segments_cross(p, q, c, d) for c, d in edges):
                return True
    return False


class _FilterParser:
    """Recursive descent over exactly the CLMS forms of the CDSE documentation.

    Grammar: ``expr := term ('and' term)*``; ``term := '(' expr ')' | comparison
    | attribute-any | intersects | name-function``.  ``or`` and ``not`` are
    refused by name.
    """

    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    # token helpers
    def peek(self, offset: int = 0) -> _Token | None:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else None

    def take(self) -> _Token:
        tok = self.peek()
        if tok is None:
            raise FilterError("$filter ends too early")
        self.i += 1
        return tok

    def expect(self, text: str) -> _Token:
        tok = self.take()
        if tok.text.lower() != text.lower():
            raise FilterError(f"expected {text!r} at position {tok.pos}, found {tok.text!r}")
        return tok

    def fragment(self, start: _Token) -> str:
        end = self.peek()
        return self.text[start.pos : end.pos if end else len(self.text)].strip()

    def is_keyword(self, word: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "name" and tok.text.lower() == word

    # grammar
    def parse(self) -> list[Predicate]:
        if not self.tokens:
            return []
        terms = self.parse_and()
        tok = self.peek()
        if tok is not None:
            raise FilterError(f"unsupported $filter part at position {tok.pos}: {self.text[tok.pos:tok.pos + 40]!r}")
        return terms

    def parse_and(self) -> list[Predicate]:
        terms = self.parse_term()
        while True:
            if self.is_keyword("and"):
                self.take()
                terms += self.parse_term()
            elif self.is_keyword("or"):
                raise FilterError(f"unsupported operator 'or' at position {self.peek().pos}; only 'and' is supported")  # type: ignore[union-attr]
            else:
                return terms

    def parse_term(self) -> list[Predicate]:
        tok = self.peek()
        if tok is None:
            raise FilterError("$filter ends too early")
        if tok.text == "(":
            self.take()
            terms = self.parse_and()
            self.expect(")")
            return terms
        if tok.kind != "name":
            raise FilterError(f"unexpected {tok.text!r} at position {tok.pos}")
        if tok.text.lower() == "not":
            raise FilterError(f"unsupported operator 'not' at position {tok.pos}")
        if tok.text == "OData.CSC.Intersects":
            return [self.parse_intersects()]
        if tok.text in ("contains", "startswith", "endswith"):
            return [self.parse_name_function()]
        if tok.text.endswith("/any"):
            return [self.parse_any()]
        after = self.peek(1)
        if after is not None and after.text == "(":
            raise FilterError(f"unsupported function {tok.text!r} at position {tok.pos}")
        return [self.parse_comparison()]

    def parse_literal(self) -> tuple[str, Any]:
        tok = self.take()
        if tok.kind == "str":
            return "str", tok.text[1:-1].replace("''", "'")
        if tok.kind == "date":
            return "date", _parse_datetime(tok.text)
        if tok.kind == "num":
            return "num", float(tok.text) if any(c in tok.text for c in ".eE") else int(tok.text)
        if tok.kind == "name" and tok.text in ("true", "false"):
            return "bool", tok.text == "true"
        raise FilterError(f"expected a literal at position {tok.pos}, found {tok.text!r}")

    def parse_operator(self) -> str:
        tok = self.take()
        op = tok.text.lower()
        if tok.kind != "name" or op not in _COMPARISONS:
            raise FilterError(f"unsupported operator {tok.text!r} at position {tok.pos}")
        return op

    def parse_comparison(self) -> Predicate:
        start = self.take()
        path = start.text
        op = self.parse_operator()
        kind, value = self.parse_literal()
        text = self.fragment(start)
        compare = _COMPARISONS[op]
        if path == "Collection/Name":
            if op != "eq" or kind != "str":
                raise FilterError(f"unsupported comparison {text!r}: use Collection/Name eq '<name>'")
            return Predicate(text, lambda p, v=value: v == COLLECTION, kind="collection", value=value)
        if path == "Name":
            if op not in ("eq", "ne") or kind != "str":
                raise FilterError(f"unsupported comparison {text!r}: use Name eq '<name>'")
            return Predicate(text, lambda p, v=value, c=compare: c(p.name, v), kind="name" if op == "eq" else "other",
                             value=value)
        if path == "Online":
            if op != "eq" or kind != "bool":
                raise FilterError(f"unsupported comparison {text!r}: use Online eq true|false")
            return Predicate(text, lambda p, v=value: v is True)
        if path in _DATE_PATHS:
            if kind != "date":
                raise FilterError(f"{path} needs a DateTimeOffset literal such as 2024-01-01T00:00:00.000Z: {text!r}")
            getter = _DATE_PATHS[path]
            kind = "time" if path.startswith("ContentDate/") else "other"
            return Predicate(text, lambda p, g=getter, c=compare, v=value: c(g(p), v), kind=kind,
                             value=(path.rsplit("/", 1)[-1], op, value))
        raise FilterError(f"unsupported property {path!r} in {text!r}")

    def parse_name_function(self) -> Predicate:
        start = self.take()
        func = start.text
        self.expect("(")
        target = self.take()
        if target.text != "Name":
            raise FilterError(f"{func}() is supported on Name only, not {target.text!r}")
        self.expect(",")
        kind, value = self.parse_literal()
        if kind != "str":
            raise FilterError(f"{func}(Name, ...) needs a string literal")
        self.expect(")")
        method = {"contains": str.__contains__, "startswith": str.startswith, "endswith": str.endswith}[func]
        return Predicate(self.fragment(start), lambda p, m=method, v=value: m(p.name, v))

    def parse_intersects(self) -> Predicate:
        start = self.take()
        self.expect("(")
        tok = self.take()
        if tok.text == "location":  # older form: Intersects(location=Footprint, area=...)
            self.expect("=")
            self.expect("Footprint")
            self.expect(",")
            tok = self.take()
        if tok.text != "area":
            raise FilterError(f"expected area=geography'...' in OData.CSC.Intersects, found {tok.text!r}")
        self.expect("=")
        geo = self.take()
        if geo.kind != "geo":
            raise FilterError(f"expected a geography'SRID=4326;...' literal at position {geo.pos}")
        rings = _parse_wkt(geo.text[len("geography'") : -1].replace("''", "'"))
        self.expect(")")
        return Predicate(self.fragment(start), lambda p, r=rings: intersects_bbox(r, p.bbox), kind="space", value=rings)

    def parse_any(self) -> Predicate:
        start = self.take()
        collection = start.text[: -len("/any")]
        m = re.fullmatch(r"Attributes/OData\.CSC\.(\w+)Attribute", collection)
        if not m or m.group(1) not in _ATTRIBUTE_TYPES:
            raise FilterError(f"unsupported lambda collection {collection!r}; use Attributes/OData.CSC.<Type>Attribute/any(...)")
        value_type = m.group(1)
        self.expect("(")
        var = self.take()
        if var.kind != "name" or "/" in var.text:
            raise FilterError(f"expected a lambda variable at position {var.pos}")
        self.expect(":")
        name, value_test = self.parse_any_body(var.text, value_type)
        self.expect(")")
        if name is None or value_test is None:
            raise FilterError(
                f"attribute filter must give both {var.text}/Name eq '...' and "
                f"{var.text}/OData.CSC.{value_type}Attribute/Value <op> <literal>: {self.fragment(start)!r}"
            )
        op, literal = value_test
        identifier = literal if (name == "datasetIdentifier" and op == "eq") else None

        def test(p: _Product, n=name, vt=value_type, o=op, v=literal) -> bool:
            found = p.attribute(n)
            if found is None or found[0] != vt:
                return False
            actual = _parse_datetime(found[1]) if vt == "DateTimeOffset" else found[1]
            try:
                return _COMPARISONS[o](actual, v)
            except TypeError:
                return False

        kind = "other"
        if value_type == "String" and op == "eq" and name in ("datasetIdentifier", "fileFormat"):
            kind = "dataset" if name == "datasetIdentifier" else "format"
        return Predicate(self.fragment(start), test, identifier, kind=kind, value=literal)

    def parse_any_body(self, var: str, value_type: str) -> tuple[str | None, tuple[str, Any] | None]:
        name: str | None = None
        value_test: tuple[str, Any] | None = None
        depth = 0
        while True:
            while self.peek() is not None and self.peek().text == "(":  # type: ignore[union-attr]
                self.take()
                depth += 1
            tok = self.take()
            if tok.text == f"{var}/Name":
                if self.parse_operator() != "eq":
                    raise FilterError(f"{var}/Name supports eq only")
                kind, literal = self.parse_literal()
                if kind != "str":
                    raise FilterError(f"{var}/Name needs a string literal")
                name = literal
            elif tok.text == f"{var}/OData.CSC.{value_type}Attribute/Value":
                op = self.parse_operator()
                kind, literal = self.parse_literal()
                expected = {"String": "str", "Integer": "num", "Double": "num", "DateTimeOffset": "date"}[value_type]
                if kind != expected:
                    raise FilterError(f"{value_type} attribute value needs a {expected} literal, found {literal!r}")
                if value_type == "String" and op not in ("eq", "ne"):
                    raise FilterError(f"String attributes support eq/ne only, not {op!r}")
                value_test = (op, literal)
            else:
                raise FilterError(f"unsupported term {tok.text!r} inside the attribute lambda at position {tok.pos}")
            while depth and self.peek() is not None and self.peek().text == ")":  # type: ignore[union-attr]
                self.take()
                depth -= 1
            if self.is_keyword("and"):
                self.take()
                continue
            if self.is_keyword("or"):
                raise FilterError("unsupported operator 'or' inside the attribute lambda")
            if depth:
                raise FilterError("unbalanced parentheses inside the attribute lambda")
            return name, value_test


def parse_filter(text: str) -> list[Predicate]:
    """Parse a CDSE ``$filter`` into its ``and``-ed predicates (raises :class:`FilterError`)."""
    return _FilterParser(text).parse()


_ORDER_KEYS: dict[str, Callable[[_Product], Any]] = {
    "ContentDate/Start": lambda p: p.start,
    "ContentDate/End": lambda p: p.end,
    "PublicationDate": lambda p: p.publication_date,
    "ModificationDate": lambda p: p.publication_date,
    "OriginDate": lambda p: p.origin_date,
    "Name": lambda p: p.name,
}


def _parse_orderby(text: str) -> list[tuple[str, bool]]:
    """``ContentDate/Start desc, Name`` -> [(key, descending), ...]."""
    keys = []
    for part in filter(None, (s.strip() for s in text.split(","))):
        words = part.split()
        if len(words) > 2 or words[0] not in _ORDER_KEYS or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise FilterError(f"unsupported $orderby {part!r}; use one of {sorted(_ORDER_KEYS)} with asc|desc")
        keys.append((words[0], len(words) == 2 and words[1].lower() == "desc"))
    return keys


# --------------------------------------------------------------------------- state


@dataclass
class _Grant:
    kind: str  # "access" | "refresh"
    user: str
    session: str
    seq: int
    expires: float  # sandbox clock


class CdseState:
    """Users, tokens, products and download slots of the CDSE sandbox (``ctx.state["cdse"]``)."""

    def __init__(self, ctx: SandboxContext, overrides: dict[str, Any] | None = None):
        overrides = dict(overrides or {})
        self.ctx = ctx
        self.lock = threading.Lock()
        self.secret = secrets.token_bytes(32)
        self._users: dict[str, Any] | None = overrides.pop("users", None)
        self.max_concurrent: int = int(overrides.pop("max_concurrent", MAX_CONCURRENT_DOWNLOADS))
        self.presign_lifetime: float = float(overrides.pop("presign_lifetime", PRESIGN_LIFETIME))
        self.redirect_status: int = int(overrides.pop("redirect_status", DOWNLOAD_REDIRECT_STATUS))
        self._access_lifetime: float | None = overrides.pop("access_lifetime", None)
        self._refresh_lifetime: float | None = overrides.pop("refresh_lifetime", None)
        if overrides:
            raise ValueError(f"unknown cdse settings: {sorted(overrides)}")
        self.grants: dict[str, _Grant] = {}
        self.seq = 0
        self.min_valid_seq = 0
        self.active: dict[str, int] = {}
        self.keys: dict[str, str] = {}  # S3 access key -> user
        self.by_id: dict[str, _Product] = {}  # products listed or resolved so far
        self.by_key: dict[str, _Product] = {}  # S3 object path -> product, for presigned URLs issued
        self.generator = ThreadPoolExecutor(max_workers=GENERATOR_THREADS, thread_name_prefix="cdse-generate")

    # ---- tokens
    @property
    def access_lifetime(self) -> float:
        """Sandbox seconds; CDSE's 600 s when the sandbox's token lifetime is the default hour."""
        return float(self._access_lifetime) if self._access_lifetime is not None else self.ctx.token_lifetime / 6.0

    @property
    def refresh_lifetime(self) -> float:
        return float(self._refresh_lifetime) if self._refresh_lifetime is not None else self.ctx.token_lifetime

    def expire_all(self) -> None:
        with self.lock:
            self.min_valid_seq = self.seq + 1

    def issue(self, user: str, session: str, issuer: str) -> dict[str, Any]:
        now = self.ctx.clock.now()
        with self.lock:
            self.seq += 1
            seq = self.seq
        access_exp, refresh_exp = now + self.access_lifetime, now + self.refresh_lifetime
        subject = str(uuid.uuid5(_ID_NAMESPACE, "user:" + user))
        common = {"iat": int(now), "iss": issuer, "sub": subject, "azp": CLIENT_ID, "session_state": session, "sid": session}
        access = jwt.encode(
            {**common, "exp": int(access_exp), "jti": str(uuid.uuid4()), "typ": "Bearer", "aud": "account",
             "scope": SCOPE, "preferred_username": user, "email": user, "email_verified": True},
            self.secret, algorithm="HS256", headers={"kid": "sandbox"},
        )
        refresh = jwt.encode(
            {**common, "exp": int(refresh_exp), "jti": str(uuid.uuid4()), "typ": "Refresh", "aud": issuer, "scope": SCOPE},
            self.secret, algorithm="HS256", headers={"kid": "sandbox-refresh"},
        )
        with self.lock:
            if len(self.grants) > 10_000:  # forget tokens nobody can use any more
                self.grants = {t: g for t, g in self.grants.items() if g.expires > now and g.seq >= self.min_valid_seq}
            self.grants[access] = _Grant("access", user, session, seq, access_exp)
            self.grants[refresh] = _Grant("refresh", user, session, seq, refresh_exp)
        return {
            "access_token": access,
            "expires_in": int(round(self.access_lifetime)),
            "refresh_expires_in": int(round(self.refresh_lifetime)),
            "refresh_token": refresh,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "session_state": session,
            "scope": SCOPE,
        }

    def grant(self, token: str, kind: str) -> tuple[_Grant | None, bool]:
        """(grant, active) for a token string; grant None if unknown."""
        with self.lock:
            grant = self.grants.get(token)
            if grant is None or grant.kind != kind:
                return None, False
            active = grant.seq >= self.min_valid_seq and self.ctx.clock.now() < grant.expires
            return grant, active

    @property
    def users(self) -> dict[str, Any]:
        """username -> password (or {"password", "totp"}); read each time so a test can change the server's credentials."""
        if self._users is not None:
            return self._users
        return _users_from_ctx(self.ctx) or DEFAULT_USERS

    @users.setter
    def users(self, value: dict[str, Any] | None) -> None:
        self._users = value

    def check_password(self, username: str, password: str, totp: str | None) -> bool:
        entry = self.users.get(username)
        if entry is None:
            return False
        if isinstance(entry, dict):
            ok = hmac.compare_digest(str(entry.get("password", "")), password)
            if entry.get("totp") is not None:
                ok = ok and totp is not None and hmac.compare_digest(str(entry["totp"]), totp)
            return ok
        return hmac.compare_digest(str(entry), password)

    # ---- presigned URLs
    def access_key(self, user: str) -> str:
        key = "SBX" + hashlib.sha256(("key:" + user).encode()).hexdigest()[:17].upper()
        with self.lock:
            self.keys[key] = user
        return key

    def _signature(self, path: str, key: str, amz_date: str, expires: str) -> str:
        message = "\n".join((path, key, amz_date, expires)).encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def presign(self, origin: str, product: _Product, user: str) -> str:
        key = self.access_key(user)
        now = self.ctx.clock.now()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        expires = str(int(self.presign_lifetime))
        path = S3_PATH + product.s3_key
        query = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"{key}/{amz_date[:8]}/default/s3/aws4_request",
            "X-Amz-Date": amz_date,
            "X-Amz-Expires": expires,
            "X-Amz-SignedHeaders": "host",
            "X-Amz-Signature": self._signature(path, key, amz_date, expires),
        }
        return origin + quote(path) + "?" + urlencode(query, quote_via=quote)

    def verify(self, path: str, query: Any) -> tuple[str | None, str | None]:
        """(user, None) for a valid presigned request, else (None, reason)."""
        needed = ("X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-Signature")
        if not all(query.get(k) for k in needed):
            return None, "anonymous"
        key = query["X-Amz-Credential"].split("/", 1)[0]
        amz_date, expires = query["X-Amz-Date"], query["X-Amz-Expires"]
        expected = self._signature(path, key, amz_date, expires)
        with self.lock:
            user = self.keys.get(key)
        if user is None or not hmac.compare_digest(expected, query["X-Amz-Signature"]):
            return None, "signature"
        try:
            issued = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=_UTC).timestamp()
            lifetime = int(expires)
        except ValueError:
            return None, "signature"
        if self.ctx.clock.now() > issued + lifetime:
            return None, "expired"
        return user, None

    # ---- download slots
    def acquire(self, user: str) -> bool:
        with self.lock:
            if self.active.get(user, 0) >= self.max_concurrent:
                return False
            self.active[user] = self.active.get(user, 0) + 1
            return True

    def release(self, user: str) -> None:
        with self.lock:
            self.active[user] = max(0, self.active.get(user, 0) - 1)

    # ---- products (blocking: call through asyncio.to_thread)
    def specs(self) -> list[Any]:
        """Datasets published on CDSE: those with a datasetIdentifier and nc or cog items."""
        store = self.ctx.store
        if store is None:
            return []
        return [s for s in store.datasets() if s.dataset_identifier and set(s.formats) & {"nc", "cog"}]

    def product(self, item: Any, spec: Any = None) -> _Product:
        """The (remembered) product of a store item."""
        with self.lock:
            found = self.by_id.get(item.uuid)
        if found is not None:
            return found
        return self.remember(_Product(self.ctx.store, spec or self.ctx.store.dataset(item.dataset), item))

    def remember(self, product: _Product) -> _Product:
        """Keep a listed product by Id (with its size and MD5), or return the one kept already."""
        with self.lock:
            kept = self.by_id.setdefault(product.id, product)
            if len(self.by_id) > _REMEMBERED:  # forget the oldest; the store can rebuild them
                for old in list(self.by_id)[: _REMEMBERED // 10]:
                    del self.by_id[old]
        return kept

    def find(self, product_id: str) -> _Product | None:
        """A product by Id: one this sandbox has listed or built (Ids cannot be inverted)."""
        with self.lock:
            found = self.by_id.get(product_id)
        if found is not None:
            return found
        try:
            item = self.ctx.store.item_by_uuid(product_id)
        except (KeyError, ValueError):
            return None
        if str(item.format).lower() not in ("nc", "cog"):
            return None
        return self.product(item)

    def find_by_name(self, name: str) -> _Product | None:
        try:
            item = self.ctx.store.item(name)
        except (KeyError, ValueError):
            return None
        spec = self.ctx.store.dataset(item.dataset)
        if str(item.format).lower() not in ("nc", "cog") or not spec.dataset_identifier:
            return None
        return self.product(item, spec)

    def remember_s3(self, product: _Product) -> None:
        with self.lock:
            self.by_key[product.s3_key] = product

    def by_s3_key(self, key: str) -> _Product | None:
        with self.lock:
            return self.by_key.get(key)

    def ensure_content(self, product: _Product) -> None:
        """Materialise the file so ContentLength and MD5 are exact."""
        if product.size is not None:
            return
        path = self.path(product)
        digest = hashlib.md5()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        product.md5, product.size = digest.hexdigest(), path.stat().st_size

    async def ensure_contents(self, products: list[_Product]) -> None:
        """:meth:`ensure_content` for a page, several files at a time, off the event loop."""
        todo = [p for p in products if p.size is None]
        if todo:
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(loop.run_in_executor(self.generator, self.ensure_content, p) for p in todo))

    def path(self, product: _Product) -> Path:
        """The product's file, generated on first use (the store does that atomically and thread-safely)."""
        if product.path is None or not product.path.exists():
            product.path = Path(self.ctx.store.materialize(product.item))
        return product.path


STATE_KEY = web.AppKey("cdse_state", CdseState)


# --------------------------------------------------------------------------- query engine


class QueryTooBroad(Exception):
    """The sandbox would have to look at more than :data:`MAX_SCAN` products to answer."""


class _Desc:
    """Reverses the order of one sort-key component (for ``desc``)."""

    __slots__ = ("v",)

    def __init__(self, v: Any):
        self.v = v

    def __lt__(self, other: "_Desc") -> bool:
        return other.v < self.v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.v == other.v


#: Order keys that grow with ContentDate/Start inside one dataset and format (a time series).
_TIME_ORDER = {"ContentDate/Start", "ContentDate/End", "PublicationDate", "ModificationDate", "OriginDate"}
#: Time steps per day, by frequency (to size the first backward chunk).
_STEPS_PER_DAY = {"hourly": 24.0, "daily": 1.0, "10daily": 0.1, "monthly": 1 / 30, "yearly": 1 / 365,
                  "3yearly": 1 / 1095, "6yearly": 1 / 2190}
_FIRST_CHUNK = 64  # items the first backward chunk of a stream aims at


@dataclass
class _Stream:
    index: int
    spec: Any
    fmt: str
    bbox: tuple[float, float, float, float] | None  # pushed down to the store (tiled datasets only)
    residual: list[Predicate]  # tested on every product
    tiles: tuple[int, int] | None = None  # (tiles hit, tiles in all) when a tiled dataset is cut by area


@dataclass
class Query:
    """A parsed catalogue request, and how to answer it with as little work as the store allows."""

    predicates: list[Predicate]
    order: list[tuple[str, bool]]  # (key name, descending)
    empty: bool = False
    identifiers: set[str] | None = None
    formats: set[str] = field(default_factory=lambda: {"nc", "cog"})
    lo: dt.datetime | None = None  # pushed-down ContentDate window (a superset of the answer)
    hi: dt.datetime | None = None
    space: list[Predicate] = field(default_factory=list)
    names: set[str] | None = None
    residual: list[Predicate] = field(default_factory=list)

    @classmethod
    def plan(cls, predicates: list[Predicate], order: list[tuple[str, bool]]) -> "Query":
        q = cls(predicates, order or [("ContentDate/Start", False)])
        for p in predicates:
            if p.kind == "collection":
                q.empty |= p.value != COLLECTION
            elif p.kind == "dataset":
                q.identifiers = {p.value} if q.identifiers is None else q.identifiers & {p.value}
            elif p.kind == "format":
                q.formats &= {p.value}
            elif p.kind == "space":
                q.space.append(p)
            else:
                q.residual.append(p)
                if p.kind == "name":
                    q.names = {p.value} if q.names is None else q.names & {p.value}
                if p.kind == "time":
                    _, op, value = p.value
                    if op in ("gt", "ge", "eq"):
                        q.lo = value if q.lo is None else max(q.lo, value)
                    if op in ("lt", "le", "eq"):
                        q.hi = value if q.hi is None else min(q.hi, value)
        q.empty |= q.identifiers == set() or not q.formats or q.names == set()
        q.empty |= q.lo is not None and q.hi is not None and q.lo > q.hi
        return q

    # ---- streams: one per (dataset, format), each a time series
    def streams(self, st: CdseState) -> list[_Stream]:
        if self.empty:
            return []
        out = []
        for spec in st.specs():
            if self.identifiers is not None and spec.dataset_identifier not in self.identifiers:
                continue
            residual = list(self.residual)
            bbox, tiles = None, None
            if self.space and spec.tiled:
                # items are tiles: find the tiles the area touches and ask the store for their extent
                every = st.ctx.store.spec_tiles(spec.key)
                hit = [t for t in every if all(intersects_bbox(p.value, tuple(t.bbox)) for p in self.space)]
                if not hit:
                    continue
                residual += self.space
                bbox = _pad(_union([tuple(t.bbox) for t in hit]))
                tiles = (len(hit), len(every))
            elif self.space and not all(intersects_bbox(p.value, tuple(spec.bbox)) for p in self.space):
                continue  # every item of an untiled dataset has the dataset's footprint
            for fmt in spec.formats:
                if fmt in self.formats:
                    out.append(_Stream(len(out), spec, fmt, bbox, residual, tiles))
        return out

    def _forward(self, st: CdseState, s: _Stream, budget: list[int]) -> Iterator[_Product]:
        items = st.ctx.store.iter_items(s.spec.key, bbox=s.bbox, start=self.lo, end=self.hi, format=s.fmt)
        for position, item in enumerate(items):
            budget[0] -= 1
            if budget[0] < 0:
                raise QueryTooBroad()
            p = _Product(st.ctx.store, s.spec, item)
            if all(pred.test(p) for pred in s.residual):
                p.rank = (s.index, position)
                yield p

    def _backward(self, st: CdseState, s: _Stream, budget: list[int]) -> Iterator[_Product]:
        """Newest first, fetching ever larger windows back from the end (the store lists forward only).

        The store lists whole time steps overlapping a window, so each window is
        cut where its earliest step begins, and the next window ends just before.
        """
        first = _aware(s.spec.start) - dt.timedelta(days=1)
        lower = max(self.lo, first) if self.lo is not None else first
        top = self.hi if self.hi is not None else _aware(s.spec.end) + dt.timedelta(days=1)
        tiles = s.tiles[1] if s.tiles else (len(st.ctx.store.spec_tiles(s.spec.key)) if s.spec.tiled else 1)
        per_day = _STEPS_PER_DAY.get(s.spec.frequency, 1 / 3650) * max(1, tiles)
        span = dt.timedelta(days=max(1.0, _FIRST_CHUNK / per_day))
        upper: dt.datetime | None = None  # items starting at or after this were yielded already
        position = 0
        chunk_end = top
        tick = dt.timedelta(microseconds=1)
        while chunk_end >= lower:
            chunk_start = max(lower, chunk_end - span)
            items = st.ctx.store.iter_items(s.spec.key, bbox=s.bbox, start=chunk_start, end=chunk_end, format=s.fmt)
            chunk = []
            for item in items:
                budget[0] -= 1
                if budget[0] < 0:
                    raise QueryTooBroad()
                if upper is None or _aware(item.start) < upper:
                    chunk.append(item)
            for item in reversed(chunk):
                p = _Product(st.ctx.store, s.spec, item)
                if all(pred.test(p) for pred in s.residual):
                    position += 1
                    p.rank = (s.index, position)
                    yield p
            if chunk_start <= lower:
                return
            earliest = min((_aware(i.start) for i in chunk), default=chunk_start)
            upper = min(earliest, chunk_start) if upper is None else min(earliest, chunk_start, upper)
            chunk_end, span = upper - tick, span * 2

    def sort_key(self, p: _Product) -> tuple:
        """The $orderby keys, then the product's place in the store's listing (deterministic ties)."""
        parts: list[Any] = []
        for key, descending in self.order:
            value = _ORDER_KEYS[key](p)
            parts.append(_Desc(value) if descending else value)
        return (*parts, p.rank)

    def _sorted_stream(self, st: CdseState, s: _Stream, budget: list[int]) -> Iterator[_Product]:
        """A stream in sort-key order, lazily: a time series is in order already, ties by position."""
        primary, descending = self.order[0]
        source = self._backward(st, s, budget) if descending else self._forward(st, s, budget)
        if len(self.order) == 1:
            yield from source
            return
        group: list[_Product] = []  # several keys: sort each run of equal primary values
        for p in source:
            if group and _ORDER_KEYS[primary](p) != _ORDER_KEYS[primary](group[0]):
                yield from sorted(group, key=self.sort_key)
                group = []
            group.append(p)
        yield from sorted(group, key=self.sort_key)

    def page(self, st: CdseState, skip: int, top: int) -> tuple[list[_Product], bool]:
        """Products ``skip .. skip+top`` in order, and whether more follow."""
        budget = [MAX_SCAN]
        if self.names is not None:  # Name eq: straight to the product
            found = [p for p in (st.find_by_name(n) for n in self.names) if p is not None]
            matched = sorted((p for p in found if self._matches(st, p)), key=self.sort_key)
            return matched[skip : skip + top], len(matched) > skip + top
        streams = self.streams(st)
        if self.order[0][0] in _TIME_ORDER:
            merged: Iterable[_Product] = heapq.merge(*(self._sorted_stream(st, s, budget) for s in streams),
                                                     key=self.sort_key)
        else:  # e.g. by Name: no shortcut, sort everything
            everything = [p for s in streams for p in self._forward(st, s, budget)]
            merged = sorted(everything, key=self.sort_key)
        window = list(itertools.islice(merged, skip, skip + top + 1))
        return window[:top], len(window) > top

    def count(self, st: CdseState) -> int:
        """How many products match: from the store's own count where the filter allows, else by scanning."""
        if self.names is not None:
            return sum(1 for p in (st.find_by_name(n) for n in self.names) if p is not None and self._matches(st, p))
        budget = [MAX_SCAN]
        total = 0
        for s in self.streams(st):
            spatial_only = all(p.kind == "space" for p in s.residual)
            if not s.residual and s.bbox is None:
                total += st.ctx.store.count(s.spec.key, format=s.fmt)
            elif spatial_only and s.tiles is not None:  # the store lists every tile at every step
                hit, every = s.tiles
                total += st.ctx.store.count(s.spec.key, format=s.fmt) // every * hit
            else:
                total += sum(1 for _ in self._forward(st, s, budget))
        return total

    def _matches(self, st: CdseState, p: _Product) -> bool:
        return (p.identifier is not None and p.fmt in ("nc", "cog")
                and all(pred.test(p) for pred in self.predicates))


def _union(boxes: list[tuple[float, ...]]) -> tuple[float, float, float, float]:
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


def _pad(bbox: tuple[float, float, float, float], eps: float = 1e-6) -> tuple[float, float, float, float]:
    """A little larger, so the store's strict overlap test keeps footprints that only touch."""
    return bbox[0] - eps, bbox[1] - eps, bbox[2] + eps, bbox[3] + eps


def _users_from_ctx(ctx: SandboxContext) -> dict[str, Any] | None:
    """CDSE users the server put in ``ctx.state["credentials"]["cdse"]`` (a dict, or a (user, password) pair)."""
    creds = ctx.state.get("credentials")
    if not isinstance(creds, dict):
        return None
    cdse = creds.get("cdse")
    if isinstance(cdse, dict):
        if "username" in cdse and "password" in cdse:
            return {cdse["username"]: cdse["password"]}
        return cdse
    if isinstance(cdse, (tuple, list)) and len(cdse) == 2:
        return {cdse[0]: cdse[1]}
    return None


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
        target = "$skip"
        skip = _int_option(query, "$skip", 0, SKIP_MAX)
        target = "$orderby"
        order = _parse_orderby(query.get("$orderby", ""))
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


async def _product_or_404(st: CdseState, raw_id: str) -> _Product | None:
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
    product = await _product_or_404(st, request.match_info["pid"])
    if product is None:
        return _odata_error(404, "NotFound", f"Product {_strip_key(request.match_info['pid'])} not found")
    base = f"{_origin(request)}{request.path.rsplit('/Nodes', 1)[0]}"
    node = request.match_info.get("node")
    if node is None:
        entry = {"Id": product.name, "Name": product.name, "ContentLength": 0, "ChildrenNumber": 1,
                 "Nodes": {"uri": f"{base}/Nodes({product.name})/Nodes"}}
        return web.json_response({"result": [entry]})
    if _strip_key(node) != product.name:
        return _odata_error(404, "NotFound", f"Node {_strip_key(node)} not found")
    await st.ensure_contents([product])
    entry = {"Id": product.file_name, "Name": product.file_name, "ContentLength": product.size, "ChildrenNumber": 0,
             "Nodes": {"uri": f"{base}/Nodes({product.file_name})/Nodes"}}
    return web.json_response({"result": [entry]})


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
    st.remember_s3(product)
    location = st.presign(_origin(request), product, user or "")
    return web.Response(status=st.redirect_status, headers={"Location": location})


async def _s3(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    _consume_faults(request, st)
    path = request.path
    resource = path[len(S3_PATH):]
    user, reason = st.verify(path, request.query)
    if user is None:
        if reason == "expired":
            return _s3_error(403, "AccessDenied", "Request has expired", resource)
        if reason == "anonymous":
            return _s3_error(403, "AccessDenied", "Anonymous access is forbidden for this operation", resource)
        return _s3_error(403, "SignatureDoesNotMatch",
                         "The request signature we calculated does not match the signature you provided.", resource)
    fault = st.ctx.faults.take(SERVICE, request.get("sandbox_endpoint", "download"), {"expired_link"})
    if fault is not None:
        status = int(fault.params.get("status", 403))
        if status == 404:
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.", resource)
        return _s3_error(status, "AccessDenied", "Request has expired", resource)
    product = st.by_s3_key(resource)
    if product is None:
        return _s3_error(404, "NoSuchKey", "The specified key does not exist.", resource)
    for _ in range(_SLOT_GRACE_STEPS):  # a transfer that just ended may not have handed its slot back yet
        if st.acquire(user):
            break
        await asyncio.sleep(0.01)
    else:
        return json_error(429, {"detail": f"Too Many Requests: at most {st.max_concurrent} concurrent "
                                          "download connections per user are allowed"})
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            st.release(user)

    try:
        file_path = await asyncio.to_thread(st.path, product)
        content_type = "application/x-netcdf" if product.fmt == "nc" else "image/tiff"
        response = await serve_file(request, file_path, st.ctx, filename=product.file_name, content_type=content_type)
    except BaseException:
        release()
        raise
    if response.prepared:  # a body fault streamed it already
        release()
        return response
    send = response.prepare

    async def prepare_then_release(req: web.BaseRequest) -> Any:
        try:
            return await send(req)
        finally:
            release()

    response.prepare = prepare_then_release  # type: ignore[method-assign]  # hold the slot while aiohttp sends
    return response


# --------------------------------------------------------------------------- setup


def setup(app: web.Application, ctx: SandboxContext) -> None:
    """Add the CDSE token, catalogue, download and S3-like routes to the sandbox app."""
    existing = ctx.state.get("cdse")
    st = existing if isinstance(existing, CdseState) else CdseState(ctx, existing if isinstance(existing, dict) else None)
    ctx.state["cdse"] = st
    app[STATE_KEY] = st
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
    r.add_get(S3_PATH + "/eodata/{key:.+}", _s3, name="cdse.download.s3")


__all__ = ["CdseState", "FilterError", "Predicate", "Query", "QueryTooBroad", "intersects_bbox", "parse_filter",
           "setup", "MAX_CONCURRENT_DOWNLOADS", "PRESIGN_LIFETIME", "DOWNLOAD_REDIRECT_STATUS", "MAX_SCAN"]
