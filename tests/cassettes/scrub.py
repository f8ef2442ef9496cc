"""Secrets out of vcrpy cassettes: auth headers, cookies, token and password fields, JWTs, PEM blocks,
known credential strings, service-key identities, and download URLs that are credentials themselves.

A :class:`Scrubber` is installed as vcrpy's ``before_record_request`` and
``before_record_response`` hooks, by the recorder and by replays alike.  vcrpy
runs the request hook on live requests too before matching them, so whatever
is scrubbed (credentials, tokens) never takes part in matching: a replay works
with any credentials.  Every secret becomes :data:`PLACEHOLDER`, except a URL
that acts as a credential (pre-signed, or a capability link such as the CLMS
API's ``DownloadURL``, or any URL under a capability path such as the
CLMS result links ``/fme/<secret>/<n>.zip``): it becomes a stable alias under
:data:`CAPABILITY_BASE`, remembered per cassette, so the client can still ask
for it during a replay and the request matches.  Form bodies are scrubbed
field by field, so the CLMS grant (``grant_type`` + signed ``assertion``)
keeps its grant type and matches whatever key signed the assertion.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

PLACEHOLDER = "<SCRUBBED>"
CAPABILITY_BASE = "http://scrubbed.invalid/capability"

#: Headers whose whole value is a credential.
SECRET_HEADER_NAMES = (
    "Authorization",
    "Proxy-Authorization",
    "Cookie",
    "Set-Cookie",
    "X-Auth-Token",
    "X-Api-Key",
    "X-Amz-Security-Token",
)
SECRET_HEADERS = frozenset(name.lower() for name in SECRET_HEADER_NAMES)
#: JSON / form fields whose value is a credential (lower case).
SECRET_KEYS = frozenset(
    {
        "username",
        "password",
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "assertion",
        "private_key",
        "client_secret",
        "secret",
        "api_key",
        "apikey",
        # who a service key belongs to (the CLMS key's client_id is the JWT issuer): not needed to replay
        "client_id",
        "user_id",
        "userid",
        "key_id",
    }
)
#: JSON fields holding a download link that works without other credentials (lower case).
CAPABILITY_KEYS = frozenset({"downloadurl", "download_url", "presigned_url", "signed_url"})
#: URL paths under which a link is a credential by itself (the CLMS API's FME result links).
CAPABILITY_PATHS = ("/fme/",)
#: Query parameters that make a URL a credential (lower case).
SIGNED_QUERY_KEYS = frozenset(
    {
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "signature",
        "sig",
        "token",
        "access_token",
        "api_key",
        "apikey",
        "key",
        "password",
    }
)

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
PEM_BLOCK = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|\Z)", re.S)
URL = re.compile(r"https?://[^\s\"'<>\\]+")


def sandbox_secrets() -> list[str]:
    """The sandbox's own account names and passwords (every service, the CLMS API's user), as the sandbox defines them."""
    from intake_clms.sandbox.clms_api import DEFAULT_USER
    from intake_clms.sandbox.server import DEFAULT_CREDENTIALS

    return sorted({v for account in DEFAULT_CREDENTIALS.values() for v in account.values() if v} | {DEFAULT_USER})


def literal_forms(secret: str) -> list[str]:
    """The ways a credential string shows up on the wire: as is, URL-encoded, inside Basic auth."""
    forms = {secret, quote(secret, safe=""), quote(secret)}
    return sorted((f for f in forms if f), key=len, reverse=True)


def is_capability_path(path: str) -> bool:
    """True when a URL path is a capability link by itself (see :data:`CAPABILITY_PATHS`)."""
    return any(marker in path for marker in CAPABILITY_PATHS)


def basic_auth_forms(user: str, password: str) -> list[str]:
    """``user:password`` base64-encoded, as an HTTP Basic header would carry it."""
    return [base64.b64encode(f"{user}:{password}".encode()).decode()]


def header_value(headers: Mapping[str, Any], name: str) -> str:
    """A header's (first) value, case-insensitively; vcrpy keeps response header values in lists."""
    for key, value in headers.items():
        if key.lower() == name.lower():
            if isinstance(value, (list, tuple)):
                return str(value[0]) if value else ""
            return str(value)
    return ""


def body_kind(content_type: str, body: bytes) -> str:
    """``json``, ``form``, ``text`` or ``binary``: how a body may be rewritten without breaking it."""
    ctype = content_type.lower()
    if "json" in ctype:
        return "json"
    if "x-www-form-urlencoded" in ctype:
        return "form"
    if ctype.startswith("text/") or "xml" in ctype or "javascript" in ctype:
        return "text"
    if ctype and not ctype.startswith("application/problem"):
        return "binary"
    if b"\x00" in body:
        return "binary"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "binary"
    return "json" if text.lstrip()[:1] in ("{", "[") else "text"


def set_response_body(response: dict[str, Any], body: bytes) -> None:
    """Replace a recorded response body and keep its Content-Length true (a replay checks it)."""
    response["body"]["string"] = body
    for key in list(response["headers"]):
        if key.lower() == "content-length":
            response["headers"][key] = [str(len(body))]


