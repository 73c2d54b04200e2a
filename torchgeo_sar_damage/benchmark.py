# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""FusionNet on real public benchmarks, per building: BRIGHT and QuickQuakeBuildings.

:func:`run_benchmark` trains :class:`~torchgeo_sar_damage.tasks.DamageClassification`
on the folds of a benchmark (:func:`qqb_folds`, :func:`bright_folds`) for every
modality set, fusion and seed, and scores each run like the study
(:func:`~torchgeo_sar_damage.study.scores`); :func:`write_benchmark_report` writes
``benchmark.csv`` in the study's columns and ``benchmark.md`` in the study's format.
``sardamage benchmark bright|qqb`` is the command line.

Protocols:

* **QuickQuakeBuildings, their protocol** (``split='qqb-protocol'``): as Sun et al.'s
  code does, each fold in turn is the validation fold, the other four train; the
  checkpoint with the best validation AUROC is kept and the F1 is taken at the best
  threshold of that same fold. There is no separate test set, so the numbers are
  optimistic; they sit beside the published ones.
* **QuickQuakeBuildings, honest** (``split='test'``): fold *k* is the test fold, fold
  *k + 1* chooses the checkpoint (validation AUROC) and the threshold (best F1), the
  other three train.
* **BRIGHT**: BRIGHT's own split (train on ``train``, choose on ``holdout``, test on
  ``val``) or leave-one-event-out (the events in ``test_events`` are tested, the
  others train; their ``holdout`` tiles choose).
"""

import copy
import gc
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import Dataset
from torchgeo.datasets.utils import Sample
from tqdm.auto import tqdm

from .batch import check_modalities
from .datamodules.benchmark import BuildingBenchmarkDataModule
from .errors import ArgumentError
from .study import COLUMNS, METRICS, _quiet_lightning, _sentence, label, scores, summary
from .study import markdown_table as _markdown_table
from .tasks import DamageClassification
from .utils import write_atomic

#: QuickQuakeBuildings' published 5-fold means (Sun, Wang & Eineder, arXiv:2312.06587;
#: table 1 of the repository ya0-sun/PostEQ-SARopt-BuildingDamage): model, F1, AUROC.
QQB_PUBLISHED = (
    ('SAR only, ResNet-18', 0.282, 0.769),
    ('optical only (best optical model)', 0.605, 0.941),
    ('SAR + optical', 0.670, 0.962),
)


@dataclass
class BenchmarkFold:
    """One train / validation / test split of a benchmark.

    Attributes:
        name: the fold's test set (``held_out_city`` of its rows: a fold or events).
        split: ``'test'`` or ``'qqb-protocol'`` (test set = validation set).
        train: training buildings.
        val: validation buildings (checkpoint, threshold and temperature).
        test: test buildings.
    """

    name: str
    split: str
    train: Dataset[Sample]
    val: Dataset[Sample]
    test: Dataset[Sample]


class _BestState(Callback):
    """Keep the model's state at the best validation value of a metric."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.best = -float('inf')
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule
    ) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        score = float(value) if value is not None else float('nan')
        if self.state is None or (np.isfinite(score) and score > self.best):
            self.best = score if np.isfinite(score) else self.best
            self.state = copy.deepcopy(pl_module.state_dict())


@torch.no_grad()
def predict_probabilities(
    model: DamageClassification,
    data: BuildingBenchmarkDataModule,
    dataset: Dataset[Sample],
) -> tuple[np.ndarray, np.ndarray]:
    """Damage probabilities and labels of a set of buildings.

    Args:
        model: a trained task.
        data: its data module (statistics).
        dataset: the buildings.

    Returns:
        Probabilities and labels of the labelled buildings.
    """
    model.eval()
    probs, labels = [], []
    for batch in data.loader(dataset):
        batch = data.normalise({k: v.to(model.device) for k, v in batch.items()})
        probs.append(model.probabilities(model(batch)).float().cpu().numpy())
        labels.append(batch['label'].cpu().numpy())
    p, y = np.concatenate(probs), np.concatenate(labels)
    keep = y >= 0
    return p[keep], y[keep]


