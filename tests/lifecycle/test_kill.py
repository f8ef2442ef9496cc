"""SIGKILL at random instants over the whole lifecycle: WEkEO, the CLMS download API, CDSE downloads and CDSE window reads.

Each trial: a fresh cache; a child process (``kill_child.py``) preloads a request
against the sandbox; the parent kills it with SIGKILL at an instant drawn from a
seeded RNG (uniformly over an unkilled run's span, in its late part, when the
child's status file ``v1/running/<host>.<pid>.json`` reports a stage such as
``ordering``, ``extracting`` or ``publish``, or as soon as the sandbox has answered
an order POST: the window before the order id is saved).  Then, before any rerun, every product
in the store is complete (sizes and hashes match its record, no stray file) and a
published view opens.  A rerun in this process completes, its files are the bytes
the server holds, the server took exactly one order per product over both runs,
and nothing the dead process owned (staging folders, ``*.tmp``) is left.

For CDSE (no orders) the rerun must not download a complete payload again; for CDSE window
reads, the kept blocks are products like any other and the rerun's pixels are the source files'.

The default run has six stage-triggered trials (two of them CDSE).  The slow test (over 40 trials) is marked
``slow`` and only runs with ``-m slow`` or ``INTAKE_CLMS_SLOW=1`` (the project's
default ``pytest -q`` does not deselect slow tests).  ``INTAKE_CLMS_KILL_SEED``
changes the seed (printed with every trial).
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from intake_clms.engine.core import open_view
from intake_clms.sandbox import Sandbox, clms_api
from intake_clms.store import Store
from intake_clms.store.fsutil import HOST, is_dead_leftover
from intake_clms.store.products import RECORD

from .kill_child import MONTH, SCENARIOS, source

CHILD = Path(__file__).with_name("kill_child.py")
SEED = int(os.environ.get("INTAKE_CLMS_KILL_SEED", "20240101"))
STRETCH = 0.03  # seconds slept around each os.replace of the child in stage-triggered trials
CHILD_TIMEOUT = 120.0
# the most advanced product stage names the kill's stage while the request is in order/download
PRODUCT_ORDER = ["pending", "cached", "ordering", "queued", "downloading", "reading", "extracting", "ready"]
LANDED: list[dict[str, Any]] = []  # one line per trial (printed; the slow run's summary)


@dataclass(frozen=True)
class Plan:
    scenario: str
    # startup (delay after spawn) | uniform / late (fraction of an unkilled run) | stage (when reported) |
    # answered (as soon as the server has answered an order POST: before the child saved the order id)
    mode: str
    stage: str = ""  # for mode=stage: a request stage or a product stage
    stretch: float = 0.0

    @property
    def service(self) -> str:
        return SCENARIOS[self.scenario]["service"]


def _slow_plans() -> list[Plan]:
    plans = []
    for scenario in SCENARIOS:
        cdse = SCENARIOS[scenario]["service"] == "cdse"
        plans.append(Plan(scenario, "startup"))
        plans += [Plan(scenario, "uniform")] * 2
        if not cdse:
            plans.append(Plan(scenario, "answered", "", STRETCH))
        plans += [Plan(scenario, "late")] * 2
        # CDSE runs are short and products' stages are written at most once a second: the request's
        # stages (written at once) place the kill, a random 0-0.2 s after the download stage began
        stages = ("download",) * 3 + ("publish",) if cdse else ("ordering", "downloading", "extracting", "publish")
        plans += [Plan(scenario, "stage", s, STRETCH) for s in stages]
    return plans


SLOW_PLANS = _slow_plans()
DEFAULT_PLANS = [
    Plan("wekeo-ndvi", "answered", "", STRETCH),
    Plan("wekeo-ndvi", "stage", "extracting", STRETCH),
    Plan("clms-cut", "answered", "", STRETCH),
    Plan("clms-tiles", "stage", "publish", STRETCH),
    Plan("cdse-download", "stage", "download", STRETCH),
    Plan("cdse-window", "stage", "download", STRETCH),  # while the windows are read and kept
]


def _slow_enabled(config: pytest.Config) -> bool:
    expr = config.getoption("markexpr", "") or ""
    return os.environ.get("INTAKE_CLMS_SLOW") == "1" or ("slow" in expr and "not slow" not in expr)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.function.__name__ != "test_sigkill_at_random_instants":
        return
    if _slow_enabled(metafunc.config):
        metafunc.parametrize("trial", range(len(SLOW_PLANS)),
                             ids=[f"{i:02d}-{p.scenario}-{p.mode}{'-' + p.stage if p.stage else ''}"
                                  for i, p in enumerate(SLOW_PLANS)])
    else:
        metafunc.parametrize("trial", [pytest.param(-1, marks=pytest.mark.skip(
            reason=f"{len(SLOW_PLANS)} SIGKILL trials: run with -m slow or INTAKE_CLMS_SLOW=1"))], ids=["off"])


@pytest.fixture
def kill_env(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    from intake_clms.services.cdse import auth, budget

    for name, value in _env(sandbox, tmp_path).items():
        monkeypatch.setenv(name, value)
    for name in ("CDSE_TOTP", "CDSE_MAX_CONNECTIONS"):
        monkeypatch.delenv(name, raising=False)
    auth.forget_managers()  # the rerun in this process: no token or connection budget of another test
    monkeypatch.setattr(budget, "_BUDGET", None)
    return sandbox


def _env(sb: Sandbox, tmp_path: Path) -> dict[str, str]:
    return {**sb.env(), "HDA_RC": str(tmp_path / "no-hdarc"), "NETRC": str(tmp_path / "no-netrc")}


# --------------------------------------------------------------------------- the child and its status


def _spawn(sb: Sandbox, tmp_path: Path, scenario: str, cache: Path, stretch: float, tag: str) -> subprocess.Popen:
    env = {**os.environ, **_env(sb, tmp_path)}
    env.pop("INTAKE_CLMS_CACHE", None)
    out = open(tmp_path / f"{tag}.out", "w")
    err = open(tmp_path / f"{tag}.err", "w")
    try:
        return subprocess.Popen([sys.executable, str(CHILD), scenario, str(cache), str(stretch)],
                                env=env, stdout=out, stderr=err)
    finally:
        out.close()
        err.close()


def _status_path(cache: Path, pid: int) -> Path:
    return cache / "v1" / "running" / f"{HOST}.{pid}.json"


def _read_status(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _stages(status: dict[str, Any] | None) -> tuple[str | None, list[str]]:
    """(request stage, product stages) of the (only) preload a status record shows."""
    if status is None:
        return None, []
    preloads = status.get("preloads") or {}
    if not preloads:
        return "finished", []
    (p,) = preloads.values()
    return p.get("stage"), [q.get("stage") for q in (p.get("products") or {}).values()]


def _landed(status: dict[str, Any] | None) -> str:
    """Where a kill landed, as the status record last written by the child tells it."""
    if status is None:
        return "startup"
    stage, products = _stages(status)
    if stage in ("order", "download") and products:
        top = max(products, key=lambda s: PRODUCT_ORDER.index(s) if s in PRODUCT_ORDER else -1)
        if stage == "order":
            return "order:" + ("ordering" if "ordering" in products else "queued")
        if top == "ready" and any(s not in ("ready", "cached") for s in products):
            top = max((s for s in products if s not in ("ready", "cached")),
                      key=lambda s: PRODUCT_ORDER.index(s) if s in PRODUCT_ORDER else -1)
        return f"download:{top}"
    return str(stage)


def _matches(status: dict[str, Any] | None, stage: str) -> bool:
    req, products = _stages(status)
    return req == stage or stage in products


def _run_to_end(sb: Sandbox, tmp_path: Path, scenario: str) -> tuple[float, str]:
    """An unkilled child: seconds from its status file's first appearance (the engine's start) to its exit."""
    cache = tmp_path / f"span-{scenario}"
    proc = _spawn(sb, tmp_path, scenario, cache, 0.0, f"span-{scenario}")
    status = _status_path(cache, proc.pid)
    t0 = None
    deadline = time.monotonic() + CHILD_TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        if t0 is None and status.exists():
            t0 = time.monotonic()
        time.sleep(0.002)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the unkilled {scenario} child did not finish in {CHILD_TIMEOUT} s")
    end = time.monotonic()
    out = (tmp_path / f"span-{scenario}.out").read_text()
    assert proc.returncode == 0 and out.startswith("OK"), (tmp_path / f"span-{scenario}.err").read_text()[-3000:]
    assert t0 is not None
    return end - t0, out.strip()


_SPANS: dict[str, tuple[float, str]] = {}


def _span(scenario: str, sandbox_factory: Any, tmp_path: Path) -> tuple[float, str]:
    """Measured once per scenario and session, on a sandbox of its own (its orders count nowhere)."""
    if scenario not in _SPANS:
        _SPANS[scenario] = _run_to_end(sandbox_factory(), tmp_path, scenario)
    return _SPANS[scenario]


def _kill_at(sb: Sandbox, tmp_path: Path, plan: Plan, cache: Path, rng: random.Random,
             span: float | None) -> dict[str, Any]:
    """Spawn the child, SIGKILL it at the plan's instant, return what is known about where it landed."""
    proc = _spawn(sb, tmp_path, plan.scenario, cache, plan.stretch, "child")
    spawned = time.monotonic()
    status = _status_path(cache, proc.pid)
    info: dict[str, Any] = {"pid": proc.pid}
    try:
        kill_at: float | None = None
        if plan.mode == "startup":
            info["delay"] = rng.uniform(0.2, 2.5)
            kill_at = spawned + info["delay"]
        seen_engine = None
        deadline = spawned + CHILD_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            now = time.monotonic()
            if kill_at is not None and now >= kill_at:
                break
            if kill_at is None:
                if plan.mode in ("uniform", "late") and seen_engine is None and status.exists():
                    seen_engine = now
                    # late: where downloads end, products are extracted and stored, the view published
                    lo, hi = (0.45, 0.9) if plan.mode == "late" else (0.0, 1.0)
                    info["fraction"] = rng.uniform(lo, hi)
                    info["delay"] = info["fraction"] * (span or 0.0)
                    kill_at = now + info["delay"]
                elif plan.mode == "answered" and orders_taken(sb, plan.service) >= info.setdefault(
                        "nth_order", rng.randint(1, 3) if plan.service == "wekeo" else 1):
                    info["delay"] = 0.0
                    kill_at = now
                    continue
                elif plan.mode == "stage" and _matches(_read_status(status), plan.stage):
                    info["delay"] = rng.uniform(0.0, 0.2)
                    kill_at = now + info["delay"]
            time.sleep(0.002)
        info["exited_before_kill"] = proc.poll() is not None
        if not info["exited_before_kill"]:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    info["returncode"] = proc.returncode
    info["jobs_at_kill"] = [j.stage for j in Store(cache).jobs.all()] if cache.is_dir() else []
    info["orders_at_kill"] = orders_taken(sb, plan.service)
    if info["exited_before_kill"]:
        info["landed"] = "exited" if proc.returncode == 0 else f"exited rc={proc.returncode}"
        if proc.returncode != 0:
            info["stderr"] = (tmp_path / "child.err").read_text()[-3000:]
    else:
        info["landed"] = _landed(_read_status(status))
    return info


