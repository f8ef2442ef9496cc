"""The sandbox server: life cycle, URLs, middleware (naming, latency, faults, log), CLI and child process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web

from intake_clms.sandbox import Sandbox, run_in_process
from intake_clms.sandbox.server import parse_cli_output

ROOT = Path(__file__).resolve().parents[2]
URL_KEYS = {"base", "hda", "hda_root", "identity", "clms_api", "clms_token", "cdse_token", "cdse_odata", "cdse_download"}
ENV_KEYS = {
    "HDA_URL", "HDA_USER", "HDA_PASSWORD", "CLMS_API_URL", "CLMS_SERVICE_KEY", "CDSE_TOKEN_URL", "CDSE_ODATA_URL",
    "CDSE_DOWNLOAD_URL", "CDSE_USERNAME", "CDSE_PASSWORD",
}


def hda_token(urls: dict[str, str], env: dict[str, str]) -> requests.Response:
    return requests.post(urls["identity"], json={"username": env["HDA_USER"], "password": env["HDA_PASSWORD"]}, timeout=10)


def test_start_serves_on_loopback_and_stop_releases_the_port(tmp_path: Path) -> None:
    sb = Sandbox(data_dir=tmp_path, port=0).start()
    try:
        assert sb.port > 0 and sb.urls["base"] == f"http://127.0.0.1:{sb.port}"
        assert set(sb.urls) >= URL_KEYS
        assert sb.urls["hda_root"].endswith("/hda-broker/")
        assert hda_token(sb.urls, sb.env()).status_code == 200
        assert sb.ctx.state["mounted"] == ["hda", "clms_api", "cdse"]
    finally:
        sb.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(sb.urls["base"] + "/", timeout=2)
    again = Sandbox(data_dir=tmp_path, port=sb.port)  # the port is free again
    with again:
        assert again.port == sb.port and hda_token(again.urls, again.env()).status_code == 200


def test_env_points_every_client_at_the_sandbox(sandbox: Sandbox) -> None:
    env = sandbox.env()
    assert set(env) >= ENV_KEYS
    assert env["HDA_URL"] == sandbox.urls["hda_root"]
    assert all(env[k].startswith(sandbox.urls["base"]) for k in env if k.endswith("_URL"))
    key = json.loads(Path(env["CLMS_SERVICE_KEY"]).read_text())
    assert {"client_id", "user_id", "token_uri", "private_key"} <= set(key)
    assert key["token_uri"] == sandbox.urls["clms_token"]
    assert sandbox.env()["CLMS_SERVICE_KEY"] == env["CLMS_SERVICE_KEY"], "one key per sandbox"


def test_every_response_is_logged_with_service_endpoint_status_and_bytes(sandbox: Sandbox) -> None:
    r = hda_token(sandbox.urls, sandbox.env())
    missing = requests.get(sandbox.urls["hda"] + "/no/such/thing", timeout=10)
    assert missing.status_code == 404
    entries = sandbox.log.entries()
    assert [(e.service, e.endpoint, e.method, e.status) for e in entries[-2:]] == [
        ("hda", "token", "POST", 200),
        ("hda", "unknown", "GET", 404),
    ]
    assert entries[-2].bytes_sent == len(r.content) and entries[-2].path == "/identity/gettoken"
    assert sandbox.log.count("hda") == 2


def test_generic_status_fault_fires_once_on_the_named_endpoint(sandbox: Sandbox) -> None:
    sandbox.faults.add("status", "hda", "token", status=503, retry_after=3, headers={"X-Test": "yes"})
    r = hda_token(sandbox.urls, sandbox.env())
    assert r.status_code == 503 and r.headers["Retry-After"] == "3" and r.headers["X-Test"] == "yes"
    assert hda_token(sandbox.urls, sandbox.env()).status_code == 200
    assert [e.status for e in sandbox.log.entries("hda", "token")] == [503, 200]
    assert sandbox.faults.pending() == []


def test_latency_is_added_to_every_response(sandbox_factory: Any) -> None:
    sb = sandbox_factory(latency=0.2)
    t0 = time.monotonic()
    assert hda_token(sb.urls, sb.env()).status_code == 200
    assert time.monotonic() - t0 >= 0.2


def test_no_fault_download_goes_out_with_sendfile(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, hda_ready_download: Any) -> None:
    calls: list[int] = []
    original = web.FileResponse._sendfile

    async def counting(self: web.FileResponse, request: Any, fobj: Any, offset: int, count: int) -> Any:
        calls.append(count)
        return await original(self, request, fobj, offset, count)

    monkeypatch.setattr(web.FileResponse, "_sendfile", counting)
    s, url = hda_ready_download(sandbox)
    body = s.get(url, timeout=10).content
    assert calls == [len(body)]
    sandbox.faults.add("trickle", "hda", "download", rate=10**9)  # a body fault: written by hand instead
    assert s.get(url, timeout=10).content == body
    assert calls == [len(body)]


def test_sandboxes_run_side_by_side_and_keep_their_own_state(sandbox_factory: Any) -> None:
    a, b = sandbox_factory(), sandbox_factory()
    assert a.port != b.port
    a.faults.add("status", "hda", "token", status=500)
    assert hda_token(b.urls, b.env()).status_code == 200
    assert hda_token(a.urls, a.env()).status_code == 500
    assert a.log.count() == 1 and b.log.count() == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_prints_export_lines_serves_faults_and_stops_on_sigint(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    code = "import sys; from intake_clms.sandbox.server import main; sys.exit(main(sys.argv[1:]))"
    args = ["--port", str(port), "--data-dir", str(tmp_path / "data"), "--speed", "60", "--fault", "hda.token:status:status=502"]
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("Press Ctrl-C"):
                    break
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        assert ready.wait(30), "the CLI did not print its banner in time"
        urls, exports, data_dir = parse_cli_output(lines)
        assert urls["base"] == f"http://127.0.0.1:{port}" and set(urls) >= URL_KEYS
        assert set(exports) >= ENV_KEYS
        assert exports["HDA_URL"] == f"http://127.0.0.1:{port}/hda-broker/"
        assert data_dir == str(tmp_path / "data")
        assert hda_token(urls, exports).status_code == 502, "the --fault was queued"
        assert hda_token(urls, exports).status_code == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopping" in out and "Traceback" not in err
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(urls["base"] + "/", timeout=2)


def test_cli_refuses_a_bad_fault_spec(tmp_path: Path) -> None:
    from intake_clms.sandbox.server import main

    assert main(["--port", "0", "--data-dir", str(tmp_path), "--fault", "hda.search:no_such_kind"]) == 2


def test_run_in_process_serves_from_a_child_and_stops_cleanly(tmp_path: Path) -> None:
    child = run_in_process("--data-dir", str(tmp_path / "child"), "--speed", "60")
    try:
        assert child.process.pid != os.getpid()
        assert set(child.urls) >= URL_KEYS and set(child.env) >= ENV_KEYS
        assert hda_token(child.urls, child.env).status_code == 200
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(hda_token(child.urls, child.env).status_code)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [200] * 4
    finally:
        code = child.stop()
    assert code == 0, child.errors()


def test_cli_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    child = run_in_process("--data-dir", str(tmp_path / "child"))
    assert hda_token(child.urls, child.env).status_code == 200
    child.process.terminate()
    assert child.process.wait(15) == 0, child.errors()
    assert "Traceback" not in child.errors()
