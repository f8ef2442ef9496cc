"""The sandbox's WEkEO HDA broker replays the documented protocol, its limits and its failures.

Each test talks HTTP to a real sandbox server (the ``sandbox`` fixture) with
plain ``requests``; the last ones drive the official ``hda`` client against it.
"""

from __future__ import annotations

import concurrent.futures
import io
import threading
import time
import warnings
import zipfile
from typing import Any

import pytest
import requests

from intake_clms.sandbox import Sandbox
from intake_clms.sandbox.hda import NEW_DATASET_ID, _catalogue

USER, PASSWORD = "sandbox-user", "sandbox-password"


# --------------------------------------------------------------------------- helpers


def token(sb: Sandbox, path: str = "identity", **extra: Any) -> requests.Response:
    url = sb.urls["identity"] if path == "identity" else sb.urls["hda_root"] + "gettoken"
    creds = sb.credentials["hda"]
    return requests.post(url, json={"username": creds["username"], "password": creds["password"], **extra}, timeout=10)


def login(sb: Sandbox) -> requests.Session:
    r = token(sb)
    assert r.status_code == 200, r.text
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    s.refresh_token = r.json()["refresh_token"]  # type: ignore[attr-defined]
    return s


def api(sb: Sandbox, path: str) -> str:
    return f"{sb.urls['hda']}/{path}"


def accept_terms(sb: Sandbox, s: requests.Session, dataset_id: str) -> list[str]:
    terms = s.get(api(sb, f"datasets/{dataset_id}"), timeout=10).json()["terms"]
    for term in terms:
        r = s.put(api(sb, f"termsaccepted/{term}"), json={"accepted": True}, timeout=10)
        assert r.status_code == 200, r.text
    return terms


PREFERRED_FREQUENCIES = ("monthly", "yearly", "3yearly", "6yearly", "10daily")


def pick(sb: Sandbox, new: bool, patterns: tuple[str, ...] = ("global_nc",)) -> tuple[str, Any]:
    """A dataset ID HDA answers to (the new one or an old one) backed by a store dataset of ``patterns``
    with at least three products, preferring series short enough to page through quickly."""
    candidates = []
    for dataset_id, specs in sorted(_catalogue(sb.ctx).items()):
        if (dataset_id == NEW_DATASET_ID) != new:
            continue
        for spec in specs:
            if spec.pattern in patterns and (new or len(specs) == 1):
                rank = PREFERRED_FREQUENCIES.index(spec.frequency) if spec.frequency in PREFERRED_FREQUENCIES else 99
                candidates.append((rank, dataset_id, spec))
    for _, dataset_id, spec in sorted(candidates, key=lambda c: c[0]):
        if len(sb.ctx.store.items(spec.key, limit=3)) == 3 and sb.ctx.store.count(spec.key) <= 1000:
            return dataset_id, spec
    pytest.skip(f"the product store has no {'new' if new else 'old'}-ID dataset of pattern {patterns}")


def new_query(spec: Any, **extra: Any) -> dict[str, Any]:
    return {"dataset_id": NEW_DATASET_ID, "datasetIdentifier": spec.dataset_identifier or spec.key, **extra}


