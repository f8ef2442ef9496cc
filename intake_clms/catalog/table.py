"""Read WEkEO's CLMS transition table (sheets "Current" and "New") into :class:`Product` records.

The real table is edited by hand every month, so nothing here trusts its
layout: sheets are found by name whatever their case and order, the header row
is found by content, headers are matched by meaning ("Temporal coverage" is
"Time Coverage"), merged cells are filled, Yes/No may be booleans, one cell may
hold several IDs, and title, blank and footnote rows are skipped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import openpyxl
import pandas as pd

from ..errors import ColumnNotFoundError, TableError
from .products import (
    NEW_DATASET_ID,
    Product,
    TimeCoverage,
    is_new_identifier,
    is_old_id,
    parse_time_coverage,
)

log = logging.getLogger(__name__)

#: Canonical field -> header wordings seen (or expected) in the table, normalised.
HEADER_ALIASES: dict[str, tuple[str, ...]] = {
    "dataset_identifier": (
        "dataset", "dataset identifier", "datasetidentifier", "new dataset identifier",
        "new datasetidentifier", "new identifier", "identifier", "dataset name", "new dataset",
        "cdse dataset identifier", "cdse dataset",
    ),
    "new_dataset_id": ("new dataset id", "new id", "new wekeo dataset id", "new wekeo id", "new dataset_id"),
    "old_dataset_id": (
        "old dataset id", "old dataset ids", "old id", "old ids", "old wekeo dataset id", "old wekeo id",
        "old dataset identifier", "previous dataset id", "legacy dataset id", "old dataset", "wekeo dataset id",
    ),
    "old_product_type": ("old producttype", "old product type", "old product types"),
    "product_type": ("product type", "producttype", "type", "product"),
    "time_coverage": (
        "time coverage", "temporal coverage", "temporal extent", "time extent", "time range",
        "period", "time period", "temporal range",
    ),
    "spatial_coverage": (
        "spatial coverage", "geographic coverage", "geographical coverage", "coverage", "area",
        "spatial extent", "region", "area of interest",
    ),
    "resolution": ("resolution", "spatial resolution", "pixel size", "grid spacing"),
    "frequency": ("frequency", "temporal resolution", "time step", "temporal frequency", "update frequency", "repeat rate"),
    "old_source_active": (
        "old source still active", "old source active", "old source available", "old source still available",
        "still active", "old id still active", "old id active", "old source still works", "old source",
    ),
    "notes": ("notes", "note", "comments", "comment", "remarks", "remark"),
}
FIELDS = tuple(HEADER_ALIASES)

#: Which field identifies a row on each sheet (a sheet without it is unusable).
ESSENTIAL = {"current": ("old_dataset_id",), "new": ("dataset_identifier",)}
SHEETS = ("current", "new")

_TRUE = {"yes", "y", "true", "1", "active", "still active", "x", "oui", "ja"}
_FALSE = {"no", "n", "false", "0", "inactive", "not active", "discontinued"}
_NONE = {"", "n/a", "na", "none", "-", "\u2013", "?", "unknown", "tbd", "nan"}
_SPLIT = re.compile(r"[\s,;|]+")


def normalise_header(text: object) -> str:
    """Lower case, no punctuation, no parenthesised remarks, single spaces."""
    s = str(text or "").replace("\n", " ")
    s = re.sub(r"\(.*?\)|\[.*?\]", " ", s)
    s = re.sub(r"([a-z])([A-Z])", r"\1 \2", s)  # datasetIdentifier -> dataset Identifier
    s = re.sub(r"[^0-9a-zA-Z]+", " ", s).strip().lower()
    return re.sub(r"\s+", " ", s)


_ALIAS_INDEX = {
    variant: fld
    for fld, aliases in HEADER_ALIASES.items()
    for alias in aliases
    for variant in (normalise_header(alias), normalise_header(alias).replace(" ", ""))
}


def match_header(text: object) -> str | None:
    """The canonical field a header cell stands for, or None."""
    norm = normalise_header(text)
    if not norm:
        return None
    return _ALIAS_INDEX.get(norm) or _ALIAS_INDEX.get(norm.replace(" ", ""))


def parse_bool(value: object) -> bool | None:
    """Yes/No, True/False, 1/0 (any case) -> bool; N/A and blanks -> None."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    text = str(value).strip().lower().rstrip(".")
    if text in _TRUE or text.startswith("yes"):
        return True
    if text in _FALSE or text.startswith("no"):
        return False
    return None


