"""Scan cassettes for anything secret before they are committed.

:func:`scan_cassette` reads a cassette file both as raw text and as parsed
YAML (so a body stored as base64 ``!!binary`` is scanned decoded) and reports
every credential-looking thing it finds: an auth header or cookie that is not
the placeholder, a JWT (e.g. a CLMS grant assertion), a PEM block, a
password / token / assertion / private-key / service-key identity field with a
real value, a signed or capability download URL (a CLMS ``/fme/`` result
link), or one of the sandbox's own credentials (plus, at record time, the
tokens and keys the recording run actually used).  Its rules are written independently of
the scrubber's, so a gap in one is not hidden by the same gap in the other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import yaml

from .scrub import CAPABILITY_BASE, PLACEHOLDER, basic_auth_forms, sandbox_secrets

AUTH_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-auth-token", "x-api-key")
SECRET_FIELDS = (
    "password",
    "access_token",
    "refresh_token",
    "id_token",
    "assertion",
    "private_key",
    "client_secret",
    "client_id",
    "user_id",
    "userid",
    "key_id",
)
CAPABILITY_FIELDS = ("downloadurl", "download_url", "presigned_url", "signed_url")
CAPABILITY_PATH = ("/fme/",)  # written here again on purpose: the scan does not trust the scrubber's lists
SIGNED_QUERY = ("x-amz-signature", "x-amz-credential", "x-amz-security-token", "signature", "sig", "token", "access_token", "password")

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*-----")
FIELD = re.compile(
    r"\b(" + "|".join(SECRET_FIELDS) + r")\b[\"']?\s*[:=]\s*[\"']?([^\"'&\s,}\]]*)",
    re.IGNORECASE,
)
URL = re.compile(r"https?://[^\s\"'<>\\]+")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ALLOWED_VALUES = {PLACEHOLDER, quote(PLACEHOLDER, safe=""), "", "null", "none"}


def cassette_files(root: Path) -> list[Path]:
    """Every cassette under ``root``, recursively (YAML and JSON serialisations)."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in (".yaml", ".yml", ".json"))


def known_secrets(extra: Iterable[str] = ()) -> list[str]:
    """The sandbox's credentials in the forms they travel in (as is, URL-encoded, Basic auth), plus ``extra``."""
    from intake_clms.sandbox.server import DEFAULT_CREDENTIALS

    found = set()
    for secret in [*sandbox_secrets(), *(e for e in extra if e)]:
        found.update({secret, quote(secret, safe="")})
    for account in DEFAULT_CREDENTIALS.values():
        if account.get("username") and account.get("password"):
            found.update(basic_auth_forms(account["username"], account["password"]))
    return sorted(found, key=len, reverse=True)


def _allowed(value: str) -> bool:
    return value.strip().lower() in {v.lower() for v in _ALLOWED_VALUES} or unquote(value) == PLACEHOLDER


def _decode(body: Any) -> str:
    if body is None:
        return ""
    if isinstance(body, dict) and "string" in body:  # a response body
        body = body["string"]
    if isinstance(body, (bytes, bytearray)):
        try:
            return bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(body).decode("latin-1")
    return str(body)


def scan_text(text: str, where: str, secrets: list[str] | None = None) -> list[str]:
    """Findings in free text (a whole file, a header value, a decoded body)."""
    secrets = known_secrets() if secrets is None else secrets
    findings = []
    for m in JWT.finditer(text):
        findings.append(f"{where}: a JWT ({m.group(0)[:12]}...)")
    if PEM.search(text):
        findings.append(f"{where}: a PEM block")
    for m in FIELD.finditer(text):
        if not _allowed(m.group(2)):
            findings.append(f"{where}: field {m.group(1)!r} has a value that is not {PLACEHOLDER}")
    for m in URL.finditer(text):
        findings.extend(_url_findings(m.group(0), where))
    for secret in secrets:
        if secret in text:
            findings.append(f"{where}: a sandbox credential ({secret[:3]}...)")
    return findings


