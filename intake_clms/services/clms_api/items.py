"""What to ask the CLMS download API for: a request's data-request items, packed into products.

A pre-packaged file is one item ``{DatasetID, FileID}``; a cut-to-order request is
general items (bbox, output format, CRS and, for time series, a TemporalFilter split
into chunks of the dataset's day limit), packed up to 5 per data request.  Each data
request is one product of the store, keyed by its dataset and items, so the same
cut asked again is found in the store whatever the request around it.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from .listing import FORMAT_CONVERSION, ApiDataset, ApiFile, canonical_format
from ...errors import ParameterError
from ..base import Hit
from ...params import Request
from ...store.fsutil import safe_name

MAX_ITEMS = 5  # general items per data request (the server refuses more)
WORLD = (-180.0, -90.0, 180.0, 90.0)
WGS84 = "EPSG:4326"


def epoch_ms(day: dt.date, end_of_day: bool = False) -> int:
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


def is_world(bbox: Sequence[float]) -> bool:
    return all(abs(a - b) < 1e-9 for a, b in zip(bbox, WORLD))


def url_name(url: str) -> str:
    return unquote(PurePosixPath(urlsplit(url).path).name) or "file"


_DAY8 = re.compile(r"(?<!\d)((?:19|20)\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])")
_YEAR = re.compile(r"(?<![\dA-Za-z])((?:19|20)\d{2})(?![\d])")


def date_in(name: str) -> dt.date | None:
    """The first date written in a file name (YYYYMMDD, else a lone year), or None."""
    m = _DAY8.search(name)
    if m:
        try:
            return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            pass
    m = _YEAR.search(name)
    return dt.date(int(m.group(1)), 1, 1) if m else None


def within_years(day: dt.date, request: Request) -> bool:
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


def file_product(ds: ApiDataset, wanted: str) -> Hit:
    """The one data request of a pre-packaged file (the same product whatever the area asked)."""
    f = find_file(ds, wanted)
    name = f.file or f.id
    start, end = nominal(ds)
    return Hit(key=safe_name(f"clms-{ds.id}-{name}", 200), name=name, ordered=True, start=start, end=end,
               extra={"dataset": ds.id, "items": [{"DatasetID": ds.uid, "FileID": f.id}]})


def nominal(ds: ApiDataset) -> tuple[str | None, str | None]:
    """A static map's dates when the request names none: its reference year, the year of the middle of the
    dataset's temporal extent (Forest Type 2015: imagery 2014-2016 -> 2015-01-01), to the extent's end."""
    if ds.start is None:
        return None, ds.end.isoformat() if ds.end else None
    middle = ds.start + (ds.end - ds.start) / 2 if ds.end else ds.start
    return dt.date(middle.year, 1, 1).isoformat(), ds.end.isoformat() if ds.end else None


def date_chunks(start: dt.date, end: dt.date, days: int | None) -> list[tuple[dt.date, dt.date]]:
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
    info = ds.default_info
    if info is None:
        raise ParameterError("download_information", f"{ds.id} lists no download information; it takes no cut-to-order request")
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
    if is_world(request.bbox):
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
        ({**base, "TemporalFilter": {"StartDate": epoch_ms(a), "EndDate": epoch_ms(b, end_of_day=True)}}, (a, b))
        for a, b in date_chunks(start, end, ds.limit_days)
    ]


def general_products(ds: ApiDataset, request: Request) -> list[Hit]:
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
            pid, (start, end) = f"{ds.id}_cut", nominal(ds)
        chosen = [i for i, _ in group]
        key = safe_name(f"clms-{pid}-{items_hash(chosen)[:12]}", 200)  # the cut (area, format, CRS) is in the items
        products.append(Hit(key=key, name=pid, ordered=True, start=start, end=end,
                            extra={"dataset": ds.id, "items": chosen}))
    return products

