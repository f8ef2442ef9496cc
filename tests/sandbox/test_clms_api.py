"""The sandbox's CLMS download API, driven with plain ``requests`` as a client would.

Most tests run the clock at real speed with a long queue delay and move time by
``clock.advance`` so each status is observed deterministically; one test uses
the shared fast-clock fixture to see a task finish on its own.
"""

from __future__ import annotations

import io
import json
import stat
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from intake_clms.sandbox import Sandbox, clms_api

JSON = {"Accept": "application/json"}
DELAY = 600.0  # sandbox seconds a task spends queued + in progress in the manual-clock tests


@pytest.fixture
def sb(sandbox_factory: Callable[..., Sandbox]) -> Sandbox:
    """A sandbox whose clock only moves when a test advances it (speed 1, long queue)."""
    return sandbox_factory(speed=1.0, queue_delay=DELAY)


# --------------------------------------------------------------------------- helpers


def load_key(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def assertion(key: dict[str, Any], **override: Any) -> str:
    now = int(time.time())
    claims = {"iss": key["client_id"], "sub": key["user_id"], "aud": key["token_uri"], "iat": now, "exp": now + 3600}
    claims.update(override)
    return jwt.encode(claims, key["private_key"], algorithm="RS256")


def grant_response(key: dict[str, Any], jwt_text: str) -> requests.Response:
    return requests.post(
        key["token_uri"],
        data={"grant_type": clms_api.JWT_BEARER, "assertion": jwt_text},
        headers=JSON,
        timeout=10,
    )


def grant(sb: Sandbox, key_path: Path | None = None) -> str:
    key = load_key(key_path or clms_api.default_service_key(sb.ctx))
    r = grant_response(key, assertion(key))
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


class Api:
    """A thin bearer client for one sandbox user."""

    def __init__(self, sb: Sandbox, key_path: Path | None = None):
        self.sb = sb
        self.base = sb.urls["clms_api"]
        self.token = grant(sb, key_path)

    @property
    def headers(self) -> dict[str, str]:
        return {**JSON, "Authorization": f"Bearer {self.token}"}

    def get(self, endpoint: str, **params: Any) -> requests.Response:
        return requests.get(f"{self.base}/{endpoint}", params=params, headers=self.headers, timeout=30)

    def post(self, datasets: list[dict[str, Any]]) -> requests.Response:
        return requests.post(f"{self.base}/@datarequest_post", json={"Datasets": datasets}, headers=self.headers,
                             timeout=30)

    def delete(self, task_id: Any) -> requests.Response:
        return requests.delete(f"{self.base}/@datarequest_delete", json={"TaskID": task_id}, headers=self.headers,
                               timeout=30)

    def status(self, task_id: str) -> dict[str, Any]:
        r = self.get("@datarequest_status_get", TaskID=task_id)
        assert r.status_code == 200, r.text
        return r.json()

    def task_ids(self, r: requests.Response) -> list[str]:
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["ErrorTaskIds"] == []
        return [t["TaskID"] for t in body["TaskIds"]]


FIELDS = ["UID", "id", "dataset_download_information", "downloadable_files"]


def catalogue(sb: Sandbox) -> list[dict[str, Any]]:
    """Every DataSet with the fields a client asks for, following ``batching.next``."""
    url: str | None = sb.urls["clms_api"] + "/@search"
    params: Any = [("portal_type", "DataSet")] + [("metadata_fields", f) for f in FIELDS]
    items: list[dict[str, Any]] = []
    for _ in range(100):
        if not url:
            break
        body = requests.get(url, params=params, headers=JSON, timeout=30).json()
        items += body["items"]
        url, params = body.get("batching", {}).get("next"), None
    else:
        raise AssertionError("batching.next never ends")
    return items


def source(item: dict[str, Any]) -> str:
    return item["dataset_download_information"]["items"][0]["full_source"]


def prepackaged(sb: Sandbox) -> tuple[dict[str, Any], dict[str, Any]]:
    """A dataset and one of its pre-packaged files that the server accepts (path and source set)."""
    for item in catalogue(sb):
        for f in item["downloadable_files"]["items"]:
            if f["path"] and f["source"]:
                return item, f
    raise AssertionError("no downloadable pre-packaged file in the catalogue")


def general_item(item: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = {
        "DatasetID": item["UID"],
        "DatasetDownloadInformationID": item["dataset_download_information"]["items"][0]["@id"],
        "OutputFormat": "Geotiff",
        "OutputGCS": "EPSG:4326",
        "BoundingBox": [2.35, 46.85, 4.64, 45.88],
    }
    body.update(extra)
    return body


def finish(sb: Sandbox) -> None:
    sb.clock.advance(DELAY + 1)


def ordered_zip(sb: Sandbox, api: Api) -> dict[str, Any]:
    """Order the first pre-packaged file and return its finished task (with its TaskID added)."""
    item, f = prepackaged(sb)
    (task_id,) = api.task_ids(api.post([{"DatasetID": item["UID"], "FileID": f["@id"]}]))
    finish(sb)
    task = api.status(task_id)
    assert task["Status"] == "Finished_ok", task
    return {**task, "TaskID": task_id}


# --------------------------------------------------------------------------- authentication


def test_minted_service_key_grants_a_bearer_token(sb: Sandbox) -> None:
    path = clms_api.mint_service_key(sb.ctx)
    assert path.parent.is_relative_to(sb.ctx.data_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_key(path)
    assert set(key) >= {"client_id", "user_id", "token_uri", "private_key", "key_id", "title", "issued", "ip_range"}
    assert key["token_uri"] == sb.urls["clms_token"] and key["ip_range"] is None
    assert "PRIVATE KEY" in key["private_key"]
    r = grant_response(key, assertion(key))
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["access_token"]
    ok = requests.get(sb.urls["clms_api"] + "/@datarequest_search",
                      headers={**JSON, "Authorization": f"Bearer {body['access_token']}"}, timeout=10)
    assert ok.status_code == 200 and ok.json() == {}


def test_grant_refusals(sb: Sandbox) -> None:
    key = load_key(clms_api.default_service_key(sb.ctx))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    now = int(time.time())
    wrong_key = jwt.encode({"iss": key["client_id"], "sub": key["user_id"], "aud": key["token_uri"], "iat": now,
                            "exp": now + 600}, other, algorithm="RS256")
    cases = {
        "wrong key": (wrong_key, 400, "signature"),
        "too long": (assertion(key, exp=now + 7200), 400, "too long"),
        "wrong aud": (assertion(key, aud="https://land.copernicus.eu/@@oauth2-token"), 400, "aud"),
        "wrong sub": (assertion(key, sub="someone-else"), 400, "sub"),
        "expired": (assertion(key, iat=now - 7200, exp=now - 3600), 400, "expired"),
        "unknown client": (assertion(key, iss="not-a-client"), 401, "client"),
    }
    for name, (text, status, words) in cases.items():
        r = grant_response(key, text)
        assert r.status_code == status, name
        body = r.json()
        assert body["error"] in ("invalid_grant", "invalid_client"), name
        assert words in body["error_description"].lower(), (name, body)
    r = requests.post(key["token_uri"], data={"grant_type": "password", "assertion": assertion(key)}, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"


def test_calls_without_a_valid_token_are_refused(sb: Sandbox) -> None:
    base = sb.urls["clms_api"]
    for headers in (JSON, {**JSON, "Authorization": "Bearer nonsense"}):
        r = requests.get(base + "/@datarequest_search", headers=headers, timeout=10)
        assert r.status_code == 401
        assert r.json()["msg"] == "You need to be logged in to use this service"


def test_token_expiry_fault_then_regrant(sb: Sandbox) -> None:
    api = Api(sb)
    assert api.get("@datarequest_search").status_code == 200
    sb.faults.add("token_expiry", service="clms")
    r = api.get("@datarequest_search")
    assert r.status_code == 401 and "expired" in r.json()["message"]
    assert api.get("@datarequest_search").status_code == 401  # stays expired
    api.token = grant(sb)  # a refresh is a new grant
    assert api.get("@datarequest_search").status_code == 200


def test_token_expires_on_the_sandbox_clock_and_a_fresh_grant_still_works(sb: Sandbox) -> None:
    api = Api(sb)
    sb.clock.advance(3601)
    r = api.get("@datarequest_search")
    assert r.status_code == 401 and "expired" in r.json()["message"]
    # The assertion is signed with the wall clock, which did not move: still accepted.
    api.token = grant(sb)
    assert api.get("@datarequest_search").status_code == 200


# --------------------------------------------------------------------------- catalogue


def test_search_pages_with_field_selection(sb: Sandbox) -> None:
    url = sb.urls["clms_api"] + "/@search"
    params = [("portal_type", "DataSet"), ("metadata_fields", "UID"), ("metadata_fields", "temporalExtentStart")]
    first = requests.get(url, params=params, headers=JSON, timeout=30).json()
    total = first["items_total"]
    assert total > 50 and len(first["items"]) == 25
    item = first["items"][0]
    assert {"@id", "title", "UID", "temporalExtentStart"} <= set(item)
    assert "downloadable_files" not in item and "dataset_download_information" not in item
    assert len(item["UID"]) == 32 and int(item["UID"], 16) >= 0
    assert first["batching"]["next"].startswith(sb.urls["base"]) and "prev" not in first["batching"]
    pages, uids, next_url = 1, [i["UID"] for i in first["items"]], first["batching"]["next"]
    while next_url:
        assert pages < 100, "batching.next never ends"
        body = requests.get(next_url, headers=JSON, timeout=30).json()
        assert body["items"], "a page without items still links to a next one"
        assert "metadata_fields=temporalExtentStart" in next_url  # query kept across pages
        assert body["items_total"] == total and "prev" in body["batching"]
        uids += [i["UID"] for i in body["items"]]
        pages += 1
        next_url = body["batching"].get("next")
    assert pages >= 3 and len(uids) == len(set(uids)) == total
    small = requests.get(url, params=params + [("b_size", "10"), ("b_start", "20")], headers=JSON, timeout=30).json()
    assert [i["UID"] for i in small["items"]] == uids[20:30]


def test_search_fullobjects_and_filters(sb: Sandbox) -> None:
    url = sb.urls["clms_api"] + "/@search"
    full = requests.get(url, params={"portal_type": "DataSet", "fullobjects": "1", "b_size": "100"}, headers=JSON,
                        timeout=30).json()
    assert "batching" not in full  # one page holds everything
    for item in full["items"]:
        assert {"UID", "id", "dataset_download_information", "downloadable_files", "coordinateReferenceSystemList",
                "temporalExtentStart", "temporalExtentEnd", "geographicBoundingBox"} <= set(item)
        box = item["geographicBoundingBox"]["items"][0]
        assert all(isinstance(box[k], str) for k in ("west", "south", "east", "north"))
    uid = full["items"][3]["UID"]
    one = requests.get(url, params={"UID": uid, "metadata_fields": "UID"}, headers=JSON, timeout=30).json()
    assert one["items_total"] == 1 and one["items"][0]["UID"] == uid
    html = requests.get(url, params={"portal_type": "DataSet"}, timeout=30)  # no Accept: application/json
    assert html.headers["Content-Type"].startswith("text/html")


# --------------------------------------------------------------------------- data requests


def test_prepackaged_request_lifecycle_and_download(sb: Sandbox) -> None:
    api = Api(sb)
    item, f = prepackaged(sb)
    (task_id,) = api.task_ids(api.post([{"DatasetID": item["UID"], "FileID": f["@id"]}]))
    assert task_id.isdigit()
    task = api.status(task_id)
    assert task["Status"] == "Queued" and "DownloadURL" not in task
    assert task["Datasets"][0]["FileID"] == f["@id"] and task["Datasets"][0]["DatasetID"] == item["UID"]
    sb.clock.advance(DELAY * 0.6)
    assert api.status(task_id)["Status"] == "In_progress"
    sb.clock.advance(DELAY * 0.5)
    task = api.status(task_id)
    assert task["Status"] == "Finished_ok"
    assert task["Message"] and task["FinalizationDateTime"] >= task["RegistrationDateTime"][:19]
    url = task["DownloadURL"]
    assert url.startswith(sb.urls["base"] + "/fme/") and url.endswith(".zip")
    r = requests.get(url, timeout=30)  # a capability URL: no Authorization
    assert r.status_code == 200 and len(r.content) == task["FileSize"] == int(r.headers["Content-Length"])
    outer = zipfile.ZipFile(io.BytesIO(r.content))
    assert outer.testzip() is None
    inner = [n for n in outer.namelist() if n.startswith("Results/") and n.endswith(".zip")]
    assert inner, outer.namelist()
    data = zipfile.ZipFile(io.BytesIO(outer.read(inner[0]))).namelist()
    assert any(n.lower().endswith((".tif", ".tiff")) for n in data), data


def test_task_finishes_on_the_accelerated_clock(sandbox: Sandbox) -> None:
    api = Api(sandbox)  # the shared fixture: clock 60x, queue of a tenth of a real second
    item, f = prepackaged(sandbox)
    (task_id,) = api.task_ids(api.post([{"DatasetID": item["UID"], "FileID": f["@id"]}]))
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = api.status(task_id)["Status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == "Finished_ok":
            break
        time.sleep(0.02)
    assert seen[-1] == "Finished_ok" and set(seen) <= {"Queued", "In_progress", "Finished_ok"}


def test_timestamps_mix_naive_and_utc_offsets(sb: Sandbox) -> None:
    api = Api(sb)
    item, f = prepackaged(sb)
    ids = [api.task_ids(api.post([{"DatasetID": item["UID"], "FileID": f["@id"]}]))[0] for _ in range(2)]
    stamps = [api.status(t)["RegistrationDateTime"] for t in ids]
    assert sum(s.endswith("+00:00") for s in stamps) == 1, stamps


def test_invalid_ids_are_refused(sb: Sandbox) -> None:
    api = Api(sb)
    r = api.post([{"DatasetID": "0" * 32, "FileID": "x"}])
    assert r.status_code == 400 and r.json() == {"status": "error", "msg": "Error, the DatasetID is not valid"}
    hollow = next(
        (i, f) for i in catalogue(sb) for f in i["downloadable_files"]["items"] if not f["path"] and not f["source"]
    )
    r = api.post([{"DatasetID": hollow[0]["UID"], "FileID": hollow[1]["@id"]}])
    assert r.status_code == 400 and r.json()["msg"] == "Error, the FileID is not valid"
    r = api.post([{"FileID": "x"}])
    assert r.status_code == 400 and r.json()["msg"] == "Error, DatasetID is not defined"


def test_general_request_duplicate_and_limits(sb: Sandbox) -> None:
    api = Api(sb)
    item, _ = prepackaged(sb)
    (task_id,) = api.task_ids(api.post([general_item(item)]))
    task = api.status(task_id)
    entry = task["Datasets"][0]
    assert entry["BoundingBox"] == [2.35, 46.85, 4.64, 45.88] and entry["OutputGCS"] == "EPSG:4326"
    assert entry["DatasetSource"] == "EEA" and entry["DatasetFormat"] == "Geotiff"
    dup = api.post([general_item(item)])
    assert dup.status_code == 400 and dup.json()["status"] == "error"
    assert "same thing at least twice" in dup.json()["msg"]
    six = [general_item(item, BoundingBox=[1.0 + i, 45.0, 2.0 + i, 46.0]) for i in range(6)]
    r = api.post(six)
    assert r.status_code == 400 and "5 items" in r.json()["msg"]
    finish(sb)
    assert api.status(task_id)["Status"] == "Finished_ok"
    assert api.post([general_item(item)]).status_code == 201  # no longer a duplicate once finished


def test_general_request_validation_messages(sb: Sandbox) -> None:
    api = Api(sb)
    item, _ = prepackaged(sb)
    no_gcs = general_item(item)
    del no_gcs["OutputGCS"]
    no_area = general_item(item)
    del no_area["BoundingBox"]
    cases = [
        (no_gcs, "The OutputGCS parameter is mandatory."),
        (general_item(item, OutputGCS="EPSG:9999"), "Error, defined GCS not in the list"),
        (no_area, "pre-packaged data collection"),
        (general_item(item, BoundingBox=[1, 2, 3]), "Error, BoundingBox is not valid"),
        (general_item(item, OutputFormat="Netcdf"), "Error, specified formats are not compatible"),
        (general_item(item, DatasetDownloadInformationID="nope"), "Error, this dataset is not downloadable"),
        (general_item(item, TemporalFilter={"StartDate": 0, "EndDate": 1}), "not time-series enabled"),
    ]
    for body, words in cases:
        r = api.post([body])
        assert r.status_code == 400, body
        assert words in r.json()["msg"], (body, r.json())


def test_mixed_post_gives_two_tasks(sb: Sandbox) -> None:
    api = Api(sb)
    item, f = prepackaged(sb)
    ids = api.task_ids(api.post([{"DatasetID": item["UID"], "FileID": f["@id"]}, general_item(item)]))
    assert len(ids) == 2 and len(set(ids)) == 2


def test_general_time_series_request(sb: Sandbox) -> None:
    api = Api(sb)
    ds = next(d for d in clms_api.state(sb.ctx).catalog(sb.ctx) if d.source == "LEGACY" and d.spec is not None)
    item = {"UID": ds.uid, "dataset_download_information": {"items": [{"@id": ds.info_id}]}}
    day = 86400 * 1000
    start = int(time.mktime(ds.start.timetuple())) * 1000
    window = {"StartDate": start, "EndDate": start + 40 * day}
    r = api.post([general_item(item, OutputFormat="Netcdf")])
    assert r.status_code == 400 and "time series" in r.json()["msg"]
    no_area = general_item(item, OutputFormat="Netcdf", TemporalFilter=window)
    del no_area["BoundingBox"]
    r = api.post([no_area])
    assert r.status_code == 400 and "Auxiliary API" in r.json()["msg"]
    too_long = general_item(item, TemporalFilter={"StartDate": start, "EndDate": start + 400 * day})
    assert "bigger than the allowed range" in api.post([too_long]).json()["msg"]
    (task_id,) = api.task_ids(api.post([general_item(item, OutputFormat="Netcdf", TemporalFilter=window)]))
    stored = api.status(task_id)["Datasets"][0]["TemporalFilter"]
    assert stored["StartDate"].endswith(":00") and len(stored["StartDate"]) == 19  # "YYYY-MM-DD HH:MM:SS"
    finish(sb)
    task = api.status(task_id)
    assert task["Status"] == "Finished_ok", task
    outer = zipfile.ZipFile(io.BytesIO(requests.get(task["DownloadURL"], timeout=30).content))
    inner = next(n for n in outer.namelist() if n.startswith("Results/") and n.endswith(".zip"))
    assert any(n.endswith(".nc") for n in zipfile.ZipFile(io.BytesIO(outer.read(inner))).namelist())


@pytest.mark.parametrize(
    "kind, params, expected",
    [
        ("terminal_failure", {"status": "Finished_nok", "message": "FME exploded"}, "Finished_nok"),
        ("terminal_failure", {"status": "Rejected", "message": "Not allowed"}, "Rejected"),
        ("server_cancel", {}, "Cancelled"),
    ],
)
def test_terminal_statuses(sb: Sandbox, kind: str, params: dict[str, Any], expected: str) -> None:
    api = Api(sb)
    item, f = prepackaged(sb)
    sb.faults.add(kind, service="clms", **params)
    (task_id,) = api.task_ids(api.post([{"DatasetID": item["UID"], "FileID": f["@id"]}]))
    assert api.status(task_id)["Status"] == "Queued"
    finish(sb)
    task = api.status(task_id)
    assert task["Status"] == expected and "DownloadURL" not in task
    assert task["Message"] == params.get("message", task["Message"]) and task["Message"]
    assert task["FinalizationDateTime"]


def test_datarequest_search_with_and_without_status(sb: Sandbox) -> None:
    api = Api(sb)
    item, f = prepackaged(sb)
    (done,) = api.task_ids(api.post([{"DatasetID": item["UID"], "FileID": f["@id"]}]))
    finish(sb)
    (queued,) = api.task_ids(api.post([{"DatasetID": item["UID"], "FileID": f["@id"]}]))
    everything = api.get("@datarequest_search").json()
    assert set(everything) == {done, queued}
    assert everything[done]["Status"] == "Finished_ok" and everything[queued]["Status"] == "Queued"
    only = api.get("@datarequest_search", status="Finished_ok").json()
    assert set(only) == {done} and only[done]["DownloadURL"]
    assert api.get("@datarequest_search", status="Queued").json().keys() == {queued}
    bad = api.get("@datarequest_search", status="Done")
    assert bad.status_code == 400 and bad.json()["msg"] == "Error, status not recognized"
    other = Api(sb, clms_api.mint_service_key(sb.ctx, user_id="another-user"))
    assert other.get("@datarequest_search").json() == {}


def test_status_of_unknown_task(sb: Sandbox) -> None:
    api = Api(sb)
    r = api.get("@datarequest_status_get", TaskID="12345")
    assert r.status_code == 404 and r.json() == {"status": "error", "msg": "Error, the task does not exist"}


def test_delete_and_its_swapped_codes(sb: Sandbox) -> None:
    api = Api(sb)
    item, f = prepackaged(sb)
    (task_id,) = api.task_ids(api.post([{"DatasetID": item["UID"], "FileID": f["@id"]}]))
    (kept,) = api.task_ids(api.post([{"DatasetID": item["UID"], "FileID": f["@id"]}]))
    r = api.delete(task_id)
    assert r.status_code == 204 and r.content == b""
    task = api.status(task_id)
    assert task["Status"] == "Cancelled" and task["FinalizationDateTime"].endswith("+00:00")
    r = api.delete("99999")
    assert r.status_code == 403 and r.json()["msg"] == "Error, TaskID not registered"
    stranger = Api(sb, clms_api.mint_service_key(sb.ctx, user_id="stranger"))
    r = stranger.delete(kept)
    assert r.status_code == 404 and r.json()["msg"] == "Error, permission denied"
    sb.faults.add("status", service="clms", endpoint="datarequest_delete", status=403, message="Blocked by firewall")
    r = api.delete(kept)
    assert r.status_code == 403
    assert api.status(kept)["Status"] == "Queued"  # the blocked cancel changed nothing
    assert api.delete(kept).status_code == 204


# --------------------------------------------------------------------------- result zips


def test_zip_download_with_range(sb: Sandbox) -> None:
    api = Api(sb)
    task = ordered_zip(sb, api)
    whole = requests.get(task["DownloadURL"], timeout=30).content
    r = requests.get(task["DownloadURL"], headers={"Range": "bytes=100-"}, timeout=30)
    assert r.status_code == 206 and r.content == whole[100:]
    assert r.headers["Content-Range"] == f"bytes 100-{len(whole) - 1}/{len(whole)}"
    assert sb.log.count(service="clms", endpoint="fme") == 2


def test_corrupt_zip_fault(sb: Sandbox) -> None:
    api = Api(sb)
    sb.faults.add("corrupt_zip", service="clms")
    task = ordered_zip(sb, api)
    data = requests.get(task["DownloadURL"], timeout=30).content
    assert len(data) == task["FileSize"]
    with pytest.raises(zipfile.BadZipFile):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise zipfile.BadZipFile(f"bad CRC in {bad}")


def test_hostile_zip_fault(sb: Sandbox) -> None:
    api = Api(sb)
    sb.faults.add("hostile_zip", service="clms", variant="slip")
    task = ordered_zip(sb, api)
    names = zipfile.ZipFile(io.BytesIO(requests.get(task["DownloadURL"], timeout=30).content)).namelist()
    assert any(".." in n.split("/") for n in names), names


@pytest.mark.parametrize("status", [403, 410])
def test_expired_link_fault(sb: Sandbox, status: int) -> None:
    api = Api(sb)
    task = ordered_zip(sb, api)
    sb.faults.add("expired_link", service="clms", status=status)
    assert requests.get(task["DownloadURL"], timeout=30).status_code == status
    assert requests.get(task["DownloadURL"], timeout=30).status_code == status  # dead for good
    assert api.status(task["TaskID"])["Status"] == "Finished_ok"  # the API cannot tell the link died


def test_links_expire_after_72_hours(sb: Sandbox) -> None:
    api = Api(sb)
    task = ordered_zip(sb, api)
    sb.clock.advance(71 * 3600)
    assert requests.head(task["DownloadURL"], timeout=30).status_code == 200
    sb.clock.advance(2 * 3600)
    assert requests.get(task["DownloadURL"], timeout=30).status_code == 404
    assert requests.get(sb.urls["base"] + "/fme/not-a-token/1.zip", timeout=30).status_code == 404


# --------------------------------------------------------------------------- auxiliary API


def test_auxiliary_urls_for_legacy_and_landcover(sb: Sandbox) -> None:
    api = Api(sb)
    items = catalogue(sb)
    legacy = next(i for i in items if source(i) == "LEGACY" and i["id"] in _downloadable_ids(sb))
    info = legacy["dataset_download_information"]["items"][0]["@id"]
    full = requests.get(sb.urls["clms_api"] + "/@search", params={"UID": legacy["UID"], "fullobjects": "1"},
                        headers=JSON, timeout=30).json()["items"][0]
    start = full["temporalExtentStart"][:10]
    end = f"{start[:4]}-03-31"
    r = api.get("@get-download-file-urls", dataset_uid=legacy["UID"], download_information_id=info, date_from=start,
                date_to=end)
    assert r.status_code == 200, r.text
    urls = r.json()
    assert isinstance(urls, list) and urls and all(u.startswith(sb.urls["base"] + "/files/") for u in urls)
    assert all(u.endswith(".nc") for u in urls)
    got = requests.get(urls[0], timeout=30)
    assert got.status_code == 200 and int(got.headers["Content-Length"]) == len(got.content) > 0
    r = api.get("@get-download-file-urls", dataset_uid=legacy["UID"], download_information_id=info, date_from=start)
    assert r.status_code == 400 and "date_from and date_to" in r.json()["msg"]
    r = api.get("@get-download-file-urls", dataset_uid=legacy["UID"], download_information_id="nope")
    assert r.status_code == 400 and r.json()["message"] == "Dataset collection does not exist"
    landcover = next((i for i in items if source(i) == "LANDCOVER" and i["id"] in _downloadable_ids(sb)), None)
    if landcover is not None:
        r = api.get("@get-download-file-urls", dataset_uid=landcover["UID"],
                    download_information_id=landcover["dataset_download_information"]["items"][0]["@id"],
                    date_from="2019-01-01", date_to="2019-12-31")
        assert r.status_code == 200 and all(u.endswith((".tif", ".tiff")) for u in r.json())


def _downloadable_ids(sb: Sandbox) -> set[str]:
    return {d.short_name for d in clms_api.state(sb.ctx).catalog(sb.ctx) if d.spec is not None}


def test_files_rate_limit(sb: Sandbox) -> None:
    api = Api(sb)
    legacy = next(i for i in catalogue(sb) if source(i) == "LEGACY" and i["id"] in _downloadable_ids(sb))
    ds = next(d for d in clms_api.state(sb.ctx).catalog(sb.ctx) if d.uid == legacy["UID"])
    urls = api.get("@get-download-file-urls", dataset_uid=ds.uid, download_information_id=ds.info_id,
                   date_from=ds.start.isoformat(), date_to=f"{ds.start.year}-03-31").json()
    statuses = []
    with requests.Session() as s:
        for i in range(25):
            r = s.head(urls[i % len(urls)], timeout=30)
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert int(r.headers["Retry-After"]) >= 1
    assert 200 in statuses and 429 in statuses
    assert statuses[:10] == [200] * 10  # the first burst of ten passes


def test_unknown_api_path_has_plone_shape(sb: Sandbox) -> None:
    r = requests.get(sb.urls["clms_api"] + "/@nothing-here", headers=JSON, timeout=10)
    assert r.status_code == 404 and r.json()["type"] == "NotFound"
