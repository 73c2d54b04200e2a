# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""SARDamageDataModule on a small simulated scene of three towns."""

import inspect
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from torch.utils.data import WeightedRandomSampler

from torchgeo_sar_damage.datamodules import (
    TOWN_MODALITIES,
    Normalisation,
    SARDamageDataModule,
    feature_names,
    leave_one_city_out,
)
from torchgeo_sar_damage.errors import ArgumentError, InputFileError

CITIES = ('nurdagi', 'islahiye', 'adiyaman')  # the conftest's training scene
SPLIT = {
    'train_cities': ['nurdagi'],
    'val_cities': ['islahiye'],
    'test_cities': ['adiyaman'],
}
MODEL_KEYS = {'sar', 'sar_valid', 'footprint', 'dsm', 'tabular', 'label', 'building_id'}


@pytest.fixture(scope='module')
def scene(training_scene: Path) -> Path:
    """Three towns of 70 buildings at 1 m (the shared training scene)."""
    return training_scene


def make(scene: Path, **kwargs: object) -> SARDamageDataModule:
    args: dict[str, Any] = {
        **SPLIT,
        'size_m': 16.0,
        'batch_size': 8,
        'progress': False,
        'chips_root': scene.parent / 'chips',
    }
    args.update(kwargs)
    return SARDamageDataModule(scene, **args)


@pytest.fixture(scope='module')
def datamodule(scene: Path) -> SARDamageDataModule:
    dm = make(scene)
    dm.setup('fit')
    return dm


def raw_batch(dm: SARDamageDataModule) -> dict[str, torch.Tensor]:
    batch: dict[str, torch.Tensor] = next(iter(dm.val_dataloader()))
    return batch


def test_splits_by_city(datamodule: SARDamageDataModule) -> None:
    dm = datamodule
    for split, cities in SPLIT.items():
        assert getattr(dm, split) == cities
    train = dm.chips('nurdagi')
    val = dm.chips('islahiye')
    assert dm.train_dataset is not None
    assert dm.val_dataset is not None
    assert len(dm.train_dataset) == len(train) > 30
    assert len(dm.val_dataset) == len(val) > 30
    # labelled buildings only, each of its own city
    city = dm.city('nurdagi')
    labels = city.labels.building_labels(city.osm.buildings)
    assert len(train) == int((labels >= 0).sum())
    assert train.building_ids is not None
    assert set(train.building_ids.tolist()) <= set(
        city.osm.buildings['building_id'].tolist()
    )
    batch = raw_batch(dm)
    assert bool((batch['label'] >= 0).all())


