"""Nested, hostile and damaged result zips through ``extract_zip``; finding the data in what comes out.

Every archive is a real zip written by the test or by the sandbox's generator
(``ProductStore.result_zip``, the layouts and hostile variants the CLMS API
serves); one test orders a result over HTTP from the sandbox's CLMS API with a
chosen layout.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import jwt
import numpy as np
import pytest
import rasterio
import requests
from affine import Affine

from intake_clms.net.download import download
from intake_clms.errors import CancelledError, IntegrityError, NoDataFilesError, UnsafeArchiveError
from intake_clms.engine.extract import Limits, classify, extract_zip, is_zip, require_data, sniff
from intake_clms.sandbox import Sandbox, clms_api
from intake_clms.sandbox.datagen import HOSTILE_NAMES, HOSTILE_VARIANTS, LAYOUTS, ProductStore

TIFF_HEAD = b"II*\x00" + bytes(60)


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ProductStore:
    return ProductStore(tmp_path_factory.mktemp("store"), size="tiny", bomb_bytes="8MiB", many_entries=10_050)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three real uint8 EPSG:3035 GeoTIFF tiles (with grid codes in their names)."""
    folder = tmp_path_factory.mktemp("tiles")
    paths = []
    for i in range(3):
        path = folder / f"FTY_2015_100m_E{40 + i}N27_03035.tif"
        profile = {"driver": "GTiff", "width": 40, "height": 40, "count": 1, "dtype": "uint8", "nodata": 255,
                   "crs": "EPSG:3035", "transform": Affine(100, 0, 4_000_000 + 4000 * i, 0, -100, 2_800_000)}
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.full((1, 40, 40), i, np.uint8))
        paths.append(path)
    return paths


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def zip_bytes(members: dict[str, bytes | Path], compression: int = zipfile.ZIP_STORED, comment: bytes = b"") -> bytes:
    """A zip in memory; values are contents or files."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, value in members.items():
            zf.writestr(name, value.read_bytes() if isinstance(value, Path) else value)
        zf.comment = comment
    return buf.getvalue()


def write_zip(path: Path, members: dict[str, bytes | Path], compression: int = zipfile.ZIP_STORED) -> Path:
    path.write_bytes(zip_bytes(members, compression))
    return path


def leftovers(folder: Path, *keep: Path) -> list[str]:
    """Everything in ``folder`` except ``keep`` (temporary folders, partial output)."""
    return sorted(p.name for p in folder.iterdir() if p not in keep)


def assert_nothing_left(target: Path, *keep: Path) -> None:
    """No output and no temporary folder beside it; ``keep``: the archives and earlier results there."""
    assert not target.exists()
    assert leftovers(target.parent, *keep) == []


def data_signature(files: list[Path]) -> list[tuple[str, str]]:
    return sorted((p.name, sha(p)) for p in files)


# --------------------------------------------------------------------------- the layouts


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_gives_the_same_data_files(store: ProductStore, tiles: list[Path], tmp_path: Path,
                                                layout: str) -> None:
    archive = store.result_zip(tiles, layout=layout)
    target = tmp_path / "ready"
    written = extract_zip(archive, target)
    data, other = classify(target)
    assert data_signature(data) == data_signature(tiles)
    assert require_data(target, archive.name) == data
    assert {p.suffix for p in other} == {".xml", ".pdf"}  # metadata and manual kept beside the data
    assert sorted(written) == sorted(data + other)
    everything = [p for p in target.rglob("*") if p.is_file()]
    assert sorted(everything) == sorted(written)
    assert not any(p.suffix == ".zip" for p in everything)  # inner zips expanded, then gone
    assert leftovers(tmp_path, target) == []  # no temporary folder left beside


def test_inner_zip_expands_into_a_folder_named_after_it(store: ProductStore, tiles: list[Path],
                                                        tmp_path: Path) -> None:
    archive = store.result_zip(tiles, layout="results_inner")
    with zipfile.ZipFile(archive) as zf:
        (inner,) = zf.namelist()
    target = tmp_path / "ready"
    extract_zip(archive, target)
    folder = target / inner[: -len(".zip")]
    assert folder.is_dir() and not (target / inner).exists()
    assert {p.name for p in folder.rglob("*.tif")} == {t.name for t in tiles}


def test_zips_found_by_content_not_name(tiles: list[Path], tmp_path: Path) -> None:
    inner = zip_bytes({"DATA/a.tif": tiles[0]})
    archive = write_zip(tmp_path / "r.zip", {
        "Results/payload.bin": inner,  # a zip without .zip
        "Results/manual.docx": zip_bytes({"word/document.xml": b"<w/>"}),  # a zip document: kept
        "Results/notes.zip": b"not a zip at all",  # named .zip, is not: kept as it is
    })
    target = tmp_path / "ready"
    extract_zip(archive, target)
    assert sha(target / "Results/payload.bin/DATA/a.tif") == sha(tiles[0])
    assert (target / "Results/manual.docx").is_file()
    assert (target / "Results/notes.zip").read_bytes() == b"not a zip at all"
    assert is_zip(archive) and not is_zip(target / "Results/notes.zip")


def test_any_depth_and_deflated_inner_zips(tiles: list[Path], tmp_path: Path) -> None:
    level = zip_bytes({"DATA/deep.tif": tiles[1], "deep.xml": b"<m/>"}, zipfile.ZIP_DEFLATED)
    for depth in range(5):  # alternate stored / deflated inner zips
        level = zip_bytes({f"L{depth}.zip": level, f"L{depth}.xml": b"<m/>"},
                          zipfile.ZIP_DEFLATED if depth % 2 else zipfile.ZIP_STORED)
    archive = tmp_path / "deep.zip"
    archive.write_bytes(level)
    target = tmp_path / "ready"
    extract_zip(archive, target)
    deep = target / "L4/L3/L2/L1/L0/DATA/deep.tif"
    assert sha(deep) == sha(tiles[1])
    assert leftovers(tmp_path, target, archive) == []  # the inflated copies are gone
    with pytest.raises(UnsafeArchiveError, match="nested more than 3 zips deep"):
        extract_zip(archive, tmp_path / "shallow", Limits(max_depth=3))
    assert_nothing_left(tmp_path / "shallow", archive, target)


def test_several_inner_zips_and_metadata_beside(tiles: list[Path], tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "r.zip", {
        "Results/a.zip": zip_bytes({"a/DATA/x.tif": tiles[0]}),
        "Results/b.zip": zip_bytes({"b/DATA/y.tif": tiles[1]}, zipfile.ZIP_DEFLATED),
        "Results/readme.pdf": b"%PDF-1.4",
        "result.xml": b"<m/>",
    })
    target = tmp_path / "ready"
    extract_zip(archive, target)
    data, other = classify(target)
    assert [p.relative_to(target).as_posix() for p in data] == ["Results/a/a/DATA/x.tif", "Results/b/b/DATA/y.tif"]
    assert [p.relative_to(target).as_posix() for p in other] == ["Results/readme.pdf", "result.xml"]


# --------------------------------------------------------------------------- hostile archives


def hostile_paths(target: Path, variant: str) -> list[Path]:
    """Where a hostile entry would land if it were obeyed."""
    name = HOSTILE_NAMES[variant]
    return [Path(name)] if name.startswith("/") else [Path(os.path.normpath(target / name))]


@pytest.mark.parametrize("variant", HOSTILE_VARIANTS)
def test_hostile_result_zips_are_refused(store: ProductStore, tiles: list[Path], tmp_path: Path,
                                         variant: str) -> None:
    archive = store.result_zip(tiles, layout="results_inner", hostile=variant)
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    target = work / "ready"
    for path in hostile_paths(target, variant):
        assert not path.exists()
    with pytest.raises(UnsafeArchiveError, match=archive.name):
        extract_zip(archive, target)
    assert not target.exists() and leftovers(work) == []
    for path in hostile_paths(target, variant):
        assert not path.exists() and not path.is_symlink()
    assert leftovers(tmp_path) == ["a"] and leftovers(tmp_path / "a") == ["b"]


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
@pytest.mark.parametrize("variant", HOSTILE_VARIANTS)
def test_hostile_content_in_an_inner_zip_is_refused(store: ProductStore, tiles: list[Path], tmp_path: Path,
                                                    variant: str, compression: int) -> None:
    hostile = store.result_zip(tiles, layout="flat", hostile=variant)
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    archive = write_zip(work / "outer.zip", {"Results/inner.zip": hostile, "outer.xml": b"<m/>"}, compression)
    target = work / "ready"
    with pytest.raises(UnsafeArchiveError, match="Results/inner.zip"):
        extract_zip(archive, target)
    assert_nothing_left(target, archive)
    for path in hostile_paths(target / "Results" / "inner", variant):
        assert not path.exists() and not path.is_symlink()


def test_two_members_writing_one_path_are_refused(tiles: list[Path], tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "r.zip", {
        "Results/a.zip": zip_bytes({"x.tif": tiles[0]}),
        "Results/a/x.tif": tiles[1],  # the same path as the inner zip's member
    })
    with pytest.raises(UnsafeArchiveError, match="overwrite another member"):
        extract_zip(archive, tmp_path / "ready")
    assert_nothing_left(tmp_path / "ready", archive)
    dup = tmp_path / "dup.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate name
        with zipfile.ZipFile(dup, "w") as zf:
            zf.writestr("x.tif", b"first")
            zf.writestr("x.tif", b"second")
    with pytest.raises(UnsafeArchiveError, match="overwrite another member"):
        extract_zip(dup, tmp_path / "ready")
    assert not (tmp_path / "ready").exists()


# --------------------------------------------------------------------------- limits across levels


def test_entry_count_is_counted_across_levels(tmp_path: Path) -> None:
    inner = zip_bytes({f"DATA/{i}.tif": TIFF_HEAD for i in range(6)})  # 6 entries
    archive = write_zip(tmp_path / "r.zip", {**{f"{i}.xml": b"<m/>" for i in range(5)}, "Results/i.zip": inner})
    with pytest.raises(UnsafeArchiveError, match="12 entries .*limit of 11"):
        extract_zip(archive, tmp_path / "ready", Limits(max_entries=11))  # 6 + 6: each level alone is under
    assert_nothing_left(tmp_path / "ready", archive)
    assert len(extract_zip(archive, tmp_path / "ready", Limits(max_entries=12))) == 11


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
def test_total_size_is_counted_across_levels(tmp_path: Path, compression: int) -> None:
    rng = np.random.default_rng(0)
    blob = [rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes() for _ in range(3)]
    inner = zip_bytes({"DATA/a.tif": TIFF_HEAD + blob[0], "DATA/b.tif": TIFF_HEAD + blob[1]})
    archive = write_zip(tmp_path / "r.zip", {"c.tif": TIFF_HEAD + blob[2], "Results/i.zip": inner}, compression)
    # written: 3 x ~300 kB of data, plus the inflated copy of the inner zip when it is deflated
    written = 3 * (300_000 + len(TIFF_HEAD)) + (len(inner) if compression == zipfile.ZIP_DEFLATED else 0)
    with pytest.raises(UnsafeArchiveError, match=f"expands to {written} bytes .*Results/i.zip"):
        extract_zip(archive, tmp_path / "ready", Limits(max_total=written - 1))
    assert_nothing_left(tmp_path / "ready", archive)
    extract_zip(archive, tmp_path / "ready", Limits(max_total=written))
    assert len(require_data(tmp_path / "ready", archive.name)) == 3


def test_compression_ratio_per_member(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "r.zip", {"zeros.tif": bytes(4 << 20)}, zipfile.ZIP_DEFLATED)
    with pytest.raises(UnsafeArchiveError, match=r"'zeros.tif' in r.zip expands \d+x \(limit 200x\)"):
        extract_zip(archive, tmp_path / "ready")
    assert_nothing_left(tmp_path / "ready", archive)
    extract_zip(archive, tmp_path / "ready", Limits(max_ratio=5000))
    assert (tmp_path / "ready" / "zeros.tif").stat().st_size == 4 << 20


def test_overall_ratio_catches_many_small_bombs(tmp_path: Path) -> None:
    small = {f"z{i}.tif": bytes(512 << 10) for i in range(16)}  # each under the 1 MiB floor of the member check
    archive = write_zip(tmp_path / "r.zip", small, zipfile.ZIP_DEFLATED)
    with pytest.raises(UnsafeArchiveError, match=r"expands \d+x its size"):
        extract_zip(archive, tmp_path / "ready")
    assert_nothing_left(tmp_path / "ready", archive)


def test_overall_ratio_catches_a_bomb_split_over_levels(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("z.tif", bytes(64 << 20))  # ~1000x
    archive = tmp_path / "n.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("Results/i.zip", buf.getvalue())  # ~150x more
    limits = Limits(max_ratio=1100)  # lets each level through, not their product
    with pytest.raises(UnsafeArchiveError, match=r"expands \d+x its size .*n.zip > Results/i.zip"):
        extract_zip(archive, tmp_path / "ready", limits)
    assert_nothing_left(tmp_path / "ready", archive)


# --------------------------------------------------------------------------- damaged archives


@pytest.mark.parametrize("layout", LAYOUTS)
def test_corrupt_result_zip_leaves_nothing(store: ProductStore, tiles: list[Path], tmp_path: Path,
                                           layout: str) -> None:
    archive = store.result_zip(tiles, layout=layout, corrupt=True)
    with pytest.raises(IntegrityError, match="Bad CRC-32") as info:
        extract_zip(archive, tmp_path / "ready")
    assert not isinstance(info.value, UnsafeArchiveError)
    assert_nothing_left(tmp_path / "ready", archive)


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1:]


@pytest.mark.parametrize("where", ["local-header-time", "inner-comment"])
def test_damage_only_the_outer_crc_sees_is_caught(tiles: list[Path], tmp_path: Path, where: str) -> None:
    """Bytes of a stored inner zip that its own members' CRCs do not cover are still verified."""
    inner = zip_bytes({"DATA/a.tif": tiles[0]}, comment=b"inner zip comment")
    outer = zip_bytes({"Results/i.zip": inner})
    start = outer.index(inner)
    offset = 10 if where == "local-header-time" else len(inner) - 3  # zipfile ignores both
    archive = tmp_path / "r.zip"
    archive.write_bytes(_flip(outer, start + offset))
    with zipfile.ZipFile(io.BytesIO(_flip(inner, offset))) as zf:
        assert zf.testzip() is None  # the inner zip alone looks fine
    with pytest.raises(IntegrityError, match=r"r.zip > Results/i.zip: Bad CRC-32"):
        extract_zip(archive, tmp_path / "ready")
    assert_nothing_left(tmp_path / "ready", archive)


