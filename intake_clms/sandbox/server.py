"""The sandbox server: one aiohttp app on loopback speaking HDA, the CLMS API and CDSE.

It runs in a background thread with its own event loop (:class:`Sandbox`), so
tests drive it with plain blocking clients, or in the foreground from the CLI
(``intake-clms sandbox``), so a user can point a real client at it.  Every
response goes through one middleware that names the service and endpoint from
the route name, adds latency, fires injected ``status`` faults and records the
response in the :class:`~intake_clms.sandbox.core.EventLog`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web

from intake_clms.sandbox.core import (
    AFTER_FAULTS,
    Clock,
    EventLog,
    FaultPlan,
    LogEntry,
    SandboxContext,
    apply_generic_fault,
)

#: Protocol modules composed into the app, in order; each has ``setup(app, ctx)``.
PROTOCOL_MODULES = ("hda", "clms_api", "cdse")

#: Accounts the sandbox accepts.  Fixed so a printed ``export`` block stays valid
#: across restarts; nothing here protects real data.
DEFAULT_CREDENTIALS: dict[str, dict[str, str]] = {
    "hda": {"username": "sandbox-user", "password": "sandbox-password"},
    "cdse": {"username": "sandbox-user@example.org", "password": "sandbox-password",
             "s3_access_key": "SANDBOXS3ACCESSKEY01", "s3_secret_key": "sandbox-s3-secret-key-0123456789abcdef"},
}

#: Service of a request whose route has no name (404s, ...), by path prefix.
_PREFIX_SERVICE = (
    ("/hda-broker", "hda"),
    ("/identity", "hda"),
    ("/api", "clms"),
    ("/@@oauth2-token", "clms"),
    ("/fme", "clms"),
    ("/files", "clms"),
    ("/auth", "cdse"),
    ("/odata", "cdse"),
    ("/download", "cdse"),
    ("/s3", "cdse"),
    ("/eodata", "cdse"),
)

_SHUTDOWN_TIMEOUT = 1.0  # seconds given to in-flight requests on stop()


def default_data_dir() -> Path:
    """Where the sandbox keeps generated products unless told otherwise (a cache: safe to delete)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("intake-clms", appauthor=False)) / "sandbox"


def _other_host(base: str) -> str:
    """The same server under its other loopback name (CDSE's download and S3 hosts differ from the catalogue's)."""
    for one, other in (("//127.0.0.1:", "//localhost:"), ("//localhost:", "//127.0.0.1:")):
        if one in base:
            return base.replace(one, other, 1)
    return base


def service_urls(base: str) -> dict[str, str]:
    """The public URLs of every service behind one base URL ``http://host:port``.

    CDSE's S3 endpoint is given under the other loopback host name (``localhost``
    for ``127.0.0.1``), like the target of the download redirect, so a client
    meets several host names as on the real service.
    """
    return {
        "base": base,
        "hda": f"{base}/hda-broker/api/v1",
        "hda_root": f"{base}/hda-broker/",  # what HDA_URL holds (the official client's base URL)
        "identity": f"{base}/identity/gettoken",
        "clms_api": f"{base}/api",
        "clms_token": f"{base}/@@oauth2-token",
        "cdse_token": f"{base}/auth/realms/CDSE/protocol/openid-connect/token",
        "cdse_odata": f"{base}/odata/v1",
        "cdse_download": f"{base}/download/odata/v1",
        "cdse_s3": _other_host(base),  # S3 path style: /eodata/<key>
    }


# --------------------------------------------------------------------------- store


#: Store methods that may write files.  netCDF4/HDF5 is not thread-safe: two
#: NetCDF files written at once from two threads can crash the process, so every
#: call that may generate goes through one process-wide lock (streaming does not).
_GENERATING = frozenset({"materialize", "product_zip", "result_zip", "tiles", "downloadable_file_members"})
_GENERATE_LOCK = threading.RLock()


class _LazyStore:
    """Stands for the ProductStore: built on first use (a slow or broken generator never stops
    the server starting), with file-generating calls serialised across threads."""

    def __init__(self, data_dir: Path, seed: int, size: str):
        self._args = (data_dir, seed, size)
        self._store: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    from intake_clms.sandbox.datagen import ProductStore

                    data_dir, seed, size = self._args
                    self._store = ProductStore(data_dir, seed=seed, size=size)
        return self._store

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._get(), name)
        if name in _GENERATING and callable(value):
            method = value

            def serialised(*args: Any, **kwargs: Any) -> Any:
                item = args[0] if args else None
                if name == "materialize" and getattr(item, "format", None) == "cog":
                    return method(*args, **kwargs)  # GDAL only, no HDF5: COGs are made in parallel
                with _GENERATE_LOCK:
                    return method(*args, **kwargs)

            return serialised
        return value


