"""Safe extraction of result zips, nested to any depth, and finding the data files in them.

Result zips come in several layouts (``Results/<inner>.zip``, flat, several inner zips,
zips in zips in zips), so every member that is itself a zip (by its first bytes,
``PK\\x03\\x04``, whatever its name) is expanded in place into a folder named after it
without ``.zip``, recursively; the zip file itself never stays in the result.
Zip-based document formats (``.docx``, ``.kmz``, ...) are metadata and stay as files.

Safety, at every level: every member is checked from its zip's central directory
before a byte of that zip is written (no absolute path, no ``..``, no link, not
encrypted, per-member compression ratio); entry COUNT, TOTAL bytes written and the
overall ratio (bytes written / size of the outer archive) are budgets shared by all
levels together, so a bomb spread over nested zips or many small members is caught
too; nesting is bounded (``Limits.max_depth``, against zip quines).  Each member is
streamed out with a hard cap on its real size (a lying header cannot inflate it).
Two members writing the same path are refused.  Everything goes to a temporary folder
renamed into place: a failure leaves nothing behind.

Disk use: an inner zip STORED in its parent (what result zips do: a zip does not
deflate) is opened where it lies, as a byte range of the parent file; nothing is
copied.  An inner zip that is DEFLATED in its parent cannot be read at random
offsets, so it is inflated to a temporary file beside the target, expanded, and
deleted: the only extra copy, and only while that inner zip is expanded.

CRCs -- no separate ``testzip()`` pass.  :mod:`zipfile` verifies every member's
CRC-32 as the member is streamed out, extraction goes to a temporary folder that
is deleted on any error, so a bad CRC anywhere leaves nothing, exactly as a pass
before extracting would, without reading the whole archive twice (a second full
read costs as much as the extraction's own reads, for no extra safety).  An inner
zip opened in place is not read through :mod:`zipfile`, so its own CRC (the
parent's record of it) is computed while its members are read -- reads in file
order extend a running CRC-32, and only the bytes never read (its central
directory, gaps) are read again at the end -- and compared before the level is
accepted.  The transmitted bytes are therefore verified end to end at every level.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import shutil
import stat
import struct
import tempfile
import threading
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from ..errors import CancelledError, IntegrityError, NoDataFilesError, UnsafeArchiveError

COPY_CHUNK = 4 * 1024 * 1024
ZIP_MAGIC = b"PK\x03\x04"
#: Zip containers that are documents, not archives of the product: kept as files.
ZIP_DOCUMENTS = (".docx", ".xlsx", ".pptx", ".odt", ".ods", ".odp", ".kmz", ".epub")
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zipfile's structFileHeader (30 bytes)
#: zipfile and the codecs raise these on damaged data.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, zlib.error, lzma.LZMAError)


@dataclass(frozen=True)
class Limits:
    """Extraction limits (generous for real products, fatal for bombs); budgets span all nesting levels."""

    max_entries: int = 10_000  # members of all zips together
    max_total: int = 64 * 1024**3  # bytes written, temporary copies of deflated inner zips included
    max_ratio: float = 200.0  # uncompressed / compressed per member, and bytes written / archive size overall
    ratio_floor: int = 1024 * 1024  # ratios are checked above this many bytes (tiny files compress freely)
    max_depth: int = 8  # zips within zips


# --------------------------------------------------------------------------- byte ranges


class _Readable(Protocol):
    def seek(self, offset: int, whence: int = 0) -> int: ...
    def read(self, n: int = -1) -> bytes: ...


class _Slice:
    """A read-only, seekable view of ``length`` bytes at ``start`` of ``base`` (a file or another slice).

    With ``crc`` given, reads that continue where the verified prefix ends extend a
    running CRC-32; :meth:`verify` reads what was never read and compares.
    """

    def __init__(self, base: _Readable, start: int, length: int, crc: int | None = None):
        self.base, self.start, self.length = base, start, length
        self.pos = 0
        self.expected = crc
        self._crc = 0
        self._verified = 0  # bytes [0, _verified) are in _crc

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        where = offset + (0, self.pos, self.length)[whence]
        if where < 0:
            raise OSError(f"seek to {where}, before the start of the member")
        self.pos = where
        return where

    def read(self, n: int = -1) -> bytes:
        left = self.length - self.pos
        n = left if n is None or n < 0 else min(n, left)
        if n <= 0:
            return b""
        self.base.seek(self.start + self.pos)
        data = self.base.read(n)
        at = self.pos
        self.pos += len(data)
        if self.expected is not None and at <= self._verified < self.pos:
            self._crc = zlib.crc32(memoryview(data)[self._verified - at:], self._crc)
            self._verified = self.pos
        return data

    def verify(self, what: str) -> None:
        """Read the bytes not read yet and compare the CRC-32 with the parent's record."""
        if self.expected is None:
            return
        while self._verified < self.length:
            self.seek(self._verified)
            if not self.read(COPY_CHUNK):
                raise IntegrityError(f"corrupt archive {what}: truncated")
        if self._crc != self.expected:
            raise IntegrityError(f"corrupt archive {what}: Bad CRC-32 (its bytes are damaged)")


