"""The catalog browser (``intake-clms gui``): intake's GUI, made to serve, to plot, and never to spend quota silently.

intake 2's panel GUI browses our V1 catalogs, but as shipped it cannot be
served without undocumented steps (``pn.extension('codeeditor')``,
``gui.main.servable()``), its plot button crashes on an entry without
``metadata.plots``, it would read an entry as instantiated (the whole coverage:
hundreds of orders), and a nested catalog that cannot be listed (offline, a
refused API) leaves the previous catalog's entries on screen as if they were
its own.  ``ClmsGUI`` (:func:`gui_class`) keeps intake's layout and fixes those:

* selecting an entry shows, in the source panel, the *request the plot button
  will read*: the entry's parameters with a small area (about
  :data:`QUICKLOOK_PIXELS` pixels across at the product's resolution, inside its
  coverage) and a short date range (a few time steps up to the newest products
  the services' search finds there, :mod:`intake_clms.services.probe`; a guess
  from the coverage only when no service can be asked), editable in the bbox /
  start / end fields below it.  Pressing plot
  reads exactly that request through the public source API
  (``ClmsSource.preload()``): from the cache when it was fetched before (by the
  GUI, ``preload`` or ``to_dask()`` with the same arguments), otherwise it orders
  it, and says so while it runs;
* when ``auto`` would fall through to a service that orders (the first services
  have no product for the request), the panel says so when the entry is
  selected, and the plot button asks to be pressed a second time before it
  orders;
* the plot is the entry's ``metadata.plots`` spec (:mod:`intake_clms.plots`)
  fitted to the data read;
* a catalog that cannot be listed shows an error and no entries.

:func:`serve` runs it with ``panel serve`` in-process; ``intake-clms gui``
(:func:`add_gui_parser`) is the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import ClmsError, ParameterError
from .params import parse_bbox

#: A quicklook's area spans about this many pixels across at the product's resolution.
QUICKLOOK_PIXELS = 800
#: Where a quicklook area is centred, the first that fits inside the product's coverage: the Alps,
#: the Congo basin, the Amazon; else the coverage's centre.
QUICKLOOK_CENTRES = ((7.5, 46.0), (20.0, 0.0), (-60.0, -5.0))
#: Default resolution (metres) when the catalog does not state one.
DEFAULT_RESOLUTION_M = 100.0
#: Days a quicklook spans per frequency (a few time steps), and how far before today an ongoing
#: product's quicklook ends (products are published with some delay).
_SPAN_DAYS = {"hourly": 1, "daily": 3, "10daily": 30, "monthly": 90}
_LAG_DAYS = {"hourly": 7, "daily": 7, "10daily": 40, "monthly": 70}
_YEARLY = ("yearly", "3yearly", "6yearly", "static")

DEFAULT_PORT = 5006
DEFAULT_ADDRESS = "127.0.0.1"


# --------------------------------------------------------------------------- the quicklook request


def resolution_metres(text: object) -> float:
    """'300 m' -> 300, '1 km' -> 1000, '12.5 km' -> 12500, '0.1°' -> ~11132; unknown -> the default."""
    m = re.search(r"([0-9]+(?:\.[0-9]+)?)\s*(km|m|°|deg)", str(text or "").lower())
    if not m:
        return DEFAULT_RESOLUTION_M
    value, unit = float(m.group(1)), m.group(2)
    return value * {"km": 1000.0, "m": 1.0}.get(unit, 111_320.0)


def quicklook_bbox(md: Mapping[str, Any], coverage: Any = None) -> list[float]:
    """A small [west, south, east, north] inside the coverage, about QUICKLOOK_PIXELS pixels across."""
    cov = md.get("coverage_bbox") or coverage or [-180.0, -90.0, 180.0, 90.0]
    west, south, east, north = (float(v) for v in cov)
    width = QUICKLOOK_PIXELS * resolution_metres(md.get("resolution")) / 111_320.0
    width = min(max(width, 0.05), 10.0, east - west, north - south)
    half = width / 2
    centres = [*QUICKLOOK_CENTRES, ((west + east) / 2, (south + north) / 2)]
    cx, cy = next(((x, y) for x, y in centres
                   if west + half <= x <= east - half and south + half <= y <= north - half), centres[-1])
    return [round(cx - half, 4), round(cy - half, 4), round(cx + half, 4), round(cy + half, 4)]


def _frequency(md: Mapping[str, Any]) -> str:
    return re.sub(r"[^a-z0-9]", "", str(md.get("frequency") or "").lower())


def quicklook_dates(md: Mapping[str, Any], default_start: str = "", default_end: str = "",
                    today: dt.date | None = None) -> tuple[str, str]:
    """A short date range at the end of the coverage: a few time steps, or one year for yearly products.

    Empty strings when the coverage is unknown: the GUI then asks for dates instead of
    reading the whole archive.
    """
    today = today or dt.date.today()
    first = _day(md.get("time_start")) or _day(default_start)
    last = _day(md.get("time_end")) or _day(default_end)
    ongoing = bool(md.get("time_ongoing")) or str(default_end).strip().lower() == "present"
    if first is None and last is None and not ongoing:
        return "", ""
    freq = _frequency(md)
    if last is None or ongoing:
        last = today - dt.timedelta(days=_LAG_DAYS.get(freq, 40))
        if freq in _YEARLY:
            last = dt.date(today.year - 2, 12, 31)
    if first is not None and last < first:
        last = first + dt.timedelta(days=_SPAN_DAYS.get(freq, 30) - 1)
    if freq in _YEARLY:
        start = dt.date(last.year, 1, 1)
    else:
        start = last - dt.timedelta(days=_SPAN_DAYS.get(freq, 30) - 1)
    if first is not None and start < first:
        start = first
    return start.isoformat(), last.isoformat()


#: Days the first search for an entry's newest products spans per frequency (a few time steps; each
#: further search spans 8 times more, see :func:`intake_clms.services.probe.windows`).
_SEARCH_DAYS = {"hourly": 1, "daily": 7, "10daily": 40, "monthly": 120}


def newest_request(source: Any, params: Mapping[str, Any], today: dt.date | None = None) -> tuple[dict[str, Any], Any]:
    """The quicklook ``params`` moved to the newest products the source's service chain finds in its bbox.

    Returns (params, :class:`~intake_clms.services.probe.Answer`); the params are unchanged
    (the coverage guess) when the request names a file or no dates, when no service can be
    asked (no credentials, offline: the answer says why) or when none finds a product.
    """
    from .config import available_services
    from .services.probe import CATALOGUES, answer, windows

    out = dict(params)
    chain = source.services()
    if (params.get("file") or not params.get("end") or not set(chain) <= available_services()
            or not set(chain) & set(CATALOGUES)):  # no credentials, or no service that lists its products
        return out, None
    md = source.metadata or {}
    freq = _frequency(md)
    first = _day(md.get("time_start")) or _day(params.get("start"))
    ongoing = bool(md.get("time_ongoing")) or not md.get("time_end")
    last = (today or dt.date.today()) if ongoing else _day(params["end"])
    days = _SEARCH_DAYS.get(freq, 2 * 366 if freq in _YEARLY else 40)
    ranges = windows(last, days, first)
    if not ranges:  # the coverage starts after the anchor day: nothing to ask for
        return out, None
    found = answer(source(**params).request, chain, source_settings(source), ranges)
    newest = found.newest()
    if newest is not None:
        end = _day(newest.end) or _day(newest.start)
        out["start"], out["end"] = quicklook_dates({**md, "time_end": end.isoformat(), "time_ongoing": False},
                                                   md.get("time_start") or "", "", today)
    return out, found


def source_settings(source: Any) -> dict[str, Any]:
    """The settings a read of ``source`` connects its services with (its keywords and its cache folder)."""
    from .store import Store

    options = dict(getattr(source, "options", None) or {})
    return {**options, "cache_dir": Store(options.get("cache_dir") or source.cache_dir).base}


def _day(text: object) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(text)[:10])
    except ValueError:
        return None


def quicklook_params(source: Any, today: dt.date | None = None) -> dict[str, Any]:
    """The user parameters the plot button reads an entry with: its defaults, made small.

    A CLMS download API entry that can be cut to order is asked for a cut (``file=''``)
    rather than its first pre-packaged file; one that only has pre-packaged files keeps
    the entry's default file (its size is shown before anything runs).
    """
    entry = getattr(source, "_entry", None)
    defaults = {p.name: p.default for p in getattr(entry, "_user_parameters", [])}
    md = source.metadata or {}
    params = dict(defaults)
    if "file" in params and md.get("cut_to_order"):
        params["file"] = ""
    if params.get("file"):
        return params
    if "bbox" in params:
        params["bbox"] = quicklook_bbox(md, defaults.get("bbox"))
    if "start" in params or "end" in params:
        params["start"], params["end"] = quicklook_dates(md, defaults.get("start", ""), defaults.get("end", ""), today)
    return params


def request_summary(name: str, source: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """What the source panel shows: the entry, the request the plot reads, its plot spec, its description."""
    md = source.metadata or {}
    shown: dict[str, Any] = {"entry": name, "plot reads": dict(params)}
    try:
        shown["service"] = source.service
    except Exception as exc:  # no credentials for the chosen service: say so, do not fail the selection
        shown["service"] = f"unavailable ({exc})"
    files = {f.get("file"): f.get("size") for f in md.get("files") or [] if isinstance(f, Mapping)}
    if params.get("file") and files.get(params["file"]):
        shown["file size"] = files[params["file"]]
    if md.get("plots"):
        shown["plots"] = md["plots"]
    shown["description"] = source.description
    return shown


# --------------------------------------------------------------------------- the GUI


def _panel() -> Any:
    import panel as pn

    pn.extension("codeeditor")
    return pn


class PlotView:
    """The plot area: a title, a status line, and the HoloViews pane (replaces intake's ``Plots``)."""

    def __init__(self) -> None:
        pn = _panel()
        self.title = pn.pane.Markdown("", margin=(0, 10))
        self.status = pn.pane.Alert("", alert_type="info", visible=False)
        self.area = pn.Column()  # the plot with its time slider (pn.panel lays out a DynamicMap's widgets)
        self.panel = pn.Column(self.title, self.status, self.area, name="Plot")
        self.panel.visible = False

    def draw(self, plot: Any) -> None:
        pn = _panel()
        self.area.objects = [] if plot is None else [pn.panel(plot, widget_location="bottom")]

    def say(self, text: str, kind: str = "info") -> None:
        self.status.param.update(object=text, alert_type=kind, visible=bool(text))


_GUI_CLASS: type | None = None
#: Preloads the GUI's plots are waiting for (every session): cancelled when the server stops, so that
#: Ctrl-C does not wait for an order in a queue.
_RUNNING: set[Any] = set()


def gui_class() -> type:
    """The GUI class (:class:`ClmsGUI`), built on intake's at first use: importing this module needs no panel."""
    global _GUI_CLASS
    if _GUI_CLASS is None:
        _GUI_CLASS = _make_gui_class()
    return _GUI_CLASS


def _make_gui_class() -> type:
    pn = _panel()
    from intake.interface.gui import GUI

    class ClmsGUI(GUI):
        """intake's catalog browser with a quicklook request per entry and a plot that reads only that.

        ``cats`` maps display names to catalogs (the first is selected at start); ``today``
        ends the search for an ongoing product's newest products, and its quicklook dates when no
        service can be asked (tests inject it).
        """

        def __init__(self, cats: Mapping[str, Any], today: dt.date | None = None):
            self.today = today
            self.error = pn.pane.Alert("", alert_type="danger", visible=False)
            self.bbox_input = pn.widgets.TextInput(name="bbox (west, south, east, north)", width=320)
            self.start_input = pn.widgets.TextInput(name="start", width=150)
            self.end_input = pn.widgets.TextInput(name="end", width=150)
            self.request_note = pn.pane.Markdown("", width=480)
            #: said before a read falls through to a service that orders (and why the dates are a guess)
            self.service_note = pn.pane.Alert("", alert_type="warning", visible=False, width=480)
            self._selected: tuple[str, Any] | None = None
            self._defaults: dict[str, Any] = {}
            self._confirmed = ""  # the request the panel warned about: the next Plot of it orders
            self._editing = False
            super().__init__(cats=dict(cats))
            # intake's layout: row0 = (logo, catalogs, sources + plot button, source panel); row1 = plots.
            row0 = self.main[0]
            self.plot_button = row0[2][1]
            self.plot_button.param.update(name="Plot", button_type="primary")
            row0[1][1][2].param.update(name="Search")  # intake's "🔍": headless browsers often lack the emoji font
            row0[0][0] = pn.Spacer(width=0)  # intake's logo: its PNG is not in intake's wheel (a broken link)
            row0[0].param.update(visible=False)
            self.sourceinf.param.update(height=300, width=480)
            row0[3].extend([pn.Row(self.bbox_input), pn.Row(self.start_input, self.end_input), self.request_note,
                         self.service_note])
            for widget in (self.bbox_input, self.start_input, self.end_input):
                widget.param.watch(self._request_edited, "value")
            self.plots = PlotView()
            self.row1[0] = self.plots.panel
            self.main.insert(1, self.error)
            if self._cats:
                self.catsel.value = [next(iter(self._cats))]

        # -- catalogs

        def show_error(self, text: str) -> None:
            self.error.param.update(object=text, visible=bool(text))

        def cat_selected(self, *_: Any) -> None:
            self.show_error("")
            try:
                super().cat_selected(*_)
            except Exception as exc:  # a nested catalog that cannot be listed: an error, never stale entries
                self._sources.clear()
                self.sourcesel.param.update(options=[], value=[])
                name = (self.catsel.value or ["?"])[0].replace("└─>", "").strip()
                self.show_error(f"Cannot list the catalog **{name}**: {exc}")

        # -- entries

        def source_selected(self, *_: Any) -> None:
            chosen = self.sourcesel.value
            if not chosen:
                return
            name = chosen[0]
            source = self._sources[name]
            self._selected = (name, source)
            params, found = quicklook_params(source, self.today), None
            try:
                params, found = newest_request(source, params, self.today)
            except ClmsError as exc:  # the guess stays; say why
                from .services.probe import Answer

                found = Answer(None, problem=str(exc).splitlines()[0])
            self._defaults = params
            self._say_service(found, guessed=found is not None and found.service is None)
            self._editing = True  # filling the fields is no user edit
            try:
                self.bbox_input.value = _show(params.get("bbox")) if "bbox" in params else ""
                self.start_input.value = str(params.get("start") or "")
                self.end_input.value = str(params.get("end") or "")
                for widget, key in ((self.bbox_input, "bbox"), (self.start_input, "start"), (self.end_input, "end")):
                    widget.disabled = key not in params or bool(params.get("file"))
            finally:
                self._editing = False
            self._show_request()

        def _request_edited(self, *_: Any) -> None:
            if not self._editing and self._selected is not None:
                self._show_request()

        def request_params(self) -> dict[str, Any]:
            """The selected entry's quicklook parameters with the user's edits (what plot will read)."""
            if self._selected is None:
                raise ClmsError("select an entry first")
            _, source = self._selected
            params = dict(self._defaults)
            if params.get("file"):
                return params
            if "bbox" in params:
                text = self.bbox_input.value.strip()
                if not text:  # never the whole coverage by accident
                    raise ParameterError("bbox", "is empty; expected west, south, east, north in degrees")
                params["bbox"] = list(parse_bbox(text))
            for key, widget in (("start", self.start_input), ("end", self.end_input)):
                if key in params:
                    params[key] = widget.value.strip()
            return params

        def _show_request(self) -> None:
            name, source = self._selected  # type: ignore[misc]
            try:
                params = self.request_params()
            except (ValueError, ClmsError) as exc:
                self.request_note.object = f"**Cannot read the request:** {exc}"
                return
            text = yaml.safe_dump(request_summary(name, source, params), sort_keys=False, allow_unicode=True,
                                  width=70, default_flow_style=None)
            self.sourceinf.param.update(value=text)
            if ("start" in params and not params.get("start")) or ("end" in params and not params.get("end")):
                note = "This entry's time coverage is unknown: give a start and an end date before plotting."
            else:
                note = ("**Plot reads the request above**: from the cache if it was fetched before, otherwise it "
                        "is ordered and downloaded first (using your quota). Edit the fields to change it.")
            self.request_note.object = note

        def _say_service(self, found: Any, guessed: bool = False, confirm: bool = False) -> None:
            """Show what the service chain said: a fall-through to an ordering service, or dates that are a guess."""
            notice = found.notice() if found is not None else ""
            if notice:
                then = "Press **Plot** again to order it." if confirm else "Plot asks before it orders."
                text = f"**Before plotting:** {notice}. {then}"
            elif guessed:
                why = found.problem or "no service found a product in this area in recent years"
                text = f"The dates are a guess from the catalog ({why})."
            else:
                text = ""
            self.service_note.param.update(object=text, visible=bool(text))

        def _needs_confirmation(self, source: Any) -> bool:
            """Whether reading ``source`` would fall through to an ordering service the user has not agreed to.

            Asked only when a read would ask the services (nothing stored yet) and ``auto`` has a choice."""
            from .services.probe import answer
            from .store import Store

            chain = source.services()
            key = source.request.key()
            if len(chain) < 2 or key == self._confirmed:
                return False
            settings = source_settings(source)
            if Store(settings["cache_dir"]).views.get(key) is not None:  # read from the cache: no service asked
                return False
            found = answer(source.request, chain, settings)
            if not found.notice():
                return False
            self._confirmed = key  # the next press of Plot on the same request orders
            self._say_service(found, confirm=True)
            return True

        def quicklook_source(self) -> tuple[str, Any]:
            """(entry name, source) for the request the plot button reads; ParameterError if it is incomplete."""
            params = self.request_params()
            for key in ("start", "end"):
                if key in params and not params[key]:
                    raise ParameterError(key, "is empty; the GUI reads a short date range, give one")
            name, source = self._selected  # type: ignore[misc]
            return name, source(**params)

        # -- plotting

        def _start_plot(self) -> tuple[str, Any] | None:
            """Check the request and show that it is being read; None (and an error shown) if it cannot be."""
            try:
                name, source = self.quicklook_source()
            except (ValueError, ClmsError) as exc:
                self._plot_failed(f"Cannot plot: {exc}")
                return None
            if self._needs_confirmation(source):
                self.plots.panel.visible = True
                self.plots.draw(None)
                self.plots.say(f"Not read yet: {self.service_note.object}", "warning")
                return None
            self.add.panel.visible = self.search.panel.visible = False
            self.plots.panel.visible = True
            self.plots.title.object = f"### {name}"
            self.plots.draw(None)
            self.plots.say(f"Reading {_describe(source)}: from the cache if it is there, else ordering it now…")
            return name, source

        async def plot_clicked(self, *_: Any) -> None:
            """Read the quicklook request in a worker thread (the page stays live), then draw it."""
            started = self._start_plot()
            if started is None:
                return
            name, source = started
            self.plot_button.disabled = True
            try:
                data = await asyncio.get_running_loop().run_in_executor(None, self._read, source)
                self._show_plot(name, source, data)
            except Exception as exc:  # shown to the user; the server keeps running
                self._plot_failed(f"Cannot plot {name}: {exc}")
            finally:
                self.plot_button.disabled = False

        def _read(self, source: Any) -> Any:
            handle = source.preload(blocking=False, progress_bar=False)
            _RUNNING.add(handle)
            try:
                return handle.wait()
            finally:
                _RUNNING.discard(handle)

        def plot_now(self, name: str | None = None) -> Any:
            """Read and draw synchronously (scripts and tests); returns the HoloViews object drawn."""
            if name is not None:
                self.sourcesel.value = [name]
            started = self._start_plot()
            if started is None:
                raise ClmsError(self.plots.status.object)
            name, source = started
            return self._show_plot(name, source, self._read(source))

        def _show_plot(self, name: str, source: Any, data: Any) -> Any:
            from .plots import PLOT_NAME, fit_points, fit_raster, plots_for

            md = source.metadata or {}
            specs = md.get("plots") or plots_for(md)
            spec = dict(specs.get(PLOT_NAME) or next(iter(specs.values())))
            if source.container == "dataframe" or spec.get("kind") == "points":
                import hvplot.pandas  # noqa: F401

                frame, spec = fit_points(data, spec)
                plot = frame.hvplot(**spec)
            else:
                import hvplot.xarray  # noqa: F401

                ds, spec = fit_raster(data, spec)
                plot = ds.hvplot(**spec)
            self.plots.title.object = f"### {name}: {spec.get('z') or 'features'}"
            self.plots.draw(plot)
            self.plots.say(f"Read {_describe(source)}.", "success")
            return plot

        def _plot_failed(self, text: str) -> None:
            self.plots.panel.visible = True
            self.plots.draw(None)
            self.plots.say(text, "danger")

    return ClmsGUI


def _show(value: Any) -> str:
    return ", ".join(f"{float(v):g}" for v in value) if isinstance(value, (list, tuple)) else str(value or "")


def _describe(source: Any) -> str:
    r = source.request
    if r.file:
        return f"file {r.file}"
    dates = f"{r.start or '…'} to {r.end or '…'}"
    return f"bbox [{_show(r.bbox)}], {dates}"


def open_catalogs(path: str | Path | None = None) -> dict[str, Any]:
    """``{"clms": catalog}``: the bundled catalog, or the YAML catalog at ``path`` (named by its stem)."""
    import intake

    if path is None:
        from .catalog.resolve import default_catalog_path

        path = default_catalog_path()
    path = Path(path)
    if not path.is_file():
        raise ClmsError(f"no catalog file at {path}")
    name = "clms" if path.name == "clms.yaml" else path.stem
    return {name: intake.open_catalog(str(path))}


def build_gui(catalog: str | Path | None = None, today: dt.date | None = None) -> Any:
    """A fresh :class:`ClmsGUI` on the bundled catalog (or ``catalog``); ``.main`` is its panel layout."""
    return gui_class()(open_catalogs(catalog), today=today)


# --------------------------------------------------------------------------- serving


def cancel_plots() -> int:
    """Cancel the preloads plots are waiting for (the server is stopping); how many there were."""
    running = list(_RUNNING)
    for handle in running:
        handle.cancel()
    return len(running)


def free_port(address: str = DEFAULT_ADDRESS) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def make_server(catalog: str | Path | None = None, port: int = DEFAULT_PORT, address: str = DEFAULT_ADDRESS,
                factory: Callable[[], Any] | None = None) -> tuple[Any, str]:
    """A started-not-running panel (bokeh) server for the browser and its URL; each session gets its own GUI."""
    pn = _panel()
    open_catalogs(catalog)  # fail now, in the terminal, on a bad path
    port = port or free_port(address)
    origins = [f"{host}:{port}" for host in {address, "localhost", "127.0.0.1"}]

    def app() -> Any:
        gui = factory() if factory else build_gui(catalog)
        return gui.main

    server = pn.serve({"/": app}, port=port, address=address, show=False, start=False,
                      websocket_origin=origins, title="intake-clms catalog", print_url=False)
    host = "localhost" if address in ("127.0.0.1", "0.0.0.0", "::1", "::") else address
    return server, f"http://{host}:{port}/"


def serve(catalog: str | Path | None = None, port: int = DEFAULT_PORT, address: str = DEFAULT_ADDRESS,
          show: bool = False) -> int:
    """Serve the GUI until Ctrl-C; prints the URL first."""
    server, url = make_server(catalog, port, address)
    server.start()
    print(f"intake-clms gui: serving the catalog browser at {url} (Ctrl-C stops it)", flush=True)
    if show:
        import webbrowser

        server.io_loop.add_callback(webbrowser.open, url)
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        cancel_plots()
        server.stop()
    print("intake-clms gui: stopped", file=sys.stderr, flush=True)
    return 0


def _cmd_gui(args: argparse.Namespace) -> int:
    if args.catalog and not Path(args.catalog).is_file():  # before the slow imports
        raise ClmsError(f"no catalog file at {args.catalog}")
    try:
        import hvplot  # noqa: F401
        import panel  # noqa: F401
    except ImportError as exc:
        raise ClmsError(f"the GUI needs panel and hvplot ({exc.name} is missing): pip install 'intake-clms[gui]'")
    if not 0 <= args.port <= 65535:
        raise ParameterError("--port", f"got {args.port}; expected 0 (any free port) to 65535")
    try:
        return serve(args.catalog, args.port, args.address, args.show)
    except OSError as exc:
        raise ClmsError(f"cannot serve on {args.address}:{args.port}: {exc.strerror or exc}") from None


def add_gui_parser(sub: Any) -> None:
    """Add ``gui`` to the ``intake-clms`` subcommands."""
    p = sub.add_parser("gui", help="serve the catalog browser (intake's GUI with plots) in a web browser",
                       description="Serve the catalog browser: pick an entry, see the small request its plot "
                                   "reads (editable), press plot. The plot reads the cache when the request was "
                                   "fetched before, otherwise it orders it first. Ctrl-C stops the server.")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--address", default=DEFAULT_ADDRESS, help=f"address to listen on (default {DEFAULT_ADDRESS}: this machine only)")
    p.add_argument("--catalog", help="catalog YAML (default: the bundled catalogs/clms.yaml)")
    p.add_argument("--show", action="store_true", help="also open the page in the default web browser")
    p.set_defaults(func=_cmd_gui)
