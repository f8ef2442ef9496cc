"""The README's fenced blocks, as tests run them.

``readme_block(TAG)``: the block right after ``<!-- readme-test: TAG -->``.
``blocks()``: every fenced block in order, with its kind: ``python``; ``shell`` (``sh``, ``bash`` or no
language); ``text`` (synopses and trees, never run).  A code block a test cannot run as written (it
sets up the machine, or serves in the foreground until Ctrl-C) is preceded by
``<!-- readme-test: not-run: REASON -->``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"

_FENCE = re.compile(r"(?:<!-- readme-test: (?P<tag>[^\n]*?) -->\s*)?^```(?P<lang>\w*)\n(?P<text>.*?)^```", re.S | re.M)
_KINDS = {"python": "python", "sh": "shell", "bash": "shell", "": "shell", "text": "text"}


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    kind: str  # python | shell | text
    tag: str  # the readme-test tag, "" when none
    text: str

    @property
    def not_run(self) -> str:
        """Why a test does not run it ("" when it does)."""
        return self.tag.split(":", 1)[1].strip() if self.tag.startswith("not-run:") else ""


def blocks(text: str | None = None) -> list[Block]:
    text = README.read_text(encoding="utf-8") if text is None else text
    out = []
    for m in _FENCE.finditer(text):
        lang = m.group("lang").lower()
        assert lang in _KINDS, f"README.md line {text.count(chr(10), 0, m.start('lang')) + 1}: unknown fence language {lang!r}"
        out.append(Block(text.count("\n", 0, m.start("lang")) + 1, _KINDS[lang], m.group("tag") or "", m.group("text")))
    return out


def readme_block(tag: str) -> str:
    """The fenced block right after ``<!-- readme-test: TAG -->`` in README.md."""
    found = [b.text for b in blocks() if b.tag == tag]
    assert found, f"README.md has no block tagged {tag}"
    return found[0]


def user_env(home: Path, bin_dir: Path, **extra: str) -> dict[str, str]:
    """A fresh user's shell: the venv's programs first on PATH, a HOME of its own, no credentials.

    ``PYTHONPATH`` is kept when the test run sets it (a checkout tested with another checkout's venv).
    """
    import os

    env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(home), "LANG": "C.UTF-8", **extra}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def run_block(block: Block, cwd: Path, env: dict[str, str], timeout: float = 600):
    """Run a block as a user would: Python saved as a script and run by the venv's fresh interpreter
    (nothing imported beforehand), a shell block by ``bash -euo pipefail``."""
    import subprocess

    if block.kind == "python":
        script = cwd / f"readme_line{block.line}.py"
        script.write_text(block.text, encoding="utf-8")
        argv = ["python", script.name]
    else:
        argv = ["bash", "-euo", "pipefail", "-c", block.text]
    import shutil

    argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