def test_corrupt_deflated_data_and_broken_inner_zip(tiles: list[Path], tmp_path: Path) -> None:
    outer = bytearray(zip_bytes({"a.tif": tiles[0].read_bytes() * 3}, zipfile.ZIP_DEFLATED))
    outer[200:210] = bytes(10)  # inside the deflate stream
    archive = tmp_path / "r.zip"
    archive.write_bytes(bytes(outer))
    with pytest.raises(IntegrityError, match="corrupt archive r.zip"):
        extract_zip(archive, tmp_path / "ready")
    truncated = zip_bytes({"x.tif": tiles[0]})[:-40]  # starts like a zip, has no central directory
    archive = write_zip(tmp_path / "t.zip", {"Results/i.zip": truncated})
    with pytest.raises(IntegrityError, match="corrupt archive t.zip > Results/i.zip"):
        extract_zip(archive, tmp_path / "ready")
    not_zip = tmp_path / "n.zip"
    not_zip.write_bytes(b"<html>link expired</html>")
    with pytest.raises(IntegrityError, match="corrupt archive n.zip"):
        extract_zip(not_zip, tmp_path / "ready")
    assert leftovers(tmp_path, tmp_path / "r.zip", tmp_path / "t.zip", not_zip) == []


# --------------------------------------------------------------------------- finding the data


