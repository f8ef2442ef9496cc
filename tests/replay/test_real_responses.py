"""Replay every recorded answer of the real services (``<repo>/../shared/data/real-responses/``, see its INDEX.md)
through the parsers it belongs to, and check what they must yield.  Bodies made by the services, not by us: a
misreading of a real protocol shows up here, where the sandbox (written by us) cannot reveal it.  Small answers
that a client fetches (OData Nodes) are served over real loopback HTTP to the client code that reads them."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from intake_clms.services.clms_api.listing import FORMAT_CONVERSION, canonical_format, parse_listing
from intake_clms.config import DEFAULTS
from intake_clms.errors import CredentialsError
from intake_clms.net.http import HttpClient, server_message
from intake_clms.sandbox.clms_api import OUTPUT_GCS
from intake_clms.services.cdse.budget import Budget
from intake_clms.services.cdse.hosts import is_trusted, trusted_hosts
from intake_clms.services.cdse.search import Catalogue, attributes, checksums, footprint, product_format
from intake_clms.services.clms_api import ACTIVE, task_status, parse_stamp
from intake_clms.services.clms_api.auth import load_service_key
from intake_clms.services.clms_api.items import item_key, items_hash

ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real-responses"
pytestmark = pytest.mark.skipif(not ROOT.is_dir(), reason=f"no recorded answers at {ROOT} (../shared next to the repo)")

#: Every recorded file and the test that replays it: a new recording fails test_every_recording_is_replayed.
COVERED = {
    "INDEX.md", "cdse/odata-products-page.json", "cdse/nodes-listing.json", "cdse/openid-configuration.json",
    "clms/authentication-access-token-request.req", "clms/authentication-access-token-request.resp",
    "clms/authentication-use-access-token.req", "clms/download-available-conversions.req",
    "clms/download-available-conversions.resp", "clms/download-available-projections.req",
    "clms/download-available-projections.resp", "clms/download-request-delete.req", "clms/download-request-delete.resp",
    "clms/download-request-download-bbox.req", "clms/download-request-download-bbox.resp",
    "clms/download-request-download-finished.req", "clms/download-request-download-finished.resp",
    "clms/download-request-download-in-progress.req", "clms/download-request-download-in-progress.resp",
    "clms/download-request-download-nuts.req", "clms/download-request-download-nuts.resp",
    "clms/download-request-download-status.req", "clms/download-request-download-status.resp",
    "clms/download-search-datasets.req", "clms/download-search-datasets.resp", "clms/service-key-token.json",
}


def resp(name: str) -> tuple[int, Any]:
    """(status, JSON body or None) of a recorded ``.resp`` (status line, headers, blank line, body)."""
    text = (ROOT / "clms" / name).read_text(encoding="utf-8")
    head, _, body = text.partition("\n\n")
    status = int(head.split()[1])
    return status, (json.loads(body) if body.strip() else None)


def test_every_recording_is_replayed() -> None:
    present = {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*") if p.is_file()}
    assert present <= COVERED, f"recorded answers without a replay test: {sorted(present - COVERED)}"


# --------------------------------------------------------------------------- CDSE


def test_odata_products_page() -> None:
    page = json.loads((ROOT / "cdse/odata-products-page.json").read_text())
    assert "%24skip=2" in page["@odata.nextLink"] and page["@odata.nextLink"].startswith("https://")
    for p in page["value"]:
        sums = checksums(p)
        assert len(sums["md5"]) == 32 and sums["md5"] == sums["md5"].lower()
        w, s, e, n = footprint(p)
        assert -180 <= w < e <= 180 and -90 <= s < n <= 90
        assert attributes(p)["tileId"] and isinstance(p["ContentLength"], int) and p["ContentLength"] > 0
        # no fileFormat attribute: the name's last "_" part (CLMS names end in _nc, _cog, ...)
        assert product_format(p) == p["Name"].rsplit("_", 1)[-1].lower()
        assert p["S3Path"].startswith("/eodata/")


@pytest.fixture
def served() -> Iterator[dict[str, Any]]:
    """A loopback HTTP server answering every GET with ``served["body"]`` (status ``served["status"]``)."""
    state: dict[str, Any] = {"status": 200, "body": b"{}", "paths": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            state["paths"].append(self.path)
            if state["status"] == 301 and len(state["paths"]) == 1:
                self.send_response(301)
                self.send_header("Location", "/moved" + self.path)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(state["body"])))
            self.end_headers()
            self.wfile.write(state["body"])

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/odata/v1"
    yield state
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status", [200, 301])
def test_nodes_listing_under_result_and_through_a_301(served: dict[str, Any], status: int) -> None:
    served["body"] = (ROOT / "cdse/nodes-listing.json").read_bytes()
    served["status"] = status
    recorded = json.loads(served["body"])
    assert "result" in recorded and "value" not in recorded
    cat = Catalogue(HttpClient("cdse", attempts=1), served["url"], Budget(1), threading.Event())
    nodes = cat.nodes("a-product-id", "NAME.SAFE")
    assert nodes == recorded["result"] and all(n["Id"] == n["Name"] for n in nodes)
    assert len(served["paths"]) == (2 if status == 301 else 1)


def test_openid_configuration_and_trusted_hosts() -> None:
    doc = json.loads((ROOT / "cdse/openid-configuration.json").read_text())
    assert doc["token_endpoint"] == DEFAULTS["CDSE_TOKEN_URL"]
    assert {"password", "refresh_token"} <= set(doc["grant_types_supported"])
    hosts = trusted_hosts({})
    assert is_trusted("https://zipper.dataspace.copernicus.eu/odata/v1/Products(x)/$value", hosts)
    assert is_trusted(doc["token_endpoint"], hosts)


# --------------------------------------------------------------------------- CLMS download API


def test_search_datasets_page() -> None:
    status, body = resp("download-search-datasets.resp")
    assert status == 200 and body["items_total"] == 198 and "b_start=25" in body["batching"]["next"]
    datasets = parse_listing(body["items"])
    assert len(datasets) == 25 and sum(len(d.infos) for d in datasets) == 45
    names = {i.name for d in datasets for i in d.infos}
    assert "RASTER (Part 2)" in names and "RASTER " not in names  # stray spaces trimmed
    for ds in datasets:
        labels = ds.info_labels()
        assert len(set(labels)) == len(labels) == len(ds.infos)  # every item has its own name ...
        for label, info in zip(labels, ds.infos):
            if info.requestable:  # ... and every item that can be requested is reachable by it
                assert ds.choose(label).default_info == info
        if ds.default_info is not None and any(i.requestable for i in ds.infos):
            assert ds.default_info.requestable
    formats = {i.format for d in datasets for i in d.infos}
    assert formats and all(f == "" or canonical_format(f) for f in formats)  # strings, {title, token} or null


def test_task_status_and_searches() -> None:
    _, task = resp("download-request-download-status.resp")
    assert task_status(task["Status"]) == "Finished_ok" and task["DownloadURL"].startswith("https://")
    assert parse_stamp(task["RegistrationDateTime"]) and parse_stamp(task["FinalizationDateTime"])
    for d in task["Datasets"]:
        assert base64.b64decode(d["DatasetPath"]).decode()
        assert item_key(d)["NUTS"] == d["NUTSID"]  # a NUTS item is recognised by its code
    _, finished = resp("download-request-download-finished.resp")
    _, running = resp("download-request-download-in-progress.resp")
    for tasks in (finished, running):
        for task_id, t in tasks.items():
            assert task_id.isdigit() and items_hash(t["Datasets"])
    states = {task_status(t["Status"]) for t in running.values()}
    assert states <= set(ACTIVE)
    t = next(iter(running.values()))
    assert "DownloadURL" not in t and "FinalizationDateTime" not in t
    stamp = item_key(t["Datasets"][0])["TemporalFilter"]
    assert stamp == ["2019-01-01 10:00:00", "2019-05-31 10:00:00"]  # the text the server stores, read as is
    assert task_status("QUEUED") == "Queued" and task_status("in_progress") == "In_progress"


def test_post_delete_conversions_projections_and_token() -> None:
    for name in ("download-request-download-bbox.resp", "download-request-download-nuts.resp"):
        status, body = resp(name)
        assert status == 201 and [t["TaskID"] for t in body["TaskIds"]] and body["ErrorTaskIds"] == []
    assert resp("download-request-delete.resp") == (204, None)
    _, table = resp("download-available-conversions.resp")
    for source, targets in FORMAT_CONVERSION.items():
        allowed = {k for k, v in table[source].items() if v}
        assert set(targets) == allowed, source
    _, projections = resp("download-available-projections.resp")
    assert list(OUTPUT_GCS) == projections
    _, token = resp("authentication-access-token-request.resp")
    assert token["token_type"] == "Bearer" and token["expires_in"] == 3600


def test_service_key_without_its_private_key_is_refused_clearly(tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text((ROOT / "clms/service-key-token.json").read_text())
    with pytest.raises(CredentialsError) as err:
        load_service_key(key)
    assert "private_key" in str(err.value)
