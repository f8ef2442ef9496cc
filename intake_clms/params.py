"""Validate an entry's user parameters into one canonical :class:`Request`.

The canonical form matters beyond validation: the lifecycle hashes it into the
cache key, so two spellings of the same request must give the same Request.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from .errors import ParameterError

SERVICES = ("auto", "wekeo", "clms", "cdse")
_OPEN_END = {"present", "now", "today", "ongoing"}

#: The keywords of ``ClmsSource`` that describe the request (validated into a :class:`Request`).
REQUEST_PARAMETERS = ("dataset_id", "dataset_identifier", "bbox", "start", "end", "service", "file", "output_format", "crs",
                      "download_information", "overview_level")

#: Every option a source keyword may set besides the request: what the engine and the backends read
#: (``workers=3``, ``poll_deadline=3600``, ``service_key=...``).  The one list of them: a keyword
#: outside it and :data:`REQUEST_PARAMETERS` is a typo, refused by :func:`check_keywords`.
ENGINE_OPTIONS = frozenset({
    "cache_dir",  # the cache folder (default: INTAKE_CLMS_CACHE or the user cache dir)
    "workers", "chunk", "chunks",  # concurrent downloads, download chunk bytes, dask chunks when opening
    "poll_first", "poll_factor", "poll_cap", "poll_deadline",  # queue polling
    "attempts", "backoff",  # HTTP retries
    "username", "password",  # the login of the one service named by service= (WEkEO HDA or CDSE; refused with auto)
    "service_key", "link_max_age", "listing_max_age", "files_rate",  # CLMS download API
    "max_products",  # refuse a request needing more products than this (quota guard)
    "access", "max_connections", "totp",  # CDSE: how products are reached, connection budget, two-factor code
    "decode",  # False: the stored integers with their scale_factor/add_offset/_FillValue instead of decoded values
    "entry",  # the catalog entry's name, shown by `intake-clms cache list` and `status`
    "clock",  # a lifecycle clock (tests and benchmarks pass a FakeClock)
})


def check_credentials(service: str, given: Mapping[str, object]) -> None:
    """``username=``/``password=`` belong to one service: with ``service="auto"`` they could reach another
    service's identity server (or be silently ignored), so they are refused, asking which service they are for."""
    named = [k for k in ("username", "password") if given.get(k) not in (None, "")]
    if named and service == "auto":
        raise ParameterError(named[0], "a login belongs to one service, and service='auto' may ask several: pass "
                             "service='wekeo' (WEkEO HDA) or service='cdse' (CDSE) with it, or set the service's "
                             "environment variables (HDA_USER/HDA_PASSWORD, CDSE_USERNAME/CDSE_PASSWORD) instead")
    if named and service == "clms":
        raise ParameterError(named[0], "the CLMS download API takes a service key (service_key=...), not a login")


def check_keywords(given: Iterable[str], extra: Iterable[str] = ()) -> None:
    """Refuse a keyword that is neither a request parameter nor an engine option, naming close matches."""
    valid = sorted({*REQUEST_PARAMETERS, *ENGINE_OPTIONS, *extra, "metadata"})
    for name in given:
        if name in valid:
            continue
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise ParameterError(name, f"unknown keyword; {hint}valid keywords: {', '.join(valid)}")


