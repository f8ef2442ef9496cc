"""The product store: every server product once, complete and immutable, with a record of its files.

A product is one server product (e.g. ``c_gls_NDVI300_202401010000_GLOBE_OLCI_V2.0.1.nc``),
keyed by what identifies it whatever the service that delivered it (see
:func:`intake_clms.services.base.product_key`).  Layout under the store root::

    products/<key>/             the product's files + record.json; complete or absent
    staging/<key>.<host>.<pid>.<hex>/   a product being built (extracted, indexed)

A product is built in its staging folder, its ``record.json`` (every file's size and
content hash: the server's checksum where it gave one, else the sha256 computed while
the bytes streamed in) is written there, and the folder is renamed to
``products/<key>`` in one step.  Nothing writes into a published product again; it is
only ever removed whole (renamed aside first), so a reader sees all of it or none.

Reopening checks every file's size against the record (a ``stat`` each, no hashing);
``verify`` re-hashes (``intake-clms cache verify``).  Damage that only a read finds (a
flipped byte: same size, a library's read error) is recorded beside the store, in
``damaged/<key>.json`` (:func:`damaged_on_read`), since nothing writes into a product:
from then on ``check`` reports the product damaged, so the next open fetches it again
and ``cache list`` / ``cache clean --failed`` see it.  A new copy replaces a damaged one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DamagedProductError
from .fsutil import fsync_dir, is_dead_leftover, local_faults, owned, read_json, remove_tree, shallow, write_json_atomic

RECORD = "record.json"
RECORD_VERSION = 1
HASH_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class FileRecord:
    """One stored file: path relative to the product folder, size, hashes, role (data or metadata)."""

    path: str
    size: int
    hashes: dict[str, str] = field(default_factory=dict)  # {"sha256": ..., "md5": ...}
    role: str = "data"  # data | metadata
    kind: str | None = None  # netcdf | geotiff | vector (data files)


@dataclass(frozen=True)
class ProductRecord:
    key: str
    name: str
    files: tuple[FileRecord, ...]
    service: str = ""  # through which it was fetched
    start: str | None = None
    end: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)  # what was downloaded: name, size, hashes
    published: float = 0.0
    version: int = RECORD_VERSION

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def data(self) -> list[FileRecord]:
        return [f for f in self.files if f.role == "data"]

    def to_json(self) -> dict[str, Any]:
        out = shallow(self)  # json copies nothing: asdict's deep copy cost more than the dump
        out["files"] = [shallow(x) for x in self.files]
        return out

    @classmethod
    def from_json(cls, data: Any) -> ProductRecord:
        if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
            raise ValueError(f"record version {data.get('version') if isinstance(data, dict) else None!r} is not {RECORD_VERSION}")
        files = tuple(FileRecord(**f) for f in data["files"])
        fields = {k: data[k] for k in ("key", "name", "service", "start", "end", "payload", "published") if k in data}
        return cls(files=files, **fields)


def hash_file(path: Path, algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashers.items()}


class ProductStore:
    """``products/`` and ``staging/`` under one store root."""

    def __init__(self, root: Path):
        self.root = root
        self.products = root / "products"
        self.staging_root = root / "staging"

    def path(self, key: str) -> Path:
        return self.products / key

    def marker(self, key: str) -> Path:
        return self.root / "damaged" / f"{key}.json"

    def mark_damaged(self, key: str, path: str, problem: str) -> DamagedProductError:
        """Record that a read found the product damaged (best effort: a read-only store just reports it)."""
        try:
            write_json_atomic(self.marker(key), {"key": key, "path": path, "problem": problem})
        except Exception:  # noqa: BLE001 - the error is raised anyway
            pass
        return DamagedProductError(key, path, problem)

    def keys(self) -> Iterator[str]:
        try:
            names = sorted(os.listdir(self.products))
        except FileNotFoundError:
            return iter(())
        return iter(n for n in names if not n.startswith("."))

    def record(self, key: str) -> ProductRecord | None:
        """The record of a stored product, None if absent; DamagedProductError if the record is unreadable."""
        folder = self.path(key)
        data, problem = read_json(folder / RECORD)
        if data is None and problem is None:
            if folder.is_dir():
                raise DamagedProductError(key, str(folder / RECORD), "the record is missing")
            return None
        try:
            if problem:
                raise ValueError(problem)
            return ProductRecord.from_json(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise DamagedProductError(key, str(folder / RECORD), f"the record is unreadable ({exc})") from None

    def check(self, key: str) -> ProductRecord | None:
        """The record if the product is stored and every file has its recorded size; no hashing."""
        rec = self.record(key)
        if rec is None:
            return None
        folder = self.path(key)
        mark, _ = read_json(self.marker(key))
        if isinstance(mark, dict):
            raise DamagedProductError(key, str(mark.get("path") or folder), f"a read failed: {mark.get('problem')}")
        for f in rec.files:
            path = folder / f.path
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise DamagedProductError(key, str(path), "the file is missing") from None
            except OSError as exc:
                raise DamagedProductError(key, str(path), f"cannot stat it ({exc.strerror})") from None
            if size != f.size:
                raise DamagedProductError(key, str(path), f"{size} bytes, the record says {f.size}")
        return rec

    def verify(self, key: str, mark: bool = False) -> list[DamagedProductError]:
        """Every problem of a stored product: sizes and content hashes (reads every byte).
        ``mark``: record hash mismatches as damage (``check`` then reports them)."""
        problems = self._verify(key)
        if mark:
            for exc in problems:
                if not self.marker(key).exists():
                    self.mark_damaged(key, exc.path, exc.problem)
        return problems

    def _verify(self, key: str) -> list[DamagedProductError]:
        try:
            rec = self.check(key)
        except DamagedProductError as exc:
            return [exc]
        if rec is None:
            return []
        problems = []
        folder = self.path(key)
        for f in rec.files:
            algos = tuple(a for a in ("sha256", "md5") if a in f.hashes)
            if not algos:
                continue
            got = hash_file(folder / f.path, algos)
            for a in algos:
                if got[a] != f.hashes[a]:
                    problems.append(DamagedProductError(key, str(folder / f.path), f"{a} {got[a]} differs from the record's {f.hashes[a]}"))
                    break
        return problems

    def new_staging(self, key: str) -> Path:
        with local_faults(self.staging_root):
            self.staging_root.mkdir(parents=True, exist_ok=True)
            folder = self.staging_root / owned(key)
            folder.mkdir()
        return folder

    def put(self, staging: Path, record: ProductRecord) -> ProductRecord:
        """Publish a staged product: write its record, then one rename.  A sound product already there wins;
        a damaged one is replaced."""
        final = self.path(record.key)
        with local_faults(staging):
            write_json_atomic(staging / RECORD, record.to_json())
            self.products.mkdir(parents=True, exist_ok=True)
            if final.exists():
                try:
                    kept = self.check(record.key)
                except DamagedProductError:
                    kept = None
                    self.remove(record.key)
                if kept is not None:
                    shutil.rmtree(staging, ignore_errors=True)
                    return kept
            try:
                os.replace(staging, final)
            except OSError:
                if not final.is_dir():  # a concurrent publisher's copy is in place: it wins
                    raise
                shutil.rmtree(staging, ignore_errors=True)
                return self.record(record.key) or record
            self.marker(record.key).unlink(missing_ok=True)
            fsync_dir(self.products)
        return record

    def remove(self, key: str) -> None:
        remove_tree(self.path(key))
        self.marker(key).unlink(missing_ok=True)

    def leftovers(self) -> list[Path]:
        """Staging folders and trash of processes of this host that no longer run."""
        found = []
        for base in (self.staging_root, self.products):
            try:
                names = os.listdir(base)
            except FileNotFoundError:
                continue
            found += [base / n for n in names if is_dead_leftover(n)]
        return found


def damaged_on_read(path: str | os.PathLike[str], exc: BaseException) -> DamagedProductError | None:
    """A read error in a stored file: recorded as damage of its product (named with the file), or None when
    ``path`` is not a file of a stored product (``<store>/products/<key>/...``).  The engine hands it to
    assembly as its ``on_damage`` hook (:mod:`intake_clms.assemble.damage`): a module-level function, so dask
    worker processes run it too (the store is found from the path; no credential involved)."""
    p = Path(os.path.normpath(os.fspath(path)))  # a VRT names its tiles relative to the view: ../../products/...
    parts = p.parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "products" and i + 1 < len(parts) - 1:
            store = ProductStore(Path(*parts[:i]))
            key = parts[i + 1]
            if not store.path(key).is_dir():
                return None
            problem = (f"cannot read it ({type(exc).__name__}: {str(exc)[:200]}); the next open fetches the product "
                       "again (`intake-clms cache clean --failed` removes it, `intake-clms cache verify` checks every "
                       "file)")
            return store.mark_damaged(key, str(p), problem)
    return None
