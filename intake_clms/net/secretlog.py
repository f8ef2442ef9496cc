"""Capability links (download URLs that are credentials) kept out of every log line.

urllib3 logs each request line at DEBUG (``"GET /fme/<secret>/... HTTP/1.1"``); a
filter on its logger replaces every link registered with :func:`hide`.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit


class SecretFilter(logging.Filter):
    """Redacts capability links from urllib3's DEBUG request lines (``"GET /fme/<secret>/... HTTP/1.1"``)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            hidden = text
            for secret in list(self.secrets):
                hidden = hidden.replace(secret, "<result link>")
            if hidden != text:
                record.msg, record.args = hidden, ()
        return True


_SECRETS = SecretFilter()
logging.getLogger("urllib3.connectionpool").addFilter(_SECRETS)


def hide(url: str) -> None:
    """Keep a result link (its path and query: the capability) out of every log line."""
    parts = urlsplit(url)
    _SECRETS.secrets.add(parts.path + (f"?{parts.query}" if parts.query else ""))
    _SECRETS.secrets.add(url)