# --------------------------------------------------------------------------- app


def _split_route_name(name: str | None, path: str) -> tuple[str, str]:
    if name:
        parts = name.split(".")
        if len(parts) >= 2:
            return parts[0], parts[1]
        return parts[0], "*"
    for prefix, service in _PREFIX_SERVICE:
        if path == prefix or path.startswith(prefix + "/") or path.startswith(prefix + "("):
            return service, "unknown"
    return "sandbox", "unknown"


def _body_length(request: web.Request, response: web.StreamResponse) -> int:
    if request.method == "HEAD":
        return 0
    if "sandbox_bytes" in request:
        return int(request["sandbox_bytes"])
    body = getattr(response, "body", None)
    if isinstance(body, (bytes, bytearray)):
        return len(body)
    length = response.content_length
    return int(length) if length is not None else 0


def make_middleware(ctx: SandboxContext) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The one middleware every request passes: naming, latency, generic faults, logging.

    It never wraps or reads the handler's response body, so a FileResponse still
    goes out with sendfile.
    """

    @web.middleware
    async def sandbox_middleware(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        route = request.match_info.route
        name = getattr(route, "name", None)
        service, endpoint = _split_route_name(name, request.path)
        request["sandbox_service"] = service
        request["sandbox_endpoint"] = endpoint
        status = 500
        response: web.StreamResponse | None = None
        try:
            if ctx.latency > 0:
                await asyncio.sleep(ctx.latency)
            response = await apply_generic_fault(request, ctx)
            if response is None:
                response = await handler(request)
                lost = ctx.faults.take(service, endpoint, AFTER_FAULTS)
                if lost is not None:  # the work is done; its answer never reaches the client
                    if lost.params.get("drop"):
                        if request.transport is not None:
                            request.transport.close()
                        status = 0
                        raise ConnectionResetError("sandbox: lost_answer fault dropped the connection")
                    status = int(lost.params.get("status", 502))
                    response = web.json_response({"detail": "Bad Gateway", "message": "Bad Gateway"}, status=status)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            response = exc
            raise
        finally:
            # protocol handlers may re-tag the request (core.tag) to override the route name
            ctx.log.record(
                LogEntry(
                    time=ctx.clock.now(),
                    service=request.get("sandbox_service", service),
                    endpoint=request.get("sandbox_endpoint", endpoint),
                    method=request.method,
                    path=request.path,
                    status=status,
                    bytes_sent=_body_length(request, response) if response is not None else 0,
                    range=request.headers.get("Range"),
                )
            )

    return sandbox_middleware


def build_app(ctx: SandboxContext) -> web.Application:
    """The aiohttp application with every protocol module's routes."""
    app = web.Application(middlewares=[make_middleware(ctx)], client_max_size=16 * 1024**2)
    for name in PROTOCOL_MODULES:
        importlib.import_module(f"intake_clms.sandbox.{name}").setup(app, ctx)
    ctx.state["mounted"] = list(PROTOCOL_MODULES)
    return app


# --------------------------------------------------------------------------- Sandbox


