# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import math
from collections.abc import Callable
from typing import cast

import kornia.augmentation as K
import pytest
import torch
from scipy.special import digamma, polygamma
from torch import Tensor

from torchgeo_sar_damage.errors import ArgumentError
from torchgeo_sar_damage.transforms import (
    GEOMETRIC_POLICIES,
    AmplitudeToDecibel,
    DecibelToAmplitude,
    DecibelToPower,
    PowerToDecibel,
    RandomDecibelGain,
    RandomSpeckle,
    SARGeometricAugmentation,
    sar_geometric_augmentation,
)
from torchgeo_sar_damage.transforms.sar import Domain

DB_PER_LN = 10 / math.log(10)


@pytest.fixture(
    params=[
        'cpu',
        pytest.param(
            'cuda',
            marks=pytest.mark.skipif(
                not torch.cuda.is_available(), reason='CUDA not available'
            ),
        ),
    ]
)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


def log_speckle_mean_db(looks: float) -> float:
    """E[10 log10 n] for n ~ Gamma(L, rate L)."""
    return float(DB_PER_LN * (digamma(looks) - math.log(looks)))


def log_speckle_std_db(looks: float) -> float:
    return float(DB_PER_LN * math.sqrt(polygamma(1, looks)))


class TestDecibelConversions:
    def test_power_to_decibel(self, device: torch.device) -> None:
        x = torch.tensor([0.1, 1.0, 100.0, 0.0, -1.0], device=device)
        out = PowerToDecibel()(x.reshape(1, 1, 1, 5)).flatten()
        expected = torch.tensor([-10.0, 0.0, 20.0, -100.0, -100.0], device=device)
        torch.testing.assert_close(out, expected)

    def test_amplitude_to_decibel(self, device: torch.device) -> None:
        x = torch.tensor([0.1, 1.0, 10.0, 0.0], device=device)
        out = AmplitudeToDecibel()(x.reshape(1, 1, 2, 2)).flatten()
        expected = torch.tensor([-20.0, 0.0, 20.0, -100.0], device=device)
        torch.testing.assert_close(out, expected)

    def test_amplitude_and_power_agree(self, device: torch.device) -> None:
        amplitude = torch.rand(2, 3, 8, 8, device=device) + 0.01
        torch.testing.assert_close(
            AmplitudeToDecibel()(amplitude), PowerToDecibel()(amplitude**2)
        )

    def test_round_trips(self, device: torch.device) -> None:
        power = torch.rand(4, 2, 8, 8, device=device) * 10 + 1e-3
        torch.testing.assert_close(DecibelToPower()(PowerToDecibel()(power)), power)
        torch.testing.assert_close(
            DecibelToAmplitude()(AmplitudeToDecibel()(power)), power
        )
        db = torch.tensor([-20.0, -10.0, 0.0, 3.0], device=device).reshape(1, 1, 2, 2)
        torch.testing.assert_close(
            DecibelToPower()(db).flatten(),
            torch.tensor([0.01, 0.1, 1.0, 10**0.3], device=device),
        )
        torch.testing.assert_close(
            DecibelToAmplitude()(db).flatten(),
            torch.tensor([0.1, 10**-0.5, 1.0, 10**0.15], device=device),
        )

    @pytest.mark.parametrize(
        'transform',
        [PowerToDecibel, AmplitudeToDecibel, DecibelToPower, DecibelToAmplitude],
    )
    def test_nan_and_shape(
        self, transform: type[K.IntensityAugmentationBase2D], device: torch.device
    ) -> None:
        x = torch.rand(3, 2, 5, 7, device=device) + 0.1
        x[1, 0, 2, 3] = math.nan
        out = transform()(x)
        assert out.shape == x.shape
        assert torch.equal(out.isnan(), x.isnan())
        single = transform(keepdim=True)(x[0])
        assert single.shape == x[0].shape

    def test_in_augmentation_sequential(self, device: torch.device) -> None:
        torch.manual_seed(0)
        db = torch.full((2, 1, 16, 16), -8.0, device=device)
        db[0, 0, 0, 0] = math.nan
        augment = K.AugmentationSequential(
            DecibelToPower(),
            RandomSpeckle(looks=(4.0, 4.0), domain='linear', p=1.0),
            RandomDecibelGain(domain='linear', p=1.0),
            PowerToDecibel(),
            data_keys=['input'],
        )
        out = augment(db)
        assert out.shape == db.shape
        assert torch.equal(out.isnan(), db.isnan())
        assert not torch.equal(out.nan_to_num(), db.nan_to_num())

    def test_bad_eps(self) -> None:
        with pytest.raises(ArgumentError, match='eps must be positive'):
            PowerToDecibel(eps=0)
        with pytest.raises(ValueError, match='eps must be positive'):
            AmplitudeToDecibel(eps=-1)