def test_classify_by_content_and_name(tmp_path: Path, tiles: list[Path]) -> None:
    files = {
        "DATA/tile.tif": tiles[0].read_bytes(),
        "DATA/no_extension": tiles[1].read_bytes(),  # a GeoTIFF by content
        "DATA/big.tif": b"II+\x00" + bytes(60),  # BigTIFF
        "DATA/motorola.tiff": b"MM\x00*" + bytes(60),
        "nc/classic.nc": b"CDF\x01" + bytes(60),
        "nc/offset64.dat": b"CDF\x02" + bytes(60),
        "nc/cdf5.bin": b"CDF\x05" + bytes(60),
        "nc/v4.nc4": b"\x89HDF\r\n\x1a\n" + bytes(60),
        "nc/userblock.h5": bytes(512) + b"\x89HDF\r\n\x1a\n" + bytes(60),
        "DATA/tile.tif.aux.xml": b"<PAMDataset/>",
        "DATA/tile.tif.ovr": tiles[0].read_bytes(),  # a TIFF, but an overview sidecar
        "DATA/tile.tif.msk": tiles[0].read_bytes(),
        "Metadata/m.xml": b"<m/>",
        "manual.pdf": b"%PDF-1.4",
        "readme": b"plain text",
    }
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    data, other = classify(tmp_path)
    rel = lambda paths: [p.relative_to(tmp_path).as_posix() for p in paths]  # noqa: E731
    assert rel(data) == ["DATA/big.tif", "DATA/motorola.tiff", "DATA/no_extension", "DATA/tile.tif",
                         "nc/cdf5.bin", "nc/classic.nc", "nc/offset64.dat", "nc/userblock.h5", "nc/v4.nc4"]
    assert rel(other) == ["DATA/tile.tif.aux.xml", "DATA/tile.tif.msk", "DATA/tile.tif.ovr", "Metadata/m.xml",
                          "manual.pdf", "readme"]
    assert sniff(tmp_path / "DATA/no_extension") == "geotiff" and sniff(tmp_path / "nc/userblock.h5") == "netcdf"
    assert sniff(tmp_path / "readme") is None