class Sandbox:
    """A running sandbox server (HDA, CLMS API, CDSE on one loopback port).

    Use as a context manager, or ``start()`` / ``stop()``.  ``speed`` accelerates
    the sandbox clock (queue delays and token lifetimes are in sandbox seconds);
    ``latency`` adds real seconds to every response; ``page_cap`` cuts every catalogue page to
    that many items (a server with small pages; also settable later as ``ctx.page_cap``).
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        speed: float = 1.0,
        queue_delay: float = 30.0,
        token_lifetime: float = 3600.0,
        hda_quota: int = 100,
        latency: float = 0.0,
        size: str = "tiny",
        seed: int = 0,
        store: Any = None,
        page_cap: int | None = None,
    ):
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.host = host
        self.port = int(port)
        self.clock = Clock(speed)
        self.faults = FaultPlan()
        self.log = EventLog()
        self.ctx = SandboxContext(
            data_dir=self.data_dir,
            clock=self.clock,
            faults=self.faults,
            log=self.log,
            latency=float(latency),
            page_cap=None if page_cap is None else int(page_cap),
            queue_delay=float(queue_delay),
            token_lifetime=float(token_lifetime),
            hda_quota=int(hda_quota),
            size=size,
            seed=int(seed),
            store=store if store is not None else _LazyStore(self.data_dir, int(seed), size),
        )
        self.credentials: dict[str, dict[str, str]] = {k: dict(v) for k, v in DEFAULT_CREDENTIALS.items()}
        self.ctx.state["credentials"] = self.credentials
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._service_key: str | None = None

    # -- life cycle

    def start(self, timeout: float = 30.0) -> "Sandbox":
        """Bind, mount the protocol modules and serve in a background thread; returns once bound."""
        if self._thread is not None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        shown = "127.0.0.1" if self.host in ("", "0.0.0.0") else ("[::1]" if self.host == "::" else self.host)
        if ":" in shown and not shown.startswith("["):
            shown = f"[{shown}]"
        self.ctx.base_url = f"http://{shown}:{self.port}"
        try:
            app = build_app(self.ctx)
            # xarray is imported here, once, not first by a request thread while the client (same
            # process, in tests and demos) imports it too: concurrent first imports of one package
            # can see it half initialised (ImportError "partially initialized module").
            from intake_clms.sandbox.datagen import _netcdf_lock

            _netcdf_lock()
        except BaseException:
            sock.close()
            raise
        self._ready.clear()
        self._error = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, args=(app, sock), name=f"sandbox:{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the sandbox server did not start in time")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError("the sandbox server failed to start") from self._error
        return self

    def _serve(self, app: web.Application, sock: socket.socket) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT)
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.SockSite(self._runner, sock).start())
        except BaseException as exc:  # reported to start()
            self._error = exc
            sock.close()
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(self._runner.cleanup())
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

    def stop(self) -> None:
        """Stop serving and release the port (in-flight requests get about a second)."""
        if self._thread is None or self._loop is None:
            return
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._thread = None
        self._loop = None

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- what clients need

    @property
    def urls(self) -> dict[str, str]:
        """Service URLs (see :func:`service_urls`); valid once started."""
        if not self.ctx.base_url:
            raise RuntimeError("the sandbox is not started")
        return service_urls(self.ctx.base_url)

    def service_key_path(self) -> str:
        """Path of the CLMS service-key JSON the CLMS API module minted for this sandbox (what CLMS_SERVICE_KEY holds)."""
        if self._service_key is None:
            from intake_clms.sandbox import clms_api

            self._service_key = str(clms_api.default_service_key(self.ctx))
        return self._service_key

    def env(self) -> dict[str, str]:
        """Environment variables that point clients at this sandbox."""
        urls = self.urls
        creds = self.ctx.state.get("credentials", self.credentials)
        env = {
            "HDA_URL": urls["hda_root"],
            "HDA_USER": creds["hda"]["username"],
            "HDA_PASSWORD": creds["hda"]["password"],
            "CLMS_API_URL": urls["clms_api"],
            "CLMS_SERVICE_KEY": self.service_key_path(),
            "CDSE_TOKEN_URL": urls["cdse_token"],
            "CDSE_ODATA_URL": urls["cdse_odata"],
            "CDSE_DOWNLOAD_URL": urls["cdse_download"],
            "CDSE_USERNAME": creds["cdse"]["username"],
            "CDSE_PASSWORD": creds["cdse"]["password"],
            "CDSE_S3_ENDPOINT": urls["cdse_s3"],
            "CDSE_S3_ACCESS_KEY": creds["cdse"].get("s3_access_key", DEFAULT_CREDENTIALS["cdse"]["s3_access_key"]),
            "CDSE_S3_SECRET_KEY": creds["cdse"].get("s3_secret_key", DEFAULT_CREDENTIALS["cdse"]["s3_secret_key"]),
        }
        return env


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="intake-clms sandbox",
        description="Run a local imitation of WEkEO HDA, the CLMS download API and CDSE, for tests and demos.",
    )
    p.add_argument("--port", type=int, default=8765, help="TCP port (0: any free port; default 8765)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--data-dir", type=Path, default=None, help="where generated products are kept")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every response")
    p.add_argument("--speed", type=float, default=1.0, help="sandbox clock speed (60: a minute per second)")
    p.add_argument("--queue-delay", type=float, default=30.0, help="sandbox seconds an order spends queued")
    p.add_argument("--token-lifetime", type=float, default=3600.0, help="sandbox seconds a token lives")
    p.add_argument("--hda-quota", type=int, default=100, help="HDA orders per hour per user")
    p.add_argument("--size", choices=("tiny", "small", "large"), default="tiny", help="product size class")
    p.add_argument("--seed", type=int, default=0, help="seed of the product generator")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="inject a fault: SERVICE.ENDPOINT:KIND[:key=value,...], e.g. hda.download:reset:after_bytes=1000",
    )
    p.add_argument("--env-file", type=Path, default=None,
                   help="once listening, write the `export NAME=value` lines to this file (for `. FILE`)")
    p.add_argument("--background", action="store_true",
                   help="start detached, print the export lines once it listens and return "
                        "(eval \"$(intake-clms sandbox --background)\"); `intake-clms sandbox stop` ends it")
    return p


def main(argv: list[str] | None = None) -> int:
    """``intake-clms sandbox``: serve in the foreground until Ctrl-C, printing what a client needs.

    ``--background``, ``--env-file`` and ``sandbox stop``: see :mod:`intake_clms.sandbox.launcher`.
    """
    from intake_clms.sandbox import launcher

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["stop"]:
        return launcher.stop_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.background:
        return launcher.start_background(argv, args.env_file)
    sandbox = Sandbox(
        data_dir=args.data_dir,
        port=args.port,
        host=args.host,
        speed=args.speed,
        queue_delay=args.queue_delay,
        token_lifetime=args.token_lifetime,
        hda_quota=args.hda_quota,
        latency=args.latency,
        size=args.size,
        seed=args.seed,
    )
    try:
        for spec in args.fault:
            sandbox.faults.add_spec(spec)
    except ValueError as exc:
        print(f"intake-clms sandbox: bad --fault: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            sandbox.start()
        except OSError as exc:
            print(f"intake-clms sandbox: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 1
        urls = sandbox.urls
        out = [f"intake-clms sandbox listening on {urls['base']}", f"data directory: {sandbox.data_dir}"]
        out += ["services:"] + [f"  {name:<14} {url}" for name, url in urls.items() if name != "base"]
        if args.fault:
            out.append(f"faults queued: {len(args.fault)}")
        out.append("environment for clients (paste into a shell):")
        out += [f"export {name}={shlex.quote(value)}" for name, value in sandbox.env().items()]
        out.append("Press Ctrl-C to stop.")
        if args.env_file:
            out.insert(-1, f"environment written to {launcher.write_env_file(args.env_file, sandbox.env(), urls['base'])}")
        launcher.say(*out)
        while not stop.wait(0.5):
            if not sandbox.running:
                print("intake-clms sandbox: the server thread stopped", file=sys.stderr)
                return 1
        launcher.say("stopping")
        return 0
    finally:
        sandbox.stop()
        if args.env_file:
            Path(args.env_file).expanduser().unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------- another process


@dataclass
class SandboxProcess:
    """A sandbox CLI running in a child process (for tests that need a separate process)."""

    process: subprocess.Popen
    urls: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    data_dir: str = ""
    stderr: Any = None  # a temporary file holding the child's stderr

    def errors(self) -> str:
        """What the child wrote to stderr so far."""
        if self.stderr is None or self.stderr.closed:
            return ""
        self.stderr.seek(0)
        return self.stderr.read()

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT the child and wait: returns its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def __enter__(self) -> "SandboxProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_CHILD = "import sys; from intake_clms.sandbox.server import main; sys.exit(main(sys.argv[1:]))"
_URL_LINE = re.compile(r"^\s{2}(\w+)\s+(http\S+)$")
_EXPORT_LINE = re.compile(r"^export (\w+)=(.*)$")


def parse_cli_output(lines: list[str]) -> tuple[dict[str, str], dict[str, str], str]:
    """(urls, env, data_dir) from what :func:`main` printed."""
    urls: dict[str, str] = {}
    env: dict[str, str] = {}
    data_dir = ""
    for line in lines:
        line = line.rstrip("\n")
        if m := _URL_LINE.match(line):
            urls[m.group(1)] = m.group(2)
        elif m := _EXPORT_LINE.match(line):
            env[m.group(1)] = shlex.split(m.group(2))[0] if m.group(2) else ""
        elif line.startswith("intake-clms sandbox listening on "):
            urls["base"] = line.rsplit(" ", 1)[1]
        elif line.startswith("data directory: "):
            data_dir = line[len("data directory: ") :]
    return urls, env, data_dir


def run_in_process(*cli_args: str, timeout: float = 60.0) -> SandboxProcess:
    """Start ``intake-clms sandbox`` (default ``--port 0``) in a child process; returns once it serves.

    Extra CLI arguments pass through, e.g. ``run_in_process("--speed", "60", "--data-dir", d)``.
    """
    args = list(cli_args)
    if "--port" not in args:
        args += ["--port", "0"]
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    errors = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty child must never block
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, *args],
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        env=env,
    )
    lines: list[str] = []
    done = threading.Event()

    def _read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                done.set()
                return
        done.set()

    threading.Thread(target=_read, daemon=True).start()
    if not done.wait(timeout) or proc.poll() is not None:
        proc.kill()
        proc.wait()
        errors.seek(0)
        err = errors.read()
        errors.close()
        raise RuntimeError(f"the sandbox process did not start: {err.strip()[-2000:]}")
    urls, env_vars, data_dir = parse_cli_output(lines)
    return SandboxProcess(proc, urls, env_vars, data_dir, errors)


if __name__ == "__main__":
    sys.exit(main())