def _clean(value: object) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = re.sub(r"\s+", " ", str(value)).strip()
    return None if text.lower() in _NONE else text


def split_ids(value: object) -> list[str]:
    """All IDs in a cell (line breaks, commas, semicolons), in order, without duplicates."""
    text = _clean(str(value).replace("\n", " ")) if value is not None else None
    if not text:
        return []
    out: list[str] = []
    for part in _SPLIT.split(text):
        part = part.strip().strip("'\"")
        if part and part not in out:
            out.append(part)
    return out


def _ids(value: object, valid) -> list[str]:
    """The IDs of a cell when every token is a valid ID; [] for prose (titles, footnotes)."""
    tokens = split_ids(value)
    return tokens if tokens and all(valid(t) for t in tokens) else []


def parse_column_mapping(spec: str | Mapping[str, str] | None) -> dict[str | None, dict[str, str]]:
    """Parse ``field=Header`` pairs (comma separated; ``Sheet:field=Header`` for one sheet only).

    Returns {sheet-or-None: {field: header}}; None applies to every sheet.
    """
    if not spec:
        return {}
    pairs = spec.items() if isinstance(spec, Mapping) else (
        p.split("=", 1) if "=" in p else (p, "") for p in (s.strip() for s in spec.split(",")) if p
    )
    out: dict[str | None, dict[str, str]] = {}
    for key, header in pairs:
        key, header = key.strip(), header.strip()
        sheet, _, fld = key.rpartition(":")
        fld = fld.strip().lower().replace(" ", "_").replace("-", "_")
        if fld not in HEADER_ALIASES:
            raise TableError(f"--columns: unknown field {fld!r} in {key!r}; expected one of {', '.join(FIELDS)}")
        if not header:
            raise TableError(f"--columns: no header given for {key!r}; expected {key}=<header text>")
        out.setdefault(sheet.strip().lower() or None, {})[fld] = header
    return out


@dataclass
class Sheet:
    """One sheet of the table, header located, columns mapped to fields."""

    name: str
    frame: pd.DataFrame  # data rows only, columns = canonical fields found
    headers: list[str] = field(default_factory=list)  # header texts as found


def _sheet_values(ws) -> list[list[object]]:
    """All cell values with merged ranges filled from their top-left cell."""
    rows = [list(r) for r in ws.iter_rows(values_only=True)]
    for rng in ws.merged_cells.ranges:
        value = ws.cell(rng.min_row, rng.min_col).value
        for r in range(rng.min_row, rng.max_row + 1):
            for c in range(rng.min_col, rng.max_col + 1):
                if r - 1 < len(rows) and c - 1 < len(rows[r - 1]):
                    rows[r - 1][c - 1] = value
    return rows


def _locate_header(rows: list[list[object]], essential: tuple[str, ...], explicit: dict[str, str]) -> int | None:
    """Index of the first row (among the first 30) that holds the essential headers."""
    wanted = {normalise_header(h) for h in explicit.values()}
    best, best_score = None, 0
    for i, row in enumerate(rows[:30]):
        cells = [normalise_header(c) for c in row if c is not None]
        fields = {match_header(c) for c in row if c is not None} - {None}
        fields |= {f for f, h in explicit.items() if normalise_header(h) in cells}
        score = len(fields) + len(wanted & set(cells))
        if all(e in fields for e in essential) and score > best_score:
            best, best_score = i, score
    return best


