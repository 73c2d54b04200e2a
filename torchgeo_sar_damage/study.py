# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""The paper's study: modality ablation x fusion x unseen cities x seeds, with baselines.

Russo et al. (2025) claim that geospatial context (OSM footprints, DSM, GEM exposure)
improves per-building damage detection from one post-event SAR image and, above all,
generalisation to cities never seen in training. :func:`run_study` reruns that study
on a scene folder (simulated by default):

* **Splits.** Leave-one-city-out (:func:`~torchgeo_sar_damage.datamodules.
  leave_one_city_out`): every city is the unseen test city once, the next city in the
  list chooses the decision threshold (best F1), the others train. Inside each
  training city, random spatial blocks (``holdout`` of them, ``holdout_block_m`` wide;
  :func:`~torchgeo_sar_damage.datamodules.holdout_blocks`) are kept out of training
  and form the *seen-city* test set. Every run is therefore tested twice: on the
  held-out blocks of the cities it trained on (``split='seen'``) and on the city it
  never saw (``split='unseen'``); both rows carry the fold's unseen city in
  ``held_out_city`` so that they pair up.
* **Models.** :class:`~torchgeo_sar_damage.models.FusionNet` trained by
  :class:`~torchgeo_sar_damage.tasks.DamageClassification` for every modality set and
  fusion (SAR alone has one image branch and no footprint, so early and late fusion
  are the same network and attention fusion, which needs the footprint, does not
  apply: it runs once, as ``late``; that is the QuickQuakeBuildings baseline, a
  SAR-only ResNet-18 with late fusion). Two scikit-learn gradient-boosting baselines
  (``fusion='gbm'``) on the same splits: **context only** (``osm+dsm+gem``: the 31
  tabular features of DSM, footprint and GEM exposure, no SAR) and **SAR statistics**
  (``sar``: mean, standard deviation, 90th percentile, maximum and bright-pixel share
  of sigma nought in dB over each OSM footprint, see
  :func:`~torchgeo_sar_damage.datasets.cosmo_skymed.footprint_sigma0_statistics`).
* **TorchGeo's models.** TorchGeo's own ``torchgeo.tasks.Classification`` with a
  ``backbone`` network on the image channels of a modality set stacked
  (``fusion='torchgeo'``; the data module's stacked sample mode, same chips, splits,
  normalisation and augmentation): what a TorchGeo user gets without this package's
  fusion. And FusionNet with a pretrained SAR encoder, TorchGeo weights given by
  name (``fusion='late@ResNet50_Weights.SENTINEL1_ALL_MOCO'``); nothing downloads,
  so a run whose weights file is not in torch hub's cache is skipped, and the report
  says so (:func:`missing_weights`).
* **Metrics** per run and split: F1, precision, recall (at the validation city's
  threshold), AUROC, average precision, Cohen's kappa, and the expected calibration
  error of the probabilities; the report adds ``f1_best``, the F1 at the test set's
  own best threshold (:func:`best_f1`), to show what transferring the threshold costs.

