"""The no-argument call of a global entry is refused before any order, after a few catalogue pages.

Issue 16, item 4: ``max_products`` is decided while searching, not after listing
everything.  Each service is asked through the real client against the sandbox,
with the sandbox's own pages and with small pages (``page_cap``: a server whose
pages hold 5 items), where a client that read every page would need tens of
requests: each test counts what the refusal cost on the wire (catalogue pages,
and nothing else: no order, no download) and, with small pages, how many pages
the whole listing takes, so a client that paged through everything fails here.
No timings (``bench/refusal_bench.py`` times the same calls at 50 ms latency).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from intake_clms.errors import ParameterError, TooManyProductsError
from intake_clms.sandbox import Sandbox, clms_api
from intake_clms.params import Request
from intake_clms.services import connector
from intake_clms.services.cdse.search import build_filter
from intake_clms.services.clms_api.listing import PAGE_SIZE as CLMS_LISTING_PAGE
from intake_clms.source import ClmsSource

from sandbox.conftest import sandbox, sandbox_factory  # noqa: F401  (the shared sandbox fixtures)

NDVI = {"dataset_id": "EO:JRC:DAT:CLMS", "dataset_identifier": "ndvi_global_300m_10daily_v2"}  # 2020-07 to now
LANDCOVER = {"dataset_id": "global-dynamic-land-cover"}  # CLMS API, auxiliary files (direct URLs, no orders)
FAST = {"poll_first": 0.05, "poll_cap": 0.2, "poll_deadline": 30, "backoff": 0.01}
LIMIT = 20  # the default max_products
CAP = 5  # items per page of the small-pages server
#: what a refused call may ask for: credentials, terms, catalogue pages (never an order, a file or a listing of files)
ALLOWED = {("hda", "token"), ("hda", "dataset"), ("hda", "terms_accept"), ("hda", "search"), ("cdse", "products"),
           ("clms", "search"), ("clms", "token"), ("clms", "get_download_file_urls")}
CATALOGUE = {("hda", "search"), ("cdse", "products"), ("clms", "search"), ("clms", "get_download_file_urls")}
ORDERS = {("hda", "order"), ("clms", "datarequest_post")}


@pytest.fixture(params=[None, CAP], ids=["default-pages", "small-pages"])
def env(request: pytest.FixtureRequest, sandbox_factory: Any, tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """A sandbox (its own pages, or pages of ``CAP`` items) with the client's environment pointing at it."""
    sb = sandbox_factory(page_cap=request.param)
    for name, value in {**sb.env(), "INTAKE_CLMS_CACHE": str(tmp_path / "cache"), "HDA_RC": str(tmp_path / "no-hdarc"),
                        "NETRC": str(tmp_path / "no-netrc")}.items():
        monkeypatch.setenv(name, value)
    return sb


def calls(sb: Sandbox, since: int = 0) -> list[tuple[str, str]]:
    return [(e.service, e.endpoint) for e in sb.log.entries()[since:]]


def pages(seen: list[tuple[str, str]]) -> int:
    return sum(1 for c in seen if c in CATALOGUE)


def listing_size(sb: Sandbox, src: ClmsSource) -> int:
    """How many products the whole listing of a request holds, as the service's first page tells it (the
    refusal's total, asked with ``limit=0``; HDA's new ID gives no total unless it pages by totalResults;
    the CLMS API ignores the limit and answers with the whole list)."""
    hda = sb.ctx.state["hda"]
    shape, hda.paging = hda.paging, "totalResults"
    try:
        service = connector(src.request.service)({**src.options, "cache_dir": src.cache_dir}, threading.Event())
        return len(service.search(src.request, limit=0))  # a service whose one answer lists everything
    except TooManyProductsError as exc:
        return exc.total
    finally:
        hda.paging = shape


def assert_refused_on_the_catalogue(sb: Sandbox, seen: list[tuple[str, str]]) -> None:
    assert set(seen) <= ALLOWED, f"the refused call asked for more than the catalogue: {sorted(set(seen) - ALLOWED)}"
    assert not [c for c in seen if c in ORDERS]


# (id, service, source keywords, HDA paging shape): HDA's CDSE-backed new ID pages by nextIndex (no total), the live
# broker as eodag / hda 2.x see it by totalResults; CDSE counts ($count=true) whatever the access
CASES = [
    ("wekeo-nextIndex", "wekeo", {}, "nextIndex"),
    ("wekeo-totalResults", "wekeo", {}, "totalResults"),
    ("cdse-auto", "cdse", {}, None),
    ("cdse-download", "cdse", {"access": "download"}, None),
    ("cdse-window", "cdse", {"access": "window"}, None),
]


#: (pages, case): every case on small pages; on the sandbox's own pages, not the CDSE downloads and windows: their
#: refusal is the same first-page count as on small pages, and a first page of 22 products makes the sandbox build
#: 22 files (seconds of test time; the bench times them)
MATRIX = [(cap, case) for cap in (None, CAP) for case in CASES if cap is not None or "access" not in case[2]]


