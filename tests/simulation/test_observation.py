# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

from collections import Counter

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import box

from torchgeo_sar_damage.simulation.cities import CITIES
from torchgeo_sar_damage.simulation.observation import (
    EMS_GRADES,
    NOT_ANALYSED,
    ems_grading,
    osm_footprints,
)
from torchgeo_sar_damage.simulation.scene import Scene, generate_scene

OSM_BUILDING_VALUES = {
    'yes',
    'apartments',
    'house',
    'residential',
    'commercial',
    'retail',
    'industrial',
}
CEMS_COLUMNS = [
    'obj_type',
    'name',
    'info',
    'damage_gra',
    'det_method',
    'notation',
    'or_src_id',
    'dmg_src_id',
]


@pytest.fixture(scope='module')
def scene() -> Scene:
    return generate_scene(CITIES['kahramanmaras'], 1500, np.random.default_rng(0))


@pytest.fixture(scope='module')
def terraces() -> gpd.GeoDataFrame:
    """3,000 terraced buildings: 30 rows of 100 that share their side walls."""
    rng = np.random.default_rng(0)
    n_rows, per_row = 30, 100
    geoms = [
        box(x0 + 10.0 * k, y0, x0 + 10.0 * (k + 1), y0 + 12.0)
        for x0, y0 in [(318_000.0, 4_160_000.0 + 25.0 * r) for r in range(n_rows)]
        for k in range(per_row)
    ]
    n = len(geoms)
    storeys = rng.integers(1, 9, n)
    return gpd.GeoDataFrame(
        {
            'building_id': np.arange(1, n + 1),
            'storeys': storeys,
            'height_m': 3.0 * storeys + 1.0,
            'occupancy': rng.choice(
                ['RES', 'COM', 'MIX1', 'IND'], n, p=[0.8, 0.1, 0.05, 0.05]
            ),
        },
        geometry=geoms,
        crs='EPSG:32637',
    )


def _merged_count(mapped_id: np.ndarray) -> int:
    """Number of true buildings that share their OSM polygon with another one."""
    counts = Counter(mapped_id[mapped_id > 0].tolist())
    return sum(c for c in counts.values() if c > 1)


def test_osm_missing_and_merged_rates(terraces: gpd.GeoDataFrame) -> None:
    osm, mapped_id = osm_footprints(terraces, np.random.default_rng(1))
    n = len(terraces)
    assert mapped_id.shape == (n,)
    missing = np.mean(mapped_id == 0)
    assert 0.025 < missing < 0.055
    merged = _merged_count(mapped_id)
    assert 0.005 * n < merged < 0.15 * n
    # every polygon maps at least one building, each building at most one polygon
    assert set(mapped_id[mapped_id > 0]) == set(osm['osm_id'])
    assert len(osm) == len(np.unique(mapped_id[mapped_id > 0]))
    # a merged polygon covers its members
    merged_ids = [i for i, c in Counter(mapped_id.tolist()).items() if c > 1 and i > 0]
    polygons = osm.set_index('osm_id').geometry
    for osm_id in merged_ids[:20]:
        members = terraces.geometry[mapped_id == osm_id]
        assert polygons[osm_id].area == pytest.approx(members.area.sum(), rel=0.15)


def test_osm_merges_some_buildings_of_a_generated_town(scene: Scene) -> None:
    _, mapped_id = osm_footprints(scene.buildings, np.random.default_rng(0))
    assert _merged_count(mapped_id) > 0


def test_osm_ids_and_tags(scene: Scene) -> None:
    b = scene.buildings
    osm, mapped_id = osm_footprints(b, np.random.default_rng(0))
    assert list(osm.columns) == [
        'osm_id',
        'osm_type',
        'building',
        'building:levels',
        'height',
        'geometry',
    ]
    assert osm.crs == b.crs
    assert osm['osm_id'].is_unique
    assert (osm['osm_id'] > 0).all()
    assert (osm['osm_type'] == 'ways').all()
    assert set(osm['building']) <= OSM_BUILDING_VALUES
    assert osm['building'].value_counts().idxmax() == 'yes'
    # tags follow the building they map
    mapper = pd.Series(np.flatnonzero(mapped_id), index=mapped_id[mapped_id > 0])
    mapper = mapper[~mapper.index.duplicated()]
    source = mapper.loc[osm['osm_id']].to_numpy()
    storeys = b['storeys'].to_numpy()[source]
    occupancy = b['occupancy'].to_numpy()[source]
    building = osm['building'].to_numpy()
    assert np.all(storeys[building == 'apartments'] >= 4)
    assert np.all(occupancy[building == 'industrial'] == 'IND')
    levels = osm['building:levels']
    tagged = levels.notna().to_numpy()
    assert 0.15 < tagged.mean() < 0.25
    assert all(isinstance(v, str) and v.isdigit() for v in levels[tagged])
    exact = levels[tagged].astype(int).to_numpy() == storeys[tagged]
    assert exact.mean() > 0.8
    diff = np.abs(levels[tagged].astype(int).to_numpy() - storeys[tagged])
    assert diff.max() <= 1


