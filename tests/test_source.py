"""The driver inside intake: offline instantiation, describe, parameters, the GUI, warnings."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import intake
import pytest
from workbooks import CATALOG

from intake_clms.catalog.clms_api import ClmsApiCatalog
from intake_clms.errors import ClmsError, ParameterError, ServiceNotImplementedError
from intake_clms.source import ClmsSource
from intake_clms.vector_source import ClmsVectorSource


@pytest.fixture
def cat():
    return intake.open_catalog(str(CATALOG))


@pytest.mark.disable_socket
def test_every_entry_instantiates_and_describes_offline(cat):
    import socket

    with pytest.raises(Exception):  # the guard is really on
        socket.create_connection(("127.0.0.1", 9))
    names = list(cat)
    assert len(names) == 152
    nested = cat["clms_download_api"]  # the CLMS API's datasets: listed only when opened, so no network here
    assert isinstance(nested, ClmsApiCatalog) and not nested.opened
    names.remove("clms_download_api")
    for name in names:
        source = cat[name]
        assert isinstance(source, ClmsSource)
        described = source.describe()
        vector = described["metadata"]["is_vector"]
        assert described["container"] == ("dataframe" if vector else "xarray") and described["metadata"]["identifier"]
        assert isinstance(source, ClmsVectorSource) == vector
        assert "sources" in source._yaml()
        assert source.service in ("wekeo", "clms", "cdse")
        assert source.discover()["npartitions"] == 1


def test_user_parameters_reach_the_source(cat):
    src = cat.ndvi_global_300m_10daily_v2(bbox=[5, 45, 10, 50], start="2024-01-01", end="2024-01-31", service="wekeo")
    r = src.request
    assert r.bbox == (5.0, 45.0, 10.0, 50.0) and r.start.isoformat() == "2024-01-01" and r.service == "wekeo"
    assert r.dataset_id == "EO:JRC:DAT:CLMS" and r.dataset_identifier == "ndvi_global_300m_10daily_v2"
    default = cat.ndvi_global_300m_10daily_v1.request
    assert default.start.isoformat() == "2014-01-01" and default.end.isoformat() == "2020-12-31"
    assert default.bbox == (-180.0, -90.0, 180.0, 90.0)
    assert cat.ndvi_global_300m_10daily_v1(bbox="[5, 45, 10, 50]").request.bbox == (5.0, 45.0, 10.0, 50.0)


@pytest.mark.parametrize(
    "kwargs, field, text",
    [
        ({"bbox": [10, 45, 5, 50]}, "bbox", "west (10) must be less than east (5)"),
        ({"bbox": [5, 50, 10, 45]}, "bbox", "south (50) must be less than north (45)"),
        ({"bbox": [5, 45, 190, 50]}, "bbox", "east=190 is out of range"),
        ({"bbox": [5, 45, 10]}, "bbox", "expected four numbers"),
        ({"bbox": ["a", 45, 10, 50]}, "bbox", "must be a number"),
        ({"start": "2024-13-01"}, "start", "cannot parse '2024-13-01'"),
        ({"end": "yesterday-ish"}, "end", "cannot parse"),
        ({"start": "2024-02-01", "end": "2024-01-01"}, "end", "is before start 2024-02-01"),
    ],
)
def test_bad_parameters_fail_clearly(cat, kwargs, field, text):
    with pytest.raises(ParameterError) as info:
        cat.ndvi_global_300m_10daily_v2(**kwargs)
    assert info.value.name == field and text in str(info.value)
    assert isinstance(info.value, ClmsError)


def test_service_outside_allowed_values_is_refused(cat):
    with pytest.raises(ParameterError, match="service: got 'sentinelhub'; expected one of auto, wekeo, clms, cdse"):
        cat.ndvi_global_300m_10daily_v2(service="sentinelhub")
    with pytest.raises(ParameterError, match="service: got 'ftp'"):
        ClmsSource("EO:JRC:DAT:CLMS", "x", service="ftp")


def test_unimplemented_service_raises_package_error():
    from intake_clms.services import connector

    with pytest.raises(ServiceNotImplementedError, match="not implemented yet"):
        connector("sentinelhub")


def test_auto_service_choice(monkeypatch, tmp_path):
    from intake_clms.services import choose_service

    assert choose_service("auto", "not_migrated", {"cdse", "clms"}) == "wekeo"
    assert choose_service("auto", "migrated", {"clms"}) == "clms"
    assert choose_service("auto", "new", {"wekeo", "clms"}) == "wekeo"
    assert choose_service("auto", "new", set()) == "wekeo"
    assert choose_service("clms", "new", {"wekeo"}) == "clms"
    # CDSE first for migrated products when its credentials are at hand
    assert choose_service("auto", "migrated", {"cdse", "wekeo"}) == "cdse"
    for var in ("HDA_USER", "HDA_PASSWORD", "CLMS_SERVICE_KEY", "CDSE_USERNAME", "CDSE_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HDA_RC", str(tmp_path / "absent"))
    monkeypatch.setenv("NETRC", str(tmp_path / "absent-netrc"))
    monkeypatch.setenv("CLMS_SERVICE_KEY", str(tmp_path / "key.json"))
    assert ClmsSource("EO:JRC:DAT:CLMS", "x", metadata={"migration_status": "migrated"}).service == "clms"
    monkeypatch.setenv("CDSE_USERNAME", "u")
    monkeypatch.setenv("CDSE_PASSWORD", "p")
    assert ClmsSource("EO:JRC:DAT:CLMS", "x", metadata={"migration_status": "migrated"}).service == "cdse"


def test_clms_api_parameters_are_canonical():
    a = ClmsSource("forest-type-2015", file="FTY_2015_100m_eu_03035_d02_Full", crs="epsg:3035", service="clms")
    b = ClmsSource("forest-type-2015", file=" FTY_2015_100m_eu_03035_d02_Full ", crs="3035", output_format="")
    assert a.request.crs == "EPSG:3035" and a.request.key() == b.request.key()
    assert a.request.canonical()["file"] == "FTY_2015_100m_eu_03035_d02_Full"
    assert "output_format" not in a.request.canonical()  # unset fields leave the cache keys of other entries unchanged
    assert ClmsSource("forest-type-2015", file="None").request.file is None  # intake renders an unset template so
    with pytest.raises(ParameterError) as info:
        ClmsSource("forest-type-2015", crs="UTM32")
    assert info.value.name == "crs" and "EPSG:4326" in str(info.value)


def test_dotted_driver_path(tmp_path):
    path = tmp_path / "dotted.yaml"
    path.write_text(textwrap.dedent("""
        metadata: {version: 1}
        sources:
          ndvi:
            description: NDVI by dotted driver path
            driver: intake_clms.source.ClmsSource
            args: {dataset_id: 'EO:JRC:DAT:CLMS', dataset_identifier: ndvi_global_300m_10daily_v1,
                   bbox: [0, 40, 10, 50], start: '2020-01-01', end: '2020-01-31'}
    """))
    src = intake.open_catalog(str(path)).ndvi
    assert isinstance(src, ClmsSource) and src.request.bbox == (0.0, 40.0, 10.0, 50.0)


def test_open_catalog_emits_no_warnings():
    """Every warning is an error here, except intake's getshell one that the package filters by exact message."""
    code = textwrap.dedent(f"""
        import intake
        cat = intake.open_catalog({str(CATALOG)!r})
        for name in cat:
            cat[name].describe()
        cat.ndvi_global_300m_10daily_v2(start="2024-01-01").describe()
        print(len(list(cat)))
    """)
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "152"


