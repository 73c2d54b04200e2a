# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Label-free adaptation of damage probabilities to the damage rate of an unseen town.

A binary damage classifier calibrated on a validation town (for example with
:func:`~torchgeo_sar_damage.reliability.fit_temperature`) returns probabilities that
mean "damaged at the validation town's damage rate ``source_prior``". A new town has
no labels and its own damage rate, often far from the validation town's (7-33 % in
the simulator). This module estimates that rate from the probabilities alone, adapts
the probabilities to it, picks a decision threshold and bounds the rate with a
bootstrap interval, and fails safe, with a warning, when the data cannot support it.

**Assumption: label shift.** The appearance of a damaged (or an undamaged) building,
``p(x | y)``, is the same in both towns; only the share of damaged buildings differs.
The model must be calibrated on the validation town, so that its outputs are
``p_val(y | x)``. Under these two assumptions Bayes' rule gives the probabilities in
the new town from the ratio of the two damage rates (:func:`adapt_probabilities`),
and the new rate is the fixed point of the expectation-maximisation (EM) procedure
of Saerens et al. (2002) (:func:`em_prior`), which is its maximum-likelihood
estimate. When the towns also differ in how damage *looks* (another building stock,
another sensor geometry), the assumption fails and so can the estimate; the bootstrap
interval covers the sampling of buildings only, not that.

The black-box shift estimator of Lipton et al. (2018) (:func:`bbse_prior`) needs
only the hit and false-alarm rates of the thresholded classifier on labelled
buildings from the training distribution, not calibration. It rests on the same
label-shift assumption; on the simulated towns it errs more than EM (the study's
:func:`~torchgeo_sar_damage.study.with_bbse`).

The threshold that maximises the expected F1 score without labels
(:func:`expected_f1_threshold`) takes the probabilities as calibrated: predicting the
``k`` most probable buildings as damaged has expected F1 close to
``2 * sum_{i <= k} p_i / (k + sum_i p_i)`` (the ratio of expected counts). Adding a
building pays off exactly when its probability exceeds half that value, which is the
finite-sample form of the result of Lipton, Elkan & Naryanaswamy (2014) that the
F1-optimal threshold of a calibrated classifier is half the optimal F1. Ye et al.
(2012) compute the exact expected F1 (assuming independent labels); the ratio of
expected counts used here is close to it when many buildings are predicted damaged.

**References**

* M. Saerens, P. Latinne and C. Decaestecker (2002), "Adjusting the outputs of a
  classifier to new a priori probabilities: a simple procedure", Neural Computation
  14(1):21-41. https://doi.org/10.1162/089976602753284446
* Z. C. Lipton, Y.-X. Wang and A. J. Smola (2018), "Detecting and correcting for label
  shift with black box predictors", ICML. https://arxiv.org/abs/1802.03916
* Z. C. Lipton, C. Elkan and B. Naryanaswamy (2014), "Optimal thresholding of
  classifiers to maximize F1 measure", ECML-PKDD. https://arxiv.org/abs/1402.1892
* N. Ye, K. M. A. Chai, W. S. Lee and H. L. Chieu (2012), "Optimizing F-measures: a
  tale of two approaches", ICML. https://arxiv.org/abs/1206.4625