def _data_start(parent: _Slice, info: zipfile.ZipInfo) -> int:
    """Offset of a member's data in its zip (after the local header, whose lengths may differ from the directory's)."""
    parent.seek(info.header_offset)
    header = parent.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != ZIP_MAGIC:
        raise zipfile.BadZipFile(f"bad local header for {info.filename!r}")
    fields = _LOCAL_HEADER.unpack(header)
    return info.header_offset + _LOCAL_HEADER.size + fields[10] + fields[11]


# --------------------------------------------------------------------------- checks


def _check_name(name: str, where: str) -> PurePosixPath:
    text = name.replace("\\", "/")
    path = PurePosixPath(text)
    if text.startswith("/") or (len(text) > 1 and text[1] == ":") or path.is_absolute():
        raise UnsafeArchiveError(f"archive member {name!r} in {where} has an absolute path")
    if any(part == ".." for part in path.parts):
        raise UnsafeArchiveError(f"archive member {name!r} in {where} points outside the extraction folder")
    return path


def _check_member(info: zipfile.ZipInfo, limits: Limits, where: str) -> PurePosixPath:
    """Everything about one member that needs no decompression."""
    rel = _check_name(info.filename, where)
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UnsafeArchiveError(f"archive member {info.filename!r} in {where} is a symbolic link")
    if info.flag_bits & 0x1:
        raise IntegrityError(f"archive member {info.filename!r} in {where} is encrypted; cannot extract it")
    if info.file_size > limits.ratio_floor and info.file_size > limits.max_ratio * max(info.compress_size, 1):
        raise UnsafeArchiveError(
            f"archive member {info.filename!r} in {where} expands {info.file_size / max(info.compress_size, 1):.0f}x "
            f"(limit {limits.max_ratio:.0f}x): refusing a likely zip bomb"
        )
    return rel


class _Budget:
    """Entry count, bytes written and overall ratio, shared by every level of one archive."""

    def __init__(self, limits: Limits, archive_size: int):
        self.limits, self.archive_size = limits, archive_size
        self.entries = 0
        self.total = 0

    def take(self, entries: int, nbytes: int, where: str) -> None:
        lim = self.limits
        self.entries += entries
        if self.entries > lim.max_entries:
            raise UnsafeArchiveError(
                f"archive has {self.entries} entries (counting nested zips, up to {where}), "
                f"more than the limit of {lim.max_entries}"
            )
        self.total += nbytes
        if self.total > lim.max_total:
            raise UnsafeArchiveError(
                f"archive expands to {self.total} bytes (counting nested zips, up to {where}), "
                f"more than the limit of {lim.max_total}"
            )
        if self.total > lim.ratio_floor and self.total > lim.max_ratio * max(self.archive_size, 1):
            raise UnsafeArchiveError(
                f"archive expands {self.total / max(self.archive_size, 1):.0f}x its size (counting nested zips, "
                f"up to {where}; limit {lim.max_ratio:.0f}x): refusing a likely zip bomb"
            )


def _is_zip(zf: zipfile.ZipFile, info: zipfile.ZipInfo, src: _Slice) -> bool:
    """Whether a member is itself a zip to expand (by its first bytes, not its name)."""
    if info.is_dir() or info.file_size < _LOCAL_HEADER.size or info.filename.lower().endswith(ZIP_DOCUMENTS):
        return False
    if info.compress_type == zipfile.ZIP_STORED:
        src.seek(_data_start(src, info))
        return src.read(4) == ZIP_MAGIC
    with zf.open(info) as member:
        return member.read(4) == ZIP_MAGIC


