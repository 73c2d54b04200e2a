# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import re
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio.transform
import shapely
from pyproj import Transformer
from shapely.geometry import LineString, Polygon, box

from torchgeo_sar_damage.errors import InputFileError
from torchgeo_sar_damage.simulation import scene as scene_module
from torchgeo_sar_damage.simulation.cities import CITIES
from torchgeo_sar_damage.simulation.sar import LandCover
from torchgeo_sar_damage.simulation.scene import (
    Scene,
    generate_scene,
    landcover,
    scene_from_footprints,
    slugify,
)
from torchgeo_sar_damage.taxonomy import parse_taxonomy

N_BUILDINGS = 1000
GEM_ADMIN_COLUMNS = ['ID_0', 'NAME_0', 'ID_1', 'NAME_1', 'ID_2', 'NAME_2']


@pytest.fixture(scope='module')
def scenes() -> dict[str, Scene]:
    return {
        slug: generate_scene(city, N_BUILDINGS, np.random.default_rng(0))
        for slug, city in CITIES.items()
    }


def _pairwise_overlap_m2(buildings: gpd.GeoDataFrame) -> np.ndarray:
    """Intersection area of every pair of footprints that touch or overlap."""
    geoms = buildings[['geometry']].reset_index(drop=True)
    pairs = gpd.sjoin(geoms, geoms, predicate='intersects')
    pairs = pairs[pairs.index < pairs['index_right']]
    left = geoms.geometry.values[pairs.index.to_numpy()]
    right = geoms.geometry.values[pairs['index_right'].to_numpy()]
    return np.asarray(shapely.area(shapely.intersection(left, right)))


def _dominant_azimuth_deg(geoms: gpd.GeoSeries) -> float:
    """Dominant edge direction (clockwise from north) of footprints, modulo 90°."""
    rects = shapely.oriented_envelope(np.asarray(geoms.values))
    corners = shapely.get_coordinates(shapely.get_exterior_ring(rects))
    corners = corners.reshape(len(geoms), 5, 2)
    edge = corners[:, 1] - corners[:, 0]
    azimuth = np.arctan2(edge[:, 0], edge[:, 1])
    # fourfold circular mean: an edge and its perpendicular count as the same direction
    mean = np.angle(np.mean(np.exp(4j * azimuth))) / 4
    return float(np.degrees(mean) % 90)


def _angle_diff_mod90(a: float, b: float) -> float:
    d = (a - b) % 90
    return min(d, 90 - d)


@pytest.mark.parametrize('slug', sorted(CITIES))
def test_buildings_table(scenes: dict[str, Scene], slug: str) -> None:
    scene = scenes[slug]
    b = scene.buildings
    assert len(b) == N_BUILDINGS
    assert b['building_id'].is_unique
    assert str(b.crs) == scene.crs == 'EPSG:32637'
    for column in ('storeys', 'height_m', 'taxonomy', 'occupancy', 'ID_2', 'yard'):
        assert column in b.columns
    assert b.geometry.is_valid.all()
    assert (b.geom_type == 'Polygon').all()
    left, bottom, right, top = scene.bounds
    x0, y0, x1, y1 = b.total_bounds
    assert left < x0
    assert bottom < y0
    assert x1 < right
    assert y1 < top
    area = b.geometry.area.to_numpy()
    p5, p95 = np.percentile(area, [5, 95])
    assert 40 <= p5
    assert p95 <= 1500
    assert set(np.unique(b['yard'])) <= {int(c) for c in LandCover}


@pytest.mark.parametrize('slug', ['kahramanmaras', 'antakya'])
def test_footprints_do_not_overlap(scenes: dict[str, Scene], slug: str) -> None:
    overlap = _pairwise_overlap_m2(scenes[slug].buildings)
    assert overlap.max(initial=0.0) < 0.01, np.sort(overlap)[-5:]


