"""Run the sandbox CLI so that a shell can use it: an env file, a background mode, ``sandbox stop``.

``eval "$(intake-clms sandbox | grep ^export)"`` can never work: the server
runs in the foreground, so its standard output never closes and the command
substitution waits forever.  Instead the server writes the ``export`` lines to
a file once it listens (``--env-file``), and ``--background`` starts it
detached, waits for that file, prints the lines and returns, so
``eval "$(intake-clms sandbox --background)"`` works; ``intake-clms sandbox
stop`` ends it.  The file's first line records the server's process id.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

_HEADER = re.compile(r"^# intake-clms sandbox pid=(\d+) url=(\S+)")
_CHILD = "import sys; from intake_clms.sandbox.server import main; sys.exit(main(sys.argv[1:]))"
START_TIMEOUT = 60.0  # seconds the background start waits for the server to listen


def default_env_file() -> Path:
    """Where ``--background`` and ``stop`` keep the env file unless told: beside the download cache."""
    from ..config import cache_dir

    return cache_dir() / "sandbox.env"


def env_lines(env: Mapping[str, str]) -> list[str]:
    return [f"export {name}={shlex.quote(value)}" for name, value in env.items()]


def write_env_file(path: str | os.PathLike[str], env: Mapping[str, str], url: str, pid: int | None = None) -> Path:
    """Write the export lines atomically (a reader never sees half a file); private: it holds sandbox passwords."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    text = "\n".join([f"# intake-clms sandbox pid={pid or os.getpid()} url={url}", *env_lines(env)]) + "\n"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path


def read_env_file(path: str | os.PathLike[str]) -> tuple[int | None, str, list[str]]:
    """(pid, base URL, export lines) of an env file."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    m = _HEADER.match(lines[0]) if lines else None
    return (int(m.group(1)) if m else None), (m.group(2) if m else ""), [x for x in lines if x.startswith("export ")]


def say(*lines: str, stream=None) -> None:
    """Print, surviving a reader that went away (``| head``, a killed ``grep``): never a BrokenPipeError traceback."""
    stream = stream or sys.stdout
    try:
        print("\n".join(lines), file=stream, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())  # later writes and the flush at exit go nowhere, quietly
        os.close(devnull)


def _alive(pid: int) -> bool:
    """True while the process exists and is no zombie (a parent that never reaps must not stall ``stop``)."""
    from intake_clms.store.fsutil import pid_alive

    return pid_alive(pid)


def start_background(argv: Sequence[str], env_file: str | os.PathLike[str] | None) -> int:
    """Start the server detached with ``--env-file``, wait until it listens, print the export lines, return."""
    path = Path(env_file).expanduser() if env_file else default_env_file()
    if path.is_file():
        pid, url, _ = read_env_file(path)
        if pid and _alive(pid):
            say(f"intake-clms sandbox: already running (pid {pid}, {url}); `intake-clms sandbox stop` ends it",
                stream=sys.stderr)
            return 2
        path.unlink()
    rest = [a for a in argv if a != "--background"]
    rest = [a for i, a in enumerate(rest) if not (a == "--env-file" or (i and rest[i - 1] == "--env-file"))
            and not a.startswith("--env-file=")]
    path.parent.mkdir(parents=True, exist_ok=True)
    log = path.with_suffix(".log")
    with open(log, "wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, *rest, "--env-file", str(path)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if path.is_file() and read_env_file(path)[0] == child.pid:
            pid, url, exports = read_env_file(path)
            say(*exports)
            say(f"intake-clms sandbox: serving {url} in the background (pid {pid}); environment in {path}, "
                f"log in {log}; `intake-clms sandbox stop` ends it", stream=sys.stderr)
            return 0
        if child.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            say(f"intake-clms sandbox: the server exited with status {child.returncode}: {' / '.join(tail)}",
                stream=sys.stderr)
            return child.returncode or 1
        time.sleep(0.05)
    child.terminate()
    say(f"intake-clms sandbox: the server did not start within {START_TIMEOUT:.0f} s (log: {log})", stream=sys.stderr)
    return 1


def stop_main(argv: Sequence[str]) -> int:
    """``intake-clms sandbox stop [--env-file FILE]``: end a background sandbox and remove its env file."""
    p = argparse.ArgumentParser(prog="intake-clms sandbox stop", description="Stop a sandbox started with --background.")
    p.add_argument("--env-file", type=Path, default=None, help=f"its env file (default: {default_env_file()})")
    args = p.parse_args(list(argv))
    path = args.env_file.expanduser() if args.env_file else default_env_file()
    if not path.is_file():
        say(f"intake-clms sandbox stop: no sandbox env file at {path}", stream=sys.stderr)
        return 2
    pid, url, _ = read_env_file(path)
    if pid is None:
        say(f"intake-clms sandbox stop: {path} names no sandbox process", stream=sys.stderr)
        return 2
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15.0
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            say(f"intake-clms sandbox stop: pid {pid} did not stop", stream=sys.stderr)
            return 1
    path.unlink(missing_ok=True)
    say(f"stopped the sandbox at {url} (pid {pid})", stream=sys.stderr)
    return 0
