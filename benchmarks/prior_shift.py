# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Benchmark of prior-shift adaptation: adapt_to_town vs plain EM, on one core.

A synthetic town of ``--buildings`` buildings with damage rate ``--prior``: the score
is N(0, 1) for undamaged and N(2, 1) for damaged buildings, and the probabilities
are the exact posterior for the validation town's rate ``--source-prior``.
``adapt_to_town`` (EM, adaptation, expected-F1 threshold and a bootstrap interval of
``--n-boot`` resamples) is timed against :func:`em_prior` alone; each is the best
of ``--repeats`` runs.

Usage::

    python benchmarks/prior_shift.py [--buildings 100000] [--n-boot 200]
"""

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from torchgeo_sar_damage.prior_shift import (
    adapt_to_town,
    em_prior,
    expected_f1_threshold,
    prior_interval,
)


def best_of(repeats: int, function: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description='prior-shift adaptation benchmark')
    parser.add_argument('--buildings', type=int, default=100_000)
    parser.add_argument('--prior', type=float, default=0.3)
    parser.add_argument('--source-prior', type=float, default=0.18)
    parser.add_argument('--n-boot', type=int, default=200)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    labels = rng.random(args.buildings) < args.prior
    score = rng.normal(2.0 * labels, 1.0)
    odds = args.source_prior / (1 - args.source_prior) * np.exp(2.0 * score - 2.0)
    p = odds / (1 + odds)

    source = args.source_prior
    rows = [
        ('em_prior', best_of(args.repeats, lambda: em_prior(p, source))),
        (
            'prior_interval',
            best_of(
                args.repeats, lambda: prior_interval(p, source, n_boot=args.n_boot)
            ),
        ),
        (
            'expected_f1_threshold',
            best_of(args.repeats, lambda: expected_f1_threshold(p)),
        ),
        (
            'adapt_to_town',
            best_of(args.repeats, lambda: adapt_to_town(p, source, n_boot=args.n_boot)),
        ),
    ]
    result = adapt_to_town(p, source, n_boot=args.n_boot)
    plain = rows[0][1]

    print(
        f'{args.buildings:,} buildings, true rate {labels.mean():.4f}, '
        f'source rate {source}, n_boot {args.n_boot}, best of {args.repeats}'
    )
    print(f'{"step":<24}{"seconds":>10}{"x em_prior":>12}')
    for name, seconds in rows:
        print(f'{name:<24}{seconds:>10.4f}{seconds / plain:>12.1f}')
    low, high = result.interval
    print(
        f'estimate {result.estimate:.4f} [{low:.4f}, {high:.4f}] after '
        f'{result.iterations} EM iterations; threshold {result.threshold:.3f}'
    )


if __name__ == '__main__':
    main()