def test_no_data_file_lists_what_the_archive_held(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "task-4012.zip", {
        "Results/r.zip": zip_bytes({"r/Metadata/r.xml": b"<metadata/>", "r/Documents/manual.pdf": b"%PDF-1.4 x"}),
        "error_log.txt": b"FME: no features read",
    })
    target = tmp_path / "ready"
    extract_zip(archive, target)  # extraction itself succeeds
    with pytest.raises(NoDataFilesError) as info:
        require_data(target, archive.name)
    err = info.value
    assert isinstance(err, IntegrityError)
    text = str(err)
    assert "task-4012.zip holds no data file" in text and "3 file(s), 42 bytes" in text
    for line in ("Results/r/r/Metadata/r.xml (11 bytes)", "Results/r/r/Documents/manual.pdf (10 bytes)",
                 "error_log.txt (21 bytes)"):
        assert line in text
    assert err.archive == "task-4012.zip"
    assert sorted(err.members) == [("Results/r/r/Documents/manual.pdf", 10), ("Results/r/r/Metadata/r.xml", 11),
                                   ("error_log.txt", 21)]


def test_no_data_listing_is_truncated(tmp_path: Path) -> None:
    for i in range(1000):
        (tmp_path / f"m{i:04d}.xml").write_bytes(b"<m/>")
    with pytest.raises(NoDataFilesError) as info:
        require_data(tmp_path, "big.zip")
    text = str(info.value)
    assert "1000 file(s), 4000 bytes" in text and "m0000.xml (4 bytes)" in text
    assert "m0999.xml" not in text and "... and 970 more file(s), 3880 bytes" in text
    assert len(text.splitlines()) < 40 and len(info.value.members) == 1000
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoDataFilesError, match="held no file at all"):
        require_data(empty, "empty.zip")