# --------------------------------------------------------------------------- the checks


def _load_some(ds: Any) -> None:
    """Read every variable's first 512 x 512 pixels (every time step): a pan-European mosaic at full size is
    13 GB (clms-tiles), and what is read must only prove the files open and decode."""
    for var in ds.data_vars.values():
        var.isel({d: slice(0, 512) for d in var.dims if d != "time"}).load()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def check_store_after_kill(cache: Path, src: Any) -> dict[str, Any]:
    """No partial product that opens: every product folder complete; a published view opens."""
    st = Store(cache)
    products = st.root / "products"
    complete = []
    for name in sorted(os.listdir(products)) if products.is_dir() else []:
        path = products / name
        if name.startswith("."):  # only a removal's trash may sit here, and only a dead process's
            assert is_dead_leftover(name), f"unexpected {path}"
            continue
        rec = st.products.check(name)  # raises DamagedProductError on a missing or short file
        assert rec is not None, f"{path} has no record"
        assert st.products.verify(name) == [], f"{path} does not match its record"
        assert rec.data(), f"{path} holds no data file"
        assert _files(path) == {f.path for f in rec.files} | {RECORD}, f"{path} holds files its record does not list"
        complete.append(name)
    views = list(st.views.keys())
    assert set(views) <= {src.request.key()}, views
    opened = False
    if views:
        view = st.views.get(src.request.key())
        assert view is not None, "a published view that cannot be read"
        assert {vp.key for vp in view.products} <= set(complete), "a view names a product that is not stored"
        ds = open_view(st, src.request)
        assert ds is not None, "a published view does not open"
        _load_some(ds)
        opened = True
    staging = st.root / "staging"
    return {"stored": len(complete), "view": opened,
            "staging": len(os.listdir(staging)) if staging.is_dir() else 0}


