# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""The datasets combined with ``&`` and sampled per building, on a simulated scene."""

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from torchgeo_sar_damage.datasets import (
    DSM,
    BuildingChips,
    COSMOSkyMed,
    DamageLabels,
    GEMExposure,
    ModalityIntersection,
    OSMBuildings,
    collate_buildings,
)
from torchgeo_sar_damage.samplers import BuildingSampler

KEYS = {
    'image',
    'dsm',
    'footprint',
    'tabular',
    'label',
    'building_id',
    'bounds',
    'transform',
}


@pytest.fixture(scope='module')
def combined(
    tiny_scene: Path, tiny_manifest: dict[str, Any]
) -> tuple[ModalityIntersection, OSMBuildings, DamageLabels, GEMExposure, DSM]:
    files = tiny_manifest['cities']['nurdagi']['files']
    folder = tiny_scene / 'nurdagi'
    osm = OSMBuildings(paths=folder / files['osm'])
    labels = DamageLabels(paths=folder / files['labels'])
    gem = GEMExposure(
        paths=[folder / f for f in files['gem']], admin=folder / files['admin']
    )
    dsm = DSM(paths=folder / files['dsm'])
    sar = COSMOSkyMed(paths=folder / files['sar_hdf5'], units='db')
    ds = sar & dsm & osm & gem & labels
    assert isinstance(ds, ModalityIntersection)
    return ds, osm, labels, gem, dsm


def test_one_sample_per_building(
    combined: tuple[ModalityIntersection, OSMBuildings, DamageLabels, GEMExposure, DSM],
) -> None:
    ds, osm, labels, gem, dsm = combined
    labelled = labels.labelled(osm.buildings)
    sampler = BuildingSampler(ds, osm.buildings[labelled], size=16.0)
    assert 0 < len(sampler) == labelled.sum() < len(osm.buildings)
    width = len(dsm.feature_names) + len(osm.feature_names) + len(gem.feature_names)
    for i, query in enumerate(sampler):
        sample = ds[query]
        assert set(sample) == KEYS
        assert sample['image'].shape == (1, 16, 16)  # 16 m at 1 m
        assert sample['dsm'].shape == (1, 16, 16)
        assert sample['footprint'].shape == (1, 16, 16)
        assert sample['footprint'][0, 8, 8] == 2  # the target under the centre
        assert sample['tabular'].shape == (width,)
        assert int(sample['building_id']) == int(sampler.building_ids[i])
        assert int(sample['label']) in (0, 1)  # labelled buildings only
        if i == 20:
            break


def test_chips_equal_the_dataset(
    combined: tuple[ModalityIntersection, OSMBuildings, DamageLabels, GEMExposure, DSM],
    tmp_path: Path,
) -> None:
    ds, osm, *_ = combined
    sampler = BuildingSampler(ds, osm, size=12.0)
    chips = BuildingChips(ds, sampler, tmp_path, progress=False)
    # the intersection covers the grading's area of interest only
    assert 0.5 * len(osm.buildings) < len(chips) == len(sampler) <= len(osm.buildings)
    for i, query in enumerate(sampler):
        expected = ds[query]
        got = chips[i]
        assert set(got) == set(expected) == KEYS
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value, rtol=0, atol=0, equal_nan=True)
    loader = DataLoader(chips, batch_size=16, collate_fn=collate_buildings)
    batch = next(iter(loader))
    assert batch['image'].shape == (16, 1, 12, 12)
    assert batch['footprint'].dtype == torch.uint8
    assert batch['label'].shape == (16,)


def test_city_filter(
    combined: tuple[ModalityIntersection, OSMBuildings, DamageLabels, GEMExposure, DSM],
) -> None:
    ds, osm, *_ = combined
    # the city filter is plain GeoDataFrame filtering by the caller
    table = osm.buildings
    everyone = len(BuildingSampler(ds, osm, size=12.0))
    nurdagi = table[table['city'] == 'nurdagi']
    assert len(BuildingSampler(ds, nurdagi, size=12.0)) == everyone
    atlantis = table[table['city'] == 'atlantis']
    assert len(BuildingSampler(ds, atlantis, size=12.0)) == 0
