# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Reliability of damage probabilities: temperature scaling, calibration error.

This module calibrates *probabilities* (what a predicted 0.3 means); the calibration
of SAR digital numbers to sigma nought is :mod:`~torchgeo_sar_damage.datasets.cosmo_skymed`'s.

Temperature scaling (Guo et al., 2017) divides the logits by one scalar ``T`` fitted
by minimising the negative log-likelihood on held-out data (the validation cities):
the ranking of buildings, so AUROC and average precision, is unchanged, and the
probabilities become closer to observed frequencies. ``T > 1`` softens over-confident
probabilities, ``T < 1`` sharpens under-confident ones.

Calibration is judged with the expected calibration error (ECE) and a reliability
diagram over equal-width probability bins.

.. versionadded:: 0.1

.. versionchanged:: 0.2
   Renamed from ``torchgeo_sar_damage.calibration``, which still imports.
"""

import math
import os
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from torch.nn import functional as F

from .plot import save_figure  # also selects the Agg backend

#: Range searched for the inverse temperature ``1 / T``.
INVERSE_TEMPERATURE_RANGE = (0.02, 50.0)


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
