# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchgeo_sar_damage.errors import ArgumentError
from torchgeo_sar_damage.prior_shift import (
    BOOTSTRAP_BINS,
    PriorShift,
    _bootstrap_support,
    adapt_probabilities,
    adapt_to_town,
    bbse_prior,
    bbse_rates,
    em_prior,
    expected_f1_threshold,
    prior_interval,
)
from torchgeo_sar_damage.reliability import expected_calibration_error

SOURCE_PRIOR = 0.18
SEPARATION = 2.0  # distance between the class means of the score (AUROC ~0.92)

Array = npt.NDArray[np.float64]


def town(
    n: int, prior: float, calibrated_for: float = SOURCE_PRIOR, seed: int = 0
) -> tuple[Array, npt.NDArray[np.int64]]:
    """Labels with damage rate ``prior`` and the exact posterior for ``calibrated_for``.

    The score is N(0, 1) for undamaged and N(SEPARATION, 1) for damaged buildings, the
    same in every town (label shift); the probabilities are p(damaged | score) in a
    town whose damage rate is ``calibrated_for``.
    """
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < prior).astype(np.int64)
    score = rng.normal(SEPARATION * labels, 1.0)
    likelihood_ratio = np.exp(SEPARATION * score - SEPARATION**2 / 2)
    odds = calibrated_for / (1 - calibrated_for) * likelihood_ratio
    return odds / (1 + odds), labels


def f1(predicted: npt.NDArray[np.bool_], labels: npt.NDArray[np.int64]) -> float:
    tp = int((predicted & (labels == 1)).sum())
    return 2 * tp / (int(predicted.sum()) + int((labels == 1).sum()))


# ------------------------------------------------------------------ prior estimation


@pytest.mark.parametrize('prior', [0.07, 0.2, 0.33])
def test_em_recovers_prior(prior: float) -> None:
    p, labels = town(20_000, prior)
    estimate, converged, iterations = em_prior(p, SOURCE_PRIOR)
    assert converged
    assert 1 < iterations < 100
    assert abs(estimate - prior) < 0.02
    # closer to the town's realised rate than the validation town's is
    assert abs(estimate - labels.mean()) < 0.01


@pytest.mark.parametrize('prior', [0.07, 0.2, 0.33])
def test_bbse_recovers_prior(prior: float) -> None:
    val_p, val_labels = town(20_000, SOURCE_PRIOR, seed=1)
    tpr, fpr = bbse_rates(val_p, val_labels, 0.5)
    assert 0.5 < tpr < 1
    assert 0 < fpr < 0.1
    p, _ = town(20_000, prior)
    estimate = bbse_prior(p, 0.5, tpr, fpr)
    assert estimate is not None
    assert abs(estimate - prior) < 0.02


def test_bbse_rates_by_hand() -> None:
    p = [0.9, 0.6, 0.2, 0.7, 0.1, 0.3, np.nan, 0.8]
    y = [1, 1, 1, 0, 0, 0, 1, -1]
    tpr, fpr = bbse_rates(p, y, 0.5)
    assert tpr == pytest.approx(2 / 3)
    assert fpr == pytest.approx(1 / 3)
    tpr, fpr = bbse_rates([0.9, 0.1], [1, 1], 0.5)
    assert tpr == 0.5
    assert math.isnan(fpr)
    with pytest.raises(ArgumentError, match='one label per building'):
        bbse_rates([0.1, 0.2], [1], 0.5)


def test_bbse_prior_by_hand_and_refusals() -> None:
    # q = 0.5, tpr = 0.8, fpr = 0.2 -> (0.5 - 0.2) / 0.6 = 0.5
    assert bbse_prior([0.9, 0.1, 0.6, 0.2, np.nan], 0.5, 0.8, 0.2) == pytest.approx(0.5)
    assert bbse_prior([0.9, 0.9], 0.5, 0.8, 0.2) == 1.0  # clipped
    assert bbse_prior([0.1, 0.1], 0.5, 0.8, 0.2) == 0.0
    assert bbse_prior([0.9, 0.1], 0.5, 0.52, 0.5) is None  # no separation
    assert bbse_prior([0.9, 0.1], 0.5, math.nan, 0.5) is None
    assert bbse_prior([np.nan], 0.5, 0.8, 0.2) is None


