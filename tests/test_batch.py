# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""The batch contract's optical modality: registry, stacking, normalisation."""

import json
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from torchgeo_sar_damage.batch import (
    IMAGE_INPUTS,
    IMAGE_KEYS,
    MASK_KEYS,
    MODALITIES,
    TOWN_MODALITIES,
    Normalisation,
    feature_names,
    image_channel_count,
    normalise_batch,
    stack_images,
)
from torchgeo_sar_damage.errors import ArgumentError
from torchgeo_sar_damage.transforms import SARGeometricAugmentation


def raw_batch(size: int = 2, px: int = 4, optical: bool = True) -> dict[str, Tensor]:
    """A raw batch without tabular columns, with optical RGB values in 0-255."""
    generator = torch.Generator().manual_seed(0)
    batch = {
        'image': torch.randn(size, 1, px, px, generator=generator) * 3 - 10,
        'tabular': torch.zeros(size, 0),
        'label': torch.arange(size) % 2,
        'building_id': torch.arange(size),
    }
    if optical:
        rgb = torch.randint(0, 256, (size, 3, px, px), generator=generator).float()
        rgb[:, 1] = rgb[:, 1] / 4 + 100  # another mean and spread per channel
        rgb[0, 0, 0, :2] = float('nan')
        rgb[1, 2, -1, -1] = float('nan')
        batch['optical'] = rgb
    return batch


def statistics(**optical: Any) -> Normalisation:  # noqa: ANN401
    return Normalisation(
        cities=('a',),
        sar_mean_db=-10.0,
        sar_std_db=3.0,
        dsm_scale_m=1.0,
        tabular_names=(),
        tabular_mean=(),
        tabular_std=(),
        class_counts=(1, 1),
        **optical,
    )


def test_registry_keeps_the_order_and_appends_optical() -> None:
    assert MODALITIES == ('sar', 'osm', 'dsm', 'gem', 'optical')
    assert TOWN_MODALITIES == MODALITIES[:4]
    assert list(IMAGE_INPUTS) == ['sar', 'osm', 'dsm', 'optical']
    assert IMAGE_INPUTS['optical'] == (('optical', 3),)
    assert IMAGE_KEYS == ('sar', 'dsm', 'optical')
    assert feature_names(('optical',)) == []
    assert feature_names(MODALITIES) == feature_names(TOWN_MODALITIES)


@pytest.mark.parametrize(
    ('modalities', 'channels'),
    [
        (['optical'], 3),
        (['sar', 'optical'], 5),
        (['gem', 'optical'], 3),
        (['sar', 'osm', 'dsm'], 5),
        (list(MODALITIES), 8),
    ],
)
def test_image_channel_count(modalities: list[str], channels: int) -> None:
    assert image_channel_count(modalities) == channels


def test_stack_images_puts_optical_last() -> None:
    n, px = 2, 3
    batch = {
        key: torch.full((n, c, px, px), float(i))
        for i, (key, c) in enumerate(
            [('sar', 1), ('sar_valid', 1), ('footprint', 2), ('dsm', 1), ('optical', 3)]
        )
    }
    batch['optical'] += torch.arange(3.0).reshape(1, 3, 1, 1) / 10
    # the modalities' order in the argument does not matter
    stacked = stack_images(batch, ['optical', 'dsm', 'sar', 'osm'])
    assert stacked.shape == (n, image_channel_count(MODALITIES), px, px)
    assert stacked[0, :, 0, 0].tolist() == pytest.approx([0, 1, 2, 2, 3, 4.0, 4.1, 4.2])
    only = stack_images(batch, ['optical', 'gem'])
    assert torch.equal(only, batch['optical'])
    sar = stack_images(batch, ['sar', 'optical'])
    assert sar[0, :, 0, 0].tolist() == pytest.approx([0, 1, 4.0, 4.1, 4.2])