@pytest.mark.parametrize('slug', sorted(CITIES))
def test_storeys_height_and_taxonomy(scenes: dict[str, Scene], slug: str) -> None:
    b = scenes[slug].buildings
    storeys = b['storeys'].to_numpy()
    height = b['height_m'].to_numpy()
    assert storeys.min() >= 1
    assert np.all(height >= 2.5 * storeys)
    assert np.all(height <= 4 * storeys + 2)
    for text, n in zip(b['taxonomy'], storeys):
        tax = parse_taxonomy(text)
        assert tax.storeys is not None, text
        assert tax.storeys.min is not None, text
        assert tax.storeys.min <= n, text
        assert tax.storeys.max is None or n <= tax.storeys.max, text
        assert tax.occupancy in ('RES', 'MIX1', 'COM', 'IND'), text


@pytest.mark.parametrize('slug', sorted(CITIES))
def test_districts_tile_bounds(scenes: dict[str, Scene], slug: str) -> None:
    scene = scenes[slug]
    districts = scene.districts
    assert len(districts) == 5
    assert districts['ID_2'].is_unique
    assert list(districts.columns[:6]) == GEM_ADMIN_COLUMNS
    assert (districts['ID_1'] == CITIES[slug].province_id).all()
    bounds_area = box(*scene.bounds).area
    union = shapely.union_all(districts.geometry.values)
    assert union.area == pytest.approx(bounds_area, rel=1e-9)
    # no overlaps: the areas add up to the area of the union
    assert districts.geometry.area.sum() == pytest.approx(bounds_area, rel=1e-9)
    assert shapely.box(*scene.bounds).buffer(1e-6).covers(union)


@pytest.mark.parametrize('slug', sorted(CITIES))
def test_buildings_lie_in_their_district(scenes: dict[str, Scene], slug: str) -> None:
    scene = scenes[slug]
    b = scene.buildings
    by_id = scene.districts.set_index('ID_2').geometry
    assert set(b['ID_2']) <= set(by_id.index)
    # every district holds buildings
    assert b['ID_2'].nunique() == 5
    own = by_id.loc[b['ID_2']].to_numpy()
    assert shapely.covers(own, b.geometry.centroid.to_numpy()).all()
    # districts are assigned by centroid: a plan straddling a boundary near the
    # centre disc may keep as little as a third of its area in its district
    share = shapely.area(shapely.intersection(own, b.geometry.values)) / b.area
    assert np.all(share > 0.25)
    assert np.median(share) > 0.99


def test_towns_have_some_industry(scenes: dict[str, Scene]) -> None:
    occupancy = pd.concat([s.buildings['occupancy'] for s in scenes.values()])
    assert (occupancy == 'IND').any()


def test_cities_differ(scenes: dict[str, Scene]) -> None:
    kmaras = scenes['kahramanmaras'].buildings['storeys']
    nurdagi = scenes['nurdagi'].buildings['storeys']
    assert kmaras.mean() > nurdagi.mean() + 1
    # field survey: median 5 storeys in Kahramanmaraş, mostly 2-3 in Nurdağı
    assert 4 <= kmaras.median() <= 7
    assert 2 <= nurdagi.median() <= 3
    azimuths = {
        slug: _dominant_azimuth_deg(scene.buildings.geometry)
        for slug, scene in scenes.items()
    }
    for slug, azimuth in azimuths.items():
        expected = CITIES[slug].grid_azimuth_deg
        assert _angle_diff_mod90(azimuth, expected) < 4, (slug, azimuth)
    assert _angle_diff_mod90(azimuths['kahramanmaras'], azimuths['nurdagi']) > 15
    assert _angle_diff_mod90(azimuths['kahramanmaras'], azimuths['islahiye']) > 15


def test_generate_scene_is_deterministic() -> None:
    city = CITIES['nurdagi']
    first = generate_scene(city, 200, np.random.default_rng(5))
    second = generate_scene(city, 200, np.random.default_rng(5))
    other = generate_scene(city, 200, np.random.default_rng(6))
    pd.testing.assert_frame_equal(
        first.buildings.drop(columns='geometry'),
        second.buildings.drop(columns='geometry'),
    )
    assert first.buildings.geom_equals_exact(second.buildings, 0).all()
    assert first.bounds == second.bounds
    assert first.centre == second.centre
    assert not first.buildings.geom_equals_exact(other.buildings, 1e-3).all()


