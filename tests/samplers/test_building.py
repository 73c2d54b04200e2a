# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from torchgeo.datasets import RasterDataset

from torchgeo_sar_damage.errors import ArgumentError
from torchgeo_sar_damage.samplers import BuildingSampler


class SAR(RasterDataset):
    filename_glob = 'CSG_*.tif'


@pytest.fixture(scope='module')
def town(
    tiny_scene: Path, tiny_manifest: dict[str, Any]
) -> tuple[SAR, gpd.GeoDataFrame]:
    folder = tiny_scene / 'nurdagi'
    osm = gpd.read_file(folder / tiny_manifest['cities']['nurdagi']['files']['osm'])
    return SAR(paths=folder), osm


def test_one_window_per_building(town: tuple[SAR, gpd.GeoDataFrame]) -> None:
    ds, osm = town
    sampler = BuildingSampler(ds, osm, 24.0, id_column='osm_id')
    queries = list(sampler)
    assert len(sampler) == len(queries) == len(osm)
    np.testing.assert_array_equal(sampler.building_ids, osm['osm_id'].to_numpy())
    xres, yres = ds.res
    for (x, y), geom in zip(queries, osm.geometry):
        assert x.stop - x.start == pytest.approx(24.0)
        assert y.stop - y.start == pytest.approx(24.0)
        assert (x.step, y.step) == (xres, yres)
        window = shapely.box(x.start, y.start, x.stop, y.stop)
        assert window.contains(geom.representative_point())
        # snapped to the raster's pixel grid
        assert (x.start / xres) == pytest.approx(round(x.start / xres))
        assert (y.stop / yres) == pytest.approx(round(y.stop / yres))


def test_deterministic_and_works_on_torchgeo(
    town: tuple[SAR, gpd.GeoDataFrame],
) -> None:
    ds, osm = town
    a = list(BuildingSampler(ds, osm, 16.0))
    b = list(BuildingSampler(ds, osm, 16.0))
    assert a == b
    sample = ds[a[3]]
    assert tuple(sample['image'].shape) == (
        1,
        round(16.0 / ds.res[1]),
        round(16.0 / ds.res[0]),
    )


def test_filters(town: tuple[SAR, gpd.GeoDataFrame]) -> None:
    ds, osm = town
    labelled = np.arange(len(osm)) % 3 == 0
    sampler = BuildingSampler(ds, osm, 16.0, labelled=labelled)
    assert len(sampler) == labelled.sum()
    left, bottom, right, top = osm.total_bounds
    roi = shapely.box(left, bottom, (left + right) / 2, top)
    half = BuildingSampler(ds, osm, 16.0, roi=roi)
    cent = osm.geometry.representative_point()
    assert 0 < len(half) < len(osm)
    assert all(roi.contains(shapely.Point(x, y)) for x, y in half.centres)
    assert len(half) <= int(roi.contains(cent).sum()) + 5


def test_other_crs_is_reprojected(town: tuple[SAR, gpd.GeoDataFrame]) -> None:
    ds, osm = town
    a = BuildingSampler(ds, osm, 16.0)
    b = BuildingSampler(ds, osm.to_crs('EPSG:4326'), 16.0)
    np.testing.assert_allclose(a.window_bounds, b.window_bounds, atol=1e-3)


@pytest.mark.parametrize('size', [0.0, -4.0, float('nan')])
def test_bad_size(town: tuple[SAR, gpd.GeoDataFrame], size: float) -> None:
    ds, osm = town
    with pytest.raises(ArgumentError, match='size'):
        BuildingSampler(ds, osm, size)


def test_bad_buildings(town: tuple[SAR, gpd.GeoDataFrame]) -> None:
    ds, osm = town
    with pytest.raises(ArgumentError, match='labelled'):
        BuildingSampler(ds, osm, 16.0, labelled=np.ones(3, dtype=bool))
    with pytest.raises(ArgumentError, match='no CRS'):
        BuildingSampler(ds, osm.set_crs(None, allow_override=True), 16.0)
    with pytest.raises(ArgumentError, match='GeoDataFrame'):
        BuildingSampler(ds, object(), 16.0)


@settings(max_examples=40, deadline=None)
@given(
    x=st.floats(0, 200),
    y=st.floats(0, 200),
    w=st.floats(3, 40),
    h=st.floats(3, 40),
    angle=st.floats(0, 90),
    size=st.floats(4, 64),
    res=st.sampled_from([0.25, 0.5, 1.0, 2.0]),
)
def test_window_contains_footprint_centre(
    x: float, y: float, w: float, h: float, angle: float, size: float, res: float
) -> None:
    """Every building yields exactly one window that contains its footprint centre."""
    box = shapely.affinity.rotate(shapely.box(x, y, x + w, y + h), angle)
    l_shape = box.difference(shapely.box(x + w / 2, y + h / 2, x + w + 1, y + h + 1))

    buildings = gpd.GeoDataFrame(geometry=[box, l_shape], crs='EPSG:32637')
    ds = _FakeDataset(res)
    sampler = BuildingSampler(ds, buildings, size)  # type: ignore[arg-type]
    queries = list(sampler)
    assert len(queries) == 2
    for (xs, ys), geom, centre in zip(queries, buildings.geometry, sampler.centres):
        window = shapely.box(xs.start, ys.start, xs.stop, ys.stop)
        point = shapely.Point(centre)
        assert geom.buffer(1e-9).contains(point)
        assert window.buffer(1e-9).contains(point)


class _FakeDataset:
    """Minimal stand-in exposing what a sampler reads from a GeoDataset."""

    def __init__(self, res: float) -> None:
        self.res = (res, res)
        self.crs = 'EPSG:32637'
        self.index = gpd.GeoDataFrame(
            {'filepath': ['none']},
            geometry=[shapely.box(-500, -500, 800, 800)],
            crs=self.crs,
        )
