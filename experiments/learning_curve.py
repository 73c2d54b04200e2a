# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""How far from the limit: the study's models against town size, and what else helps.

A learning curve: unseen-town AUROC and F1 against the buildings simulated per town,
for the models named in the configuration (by default SAR only and the full study's
best fusion), on the first folds of the full study's leave-one-city-out with a few
seeds, beside the references that know the truth (the fragility oracle and the
SAR-statistics baseline on the true footprints, :mod:`torchgeo_sar_damage.study`).
Then *variants*: the same models at one size with one setting changed (epochs,
pixel size, window...), to see which of them moves the unseen-town AUROC.

Every point is a small study (:func:`~torchgeo_sar_damage.study.run_study`) in its
own working folder ``outputs/learning_curve/<point>``, which resumes when
interrupted. The page ``docs/results/learning_curve.md``, its table
``learning_curve.csv`` (every run and split) and figure ``learning_curve.png`` are
written from the runs.

Usage::

    python experiments/learning_curve.py --config experiments/learning_curve.yaml
"""

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from torchgeo_sar_damage.errors import ArgumentError, InputFileError, SARDamageError
from torchgeo_sar_damage.plot import save_figure
from torchgeo_sar_damage.study import (
    ORACLE,
    TRUE_FOOTPRINTS,
    StudyConfig,
    describe_model,
    read_settings,
    run_study,
    with_best_f1,
    with_true_labels,
)

REPO = Path(__file__).resolve().parents[1]

#: Settings of the configuration file.
KEYS = (
    'base',
    'settings',
    'sizes',
    'folds',
    'seeds',
    'models',
    'variant_size',
    'variants',
)

#: Settings that decide a point's simulated scene and chips.
SCENE_SETTINGS = ('cities', 'buildings', 'pixel_m', 'scene_seed', 'gem_level', 'size_m')


def read_config(path: str) -> dict[str, Any]:
    """Read and check the configuration.

    Args:
        path: YAML with :data:`KEYS`: ``base`` (a study YAML whose settings every
            point starts from), ``settings`` (changes of ``base`` for every point),
            ``sizes`` (buildings per town), ``folds``, ``seeds``,
            ``models`` (``[modalities, fusion]`` pairs, modalities joined by ``+``),
            ``variant_size`` and ``variants`` (name -> settings of the study changed).

    Returns:
        The settings.

    Raises:
        InputFileError: if the file cannot be read or has unknown keys.
    """
    values = read_settings(path, KEYS)
    for key in ('base', 'sizes', 'models'):
        if key not in values:
            raise InputFileError(path, f'needs {key!r}')
    return values


def points(settings: dict[str, Any]) -> list[tuple[str, StudyConfig]]:
    """The small studies of the curve and of the variants, named.

    Args:
        settings: from :func:`read_config`.

    Returns:
        ``(point name, study configuration)`` pairs.

    Raises:
        ArgumentError: if a model or variant setting is invalid.
    """
    base = StudyConfig.from_yaml(REPO / settings['base'])
    try:
        base = replace(base, **(settings.get('settings') or {}))
    except TypeError as err:
        raise ArgumentError(f'settings: {err}') from None
    models = [(str(m), str(f)) for m, f in settings['models']]
    deep = [(m, f) for m, f in models if f not in ('gbm', 'gbm-truth', 'oracle')]
    sets = sorted({tuple(m.split('+')) for m, _ in deep})
    common = replace(
        base,
        folds=settings.get('folds', 2),
        seeds=list(settings.get('seeds', [0, 1])),
        modality_sets=[list(m) for m in sets],
        fusions=sorted({f for _, f in deep}),
        torchgeo_sets=[],
        pretrained_weights=[],
        int8_sets=[],
        backbone_sets=[],
        baselines=True,
        oracles=True,
    )
    out = []
    for size in settings['sizes']:
        out.append((f'n{size}', replace(common, name=f'n{size}', buildings=int(size))))
    size = int(settings.get('variant_size', settings['sizes'][0]))
    for name, changes in (settings.get('variants') or {}).items():
        try:
            config = replace(common, name=str(name), buildings=size, **changes)
        except TypeError as err:
            raise ArgumentError(f'variant {name}: {err}') from None
        out.append((str(name), config))
    for _, config in out:
        config.check()
    return out


def share_scenes(
    named: list[tuple[str, StudyConfig]], work: Path
) -> list[tuple[str, StudyConfig]]:
    """Let each variant use the scene and chips of the size point it shares them with.

    A variant that changes no setting of :data:`SCENE_SETTINGS` (e.g. epochs or
    test-time augmentation) reads the scene of the point of its size and links its
    ``chips`` folder to that point's, so neither is made twice.

    Args:
        named: the points (:func:`points`).
        work: the working folder of all points.

    Returns:
        The points, variants pointed at shared scenes.
    """
    first: dict[tuple[Any, ...], str] = {}
    out = []
    for name, config in named:
        key = tuple(str(getattr(config, k)) for k in SCENE_SETTINGS)
        owner = first.setdefault(key, name)
        if owner != name and config.scene is None:
            config = replace(config, scene=str(work / owner / 'scene'))
            (work / name).mkdir(parents=True, exist_ok=True)
            chips = work / name / 'chips'
            if not chips.exists():
                (work / owner / 'chips').mkdir(parents=True, exist_ok=True)
                chips.symlink_to(Path('..') / owner / 'chips')
        out.append((name, config))
    return out


def collect(
    name: str, config: StudyConfig, models: list[tuple[str, str]], work: Path
) -> pd.DataFrame:
    """Run (or resume) one point and return its rows, scored as the study does.

    Args:
        name: the point's name.
        config: its study.
        models: the models kept (references added).
        work: the point's working folder.

    Returns:
        The rows of the chosen models with ``point``, ``buildings_per_town`` and
        the report's extra metrics.
    """
    rows, predictions = run_study(config, work, progress=True)
    rows = with_true_labels(with_best_f1(rows, predictions), predictions)
    keep = {*models, ORACLE, TRUE_FOOTPRINTS}
    rows = rows[[(m, f) in keep for m, f in zip(rows.modalities, rows.fusion)]].copy()
    rows.insert(0, 'point', name)
    rows.insert(1, 'buildings_per_town', config.buildings)
    return rows


def _minutes(rows: pd.DataFrame) -> float:
    """Minutes of the runs of ``rows`` (each run's seen and unseen rows count once)."""
    runs = rows.drop_duplicates(['modalities', 'fusion', 'held_out_city', 'seed'])
    return float(runs.seconds.sum()) / 60


def _summary(rows: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    unseen = rows[rows.split == 'unseen']
    metrics = ['f1', 'auroc', 'f1_best', 'auroc_true', 'n_buildings']
    grouped = unseen.groupby(by, sort=False)[metrics]
    mean = grouped.mean().add_suffix('_mean')
    std = grouped.std(ddof=1).add_suffix('_std')
    runs = grouped.size().rename('runs')
    return pd.concat([runs, mean, std], axis=1).reset_index()


def _table(frame: pd.DataFrame, first: str) -> list[str]:
    header = [first, 'model', 'runs', 'labelled test buildings', 'F1', 'AUROC']
    header += ['f1_best', 'AUROC vs true grades']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for r in frame.to_dict('records'):
        cells = [str(r[first]), describe_model(r['modalities'], r['fusion'])]
        cells += [str(r['runs']), f'{r["n_buildings_mean"]:.0f}']
        for m in ('f1', 'auroc', 'f1_best', 'auroc_true'):
            cells.append(f'{r[f"{m}_mean"]:.3f} ± {r[f"{m}_std"]:.3f}')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def plot(curve: pd.DataFrame, path: Path) -> None:
    """AUROC and F1 on unseen towns against buildings per town, one line per model."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for (m, f), group in curve.groupby(['modalities', 'fusion'], sort=False):
        group = group.sort_values('buildings_per_town')
        style = '--' if (m, f) in (ORACLE, TRUE_FOOTPRINTS) else '-'
        for ax, metric in zip(axes, ('auroc', 'f1')):
            ax.errorbar(
                group.buildings_per_town,
                group[f'{metric}_mean'],
                yerr=group[f'{metric}_std'],
                linestyle=style,
                marker='o',
                capsize=3,
                label=describe_model(str(m), str(f)),
            )
    for ax, metric in zip(axes, ('AUROC', 'F1')):
        ax.set_xscale('log', base=2)
        sizes = sorted(curve.buildings_per_town.unique())
        ax.set_xticks(sizes, [f'{n:,}' for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel('buildings simulated per town')
        ax.set_ylabel(f'{metric} on the unseen town')
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc='lower right')
    fig.suptitle('Learning curve (mean ± std over folds and seeds; dashed: references)')
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def write_page(
    rows: pd.DataFrame, settings: dict[str, Any], out: Path, minutes: float
) -> list[Path]:
    """Write ``learning_curve.{csv,md,png}`` into ``out``.

    Args:
        rows: the rows of every point (:func:`collect`).
        settings: the configuration.
        out: the output folder.
        minutes: wall time of the runs of this invocation.

    Returns:
        The files written.
    """
    out.mkdir(parents=True, exist_ok=True)
    csv = out / 'learning_curve.csv'
    rows.round(4).to_csv(csv, index=False)
    sizes = [f'n{s}' for s in settings['sizes']]
    curve = _summary(
        rows[rows.point.isin(sizes)], ['buildings_per_town', 'modalities', 'fusion']
    )
    png = out / 'learning_curve.png'
    plot(curve, png)
    variant_names = ['n' + str(settings.get('variant_size', settings['sizes'][0]))]
    ran = set(rows.point)
    changed = {k: v for k, v in (settings.get('variants') or {}).items() if k in ran}
    variant_names += list(changed)
    variants = _summary(
        rows[rows.point.isin(variant_names)], ['point', 'modalities', 'fusion']
    )
    common = settings.get('settings') or {}
    changes = ', '.join(f'`{k}: {v}`' for k, v in common.items())
    lines = [
        '# How far from the limit: learning curve and variants',
        '',
        (
            'Produced by `python experiments/learning_curve.py --config '
            f'experiments/learning_curve.yaml` from the settings of '
            f'`{settings["base"]}`{" with " + changes if changes else ""} '
            '(simulated scenes, CPU), on the first '
            f'{settings.get("folds", 2)} leave-one-city-out folds with seeds '
            f'{settings.get("seeds", [0, 1])}. Each point simulates its own towns '
            "of that size. Unseen towns only; F1 at the validation town's "
            "threshold, `f1_best` at the test town's own best; the last column "
            'scores the same probabilities against the true grades. Dashed lines '
            'and the reference rows know the truth: the fragility oracle and the '
            'SAR statistics on the true footprints.'
        ),
        '',
        (
            "Time of the runs shown (sum of the runs' `seconds`, 2 CPU cores): "
            + ', '.join(
                f'{point} {_minutes(group):.0f} min'
                for point, group in rows.groupby('point', sort=False)
            )
            + f'; this invocation ran for {minutes:.1f} min.'
        ),
        '',
        '## Learning curve',
        '',
        *_table(curve, 'buildings_per_town'),
        '',
        '![Unseen-town AUROC and F1 against buildings per town](learning_curve.png)',
        '',
    ]
    if changed:
        lines += [
            '## Variants at one size',
            '',
            'The first point is the reference; each other changes one setting: '
            + '; '.join(f'`{k}`: {v}' for k, v in changed.items())
            + '.',
            '',
            *_table(variants, 'point'),
            '',
        ]
    md = out / 'learning_curve.md'
    md.write_text('\n'.join(lines), encoding='utf-8')
    return [csv, md, png]


def main(argv: list[str] | None = None) -> int:
    """Run the learning curve and its variants from the command line.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', required=True, help='learning-curve YAML file')
    parser.add_argument('--out', default=str(REPO / 'docs' / 'results'))
    parser.add_argument('--work', default='outputs/learning_curve')
    parser.add_argument(
        '--only', nargs='*', default=None, help='run only these points (e.g. n300)'
    )
    args = parser.parse_args(argv)
    try:
        settings = read_config(args.config)
        models = [(str(m), str(f)) for m, f in settings['models']]
        start = time.perf_counter()
        parts = []
        work = Path(args.work)
        for name, config in share_scenes(points(settings), work):
            if args.only is not None and name not in args.only:
                continue
            print(f'== {name}: {config.buildings} buildings per town', flush=True)
            parts.append(collect(name, config, models, work / name))
        minutes = (time.perf_counter() - start) / 60
        if not parts:
            raise ArgumentError('no point ran; check --only')
        files = write_page(
            pd.concat(parts, ignore_index=True), settings, Path(args.out), minutes
        )
    except SARDamageError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    for path in files:
        print(f'wrote {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