:func:`write_report` turns the rows into ``study.csv``, ``study.md`` (mean +- std
tables overall and per held-out city, the generalisation gap) and figures.
``experiments/study.py`` is the command line.
"""

import contextlib
import gc
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, cast

import geopandas as gpd
import lightning
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import yaml
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import (
    average_precision_score,
    cohen_kappa_score,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from torch.utils.data import DataLoader, Dataset
from torchgeo.datasets.utils import Sample
from torchgeo.tasks import Classification
from tqdm.auto import tqdm

from .batch import (
    IMAGE_INPUTS,
    IMAGE_KEYS,
    MASK_KEYS,
    MODALITIES,
    TOWN_MODALITIES,
    check_modalities,
    stack_images,
)
from .datamodules import SARDamageDataModule, leave_one_city_out
from .datasets import OSMBuildings, collate_buildings
from .datasets.cosmo_skymed import footprint_sigma0_statistics
from .errors import ArgumentError, InputFileError
from .models.encoders import backbone_exists
from .models.fusion import FUSIONS
from .models.pretrained import check_sar_weights, resolve_weights, weights_path
from .plot import save_figure  # also selects the Agg backend
from .predict.quantize import CALIBRATION_CHUNKS, CALIBRATION_WINDOWS, quantize_encoders
from .reliability import expected_calibration_error, reliability_curve
from .simulation.run import simulate
from .tasks import DamageClassification
from .tasks.damage import best_f1_threshold
from .utils import write_atomic

#: Columns of ``study.csv``: the issue's contract first, then extras.
COLUMNS = (
    'modalities',
    'fusion',
    'split',
    'held_out_city',
    'seed',
    'f1',
    'precision',
    'recall',
    'auroc',
    'ap',
    'kappa',
    'ece',
    'threshold',
    'n_buildings',
    'n_damaged',
    'seconds',
)

#: Metrics reported as mean +- std.
METRICS = ('f1', 'precision', 'recall', 'auroc', 'ap', 'kappa', 'ece')

#: Metrics of the report that are computed from the saved predictions, after
#: :data:`COLUMNS` in ``study.csv``: the F1 at the test set's own best threshold.
REPORT_METRICS = ('f1_best',)

#: Metrics of the report after label-free prior adaptation to each test set
#: (:func:`with_adaptation`), computed from the saved predictions: whether it adapted
#: (1) or failed safe (0), the ECE and the F1 (at the adapted expected-F1
#: threshold) of what prediction then gives, the damaged share estimated without
#: labels, the true one and the absolute error; and, without adaptation, the F1 at
#: the expected-F1 threshold of the calibrated probabilities (``predict --threshold
#: expected-f1``) and the error of their mean as the damaged share.
ADAPTED_METRICS = (
    'prior_adapted',
    'ece_adapted',
    'f1_adapted',
    'share_estimate',
    'share_true',
    'share_error',
    'f1_expected',
    'share_mean_error',
)

#: Metrics of the report that compare label-free estimators of an unseen test set's
#: damaged share (:func:`with_bbse`), computed from the saved predictions: black-box
#: shift estimation (Lipton et al. 2018) with the hit and false-alarm rates of the
#: same run on its seen split, its absolute error, the ECE and expected-F1 F1 of the
#: probabilities re-weighted to it, and the error of copying the validation town's
#: share.
BBSE_METRICS = (
    'share_bbse',
    'share_bbse_error',
    'ece_bbse',
    'f1_bbse',
    'share_validation_error',
)

#: Metrics of the report against the simulator's true grades instead of the EMS
#: labels (:func:`with_true_labels`; unseen towns of simulated scenes only): the
#: share of EMS labels that disagree with the truth (grade >= 4), and the AUROC and
#: the F1 (at the run's threshold) against the truth.
TRUTH_METRICS = ('label_noise', 'auroc_true', 'f1_true')

#: ``fusion`` of the study's runs of TorchGeo's ``Classification`` task.
TORCHGEO = 'torchgeo'

#: ``(modalities, fusion)`` of the fragility oracle: each building's true probability
#: of grade >= 4 at its true PGA and taxonomy (no training; simulated scenes only).
ORACLE = ('truth', 'oracle')

#: ``(modalities, fusion)`` of the SAR-statistics baseline on the true footprints.
TRUE_FOOTPRINTS = ('sar', 'gbm-truth')

#: ``fusion`` of the baselines and references (not deep models).
BASELINES = ('gbm', TRUE_FOOTPRINTS[1], ORACLE[1])

#: The fusion of the study's runs with a pretrained SAR encoder.
PRETRAINED_FUSION = 'late'

#: Suffix of the ``fusion`` of a study run whose image encoders are quantised to int8
#: after training (``predict --quantize``), e.g. ``'early+int8'``.
INT8 = '+int8'

#: Separator of a study run's ``fusion`` and the backbone it trains instead of the
#: configuration's ``backbone`` (``'early~lcnet_100'``, see
#: :attr:`StudyConfig.backbones`).
BACKBONE = '~'

#: Features of the SAR-statistics baseline (columns of footprint_sigma0_statistics).
SAR_STATISTICS = ('mean_db', 'std_db', 'p90_db', 'max_db', 'bright_fraction')


def read_settings(path: str | os.PathLike[str], known: Sequence[str]) -> dict[str, Any]:
    """Read a YAML mapping of settings whose keys must be among ``known``.

    Args:
        path: the YAML file.
        known: the settings it may have.

    Returns:
        The settings (empty for an empty file).

    Raises:
        InputFileError: if the file cannot be read, is not a mapping or has unknown
            keys.
    """
    try:
        values = yaml.safe_load(Path(path).read_text(encoding='utf-8')) or {}
    except (OSError, yaml.YAMLError) as err:
        raise InputFileError(path, f'cannot be read as YAML ({err})') from None
    if not isinstance(values, dict):
        raise InputFileError(path, 'must be a mapping of settings')
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InputFileError(
            path, f'unknown settings {unknown}; known: {", ".join(sorted(known))}'
        )
    return values


@dataclass
class StudyConfig:
    """Settings of a study (``experiments/study/*.yaml`` hold the named ones).

    Attributes:
        name: name of the configuration (written into the report).
        cities: the cities of the leave-one-city-out folds (at least three).
        buildings: buildings simulated per city.
        pixel_m: simulated pixel size in metres.
        scene_seed: seed of the simulated scene.
        scene: an existing scene folder (with ``scene.json``) instead of simulating.
        seeds: training seeds; every run is repeated with each.
        modality_sets: the modality sets of the ablation.
        fusions: fusion types (combinations that do not apply are skipped).
        baselines: run the gradient-boosting baselines too.
        epochs: training epochs.
        size_m: window side in metres.
        batch_size: training batch size.
        lr: learning rate.
        backbone: timm name of the image encoders.
        holdout: share of each training city's blocks held out (seen-city split).
        holdout_block_m: side of the held-out blocks in metres.
        ece_bins: bins of the expected calibration error.
        torchgeo_sets: modality sets (image modalities only) on which TorchGeo's
            ``Classification`` task with ``backbone`` is trained, their channels
            stacked; ``[]`` runs none.
        pretrained_weights: names of TorchGeo Sentinel-1 weights for the SAR encoder
            of a FusionNet (late fusion; the weights choose its backbone); a name
            whose file is not in torch hub's cache is skipped with a note.
        pretrained_sets: the modality sets trained with each of
            ``pretrained_weights``.
        oracles: with ``baselines``, also the references that know the truth of a
            simulated scene (``truth.gpkg``): the fragility oracle and the
            SAR-statistics baseline on the true footprints.
        folds: run only the first this many leave-one-city-out folds (None: all;
            e.g. a learning curve on two folds).
        gem_level: administrative level of the simulated GEM exposure files: 1,
            per province as GEM publishes Türkiye (default), or 2, per district
            (context finer than real users have; the study before province level).
        tta: test-time augmentation of the FusionNet runs: each test building's
            logit is the mean of its chip's and of the chip flipped along azimuth
            (the training augmentation's flip); the threshold and calibration stay
            those fitted on the validation town without it.
        int8_sets: modality sets whose FusionNet models of ``int8_fusions`` are
            also scored with their image encoders quantised to int8 (what
            ``sardamage predict --quantize`` runs), as runs of fusion
            ``<fusion>+int8``: the same trained model (reused from the float run,
            or retrained with the same seed), calibrated on windows of the unseen
            town as prediction does; ``[]`` runs none.
        int8_fusions: the fusions of ``int8_sets`` that are quantised.
        backbones: other timm backbones of the image encoders, each trained for
            ``backbone_sets`` x ``backbone_fusions`` beside the configuration's
            ``backbone``, as runs of fusion ``<fusion>~<backbone>`` (to choose a
            lighter encoder by accuracy per cost); ``[]`` runs none.
        backbone_sets: modality sets trained with each of ``backbones``.
        backbone_fusions: fusions trained with each of ``backbones``.
    """

    name: str = 'custom'
    cities: list[str] = field(
        default_factory=lambda: ['kahramanmaras', 'antakya', 'nurdagi', 'islahiye']
    )
    buildings: int = 400
    pixel_m: float = 1.0
    scene_seed: int = 0
    scene: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    modality_sets: list[list[str]] = field(
        default_factory=lambda: [
            ['sar'],
            ['sar', 'osm'],
            ['sar', 'osm', 'dsm'],
            ['sar', 'osm', 'dsm', 'gem'],
        ]
    )
    fusions: list[str] = field(default_factory=lambda: ['early', 'late', 'attention'])
    baselines: bool = True
    epochs: int = 4
    size_m: float = 32.0
    batch_size: int = 32
    lr: float = 1e-3
    backbone: str = 'resnet18'
    holdout: float = 0.3
    holdout_block_m: float = 100.0
    ece_bins: int = 10
    torchgeo_sets: list[list[str]] = field(
        default_factory=lambda: [['sar'], ['sar', 'osm', 'dsm']]
    )
    pretrained_weights: list[str] = field(
        default_factory=lambda: ['ResNet50_Weights.SENTINEL1_ALL_MOCO']
    )
    pretrained_sets: list[list[str]] = field(
        default_factory=lambda: [['sar'], ['sar', 'osm', 'dsm', 'gem']]
    )
    oracles: bool = True
    folds: int | None = None
    gem_level: int = 1
    tta: bool = False
    int8_sets: list[list[str]] = field(default_factory=list)
    int8_fusions: list[str] = field(default_factory=lambda: ['early', 'late'])
    backbones: list[str] = field(default_factory=list)
    backbone_sets: list[list[str]] = field(default_factory=list)
    backbone_fusions: list[str] = field(default_factory=lambda: ['early'])

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> 'StudyConfig':
        """Read a configuration file.

        Args:
            path: a YAML file whose keys are attributes of this class.

        Returns:
            The configuration.

        Raises:
            InputFileError: if the file cannot be read or has unknown keys.
        """
        values = read_settings(path, [f.name for f in fields(cls)])
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        """Validate the settings.

        Raises:
            ArgumentError: if a setting is out of range.
        """
        if len(set(self.cities)) < 3 or len(set(self.cities)) != len(self.cities):
            raise ArgumentError(
                f'cities must be at least three distinct cities, not {self.cities}'
            )
        if not self.seeds:
            raise ArgumentError('seeds is empty; give at least one seed')
        for modalities in self.modality_sets:
            if 'sar' not in modalities:
                raise ArgumentError(
                    f'every modality set needs sar (the study is about SAR plus '
                    f'context); got {modalities}'
                )
            check_modalities(modalities)
        unknown = sorted(set(self.fusions) - set(FUSIONS))
        unknown += sorted(set(self.int8_fusions) - set(FUSIONS))
        unknown += sorted(set(self.backbone_fusions) - set(FUSIONS))
        if unknown:
            raise ArgumentError(f'unknown fusions {unknown}; known: {sorted(FUSIONS)}')
        for modalities in [*self.int8_sets, *self.backbone_sets]:
            check_modalities(modalities)
        for name in [self.backbone, *self.backbones]:
            if not backbone_exists(name):
                raise ArgumentError(
                    f'unknown backbone {name!r}: give a timm model name (e.g. '
                    "'resnet18', 'lcnet_100') or one of the library's own encoders"
                )
        if self.epochs < 1 or self.buildings < 1 or self.batch_size < 1:
            raise ArgumentError('epochs, buildings and batch_size must be at least 1')
        if not 0 < self.holdout < 1:
            raise ArgumentError(
                f'holdout must be in (0, 1) for the seen-city split, not {self.holdout}'
            )
        for modalities in self.torchgeo_sets:
            check_modalities(modalities)
            if 'sar' not in modalities or not set(modalities) <= set(IMAGE_INPUTS):
                raise ArgumentError(
                    'torchgeo_sets stack image channels: each set needs sar and '
                    f'only image modalities ({", ".join(IMAGE_INPUTS)}); got '
                    f'{modalities}'
                )
        for modalities in self.pretrained_sets:
            check_modalities(modalities)
            if 'sar' not in modalities:
                raise ArgumentError(
                    f'pretrained_sets need sar (its encoder is pretrained); got '
                    f'{modalities}'
                )
        for name in self.pretrained_weights:
            check_sar_weights(resolve_weights(name))
        if self.gem_level not in (1, 2):
            raise ArgumentError(
                f'gem_level must be 1 (provinces) or 2 (districts), not {self.gem_level}'
            )
        if self.folds is not None and not 1 <= self.folds <= len(self.cities):
            raise ArgumentError(
                f'folds must be between 1 and the number of cities '
                f'({len(self.cities)}), not {self.folds}'
            )


def label(modalities: Sequence[str]) -> str:
    """The name of a modality set in the study's tables (``'sar+osm'``)."""
    return '+'.join(m for m in MODALITIES if m in modalities)


def grid(config: StudyConfig) -> list[tuple[str, str]]:
    """The (modality set, fusion) pairs of the deep models of a study.

    Fusions that need a modality the set lacks are skipped, and SAR alone runs once as
    ``late`` (one image branch: early and late fusion are the same network).

    Args:
        config: the study.

    Returns:
        ``(label, fusion)`` pairs, in the configuration's order.
    """
    pairs = []
    for modalities in config.modality_sets:
        name = label(modalities)
        for fusion in config.fusions:
            if not FUSIONS[fusion].required <= set(modalities):
                continue
            alone = tuple(check_modalities(modalities)) == ('sar',)
            if alone and fusion != 'late' and 'late' in config.fusions:
                continue
            if (name, fusion) not in pairs:
                pairs.append((name, fusion))
    return pairs


def pretrained_fusion(weights: str) -> str:
    """The ``fusion`` of a study run whose SAR encoder starts from ``weights``."""
    return f'{PRETRAINED_FUSION}@{weights}'


def run_weights(fusion: str) -> str | None:
    """The TorchGeo weights name of a run's ``fusion`` (None: trained from scratch)."""
    return fusion.partition('@')[2] or None


def run_backbone(fusion: str) -> str | None:
    """The backbone a run's ``fusion`` trains (None: the configuration's)."""
    return fusion.removesuffix(INT8).partition(BACKBONE)[2] or None


def fusion_type(fusion: str) -> str:
    """FusionNet's ``fusion`` of a run's ``fusion`` (``'early~lcnet_100+int8'``: early)."""
    return fusion.removesuffix(INT8).partition('@')[0].partition(BACKBONE)[0]


def missing_weights(config: StudyConfig) -> dict[str, Path]:
    """The configuration's pretrained weights whose file is not in torch hub's cache.

    Args:
        config: the study.

    Returns:
        Weights name -> the path where the file was looked for.
    """
    out = {}
    for name in config.pretrained_weights:
        path = weights_path(resolve_weights(name))
        if not path.is_file():
            out[name] = path
    return out


def extra_pairs(config: StudyConfig) -> list[tuple[str, str]]:
    """The ``(label, fusion)`` pairs of TorchGeo's models and int8 runs in a study.

    TorchGeo's ``Classification`` on each of ``torchgeo_sets``, the int8 runs of
    ``int8_sets`` x ``int8_fusions``, then FusionNet with
    each of ``pretrained_weights`` (those whose file is in torch hub's cache:
    :func:`missing_weights`) on each of ``pretrained_sets``.

    Args:
        config: the study.

    Returns:
        ``(label, fusion)`` pairs.
    """
    pairs = [(label(m), TORCHGEO) for m in config.torchgeo_sets]
    for modalities in config.backbone_sets:
        for fusion in config.backbone_fusions:
            if FUSIONS[fusion].required <= set(modalities):
                pairs += [
                    (label(modalities), f'{fusion}{BACKBONE}{name}')
                    for name in config.backbones
                ]
    for modalities in config.int8_sets:
        pairs += [
            (label(modalities), f'{fusion}{INT8}')
            for fusion in config.int8_fusions
            if FUSIONS[fusion].required <= set(modalities)
        ]
    missing = missing_weights(config)
    for name in config.pretrained_weights:
        if name not in missing:
            pairs += [
                (label(m), pretrained_fusion(name)) for m in config.pretrained_sets
            ]
    return list(dict.fromkeys(pairs))


def scores(
    probabilities: np.ndarray, targets: np.ndarray, threshold: float, bins: int = 10
) -> dict[str, float]:
    """The study's metrics of one set of predictions.

    Args:
        probabilities: predicted probabilities of damage ``[N]``.
        targets: true labels ``[N]`` (0 or 1).
        threshold: decision threshold (damaged where probability >= threshold).
        bins: bins of the expected calibration error.

    Returns:
        ``f1``, ``precision``, ``recall``, ``auroc``, ``ap``, ``kappa``, ``ece``,
        ``n_buildings``, ``n_damaged``; AUROC and AP are NaN with one class only.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(targets, dtype=np.int64)
    predicted = (p >= threshold).astype(np.int64)
    both = len(np.unique(y)) == 2
    return {
        'f1': float(f1_score(y, predicted, zero_division=0)),
        'precision': float(precision_score(y, predicted, zero_division=0)),
        'recall': float(recall_score(y, predicted, zero_division=0)),
        'auroc': float(roc_auc_score(y, p)) if both else float('nan'),
        'ap': float(average_precision_score(y, p)) if both else float('nan'),
        'kappa': float(cohen_kappa_score(y, predicted)) if both else float('nan'),
        'ece': expected_calibration_error(p, y, bins),
        'n_buildings': len(y),
        'n_damaged': int(y.sum()),
    }


def best_f1(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """The F1 at the best threshold of these predictions themselves.

    An oracle bound, not a deployable score: the gap between it and the F1 at the
    validation city's threshold is what transferring the threshold costs.

    Args:
        probabilities: predicted probabilities of damage ``[N]``.
        targets: true labels ``[N]`` (0 or 1).

    Returns:
        The largest F1 over all thresholds; NaN without a damaged building.
    """
    y = np.asarray(targets, dtype=np.int64)
    if not y.any():
        return float('nan')
    # the probabilities are float32 model outputs: compare them as the task does
    p = np.asarray(probabilities, dtype=np.float32)
    threshold = best_f1_threshold(torch.tensor(p), torch.tensor(y))
    return float(f1_score(y, p >= threshold, zero_division=0))


def with_best_f1(rows: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """The rows with ``f1_best`` (:func:`best_f1` of each run's saved predictions).

    Args:
        rows: rows of the study (:func:`run_study`).
        predictions: pooled predictions (:func:`run_study`).

    Returns:
        A copy of ``rows`` with ``f1_best``; NaN where a run's predictions are missing.
    """
    keys = ['modalities', 'fusion', 'split', 'held_out_city', 'seed']
    best = {
        tuple(key): best_f1(group.probability.to_numpy(), group.label.to_numpy())
        for key, group in predictions.groupby(keys, sort=False)
    }
    out = rows.copy()
    out['f1_best'] = [
        best.get((m, f, sp, c, int(seed)), float('nan'))
        for m, f, sp, c, seed in zip(
            rows.modalities, rows.fusion, rows.split, rows.held_out_city, rows.seed
        )
    ]
    return out


#: Columns that name a run and split of the study (rows and predictions).
RUN_KEYS = ('modalities', 'fusion', 'split', 'held_out_city', 'seed')


def _run_key(row: Mapping[Any, Any], split: str | None = None) -> tuple[str, ...]:
    """A row's :data:`RUN_KEYS` as strings (the seed as an integer's).

    ``split`` replaces the row's own where given.
    """
    key = [str(row[k]) for k in RUN_KEYS[:-1]]
    if split is not None:
        key[RUN_KEYS.index('split')] = split
    return (*key, str(int(row['seed'])))


def _prediction_groups(
    predictions: pd.DataFrame,
) -> dict[tuple[str, ...], pd.DataFrame]:
    """The predictions of each run and split, by :func:`_run_key`."""
    return {
        _run_key(dict(zip(RUN_KEYS, key))): group
        for key, group in predictions.groupby(list(RUN_KEYS), sort=False)
    }


def _validation_shares(rows: pd.DataFrame, cities: Sequence[str]) -> dict[str, float]:
    """The damaged share of each held-out city's validation town.

    A fold's validation town is the city after the held-out one in the
    configuration's order; its share is read from its own unseen rows (NaN where it
    has none).
    """
    unseen = rows[rows.split == 'unseen'].drop_duplicates('held_out_city')
    share = {
        str(c): float(d) / float(n)
        for c, d, n in zip(unseen.held_out_city, unseen.n_damaged, unseen.n_buildings)
        if float(n) > 0
    }
    order = list(cities)
    return {
        city: share.get(order[(i + 1) % len(order)], float('nan'))
        for i, city in enumerate(order)
    }


def with_true_labels(rows: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """The rows with :data:`TRUTH_METRICS`, from the saved true labels.

    Only the unseen-town predictions of simulated scenes carry ``label_true``
    (:func:`_run_records`); the metrics are NaN elsewhere. ``label_noise`` is the
    share of EMS labels that disagree with the truth; ``auroc_true`` and ``f1_true``
    (at the run's threshold) score the same probabilities against the truth.

    Args:
        rows: rows of the study (:func:`run_study`).
        predictions: pooled predictions (:func:`run_study`).

    Returns:
        A copy of ``rows`` with the columns.
    """
    groups: dict[tuple[str, ...], pd.DataFrame] = {}
    if 'label_true' in predictions:
        known = predictions[predictions['label_true'].fillna(-1) >= 0]
        groups = _prediction_groups(known)
    out = rows.copy()
    values: dict[str, list[float]] = {m: [] for m in TRUTH_METRICS}
    for row in rows[[*RUN_KEYS, 'threshold']].to_dict('records'):
        group = groups.get(_run_key(row))
        record = dict.fromkeys(TRUTH_METRICS, float('nan'))
        if group is not None and len(group):
            p = group.probability.to_numpy(dtype=np.float64)
            y = group.label_true.to_numpy(dtype=np.int64)
            ems = group.label.to_numpy(dtype=np.int64)
            record['label_noise'] = float(np.mean(ems != y))
            if 0 < y.sum() < len(y):
                record['auroc_true'] = float(roc_auc_score(y, p))
            record['f1_true'] = float(
                f1_score(y, p >= float(row['threshold']), zero_division=0)
            )
        for metric in TRUTH_METRICS:
            values[metric].append(record[metric])
    for metric in TRUTH_METRICS:
        out[metric] = values[metric]
    return out


def calibrated_on_validation(fusion: str) -> bool:
    """Whether a model's probabilities are calibrated on the validation town.

    FusionNet runs are (:class:`~torchgeo_sar_damage.tasks.DamageClassification`
    fits a temperature and a bias there); gradient boosting (class-balanced) and
    TorchGeo's task (no calibration) are not, so prior adaptation, which needs the
    validation town's calibrated probabilities, is not applied to them.
    """
    return fusion not in (*BASELINES, TORCHGEO)


def with_adaptation(
    rows: pd.DataFrame, predictions: pd.DataFrame, cities: Sequence[str], bins: int = 10
) -> pd.DataFrame:
    """The rows with :data:`ADAPTED_METRICS`, from each run's saved predictions.

    Each test set's probabilities are adapted to its damaged share estimated without
    labels (:func:`~torchgeo_sar_damage.prior_shift.adapt_to_town`, EM of Saerens et
    al. 2002); the source share is that of the fold's validation town (the next city
    after the unseen one, whose labelled buildings calibrated the model), read from
    its rows. Where adaptation fails safe (``prior_adapted`` 0), the columns
    describe the unadapted output at its expected-F1 threshold, as prediction gives
    it by default. ``f1_expected`` and ``share_mean_error`` score the unadapted
    probabilities with the expected-F1 threshold chosen on the test set without
    labels, and their mean as its damaged share. ``share_true`` is the test set's damaged share; the
    other columns are NaN for models not calibrated on the validation town
    (:func:`calibrated_on_validation`).

    Args:
        rows: rows of the study (:func:`run_study`).
        predictions: pooled predictions (:func:`run_study`).
        cities: the study's cities, in the configuration's order.
        bins: bins of the expected calibration error.

    Returns:
        A copy of ``rows`` with the columns.
    """
    from .prior_shift import adapt_to_town, expected_f1_threshold

    validation = _validation_shares(rows, cities)
    groups = _prediction_groups(predictions)
    out = rows.copy()
    values: dict[str, list[float]] = {m: [] for m in ADAPTED_METRICS}
    for row in rows[list(RUN_KEYS)].to_dict('records'):
        group = groups.get(_run_key(row))
        record = dict.fromkeys(ADAPTED_METRICS, float('nan'))
        city = str(row['held_out_city'])
        source = validation.get(city, float('nan'))
        if group is not None and len(group):
            p = group.probability.to_numpy(dtype=np.float64)
            y = group.label.to_numpy(dtype=np.int64)
            record['share_true'] = float(y.mean())
            if calibrated_on_validation(str(row['fusion'])) and np.isfinite(source):
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore', UserWarning)
                    shift = adapt_to_town(p, source)
                # what prediction gives by default: the adapted output, or, where
                # adaptation fails safe, the unadapted one at its expected-F1
                # threshold (shift.threshold either way)
                q = shift.probabilities
                threshold = shift.threshold
                record['prior_adapted'] = float(shift.adapted)
                record['ece_adapted'] = expected_calibration_error(q, y, bins)
                record['f1_adapted'] = float(
                    f1_score(y, q >= threshold, zero_division=0)
                )
                record['share_estimate'] = shift.estimate
                record['share_error'] = abs(shift.estimate - record['share_true'])
                # unadapted: a failed-safe shift already holds its threshold
                own = expected_f1_threshold(p) if shift.adapted else shift.threshold
                record['f1_expected'] = float(f1_score(y, p >= own, zero_division=0))
                record['share_mean_error'] = abs(p.mean() - record['share_true'])
        for metric in ADAPTED_METRICS:
            values[metric].append(record[metric])
    for metric in ADAPTED_METRICS:
        out[metric] = values[metric]
    return out


def _bbse_record(
    test: pd.DataFrame,
    seen: pd.DataFrame | None,
    threshold: float,
    source: float,
    bins: int,
) -> dict[str, float]:
    """:data:`BBSE_METRICS` of one unseen test set (see :func:`with_bbse`)."""
    from .prior_shift import (
        adapt_probabilities,
        bbse_prior,
        bbse_rates,
        expected_f1_threshold,
    )

    p = test.probability.to_numpy(dtype=np.float64)
    y = test.label.to_numpy(dtype=np.int64)
    record = {'share_validation_error': abs(source - float(y.mean()))}
    if seen is None or not len(seen):
        return record
    tpr, fpr = bbse_rates(
        seen.probability.to_numpy(dtype=np.float64),
        seen.label.to_numpy(dtype=np.int64),
        threshold,
    )
    estimate = bbse_prior(p, threshold, tpr, fpr)
    if estimate is None:
        return record
    q = adapt_probabilities(p, source, estimate)
    chosen = q >= expected_f1_threshold(q)
    record['share_bbse'] = estimate
    record['share_bbse_error'] = abs(estimate - float(y.mean()))
    record['ece_bbse'] = expected_calibration_error(q, y, bins)
    record['f1_bbse'] = float(f1_score(y, chosen, zero_division=0))
    return record


def with_bbse(
    rows: pd.DataFrame, predictions: pd.DataFrame, cities: Sequence[str], bins: int = 10
) -> pd.DataFrame:
    """The rows with :data:`BBSE_METRICS`, from each run's saved predictions.

    Black-box shift estimation (Lipton, Wang & Smola 2018, binary case:
    :func:`~torchgeo_sar_damage.prior_shift.bbse_prior`) reads the thresholded
    model's hit and false-alarm rates on labelled data from the training
    distribution and solves for the share that explains how many of the new
    town's buildings it flags. Here the rates are those of the same run (same model
    and threshold, the ``threshold`` column) on its seen split, the held-out blocks
    of the training cities. The unseen city's probabilities are then re-weighted
    from the validation city's share (the one they are calibrated for, as in
    :func:`with_adaptation`) to the estimate and scored at their expected-F1
    threshold. ``share_validation_error`` is the error of simply copying the
    validation city's share. Only unseen rows of models calibrated on the
    validation town (:func:`calibrated_on_validation`) get values; the columns are
    NaN elsewhere, and where the seen split's predictions are missing or its rates
    do not separate the classes (no estimate).

    Args:
        rows: rows of the study (:func:`run_study`).
        predictions: pooled predictions (:func:`run_study`).
        cities: the study's cities, in the configuration's order.
        bins: bins of the expected calibration error.

    Returns:
        A copy of ``rows`` with the columns.
    """
    validation = _validation_shares(rows, cities)
    groups = _prediction_groups(predictions)
    values: dict[str, list[float]] = {m: [] for m in BBSE_METRICS}
    for row in rows[[*RUN_KEYS, 'threshold']].to_dict('records'):
        record = dict.fromkeys(BBSE_METRICS, float('nan'))
        test = groups.get(_run_key(row))
        source = validation.get(str(row['held_out_city']), float('nan'))
        if (
            row['split'] == 'unseen'
            and calibrated_on_validation(str(row['fusion']))
            and 0 < source < 1  # False for NaN
            and test is not None
            and len(test)
        ):
            seen = groups.get(_run_key(row, 'seen'))
            threshold = float(row['threshold'])
            record.update(_bbse_record(test, seen, threshold, source, bins))
        for metric in BBSE_METRICS:
            values[metric].append(record[metric])
    out = rows.copy()
    for metric in BBSE_METRICS:
        out[metric] = values[metric]
    return out


@dataclass
class _Predictions:
    """Probabilities and labels of one test set."""

    building_id: np.ndarray
    probability: np.ndarray
    label: np.ndarray


def _loader(dataset: Dataset[Sample], batch_size: int) -> DataLoader[Sample]:
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate_buildings)


def azimuth_flipped(batch: Sample) -> Sample:
    """The batch with every image and mask flipped along azimuth (image rows).

    The flip the training augmentation draws (``augmentation='azimuth'``, physically
    valid: the scene seen by a sensor flying the other way along the same track).
    """
    keys = (*IMAGE_KEYS, *MASK_KEYS)
    return {
        k: v.flip(-2)
        if k in keys and isinstance(v, torch.Tensor) and v.ndim == 4
        else v
        for k, v in batch.items()
    }


@torch.no_grad()
def _predict(
    model: DamageClassification,
    data: SARDamageDataModule,
    dataset: Dataset[Sample],
    tta: bool = False,
) -> _Predictions:
    model.eval()
    ids, probs, labels = [], [], []
    for batch in _loader(dataset, 256):
        batch = data.normalise(batch)
        logits = model(batch)
        if tta:  # the mean logit of the chip and its azimuth flip
            logits = (logits + model(azimuth_flipped(batch))) / 2
        probs.append(model.probabilities(logits).cpu().numpy())
        ids.append(batch['building_id'].numpy())
        labels.append(batch['label'].numpy())
    out = _Predictions(
        np.concatenate(ids), np.concatenate(probs), np.concatenate(labels)
    )
    return _labelled(out)


def _labelled(predictions: _Predictions) -> _Predictions:
    """The predictions of buildings with a label (the ignore value -1 dropped)."""
    keep = predictions.label >= 0
    return _Predictions(
        predictions.building_id[keep],
        predictions.probability[keep],
        predictions.label[keep],
    )


def _concat(parts: Sequence[_Predictions]) -> _Predictions:
    return _Predictions(
        np.concatenate([p.building_id for p in parts]),
        np.concatenate([p.probability for p in parts]),
        np.concatenate([p.label for p in parts]),
    )


def _datamodule(
    config: StudyConfig,
    root: Path,
    fold: dict[str, list[str]],
    modalities: Sequence[str],
    chips: Path,
    progress: bool,
    cache: dict[tuple[str, ...], tuple[dict[Any, Any], dict[Any, Any]]] | None = None,
    stacked: bool = False,
) -> SARDamageDataModule:
    data = SARDamageDataModule(
        root=str(root),
        train_cities=fold['train'],
        val_cities=fold['val'],
        test_cities=fold['test'],
        modalities=list(modalities),
        size_m=config.size_m,
        batch_size=config.batch_size,
        num_workers=0,
        chips_root=str(chips),
        progress=progress,
        holdout=config.holdout,
        holdout_block_m=config.holdout_block_m,
        stacked=stacked,
    )
    if cache is not None:
        # the opened datasets and chip stores of every city are the same in every
        # run with these modalities: open them once per study
        data._cities, data._chips = cache.setdefault(tuple(modalities), ({}, {}))
    return data


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's per-run banners (hundreds of runs would drown the bar)."""
    loggers = [logging.getLogger(n) for n in ('lightning.pytorch', 'lightning.fabric')]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='.*LeafSpec.*')
            warnings.filterwarnings('ignore', message='.*does not have many workers.*')
            # validation runs once, after the last epoch (see train_fusion)
            warnings.filterwarnings('ignore', message='.*ReduceLROnPlateau.*')
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _trainer(config: StudyConfig, every_epoch: bool = False) -> lightning.Trainer:
    """The study's CPU trainer: no logger, checkpoints or bars.

    Args:
        config: the study.
        every_epoch: validate after every epoch (TorchGeo's tasks schedule the
            learning rate on the validation loss), not only after the last.

    Returns:
        The trainer.
    """
    return lightning.Trainer(
        max_epochs=config.epochs,
        accelerator='cpu',
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        num_sanity_val_steps=0,
        # the threshold is chosen once, on the trained model
        check_val_every_n_epoch=1 if every_epoch else config.epochs,
    )


def train_fusion(
    config: StudyConfig,
    root: Path,
    fold: dict[str, list[str]],
    modalities: Sequence[str],
    fusion: str,
    seed: int,
    chips: Path,
    cache: dict[tuple[str, ...], tuple[dict[Any, Any], dict[Any, Any]]] | None = None,
    weights: str | None = None,
    quantize: bool = False,
    state: Path | None = None,
    backbone: str | None = None,
) -> dict[str, _Predictions | float]:
    """Train one fusion model on a fold and predict its seen and unseen test sets.

    Args:
        config: the study.
        root: the scene folder.
        fold: ``train``, ``val`` and ``test`` cities.
        modalities: the model's modalities.
        fusion: the fusion type.
        seed: the training seed.
        chips: folder of the chip stores (shared by all runs).
        cache: opened datasets shared between runs (see :func:`run_study`).
        weights: TorchGeo weights of the SAR encoder, by name (they choose the
            backbone); None trains every encoder from scratch.
        quantize: quantise the trained model's image encoders to int8 before
            testing (:func:`~torchgeo_sar_damage.predict.quantize.quantize_encoders`,
            calibrated on windows of the unseen town, as ``predict --quantize``).
        state: a file of the trained model's state: with ``quantize``, the model is
            loaded from it instead of trained where it exists; without, the trained
            model is saved there (for a later ``quantize`` run).
        backbone: the image encoders' timm backbone (None: the configuration's).

    Returns:
        ``unseen`` and ``seen`` predictions, and the ``threshold``.
    """
    lightning.seed_everything(seed, workers=True, verbose=False)
    data = _datamodule(config, root, fold, modalities, chips, False, cache)
    model = _fusion_task(config, modalities, fusion, weights, backbone)
    if quantize and state is not None and state.is_file():
        model.load_state_dict(torch.load(state, weights_only=True))
    else:
        with _quiet_lightning():
            _trainer(config).fit(model, datamodule=data)
        if state is not None and not quantize:
            state.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(state, partial(torch.save, model.state_dict()))
    data.setup('test')
    names = data.test_names
    if quantize:
        model.eval()
        unseen_set = next(
            d for n, d in zip(names, data.test_datasets) if not n.startswith('seen_')
        )
        loader = _loader(unseen_set, CALIBRATION_WINDOWS // CALIBRATION_CHUNKS)
        windows = [data.normalise(b) for _, b in zip(range(CALIBRATION_CHUNKS), loader)]
        quantize_encoders(model.model.fusion, windows)
    predictions = [_predict(model, data, ds, config.tta) for ds in data.test_datasets]
    unseen = [p for n, p in zip(names, predictions) if not n.startswith('seen_')]
    seen = [p for n, p in zip(names, predictions) if n.startswith('seen_')]
    return {
        'unseen': _concat(unseen),
        'seen': _concat(seen),
        'threshold': float(model.threshold),
    }


@torch.no_grad()
def _predict_stacked(
    model: torch.nn.Module,
    data: SARDamageDataModule,
    dataset: Dataset[Sample],
    modalities: Sequence[str],
) -> _Predictions:
    """Probabilities of a binary TorchGeo ``Classification`` on stacked chips."""
    model.eval()
    ids, probs, labels = [], [], []
    for batch in _loader(dataset, 256):
        batch = data.normalise(batch)
        logits = model(stack_images(batch, modalities))
        probs.append(torch.sigmoid(logits.reshape(-1).float()).numpy())
        ids.append(batch['building_id'].numpy())
        labels.append(batch['label'].numpy())
    out = _Predictions(
        np.concatenate(ids), np.concatenate(probs), np.concatenate(labels)
    )
    return _labelled(out)


def _fusion_task(
    config: StudyConfig,
    modalities: Sequence[str],
    fusion: str,
    weights: str | None,
    backbone: str | None = None,
) -> DamageClassification:
    """FusionNet's task as the study trains it.

    The backbone is the one ``weights`` choose, else ``backbone``, else the
    configuration's.
    """
    return DamageClassification(
        modalities=list(modalities),
        fusion=fusion,
        backbone=None if weights else backbone or config.backbone,
        weights=weights,
        lr=config.lr,
    )


def _torchgeo_task(config: StudyConfig, channels: int) -> Classification:
    """TorchGeo's binary ``Classification`` as the study trains it, from scratch."""
    return Classification(
        model=config.backbone,
        weights=None,
        in_channels=channels,
        task='binary',
        loss='bce',
        lr=config.lr,
    )


def train_torchgeo(
    config: StudyConfig,
    root: Path,
    fold: dict[str, list[str]],
    modalities: Sequence[str],
    seed: int,
    chips: Path,
    cache: dict[tuple[str, ...], tuple[dict[Any, Any], dict[Any, Any]]] | None = None,
) -> dict[str, _Predictions | float]:
    """Train TorchGeo's ``Classification`` task on a fold's stacked chips.

    The task is used as a TorchGeo user would: ``Classification(model=backbone,
    weights=None, in_channels=num_channels, task='binary', loss='bce')`` on the data
    module's stacked sample mode, with the study's epochs and learning rate, validated
    after every epoch (its learning-rate schedule watches the validation loss). Its
    probabilities are thresholded, like every model of the study, at the best F1 of
    the validation city (TorchGeo's own metrics use 0.5).

    Args:
        config: the study.
        root: the scene folder.
        fold: ``train``, ``val`` and ``test`` cities.
        modalities: the stacked image modalities.
        seed: the training seed.
        chips: folder of the chip stores (shared by all runs).
        cache: opened datasets shared between runs (see :func:`run_study`).

    Returns:
        ``unseen`` and ``seen`` predictions, and the ``threshold``.
    """
    lightning.seed_everything(seed, workers=True, verbose=False)
    data = _datamodule(config, root, fold, modalities, chips, False, cache, True)
    model = _torchgeo_task(config, data.num_channels)
    with _quiet_lightning():
        _trainer(config, every_epoch=True).fit(model, datamodule=data)
    data.setup('validate')
    assert data.val_dataset is not None
    val = _predict_stacked(model, data, data.val_dataset, modalities)
    threshold = best_f1_threshold(
        torch.from_numpy(val.probability), torch.from_numpy(val.label)
    )
    data.setup('test')
    names = data.test_names
    predictions = [
        _predict_stacked(model, data, ds, modalities) for ds in data.test_datasets
    ]
    unseen = [p for n, p in zip(names, predictions) if not n.startswith('seen_')]
    seen = [p for n, p in zip(names, predictions) if n.startswith('seen_')]
    return {'unseen': _concat(unseen), 'seen': _concat(seen), 'threshold': threshold}


def _parameters(model: torch.nn.Module) -> float:
    """Parameters of a model in millions (before any quantisation)."""
    return sum(p.numel() for p in model.parameters()) / 1e6


def _probabilities(model: torch.nn.Module, inputs: object) -> torch.Tensor:
    """Damage probabilities of a study model on one prepared batch.

    FusionNet's task takes the sample dict; TorchGeo's task takes the stacked image.
    """
    if isinstance(inputs, dict):
        task = cast(DamageClassification, model)
        return task.probabilities(task(inputs))
    return torch.sigmoid(model(inputs))


def inference_speed(
    config: StudyConfig,
    work: str | os.PathLike[str],
    models: Sequence[tuple[str, str]],
    batch_size: int = 256,
    repeats: int = 5,
) -> pd.DataFrame:
    """Inference buildings per second of the study's deep models on this machine.

    Each model's architecture (as the study builds it, int8 runs quantised; its
    weights do not change its speed, so it is not trained here) predicts one batch
    of chips of the first fold's unseen city, read and normalised beforehand: the
    rate is the model's
    alone, without reading the rasters. The models take turns ``repeats`` times, so
    that a busy spell of a shared machine touches all of them, and each model's best
    time counts. Baselines and references (no deep model) are left out.

    Args:
        config: the study.
        work: its working folder (scene and chip stores, see :func:`run_study`).
        models: ``(modalities, fusion)`` of the models to time.
        batch_size: buildings per forward pass.
        repeats: timed passes per model.

    Returns:
        One row per deep model: ``modalities``, ``fusion``, ``buildings_per_s``,
        ``parameters`` (millions), and the conditions (``batch``, ``pixels``,
        ``threads``, ``load``: the 1-minute load average before timing, NaN where
        the platform has none).

    Raises:
        ArgumentError: ``batch_size`` or ``repeats`` below 1.
    """
    if batch_size < 1 or repeats < 1:
        raise ArgumentError(
            f'inference_speed: batch_size ({batch_size}) and repeats ({repeats}) '
            'must be at least 1'
        )
    root, _ = prepare_scene(config, Path(work), False)
    fold = leave_one_city_out(config.cities)[0]
    deep = [(m, f) for m, f in models if f not in BASELINES]
    # (model, its prepared batch, buildings in it, parameters before quantisation)
    runners: dict[tuple[str, str], tuple[torch.nn.Module, object, int, float]] = {}
    pixels = 0
    for modalities, fusion in deep:
        names = modalities.split('+')
        stacked = fusion == TORCHGEO
        data = _datamodule(
            config, root, fold, names, Path(work) / 'chips', False, None, stacked
        )
        data.setup('test')
        batch = data.normalise(next(iter(_loader(data.test_datasets[0], batch_size))))
        pixels = int(batch['sar'].shape[-1])
        size = int(batch['label'].shape[0])
        if stacked:
            model = _torchgeo_task(config, data.num_channels)
            inputs = stack_images(batch, names)
            runners[(modalities, fusion)] = (model, inputs, size, _parameters(model))
            continue
        base = fusion.removesuffix(INT8)
        task = _fusion_task(
            config, names, fusion_type(base), run_weights(base), run_backbone(base)
        )
        if task.model.sar_input is not None:  # a pretrained encoder's dB input
            sar = data.statistics
            task.model.set_sar_statistics(sar.sar_mean_db, sar.sar_std_db)
        runners[(modalities, fusion)] = (task, batch, size, _parameters(task))
        if fusion != base:  # int8 encoders, calibrated on the timed windows
            task.eval()
            quantize_encoders(task.model.fusion, [batch])
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    best = dict.fromkeys(runners, float('inf'))
    with torch.inference_mode():
        for net, x, _, _ in runners.values():  # warm-up: first-call allocations
            net.eval()
            _probabilities(net, x)
        for _ in range(repeats):
            for key, (net, x, _, _) in runners.items():
                start = time.perf_counter()
                _probabilities(net, x)
                best[key] = min(best[key], time.perf_counter() - start)
    return pd.DataFrame(
        [
            {
                'modalities': key[0],
                'fusion': key[1],
                'buildings_per_s': size / best[key],
                'parameters': parameters,
                'batch': size,
                'pixels': pixels,
                'threads': torch.get_num_threads(),
                'load': load,
            }
            for key, (_, _, size, parameters) in runners.items()
        ],
        columns=[
            'modalities',
            'fusion',
            'buildings_per_s',
            'parameters',
            'batch',
            'pixels',
            'threads',
            'load',
        ],
    )


def _batches(data: SARDamageDataModule, slug: str) -> list[Sample]:
    """Every labelled chip of a city, in raw batches of 1,024."""
    return list(_loader(data.chips(slug), 1024))


def _table(
    data: SARDamageDataModule, slug: str, sar_statistics: pd.DataFrame | None
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Features, labels and building ids of a city's chips (tabular or SAR statistics)."""
    batches = _batches(data, slug)
    ids = torch.cat([b['building_id'] for b in batches]).numpy()
    labels = torch.cat([b['label'] for b in batches]).numpy()
    if sar_statistics is None:
        tabular = torch.cat([b['tabular'] for b in batches]).numpy()
        frame = pd.DataFrame(tabular, columns=data.raw_feature_names)
    else:
        frame = sar_statistics.reindex(ids).reset_index(drop=True)
    return frame, labels, ids


def _sar_statistics(
    root: Path, scene: dict[str, Any], slug: str, truth: bool = False
) -> pd.DataFrame:
    """SAR statistics over every footprint of a city, indexed by building (OSM) id.

    Args:
        root: the scene folder.
        scene: its ``scene.json``.
        slug: the city.
        truth: over the true footprints of ``truth.gpkg`` instead of OSM's.

    Returns:
        The statistics (:data:`SAR_STATISTICS`).
    """
    files = scene['cities'][slug]['files']
    folder = root / slug
    if truth:
        # several true buildings may be one OSM footprint: their union
        buildings = _truth(root, scene, slug)[['osm_id', 'geometry']]
        buildings = buildings.dissolve(by='osm_id')
        ids = buildings.index.to_numpy()
    else:
        buildings = OSMBuildings(paths=folder / files['osm']).buildings
        ids = buildings['building_id'].to_numpy()
    stats = footprint_sigma0_statistics(folder / files['sar_geotiff'], buildings)
    stats.index = ids
    return stats


def _truth(root: Path, scene: dict[str, Any], slug: str) -> gpd.GeoDataFrame:
    """The true buildings of a simulated city that have an OSM footprint."""
    files = scene['cities'][slug]['files']
    truth = gpd.read_file(root / slug / files['truth'])
    truth = truth[truth['osm_id'].notna()].copy()
    truth['osm_id'] = truth['osm_id'].astype('int64')
    return truth


def true_labels(root: Path, scene: dict[str, Any], slug: str) -> pd.Series:
    """The true binary label of every OSM building of a simulated city.

    An OSM footprint is damaged when any true building it covers has grade >= 4 (the
    truth behind the EMS label, which photo-interpretation may get wrong).

    Args:
        root: the scene folder.
        scene: its ``scene.json``.
        slug: the city.

    Returns:
        0/1 labels indexed by OSM id.
    """
    truth = _truth(root, scene, slug)
    damaged = pd.Series(
        truth['damaged'].astype('int64').to_numpy(), index=truth['osm_id'].to_numpy()
    )
    return damaged.groupby(level=0).max()


def _oracle(root: Path, scene: dict[str, Any], slug: str) -> pd.Series:
    """The fragility oracle of every building of a city, indexed by OSM id."""
    from .simulation.fragility import heavy_damage_probability

    truth = _truth(root, scene, slug)
    p = heavy_damage_probability(list(truth['taxonomy']), truth['pga_g'].to_numpy())
    series = pd.Series(p, index=truth['osm_id'].to_numpy())
    # several true buildings may be one OSM footprint: the most vulnerable one
    return series.groupby(level=0).max()


def score_oracle(
    data: SARDamageDataModule, fold: dict[str, list[str]], oracle: dict[str, pd.Series]
) -> dict[str, _Predictions | float]:
    """The fragility oracle on a fold's test sets (no training).

    Each building's probability is its true probability of grade >= 4
    (:func:`~torchgeo_sar_damage.simulation.fragility.heavy_damage_probability`),
    scored against the same labels as every model; the threshold is the best F1 on
    the validation city, as for the models.

    Args:
        data: the fold's data module (chips, held-out blocks).
        fold: ``train``, ``val`` and ``test`` cities.
        oracle: per city, the oracle's probabilities by OSM id.

    Returns:
        ``unseen`` and ``seen`` predictions, and the ``threshold``.
    """

    def predict(slug: str, keep: np.ndarray | None = None) -> _Predictions:
        batches = _batches(data, slug)
        ids = torch.cat([b['building_id'] for b in batches]).numpy()
        labels = torch.cat([b['label'] for b in batches]).numpy()
        series = oracle[slug]
        p = series.reindex(ids).fillna(float(series.mean())).to_numpy()
        if keep is not None:
            ids, p, labels = ids[keep], p[keep], labels[keep]
        return _labelled(_Predictions(ids, p, labels))

    val = _concat([predict(slug) for slug in fold['val']])
    threshold = best_f1_threshold(
        torch.from_numpy(val.probability), torch.from_numpy(val.label)
    )
    unseen = _concat([predict(slug) for slug in fold['test']])
    seen = _concat([predict(slug, data.heldout(slug)) for slug in fold['train']])
    return {'unseen': unseen, 'seen': seen, 'threshold': threshold}


def train_gbm(
    data: SARDamageDataModule,
    fold: dict[str, list[str]],
    seed: int,
    sar_statistics: dict[str, pd.DataFrame] | None,
) -> dict[str, _Predictions | float]:
    """Train a gradient-boosting baseline on a fold (same splits as the deep models).

    Args:
        data: the fold's data module (chips, held-out blocks).
        fold: ``train``, ``val`` and ``test`` cities.
        seed: random seed of the learner.
        sar_statistics: per city, SAR statistics by building id (the SAR-statistics
            baseline), or None for the context-only baseline.

    Returns:
        ``unseen`` and ``seen`` predictions, and the ``threshold``.
    """

    def table(slug: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        stats = None if sar_statistics is None else sar_statistics[slug]
        return _table(data, slug, stats)

    x_train, y_train, seen_parts = [], [], []
    for slug in fold['train']:
        x, y, ids = table(slug)
        held = data.heldout(slug)
        train = ~held & (y >= 0)
        x_train.append(x[train])
        y_train.append(y[train])
        seen_parts.append((x[held], y[held], ids[held]))
    learner = HistGradientBoostingClassifier(random_state=seed, class_weight='balanced')
    learner.fit(pd.concat(x_train), np.concatenate(y_train))

    def predict(x: pd.DataFrame, y: np.ndarray, ids: np.ndarray) -> _Predictions:
        p = learner.predict_proba(x)[:, 1] if len(x) else np.zeros(0)
        return _labelled(_Predictions(ids, p, y))

    val = [predict(*table(slug)) for slug in fold['val']]
    threshold = best_f1_threshold(
        torch.from_numpy(_concat(val).probability), torch.from_numpy(_concat(val).label)
    )
    unseen = [predict(*table(slug)) for slug in fold['test']]
    seen = [predict(*part) for part in seen_parts]
    return {'unseen': _concat(unseen), 'seen': _concat(seen), 'threshold': threshold}


def prepare_scene(
    config: StudyConfig, work: Path, progress: bool = True
) -> tuple[Path, dict[str, Any]]:
    """The study's scene: ``config.scene`` or a simulation under ``work/scene``.

    A simulation is reused when ``work/scene/scene.json`` records the same cities,
    buildings, pixel size, seed and GEM level (a stamp without the level predates
    province-level GEM and stands for districts, level 2). A working folder whose
    journal holds runs on a scene with other settings is refused rather than mixed.

    Args:
        config: the study.
        work: working folder.
        progress: show progress bars.

    Returns:
        The scene folder and its ``scene.json`` content.

    Raises:
        InputFileError: if ``config.scene`` lacks a readable ``scene.json`` or a city,
            or ``work/runs.csv`` holds runs on a scene simulated with other settings.
    """
    if config.scene is not None:
        root = Path(config.scene)
        manifest = SARDamageDataModule._read_scene(root)
    else:
        root = work / 'scene'
        wanted = {
            'cities': sorted(config.cities),
            'buildings': config.buildings,
            'pixel_m': config.pixel_m,
            'seed': config.scene_seed,
            'gem_level': config.gem_level,
        }
        stamp = work / 'scene.settings.json'
        ready = (root / 'scene.json').is_file() and stamp.is_file()
        old = {'gem_level': 2, **json.loads(stamp.read_text())} if ready else None
        if old == wanted:
            return root, SARDamageDataModule._read_scene(root)
        journal = next((j for j in _journal_files(work) if len(_journal(j))), None)
        if journal is not None:
            # its runs would be resumed as if they were on the new scene
            raise InputFileError(
                journal,
                f'holds runs on a scene simulated with other settings ({old}, now '
                f'{wanted}); move {work} away or give the study another working '
                'folder',
            )
        work.mkdir(parents=True, exist_ok=True)
        manifest = simulate(
            root,
            cities=config.cities,
            n_buildings=config.buildings,
            seed=config.scene_seed,
            pixel_m=config.pixel_m,
            gem_level=config.gem_level,
            overwrite=True,
            progress=progress,
        )
        stamp.write_text(json.dumps(wanted))
    missing = [c for c in config.cities if c not in manifest['cities']]
    if missing:
        raise InputFileError(root / 'scene.json', f'has no cities {missing}')
    return root, manifest


def _journal_files(work: Path) -> list[Path]:
    """The journals of a working folder: ``runs.csv`` and the shards' (sorted)."""
    return sorted(work.glob('runs.csv')) + sorted(work.glob('runs.shard*of*.csv'))


def _pooled(journals: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The rows of several journals (the first, empty, where all are empty)."""
    return pd.concat([j for j in journals if len(j)] or journals[:1], ignore_index=True)


def _journal(path: Path) -> pd.DataFrame:
    if path.is_file():
        return pd.read_csv(path, keep_default_na=False, na_values=[''])
    return pd.DataFrame(columns=list(COLUMNS))


def run_study(
    config: StudyConfig,
    work: str | os.PathLike[str],
    progress: bool = True,
    on_run: Callable[[pd.DataFrame], None] | None = None,
    shard: tuple[int, int] = (0, 1),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run (or resume) a study.

    Every finished run is appended to ``work/runs.csv`` and its test predictions to
    ``work/predictions/``; an interrupted study resumes where it stopped (runs are
    keyed by modalities, fusion, held-out city and seed).

    A study can be split into ``n`` shards run side by side, e.g. two processes of
    one thread each on two cores: shard ``i`` runs the folds and seeds whose index
    modulo ``n`` is ``i`` (all runs of a fold and seed stay together) and appends
    to ``work/runs.shard<i>of<n>.csv``. Every journal counts as done for every
    shard, and an unsharded call afterwards collects them all. Start the shards
    once the scene and chip stores exist (after the first run of one of them), so
    that they are not prepared twice at the same time.

    Args:
        config: the study.
        work: working folder (scene, chip stores, journal, predictions).
        progress: show progress bars.
        on_run: called with the rows of each finished run.
        shard: ``(i, n)``: run the i-th of n shards (default: everything).

    Returns:
        The rows (one per run and split, :data:`COLUMNS`) and the pooled test
        predictions (``modalities``, ``fusion``, ``split``, ``held_out_city``,
        ``seed``, ``probability``, ``label``) of every journal's runs of the
        configuration (a shard's call returns the other shards' finished runs too).

    Raises:
        ArgumentError: if ``shard`` is not ``(i, n)`` with ``0 <= i < n``.
    """
    config.check()
    index, count = shard
    if not 0 <= index < count:
        raise ArgumentError(f'shard must be (i, n) with 0 <= i < n, not {shard}')
    work = Path(work)
    root, manifest = prepare_scene(config, work, progress)
    chips = work / 'chips'
    folds = leave_one_city_out(config.cities)[: config.folds]
    pairs = grid(config) + extra_pairs(config)
    for name, path in missing_weights(config).items():
        warnings.warn(
            f'study {config.name}: the runs with pretrained weights {name} are '
            f"skipped, their file {path} is not in torch hub's cache (nothing is "
            f'downloaded; fetch it once from {resolve_weights(name).url})',
            UserWarning,
            stacklevel=2,
        )
    if config.baselines:
        pairs += [('osm+dsm+gem', 'gbm'), ('sar', 'gbm')]
        if config.oracles and all(
            'truth' in manifest['cities'][c]['files'] for c in config.cities
        ):
            pairs += [ORACLE, TRUE_FOOTPRINTS]
    journal_path = work / (
        'runs.csv' if count == 1 else f'runs.shard{index}of{count}.csv'
    )
    journal = _journal(journal_path)
    others = [_journal(f) for f in _journal_files(work) if f != journal_path]
    every = _pooled([journal, *others])
    done = {
        (str(m), str(f), str(c), int(x))
        for m, f, c, x in zip(
            every.modalities, every.fusion, every.held_out_city, every.seed
        )
    }
    predictions_dir = work / 'predictions'
    predictions_dir.mkdir(parents=True, exist_ok=True)
    groups = [(fold, seed) for fold in folds for seed in config.seeds]
    runs = [
        (fold, seed, name, fusion)
        for group, (fold, seed) in enumerate(groups)
        if group % count == index
        for name, fusion in pairs
    ]
    sar_statistics: dict[str, pd.DataFrame] = {}
    true_statistics: dict[str, pd.DataFrame] = {}
    oracle: dict[str, pd.Series] = {}
    truth: dict[str, pd.Series] = {}
    cache: dict[tuple[str, ...], tuple[dict[Any, Any], dict[Any, Any]]] = {}
    bar = tqdm(runs, desc='study', unit='run', disable=not progress)
    for fold, seed, name, fusion in bar:
        city = fold['test'][0]
        key = (name, fusion, city, seed)
        bar.set_postfix_str(f'{name} {fusion} unseen={city} seed={seed}')
        if key in done:
            continue
        start = time.perf_counter()
        if (name, fusion) == ORACLE:
            data = _datamodule(
                config, root, fold, TOWN_MODALITIES, chips, progress, cache
            )
            for slug in config.cities:
                if slug not in oracle:
                    oracle[slug] = _oracle(root, manifest, slug)
            result = score_oracle(data, fold, oracle)
        elif fusion in ('gbm', TRUE_FOOTPRINTS[1]):
            data = _datamodule(
                config, root, fold, TOWN_MODALITIES, chips, progress, cache
            )
            stats = None
            if (name, fusion) == TRUE_FOOTPRINTS:
                for slug in config.cities:
                    if slug not in true_statistics:
                        true_statistics[slug] = _sar_statistics(
                            root, manifest, slug, truth=True
                        )
                stats = true_statistics
            elif name == 'sar':
                for slug in config.cities:
                    if slug not in sar_statistics:
                        sar_statistics[slug] = _sar_statistics(root, manifest, slug)
                stats = sar_statistics
            result = train_gbm(data, fold, seed, stats)
        elif fusion == TORCHGEO:
            result = train_torchgeo(
                config, root, fold, name.split('+'), seed, chips, cache
            )
        else:
            quantize = fusion.endswith(INT8)
            base = fusion.removesuffix(INT8)
            twin = (name, f'{base}{INT8}') in pairs and (name, base) in pairs
            state = work / 'models' / f'{name}_{base}_{city}_{seed}.pt'
            result = train_fusion(
                config,
                root,
                fold,
                name.split('+'),
                fusion_type(base),
                seed,
                chips,
                cache,
                weights=run_weights(base),
                backbone=run_backbone(base),
                quantize=quantize,
                state=state if twin else None,
            )
            if quantize:
                state.unlink(missing_ok=True)  # the float twin's model, now used
        seconds = time.perf_counter() - start
        if city not in truth and 'truth' in manifest['cities'][city]['files']:
            truth[city] = true_labels(root, manifest, city)
        records = _run_records(
            result,
            (name, fusion, city, seed),
            seconds,
            config,
            predictions_dir,
            truth.get(city),
        )
        new = pd.DataFrame(records, columns=list(COLUMNS))
        journal = pd.concat([journal, new], ignore_index=True) if len(journal) else new
        write_atomic(journal_path, partial(journal.to_csv, index=False))
        if on_run is not None:
            on_run(new)
        gc.collect()  # trainer, model and data module hold each other in cycles
    bar.close()
    wanted = {
        (name, fusion, fold['test'][0], seed)
        for fold in folds
        for seed in config.seeds
        for name, fusion in pairs
    }
    every = _pooled([journal, *others])
    keys = list(zip(every.modalities, every.fusion, every.held_out_city, every.seed))
    chosen = every[[(m, f, c, int(s)) in wanted for m, f, c, s in keys]]
    chosen = chosen.sort_values(
        ['modalities', 'fusion', 'held_out_city', 'seed', 'split']
    ).reset_index(drop=True)
    return chosen, _read_predictions(predictions_dir, chosen)


def _run_records(
    result: Mapping[str, object],
    key: tuple[str, str, str, int],
    seconds: float,
    config: StudyConfig,
    predictions_dir: Path,
    truth: pd.Series | None = None,
) -> list[dict[str, Any]]:
    """A finished run's rows (seen and unseen) and its saved predictions.

    The predictions files hold each building's OSM id, probability and label and, for
    the unseen town of a simulated scene (``truth``: true labels by OSM id,
    :func:`true_labels`), its true label ``label_true``.
    """
    name, fusion, city, seed = key
    threshold = result['threshold']
    assert isinstance(threshold, float)
    records: list[dict[str, Any]] = []
    for split in ('seen', 'unseen'):
        found = result[split]
        assert isinstance(found, _Predictions)
        records.append(
            {
                'modalities': name,
                'fusion': fusion,
                'split': split,
                'held_out_city': city,
                'seed': seed,
                **scores(found.probability, found.label, threshold, config.ece_bins),
                'threshold': threshold,
                'seconds': round(seconds, 2),
            }
        )
        frame = pd.DataFrame(
            {
                'building_id': found.building_id,
                'probability': found.probability,
                'label': found.label,
            }
        )
        if split == 'unseen' and truth is not None:
            frame['label_true'] = (
                truth.reindex(found.building_id).fillna(-1).astype('int64').to_numpy()
            )
        frame.to_csv(
            predictions_dir / f'{name}_{fusion}_{split}_{city}_{seed}.csv.gz',
            index=False,
        )
    return records


def _read_predictions(folder: Path, rows: pd.DataFrame) -> pd.DataFrame:
    parts = []
    for row in rows.itertuples():
        name = (
            f'{row.modalities}_{row.fusion}_{row.split}_{row.held_out_city}_{row.seed}'
        )
        path = folder / f'{name}.csv.gz'
        if path.is_file():
            part = pd.read_csv(path)
            for column in ('modalities', 'fusion', 'split', 'held_out_city', 'seed'):
                part[column] = getattr(row, column)
            parts.append(part)
    if not parts:
        return pd.DataFrame(
            columns=['probability', 'label', 'modalities', 'fusion', 'split']
        )
    return pd.concat(parts, ignore_index=True)


def iter_groups(
    rows: pd.DataFrame, by: Sequence[str]
) -> Iterator[tuple[tuple[Any, ...], pd.DataFrame]]:
    """Groups of rows in a stable order (modality sets by size, then fusion)."""
    order = {name: i for i, name in enumerate(_model_order(rows))}
    keys = sorted(
        {tuple(r) for r in rows[list(by)].itertuples(index=False)},
        key=lambda k: [order.get((k[0], k[1]), 99) if len(k) > 1 else 0, *map(str, k)],
    )
    for key in keys:
        mask = np.ones(len(rows), dtype=bool)
        for column, value in zip(by, key):
            mask &= (rows[column] == value).to_numpy()
        yield key, rows[mask]


def _model_order(rows: pd.DataFrame) -> list[tuple[str, str]]:
    models = {(m, f) for m, f in zip(rows.modalities, rows.fusion)}
    fusion_rank = {
        ORACLE[1]: -3,
        TRUE_FOOTPRINTS[1]: -2,
        'gbm': -1,
        'early': 0,
        'late': 1,
        'attention': 2,
        TORCHGEO: 3,
    }
    return sorted(
        models,
        key=lambda mf: (
            mf[1] not in BASELINES,
            len(mf[0].split('+')),
            mf[0],
            # another backbone's runs follow their fusion's
            fusion_rank.get(mf[1], 4)
            if BACKBONE not in mf[1]
            else fusion_rank.get(fusion_type(mf[1]), 4) + 0.5,
            mf[1],
        ),
    )


def summary(rows: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Mean and standard deviation of every metric per group.

    Args:
        rows: rows of ``study.csv``.
        by: grouping columns.

    Returns:
        One row per group with ``runs`` and ``<metric>_mean``, ``<metric>_std``.
    """
    out = []
    extra = [*REPORT_METRICS, *ADAPTED_METRICS, *BBSE_METRICS, *TRUTH_METRICS]
    metrics = [*METRICS, *[m for m in extra if m in rows.columns]]
    for key, group in iter_groups(rows, by):
        record: dict[str, Any] = dict(zip(by, key))
        record['runs'] = len(group)
        for metric in metrics:
            values = group[metric].astype(float)
            record[f'{metric}_mean'] = float(values.mean())
            record[f'{metric}_std'] = float(values.std(ddof=1)) if len(group) > 1 else 0
        out.append(record)
    return pd.DataFrame(out)


def describe_model(modalities: str, fusion: str) -> str:
    """A readable name of a model of the study."""
    if (modalities, fusion) == ORACLE:
        return 'fragility oracle (true PGA and taxonomy, no training)'
    if (modalities, fusion) == TRUE_FOOTPRINTS:
        return 'SAR statistics on the true footprints, gradient boosting'
    if fusion == 'gbm':
        if modalities == 'sar':
            return 'SAR statistics, gradient boosting'
        return 'context only (no SAR), gradient boosting'
    if fusion.endswith(INT8):
        return describe_model(modalities, fusion.removesuffix(INT8)) + ', int8 encoders'
    backbone = run_backbone(fusion)
    if backbone is not None:
        names = modalities.upper().replace('+', ' + ')
        names = 'SAR only' if modalities == 'sar' else names
        return f'{names}, {fusion_type(fusion)} fusion, {backbone} encoder'
    names = modalities.upper().replace('+', ' + ')
    if fusion == TORCHGEO:
        return f'TorchGeo Classification on {names} channels stacked'
    weights = run_weights(fusion)
    if weights is not None:
        base = 'SAR only' if modalities == 'sar' else names
        return f'{base}, {fusion.partition("@")[0]} fusion, SAR encoder {weights}'
    if modalities == 'sar':
        return 'SAR only, ResNet-18 (QuickQuakeBuildings-style)'
    return f'{names}, {fusion} fusion'


def _cell(mean: float, std: float) -> str:
    if not np.isfinite(mean):
        return 'n/a'
    return f'{mean:.3f} ± {std:.3f}'


def markdown_table(
    frame: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]
) -> str:
    """A :func:`summary` frame as a GitHub markdown table."""
    header = ['model', *[b for b in by if b not in ('modalities', 'fusion')], 'runs']
    header += list(metrics)
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for record in frame.to_dict('records'):
        cells = [describe_model(record['modalities'], record['fusion'])]
        cells += [str(record[b]) for b in by if b not in ('modalities', 'fusion')]
        cells.append(str(record['runs']))
        cells += [_cell(record[f'{m}_mean'], record[f'{m}_std']) for m in metrics]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def gap_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Seen minus unseen F1 and AUROC per model, paired by run.

    Args:
        rows: rows of ``study.csv``.

    Returns:
        One row per model with the mean and std of the paired differences.
    """
    keys = ['modalities', 'fusion', 'held_out_city', 'seed']
    seen = rows[rows.split == 'seen']
    unseen = rows[rows.split == 'unseen']
    both = seen.merge(unseen, on=keys, suffixes=('_seen', '_unseen'))
    out = []
    for model in _model_order(rows):
        part = both[(both.modalities == model[0]) & (both.fusion == model[1])]
        if not len(part):
            continue
        record: dict[str, Any] = {'modalities': model[0], 'fusion': model[1]}
        record['runs'] = len(part)
        for metric in ('f1', 'auroc'):
            gap = part[f'{metric}_seen'].astype(float) - part[f'{metric}_unseen']
            record[f'{metric}_gap_mean'] = float(gap.mean())
            record[f'{metric}_gap_std'] = float(gap.std(ddof=1)) if len(gap) > 1 else 0
        out.append(record)
    return pd.DataFrame(out)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def findings(rows: pd.DataFrame) -> list[str]:
    """Sentences comparing the models, computed from the rows (never typed)."""
    unseen = rows[rows.split == 'unseen']
    means: dict[tuple[str, str], tuple[float, float]] = {}
    # F1 lost to the transferred threshold (f1_best - f1), where the report added it
    lost: dict[tuple[str, str], float] = {}
    for model in _model_order(unseen):
        sel = unseen[(unseen.modalities == model[0]) & (unseen.fusion == model[1])]
        means[model] = (float(sel.f1.mean()), float(sel.auroc.mean()))
        if 'f1_best' in sel.columns:
            loss = float((sel.f1_best.astype(float) - sel.f1.astype(float)).mean())
            if np.isfinite(loss):
                lost[model] = loss
    lines = []
    if ('sar', 'late') in means:
        f1, auroc = means[('sar', 'late')]
        lines.append(
            f'SAR only (late, ResNet-18) on unseen cities: F1 {f1:.3f}, '
            f'AUROC {auroc:.3f}. For scale only: QuickQuakeBuildings (Sun et al., '
            'GitHub repository `ya0-sun/PostEQ-SARopt-BuildingDamage`) report F1 '
            '0.28, AUROC 0.77 for a SAR-only ResNet-18 on real Capella data, numbers '
            "not comparable with the simulator's."
        )
    deep = {k: v for k, v in means.items() if k[1] not in BASELINES}
    if deep:
        best = max(deep, key=lambda k: deep[k][0])
        f1, auroc = deep[best]
        lines.append(
            f'Best deep model on unseen cities (by F1): {describe_model(*best)}, '
            f'F1 {f1:.3f}, AUROC {auroc:.3f}.'
        )
        best_auroc = max(v[1] for v in deep.values())
        for model in (('osm+dsm+gem', 'gbm'), ('sar', 'gbm'), TRUE_FOOTPRINTS, ORACLE):
            if model in means:
                f1, auroc = means[model]
                verdict = 'below' if auroc < best_auroc else 'AT OR ABOVE'
                lines.append(
                    f'{_sentence(describe_model(*model))}: F1 {f1:.3f}, AUROC '
                    f"{auroc:.3f}, {verdict} the best deep model's AUROC "
                    f'({best_auroc:.3f}).'
                )
    if lost:
        low = min(lost, key=lambda k: lost[k])
        high = max(lost, key=lambda k: lost[k])
        lines.append(
            "F1 lost on unseen cities by using the validation city's threshold "
            "instead of the test city's own best (mean f1_best - f1): from "
            f'{lost[low]:.3f} ({describe_model(*low)}) to {lost[high]:.3f} '
            f'({describe_model(*high)}).'
        )
    lines += _torchgeo_findings(means)
    lines += _adaptation_findings(unseen)
    lines += _bbse_findings(unseen)
    lines += _truth_findings(unseen)
    for record in gap_table(rows).to_dict('records'):
        if record['fusion'] in ('late', 'gbm'):
            lines.append(
                'Generalisation gap (seen - unseen F1) of '
                f'{describe_model(record["modalities"], record["fusion"])}: '
                f'{record["f1_gap_mean"]:+.3f} ± {record["f1_gap_std"]:.3f}.'
            )
    return lines


def _truth_findings(unseen: pd.DataFrame) -> list[str]:
    """What label noise costs, from :data:`TRUTH_METRICS` (simulated scenes)."""
    if 'auroc_true' not in unseen.columns:
        return []
    scored = unseen[np.isfinite(unseen.auroc_true.astype(float))]
    if not len(scored):
        return []
    noise = float(scored.drop_duplicates('held_out_city').label_noise.mean())
    lines = [
        (
            f'Label noise: {noise:.1%} of the EMS labels of the unseen cities '
            'disagree with the true grade (damaged = grade >= 4), mean over cities.'
        )
    ]
    means = {
        (str(m), str(f)): (float(g.auroc.mean()), float(g.auroc_true.mean()))
        for (m, f), g in scored.groupby(['modalities', 'fusion'], sort=False)
    }
    deep = {k: v for k, v in means.items() if k[1] not in BASELINES}
    chosen = []
    if deep:
        chosen.append(max(deep, key=lambda k: deep[k][0]))
    chosen += [m for m in (TRUE_FOOTPRINTS, ORACLE) if m in means]
    for model in chosen:
        ems, true = means[model]
        lines.append(
            f'{_sentence(describe_model(*model))}: AUROC {ems:.3f} against the EMS '
            f'labels, {true:.3f} against the true grades ({true - ems:+.3f}).'
        )
    return lines


def _calibrated_unseen(frame: pd.DataFrame) -> pd.DataFrame:
    """The unseen-city rows of models calibrated on the validation town."""
    calibrated = np.array([calibrated_on_validation(str(f)) for f in frame.fusion])
    return frame[(frame.split == 'unseen').to_numpy() & calibrated]


def _span(values: pd.Series) -> str:
    """``'min-max'`` of values to three decimals (one number where they agree)."""
    low, high = (f'{v:.3f}' for v in values.astype(float).agg(['min', 'max']))
    return low if low == high else f'{low}-{high}'


def _adaptation_findings(unseen: pd.DataFrame) -> list[str]:
    """Sentences on prior adaptation of the FusionNet models (see :func:`findings`)."""
    if 'ece_adapted' not in unseen.columns:
        return []
    deep = _calibrated_unseen(unseen)
    per_model = deep.groupby(['modalities', 'fusion'], sort=False)[
        [
            'ece',
            'ece_adapted',
            'f1',
            'f1_adapted',
            'f1_best',
            'share_error',
            'f1_expected',
            'share_mean_error',
        ]
    ].mean()
    per_model = per_model.dropna(subset=['ece_adapted'])
    if not len(per_model):
        return []

    def span(column: str) -> str:
        return _span(per_model[column])

    gap = per_model.f1_best - per_model.f1_adapted
    old_gap = per_model.f1_best - per_model.f1
    new_gap = per_model.f1_best - per_model.f1_expected
    close = int((per_model.share_mean_error <= 0.05).sum())
    models = len(per_model)
    adapted = deep.prior_adapted.astype(float)
    gain = (deep.f1_expected.astype(float) - deep.f1.astype(float)).dropna()
    return [
        (
            'Prior adaptation on unseen cities (each FusionNet model, mean over '
            f'runs; {int(adapted.sum())} of {int(adapted.notna().sum())} runs '
            'adapted, the others failed safe and are scored unadapted): '
            f'ECE {span("ece")} before, {span("ece_adapted")} after '
            f'({int((per_model.ece_adapted <= 0.08).sum())} of {models} models at or '
            'below 0.08); damaged-share error |estimate - true| '
            f'{span("share_error")} ({int((per_model.share_error <= 0.05).sum())} of '
            f'{models} at or below 0.05); F1 at the adapted threshold '
            f"{span('f1_adapted')} against {span('f1')} at the validation city's; "
            f'f1_best - F1 {gap.min():.3f}-{gap.max():.3f} adapted, '
            f'{old_gap.min():.3f}-{old_gap.max():.3f} transferred '
            f'({int((gap <= 0.03).sum())} of {models} at or below 0.03).'
        ),
        (
            'Without adaptation (each FusionNet model, mean over runs): the '
            "expected-F1 threshold of the unseen city's own calibrated probabilities "
            f'(`predict --threshold expected-f1`) gives F1 {span("f1_expected")} '
            f"against {span('f1')} at the validation city's threshold (better for "
            f'{int((per_model.f1_expected > per_model.f1).sum())} of {models} '
            f'models; f1_best - F1 {new_gap.min():.3f}-{new_gap.max():.3f}); per '
            f'run it is better in {int((gain > 0).sum())} of {int(gain.notna().sum())} '
            f'runs (mean {gain.mean():+.3f}, median {gain.median():+.3f}, worst '
            f'{gain.min():+.3f}, best {gain.max():+.3f}); the '
            'mean calibrated probability estimates the damaged share within '
            f'{span("share_mean_error")} ({close} of {models} at or below 0.05).'
        ),
    ]


def _torchgeo_findings(
    means: Mapping[tuple[str, str], tuple[float, float]],
) -> list[str]:
    """Sentences comparing TorchGeo's models with this package's (see :func:`findings`).

    Args:
        means: unseen-city mean F1 and AUROC per ``(modalities, fusion)``.

    Returns:
        One sentence per TorchGeo ``Classification`` model and pretrained encoder.
    """
    lines = []
    for (modalities, fusion), (f1, auroc) in means.items():
        if fusion == TORCHGEO:
            ours = {
                k: v for k, v in means.items() if k[0] == modalities and k[1] in FUSIONS
            }
            if not ours:
                continue
            best = max(ours, key=lambda k: ours[k][0])
            lines.append(
                f'{describe_model(modalities, fusion)} (no fusion, one encoder): F1 '
                f'{f1:.3f}, AUROC {auroc:.3f} on unseen cities, against '
                f'{ours[best][0]:.3f} and {ours[best][1]:.3f} for the best FusionNet '
                f'on the same modalities ({describe_model(*best)}; AUROC '
                f'{auroc - ours[best][1]:+.3f}).'
            )
        elif run_weights(fusion) is not None:
            scratch = (modalities, fusion.partition('@')[0])
            if scratch not in means:
                continue
            lines.append(
                f'{describe_model(modalities, fusion)}: F1 {f1:.3f}, AUROC '
                f'{auroc:.3f} on unseen cities, against {means[scratch][0]:.3f} and '
                f'{means[scratch][1]:.3f} trained from scratch (AUROC '
                f'{auroc - means[scratch][1]:+.3f}).'
            )
    return lines


def weights_note(rows: pd.DataFrame, config: StudyConfig) -> list[str]:
    """What the page says about the runs with a pretrained SAR encoder.

    Args:
        rows: rows of the study.
        config: the study's configuration.

    Returns:
        Markdown paragraphs (empty without pretrained weights in the configuration).
    """
    if not config.pretrained_weights:
        return []
    ran = {run_weights(f) for f in rows.fusion} - {None}
    lines = []
    for name in config.pretrained_weights:
        weights = resolve_weights(name)
        if name in ran:
            lines.append(
                f'- `{name}` ({weights.meta.get("model")}, pretrained on '
                f'{weights.meta.get("dataset")}): the rows whose fusion is '
                f'`{pretrained_fusion(name)}` ran with these weights.'
            )
        else:
            lines.append(
                f'- `{name}`: **skipped**. Its file `{weights_path(weights).name}` was '
                "not in torch hub's cache when the study ran and nothing is "
                f'downloaded at run time; fetch it once from {weights.url} and rerun '
                'the study to add these rows (no row is faked).'
            )
    return [
        '## Pretrained SAR encoders',
        '',
        (
            'Runs of FusionNet whose SAR encoder starts from TorchGeo weights (the '
            'weights choose the backbone; C-band 10 m Sentinel-1 weights applied to '
            'X-band VHR chips; the other encoders start from scratch):'
        ),
        '',
        *lines,
        '',
    ]


def plot_modalities(rows: pd.DataFrame, path: Path) -> None:
    """F1 and AUROC by model, seen vs unseen cities (mean +- std over runs)."""
    models = _model_order(rows)
    labels = [describe_model(*m).replace(', ', '\n', 1) for m in models]
    fig, axes = plt.subplots(1, 2, figsize=(max(9, 1.1 * len(models) + 4), 5.5))
    x = np.arange(len(models))
    for ax, metric, title in zip(axes, ('f1', 'auroc'), ('F1', 'AUROC')):
        for offset, split, colour in (
            (-0.17, 'seen', '#4c72b0'),
            (0.17, 'unseen', '#dd8452'),
        ):
            means, stds = [], []
            for model in models:
                sel = rows[
                    (rows.modalities == model[0])
                    & (rows.fusion == model[1])
                    & (rows.split == split)
                ][metric].astype(float)
                means.append(sel.mean())
                stds.append(sel.std(ddof=1) if len(sel) > 1 else 0.0)
            ax.bar(
                x + offset,
                means,
                width=0.34,
                yerr=stds,
                color=colour,
                capsize=2,
                label=f'{split} cities',
            )
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=60, ha='right', fontsize=7)
        ax.set_title(f'{title} by model (mean ± std over folds and seeds)')
        ax.set_ylim(0, 1)
        ax.grid(axis='y', alpha=0.3)
        if metric == 'auroc':
            ax.axhline(0.5, color='grey', lw=0.8, ls='--')
    axes[0].legend(loc='upper left')
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_curves(predictions: pd.DataFrame, path: Path) -> None:
    """ROC and precision-recall curves on unseen cities, pooled over folds and seeds."""
    unseen = predictions[predictions.split == 'unseen']
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(12, 5.5))
    for model in _model_order(unseen):
        if model[1] not in ('late', *BASELINES):
            continue
        sel = unseen[(unseen.modalities == model[0]) & (unseen.fusion == model[1])]
        y = sel.label.to_numpy()
        p = sel.probability.to_numpy()
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        precision, recall, _ = precision_recall_curve(y, p)
        name = describe_model(*model)
        style = '--' if model[1] in BASELINES else '-'
        roc.plot(fpr, tpr, style, label=f'{name} ({roc_auc_score(y, p):.2f})')
        pr.plot(
            recall,
            precision,
            style,
            label=f'{name} ({average_precision_score(y, p):.2f})',
        )
    roc.plot([0, 1], [0, 1], color='grey', lw=0.8, ls=':')
    roc.set(
        xlabel='false positive rate',
        ylabel='true positive rate',
        title='ROC on unseen cities, pooled over folds and seeds (AUROC)',
    )
    pr.set(
        xlabel='recall',
        ylabel='precision',
        title='Precision-recall on unseen cities, pooled (AP)',
    )
    if len(unseen):
        pr.axhline(float(unseen.label.mean()), color='grey', lw=0.8, ls=':')
    for ax in (roc, pr):
        ax.legend(fontsize=7, loc='best')
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_reliability(predictions: pd.DataFrame, path: Path, bins: int = 10) -> None:
    """Reliability diagram of every late-fusion model on unseen cities."""
    unseen = predictions[predictions.split == 'unseen']
    fig, ax = plt.subplots(figsize=(6, 5.5))
    for model in _model_order(unseen):
        if model[1] not in ('late', *BASELINES):
            continue
        sel = unseen[(unseen.modalities == model[0]) & (unseen.fusion == model[1])]
        p = sel.probability.to_numpy()
        y = sel.label.to_numpy()
        mean_p, observed, count = reliability_curve(p, y, bins)
        xs, ys = mean_p[count > 0], observed[count > 0]
        ece = expected_calibration_error(p, y, bins)
        style = 'o--' if model[1] in BASELINES else 'o-'
        ax.plot(xs, ys, style, ms=3, label=f'{describe_model(*model)} (ECE {ece:.3f})')
    ax.plot([0, 1], [0, 1], color='grey', lw=0.8, ls=':')
    ax.set(
        xlabel='predicted probability of damage',
        ylabel='observed damaged share',
        title='Reliability on unseen cities',
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def write_report(
    rows: pd.DataFrame,
    predictions: pd.DataFrame,
    config: StudyConfig,
    out: str | os.PathLike[str],
    seconds: float | None = None,
    command: str | None = None,
    simulator_page: str | None = 'simulator.md',
    speeds: pd.DataFrame | None = None,
) -> list[Path]:
    """Write ``study.csv``, ``study.md`` and the figures.

    Args:
        rows: rows of the study (:func:`run_study`).
        predictions: pooled predictions (:func:`run_study`).
        config: the study's configuration.
        out: output folder (e.g. ``docs/results``).
        seconds: wall time of the study, reported in the page.
        command: the command that produced the results, quoted in the page.
        simulator_page: link from the page to the simulator report, relative to
            ``out`` (None: no link).
        speeds: inference rates of the deep models (:func:`inference_speed`),
            written to ``study_inference.csv`` and the page's accuracy-per-cost
            table (None: neither).

    Returns:
        The files written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    rows = with_adaptation(
        with_best_f1(rows, predictions), predictions, config.cities, config.ece_bins
    )
    rows = with_bbse(rows, predictions, config.cities, config.ece_bins)
    rows = with_true_labels(rows, predictions)

    def replace(path: Path, write: Callable[[Path], None]) -> None:
        write_atomic(path, write)
        written.append(path)

    extra = (*REPORT_METRICS, *ADAPTED_METRICS, *BBSE_METRICS, *TRUTH_METRICS)
    table = rows[[*COLUMNS, *extra]].copy()
    for metric in (*METRICS, *extra):
        table[metric] = table[metric].astype(float).round(4)
    table['threshold'] = table['threshold'].astype(float).round(4)
    replace(out / 'study.csv', lambda p: table.to_csv(p, index=False))
    # the figures are saved atomically by plot.save_figure
    plot_modalities(rows, out / 'study_models.png')
    plot_curves(predictions, out / 'study_curves.png')
    plot_reliability(predictions, out / 'study_reliability.png', config.ece_bins)
    written += [out / f'study_{n}.png' for n in ('models', 'curves', 'reliability')]

    lines = _page_intro(rows, config, seconds, command, simulator_page)
    lines += weights_note(rows, config)
    lines += _page_results(rows)
    if speeds is not None and len(speeds):
        replace(
            out / 'study_inference.csv',
            lambda p: speeds.round(4).to_csv(p, index=False),
        )
        lines += cost_section(rows, speeds)
    lines += int8_section(rows, predictions)
    lines += backbone_section(rows, speeds)

    def page(path: Path) -> None:
        path.write_text('\n'.join(lines), encoding='utf-8')

    replace(out / 'study.md', page)
    return written


def _page_intro(
    rows: pd.DataFrame,
    config: StudyConfig,
    seconds: float | None,
    command: str | None,
    simulator_page: str | None,
) -> list[str]:
    """The study page's title, protocol, data and settings (see :func:`write_report`)."""
    runs = rows.drop_duplicates(['modalities', 'fusion', 'held_out_city', 'seed'])
    run_minutes = float(runs['seconds'].astype(float).sum()) / 60
    settings = {k: v for k, v in asdict(config).items() if k != 'name'}
    if config.scene is not None:
        scene_text = f'Data: the scene in `{config.scene}`; '
    else:
        scene_text = 'Data: the simulated scene' + (
            f' (see [the simulator report]({simulator_page}))' if simulator_page else ''
        )
        scene_text += (
            f', {config.buildings} buildings per city at {config.pixel_m:g} m; '
        )
    return [
        f'# The study ({config.name} configuration): modality ablation x fusion x '
        + 'unseen cities',
        '',
        '*Written by `experiments/study.py`; do not edit by hand.*',
        '',
        f'Configuration **{config.name}**: {len(rows) // 2} runs ({len(rows)} rows of '
        f'[`study.csv`](study.csv)), {run_minutes:.1f} minutes of training and '
        "testing (the sum of the runs' `seconds`"
        + (
            f'; the last invocation took {seconds / 60:.1f} minutes of wall time'
            if seconds is not None
            else ''
        )
        + ').'
        + (f' Command: `{command}`.' if command else ''),
        '',
        'Leave-one-city-out over '
        + ', '.join(config.cities)
        + ': each city is the *unseen* test city once, the next one in the list '
        'chooses the decision threshold (best F1) and the others train. '
        f'{config.holdout:.0%} of the {config.holdout_block_m:.0f} m blocks of each '
        'training city are kept out of training: the *seen* split. Both rows of a '
        "run carry the fold's unseen city in `held_out_city`. "
        + scene_text
        + f'{config.epochs} epochs, seeds {config.seeds}. The numbers describe the '
        'simulator, not real COSMO-SkyMed data.',
        '',
        '<details><summary>all settings</summary>',
        '',
        '```yaml',
        *[f'{key}: {json.dumps(value)}' for key, value in settings.items()],
        '```',
        '',
        '</details>',
        '',
    ]


def _bbse_findings(unseen: pd.DataFrame) -> list[str]:
    """Sentences comparing the damaged-share estimators (see :func:`with_bbse`)."""
    if 'share_bbse_error' not in unseen.columns:
        return []
    deep = _calibrated_unseen(unseen)
    columns = ['share_mean_error', 'share_error', 'share_bbse_error']
    columns += ['share_validation_error', 'ece_bbse', 'f1_bbse', 'f1_expected']
    per_model = deep.groupby(['modalities', 'fusion'], sort=False)[columns].mean()
    per_model = per_model.dropna(subset=['share_bbse_error'])
    if not len(per_model):
        return []

    def span(column: str) -> str:
        return _span(per_model[column])

    errors = per_model[['share_mean_error', 'share_error', 'share_bbse_error']]
    wins = int((errors.idxmin(axis=1) == 'share_bbse_error').sum())
    models = len(per_model)
    by_city = deep.groupby('held_out_city')[['share_bbse', 'share_true']].mean()
    by_city = by_city.dropna()
    estimates = by_city.share_bbse.to_numpy(dtype=float)
    truths = by_city.share_true.to_numpy(dtype=float)
    i = int(np.argmax(np.abs(estimates - truths)))
    worst, estimate, true = str(by_city.index[i]), estimates[i], truths[i]
    return [
        (
            "Estimating an unseen city's damaged share without labels (each "
            'FusionNet model, mean over runs, |estimate - true|): the mean '
            f'calibrated probability {span("share_mean_error")}, EM '
            f'{span("share_error")}, black-box shift estimation (BBSE, Lipton et '
            "al. 2018, with the run's hit and false-alarm rates on its seen split) "
            f"{span('share_bbse_error')}, copying the validation city's share "
            f'{span("share_validation_error")}; BBSE is the most accurate of the '
            f'first three for {wins} of {models} models. Its rates do not '
            f'transfer: in {worst} it estimates {estimate:.3f} against a true '
            f'{true:.3f} (mean over models). '
            'Re-weighted to its estimate, the probabilities have ECE '
            f'{span("ece_bbse")} and F1 {span("f1_bbse")} at their expected-F1 '
            f'threshold (unadapted: F1 {span("f1_expected")}).'
        )
    ]


def _estimators_section(overall: pd.DataFrame) -> list[str]:
    """The page's table of damaged-share estimators on unseen cities (:func:`with_bbse`)."""
    if 'share_bbse_error_mean' not in overall.columns:
        return []
    part = _calibrated_unseen(overall)
    if not len(part):
        return []
    metrics = ['share_true', 'share_mean_error', 'share_error', 'share_bbse']
    metrics += ['share_bbse_error', 'share_validation_error', 'ece_bbse', 'f1_bbse']
    return [
        '## Unseen cities: estimating the damaged share without labels',
        '',
        (
            'Absolute errors of three label-free estimates of each unseen '
            "city's damaged share: `share_mean_error`, the mean calibrated "
            'probability; `share_error`, EM (Saerens et al. 2002, the table above; '
            'failed-safe runs keep their fallback estimate); `share_bbse_error`, '
            'black-box shift estimation (Lipton, Wang & Smola 2018), which solves '
            'for the share from the share of buildings flagged at the '
            "run's threshold and the hit and false-alarm rates of the same model "
            'on its seen split (held-out blocks of the training cities). '
            "`share_validation_error`: copying the validation city's share. "
            '`ece_bbse`, `f1_bbse`: the probabilities re-weighted to the BBSE '
            'estimate, F1 at their expected-F1 threshold. BBSE and EM both assume '
            'that only the share changes between cities (label shift), not how '
            'damage looks.'
        ),
        '',
        markdown_table(part, ['modalities', 'fusion'], metrics),
        '',
    ]


def _adaptation_section(overall: pd.DataFrame) -> list[str]:
    """The page's table of prior adaptation on unseen cities (:func:`with_adaptation`)."""
    if 'ece_adapted_mean' not in overall.columns:
        return []
    part = _calibrated_unseen(overall)
    if not len(part):
        return []
    metrics = ['prior_adapted', 'ece', 'ece_adapted', 'f1', 'f1_adapted', 'f1_best']
    metrics += ['share_true', 'share_estimate', 'share_error']
    metrics += ['f1_expected', 'share_mean_error']
    return [
        '## Unseen cities after prior adaptation (FusionNet models)',
        '',
        (
            "Each unseen city's probabilities re-weighted to its damaged share "
            'estimated without labels (EM of Saerens, Latinne & Decaestecker 2002, '
            '`torchgeo_sar_damage.prior_shift`), from the share of the validation '
            'city the model was calibrated on; `f1_adapted` at the expected-F1 '
            'threshold of the adapted probabilities, `f1` at the validation '
            "city's threshold; `share_error` = |estimate - true|. `prior_adapted`: "
            'the share of runs adapted; the others failed safe (EM not converged, '
            'at the boundary, or an interval wider than 0.5) and are scored as '
            'prediction then gives them, unadapted at their expected-F1 threshold. '
            '`f1_expected`: unadapted, at the expected-F1 threshold of the '
            "city's calibrated probabilities (`predict --threshold expected-f1`); "
            '`share_mean_error`: |mean calibrated probability - true share|. '
            "Gradient boosting and TorchGeo's task are not calibrated on the "
            'validation city, so they are not adapted.'
        ),
        '',
        markdown_table(part, ['modalities', 'fusion'], metrics),
        '',
    ]


def int8_section(rows: pd.DataFrame, predictions: pd.DataFrame) -> list[str]:
    """The page's comparison of the int8 runs with their float twins on unseen cities.

    Each int8 run (fusion ``<fusion>+int8``, see :attr:`StudyConfig.int8_sets`) is
    paired with the float run of the same model, city and seed: the differences of
    F1, AUROC and ECE, and of each building's probability.

    Args:
        rows: rows of the study.
        predictions: pooled predictions (:func:`run_study`).

    Returns:
        Markdown lines (empty without int8 runs).
    """
    keys = ['modalities', 'held_out_city', 'seed']
    unseen = rows[rows.split == 'unseen']
    int8 = unseen[unseen.fusion.astype(str).str.endswith(INT8)]
    table = []
    for (modalities, fusion), part in int8.groupby(['modalities', 'fusion']):
        base = str(fusion).removesuffix(INT8)
        twin = unseen[(unseen.modalities == modalities) & (unseen.fusion == base)]
        pair = part.merge(twin, on=keys, suffixes=('', '_float'))
        if not len(pair):
            continue
        cells = []
        for metric in ('f1', 'auroc', 'ece'):
            delta = pair[metric].astype(float) - pair[f'{metric}_float'].astype(float)
            cells.append(f'{delta.mean():+.4f} ± {delta.std(ddof=0):.4f}')
        same = predictions[
            (predictions.modalities == modalities) & (predictions.split == 'unseen')
        ]
        both = same[same.fusion == fusion].merge(
            same[same.fusion == base],
            on=['held_out_city', 'seed', 'building_id'],
            suffixes=('', '_float'),
        )
        dp = (both.probability - both.probability_float).abs()
        table.append(
            f'| {describe_model(str(modalities), str(fusion))} | {len(pair)} | '
            + ' | '.join(cells)
            + f' | {dp.mean():.4f} | {dp.max():.4f} |'
        )
    if not table:
        return []
    return [
        '## Int8 encoders (`predict --quantize`) against the float model',
        '',
        (
            'Each int8 run is the float run of the same model, unseen city and seed '
            'with its image encoders quantised to int8 after training (calibrated '
            'on 256 windows of the unseen town, as prediction does). Differences '
            'int8 - float, mean ± std over the paired runs; `|Δp|`: per building.'
        ),
        '',
        '| model | runs | Δ F1 | Δ AUROC | Δ ECE | mean \\|Δp\\| | max \\|Δp\\| |',
        '|---|---|---|---|---|---|---|',
        *table,
        '',
    ]


def _paired_deltas(pair: pd.DataFrame, suffix: str) -> list[str]:
    """``mean ± std`` of F1 and AUROC minus their ``<metric><suffix>`` twins."""
    if not len(pair):
        return ['n/a', 'n/a']
    cells = []
    for metric in ('f1', 'auroc'):
        delta = pair[metric].astype(float) - pair[f'{metric}{suffix}'].astype(float)
        cells.append(f'{delta.mean():+.3f} ± {delta.std(ddof=0):.3f}')
    return cells


def backbone_section(
    rows: pd.DataFrame, speeds: pd.DataFrame | None = None
) -> list[str]:
    """The page's comparison of other backbones with the configuration's, paired by run.

    Each run of another backbone (fusion ``<fusion>~<backbone>``, see
    :attr:`StudyConfig.backbones`) is paired with the run of the same modalities,
    fusion, unseen city and seed on the configuration's backbone: the differences of
    F1 and AUROC, and the ratio of the models' inference rates where they were timed.

    Args:
        rows: rows of the study.
        speeds: inference rates (:func:`inference_speed`), or None.

    Returns:
        Markdown lines (empty without runs of another backbone).
    """
    keys = ['modalities', 'held_out_city', 'seed']
    unseen = rows[rows.split == 'unseen']
    rate: dict[tuple[str, str], float] = {}
    if speeds is not None and len(speeds):
        rate = {
            (str(m), str(f)): float(b)
            for m, f, b in zip(speeds.modalities, speeds.fusion, speeds.buildings_per_s)
        }
    other = unseen[unseen.fusion.astype(str).str.contains(BACKBONE, regex=False)]
    table = []
    for model in _model_order(other):
        modalities, fusion = model
        base = fusion_type(fusion)
        part = other[(other.modalities == modalities) & (other.fusion == fusion)]
        twin = unseen[(unseen.modalities == modalities) & (unseen.fusion == base)]
        pair = part.merge(twin, on=keys, suffixes=('', '_base'))
        if not len(pair):
            continue
        late = unseen[(unseen.modalities == modalities) & (unseen.fusion == 'late')]
        cells = _paired_deltas(pair, '_base')
        fast = rate.get(model, np.nan) / rate.get((modalities, base), np.nan)
        cells.append(f'{fast:.2f}' if np.isfinite(fast) else 'n/a')
        if base != 'late' and len(late):
            paired = part.merge(late, on=keys, suffixes=('', '_late'))
            cells += _paired_deltas(paired, '_late')
        else:
            cells += ['n/a', 'n/a']
        table.append(
            f'| {describe_model(modalities, fusion)} | {len(pair)} | '
            + ' | '.join(cells)
            + ' |'
        )
    if not table:
        return []
    return [
        "## Other backbones against the configuration's",
        '',
        (
            'Each run of another image-encoder backbone is paired with the run of '
            "the same modalities, fusion, unseen city and seed on the configuration's "
            'backbone. Differences other - configured, mean ± std over the paired '
            "runs; `speed`: ratio of the two models' inference rates in the "
            'accuracy-per-cost table (the same chips and machine); `vs late`: the '
            'same runs paired with late fusion of the same modalities on the '
            "configuration's backbone."
        ),
        '',
        '| model | runs | Δ F1 | Δ AUROC | speed | Δ F1 vs late | Δ AUROC vs late |',
        '|---|---|---|---|---|---|---|',
        *table,
        '',
    ]


def cost_section(rows: pd.DataFrame, speeds: pd.DataFrame) -> list[str]:
    """The page's accuracy-per-cost table of the deep models on unseen cities.

    Args:
        rows: rows of the study.
        speeds: inference rates (:func:`inference_speed`).

    Returns:
        Markdown lines: the table and which model is fastest within 0.01 AUROC of
        the most accurate one (empty where no model was timed).
    """
    unseen = rows[rows.split == 'unseen']
    rate = {
        (str(m), str(f)): (float(b), float(n))
        for m, f, b, n in zip(
            speeds.modalities, speeds.fusion, speeds.buildings_per_s, speeds.parameters
        )
    }
    table = []
    for model in _model_order(unseen):
        if model not in rate:
            continue
        sel = unseen[(unseen.modalities == model[0]) & (unseen.fusion == model[1])]
        if not len(sel):
            continue
        # an int8 run quantises its float twin's trained model: that training's cost
        trained = model[1].removesuffix(INT8)
        twin = unseen[(unseen.modalities == model[0]) & (unseen.fusion == trained)]
        cost = twin if len(twin) else sel
        table.append(
            (
                model,
                len(sel),
                float(sel.f1.astype(float).mean()),
                float(sel.auroc.astype(float).mean()),
                float(cost.seconds.astype(float).median()),
                *rate[model],
            )
        )
    if not table:
        return []
    first = speeds.iloc[0]
    load = float(first['load'])
    conditions = (
        f'batches of {int(first["batch"])} chips of {int(first["pixels"])} x '
        f'{int(first["pixels"])} px, {int(first["threads"])} torch threads on '
        f'{os.cpu_count()} logical cores'
        + (f', load average {load:.1f} when timed' if np.isfinite(load) else '')
    )
    top = max(table, key=lambda r: r[3])
    near = [r for r in table if r[3] >= top[3] - 0.01]
    fast = max(near, key=lambda r: r[5])
    return [
        '## Accuracy per cost (unseen cities)',
        '',
        (
            'Mean F1 and AUROC over runs; `s/run`: median wall time of one run '
            "(training and testing on CPU at the study's epochs; for int8 rows, "
            "their float twin's, whose trained model they quantise); `buildings/s`: "
            'inference of the model alone (architecture as trained, the best of '
            f'several passes over {conditions}; written by '
            '`torchgeo_sar_damage.study.inference_speed` into '
            '[`study_inference.csv`](study_inference.csv)). Prediction over a town '
            'also reads the rasters: `benchmarks/predict_city.py` measures the '
            'whole path.'
        ),
        '',
        '| model | runs | F1 | AUROC | s/run | buildings/s | parameters (M) |',
        '|---|---|---|---|---|---|---|',
        *[
            f'| {describe_model(*m)} | {n} | {f1:.3f} | {auroc:.3f} | {sec:.1f} | '
            f'{speed:.0f} | {size:.1f} |'
            for m, n, f1, auroc, sec, speed, size in table
        ],
        '',
        (
            f'- Fastest model within 0.01 AUROC of the most accurate one '
            f'({describe_model(*top[0])}, AUROC {top[3]:.3f}, {top[5]:.0f} '
            f'buildings/s): {describe_model(*fast[0])}, AUROC {fast[3]:.3f}, '
            f'{fast[5]:.0f} buildings/s ({fast[5] / top[5]:.1f}x).'
        ),
        '',
    ]


def _truth_section(overall: pd.DataFrame) -> list[str]:
    """The page's table of scores against the true grades (:func:`with_true_labels`)."""
    if 'auroc_true_mean' not in overall.columns:
        return []
    finite = np.isfinite(overall.auroc_true_mean.to_numpy(dtype=float))
    part = overall[(overall.split == 'unseen').to_numpy() & finite]
    if not len(part):
        return []
    return [
        '## Unseen cities against the true grades (label noise)',
        '',
        (
            'The EMS labels are photo-interpretation of the simulated image and miss '
            "or invent damage; the simulator knows every building's true grade. "
            '`label_noise`: the share of EMS labels that disagree with the truth '
            '(grade >= 4); `auroc_true` and `f1_true` score the same probabilities '
            "(at the validation city's threshold) against the truth, beside the "
            'EMS-label `auroc` and `f1`.'
        ),
        '',
        markdown_table(
            part,
            ['modalities', 'fusion'],
            ['label_noise', 'f1', 'f1_true', 'auroc', 'auroc_true'],
        ),
        '',
    ]


def _page_results(rows: pd.DataFrame) -> list[str]:
    """The study page's findings, tables and figures (see :func:`write_report`)."""
    overall = summary(rows, ['modalities', 'fusion', 'split'])
    per_city = summary(
        rows[rows.split == 'unseen'], ['modalities', 'fusion', 'held_out_city']
    )
    gaps = gap_table(rows)
    return [
        '## Findings (computed from the table)',
        '',
        *[f'- {line}' for line in findings(rows)],
        '',
        '## Unseen cities (mean ± std over folds and seeds)',
        '',
        (
            'F1, precision, recall and kappa at the threshold chosen on the '
            "validation city; `f1_best`: the F1 at the test set's own best "
            'threshold, an oracle bound that shows what transferring the threshold '
            'costs.'
        ),
        '',
        markdown_table(
            overall[overall.split == 'unseen'],
            ['modalities', 'fusion'],
            (*METRICS, *REPORT_METRICS),
        ),
        '',
        *_adaptation_section(overall),
        *_estimators_section(overall),
        *_truth_section(overall),
        '## Seen cities: held-out blocks of the training cities',
        '',
        markdown_table(
            overall[overall.split == 'seen'],
            ['modalities', 'fusion'],
            (*METRICS, *REPORT_METRICS),
        ),
        '',
        '## Generalisation gap (seen - unseen, paired by run)',
        '',
        '| model | runs | F1 gap | AUROC gap |',
        '|---|---|---|---|',
        *[
            f'| {describe_model(r["modalities"], r["fusion"])} | {r["runs"]} | '
            f'{_cell(r["f1_gap_mean"], r["f1_gap_std"])} | '
            f'{_cell(r["auroc_gap_mean"], r["auroc_gap_std"])} |'
            for r in gaps.to_dict('records')
        ],
        '',
        '## Per unseen city',
        '',
        markdown_table(
            per_city, ['modalities', 'fusion', 'held_out_city'], ['f1', 'auroc', 'ap']
        ),
        '',
        '## Figures',
        '',
        '![F1 and AUROC by model, seen vs unseen cities](study_models.png)',
        '',
        '![ROC and precision-recall curves on unseen cities](study_curves.png)',
        '',
        '![Reliability diagram on unseen cities](study_reliability.png)',
        '',
    ]
