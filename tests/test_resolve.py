"""Old and new IDs resolve to entry names."""

from __future__ import annotations

import pytest

import intake_clms
from intake_clms.errors import ClmsError, UnknownIdentifierError


def test_old_id_resolves_to_its_replacement():
    assert intake_clms.resolve("EO:CLMS:DAT:CLMS_GLOBAL_NDVI_300M_V1_10DAILY_NETCDF") == ["ndvi_global_300m_10daily_v1"]


def test_one_old_id_to_several_entries():
    names = intake_clms.resolve("EO:EEA:DAT:HRL:GRA")
    assert len(names) == 6 and "clms_vlcc_grassland_europe_10m_yearly_v1" in names and names == sorted(names)


def test_not_migrated_old_id_resolves_to_itself():
    assert intake_clms.resolve("EO:EEA:DAT:CORINE") == ["eo_eea_dat_corine"]


def test_new_identifier_and_entry_name_and_spelling():
    assert intake_clms.resolve("lst-tci_global_5km_10daily_v1") == ["lst_tci_global_5km_10daily_v1"]
    assert intake_clms.resolve("lst_tci_global_5km_10daily_v1") == ["lst_tci_global_5km_10daily_v1"]
    assert intake_clms.resolve("  eo:clms:dat:clms_global_ndvi_300m_v1_10daily_netcdf ") == ["ndvi_global_300m_10daily_v1"]


def test_shared_new_dataset_id_and_unknown_ids_fail_clearly():
    with pytest.raises(UnknownIdentifierError, match="datasetIdentifier"):
        intake_clms.resolve("EO:JRC:DAT:CLMS")
    with pytest.raises(ClmsError, match="'EO:FOO:DAT:BAR' is not in the catalog"):
        intake_clms.resolve("EO:FOO:DAT:BAR")


def test_resolve_against_another_catalog(tmp_path):
    from workbooks import write_workbook

    from intake_clms.catalog.generate import build_catalog, write_catalog
    from intake_clms.catalog.table import read_transition_table

    from workbooks import CURRENT_HEADERS, NEW_HEADERS

    table = write_workbook(tmp_path / "t.xlsx", {
        "Current": [CURRENT_HEADERS, ["EO:X:DAT:OLD", None, "EO:JRC:DAT:CLMS", "thing_v2", None, None, None, None,
                                      None, "No", None]],
        "New": [NEW_HEADERS],
    })
    path = write_catalog(build_catalog(read_transition_table(table)), tmp_path / "c.yaml")
    assert intake_clms.resolve("EO:X:DAT:OLD", path) == ["thing_v2"]