def test_fit_optical_statistics_against_numpy() -> None:
    first, second = raw_batch(2), raw_batch(3, optical=True)
    second['optical'] = second['optical'] * 0.5 + 7
    plain = raw_batch(2, optical=False)
    stats = Normalisation.fit(iter([first, plain, second]), ['a'], [], 2)
    pixels = np.concatenate(
        [
            b['optical'].numpy().transpose(1, 0, 2, 3).reshape(3, -1)
            for b in (first, second)
        ],
        axis=1,
    ).astype(np.float64)
    assert np.isnan(pixels).sum() == 6
    assert stats.optical_mean == pytest.approx(np.nanmean(pixels, axis=1), rel=1e-9)
    assert stats.optical_std == pytest.approx(np.nanstd(pixels, axis=1), rel=1e-6)
    assert len(set(stats.optical_mean)) == 3
    # SAR statistics are those of a fit without optical
    without = Normalisation.fit(
        iter([raw_batch(2, optical=False), plain, raw_batch(3, optical=False)]),
        ['a'],
        [],
        2,
    )
    assert without.optical_mean == without.optical_std == ()
    assert stats.sar_mean_db == pytest.approx(without.sar_mean_db)


def test_fit_refuses_a_change_of_optical_bands() -> None:
    other = raw_batch(2)
    other['optical'] = other['optical'][:, :2]
    with pytest.raises(ArgumentError, match='2 channels in one batch and 3'):
        Normalisation.fit(iter([raw_batch(2), other]), ['a'], [], 2)


def test_normalise_optical() -> None:
    stats = statistics(optical_mean=(100.0, 120.0, 80.0), optical_std=(50.0, 10.0, 2.0))
    raw = raw_batch(2)
    batch = normalise_batch(raw, stats, ['sar', 'optical'])
    optical = batch['optical']
    assert optical.shape == (2, 3, 4, 4)
    assert optical.dtype == torch.float32
    finite = torch.isfinite(raw['optical'])
    assert not finite.all()
    assert (optical[~finite] == 0).all()
    mean = torch.tensor(stats.optical_mean).reshape(1, 3, 1, 1)
    std = torch.tensor(stats.optical_std).reshape(1, 3, 1, 1)
    expected = ((raw['optical'] - mean) / std)[finite]
    assert torch.allclose(optical[finite], expected)
    # only when the modalities include it; the rest of the batch is unchanged
    other = normalise_batch(raw, stats, ['sar'])
    assert 'optical' not in other
    assert set(batch) - set(other) == {'optical'}
    assert all(torch.equal(batch[k], other[k]) for k in other)


def test_normalise_refuses_optical_without_its_image_or_statistics() -> None:
    stats = statistics(optical_mean=(1.0, 2.0, 3.0), optical_std=(1.0, 1.0, 1.0))
    with pytest.raises(ArgumentError, match="'optical' needs the raw batch's"):
        normalise_batch(raw_batch(2, optical=False), stats, ['sar', 'optical'])
    # no optical modality: no optical image needed
    normalise_batch(raw_batch(2, optical=False), stats, ['sar'])
    with pytest.raises(ArgumentError, match='optical mean for 0 channels'):
        normalise_batch(raw_batch(2), statistics(), ['sar', 'optical'])


def test_old_statistics_dict_loads() -> None:
    old = statistics().to_dict()
    del old['optical_mean'], old['optical_std']
    loaded = Normalisation.from_dict(json.loads(json.dumps(old)))
    assert loaded == statistics()
    assert loaded.optical_mean == loaded.optical_std == ()
    new = statistics(optical_mean=(1.0, 2.0, 3.0), optical_std=(4.0, 5.0, 6.0))
    assert Normalisation.from_dict(json.loads(json.dumps(new.to_dict()))) == new


def test_geometric_augmentation_moves_optical_with_the_sar() -> None:
    torch.manual_seed(0)
    n, px = 16, 8
    sar = torch.randn(n, 1, px, px)
    batch = {
        'sar': sar,
        'sar_valid': torch.ones(n, 1, px, px),
        'footprint': torch.zeros(n, 2, px, px),
        'dsm': sar.clone(),
        'optical': sar.repeat(1, 3, 1, 1),
    }
    augment = SARGeometricAugmentation(
        'all', image_keys=IMAGE_KEYS, mask_keys=MASK_KEYS
    )
    out = augment(batch)
    assert not torch.equal(out['sar'], sar)  # something moved
    assert torch.equal(out['optical'], out['sar'].repeat(1, 3, 1, 1))