def reference_hashes(sb: Sandbox, scenario: str, view: Any = None) -> list[str]:
    """The sandbox's source files of the request: its items (WEkEO), what the one task's result holds (CLMS), or
    the catalogue products' files (CDSE)."""
    if SCENARIOS[scenario]["service"] == "cdse":
        return sorted(_sha(_cdse_file(sb, vp.name)) for vp in view.products)
    if SCENARIOS[scenario]["service"] == "wekeo":
        key = SCENARIOS[scenario]["dataset_identifier"]
        items = sb.ctx.store.items(key, None, MONTH["start"], MONTH["end"])
        return sorted(_sha(Path(sb.ctx.store.materialize(it))) for it in items)
    st = clms_api.state(sb.ctx)
    (task,) = [t for t in st.tasks.values() if t.zip_path is not None]
    sources = [p for target in task.targets
               for p in clms_api._data_files(sb.ctx, st.dataset_by_uid(sb.ctx, target["uid"]), target)]
    assert sources
    return sorted(_sha(p) for p in sources)


def orders_taken(sb: Sandbox, service: str) -> int:
    if service == "cdse":
        return 0
    if service == "wekeo":
        return len([e for e in sb.log.entries("hda", "order") if e.status < 300])
    return len([e for e in sb.log.entries("clms", "datarequest_post") if e.status == 201])