# --------------------------------------------------------------------------- the sandbox's CLMS API layouts


def _order_result(sb: Sandbox, dest: Path) -> Path:
    """Grant, order the first pre-packaged file, wait (clock jump), download the result zip over HTTP."""
    key = json.loads(clms_api.default_service_key(sb.ctx).read_text())
    now = int(time.time())
    claims = {"iss": key["client_id"], "sub": key["user_id"], "aud": key["token_uri"], "iat": now, "exp": now + 600}
    grant = requests.post(key["token_uri"], timeout=30, data={
        "grant_type": clms_api.JWT_BEARER, "assertion": jwt.encode(claims, key["private_key"], algorithm="RS256")})
    headers = {"Accept": "application/json", "Authorization": f"Bearer {grant.json()['access_token']}"}
    api = sb.urls["clms_api"]
    url: str | None = api + "/@search"
    params: Any = [("portal_type", "DataSet"), ("metadata_fields", "UID"), ("metadata_fields", "downloadable_files")]
    chosen = None
    while url and chosen is None:
        body = requests.get(url, params=params, headers=headers, timeout=30).json()
        chosen = next(((item["UID"], f["@id"]) for item in body["items"]
                       for f in item["downloadable_files"]["items"] if f["path"] and f["source"]), None)
        url, params = body.get("batching", {}).get("next"), None
    assert chosen is not None
    order = {"Datasets": [{"DatasetID": chosen[0], "FileID": chosen[1]}]}
    posted = requests.post(api + "/@datarequest_post", json=order, headers=headers, timeout=30)
    (task_id,) = [t["TaskID"] for t in posted.json()["TaskIds"]]
    sb.clock.advance(61)  # past the queue delay, not the token lifetime
    task = requests.get(api + "/@datarequest_status_get", params={"TaskID": task_id}, headers=headers,
                        timeout=30).json()
    assert task["Status"] == "Finished_ok", task

    def open_body(offset: int) -> requests.Response:
        return requests.get(task["DownloadURL"], headers={"Range": f"bytes={offset}-"} if offset else {},
                            stream=True, timeout=30)

    got = download(open_body, dest, service="clms")
    assert got.size == task["FileSize"] == dest.stat().st_size
    return dest