def test_em_same_prior_is_identity() -> None:
    p, _ = town(20_000, SOURCE_PRIOR)
    estimate, converged, _ = em_prior(p, SOURCE_PRIOR)
    assert converged
    assert abs(estimate - SOURCE_PRIOR) < 0.01
    adapted = adapt_probabilities(p, SOURCE_PRIOR, estimate)
    assert np.max(np.abs(adapted - p)) < 0.02
    np.testing.assert_array_equal(adapt_probabilities(p, 0.18, 0.18), p)


@pytest.mark.parametrize(
    ('p', 'expected'),
    [
        ([0.0, 0.0, 0.0], 0.0),
        ([1.0, 1.0], 1.0),
        ([0.0, 1.0, 1.0, 0.0], 0.5),
        ([0.0, 1.0, np.nan, 1.0, 1.0], 0.75),
    ],
)
def test_em_exact_zeros_and_ones(p: list[float], expected: float) -> None:
    estimate, converged, iterations = em_prior(p, SOURCE_PRIOR)
    assert estimate == expected
    assert converged
    assert iterations <= 3


def test_em_degenerate_inputs() -> None:
    assert em_prior([], 0.3) == (0.3, False, 0)
    assert em_prior([np.nan, np.nan], 0.3) == (0.3, False, 0)
    # all equal to the source rate: nothing to learn, stays there
    estimate, converged, _ = em_prior([0.18] * 50, 0.18)
    assert converged
    assert estimate == pytest.approx(0.18)
    # all equal above the source rate: the likelihood increases up to 1
    estimate, _, _ = em_prior([0.5] * 50, 0.18, max_iter=5000)
    assert estimate > 0.99
    estimate, converged, iterations = em_prior([0.5] * 50, 0.18, max_iter=3)
    assert not converged
    assert iterations == 3
    assert math.isfinite(estimate)


@pytest.mark.parametrize(
    ('probabilities', 'source_prior', 'match'),
    [
        ([0.5], 0.0, 'source_prior'),
        ([0.5], 1.0, 'source_prior'),
        ([0.5], math.nan, 'source_prior'),
        ([0.5, 1.5], 0.2, r'1\.5'),
        ([0.5, -math.inf], 0.2, 'inf'),
    ],
)
def test_em_bad_arguments(
    probabilities: list[float], source_prior: float, match: str
) -> None:
    with pytest.raises(ArgumentError, match=match):
        em_prior(probabilities, source_prior)


# -------------------------------------------------------------------- adaptation


@settings(max_examples=25, deadline=None)
@given(
    p=st.lists(st.floats(0, 1), min_size=2, max_size=30),
    source=st.floats(0.01, 0.99),
    target=st.floats(0.01, 0.99),
)
def test_adapt_probabilities_preserves_order(
    p: list[float], source: float, target: float
) -> None:
    values = np.array(p)
    adapted = adapt_probabilities(values, source, target)
    assert np.all((adapted >= 0) & (adapted <= 1))
    ordered = adapted[np.argsort(values, kind='stable')]
    assert np.all(np.diff(ordered) >= 0)
    # exact 0 and 1 stay where they are; round trip returns the input
    np.testing.assert_array_equal(adapted[values == 0], 0)
    np.testing.assert_array_equal(adapted[values == 1], 1)
    back = adapt_probabilities(adapted, target, source)
    np.testing.assert_allclose(back, values, atol=1e-9)