def test_only_the_getshell_warning_is_filtered():
    import warnings

    from intake_clms import filter_intake_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filter_intake_warnings()
        warnings.warn_explicit("Shell command not executed due to getshell=False", UserWarning,
                               "utils.py", 1, module="intake.catalog.utils")
        warnings.warn_explicit("Shell command not executed due to getshell=False and more", UserWarning,
                               "utils.py", 2, module="intake.catalog.utils")
        warnings.warn_explicit("Something else", UserWarning, "utils.py", 3, module="intake.catalog.utils")
    assert [str(w.message) for w in caught] == [
        "Shell command not executed due to getshell=False and more", "Something else"]


@pytest.mark.disable_socket
@pytest.mark.filterwarnings("ignore:Widget.name is deprecated:PendingDeprecationWarning")
def test_intake_gui_builds_and_shows_entries(cat):
    pytest.importorskip("panel")
    from intake.interface.gui import GUI

    gui = GUI(cats={"clms": cat})
    assert gui.catsel.options == ["clms"]
    gui.catsel.value = ["clms"]  # instantiates every entry, as a user's click does
    assert len(gui.sourcesel.options) == 151  # the products; the nested catalog goes to the catalog list
    assert [c.strip() for c in gui.catsel.options] == ["clms", "└─>clms_download_api"]
    gui.sourcesel.value = ["ndvi_global_300m_10daily_v1"]
    text = gui.sourceinf.value
    assert "driver: clms" in text or "clms" in text
    assert "ndvi_global_300m_10daily_v1" in text
