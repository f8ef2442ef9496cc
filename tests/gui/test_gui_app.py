"""The catalog browser in-process (no browser): quicklook requests, plotting from the sandbox, errors, serving."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from intake_clms.errors import ParameterError
from intake_clms.gui import build_gui, quicklook_bbox, quicklook_dates, quicklook_params, resolution_metres
from intake_clms.sandbox import Sandbox

pytest.importorskip("panel")
pytest.importorskip("hvplot")

TODAY = dt.date(2024, 3, 15)  # inside the sandbox's coverage (its "present" is 2026-06-30)
NDVI = "ndvi_global_300m_10daily_v2"


def _render(plot):
    import holoviews as hv

    return hv.render(plot, backend="bokeh")


def _mappers(fig) -> list:
    return [r.glyph.color_mapper for r in fig.renderers if getattr(r.glyph, "color_mapper", None) is not None]


def test_every_entry_gets_a_small_request_inside_its_coverage() -> None:
    gui = build_gui(today=TODAY)
    assert gui.catsel.value == ["clms"] and len(gui.sourcesel.options) == 151
    for name, source in gui._sources.items():
        params = quicklook_params(source, TODAY)
        md = source.metadata
        west, south, east, north = params["bbox"]
        cw, cs, ce, cn = md["coverage_bbox"]
        assert cw <= west < east <= ce and cs <= south < north <= cn, name
        assert east - west <= 10 and north - south <= 10, name
        if params["start"]:
            first, last = dt.date.fromisoformat(params["start"]), dt.date.fromisoformat(params["end"])
            assert 0 <= (last - first).days < 366, (name, params)
            if md.get("time_start"):
                assert first >= dt.date.fromisoformat(md["time_start"]), name
        else:  # unknown coverage: no default range, the GUI asks for one
            assert not md.get("time_start") and not params["end"], name


def test_quicklook_area_follows_the_resolution_and_dates_the_frequency() -> None:
    assert resolution_metres("300 m") == 300 and resolution_metres("12.5 km") == 12_500
    ten_m = quicklook_bbox({"resolution": "10 m", "coverage_bbox": [-31.3, 27.6, 44.9, 71.2]})
    one_km = quicklook_bbox({"resolution": "1 km", "coverage_bbox": [-180, -90, 180, 90]})
    assert ten_m[2] - ten_m[0] < 0.1 < 5 < one_km[2] - one_km[0]
    tropics = quicklook_bbox({"resolution": "10 m", "coverage_bbox": [-180, -30, 180, 30]})
    assert -30 <= tropics[1] < tropics[3] <= 30
    daily = quicklook_dates({"frequency": "Daily", "time_start": "2015-01-01", "time_ongoing": True}, today=TODAY)
    dekads = quicklook_dates({"frequency": "10-daily", "time_start": "1999-01-01", "time_end": "2020-12-31"})
    yearly = quicklook_dates({"frequency": "Yearly", "time_start": "2017-01-01", "time_ongoing": True}, today=TODAY)
    assert daily == ("2024-03-06", "2024-03-08")
    assert dekads == ("2020-12-02", "2020-12-31")
    assert yearly == ("2022-01-01", "2022-12-31")


def test_plot_reads_only_the_request_shown_then_the_cache(gui_env: Sandbox) -> None:
    gui = build_gui(today=TODAY)
    gui.sourcesel.value = [NDVI]
    shown = yaml.safe_load(gui.sourceinf.value)
    assert shown["entry"] == NDVI and shown["service"] == "wekeo"
    request = shown["plot reads"]
    assert request["bbox"] == [float(v) for v in gui.bbox_input.value.split(",")]
    assert (request["start"], request["end"]) == (gui.start_input.value, gui.end_input.value)
    assert "from the cache" in gui.request_note.object
    gui.bbox_input.value = "5, 44, 11, 48"  # the user edits the request: the panel follows
    assert yaml.safe_load(gui.sourceinf.value)["plot reads"]["bbox"] == [5.0, 44.0, 11.0, 48.0]

    plot = gui.plot_now()
    orders = gui_env.log.count("hda", "order") or gui_env.log.count("hda", "download", "POST")
    assert 1 <= orders <= 4  # 30 days of a 10-daily product: a few orders, not the whole archive
    searches = [e for e in gui_env.log.entries("hda") if e.endpoint == "search"]
    assert searches
    fig = _render(plot)
    mapper = _mappers(fig)[0]
    assert (mapper.low, mapper.high) == (0.0, 1.0)
    assert "success" == gui.plots.status.alert_type and "5, 44, 11, 48" in gui.plots.status.object
    assert "NDVI" in gui.plots.title.object

    again = build_gui(today=TODAY)  # a new session: selecting asks for the newest products (a search) ...
    again.sourcesel.value = [NDVI]
    assert (again.start_input.value, again.end_input.value) == (request["start"], request["end"])
    calls = len(gui_env.log.entries())  # ... and the same request then comes from the cache, no HTTP at all
    again.bbox_input.value = "5, 44, 11, 48"
    _render(again.plot_now())
    assert len(gui_env.log.entries()) == calls


def test_an_entry_without_plots_metadata_still_plots(gui_env: Sandbox) -> None:
    """intake's plot button raised KeyError: 'plots' here; the nested API entries declare no plots."""
    gui = build_gui(today=TODAY)
    nested = next(o for o in gui.catsel.options if o.endswith("clms_download_api"))
    gui.catsel.value = [nested]
    assert not gui.error.visible
    assert "forest_type_2015" in gui.sourcesel.options and NDVI not in gui.sourcesel.options
    gui.sourcesel.value = ["forest_type_2015"]
    assert "plots" not in gui._sources["forest_type_2015"].metadata
    fig = _render(gui.plot_now())
    assert _mappers(fig), "no image drawn"
    assert gui.plots.title.object.endswith(": FTY")  # the product's variable (FTY_2015_...), never band_data


