# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""A file named in ``paths`` is read whatever its name, or refused saying why."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import shapely

from torchgeo_sar_damage.datasets import DSM, DamageLabels, GEMExposure, OSMBuildings
from torchgeo_sar_damage.datasets._vector import unusable_geometries
from torchgeo_sar_damage.errors import InputFileError

DATA = Path('tests', 'data')
OSM = DATA / 'osm' / 'gis_osm_buildings_a_free_1.shp'
EMS = DATA / 'labels' / 'ems' / 'EMSR648_AOI16_GRA_PRODUCT_builtUpA_r1_v1.json'
GEM = DATA / 'gem' / 'adm1'
DSM_FILE = DATA / 'dsm' / 'dsm' / 'dsm.tif'


def copy_shapefile(source: Path, folder: Path, stem: str) -> Path:
    for part in source.parent.glob(source.stem + '.*'):
        shutil.copy(part, folder / (stem + part.suffix))
    return folder / (stem + '.shp')


def test_osm_named_file_off_glob(tmp_path: Path) -> None:
    path = copy_shapefile(OSM, tmp_path, 'OSM_NDestroyed')
    named = OSMBuildings(paths=[path]).buildings.drop(columns='city')
    assert named.equals(OSMBuildings(paths=[OSM]).buildings.drop(columns='city'))
    # a directory search still applies the glob
    with pytest.raises(Exception, match='not found'):
        OSMBuildings(paths=tmp_path)


def test_labels_named_file_off_regex(tmp_path: Path) -> None:
    path = tmp_path / 'OSM_NDestroyed.json'
    shutil.copy(EMS, path)
    assert DamageLabels(paths=[path]).labels.equals(DamageLabels(paths=EMS).labels)


def test_labels_named_file_that_is_not_labels(tmp_path: Path) -> None:
    path = copy_shapefile(OSM, tmp_path, 'OSM_NDestroyed')
    with pytest.raises(InputFileError, match='not a damage label layer') as err:
        DamageLabels(paths=[path])
    assert 'OSM_NDestroyed.shp' in str(err.value)


def test_gem_named_file_off_glob(tmp_path: Path) -> None:
    path = tmp_path / 'turkey_residential.csv'
    shutil.copy(GEM / 'Exposure_Res_Turkey_Adm1.csv', path)
    admin = DATA / 'gem' / 'admin.gpkg'
    named = GEMExposure(paths=path, admin=admin)
    original = GEMExposure(paths=GEM / 'Exposure_Res_Turkey_Adm1.csv', admin=admin)
    assert named.units.equals(original.units)
    # the default resolution of every vector dataset: about a metre
    assert named.res == ((1e-5, 1e-5) if named.crs.is_geographic else (1.0, 1.0))


def test_dsm_named_file_off_glob(tmp_path: Path) -> None:
    path = tmp_path / 'elevation.tiff'
    shutil.copy(DSM_FILE, path)
    named, original = DSM(path), DSM(DSM_FILE)
    x, y, _ = original.bounds
    np.testing.assert_array_equal(named[x, y]['dsm'], original[x, y]['dsm'])


def test_unusable_geometries() -> None:
    square = shapely.box(0, 0, 1, 1)
    geoms = np.array(
        [
            square,
            None,
            shapely.Polygon(),
            shapely.Point(0, 0),
            shapely.Polygon([(0, 0), (1, 0), (2, 0)]),  # zero area
            shapely.Polygon([(0, 0), (2, 2), (2, 0), (0, 1)]),  # bow-tie, area > 0
            shapely.MultiPolygon([square, shapely.box(2, 2, 3, 3)]),
        ],
        dtype=object,
    )
    expected = [False, True, True, True, True, True, False]
    assert unusable_geometries(geoms).tolist() == expected