class TestRandomSpeckle:
    def test_linear_statistics(self, device: torch.device) -> None:
        torch.manual_seed(0)
        x = torch.full((4, 2, 64, 64), 0.3, device=device)
        ratio = RandomSpeckle(looks=(4.0, 4.0), domain='linear', p=1.0)(x) / x
        assert ratio.mean().item() == pytest.approx(1.0, abs=0.02)
        cv = (ratio.std() / ratio.mean()).item()
        assert cv == pytest.approx(1 / math.sqrt(4), abs=0.02)
        assert (ratio > 0).all()

    @pytest.mark.parametrize('looks', [1.0, 4.0])
    def test_decibel_statistics(self, looks: float, device: torch.device) -> None:
        torch.manual_seed(0)
        x = torch.full((4, 1, 128, 128), -7.0, device=device)
        shift = RandomSpeckle(looks=(looks, looks), p=1.0)(x) - x
        assert shift.isfinite().all()
        assert shift.mean().item() == pytest.approx(
            log_speckle_mean_db(looks), abs=0.05
        )
        assert shift.std().item() == pytest.approx(log_speckle_std_db(looks), rel=0.03)

    def test_documented_single_look_numbers(self) -> None:
        assert log_speckle_mean_db(1.0) == pytest.approx(-2.51, abs=0.005)
        assert log_speckle_std_db(1.0) == pytest.approx(5.57, abs=0.005)
        assert log_speckle_mean_db(4.0) == pytest.approx(-0.57, abs=0.005)
        assert log_speckle_std_db(4.0) == pytest.approx(2.31, abs=0.005)

    def test_looks_per_image(self) -> None:
        torch.manual_seed(0)
        x = torch.ones(16, 1, 32, 32)
        augment = RandomSpeckle(looks=(1.0, 16.0), domain='linear', p=1.0)
        out = augment(x)
        looks = augment._params['looks']
        assert looks.shape == (16,)
        assert ((looks >= 1) & (looks <= 16)).all()
        assert torch.unique(looks).numel() == 16
        # the speckle of each image follows its own ENL: CV ~ 1/sqrt(L)
        cv = out.flatten(1).std(dim=1) / out.flatten(1).mean(dim=1)
        torch.testing.assert_close(cv, looks.rsqrt(), rtol=0.15, atol=0)

    def test_p_zero_is_identity(self, device: torch.device) -> None:
        x = torch.randn(3, 1, 8, 8, device=device)
        x[0, 0, 0, 0] = math.nan
        out = RandomSpeckle(p=0.0)(x)
        torch.testing.assert_close(out, x, equal_nan=True)

    def test_nan_preserved(self, device: torch.device) -> None:
        x = torch.rand(2, 1, 8, 8, device=device)
        x[:, :, :2] = math.nan
        for domain in ('db', 'linear'):
            out = RandomSpeckle(domain=domain, p=1.0)(x)
            assert torch.equal(out.isnan(), x.isnan())

    def test_deterministic_given_seed(self, device: torch.device) -> None:
        x = torch.randn(4, 1, 8, 8, device=device)
        augment = RandomSpeckle(p=0.5)
        torch.manual_seed(1)
        first = augment(x)
        torch.manual_seed(1)
        second = augment(x)
        assert torch.equal(first, second)
        assert torch.equal(augment(x, params=augment._params), second)

    def test_same_on_batch(self) -> None:
        x = torch.zeros(3, 1, 8, 8)
        out = RandomSpeckle(p=1.0, same_on_batch=True)(x)
        assert torch.equal(out[0], out[1])
        assert torch.equal(out[0], out[2])

    def test_bad_arguments(self) -> None:
        with pytest.raises(ArgumentError, match='domain'):
            RandomSpeckle(domain='amplitude')  # type: ignore[arg-type]
        with pytest.raises(ArgumentError, match='looks'):
            RandomSpeckle(looks=(0.0, 1.0))
        with pytest.raises(ArgumentError, match='looks'):
            RandomSpeckle(looks=(4.0, 1.0))


