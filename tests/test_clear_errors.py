"""Issue 11, safe defaults and clear errors: typos, coverage, garbled values and unknown entries fail at once,
offline, with the field and what it accepts."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import intake
import numpy as np
import pytest
from workbooks import CATALOG

import intake_clms
from intake_clms.errors import ClmsError, ParameterError, UnknownEntryError
from intake_clms.params import ENGINE_OPTIONS, Request, check_coverage
from intake_clms.source import ClmsSource

ROOT = Path(__file__).resolve().parents[1]
NDVI = "ndvi_global_300m_10daily_v2"  # global, 2020-present
NDVI_V1 = "ndvi_global_300m_10daily_v1"  # global, 2014-2020
GRASS = "clms_vlcc_grassland_europe_10m_yearly_v1"  # Europe, 2017-present


@pytest.fixture(scope="module")
def cat():
    return intake_clms.open_catalog(CATALOG)


# --------------------------------------------------------------------------- keywords


@pytest.mark.parametrize("typo, meant", [("bbx", "bbox"), ("wrokers", "workers"), ("poll_deadlin", "poll_deadline")])
def test_a_mistyped_keyword_is_refused_with_the_keyword_meant(cat, typo, meant):
    with pytest.raises(ParameterError) as info:
        getattr(cat, NDVI)(**{typo: 3})
    err = info.value
    assert err.name == typo and f"did you mean {meant!r}" in str(err)
    assert "valid keywords:" in str(err) and "workers" in str(err) and "bbox" in str(err)
    with pytest.raises(ParameterError, match=typo):
        ClmsSource("EO:JRC:DAT:CLMS", "x", **{typo: 3})


def test_every_option_the_engine_and_backends_read_is_accepted(cat):
    """The one list (params.ENGINE_OPTIONS) holds every key the reader and the backends read from the settings."""
    read: set[str] = set()
    for path in [ROOT / "intake_clms/engine/preload.py", *sorted((ROOT / "intake_clms/services").rglob("*.py"))]:
        text = path.read_text()
        read |= set(re.findall(r"\bs(?:ettings)?\.get\(\"(\w+)\"", text))
        read |= set(re.findall(r"\"(\w+)\"", "".join(re.findall(r"_OPTION_NAMES = \{[^}]*\}|_POLL_NAMES = \{[^}]*\}", text))))
    read -= {"first", "factor", "cap", "deadline"}  # PollPolicy's own field names, the values of _POLL_NAMES
    assert {"workers", "chunk", "poll_deadline", "attempts", "username", "service_key", "files_rate"} <= read
    assert read <= ENGINE_OPTIONS, read - ENGINE_OPTIONS
    src = getattr(cat, NDVI)(bbox=[5, 45, 10, 50], service="wekeo",  # a login names its service
                             **{k: 1 for k in ENGINE_OPTIONS - {"cache_dir"}})
    assert src.options["max_products"] == 1 and src.options["access"] == 1
    with pytest.raises(ParameterError, match="username: a login belongs to one service"):  # auto refuses it
        getattr(cat, NDVI)(bbox=[5, 45, 10, 50], **{k: 1 for k in ENGINE_OPTIONS - {"cache_dir"}})


def test_service_outside_the_choices_is_our_error_through_the_catalog(cat):
    with pytest.raises(ParameterError) as info:
        getattr(cat, NDVI)(service="nonsense")
    assert info.value.name == "service"
    assert "got 'nonsense'; expected one of auto, wekeo, clms, cdse" in str(info.value)
    plain = intake.open_catalog(str(CATALOG))  # however the catalog was opened
    with pytest.raises(ParameterError, match="expected one of auto, wekeo, clms, cdse"):
        getattr(plain, NDVI)(service="nonsense")


# --------------------------------------------------------------------------- unknown entries


def test_an_unknown_entry_names_the_close_ones(cat):
    with pytest.raises(UnknownEntryError) as info:
        cat.ndvi_global_300m_10dayly_v2
    err = info.value
    assert isinstance(err, ClmsError) and isinstance(err, AttributeError) and isinstance(err, KeyError)
    assert "no entry 'ndvi_global_300m_10dayly_v2'" in str(err) and "did you mean ndvi_global_300m_10daily_v2" in str(err)
    with pytest.raises(UnknownEntryError, match="did you mean"):
        cat["ndvi_global_300m_10daily_v9"]
    assert not hasattr(cat, "nonexistent") and getattr(cat, "nonexistent", 7) == 7
    assert NDVI in cat and getattr(cat, NDVI).request.dataset_identifier == NDVI  # known entries unchanged


def test_plain_intake_open_catalog_gives_the_same_helpful_error(tmp_path: Path):
    """Issue 17: ``intake.open_catalog(path)`` on a generated catalog, in a fresh interpreter where nothing of
    intake_clms was imported, answered a typo with intake's bare AttributeError; other catalogs keep intake's."""
    other = tmp_path / "other.yaml"
    other.write_text("metadata: {version: 1}\nsources:\n  thing: {driver: csv, args: {urlpath: x.csv}}\n")
    code = textwrap.dedent(f"""
        import intake
        cat = intake.open_catalog({str(CATALOG)!r})
        for probe in (lambda: cat.ndvi_global_300m_10dayly_v2, lambda: cat["ndvi_global_300m_10daily_v9"]):
            try:
                probe()
            except Exception as exc:
                print(type(exc).__name__, isinstance(exc, AttributeError), isinstance(exc, KeyError), exc)
        print(len(list(cat)), type(cat).__name__, hasattr(cat, "nope"), getattr(cat, "nope", 7))
        print(cat.{NDVI}(bbox=[5, 45, 10, 50]).request.dataset_identifier)
        try:
            intake.open_catalog({str(other)!r}).thinG
        except AttributeError as exc:
            print(type(exc).__name__, exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith("UnknownEntryError True True catalog clms has no entry 'ndvi_global_300m_10dayly_v2'; "
                             "did you mean ndvi_global_300m_10daily_v2")
    assert out[1].startswith("UnknownEntryError True True") and "did you mean" in out[1]
    assert out[2:] == ["152 YAMLFileCatalog False 7", NDVI, "AttributeError thinG"]


def test_the_generated_catalog_asks_plain_intake_for_the_clms_cat_lookups():
    from intake_clms.catalog.generate import build_catalog
    from intake_clms.catalog.lookup import DRIVER_KEY

    built = build_catalog([])
    assert built["metadata"][DRIVER_KEY] == "clms_cat"
    assert built["plugins"] == {"source": [{"module": "intake_clms.catalog.lookup"}]}


def test_the_clms_cat_driver_is_registered():
    assert type(intake.open_catalog(str(CATALOG), driver="clms_cat")).__name__ == "ClmsCatalog"
    assert len(list(intake_clms.open_catalog())) == 152  # the bundled catalog by default


# --------------------------------------------------------------------------- coverage


@pytest.mark.parametrize(
    "entry, kwargs, field, text",
    [
        (GRASS, {"bbox": [-170, -50, -160, -40]}, "bbox", "outside the product's coverage (Europe [-31.3, 27.6, 44.9, 71.2])"),
        (NDVI, {"start": "2015-01-01", "end": "2016-01-01"}, "end", "before the product's time coverage (2020-01-01 to present)"),
        (NDVI_V1, {"start": "2021-01-01", "end": "2021-02-01"}, "start", "after the product's time coverage (2014-01-01 to 2020-12-31)"),
        (NDVI, {"start": "2999-01-01", "end": "2999-02-01"}, "start", "is in the future (time coverage: 2020-01-01 to present)"),
    ],
)
def test_requests_outside_the_coverage_fail_before_any_network_call(cat, entry, kwargs, field, text, socket_disabled):
    with pytest.raises(ParameterError) as info:
        getattr(cat, entry)(**kwargs)
    assert info.value.name == field and text in str(info.value)


def test_overlapping_and_open_ended_requests_pass(cat):
    assert getattr(cat, GRASS)(bbox=[40, 60, 60, 80]).request.bbox == (40.0, 60.0, 60.0, 80.0)  # partly inside
    src = getattr(cat, NDVI)(start="2024-01-01", end="2999-12-31")  # an open end: anything after the start is fine
    assert src.request.end == dt.date(2999, 12, 31)
    md = {"time_start": "2020-01-01", "time_end": None, "time_ongoing": True, "coverage_bbox": [-10, 30, 40, 70]}
    req = Request.build("x", bbox=[0, 40, 10, 50], start="2025-06-01", end="2025-06-30")
    check_coverage(req, md, today=dt.date(2025, 6, 1))
    with pytest.raises(ParameterError, match="in the future"):
        check_coverage(req, md, today=dt.date(2025, 5, 31))
    packaged = Request.build("forest-type-2015", bbox=[100, 0, 110, 10], file="FTY_2015_100m_eu_03035_d02_Full")
    check_coverage(packaged, md)  # a pre-packaged file ignores area and dates


# --------------------------------------------------------------------------- garbled values


@pytest.mark.parametrize(
    "bbox, text",
    [
        ([float("nan"), 45, 10, 50], "west is nan in '[nan, 45, 10, 50]': every value must be a finite number"),
        ([5, 45, float("inf"), 50], "east is inf"),
        ("hello", "got 'hello'; expected four numbers [west, south, east, north]"),
        ("5 45 10", "got '5 45 10'; expected four numbers"),
        ("5,45,ten,50", "east='ten'"),
    ],
)
def test_bad_bboxes_read_cleanly(cat, bbox, text):
    with pytest.raises(ParameterError) as info:
        getattr(cat, NDVI)(bbox=bbox)
    message = str(info.value)
    assert info.value.name == "bbox" and text in message
    assert "'h', 'e'" not in message and "'[', 'n'" not in message  # never the value split into characters


def test_bbox_spellings_that_work(cat):
    for bbox in ([5, 45, 10, 50], (5, 45, 10, 50), "5,45,10,50", "[5, 45, 10, 50]", "5 45 10 50", np.array([5, 45, 10, 50.0])):
        assert getattr(cat, NDVI)(bbox=bbox).request.bbox == (5.0, 45.0, 10.0, 50.0), bbox


# --------------------------------------------------------------------------- lazy imports


def test_opening_the_catalog_and_creating_a_source_import_no_table_reader():
    code = textwrap.dedent(f"""
        import sys, intake
        cat = intake.open_catalog({str(CATALOG)!r})
        src = cat.{NDVI}(bbox=[5, 45, 10, 50], start="2024-01-01", end="2024-01-31")
        src.describe()
        print(sorted(m for m in ("pandas", "openpyxl") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    code = "import intake_clms, sys; intake_clms.read_transition_table; print('openpyxl' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "True"
