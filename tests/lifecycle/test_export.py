"""Issue 11, curated project catalogs: ``intake-clms export`` writes a plain intake catalog of cached
requests (netcdf or zarr entries holding each request's Dataset, paths relative to the catalog, the original
description and metadata, provenance with checksums) that opens with intake + intake-xarray alone, offline,
to what ``to_dask()`` gives (issue 14: the same values, crop, names, dims, coords and CRS).

The cache is filled through the bundled catalog against a sandbox that is stopped before any export,
so an export or a read that reached the network would fail.  The slow test builds a virtual
environment with only intake, intake-xarray, jinja2 and the file readers from the registry (cached
between runs under the system temp folder) and opens every exported entry there in a subprocess
whose sockets refuse to connect, comparing its values with what ``to_dask()`` gives here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from intake_clms import cli
from intake_clms.errors import ClmsError
from intake_clms.export import export_catalog
from intake_clms.catalog.resolve import load_sources
from intake_clms.store import Store

from .preloaded import HRL, HRL_BBOX, NDVI, Preloaded, plain_venv, preload

REQUESTS = {
    "ndvi_alps": (NDVI, {"bbox": [6, 46, 8, 48], "start": "2024-01-01", "end": "2024-01-31"}),  # inside the data
    "ndvi_iberia": (NDVI, {"bbox": [8, 46, 9, 47], "start": "2024-01-01", "end": "2024-01-05"}),  # shares a product
    "hrl_2018": (HRL, {"bbox": HRL_BBOX, "start": "2018-01-01", "end": "2018-12-31"}),
    "hrl_all": (HRL, {"bbox": HRL_BBOX, "start": "2012-01-01", "end": "2020-12-31"}),  # three dates
}


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Preloaded]:
    yield from preload(tmp_path_factory.mktemp("export"), REQUESTS)


def _catalog(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _name_of(sources: dict, key: str) -> str:
    (name,) = [n for n, s in sources.items() if s["metadata"]["provenance"]["request_key"] == key]
    return name


# --------------------------------------------------------------------------- the catalog and its files


def test_export_writes_one_plain_entry_per_request_with_provenance(cached, tmp_path):
    out = tmp_path / "shared"
    path = export_catalog(out, cache_dir=cached.cache)
    assert path == out / "catalog.yaml"
    doc = _catalog(path)
    sources = doc["sources"]
    assert doc["metadata"]["version"] == 1 and len(sources) == len(REQUESTS)
    names = {label: _name_of(sources, key) for label, key in cached.keys.items()}
    listed = set()
    # one entry keeps its entry's name; two requests of one entry get the request key as suffix
    assert names["ndvi_alps"] == f"{NDVI}_{cached.keys['ndvi_alps'][:8]}"
    assert names["hrl_all"].startswith(f"{HRL}_") and len(set(names.values())) == 4
    bundled = load_sources()
    for label, name in names.items():
        spec = sources[name]
        entry = cached.requests[label]["entry"]
        assert spec["driver"] == "netcdf"  # the request's Dataset, whatever the products' format
        assert spec["description"].startswith(bundled[entry]["description"])  # the original description
        assert "parameters" not in spec and "clms" not in json.dumps(spec["args"])
        md = spec["metadata"]
        assert md["dataset_id"] == bundled[entry]["metadata"]["dataset_id"]
        assert md["bbox"] == [float(v) for v in cached.requests[label]["bbox"]]
        prov = md["provenance"]
        assert prov["entry"] == entry and prov["service"] == "wekeo" and prov["request_key"] == cached.keys[label]
        assert prov["request"]["start"] == cached.requests[label]["start"]
        when = dt.datetime.fromisoformat(prov["exported"])
        assert when.tzinfo is not None and abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds()) < 600
        store = Store(cached.cache)
        view = store.views.get(cached.keys[label])
        assert [p["name"] for p in prov["products"]] == [vp.name for vp in view.products]
        url = spec["args"]["urlpath"]
        assert url == f"{{{{ CATALOG_DIR }}}}/data/{name}.nc", "one file per request, relative to the catalog"
        listed.add(f"data/{name}.nc")
        for product, rec in zip(prov["products"], (store.products.check(vp.key) for vp in view.products)):
            # the source products' files, as the cache recorded them (sizes and sha256 of what was downloaded)
            assert product["files"] == [{"path": f.path, "size": f.size, "sha256": f.hashes["sha256"], "role": f.role}
                                        for f in rec.files]
    # SHA256SUMS checks every written file, as `sha256sum -c` would
    sums = [line.split("  ", 1) for line in (out / "SHA256SUMS").read_text().splitlines()]
    assert {p for _, p in sums} == listed and all(_sha256(out / p) == h for h, p in sums)
    assert sorted(p.name for p in (out / "data").iterdir()) == sorted(f"{n}.nc" for n in names.values())


def test_a_netcdf_export_holds_the_crop_not_the_whole_products(cached, tmp_path):
    """Issue 14: an export used to link the whole products (the global grid where the author had the bbox)."""
    store = Store(cached.cache)
    view = store.views.get(cached.keys["ndvi_alps"])
    rec = store.products.check(view.products[0].key)
    original = store.products.path(rec.key) / rec.data()[0].path
    path = export_catalog(tmp_path / "one", [NDVI], cache_dir=cached.cache, requests=[cached.keys["ndvi_alps"][:8]])
    (spec,) = _catalog(path)["sources"].values()
    exported = Path(spec["args"]["urlpath"].replace("{{ CATALOG_DIR }}", str(path.parent)))
    ours = cached.datasets["ndvi_alps"]
    with xr.open_dataset(exported) as got, xr.open_dataset(original) as whole:
        assert dict(got.sizes) == dict(ours.sizes) and list(got.data_vars) == list(ours.data_vars)
        assert got.sizes["lat"] < whole.sizes["lat"] and got.sizes["lon"] < whole.sizes["lon"]
        np.testing.assert_array_equal(got["NDVI"].values, ours["NDVI"].values)
        assert got["NDVI"].encoding["dtype"] == np.uint8  # written packed: the stored integers and their scale
    assert exported.stat().st_size < original.stat().st_size
    assert not (tmp_path / "one" / "data" / "products").exists()  # no product file copied or linked


def test_named_entries_only_and_ids_resolve(cached, tmp_path):
    path = export_catalog(tmp_path / "one", ["EO:CLMS:DAT:CLMS_GLOBAL_NDVI_300M_V2_10DAILY_NETCDF"],
                          cache_dir=cached.cache)  # an old WEkEO ID of the NDVI entry
    sources = _catalog(path)["sources"]
    assert {s["metadata"]["provenance"]["entry"] for s in sources.values()} == {NDVI} and len(sources) == 2
    assert not (tmp_path / "one" / "data" / "mosaics").exists()


def test_export_refuses_what_it_cannot_do_with_one_line_and_exit_2(cached, tmp_path, capsys):
    with pytest.raises(ClmsError, match=r"no cached request of 'corine_land_cover_2018'.*eo_eea_dat_hrl_imp"):
        export_catalog(tmp_path / "x", ["corine_land_cover_2018"], cache_dir=cached.cache)
    with pytest.raises(ClmsError, match="holds no request to export"):
        export_catalog(tmp_path / "x", cache_dir=tmp_path / "empty-cache")
    assert not (tmp_path / "x" / "catalog.yaml").exists()

    base = ["export", "--cache-dir", str(cached.cache), "--to", str(tmp_path / "cli")]
    assert cli.main(base + [HRL]) == 0
    out = capsys.readouterr()
    assert out.out.count("\tnetcdf\t") == 2 and "wrote 2 entries" in out.err
    assert cli.main(base + [HRL]) == 2  # a catalog is there: not replaced unless asked
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a catalog.yaml" in err and "--force" in err
    assert cli.main(base + ["--force", NDVI]) == 0
    assert "wrote 2 entries" in capsys.readouterr().err
    assert cli.main(base + ["--force", "nonsense_entry"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("intake-clms export: error: no cached request of 'nonsense_entry'") and "Traceback" not in err
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert cli.main(["export", "--cache-dir", str(cached.cache), "--to", str(blocker / "sub")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_zarr_export_holds_what_to_dask_gives(cached, tmp_path):
    path = export_catalog(tmp_path / "z", zarr=True, cache_dir=cached.cache)
    sources = _catalog(path)["sources"]
    assert {s["driver"] for s in sources.values()} == {"zarr"}
    for label, key in cached.keys.items():
        spec = sources[_name_of(sources, key)]
        args = dict(spec["args"])
        store = Path(args.pop("urlpath").replace("{{ CATALOG_DIR }}", str(path.parent)))
        got = xr.open_zarr(store, **args)
        ours = cached.datasets[label]
        assert list(got.data_vars) == list(ours.data_vars)
        for name in ours.data_vars:
            np.testing.assert_array_equal(got[name].values, ours[name].values, err_msg=f"{label} {name}")
            assert got[name].dtype == ours[name].dtype and got[name].dims == ours[name].dims
        for dim in ours.dims:
            np.testing.assert_array_equal(got[dim].values, ours[dim].values)
        assert got.rio.crs == ours.rio.crs  # the CF grid mapping, as rioxarray reads it


# --------------------------------------------------------------------------- opened without intake-clms


CHILD = textwrap.dedent('''
    """Open every entry of an exported catalog with intake alone, no network; dump the values."""
    import importlib.util, json, socket, sys
    import numpy as np

    def refuse(self, *args, **kwargs):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError("network used while opening an exported catalog")
        return real(self, *args, **kwargs)
    real = socket.socket.connect
    socket.socket.connect = refuse
    assert importlib.util.find_spec("intake_clms") is None, "intake-clms is installed here"

    import intake
    cat = intake.open_catalog(sys.argv[1])
    arrays, info = {}, {}
    for name in cat:
        ds = cat[name].to_dask()
        info[name] = {"vars": {}, "lazy": all(v.chunks is not None for v in ds.data_vars.values() if v.ndim >= 2),
                      "crs_wkt": ds["spatial_ref"].attrs.get("crs_wkt") if "spatial_ref" in ds.variables else None}
        for var, da in ds.data_vars.items():
            if da.ndim < 2:
                continue
            arrays[f"{name}/{var}"] = da.values
            info[name]["vars"][var] = {"dims": list(da.dims), "dtype": str(da.dtype)}
            for dim in da.dims:
                arrays[f"{name}/{var}/{dim}"] = ds[dim].values
    np.savez(sys.argv[2], **arrays)
    print(json.dumps(info))
''')


def _open_in_plain_venv(venv: Path, catalog: Path, tmp_path: Path) -> tuple[dict, dict]:
    script = tmp_path / "open_exported.py"
    script.write_text(CHILD)
    dump = tmp_path / f"{catalog.parent.name}.npz"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}  # no credentials, no cache setting
    run = subprocess.run([str(venv / "bin" / "python"), str(script), str(catalog), str(dump)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    with np.load(dump) as npz:
        arrays = dict(npz)
    return json.loads(run.stdout.strip().splitlines()[-1]), arrays


def _as_dataarray(arrays: dict, key: str, dims: list[str]) -> xr.DataArray:
    return xr.DataArray(arrays[key], dims=dims, coords={d: arrays[f"{key}/{d}"] for d in dims})


@pytest.mark.slow
def test_the_export_opens_with_intake_and_intake_xarray_alone(cached, tmp_path):
    venv = plain_venv()
    files = export_catalog(tmp_path / "files", cache_dir=cached.cache)
    zarrs = export_catalog(tmp_path / "zarr", cache_dir=cached.cache, zarr=True)
    # the folders move: paths are relative to the catalog
    moved = tmp_path / "elsewhere"
    shutil.move(str(tmp_path / "files"), str(moved))
    files = moved / "catalog.yaml"
    for catalog in (files, zarrs):
        sources = _catalog(catalog)["sources"]
        info, arrays = _open_in_plain_venv(venv, catalog, tmp_path)
        assert set(info) == set(sources)
        for label, key in cached.keys.items():
            name = _name_of(sources, key)
            assert info[name]["lazy"], f"{name} opens lazily (dask)"
            ours = cached.datasets[label]
            assert set(info[name]["vars"]) == {v for v in ours.data_vars if ours[v].ndim >= 2}  # the same names
            assert info[name]["crs_wkt"] == ours["spatial_ref"].attrs["crs_wkt"]  # the same CRS
            for var in (v for v in ours.data_vars if ours[v].ndim >= 2):
                mine = ours[var]
                meta = info[name]["vars"][var]
                got = _as_dataarray(arrays, f"{name}/{var}", meta["dims"])
                assert got.dims == mine.dims and str(got.dtype) == str(mine.dtype), (name, got.dims, got.dtype)
                for dim in mine.dims:  # the same crop and time steps: coordinates equal, nothing to select
                    np.testing.assert_array_equal(got[dim].values, mine[dim].values, err_msg=f"{name}.{dim}")
                np.testing.assert_array_equal(got.values, mine.values, err_msg=f"{catalog.parent.name}: {name}.{var}")
