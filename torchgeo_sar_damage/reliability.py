# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Reliability of damage probabilities: calibration of the logits, calibration error.

This module calibrates *probabilities* (what a predicted 0.3 means); the calibration
of SAR digital numbers to sigma nought is :mod:`~torchgeo_sar_damage.datasets.cosmo_skymed`'s.

Every calibration here maps a logit ``z`` to ``sigmoid(z / T + b)`` (binary) or
``softmax(z / T)`` (multiclass), with ``T`` and ``b`` fitted by minimising the negative
log-likelihood on held-out data (the validation towns); ``T > 0``, so the ranking of
buildings, hence AUROC and average precision, is unchanged.

* **Temperature scaling** (``'temperature'``; Guo et al., 2017,
  :func:`fit_temperature`): ``b = 0``. ``T > 1`` softens over-confident
  probabilities, ``T < 1`` sharpens under-confident ones. It cannot move the
  probabilities up or down as a whole, so a shift of the logits (a class-balanced
  loss, a damage rate that differs from the training towns') stays.
* **Bias-corrected temperature scaling** (``'bcts'``; Alexandari, Kundaje and
  Shrikumar, 2020) and **Platt scaling** (``'platt'``; Platt, 1999,
  :func:`fit_platt`): ``T`` and ``b`` together. For one binary logit both are the same
  two-parameter family, ``sigmoid(a z + b)`` with ``a = 1 / T``, and the same fit
  (:func:`fit_calibration`); the bias corrects the shift on the validation towns.

:func:`calibrate_logits` applies a fitted calibration. Calibration is judged with the
expected calibration error (ECE) and a reliability diagram over equal-width
probability bins.

.. versionadded:: 0.1

.. versionchanged:: 0.2
   Renamed from ``torchgeo_sar_damage.calibration``, which still imports.

.. versionchanged:: 0.3
   Platt scaling and bias-corrected temperature scaling (:func:`fit_platt`,
   :func:`fit_calibration`, :func:`calibrate_logits`).
"""

import math
import os
from pathlib import Path
from typing import Any, Literal

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from torch.nn import functional as F

from .errors import ArgumentError
from .plot import save_figure  # also selects the Agg backend

#: Range searched for the inverse temperature ``1 / T`` (the scale ``a`` of Platt).
INVERSE_TEMPERATURE_RANGE = (0.02, 50.0)

#: A calibration of :func:`fit_calibration`.
CalibrationMethod = Literal['temperature', 'bcts', 'platt']
#: The calibrations :func:`fit_calibration` fits (``'platt'`` is the same fit as
#: ``'bcts'`` for one binary logit).
CALIBRATION_METHODS: tuple[CalibrationMethod, ...] = ('temperature', 'bcts', 'platt')


def _nll(logits: Tensor, targets: Tensor, beta: float) -> float:
    """Mean negative log-likelihood of ``logits * beta``."""
    scaled = logits * beta
    if scaled.dim() == 1:
        return float(F.binary_cross_entropy_with_logits(scaled, targets.float()))
    return float(F.cross_entropy(scaled, targets.long()))


def fit_temperature(logits: Tensor, targets: Tensor) -> float:
    """Fit the temperature that minimises the negative log-likelihood.

    The NLL of ``logits / T`` is convex in ``1 / T``, so a golden-section search over
    :data:`INVERSE_TEMPERATURE_RANGE` (in log space) finds the optimum without any
    learning rate; the result is deterministic.

    Args:
        logits: binary logits ``[N]`` (or ``[N, 1]``) or multiclass logits ``[N, C]``.
        targets: labels ``[N]`` (0/1, or class indices); negative values are ignored.

    Returns:
        The temperature ``T`` (1.0 when there are no usable examples or the binary
        targets are all of one class).
    """
    logits = logits.detach().double().cpu()
    targets = targets.detach().cpu().reshape(-1)
    if logits.dim() == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]
    keep = targets >= 0
    logits, targets = logits[keep], targets[keep]
    if targets.numel() == 0 or int(torch.unique(targets).numel()) < 2:
        return 1.0
    low, high = (math.log(v) for v in INVERSE_TEMPERATURE_RANGE)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = _nll(logits, targets, math.exp(c)), _nll(logits, targets, math.exp(d))
    for _ in range(80):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = _nll(logits, targets, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = _nll(logits, targets, math.exp(d))
    return float(1 / math.exp((a + b) / 2))


def _binary_examples(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Float64 binary logits ``[N]`` and 0/1 targets, unlabelled examples dropped.

    Raises:
        ArgumentError: if the logits are not binary or do not match the targets.
    """
    logits = logits.detach().double().cpu()
    targets = targets.detach().cpu().reshape(-1)
    if logits.dim() == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if logits.dim() != 1:
        raise ArgumentError(
            f'Platt scaling needs binary logits [N] or [N, 1], not '
            f'{list(logits.shape)}; use temperature scaling for several classes'
        )
    if logits.shape[0] != targets.shape[0]:
        raise ArgumentError(
            f'{logits.shape[0]} logits but {targets.shape[0]} targets; give one '
            'target per logit'
        )
    keep = (targets >= 0) & torch.isfinite(logits)
    return logits[keep], (targets[keep] == 1).double()


def _platt_nll(z: Tensor, t: Tensor, a: float, b: float) -> float:
    """Mean negative log-likelihood of ``sigmoid(a z + b)`` for soft targets ``t``."""
    s = a * z + b
    return float((F.softplus(s) - t * s).mean())


def _newton(
    z: Tensor, t: Tensor, a: float, b: float, fit_scale: bool
) -> tuple[float, float]:
    """Minimise :func:`_platt_nll` over ``(a, b)`` (or ``b`` alone) by Newton's method.

    The objective is convex; each Newton step is halved until it decreases the
    objective enough (Armijo), so the iteration converges from any start.
    """
    for _ in range(100):
        p = torch.sigmoid(a * z + b)
        w = p * (1 - p)
        r = p - t
        if fit_scale:
            wz = float((w * z).mean())
            gradient = torch.tensor(
                [float((r * z).mean()), float(r.mean())], dtype=torch.float64
            )
            hessian = torch.tensor(
                [[float((w * z * z).mean()), wz], [wz, float(w.mean())]],
                dtype=torch.float64,
            )
        else:
            gradient = r.mean().reshape(1)
            hessian = w.mean().reshape(1, 1)
        damping = 1e-9 * float(hessian.trace()) + 1e-300
        hessian = hessian + damping * torch.eye(len(gradient), dtype=torch.float64)
        step = torch.linalg.solve(hessian, gradient)
        decrement = float(gradient @ step)
        if not decrement > 1e-15:  # also stops on NaN
            break
        da, db = (
            (float(step[0]), float(step[1])) if fit_scale else (0.0, float(step[0]))
        )
        before, size = _platt_nll(z, t, a, b), 1.0
        while size > 1e-12:
            if _platt_nll(z, t, a - size * da, b - size * db) <= (
                before - 0.25 * size * decrement
            ):
                break
            size /= 2
        else:
            break  # no decrease left at float64 precision
        a, b = a - size * da, b - size * db
    return a, b


def fit_platt(logits: Tensor, targets: Tensor) -> tuple[float, float]:
    """Fit Platt scaling, ``sigmoid(a * logit + b)``, by maximum likelihood.

    The two parameters minimise the negative log-likelihood by Newton's method (with
    a backtracking line search) in float64, started from temperature scaling
    (:func:`fit_temperature`); the result is deterministic. As in Platt (1999), the
    targets are smoothed to ``(N+ + 1) / (N+ + 2)`` for the ``N+`` positives and
    ``1 / (N- + 2)`` for the ``N-`` negatives, which keeps ``a`` and ``b`` finite when
    the logits separate the classes (and changes little with hundreds of examples).

    The scale is kept within :data:`INVERSE_TEMPERATURE_RANGE`, like ``1 / T`` of
    temperature scaling: it stays positive, so the ranking of the examples is never
    reversed. Where the unconstrained optimum lies outside it, ``a`` is the nearest
    bound and ``b`` is fitted for it (the constrained optimum, the objective being
    convex). This is bias-corrected temperature scaling (Alexandari et al., 2020) with
    ``T = 1 / a``: see :func:`fit_calibration`.

    Args:
        logits: binary logits ``[N]`` (or ``[N, 1]``).
        targets: labels ``[N]`` (1 positive, 0 negative); negative values and
            non-finite logits are ignored.

    Returns:
        ``(a, b)``: the scale and the bias (``(1.0, 0.0)`` when there are no usable
        examples or the targets are all of one class).

    Raises:
        ArgumentError: if the logits are multiclass or do not match the targets.

    .. versionadded:: 0.3
    """
    z, y = _binary_examples(logits, targets)
    positives = float(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return 1.0, 0.0
    t = torch.where(y == 1, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    if int(torch.unique(z).numel()) < 2:  # no scale to fit: a constant probability
        return _newton(z, t, 1.0, 0.0, fit_scale=False)
    a, b = _newton(z, t, 1 / fit_temperature(z, y), 0.0, fit_scale=True)
    low, high = INVERSE_TEMPERATURE_RANGE
    if not low <= a <= high:
        a = min(max(a, low), high) if math.isfinite(a) else 1.0
        a, b = _newton(z, t, a, b if math.isfinite(b) else 0.0, fit_scale=False)
    return a, b


def fit_calibration(
    logits: Tensor, targets: Tensor, method: CalibrationMethod = 'bcts'
) -> tuple[float, float]:
    """Fit a calibration ``sigmoid(logit / T + b)`` of the family of this module.

    * ``'temperature'``: temperature scaling, ``b = 0``
      (:func:`fit_temperature`; binary or multiclass logits).
    * ``'bcts'``: bias-corrected temperature scaling (Alexandari, Kundaje and
      Shrikumar, 2020, "Maximum likelihood with bias-corrected calibration is
      hard-to-beat at label shift adaptation"), ``T`` and ``b`` together. For one
      binary logit it is Platt scaling with ``a = 1 / T`` (:func:`fit_platt`).
    * ``'platt'``: the same fit as ``'bcts'``, by its other name.

    Args:
        logits: binary logits ``[N]`` (or ``[N, 1]``); multiclass logits ``[N, C]``
            for ``'temperature'`` only.
        targets: labels ``[N]``; negative values are ignored.
        method: one of :data:`CALIBRATION_METHODS`.

    Returns:
        ``(T, b)``: the temperature and the bias, for :func:`calibrate_logits`.

    Raises:
        ArgumentError: if ``method`` is unknown, or ``'bcts'``/``'platt'`` is given
            multiclass logits (their bias would be one per class).

    .. versionadded:: 0.3
    """
    if method not in CALIBRATION_METHODS:
        raise ArgumentError(
            f'calibration {method!r} is unknown; choose from '
            f'{", ".join(CALIBRATION_METHODS)}'
        )
    if method == 'temperature':
        return fit_temperature(logits, targets), 0.0
    a, b = fit_platt(logits, targets)
    return 1 / a, b


def calibrate_logits(
    logits: Tensor, temperature: float | Tensor = 1.0, bias: float | Tensor = 0.0
) -> Tensor:
    """Apply a fitted calibration to logits: ``logits / T + b``.

    ``sigmoid`` of the result is the calibrated probability of a binary logit;
    multiclass logits ``[N, C]`` (``C > 1``) are divided by ``T`` only, the bias is
    not applied (bias-corrected temperature scaling for several classes needs one
    bias per class, which this module does not fit); their ``softmax`` is the
    calibrated probability.

    Args:
        logits: binary logits ``[N]`` or ``[N, 1]``, or multiclass logits ``[N, C]``.
        temperature: ``T`` (positive).
        bias: ``b`` (binary logits only).

    Returns:
        The calibrated logits, of the shape of ``logits``.

    .. versionadded:: 0.3
    """
    scaled = logits / temperature
    if logits.dim() == 2 and logits.shape[1] > 1:
        return scaled
    return scaled + bias


def _numpy(values: Tensor | npt.ArrayLike) -> npt.NDArray[Any]:
    """A NumPy copy of a tensor or an array-like (read-only arrays are fine)."""
    if isinstance(values, Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _confidence(
    probabilities: Tensor | npt.ArrayLike, targets: Tensor | npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per-example predicted probability and outcome (0/1) for reliability.

    Binary probabilities ``[N]`` are compared with the positive label; multiclass
    probabilities ``[N, C]`` by their top-label confidence and correctness.
    """
    p = _numpy(probabilities).astype(np.float64)
    y = _numpy(targets).reshape(-1)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    keep = y >= 0
    if p.ndim == 2:
        p, y = p[keep], y[keep]
        return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)
    keep &= np.isfinite(p)
    return p[keep], (y[keep] == 1).astype(np.float64)


def reliability_curve(
    probabilities: Tensor | npt.ArrayLike,
    targets: Tensor | npt.ArrayLike,
    bins: int = 15,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Mean predicted probability and observed frequency per probability bin.

    Args:
        probabilities: damage probabilities ``[N]`` (binary; compared with label 1)
            or class probabilities ``[N, C]`` (top-label confidence vs accuracy).
        targets: labels ``[N]``; negative labels and NaN probabilities are ignored.
        bins: number of equal-width bins over [0, 1].

    Returns:
        ``mean_probability``, ``observed_frequency`` (NaN for empty bins) and
        ``count``, each ``[bins]``.
    """
    p, y = _confidence(probabilities, targets)
    which = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.int64)
    sum_p = np.bincount(which, weights=p, minlength=bins)
    sum_y = np.bincount(which, weights=y, minlength=bins)
    with np.errstate(invalid='ignore', divide='ignore'):
        mean_p = np.where(count > 0, sum_p / count, np.nan)
        freq = np.where(count > 0, sum_y / count, np.nan)
    return mean_p, freq, count


def expected_calibration_error(
    probabilities: Tensor | npt.ArrayLike,
    targets: Tensor | npt.ArrayLike,
    bins: int = 15,
) -> float:
    """Expected calibration error over equal-width bins.

    ``ECE = sum_b (n_b / N) * |observed_frequency_b - mean_probability_b|``.

    Args:
        probabilities: as for :func:`reliability_curve`.
        targets: as for :func:`reliability_curve`.
        bins: number of bins.

    Returns:
        The ECE in [0, 1] (0.0 without examples).
    """
    mean_p, freq, count = reliability_curve(probabilities, targets, bins)
    total = int(count.sum())
    if total == 0:
        return 0.0
    gap = np.abs(np.nan_to_num(freq) - np.nan_to_num(mean_p))
    return float((count * gap).sum() / total)


def plot_reliability_diagram(
    probabilities: Tensor | npt.ArrayLike,
    targets: Tensor | npt.ArrayLike,
    path: str | os.PathLike[str],
    title: str | None = None,
    bins: int = 15,
) -> Path:
    """Draw a reliability diagram (with the ECE and a histogram) to a PNG file.

    Args:
        probabilities: as for :func:`reliability_curve`.
        targets: as for :func:`reliability_curve`.
        path: the PNG to write (atomically: temporary file, then renamed).
        title: figure title (the ECE is appended).
        bins: number of bins.

    Returns:
        The path written.
    """
    mean_p, freq, count = reliability_curve(probabilities, targets, bins)
    ece = expected_calibration_error(probabilities, targets, bins)
    edges = np.linspace(0, 1, bins + 1)
    fig, (ax, hist) = plt.subplots(
        2,
        1,
        figsize=(4.5, 5.5),
        sharex=True,
        gridspec_kw={'height_ratios': [3, 1]},
        layout='constrained',
    )
    ax.plot([0, 1], [0, 1], ls='--', color='grey', lw=1, label='perfect calibration')
    ax.bar(
        edges[:-1],
        np.nan_to_num(freq),
        width=1 / bins,
        align='edge',
        edgecolor='black',
        color='tab:blue',
        alpha=0.7,
        label='observed frequency',
    )
    shown = count > 0
    ax.plot(mean_p[shown], freq[shown], 'o-', color='tab:red', ms=3, label='bins')
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel('observed frequency of damage')
    ax.legend(loc='upper left', fontsize=8)
    head = f'{title}\n' if title else ''
    ax.set_title(f'{head}ECE {ece:.3f} ({bins} bins, {int(count.sum())} buildings)')
    hist.bar(edges[:-1], count, width=1 / bins, align='edge', color='grey')
    hist.set_yscale('log' if count.max(initial=0) > 0 else 'linear')
    hist.set_xlabel('predicted probability of damage')
    hist.set_ylabel('buildings')
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_figure(fig, out, dpi=120)
    finally:
        plt.close(fig)
    return out
