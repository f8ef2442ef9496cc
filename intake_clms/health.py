"""`intake-clms doctor` and `intake_clms.doctor()`: is each service reachable with the credentials at hand?  One table, no secrets.

Why: a failed read three layers down ("HTTP 401 on download") says little about
the cause.  The doctor checks, per service, which credentials were found and
WHERE (an environment variable's name or a file's path, never a value), whether
each endpoint answers, whether a token is granted, WEkEO's quota from the
``X-Quota-*`` headers, and a one-product search for a known entry.  A service
without credentials is "not configured" and does not fail the run; a configured
service with a failed check makes :func:`main` exit 1.  It speaks to whatever
the environment points at (the real services or the sandbox): the same clients
the reads use, with one attempt per request, so a dead endpoint fails fast.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import clms_key_default_path, endpoints, hdarc_path
from .errors import ClmsError
from .net.http import HttpClient
from .params import Request

#: The known entry each service is asked for (one product, a few days, a small area).
NDVI = {"dataset_id": "EO:JRC:DAT:CLMS", "dataset_identifier": "ndvi_global_300m_10daily_v2",
        "bbox": [5.0, 45.0, 6.0, 46.0], "start": "2024-01-01", "end": "2024-01-10"}
TIMEOUT = (5.0, 20.0)


@dataclass
class Row:
    service: str
    check: str
    ok: bool | None  # None: not run (not configured, or an earlier check failed)
    detail: str


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def failed(self) -> list[str]:
        """Services with a failed check (only configured services run checks)."""
        return sorted({r.service for r in self.rows if r.ok is False})

    @property
    def ok(self) -> bool:
        return not self.failed()

    def table(self) -> str:
        mark = {True: "ok", False: "FAIL", None: "-"}
        widths = [max(len(x) for x in col) for col in zip(("service", "check", "result"),
                                                          *((r.service, r.check, mark[r.ok]) for r in self.rows))]
        lines = [f"{'service':<{widths[0]}}  {'check':<{widths[1]}}  {'result':<{widths[2]}}  detail"]
        lines += [f"{r.service:<{widths[0]}}  {r.check:<{widths[1]}}  {mark[r.ok]:<{widths[2]}}  {r.detail}"
                  for r in self.rows]
        bad = self.failed()
        lines.append("every configured service is healthy" if not bad else f"failing: {', '.join(bad)}")
        return "\n".join(lines)


def _http(service: str) -> HttpClient:
    return HttpClient(service, attempts=1, timeout=TIMEOUT)


def _run(report: Report, service: str, check: str, fn: Callable[[], str]) -> bool:
    """Run one check; an exception is its failure, told by type and message (messages carry no secret)."""
    try:
        detail = fn()
    except (ClmsError, OSError, ValueError, KeyError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else ""
        report.rows.append(Row(service, check, False, f"{type(exc).__name__}: {text}"[:200]))
        return False
    report.rows.append(Row(service, check, True, detail))
    return True


def _skip(report: Report, service: str, checks: tuple[str, ...], why: str) -> None:
    report.rows.extend(Row(service, c, None, why) for c in checks)


def _netrc_host_has(url: str) -> bool:
    from .config import _netrc_has

    return _netrc_has(url, os.environ)


# --------------------------------------------------------------------------- WEkEO


def _wekeo(report: Report) -> None:
    from .services.wekeo import WekeoService, read_credentials

    checks = ("endpoint", "token", "quota", "search")
    if os.environ.get("HDA_USER") and os.environ.get("HDA_PASSWORD"):
        where = "environment (HDA_USER, HDA_PASSWORD)"
    elif hdarc_path().is_file():
        where = f"file {hdarc_path()}"
    else:
        report.rows.append(Row("wekeo", "credentials", None, f"not configured (HDA_USER/HDA_PASSWORD or {hdarc_path()})"))
        _skip(report, "wekeo", checks, "not configured")
        return
    if not _run(report, "wekeo", "credentials", lambda: where + (" (read)" if read_credentials() else "")):
        _skip(report, "wekeo", checks, "no credentials")
        return
    user, password = read_credentials()
    svc = WekeoService(_http("wekeo"), user, password)
    if not _run(report, "wekeo", "endpoint", lambda: _answers(svc.http, svc.broker)):
        _skip(report, "wekeo", checks[1:], "endpoint down")
        return
    if not _run(report, "wekeo", "token", lambda: "granted" if svc.auth.headers() else "none"):
        _skip(report, "wekeo", checks[2:], "no token")
        return
    seen: dict[str, str] = {}

    def search() -> str:
        original = svc.http.request

        def keep_quota(*a: Any, **kw: Any) -> Any:
            r = original(*a, **kw)
            seen.update({k: v for k, v in r.headers.items() if k.lower().startswith("x-quota-")})
            return r

        svc.http.request = keep_quota  # type: ignore[method-assign]
        try:
            hits = svc.search(Request.build(**NDVI))
        finally:
            del svc.http.request
        return _found(hits, NDVI["dataset_identifier"])

    ok = _run(report, "wekeo", "search", search)
    quota = ", ".join(f"{k.split('-')[-1].lower()} {v}" for k, v in sorted(seen.items())) or "not reported"
    report.rows.insert(len(report.rows) - 1, Row("wekeo", "quota", True if ok else None, quota))


def _found(hits: list[Any], what: str) -> str:
    if not hits:
        raise ClmsError(f"the search for {what} found nothing")
    return f"{len(hits)} product(s) of {what}, e.g. {hits[0].name}"


def _answers(http: HttpClient, url: str) -> str:
    """The endpoint answers HTTP at all (any status below 500: a 401/404 still proves it is there)."""
    r = http.request("GET", url, ok=tuple(range(200, 500)), what="endpoint check", allow_redirects=False)
    r.close()
    return f"{url} answered HTTP {r.status_code}"


# --------------------------------------------------------------------------- CLMS download API


def _clms(report: Report) -> None:
    from .services.clms_api.auth import ClmsAuth, load_service_key, service_key_path

    checks = ("endpoint", "token", "search")
    if os.environ.get("CLMS_SERVICE_KEY"):
        where = f"environment (CLMS_SERVICE_KEY -> {service_key_path()})"
    elif clms_key_default_path().is_file():
        where = f"file {clms_key_default_path()}"
    else:
        report.rows.append(Row("clms", "credentials", None, f"not configured (CLMS_SERVICE_KEY or {clms_key_default_path()})"))
        _skip(report, "clms", checks, "not configured")
        return
    if not _run(report, "clms", "credentials", lambda: where + (" (valid key)" if load_service_key() else "")):
        _skip(report, "clms", checks, "no usable key")
        return
    api = endpoints().clms_api
    http = _http("clms")
    if not _run(report, "clms", "endpoint", lambda: _answers(http, f"{api}/@search?portal_type=DataSet&b_size=1")):
        _skip(report, "clms", checks[1:], "endpoint down")
        return
    auth = ClmsAuth(load_service_key(), api_url=api, http=http)
    if not _run(report, "clms", "token", lambda: "granted" if auth.headers() else "none"):
        _skip(report, "clms", checks[2:], "no token")
        return

    def search() -> str:
        r = http.request("GET", f"{api}/@search", auth=auth, headers={"Accept": "application/json"},
                         params={"portal_type": "DataSet", "b_size": "1", "metadata_fields": "UID"}, what="search")
        items = r.json().get("items") or []
        if not items:
            raise ClmsError("the @search for one DataSet found nothing")
        return f"{r.json().get('items_total', '?')} datasets listed, e.g. {items[0].get('title') or items[0].get('@id')}"

    _run(report, "clms", "search", search)


# --------------------------------------------------------------------------- CDSE


def _cdse(report: Report) -> None:
    from .services.cdse import auth as cdse_auth
    from .services.cdse.budget import Budget
    from .services.cdse.search import Catalogue

    checks = ("endpoint", "token", "search")
    ends = endpoints()
    if os.environ.get("CDSE_USERNAME") and os.environ.get("CDSE_PASSWORD"):
        where = "environment (CDSE_USERNAME, CDSE_PASSWORD)"
    elif _netrc_host_has(ends.cdse_token):
        where = f"file {cdse_auth.netrc_path()}"
    else:
        report.rows.append(Row("cdse", "credentials", None, f"not configured (CDSE_USERNAME/CDSE_PASSWORD or {cdse_auth.netrc_path()})"))
        _skip(report, "cdse", checks, "not configured")
        return
    if not _run(report, "cdse", "credentials", lambda: where + (" (read)" if cdse_auth.read_credentials(ends.cdse_token) else "")):
        _skip(report, "cdse", checks, "no credentials")
        return
    http = _http("cdse")
    down = [u for u in (ends.cdse_odata, ends.cdse_download, ends.cdse_token) if not _run(
        report, "cdse", "endpoint", lambda u=u: _answers(http, u))]
    if down:
        _skip(report, "cdse", checks[1:], "endpoint down")
        return
    user, password, totp = cdse_auth.read_credentials(ends.cdse_token)
    tokens = cdse_auth.TokenManager(ends.cdse_token, user, password, totp)
    tokens.http = http
    if not _run(report, "cdse", "token", lambda: "granted" if tokens.headers() else "none"):
        _skip(report, "cdse", checks[2:], "no token")
        return
    catalogue = Catalogue(http, ends.cdse_odata, Budget(1), threading.Event(), page=1)

    def search() -> str:
        first = next(iter(catalogue.products(Request.build(**NDVI))), None)
        if first is None:
            raise ClmsError(f"the catalogue lists no {NDVI['dataset_identifier']} product")
        return f"found {first.get('Name')}"

    _run(report, "cdse", "search", search)


SERVICES: dict[str, Callable[[Report], None]] = {"wekeo": _wekeo, "clms": _clms, "cdse": _cdse}


def doctor(services: tuple[str, ...] = tuple(SERVICES)) -> Report:
    """Check each service (see the module doc); returns the report (``report.ok``, ``report.table()``)."""
    report = Report()
    for name in services:
        SERVICES[name](report)
    return report


def main(args: Any) -> int:
    started = dt.datetime.now()
    report = doctor(tuple(args.service) if getattr(args, "service", None) else tuple(SERVICES))
    print(report.table())
    print(f"({(dt.datetime.now() - started).total_seconds():.1f} s)")
    return 0 if report.ok else 1


def add_doctor_parser(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check credentials, endpoints, tokens and a search per service (no secrets shown)",
                       description="For each service: which credentials were found and where (never their values), "
                                   "whether each endpoint answers, whether a token is granted, the WEkEO quota, and a "
                                   "one-product search. Exit 1 when a configured service fails.")
    p.add_argument("--service", action="append", choices=sorted(SERVICES), help="only this service (repeatable)")
    p.set_defaults(func=main)