@pytest.mark.parametrize(
    ('text', 'slug'),
    [
        ('Kahramanmaraş', 'kahramanmaras'),
        ('İslahiye', 'islahiye'),
        ('Adıyaman', 'adiyaman'),
        ('Nurdağı', 'nurdagi'),
        ('My Town (2023)', 'my-town-2023'),
        ('***', 'scene'),
    ],
)
def test_slugify(text: str, slug: str) -> None:
    assert slugify(text) == slug


def test_city_slugs_are_slugified_names() -> None:
    for slug, city in CITIES.items():
        assert slugify(city.name) == slug


# ----------------------------------------------------------------- user footprints

LON0, LAT0 = 36.9, 37.58
TAGGED_LEVELS = {0: '7', 5: '2', 11: '12'}


def _write_footprints(path: Path) -> gpd.GeoDataFrame:
    """60 rectangles near Kahramanmaraş plus three geometries to drop, EPSG:4326."""
    rng = np.random.default_rng(0)
    polys = []
    for i in range(6):
        for j in range(10):
            lon = LON0 + i * 0.0003 + rng.uniform(0, 5e-5)
            lat = LAT0 + j * 0.0003 + rng.uniform(0, 5e-5)
            polys.append(box(lon, lat, lon + 0.00015, lat + 0.00012))
    bow_tie = Polygon(
        [(36.91, 37.59), (36.9102, 37.5902), (36.9102, 37.59), (36.91, 37.5902)]
    )
    assert not bow_tie.is_valid
    geoms = [*polys, bow_tie, Polygon(), LineString([(36.91, 37.59), (36.911, 37.591)])]
    levels = [TAGGED_LEVELS.get(k) for k in range(len(geoms))]
    frame = gpd.GeoDataFrame(
        {'building': 'yes', 'building:levels': levels}, geometry=geoms, crs='EPSG:4326'
    )
    frame.to_file(path)
    return frame.iloc[:60]


def _read_scene(path: Path, n_buildings: int | None = None) -> Scene:
    with pytest.warns(UserWarning, match=re.escape('dropped 3 of 63')):
        return scene_from_footprints(str(path), np.random.default_rng(0), n_buildings)


# the extra geopandas warning is test_scene_from_footprints_warns_once's bug
NOTNA_WARNING = 'ignore:GeoSeries.notna:UserWarning'