def test_osm_geometry_is_shifted_and_jittered(scene: Scene) -> None:
    b = scene.buildings
    osm, mapped_id = osm_footprints(b, np.random.default_rng(0))
    counts = Counter(mapped_id.tolist())
    single = np.array([i > 0 and counts[i] == 1 for i in mapped_id])
    polygons = osm.set_index('osm_id').geometry.loc[mapped_id[single]].to_numpy()
    truth = b.geometry.to_numpy()[single]
    iou = shapely.area(shapely.intersection(polygons, truth)) / shapely.area(
        shapely.union(polygons, truth)
    )
    assert np.median(iou) > 0.8
    assert np.mean(iou > 0.5) > 0.95
    # the OSM polygon is the true footprint translated
    np.testing.assert_allclose(shapely.area(polygons), shapely.area(truth), rtol=1e-9)
    offset = shapely.get_coordinates(
        shapely.centroid(polygons)
    ) - shapely.get_coordinates(shapely.centroid(truth))
    systematic = offset.mean(axis=0)
    assert 0.3 <= np.hypot(*systematic) <= 2.0
    jitter = offset - systematic
    assert 0.25 < jitter.std() < 0.6


def test_osm_systematic_offset_varies_with_seed(scene: Scene) -> None:
    offsets = []
    for seed in range(3):
        osm, mapped_id = osm_footprints(scene.buildings, np.random.default_rng(seed))
        first = int(np.flatnonzero(mapped_id)[0])
        polygon = osm.set_index('osm_id').geometry[mapped_id[first]]
        truth = scene.buildings.geometry.iloc[first]
        offsets.append(
            (
                polygon.centroid.x - truth.centroid.x,
                polygon.centroid.y - truth.centroid.y,
            )
        )
    assert len({(round(dx, 6), round(dy, 6)) for dx, dy in offsets}) == 3


def test_osm_footprints_is_deterministic(scene: Scene) -> None:
    first, ids = osm_footprints(scene.buildings, np.random.default_rng(4))
    second, ids2 = osm_footprints(scene.buildings, np.random.default_rng(4))
    np.testing.assert_array_equal(ids, ids2)
    pd.testing.assert_frame_equal(
        first.drop(columns='geometry'), second.drop(columns='geometry')
    )
    assert first.geom_equals_exact(second, 0).all()


def _grades(n: int) -> np.ndarray:
    """Uniform EMS-98 grades 0-5, so that every grade is well represented."""
    return np.random.default_rng(10).integers(0, 6, n)


def test_ems_grading_layer(scene: Scene) -> None:
    b = scene.buildings
    grades = _grades(len(b))
    frame, labels = ems_grading(b, grades, np.random.default_rng(0))
    assert list(frame.columns) == [*CEMS_COLUMNS, 'geometry']
    assert frame.crs == b.crs
    assert labels.shape == (len(b),)
    covered = np.array([v is not None for v in labels])
    # an area of interest over part of the town: a strict subset of the buildings
    assert 0.5 < covered.mean() < 0.9
    assert len(frame) == covered.sum()
    np.testing.assert_array_equal(
        frame['damage_gra'].to_numpy(), labels[covered].astype(str)
    )
    assert set(frame['damage_gra']) <= {*EMS_GRADES, NOT_ANALYSED}
    assert 0 < np.mean(frame['damage_gra'] == NOT_ANALYSED) < 0.05
    assert set(frame['obj_type']) <= {
        '11-Residential Buildings',
        '12-Non-residential Buildings',
        '12-Industrial Buildings',
    }
    assert (frame['det_method'] == 'Photo-interpretation').all()
    assert frame['or_src_id'].dtype == np.int32
    assert frame['dmg_src_id'].dtype == np.int32
    # digitised outlines lie on the buildings they grade
    truth = b.geometry.to_numpy()[covered]
    moved = shapely.distance(
        shapely.centroid(frame.geometry.to_numpy()), shapely.centroid(truth)
    )
    assert np.max(moved) < 3.0
    # the covered buildings fill an area of interest: its bounding box holds
    # few uncovered buildings besides the 5 % left undigitised
    cx, cy = b.geometry.centroid.x.to_numpy(), b.geometry.centroid.y.to_numpy()
    inside = (
        (cx >= cx[covered].min())
        & (cx <= cx[covered].max())
        & (cy >= cy[covered].min())
        & (cy <= cy[covered].max())
    )
    assert np.mean(covered[inside]) > 0.9


def test_ems_grading_confusion(scene: Scene) -> None:
    b = scene.buildings
    grades = _grades(len(b))
    _, labels = ems_grading(b, grades, np.random.default_rng(0))
    covered = np.array([v is not None for v in labels])

    def shares(selected: np.ndarray) -> pd.Series:
        values = pd.Series(labels[covered & selected])
        return values.value_counts(normalize=True)

    destroyed = shares(grades == 5)
    assert destroyed.idxmax() == 'Destroyed'
    assert destroyed['Destroyed'] > 0.75
    low = shares(grades <= 2)
    assert low.idxmax() == 'No visible damage'
    assert low['No visible damage'] > 0.85
    assert 'Destroyed' not in low.index
    heavy = shares(grades == 4)
    assert heavy.idxmax() == 'Damaged'
    graded_lower = heavy.get('Possibly damaged', 0.0) + heavy.get(
        'No visible damage', 0.0
    )
    assert 0.15 < graded_lower < 0.6


def test_ems_grading_is_deterministic(scene: Scene) -> None:
    b = scene.buildings
    grades = _grades(len(b))
    first, labels = ems_grading(b, grades, np.random.default_rng(3))
    second, labels2 = ems_grading(b, grades, np.random.default_rng(3))
    np.testing.assert_array_equal(labels, labels2)
    pd.testing.assert_frame_equal(
        first.drop(columns='geometry'), second.drop(columns='geometry')
    )
    _, other = ems_grading(b, grades, np.random.default_rng(4))
    assert not np.array_equal(labels, other)
