# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Platt scaling and bias-corrected temperature scaling of damage probabilities."""

import math

import pytest
import torch

from torchgeo_sar_damage.errors import ArgumentError
from torchgeo_sar_damage.reliability import (
    CALIBRATION_METHODS,
    INVERSE_TEMPERATURE_RANGE,
    calibrate_logits,
    expected_calibration_error,
    fit_calibration,
    fit_platt,
    fit_temperature,
)


def sample(
    a: float, b: float, n: int = 20_000, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``z ~ N(0, 2)`` and labels drawn from ``sigmoid(a z + b)``."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator=generator) * 2
    y = (torch.rand(n, generator=generator) < torch.sigmoid(a * z + b)).long()
    return z, y


@pytest.mark.parametrize(('a', 'b'), [(1.0, 0.0), (0.5, -1.5), (2.0, 1.0), (0.3, -3.0)])
def test_fit_platt_recovers_scale_and_bias(a: float, b: float) -> None:
    z, y = sample(a, b)
    scale, bias = fit_platt(z, y)
    assert scale == pytest.approx(a, rel=0.08)
    assert bias == pytest.approx(b, abs=0.1)
    # [N, 1] logits and float targets give the same fit
    assert fit_platt(z[:, None], y.float()) == pytest.approx((scale, bias))


def test_fit_platt_is_the_maximum_likelihood() -> None:
    """No nearby (a, b) has a lower negative log-likelihood (smoothed targets)."""
    z, y = sample(0.7, -0.8, n=2000)
    a, b = fit_platt(z, y)
    n_pos = float(y.sum())
    n_neg = len(y) - n_pos
    t = torch.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2)).double()

    def nll(a: float, b: float) -> float:
        s = a * z.double() + b
        return float((torch.nn.functional.softplus(s) - t * s).mean())

    best = nll(a, b)
    for da, db in [(1e-3, 0), (-1e-3, 0), (0, 1e-3), (0, -1e-3), (1e-3, -1e-3)]:
        assert nll(a + da, b + db) > best


def test_bcts_beats_temperature_on_shifted_logits() -> None:
    """A class-balanced model's logits: over-confident and shifted up by 2.

    The town's damage rate is low (labels from ``sigmoid(z - 2)``), the model's
    logits are ``1.5 z + 2``: a temperature cannot move the probabilities down as a
    whole, the bias can.
    """
    z, y = sample(1.0, -2.0, seed=1)
    logits = 1.5 * z + 2.0  # the true logit is z - 2
    temperature = fit_temperature(logits, y)
    t_only = torch.sigmoid(calibrate_logits(logits, temperature))
    t_bcts, bias = fit_calibration(logits, y, 'bcts')
    bcts = torch.sigmoid(calibrate_logits(logits, t_bcts, bias))
    ece_temperature = expected_calibration_error(t_only, y)
    ece_bcts = expected_calibration_error(bcts, y)
    assert ece_temperature > 0.15
    assert ece_bcts < 0.02
    assert ece_temperature - ece_bcts > 0.1
    # the fit finds the map back to the true logit: z - 2 = logits / 1.5 - 10 / 3
    assert t_bcts == pytest.approx(1.5, rel=0.08)
    assert bias == pytest.approx(-10 / 3, abs=0.2)


def test_fit_platt_separable_data_stays_finite() -> None:
    logits = torch.tensor([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])
    targets = torch.tensor([0, 0, 0, 1, 1, 1])
    a, b = fit_platt(logits, targets)
    assert math.isfinite(a)
    assert math.isfinite(b)
    assert INVERSE_TEMPERATURE_RANGE[0] <= a <= INVERSE_TEMPERATURE_RANGE[1]
    assert b == pytest.approx(0, abs=1e-6)  # symmetric data
    # the smoothed targets are matched, not 0 and 1
    p = torch.sigmoid(a * logits + b)
    assert float(p[-1]) < 1 - 1e-3
    assert float(p[0]) > 1e-3


