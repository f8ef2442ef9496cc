"""Record the vcrpy cassettes of the protocol-level tests from a sandbox, scrubbed and stable.

    python tests/cassettes/record.py [--service hda|all] [--out DIR]

A sandbox (tiny products, fast clock, seed 0) runs in-process; our own client
code talks to it through vcrpy, one cassette per scenario under
``<out>/<service>/``.  Secrets are scrubbed by :mod:`scrub`, the port and random
ids made stable by :mod:`stable`, and every written cassette is scanned by
:mod:`scan` (the script fails if anything secret is left).  Queue waits are
made deterministic by jumping the sandbox clock rather than sleeping.

Adding a service is one function ``record_<service>(rec: Recorder) -> None``
registered in :data:`RECORDERS`; it opens ``rec.cassette("<scenario>")`` around
each protocol session.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``cassettes`` importable from tests/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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

    @contextlib.contextmanager
    def cassette(self, service: str, scenario: str, id_keys: tuple[str, ...] = (), id_prefix: str = "id") -> Iterator[Any]:
        """Record one scenario afresh into ``<out>/<service>/<scenario>.yaml``."""
        path = cassette_path(service, scenario, self.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self.sandbox.faults.clear()
        normalizer = Normalizer(self.sandbox.ctx.base_url, id_keys, id_prefix)
        recorder = make_vcr(record_mode="once", scrubber=Scrubber(self.secrets), normalizer=normalizer)
        with recorder.use_cassette(str(path)) as cas:
            yield cas
        self.written.append(path)


# --------------------------------------------------------------------------- HDA


def record_hda(rec: Recorder) -> None:
    """The WEkEO HDA sessions of our client (``HdaClient`` over ``HttpClient``)."""
    from intake_clms.backends import hda
    from intake_clms.errors import CredentialsError, ServiceError
    from intake_clms.lifecycle.http import HttpClient
    from intake_clms.params import Request

    sb = rec.sandbox
    creds = sb.credentials["hda"]
    broker = sb.urls["hda_root"]

    def client(password: str | None = None) -> hda.HdaClient:
        http = HttpClient("wekeo", attempts=3, backoff=0.0)
        return hda.HdaClient(http, creds["username"], password or creds["password"], broker=broker)

    def cassette(scenario: str) -> Any:
        return rec.cassette(H.SERVICE, scenario, H.ID_KEYS, H.ID_PREFIX)

    def queue_done() -> None:
        sb.clock.advance(sb.ctx.queue_delay + 1)

    saved_page, hda.PAGE = hda.PAGE, H.PAGE
    try:
        with cassette("search_new_id"):
            found = client().search(H.NEW_ID)
            assert len(found) == H.NEW_ID_COUNT, found

        with cassette("search_old_id"):
            found = client().search(H.OLD_ID)
            assert len(found) == H.OLD_ID_COUNT, found

        with cassette("order_poll_download"):
            c = client()
            product = c.search(H.ONE)[0]
            order = c.order(product)
            assert c.poll(order) == ("running", None)
            queue_done()
            state, ready = c.poll(order)
            assert state == "done" and ready and ready.size, (state, ready)
            body = c.fetch(order, 0).content
            assert len(body) == ready.size > H.RANGE_OFFSET, (len(body), ready)
            rest = c.fetch(order, H.RANGE_OFFSET)
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
        hda.PAGE = saved_page


#: service name -> the function recording its scenarios.
RECORDERS: dict[str, Callable[[Recorder], None]] = {"hda": record_hda}


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
    for path in rec.written:
        findings = scan_cassette(path)
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