@pytest.mark.parametrize("layout", [None, "flat", "nested3"])
def test_sandbox_clms_result_layout_tunable(tmp_path: Path, layout: str | None) -> None:
    sb = Sandbox(data_dir=tmp_path / "sb", size="tiny", speed=1.0, queue_delay=60.0)
    if layout == "nested3":
        sb.ctx.clms_result_layout = layout  # type: ignore[attr-defined]  # preset, as for the other tunables
    sb.start()
    try:
        if layout == "flat":
            clms_api.state(sb.ctx).result_layout = layout
        archive = _order_result(sb, tmp_path / "result.zip")
    finally:
        sb.stop()
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
    if layout == "flat":
        assert not any(n.startswith("Results/") for n in names) and any(n.endswith(".tif") for n in names)
    else:
        assert len(names) == 1 and names[0].startswith("Results/") and names[0].endswith(".zip")
    target = tmp_path / "ready"
    extract_zip(archive, target)
    data = require_data(target, archive.name)
    assert data and all(sniff(p) is not None for p in data)
    expected = {None: ["Results", "*", "*", "DATA"], "flat": [], "nested3": ["Results", "*", "*_data", "*", "DATA"]}
    for path in data:
        folders = path.relative_to(target).parts[:-1]
        assert len(folders) == len(expected[layout])
        assert all(Path(f).match(pattern) for f, pattern in zip(folders, expected[layout])), folders


# --------------------------------------------------------------------------- refusals that are not bombs


@pytest.mark.parametrize("level", ["outer", "inner"])
def test_encrypted_member_is_refused(tmp_path: Path, level: str) -> None:
    data = bytearray(zip_bytes({"Results/i.zip": zip_bytes({"a.tif": TIFF_HEAD})}))
    central = data.rindex(b"PK\x01\x02") if level == "outer" else data.index(b"PK\x01\x02")
    data[central + 8] |= 0x01  # the "encrypted" flag in that zip's central directory
    archive = tmp_path / "r.zip"
    archive.write_bytes(bytes(data))
    where = "'Results/i.zip' in r.zip" if level == "outer" else "'a.tif' in r.zip > Results/i.zip"
    with pytest.raises(IntegrityError, match=f"{where} is encrypted"):
        extract_zip(archive, tmp_path / "ready")
    assert_nothing_left(tmp_path / "ready", archive)


def test_cancel_stops_extraction_and_leaves_nothing(tiles: list[Path], tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "r.zip", {"Results/i.zip": zip_bytes({"a.tif": tiles[0]})})
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        extract_zip(archive, tmp_path / "ready", cancel=cancel)
    assert_nothing_left(tmp_path / "ready", archive)
    assert extract_zip(archive, tmp_path / "ready", cancel=threading.Event())  # unset: no effect
