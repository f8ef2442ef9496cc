"""What the CDSE sandbox remembers between requests: users, tokens, S3 keys, products and the connection cap.

Why one object (``ctx.state["cdse"]``, a :class:`CdseState`): tests and the
protocol modules (``cdse`` and ``cdse_s3``) read and change the same settings
while the server runs, e.g. ``st.max_concurrent = 2`` or ``st.access_lifetime = 1``.

Settings (attributes; a dict placed in ``ctx.state["cdse"]`` before setup is read
as overrides): ``max_concurrent`` (requests in flight per user across OData,
download and S3; default 4, as CDSE), ``access_lifetime`` / ``refresh_lifetime``
(sandbox seconds; default ``token_lifetime / 6`` and ``token_lifetime``),
``presign_lifetime``, ``redirect_status``, ``users`` (username -> password or
``{"password", "totp"}``), ``s3_keys`` (access key -> (secret, user)),
``transfer_host`` (host name of the download redirect; default: ``localhost``
when the client used ``127.0.0.1`` and the reverse), ``s3_max_skew`` (seconds a
SigV4 ``X-Amz-Date`` may differ from the wall clock; None: unchecked),
``checksum_blake3`` (list a BLAKE3 checksum when the package is importable).

Protocol shapes, one switch per variant (the documented or older sandbox shape
first, then the one recorded from the live service; set them before the first
listing, since sizes and checksums are computed once per product):

- ``payload``: ``"file"`` (the download service's 307 to a presigned transfer URL
  serving the product's one file) or ``"zip"`` (as live: 301 to a ``zipper`` host
  that still wants the bearer token and serves a zip of the product folder
  ``<Name>/<file>``; ``ContentLength`` and ``Checksum`` then describe the zip);
- ``nodes_key``: ``"result"`` (as live and in the CDSE documentation) or
  ``"value"`` (the OData collection key);
- ``nodes_redirect``: False, or True (as live for anonymous calls: a ``Nodes``
  listing asked of the catalogue answers 301 to the download service's);
- ``nodes_value``: ``"transfer"`` (a file's ``Nodes(..)/Nodes(..)/$value`` answers
  307 to a presigned transfer URL, as a product's ``$value`` does) or ``"zipper"``
  (301 to the same path on the ``zipper`` host, the other host name, which wants the
  bearer token and serves the file with Range: the shape of a product's live
  ``$value``, where curl drops a token it was given as a header).

Counters a client test reads: :meth:`CdseState.concurrency` (``peak``: most
requests of a user in flight at once, refused ones included, so ``peak <=
max_concurrent`` means the client never tried to exceed the cap; ``refused``;
``in_flight``), and ``bearer_on_transfer`` (presigned transfers that carried an
Authorization header: the token went to a host that does not need it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import math
import os
import shutil
import secrets
import threading
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jwt
from aiohttp import web

from .cdse_products import CdseProduct
from .core import SandboxContext

SERVICE = "cdse"
CLIENT_ID = "cdse-public"
S3_PATH = "/s3"  # presigned transfers of the download service: /s3/eodata/<key>?X-Amz-...
SCOPE = "AUDIENCE_PUBLIC openid email profile ondemand_processing user-context"
#: General users may have this many requests in flight at once, across OData, download and S3 (CDSE quota).
MAX_CONCURRENT = 4
MAX_CONCURRENT_DOWNLOADS = MAX_CONCURRENT  # the older name
#: Sandbox seconds a presigned transfer URL stays valid.
PRESIGN_LIFETIME = 3600.0
#: Status of the download service's redirect to the transfer URL.
DOWNLOAD_REDIRECT_STATUS = 307
#: Seconds a SigV4 request's X-Amz-Date may differ from the wall clock (S3's RequestTimeTooSkewed).
S3_MAX_SKEW = 900.0
#: Files generated at once to fill in ContentLength and the checksums of a page.
GENERATOR_THREADS = 4
_REMEMBERED = 200_000  # products kept by Id
#: Used when the server gives no CDSE credentials (``ctx.state["credentials"]["cdse"]``).
DEFAULT_USERS: dict[str, str] = {"sandbox-user@example.org": "sandbox-password"}
DEFAULT_S3_KEYS: dict[str, tuple[str, str]] = {
    "SANDBOXS3ACCESSKEY01": ("sandbox-s3-secret-key-0123456789abcdef", "sandbox-user@example.org"),
}
_ID_NAMESPACE = uuid.UUID("6f0e6a52-2c1b-4d7e-9a8e-3c4b5d6e7f80")
_UTC = dt.timezone.utc


def _blake3() -> Any:
    """A BLAKE3 hasher, or None when the optional ``blake3`` package is missing."""
    try:
        from blake3 import blake3
    except ImportError:
        return None
    return blake3()


@dataclass
class _Grant:
    kind: str  # "access" | "refresh"
    user: str
    session: str
    seq: int
    expires: float  # sandbox clock


class CdseState:
    """Users, tokens, products and download slots of the CDSE sandbox (``ctx.state["cdse"]``)."""

    def __init__(self, ctx: SandboxContext, overrides: dict[str, Any] | None = None):
        overrides = dict(overrides or {})
        self.ctx = ctx
        self.lock = threading.Lock()
        self.secret = secrets.token_bytes(32)
        self._users: dict[str, Any] | None = overrides.pop("users", None)
        self.max_concurrent: int = int(overrides.pop("max_concurrent", MAX_CONCURRENT))
        self.presign_lifetime: float = float(overrides.pop("presign_lifetime", PRESIGN_LIFETIME))
        self.redirect_status: int = int(overrides.pop("redirect_status", DOWNLOAD_REDIRECT_STATUS))
        self._access_lifetime: float | None = overrides.pop("access_lifetime", None)
        self._refresh_lifetime: float | None = overrides.pop("refresh_lifetime", None)
        self._s3_keys: dict[str, tuple[str, str]] | None = overrides.pop("s3_keys", None)
        self.transfer_host: str | None = overrides.pop("transfer_host", None)
        self.s3_max_skew: float | None = overrides.pop("s3_max_skew", S3_MAX_SKEW)
        self.checksum_blake3: bool = bool(overrides.pop("checksum_blake3", True))
        self.payload: str = str(overrides.pop("payload", "file"))
        self.nodes_key: str = str(overrides.pop("nodes_key", "result"))
        self.nodes_redirect: bool = bool(overrides.pop("nodes_redirect", False))
        self.nodes_value: str = str(overrides.pop("nodes_value", "transfer"))
        if overrides:
            raise ValueError(f"unknown cdse settings: {sorted(overrides)}")
        self.access_min_seq = 0  # access tokens of an older grant are refused (a 401 mid-transfer fault)
        self.grants: dict[str, _Grant] = {}
        self.seq = 0
        self.min_valid_seq = 0
        self.in_flight: dict[str, int] = {}  # user -> requests being answered now (OData, download, S3)
        self.peak: dict[str, int] = {}  # user -> most requests in flight at once, refused ones included
        self.refused: dict[str, int] = {}  # user -> requests refused with 429 for the cap
        self.bearer_on_transfer = 0  # presigned transfers (another host) that carried an Authorization header
        self.keys: dict[str, str] = {}  # S3 access key -> user
        self.by_id: dict[str, CdseProduct] = {}  # products listed or resolved so far
        self.by_key: dict[str, CdseProduct] = {}  # S3 object path -> product, for presigned URLs issued
        self.generator = ThreadPoolExecutor(max_workers=GENERATOR_THREADS, thread_name_prefix="cdse-generate")

    # ---- tokens
    @property
    def access_lifetime(self) -> float:
        """Sandbox seconds; CDSE's 600 s when the sandbox's token lifetime is the default hour."""
        return float(self._access_lifetime) if self._access_lifetime is not None else self.ctx.token_lifetime / 6.0

    @access_lifetime.setter
    def access_lifetime(self, seconds: float | None) -> None:
        self._access_lifetime = seconds

    @property
    def refresh_lifetime(self) -> float:
        return float(self._refresh_lifetime) if self._refresh_lifetime is not None else self.ctx.token_lifetime

    @refresh_lifetime.setter
    def refresh_lifetime(self, seconds: float | None) -> None:
        self._refresh_lifetime = seconds

    def expire_access(self) -> None:
        """Refuse every access token issued so far; refresh tokens stay valid (a refresh recovers)."""
        with self.lock:
            self.access_min_seq = self.seq + 1

    def expire_all(self) -> None:
        with self.lock:
            self.min_valid_seq = self.seq + 1

    def issue(self, user: str, session: str, issuer: str) -> dict[str, Any]:
        now = self.ctx.clock.now()
        with self.lock:
            self.seq += 1
            seq = self.seq
        access_exp, refresh_exp = now + self.access_lifetime, now + self.refresh_lifetime
        subject = str(uuid.uuid5(_ID_NAMESPACE, "user:" + user))
        common = {"iat": int(now), "iss": issuer, "sub": subject, "azp": CLIENT_ID, "session_state": session, "sid": session}
        access = jwt.encode(
            {**common, "exp": int(access_exp), "jti": str(uuid.uuid4()), "typ": "Bearer", "aud": "account",
             "scope": SCOPE, "preferred_username": user, "email": user, "email_verified": True},
            self.secret, algorithm="HS256", headers={"kid": "sandbox"},
        )
        refresh = jwt.encode(
            {**common, "exp": int(refresh_exp), "jti": str(uuid.uuid4()), "typ": "Refresh", "aud": issuer, "scope": SCOPE},
            self.secret, algorithm="HS256", headers={"kid": "sandbox-refresh"},
        )
        with self.lock:
            if len(self.grants) > 10_000:  # forget tokens nobody can use any more
                self.grants = {t: g for t, g in self.grants.items() if g.expires > now and g.seq >= self.min_valid_seq}
            self.grants[access] = _Grant("access", user, session, seq, access_exp)
            self.grants[refresh] = _Grant("refresh", user, session, seq, refresh_exp)
        return {
            "access_token": access,
            "expires_in": int(math.ceil(self.access_lifetime)),
            "refresh_expires_in": int(math.ceil(self.refresh_lifetime)),
            "refresh_token": refresh,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "session_state": session,
            "scope": SCOPE,
        }

    def grant(self, token: str, kind: str) -> tuple[_Grant | None, bool]:
        """(grant, active) for a token string; grant None if unknown."""
        with self.lock:
            grant = self.grants.get(token)
            if grant is None or grant.kind != kind:
                return None, False
            active = grant.seq >= self.min_valid_seq and self.ctx.clock.now() < grant.expires
            if kind == "access":
                active = active and grant.seq >= self.access_min_seq
            return grant, active

    @property
    def users(self) -> dict[str, Any]:
        """username -> password (or {"password", "totp"}); read each time so a test can change the server's credentials."""
        if self._users is not None:
            return self._users
        return _users_from_ctx(self.ctx) or DEFAULT_USERS

    @users.setter
    def users(self, value: dict[str, Any] | None) -> None:
        self._users = value

    def check_password(self, username: str, password: str, totp: str | None) -> bool:
        entry = self.users.get(username)
        if entry is None:
            return False
        if isinstance(entry, dict):
            ok = hmac.compare_digest(str(entry.get("password", "")), password)
            if entry.get("totp") is not None:
                ok = ok and totp is not None and hmac.compare_digest(str(entry["totp"]), totp)
            return ok
        return hmac.compare_digest(str(entry), password)

    # ---- presigned URLs
    def access_key(self, user: str) -> str:
        key = "PRE" + hashlib.sha256(("key:" + user).encode()).hexdigest()[:17].upper()
        with self.lock:
            self.keys[key] = user
        return key

    def _signature(self, path: str, key: str, amz_date: str, expires: str) -> str:
        message = "\n".join((path, key, amz_date, expires)).encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def presign(self, origin: str, product: CdseProduct, user: str) -> str:
        key = self.access_key(user)
        now = self.ctx.clock.now()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        expires = str(int(self.presign_lifetime))
        path = S3_PATH + product.s3_key
        query = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"{key}/{amz_date[:8]}/default/s3/aws4_request",
            "X-Amz-Date": amz_date,
            "X-Amz-Expires": expires,
            "X-Amz-SignedHeaders": "host",
            "X-Amz-Signature": self._signature(path, key, amz_date, expires),
        }
        return origin + quote(path) + "?" + urlencode(query, quote_via=quote)

    def verify(self, path: str, query: Any) -> tuple[str | None, str | None]:
        """(user, None) for a valid presigned request, else (None, reason)."""
        needed = ("X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-Signature")
        if not all(query.get(k) for k in needed):
            return None, "anonymous"
        key = query["X-Amz-Credential"].split("/", 1)[0]
        amz_date, expires = query["X-Amz-Date"], query["X-Amz-Expires"]
        expected = self._signature(path, key, amz_date, expires)
        with self.lock:
            user = self.keys.get(key)
        if user is None or not hmac.compare_digest(expected, query["X-Amz-Signature"]):
            return None, "signature"
        try:
            issued = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=_UTC).timestamp()
            lifetime = int(expires)
        except ValueError:
            return None, "signature"
        if self.ctx.clock.now() > issued + lifetime:
            return None, "expired"
        return user, None

    # ---- connection cap: requests in flight per user, across OData, download and S3
    @property
    def active(self) -> dict[str, int]:
        """Requests in flight per user (the name older tests use)."""
        return self.in_flight

    def enter(self, user: str) -> bool:
        """Count one more request of ``user`` in flight; False (and nothing counted) beyond the cap.

        The peak counts the refused request too, so ``peak[user] > max_concurrent``
        shows a client that tried to exceed the cap.
        """
        with self.lock:
            now = self.in_flight.get(user, 0) + 1
            self.peak[user] = max(self.peak.get(user, 0), now)
            if now > self.max_concurrent:
                self.refused[user] = self.refused.get(user, 0) + 1
                return False
            self.in_flight[user] = now
            return True

    def would_exceed(self, user: str) -> bool:
        with self.lock:
            return self.in_flight.get(user, 0) >= self.max_concurrent

    def leave(self, user: str) -> None:
        with self.lock:
            self.in_flight[user] = max(0, self.in_flight.get(user, 0) - 1)

    def concurrency(self) -> dict[str, Any]:
        """What a client test reads: the cap, and per user the peak, refusals and requests in flight now."""
        with self.lock:
            return {"max_concurrent": self.max_concurrent, "peak": dict(self.peak), "refused": dict(self.refused),
                    "in_flight": dict(self.in_flight), "peak_overall": max(self.peak.values(), default=0)}

    def reset_concurrency(self) -> None:
        with self.lock:
            self.peak.clear()
            self.refused.clear()

    # ---- S3 keys
    @property
    def s3_keys(self) -> dict[str, tuple[str, str]]:
        """access key -> (secret key, user): the S3 key manager's permanent keys."""
        if self._s3_keys is not None:
            return self._s3_keys
        return _s3_keys_from_ctx(self.ctx) or dict(DEFAULT_S3_KEYS)

    @s3_keys.setter
    def s3_keys(self, value: dict[str, tuple[str, str]] | None) -> None:
        self._s3_keys = value

    # ---- products (blocking: call through asyncio.to_thread)
    def specs(self) -> list[Any]:
        """Datasets published on CDSE: those with a datasetIdentifier and nc or cog items."""
        store = self.ctx.store
        if store is None:
            return []
        return [s for s in store.datasets() if s.dataset_identifier and set(s.formats) & {"nc", "cog"}]

    def product(self, item: Any, spec: Any = None) -> CdseProduct:
        """The (remembered) product of a store item."""
        with self.lock:
            found = self.by_id.get(item.uuid)
        if found is not None:
            return found
        return self.remember(CdseProduct(self.ctx.store, spec or self.ctx.store.dataset(item.dataset), item))

    def remember(self, product: CdseProduct) -> CdseProduct:
        """Keep a listed product by Id (with its size and MD5), or return the one kept already."""
        with self.lock:
            kept = self.by_id.setdefault(product.id, product)
            if len(self.by_id) > _REMEMBERED:  # forget the oldest; the store can rebuild them
                for old in list(self.by_id)[: _REMEMBERED // 10]:
                    del self.by_id[old]
        return kept

    def find(self, product_id: str) -> CdseProduct | None:
        """A product by Id: one this sandbox has listed or built (Ids cannot be inverted)."""
        with self.lock:
            found = self.by_id.get(product_id)
        if found is not None:
            return found
        try:
            item = self.ctx.store.item_by_uuid(product_id)
        except (KeyError, ValueError):
            return None
        if str(item.format).lower() not in ("nc", "cog"):
            return None
        return self.product(item)

    def find_by_name(self, name: str) -> CdseProduct | None:
        try:
            item = self.ctx.store.item(name)
        except (KeyError, ValueError):
            return None
        spec = self.ctx.store.dataset(item.dataset)
        if str(item.format).lower() not in ("nc", "cog") or not spec.dataset_identifier:
            return None
        return self.product(item, spec)

    def remember_s3(self, product: CdseProduct) -> None:
        with self.lock:
            self.by_key[product.s3_key] = product

    def by_s3_key(self, key: str) -> CdseProduct | None:
        with self.lock:
            return self.by_key.get(key)

    def ensure_content(self, product: CdseProduct) -> None:
        """Materialise the file so ContentLength, MD5 and BLAKE3 are exact."""
        if product.size is not None:
            return
        path = self.payload_path(product)
        digest = hashlib.md5()
        b3 = _blake3() if self.checksum_blake3 else None
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
                if b3 is not None:
                    b3.update(block)
        product.blake3 = b3.hexdigest() if b3 is not None else None
        product.md5, product.size = digest.hexdigest(), path.stat().st_size

    async def ensure_contents(self, products: list[CdseProduct]) -> None:
        """:meth:`ensure_content` for a page, several files at a time, off the event loop."""
        todo = [p for p in products if p.size is None]
        if todo:
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(loop.run_in_executor(self.generator, self.ensure_content, p) for p in todo))

    def payload_path(self, product: CdseProduct) -> Path:
        """What ``$value`` delivers: the product's file, or (``payload == "zip"``) a zip of its folder."""
        path = self.path(product)
        if self.payload != "zip":
            return path
        target = path.with_name(f"{product.name}.cdse.zip")
        if not target.exists():
            tmp = target.with_name(f".{target.name}.{threading.get_ident()}.tmp")
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
                info = zipfile.ZipInfo(f"{product.name}/{product.file_name}", date_time=(2024, 1, 1, 0, 0, 0))
                with open(path, "rb") as src, zf.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp, target)  # one rename: a reader sees no zip or the whole zip
        return target

    def path(self, product: CdseProduct) -> Path:
        """The product's file, generated on first use (the store does that atomically and thread-safely)."""
        if product.path is None or not product.path.exists():
            product.path = Path(self.ctx.store.materialize(product.item))
        return product.path


