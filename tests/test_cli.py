"""The intake-clms command line: generate, resolve, list; one-line errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from workbooks import CATALOG, NEW_HEADERS, TABLE, write_workbook

from intake_clms.cli import main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "intake_clms.cli", *args], capture_output=True, text=True)


def test_generate_writes_the_catalog(tmp_path, capsys):
    out = tmp_path / "sub" / "clms.yaml"
    assert main(["generate", str(TABLE), "-o", str(out)]) == 0
    assert out.read_text() == CATALOG.read_text()
    assert "wrote 152 entries" in capsys.readouterr().err  # 151 products and the nested CLMS API catalog


def test_generate_to_stdout(capsys):
    assert main(["generate", str(TABLE)]) == 0
    sources = yaml.safe_load(capsys.readouterr().out)["sources"]
    assert sum(s["driver"] == "clms" for s in sources.values()) == 141
    assert sum(s["driver"] == "clms_vector" for s in sources.values()) == 10  # is_vector: a GeoDataFrame
    assert [n for n, s in sources.items() if s["driver"] not in ("clms", "clms_vector")] == ["clms_download_api"]


def test_generate_missing_column_fails_in_one_line_and_writes_nothing(tmp_path, clean_sheets):
    clean_sheets["New"][2] = ["Name", *NEW_HEADERS[1:]]
    table = write_workbook(tmp_path / "bad.xlsx", clean_sheets)
    out = tmp_path / "out.yaml"
    result = run("generate", str(table), "-o", str(out))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "sheet 'New'" in lines[0] and "dataset_identifier" in lines[0] and "'Name'" in lines[0]
    assert not out.exists() and list(tmp_path.iterdir()) == [table]  # no partial or temporary file left
    # An existing catalog is left as it was.
    out.write_text("previous")
    assert run("generate", str(table), "-o", str(out)).returncode == 2
    assert out.read_text() == "previous"


def test_generate_with_columns(tmp_path, clean_sheets, capsys):
    clean_sheets["New"][2] = ["Name", *NEW_HEADERS[1:]]
    table = write_workbook(tmp_path / "renamed.xlsx", clean_sheets)
    assert main(["generate", str(table), "--columns", "New:dataset_identifier=Name"]) == 0
    assert "ndvi_global_300m_10daily_v1" in yaml.safe_load(capsys.readouterr().out)["sources"]


def test_resolve_and_list(capsys):
    assert main(["resolve", "EO:CLMS:DAT:CLMS_GLOBAL_NDVI_300M_V1_10DAILY_NETCDF"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["ndvi_global_300m_10daily_v1\tmigrated\tEO:JRC:DAT:CLMS\tndvi_global_300m_10daily_v1"]
    assert main(["list", "--search", "ndvi 300 m"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["ndvi_global_300m_10daily_v1", "ndvi_global_300m_10daily_v2", "ndvi_global_300m_10daily_v3"]
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 152 and sum(line.split()[1:2] == ["catalog"] for line in lines) == 1
    assert main(["list", "--search", "download api"]) == 0
    assert capsys.readouterr().out.split()[:2] == ["clms_download_api", "catalog"]


@pytest.mark.parametrize("args, text", [
    (("resolve", "EO:NOPE:DAT:X"), "is not in the catalog"),
    (("list", "--search", "zzzz-nothing"), "no entry matches"),
    (("generate", "/nonexistent/table.xlsx"), "not found"),
])
def test_errors_are_one_line_exit_2(args, text):
    result = run(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and text in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["generate", "resolve", "list"])
def test_help_on_each_command(command):
    result = run(command, "--help")
    assert result.returncode == 0 and "usage: intake-clms " + command in result.stdout


def test_sandbox_options_reach_the_sandbox_parser():
    result = run("sandbox", "--help")
    assert result.returncode == 0 and "usage: intake-clms sandbox" in result.stdout and "--port" in result.stdout