def _shown(value: object, limit: int = 60) -> str:
    """A value as the user typed it, shortened: never split into characters or pages long."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bbox_items(value: object) -> list[object]:
    """The four corners as given: a string "[w, s, e, n]" / "w,s,e,n" / "w s e n", or any sequence or array."""
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in "[(" and text[-1:] in "])":
            text = text[1:-1]
        return [p for p in re.split(r"[,;\s]+", text) if p]
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Iterable):
        raise ParameterError("bbox", f"got {_shown(value)}; expected four numbers [west, south, east, north] in degrees")
    return list(value)


def parse_bbox(value: object) -> tuple[float, float, float, float]:
    """[west, south, east, north] in degrees, from a list/tuple/array or a string "[w, s, e, n]" / "w,s,e,n".

    Every value must be a finite number: NaN or infinity would make every
    comparison below false and reach the services as a meaningless area.
    """
    items = _bbox_items(value)
    if len(items) != 4:
        raise ParameterError(
            "bbox", f"got {_shown(value)}; expected four numbers [west, south, east, north] in degrees, e.g. [5, 45, 10, 50]"
        )
    corners = []
    for label, item in zip(("west", "south", "east", "north"), items):
        try:
            if isinstance(item, bool):
                raise TypeError
            number = float(item)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ParameterError("bbox", f"{label}={_shown(item)} in {_shown(value)}: every value must be a number") from None
        if not math.isfinite(number):
            raise ParameterError("bbox", f"{label} is {number} in {_shown(value)}: every value must be a finite number")
        corners.append(number)
    west, south, east, north = corners
    for label, v, lim in (("west", west, 180), ("east", east, 180), ("south", south, 90), ("north", north, 90)):
        if not -lim <= v <= lim:
            raise ParameterError("bbox", f"{label}={v:g} is out of range [-{lim}, {lim}] degrees")
    if west >= east:
        raise ParameterError("bbox", f"west ({west:g}) must be less than east ({east:g})")
    if south >= north:
        raise ParameterError("bbox", f"south ({south:g}) must be less than north ({north:g})")
    return west, south, east, north


def parse_date(name: str, value: object, *, today: dt.date | None = None) -> dt.date | None:
    """An ISO date (or datetime) -> date; empty -> None; 'present' -> today."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    if not text:
        return None
    if text.lower() in _OPEN_END:
        return today or dt.date.today()
    try:
        return dt.date.fromisoformat(text[:10]) if len(text) > 10 and text[10] in "T " else dt.date.fromisoformat(text)
    except ValueError:
        raise ParameterError(name, f"cannot parse {text!r}; expected an ISO date such as 2024-01-31") from None


def parse_service(value: object) -> str:
    text = str(value or "auto").strip().lower()
    if text not in SERVICES:
        raise ParameterError("service", f"got {value!r}; expected one of {', '.join(SERVICES)}")
    return text