STATE_KEY = web.AppKey("cdse_state", CdseState)


def _users_from_ctx(ctx: SandboxContext) -> dict[str, Any] | None:
    """CDSE users the server put in ``ctx.state["credentials"]["cdse"]`` (a dict, or a (user, password) pair)."""
    creds = ctx.state.get("credentials")
    if not isinstance(creds, dict):
        return None
    cdse = creds.get("cdse")
    if isinstance(cdse, dict):
        if "username" in cdse and "password" in cdse:
            return {cdse["username"]: cdse["password"]}
        return cdse
    if isinstance(cdse, (tuple, list)) and len(cdse) == 2:
        return {cdse[0]: cdse[1]}
    return None


def _s3_keys_from_ctx(ctx: SandboxContext) -> dict[str, tuple[str, str]] | None:
    """S3 keys the server put beside the CDSE account (``s3_access_key`` / ``s3_secret_key``)."""
    creds = ctx.state.get("credentials")
    cdse = creds.get("cdse") if isinstance(creds, dict) else None
    if isinstance(cdse, dict) and cdse.get("s3_access_key") and cdse.get("s3_secret_key"):
        return {cdse["s3_access_key"]: (cdse["s3_secret_key"], cdse.get("username", ""))}
    return None


__all__ = ["CdseState", "DEFAULT_S3_KEYS", "DEFAULT_USERS", "MAX_CONCURRENT", "STATE_KEY"]
