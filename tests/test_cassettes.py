"""Protocol-level tests of the WEkEO (HDA protocol) client replayed from cassettes, and the secret scan of every cassette.

The cassettes under ``tests/cassettes/`` were recorded from the sandbox by
``tests/cassettes/record.py`` (our own ``WekeoService`` over ``HttpClient``) and
scrubbed.  Replays run with ``record_mode="none"`` and sockets disabled: an
unrecorded request raises, and nothing can reach a network.  Each replay also
checks that every recorded answer was used, so the client made exactly the
recorded calls (polls, renewals, pages) in the recorded order.
"""

from __future__ import annotations

import functools
import io
import json
import shutil
import threading
import zipfile
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import pytest_socket
import requests
import yaml
from vcr.errors import CannotOverwriteExistingCassetteException

from cassettes import hda_inputs as H
from cassettes.replay import HERE as CASSETTES
from cassettes.replay import calls, cassette_path, make_vcr, replaying
from cassettes.samples import JWT_SAMPLE, PEM_SAMPLE
from cassettes.scan import cassette_files, load_cassette, scan_cassette
from cassettes.scrub import CAPABILITY_BASE, PLACEHOLDER, Scrubber, sandbox_secrets
from cassettes.stable import FIXED_BASE
from intake_clms.errors import CredentialsError, ServiceError
from intake_clms.errors import OrderFailedError
from intake_clms.net.http import HttpClient
from intake_clms.services.base import DOWNLOAD, product_key
from intake_clms.params import Request
from intake_clms.sandbox.server import DEFAULT_CREDENTIALS
from intake_clms.services import wekeo

REPLAY_USER, REPLAY_PASSWORD = "replay-user", "replay-password"  # not what was recorded: scrubbed fields never match


def hda_client(password: str = REPLAY_PASSWORD, broker: str = H.BROKER) -> wekeo.WekeoService:
    return wekeo.WekeoService(HttpClient("wekeo", attempts=3, backoff=0.0), REPLAY_USER, password, broker=broker)



def search_indexes(cassette: Any) -> list[int]:
    return [json.loads(r.body)["startIndex"] for r in cassette.requests if r.path.endswith("/dataaccess/search")]