def _folder_of(rel: PurePosixPath) -> PurePosixPath:
    """Where a nested zip is expanded: its path without ``.zip``."""
    return rel.with_name(rel.name[:-4]) if rel.name.lower().endswith(".zip") and len(rel.name) > 4 else rel


# --------------------------------------------------------------------------- extraction


class _Extraction:
    """One archive being extracted: the budgets, the temporary folders and the files written."""

    def __init__(self, limits: Limits, budget: _Budget, root: Path, scratch: Path, cancel: threading.Event | None):
        self.limits, self.budget = limits, budget
        self.cancel = cancel
        self.root, self.root_resolved = root, root.resolve()
        self.scratch = scratch
        self.files: list[PurePosixPath] = []
        self.hashes: dict[str, str] = {}  # relative path -> sha256, computed as each member is written
        self._copies = 0

    def level(self, src: _Slice, base: PurePosixPath, where: str, depth: int) -> None:
        """Extract the zip in ``src`` under ``root/base``; nested zips recursively."""
        if depth > self.limits.max_depth:
            raise UnsafeArchiveError(f"{where} is nested more than {self.limits.max_depth} zips deep")
        try:
            with zipfile.ZipFile(src) as zf:  # type: ignore[arg-type]  # a seekable binary reader
                infos = sorted(zf.infolist(), key=lambda i: i.header_offset)  # file order: sequential reads
                self.budget.take(len(infos), 0, where)
                plan = []
                for info in infos:
                    rel = _check_member(info, self.limits, where)
                    kind = "dir" if info.is_dir() else ("zip" if _is_zip(zf, info, src) else "file")
                    plan.append((info, rel, kind))
                writes = sum(i.file_size for i, _, k in plan if k == "file" or
                             (k == "zip" and i.compress_type != zipfile.ZIP_STORED))
                self.budget.take(0, writes, where)
                for info, rel, kind in plan:
                    self._check_cancel()
                    inner = f"{where} > {info.filename}"
                    if kind == "dir":
                        self._dir(base / rel, info.filename)
                    elif kind == "file":
                        self.hashes[(base / rel).as_posix()] = self._write(zf, info, self._dest(base / rel, info.filename))
                        self.files.append(base / rel)
                    elif info.compress_type == zipfile.ZIP_STORED:  # opened where it lies, verified as it is read
                        nested = _Slice(src, _data_start(src, info), info.compress_size, crc=info.CRC)
                        self.level(nested, base / _folder_of(rel), inner, depth + 1)
                        nested.verify(inner)
                    else:  # deflated: inflate to a scratch file (zipfile checks its CRC), expand, delete
                        self._copies += 1
                        copy = self.scratch / f"{self._copies}.zip"
                        self._write(zf, info, copy)
                        try:
                            with open(copy, "rb") as fh:
                                self.level(_Slice(fh, 0, info.file_size), base / _folder_of(rel), inner, depth + 1)
                        finally:
                            copy.unlink(missing_ok=True)
        except _ZIP_ERRORS as exc:
            raise IntegrityError(f"corrupt archive {where}: {exc}") from None

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise CancelledError("cancelled during extraction")

    def _dest(self, rel: PurePosixPath, name: str) -> Path:
        dest = self.root.joinpath(*rel.parts)
        if not dest.resolve().is_relative_to(self.root_resolved):
            raise UnsafeArchiveError(f"archive member {name!r} points outside the extraction folder")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise UnsafeArchiveError(f"archive member {name!r} collides with another member's file") from None
        return dest

    def _dir(self, rel: PurePosixPath, name: str) -> None:
        dest = self._dest(rel, name)
        try:
            dest.mkdir(exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise UnsafeArchiveError(f"archive member {name!r} collides with another member's file") from None

    def _write(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> str:
        """Stream one member out (capped at its declared size); returns its sha256."""
        written = 0
        digest = hashlib.sha256()
        try:
            out = open(dest, "xb")
        except (FileExistsError, IsADirectoryError, NotADirectoryError):
            raise UnsafeArchiveError(f"archive member {info.filename!r} would overwrite another member") from None
        with zf.open(info) as src, out:  # zipfile checks the CRC at the end
            while data := src.read(COPY_CHUNK):
                self._check_cancel()
                written += len(data)
                if written > info.file_size:
                    raise UnsafeArchiveError(f"archive member {info.filename!r} is larger than its header says")
                out.write(data)
                digest.update(data)
        return digest.hexdigest()


def is_zip(path: Path) -> bool:
    """Whether a downloaded file is a zip by its first bytes (whatever the server named it)."""
    with open(path, "rb") as fh:
        return fh.read(4) == ZIP_MAGIC


def extract_zip(archive: Path, target: Path, limits: Limits | None = None, *,
                cancel: threading.Event | None = None, hashes: dict[str, str] | None = None) -> list[Path]:
    """Extract ``archive`` and every zip nested in it to ``target`` (which must not exist yet).

    Returns the files written.  Raises :class:`UnsafeArchiveError` for hostile archives,
    :class:`IntegrityError` for damaged ones (CRCs are verified while streaming, not in a
    separate pass first: see the module docstring) and :class:`CancelledError` soon after
    ``cancel`` is set; in every case ``target`` is not created and nothing is left beside it.
    ``hashes``, when given, receives each file's sha256 (relative posix path -> hex), computed
    while the member was written (no second pass).
    """
    limits = limits or Limits()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.nested.", dir=target.parent))
    try:
        with open(archive, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            job = _Extraction(limits, _Budget(limits, size), tmp, scratch, cancel)
            job.level(_Slice(fh, 0, size), PurePosixPath(), archive.name, 0)
        os.replace(tmp, target)
        if hashes is not None:
            hashes.update(job.hashes)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return [target.joinpath(*rel.parts) for rel in job.files]


# --------------------------------------------------------------------------- finding the data

#: Data files by name; sidecars by name (GDAL overviews and masks are TIFFs too, but not data; a
#: shapefile's index, attributes and encoding travel beside its ``.shp``, which is the data file).
RASTER_SUFFIXES = (".tif", ".tiff", ".nc", ".nc4")
VECTOR_SUFFIXES = (".geojson", ".gpkg", ".shp", ".fgb")
DATA_SUFFIXES = RASTER_SUFFIXES + VECTOR_SUFFIXES
SHAPEFILE_PARTS = (".shx", ".dbf", ".cpg", ".sbn", ".sbx", ".qix", ".fix", ".atx", ".aih", ".ain", ".ixs", ".mxs")
SIDECAR_SUFFIXES = (".aux.xml", ".xml", ".pdf", ".ovr", ".msk", ".tfw", ".prj", ".qml", ".sld", ".html", ".txt",
                    ".lyr", ".lyrx") + SHAPEFILE_PARTS
_SIGNATURES = {
    b"II*\x00": "geotiff", b"MM\x00*": "geotiff", b"II+\x00": "geotiff", b"MM\x00+": "geotiff",
    b"CDF\x01": "netcdf", b"CDF\x02": "netcdf", b"CDF\x05": "netcdf",
    b"fgb\x03": "vector",  # FlatGeobuf
}
_HDF5 = b"\x89HDF\r\n\x1a\n"
_HDF5_OFFSETS = (0, 512, 1024, 2048, 4096)  # the superblock may follow a user block
_SQLITE = b"SQLite format 3\x00"
_GPKG_IDS = (b"GPKG", b"GP10", b"GP11")  # a GeoPackage's SQLite application_id (offset 68)
_SHP_CODE, _SHP_VERSION = b"\x00\x00\x27\x0a", b"\xe8\x03\x00\x00"  # 9994 big-endian, 1000 little-endian
#: A GeoJSON FeatureCollection without the .geojson name: a JSON object whose first bytes name a
#: ``features`` array or the collection's type (keys may come in any order, so both are looked for).
_GEOJSON_HEAD = re.compile(rb'^\s*\{.*?("features"\s*:\s*\[|"type"\s*:\s*"FeatureCollection")', re.DOTALL)
_GEOJSON_PEEK = 4096
LISTED_MEMBERS = 30  # files named in a NoDataFilesError message; the rest are counted


def sniff(path: Path) -> str | None:
    """``"geotiff"``, ``"netcdf"`` (NetCDF-4 is HDF5) or ``"vector"`` (GeoPackage, shapefile ``.shp``,
    FlatGeobuf, GeoJSON FeatureCollection) from a file's first bytes, else ``None``.

    A shapefile's ``.shx`` index has the ``.shp`` header too; it is told apart by its name.
    """
    if path.name.lower().endswith(".shx"):
        return None
    try:
        with open(path, "rb") as fh:
            head = fh.read(100)
            kind = _SIGNATURES.get(head[:4])
            if kind:
                return kind
            if head[:16] == _SQLITE:
                return "vector" if head[68:72] in _GPKG_IDS else None
            if head[:4] == _SHP_CODE and head[28:32] == _SHP_VERSION:
                return "vector"
            if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{":
                fh.seek(0)
                return "vector" if _GEOJSON_HEAD.match(fh.read(_GEOJSON_PEEK).removeprefix(b"\xef\xbb\xbf")) else None
            for offset in _HDF5_OFFSETS:
                fh.seek(offset)
                if fh.read(8) == _HDF5:
                    return "netcdf"
    except OSError:
        return None
    return None


def _kind_by_name(name: str) -> str | None:
    if name.endswith(RASTER_SUFFIXES):
        return "raster"
    if name.endswith(VECTOR_SUFFIXES):
        return "vector"
    return None


def classify(folder: Path) -> tuple[list[Path], list[Path]]:
    """Split the files under ``folder`` into data and everything else (metadata, documents, GDAL and
    shapefile sidecars), both sorted; data is found by content or extension (see :func:`sniff`).

    Raster files (GeoTIFF, NetCDF) take precedence: in a product that holds rasters, a vector file
    (a footprint, a tile grid) is metadata.  Only a product without rasters is a vector product.
    """
    raster: list[Path] = []
    vector: list[Path] = []
    other: list[Path] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        name = path.name.lower()
        if name.endswith(SIDECAR_SUFFIXES):
            other.append(path)
            continue
        kind = _kind_by_name(name) or sniff(path)
        if kind == "vector":
            vector.append(path)
        elif kind is not None:
            raster.append(path)
        else:
            other.append(path)
    if raster:
        return raster, sorted(other + vector)
    return vector, other


def _shapefile_gaps(shp: Path) -> list[str]:
    """The mandatory parts (``.shx`` index, ``.dbf`` attributes) missing beside a ``.shp``."""
    present = {p.name.lower() for p in shp.parent.iterdir()}
    stem = shp.name[:-4].lower()
    return [stem + ext for ext in (".shx", ".dbf") if stem + ext not in present]


def require_data(folder: Path, archive_name: str) -> list[Path]:
    """The data files extracted to ``folder``; :class:`NoDataFilesError` listing what was there if none,
    :class:`IntegrityError` for a shapefile delivered without its index or attributes."""
    data, other = classify(folder)
    if data:
        for path in data:
            if path.name.lower().endswith(".shp") and (gaps := _shapefile_gaps(path)):
                shown = path.relative_to(folder).as_posix()
                raise IntegrityError(f"archive {archive_name} holds the shapefile {shown} without its "
                                     f"{' and '.join(gaps)} (a shapefile needs its .shx and .dbf beside it)")
        return data
    members = [(p.relative_to(folder).as_posix(), p.stat().st_size) for p in other]
    total = sum(size for _, size in members)
    if not members:
        held = "it held no file at all"
    else:
        lines = [f"  {name} ({size} bytes)" for name, size in members[:LISTED_MEMBERS]]
        if len(members) > LISTED_MEMBERS:
            rest = members[LISTED_MEMBERS:]
            lines.append(f"  ... and {len(rest)} more file(s), {sum(s for _, s in rest)} bytes")
        held = f"it held {len(members)} file(s), {total} bytes:\n" + "\n".join(lines)
    raise NoDataFilesError(
        f"archive {archive_name} holds no data file (GeoTIFF .tif/.tiff, NetCDF .nc/.nc4, or vector: GeoJSON, "
        f"GeoPackage, shapefile, FlatGeobuf; found by content or name); {held}",
        archive=archive_name,
        members=members,
    )


__all__ = ["Limits", "extract_zip", "is_zip", "classify", "require_data", "sniff"]
