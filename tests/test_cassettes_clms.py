"""Protocol-level tests of the CLMS download API client replayed from cassettes, and their secret scan.

The cassettes under ``tests/cassettes/clms/`` were recorded from the sandbox
by ``tests/cassettes/record.py --service clms`` (our own ``ClmsApiService`` and
``ClmsAuth`` over ``HttpClient``) and scrubbed.  Replays run with
``record_mode="none"`` and sockets disabled, and sign their grants with
throwaway RSA keys made here: the grant's assertion is scrubbed on both sides,
so matching never depends on who signed it or when.  Recorded task times are
fixed to 2026-01-01, so replays judge links with ``link_max_age=inf`` (one
test checks that the default bound does refuse such an old link).
"""

from __future__ import annotations

import functools
import io
import itertools
import json
import math
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import pytest_socket
import requests
import yaml
from vcr.errors import CannotOverwriteExistingCassetteException

from cassettes import clms_inputs as C
from cassettes.replay import HERE as CASSETTES
from cassettes.replay import cassette_path, make_vcr, replaying
from cassettes.samples import JWT_SAMPLE, PEM_SAMPLE
from cassettes.scan import cassette_files, load_cassette, scan_cassette
from cassettes.scrub import CAPABILITY_BASE, PLACEHOLDER, Scrubber
from cassettes.stable import FIXED_BASE, FIXED_STAMP, Normalizer
from intake_clms.services.clms_api.listing import FIELDS, ApiDataset, fetch_listing, find_dataset, listing_cache_path
from intake_clms.errors import ServiceError
from intake_clms.errors import OrderExpiredError, OrderFailedError
from intake_clms.services.base import DOWNLOAD
from intake_clms.sandbox.clms_api import DEFAULT_USER
from intake_clms.services.clms_api import ClmsApiService
from intake_clms.services.clms_api.auth import JWT_BEARER, GrantRefusedError
from intake_clms.services.clms_api.items import items_hash

