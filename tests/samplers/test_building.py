# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from torchgeo.datasets import RasterDataset
from torchgeo.samplers import Units

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


def shifted(ds: SAR, dx: float, dy: float, folder: Path) -> SAR:
    """A copy of the dataset's raster whose grid origin is moved by ``(dx, dy)``.

    Args:
        ds: the dataset (one file).
        dx: shift of the origin in x (CRS units).
        dy: shift of the origin in y.
        folder: where the copy goes.

    Returns:
        The dataset of the copy.
    """
    path = Path(ds.index['filepath'].iloc[0])
    with rasterio.open(path) as src:
        profile = src.profile
        data = src.read()
    profile['transform'] = rasterio.Affine.translation(dx, dy) * profile['transform']
    with rasterio.open(folder / path.name, 'w', **profile) as dst:
        dst.write(data)
    return SAR(paths=folder)


@pytest.mark.parametrize('shift', [(0.0, 0.0), (0.3, -0.45)])
def test_one_window_per_building(
    town: tuple[SAR, gpd.GeoDataFrame], shift: tuple[float, float], tmp_path: Path
) -> None:
    ds, osm = town
    if shift != (0.0, 0.0):  # a grid whose origin is not on whole metres
        ds = shifted(ds, *shift, tmp_path)
    sampler = BuildingSampler(ds, osm, size=24.0, id_column='osm_id')
    queries = list(sampler)
    assert len(sampler) == len(queries) == len(osm)
    np.testing.assert_array_equal(sampler.building_ids, osm['osm_id'].to_numpy())
    xres, yres = ds.res
    # the raster's own grid, read from the file (not from the dataset's index)
    with rasterio.open(ds.index['filepath'].iloc[0]) as src:
        assert (src.res, src.crs) == ((xres, yres), ds.crs)
        origin_x, origin_y = src.transform.c, src.transform.f
    assert origin_x % xres == pytest.approx(shift[0] % xres)
    # the footprint centre: the centroid, or a point inside an L or U shape
    local = osm.to_crs(ds.crs).geometry
    centroid = local.centroid
    centre = centroid.where(local.contains(centroid), local.representative_point())
    for (x, y), geom, cx, cy in zip(queries, local, centre.x, centre.y, strict=True):
        assert x.stop - x.start == pytest.approx(24.0, abs=1e-9)
        assert y.stop - y.start == pytest.approx(24.0, abs=1e-9)
        assert (x.step, y.step) == (xres, yres)
        window = shapely.box(x.start, y.start, x.stop, y.stop)
        assert window.contains(geom.representative_point())
        # on the raster's pixel grid: whole pixels from its origin (UTM
        # coordinates are millions of metres, so a relative tolerance would allow
        # pixels of error)
        columns = (x.start - origin_x) / xres
        rows = (origin_y - y.stop) / yres
        assert abs(columns - round(columns)) < 1e-6
        assert abs(rows - round(rows)) < 1e-6
        # centred on the footprint to half a pixel (what snapping may move it)
        assert abs((x.start + x.stop) / 2 - cx) <= xres / 2 + 1e-6
        assert abs((y.start + y.stop) / 2 - cy) <= yres / 2 + 1e-6


def test_deterministic_and_works_on_torchgeo(
    town: tuple[SAR, gpd.GeoDataFrame],
) -> None:
    ds, osm = town
    a = list(BuildingSampler(ds, osm, size=16.0))
    b = list(BuildingSampler(ds, osm, size=16.0))
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
    sampler = BuildingSampler(ds, osm[labelled], size=16.0)
    assert len(sampler) == labelled.sum()
    # a filtered frame gives the same windows as the whole one, for its buildings
    everyone = BuildingSampler(ds, osm, size=16.0)
    np.testing.assert_array_equal(
        sampler.window_bounds, everyone.window_bounds[labelled]
    )
    # without an id column the ids are the frame's index labels (row numbers of
    # the whole frame, not of the filtered one)
    ids = BuildingSampler(ds, osm[labelled], size=16.0, id_column='none').building_ids
    np.testing.assert_array_equal(ids, np.flatnonzero(labelled))
    left, bottom, right, top = osm.total_bounds
    roi = shapely.box(left, bottom, (left + right) / 2, top)
    half = BuildingSampler(ds, osm, size=16.0, roi=roi)
    cent = osm.geometry.representative_point()
    assert 0 < len(half) < len(osm)
    assert all(roi.contains(shapely.Point(x, y)) for x, y in half.centres)
    assert len(half) <= int(roi.contains(cent).sum()) + 5