def _url_findings(url: str, where: str) -> list[str]:
    if url.startswith(CAPABILITY_BASE):
        return []
    parts = urlsplit(url)
    out = []
    if parts.password and unquote(parts.password) != PLACEHOLDER:
        out.append(f"{where}: a URL with a password")
    if any(marker in parts.path for marker in CAPABILITY_PATH):
        out.append(f"{where}: a capability download link (path {parts.path[:5]}...) that was not aliased")
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.lower() in SIGNED_QUERY and not _allowed(value):
            out.append(f"{where}: a signed URL (query {key!r})")
    return out


def _field_findings(value: Any, where: str, key: str | None = None) -> list[str]:
    name = key.lower() if isinstance(key, str) else None
    out = []
    if name in SECRET_FIELDS and value is not None and not isinstance(value, (dict, list, bool)) and not _allowed(str(value)):
        out.append(f"{where}: field {key!r} is not {PLACEHOLDER}")
    if name in CAPABILITY_FIELDS and isinstance(value, str) and value and not (value.startswith(CAPABILITY_BASE) or _allowed(value)):
        out.append(f"{where}: field {key!r} holds a download link that was not aliased")
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_field_findings(v, where, k))
    elif isinstance(value, list):
        for v in value:
            out.extend(_field_findings(v, where))
    return out


def _body_findings(text: str, where: str) -> list[str]:
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return _field_findings(json.loads(stripped), where)
        except ValueError:
            return []
    if "=" in stripped and " " not in stripped and "\n" not in stripped:  # a form body
        return _field_findings(dict(parse_qsl(stripped, keep_blank_values=True)), where)
    return []


def _headers(headers: Any) -> Iterator[tuple[str, list[str]]]:
    for name, values in (headers or {}).items():
        yield str(name), [str(v) for v in (values if isinstance(values, list) else [values])]


def load_cassette(path: str | Path) -> Any:
    """A cassette file parsed with a safe loader (no Python tags), quickly."""
    return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_LOADER)


def scan_cassette(path: str | Path, extra_secrets: Iterable[str] = ()) -> list[str]:
    """Every secret-looking thing in one cassette file, as human-readable findings (empty: clean).

    ``extra_secrets``: strings that must not appear either (the recorder passes
    the tokens, result-link tokens and service-key ids its run handed out).
    """
    path = Path(path)
    secrets = known_secrets(extra_secrets)
    raw = path.read_text(encoding="utf-8", errors="replace")
    findings = scan_text(raw, path.name, secrets)
    try:
        doc = yaml.load(raw, Loader=_LOADER) if path.suffix.lower() != ".json" else json.loads(raw)
    except (yaml.YAMLError, ValueError) as exc:
        return findings + [f"{path.name}: cannot be read safely ({type(exc).__name__}); scan it by hand"]
    interactions = (doc or {}).get("interactions") if isinstance(doc, dict) else None
    if not isinstance(interactions, list):
        return findings + [f"{path.name}: no 'interactions' list (not a vcrpy cassette?)"]
    for i, item in enumerate(interactions):
        request = (item or {}).get("request") or {}
        response = (item or {}).get("response") or {}
        for side, part in (("request", request), ("response", response)):
            where = f"{path.name}#{i} {side}"
            for name, values in _headers(part.get("headers")):
                if name.lower() in AUTH_HEADERS:
                    findings += [f"{where}: header {name} is not {PLACEHOLDER}" for v in values if v != PLACEHOLDER]
                for v in values:
                    findings += scan_text(v, f"{where} header {name}", secrets)
            text = _decode(part.get("body"))
            findings += scan_text(text, f"{where} body", secrets)
            findings += _body_findings(text, f"{where} body")
        findings += _url_findings(str(request.get("uri", "")), f"{path.name}#{i} uri")
    return sorted(set(findings))