class TestRandomDecibelGain:
    def test_range_and_constant_per_image(self, device: torch.device) -> None:
        torch.manual_seed(0)
        x = torch.randn(32, 2, 8, 8, device=device)
        x[0, 1, 3, 3] = math.nan
        out = RandomDecibelGain(gain_db=(-1.5, 0.5), p=1.0)(x)
        gain = (out - x).flatten(1)
        first = gain[:, 1:2]
        torch.testing.assert_close(
            gain.nan_to_num(first[0, 0].item()), first.expand_as(gain)
        )
        assert (first >= -1.5 - 1e-5).all()
        assert (first <= 0.5 + 1e-5).all()
        assert first.unique().numel() > 1
        assert torch.equal(out.isnan(), x.isnan())

    def test_linear_is_multiplicative(self, device: torch.device) -> None:
        power = torch.rand(8, 1, 4, 4, device=device) + 0.1
        augment = RandomDecibelGain(domain='linear', p=1.0)
        out = augment(power)
        gain_db = augment._params['gain_db'].to(device).reshape(-1, 1, 1, 1)
        torch.testing.assert_close(out, power * 10 ** (gain_db / 10))
        torch.testing.assert_close(
            PowerToDecibel()(out), PowerToDecibel()(power) + gain_db
        )

    def test_p_zero_is_identity(self) -> None:
        x = torch.randn(4, 1, 4, 4)
        assert torch.equal(RandomDecibelGain(p=0.0)(x), x)

    def test_bad_arguments(self) -> None:
        with pytest.raises(ArgumentError, match='gain_db'):
            RandomDecibelGain(gain_db=(2.0, -2.0))
        with pytest.raises(ArgumentError, match='domain'):
            RandomDecibelGain(domain='DB')  # type: ignore[arg-type]