# --------------------------------------------------------------------------- replay machinery


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Throwaway service keys (not the recorded ones: the sandbox's minted keys are random per run)."""
    where = tmp_path_factory.mktemp("keys")
    return {
        name: C.write_key(where / f"{name}.json", client_id=f"replay-{name}", user_id=f"replay-{name}-user",
                          token_uri=C.TOKEN_URI, private_pem=C.new_private_pem())
        for name in ("mine", "other")
    }


@pytest.fixture(scope="module")
def listing(tmp_path_factory: pytest.TempPathFactory) -> list[ApiDataset]:
    """The catalogue as the recorded listing pages give it (every other scenario starts with it cached)."""
    pytest_socket.disable_socket(allow_unix_socket=True)
    try:
        with make_vcr().use_cassette(str(cassette_path(C.SERVICE, "grant_listing"))):
            return fetch_listing(C.API, cache_dir=tmp_path_factory.mktemp("listing"), page_size=C.LISTING_PAGE)
    finally:
        pytest_socket.enable_socket()


@pytest.fixture
def new_client(tmp_path: Path, keys: dict[str, Path], listing: list[ApiDataset]) -> Callable[..., ClmsApiService]:
    """``new_client(key="mine")``: a client with a cache dir of its own and the listing in it."""
    caches = itertools.count(1)

    def make(key: str = "mine", link_max_age: float = math.inf) -> ClmsApiService:
        cache = tmp_path / f"cache-{next(caches)}"
        C.seed_listing(cache, C.API, listing)
        return C.client(C.API, keys[key], cache, link_max_age=link_max_age)

    return make


def watch(client: ClmsApiService) -> list[requests.PreparedRequest]:
    """The requests the client really sends during a replay (headers included, which matching ignores)."""
    sent: list[requests.PreparedRequest] = []
    client.http.session.hooks["response"].append(lambda r, *args, **kwargs: sent.append(r.request))
    return sent



def flow(cassette: Any) -> list[tuple[str, str, int]]:
    """(method, last path segment, status) of every recorded exchange, in order."""
    return [(r.method, r.path.rsplit("/", 1)[-1], a["status"]["code"]) for r, a in zip(cassette.requests, cassette.responses)]


def codes(cassette: Any, endpoint: str) -> list[int]:
    return [code for _, name, code in flow(cassette) if name == endpoint]


def answer(cassette: Any, index: int) -> Any:
    body = cassette.responses[index]["body"]["string"]
    return json.loads(body.decode() if isinstance(body, bytes) else body)


@pytest.fixture
def replay(socket_disabled: None) -> Callable[..., Any]:
    """``with replay("scenario") as cas:`` plays one CLMS cassette offline and checks every answer was used."""
    return functools.partial(replaying, C.SERVICE)


# --------------------------------------------------------------------------- the protocol, replayed


def test_every_clms_scenario_has_a_cassette_and_is_scanned() -> None:
    paths = [cassette_path(C.SERVICE, s) for s in C.SCENARIOS]
    missing = [p.name for p in paths if not p.is_file()]
    assert not missing, f"record them: python tests/cassettes/record.py --service clms ({missing})"
    assert set(paths) <= set(cassette_files(CASSETTES))  # what test_cassettes.py's scan parametrizes over


def test_listing_pages_by_batching_next_then_grant_and_refused_grant(
    replay: Callable[..., Any], new_client: Callable[..., ClmsApiService], tmp_path: Path
) -> None:
    with replay("grant_listing") as cas:
        datasets = fetch_listing(C.API, cache_dir=tmp_path / "fresh", page_size=C.LISTING_PAGE)
        mine = new_client()
        with pytest.raises(OrderExpiredError, match=f"task {C.UNKNOWN_TASK} is unknown"):
            mine.poll(C.UNKNOWN_TASK)
        with pytest.raises(GrantRefusedError) as refused:
            new_client("other").poll(C.UNKNOWN_TASK)
    # the listing: every page read once, in order, each asking the same fields
    assert len(datasets) == C.LISTING_COUNT == len({d.uid for d in datasets})
    pages = [parse_qs(urlsplit(r.uri).query) for r in cas.requests if r.path.endswith("/@search")]
    assert [int(q.get("b_start", ["0"])[0]) for q in pages] == C.LISTING_STARTS
    assert all(q["b_size"] == [str(C.LISTING_PAGE)] and q["metadata_fields"] == list(FIELDS) for q in pages)
    assert listing_cache_path(C.API, tmp_path / "fresh").is_file()
    forest = find_dataset(datasets, C.FOREST)
    assert forest.source == "EEA" and forest.cut_to_order and forest.crs == ("EPSG:3035",)
    assert C.TILE in [f.file for f in forest.downloadable_files]
    assert C.NOT_DOWNLOADABLE in [f.file for f in forest.files if not f.downloadable]
    assert find_dataset(datasets, C.SWI).auxiliary and find_dataset(datasets, "global-dynamic-land-cover").auxiliary
    # the grant: a form with the JWT-bearer grant type, a bearer token used at once
    assert mine.auth.grants == 1
    assert flow(cas)[3:] == [("POST", "@@oauth2-token", 200), ("GET", "@datarequest_status_get", 404),
                             ("POST", "@@oauth2-token", 400)]
    grant = parse_qs(cas.requests[3].body.decode() if isinstance(cas.requests[3].body, bytes) else cas.requests[3].body)
    assert grant == {"grant_type": [JWT_BEARER], "assertion": [PLACEHOLDER]}
    assert cas.requests[4].headers["Authorization"] == PLACEHOLDER
    # a refused grant carries the server's status and message, and nothing secret
    assert refused.value.status == 400 and C.REFUSED_GRANT in refused.value.message
    assert "eyJ" not in str(refused.value) and "PRIVATE KEY" not in str(refused.value)


def test_grant_matching_ignores_the_assertion_but_not_the_grant_type(replay: Callable[..., Any], keys: dict[str, Path]) -> None:
    """Assertions signed by other keys, at other times, or not JWTs at all are all the recorded grant."""
    other = json.loads(keys["other"].read_text())
    assertions = [
        jwt.encode({"iss": "a", "sub": "b", "aud": C.TOKEN_URI, "iat": 1, "exp": 2}, other["private_key"], algorithm="RS256"),
        jwt.encode({"iss": "c", "sub": "d", "aud": C.TOKEN_URI, "iat": 2_000_000_000, "exp": 2_000_003_600},
                   other["private_key"], algorithm="RS256"),
        "not-even-a-jwt",
    ]
    with replay("token_expiry", all_played=False):
        answers = [requests.post(C.TOKEN_URI, data={"grant_type": JWT_BEARER, "assertion": a}, timeout=5) for a in assertions]
        with pytest.raises(CannotOverwriteExistingCassetteException):
            requests.post(C.TOKEN_URI, data={"grant_type": "password", "assertion": "x"}, timeout=5)
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert all(r.json()["access_token"] == PLACEHOLDER for r in answers)


def test_prepackaged_file_is_queued_then_finished_then_downloaded_and_resumed(
    replay: Callable[..., Any], new_client: Callable[..., ClmsApiService], listing: list[ApiDataset]
) -> None:
    with replay("prepackaged_download") as cas:
        client = new_client()
        sent = watch(client)
        (hit,) = client.search(C.ONE_FILE)
        order = client.order(hit)
        polls = [client.poll(order), client.poll(order)]
        state, ready = client.poll(order)
        full = client.fetch(hit, order, 0)
        body = b"".join(full.iter_content(1024))
        rest = client.fetch(hit, order, C.RANGE_OFFSET)
        tail = rest.content
        with pytest.raises(OrderExpiredError, match="has expired") as dead:
            client.fetch(hit, order, 0)
    forest = find_dataset(listing, C.FOREST)
    file_id = next(f.id for f in forest.files if f.file == C.TILE)
    assert hit.name == C.TILE and hit.key == f"clms-{C.FOREST}-{C.TILE}" and hit.ordered
    assert hit.extra["items"] == [{"DatasetID": forest.uid, "FileID": file_id}]
    posted = json.loads(next(r.body for r in cas.requests if r.path.endswith("@datarequest_post")))
    assert posted == {"Datasets": [{"DatasetID": forest.uid, "FileID": file_id}]}
    assert order == "task-0001"
    assert polls == [("queued", None), ("running", None)]
    assert state == "done" and ready is not None and ready.name == f"clms-task-{order}.zip"
    assert ready.size == len(body) == int(full.headers["Content-Length"])
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None and zf.namelist()
    assert rest.status_code == 206 and tail == body[C.RANGE_OFFSET :]
    assert rest.headers["Content-Range"] == f"bytes {C.RANGE_OFFSET}-{len(body) - 1}/{len(body)}"
    assert dead.value.status == C.DEAD_LINK_STATUS and f"task {order}" in dead.value.message
    # the result link is a capability: fetched by its alias, never with the bearer token (API calls carry it)
    links = [r for r in sent if r.url.startswith(CAPABILITY_BASE)]
    assert [r.url for r in links] == [f"{CAPABILITY_BASE}/1"] * 3
    assert [r.headers.get("Range") for r in links] == [None, f"bytes={C.RANGE_OFFSET}-", None]
    assert not any("Authorization" in r.headers for r in links)
    api_calls = [r for r in sent if r.url.startswith(f"{C.API}/")]
    assert len(api_calls) == 5 and all(r.headers["Authorization"] == f"Bearer {PLACEHOLDER}" for r in api_calls)
    assert codes(cas, "1") == [200, 206, C.DEAD_LINK_STATUS]


def test_a_link_older_than_link_max_age_is_not_fetched(
    replay: Callable[..., Any], new_client: Callable[..., ClmsApiService]
) -> None:
    """The recorded task finished on 2026-01-01: with the default 24 h bound its link counts as dead."""
    with replay("prepackaged_download", all_played=False) as cas:
        client = new_client(link_max_age=24 * 3600.0)
        order = client.order(client.search(C.ONE_FILE)[0])
        assert client.poll(order) == ("queued", None)
        assert client.poll(order) == ("running", None)
        with pytest.raises(OrderExpiredError, match="link_max_age") as old:
            client.poll(order)
    assert not any(cas.play_counts[i] for i, r in enumerate(cas.requests) if r.uri.startswith(CAPABILITY_BASE))
    assert f"task {order}" in old.value.message  # the engine orders again, once


def test_duplicated_answer_finds_and_reuses_the_queued_task(
    replay: Callable[..., Any], new_client: Callable[..., ClmsApiService]
) -> None:
    registered = FIXED_STAMP.timestamp()  # the recorded task's RegistrationDateTime
    with replay("duplicated_reuse") as cas:
        first = new_client()
        product = first.search(C.CUT)[0]
        task = first.order(product)
        second = new_client()
        hit = second.search(C.CUT)[0]
        reused = second.order(hit)
        # after a lost order answer the engine asks find_order: only a task registered since the attempt began counts
        since_before = second.find_order(hit, registered - 60.0)
        since_after = second.find_order(hit, registered + C.FIND_LATER)
    assert task == reused == since_before == "task-0001" and since_after is None
    assert hit == product  # the same cut is the same hit (and the same store key) for every client
    assert hit.ordered and hit.key.startswith(f"clms-{C.FOREST}")
    search, post = ("GET", "@datarequest_search"), ("POST", "@datarequest_post")
    assert flow(cas) == [
        ("POST", "@@oauth2-token", 200),
        (*search, 200), (*post, 201),
        ("POST", "@@oauth2-token", 200),
        (*search, 400), (*post, 400),
        (*search, 200),  # the DUPLICATED refusal: look again, finished tasks included (it may be done)
        *[(*search, 200)] * 2,  # find_order, twice
    ]
    searches = [parse_qs(urlsplit(r.uri).query) for r in cas.requests if r.path.endswith("@datarequest_search")]
    assert searches == [{}] * 5  # one listing, no status filter (a case-sensitive filter would miss QUEUED tasks)
    assert C.DUPLICATED in answer(cas, 5)["msg"] and C.SEARCH_DOWN in answer(cas, 4)["message"]
    found = answer(cas, 6)
    assert list(found) == [task] and found[task]["Status"] == "Queued"
    assert items_hash(found[task]["Datasets"]) == items_hash(product.extra["items"])  # how the task was recognised
    assert found[task]["RegistrationDateTime"].startswith(FIXED_STAMP.strftime("%Y-%m-%dT%H:%M"))
    (item,) = json.loads(cas.requests[2].body)["Datasets"]
    assert item["OutputGCS"] == "EPSG:3035" and item["BoundingBox"] == [5.0, 45.0, 10.0, 50.0] and "FileID" not in item


def test_terminal_failures_carry_the_status_and_the_server_message(
    replay: Callable[..., Any], new_client: Callable[..., ClmsApiService]
) -> None:
    failures = []
    with replay("terminal_failure"):
        client = new_client()
        (hit,) = client.search(C.ONE_FILE)
        for _ in range(2):
            order = client.order(hit)  # the first, failed task is not reused
            assert client.poll(order) == ("queued", None)
            with pytest.raises(OrderFailedError) as failed:
                client.poll(order)
            failures.append((order, failed.value))
    (nok_id, nok), (rejected_id, rejected) = failures
    assert (nok_id, rejected_id) == ("task-0001", "task-0002")
    assert nok.service == "clms" and f"task {nok_id} ended Finished_nok: {C.NOK_MESSAGE}" in nok.message
    assert rejected.service == "clms" and f"task {rejected_id} ended Rejected: {C.REJECTED_MESSAGE}" in str(rejected)
    assert isinstance(nok, ServiceError) and isinstance(rejected, ServiceError)  # what callers of any service catch


def test_an_expired_token_is_granted_again_and_the_call_resent(
    replay: Callable[..., Any], new_client: Callable[..., ClmsApiService]
) -> None:
    with replay("token_expiry") as cas:
        client = new_client()
        order = client.order(client.search(C.ONE_FILE)[0])
        assert client.poll(order) == ("queued", None)  # 401 -> grant -> resent
        assert client.poll(order) == ("queued", None)  # 200 "You need to be logged in" -> grant -> resent
    assert client.auth.grants == 3
    statuses = [(name, code) for _, name, code in flow(cas) if name in ("@@oauth2-token", "@datarequest_status_get")]
    assert statuses == [
        ("@@oauth2-token", 200),
        ("@datarequest_status_get", 401), ("@@oauth2-token", 200), ("@datarequest_status_get", 200),
        ("@datarequest_status_get", 200), ("@@oauth2-token", 200), ("@datarequest_status_get", 200),
    ]
    login = [answer(cas, i) for i, (_, name, _) in enumerate(flow(cas)) if name == "@datarequest_status_get"]
    assert "logged in" in login[0]["msg"] and "logged in" in login[2]["msg"]
    assert login[1]["Status"] == login[3]["Status"] == "Queued"


def test_cancel_204_ends_the_task_and_the_swapped_403_404_refusals_raise(
    replay: Callable[..., Any], new_client: Callable[..., ClmsApiService]
) -> None:
    with replay("cancel") as cas:
        mine = new_client()
        sent = watch(mine)
        order = mine.order(mine.search(C.ONE_FILE)[0])
        assert mine.poll(order) == ("queued", None)
        assert mine.cancel(order) is None  # 204
        with pytest.raises(OrderFailedError) as ended:  # a cancelled task is terminal, like any other
            mine.poll(order)
        with pytest.raises(ServiceError) as unknown:
            mine.cancel(C.UNKNOWN_TASK)  # 403 "TaskID not registered"
        other = new_client("other")
        theirs = other.order(other.search(C.ONE_FILE)[0])
        with pytest.raises(ServiceError) as denied:
            mine.cancel(theirs)  # 404 "permission denied"
        assert other.poll(theirs) == ("queued", None)  # a refused cancel leaves the task live
    assert (order, theirs) == ("task-0001", "task-0002")
    deletes = [(json.loads(r.body), a["status"]["code"], a) for r, a in zip(cas.requests, cas.responses)
               if r.method == "DELETE"]
    assert [(body["TaskID"], code) for body, code, _ in deletes] == [(order, 204), (C.UNKNOWN_TASK, 403), (theirs, 404)]
    assert "TaskID not registered" in _text(deletes[1][2]["body"])
    assert "permission denied" in _text(deletes[2][2]["body"])
    assert [r.headers.get("Authorization") for r in sent if r.method == "DELETE"] == [f"Bearer {PLACEHOLDER}"] * 3
    assert f"task {order} ended Cancelled" in ended.value.message and ended.value.service == "clms"
    assert (unknown.value.status, denied.value.status) == (403, 404)
    assert "TaskID not registered" in unknown.value.message and "permission denied" in denied.value.message
    assert unknown.value.service == denied.value.service == "clms"
    cancelled = answer(cas, 5)
    assert cancelled["Status"] == "Cancelled" and cancelled["FinalizationDateTime"].endswith("+00:00")


def test_auxiliary_api_lists_file_urls_and_one_file_is_fetched(
    replay: Callable[..., Any], new_client: Callable[..., ClmsApiService], listing: list[ApiDataset]
) -> None:
    with replay("auxiliary") as cas:
        client = new_client()
        sent = watch(client)
        tiles = client.search(C.LANDCOVER)
        tile = client.fetch(tiles[-1], None, 0)  # a direct hit: fetched at once, no order and no poll
        data = tile.content
        days = client.search(C.LEGACY)
        with pytest.raises(ServiceError) as empty:
            client.search(C.LEGACY_EMPTY)
    landcover = find_dataset(listing, "global-dynamic-land-cover")
    lists = [parse_qs(urlsplit(r.uri).query) for r in cas.requests if r.path.endswith("@get-download-file-urls")]
    assert lists[0]["dataset_uid"] == [landcover.uid] and lists[0]["download_information_id"] == [landcover.infos[0].id]
    assert [lists[0][k][0] for k in ("x_min", "y_min", "x_max", "y_max")] == ["5.000000", "45.000000", "10.000000", "50.000000"]
    assert [(q["date_from"][0], q["date_to"][0]) for q in lists[1:]] == [("2020-01-01", "2020-01-31"), ("1990-01-01", "1990-01-31")]
    assert len(answer(cas, 1)) == C.LANDCOVER_LISTED  # every year of the tile is listed...
    assert [p.start[:4] for p in tiles] == C.LANDCOVER_KEPT  # ...the years asked for are kept
    assert all(not t.ordered for t in tiles) and tiles[-1].extra["url"].startswith(f"{FIXED_BASE}/files/")
    assert tiles[-1].name == tiles[-1].extra["url"].rsplit("/", 1)[-1] and tiles[-1].key.startswith("clms-global-dynamic-land-cover-")
    assert tile.status_code == 200 and len(data) == int(tile.headers["Content-Length"]) > 0
    assert data[:4] in (b"II*\x00", b"MM\x00*")  # a GeoTIFF
    (fetched,) = [r for r in sent if "/files/" in r.url]
    assert "Authorization" not in fetched.headers  # direct files get no token
    assert [p.start for p in days] == C.LEGACY_DAYS
    assert empty.value.status == 200 and C.NO_CONTENT in empty.value.message  # the API's 200 error object


def test_an_unrecorded_request_fails_instead_of_reaching_the_network(
    replay: Callable[..., Any], new_client: Callable[..., ClmsApiService]
) -> None:
    with replay("prepackaged_download", all_played=False):
        client = new_client()
        with pytest.raises(CannotOverwriteExistingCassetteException):
            client.poll("task-9999")


# --------------------------------------------------------------------------- what the cassettes hold


def _interactions(scenario: str) -> list[dict[str, Any]]:
    return load_cassette(cassette_path(C.SERVICE, scenario))["interactions"]


def _text(body: Any) -> str:
    if isinstance(body, dict):
        body = body.get("string")
    return body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")


def test_clms_cassettes_were_scrubbed_not_just_free_of_secrets() -> None:
    """Grants, tokens, bearer headers, user ids and result links were recorded, and are placeholders or aliases."""
    grants = tokens = bearers = users = links = 0
    for scenario in C.SCENARIOS:
        for item in _interactions(scenario):
            request, response = item["request"], item["response"]
            text = _text(response["body"])
            if request["uri"].endswith("/@@oauth2-token"):
                assert parse_qs(_text(request["body"]))["assertion"] == [PLACEHOLDER]
                grants += 1
                if response["status"]["code"] == 200:
                    assert json.loads(text)["access_token"] == PLACEHOLDER
                    tokens += 1
            elif request["uri"].startswith(f"{C.API}/") and "/@search" not in request["uri"]:  # the listing is anonymous
                assert request["headers"]["Authorization"] == [PLACEHOLDER]
                bearers += 1
            if '"UserID"' in text:
                assert all(t.get("UserID") == PLACEHOLDER for t in _tasks(json.loads(text)))
                users += 1
            if '"DownloadURL"' in text:
                assert all(t["DownloadURL"].startswith(CAPABILITY_BASE) for t in _tasks(json.loads(text)) if "DownloadURL" in t)
                links += 1
    assert grants >= len(C.SCENARIOS) + 3 and tokens >= len(C.SCENARIOS) + 2
    assert bearers > 30 and users > 10 and links >= 1


def _tasks(doc: Any) -> list[dict[str, Any]]:
    """The task objects of a status answer (one task) or a search answer (TaskID -> task)."""
    if isinstance(doc, dict) and "Status" in doc:
        return [doc]
    return [t for t in doc.values() if isinstance(t, dict)] if isinstance(doc, dict) else []


def test_clms_cassettes_hold_no_account_or_port_and_fixed_times() -> None:
    for scenario in C.SCENARIOS:
        text = cassette_path(C.SERVICE, scenario).read_text()
        for word in (DEFAULT_USER, C.OTHER_USER, "127.0.0.1", "/fme/", "BEGIN RSA"):
            assert word not in text, (scenario, word)
    stamps = [t.get(k) for item in _interactions("prepackaged_download") if '"Status"' in _text(item["response"]["body"])
              for t in _tasks(json.loads(_text(item["response"]["body"]))) for k in C.STAMP_KEYS if t.get(k)]
    assert stamps and all(s.startswith("2026-01-01T00:0") for s in stamps)


# the scanner knows the CLMS secrets: plant each in a copy of a real CLMS cassette



def _grant(doc: dict) -> dict:
    return next(i for i in doc["interactions"] if i["request"]["uri"].endswith("/@@oauth2-token"))


def _status(doc: dict) -> dict:
    return next(i for i in doc["interactions"] if "@datarequest_status_get" in i["request"]["uri"])


def _plant_assertion(doc: dict) -> None:
    _grant(doc)["request"]["body"] = f"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={JWT_SAMPLE}"


def _plant_opaque_assertion(doc: dict) -> None:
    _grant(doc)["request"]["body"] = "grant_type=x&assertion=opaque0123456789"


def _plant_access_token(doc: dict) -> None:
    _grant(doc)["response"]["body"]["string"] = json.dumps({"access_token": "Zk9vYmFyYmF6cXV4MTIz", "expires_in": 3600})


def _plant_bearer(doc: dict) -> None:
    _status(doc)["request"]["headers"]["Authorization"] = ["Bearer Zk9vYmFyYmF6cXV4MTIz"]


def _plant_private_key(doc: dict) -> None:
    _status(doc)["response"]["body"]["string"] = json.dumps({"note": PEM_SAMPLE})


def _plant_client_id(doc: dict) -> None:
    _status(doc)["response"]["body"]["string"] = json.dumps({"client_id": "5b0e2a4c-0f7e-4c8e-9a55-2f1d2b6a7c11"})


def _plant_user_id(doc: dict) -> None:
    _status(doc)["response"]["body"]["string"] = json.dumps({"Status": "Queued", "UserID": "someone.real"})


def _plant_download_url(doc: dict) -> None:
    _status(doc)["response"]["body"]["string"] = json.dumps({"DownloadURL": "https://fme.example.eu/fme/s3cr3t/1.zip"})


def _plant_fme_link_in_text(doc: dict) -> None:
    _status(doc)["response"]["body"]["string"] = "see http://sandbox.invalid/fme/Zk9vYmFy/4001.zip for the result"


def _plant_fme_uri(doc: dict) -> None:
    doc["interactions"][-1]["request"]["uri"] = "http://sandbox.invalid/fme/Zk9vYmFyYmF6/4001.zip"


def _plant_sandbox_user(doc: dict) -> None:
    _status(doc)["response"]["headers"]["X-User"] = [DEFAULT_USER]


PLANTS = {
    "assertion jwt": (_plant_assertion, "a JWT"),
    "opaque assertion": (_plant_opaque_assertion, "'assertion'"),
    "access token": (_plant_access_token, "'access_token'"),
    "bearer header": (_plant_bearer, "header Authorization"),
    "private key": (_plant_private_key, "PEM"),
    "client id": (_plant_client_id, "'client_id'"),
    "user id": (_plant_user_id, "'UserID'"),
    "download url": (_plant_download_url, "DownloadURL"),
    "fme link in text": (_plant_fme_link_in_text, "capability download link"),
    "fme uri": (_plant_fme_uri, "capability download link"),
    "sandbox user": (_plant_sandbox_user, "sandbox credential"),
}


@pytest.mark.parametrize("plant", PLANTS, ids=list(PLANTS))
def test_the_scan_finds_a_planted_clms_secret(plant: str, tmp_path: Path) -> None:
    source = cassette_path(C.SERVICE, "prepackaged_download")
    copy = tmp_path / source.name
    shutil.copyfile(source, copy)
    assert scan_cassette(copy) == []  # control: clean before planting
    doc = load_cassette(copy)
    mutate, expected = PLANTS[plant]
    mutate(doc)
    copy.write_text(yaml.dump(doc, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper)))
    findings = scan_cassette(copy)
    assert any(expected in f for f in findings), findings