@pytest.fixture
def replay(socket_disabled: None, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """``with replay("scenario") as cas:`` plays one HDA cassette offline and checks every answer was used."""
    monkeypatch.setattr(wekeo, "PAGE", H.PAGE)  # the page size the cassettes were recorded with
    return functools.partial(replaying, H.SERVICE)


# --------------------------------------------------------------------------- the protocol, replayed


def test_every_hda_scenario_has_a_cassette() -> None:
    missing = [s for s in H.SCENARIOS if not cassette_path(H.SERVICE, s).is_file()]
    assert not missing, f"record them: python tests/cassettes/record.py --service hda ({missing})"


def test_login_terms_and_search_with_dataset_identifier_pages_by_next_index(replay: Callable[..., Any]) -> None:
    with replay("search_new_id") as cas:
        products = hda_client().search(H.NEW_ID)
    assert len(products) == H.NEW_ID_COUNT
    assert len({p.extra["product_id"] for p in products}) == H.NEW_ID_COUNT, "a page was read twice"
    assert all(p.extra["dataset_id"] == "EO:JRC:DAT:CLMS" and p.extra["location"] for p in products)
    assert all(p.access == DOWNLOAD and p.ordered and p.name and p.key == product_key(p.name) for p in products)  # the title names it
    assert all(p.start and p.start.startswith("2024") for p in products)
    assert all(p.size is None or p.size > 0 for p in products)  # "ND" sizes become None
    assert search_indexes(cas) == H.NEW_ID_INDEXES
    query = json.loads(cas.requests[-1].body)
    assert query["datasetIdentifier"] == H.GRASSLAND and query["bbox"] == list(H.NEW_ID.bbox)
    assert query["startdate"].startswith("2024-01-01") and query["enddate"].startswith("2024-12-31")
    assert calls(cas)[:4] == [
        ("POST", "/identity/gettoken"),
        ("GET", "/hda-broker/api/v1/datasets/EO%3AJRC%3ADAT%3ACLMS"),
        ("PUT", "/hda-broker/api/v1/termsaccepted/Copernicus_General_License"),
        ("PUT", "/hda-broker/api/v1/termsaccepted/Copernicus_Land_Monitoring_Service_Data_Policy"),
    ]


def test_search_with_an_old_dataset_id_pages_by_total_results(replay: Callable[..., Any]) -> None:
    with replay("search_old_id") as cas:
        products = hda_client().search(H.OLD_ID)
    assert len(products) == H.OLD_ID_COUNT == len({p.extra["product_id"] for p in products})
    assert all(p.extra["dataset_id"] == H.OLD_ID.dataset_id for p in products)
    assert search_indexes(cas) == H.OLD_ID_INDEXES
    query = json.loads(cas.requests[-1].body)
    # HR-S&I takes its dates as startdate/enddate (the recording's broker refused start/end: old_keys="required")
    assert "datasetIdentifier" not in query and "start" not in query and "end" not in query
    assert query["startdate"].startswith("2024-01-01") and query["enddate"].startswith("2024-12-31")


def test_order_poll_until_ready_then_download_and_resume(replay: Callable[..., Any]) -> None:
    with replay("order_poll_download"):
        client = hda_client()
        product = client.search(H.ONE)[0]
        order = client.order(product)
        assert order == "order-0001"
        assert client.poll(order) == ("running", None)  # 202
        state, ready = client.poll(order)  # 200
        assert state == "done" and ready is not None
        full = client.fetch(product, order, 0)
        body = b"".join(full.iter_content(1024))
        rest = client.fetch(product, order, H.RANGE_OFFSET)
        tail = rest.content
    assert ready.size == len(body) == int(full.headers["Content-Length"])
    assert ready.name and ready.name.endswith(".zip") and product.extra["product_id"] in ready.name
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None and any(n.endswith(".tif") for n in zf.namelist())
    assert rest.status_code == 206 and tail == body[H.RANGE_OFFSET :]
    assert rest.headers["Content-Range"] == f"bytes {H.RANGE_OFFSET}-{len(body) - 1}/{len(body)}"


def test_token_renewal_on_403_and_on_401_during_the_queue_wait(replay: Callable[..., Any]) -> None:
    with replay("token_renewal") as cas:
        client = hda_client()
        order = client.order(client.search(H.ONE)[0])  # 403 -> refresh refused (400) -> new login -> 200
        assert client.poll(order) == ("running", None)
        state, ready = client.poll(order)  # 401 (token expired in the queue) -> refresh -> 200
    assert state == "done" and ready and ready.size
    flow = [(m, p, r["status"]["code"]) for (m, p), r in zip(calls(cas), cas.responses)]
    renewals = [f for f in flow if f[1] in ("/identity/gettoken", "/hda-broker/refreshtoken")]
    assert renewals == [
        ("POST", "/identity/gettoken", 200),
        ("POST", "/hda-broker/refreshtoken", 400),
        ("POST", "/identity/gettoken", 200),
        ("POST", "/hda-broker/refreshtoken", 200),
    ]
    assert [code for m, p, code in flow if p.endswith("/dataaccess/download")] == [403, 200]
    assert [code for m, p, code in flow if m == "HEAD"] == [202, 401, 200]


def test_a_terminal_failure_carries_the_server_message(replay: Callable[..., Any]) -> None:
    with replay("order_failure") as cas:
        client = hda_client()
        order = client.order(client.search(H.ONE)[0])
        assert client.poll(order) == ("running", None)
        with pytest.raises(OrderFailedError) as failed:  # a ServiceError: a rerun orders anew
            client.poll(order)
    assert isinstance(failed.value, ServiceError)
    assert failed.value.status == 400 and failed.value.service == "wekeo"
    assert H.FAILURE_MESSAGE in failed.value.message and H.FAILURE_MESSAGE in str(failed.value)
    assert calls(cas)[-1] == ("GET", "/hda-broker/api/v1/dataaccess/downloads")  # where a HEAD's failure is explained


def test_error_answers_carry_the_server_message(replay: Callable[..., Any]) -> None:
    unknown = Request.build(H.UNKNOWN_DATASET, None, bbox=H.ONE.bbox, start="2024-01-01", end="2024-12-31")
    with replay("error_message") as cas:
        with pytest.raises(ServiceError) as not_found:
            hda_client().search(unknown)
        with pytest.raises(CredentialsError) as refused:
            hda_client(password=H.WRONG_PASSWORD).search(H.ONE)
    assert not_found.value.status == 404 and f"Dataset {H.UNKNOWN_DATASET} not found" in not_found.value.message
    assert "Invalid user credentials" in str(refused.value) and REPLAY_USER in str(refused.value)
    assert H.WRONG_PASSWORD not in str(refused.value) and REPLAY_PASSWORD not in str(refused.value)
    logins = [json.loads(r.body) for r in cas.requests if r.path.endswith("gettoken")]
    assert [body.get("origin") for body in logins[1:]] == [None, "eumetsat", "cmems"] * 2  # both token URLs, every origin


def test_a_5xx_burst_is_retried_with_the_same_query(replay: Callable[..., Any]) -> None:
    with replay("retry_5xx") as cas:
        products = hda_client().search(H.ONE)
    assert len(products) == 2
    searches = [(json.loads(q.body), r["status"]["code"]) for q, r in zip(cas.requests, cas.responses) if q.path.endswith("/search")]
    assert [code for _, code in searches] == [503] * H.UNAVAILABLE_TIMES + [200]
    assert all(query == searches[0][0] for query, _ in searches)


def test_replay_matching_ignores_host_port_and_authorization(replay: Callable[..., Any]) -> None:
    """Another host and port than recorded, and a bearer token that was never recorded: the cassette still answers."""

    class OtherToken:
        def headers(self) -> dict[str, str]:
            return {"Authorization": "Bearer a-token-that-was-never-recorded"}

        def renew(self) -> None:
            raise AssertionError("no renewal expected")

    with replay("search_new_id", all_played=False) as cas:
        client = hda_client(broker="http://127.0.0.1:1/hda-broker")
        client.auth = OtherToken()  # type: ignore[assignment]
        products = client.search(H.NEW_ID)
    assert len(products) == H.NEW_ID_COUNT
    assert cas.play_counts[0] == 0, "the login was not needed"


def test_an_unrecorded_request_fails_instead_of_reaching_the_network(replay: Callable[..., Any]) -> None:
    other = Request.build("EO:JRC:DAT:CLMS", H.GRASSLAND, bbox=[0, 40, 1, 41], start="2024-01-01", end="2024-12-31")
    with replay("search_new_id", all_played=False):
        with pytest.raises(CannotOverwriteExistingCassetteException):
            hda_client().search(other)


@pytest.mark.filterwarnings("ignore:A test tried to use socket")
def test_replays_run_with_sockets_disabled(replay: Callable[..., Any]) -> None:
    with pytest.raises(pytest_socket.SocketBlockedError):
        requests.get("http://127.0.0.1:9/", timeout=1)


# --------------------------------------------------------------------------- the secret scan


ALL_CASSETTES = cassette_files(CASSETTES)


def test_there_are_cassettes_to_scan() -> None:
    assert len(ALL_CASSETTES) >= len(H.SCENARIOS)


@pytest.mark.parametrize("path", ALL_CASSETTES, ids=[str(p.relative_to(CASSETTES)) for p in ALL_CASSETTES])
def test_no_cassette_holds_a_secret(path: Path) -> None:
    assert scan_cassette(path) == []


@pytest.mark.parametrize("path", ALL_CASSETTES, ids=[str(p.relative_to(CASSETTES)) for p in ALL_CASSETTES])
def test_cassettes_do_not_depend_on_the_sandbox_port(path: Path) -> None:
    text = path.read_text()
    assert "127.0.0.1" not in text and "localhost" not in text
    uris = [i["request"]["uri"] for i in load_cassette(path)["interactions"]]
    assert all(u.startswith((FIXED_BASE + "/", CAPABILITY_BASE + "/")) for u in uris), uris


def test_hda_cassettes_were_scrubbed_not_just_free_of_secrets() -> None:
    """The scan passing must not mean nothing was recorded: auth headers, credentials and tokens were there and are placeholders."""
    headers = bodies = tokens = 0
    for scenario in H.SCENARIOS:
        doc = load_cassette(cassette_path(H.SERVICE, scenario))
        for item in doc["interactions"]:
            request, response = item["request"], item["response"]
            if "Authorization" in request["headers"]:
                assert request["headers"]["Authorization"] == [PLACEHOLDER]
                headers += 1
            if request["uri"].endswith("gettoken"):
                body = json.loads(request["body"])
                assert body["username"] == body["password"] == PLACEHOLDER
                bodies += 1
                if response["status"]["code"] == 200:
                    answer = json.loads(response["body"]["string"])
                    assert answer["access_token"] == answer["refresh_token"] == PLACEHOLDER
                    tokens += 1
    assert headers > 20 and bodies >= len(H.SCENARIOS) and tokens >= len(H.SCENARIOS)


# the scanner can fail: plant one secret in a copy of a real cassette and it must be found

SANDBOX_PASSWORD = DEFAULT_CREDENTIALS["hda"]["password"]


def _plant_auth_header(doc: dict) -> None:
    doc["interactions"][1]["request"]["headers"]["Authorization"] = ["Bearer abcdef0123456789"]


def _plant_jwt(doc: dict) -> None:
    doc["interactions"][0]["response"]["body"]["string"] = json.dumps({"access_token": PLACEHOLDER, "note": JWT_SAMPLE})


def _plant_password(doc: dict) -> None:
    doc["interactions"][0]["request"]["body"] = json.dumps({"username": PLACEHOLDER, "password": "hunter2-hunter2"})


def _plant_refresh_form(doc: dict) -> None:
    doc["interactions"][0]["request"]["body"] = "refresh_token=Zm9vYmFyYmF6cXV4"


def _plant_sandbox_password(doc: dict) -> None:
    doc["interactions"][2]["response"]["headers"]["X-Debug"] = [f"pw={SANDBOX_PASSWORD}"]


def _plant_pem(doc: dict) -> None:
    doc["interactions"][0]["response"]["body"]["string"] = json.dumps({"note": PEM_SAMPLE})


def _plant_cookie(doc: dict) -> None:
    doc["interactions"][0]["response"]["headers"]["Set-Cookie"] = ["session=0123456789abcdef; HttpOnly"]


def _plant_binary(doc: dict) -> None:
    doc["interactions"][-1]["response"]["body"]["string"] = b"PK\x03\x04\x00\x00" + SANDBOX_PASSWORD.encode() + b"\xff\xfe"


def _plant_capability_link(doc: dict) -> None:
    doc["interactions"][0]["response"]["body"]["string"] = json.dumps({"DownloadURL": "https://fme.example.eu/s3cr3t-link/1.zip"})


def _plant_presigned_uri(doc: dict) -> None:
    doc["interactions"][-1]["request"]["uri"] = f"{FIXED_BASE}/s3/bucket/x.zip?X-Amz-Signature=deadbeef&X-Amz-Date=20260101"


PLANTS = {
    "auth header": (_plant_auth_header, "header Authorization"),
    "jwt": (_plant_jwt, "a JWT"),
    "password field": (_plant_password, "'password'"),
    "refresh token form": (_plant_refresh_form, "'refresh_token'"),
    "sandbox password": (_plant_sandbox_password, "sandbox credential"),
    "pem": (_plant_pem, "PEM"),
    "cookie": (_plant_cookie, "Set-Cookie"),
    "binary body": (_plant_binary, "sandbox credential"),
    "capability link": (_plant_capability_link, "DownloadURL"),
    "presigned uri": (_plant_presigned_uri, "signed URL"),
}


@pytest.mark.parametrize("plant", PLANTS, ids=list(PLANTS))
def test_the_scan_finds_a_planted_secret(plant: str, tmp_path: Path) -> None:
    source = cassette_path(H.SERVICE, "order_poll_download")
    copy = tmp_path / source.name
    shutil.copyfile(source, copy)
    assert scan_cassette(copy) == []  # control: the copy is clean before planting
    doc = load_cassette(copy)
    mutate, expected = PLANTS[plant]
    mutate(doc)
    copy.write_text(yaml.dump(doc, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper)))
    findings = scan_cassette(copy)
    assert any(expected in f for f in findings), findings