def test_an_unlistable_nested_catalog_shows_an_error_not_the_main_entries(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on: "offline"
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CLMS_API_URL", f"http://127.0.0.1:{port}/api")
    monkeypatch.setenv("INTAKE_CLMS_CACHE", str(tmp_path / "cache"))
    gui = build_gui(today=TODAY)
    assert len(gui.sourcesel.options) == 151
    gui.catsel.value = [next(o for o in gui.catsel.options if o.endswith("clms_download_api"))]
    assert gui.sourcesel.options == []
    assert gui.error.visible and "Cannot list the catalog **clms_download_api**" in gui.error.object
    gui.catsel.value = ["clms"]  # back to the main catalog: entries again, error gone
    assert len(gui.sourcesel.options) == 151 and not gui.error.visible


def test_plot_refuses_an_entry_with_unknown_dates_instead_of_reading_everything(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTAKE_CLMS_CACHE", str(tmp_path / "cache"))
    gui = build_gui(today=TODAY)
    gui.sourcesel.value = ["eo_eea_dat_hrl_imp"]  # no time coverage in the table
    assert gui.start_input.value == "" and "give a start and an end" in gui.request_note.object
    with pytest.raises(ParameterError, match="start"):
        gui.quicklook_source()
    with pytest.raises(Exception, match="Cannot plot"):
        gui.plot_now()
    assert gui.plots.status.alert_type == "danger"


def _start_cli(env: dict[str, str], *args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "intake_clms.cli", "gui", "--port", "0", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"(http://\S+)", line)
    if not m:
        proc.kill()
        raise AssertionError(f"no URL printed: {line!r} {proc.stderr.read()}")
    return proc, m.group(1)


def test_cli_serves_the_browser_page_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    env = dict(os.environ, INTAKE_CLMS_CACHE=str(tmp_path / "cache"))
    proc, url = _start_cli(env)
    try:
        page = requests.get(url, timeout=60)
        assert page.status_code == 200
        assert "ace" in page.text  # the code editor's resources: no pn.extension('codeeditor') needed by hand
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped" in err


def test_cli_refuses_a_missing_catalog_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "intake_clms.cli", "gui", "--catalog", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"intake-clms gui: error: no catalog file at {tmp_path / 'nope.yaml'}"]


def test_stopping_the_server_cancels_a_plot_waiting_in_the_queue(sandbox_factory, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from intake_clms.gui import cancel_plots
    from intake_clms.engine import CancelledError

    sb = sandbox_factory(queue_delay=10**6)  # an order that never leaves the queue
    for name, value in sb.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("INTAKE_CLMS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HDA_RC", str(tmp_path / "no-hdarc"))
    for name in ("CDSE_USERNAME", "CDSE_PASSWORD"):  # keep `auto` on WEkEO, whose queue this test needs
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    gui = build_gui(today=TODAY)
    gui.sourcesel.value = [NDVI]
    outcome: list[BaseException] = []

    def click() -> None:
        try:
            gui.plot_now()
        except BaseException as exc:  # noqa: BLE001  (recorded for the assertion)
            outcome.append(exc)

    worker = threading.Thread(target=click)
    worker.start()
    for _ in range(2400):  # until the order is placed (bounded: 2 min)
        if sb.log.count("hda", "order") or not worker.is_alive():
            break
        worker.join(0.05)
    assert cancel_plots() == 1
    worker.join(60)
    assert not worker.is_alive() and outcome and isinstance(outcome[0], CancelledError)


def test_an_emptied_or_garbled_bbox_is_refused_not_read_as_the_whole_coverage(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTAKE_CLMS_CACHE", str(tmp_path / "cache"))
    gui = build_gui(today=TODAY)
    gui.sourcesel.value = [NDVI]
    gui.bbox_input.value = ""
    with pytest.raises(ParameterError, match="bbox: is empty"):
        gui.quicklook_source()
    gui.bbox_input.value = "5, 45, nope, 50"
    assert "Cannot read the request" in gui.request_note.object and "bbox" in gui.request_note.object
    with pytest.raises(ParameterError, match="bbox"):
        gui.quicklook_source()


AFTER_PRESENT = dt.date(2026, 12, 7)  # after the sandbox's "present" (2026-06-30): a guess from it finds nothing


def _all_services(sb: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every service's URL and credentials pointing at the sandbox (so `auto` is CDSE, WEkEO, then the CLMS API)."""
    for name, value in sb.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("INTAKE_CLMS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HDA_RC", str(tmp_path / "no-hdarc"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def test_default_dates_are_the_newest_products_the_search_finds(sandbox: Sandbox, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The default request was a guess from today's date (past the newest products: 'no data found' after an
    order); now it ends with the newest product the service chain's search finds, and nothing is ordered."""
    _all_services(sandbox, tmp_path, monkeypatch)
    gui = build_gui(today=AFTER_PRESENT)
    gui.sourcesel.value = [NDVI]
    assert gui._sources[NDVI].services()[:2] == ["cdse", "wekeo"]
    bbox = [float(v) for v in gui.bbox_input.value.split(",")]
    items = sandbox.ctx.store.items(NDVI, bbox, "2026-01-01", AFTER_PRESENT.isoformat())
    newest = max(i.end for i in items).date()
    assert newest <= sandbox.ctx.store.present
    assert gui.end_input.value == newest.isoformat(), gui.service_note.object
    assert gui.start_input.value == (newest - dt.timedelta(days=29)).isoformat()  # a few 10-day steps
    shown = yaml.safe_load(gui.sourceinf.value)["plot reads"]
    assert (shown["start"], shown["end"]) == (gui.start_input.value, gui.end_input.value)
    assert not gui.service_note.visible  # CDSE, the first service, has them: no fall-through
    assert sandbox.log.count("cdse", "odata") or sandbox.log.count("cdse")  # the search asked CDSE
    assert sandbox.log.count("clms", "datarequest_post") == 0 and sandbox.log.count("hda", "order") == 0


def test_falling_through_to_an_ordering_service_is_said_before_it_happens(sandbox: Sandbox, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Dates no catalogue has: `auto` would pass over CDSE and WEkEO to a CLMS API order; the panel says so and
    Plot orders only when pressed again."""
    from intake_clms.errors import ClmsError

    _all_services(sandbox, tmp_path, monkeypatch)
    gui = build_gui(today=AFTER_PRESENT)
    gui.sourcesel.value = [NDVI]
    gui.start_input.value, gui.end_input.value = "2026-09-01", "2026-09-30"  # after the newest products
    with pytest.raises(ClmsError, match="Not read yet"):
        gui.plot_now()
    note = gui.service_note.object
    assert gui.service_note.visible and gui.plots.status.alert_type == "warning"
    assert "CDSE and WEkEO found no product" in note and "the CLMS download API" in note and "orders" in note
    assert "Press **Plot** again" in note
    assert sandbox.log.count("clms", "datarequest_post") == 0 and sandbox.log.count("hda", "order") == 0
    with pytest.raises(ClmsError, match="no data found"):  # confirmed: it orders (the CLMS API has no data)
        gui.plot_now()
    assert sandbox.log.count("clms", "datarequest_post") >= 1