def test_other_crs_is_reprojected(town: tuple[SAR, gpd.GeoDataFrame]) -> None:
    ds, osm = town
    a = BuildingSampler(ds, osm, size=16.0)
    b = BuildingSampler(ds, osm.to_crs('EPSG:4326'), size=16.0)
    np.testing.assert_allclose(a.window_bounds, b.window_bounds, atol=1e-3)


@pytest.mark.parametrize('size', [0.0, -4.0, float('nan')])
def test_bad_size(town: tuple[SAR, gpd.GeoDataFrame], size: float) -> None:
    ds, osm = town
    with pytest.raises(ArgumentError, match='size'):
        BuildingSampler(ds, osm, size=size)


def test_bad_buildings(town: tuple[SAR, gpd.GeoDataFrame]) -> None:
    ds, osm = town
    with pytest.raises(ArgumentError, match='no CRS'):
        BuildingSampler(ds, osm.set_crs(None, allow_override=True), size=16.0)
    with pytest.raises(ArgumentError, match='GeoDataFrame'):
        BuildingSampler(ds, object(), size=16.0)


def test_size_is_keyword_only(town: tuple[SAR, gpd.GeoDataFrame]) -> None:
    ds, osm = town
    with pytest.raises(TypeError):
        BuildingSampler(ds, osm, 16.0)  # type: ignore[call-arg]


@pytest.mark.parametrize('size', [(16.0, 0.0), (16.0, 8.0, 4.0), 'big'])
def test_bad_size_pair(town: tuple[SAR, gpd.GeoDataFrame], size: object) -> None:
    ds, osm = town
    # ValueError, as TorchGeo's own argument checks
    with pytest.raises(ValueError, match='window size'):
        BuildingSampler(ds, osm, size=size)  # type: ignore[arg-type]


def test_size_pair_and_pixel_units(town: tuple[SAR, gpd.GeoDataFrame]) -> None:
    """``size`` as TorchGeo's samplers: (height, width), in CRS units or pixels."""
    ds, osm = town
    xres, yres = ds.res
    square = BuildingSampler(ds, osm, size=16.0)
    assert square.size == (16.0, 16.0)
    assert square.strategy == BuildingSampler.strategy == 'sequential'
    # pixels of another resolution in x than in y: 64 rows of 0.25 m, 32 columns
    # of 0.5 m are 16 m by 16 m
    fine = SAR(paths=ds.paths, res=(0.5, 0.25))
    pixels = BuildingSampler(fine, osm, size=(64, 32), units=Units.PIXELS)
    assert pixels.size == (16.0, 16.0)
    in_m = BuildingSampler(fine, osm, size=16.0)
    np.testing.assert_array_equal(pixels.window_bounds, in_m.window_bounds)
    assert tuple(fine[next(iter(pixels))]['image'].shape[-2:]) == (64, 32)
    tall = BuildingSampler(ds, osm, size=(24.0, 8.0), snap=False)
    for x, y in tall:
        assert y.stop - y.start == pytest.approx(24.0, abs=1e-9)
        assert x.stop - x.start == pytest.approx(8.0, abs=1e-9)
    # centred on the same points as the square windows
    np.testing.assert_allclose(
        (tall.window_bounds[:, :2] + tall.window_bounds[:, 2:]) / 2, tall.centres
    )
    sample = ds[next(iter(tall))]
    assert tuple(sample['image'].shape[-2:]) == (round(24.0 / yres), round(8.0 / xres))


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
    sampler = BuildingSampler(ds, buildings, size=size)  # type: ignore[arg-type]
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
