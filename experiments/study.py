# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Reproduce the paper's study: modality ablation x fusion x unseen cities x seeds.

Runs leave-one-city-out for SAR only, SAR+OSM, SAR+OSM+DSM and SAR+OSM+DSM+GEM with
early, late and attention fusion over several seeds, the seen-city split (held-out
blocks of the training cities) and the gradient-boosting baselines, then writes
``study.csv``, ``study.md`` and figures (see :mod:`torchgeo_sar_damage.study`).

Usage::

    python experiments/study.py --config experiments/study/quick.yaml   # make experiments-quick
    python experiments/study.py --config experiments/study/full.yaml    # make experiments

The full configuration writes its pages into ``docs/results`` (the published study),
any other configuration into ``docs/results/<name>`` (``make experiments-quick``:
``docs/results/quick``), so that a quick or custom study never overwrites the
published one; ``--out`` chooses another folder. An interrupted study resumes from
``--work`` (``outputs/study/<name>``).
"""

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

from torchgeo_sar_damage.errors import ArgumentError, SARDamageError
from torchgeo_sar_damage.study import (
    BASELINES,
    StudyConfig,
    inference_speed,
    run_study,
    write_report,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / 'docs' / 'results'


def default_out(name: str) -> Path:
    """Where a configuration's pages go unless ``--out`` says otherwise.

    Args:
        name: the configuration's name.

    Returns:
        ``docs/results`` for ``full``, ``docs/results/<name>`` for any other.
    """
    return RESULTS if name == 'full' else RESULTS / name


def simulator_link(out: Path) -> str | None:
    """The simulator report's path relative to ``out``, if the report exists."""
    page = RESULTS / 'simulator.md'
    if not page.is_file():
        return None
    return Path(os.path.relpath(page, out.resolve())).as_posix()


def main(argv: list[str] | None = None) -> int:
    """Run a study from the command line.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', required=True, help='study YAML file')
    parser.add_argument(
        '--out',
        default=None,
        help='folder of study.csv, study.md and the figures (default docs/results for '
        'the full configuration, docs/results/<name> for others)',
    )
    parser.add_argument(
        '--work', default=None, help='working folder (default outputs/study/<name>)'
    )
    parser.add_argument('--quiet', action='store_true', help='no progress bars')
    parser.add_argument(
        '--reuse-speeds',
        action='store_true',
        help="take the inference rates from the output folder's study_inference.csv "
        '(written by an earlier run, with the load it was timed at) instead of timing '
        'the models again, e.g. to regenerate the pages with new columns',
    )
    parser.add_argument(
        '--shard',
        default=None,
        metavar='I/N',
        help='run only shard I of N (folds and seeds split between N processes, '
        'e.g. 0/2 and 1/2 side by side with OMP_NUM_THREADS=1 on two cores); '
        'writes no pages: run without --shard afterwards to collect every shard',
    )
    args = parser.parse_args(argv)
    try:
        shard = _shard(args.shard)
        config = StudyConfig.from_yaml(args.config)
        work = Path(args.work or Path('outputs/study') / config.name)
        start = time.perf_counter()
        new: list[object] = []
        rows, predictions = run_study(config, work, not args.quiet, new.append, shard)
        seconds = time.perf_counter() - start
        if shard != (0, 1):
            print(
                f'shard {args.shard}: {len(new)} runs in {seconds / 60:.1f} min; run '
                'without --shard once every shard is done to write the pages'
            )
            return 0
        command = f'python experiments/study.py --config {args.config}'
        if args.out is not None:
            command += f' --out {args.out}'
        out = Path(args.out) if args.out is not None else default_out(config.name)
        # a study resumed with nothing left to run reports no wall time
        wall = seconds if new else None
        models = sorted(set(zip(rows.modalities, rows.fusion)))
        speeds = (
            reused_speeds(out / 'study_inference.csv', models)
            if args.reuse_speeds
            else inference_speed(config, work, models)
        )
        files = write_report(
            rows, predictions, config, out, wall, command, simulator_link(out), speeds
        )
    except SARDamageError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'{len(rows) // 2} runs in {seconds / 60:.1f} min; wrote:')
    for path in files:
        print(f'  {path}')
    return 0


def reused_speeds(path: Path, models: list[tuple[str, str]]) -> pd.DataFrame:
    """Inference rates of an earlier run of the study (``--reuse-speeds``).

    Args:
        path: its ``study_inference.csv``.
        models: ``(modalities, fusion)`` of the study's models.

    Returns:
        The rates, as :func:`~torchgeo_sar_damage.study.inference_speed` gives them.

    Raises:
        ArgumentError: if the file is missing, unreadable or lacks a deep model of
            the study.
    """
    if not path.is_file():
        raise ArgumentError(
            f'--reuse-speeds: {path} does not exist; run once without it to time '
            'the models'
        )
    try:
        speeds = pd.read_csv(path)
        timed = set(zip(speeds.modalities.astype(str), speeds.fusion.astype(str)))
    except (ValueError, AttributeError) as err:
        raise ArgumentError(f'--reuse-speeds: cannot read {path}: {err}') from err
    deep = {m for m in models if m[1] not in BASELINES}
    missing = sorted(deep - timed)
    if missing:
        names = ', '.join(f'{m} {f}' for m, f in missing)
        raise ArgumentError(
            f'--reuse-speeds: {path} has no rate for {names}; run without it to time '
            'every model'
        )
    return speeds


def _shard(text: str | None) -> tuple[int, int]:
    """``'I/N'`` as ``(I, N)`` (None: the whole study)."""
    if text is None:
        return (0, 1)
    index, sep, count = text.partition('/')
    if not (sep and index.isdigit() and count.isdigit()):
        raise ArgumentError(f'--shard must be I/N (e.g. 0/2), not {text!r}')
    return (int(index), int(count))


if __name__ == '__main__':
    sys.exit(main())
