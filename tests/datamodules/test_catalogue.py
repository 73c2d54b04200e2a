# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""The town catalogue: a user's own towns, written by hand and checked before training."""

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from torchgeo_sar_damage.datamodules import SARDamageDataModule
from torchgeo_sar_damage.datamodules.catalogue import Catalogue
from torchgeo_sar_damage.datasets import GEMExposure
from torchgeo_sar_damage.errors import ArgumentError, CatalogueError

SPLIT: dict[str, Any] = {
    'train_cities': ['nurdagi'],
    'val_cities': ['islahiye'],
    'test_cities': ['adiyaman'],
}


def manifest(scene: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((scene / 'scene.json').read_text())
    return loaded


def user_catalogue(scene: Path, folder: Path) -> dict[str, Any]:
    """A hand-written catalogue of the scene's towns, as a user writes one.

    Files are given relative to the catalogue (``folder: "."``) for nurdagi, with
    absolute paths for islahiye, and in the town's own folder for adiyaman.
    """
    towns: dict[str, Any] = {}
    for town, entry in manifest(scene)['cities'].items():
        files = entry['files']
        src = scene / town
        if town == 'nurdagi':
            base, where = folder, '.'
            (folder / 'own').mkdir(exist_ok=True)
            for name in (files['sar_geotiff'], files['osm'], files['dsm']):
                shutil.copy(src / name, folder / 'own' / name)
            rel = {k: f'own/{files[k]}' for k in ('sar_geotiff', 'osm', 'dsm')}
            labels = src / files['labels']  # absolute
            towns[town] = {
                'folder': where,
                'files': {
                    'sar': [rel['sar_geotiff']],
                    'osm': rel['osm'],
                    'dsm': rel['dsm'],
                    'gem': [str(src / f) for f in files['gem']],
                    'admin': str(src / files['admin']),
                    'labels': str(labels),
                },
            }
            assert base == folder
        elif town == 'islahiye':
            towns[town] = {
                'folder': '/nonexistent/ignored/for/absolute/paths',
                'files': {
                    'sar': str(src / files['sar_hdf5']),
                    'osm': str(src / files['osm']),
                    'dsm': str(src / files['dsm']),
                    'gem': [str(src / f) for f in files['gem']],
                    'admin': str(src / files['admin']),
                    'labels': [str(src / files['labels'])],
                },
            }
        else:
            towns[town] = {
                'folder': str(src),
                'files': {
                    k: files[k]
                    for k in ('sar_geotiff', 'osm', 'dsm', 'gem', 'admin', 'labels')
                },
            }
    return {'cities': towns}


def write(path: Path, catalogue: dict[str, Any]) -> Path:
    path.write_text(json.dumps(catalogue, indent=2))
    return path


def make(root: Path, chips: Path, **kwargs: object) -> SARDamageDataModule:
    args: dict[str, Any] = {
        **SPLIT,
        'size_m': 16.0,
        'batch_size': 8,
        'progress': False,
        'chips_root': chips,
    }
    args.update(kwargs)
    return SARDamageDataModule(root, **args)


def test_paths_resolve_relative_to_catalogue_or_absolute(
    training_scene: Path, tmp_path: Path
) -> None:
    path = write(tmp_path / 'towns.json', user_catalogue(training_scene, tmp_path))
    catalogue = Catalogue(path)
    nurdagi = catalogue['nurdagi']
    assert nurdagi.folder == tmp_path
    assert nurdagi.sar[0].parent == tmp_path / 'own'
    assert nurdagi.sar[0].name.startswith('CSG_')
    assert nurdagi.labels[0].parent == training_scene / 'nurdagi'
    assert catalogue['islahiye'].sar[0].suffix == '.h5'
    assert catalogue['islahiye'].sar[0].is_file()
    assert (
        catalogue['adiyaman'].osm
        == training_scene
        / 'adiyaman'
        / (manifest(training_scene)['cities']['adiyaman']['files']['osm'])
    )
    # the simulator's catalogue: files in the town's folder, named by the town
    sim = Catalogue(training_scene)
    assert sim.path == training_scene / 'scene.json'
    assert sim['nurdagi'].folder == training_scene / 'nurdagi'
    assert sim['nurdagi'].sar[0].suffix == '.tif'  # sar_geotiff before sar_hdf5
    catalogue.check(list(catalogue.towns), ('sar', 'osm', 'dsm', 'gem'), ['nurdagi'])


def test_hand_written_catalogue_gives_the_simulated_chips(
    training_scene: Path, tmp_path: Path
) -> None:
    """The same files through a hand-written catalogue give the same chips."""
    path = write(tmp_path / 'towns.json', user_catalogue(training_scene, tmp_path))
    ours = make(path, tmp_path / 'chips_ours')
    theirs = make(training_scene, tmp_path / 'chips_theirs')
    assert ours.catalogue.path == path
    for town in ('nurdagi', 'adiyaman'):
        a, b = ours.chips(town), theirs.chips(town)
        assert len(a) == len(b) > 0
        for i in (0, len(a) // 2, len(a) - 1):
            for key in ('image', 'footprint', 'tabular', 'label'):
                np.testing.assert_array_equal(a[i][key].numpy(), b[i][key].numpy())
    # the chip stores of a .json catalogue go beside it by default
    default = SARDamageDataModule(path, **SPLIT, progress=False)
    assert default.chips_root == tmp_path / '.chips'


def test_sensor_is_recorded(training_scene: Path, tmp_path: Path) -> None:
    dm = make(training_scene, tmp_path / 'chips')
    dm.setup('fit')
    state = dm.state_dict()
    sensor = state['sensor']
    assert sensor['pixel_m'] == 1.0  # the training scene is simulated at 1 m
    assert sensor['window_px'] == 16
    cities = manifest(training_scene)['cities']
    assert sensor['polarisations'] == sorted(
        {cities[t]['acquisition']['polarisation'] for t in ('nurdagi', 'islahiye')}
    )
    assert sensor['product_types'] == ['CSG GTC']  # sar_geotiff is preferred
    fresh = make(training_scene, tmp_path / 'chips')
    fresh.load_state_dict(state)
    assert fresh.sensor == sensor


# -- one clear error per problem, naming the town and the file ---------------------


def broken(
    scene: Path, tmp_path: Path, town: str, change: dict[str, Any]
) -> tuple[Path, dict[str, Any]]:
    catalogue = user_catalogue(scene, tmp_path)
    catalogue['cities'][town]['files'].update(change)
    for key in [k for k, v in change.items() if v is None]:
        del catalogue['cities'][town]['files'][key]
    return write(tmp_path / 'towns.json', catalogue), catalogue


def test_missing_file(training_scene: Path, tmp_path: Path) -> None:
    path, _ = broken(training_scene, tmp_path, 'adiyaman', {'dsm': 'nope.tif'})
    with pytest.raises(CatalogueError, match="town 'adiyaman': file not found") as err:
        make(path, tmp_path / 'chips')
    assert err.value.path == str(training_scene / 'adiyaman' / 'nope.tif')


def test_town_without_labels(training_scene: Path, tmp_path: Path) -> None:
    path, _ = broken(training_scene, tmp_path, 'islahiye', {'labels': None})
    with pytest.raises(CatalogueError, match='''town 'islahiye' lists no "labels"'''):
        make(path, tmp_path / 'chips')
    # a town outside the splits needs no labels
    make(
        path,
        tmp_path / 'chips',
        train_cities=['nurdagi'],
        val_cities=[],
        test_cities=['adiyaman'],
    )


def test_modality_without_file(training_scene: Path, tmp_path: Path) -> None:
    path, _ = broken(training_scene, tmp_path, 'nurdagi', {'dsm': None})
    with pytest.raises(
        CatalogueError, match=r"""'nurdagi' lists no "dsm".*'dsm' mod"""
    ):
        make(path, tmp_path / 'chips')
    path, _ = broken(training_scene, tmp_path, 'nurdagi', {'admin': None})
    with pytest.raises(CatalogueError, match=r"""lists no "admin".*ID_1"""):
        make(path, tmp_path / 'chips')


def test_files_that_do_not_overlap(training_scene: Path, tmp_path: Path) -> None:
    other = manifest(training_scene)['cities']['islahiye']['files']['osm']
    wrong = str(training_scene / 'islahiye' / other)
    path, _ = broken(training_scene, tmp_path, 'adiyaman', {'osm': wrong})
    with pytest.raises(
        CatalogueError, match="town 'adiyaman': does not overlap the SAR product CSG_"
    ) as err:
        make(path, tmp_path / 'chips')
    assert err.value.path == wrong


def test_crs_that_cannot_be_resolved(training_scene: Path, tmp_path: Path) -> None:
    files = manifest(training_scene)['cities']['adiyaman']['files']
    dsm = tmp_path / 'dsm_no_crs.tif'
    with rasterio.open(training_scene / 'adiyaman' / files['dsm']) as src:
        profile = {**src.profile, 'crs': None}
        with rasterio.open(dsm, 'w', **profile) as dst:
            dst.write(src.read())
    path, _ = broken(training_scene, tmp_path, 'adiyaman', {'dsm': str(dsm)})
    with pytest.raises(
        CatalogueError, match="town 'adiyaman': has no coordinate reference system"
    ) as err:
        make(path, tmp_path / 'chips')
    assert err.value.path == str(dsm)
    text = tmp_path / 'not_a_raster.tif'
    text.write_text('hello')
    path, _ = broken(training_scene, tmp_path, 'adiyaman', {'dsm': str(text)})
    with pytest.raises(CatalogueError, match="'adiyaman': cannot be read as a raster"):
        make(path, tmp_path / 'chips')


@pytest.mark.parametrize(
    ('catalogue', 'match'),
    [
        ('[1, 2]', 'must hold a JSON object'),
        ('{"cities": {}}', "has no 'cities'"),
        ('{"cities": {"a": []}}', "town 'a': the entry must be an object"),
        ('{"cities": {"a": {}}}', """town 'a' has no "files" object"""),
        (
            '{"cities": {"a": {"files": {"lables": "x"}}}}',
            r"unknown file keys \['lables'\]",
        ),
        (
            '{"cities": {"a": {"files": {"osm": ["x", "y"]}}}}',
            'takes one file, not a list',
        ),
        ('{"cities": {"a": {"files": {"osm": 3}}}}', 'must hold file paths'),
        ('{"cities": {"a": {"folder": 3, "files": {}}}}', '"folder" must be a path'),
        (
            '{"cities": {"a": {"files": {}, "gem_id_columns": ["ID_1"]}}}',
            'gem_id_columns',
        ),
        ('{"cities": ', 'cannot be read as JSON'),
    ],
)
def test_malformed_catalogue(tmp_path: Path, catalogue: str, match: str) -> None:
    path = tmp_path / 'towns.json'
    path.write_text(catalogue)
    with pytest.raises(CatalogueError, match=match) as err:
        Catalogue(path)
    assert err.value.path == str(path)


def test_catalogue_not_found_and_unknown_town(
    training_scene: Path, tmp_path: Path
) -> None:
    with pytest.raises(CatalogueError, match='Your own data'):
        Catalogue(tmp_path / 'nothing.json')
    with pytest.raises(CatalogueError, match="no town 'paris'"):
        Catalogue(training_scene).check(['paris'], ('sar',))
    catalogue = user_catalogue(training_scene, tmp_path)
    catalogue['cities']['adiyaman']['files'].pop('sar_geotiff')
    no_sar = Catalogue(write(tmp_path / 'towns.json', catalogue))
    with pytest.raises(CatalogueError, match='lists no "sar"'):
        no_sar.check(['adiyaman'], ('sar',))


# -- GEM codes in a column of another name ----------------------------------------


def renamed_admin(scene: Path, tmp_path: Path, town: str) -> Path:
    """The town's admin polygons with GEM's ID_n columns renamed, as in GADM.

    The simulator writes GEM per province by default: one polygon with ``ID_1``.
    """
    files = manifest(scene)['cities'][town]['files']
    admin = gpd.read_file(scene / town / files['admin'])
    assert 'ID_2' not in admin.columns
    renamed = admin.rename(columns={'ID_1': 'GID_1', 'ID_0': 'GID_0'})
    out = tmp_path / f'{town}_gadm.gpkg'
    renamed.to_file(out)
    return out


def test_gem_code_column_of_another_name(training_scene: Path, tmp_path: Path) -> None:
    catalogue = user_catalogue(training_scene, tmp_path)
    for town in ('nurdagi', 'islahiye', 'adiyaman'):
        catalogue['cities'][town]['files']['admin'] = str(
            renamed_admin(training_scene, tmp_path, town)
        )
    path = write(tmp_path / 'towns.json', catalogue)
    # without the column mapping the codes are not found
    with pytest.raises(ArgumentError, match='shares no ID_n code column'):
        make(path, tmp_path / 'chips_a').chips('adiyaman')
    # the data module's argument, for every town
    ours = make(path, tmp_path / 'chips_b', gem_id_columns={'ID_1': 'GID_1'})
    theirs = make(training_scene, tmp_path / 'chips_c')
    a, b = ours.chips('adiyaman'), theirs.chips('adiyaman')
    tabular = np.stack([a[i]['tabular'].numpy() for i in range(len(a))])
    np.testing.assert_array_equal(
        tabular, np.stack([b[i]['tabular'].numpy() for i in range(len(b))])
    )
    # or the town's own entry in the catalogue
    for town in catalogue['cities']:
        catalogue['cities'][town]['gem_id_columns'] = {'ID_1': 'GID_1'}
    path = write(tmp_path / 'towns.json', catalogue)
    again = make(path, tmp_path / 'chips_d').chips('adiyaman')
    np.testing.assert_array_equal(
        np.stack([again[i]['tabular'].numpy() for i in range(len(again))]), tabular
    )


def test_gem_code_column_by_name_alone(training_scene: Path, tmp_path: Path) -> None:
    """A bare column name maps the CSVs' deepest ID_n level (ID_1 here)."""
    files = manifest(training_scene)['cities']['adiyaman']['files']
    gem = [training_scene / 'adiyaman' / f for f in files['gem']]
    admin = renamed_admin(training_scene, tmp_path, 'adiyaman')
    reference = GEMExposure(gem, admin=training_scene / 'adiyaman' / files['admin'])
    named = GEMExposure(gem, admin=admin, id_columns='GID_1')
    buildings = gpd.read_file(training_scene / 'adiyaman' / files['osm'])
    assert list(named.units.index) == list(reference.units.index) == ['TR-02']
    np.testing.assert_array_equal(
        named.features(buildings).to_numpy(), reference.features(buildings).to_numpy()
    )
    with pytest.raises(ArgumentError, match=r"'NAME'.* not a column"):
        GEMExposure(gem, admin=admin, id_columns={'ID_1': 'NAME'})


# -- pixel spacing --------------------------------------------------------------


def test_towns_of_different_spacing(
    training_scene: Path,
    tmp_path: Path,
    resampled_product: Callable[[Path, Path, int], Path],
) -> None:
    files = manifest(training_scene)['cities']['adiyaman']['files']
    coarse = resampled_product(
        training_scene / 'adiyaman' / files['sar_geotiff'], tmp_path, 2
    )
    path, _ = broken(training_scene, tmp_path, 'adiyaman', {'sar_geotiff': str(coarse)})
    with pytest.raises(ArgumentError, match=r'adiyaman 2 x 2.*--data.pixel_m'):
        make(path, tmp_path / 'chips')
    dm = make(path, tmp_path / 'chips', pixel_m=1.0)
    chip = dm.chips('adiyaman')[0]
    assert chip['image'].shape[-2:] == (16, 16)  # 16 m at 1 m, resampled
    with pytest.raises(ArgumentError, match='pixel_m must be positive'):
        make(training_scene, tmp_path / 'chips', pixel_m=0.0)