# the scrubber really scrubs: record real HTTP answers full of secrets through the recorder's VCR


class _Leaky(BaseHTTPRequestHandler):
    """Answers like a careless server: tokens, a cookie, a key, a capability link, the sandbox password."""

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        base = f"http://127.0.0.1:{self.server.server_port}"
        doc = {
            "access_token": JWT_SAMPLE,
            "refresh_token": "opaque-refresh-0123456789",
            "nested": {"private_key": PEM_SAMPLE, "items": [{"password": SANDBOX_PASSWORD}]},
            "DownloadURL": f"{base}/fme/secret-link-token/42.zip",
            "note": f"issued for {SANDBOX_PASSWORD}",
        }
        self._send(200, json.dumps(doc).encode(), "application/json", {"Set-Cookie": "session=0123456789abcdef"})

    def do_GET(self) -> None:
        if self.path.startswith("/fme/secret-link-token/"):
            self._send(200, b"PK\x05\x06" + b"\x00" * 18, "application/zip")
        else:
            self._send(404, b"no", "text/plain")


@pytest.fixture
def leaky_server(socket_enabled: None) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Leaky)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_the_scrubber_removes_planted_secrets_and_keeps_the_replay_working(leaky_server: str, tmp_path: Path) -> None:
    from cassettes.stable import Normalizer

    path = tmp_path / "leaky.yaml"
    recorder = make_vcr(record_mode="once", scrubber=Scrubber(sandbox_secrets()), normalizer=Normalizer(leaky_server))

    def session() -> tuple[dict, requests.Response]:
        with requests.Session() as s:
            s.headers["Authorization"] = f"Bearer {JWT_SAMPLE}"
            answer = s.post(f"{leaky_server}/token", json={"username": "someone", "password": SANDBOX_PASSWORD}).json()
            s.post(f"{leaky_server}/token", data={"refresh_token": answer["refresh_token"]})
            link = s.get(answer["DownloadURL"])
        return answer, link

    with recorder.use_cassette(str(path)):
        live, link = session()
    # the live session saw the real values: scrubbing touches the recording only
    assert live["access_token"] == JWT_SAMPLE and link.content.startswith(b"PK")
    text = path.read_text()
    for secret in (JWT_SAMPLE, "opaque-refresh-0123456789", "BEGIN PRIVATE KEY", SANDBOX_PASSWORD, "secret-link-token", "session=", "someone"):
        assert secret not in text, secret
    assert scan_cassette(path) == []
    doc = load_cassette(path)
    recorded = json.loads(doc["interactions"][0]["response"]["body"]["string"])
    assert recorded["access_token"] == recorded["refresh_token"] == recorded["nested"]["private_key"] == PLACEHOLDER
    assert recorded["DownloadURL"] == f"{CAPABILITY_BASE}/1" == doc["interactions"][2]["request"]["uri"]
    # the scrubbed cassette still replays (the link is fetched by its alias), with other credentials, offline
    pytest_socket.disable_socket(allow_unix_socket=True)
    try:
        with make_vcr(record_mode="none").use_cassette(str(path)) as cas:
            replayed, link = session()
        assert cas.all_played and replayed["access_token"] == PLACEHOLDER and link.content.startswith(b"PK")
    finally:
        pytest_socket.enable_socket()
