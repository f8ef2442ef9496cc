"""Validate an entry's user parameters into one canonical :class:`Request`.

The canonical form matters beyond validation: the lifecycle hashes it into the
cache key, so two spellings of the same request must give the same Request.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from .errors import ParameterError

SERVICES = ("auto", "wekeo", "clms", "cdse")
_OPEN_END = {"present", "now", "today", "ongoing"}


def parse_bbox(value: object) -> tuple[float, float, float, float]:
    """[west, south, east, north] in degrees, from a list/tuple or a string "[w, s, e, n]" / "w,s,e,n"."""
    raw = value
    if isinstance(value, str):
        text = value.strip()
        try:
            value = ast.literal_eval(text) if text.startswith(("[", "(")) else [p for p in re.split(r"[,\s]+", text) if p]
        except (ValueError, SyntaxError):
            raise ParameterError("bbox", f"cannot read {raw!r}; expected [west, south, east, north] in degrees") from None
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 4:
        raise ParameterError("bbox", f"got {raw!r}; expected four numbers [west, south, east, north] in degrees")
    try:
        west, south, east, north = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ParameterError("bbox", f"got {raw!r}; every value must be a number") from None
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
        )

    def canonical(self) -> dict[str, object]:
        """JSON-ready form, service excluded: the same data from any service shares a cache key."""
        out = asdict(self)
        out.pop("service")
        out["bbox"] = [round(v, 6) for v in self.bbox]
        out["start"] = self.start.isoformat() if self.start else None
        out["end"] = self.end.isoformat() if self.end else None
        for name in ("file", "output_format", "crs"):
            if out[name] is None:
                del out[name]
        if self.file is not None:  # a pre-packaged file is the same download whatever the area and dates
            for name in ("bbox", "start", "end", "output_format", "crs"):
                out.pop(name, None)
        return out

    def key(self) -> str:
        """Stable hash of the canonical request (the cache key)."""
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:24]
