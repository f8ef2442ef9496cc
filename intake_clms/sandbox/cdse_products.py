"""CDSE catalogue products and the query engine that lists them from the sandbox's product store.

Why separate from the server: a product (:class:`CdseProduct`) is a store item seen
through CDSE's vocabulary (Id, Name, S3Path, Checksum, Attributes), and a
:class:`Query` answers a parsed ``$filter``/``$orderby`` lazily over a store that
lists tens of millions of items: dataset, format, time window and area are pushed
down to the store, one time series per dataset and format is walked (backwards
for ``desc``) and the series are merged; a request that would look at more than
:data:`MAX_SCAN` items raises :class:`QueryTooBroad`.

``ContentLength`` and ``Checksum`` are filled in by the state
(``CdseState.ensure_content``): MD5 always, BLAKE3 too when the ``blake3``
package is importable, both of the exact bytes the download and S3 serve.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from .odata_filter import COLLECTION, ORDER_KEYS, Predicate, aware, intersects_bbox

if TYPE_CHECKING:
    from .cdse_state import CdseState

#: Most store items one catalogue request may look at (the store lists tens of millions).
MAX_SCAN = 300_000


def iso(value: dt.datetime) -> str:
    """OData DateTimeOffset as CDSE writes it: milliseconds and ``Z``."""
    value = aware(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


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


class CdseProduct:
    """One catalogue product: a store item seen through CDSE's vocabulary.

    Cheap to build (scans create many); the S3 path, attributes, size and MD5
    are worked out only when asked for.
    """

    __slots__ = ("item", "spec", "store", "id", "name", "file_name", "fmt", "start", "end", "bbox",
                 "size", "md5", "blake3", "path", "rank", "_s3_dir", "_attributes")

    def __init__(self, store: Any, spec: Any, item: Any):
        self.store, self.spec, self.item = store, spec, item
        self.id: str = item.uuid
        self.file_name: str = item.name
        self.fmt: str = str(item.format).lower()
        self.name: str = item.product_name or f"{item.name.rsplit('.', 1)[0]}_{self.fmt}"
        self.start, self.end = aware(item.start), aware(item.end)
        self.bbox: tuple[float, float, float, float] = tuple(float(v) for v in item.bbox)  # type: ignore[assignment]
        self.size: int | None = None
        self.md5: str | None = None
        self.blake3: str | None = None  # hex, when the blake3 package is importable
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
                beginningDateTime=iso(self.start),
                endingDateTime=iso(self.end),
                processingDate=iso(self.origin_date),
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

    def checksums(self, date: str) -> list[dict[str, str]]:
        """``Checksum`` as CDSE lists it: MD5, then BLAKE3 when it was computed."""
        out = [{"Value": self.md5 or "", "Algorithm": "MD5", "ChecksumDate": date}]
        if self.blake3:
            out.append({"Value": self.blake3, "Algorithm": "BLAKE3", "ChecksumDate": date})
        return out

    def to_json(self, expand: bool) -> dict[str, Any]:
        west, south, east, north = self.bbox
        ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
        wkt = ", ".join(f"{x:g} {y:g}" for x, y in ring)
        published = iso(self.publication_date)
        body: dict[str, Any] = {
            "@odata.mediaContentType": "application/octet-stream",
            "Id": self.id,
            "Name": self.name,
            "ContentType": "application/octet-stream",
            "ContentLength": self.size,
            "OriginDate": iso(self.origin_date),
            "PublicationDate": published,
            "ModificationDate": published,
            "Online": True,
            "EvictionDate": "9999-12-31T23:59:59.999Z",
            "S3Path": self.s3_dir,
            "Checksum": self.checksums(published),
            "ContentDate": {"Start": iso(self.start), "End": iso(self.end)},
            "Footprint": f"geography'SRID=4326;POLYGON (({wkt}))'",
            "GeoFootprint": {"type": "Polygon", "coordinates": [ring]},
        }
        if expand:
            body["Attributes"] = [
                {"@odata.type": f"#OData.CSC.{vt}Attribute", "Name": name, "Value": value, "ValueType": vt}
                for vt, name, value in self.attributes()
            ]
        return body


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

    def _forward(self, st: CdseState, s: _Stream, budget: list[int]) -> Iterator[CdseProduct]:
        items = st.ctx.store.iter_items(s.spec.key, bbox=s.bbox, start=self.lo, end=self.hi, format=s.fmt)
        for position, item in enumerate(items):
            budget[0] -= 1
            if budget[0] < 0:
                raise QueryTooBroad()
            p = CdseProduct(st.ctx.store, s.spec, item)
            if all(pred.test(p) for pred in s.residual):
                p.rank = (s.index, position)
                yield p

    def _backward(self, st: CdseState, s: _Stream, budget: list[int]) -> Iterator[CdseProduct]:
        """Newest first, fetching ever larger windows back from the end (the store lists forward only).

        The store lists whole time steps overlapping a window, so each window is
        cut where its earliest step begins, and the next window ends just before.
        """
        first = aware(s.spec.start) - dt.timedelta(days=1)
        lower = max(self.lo, first) if self.lo is not None else first
        top = self.hi if self.hi is not None else aware(s.spec.end) + dt.timedelta(days=1)
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
                if upper is None or aware(item.start) < upper:
                    chunk.append(item)
            for item in reversed(chunk):
                p = CdseProduct(st.ctx.store, s.spec, item)
                if all(pred.test(p) for pred in s.residual):
                    position += 1
                    p.rank = (s.index, position)
                    yield p
            if chunk_start <= lower:
                return
            earliest = min((aware(i.start) for i in chunk), default=chunk_start)
            upper = min(earliest, chunk_start) if upper is None else min(earliest, chunk_start, upper)
            chunk_end, span = upper - tick, span * 2

    def sort_key(self, p: CdseProduct) -> tuple:
        """The $orderby keys, then the product's place in the store's listing (deterministic ties)."""
        parts: list[Any] = []
        for key, descending in self.order:
            value = ORDER_KEYS[key](p)
            parts.append(_Desc(value) if descending else value)
        return (*parts, p.rank)

    def _sorted_stream(self, st: CdseState, s: _Stream, budget: list[int]) -> Iterator[CdseProduct]:
        """A stream in sort-key order, lazily: a time series is in order already, ties by position."""
        primary, descending = self.order[0]
        source = self._backward(st, s, budget) if descending else self._forward(st, s, budget)
        if len(self.order) == 1:
            yield from source
            return
        group: list[CdseProduct] = []  # several keys: sort each run of equal primary values
        for p in source:
            if group and ORDER_KEYS[primary](p) != ORDER_KEYS[primary](group[0]):
                yield from sorted(group, key=self.sort_key)
                group = []
            group.append(p)
        yield from sorted(group, key=self.sort_key)

    def page(self, st: CdseState, skip: int, top: int) -> tuple[list[CdseProduct], bool]:
        """Products ``skip .. skip+top`` in order, and whether more follow."""
        budget = [MAX_SCAN]
        if self.names is not None:  # Name eq: straight to the product
            found = [p for p in (st.find_by_name(n) for n in self.names) if p is not None]
            matched = sorted((p for p in found if self._matches(st, p)), key=self.sort_key)
            return matched[skip : skip + top], len(matched) > skip + top
        streams = self.streams(st)
        if self.order[0][0] in _TIME_ORDER:
            merged: Iterable[CdseProduct] = heapq.merge(*(self._sorted_stream(st, s, budget) for s in streams),
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

    def _matches(self, st: CdseState, p: CdseProduct) -> bool:
        return (p.identifier is not None and p.fmt in ("nc", "cog")
                and all(pred.test(p) for pred in self.predicates))


def _union(boxes: list[tuple[float, ...]]) -> tuple[float, float, float, float]:
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


def _pad(bbox: tuple[float, float, float, float], eps: float = 1e-6) -> tuple[float, float, float, float]:
    """A little larger, so the store's strict overlap test keeps footprints that only touch."""
    return bbox[0] - eps, bbox[1] - eps, bbox[2] + eps, bbox[3] + eps


__all__ = ["CdseProduct", "MAX_SCAN", "Query", "QueryTooBroad", "iso"]