@pytest.mark.parametrize(
    ('kwargs', 'error', 'match'),
    [
        (
            {'test_cities': ['nurdagi']},
            ArgumentError,
            'both train_cities and test_cities',
        ),
        (
            {'val_cities': ['adiyaman']},
            ArgumentError,
            'both val_cities and test_cities',
        ),
        (
            {'test_cities': ['atlantis']},
            ArgumentError,
            'unknown cities.*nurdagi, islahiye',
        ),
        ({'train_cities': []}, ArgumentError, 'train_cities is empty'),
        ({'modalities': ['sar', 'lidar']}, ArgumentError, 'unknown modalities'),
        ({'modalities': []}, ArgumentError, 'modalities is empty'),
        (
            {'modalities': ['sar', 'optical']},
            ArgumentError,
            "no 'optical' imagery.*BRIGHT and QuickQuakeBuildings.*sar, osm, dsm, gem",
        ),
        ({'augmentation': 'sideways'}, ArgumentError, 'azimuth'),
        ({'size_m': 0.0}, ArgumentError, 'size_m'),
        ({'sar_units': 'linear'}, ArgumentError, "sar_units must be 'db' or 'dn'"),
        ({'sar_units': 'dn'}, ArgumentError, 'intensity_augmentation=False'),
    ],
)
def test_bad_arguments(
    scene: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        make(scene, **kwargs)


def test_sar_units_and_calibration_reach_the_sar(scene: Path) -> None:
    town = make(scene).city('islahiye')
    dn = make(scene, sar_units='dn', intensity_augmentation=False).city('islahiye')
    assert (town.sar.units, dn.sar.units) == ('db', 'dn')
    x, y, t = town.sar.bounds
    cx, cy = round((x.start + x.stop) / 2), round((y.start + y.stop) / 2)
    query = (slice(cx - 8, cx + 8, 1.0), slice(cy - 8, cy + 8, 1.0), t)
    assert torch.isfinite(dn.sar[query]['image']).all()
    path = str(town.sar.index.filepath.iloc[0])
    factor = town.sar._products[path].sigma0_per_dn2[town.sar.bands[0]]
    expected = 10 * np.log10(dn.sar[query]['image'].double() ** 2 * factor)
    torch.testing.assert_close(
        town.sar[query]['image'].double(), expected, rtol=0, atol=1e-4, equal_nan=True
    )
    given: dict[str, float | str] = {
        'Rescaling_Factor': 1,
        'Calibration_Constant_Compensation_Flag': 1,
        'Range_Spreading_Loss_Compensation_Geometry': 'NONE',
        'Incidence_Angle_Compensation_Geometry': 'NONE',
    }
    unit = make(scene, calibration=given).city('islahiye')
    power_db = 10 * np.log10(dn.sar[query]['image'].double() ** 2)
    torch.testing.assert_close(
        unit.sar[query]['image'].double(), power_db, rtol=0, atol=1e-4, equal_nan=True
    )


def test_default_modalities_are_the_towns() -> None:
    default = inspect.signature(SARDamageDataModule).parameters['modalities'].default
    assert default == TOWN_MODALITIES == ('sar', 'osm', 'dsm', 'gem')


def test_missing_scene(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match='sardamage simulate'):
        SARDamageDataModule(tmp_path, ['a'], [], [])


def test_leave_one_city_out() -> None:
    folds = leave_one_city_out(['a', 'b', 'c', 'd'])
    assert [f['test'] for f in folds] == [['a'], ['b'], ['c'], ['d']]
    for fold in folds:
        together = fold['train'] + fold['val'] + fold['test']
        assert sorted(together) == ['a', 'b', 'c', 'd']
        assert len(fold['val']) == 1
    with pytest.raises(ArgumentError, match='at least three'):
        leave_one_city_out(['a', 'b'])
    with pytest.raises(ArgumentError, match='repeat'):
        leave_one_city_out(['a', 'b', 'a'])


def test_statistics_come_from_training_cities_only(
    scene: Path, datamodule: SARDamageDataModule, tmp_path: Path
) -> None:
    before = datamodule.statistics
    assert before.cities == ('nurdagi',)
    assert before.tabular_names == tuple(feature_names(TOWN_MODALITIES))
    assert sum(before.class_counts) == len(datamodule.chips('nurdagi'))
    # a copy of the scene whose test town is 6 dB brighter
    copy = tmp_path / 'scene'
    shutil.copytree(scene, copy, ignore=shutil.ignore_patterns('.chips'))
    manifest = json.loads((copy / 'scene.json').read_text())
    sar = copy / 'adiyaman' / manifest['cities']['adiyaman']['files']['sar_geotiff']
    with rasterio.open(sar, 'r+') as src:
        dn = src.read(1)
        src.write(
            np.where(dn > 0, np.minimum(dn.astype(float) * 2, 65535), 0).astype(
                dn.dtype
            ),
            1,
        )
    changed = make(copy, chips_root=tmp_path / 'chips')
    changed.setup('fit')
    assert changed.statistics == before
    old = datamodule.chips('adiyaman')[0]['image']
    new = changed.chips('adiyaman')[0]['image']
    assert float(torch.nanmean(new - old)) == pytest.approx(6.02, abs=0.1)
    # the test town does move them once it is a training town
    moved = make(
        copy,
        chips_root=tmp_path / 'chips',
        train_cities=['nurdagi', 'adiyaman'],
        test_cities=[],
    )
    assert moved.statistics.sar_mean_db != pytest.approx(before.sar_mean_db, abs=0.1)


def test_state_dict_round_trip(scene: Path, datamodule: SARDamageDataModule) -> None:
    state = datamodule.state_dict()
    other = make(scene)
    assert other.state_dict() == {}
    other.load_state_dict(state)
    assert other.statistics == datamodule.statistics
    assert Normalisation.from_dict(json.loads(json.dumps(state['statistics']))) == (
        datamodule.statistics
    )


@pytest.mark.parametrize(
    'modalities',
    [('sar',), ('sar', 'osm'), ('sar', 'dsm'), ('osm', 'gem'), TOWN_MODALITIES],
)
def test_model_batch_contract(
    scene: Path, datamodule: SARDamageDataModule, modalities: tuple[str, ...]
) -> None:
    dm = make(scene, modalities=modalities)
    dm.load_state_dict(datamodule.state_dict())
    raw = raw_batch(dm)
    batch = dm.on_after_batch_transfer(raw, 0)  # no trainer: not training
    assert set(batch) == MODEL_KEYS
    n = len(raw['label'])
    width = {'sar': 0, 'osm': 3, 'dsm': 3, 'gem': 25}
    assert batch['tabular'].shape == (n, sum(width[m] for m in modalities))
    assert batch['tabular'].shape[1] == len(feature_names(modalities))
    for key, channels in (('sar', 1), ('sar_valid', 1), ('footprint', 2), ('dsm', 1)):
        assert batch[key].shape == (n, channels, 16, 16)
        assert batch[key].dtype == torch.float32
        assert bool(torch.isfinite(batch[key]).all())
    assert bool(torch.isfinite(batch['tabular']).all())
    assert torch.equal(batch['sar_valid'], torch.isfinite(raw['image']).float())
    assert torch.equal(batch['footprint'][:, 0:1], (raw['footprint'] == 2).float())
    assert torch.equal(batch['footprint'][:, 1:2], (raw['footprint'] == 1).float())
    assert bool((batch['footprint'][:, 0, 8, 8] == 1).all())  # the target at the centre
    assert torch.equal(batch['label'], raw['label'])
    assert torch.equal(batch['building_id'], raw['building_id'])
    stats = dm.statistics
    valid = torch.isfinite(raw['image'])
    expected = (raw['image'][valid] - stats.sar_mean_db) / stats.sar_std_db
    torch.testing.assert_close(batch['sar'][valid], expected)
    assert bool((batch['sar'][~valid] == 0).all())
    assert bool((batch['dsm'] >= -1e-6).sum() > 0.9 * batch['dsm'].numel())


def test_augmentation_only_in_training(
    scene: Path, datamodule: SARDamageDataModule
) -> None:
    dm = make(scene, augmentation='all')
    dm.load_state_dict(datamodule.state_dict())
    raw = raw_batch(dm)
    for state in ('validating', 'testing', 'predicting'):
        dm.trainer = SimpleNamespace(training=False, state=state)  # type: ignore[assignment]
        first = dm.on_after_batch_transfer(raw, 0)
        second = dm.on_after_batch_transfer(raw, 0)
        plain = dm.normalise(raw)
        for key in MODEL_KEYS:
            assert torch.equal(first[key], plain[key])
            assert torch.equal(second[key], plain[key])
    dm.trainer = SimpleNamespace(training=True)  # type: ignore[assignment]
    torch.manual_seed(0)
    augmented = dm.on_after_batch_transfer(raw, 0)
    plain = dm.normalise(raw)
    assert not torch.equal(augmented['sar'], plain['sar'])
    for key in ('tabular', 'label', 'building_id'):
        assert torch.equal(augmented[key], plain[key])
    for key in ('sar_valid', 'footprint'):  # masks stay masks
        assert set(torch.unique(augmented[key]).tolist()) <= {0.0, 1.0}


def test_same_geometric_transform_on_every_image(
    scene: Path, datamodule: SARDamageDataModule
) -> None:
    dm = make(scene, augmentation='all', intensity_augmentation=False)
    mask = (torch.rand(16, 1, 16, 16) > 0.5).float()
    batch = {
        'sar': mask.clone(),
        'sar_valid': mask.clone(),
        'footprint': torch.cat([mask, 1 - mask], dim=1),
        'dsm': mask.clone(),
        'tabular': torch.zeros(16, 0),
        'label': torch.zeros(16, dtype=torch.long),
        'building_id': torch.arange(16),
    }
    torch.manual_seed(1)
    out = dm.augment(batch)
    assert not torch.equal(out['sar'], mask)
    assert torch.equal(out['sar'], out['sar_valid'])
    assert torch.equal(out['sar'], out['dsm'])
    assert torch.equal(out['sar'], out['footprint'][:, :1])
    # the fill (0) where the shift uncovers pixels is in both channels
    covered = out['footprint'].sum(1, keepdim=True) > 0
    assert torch.equal(out['footprint'][:, 1:][covered], 1 - out['sar'][covered])


def test_balanced_sampler(scene: Path, datamodule: SARDamageDataModule) -> None:
    dm = make(scene, balanced=True)
    dm.setup('fit')
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, WeightedRandomSampler)
    labels = dm.training_labels()
    weights = torch.as_tensor(loader.sampler.weights)
    counts = torch.bincount(labels, minlength=2).double()
    # each class carries the same total weight
    assert float(weights[labels == 0].sum()) == pytest.approx(1.0)
    assert float(weights[labels == 1].sum()) == pytest.approx(1.0)
    assert counts[0] != counts[1]


def test_predict_every_building_of_the_test_cities(
    scene: Path, datamodule: SARDamageDataModule
) -> None:
    dm = make(scene, test_cities=['adiyaman', 'islahiye'], val_cities=[])
    dm.load_state_dict(datamodule.state_dict())
    dm.setup('predict')
    loaders = dm.predict_dataloader()
    assert len(loaders) == 2
    for slug, loader in zip(['adiyaman', 'islahiye'], loaders, strict=True):
        ids = torch.cat([b['building_id'] for b in loader])
        labelled = len(dm.chips(slug))
        assert len(ids) == len(dm.chips(slug, labelled=False)) > labelled
        assert len(set(ids.tolist())) == len(ids)
        # prediction leaves the labels out: every building the SAR covers, label -1
        assert len(ids) == len(dm.city(slug).osm.buildings)
        batch = next(iter(loader))
        assert 'label' not in batch
        assert bool((dm.normalise(batch)['label'] == -1).all())
    tests = dm.test_dataloader()
    assert [len(t.dataset) for t in tests] == [  # type: ignore[arg-type]
        len(dm.chips('adiyaman')),
        len(dm.chips('islahiye')),
    ]
