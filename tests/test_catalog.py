"""The catalog writer: drift against the committed catalog, determinism, entry shape."""

from __future__ import annotations

import keyword
import random

import yaml
from workbooks import CATALOG, TABLE, write_workbook

from intake_clms.catalog.generate import API_CATALOG_NAME, build_catalog, dump_catalog
from intake_clms.catalog.products import MIGRATION_STATUSES, entry_name
from intake_clms.catalog.table import read_sheets, read_transition_table


def generate(path=TABLE) -> str:
    return dump_catalog(build_catalog(read_transition_table(path), source="clms_transition_table.xlsx"))


def test_committed_catalog_has_not_drifted():
    """catalogs/clms.yaml must be exactly what the generator makes from the bundled table (run `make catalog`)."""
    assert CATALOG.read_text(encoding="utf-8") == generate()


def test_output_is_deterministic_whatever_the_row_order(tmp_path):
    sheets = read_sheets(TABLE)
    rows = {}
    for kind, header_row in (("current", 2), ("new", 2)):
        import openpyxl

        ws = openpyxl.load_workbook(TABLE)[sheets[kind].name]
        values = [list(r) for r in ws.iter_rows(values_only=True)]
        body = values[header_row + 1 :]
        random.Random(7).shuffle(body)
        rows[sheets[kind].name] = values[: header_row + 1] + body
    shuffled = write_workbook(tmp_path / "shuffled.xlsx", {"New": rows["New"], "Current": rows["Current"]})
    assert generate(shuffled) == generate()
    assert "20" not in yaml.safe_load(generate())["metadata"].get("generated_at", "")  # no timestamps


def test_entries_are_complete_and_named_for_tab_completion():
    catalog = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    assert catalog["metadata"]["version"] == 1
    sources = catalog["sources"]
    assert list(sources) == sorted(sources)
    assert all(name.isidentifier() and not keyword.iskeyword(name) for name in sources)
    nested = sources.pop(API_CATALOG_NAME)  # the one entry that is not a product: the CLMS API's datasets
    assert nested["driver"] == "clms_api" and nested["description"] and "parameters" not in nested
    assert len(sources) == 151
    for name, spec in sources.items():
        md = spec["metadata"]
        assert name == entry_name(md["identifier"])
        assert spec["driver"] == ("clms_vector" if md["is_vector"] else "clms")  # vector: a GeoDataFrame
        assert md["migration_status"] in MIGRATION_STATUSES
        for key in ("identifier", "old_ids", "product_type", "spatial_coverage", "resolution", "frequency",
                    "old_source_active", "migration_status", "time_start", "time_end"):
            assert key in md, (name, key)
        assert set(spec["parameters"]) >= {"bbox", "start", "end", "service"}
        assert all(p.get("description") for p in spec["parameters"].values()), name
        # no intake-side `allowed` / list coercion: the driver validates, with errors naming the choices
        service = spec["parameters"]["service"]
        assert "allowed" not in service and all(s in service["description"] for s in ("wekeo", "clms", "cdse"))
        assert spec["parameters"]["bbox"]["type"] == "str" and len(spec["parameters"]["bbox"]["default"]) == 4
    ndvi = sources["ndvi_global_300m_10daily_v1"]
    assert ndvi["parameters"]["start"]["default"] == "2014-01-01"
    assert ndvi["parameters"]["end"]["default"] == "2020-12-31"
    assert "300 m" in ndvi["description"] and "10-daily" in ndvi["description"] and "Global" in ndvi["description"]
    assert ndvi["metadata"]["old_ids"] == ["EO:CLMS:DAT:CLMS_GLOBAL_NDVI_300M_V1_10DAILY_NETCDF"]
    assert sources["ndvi_global_300m_10daily_v2"]["parameters"]["end"]["default"] == "present"
    corine = sources["eo_eea_dat_corine"]
    assert corine["args"]["dataset_id"] == "EO:EEA:DAT:CORINE" and corine["args"]["dataset_identifier"] is None
    assert "Not migrated yet" in corine["description"]
    europe = sources["clms_vlcc_grassland_europe_10m_yearly_v1"]["parameters"]["bbox"]["default"]
    assert europe[0] < 0 < europe[2] and 25 < europe[1] < europe[3] < 75


def test_entry_names():
    assert entry_name("lst-tci_global_5km_10daily_v1") == "lst_tci_global_5km_10daily_v1"
    assert entry_name("swi_global_12.5km_10daily_v3") == "swi_global_12_5km_10daily_v3"
    assert entry_name("EO:EEA:DAT:HRL:GRA") == "eo_eea_dat_hrl_gra"
    assert entry_name("3d_thing") == "ds_3d_thing"
    assert entry_name("class") == "ds_class"


def test_name_clash_gets_a_stable_suffix(tmp_path):
    from intake_clms.catalog.products import Product

    a, b = Product("x-y_v1", "EO:JRC:DAT:CLMS", "x-y_v1"), Product("x_y_v1", "EO:JRC:DAT:CLMS", "x_y_v1")
    names1 = list(build_catalog([a, b], clms_api=False)["sources"])
    names2 = list(build_catalog([b, a], clms_api=False)["sources"])
    assert names1 == names2 and len(set(names1)) == 2 and "x_y_v1" in names1
    with_api = build_catalog([a, b])["sources"]
    assert list(with_api) == sorted([*names1, API_CATALOG_NAME]) and with_api[API_CATALOG_NAME]["driver"] == "clms_api"
    clash = Product("clms-download-api", "EO:JRC:DAT:CLMS", "clms-download-api")  # a product of the same name
    named = build_catalog([clash])["sources"]
    assert named[API_CATALOG_NAME]["driver"] == "clms" and named[API_CATALOG_NAME + "_catalog"]["driver"] == "clms_api"