def check_rerun(sb: Sandbox, plan: Plan, cache: Path, dead_pid: int) -> dict[str, Any]:
    """A rerun completes with the server's bytes, no second order, and no leftover of the dead process."""
    src = source(plan.scenario, str(cache))
    ds = src.to_dask()
    _load_some(ds)
    st = Store(cache)
    view = st.views.get(src.request.key())
    assert view is not None
    if view.access == "window":  # window reads: the pixels are the sandbox's truth (kept windows, or read again)
        _check_windows(sb, ds, plan.scenario)
    else:
        stored = sorted(_sha(st.products.path(vp.key) / f.path)
                        for vp in view.products for f in st.products.check(vp.key).data())
        assert stored == reference_hashes(sb, plan.scenario, view), "the stored files differ from the server's"
    if plan.service != "cdse":
        assert orders_taken(sb, plan.service) == len(view.products), \
            f"{orders_taken(sb, plan.service)} orders for {len(view.products)} products"
    elif view.access != "window":  # a complete payload is never downloaded again (issue 18)
        full = [e for e in sb.log.entries(service="cdse", endpoint="download")
                if e.path.startswith("/s3/") and e.status == 200 and not e.range]
        names = [e.path.rsplit("/", 1)[-1] for e in full]
        assert len(names) == len(set(names)), f"a payload was downloaded twice from zero: {names}"
    tag = f".{HOST}.{dead_pid}."
    left = [p for p in cache.rglob("*") if tag in p.name]
    assert not left, f"leftovers of the killed process {dead_pid}: {left}"
    staging = st.root / "staging"
    assert not staging.is_dir() or not os.listdir(staging), os.listdir(staging)
    downloads = [p for p in (st.root / "downloads").rglob("*") if p.is_file()]
    assert not downloads, downloads
    # reported, not asserted (see the report): the dead process's status record, job files of stored products
    return {"sizes": dict(ds.sizes),
            "dead_status_left": _status_path(cache, dead_pid).exists(),
            "jobs_left": [j.stage for j in st.jobs.all()]}


def _cdse_file(sb: Sandbox, name: str) -> Path:
    """The sandbox's file of a CDSE product, named as the product (``..._nc``, ``..._cog``) or its file (``.nc``)."""
    st = sb.ctx.state["cdse"]
    product = st.find_by_name(name) or st.find_by_name(name[: -len(".nc")] + "_nc" if name.endswith(".nc") else name)
    assert product is not None, name
    return Path(st.path(product))


def _check_windows(sb: Sandbox, ds: Any, scenario: str) -> None:
    from intake_clms.sandbox.truth import reference

    args = SCENARIOS[scenario]
    want = reference(sb.ctx.store, args["dataset_identifier"], args["bbox"], args["start"], args["end"])
    for name in want.data_vars:
        assert (ds[name].values == want[name].values).all() or \
            ((ds[name].values == want[name].values) | (ds[name].isnull() & want[name].isnull()).values).all(), \
            f"the pixels of {name} differ from the sandbox's truth"