def test_the_scan_finds_run_secrets_it_is_given(tmp_path: Path) -> None:
    """The recorder scans for the tokens its run handed out: a token seen verbatim anywhere is found."""
    source = cassette_path(C.SERVICE, "prepackaged_download")
    assert scan_cassette(source, ["an-issued-token-0123456789"]) == []
    copy = tmp_path / source.name
    copy.write_text(source.read_text().replace("Download process", "an-issued-token-0123456789"))
    assert scan_cassette(copy, ["an-issued-token-0123456789"])


# the hooks themselves: the grant form, capability paths, timestamps


def test_the_scrubber_keeps_the_grant_type_and_aliases_fme_links() -> None:
    scrubber = Scrubber()
    form = f"grant_type={JWT_BEARER}&assertion={JWT_SAMPLE}".encode()
    assert parse_qs(scrubber.body(form, "application/x-www-form-urlencoded").decode()) == {
        "grant_type": [JWT_BEARER], "assertion": [PLACEHOLDER]}
    link = "http://sandbox.invalid/fme/Zk9vYmFy/4001.zip"
    assert scrubber.url(link) == f"{CAPABILITY_BASE}/1" == scrubber.url(link)  # stable, so a replay can ask for it
    assert scrubber.text(f"moved to {link}") == f"moved to {CAPABILITY_BASE}/1"
    assert scrubber.json({"UserID": DEFAULT_USER, "client_id": "x", "Status": "Queued"}) == {
        "UserID": PLACEHOLDER, "client_id": PLACEHOLDER, "Status": "Queued"}
    assert scrubber.url("http://sandbox.invalid/files/legacy/x/2020/a.nc") == "http://sandbox.invalid/files/legacy/x/2020/a.nc"


def test_the_normalizer_fixes_task_times_keeping_naive_or_aware() -> None:
    norm = Normalizer("http://127.0.0.1:1234", ("TaskID",), "task", C.STAMP_KEYS)
    doc = {"98765432101": {"RegistrationDateTime": "2026-11-21T11:35:53.795727", "Status": "Finished_ok",
                           "FinalizationDateTime": "2026-11-21T11:45:53.795727+00:00",
                           "DownloadURL": "http://127.0.0.1:1234/fme/x/1.zip"},
           "TaskIds": [{"TaskID": "98765432101"}]}
    response = {"headers": {"Content-Type": ["application/json"]}, "body": {"string": json.dumps(doc).encode()}}
    out = json.loads(norm.response(response)["body"]["string"])
    task = out["task-0001"]
    assert task["RegistrationDateTime"] == FIXED_STAMP.replace(tzinfo=None).isoformat()
    assert task["FinalizationDateTime"] == "2026-01-01T00:01:00+00:00"
    assert task["DownloadURL"].startswith("http://sandbox.invalid/fme/")
