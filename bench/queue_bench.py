"""Queue-wait benchmark (issue 4): status calls during a simulated 10-minute queue wait.

The whole preload lifecycle runs against the sandbox (real HTTP) with the default
``PollPolicy``; only time is simulated: the sandbox clock stands still (speed 0) and
the engine's ``poll`` gets a clock (``lifecycle.clock.Clock``) whose sleeps, instead of
sleeping, advance the sandbox clock and a simulated monotonic clock in lock-step.  So the
order really queues for 10 sandbox minutes and every status check is a real HEAD
request, logged by the server, without 10 real minutes passing.

Target: at most 20 status calls for a 10-minute wait.  Shorter and longer waits are
reported too.  Run: ``python bench/queue_bench.py [--quick]`` (quick: the 10-minute wait only).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import client_env, emit, environment  # noqa: E402

from intake_clms.engine import core as engine  # noqa: E402
from intake_clms.net import polling  # noqa: E402
from intake_clms.errors import CancelledError  # noqa: E402
from intake_clms.net.polling import PollPolicy  # noqa: E402
from intake_clms.sandbox import Sandbox  # noqa: E402
from intake_clms.source import ClmsSource  # noqa: E402

NAME = "queue"
HEADLINE = 600.0
TARGET_CALLS = 20
REQUEST = {"dataset_id": "EO:JRC:DAT:CLMS", "dataset_identifier": "ndvi_global_300m_10daily_v2",
           "bbox": [5, 45, 10, 50], "start": "2024-01-01", "end": "2024-01-05", "service": "wekeo"}


class SimulatedTime:
    """A clock (``lifecycle.clock.Clock``) that moves only when the poller sleeps, and drags the sandbox clock along."""

    def __init__(self, sb: Sandbox):
        self.sb, self.now, self.waits = sb, 0.0, []
        self._epoch = time.time()
        self._lock = threading.Lock()

    def time(self) -> float:
        return self._epoch + self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float, cancel: threading.Event | None = None) -> None:
        if cancel is not None and cancel.is_set():
            raise CancelledError("cancelled")
        with self._lock:
            self.now += seconds
            self.waits.append(seconds)
            self.sb.clock.advance(seconds)

    def poll(self, check: Any, *, policy: PollPolicy, cancel: threading.Event, what: str, service: str,
             clock: Any = None) -> Any:
        """``polling.poll`` with this clock instead of the engine's (the engine calls it for each product)."""
        return polling.poll(check, policy=policy, cancel=cancel, what=what, service=service, clock=self)


def one_wait(work: Path, queue_delay: float) -> dict[str, Any]:
    """One preload whose order queues ``queue_delay`` sandbox seconds; the server's view of it."""
    with Sandbox(data_dir=work / "sandbox", size="tiny", speed=0.0, queue_delay=queue_delay) as sb, \
            environment(client_env(sb, work / f"cache-{queue_delay:g}")):
        sim = SimulatedTime(sb)
        real_poll = engine.poll
        engine.poll = sim.poll
        try:
            t = time.perf_counter()
            src = ClmsSource(**REQUEST)  # no poll_* options: the default PollPolicy
            ds = src.to_dask()
            real = time.perf_counter() - t
        finally:
            engine.poll = real_poll
        assert ds.sizes, "empty dataset"
        heads = sb.log.entries("hda", "download_head", "HEAD")
        return {
            "queue_delay_s": queue_delay,
            "status_calls": len(heads),
            "status_202": sum(e.status == 202 for e in heads),
            "status_401": sum(e.status == 401 for e in heads),  # a token outlived by the wait: renewed, asked again
            "orders": sb.log.count("hda", "order"),
            "downloads": sb.log.count("hda", "download", "GET"),
            "noticed_after_s": sim.now,
            "late_by_s": sim.now - queue_delay,
            "real_s": real,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 10-minute wait only")
    args = parser.parse_args(argv)
    policy = PollPolicy()
    work = Path(tempfile.mkdtemp(prefix="intake-clms-queue-bench-"))
    rows = []
    try:
        for delay in (HEADLINE,) if args.quick else (60.0, HEADLINE, 3600.0):
            rows.append(one_wait(work, delay))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"default PollPolicy: first {policy.first:g} s, x{policy.factor:g}, cap {policy.cap:g} s, deadline {policy.deadline:g} s")
    print("| queue wait | status calls | of which 401 (token renewed) | noticed after | late by | orders | downloads | real time |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['queue_delay_s'] / 60:g} min | {r['status_calls']} | {r['status_401']} | {r['noticed_after_s']:.1f} s | {r['late_by_s']:.1f} s "
              f"| {r['orders']} | {r['downloads']} | {r['real_s']:.2f} s |")
    head = next(r for r in rows if r["queue_delay_s"] == HEADLINE)
    ok = head["status_calls"] <= TARGET_CALLS and head["orders"] == 1 and head["downloads"] == 1
    results = {
        "status_calls": head["status_calls"],
        "late_by_s": head["late_by_s"],
        "calls_by_wait_s": {f"{r['queue_delay_s']:g}": r["status_calls"] for r in rows},
        "policy": {"first": policy.first, "factor": policy.factor, "cap": policy.cap},
        "targets": {"status_calls": f"<= {TARGET_CALLS} for a 10-minute wait"},
        "ok": {"status_calls": ok},
    }
    print(f"10-minute wait: {head['status_calls']} status calls (target <= {TARGET_CALLS})")
    emit(NAME, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