def train_run(
    fold: BenchmarkFold,
    modalities: Sequence[str],
    fusion: str,
    seed: int,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    backbone: str = 'resnet18',
    pixel_m: float | None = None,
    accelerator: str = 'cpu',
    ece_bins: int = 10,
) -> dict[str, Any]:
    """Train and score one model on one fold.

    The checkpoint of the epoch with the best validation AUROC is kept; its
    threshold (best validation F1) decides the test F1.

    Args:
        fold: the split.
        modalities: the model's modalities.
        fusion: the fusion type.
        seed: the training seed.
        epochs: training epochs.
        batch_size: samples per batch.
        lr: learning rate.
        backbone: timm name of the image encoders.
        pixel_m: pixel size of the windows (the footprint area feature).
        accelerator: Lightning accelerator.
        ece_bins: bins of the expected calibration error.

    Returns:
        The run's row (:data:`~torchgeo_sar_damage.study.COLUMNS`).
    """
    start = time.perf_counter()
    lightning.seed_everything(seed, workers=True, verbose=False)
    data = BuildingBenchmarkDataModule(
        fold.train,
        fold.val,
        {fold.name: fold.test},
        modalities=modalities,
        pixel_m=pixel_m,
        batch_size=batch_size,
        train_name=f'train ({fold.name})',
    )
    model = DamageClassification(
        modalities=list(data.modalities), fusion=fusion, backbone=backbone, lr=lr
    )
    best = _BestState('val_AUROC')
    with _quiet_lightning():
        trainer = lightning.Trainer(
            max_epochs=epochs,
            accelerator=accelerator,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=[best],
        )
        trainer.fit(model, datamodule=data)
    if best.state is not None:
        model.load_state_dict(best.state)
    p, y = predict_probabilities(model, data, fold.test)
    threshold = float(model.threshold)
    seconds = time.perf_counter() - start
    return {
        'modalities': label(data.modalities),
        'fusion': fusion,
        'split': fold.split,
        'held_out_city': fold.name,
        'seed': seed,
        **scores(p, y, threshold, ece_bins),
        'threshold': threshold,
        'seconds': round(seconds, 2),
    }


def run_benchmark(
    folds: Sequence[BenchmarkFold],
    modality_sets: Iterable[Sequence[str]],
    fusions: Sequence[str] = ('late',),
    seeds: Sequence[int] = (0,),
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
    **train_args: Any,  # noqa: ANN401
) -> pd.DataFrame:
    """Train and score every modality set, fusion, seed and fold.

    Fusions that need a modality the set lacks (attention without ``osm``) are
    skipped. With ``out``, ``benchmark.csv`` is rewritten after every run, so an
    interrupted benchmark keeps the runs it finished.

    Args:
        folds: the splits (:func:`qqb_folds`, :func:`bright_folds`).
        modality_sets: the modality sets.
        fusions: fusion types.
        seeds: training seeds.
        out: folder of ``benchmark.csv`` (None: not written).
        progress: show a progress bar.
        **train_args: passed to :func:`train_run` (``epochs``, ``batch_size``...).

    Returns:
        One row per run (:data:`~torchgeo_sar_damage.study.COLUMNS`).
    """
    from .models.fusion import FUSIONS

    pairs = []
    for modalities in modality_sets:
        chosen = check_modalities(modalities)
        for fusion in fusions:
            if fusion not in FUSIONS:
                raise ArgumentError(
                    f'unknown fusion {fusion!r}; known: {sorted(FUSIONS)}'
                )
            if FUSIONS[fusion].required <= set(chosen):
                pairs.append((chosen, fusion))
    if not pairs:
        raise ArgumentError('no modality set and fusion apply; nothing to run')
    runs = [(f, m, fu, s) for f in folds for m, fu in pairs for s in seeds]
    rows: list[dict[str, Any]] = []
    bar = tqdm(runs, desc='benchmark', unit='run', disable=not progress)
    for fold, modalities, fusion, seed in bar:
        bar.set_postfix_str(f'{label(modalities)} {fusion} {fold.name} seed={seed}')
        rows.append(train_run(fold, modalities, fusion, seed, **train_args))
        if out is not None:
            frame = pd.DataFrame(rows, columns=list(COLUMNS))
            Path(out).mkdir(parents=True, exist_ok=True)
            write_atomic(
                Path(out) / 'benchmark.csv', partial(frame.to_csv, index=False)
            )
        gc.collect()
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _split_text(split: str) -> str:
    if split == 'qqb-protocol':
        return (
            "QuickQuakeBuildings' protocol: the validation fold is the test fold "
            '(checkpoint by its AUROC, F1 at its best threshold), as in the '
            'published table; optimistic'
        )
    return (
        'test set never used for training, checkpoint or threshold (both chosen on '
        'a separate validation set)'
    )