def test_adapt_probabilities_by_hand() -> None:
    # odds 1 at source 0.5 -> odds 3 at target 0.75
    adapted = adapt_probabilities([[0.5, np.nan], [0.0, 1.0]], 0.5, 0.75)
    assert adapted.shape == (2, 2)
    np.testing.assert_allclose(adapted, [[0.75, np.nan], [0.0, 1.0]])
    assert adapt_probabilities([0.3, 1.0], 0.5, 0.0).tolist() == [0.0, 1.0]
    with pytest.raises(ArgumentError, match='target_prior'):
        adapt_probabilities([0.3], 0.5, 1.2)
    with pytest.raises(ArgumentError, match='source_prior'):
        adapt_probabilities([0.3], 0.0, 0.5)


@pytest.mark.parametrize('prior', [0.07, 0.33])
def test_adapted_probabilities_are_calibrated(prior: float) -> None:
    p, labels = town(20_000, prior)
    before = expected_calibration_error(p, labels, 10)
    estimate, _, _ = em_prior(p, SOURCE_PRIOR)
    after = expected_calibration_error(
        adapt_probabilities(p, SOURCE_PRIOR, estimate), labels, 10
    )
    assert before > 0.04
    assert after < 0.015


# -------------------------------------------------------------------- threshold


@pytest.mark.parametrize('prior', [0.07, 0.2, 0.33])
def test_expected_f1_threshold_is_near_best(prior: float) -> None:
    p, labels = town(20_000, prior, calibrated_for=prior, seed=2)
    threshold = expected_f1_threshold(p)
    realised = f1(p >= threshold, labels)
    # brute force: every threshold, i.e. every top-k of the sorted probabilities
    order = np.argsort(-p)
    true_positives = np.cumsum(labels[order])
    best = float(np.max(2 * true_positives / (np.arange(1, p.size + 1) + labels.sum())))
    assert realised > best - 0.02
    # Lipton et al. (2014): the optimal threshold is half the optimal F1
    assert threshold == pytest.approx(best / 2, abs=0.05)


def test_expected_f1_threshold_by_hand() -> None:
    # top 2 -> 2 * 1.8 / (2 + 2.0) = 0.9, the best; between 0.9 and 0.1
    assert expected_f1_threshold([0.1, 0.9, 0.1, 0.9]) == pytest.approx(0.5)
    # all tied: only all or nothing; all gives 2c / (1 + c) > 0
    assert expected_f1_threshold([0.3] * 7) == 0.3
    assert expected_f1_threshold([0.0, 0.0]) == 0.5
    assert expected_f1_threshold([0.2, np.nan, np.inf]) == 0.2
    assert math.isnan(expected_f1_threshold([np.nan]))
    # [0.9, 0.5, 0.5, 0.05]: k = 3 gives 3.8 / 4.95, better than k = 1 or 4
    assert expected_f1_threshold([0.05, 0.5, 0.9, 0.5]) == pytest.approx(0.275)


@settings(max_examples=25, deadline=None)
@given(
    p=st.lists(
        st.sampled_from([0.0, 0.05, 0.2, 0.25, 0.5, 0.7, 1.0]), min_size=1, max_size=40
    )
)
def test_expected_f1_threshold_matches_brute_force(p: list[float]) -> None:
    values = np.array(p)
    total = values.sum()

    def plug_in(predicted: npt.NDArray[np.bool_]) -> float:
        k = int(predicted.sum())
        return 2 * values[predicted].sum() / (k + total) if k + total > 0 else 0.0

    threshold = expected_f1_threshold(values)
    # every threshold a cut between distinct values can realise, and predicting none
    cuts = [*np.unique(values), 2.0]
    best = max(plug_in(values >= t) for t in cuts)
    assert plug_in(values >= threshold) == pytest.approx(best, abs=1e-12)
    # the threshold lies strictly between two distinct values (or at the smallest)
    assert not np.any(values == threshold) or threshold == values.min()


# -------------------------------------------------------------------- interval