def _optional_text(value: object) -> str | None:
    """Intake renders an unset template parameter as '' or 'None': both mean unset."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text in ("", "None", "none") else text


def parse_crs(value: object) -> str | None:
    """'EPSG:3035', 'epsg:3035' or 3035 -> 'EPSG:3035'; unset -> None."""
    text = _optional_text(value)
    if text is None:
        return None
    m = re.fullmatch(r"(?:epsg:)?(\d{4,6})", text.replace(" ", ""), flags=re.IGNORECASE)
    if not m:
        raise ParameterError("crs", f"got {value!r}; expected an EPSG code such as EPSG:4326 or EPSG:3035")
    return f"EPSG:{m.group(1)}"


@dataclass(frozen=True)
class Request:
    """What a user asked for, validated and in canonical form."""

    dataset_id: str
    dataset_identifier: str | None
    bbox: tuple[float, float, float, float]
    start: dt.date | None
    end: dt.date | None
    service: str = "auto"
    #: CLMS download API only: a pre-packaged file (its ``file`` stem or FileID), or a cut-to-order's
    #: output format and CRS.  None elsewhere, and then absent from the canonical form (stable keys).
    file: str | None = None
    output_format: str | None = None
    crs: str | None = None
    #: CLMS download API only: which ``dataset_download_information`` item a cut-to-order or auxiliary
    #: request uses (its name or ``@id``; None: the first that can be requested).  It changes the data.
    download_information: str | None = None
    #: CDSE window reads: an overview (0 = the first) instead of full resolution.  It changes the data, so it
    #: is part of the request (None: full resolution, absent from the canonical form).
    overview_level: int | None = None

    @classmethod
    def build(
        cls,
        dataset_id: str,
        dataset_identifier: str | None = None,
        bbox: object = None,
        start: object = None,
        end: object = None,
        service: object = "auto",
        *,
        file: object = None,
        output_format: object = None,
        crs: object = None,
        download_information: object = None,
        overview_level: object = None,
        today: dt.date | None = None,
    ) -> Request:
        if not dataset_id or not str(dataset_id).strip():
            raise ParameterError(
                "dataset_id", "is empty; expected a WEkEO dataset ID such as EO:JRC:DAT:CLMS or a CLMS dataset such as forest-type-2015"
            )
        box = parse_bbox(bbox) if bbox not in (None, "", []) else (-180.0, -90.0, 180.0, 90.0)
        first = parse_date("start", start, today=today)
        last = parse_date("end", end, today=today)
        if first and last and first > last:
            raise ParameterError("end", f"{last.isoformat()} is before start {first.isoformat()}")
        ident = (str(dataset_identifier).strip() or None) if dataset_identifier not in (None, "None") else None
        return cls(
            str(dataset_id).strip(), ident, box, first, last, parse_service(service),
            file=_optional_text(file), output_format=_optional_text(output_format), crs=parse_crs(crs),
            download_information=_optional_text(download_information),
            overview_level=_overview(overview_level),
        )

    def canonical(self) -> dict[str, object]:
        """JSON-ready form, service excluded: the same data from any service shares a cache key."""
        out = asdict(self)
        out.pop("service")
        out["bbox"] = [round(v, 6) for v in self.bbox]
        out["start"] = self.start.isoformat() if self.start else None
        out["end"] = self.end.isoformat() if self.end else None
        for name in ("file", "output_format", "crs", "download_information", "overview_level"):
            if out[name] is None:
                del out[name]
        if self.file is not None:  # a pre-packaged file is the same download whatever the area and dates
            for name in ("bbox", "start", "end", "output_format", "crs", "download_information", "overview_level"):
                out.pop(name, None)
        return out

    def key(self) -> str:
        """Stable hash of the canonical request (the cache key); worked out once (the request is frozen)."""
        known = self.__dict__.get("_key")
        if known is None:
            blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
            known = hashlib.sha256(blob.encode()).hexdigest()[:24]
            object.__setattr__(self, "_key", known)  # not a field: equality, repr and pickles ignore it
        return known


def _overview(value: object) -> int | None:
    if value in (None, "", "None"):
        return None
    try:
        level = int(str(value))
    except ValueError:
        raise ParameterError("overview_level", f"{value!r} is not an overview number (0 = the first overview)") from None
    if level < 0:
        raise ParameterError("overview_level", f"{level} is negative; 0 is the first overview")
    return level


def _day(value: object) -> dt.date | None:
    if value in (None, "", "None"):
        return None
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def check_coverage(request: Request, metadata: Mapping[str, object] | None, *, today: dt.date | None = None) -> None:
    """Refuse a bbox or dates that miss the product's coverage (catalog metadata), before any network call.

    Uses ``coverage_bbox`` and ``time_start`` / ``time_end`` / ``time_ongoing``
    as both catalogs write them; a missing field checks nothing.  An ongoing
    product (or one whose end is unknown) has no upper date bound but today.
    Only a request that misses the coverage entirely is refused: a partly
    overlapping one is the services' to cut.  A pre-packaged file ignores area
    and dates, so it is never refused here.
    """
    md = metadata or {}
    if request.file is not None:
        return
    cov = md.get("coverage_bbox")
    if isinstance(cov, (list, tuple)) and len(cov) == 4:
        try:
            cw, cs, ce, cn = (float(v) for v in cov)
        except (TypeError, ValueError):
            cw, cs, ce, cn = -180.0, -90.0, 180.0, 90.0
        w, s, e, n = request.bbox
        if w >= ce or e <= cw or s >= cn or n <= cs:
            where = f"{md['spatial_coverage']} " if md.get("spatial_coverage") else ""
            raise ParameterError(
                "bbox", f"[{w:g}, {s:g}, {e:g}, {n:g}] lies outside the product's coverage "
                f"({where}[{cw:g}, {cs:g}, {ce:g}, {cn:g}]); give an area that overlaps it"
            )
    first, last = _day(md.get("time_start")), _day(md.get("time_end"))
    ongoing = bool(md.get("time_ongoing")) or (first is not None and last is None)
    if first is None:
        return
    if ongoing:
        last = None
    shown = f"{first.isoformat()} to {last.isoformat() if last else 'present'}"
    if request.end is not None and request.end < first:
        raise ParameterError("end", f"{request.end.isoformat()} is before the product's time coverage ({shown})")
    if request.start is not None and last is not None and request.start > last:
        raise ParameterError("start", f"{request.start.isoformat()} is after the product's time coverage ({shown})")
    now = today or dt.date.today()
    if request.start is not None and last is None and request.start > now:
        raise ParameterError("start", f"{request.start.isoformat()} is in the future (time coverage: {shown})")
