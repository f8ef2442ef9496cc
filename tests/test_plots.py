"""metadata.plots of the generated catalog, and fitting a plot spec to the data actually read."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from intake_clms.plots import MAX_PIXELS, fit_raster, look_for, plots_for

CATALOG = Path(__file__).resolve().parents[1] / "catalogs" / "clms.yaml"


@pytest.fixture(scope="module")
def sources() -> dict:
    return yaml.safe_load(CATALOG.read_text())["sources"]


def _product_entries(sources: dict) -> dict:
    return {name: spec for name, spec in sources.items() if spec["driver"] in ("clms", "clms_vector")}


def test_every_raster_entry_has_an_image_plot_with_a_time_slider(sources: dict) -> None:
    rasters = {n: s for n, s in _product_entries(sources).items() if not s["metadata"]["is_vector"]}
    assert len(rasters) > 140
    for name, spec in rasters.items():
        plots = spec["metadata"].get("plots")
        assert plots and set(plots) == {"map"}, name
        plot = plots["map"]
        assert plot["kind"] == "image" and plot["groupby"] == "time" and plot["cmap"], (name, plot)
        if plot.get("clim") is not None:
            low, high = plot["clim"]
            assert low < high, (name, plot)


def test_vector_entries_have_a_points_plot(sources: dict) -> None:
    vectors = {n: s for n, s in _product_entries(sources).items() if s["metadata"]["is_vector"]}
    assert "wl_lakes_global_vector_daily_v2" in vectors and "eo_eea_dat_eu_hydro" in vectors and len(vectors) == 10
    for name, spec in vectors.items():
        plot = spec["metadata"]["plots"]["map"]
        assert plot["kind"] == "points" and (plot["x"], plot["y"]) == ("lon", "lat"), name


@pytest.mark.parametrize("name, z, cmap, clim", [
    ("ndvi_global_300m_10daily_v2", "NDVI", "RdYlGn", [0.0, 1.0]),
    ("lai_global_300m_10daily_v1", "LAI", "YlGn", [0.0, 7.0]),
    ("fapar_global_300m_10daily_v1", "FAPAR", "YlGn", [0.0, 1.0]),
    ("fcover_global_1km_10daily_v2", "FCOVER", "YlGn", [0.0, 1.0]),
    ("wb_global_300m_monthly_v2", "WB", "Blues", [0.0, 70.0]),
    ("lst_tci_global_5km_10daily_v2", "TCI", "RdYlBu_r", [0.0, 100.0]),  # not LST's kelvin limits
    ("eo_clms_dat_clms_global_lai_1km_v1_10daily_netcdf", "LAI", "YlGn", [0.0, 7.0]),  # an old ID
    # GeoTIFF products: no z (their variable is named from the files; the plot takes the data's one variable)
    ("eo_eea_dat_hrl_imp", None, "Reds", [0.0, 100.0]),  # imperviousness
    ("clms_vlcc_tree_cover_density_europe_10m_yearly_v1", None, "Greens", [0.0, 100.0]),
])
def test_families_get_their_variable_colour_map_and_valid_range(sources: dict, name, z, cmap, clim) -> None:
    plot = sources[name]["metadata"]["plots"]["map"]
    assert (plot.get("z"), plot["cmap"], plot.get("clim")) == (z, cmap, clim)


def test_no_plot_names_band_data() -> None:
    """Issue 14: no variable is called band_data any more; a spec naming it would plot nothing."""
    assert "band_data" not in CATALOG.read_text()


def test_unknown_family_falls_back_to_the_data_range() -> None:
    look = look_for({"identifier": "xyz_global_1km_daily_v1", "dataset_identifier": "xyz_global_1km_daily_v1",
                     "spatial_coverage": "Global"})
    assert (look.variable, look.cmap, look.clim) == (None, "viridis", None)
    spec = plots_for({"identifier": "xyz", "frequency": "static"})["map"]
    assert "groupby" not in spec and "clim" not in spec


def test_plot_specs_stay_one_line_each_in_the_yaml() -> None:
    text = CATALOG.read_text()
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "plots:"]
    assert len(starts) == 151
    for i in starts:  # "plots:" then exactly one "map: {...}" line
        assert lines[i + 1].strip().startswith("map: {") and lines[i + 1].rstrip().endswith("}")
        if i + 2 < len(lines):  # the next line is no continuation of the spec
            assert len(lines[i + 2]) - len(lines[i + 2].lstrip()) <= len(lines[i]) - len(lines[i].lstrip())


def _netcdf_like(nt: int = 2, ny: int = 30, nx: int = 40) -> xr.Dataset:
    time = pd.date_range("2024-01-01", periods=nt, freq="10D")
    data = np.linspace(0, 1, nt * ny * nx).reshape(nt, ny, nx)
    return xr.Dataset({"NDVI": (("time", "lat", "lon"), data), "crs": ((), 0)},
                      coords={"time": time, "lat": np.linspace(50, 45, ny), "lon": np.linspace(5, 10, nx)})


def test_fit_raster_uses_the_data_when_the_spec_guess_is_wrong() -> None:
    spec = {"kind": "image", "z": "NOT_THERE", "groupby": "time", "cmap": "RdYlGn", "clim": [0.0, 1.0]}
    ds, fitted = fit_raster(_netcdf_like(), spec)
    assert fitted["z"] == "NDVI" and (fitted["x"], fitted["y"]) == ("lon", "lat")
    assert fitted["clim"] == (0.0, 1.0)  # HoloViews refuses a list
    assert fitted["groupby"] == "time"


def test_fit_raster_masks_geotiff_nodata_drops_a_missing_time_and_strides_big_grids() -> None:
    import rioxarray  # noqa: F401

    n = MAX_PIXELS * 2 + 1
    raw = np.zeros((n, n), dtype="uint8")
    raw[0, 0] = 255
    raw[1, 1] = 40
    da = xr.DataArray(raw, dims=("y", "x"), coords={"y": np.arange(n)[::-1] * 10.0, "x": np.arange(n) * 10.0},
                      name="band_data").rio.write_nodata(255, encoded=False)
    ds, fitted = fit_raster(da, {"kind": "image", "z": "band_data", "groupby": "time", "cmap": "Greens"})
    assert "groupby" not in fitted  # a static layer has no time
    out = ds["band_data"]
    assert max(out.sizes.values()) <= MAX_PIXELS
    assert np.isnan(out.values[0, 0])  # nodata masked, not drawn as 255
    assert not isinstance(out.data, np.ma.MaskedArray)


def test_a_fitted_spec_renders_to_bokeh_with_the_colour_limits() -> None:
    import holoviews as hv
    import hvplot.xarray  # noqa: F401

    spec = plots_for({"dataset_identifier": "ndvi_global_300m_10daily_v2", "frequency": "10-daily"})["map"]
    spec = yaml.safe_load(yaml.safe_dump(spec))  # as read back from the catalog
    ds, fitted = fit_raster(_netcdf_like(), spec)
    plot = ds.hvplot(**fitted)
    fig = hv.render(plot[dt.datetime(2024, 1, 1)] if hasattr(plot, "__getitem__") else plot, backend="bokeh")
    mappers = [r.glyph.color_mapper for r in fig.renderers if hasattr(r.glyph, "color_mapper")]
    assert mappers and (mappers[0].low, mappers[0].high) == (0.0, 1.0)
    assert "RdYlGn" in str(mappers[0].palette) or len(mappers[0].palette) > 2


def test_fit_points_draws_lon_lat_columns_and_names_what_is_missing() -> None:
    import holoviews as hv
    import hvplot.pandas  # noqa: F401

    from intake_clms.plots import fit_points

    frame = pd.DataFrame({"lon": [5.0, 6.5, 8.0], "lat": [45.0, 46.0, 47.5], "height": [210.0, 190.5, 305.2]})
    spec = yaml.safe_load(yaml.safe_dump(plots_for({"is_vector": True})["map"]))
    fitted_frame, fitted = fit_points(frame, spec)
    fig = hv.render(fitted_frame.hvplot(**fitted), backend="bokeh")
    xs = [r.data_source.data.get("lon") for r in fig.renderers if "lon" in r.data_source.data]
    assert xs and list(xs[0]) == [5.0, 6.5, 8.0]
    with pytest.raises(ValueError, match="no 'lon'/'lat' columns and no geometry"):
        fit_points(pd.DataFrame({"a": [1]}), spec)


def test_fit_points_takes_a_geodataframe_s_representative_points_in_lon_lat() -> None:
    gpd = pytest.importorskip("geopandas")
    from shapely.geometry import Point, Polygon

    from intake_clms.plots import fit_points

    frame = gpd.GeoDataFrame({"name": ["lake", "square"]},
                             geometry=[Point(7.0, 46.0), Polygon([(0, 40), (2, 40), (2, 42), (0, 42)])], crs="EPSG:4326")
    out, spec = fit_points(frame, plots_for({"is_vector": True})["map"])
    assert "geometry" not in out.columns
    assert out["lon"].tolist()[0] == 7.0 and 0 < out["lon"].tolist()[1] < 2 and 40 < out["lat"].tolist()[1] < 42