def test_fit_platt_degenerate_inputs() -> None:
    logits = torch.tensor([-1.0, 0.0, 1.0, 2.0])
    assert fit_platt(logits, torch.zeros(4)) == (1.0, 0.0)
    assert fit_platt(logits, torch.ones(4)) == (1.0, 0.0)
    assert fit_platt(torch.empty(0), torch.empty(0)) == (1.0, 0.0)
    assert fit_platt(logits, torch.full((4,), -1)) == (1.0, 0.0)
    # every logit equal: no scale to fit, the bias gives the smoothed damage rate
    a, b = fit_platt(torch.zeros(10), torch.tensor([0] * 7 + [1] * 3))
    assert a == 1.0
    smoothed = (3 * (3 + 1) / (3 + 2) + 7 * 1 / (7 + 2)) / 10
    assert b == pytest.approx(math.log(smoothed / (1 - smoothed)))


def test_fit_platt_ignores_unlabelled_and_non_finite() -> None:
    z, y = sample(0.5, -1.5, n=4000)
    expected = fit_platt(z, y)
    z_more = torch.cat([z, torch.tensor([50.0, -50.0, math.nan, math.inf])])
    y_more = torch.cat([y, torch.tensor([-1, -1, 1, 0])])
    assert fit_platt(z_more, y_more) == pytest.approx(expected)


def test_fit_platt_keeps_the_scale_in_range() -> None:
    """Anti-correlated logits: the scale stops at its lower bound, never negative."""
    z, y = sample(-1.0, -1.0)
    a, b = fit_platt(z, y)
    assert a == INVERSE_TEMPERATURE_RANGE[0]
    # b is the best bias for that scale: close to the log-odds of the damage rate
    rate = float(y.float().mean())
    assert b == pytest.approx(math.log(rate / (1 - rate)), abs=0.1)
    z, y = sample(1.0, 0.0)
    a, _ = fit_platt(z * 1e-3, y)  # would need a = 1000
    assert a == INVERSE_TEMPERATURE_RANGE[1]


def test_fit_calibration_methods() -> None:
    assert CALIBRATION_METHODS == ('temperature', 'bcts', 'platt')
    z, y = sample(0.5, -1.5, n=4000)
    temperature, bias = fit_calibration(z, y, 'temperature')
    assert bias == 0.0
    assert temperature == fit_temperature(z, y)
    a, b = fit_platt(z, y)
    assert fit_calibration(z, y, 'bcts') == pytest.approx((1 / a, b))
    assert fit_calibration(z, y, 'platt') == fit_calibration(z, y, 'bcts')
    assert fit_calibration(z, y) == fit_calibration(z, y, 'bcts')
    with pytest.raises(ArgumentError, match="calibration 'isotonic' is unknown"):
        fit_calibration(z, y, 'isotonic')  # type: ignore[arg-type]
    grades = torch.randn(100, 4)
    labels = torch.randint(0, 4, (100,))
    assert fit_calibration(grades, labels, 'temperature')[1] == 0.0
    with pytest.raises(ArgumentError, match='binary logits'):
        fit_calibration(grades, labels, 'bcts')
    with pytest.raises(ArgumentError, match='one target per logit'):
        fit_platt(z, y[:-1])


def test_calibrate_logits() -> None:
    z = torch.tensor([-2.0, 0.0, 3.0])
    torch.testing.assert_close(
        calibrate_logits(z, 2.0, -0.5), torch.tensor([-1.5, -0.5, 1.0])
    )
    torch.testing.assert_close(
        calibrate_logits(z[:, None], torch.tensor(2.0), torch.tensor(-0.5)),
        torch.tensor([[-1.5], [-0.5], [1.0]]),
    )
    torch.testing.assert_close(calibrate_logits(z), z)
    grades = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    # the bias is not applied to several classes
    torch.testing.assert_close(calibrate_logits(grades, 2.0, 5.0), grades / 2)