def run_trial(sb: Sandbox, tmp_path: Path, plan: Plan, number: int, span: float | None) -> dict[str, Any]:
    seed = SEED * 1000 + number
    rng = random.Random(seed)
    cache = tmp_path / "cache"
    info = _kill_at(sb, tmp_path, plan, cache, rng, span)
    line = {"trial": number, "seed": seed, "scenario": plan.scenario, "mode": plan.mode, "stage": plan.stage, **info}
    print(f"\nkill trial {number} (seed {seed}): {plan.scenario} {plan.mode} {plan.stage} "
          f"delay={info.get('delay', 0):.3f}s landed={info['landed']}", flush=True)
    assert "stderr" not in info, f"the child failed before the kill: {info.get('stderr')}"
    line.update(check_store_after_kill(cache, source(plan.scenario, str(cache))))
    line.update(check_rerun(sb, plan, cache, info["pid"]))
    LANDED.append(line)
    print("kill result " + json.dumps({k: v for k, v in line.items() if k != "stderr"}, default=str), flush=True)
    return line


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("number", range(len(DEFAULT_PLANS)),
                         ids=[f"{p.scenario}-{p.stage or p.mode}" for p in DEFAULT_PLANS])
def test_sigkill_at_a_stage_then_rerun(kill_env: Sandbox, tmp_path: Path, number: int) -> None:
    run_trial(kill_env, tmp_path, DEFAULT_PLANS[number], 900 + number, None)


@pytest.mark.slow
def test_sigkill_at_random_instants(kill_env: Sandbox, sandbox_factory: Any, tmp_path: Path, trial: int) -> None:
    plan = SLOW_PLANS[trial]
    span = None
    if plan.mode in ("uniform", "late"):
        span, _ = _span(plan.scenario, sandbox_factory, tmp_path)
    run_trial(kill_env, tmp_path, plan, trial, span)


def test_the_slow_trials_cover_every_service_and_the_publish_window() -> None:
    assert len(SLOW_PLANS) >= 40
    assert collections.Counter(p.service for p in SLOW_PLANS).keys() == {"wekeo", "clms", "cdse"}
    assert {SCENARIOS[p.scenario].get("access") for p in SLOW_PLANS if p.service == "cdse"} == {"download", "window"}
    assert {p.service for p in DEFAULT_PLANS} == {"wekeo", "clms", "cdse"}
    assert {p.stage for p in SLOW_PLANS} >= {"ordering", "extracting", "publish"}
    assert {p.mode for p in SLOW_PLANS} >= {"uniform", "late", "stage", "answered", "startup"}


def test_a_rerun_that_only_reopens_removes_what_a_killed_process_left(kill_env: Sandbox, tmp_path: Path) -> None:
    """A kill just after the view's rename (while the status record or a view's trash is being written)
    leaves owner-tagged leftovers; the next run reopens the published view and must remove them too.

    Found by test_sigkill_at_random_instants[09-wekeo-ndvi-stage-publish]: after the kill,
    ``running/.<host>.<pid>.json.<host>.<pid>.<hex>.tmp`` was still there after the rerun.
    """
    cache = tmp_path / "cache"
    src = source("wekeo-ndvi", str(cache))
    src.to_dask()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tag = f"{HOST}.{dead.pid}.0badf00d"
    st = Store(cache)
    planted = [
        st.root / "running" / f".{HOST}.{dead.pid}.json.{tag}.tmp",  # the status record being rewritten
        st.root / "views" / f".{src.request.key()}.trash.{tag}",  # a replaced view being deleted
        st.root / "staging" / f"view-{src.request.key()}.{tag}",  # a view being staged
    ]
    link = st.root / "views" / f".{src.request.key()}.ln.{tag}.tmp"  # a view pointer being switched (issue 18)
    link.symlink_to(st.views.path(src.request.key()).name)
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.name.endswith(".tmp"):
            path.write_text("{")
        else:
            path.mkdir()
            (path / "view.json").write_text("{")
    assert all(is_dead_leftover(p.name) for p in planted)
    source("wekeo-ndvi", str(cache)).to_dask()  # reopens the published view (no network)
    assert [p for p in planted if p.exists()] == []
    assert not link.is_symlink() and st.views.get(src.request.key()) is not None  # the link went, not its target
