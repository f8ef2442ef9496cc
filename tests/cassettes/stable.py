"""Recordings that do not change from one run to the next: a fixed host, stable ids, fixed dates.

The sandbox listens on a random port and hands out random order ids; its file
responses carry the date, an mtime and an ETag.  A :class:`Normalizer`, run as
the first vcrpy hook at record time, rewrites ``http://127.0.0.1:<port>`` to
:data:`FIXED_BASE`, each random id met in a JSON field named in ``id_keys`` to
``<prefix>-0001``, ``<prefix>-0002``... (in URIs and bodies alike), each ISO
timestamp met in a JSON field named in ``stamp_keys`` (the sandbox clock runs
from the wall clock) to :data:`FIXED_STAMP` plus one minute per distinct stamp,
keeping whether it had a UTC offset, and the volatile headers to constants, so
re-recording gives the same files and replays never depend on the port.
Binary bodies are left untouched.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from .scrub import body_kind, header_value, set_response_body

FIXED_BASE = "http://sandbox.invalid"
FIXED_DATE = "Thu, 01 Jan 2026 00:00:00 GMT"
#: The instant recorded timestamps start from (the same as :data:`FIXED_DATE`).
FIXED_STAMP = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
VOLATILE_HEADERS = {"date": FIXED_DATE, "last-modified": FIXED_DATE, "etag": '"sandbox"', "server": "sandbox"}


class Normalizer:
    """vcrpy hooks making one cassette's recording stable (one instance per cassette)."""

    def __init__(self, base_url: str, id_keys: Iterable[str] = (), id_prefix: str = "id", stamp_keys: Iterable[str] = ()):
        self.base = base_url.rstrip("/")
        self.id_keys = frozenset(k.lower() for k in id_keys)
        self.id_prefix = id_prefix
        self.ids: dict[str, str] = {}
        self.stamp_keys = frozenset(k.lower() for k in stamp_keys)
        self.stamps: dict[str, str] = {}

    def _learn_stamp(self, raw: str) -> None:
        if raw in self.stamps or raw in self.stamps.values():
            return
        try:
            parsed = dt.datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
        except ValueError:
            return
        stable = FIXED_STAMP + dt.timedelta(minutes=len(self.stamps))
        self.stamps[raw] = stable.isoformat() if parsed.tzinfo is not None else stable.replace(tzinfo=None).isoformat()

    def _learn(self, value: Any, key: str | None = None) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                self._learn(v, k)
        elif isinstance(value, list):
            for v in value:
                self._learn(v, key)
        elif key is not None and key.lower() in self.stamp_keys and isinstance(value, str) and value:
            self._learn_stamp(value)
        elif key is not None and key.lower() in self.id_keys and isinstance(value, (str, int)) and not isinstance(value, bool):
            raw = str(value)
            if raw and raw not in self.ids and raw not in self.ids.values():
                self.ids[raw] = f"{self.id_prefix}-{len(self.ids) + 1:04d}"

    def rewrite(self, text: str) -> str:
        """``text`` with the sandbox origin, every known random id and every known timestamp replaced."""
        text = text.replace(self.base, FIXED_BASE)
        for raw, stable in self.ids.items():
            text = text.replace(raw, stable)
        for raw in sorted(self.stamps, key=len, reverse=True):  # a stamp never eats a longer one's prefix
            text = text.replace(raw, self.stamps[raw])
        return text

    def _body(self, body: Any, content_type: str) -> Any:
        if not body or not isinstance(body, (bytes, bytearray, str)):
            return body
        raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        if body_kind(content_type, raw) == "binary":
            return body
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return body
        new = self.rewrite(text)
        return body if new == text else new.encode("utf-8")

    def request(self, request: Any) -> Any:
        """``before_record_request``: URI and body."""
        request.uri = self.rewrite(request.uri)
        request.body = self._body(request.body, header_value(request.headers, "Content-Type"))
        return request

    def response(self, response: dict[str, Any]) -> dict[str, Any]:
        """``before_record_response``: learn new ids from the JSON body, then rewrite body and headers."""
        headers = response["headers"]
        body = response["body"]["string"]
        ctype = header_value(headers, "Content-Type")
        if body and isinstance(body, (bytes, bytearray)) and body_kind(ctype, bytes(body)) == "json":
            try:
                self._learn(json.loads(body))
            except ValueError:
                pass
        new_headers: dict[str, list[str]] = {}
        for name, values in headers.items():
            values = list(values) if isinstance(values, (list, tuple)) else [values]
            fixed = VOLATILE_HEADERS.get(name.lower())
            new_headers[name] = [fixed if fixed is not None else self.rewrite(str(v)) for v in values]
        response["headers"] = new_headers
        new = self._body(body, ctype)
        if new is not body and new != body:
            set_response_body(response, new)
        return response
