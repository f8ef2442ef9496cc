"""The sandbox's CDSE protocol, driven with plain ``requests``: Keycloak grants, the OData
catalogue's filters and paging, the download redirect to presigned S3-like URLs, Range
reads of COGs, expiry of tokens and links, and the per-user connection limit."""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from urllib.parse import urlsplit

import jwt
import pytest
import requests

from intake_clms.sandbox.odata_filter import FilterError, intersects_bbox, parse_filter

TIMEOUT = 30  # a listing may generate a dozen global COGs first (a few tenths of a second each)
CLMS = "Collection/Name eq 'CLMS'"
PRODUCT_FIELDS = {
    "@odata.mediaContentType", "Id", "Name", "ContentType", "ContentLength", "OriginDate", "PublicationDate",
    "ModificationDate", "Online", "EvictionDate", "S3Path", "Checksum", "ContentDate", "Footprint", "GeoFootprint",
}
ATTRIBUTE_NAMES = {
    "origin", "component", "productType", "datasetIdentifier", "datasetAlias", "datasetShortName", "fileFormat",
    "temporalRepeatRate", "areaOfInterest", "gridLabel", "nominalDate", "beginningDateTime", "endingDateTime",
    "processingDate", "productVersion", "platformShortName", "instrumentShortName",
}
OPTIONAL_ATTRIBUTES = {"metricGridSpacing", "consolidationPeriod"}
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


# --------------------------------------------------------------------------- helpers


def attr(name: str, value: str) -> str:
    return (
        "Attributes/OData.CSC.StringAttribute/any(att:att/Name eq '" + name + "' and "
        "att/OData.CSC.StringAttribute/Value eq '" + value + "')"
    )


def creds(sb) -> tuple[str, str]:
    c = sb.credentials["cdse"]
    return c["username"], c["password"]


def password_grant(sb, **extra) -> requests.Response:
    user, password = creds(sb)
    form = {"client_id": "cdse-public", "grant_type": "password", "username": user, "password": password, **extra}
    return requests.post(sb.urls["cdse_token"], data=form, timeout=TIMEOUT)


def access_token(sb) -> str:
    r = password_grant(sb)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def products(sb, **params) -> requests.Response:
    query = {"$" + k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()}
    return requests.get(sb.urls["cdse_odata"] + "/Products", params=query, timeout=TIMEOUT)


def ok_json(r: requests.Response) -> dict:
    assert r.status_code == 200, r.text
    return r.json()


def attributes(product: dict) -> dict:
    return {a["Name"]: a["Value"] for a in product["Attributes"]}


def first(sb, fmt: str) -> dict:
    """One product of a format, with its attributes."""
    body = ok_json(products(sb, filter=f"{CLMS} and {attr('fileFormat', fmt)}", top=1, expand="Attributes"))
    assert body["value"], f"the store offers no {fmt} product on CDSE"
    return body["value"][0]


def series(sb, fmt: str = "cog", low: int = 8, high: int = 40) -> tuple[str, int]:
    """An untiled dataset whose ``fmt`` series is short enough to list whole, and its length.

    Chosen from the store (white box) so the tests follow whatever the generator makes.
    """
    store = sb.ctx.store
    for spec in store.datasets():
        if spec.dataset_identifier and fmt in spec.formats and not spec.tiled:
            n = store.count(spec.key, format=fmt)
            if low <= n <= high:
                return spec.dataset_identifier, n
    pytest.fail(f"no {fmt} series of {low}..{high} products in the store")


def cdse_count(sb, ident: str) -> int:
    """Products of a dataset on CDSE: its nc and cog items."""
    store = sb.ctx.store
    spec = store.dataset(ident)
    return sum(store.count(spec.key, format=f) for f in ("nc", "cog") if f in spec.formats)


def series_filter(ident: str, fmt: str | None = "cog") -> str:
    text = f"{CLMS} and {attr('datasetIdentifier', ident)}"
    return text + (f" and {attr('fileFormat', fmt)}" if fmt else "")


def ids(body: dict) -> list[str]:
    return [p["Id"] for p in body["value"]]


