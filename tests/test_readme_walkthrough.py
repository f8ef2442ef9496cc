"""Issue 17: the README as a newcomer follows it. Every Python and shell block runs in the order given,
each Python block in a fresh interpreter with nothing imported beforehand, each shell block by bash with
the venv's programs on PATH, against one sandbox, in one user's HOME (their cache accumulates as a
user's does). A block the test cannot run as written says why in the README itself."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from lifecycle.preloaded import PLAIN, plain_venv
from readme_blocks import Block, blocks, run_block, user_env

from intake_clms.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_every_code_block_is_run_or_says_why_not():
    found = blocks()
    assert sum(b.kind == "python" for b in found) >= 9
    for b in found:
        if b.kind == "text":
            assert not b.text.lstrip().startswith(("import ", "from ")), f"line {b.line}: Python marked as text"
        if b.tag.startswith("not-run"):
            assert b.not_run, f"line {b.line}: a not-run block says why"
    assert not [b.line for b in found if b.kind == "python" and b.not_run], "every Python block runs"


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A user's working folder (the checkout's catalogs/ in it) and shell, pointed at a running sandbox."""
    base = tmp_path_factory.mktemp("readme-walk")
    sb = Sandbox(data_dir=base / "sandbox-data", size="tiny", speed=60.0, queue_delay=6.0, seed=0).start()
    try:
        home, cwd = base / "home", base / "work"
        home.mkdir()
        cwd.mkdir()
        (cwd / "catalogs").symlink_to(ROOT / "catalogs")
        yield cwd, user_env(home, BIN, **sb.env())
    finally:
        sb.stop()


def _run(block: Block, cwd: Path, env: dict[str, str]):
    if block.tag == "export-open":  # the colleague's venv: the install line checked, the venv built once and cached
        install, rest = block.text.split("\n", 1)
        assert install.startswith("python -m venv plain && plain/bin/pip install ")
        assert sorted(install.split("pip install ", 1)[1].split()) == sorted(PLAIN)
        if not (cwd / "plain").exists():
            (cwd / "plain").symlink_to(plain_venv())
        block = Block(block.line, block.kind, block.tag, rest)
        env = {**env, "PATH": "/usr/bin:/bin"}  # nothing of intake-clms on the colleague's side
        env.pop("PYTHONPATH", None)
    return run_block(block, cwd, env)


@pytest.mark.slow
def test_the_readme_runs_as_written_in_order(walk):
    cwd, env = walk
    outputs: dict[int, str] = {}
    for block in blocks():
        if block.kind == "text" or block.not_run:
            continue
        out = _run(block, cwd, env)
        where = f"README.md line {block.line} ({block.kind}):\n{block.text}\nstderr:\n{out.stderr[-3000:]}"
        assert out.returncode == 0, where
        assert "Traceback" not in out.stderr, where
        outputs[block.line] = out.stdout + out.stderr
        if block.tag == "export":
            assert "wrote 2 entries" in out.stderr and "wrote 1 entry" in out.stderr
            assert (cwd / "shared" / "catalog.yaml").is_file() and (cwd / "shared-zarr" / "catalog.yaml").is_file()
        if block.tag == "export-open":
            assert "['eo_eea_dat_hrl_imp', 'ndvi_global_300m_10daily_v2']" in out.stdout and "NDVI" in out.stdout
            assert out.stdout.strip().splitlines()[-1] == "['IMP'] EPSG:3035"  # named after the product, its CRS
        if block.tag == "distributed":
            assert "Data variables" in out.stdout and "Nanny failed" not in out.stderr
        if block.tag == "vector":
            count, crs = out.stdout.split()[:2]
            assert int(count) > 0 and crs.startswith("EPSG:")
    assert len(outputs) >= 15
    assert not os.path.exists(cwd / "build")