def test_prior_interval_contains_truth_and_narrows() -> None:
    small, _ = town(2_000, 0.25, seed=3)
    large, _ = town(50_000, 0.25, seed=4)
    low, high = prior_interval(small, SOURCE_PRIOR)
    assert low < 0.25 < high
    estimate, _, _ = em_prior(small, SOURCE_PRIOR)
    assert low < estimate < high
    low_large, high_large = prior_interval(large, SOURCE_PRIOR)
    assert low_large < 0.25 < high_large
    assert high_large - low_large < 0.5 * (high - low)
    # wider at a higher level, reproducible with a seed
    low99, high99 = prior_interval(small, SOURCE_PRIOR, level=0.99)
    assert low99 < low
    assert high99 > high
    assert prior_interval(small, SOURCE_PRIOR, seed=5) == prior_interval(
        small, SOURCE_PRIOR, seed=5
    )


def test_prior_interval_binned_matches_exact() -> None:
    p, _ = town(5_000, 0.25, seed=6)  # more distinct values than bins
    estimate, _, _ = em_prior(p, SOURCE_PRIOR)
    low, high = prior_interval(p, SOURCE_PRIOR, n_boot=400)
    assert abs((low + high) / 2 - estimate) < 0.005
    rounded = np.round(p, 2)  # few distinct values: resampled exactly
    low_r, high_r = prior_interval(rounded, SOURCE_PRIOR, n_boot=400)
    assert abs(low_r - low) < 0.005
    assert abs(high_r - high) < 0.005


def test_bootstrap_support_keeps_counts_and_sums() -> None:
    p, _ = town(5_000, 0.25, seed=7)
    values, counts = _bootstrap_support(p, BOOTSTRAP_BINS)
    assert values.size <= BOOTSTRAP_BINS
    assert counts.sum() == p.size
    assert (values * counts).sum() == pytest.approx(p.sum(), rel=1e-12)
    few = np.array([0.2, 0.1, 0.2, 1.0])
    values, counts = _bootstrap_support(few, BOOTSTRAP_BINS)
    assert values.tolist() == [0.1, 0.2, 1.0]
    assert counts.tolist() == [1, 2, 1]


def test_prior_interval_arguments() -> None:
    assert all(math.isnan(v) for v in prior_interval([np.nan], 0.2))
    for level in (0.0, 1.0, 1.5):
        with pytest.raises(ArgumentError, match='level'):
            prior_interval([0.5], 0.2, level=level)
    with pytest.raises(ArgumentError, match='n_boot'):
        prior_interval([0.5], 0.2, n_boot=0)


# -------------------------------------------------------------------- one town


def test_adapt_to_town() -> None:
    p, labels = town(20_000, 0.33)
    p[::100] = np.nan  # buildings not assessed
    result = adapt_to_town(p.reshape(100, 200), SOURCE_PRIOR)
    assert isinstance(result, PriorShift)
    assert result.adapted
    assert result.reason is None
    assert result.source_prior == SOURCE_PRIOR
    assert abs(result.estimate - 0.33) < 0.02
    low, high = result.interval
    assert low < result.estimate < high
    assert high - low < 0.03
    assert result.iterations > 1
    assert result.probabilities.shape == (100, 200)
    out = result.probabilities.reshape(-1)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(p))
    np.testing.assert_allclose(
        out, adapt_probabilities(p, SOURCE_PRIOR, result.estimate)
    )
    # at the EM fixed point the adapted probabilities sum to estimate * buildings
    assessed = int(np.isfinite(p).sum())
    assert result.expected_damaged == pytest.approx(
        result.estimate * assessed, rel=1e-4
    )
    assert result.threshold == expected_f1_threshold(out)
    keep = np.isfinite(p)
    realised = f1(out[keep] >= result.threshold, labels[keep])
    unadapted = f1(p[keep] >= expected_f1_threshold(p), labels[keep])
    assert realised >= unadapted - 0.005


