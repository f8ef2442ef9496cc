"""The ``preload`` command, wired into a throw-away parser (the lead wires it into intake_clms/cli.py)."""

from __future__ import annotations

import argparse

from intake_clms.cli.preload import add_preload_parser, source_for

from .lifecycle_helpers import view_of


def test_preload_command_fills_the_cache(hda_env, tmp_path):
    parser = argparse.ArgumentParser()
    add_preload_parser(parser.add_subparsers(dest="command"))
    cache = tmp_path / "cli-cache"
    args = parser.parse_args(
        ["preload", "ndvi_global_300m_10daily_v2", "--bbox", "5,45,10,50", "--start", "2024-01-01",
         "--end", "2024-01-05", "--service", "wekeo", "--cache-dir", str(cache), "-q"]
    )
    assert args.func(args) == 0
    src = source_for(args.entry, args)
    assert view_of(src, cache) is not None
    assert hda_env.log.count("hda", "order") == 1


def test_preload_of_a_wekeo_product_needs_an_area_and_dates(hda_env, tmp_path):
    parser = argparse.ArgumentParser()
    add_preload_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["preload", "ndvi_global_300m_10daily_v2", "--service", "wekeo", "-q",
                              "--cache-dir", str(tmp_path / "c")])
    import pytest

    from intake_clms.errors import ClmsError

    with pytest.raises(ClmsError, match="--bbox, --start and --end are required"):
        args.func(args)
    assert hda_env.log.count("hda") == 0
    assert not (tmp_path / "c").exists()


def test_unknown_entry_suggests_the_clms_service(tmp_path):
    parser = argparse.ArgumentParser()
    add_preload_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["preload", "forest-type-2015", "--file", "FTY_2015_100m_eu_03035_d02_Full", "-q"])
    import pytest

    from intake_clms.errors import ClmsError

    with pytest.raises(ClmsError, match="--service clms"):
        source_for(args.entry, args)
