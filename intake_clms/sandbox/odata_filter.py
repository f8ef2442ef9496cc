"""The OData ``$filter`` and ``$orderby`` of CDSE's catalogue, parsed into predicates the sandbox can plan.

Why a parser of our own: the sandbox must refuse (400, naming the part) every
filter form it does not really evaluate, so a client cannot silently rely on a
clause the sandbox ignores.  It covers exactly the CLMS forms of the CDSE
documentation: ``Collection/Name eq``, ``Name`` comparisons and
``contains``/``startswith``/``endswith``, ``ContentDate/Start|End`` and the other
date properties, ``Online eq``, ``Attributes/OData.CSC.<Type>Attribute/any(...)``
lambdas and ``OData.CSC.Intersects(area=geography'SRID=4326;...')`` (POLYGON,
MULTIPOLYGON, POINT), joined by ``and`` (``or`` and ``not`` are refused by name).

Predicates test any object with the product attributes the catalogue uses
(``name``, ``start``, ``end``, ``origin_date``, ``publication_date``, ``bbox``,
``attribute(name)``), so this module knows nothing of the store or the server.
Each predicate also says what the planner may push down (``Predicate.kind``).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Callable

#: The only collection holding CLMS products (``Collection/Name eq 'CLMS'``).
COLLECTION = "CLMS"
_UTC = dt.timezone.utc


def aware(value: dt.datetime | dt.date) -> dt.datetime:
    """A timezone-aware UTC datetime (dates are their midnight; naive values are UTC)."""
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=_UTC) if value.tzinfo is None else value.astimezone(_UTC)


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
_DATE_PATHS: dict[str, Callable[[Any], dt.datetime]] = {
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
    test: Callable[[Any], bool]
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


def parse_datetime(text: str) -> dt.datetime:
    value = text.replace("Z", "+00:00")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise FilterError(f"not a DateTimeOffset literal: {text!r}") from exc
    return aware(parsed)


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
            return "date", parse_datetime(tok.text)
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

        def test(p: Any, n=name, vt=value_type, o=op, v=literal) -> bool:
            found = p.attribute(n)
            if found is None or found[0] != vt:
                return False
            actual = parse_datetime(found[1]) if vt == "DateTimeOffset" else found[1]
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


ORDER_KEYS: dict[str, Callable[[Any], Any]] = {
    "ContentDate/Start": lambda p: p.start,
    "ContentDate/End": lambda p: p.end,
    "PublicationDate": lambda p: p.publication_date,
    "ModificationDate": lambda p: p.publication_date,
    "OriginDate": lambda p: p.origin_date,
    "Name": lambda p: p.name,
}


def parse_orderby(text: str) -> list[tuple[str, bool]]:
    """``ContentDate/Start desc, Name`` -> [(key, descending), ...]."""
    keys = []
    for part in filter(None, (s.strip() for s in text.split(","))):
        words = part.split()
        if len(words) > 2 or words[0] not in ORDER_KEYS or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise FilterError(f"unsupported $orderby {part!r}; use one of {sorted(ORDER_KEYS)} with asc|desc")
        keys.append((words[0], len(words) == 2 and words[1].lower() == "desc"))
    return keys


__all__ = ["COLLECTION", "FilterError", "ORDER_KEYS", "Predicate", "aware", "intersects_bbox", "parse_datetime",
           "parse_filter", "parse_orderby"]