@pytest.mark.filterwarnings(NOTNA_WARNING)
@pytest.mark.parametrize('suffix', ['gpkg', 'geojson'])
def test_scene_from_footprints(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f'Kahramanmaraş footprints.{suffix}'
    original = _write_footprints(path)
    scene = _read_scene(path)
    assert scene.city is None
    assert scene.slug == 'kahramanmaras-footprints'
    assert scene.crs == 'EPSG:32637'
    b = scene.buildings
    assert len(b) == 60
    assert str(b.crs) == 'EPSG:32637'
    # reprojected, not just relabelled: centroids match pyproj's transform
    to_utm = Transformer.from_crs('EPSG:4326', 'EPSG:32637', always_xy=True)
    corners = shapely.get_coordinates(original.geometry.values).reshape(60, 5, 2)
    x, y = to_utm.transform(corners[:, :4, 0], corners[:, :4, 1])
    x, y = x.mean(axis=1), y.mean(axis=1)
    np.testing.assert_allclose(b.geometry.centroid.x, x, atol=0.05)
    np.testing.assert_allclose(b.geometry.centroid.y, y, atol=0.05)
    # a 0.00015° x 0.00012° box is about 13 m x 13 m there
    assert np.all((b.area > 150) & (b.area < 200))
    for k, levels in TAGGED_LEVELS.items():
        assert b['storeys'].iloc[k] == int(levels)
        tax = parse_taxonomy(b['taxonomy'].iloc[k])
        assert tax.storeys is not None
        assert tax.storeys.min is not None
        assert tax.storeys.min <= int(levels)
    assert b['ID_2'].isin(scene.districts['ID_2']).all()
    assert scene.districts['ID_1'].iloc[0] == CITIES['kahramanmaras'].province_id


def test_scene_from_footprints_warns_once(tmp_path: Path) -> None:
    path = tmp_path / 'footprints.gpkg'
    _write_footprints(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        scene_from_footprints(str(path), np.random.default_rng(0))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages


@pytest.mark.filterwarnings(NOTNA_WARNING)
def test_scene_from_footprints_keeps_nearest(tmp_path: Path) -> None:
    path = tmp_path / 'footprints.geojson'
    _write_footprints(path)
    full = _read_scene(path)
    subset = _read_scene(path, n_buildings=20)
    assert len(subset.buildings) == 20
    cx, cy = full.centre
    full_c = full.buildings.geometry.centroid
    dist = np.hypot(full_c.x - cx, full_c.y - cy).to_numpy()
    kept_c = subset.buildings.geometry.centroid
    kept_xy = {(round(p.x, 3), round(p.y, 3)) for p in kept_c}
    is_kept = np.array([(round(p.x, 3), round(p.y, 3)) in kept_xy for p in full_c])
    assert is_kept.sum() == 20
    assert dist[is_kept].max() <= dist[~is_kept].min()


def test_footprints_without_crs(tmp_path: Path) -> None:
    path = tmp_path / 'no_crs.gpkg'
    frame = gpd.GeoDataFrame({'a': [1]}, geometry=[box(0, 0, 10, 10)])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        frame.to_file(path)
    with pytest.raises(InputFileError, match=re.escape(str(path))) as info:
        scene_from_footprints(str(path), np.random.default_rng(0))
    assert 'CRS' in info.value.problem


def test_footprints_empty_file(tmp_path: Path) -> None:
    path = tmp_path / 'empty.gpkg'
    gpd.GeoDataFrame({'a': []}, geometry=[], crs='EPSG:4326').to_file(path)
    with pytest.raises(InputFileError, match=re.escape(str(path))):
        scene_from_footprints(str(path), np.random.default_rng(0))


def test_footprints_not_a_vector_file(tmp_path: Path) -> None:
    path = tmp_path / 'notes.gpkg'
    path.write_text('not a GeoPackage')
    with pytest.raises(InputFileError, match=re.escape(str(path))):
        scene_from_footprints(str(path), np.random.default_rng(0))


# ---------------------------------------------------------------------- land cover


def test_landcover(scenes: dict[str, Scene]) -> None:
    scene = scenes['adiyaman']
    grid = scene.grid(1.0)
    lc = landcover(scene, grid, np.random.default_rng(0))
    assert lc.dtype == np.uint8
    assert lc.shape == grid.shape
    assert set(np.unique(lc)) <= {int(c) for c in LandCover}
    assert (lc == LandCover.ROAD).any()
    points = scene.buildings.geometry.representative_point()
    rows, cols = rasterio.transform.rowcol(grid.transform, points.x, points.y)
    at_buildings = lc[np.asarray(rows), np.asarray(cols)]
    assert np.mean(at_buildings == LandCover.BUILDING) > 0.99
    building_m2 = np.sum(lc == LandCover.BUILDING) * grid.pixel_m**2
    footprint_m2 = shapely.union_all(scene.buildings.geometry.values).area
    assert building_m2 == pytest.approx(footprint_m2, rel=0.05)
    # the same generator state gives the same raster
    np.testing.assert_array_equal(lc, landcover(scene, grid, np.random.default_rng(0)))


@pytest.mark.parametrize('pixel_m', [1.0, 0.5])
def test_landcover_low_memory(
    scenes: dict[str, Scene], monkeypatch: pytest.MonkeyPatch, pixel_m: float
) -> None:
    # banded field and town burnt into the result: the same classes as whole-grid
    monkeypatch.setattr(scene_module, 'LANDCOVER_BAND_ROWS', 37)
    scene = scenes['adiyaman']
    grid = scene.grid(pixel_m)
    whole = landcover(scene, grid, np.random.default_rng(4))
    banded = landcover(scene, grid, np.random.default_rng(4), low_memory=True)
    assert banded.dtype == np.uint8
    assert grid.height > 37 * 3
    assert np.mean(banded == whole) > 0.99999
    for cover in LandCover:
        assert (banded == cover).sum() == pytest.approx((whole == cover).sum(), abs=5)