def write_benchmark_report(
    rows: pd.DataFrame,
    out: str | os.PathLike[str],
    title: str,
    about: Sequence[str] = (),
    published: Sequence[tuple[str, float, float]] = (),
    published_source: str = '',
) -> list[Path]:
    """Write ``benchmark.csv`` and ``benchmark.md`` (the study's columns and format).

    Args:
        rows: rows of :func:`run_benchmark`.
        out: output folder.
        title: the page's title.
        about: paragraphs saying what ran (data, command, machine).
        published: published ``(model, F1, AUROC)`` rows to show beside ours.
        published_source: where the published rows come from.

    Returns:
        The files written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = rows[list(COLUMNS)].copy()
    for metric in METRICS:
        table[metric] = table[metric].astype(float).round(4)
    write_atomic(out / 'benchmark.csv', partial(table.to_csv, index=False))
    lines = [
        f'# {title}',
        '',
        '*Written by `sardamage benchmark`; do not edit by hand.*',
    ]
    lines += ['', *[p for text in about for p in (text, '')]]
    minutes = float(rows['seconds'].astype(float).sum()) / 60
    runs = f'{len(rows)} run' + ('s' if len(rows) != 1 else '')
    lines += [f'{runs}, {minutes:.1f} minutes of training and testing.', '']
    overall = summary(rows, ['modalities', 'fusion', 'split'])
    for split in dict.fromkeys(rows.split):
        lines += [f'## {split}', '', _sentence(_split_text(split)) + '.', '']
        part = overall[overall.split == split]
        lines += [_markdown_table(part, ['modalities', 'fusion'], METRICS), '']
        per_set = summary(
            rows[rows.split == split], ['modalities', 'fusion', 'held_out_city']
        )
        lines += [
            '<details><summary>per test set</summary>',
            '',
            _markdown_table(
                per_set, ['modalities', 'fusion', 'held_out_city'], ['f1', 'auroc']
            ),
            '',
            '</details>',
            '',
        ]
    if published:
        lines += [
            '## Published (not rerun here)',
            '',
            (
                f'{published_source} Numbers copied from the publication, labelled as '
                'published; compare them with the rows of the same protocol above.'
            ),
            '',
            '| model (published) | F1 | AUROC |',
            '|---|---|---|',
            *[f'| {name} | {f1:.3f} | {auroc:.3f} |' for name, f1, auroc in published],
            '',
        ]
    page = out / 'benchmark.md'
    write_atomic(page, lambda p: p.write_text('\n'.join(lines), encoding='utf-8'))
    return [out / 'benchmark.csv', page]


def qqb_folds(
    root: str | os.PathLike[str],
    protocol: str = 'both',
    size: int = 64,
    dataset: Callable[..., Dataset[Sample]] | None = None,
    test_folds: Sequence[int] = (1, 2, 3, 4, 5),
) -> list[BenchmarkFold]:
    """The folds of QuickQuakeBuildings under one or both protocols.

    Args:
        root: the data (see :class:`~torchgeo_sar_damage.datasets.QuickQuakeBuildings`).
        protocol: ``'qqb'`` (theirs), ``'honest'`` or ``'both'``.
        size: window side in pixels.
        dataset: the dataset class (default :class:`QuickQuakeBuildings`).
        test_folds: the folds tested, one split each per protocol (default all).

    Returns:
        One split per test fold and protocol.

    Raises:
        ArgumentError: for an unknown protocol or fold.
    """
    if protocol not in ('qqb', 'honest', 'both'):
        raise ArgumentError(
            f"protocol must be 'qqb', 'honest' or 'both', not {protocol!r}"
        )
    if not test_folds or not set(test_folds) <= {1, 2, 3, 4, 5}:
        raise ArgumentError(f'test folds must be among 1-5, not {list(test_folds)}')
    if dataset is None:
        from .datasets import QuickQuakeBuildings

        dataset = QuickQuakeBuildings
    folds = [1, 2, 3, 4, 5]
    out = []
    for k in test_folds:
        test = dataset(root, folds=[k], size=size)
        if protocol in ('qqb', 'both'):
            train = dataset(root, folds=[f for f in folds if f != k], size=size)
            out.append(BenchmarkFold(f'fold-{k}', 'qqb-protocol', train, test, test))
        if protocol in ('honest', 'both'):
            v = k % 5 + 1
            train = dataset(
                root, folds=[f for f in folds if f not in (k, v)], size=size
            )
            val = dataset(root, folds=[v], size=size)
            out.append(BenchmarkFold(f'fold-{k}', 'test', train, val, test))
    return out


def bright_folds(
    root: str | os.PathLike[str],
    test_events: Sequence[str] | None = None,
    earthquakes_only: bool = False,
    size_m: float = 32.0,
    pixel_m: float = 0.5,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> list[BenchmarkFold]:
    """The folds of BRIGHT: its own split, or one fold per left-out event.

    Without ``test_events``: train on BRIGHT's ``train`` list, choose on its
    ``holdout`` list, test on its ``val`` list (whose targets TorchGeo's archive
    lacks). With ``test_events``: each event in turn is the test set (all its
    labelled tiles); the other events' ``train`` tiles train and their ``holdout``
    tiles choose the checkpoint and threshold.

    Args:
        root: folder holding ``dfc25_track2_trainval``.
        test_events: events to leave out, one fold each (None: BRIGHT's split).
        earthquakes_only: keep only the earthquakes (train and test).
        size_m: window side in metres.
        pixel_m: pixel size of the windows in metres.
        cache_dir: folder of the cached per-building index.
        progress: show a progress bar while indexing.

    Returns:
        The folds.
    """
    from torch.utils.data import Subset

    from .datasets import BRIGHTBuildings

    common: dict[str, Any] = {
        'size_m': size_m,
        'pixel_m': pixel_m,
        'earthquakes_only': earthquakes_only,
        'cache_dir': cache_dir,
        'progress': progress,
    }
    if not test_events:
        train = BRIGHTBuildings(root, split='train', **common)
        val = BRIGHTBuildings(root, split='holdout', **common)
        test = BRIGHTBuildings(root, split='val', **common)
        return [BenchmarkFold('val', 'test', train, val, test)]
    folds = []
    for event in test_events:
        others = BRIGHTBuildings(root, split='train', test_events=[event], **common)
        test = BRIGHTBuildings(root, split='test', test_events=[event], **common)
        holdout = set(others.lists['holdout'])
        chosen = others.index['tile'].isin(holdout).to_numpy()
        part_train = Subset(others, np.flatnonzero(~chosen).tolist())
        part_val = Subset(others, np.flatnonzero(chosen).tolist())
        if not len(part_train) or not len(part_val):
            raise ArgumentError(
                f'leaving out {event}: the other events have '
                f'{len(part_train)} buildings in train tiles and {len(part_val)} in '
                'holdout tiles; both are needed (training and choosing the threshold)'
            )
        folds.append(BenchmarkFold(event, 'test', part_train, part_val, test))
    return folds


def check_sets(sets: Iterable[str]) -> list[tuple[str, ...]]:
    """Modality sets from ``'sar+optical'``-style labels.

    Args:
        sets: labels joined by ``+``.

    Returns:
        The modality sets.
    """
    return [check_modalities(text.split('+')) for text in sets]