def _header_like(rows: list[list[object]]) -> list[str]:
    """The texts of the most header-like row among the first 30: the one with the most distinct texts
    (a title merged across the columns, filled into each, counts once)."""
    best: list[str] = []
    for row in rows[:30]:
        texts = list(dict.fromkeys(str(c).strip() for c in row if isinstance(c, str) and c.strip()))
        if len(texts) > len(best):
            best = texts
    return best


def _read_sheet(
    name: str, rows: list[list[object]], kind: str, explicit: dict[str, str], optional: dict[str, str]
) -> Sheet:
    """``explicit`` headers must exist on this sheet; ``optional`` ones (unscoped --columns) are used if present."""
    essential = ESSENTIAL[kind]
    present = {normalise_header(c) for r in rows[:30] for c in r if c is not None}
    found = _header_like(rows)  # so an error can show the user what to map
    for fld, wanted in explicit.items():
        if normalise_header(wanted) not in present:
            raise ColumnNotFoundError(name, fld, found, given=wanted)
    explicit = {**{f: h for f, h in optional.items() if normalise_header(h) in present}, **explicit}
    idx = _locate_header(rows, essential, explicit)
    if idx is None:
        raise ColumnNotFoundError(name, essential[0], found)
    header = rows[idx]
    headers = [str(c).strip() if c is not None else "" for c in header]
    columns: dict[str, int] = {}
    by_norm = {normalise_header(h): j for j, h in enumerate(headers) if h}
    for fld, wanted in explicit.items():
        j = by_norm.get(normalise_header(wanted))
        if j is None:
            raise ColumnNotFoundError(name, fld, [h for h in headers if h], given=wanted)
        columns[fld] = j
    for j, h in enumerate(headers):
        fld = match_header(h)
        if fld and fld not in columns and j not in columns.values():
            columns[fld] = j
    for fld in essential:
        if fld not in columns:
            raise ColumnNotFoundError(name, fld, [h for h in headers if h])
    data = [[row[j] if j < len(row) else None for j in columns.values()] for row in rows[idx + 1 :]]
    frame = pd.DataFrame(data, columns=list(columns), dtype=object)
    return Sheet(name=name, frame=frame, headers=[h for h in headers if h])


def _find_sheets(names: list[str]) -> dict[str, str]:
    """Map "current"/"new" to the workbook's sheet names, tolerant of case, spacing and wording."""
    found: dict[str, str] = {}
    norm = {n: normalise_header(n) for n in names}
    for kind in SHEETS:
        exact = [n for n in names if norm[n] == kind]
        loose = [n for n in names if kind in norm[n].split()]
        if exact or loose:
            found[kind] = (exact or loose)[0]
    return found


def read_sheets(path: str | PathLike[str], columns: str | Mapping[str, str] | None = None) -> dict[str, Sheet]:
    """Read the Current and New sheets of a transition table workbook."""
    path = Path(path)
    mapping = parse_column_mapping(columns)
    try:
        wb = openpyxl.load_workbook(path, data_only=True)
    except FileNotFoundError:
        raise TableError(f"transition table not found: {path}") from None
    except Exception as exc:  # openpyxl raises several unrelated types for a non-workbook
        raise TableError(f"cannot read {path} as an .xlsx workbook: {exc}") from None
    found = _find_sheets(wb.sheetnames)
    missing = [k for k in SHEETS if k not in found]
    if missing:
        raise TableError(
            f"{path.name}: no sheet for {', '.join(repr(m.title()) for m in missing)}; "
            f"sheets found: {', '.join(repr(n) for n in wb.sheetnames)}"
        )
    sheets = {}
    for kind, name in found.items():
        scoped = {**mapping.get(kind, {}), **mapping.get(name.strip().lower(), {})}
        sheets[kind] = _read_sheet(name, _sheet_values(wb[name]), kind, scoped, mapping.get(None, {}))
    unused = {f: h for f, h in mapping.get(None, {}).items() if not any(
        normalise_header(h) in map(normalise_header, s.headers) for s in sheets.values())}
    if unused:
        fld, header = next(iter(unused.items()))
        raise ColumnNotFoundError("any", fld, sorted({h for s in sheets.values() for h in s.headers}), given=header)
    return sheets