def search_all(sb: Sandbox, s: requests.Session, query: dict[str, Any], per_page: int) -> tuple[list[dict], list[dict]]:
    """Every feature, following the paging the answer asks for; also every page's properties."""
    features: list[dict] = []
    pages: list[dict] = []
    start = 0
    while True:
        r = s.post(api(sb, "dataaccess/search"), json={**query, "startIndex": start, "itemsPerPage": per_page}, timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        features += body["features"]
        pages.append(body["properties"])
        props = body["properties"]
        if "totalResults" in props:
            if props["startIndex"] + per_page >= props["totalResults"]:
                return features, pages
            start = props["startIndex"] + per_page
        elif props.get("nextIndex"):
            start = props["nextIndex"]
        else:
            return features, pages


def first_feature(sb: Sandbox, s: requests.Session, query: dict[str, Any]) -> dict:
    r = s.post(api(sb, "dataaccess/search"), json={**query, "itemsPerPage": 5, "startIndex": 0}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["features"], "no product to order"
    return r.json()["features"][0]


def place_order(sb: Sandbox, s: requests.Session, dataset_id: str, feature: dict) -> requests.Response:
    body = {"dataset_id": dataset_id, "product_id": feature["id"], "location": feature["properties"]["location"]}
    return s.post(api(sb, "dataaccess/download"), json=body, timeout=10)


def ready_order(sb: Sandbox, s: requests.Session, new: bool = True, patterns: tuple[str, ...] = ("global_nc",)) -> str:
    """A download_id whose product is ready (the clock jumped past the queue)."""
    dataset_id, spec = pick(sb, new, patterns)
    accept_terms(sb, s, dataset_id)
    query = new_query(spec) if new else {"dataset_id": dataset_id}
    r = place_order(sb, s, dataset_id, first_feature(sb, s, query))
    assert r.status_code == 200, r.text
    sb.clock.advance(sb.ctx.queue_delay + 1)
    return r.json()["download_id"]


def fetch(s: requests.Session, url: str, **headers: str) -> tuple[bytes, BaseException | None]:
    """The bytes received before the body ended or broke, and what broke it."""
    got = bytearray()
    try:
        with s.get(url, headers=headers, stream=True, timeout=10) as r:
            for chunk in r.iter_content(64 * 1024):
                got += chunk
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError) as exc:
        return bytes(got), exc
    return bytes(got), None


# --------------------------------------------------------------------------- tokens


@pytest.mark.parametrize("path", ["identity", "broker"])
def test_gettoken_answers_tokens_at_both_paths(sandbox: Sandbox, path: str) -> None:
    r = token(sandbox, path)
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"access_token", "refresh_token", "expires_in"}
    # lifetimes are kept in sandbox seconds but told in real ones: clients count them on their own clock
    assert body["expires_in"] == int(sandbox.ctx.token_lifetime / sandbox.clock.speed) == 60
    assert body["refresh_expires_in"] == 2 * body["expires_in"]
    endpoint = sandbox.log.entries("hda", "token")[-1]
    assert (endpoint.path, endpoint.status) == (("/identity/gettoken" if path == "identity" else "/hda-broker/gettoken"), 200)


def test_gettoken_refuses_bad_password_and_federated_accounts_need_their_origin(sandbox: Sandbox) -> None:
    bad = requests.post(sandbox.urls["identity"], json={"username": USER, "password": "wrong"}, timeout=10)
    assert bad.status_code == 401
    assert bad.json()["error"] == "invalid_grant"
    # the official client tries no origin, then "eumetsat", then "cmems"
    fed = {"username": "sandbox-eumetsat", "password": PASSWORD}
    assert requests.post(sandbox.urls["identity"], json=fed, timeout=10).status_code == 401
    assert requests.post(sandbox.urls["identity"], json={**fed, "origin": "eumetsat"}, timeout=10).status_code == 200
    # a plain account answers the first try, and not with someone else's origin
    assert token(sandbox).status_code == 200
    assert token(sandbox, origin="cmems").status_code == 401


def test_refreshtoken_renews_and_refuses_bad_tokens(sandbox: Sandbox) -> None:
    s = login(sandbox)
    url = sandbox.urls["hda_root"] + "refreshtoken"
    r = requests.post(url, data={"refresh_token": s.refresh_token}, timeout=10)  # type: ignore[attr-defined]
    assert r.status_code == 200
    fresh = r.json()["access_token"]
    assert requests.get(api(sandbox, "datasets"), headers={"Authorization": f"Bearer {fresh}"}, timeout=10).status_code == 200
    assert requests.post(url, data={"refresh_token": "nope"}, timeout=10).status_code in (400, 403)
    assert requests.post(url, data={}, timeout=10).status_code == 400


def test_bearer_token_required_and_expires_on_the_sandbox_clock(sandbox: Sandbox) -> None:
    url = api(sandbox, "datasets")
    missing = requests.get(url, timeout=10)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert requests.get(url, headers={"Authorization": "Bearer forged"}, timeout=10).status_code == 401
    s = login(sandbox)
    assert s.get(url, timeout=10).status_code == 200
    sandbox.clock.advance(sandbox.ctx.token_lifetime + 1)
    expired = s.get(url, timeout=10)
    assert expired.status_code == 401
    assert expired.json()["detail"] == "Token expired"


# --------------------------------------------------------------------------- catalogue and terms


