"""Issue 11, documentation that works as written: the README's sandbox commands run as a user types them,
and the foreground sandbox never dies with a BrokenPipeError when its reader goes away."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from intake_clms.sandbox.launcher import read_env_file
from readme_blocks import readme_block

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def user_env(home: Path) -> dict[str, str]:
    """A fresh user: a temporary HOME (so the default cache and env file land there), no credentials."""
    return {"PATH": f"{BIN}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(home), "LANG": "C.UTF-8"}


def _stop_leftover(home: Path) -> None:
    env_file = home / ".cache" / "intake-clms" / "sandbox.env"
    if env_file.is_file():
        pid = read_env_file(env_file)[0]
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
def test_the_readme_sandbox_commands_work_as_written(tmp_path):
    assert shutil.which("intake-clms", path=str(BIN)), "the console script is installed in the venv"
    script = readme_block("sandbox")
    assert 'eval "$(intake-clms sandbox' in script and "grep ^export" not in script
    home = tmp_path / "home"
    home.mkdir()
    try:
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=user_env(home),
                             capture_output=True, text=True, timeout=300)
    finally:
        _stop_leftover(home)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "BrokenPipeError" not in out.stderr
    assert "preloaded ndvi_global_300m_10daily_v2: 1 product(s)" in out.stderr
    assert re.search(r"stopped the sandbox at http://127\.0\.0\.1:\d+ \(pid \d+\)", out.stderr)
    assert not (home / ".cache" / "intake-clms" / "sandbox.env").exists()


def test_background_start_refuses_a_second_sandbox_and_stop_ends_it(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env, env_file = user_env(home), tmp_path / "sb.env"
    try:
        first = subprocess.run(["intake-clms", "sandbox", "--port", "0", "--background", "--env-file", str(env_file)],
                               env=env, capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        exports = first.stdout.splitlines()
        assert exports and all(line.startswith("export ") for line in exports)  # stdout holds only what eval needs
        pid, url, saved = read_env_file(env_file)
        assert saved == exports and url.startswith("http://127.0.0.1:") and pid
        assert env_file.stat().st_mode & 0o077 == 0  # it holds the sandbox's passwords
        second = subprocess.run(["intake-clms", "sandbox", "--port", "0", "--background", "--env-file", str(env_file)],
                                env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and f"already running (pid {pid}" in second.stderr
        stop = subprocess.run(["intake-clms", "sandbox", "stop", "--env-file", str(env_file)], env=env,
                              capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0 and not env_file.exists(), stop.stderr
        again = subprocess.run(["intake-clms", "sandbox", "stop", "--env-file", str(env_file)], env=env,
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 2 and "no sandbox env file" in again.stderr
    finally:
        if env_file.is_file():
            pid = read_env_file(env_file)[0]
            if pid:
                os.kill(pid, signal.SIGKILL)


def test_a_reader_that_goes_away_is_no_traceback(tmp_path):
    """``intake-clms sandbox | head -1`` then Ctrl-C: the server's last words go to a closed pipe."""
    errors = tmp_path / "stderr.txt"
    with open(errors, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "intake_clms.cli", "sandbox", "--port", "0"],
                                stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith("intake-clms sandbox listening on")
            proc.stdout.close()  # the reader is gone
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    text = errors.read_text()
    assert "Traceback" not in text and "BrokenPipeError" not in text, text


def test_the_readme_documents_logging_progress_and_quiet_output():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'logging.getLogger("intake_clms").setLevel(logging.INFO)' in text
    assert "tqdm.auto" in text and "progress_bar=True" in text
    assert "standard error is a terminal" in text and "otherwise they print nothing" in text
