"""Issue 11, the command line: negative longitudes as written, the bad value named first, one-line
file-system errors, generated files with the usual mode, and the CLMS API's datasets in list/resolve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import intake
import pytest
import yaml
from workbooks import CATALOG, TABLE

from intake_clms.cli import build_parser, glue_signed_values
from intake_clms.cli.preload import source_for
from intake_clms.sandbox import Sandbox

from sandbox.conftest import sandbox, sandbox_factory  # noqa: F401  (the shared sandbox fixtures)


def run(*args: str, env: dict[str, str] | None = None, umask: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "intake_clms.cli", *args], capture_output=True, text=True, env=env,
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("spelling", [["--bbox", "-10,35,0,44"], ["--bbox=-10,35,0,44"]])
def test_a_negative_west_works_as_written(spelling):
    argv = ["preload", "ndvi_global_300m_10daily_v2", *spelling, "--start", "2024-01-01", "--end", "2024-01-10"]
    args = build_parser().parse_args(glue_signed_values(argv))
    assert source_for(args.entry, args).request.bbox == (-10.0, 35.0, 0.0, 44.0)


def test_glue_leaves_other_arguments_alone():
    assert glue_signed_values(["list", "--search", "-x"]) == ["list", "--search", "-x"]
    assert glue_signed_values(["preload", "e", "--bbox", "5,45,10,50"]) == ["preload", "e", "--bbox", "5,45,10,50"]
    assert glue_signed_values(["--", "--bbox", "-1,2,3,4"]) == ["--", "--bbox", "-1,2,3,4"]


def test_the_cli_takes_a_negative_bbox_and_names_the_bad_value_first():
    line = one_line_error(run("preload", "ndvi_global_300m_10daily_v2", "--bbox", "-10,35,0,44", "--start", "2999-01-01",
                              "--end", "2999-02-01"))
    assert "start: 2999-01-01 is in the future" in line  # parsed past --bbox; refused offline on the dates
    line = one_line_error(run("preload", "ndvi_global_300m_10daily_v2", "--bbox", "5,45,10"))
    assert "bbox: got '5,45,10'; expected four numbers" in line and "huge" not in line


def test_generate_into_a_directory_or_under_a_file_is_one_line(tmp_path):
    line = one_line_error(run("generate", str(TABLE), "-o", str(tmp_path)))
    assert f"cannot write {tmp_path}: Is a directory" in line
    (tmp_path / "plain").write_text("x")
    line = one_line_error(run("generate", str(TABLE), "-o", str(tmp_path / "plain" / "clms.yaml")))
    assert "plain is a file, not a folder" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]  # no temporary file left behind


def test_generate_into_a_read_only_folder_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):  # root ignores the mode: use a read-only file system instead
            if not (Path("/sys").is_dir() and not os.access("/sys", os.W_OK)):
                pytest.skip("running as root and no read-only file system at hand")
            folder = Path("/sys")
        line = one_line_error(run("generate", str(TABLE), "-o", str(folder / "clms.yaml")))
        assert "cannot write" in line and "Permission denied" in line
    finally:
        (tmp_path / "ro").chmod(0o755)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_generated_files_follow_the_umask(tmp_path, umask, mode):
    out = tmp_path / "clms.yaml"
    assert run("generate", str(TABLE), "-o", str(out), umask=umask).returncode == 0
    assert out.stat().st_mode & 0o777 == mode


# --------------------------------------------------------------------------- list/resolve and the CLMS API


def _offline_env(tmp_path: Path, sb: Sandbox) -> dict[str, str]:
    env = {**os.environ, **sb.env(), "INTAKE_CLMS_CACHE": str(tmp_path / "cache")}
    return env


def test_list_and_resolve_find_the_api_datasets_offline(sandbox, tmp_path, monkeypatch):  # noqa: F811
    env = _offline_env(tmp_path, sandbox)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    before = run("list", "--search", "forest type 2015", env=env)  # nothing saved yet: no network either, a note
    assert before.returncode == 2 and "not searched: no saved listing" in before.stderr
    searches = sandbox.log.count(service="clms", endpoint="search")
    nested = intake.open_catalog(str(CATALOG)).clms_download_api
    assert "forest_type_2015" in list(nested)  # opening it once saves the listing in the cache
    sandbox.stop()  # from here on, any HTTP call would fail
    listed = run("list", "--search", "forest type 2015", env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split()[0] == "clms_download_api.forest_type_2015"
    resolved = run("resolve", "forest-type-2015", env=env)
    assert resolved.returncode == 0, resolved.stderr
    assert resolved.stdout.split("\t")[:3] == ["clms_download_api.forest_type_2015", "clms_api", "forest-type-2015"]
    table = run("resolve", "EO:CLMS:DAT:CLMS_GLOBAL_NDVI_300M_V1_10DAILY_NETCDF", env=env)
    assert table.stdout.startswith("ndvi_global_300m_10daily_v1\tmigrated")  # table entries as before
    assert sandbox.log.count(service="clms", endpoint="search") == searches + 1  # the one listing the open made


def test_list_takes_a_saved_listing_file(sandbox, tmp_path):  # noqa: F811
    import requests

    url = sandbox.env()["CLMS_API_URL"].rstrip("/") + "/@search?portal_type=DataSet&fullobjects=1"
    items, nxt = [], url
    while nxt:
        body = requests.get(nxt, headers={"Accept": "application/json"}, timeout=30).json()
        items += body["items"]
        nxt = (body.get("batching") or {}).get("next")
    saved = tmp_path / "listing.json"
    saved.write_text(json.dumps(items))
    env = {**os.environ, "INTAKE_CLMS_CACHE": str(tmp_path / "empty-cache"), "CLMS_API_URL": "http://127.0.0.1:9/api"}
    out = run("list", "--search", "forest", "--listing", str(saved), env=env)
    assert out.returncode == 0 and "clms_download_api.forest_type_2015" in out.stdout.split()
    static = tmp_path / "api.yaml"  # a static API catalog (generate --clms-api) is searched like any catalog
    assert run("generate", "--clms-api", "--listing", str(saved), "-o", str(static)).returncode == 0
    out = run("resolve", "forest-type-2015", "--catalog", str(static), env=env)
    assert out.returncode == 0 and out.stdout.startswith("forest_type_2015\t"), out.stderr
    assert "forest_type_2015" in yaml.safe_load(static.read_text())["sources"]