@pytest.mark.parametrize(
    ('probabilities', 'source_prior', 'kwargs', 'match'),
    [
        ([0.1, 0.9, 0.5, 0.2, 0.3], 0.18, {}, 'only 5 assessed buildings'),
        ([np.nan] * 40, 0.18, {}, 'only 0 assessed buildings'),
        ([0.1, 0.9] * 20, 0.0, {}, r'source_prior=0\.0'),
        ([0.1, 0.9] * 20, 1.0, {}, r'source_prior=1\.0'),
        ([0.1, 0.9] * 20 + [np.inf], 0.18, {}, 'infinite'),
        ([0.1, 0.9] * 20 + [1.5], 0.18, {}, r'outside \[0, 1\]'),
        ([0.1, 0.9] * 20, 0.18, {'max_iter': 1}, 'did not converge'),
    ],
)
def test_adapt_to_town_fails_safe(
    probabilities: list[float], source_prior: float, kwargs: dict[str, int], match: str
) -> None:
    with pytest.warns(UserWarning, match=match):
        result = adapt_to_town(probabilities, source_prior, **kwargs)
    assert not result.adapted
    assert result.reason is not None
    np.testing.assert_array_equal(result.probabilities, probabilities)
    finite = np.array(probabilities)[np.isfinite(probabilities)]
    if finite.size:
        assert result.estimate == pytest.approx(finite.mean())
    else:
        assert math.isnan(result.estimate)
    assert all(math.isnan(v) for v in result.interval)
    assert result.expected_damaged == pytest.approx(finite.sum())


def test_adapt_to_town_argument_errors() -> None:
    p = [0.1, 0.9] * 20
    with pytest.raises(ArgumentError, match='level'):
        adapt_to_town(p, 0.18, level=1.0)
    with pytest.raises(ArgumentError, match='n_boot'):
        adapt_to_town(p, 0.18, n_boot=0)
    with pytest.raises(ArgumentError, match='min_buildings'):
        adapt_to_town(p, 0.18, min_buildings=0)


def test_adapt_to_town_refuses_a_weak_model() -> None:
    # a model that barely separates the classes (as the study's weakest): EM's
    # likelihood is flat and it runs to a boundary, or its interval is very wide
    rng = np.random.default_rng(3)
    n = 3000
    y = rng.random(n) < 0.2
    x = rng.normal(0.15 * y, 1.0)
    source = 0.4
    odds = source / (1 - source) * np.exp(0.15 * x - 0.15**2 / 2)
    p = odds / (1 + odds)
    with pytest.warns(UserWarning, match='boundary|too uncertain|did not converge'):
        shift = adapt_to_town(p, source)
    assert not shift.adapted
    assert shift.probabilities is not None
    np.testing.assert_array_equal(shift.probabilities, p)
    assert math.isnan(shift.interval[0])
    # the same scores, sharply separating: adapted
    x = rng.normal(3.0 * y, 1.0)
    odds = source / (1 - source) * np.exp(3.0 * x - 4.5)
    shift = adapt_to_town(odds / (1 + odds), source)
    assert shift.adapted
    assert shift.estimate == pytest.approx(float(y.mean()), abs=0.03)
    assert shift.interval[1] - shift.interval[0] < 0.1


def test_adapt_to_town_interval_width_limit() -> None:
    rng = np.random.default_rng(4)
    y = rng.random(400) < 0.2
    x = rng.normal(1.0 * y, 1.0)
    odds = 0.3 / 0.7 * np.exp(x - 0.5)
    p = odds / (1 + odds)
    wide = adapt_to_town(p, 0.3)
    assert wide.adapted
    width = wide.interval[1] - wide.interval[0]
    with pytest.warns(UserWarning, match='too uncertain'):
        narrow = adapt_to_town(p, 0.3, max_width=width / 2)
    assert not narrow.adapted
