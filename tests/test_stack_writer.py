"""A window view's stack is written while the reads run (issue 16: publish off the critical path of a series).

The :class:`~intake_clms.assemble.stack.StackWriter` takes products in whatever order the engine's threads
store them, from the windows just read or from kept files, and must write the very file the publish-time
path (:func:`~intake_clms.assemble.write_stack`) writes.  Anything it cannot stack as products come leaves
it ``broken`` and the publish stacks the view itself.
"""

from __future__ import annotations

import random
import threading

import pytest
import rasterio
import xarray as xr

from intake_clms.assemble import open_stack, raster, write_stack
from intake_clms.assemble.stack import StackWriter
from intake_clms.services.cdse.budget import Budget

from test_stack_reopen import CASES, windows


def _same_file(a, b) -> None:
    """Two stack files hold the same variables, values, attributes and encodings, decoded or raw."""
    for decode in (True, False):
        with xr.open_dataset(a, mask_and_scale=decode, decode_coords="all") as x, \
                xr.open_dataset(b, mask_and_scale=decode, decode_coords="all") as y:
            xr.testing.assert_identical(x.load(), y.load())
            for name in x.variables:
                assert x[name].dtype == y[name].dtype, name
                assert repr(sorted((k, v) for k, v in x[name].encoding.items() if k != "source")) == \
                    repr(sorted((k, v) for k, v in y[name].encoding.items() if k != "source")), name  # NaN fills


def _windows_of(files):
    """Each kept file as the engine has it just after the read: (its name, a Window on the remote grid)."""
    out = []
    for path in files:
        with rasterio.open(path) as ds:
            head = raster.header_of(ds)
            data = ds.read(1)
        # the remote file's grid is larger: the window lies at row 3, col 5 of it
        from affine import Affine

        remote = head.__class__(**{**head.__dict__, "transform": tuple(head.affine @ Affine.translation(-5, -3))[:6],
                                   "width": head.width + 20, "height": head.height + 10})
        out.append((path.name, raster.Window(data, remote, (3, 5, head.height, head.width), 0)))
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_rows_in_any_order_from_reads_or_files_give_the_publish_time_file(tmp_path, case):
    files, dates = windows(tmp_path, case, steps=6)
    reference = tmp_path / "reference.nc"
    write_stack(files, dates, dates, reference)  # every product from its kept file, in order

    read = _windows_of(files)
    writer = StackWriter(tmp_path / "incremental.nc", dates)
    order = list(range(len(files)))
    random.Random(7).shuffle(order)
    for i in order:  # as threads finish: some just read, some stored before (kept files)
        assert (writer.add_windows(i, [read[i]]) if i % 2 else writer.add(i, [files[i]])), writer.broken
    size, names = writer.finish()
    assert writer.broken is None
    assert size == (tmp_path / "incremental.nc").stat().st_size
    assert names == write_stack(files, dates, dates, tmp_path / "again.nc")[1]
    _same_file(reference, tmp_path / "incremental.nc")
    xr.testing.assert_identical(open_stack(reference).load(), open_stack(tmp_path / "incremental.nc").load())


def test_rows_from_threads(tmp_path):
    files, dates = windows(tmp_path, "ndvi", steps=12)
    reference = tmp_path / "reference.nc"
    write_stack(files, dates, dates, reference)
    writer = StackWriter(tmp_path / "threads.nc", dates)
    read = _windows_of(files)
    threads = [threading.Thread(target=writer.add_windows, args=(i, [read[i]])) for i in range(len(files))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert writer.finish() is not None, writer.broken
    _same_file(reference, tmp_path / "threads.nc")


def test_kept_header_is_what_the_kept_file_says(tmp_path):
    files, _ = windows(tmp_path, "lst", steps=1)
    (name, win), = _windows_of(files)
    kept = tmp_path / "kept.tif"
    raster.write_window(kept, win)
    with rasterio.open(kept) as ds:
        head = raster.header_of(ds)
    want = win.kept_header()
    for field in ("crs", "transform", "width", "height", "dtype", "nodata", "band"):
        assert getattr(want, field) == getattr(head, field), field


def test_what_it_cannot_stack_is_left_to_the_publish(tmp_path):
    files, dates = windows(tmp_path, "ndvi", steps=3)
    (tmp_path / "other").mkdir()
    other, _ = windows(tmp_path / "other", "lst", steps=1)

    writer = StackWriter(tmp_path / "a.nc", dates)
    assert writer.add(0, [files[0]])
    assert not writer.add(1, [other[0]])  # another grid and variable: a mosaic, not a stack
    assert writer.broken and writer.finish() is None
    assert not (tmp_path / "a.nc").exists()  # nothing half-written is left to be taken for a stack

    writer = StackWriter(tmp_path / "b.nc", dates)
    assert writer.add(0, [files[0]]) and writer.add(2, [files[2]])
    assert writer.finish() is None and "1 of 3" in writer.broken  # a step missing: never published as complete
    assert not (tmp_path / "b.nc").exists()

    writer = StackWriter(tmp_path / "c.nc", [dates[0], dates[0], dates[1]])  # two products of one date
    assert writer.broken and not writer.add(0, [files[0]])

    damaged = tmp_path / "damaged.tif"
    damaged.write_bytes(files[1].read_bytes()[:200])
    writer = StackWriter(tmp_path / "d.nc", dates)
    with pytest.raises(Exception, match="damaged.tif"):
        writer.add(1, [damaged])
    assert writer.broken and writer.finish() is None


def test_budget_serves_openings_first_then_in_order():
    """A window read's header (an opening) goes before waiting pixel reads, each kind first come first served:
    so every product's read starts early and the last rounds are filled (the partial last wave of a plain
    semaphore left slots idle)."""
    budget = Budget(1)
    budget.acquire()
    got: list[str] = []

    def take(name: str, opening: bool) -> None:
        budget.acquire(opening=opening)
        got.append(name)
        budget.release()

    threads = []
    for name, opening in (("pixels-1", False), ("pixels-2", False), ("header-1", True), ("header-2", True)):
        t = threading.Thread(target=take, args=(name, opening))
        t.start()
        threads.append(t)
        while len(budget._waiting) < len(threads):  # queued before the next one asks
            threading.Event().wait(0.001)
    budget.release()
    for t in threads:
        t.join(5)
    assert got == ["header-1", "header-2", "pixels-1", "pixels-2"]
    assert budget.in_use == 0


def test_budget_cancel_while_waiting_lets_the_next_go():
    from intake_clms.errors import CancelledError

    budget = Budget(1)
    budget.acquire()
    cancel = threading.Event()
    errors, got = [], []

    def first() -> None:
        try:
            budget.acquire(cancel)
        except CancelledError as exc:
            errors.append(exc)

    def second() -> None:
        budget.acquire()
        got.append("second")

    a = threading.Thread(target=first)
    a.start()
    while len(budget._waiting) < 1:
        threading.Event().wait(0.001)
    b = threading.Thread(target=second)
    b.start()
    while len(budget._waiting) < 2:
        threading.Event().wait(0.001)
    cancel.set()
    a.join(5)
    assert errors and not got
    budget.release()
    b.join(5)
    assert got == ["second"] and budget.in_use == 1