def test_datasets_list_dataset_terms_and_queryables(sandbox: Sandbox) -> None:
    s = login(sandbox)
    body = s.get(api(sandbox, "datasets"), params={"startIndex": 0, "itemsPerPage": 100}, timeout=10).json()
    ids = [f["dataset_id"] for f in body["features"]]
    assert NEW_DATASET_ID in ids
    assert body["properties"]["totalResults"] == len(ids)
    assert any(i != NEW_DATASET_ID for i in ids), "old dataset IDs are listed too"
    one = s.get(api(sandbox, f"datasets/{NEW_DATASET_ID}"), timeout=10).json()
    assert one["dataset_id"] == NEW_DATASET_ID and one["terms"]
    q = s.get(api(sandbox, f"dataaccess/queryable/{NEW_DATASET_ID}"), timeout=10).json()
    assert "datasetIdentifier" in q["properties"] and q["properties"]["datasetIdentifier"]["enum"]
    assert s.get(api(sandbox, "datasets/EO:NO:DAT:SUCH"), timeout=10).status_code == 404


def test_search_and_order_need_accepted_terms(sandbox: Sandbox) -> None:
    s = login(sandbox)
    _, spec = pick(sandbox, new=True)
    r = s.post(api(sandbox, "dataaccess/search"), json=new_query(spec), timeout=10)
    assert r.status_code == 403
    assert "Terms" in r.json()["detail"]
    terms = accept_terms(sandbox, s, NEW_DATASET_ID)
    listed = s.get(api(sandbox, "termsaccepted"), timeout=10).json()["features"]
    assert {t["term_id"] for t in listed if t["accepted"]} >= set(terms)
    assert s.post(api(sandbox, "dataaccess/search"), json=new_query(spec), timeout=10).status_code == 200
    assert s.put(api(sandbox, "termsaccepted/No_Such_Term"), json={"accepted": True}, timeout=10).status_code == 404


# --------------------------------------------------------------------------- search


