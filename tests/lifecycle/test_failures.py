"""Failure cases of the lifecycle against the sandbox: tokens, quota, 5xx, drops, cancel, bad zips, credentials."""

from __future__ import annotations

import time

import pytest

from intake_clms.errors import CredentialsError, ServiceError
from intake_clms.engine import CancelledError, IntegrityError, PreloadError, QuotaError, UnsafeArchiveError
from .lifecycle_helpers import Lockstep, assert_nothing_published, ndvi_source, store, stored_files

ONE = {"start": "2024-01-01", "end": "2024-01-05"}  # a single 10-daily product


def _assert_nothing_published(src) -> None:
    assert_nothing_published(src)


def test_token_expiring_during_queue_wait_is_renewed(hda_env):
    hda_env.faults.add("token_expiry", "hda", "download_head")
    ds = ndvi_source(**ONE).to_dask()
    assert ds.sizes["time"] == 1
    assert any(e.status == 401 for e in hda_env.log.entries("hda", "download_head"))
    assert hda_env.log.count("hda", "refresh") >= 1


def test_tokens_outliving_their_lifetime_during_a_long_wait(sandbox_factory, hda_env, monkeypatch):
    # tokens live 6 s and refresh tokens 12 s; the client checks the queue every 20 s of a 60 s wait, on a
    # fake clock moving the sandbox's too: both tokens are dead at every check (no real sleep, no race)
    sb = sandbox_factory(speed=1.0, token_lifetime=6.0, queue_delay=60.0)
    for name, value in sb.env().items():
        monkeypatch.setenv(name, value)
    ds = ndvi_source(**ONE, clock=Lockstep(sb), poll_first=20.0, poll_cap=20.0, poll_deadline=3600).to_dask()
    assert ds.sizes["time"] == 1
    assert sb.log.count("hda", "token") >= 2  # logged in again once the refresh token had expired too


def test_quota_stops_with_a_message_saying_when_it_frees(hda_env):
    hda_env.faults.add("quota", "hda", "order", reset_after=24 * 3600)  # a sandbox day: 24 real min, beyond quota_wait
    src = ndvi_source(**ONE)
    with pytest.raises(QuotaError, match="frees at") as info:
        src.to_dask()
    assert info.value.status == 429
    assert hda_env.log.count("hda", "order") == 1  # not hammered
    _assert_nothing_published(src)


def test_5xx_burst_is_retried(hda_env):
    hda_env.faults.add("status", "hda", "search", times=3, status=503, message="Task Error")
    ds = ndvi_source(**ONE).to_dask()
    assert ds.sizes["time"] == 1
    statuses = [e.status for e in hda_env.log.entries("hda", "search")]
    assert statuses == [503, 503, 503, 200]


def test_other_4xx_is_not_retried_and_carries_the_message(hda_env):
    hda_env.faults.add("status", "hda", "search", times=1, status=400, message="bbox: nonsense")
    with pytest.raises(ServiceError, match="bbox: nonsense") as info:
        ndvi_source(**ONE).to_dask()
    assert info.value.status == 400
    assert hda_env.log.count("hda", "search") == 1


def test_connection_drop_mid_download_is_resumed(hda_env):
    cut = 4000
    hda_env.faults.add("reset", "hda", "download", after_bytes=cut)
    src = ndvi_source(**ONE)
    src.to_dask()
    gets = hda_env.log.entries("hda", "download")
    assert len(gets) == 2
    assert gets[1].range == f"bytes={cut}-"
    total = gets[0].bytes_sent + gets[1].bytes_sent
    published = sum(p.stat().st_size for p in stored_files(src, "*.nc"))
    assert published > 0
    assert gets[1].bytes_sent <= (total - cut) + 4 * 1024 * 1024  # remaining + at most one chunk


def test_cancel_stops_within_two_seconds(hda_env):
    hda_env.ctx.queue_delay = 1e9  # the order never gets ready
    src = ndvi_source(**ONE)
    handle = src.preload(blocking=False)
    deadline = time.monotonic() + 5
    while hda_env.log.count("hda", "download_head") == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.monotonic()
    assert handle.cancel()
    assert time.monotonic() - t0 < 2.0
    assert handle.status == "cancelled"
    with pytest.raises(CancelledError):
        handle.wait(0)
    _assert_nothing_published(src)
    (job,) = store().jobs.all()
    assert job.service == "wekeo" and job.stage == "ordered" and job.order_id  # kept for a rerun (HDA has no cancel)


def test_terminal_failure_reports_the_server_message(hda_env):
    hda_env.faults.add("terminal_failure", "hda", "order", message="Task Error: product unavailable")
    src = ndvi_source(**ONE)
    with pytest.raises(PreloadError, match="product unavailable") as info:
        src.to_dask()
    (err,) = info.value.failures.values()
    assert isinstance(err, ServiceError)
    _assert_nothing_published(src)


def test_corrupt_zip_is_a_clear_error_and_leaves_the_cache_unchanged(hda_env):
    hda_env.faults.add("corrupt_zip", "hda", "order")
    src = ndvi_source(**ONE)
    with pytest.raises(PreloadError, match="(?i)corrupt|crc") as info:
        src.to_dask()
    assert all(isinstance(e, IntegrityError) for e in info.value.failures.values())
    _assert_nothing_published(src)


@pytest.mark.parametrize("variant", ["slip", "absolute", "symlink"])
def test_hostile_zip_is_refused(hda_env, tmp_path, variant):
    hda_env.faults.add("hostile_zip", "hda", "order", variant=variant)
    src = ndvi_source(**ONE)
    with pytest.raises(PreloadError) as info:
        src.to_dask()
    assert all(isinstance(e, UnsafeArchiveError) for e in info.value.failures.values())
    _assert_nothing_published(src)
    assert not list(tmp_path.rglob("evil*")) and not (tmp_path.parent / "evil.txt").exists()


def test_missing_credentials_name_all_three_places(hda_env, monkeypatch):
    monkeypatch.delenv("HDA_USER")
    monkeypatch.delenv("HDA_PASSWORD")
    with pytest.raises(CredentialsError) as info:
        ndvi_source(**ONE).to_dask()
    text = str(info.value)
    assert "HDA_USER" in text and "HDA_PASSWORD" in text and "HDA_RC" in text and "argument" in text
    assert hda_env.log.count("hda") == 0