.. versionadded:: 0.3
"""

import math
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .errors import ArgumentError

__all__ = (
    'PriorShift',
    'adapt_probabilities',
    'adapt_to_town',
    'bbse_prior',
    'bbse_rates',
    'em_prior',
    'expected_f1_threshold',
    'prior_interval',
)

#: Number of equal-width probability bins :func:`prior_interval` bootstraps over
#: when a town has more distinct probabilities than this.
BOOTSTRAP_BINS = 1000

#: Smallest ``tpr - fpr`` for which :func:`bbse_prior` returns an estimate.
BBSE_MIN_GAP = 0.05


def _as_float(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """A flat float64 copy of ``values``."""
    return np.array(values, dtype=np.float64).reshape(-1)


def _check_prior(name: str, value: float, *, closed: bool = False) -> float:
    """``value`` as a float, or ArgumentError when it is not a valid prior."""
    value = float(value)
    ok = 0.0 <= value <= 1.0 if closed else 0.0 < value < 1.0
    if not ok:
        interval = '[0, 1]' if closed else '(0, 1)'
        raise ArgumentError(
            f'{name}={value!r}: a damage rate must lie in {interval}; pass the share '
            'of damaged buildings, e.g. 0.18'
        )
    return value


def _assessed(probabilities: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    """The non-NaN probabilities; ArgumentError for values outside [0, 1]."""
    p = _as_float(probabilities)
    p = p[~np.isnan(p)]
    if np.any((p < 0) | (p > 1)):  # also catches +-inf
        bad = p[(p < 0) | (p > 1)][0]
        raise ArgumentError(
            f'{name} contains {bad!r}: probabilities must lie in [0, 1] '
            '(NaN marks a building that was not assessed)'
        )
    return p


def _reweight(
    p: npt.NDArray[np.float64],
    source_prior: float,
    target_prior: npt.NDArray[np.float64] | float,
) -> npt.NDArray[np.float64]:
    """Bayes re-weighting of ``p`` from ``source_prior`` to ``target_prior``.

    Broadcasts ``p`` against ``target_prior``; where both weighted terms are zero (a
    probability of exactly 0 or 1 meeting a target of 1 or 0) ``p`` is kept, which is
    the limit as the target approaches that boundary.
    """
    a = np.asarray(target_prior) / source_prior
    b = (1.0 - np.asarray(target_prior)) / (1.0 - source_prior)
    numerator = a * p
    denominator = numerator + b * (1.0 - p)
    out = np.broadcast_to(p, denominator.shape).copy()
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _em(
    values: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    source_prior: float,
    tol: float,
    max_iter: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], int]:
    """EM of the target prior for several weightings of the same probabilities at once.

    Args:
        values: distinct probabilities ``[M]``.
        weights: ``[R, M]``, each row the share of buildings at each value (sums to 1).
        source_prior: damage rate the probabilities are calibrated for.
        tol: stop a row when its prior moves by at most this much.
        max_iter: most iterations.

    Returns:
        The priors ``[R]``, which rows converged ``[R]``, and the iterations run.
    """
    prior = np.full(weights.shape[0], source_prior)
    converged = np.zeros(weights.shape[0], dtype=bool)
    iterations = 0
    while iterations < max_iter and not converged.all():
        iterations += 1
        active = ~converged
        posterior = _reweight(values, source_prior, prior[active, None])
        new = np.clip(np.einsum('rm,rm->r', weights[active], posterior), 0.0, 1.0)
        converged[active] = np.abs(new - prior[active]) <= tol
        prior[active] = new
    return prior, converged, iterations


def em_prior(
    probabilities: npt.ArrayLike,
    source_prior: float,
    tol: float = 1e-6,
    max_iter: int = 1000,
) -> tuple[float, bool, int]:
    """Estimate a town's damage rate with the EM procedure of Saerens et al. (2002).

    Starting from ``prior = source_prior``, each iteration re-weights every building's
    probability to the current prior (:func:`adapt_probabilities`) and sets the prior
    to their mean; the fixed point is the maximum-likelihood damage rate under label
    shift.

    Args:
        probabilities: damage probabilities ``[N]`` calibrated on a town with damage
            rate ``source_prior``; NaN (building not assessed) is ignored.
        source_prior: damage rate of the calibration town, in (0, 1).
        tol: stop when the prior moves by at most this much in one iteration.
        max_iter: most iterations.

    Returns:
        ``(prior, converged, iterations)``. Without any assessed building, the prior
        is ``source_prior`` and ``converged`` is False.

    Raises:
        ArgumentError: if ``source_prior`` is not in (0, 1), a probability is outside
            [0, 1] (infinities included), ``tol`` is negative or ``max_iter`` < 1.
    """
    source_prior = _check_prior('source_prior', source_prior)
    if not tol >= 0:
        raise ArgumentError(f'tol={tol!r}: must be >= 0')
    if max_iter < 1:
        raise ArgumentError(f'max_iter={max_iter!r}: must be >= 1')
    p = _assessed(probabilities, 'probabilities')
    if p.size == 0:
        return source_prior, False, 0
    weights = np.full((1, p.size), 1.0 / p.size)
    prior, converged, iterations = _em(p, weights, source_prior, tol, max_iter)
    return float(prior[0]), bool(converged[0]), iterations


def bbse_rates(
    val_probabilities: npt.ArrayLike, val_labels: npt.ArrayLike, threshold: float
) -> tuple[float, float]:
    """True and false positive rates of the thresholded classifier on validation data.

    Args:
        val_probabilities: damage probabilities ``[N]`` on the validation town; NaN
            is ignored.
        val_labels: labels ``[N]``, 1 damaged and 0 not; negative labels are ignored.
        threshold: a probability ``>= threshold`` is predicted damaged.

    Returns:
        ``(tpr, fpr)``; a rate is NaN when its class has no building.

    Raises:
        ArgumentError: if the two arrays differ in length.
    """
    p = _as_float(val_probabilities)
    y = np.asarray(val_labels).reshape(-1)
    if p.shape != y.shape:
        raise ArgumentError(
            f'val_probabilities has {p.size} values but val_labels has {y.size}; '
            'pass one label per building'
        )
    keep = ~np.isnan(p) & (y >= 0)
    predicted = p[keep] >= threshold
    damaged = y[keep] == 1
    n_pos, n_neg = int(damaged.sum()), int((~damaged).sum())
    tpr = float((predicted & damaged).sum() / n_pos) if n_pos else math.nan
    fpr = float((predicted & ~damaged).sum() / n_neg) if n_neg else math.nan
    return tpr, fpr


def bbse_prior(
    probabilities: npt.ArrayLike,
    threshold: float,
    tpr: float,
    fpr: float,
    *,
    min_gap: float = BBSE_MIN_GAP,
) -> float | None:
    """Estimate a town's damage rate with black-box shift estimation (binary case).

    Under label shift the thresholded classifier keeps its validation hit rate
    ``tpr`` and false-alarm rate ``fpr``, so the share ``q`` of the new town's
    buildings predicted damaged is ``prior * tpr + (1 - prior) * fpr``; solving gives
    ``prior = (q - fpr) / (tpr - fpr)`` (Lipton et al., 2018), clipped to [0, 1].

    Args:
        probabilities: damage probabilities ``[N]`` in the new town; NaN is ignored.
        threshold: the threshold ``tpr`` and ``fpr`` were measured at
            (:func:`bbse_rates`).
        tpr: validation true positive rate at ``threshold``.
        fpr: validation false positive rate at ``threshold``.
        min_gap: smallest ``tpr - fpr`` accepted.

    Returns:
        The estimated damage rate, or None when ``tpr - fpr`` is below ``min_gap``
        or not finite (the classifier does not separate the classes at this
        threshold) or no building is assessed.
    """
    gap = tpr - fpr
    if not (math.isfinite(gap) and gap >= min_gap):
        return None
    p = _as_float(probabilities)
    p = p[~np.isnan(p)]
    if p.size == 0:
        return None
    q = float(np.mean(p >= threshold))
    return min(max((q - fpr) / gap, 0.0), 1.0)


def adapt_probabilities(
    probabilities: npt.ArrayLike, source_prior: float, target_prior: float
) -> npt.NDArray[np.float64]:
    """Re-weight calibrated probabilities from one damage rate to another (Bayes' rule).

    ``p' = (t / s) p / ((t / s) p + ((1 - t) / (1 - s)) (1 - p))`` with ``s`` the
    source and ``t`` the target damage rate. The map is the identity when the rates
    agree and increasing otherwise (for ``t`` in (0, 1)), so the ranking of
    buildings, hence AUROC and average precision, is unchanged.

    Args:
        probabilities: damage probabilities (any shape) calibrated for
            ``source_prior``; NaN stays NaN.
        source_prior: damage rate the probabilities are calibrated for, in (0, 1).
        target_prior: damage rate to adapt to, in [0, 1].

    Returns:
        The adapted probabilities, a new float64 array of the input's shape.

    Raises:
        ArgumentError: if a prior is out of range.
    """
    source_prior = _check_prior('source_prior', source_prior)
    target_prior = _check_prior('target_prior', target_prior, closed=True)
    p = np.array(probabilities, dtype=np.float64)
    if target_prior == source_prior:
        return p
    return _reweight(p, source_prior, target_prior)


def expected_f1_threshold(probabilities: npt.ArrayLike) -> float:
    """Threshold that maximises the expected F1 score, taking probabilities as true.

    Buildings are sorted by probability, descending. Predicting the top ``k`` as
    damaged has expected F1 approximately ``2 * sum_{i <= k} p_i / (k + sum_i p_i)``
    (expected true positives over the expected size of the predicted and the
    actual damaged sets), maximised over the ``k`` a threshold can realise (all tied
    probabilities fall on the same side). O(N log N).

    Args:
        probabilities: damage probabilities ``[N]``; non-finite values are ignored.

    Returns:
        A threshold between the ``k``-th and the ``(k + 1)``-th largest probability
        (their midpoint; the smallest probability when all are predicted damaged):
        a building is predicted damaged when its probability is ``>= threshold``.
        When every probability is 0 nothing is worth predicting and the result is
        0.5; NaN without any finite probability.
    """
    p = _as_float(probabilities)
    p = np.sort(p[np.isfinite(p)])[::-1]
    n = p.size
    if n == 0:
        return math.nan
    cumulative = np.cumsum(p)
    k = np.arange(1, n + 1)
    f1 = 2.0 * cumulative / (k + cumulative[-1])
    # a threshold cannot split tied probabilities; the expected F1 never peaks
    # inside a tie group in exact arithmetic, this guards against rounding
    realisable = np.ones(n, dtype=bool)  # k = n always is
    realisable[:-1] = p[:-1] > p[1:]
    f1 = np.where(realisable, f1, -1.0)
    best = int(np.argmax(f1))
    if f1[best] <= 0:  # all zero: predict nothing
        return (float(p[0]) + 1.0) / 2.0
    if best == n - 1:
        return float(p[-1])
    return (float(p[best]) + float(p[best + 1])) / 2.0


def _bootstrap_support(
    p: npt.NDArray[np.float64], bins: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Distinct probabilities and their counts, or bin means and counts if too many."""
    values, counts = np.unique(p, return_counts=True)
    if values.size <= bins:
        return values, counts
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    counts = np.bincount(which, minlength=bins)
    sums = np.bincount(which, weights=p, minlength=bins)
    keep = counts > 0
    return sums[keep] / counts[keep], counts[keep]


def prior_interval(
    probabilities: npt.ArrayLike,
    source_prior: float,
    level: float = 0.9,
    n_boot: int = 200,
    seed: int = 0,
    *,
    tol: float = 1e-6,
    max_iter: int = 1000,
) -> tuple[float, float]:
    """Bootstrap percentile interval of the EM damage rate (:func:`em_prior`).

    Buildings are resampled with replacement ``n_boot`` times and the EM estimate is
    recomputed on each resample; the interval is between the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles of the estimates.

    A resample of ``N`` buildings is a multinomial draw of ``N`` counts over the
    distinct probabilities, so all resamples run as one vectorised EM. When a town
    has more than :data:`BOOTSTRAP_BINS` distinct probabilities, each building's
    probability is replaced by the mean probability of its bin (1,000 equal-width
    bins, so within 0.0005 of its value) before resampling: an approximation that
    shifts the estimate much less than its sampling spread, and keeps 200 resamples
    of 100,000 buildings well under a second.

    The interval reflects which buildings the town happens to have; it does not
    cover miscalibration of the model or a failure of the label-shift assumption.

    Args:
        probabilities: damage probabilities ``[N]``; NaN is ignored.
        source_prior: damage rate the probabilities are calibrated for, in (0, 1).
        level: coverage of the interval, in (0, 1).
        n_boot: number of resamples.
        seed: seed of the resampling.
        tol: EM tolerance, as for :func:`em_prior`.
        max_iter: most EM iterations, as for :func:`em_prior`.

    Returns:
        ``(low, high)``; ``(nan, nan)`` without any assessed building.

    Raises:
        ArgumentError: if ``level`` is not in (0, 1), ``n_boot`` < 1, or as for
            :func:`em_prior`.
    """
    source_prior = _check_prior('source_prior', source_prior)
    if not 0.0 < level < 1.0:
        raise ArgumentError(f'level={level!r}: the coverage must lie in (0, 1)')
    if n_boot < 1:
        raise ArgumentError(f'n_boot={n_boot!r}: need at least one resample')
    p = _assessed(probabilities, 'probabilities')
    if p.size == 0:
        return math.nan, math.nan
    values, counts = _bootstrap_support(p, BOOTSTRAP_BINS)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(p.size, counts / p.size, size=n_boot) / p.size
    priors, _, _ = _em(values, weights, source_prior, tol, max_iter)
    low, high = np.quantile(priors, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


@dataclass(frozen=True, eq=False)
class PriorShift:
    """A town's estimated damage rate and its probabilities adapted to it.

    Returned by :func:`adapt_to_town`.

    Attributes:
        source_prior: damage rate the model was calibrated for.
        estimate: estimated damage rate of the town (the mean of the unadapted
            probabilities when not adapted; NaN without any assessed building).
        interval: bootstrap interval ``(low, high)`` of the estimate; NaN when not
            adapted.
        adapted: whether :attr:`probabilities` were adapted.
        probabilities: the adapted probabilities, or the input when not adapted;
            NaN where the input is NaN.
        threshold: expected-F1 threshold of :attr:`probabilities`
            (:func:`expected_f1_threshold`).
        expected_damaged: sum of the finite :attr:`probabilities`, the expected
            number of damaged buildings.
        reason: why the probabilities were not adapted, or None.
        iterations: EM iterations run (0 when EM did not run).
    """

    source_prior: float
    estimate: float
    interval: tuple[float, float]
    adapted: bool
    probabilities: npt.NDArray[np.float64]
    threshold: float
    expected_damaged: float
    reason: str | None
    iterations: int


def _unusable(
    p: npt.NDArray[np.float64], source_prior: float, min_buildings: int
) -> str | None:
    """Why ``p`` cannot be adapted before running EM, or None."""
    if not 0.0 < source_prior < 1.0:
        return f'source_prior={source_prior!r} is not a damage rate in (0, 1)'
    assessed = p[~np.isnan(p)]
    if np.any(~np.isfinite(assessed)):
        return 'the probabilities contain infinite values'
    if np.any((assessed < 0) | (assessed > 1)):
        return 'the probabilities contain values outside [0, 1]'
    if assessed.size < min_buildings:
        return (
            f'only {assessed.size} assessed buildings, fewer than '
            f'min_buildings={min_buildings}'
        )
    return None


#: Estimated damage rates closer than this to 0 or 1 are not adapted to.
BOUNDARY = 0.01


def _expected_damaged(p: npt.NDArray[np.float64]) -> float:
    """Sum of the finite values of ``p``."""
    return float(p[np.isfinite(p)].sum())


def adapt_to_town(
    probabilities: npt.ArrayLike,
    source_prior: float,
    *,
    min_buildings: int = 30,
    level: float = 0.9,
    n_boot: int = 200,
    seed: int = 0,
    tol: float = 1e-6,
    max_iter: int = 1000,
    max_width: float = 0.5,
) -> PriorShift:
    """Adapt a town's damage probabilities to its own, estimated, damage rate.

    Estimates the rate with :func:`em_prior`, re-weights the probabilities with
    :func:`adapt_probabilities`, bounds the rate with :func:`prior_interval` and picks
    the :func:`expected_f1_threshold` of the adapted probabilities.

    Fails safe: with fewer than ``min_buildings`` assessed buildings, infinite or
    out-of-range probabilities, a ``source_prior`` outside (0, 1), EM not
    converging, EM running to the boundary (a rate within :data:`BOUNDARY` of 0 or
    1: with a weakly discriminating model the likelihood is flat and EM drifts
    there; seen in the study) or an interval wider than ``max_width``, it warns (:class:`UserWarning`) and returns the probabilities
    unadapted, with their mean as the estimate; it never raises for these.

    Args:
        probabilities: damage probabilities (any shape) calibrated on a town with
            damage rate ``source_prior``; NaN marks a building not assessed, which is
            ignored and stays NaN.
        source_prior: damage rate of the calibration (validation) town.
        min_buildings: fewest assessed buildings to adapt.
        level: coverage of the interval, in (0, 1).
        n_boot: bootstrap resamples of the interval.
        seed: seed of the bootstrap.
        tol: EM tolerance.
        max_iter: most EM iterations.
        max_width: widest interval of the rate that is still adapted to.

    Returns:
        The estimate, the interval and the (adapted) probabilities.

    Raises:
        ArgumentError: if ``level`` is not in (0, 1), ``n_boot`` < 1,
            ``min_buildings`` < 1, ``tol`` < 0 or ``max_iter`` < 1.
    """
    if not 0.0 < level < 1.0:
        raise ArgumentError(f'level={level!r}: the coverage must lie in (0, 1)')
    if n_boot < 1:
        raise ArgumentError(f'n_boot={n_boot!r}: need at least one resample')
    if min_buildings < 1:
        raise ArgumentError(f'min_buildings={min_buildings!r}: must be >= 1')
    if not tol >= 0:
        raise ArgumentError(f'tol={tol!r}: must be >= 0')
    if max_iter < 1:
        raise ArgumentError(f'max_iter={max_iter!r}: must be >= 1')
    source_prior = float(source_prior)
    p = np.array(probabilities, dtype=np.float64)
    reason = _unusable(p.reshape(-1), source_prior, min_buildings)
    estimate, iterations = math.nan, 0
    interval = (math.nan, math.nan)
    if reason is None:
        estimate, converged, iterations = em_prior(p, source_prior, tol, max_iter)
        if not converged:
            reason = f'EM did not converge in {max_iter} iterations'
        elif not BOUNDARY <= estimate <= 1 - BOUNDARY:
            reason = (
                f'EM ran to the boundary (damage rate {estimate:.3f}): the model '
                'separates damaged from intact buildings too weakly here to estimate '
                "the town's rate"
            )
    if reason is None:
        interval = prior_interval(
            p, source_prior, level, n_boot, seed, tol=tol, max_iter=max_iter
        )
        if not interval[1] - interval[0] <= max_width:
            reason = (
                f'the damage rate is too uncertain (interval {interval[0]:.3f}-'
                f'{interval[1]:.3f}, wider than {max_width})'
            )
            interval = (math.nan, math.nan)
    if reason is not None:
        warnings.warn(
            f'damage probabilities not adapted to the town: {reason}; '
            'returning them unchanged',
            UserWarning,
            stacklevel=2,
        )
        finite = p[np.isfinite(p)]
        return PriorShift(
            source_prior=source_prior,
            estimate=float(finite.mean()) if finite.size else math.nan,
            interval=(math.nan, math.nan),
            adapted=False,
            probabilities=p,
            reason=reason,
            threshold=expected_f1_threshold(p),
            expected_damaged=_expected_damaged(p),
            iterations=iterations,
        )
    adapted = adapt_probabilities(p, source_prior, estimate)
    return PriorShift(
        source_prior=source_prior,
        estimate=estimate,
        interval=interval,
        adapted=True,
        probabilities=adapted,
        reason=None,
        threshold=expected_f1_threshold(adapted),
        expected_damaged=_expected_damaged(adapted),
        iterations=iterations,
    )