def test_new_id_search_pages_by_next_index_without_total(sandbox: Sandbox) -> None:
    s = login(sandbox)
    _, spec = pick(sandbox, new=True)
    accept_terms(sandbox, s, NEW_DATASET_ID)
    everything, _ = search_all(sandbox, s, new_query(spec), per_page=1000)
    assert len(everything) >= 3
    paged, pages = search_all(sandbox, s, new_query(spec), per_page=max(2, len(everything) // 3))
    assert [f["id"] for f in paged] == [f["id"] for f in everything]
    assert all("totalResults" not in p for p in pages)
    assert all("nextIndex" in p for p in pages[:-1]) and "nextIndex" not in pages[-1]
    f = everything[0]
    assert set(f["properties"]) >= {"location", "size", "startdate", "enddate"}
    assert f["properties"]["startdate"].endswith("Z")
    sizes = [x["properties"]["size"] for x in everything]
    assert all(v == "ND" or isinstance(v, int) for v in sizes)


def test_search_filters_by_dates_and_bbox(sandbox: Sandbox) -> None:
    s = login(sandbox)
    _, spec = pick(sandbox, new=True)
    accept_terms(sandbox, s, NEW_DATASET_ID)
    everything, _ = search_all(sandbox, s, new_query(spec), per_page=1000)
    assert len(everything) >= 3
    middle = everything[len(everything) // 2]["properties"]
    window = new_query(spec, startdate=middle["startdate"], enddate=middle["enddate"])
    some, _ = search_all(sandbox, s, window, per_page=1000)
    assert 1 <= len(some) < len(everything)
    assert all(x["properties"]["enddate"] >= middle["startdate"] for x in some)
    # a box far outside the dataset's footprint finds nothing; missing identifiers are an error
    west, south, east, north = spec.bbox
    outside = [east + 1, south, east + 2, north] if east < 178 else [west - 2, south, west - 1, north]
    none, _ = search_all(sandbox, s, new_query(spec, bbox=outside), per_page=1000)
    assert none == []
    r = s.post(api(sandbox, "dataaccess/search"), json={"dataset_id": NEW_DATASET_ID}, timeout=10)
    assert r.status_code == 400
    bad_date = s.post(api(sandbox, "dataaccess/search"), json=new_query(spec, startdate="yesterday"), timeout=10)
    assert bad_date.status_code == 400


def test_old_id_search_pages_with_total_results_and_tolerates_its_filters(sandbox: Sandbox) -> None:
    s = login(sandbox)
    dataset_id, spec = pick(sandbox, new=False, patterns=("global_nc", "europe_tiles", "europe_tiles_nogrid", "cog", "vector"))
    accept_terms(sandbox, s, dataset_id)
    query = {"dataset_id": dataset_id, "productType": spec.product_type or "anything", "resolution": "300"}
    everything, pages = search_all(sandbox, s, query, per_page=1000)
    assert everything
    assert pages[0]["totalResults"] == len(everything)
    assert set(pages[0]) >= {"totalResults", "startIndex", "itemsPerPage"}
    per_page = max(1, len(everything) // 3)
    paged, pages = search_all(sandbox, s, query, per_page=per_page)
    assert [p["startIndex"] for p in pages] == list(range(0, len(everything), per_page))
    assert [f["id"] for f in paged] == [f["id"] for f in everything]


# --------------------------------------------------------------------------- orders and downloads


def test_order_queues_then_serves_the_product_zip(sandbox: Sandbox) -> None:
    s = login(sandbox)
    _, spec = pick(sandbox, new=True)
    accept_terms(sandbox, s, NEW_DATASET_ID)
    feature = first_feature(sandbox, s, new_query(spec))
    r = place_order(sandbox, s, NEW_DATASET_ID, feature)
    assert r.status_code == 200
    assert set(r.json()) >= {"download_id"}
    assert r.headers["X-Quota-Limit"] == "100" and r.headers["X-Quota-Remaining"] == "99"
    url = api(sandbox, f"dataaccess/download/{r.json()['download_id']}")
    assert s.head(url, timeout=10).status_code == 202
    assert s.get(url, timeout=10).status_code == 202
    status = s.get(api(sandbox, "dataaccess/downloads"), params={"download_id": r.json()["download_id"]}, timeout=10)
    assert status.json()["features"][0]["status"] in ("Queued", "Running")
    sandbox.clock.advance(sandbox.ctx.queue_delay + 1)
    head = s.head(url, timeout=10)
    assert head.status_code == 200
    size = int(head.headers["Content-Length"])
    assert 'filename="' in head.headers["Content-Disposition"] and head.headers["Content-Disposition"].endswith('.zip"')
    got = s.get(url, timeout=10)
    assert got.status_code == 200 and len(got.content) == size
    with zipfile.ZipFile(io.BytesIO(got.content)) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
    folder = head.headers["Content-Disposition"].split('filename="')[1][: -len('.zip"')]
    assert names and all(n.startswith(folder + "/") for n in names), names
    assert sandbox.log.entries("hda", "download", "GET")[-1].bytes_sent == size
    done = s.get(api(sandbox, "dataaccess/downloads"), params={"download_id": r.json()["download_id"]}, timeout=10)
    assert done.json()["features"][0]["status"] == "Done"
    # the catalogue size is a hint (or "ND"); the header is the truth
    assert feature["properties"]["size"] == "ND" or feature["properties"]["size"] != size


def test_old_id_netcdf_is_served_raw(sandbox: Sandbox) -> None:
    s = login(sandbox)
    url = api(sandbox, f"dataaccess/download/{ready_order(sandbox, s, new=False)}")
    r = s.get(url, timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Disposition"].endswith('.nc"')
    assert r.content[:4] in (b"CDF\x01", b"CDF\x02", b"\x89HDF")


def test_old_id_tiles_are_served_as_a_zip_of_tiles(sandbox: Sandbox) -> None:
    s = login(sandbox)
    url = api(sandbox, f"dataaccess/download/{ready_order(sandbox, s, new=False, patterns=('europe_tiles', 'europe_tiles_nogrid'))}")
    r = s.get(url, timeout=10)
    assert r.status_code == 200 and r.headers["Content-Disposition"].endswith('.zip"')
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.testzip() is None
        assert any(n.lower().endswith((".tif", ".tiff")) for n in zf.namelist())


def test_order_rejects_a_location_that_does_not_match(sandbox: Sandbox) -> None:
    s = login(sandbox)
    _, spec = pick(sandbox, new=True)
    accept_terms(sandbox, s, NEW_DATASET_ID)
    feature = first_feature(sandbox, s, new_query(spec))
    feature["properties"]["location"] = "tampered"
    assert place_order(sandbox, s, NEW_DATASET_ID, feature).status_code == 400
    assert s.head(api(sandbox, "dataaccess/download/unknown"), timeout=10).status_code == 404


def test_hourly_quota_counts_distinct_orders_and_answers_429_with_quota_headers(sandbox_factory: Any) -> None:
    sb = sandbox_factory(hda_quota=2)
    s = login(sb)
    _, spec = pick(sb, new=True)
    accept_terms(sb, s, NEW_DATASET_ID)
    features, _ = search_all(sb, s, new_query(spec), per_page=1000)
    assert len(features) >= 3
    t0 = time.time()
    assert place_order(sb, s, NEW_DATASET_ID, features[0]).status_code == 200
    assert place_order(sb, s, NEW_DATASET_ID, features[1]).status_code == 200
    again = place_order(sb, s, NEW_DATASET_ID, features[0])
    assert again.status_code == 200, "re-ordering the same product does not count again"
    over = place_order(sb, s, NEW_DATASET_ID, features[2])
    assert over.status_code == 429
    assert over.headers["X-Quota-Limit"] == "2" and over.headers["X-Quota-Remaining"] == "0"
    reset_ms = int(over.headers["X-Quota-Reset"])
    # the first slot frees a sandbox hour after its use; the header says when on the wall clock (epoch ms)
    assert abs(reset_ms / 1000 - (t0 + 3600 / sb.clock.speed)) < 2, "X-Quota-Reset is wall-clock epoch ms"
    sb.clock.advance(3601)
    s = login(sb)  # the old token died with the hour
    assert place_order(sb, s, NEW_DATASET_ID, features[2]).status_code == 200


def test_quota_fault_forces_429(sandbox: Sandbox) -> None:
    s = login(sandbox)
    _, spec = pick(sandbox, new=True)
    accept_terms(sandbox, s, NEW_DATASET_ID)
    feature = first_feature(sandbox, s, new_query(spec))
    sandbox.faults.add("quota", "hda", "order")
    t0 = time.time()
    r = place_order(sandbox, s, NEW_DATASET_ID, feature)
    assert r.status_code == 429 and r.headers["X-Quota-Remaining"] == "0"
    assert abs(int(r.headers["X-Quota-Reset"]) / 1000 - (t0 + 3600 / sandbox.clock.speed)) < 2, "a sandbox hour, wall clock"
    assert place_order(sandbox, s, NEW_DATASET_ID, feature).status_code == 200


def test_quota_fault_reset_after_sets_when_the_quota_frees(sandbox: Sandbox) -> None:
    s = login(sandbox)
    _, spec = pick(sandbox, new=True)
    accept_terms(sandbox, s, NEW_DATASET_ID)
    feature = first_feature(sandbox, s, new_query(spec))
    sandbox.faults.add("quota", "hda", "order", reset_after=24 * 3600)
    t0 = time.time()
    r = place_order(sandbox, s, NEW_DATASET_ID, feature)
    assert r.status_code == 429
    assert abs(int(r.headers["X-Quota-Reset"]) / 1000 - (t0 + 24 * 3600 / sandbox.clock.speed)) < 2


@pytest.mark.parametrize("kind, status", [("terminal_failure", 400), ("server_cancel", 410)])
def test_failed_orders_answer_an_error_with_a_message(sandbox: Sandbox, kind: str, status: int) -> None:
    s = login(sandbox)
    _, spec = pick(sandbox, new=True)
    accept_terms(sandbox, s, NEW_DATASET_ID)
    sandbox.faults.add(kind, "hda", "order")
    r = place_order(sandbox, s, NEW_DATASET_ID, first_feature(sandbox, s, new_query(spec)))
    assert r.status_code == 200
    download_id = r.json()["download_id"]
    url = api(sandbox, f"dataaccess/download/{download_id}")
    assert s.head(url, timeout=10).status_code == 202
    sandbox.clock.advance(sandbox.ctx.queue_delay + 1)
    assert s.head(url, timeout=10).status_code == status
    got = s.get(url, timeout=10)
    assert got.status_code == status and got.json()["detail"]
    feature = s.get(api(sandbox, "dataaccess/downloads"), params={"download_id": download_id}, timeout=10).json()["features"][0]
    assert feature["status"] == "Error" and feature["message"]


def test_token_expiry_mid_queue_is_survived_by_refreshing(sandbox: Sandbox) -> None:
    s = login(sandbox)
    _, spec = pick(sandbox, new=True)
    accept_terms(sandbox, s, NEW_DATASET_ID)
    r = place_order(sandbox, s, NEW_DATASET_ID, first_feature(sandbox, s, new_query(spec)))
    url = api(sandbox, f"dataaccess/download/{r.json()['download_id']}")
    assert s.head(url, timeout=10).status_code == 202
    sandbox.faults.add("token_expiry", "hda", "download_head")
    assert s.head(url, timeout=10).status_code == 401
    assert s.head(url, timeout=10).status_code == 401, "the old token stays expired"
    refreshed = requests.post(sandbox.urls["hda_root"] + "refreshtoken", data={"refresh_token": s.refresh_token}, timeout=10)  # type: ignore[attr-defined]
    assert refreshed.status_code == 200
    s.headers["Authorization"] = f"Bearer {refreshed.json()['access_token']}"
    sandbox.clock.advance(sandbox.ctx.queue_delay + 1)
    assert s.head(url, timeout=10).status_code == 200, "the order outlives the token"


# --------------------------------------------------------------------------- transfer faults and resume


def test_5xx_burst_then_success_is_logged(sandbox: Sandbox) -> None:
    s = login(sandbox)
    _, spec = pick(sandbox, new=True)
    accept_terms(sandbox, s, NEW_DATASET_ID)
    sandbox.faults.add("status", "hda", "search", times=3, status=500, message="Task Error")
    statuses = [s.post(api(sandbox, "dataaccess/search"), json=new_query(spec), timeout=10).status_code for _ in range(4)]
    assert statuses == [500, 500, 500, 200]
    assert [e.status for e in sandbox.log.entries("hda", "search")] == [500, 500, 500, 200]


def test_injected_429_carries_retry_after(sandbox: Sandbox) -> None:
    s = login(sandbox)
    sandbox.faults.add("status", "hda", "datasets", status=429, retry_after=7)
    r = s.get(api(sandbox, "datasets"), timeout=10)
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    assert s.get(api(sandbox, "datasets"), timeout=10).status_code == 200


def test_range_request_resumes_after_a_reset_mid_body(sandbox: Sandbox) -> None:
    s = login(sandbox)
    url = api(sandbox, f"dataaccess/download/{ready_order(sandbox, s)}")
    whole = s.get(url, timeout=10).content
    assert len(whole) > 2000
    sandbox.faults.add("reset", "hda", "download", after_bytes=1000)
    part, error = fetch(s, url)
    assert error is not None and len(part) <= 1000
    assert sandbox.log.entries("hda", "download")[-1].bytes_sent == 1000
    rest = s.get(url, headers={"Range": f"bytes={len(part)}-"}, timeout=10)
    assert rest.status_code == 206
    assert rest.headers["Content-Range"] == f"bytes {len(part)}-{len(whole) - 1}/{len(whole)}"
    assert part + rest.content == whole
    assert sandbox.log.entries("hda", "download")[-1].range == f"bytes={len(part)}-"


def test_truncated_body_and_wrong_content_length(sandbox: Sandbox) -> None:
    s = login(sandbox)
    url = api(sandbox, f"dataaccess/download/{ready_order(sandbox, s)}")
    whole = s.get(url, timeout=10).content
    sandbox.faults.add("truncate", "hda", "download", after_bytes=500)
    part, error = fetch(s, url)
    assert error is not None and part == whole[: len(part)] and len(part) <= 500
    sandbox.faults.add("wrong_length", "hda", "download", extra=100)
    with s.get(url, stream=True, timeout=10) as r:
        assert int(r.headers["Content-Length"]) == len(whole) + 100
    got, error = fetch(s, url)
    assert got == whole and error is None, "the fault was consumed by the first request"


def test_trickle_slows_the_body(sandbox: Sandbox) -> None:
    s = login(sandbox)
    url = api(sandbox, f"dataaccess/download/{ready_order(sandbox, s)}")
    size = int(s.head(url, timeout=10).headers["Content-Length"])
    rate = max(1, int(size / 0.3))  # about 0.3 s for the whole body
    sandbox.faults.add("trickle", "hda", "download", rate=rate)
    t0 = time.monotonic()
    got, error = fetch(s, url)
    elapsed = time.monotonic() - t0
    assert error is None and len(got) == size
    assert elapsed >= 0.2


def test_expired_link_answers_404(sandbox: Sandbox) -> None:
    s = login(sandbox)
    url = api(sandbox, f"dataaccess/download/{ready_order(sandbox, s)}")
    sandbox.faults.add("expired_link", "hda", "download")
    assert s.get(url, timeout=10).status_code == 404
    assert s.get(url, timeout=10).status_code == 200


@pytest.mark.parametrize("endpoint", ["download_head", "download", "downloads"])
def test_order_expired_fault_forgets_the_order_even_while_queued(sandbox: Sandbox, endpoint: str) -> None:
    s = login(sandbox)
    dataset_id, spec = pick(sandbox, new=True)
    accept_terms(sandbox, s, dataset_id)
    r = place_order(sandbox, s, dataset_id, first_feature(sandbox, s, new_query(spec)))
    download_id = r.json()["download_id"]
    url = api(sandbox, f"dataaccess/download/{download_id}")
    assert s.head(url, timeout=10).status_code == 202  # still queued
    sandbox.faults.add("order_expired", "hda", endpoint)
    listing = api(sandbox, "dataaccess/downloads")
    if endpoint == "downloads":
        assert s.get(listing, params={"download_id": download_id}, timeout=10).json()["features"] == []
    else:
        call = s.head if endpoint == "download_head" else s.get
        gone = call(url, timeout=10)
        assert gone.status_code == 404
        if endpoint == "download":
            assert gone.json()["detail"] == "Download not found"
    sandbox.clock.advance(sandbox.ctx.queue_delay + 1)  # even once it would have been ready: gone for good
    assert s.head(url, timeout=10).status_code == 404
    assert s.get(url, timeout=10).status_code == 404
    assert s.get(listing, params={"download_id": download_id}, timeout=10).json()["features"] == []


def test_corrupt_and_hostile_zip_faults_bind_to_the_order(sandbox: Sandbox) -> None:
    s = login(sandbox)
    sandbox.faults.add("corrupt_zip", "hda", "order")
    url = api(sandbox, f"dataaccess/download/{ready_order(sandbox, s)}")
    with zipfile.ZipFile(io.BytesIO(s.get(url, timeout=10).content)) as zf:
        assert zf.testzip() is not None, "a member fails its CRC check"
    assert s.head(url, timeout=10).headers["Content-Length"] == str(len(s.get(url, timeout=10).content))
    sandbox.faults.add("hostile_zip", "hda", "order", variant="slip")
    url = api(sandbox, f"dataaccess/download/{ready_order(sandbox, s)}")
    with zipfile.ZipFile(io.BytesIO(s.get(url, timeout=10).content)) as zf:
        assert any(".." in n.split("/") for n in zf.namelist())


# --------------------------------------------------------------------------- many clients, log counts


def test_concurrent_clients_each_get_their_product(sandbox: Sandbox) -> None:
    _, spec = pick(sandbox, new=True)

    def one_client(i: int) -> tuple[int, int]:
        s = login(sandbox)
        accept_terms(sandbox, s, NEW_DATASET_ID)
        features, _ = search_all(sandbox, s, new_query(spec), per_page=1000)
        feature = features[i % len(features)]
        download_id = place_order(sandbox, s, NEW_DATASET_ID, feature).json()["download_id"]
        url = api(sandbox, f"dataaccess/download/{download_id}")
        deadline = time.monotonic() + 10
        while (status := s.head(url, timeout=10).status_code) == 202 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert status == 200
        body = s.get(url, timeout=10)
        return body.status_code, len(body.content) - int(body.headers["Content-Length"])

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one_client, range(6)))
    assert results == [(200, 0)] * 6
    assert sandbox.log.count("hda", "token") == 6
    assert sandbox.log.count("hda", "order") == 6
    assert sandbox.log.count("hda", "download", "GET") == 6
    assert sandbox.log.count("hda", "download_head", "HEAD") >= 6


# --------------------------------------------------------------------------- the official client


def bounded(fn: Any, timeout: float = 30.0) -> Any:
    """Run ``fn()`` in a daemon thread: the official client retries failures for hours, a test must not."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the official client was still busy after {timeout} s (retrying a failure?)"
    if "error" in result:
        raise result["error"]
    return result.get("value")


def official_client(sb: Sandbox, tmp_path: Any, user: str | None = None) -> Any:
    """The official client as a user configures it: base URL and credentials, nothing else
    (``path`` points at a missing ~/.hdarc so the developer's own file is not read)."""
    hda = pytest.importorskip("hda")
    env = sb.env()
    config = hda.Configuration(
        url=env["HDA_URL"], user=user or env["HDA_USER"], password=env["HDA_PASSWORD"], path=str(tmp_path / "no-hdarc")
    )
    return hda.Client(config=config)


def test_official_hda_client_searches_and_downloads_unchanged(sandbox: Sandbox, tmp_path: Any) -> None:
    _, spec = pick(sandbox, new=True)
    client = official_client(sandbox, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the client warns about the remaining quota on every order
        results = bounded(lambda: client.search(new_query(spec), limit=3))
        assert len(results) >= 1
        bounded(lambda: results[0].download(str(tmp_path / "out")))
    files = list((tmp_path / "out").iterdir())
    assert len(files) == 1 and files[0].suffix == ".zip"
    with zipfile.ZipFile(files[0]) as zf:
        assert zf.testzip() is None
    assert sandbox.log.count("hda", "token") == 1  # the client's first try (no origin) succeeded
    assert sandbox.log.count("hda", "terms_accept") >= 1
    get = sandbox.log.entries("hda", "download", "GET")
    assert len(get) == 1 and get[0].status == 200 and get[0].bytes_sent == files[0].stat().st_size


def test_official_hda_client_pages_old_ids_and_lists_datasets(sandbox: Sandbox, tmp_path: Any) -> None:
    dataset_id, _ = pick(sandbox, new=False, patterns=("global_nc", "europe_tiles", "europe_tiles_nogrid", "cog", "vector"))
    client = official_client(sandbox, tmp_path)
    s = login(sandbox)
    accept_terms(sandbox, s, dataset_id)
    expected, _ = search_all(sandbox, s, {"dataset_id": dataset_id}, per_page=1000)
    results = bounded(lambda: client.search({"dataset_id": dataset_id}))
    assert [r["id"] for r in results.results] == [f["id"] for f in expected]
    assert NEW_DATASET_ID in {d["dataset_id"] for d in bounded(client.datasets)}
    assert "properties" in bounded(lambda: client.metadata(NEW_DATASET_ID))


def test_official_hda_client_logs_in_a_federated_account_by_its_origin_retries(sandbox: Sandbox, tmp_path: Any) -> None:
    client = official_client(sandbox, tmp_path, user="sandbox-eumetsat")
    assert NEW_DATASET_ID in {d["dataset_id"] for d in bounded(client.datasets)}
    assert [e.status for e in sandbox.log.entries("hda", "token")] == [401, 200]


def test_old_ids_answer_only_while_their_source_is_active(sandbox: Sandbox) -> None:
    s = login(sandbox)
    specs = sandbox.ctx.store.datasets()
    migrated = next((d for d in specs if d.migration_status == "migrated" and d.old_ids), None)
    transition = next((d for d in specs if d.migration_status == "transition" and d.old_ids), None)
    if migrated is None or transition is None:
        pytest.skip("the product store has no migrated or no transitional dataset")
    assert s.get(api(sandbox, f"datasets/{migrated.old_ids[0]}"), timeout=10).status_code == 404
    assert s.get(api(sandbox, f"datasets/{transition.old_ids[0]}"), timeout=10).status_code == 200
    # the new ID with an identifier nobody publishes finds nothing, as the CDSE adapter does
    accept_terms(sandbox, s, NEW_DATASET_ID)
    r = s.post(api(sandbox, "dataaccess/search"), json={"dataset_id": NEW_DATASET_ID, "datasetIdentifier": "no_such_v9"}, timeout=10)
    assert r.status_code == 200 and r.json()["features"] == [] and "nextIndex" not in r.json()["properties"]