@pytest.mark.parametrize("env, service, kw, paging", [(cap, *case[1:]) for cap, case in MATRIX], indirect=["env"],
                         ids=[f"{'small' if cap else 'default'}-pages-{case[0]}" for cap, case in MATRIX])
def test_the_no_argument_global_call_is_refused_by_max_products_before_any_order(env, service, kw, paging):
    if paging is not None:
        env.ctx.state["hda"].paging = paging
    src = ClmsSource(**NDVI, service=service, **kw, **FAST)  # no bbox, no dates: the whole global series
    with pytest.raises(ParameterError, match=r"^max_products: ") as info:
        src.to_dask()
    message = str(info.value)
    assert f"more than max_products={LIMIT}" in message and "--max-products" in message and "raise max_products" in message
    seen = calls(env)
    assert_refused_on_the_catalogue(env, seen)
    cap = env.ctx.page_cap
    # one page, except where the server gives no total: then pages until more than the limit are found
    expected = math.ceil((LIMIT + 1) / cap) if cap is not None and paging == "nextIndex" else 1
    assert pages(seen) == expected
    products = listing_size(env, src)
    assert products > LIMIT  # the request really is over the limit
    if cap is not None:  # a client that read every page would have sent at least this many requests
        everything = math.ceil(products / cap)
        assert everything > 10 and everything > 5 * pages(seen)


def test_the_clms_api_refuses_a_global_cut_to_order_call_after_the_listing_alone(env):
    """The CLMS API has no product paging: a cut-to-order request needs an area, refused once the dataset is found
    in the (dataset) listing, whose pages depend on the number of datasets, not on the products."""
    src = ClmsSource(**NDVI, service="clms", **FAST)
    with pytest.raises(ParameterError, match=r"^bbox: .*a cut-to-order request needs an area"):
        src.to_dask()
    seen = calls(env)
    assert_refused_on_the_catalogue(env, seen)
    datasets = len(clms_api.state(env.ctx).catalog(env.ctx))
    assert set(seen) == {("clms", "search")}
    assert pages(seen) == math.ceil(datasets / min(CLMS_LISTING_PAGE, env.ctx.page_cap or CLMS_LISTING_PAGE))


def test_the_clms_api_refuses_too_many_auxiliary_files_before_fetching_one(env):
    """A no-argument call of a global auxiliary-API dataset (the newest year's tiles of the default area) past
    max_products: one file-list request, no file fetched; the list is one answer (no pages to stop early on)."""
    src = ClmsSource(**LANDCOVER, service="clms", max_products=4, **FAST)
    with pytest.raises(ParameterError, match=r"^max_products: this request needs at least \d+ products") as info:
        src.to_dask()
    assert "--max-products" in str(info.value)
    seen = calls(env)
    assert_refused_on_the_catalogue(env, seen)
    assert seen.count(("clms", "get_download_file_urls")) == 1 and ("clms", "files") not in seen
    assert listing_size(env, src) > 4  # the whole list, in the one answer the refusal read


def run_cli(sb: Sandbox, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **sb.env(), "INTAKE_CLMS_CACHE": str(tmp_path / "cli-cache"), "HDA_RC": str(tmp_path / "no-hdarc"),
           "NETRC": str(tmp_path / "no-netrc")}
    return subprocess.run([sys.executable, "-m", "intake_clms.cli", "preload", "ndvi_global_300m_10daily_v2",
                           "--service", "cdse", "-q", *args], capture_output=True, text=True, env=env, timeout=120)


def test_the_cli_refuses_a_global_preload_with_the_max_products_advice(sandbox_factory, tmp_path):  # noqa: F811
    sb = sandbox_factory(page_cap=CAP)
    done = run_cli(sb, tmp_path)  # no area, no dates: refused before any request
    assert done.returncode == 2 and "--bbox, --start and --end are required" in done.stderr, done.stderr
    assert calls(sb) == []
    done = run_cli(sb, tmp_path, "--bbox", "-180,-90,180,90", "--start", "2020-01-01", "--end", "2030-12-31")
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()  # one line, no traceback
    assert f"max_products={LIMIT}" in line and "--max-products" in line
    seen = calls(sb)
    assert_refused_on_the_catalogue(sb, seen)
    assert pages(seen) == 1


def test_the_small_pages_server_cuts_each_catalogue_page_and_pages_on(sandbox_factory):  # noqa: F811
    """``page_cap`` (the sandbox setting these tests use): a larger page asked for holds ``CAP`` items, and the
    paging goes on from there (CDSE's nextLink; HDA's pages are counted above, the CLMS listing's too)."""
    import requests

    sb = sandbox_factory(page_cap=CAP)
    ask = {"$filter": build_filter(Request.build(**NDVI, service="cdse"), "nc"), "$top": "8"}
    body = requests.get(f"{sb.urls['cdse_odata']}/Products", params=ask, timeout=30).json()
    assert len(body["value"]) == CAP and "%24skip=5" in body["@odata.nextLink"]
    sb.ctx.page_cap = None
    body = requests.get(f"{sb.urls['cdse_odata']}/Products", params=ask, timeout=30).json()
    assert len(body["value"]) == 8 and "%24skip=8" in body["@odata.nextLink"]
