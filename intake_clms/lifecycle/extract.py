"""Safe zip extraction: nothing outside the target, no links, bounded size and count, CRCs verified.

Everything is checked from the central directory before a byte is written, then
each member is streamed out with a hard cap on its real size (a lying header
cannot inflate it) and its CRC verified by :mod:`zipfile`.  Extraction goes to a
temporary folder renamed into place, so a failure leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import IntegrityError, UnsafeArchiveError

COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Extraction limits (generous for real products, fatal for bombs)."""

    max_entries: int = 10_000
    max_total: int = 64 * 1024**3
    max_ratio: float = 200.0  # uncompressed / compressed, for members above ratio_floor bytes
    ratio_floor: int = 1024 * 1024


def _check_name(name: str) -> PurePosixPath:
    text = name.replace("\\", "/")
    path = PurePosixPath(text)
    if text.startswith("/") or (len(text) > 1 and text[1] == ":") or path.is_absolute():
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path")
    if any(part == ".." for part in path.parts):
        raise UnsafeArchiveError(f"archive member {name!r} points outside the extraction folder")
    return path


def check_zip(zf: zipfile.ZipFile, limits: Limits) -> list[zipfile.ZipInfo]:
    """The members to extract, after every check that needs no decompression."""
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise UnsafeArchiveError(f"archive has {len(infos)} entries, more than the limit of {limits.max_entries}")
    total = 0
    for info in infos:
        _check_name(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafeArchiveError(f"archive member {info.filename!r} is a symbolic link")
        total += info.file_size
        if info.file_size > limits.ratio_floor and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise UnsafeArchiveError(
                f"archive member {info.filename!r} expands {info.file_size / max(info.compress_size, 1):.0f}x "
                f"(limit {limits.max_ratio:.0f}x): refusing a likely zip bomb"
            )
    if total > limits.max_total:
        raise UnsafeArchiveError(f"archive expands to {total} bytes, more than the limit of {limits.max_total}")
    return infos


def extract_zip(archive: Path, target: Path, limits: Limits | None = None) -> list[Path]:
    """Extract ``archive`` to ``target`` (which must not exist yet); returns the files written."""
    limits = limits or Limits()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                infos = check_zip(zf, limits)
                files = []
                for info in infos:
                    rel = _check_name(info.filename)
                    dest = tmp.joinpath(*rel.parts)
                    if not dest.resolve().is_relative_to(tmp.resolve()):
                        raise UnsafeArchiveError(f"archive member {info.filename!r} points outside the extraction folder")
                    if info.is_dir():
                        dest.mkdir(parents=True, exist_ok=True)
                        continue
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    written = 0
                    with zf.open(info) as src, open(dest, "wb") as out:  # zipfile checks the CRC at the end
                        while data := src.read(COPY_CHUNK):
                            written += len(data)
                            if written > info.file_size:
                                raise UnsafeArchiveError(f"archive member {info.filename!r} is larger than its header says")
                            out.write(data)
                    files.append(rel)
        except zipfile.BadZipFile as exc:
            raise IntegrityError(f"corrupt archive {archive.name}: {exc}") from None
        except (zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
            raise IntegrityError(f"unreadable archive {archive.name}: {exc}") from None
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [target.joinpath(*rel.parts) for rel in files]
