"""Record the vcrpy cassettes of the protocol-level tests from a sandbox, scrubbed and stable.

    python tests/cassettes/record.py [--service hda|clms|all] [--out DIR]

A sandbox (tiny products, fast clock, seed 0) runs in-process; our own client
code talks to it through vcrpy, one cassette per scenario under
``<out>/<service>/``.  Secrets are scrubbed by :mod:`scrub`, the port and random
ids made stable by :mod:`stable`, and every written cassette is scanned by
:mod:`scan` (the script fails if anything secret is left).  Queue waits are
made deterministic by jumping the sandbox clock rather than sleeping.

Adding a service is one function ``record_<service>(rec: Recorder) -> None``
registered in :data:`RECORDERS`; it opens ``rec.cassette("<service>", "<scenario>")``
around each protocol session.  Strings only the run knows (tokens handed out,
minted key ids) are added with :meth:`Recorder.add_secrets` (scrubbed and
scanned for) or :meth:`Recorder.add_scan_secrets` (scanned for after the run).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``cassettes`` importable from tests/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cassettes import clms_inputs as C  # noqa: E402
from cassettes import hda_inputs as H  # noqa: E402
from cassettes.replay import HERE, cassette_path, make_vcr  # noqa: E402
from cassettes.scan import scan_cassette  # noqa: E402
from cassettes.scrub import Scrubber, sandbox_secrets  # noqa: E402
from cassettes.stable import Normalizer  # noqa: E402

from intake_clms.sandbox import Sandbox  # noqa: E402

SANDBOX_SETTINGS: dict[str, Any] = {
    "size": "tiny",
    "seed": 0,
    "speed": 60.0,  # a fast clock, but...
    "queue_delay": 600.0,  # ...orders stay queued (10 s real) until the recorder jumps the clock
}
# the sandbox announces lifetimes in real seconds (sandbox seconds / speed): an hour-long token
SANDBOX_SETTINGS["token_lifetime"] = 3600.0 * SANDBOX_SETTINGS["speed"]


class Recorder:
    """One recording run: the sandbox, where cassettes go, and the secrets to scrub."""

    def __init__(self, sandbox: Sandbox, out: Path, extra_secrets: tuple[str, ...] = ()):
        self.sandbox = sandbox
        self.out = out
        self.secrets = sandbox_secrets() + list(extra_secrets)
        self.written: list[Path] = []
        self._late_secrets: list[Callable[[], Iterable[str]]] = []

    def add_secrets(self, *values: str) -> None:
        """Strings to scrub from the cassettes opened from now on (and to scan for)."""
        self.secrets += [v for v in values if v and v not in self.secrets]

    def add_scan_secrets(self, supplier: Callable[[], Iterable[str]]) -> None:
        """Strings only known once the run is over (e.g. every token handed out): scanned for, after it."""
        self._late_secrets.append(supplier)

    def scan_secrets(self) -> list[str]:
        """Everything the written cassettes must not contain, beyond the scanner's own rules."""
        late = [str(v) for supplier in self._late_secrets for v in supplier() if v]
        return sorted(set(self.secrets) | set(late))

    @contextlib.contextmanager
    def cassette(
        self,
        service: str,
        scenario: str,
        id_keys: tuple[str, ...] = (),
        id_prefix: str = "id",
        stamp_keys: tuple[str, ...] = (),
    ) -> Iterator[Any]:
        """Record one scenario afresh into ``<out>/<service>/<scenario>.yaml``."""
        path = cassette_path(service, scenario, self.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self.sandbox.faults.clear()
        normalizer = Normalizer(self.sandbox.ctx.base_url, id_keys, id_prefix, stamp_keys)
        recorder = make_vcr(record_mode="once", scrubber=Scrubber(self.secrets), normalizer=normalizer)
        with recorder.use_cassette(str(path)) as cas:
            yield cas
        self.written.append(path)


# --------------------------------------------------------------------------- HDA


def record_hda(rec: Recorder) -> None:
    """The WEkEO HDA sessions of our client (``WekeoService`` over ``HttpClient``)."""
    from intake_clms.services import wekeo
    from intake_clms.errors import CredentialsError, ServiceError
    from intake_clms.net.http import HttpClient
    from intake_clms.params import Request

    sb = rec.sandbox
    creds = sb.credentials["hda"]
    broker = sb.urls["hda_root"]

    def client(password: str | None = None) -> wekeo.WekeoService:
        http = HttpClient("wekeo", attempts=3, backoff=0.0)
        return wekeo.WekeoService(http, creds["username"], password or creds["password"], broker=broker)

    def cassette(scenario: str) -> Any:
        return rec.cassette(H.SERVICE, scenario, H.ID_KEYS, H.ID_PREFIX)

    def queue_done() -> None:
        sb.clock.advance(sb.ctx.queue_delay + 1)

    saved_page, wekeo.PAGE = wekeo.PAGE, H.PAGE
    try:
        with cassette("search_new_id"):
            found = client().search(H.NEW_ID)
            assert len(found) == H.NEW_ID_COUNT, found

        with cassette("search_old_id"):
            sb.ctx.state["hda"].old_keys = "required"  # the broker refuses an old-ID search without its keys
            found = client().search(H.OLD_ID)
            sb.ctx.state["hda"].old_keys = "optional"
            assert len(found) == H.OLD_ID_COUNT, found

        with cassette("order_poll_download"):
            c = client()
            hit = c.search(H.ONE)[0]
            order = c.order(hit)
            assert c.poll(order) == ("running", None)
            queue_done()
            state, ready = c.poll(order)
            assert state == "done" and ready and ready.size, (state, ready)
            body = c.fetch(hit, order, 0).content
            assert len(body) == ready.size > H.RANGE_OFFSET, (len(body), ready)
            rest = c.fetch(hit, order, H.RANGE_OFFSET)
            assert rest.status_code == 206 and rest.content == body[H.RANGE_OFFSET :]

        with cassette("token_renewal"):
            c = client()
            product = c.search(H.ONE)[0]
            # an order refused with 403 -> refresh refused too -> a new login -> the order goes through
            sb.faults.add("status", "hda", "order", status=403, message=H.REVOKED_MESSAGE)
            sb.faults.add("status", "hda", "refresh", status=400, message=H.REFRESH_REFUSED_MESSAGE)
            order = c.order(product)
            assert c.poll(order) == ("running", None)
            # the token expires during the queue wait: 401 -> refresh -> the poll goes through
            queue_done()
            sb.faults.add("token_expiry", "hda", "download_head")
            state, _ = c.poll(order)
            assert state == "done", state

        with cassette("order_failure"):
            c = client()
            product = c.search(H.ONE)[0]
            sb.faults.add("terminal_failure", "hda", "order", message=H.FAILURE_MESSAGE)
            order = c.order(product)
            assert c.poll(order) == ("running", None)
            queue_done()
            try:
                c.poll(order)
            except ServiceError as exc:
                assert H.FAILURE_MESSAGE in exc.message, exc
            else:
                raise AssertionError("the failed order was not reported")

        with cassette("error_message"):
            unknown = Request.build(H.UNKNOWN_DATASET, None, bbox=H.ONE.bbox, start="2024-01-01", end="2024-12-31")
            try:
                client().search(unknown)
            except ServiceError as exc:
                assert exc.status == 404, exc
            else:
                raise AssertionError("an unknown dataset was found")
            try:
                client(password=H.WRONG_PASSWORD).search(H.ONE)
            except CredentialsError:
                pass
            else:
                raise AssertionError("wrong credentials were accepted")

        with cassette("retry_5xx"):
            c = client()
            sb.faults.add("status", "hda", "search", times=H.UNAVAILABLE_TIMES, status=503, message=H.UNAVAILABLE_MESSAGE, retry_after=0)
            assert len(c.search(H.ONE)) == 2
    finally:
        wekeo.PAGE = saved_page


# --------------------------------------------------------------------------- CLMS download API


def _raises(error: type[BaseException], call: Callable[[], Any], *words: str) -> BaseException:
    """The error ``call`` raised (checked to be ``error`` and to mention every word); fails otherwise."""
    try:
        call()
    except error as exc:
        missing = [w for w in words if w not in str(exc)]
        assert not missing, (missing, exc)
        return exc
    raise AssertionError(f"{call} did not raise {error.__name__}")


def record_clms(rec: Recorder) -> None:
    """The CLMS download API sessions of our client (``ClmsApiService`` + ``ClmsAuth`` over ``HttpClient``)."""
    from intake_clms.services.clms_api.listing import ApiDataset, fetch_listing
    from intake_clms.errors import ServiceError
    from intake_clms.errors import OrderExpiredError, OrderFailedError
    from intake_clms.services.clms_api.auth import GrantRefusedError
    from intake_clms.sandbox import clms_api

    sb = rec.sandbox
    api = sb.urls["clms_api"]
    work = Path(sb.data_dir) / "cassette-clients"
    key_path = Path(sb.env()["CLMS_SERVICE_KEY"])
    key = json.loads(key_path.read_text())
    other_path = clms_api.mint_service_key(sb.ctx, work / "other-key.json", user_id=C.OTHER_USER)
    other = json.loads(other_path.read_text())
    # the sandbox's client_id with a key it does not know: the grant is refused (signature)
    wrong_path = C.write_key(work / "wrong-key.json", client_id=key["client_id"], user_id=key["user_id"],
                             token_uri=key["token_uri"], private_pem=C.new_private_pem())
    rec.add_secrets(key["client_id"], key["key_id"], key["user_id"], other["client_id"], other["key_id"], C.OTHER_USER)
    st = clms_api.state(sb.ctx)
    rec.add_scan_secrets(lambda: [*st.tokens, *st.links])  # every access token and result-link token handed out

    listing: list[ApiDataset] = []
    caches = itertools.count(1)

    def client(path: Path = key_path) -> Any:
        """A client of its own (a fresh cache dir), starting with the listing in its disk cache."""
        cache = work / f"cache-{next(caches)}"
        C.seed_listing(cache, api, listing)
        return C.client(api, path, cache)

    def cassette(scenario: str) -> Any:
        with st.lock:  # every scenario starts from accounts without tasks: no reuse across scenarios
            st.tasks.clear()
        return rec.cassette(C.SERVICE, scenario, C.ID_KEYS, C.ID_PREFIX, C.STAMP_KEYS)

    def later(fraction: float = 1.0) -> None:
        sb.clock.advance(sb.ctx.queue_delay * fraction + 1)

    with cassette("grant_listing"):
        listing[:] = fetch_listing(api, cache_dir=work / "listing", page_size=C.LISTING_PAGE)
        assert len(listing) == C.LISTING_COUNT, len(listing)
        _raises(OrderExpiredError, lambda: client().poll(C.UNKNOWN_TASK), "unknown to the server")
        refused = _raises(GrantRefusedError, lambda: client(wrong_path).poll(C.UNKNOWN_TASK), C.REFUSED_GRANT)
        assert getattr(refused, "status", None) == 400, refused

    with cassette("prepackaged_download"):
        c = client()
        (hit,) = c.search(C.ONE_FILE)
        order = c.order(hit)
        assert c.poll(order) == ("queued", None)
        later(0.5)
        assert c.poll(order) == ("running", None)
        later(0.5)
        state, ready = c.poll(order)
        assert state == "done" and ready is not None and ready.size, (state, ready)
        body = c.fetch(hit, order, 0).content
        assert len(body) == ready.size > C.RANGE_OFFSET, (len(body), ready)
        rest = c.fetch(hit, order, C.RANGE_OFFSET)
        assert rest.status_code == 206 and rest.content == body[C.RANGE_OFFSET :]
        sb.faults.add("expired_link", "clms", "fme", status=C.DEAD_LINK_STATUS)
        _raises(OrderExpiredError, lambda: c.fetch(hit, order, 0), "has expired")

    with cassette("duplicated_reuse"):
        before = sb.clock.now() - 60.0  # the sandbox clock stamps the task
        first = client()  # another client of the same user (a second process, the portal)
        task = first.order(first.search(C.CUT)[0])
        second = client()
        hit = second.search(C.CUT)[0]
        # the first look for a live task fails, so the post goes out and is refused as DUPLICATED
        sb.faults.add("status", "clms", "datarequest_search", status=400, message=C.SEARCH_DOWN)
        assert second.order(hit) == task
        # after a lost answer the engine asks find_order: the task is found if registered since the attempt began
        assert second.find_order(hit, before) == task
        assert second.find_order(hit, sb.clock.now() + C.FIND_LATER) is None

    with cassette("terminal_failure"):
        c = client()
        (hit,) = c.search(C.ONE_FILE)
        for status, message in (("Finished_nok", C.NOK_MESSAGE), ("Rejected", C.REJECTED_MESSAGE)):
            sb.faults.add("terminal_failure", "clms", "datarequest_post", status=status, message=message)
            order = c.order(hit)  # the failed task of the first round is not reused
            assert c.poll(order) == ("queued", None)
            later()
            _raises(OrderFailedError, lambda: c.poll(order), f"ended {status}: {message}")

    with cassette("token_expiry"):
        c = client()
        order = c.order(c.search(C.ONE_FILE)[0])
        sb.faults.add("token_expiry", "clms", "datarequest_status_get")  # 401
        assert c.poll(order) == ("queued", None)
        sb.faults.add("token_expiry", "clms", "datarequest_status_get", answer=200)  # the add-on's "log in" body
        assert c.poll(order) == ("queued", None)
        assert c.auth.grants == 3, c.auth.grants

    with cassette("cancel"):
        c = client()
        order = c.order(c.search(C.ONE_FILE)[0])
        assert c.poll(order) == ("queued", None)
        assert c.cancel(order) is None  # 204
        _raises(OrderFailedError, lambda: c.poll(order), f"task {order} ended Cancelled")
        _raises(ServiceError, lambda: c.cancel(C.UNKNOWN_TASK), "TaskID not registered")  # 403 (sic)
        theirs_client = client(other_path)
        theirs = theirs_client.order(theirs_client.search(C.ONE_FILE)[0])
        _raises(ServiceError, lambda: c.cancel(theirs), "permission denied")  # 404 (sic)
        assert theirs_client.poll(theirs) == ("queued", None)

    with cassette("auxiliary"):
        c = client()
        tiles = c.search(C.LANDCOVER)
        assert [p.start[:4] for p in tiles] == C.LANDCOVER_KEPT, tiles
        assert tiles[-1].access == "direct", tiles[-1]  # fetched at once: no order, no poll
        assert c.fetch(tiles[-1], None, 0).content[:4] in (b"II*\x00", b"MM\x00*")
        days = c.search(C.LEGACY)
        assert [p.start for p in days] == C.LEGACY_DAYS, days
        _raises(ServiceError, lambda: c.search(C.LEGACY_EMPTY), C.NO_CONTENT)


#: service name -> the function recording its scenarios.
RECORDERS: dict[str, Callable[[Recorder], None]] = {"hda": record_hda, "clms": record_clms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Record the protocol cassettes from a sandbox (scrubbed, stable).")
    parser.add_argument("--service", choices=[*RECORDERS, "all"], default="all", help="which service's scenarios (default all)")
    parser.add_argument("--out", type=Path, default=HERE, help=f"cassette root (default {HERE})")
    args = parser.parse_args(argv)
    services = list(RECORDERS) if args.service == "all" else [args.service]
    with tempfile.TemporaryDirectory(prefix="intake-clms-cassettes-") as data_dir:
        with Sandbox(data_dir=data_dir, **SANDBOX_SETTINGS) as sb:
            rec = Recorder(sb, args.out, extra_secrets=(H.WRONG_PASSWORD,))
            for service in services:
                RECORDERS[service](rec)
    failures = 0
    secrets = rec.scan_secrets()
    for path in rec.written:
        findings = scan_cassette(path, secrets)
        failures += len(findings)
        status = "ok" if not findings else f"{len(findings)} finding(s)"
        print(f"{path.relative_to(args.out) if path.is_relative_to(args.out) else path}  {path.stat().st_size:>7} B  {status}")
        for finding in findings:
            print(f"    {finding}")
    if failures:
        print(f"the scan found {failures} secret(s): do not commit these cassettes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