class Scrubber:
    """vcrpy hooks that replace secrets by :data:`PLACEHOLDER` (one instance per cassette).

    ``literals`` are credential strings to remove wherever they appear (the
    recorder passes the sandbox's accounts), on top of the field, header,
    JWT and PEM rules that need no prior knowledge.
    """

    def __init__(self, literals: Iterable[str] = ()):
        forms = {form for secret in literals if secret for form in literal_forms(secret)}
        self.literals = sorted(forms, key=len, reverse=True)
        self.aliases: dict[str, str] = {}

    # -- values

    def alias(self, url: str) -> str:
        """The stable stand-in of a credential URL (the same URL always gets the same alias)."""
        if url.startswith(CAPABILITY_BASE):
            return url
        if url not in self.aliases:
            self.aliases[url] = f"{CAPABILITY_BASE}/{len(self.aliases) + 1}"
        return self.aliases[url]

    def url(self, url: str) -> str:
        """A URL with credentials removed: a signed URL becomes its alias, user info and literals go."""
        if url in self.aliases:
            return self.aliases[url]
        parts = urlsplit(url)
        keys = {k.lower() for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
        if keys & SIGNED_QUERY_KEYS or is_capability_path(parts.path):
            return self.alias(url)
        if parts.username or parts.password:
            host = parts.hostname or ""
            netloc = f"{PLACEHOLDER}@{host}" + (f":{parts.port}" if parts.port else "")
            url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        return self._literals(url)

    def _literals(self, text: str) -> str:
        for secret in self.literals:
            text = text.replace(secret, PLACEHOLDER)
        return text

    def text(self, text: str) -> str:
        """Free text with PEM blocks, JWTs, credential URLs and known credential strings removed."""
        text = PEM_BLOCK.sub(PLACEHOLDER, text)
        text = JWT.sub(PLACEHOLDER, text)
        text = URL.sub(lambda m: self.url(m.group(0)), text)
        return self._literals(text)

    def json(self, value: Any, key: str | None = None) -> Any:
        """A parsed JSON document with secret fields, capability links and secret strings scrubbed."""
        name = key.lower() if isinstance(key, str) else None
        if name in SECRET_KEYS and value not in (None, "", PLACEHOLDER) and not isinstance(value, (dict, list, bool)):
            return PLACEHOLDER
        if name in CAPABILITY_KEYS and isinstance(value, str) and value.startswith(("http://", "https://")):
            return self.alias(value)
        if isinstance(value, dict):
            return {k: self.json(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self.json(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def body(self, body: Any, content_type: str) -> Any:
        """A request or response body scrubbed according to its kind; unchanged bytes when nothing was secret."""
        if not body:
            return body
        if isinstance(body, str):
            body = body.encode("utf-8")
        if not isinstance(body, (bytes, bytearray)):
            return body  # a streamed upload: nothing to scrub here
        body = bytes(body)
        kind = body_kind(content_type, body)
        if kind == "json":
            try:
                doc = json.loads(body)
            except ValueError:
                kind = "text"
            else:
                scrubbed = self.json(doc)
                return body if scrubbed == doc else json.dumps(scrubbed).encode("utf-8")
        if kind == "form":
            pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
            clean = [(k, PLACEHOLDER if k.lower() in SECRET_KEYS and v else self.text(v)) for k, v in pairs]
            return body if clean == pairs else urlencode(clean).encode("ascii")
        if kind == "text":
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                return body
            clean_text = self.text(text)
            return body if clean_text == text else clean_text.encode("utf-8")
        return body  # binary product data: never rewritten (the replay needs it byte for byte)

    # -- vcrpy hooks

    def request(self, request: Any) -> Any:
        """``before_record_request``: headers, URI and body of a vcrpy Request."""
        headers = {}
        for name, value in request.headers.items():
            headers[name] = PLACEHOLDER if name.lower() in SECRET_HEADERS else self.text(str(value))
        request.headers = headers
        request.uri = self.url(request.uri)
        request.body = self.body(request.body, header_value(request.headers, "Content-Type"))
        if isinstance(request.body, bytes):  # the recorded length must not tell the secrets' length
            for name in request.headers:
                if name.lower() == "content-length":
                    request.headers[name] = str(len(request.body))
        return request

    def response(self, response: dict[str, Any]) -> dict[str, Any]:
        """``before_record_response``: headers and body of a vcrpy response dict (already a copy)."""
        headers: dict[str, list[str]] = {}
        for name, values in response["headers"].items():
            values = list(values) if isinstance(values, (list, tuple)) else [values]
            if name.lower() in SECRET_HEADERS:
                headers[name] = [PLACEHOLDER for _ in values]
            elif name.lower() in ("location", "content-location"):
                headers[name] = [self.url(str(v)) for v in values]
            else:
                headers[name] = [self.text(str(v)) for v in values]
        response["headers"] = headers
        body = response["body"]["string"]
        clean = self.body(body, header_value(headers, "Content-Type"))
        if clean is not body and clean != body:
            set_response_body(response, clean)
        return response