@dataclass
class _Draft:
    """A product being merged from several rows."""

    key: str
    identifier: str | None
    old_ids: list[str] = field(default_factory=list)
    old_product_types: list[str] = field(default_factory=list)
    attrs: dict[str, object] = field(default_factory=dict)
    active: bool | None = None
    notes: list[str] = field(default_factory=list)

    def fill(self, row: Mapping[str, object], *, override: bool) -> None:
        for fld in ("product_type", "time_coverage", "spatial_coverage", "resolution", "frequency"):
            value = _clean(row.get(fld))
            if value is not None and (override or self.attrs.get(fld) is None):
                self.attrs[fld] = value
        for old in _ids(row.get("old_dataset_id"), is_old_id):
            if old not in self.old_ids:
                self.old_ids.append(old)
        opt = _clean(row.get("old_product_type"))
        if opt and opt not in self.old_product_types:
            self.old_product_types.append(opt)
        active = parse_bool(row.get("old_source_active"))
        if active is not None and (override or self.active is None):
            self.active = active
        note = _clean(row.get("notes"))
        if note and note not in self.notes:
            self.notes.append(note)

    def build(self) -> Product:
        coverage = self.attrs.get("time_coverage")
        return Product(
            key=self.key,
            dataset_id=NEW_DATASET_ID if self.identifier else self.key,
            dataset_identifier=self.identifier,
            old_ids=tuple(sorted(self.old_ids)),
            old_product_types=tuple(sorted(self.old_product_types)),
            product_type=self.attrs.get("product_type"),  # type: ignore[arg-type]
            time_coverage=parse_time_coverage(coverage) if coverage else TimeCoverage(None, None, None),
            spatial_coverage=self.attrs.get("spatial_coverage"),  # type: ignore[arg-type]
            resolution=self.attrs.get("resolution"),  # type: ignore[arg-type]
            frequency=self.attrs.get("frequency"),  # type: ignore[arg-type]
            old_source_active=self.active,
            notes=tuple(self.notes),
        )


def _rows(sheet: Sheet) -> list[dict[str, object]]:
    return sheet.frame.to_dict("records")


def products_from_sheets(sheets: Mapping[str, Sheet]) -> list[Product]:
    """Merge both sheets: one product per new identifier, one per old ID not migrated yet."""
    drafts: dict[str, _Draft] = {}
    skipped = 0
    for row in _rows(sheets["new"]):
        idents = _ids(row.get("dataset_identifier"), is_new_identifier)
        skipped += not idents  # a blank, title or footnote row
        for ident in idents:
            drafts.setdefault(ident, _Draft(ident, ident)).fill(row, override=True)
    unmigrated: dict[str, _Draft] = {}
    migrated_old: set[str] = set()
    for row in _rows(sheets["current"]):
        olds = _ids(row.get("old_dataset_id"), is_old_id)
        if not olds:
            skipped += 1
            continue
        idents = _ids(row.get("dataset_identifier"), is_new_identifier)
        for ident in idents:
            draft = drafts.setdefault(ident, _Draft(ident, ident))
            draft.fill(row, override=False)
            migrated_old.update(olds)
        if not idents:
            for old in olds:
                # The old ID names the product; keep its old productType for queries.
                unmigrated.setdefault(old, _Draft(old, None)).fill({**row, "old_dataset_id": None}, override=False)
    for old, draft in unmigrated.items():
        if old not in migrated_old and not any(old in d.old_ids for d in drafts.values()):
            drafts[old] = draft
    if skipped:
        log.debug("skipped %d rows without a usable ID (titles, notes, blanks)", skipped)
    return sorted((d.build() for d in drafts.values()), key=lambda p: p.key.lower())


def read_transition_table(path: str | PathLike[str], columns: str | Mapping[str, str] | None = None) -> list[Product]:
    """Read a transition table workbook into sorted, merged :class:`Product` records."""
    return products_from_sheets(read_sheets(path, columns))