def make_batch(batch_size: int, size: int, device: torch.device) -> dict[str, Tensor]:
    """A model batch whose keys are functions of one asymmetric pattern.

    ``sar`` grows from west to east in every row (and from north to south across
    rows) and is positive, so the 0 fill of a shift is recognisable; ``dsm``,
    ``sar_valid`` and ``footprint`` are fixed functions of it, so any misalignment
    between keys breaks those relations.
    """
    y, x = torch.meshgrid(
        torch.arange(size, dtype=torch.float32),
        torch.arange(size, dtype=torch.float32),
        indexing='ij',
    )
    pattern = (1 + x + size * y).to(device)
    sar = pattern.expand(batch_size, 1, size, size).clone()
    centre = slice(size // 2 - size // 8, size // 2 + size // 8)
    target = torch.zeros(size, size, device=device)
    target[centre, centre] = 1
    neighbours = (pattern % 7 == 0).float()
    footprint = torch.stack([target, neighbours]).expand(batch_size, 2, size, size)
    return {
        'sar': sar,
        'sar_valid': torch.ones_like(sar),
        'footprint': footprint.clone(),
        'dsm': 2 * sar,
        'tabular': torch.randn(batch_size, 5, device=device),
        'label': torch.arange(batch_size, device=device),
    }


def d4(image: Tensor) -> list[Tensor]:
    """The 8 flips and rotations of a [..., H, W] square."""
    out = []
    for k in range(4):
        rotated = torch.rot90(image, k, dims=(-2, -1))
        out += [rotated, rotated.flip(-1)]
    return out


class TestSARGeometricAugmentation:
    def test_keys_stay_aligned(self, device: torch.device) -> None:
        torch.manual_seed(0)
        batch = make_batch(64, 32, device)
        for policy in GEOMETRIC_POLICIES:
            out = SARGeometricAugmentation(policy)(batch)
            sar = out['sar']
            assert set(out) == set(batch)
            assert not any(v.isnan().any() for v in out.values())
            torch.testing.assert_close(out['dsm'], 2 * sar)
            torch.testing.assert_close(out['sar_valid'], (sar > 0).float())
            neighbours = ((sar % 7 == 0) & (sar > 0)).float()
            torch.testing.assert_close(out['footprint'][:, 1:], neighbours)
            assert torch.equal(out['tabular'], batch['tabular'])
            assert torch.equal(out['label'], batch['label'])

    def test_azimuth_flips_all_keys_identically(self, device: torch.device) -> None:
        torch.manual_seed(0)
        batch = make_batch(32, 16, device)
        out = SARGeometricAugmentation('azimuth', max_shift=0)(batch)
        flipped = torch.zeros(32, dtype=torch.bool)
        for i in range(32):
            if torch.equal(out['sar'][i], batch['sar'][i]):
                expected = {k: batch[k][i] for k in ('sar', 'footprint', 'dsm')}
            else:
                flipped[i] = True
                expected = {
                    k: batch[k][i].flip(-2) for k in ('sar', 'footprint', 'dsm')
                }
            for key, value in expected.items():
                assert torch.equal(out[key][i], value), (i, key)
        assert 0 < flipped.sum() < 32

    def test_all_gives_every_flip_and_rotation(self, device: torch.device) -> None:
        torch.manual_seed(0)
        batch = make_batch(128, 16, device)
        out = SARGeometricAugmentation('all', max_shift=0)(batch)
        seen = set()
        for i in range(128):
            candidates = d4(batch['sar'][i])
            matches = [
                j for j, c in enumerate(candidates) if torch.equal(out['sar'][i], c)
            ]
            assert len(matches) == 1
            j = matches[0]
            seen.add(j)
            assert torch.equal(out['footprint'][i], d4(batch['footprint'][i])[j])
            assert torch.equal(out['dsm'][i], d4(batch['dsm'][i])[j])
        assert seen == set(range(8))

    @staticmethod
    def west_to_east_kept(sar: Tensor) -> Tensor:
        """Per sample: do the valid pixels of every row still increase eastwards?"""
        left, right = sar[..., :-1], sar[..., 1:]
        both = (left > 0) & (right > 0)
        return ((right > left) | ~both).flatten(1).all(dim=1)

    def test_azimuth_never_flips_east_west(self, device: torch.device) -> None:
        torch.manual_seed(0)
        batch = make_batch(256, 16, device)
        augment = SARGeometricAugmentation('azimuth', max_shift=0.125)
        for _ in range(4):
            out = augment(batch)
            assert self.west_to_east_kept(out['sar']).all()
            # but it does flip north-south sometimes
            down = out['sar'][..., 1:, :] - out['sar'][..., :-1, :]
            assert (down < 0).flatten(1).any(dim=1).any()

    def test_all_flips_east_west_sometimes(self, device: torch.device) -> None:
        torch.manual_seed(0)
        batch = make_batch(64, 16, device)
        kept = self.west_to_east_kept(SARGeometricAugmentation('all')(batch)['sar'])
        assert 0 < kept.sum() < 64

    def test_shift_keeps_target_and_binary_masks(self, device: torch.device) -> None:
        torch.manual_seed(0)
        batch = make_batch(64, 64, device)
        out = SARGeometricAugmentation('azimuth')(batch)
        assert not torch.equal(out['sar'], batch['sar'])
        target = out['footprint'][:, 0].flatten(1).sum(dim=1)
        assert torch.equal(target, batch['footprint'][:, 0].flatten(1).sum(dim=1))
        for key in ('footprint', 'sar_valid'):
            assert set(out[key].unique().tolist()) <= {0.0, 1.0}
        # a shift of at most 4 px of 64 leaves at most 4 columns and 4 rows of fill
        filled = (out['sar_valid'] == 0).flatten(1).sum(dim=1)
        assert filled.max() <= 2 * 4 * 64
        assert filled.max() > 0

    def test_none_is_identity(self, device: torch.device) -> None:
        batch = make_batch(4, 8, device)
        augment = SARGeometricAugmentation('none')
        out = augment(batch)
        assert out is not batch
        for key, value in batch.items():
            assert out[key] is value

    def test_integer_masks_and_missing_keys(self, device: torch.device) -> None:
        torch.manual_seed(0)
        batch = make_batch(8, 16, device)
        footprint = batch['footprint'].to(torch.uint8)
        out = SARGeometricAugmentation('all')(
            {'footprint': footprint, 'dsm': batch['dsm']}
        )
        assert set(out) == {'footprint', 'dsm'}
        assert out['footprint'].dtype == torch.uint8
        assert set(out['footprint'].unique().tolist()) <= {0, 1}
        neighbours = ((out['dsm'] / 2) % 7 == 0) & (out['dsm'] > 0)
        assert torch.equal(out['footprint'][:, 1:].bool(), neighbours)
        mask_only = SARGeometricAugmentation('azimuth')({'footprint': footprint})
        assert mask_only['footprint'].dtype == torch.uint8
        assert mask_only['footprint'].shape == footprint.shape

    def test_deterministic_given_seed(self, device: torch.device) -> None:
        batch = make_batch(16, 16, device)
        augment = SARGeometricAugmentation('all')
        torch.manual_seed(3)
        first = augment(batch)
        torch.manual_seed(3)
        second = augment(batch)
        for key in ('sar', 'footprint', 'dsm', 'sar_valid'):
            assert torch.equal(first[key], second[key])

    def test_unknown_policy(self) -> None:
        with pytest.raises(ValueError, match=r"'range'.*none, azimuth, all"):
            SARGeometricAugmentation('range')

    def test_bad_shift(self) -> None:
        with pytest.raises(ArgumentError, match='max_shift'):
            SARGeometricAugmentation(max_shift=0.5)

    def test_own_keys(self, device: torch.device) -> None:
        """Any batch keys, e.g. a TorchGeo sample's ``image`` and ``mask``."""
        torch.manual_seed(0)
        batch = make_batch(16, 16, device)
        augment = SARGeometricAugmentation(
            'all', max_shift=0, image_keys=('image',), mask_keys=('mask',)
        )
        out = augment({'image': batch['sar'], 'mask': batch['footprint'], 'x': 1})
        assert out['x'] == 1
        for i in range(16):
            j = [
                k
                for k, c in enumerate(d4(batch['sar'][i]))
                if torch.equal(out['image'][i], c)
            ]
            assert len(j) == 1
            assert torch.equal(out['mask'][i], d4(batch['footprint'][i])[j[0]])
        # the project's model batch keys are the defaults, so they are left alone
        mine = augment(batch)
        for key, value in batch.items():
            assert mine[key] is value
        with pytest.raises(ValueError, match='image_keys'):
            SARGeometricAugmentation(image_keys='image')

    def test_constructor_function_is_deprecated(self) -> None:
        with pytest.deprecated_call(match='SARGeometricAugmentation'):
            augment = sar_geometric_augmentation('all', max_shift=0.125)
        assert isinstance(augment, SARGeometricAugmentation)
        assert (augment.policy, augment.max_shift) == ('all', 0.125)


@pytest.mark.parametrize(
    ('make', 'match'),
    [
        (lambda: PowerToDecibel(eps=0), 'eps'),
        (lambda: AmplitudeToDecibel(eps=-1), 'eps'),
        (lambda: RandomSpeckle(looks=(0.0, 1.0)), 'looks'),
        (lambda: RandomSpeckle(looks=(4.0, 1.0)), 'looks'),
        (lambda: RandomSpeckle(looks='many'), 'looks'),  # type: ignore[arg-type]
        (lambda: RandomSpeckle(domain=cast(Domain, 'amplitude')), 'domain'),
        (lambda: RandomDecibelGain(gain_db=(1.0, float('nan'))), 'gain_db'),
        (lambda: RandomDecibelGain(domain=cast(Domain, 'power')), 'domain'),
        (lambda: SARGeometricAugmentation('range'), 'policy'),
        (lambda: SARGeometricAugmentation(max_shift=-0.1), 'max_shift'),
        (lambda: SARGeometricAugmentation(mask_keys='footprint'), 'mask_keys'),
    ],
)
def test_errors_are_value_errors(make: Callable[[], object], match: str) -> None:
    """Bad arguments raise ValueError, as Kornia's and TorchGeo's checks do."""
    with pytest.raises(ValueError, match=match) as raised:
        make()
    assert isinstance(raised.value, ArgumentError)