def download_location(sb, product_id: str, token: str) -> str:
    r = requests.get(f"{sb.urls['cdse_download']}/Products({product_id})/$value",
                     headers={"Authorization": f"Bearer {token}"}, allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code in (301, 302, 307), r.text
    return r.headers["Location"]


# --------------------------------------------------------------------------- identity


def test_password_grant_answers_like_keycloak(sandbox):
    r = password_grant(sandbox)
    body = ok_json(r)
    assert set(body) == {"access_token", "expires_in", "refresh_expires_in", "refresh_token", "token_type",
                         "not-before-policy", "session_state", "scope"}
    assert body["token_type"] == "Bearer"
    st = sandbox.ctx.state["cdse"]
    assert body["expires_in"] == round(st.access_lifetime) and body["refresh_expires_in"] == round(st.refresh_lifetime)
    assert body["expires_in"] < body["refresh_expires_in"]
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    assert claims["azp"] == "cdse-public" and claims["preferred_username"] == creds(sandbox)[0]
    assert uuid.UUID(body["session_state"])


@pytest.mark.parametrize(
    "form, status, error, description",
    [
        ({"password": "wrong"}, 401, "invalid_grant", "Invalid user credentials"),
        ({"username": "nobody@example.org"}, 401, "invalid_grant", "Invalid user credentials"),
        ({"client_id": "someone-else"}, 401, "invalid_client", "Invalid client or Invalid client credentials"),
        ({"grant_type": ""}, 400, "invalid_request", "Missing form parameter: grant_type"),
        ({"grant_type": "implicit"}, 400, "unsupported_grant_type", "Unsupported grant_type"),
    ],
)
def test_password_grant_errors(sandbox, form, status, error, description):
    r = password_grant(sandbox, **form)
    assert r.status_code == status
    assert r.json() == {"error": error, "error_description": description}


def test_totp_is_checked_when_the_user_has_one(sandbox):
    user, password = creds(sandbox)
    sandbox.ctx.state["cdse"].users = {user: {"password": password, "totp": "123456"}}
    assert password_grant(sandbox).status_code == 401
    assert password_grant(sandbox, totp="654321").status_code == 401
    assert password_grant(sandbox, totp="123456").status_code == 200


def test_refresh_grant_and_its_errors(sandbox):
    first_grant = ok_json(password_grant(sandbox))
    form = {"client_id": "cdse-public", "grant_type": "refresh_token", "refresh_token": first_grant["refresh_token"]}
    refreshed = ok_json(requests.post(sandbox.urls["cdse_token"], data=form, timeout=TIMEOUT))
    assert refreshed["access_token"] != first_grant["access_token"]
    assert refreshed["session_state"] == first_grant["session_state"]

    bad = requests.post(sandbox.urls["cdse_token"], data={**form, "refresh_token": "not-a-token"}, timeout=TIMEOUT)
    assert (bad.status_code, bad.json()["error_description"]) == (400, "Invalid refresh token")

    sandbox.clock.advance(sandbox.ctx.state["cdse"].refresh_lifetime + 1)
    late = requests.post(sandbox.urls["cdse_token"], data={**form, "refresh_token": refreshed["refresh_token"]},
                         timeout=TIMEOUT)
    assert late.status_code == 400
    assert late.json() == {"error": "invalid_grant", "error_description": "Token is not active"}


def test_access_token_expires_on_the_sandbox_clock_and_refresh_recovers(sandbox):
    product = first(sandbox, "cog")
    grant = ok_json(password_grant(sandbox))
    url = f"{sandbox.urls['cdse_download']}/Products({product['Id']})/$value"
    auth = {"Authorization": f"Bearer {grant['access_token']}"}
    assert requests.get(url, headers=auth, allow_redirects=False, timeout=TIMEOUT).status_code == 307
    sandbox.clock.advance(grant["expires_in"] + 1)
    expired = requests.get(url, headers=auth, allow_redirects=False, timeout=TIMEOUT)
    assert expired.status_code == 401 and expired.json() == {"detail": "Expired signature!"}
    form = {"client_id": "cdse-public", "grant_type": "refresh_token", "refresh_token": grant["refresh_token"]}
    fresh = ok_json(requests.post(sandbox.urls["cdse_token"], data=form, timeout=TIMEOUT))["access_token"]
    again = requests.get(url, headers={"Authorization": f"Bearer {fresh}"}, allow_redirects=False, timeout=TIMEOUT)
    assert again.status_code == 307


def test_token_expiry_fault_expires_every_token(sandbox):
    product = first(sandbox, "cog")
    grant = ok_json(password_grant(sandbox))
    url = f"{sandbox.urls['cdse_download']}/Products({product['Id']})/$value"
    sandbox.faults.add("token_expiry", service="cdse")
    r = requests.get(url, headers={"Authorization": f"Bearer {grant['access_token']}"}, allow_redirects=False,
                     timeout=TIMEOUT)
    assert r.status_code == 401
    form = {"client_id": "cdse-public", "grant_type": "refresh_token", "refresh_token": grant["refresh_token"]}
    refused = requests.post(sandbox.urls["cdse_token"], data=form, timeout=TIMEOUT)
    assert refused.status_code == 400 and refused.json()["error_description"] == "Token is not active"
    token = access_token(sandbox)  # a new login works again
    assert requests.get(url, headers={"Authorization": f"Bearer {token}"}, allow_redirects=False,
                        timeout=TIMEOUT).status_code == 307


# --------------------------------------------------------------------------- catalogue


def test_catalogue_is_anonymous_and_products_have_the_cdse_fields(sandbox):
    body = ok_json(products(sandbox, filter=CLMS, top=5))
    assert body["@odata.context"] == "$metadata#Products"
    assert "@odata.count" not in body and 0 < len(body["value"]) <= 5
    for p in body["value"]:
        assert set(p) == PRODUCT_FIELDS
        assert uuid.UUID(p["Id"])
        assert re.search(r"_(nc|cog)$", p["Name"])
        assert isinstance(p["ContentLength"], int) and p["ContentLength"] > 0
        for key in ("OriginDate", "PublicationDate", "ModificationDate"):
            assert ISO.match(p[key])
        assert ISO.match(p["ContentDate"]["Start"]) and ISO.match(p["ContentDate"]["End"])
        assert p["ContentDate"]["Start"] <= p["ContentDate"]["End"]
        assert re.fullmatch(r"/eodata/CLMS/(bio-geophysical|landcover_landuse)/[^/]+/[^/]+/\d{4}/\d{2}/\d{2}/"
                            + re.escape(p["Name"]), p["S3Path"])
        assert p["S3Path"].split("/")[6:9] == p["ContentDate"]["Start"][:10].split("-")
        checksum, *more = p["Checksum"]
        assert checksum["Algorithm"] == "MD5" and re.fullmatch(r"[0-9a-f]{32}", checksum["Value"])
        assert [c["Algorithm"] for c in more] in ([], ["BLAKE3"])  # BLAKE3 when the package is importable
        assert all(re.fullmatch(r"[0-9a-f]{64}", c["Value"]) for c in more)
        assert p["GeoFootprint"]["type"] == "Polygon"
        assert p["Footprint"].startswith("geography'SRID=4326;POLYGON ((") and p["Footprint"].endswith("))'")
        assert p["Online"] is True
    # stable ids: the same query gives the same products
    assert ids(ok_json(products(sandbox, filter=CLMS, top=5))) == ids(body)


def test_single_product_by_id(sandbox):
    p = first(sandbox, "nc")
    r = requests.get(f"{sandbox.urls['cdse_odata']}/Products({p['Id']})", params={"$expand": "Attributes"},
                     timeout=TIMEOUT)
    body = ok_json(r)
    assert body["@odata.context"] == "$metadata#Products/$entity"
    assert body["Name"] == p["Name"] and body["Attributes"] == p["Attributes"]
    missing = requests.get(f"{sandbox.urls['cdse_odata']}/Products({uuid.uuid4()})", timeout=TIMEOUT)
    assert missing.status_code == 404 and "not found" in missing.json()["error"]["message"]


def test_expand_attributes_names_and_types(sandbox):
    for fmt in ("nc", "cog"):
        p = first(sandbox, fmt)
        names = [a["Name"] for a in p["Attributes"]]
        assert len(names) == len(set(names))
        assert ATTRIBUTE_NAMES <= set(names) <= ATTRIBUTE_NAMES | OPTIONAL_ATTRIBUTES
        for a in p["Attributes"]:
            assert set(a) == {"@odata.type", "Name", "Value", "ValueType"}
            assert a["@odata.type"] == f"#OData.CSC.{a['ValueType']}Attribute"
            assert a["ValueType"] in ("String", "Integer", "Double", "DateTimeOffset")
        values = attributes(p)
        assert values["fileFormat"] == fmt and p["Name"].endswith("_" + fmt)
        assert values["component"] in ("bio-geophysical", "landcover_landuse")
        assert p["S3Path"].startswith(f"/eodata/CLMS/{values['component']}/{values['productType']}/"
                                      f"{values['datasetIdentifier']}/")
        assert values["nominalDate"] == p["ContentDate"]["Start"]
        if "metricGridSpacing" in values:
            assert isinstance(values["metricGridSpacing"], int)
    plain = ok_json(products(sandbox, filter=CLMS, top=1))["value"][0]
    assert "Attributes" not in plain


def test_filter_by_dataset_identifier_and_file_format(sandbox):
    ident, n = series(sandbox, "cog", 3, 20)
    body = ok_json(products(sandbox, filter=series_filter(ident, None), top=100, expand="Attributes", count=True))
    assert body["@odata.count"] == len(body["value"]) == cdse_count(sandbox, ident) > n  # nc and cog
    assert {attributes(p)["datasetIdentifier"] for p in body["value"]} == {ident}
    by_format = {}
    for fmt in ("cog", "nc"):
        sub = ok_json(products(sandbox, filter=series_filter(ident, fmt), top=100, expand="Attributes"))
        assert {attributes(p)["fileFormat"] for p in sub["value"]} == {fmt}
        assert all(p["Name"].endswith("_" + fmt) for p in sub["value"])
        by_format[fmt] = set(ids(sub))
    assert by_format["cog"] | by_format["nc"] == set(ids(body)) and not by_format["cog"] & by_format["nc"]
    none = ok_json(products(sandbox, filter=f"{CLMS} and {attr('datasetIdentifier', 'no_such_dataset_v9')}"))
    assert none["value"] == []
    other = ok_json(products(sandbox, filter="Collection/Name eq 'SENTINEL-2'", count=True))
    assert other["value"] == [] and other["@odata.count"] == 0
    tif = ok_json(products(sandbox, filter=f"{CLMS} and {attr('fileFormat', 'tif')}", top=0, count=True))
    assert tif["@odata.count"] == 0  # CDSE publishes nc and cog only


@pytest.mark.parametrize("field", ["Start", "End"])
def test_filter_by_content_date(sandbox, field):
    ident, total = series(sandbox)
    base = series_filter(ident)
    every = ok_json(products(sandbox, filter=base, top=100, orderby="ContentDate/Start asc"))["value"]
    assert len(every) == total
    pivot = every[len(every) // 2]["ContentDate"][field]

    def select(op: str) -> set[str]:
        body = ok_json(products(sandbox, filter=f"{base} and ContentDate/{field} {op} {pivot}", top=100))
        return set(ids(body))

    expected = {
        "gt": {p["Id"] for p in every if p["ContentDate"][field] > pivot},
        "ge": {p["Id"] for p in every if p["ContentDate"][field] >= pivot},
        "lt": {p["Id"] for p in every if p["ContentDate"][field] < pivot},
        "le": {p["Id"] for p in every if p["ContentDate"][field] <= pivot},
    }
    for op, want in expected.items():
        assert select(op) == want, op
    assert expected["ge"] - expected["gt"]  # the pivot itself: ge includes it, gt does not
    # a window with both bounds, the documented form
    low, high = every[1]["ContentDate"]["Start"], every[-2]["ContentDate"]["Start"]
    window = ok_json(products(sandbox, top=100, filter=f"{base} and ContentDate/Start gt {low} and "
                              f"ContentDate/Start lt {high}"))
    assert set(ids(window)) == {p["Id"] for p in every if low < p["ContentDate"]["Start"] < high}


def _overlaps(a, b) -> bool:
    return not (a[2] < b[0] or a[0] > b[2] or a[3] < b[1] or a[1] > b[3])


def test_filter_intersects_polygon(sandbox):
    store = sandbox.ctx.store
    spec = min((s for s in store.datasets() if s.dataset_identifier and s.tiled and "cog" in s.formats),
               key=lambda s: store.count(s.key, format="cog"))
    items = store.items(spec.key, format="cog", limit=1)
    year = items[0].start.year
    window = f"ContentDate/Start ge {year}-01-01T00:00:00.000Z and ContentDate/Start lt {year + 1}-01-01T00:00:00.000Z"
    in_year = [i for i in store.items(spec.key, format="cog", start=f"{year}-01-01", end=f"{year}-12-31")
               if i.start.year == year]
    assert len({i.bbox for i in in_year}) > 1  # tiles: footprints differ
    base = f"{series_filter(spec.dataset_identifier)} and {window}"
    assert ok_json(products(sandbox, filter=base, top=0, count=True))["@odata.count"] == len(in_year)
    for tile in (in_year[0], in_year[-1]):
        west, south, east, north = tile.bbox
        cx, cy = (west + east) / 2, (south + north) / 2
        w, s, e, n = cx - 0.2, cy - 0.2, cx + 0.2, cy + 0.2
        polygon = f"POLYGON(({w} {s},{e} {s},{e} {n},{w} {n},{w} {s}))"
        query = f"{base} and OData.CSC.Intersects(area=geography'SRID=4326;{polygon}')"
        want = {i.uuid for i in in_year if _overlaps(i.bbox, (w, s, e, n))}
        assert tile.uuid in want and len(want) < len(in_year)
        got = ok_json(products(sandbox, filter=query, top=50, count=True))
        assert set(ids(got)) == want and got["@odata.count"] == len(want)


def test_intersects_geometry_unit():
    box = (0.0, 0.0, 10.0, 10.0)
    triangle_outside = [[(11.0, 0.0), (20.0, 0.0), (20.0, 9.0)]]  # its bbox overlaps nothing either
    crossing = [[(-5.0, 5.0), (15.0, 5.0), (15.0, 6.0), (-5.0, 6.0)]]  # no vertex inside, edges cross
    around = [[(-50.0, -50.0), (50.0, -50.0), (50.0, 50.0), (-50.0, 50.0)]]
    diagonal_miss = [[(22.0, -1.0), (24.0, -1.0), (-1.0, 24.0), (-1.0, 22.0)]]  # bbox overlaps, the band misses
    assert not intersects_bbox(triangle_outside, box)
    assert intersects_bbox(crossing, box) and intersects_bbox(around, box)
    assert not intersects_bbox(diagonal_miss, box)
    assert intersects_bbox([[(12.0, -1.0), (14.0, -1.0), (-1.0, 14.0), (-1.0, 12.0)]], box)  # the band crosses
    assert intersects_bbox([[(3.0, 3.0)]], box)  # a POINT


def test_combined_filter_with_parentheses_and_older_intersects_form(sandbox):
    ident, _ = series(sandbox)
    polygon = "POLYGON((-180 -90,180 -90,180 90,-180 90,-180 -90))"
    flat = f"{series_filter(ident)} and ContentDate/Start ge 1990-01-01T00:00:00.000Z"
    nested = (f"({CLMS}) and ({attr('datasetIdentifier', ident)} and (ContentDate/Start ge 1990-01-01T00:00:00Z)) "
              f"and OData.CSC.Intersects(location=Footprint,area=geography'SRID=4326;{polygon}') "
              f"and ({attr('fileFormat', 'cog')})")
    a = ok_json(products(sandbox, filter=flat, top=100))
    b = ok_json(products(sandbox, filter=nested, top=100))
    assert ids(a) == ids(b) and a["value"]


@pytest.mark.parametrize(
    "expression, named",
    [
        (f"{CLMS} or Collection/Name eq 'SENTINEL-2'", "'or'"),
        (f"not {CLMS}", "'not'"),
        (f"{CLMS} and CloudCover lt 10", "CloudCover"),
        ("contains(S3Path,'CLMS')", "S3Path"),
        ("substringof('NDVI',Name)", "substringof"),
        ("Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'fileFormat')", "att/OData.CSC.StringAttribute/Value"),
        ("Attributes/OData.CSC.FooAttribute/any(att:att/Name eq 'x')", "FooAttribute"),
        ("OData.CSC.Intersects(area=geography'SRID=3035;POLYGON((0 0,1 0,1 1,0 0))')", "SRID=3035"),
        ("ContentDate/Start gt 'yesterday'", "DateTimeOffset"),
        (f"({CLMS}", "ends too early"),
        (f"{CLMS} and ContentDate/Start gt 2024-01-01T00:00:00Z ContentDate/End", "ContentDate/End"),
    ],
)
def test_unsupported_filter_is_refused_with_400(sandbox, expression, named):
    r = products(sandbox, filter=expression)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["target"] == "$filter" and named in error["message"]


def test_parser_unit_returns_and_terms_and_the_dataset_hint():
    terms = parse_filter(f"({CLMS}) and {attr('datasetIdentifier', 'ndvi_global_300m_10daily_v2')}")
    assert [t.identifier for t in terms] == [None, "ndvi_global_300m_10daily_v2"]
    with pytest.raises(FilterError):
        parse_filter("Name eq 'a' and")


def test_paging_with_next_link_until_exhausted(sandbox):
    ident, n = series(sandbox)
    total = cdse_count(sandbox, ident)  # nc and cog
    top = max(2, total // 3)
    url = sandbox.urls["cdse_odata"] + "/Products"
    params = {"$filter": series_filter(ident, None), "$top": top, "$count": "true"}
    seen, starts, pages = [], [], 0
    r = requests.get(url, params=params, timeout=TIMEOUT)
    while True:
        body = ok_json(r)
        pages += 1
        assert body["@odata.count"] == total and len(body["value"]) <= top
        seen += ids(body)
        starts += [p["ContentDate"]["Start"] for p in body["value"]]
        nxt = body.get("@odata.nextLink")
        if nxt is None:
            break
        assert urlsplit(nxt).netloc == urlsplit(url).netloc and nxt.startswith("http")
        r = requests.get(nxt, timeout=TIMEOUT)
    assert len(seen) == len(set(seen)) == total
    assert pages == -(-total // top)
    assert starts == sorted(starts)  # default order: ContentDate/Start ascending


def test_skip_and_orderby(sandbox):
    ident, total = series(sandbox)
    base = {"filter": series_filter(ident), "top": 100}
    asc = ok_json(products(sandbox, **base, orderby="ContentDate/Start asc"))["value"]
    desc = ok_json(products(sandbox, **base, orderby="ContentDate/Start desc"))["value"]
    assert [p["ContentDate"]["Start"] for p in desc] == sorted((p["ContentDate"]["Start"] for p in asc), reverse=True)
    skipped = ok_json(products(sandbox, **{**base, "top": 2}, skip=1, orderby="ContentDate/Start asc"))
    assert ids(skipped) == [p["Id"] for p in asc[1:3]]
    beyond = ok_json(products(sandbox, **base, skip=total))
    assert beyond["value"] == [] and "@odata.nextLink" not in beyond
    assert products(sandbox, filter=CLMS, orderby="CloudCover desc").status_code == 400
    # two keys: the nc and cog products of one date tie on the first, the second orders them
    both = {"filter": series_filter(ident, None), "top": 4}
    for second, suffixes in (("Name desc", ["_nc", "_cog"]), ("Name asc", ["_cog", "_nc"])):
        body = ok_json(products(sandbox, **both, orderby=f"ContentDate/Start asc,{second}"))["value"]
        assert [next(x for x in ("_nc", "_cog") if p["Name"].endswith(x)) for p in body[:2]] == suffixes
        assert body[0]["ContentDate"]["Start"] == body[1]["ContentDate"]["Start"] < body[2]["ContentDate"]["Start"]


@pytest.mark.parametrize(
    "params, target",
    [({"top": 1001}, "$top"), ({"top": -1}, "$top"), ({"top": "ten"}, "$top"), ({"skip": 10001}, "$skip"),
     ({"count": "maybe"}, "$count"), ({"expand": "Assets"}, "$expand"), ({"select": "Name"}, "$select")],
)
def test_paging_limits(sandbox, params, target):
    r = products(sandbox, filter=CLMS, **params)
    assert r.status_code == 400 and r.json()["error"]["target"] == target


def test_top_defaults_to_20_and_the_limits_are_accepted(sandbox):
    total = ok_json(products(sandbox, filter=CLMS, top=0, count=True))["@odata.count"]
    assert total > 10_020  # the store is large: paging limits matter
    page = ok_json(products(sandbox, filter=CLMS))
    assert len(page["value"]) == 20 and "$skip=20" in page["@odata.nextLink"].replace("%24", "$")
    ident, n = series(sandbox)
    assert len(ok_json(products(sandbox, filter=series_filter(ident), top=1000))["value"]) == n
    deep = ok_json(products(sandbox, filter=CLMS, top=1, skip=10000))
    assert len(deep["value"]) == 1 and "@odata.nextLink" not in deep  # no link beyond $skip=10000


# --------------------------------------------------------------------------- download


def test_download_redirects_to_a_presigned_url_on_another_host(sandbox):
    p = first(sandbox, "nc")
    token = access_token(sandbox)
    location = download_location(sandbox, p["Id"], token)
    base, loc = urlsplit(sandbox.urls["cdse_download"]), urlsplit(location)
    assert (loc.scheme, loc.port) == (base.scheme, base.port) and loc.hostname != base.hostname
    assert {loc.hostname, base.hostname} == {"127.0.0.1", "localhost"}
    assert loc.path.startswith("/s3" + p["S3Path"] + "/")
    assert "X-Amz-Signature=" in loc.query and "X-Amz-Expires=" in loc.query
    # requests drops the Authorization header on this redirect (another host): the URL needs none
    assert requests.Session().should_strip_auth(f"{sandbox.urls['cdse_download']}/Products(x)/$value", location)
    # following it by hand, without any header (the URL is the credential)
    body = requests.get(location, timeout=TIMEOUT)
    assert body.status_code == 200 and len(body.content) == p["ContentLength"]
    assert int(body.headers["Content-Length"]) == p["ContentLength"]
    assert hashlib.md5(body.content).hexdigest() == p["Checksum"][0]["Value"]
    # plain following, as requests does (without the header after the redirect)
    followed = requests.get(f"{sandbox.urls['cdse_download']}/Products({p['Id']})/$value",
                            headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
    assert followed.status_code == 200 and followed.content == body.content
    assert [h.status_code for h in followed.history] == [307]
    # $value asked of the catalogue moves to the download service first
    via_catalogue = requests.get(f"{sandbox.urls['cdse_odata']}/Products({p['Id']})/$value",
                                 headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
    assert [h.status_code for h in via_catalogue.history] == [301, 307]
    assert via_catalogue.content == body.content
    assert sandbox.ctx.state["cdse"].bearer_on_transfer == 0  # the token never reached the transfer host
    requests.get(location, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
    assert sandbox.ctx.state["cdse"].bearer_on_transfer == 1  # counted when a client sends it anyway


def test_download_needs_a_valid_token_and_a_known_id(sandbox):
    p = first(sandbox, "cog")
    url = f"{sandbox.urls['cdse_download']}/Products({p['Id']})/$value"
    anonymous = requests.get(url, allow_redirects=False, timeout=TIMEOUT)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    forged = requests.get(url, headers={"Authorization": "Bearer abc.def.ghi"}, allow_redirects=False,
                          timeout=TIMEOUT)
    assert forged.status_code == 401
    unknown = requests.get(f"{sandbox.urls['cdse_download']}/Products({uuid.uuid4()})/$value",
                           headers={"Authorization": f"Bearer {access_token(sandbox)}"}, timeout=TIMEOUT)
    assert unknown.status_code == 404


def test_nodes_listing_and_one_file_download(sandbox):
    p = first(sandbox, "cog")
    token = access_token(sandbox)
    root = ok_json(requests.get(f"{sandbox.urls['cdse_download']}/Products({p['Id']})/Nodes", timeout=TIMEOUT))
    [folder] = root["result"]
    assert folder["Name"] == p["Name"]
    files = ok_json(requests.get(folder["Nodes"]["uri"], timeout=TIMEOUT))["result"]
    [entry] = files
    assert entry["ContentLength"] == p["ContentLength"] and entry["ChildrenNumber"] == 0
    url = f"{sandbox.urls['cdse_download']}/Products({p['Id']})/Nodes({p['Name']})/Nodes({entry['Name']})/$value"
    r = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
    assert r.status_code == 200 and hashlib.md5(r.content).hexdigest() == p["Checksum"][0]["Value"]
    assert 'filename="' + entry["Name"] + '"' in r.headers["Content-Disposition"]
    wrong = url.replace(f"Nodes({entry['Name']})", "Nodes(other.tif)")
    assert requests.get(wrong, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT).status_code == 404


def test_range_requests_and_cog_window_read_with_rasterio(sandbox, monkeypatch):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.windows import Window

    p = first(sandbox, "cog")
    location = download_location(sandbox, p["Id"], access_token(sandbox))
    whole = requests.get(location, timeout=TIMEOUT).content
    part = requests.get(location, headers={"Range": "bytes=100-299"}, timeout=TIMEOUT)
    assert part.status_code == 206 and part.content == whole[100:300]
    assert part.headers["Content-Range"] == f"bytes 100-299/{len(whole)}"

    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    monkeypatch.setenv("CPL_VSIL_CURL_USE_HEAD", "NO")
    sandbox.log.clear()
    with rasterio.open(f"/vsicurl/{location}") as remote:
        window = Window(remote.width // 4, remote.height // 4, max(1, remote.width // 3), max(1, remote.height // 3))
        got = remote.read(1, window=window)
        profile = (remote.width, remote.height, remote.crs)
    with rasterio.MemoryFile(whole) as mem, mem.open() as local:
        assert (local.width, local.height, local.crs) == profile
        assert (local.read(1, window=window) == got).all()
    s3_calls = [e for e in sandbox.log.entries(service="cdse", endpoint="download") if e.path.startswith("/s3/")]
    assert s3_calls and any(e.range for e in s3_calls)


def test_presigned_url_expires_and_is_tamper_proof(sandbox):
    p = first(sandbox, "cog")
    location = download_location(sandbox, p["Id"], access_token(sandbox))
    tampered = re.sub(r"X-Amz-Signature=[0-9a-f]{4}", "X-Amz-Signature=0000", location)
    r = requests.get(tampered, timeout=TIMEOUT)
    assert r.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in r.text
    anonymous = requests.get(location.split("?")[0], timeout=TIMEOUT)
    assert anonymous.status_code == 403 and "<Code>AccessDenied</Code>" in anonymous.text
    assert requests.get(location, timeout=TIMEOUT).status_code == 200
    sandbox.clock.advance(sandbox.ctx.state["cdse"].presign_lifetime + 2)
    late = requests.get(location, timeout=TIMEOUT)
    assert late.status_code == 403 and "Request has expired" in late.text


def test_expired_link_fault_on_the_s3_url(sandbox):
    p = first(sandbox, "cog")
    location = download_location(sandbox, p["Id"], access_token(sandbox))
    sandbox.faults.add("expired_link", service="cdse", endpoint="download", status=403)
    assert requests.get(location, timeout=TIMEOUT).status_code == 403
    assert requests.get(location, timeout=TIMEOUT).status_code == 200


def test_body_fault_cuts_the_s3_transfer(sandbox):
    p = first(sandbox, "cog")
    location = download_location(sandbox, p["Id"], access_token(sandbox))
    sandbox.faults.add("truncate", service="cdse", endpoint="download", after_bytes=100)
    with pytest.raises(requests.exceptions.RequestException):
        r = requests.get(location, timeout=TIMEOUT)
        r.raise_for_status()
        assert len(r.content) == p["ContentLength"]  # never reached: the body is short
    assert len(requests.get(location, timeout=TIMEOUT).content) == p["ContentLength"]


def test_four_concurrent_connections_per_user_then_429(sandbox):
    p = first(sandbox, "cog")
    token = access_token(sandbox)
    location = download_location(sandbox, p["Id"], token)
    limit = sandbox.ctx.state["cdse"].max_concurrent
    assert limit == 4
    # slow transfers hold their connection while we open more
    sandbox.faults.add("trickle", service="cdse", endpoint="download", times=limit, rate=200)
    sessions = [requests.Session() for _ in range(limit + 1)]
    held = [s.get(location, stream=True, timeout=TIMEOUT) for s in sessions[:limit]]
    try:
        assert [r.status_code for r in held] == [200] * limit
        refused = sessions[limit].get(location, timeout=TIMEOUT)
        assert refused.status_code == 429 and "4 concurrent" in refused.json()["detail"]
    finally:
        for r, s in zip(held, sessions):
            r.close()
            s.close()
    deadline = time.monotonic() + 5
    while True:  # the slots come back once the server notices the closed connections
        r = requests.get(location, timeout=TIMEOUT)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.status_code == 200 and len(r.content) == p["ContentLength"]
    sessions[limit].close()


def test_download_slots_are_released_after_normal_transfers(sandbox):
    p = first(sandbox, "cog")
    location = download_location(sandbox, p["Id"], access_token(sandbox))
    sandbox.ctx.state["cdse"].max_concurrent = 1
    statuses = [requests.get(location, timeout=TIMEOUT).status_code for _ in range(3)]
    statuses.append(requests.get(location, headers={"Range": "bytes=0-9"}, timeout=TIMEOUT).status_code)
    statuses.append(requests.get(location, headers={"Range": "bytes=99999999-"}, timeout=TIMEOUT).status_code)
    statuses.append(requests.head(location, timeout=TIMEOUT).status_code)
    statuses.append(requests.get(location, timeout=TIMEOUT).status_code)
    assert statuses == [200, 200, 200, 206, 416, 200, 200]
    deadline = time.monotonic() + 2
    while sandbox.ctx.state["cdse"].active.get(creds(sandbox)[0], 0) and time.monotonic() < deadline:
        time.sleep(0.01)  # the server hands the last slot back just after the last byte
    assert sandbox.ctx.state["cdse"].active.get(creds(sandbox)[0], 0) == 0


def test_concurrency_limit_is_configurable(sandbox):
    p = first(sandbox, "cog")
    location = download_location(sandbox, p["Id"], access_token(sandbox))
    sandbox.ctx.state["cdse"].max_concurrent = 1
    sandbox.faults.add("trickle", service="cdse", endpoint="download", times=1, rate=200)
    with requests.Session() as s1:
        held = s1.get(location, stream=True, timeout=TIMEOUT)
        try:
            assert requests.get(location, timeout=TIMEOUT).status_code == 429
        finally:
            held.close()


def test_newest_first_listing_is_the_reverse_of_oldest_first(sandbox):
    """White box: the backward walk over a tiled time series (the store lists forward only)."""
    from intake_clms.sandbox.cdse_products import Query

    st = sandbox.ctx.state["cdse"]
    store = sandbox.ctx.store
    spec = next(s for s in store.datasets() if s.dataset_identifier and s.tiled and s.frequency == "daily"
                and "cog" in s.formats)
    tile = store.items(spec.key, format="cog", limit=1)[0]
    w, s, e, n = tile.bbox
    flt = (f"{series_filter(spec.dataset_identifier)} and ContentDate/Start ge 2020-02-25T00:00:00Z and "
           f"ContentDate/Start lt 2020-03-03T00:00:00Z and OData.CSC.Intersects(area=geography'SRID=4326;"
           f"POLYGON(({w} {s},{e} {s},{e} {n},{w} {n},{w} {s}))')")
    oldest = Query.plan(parse_filter(flt), [("ContentDate/Start", False)]).page(st, 0, 1000)[0]
    newest = Query.plan(parse_filter(flt), [("ContentDate/Start", True)]).page(st, 0, 1000)[0]
    assert len(oldest) > 7 and [p.id for p in newest] == [p.id for p in reversed(oldest)]
    assert {p.start.day for p in oldest} == {25, 26, 27, 28, 29, 1, 2}
    skipped = Query.plan(parse_filter(flt), [("ContentDate/Start", True)]).page(st, 3, 4)[0]
    assert [p.id for p in skipped] == [p.id for p in newest[3:7]]
