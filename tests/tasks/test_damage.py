# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""DamageClassification trained on a small simulated scene of three towns."""

import itertools
import math
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.utilities.types import STEP_OUTPUT

from torchgeo_sar_damage.cli import main
from torchgeo_sar_damage.datamodules import TOWN_MODALITIES, SARDamageDataModule
from torchgeo_sar_damage.errors import ArgumentError
from torchgeo_sar_damage.models import FUSIONS
from torchgeo_sar_damage.prior_shift import adapt_to_town, expected_f1_threshold
from torchgeo_sar_damage.reliability import (
    CalibrationMethod,
    expected_calibration_error,
    fit_calibration,
    fit_platt,
    fit_temperature,
)
from torchgeo_sar_damage.tasks import (
    BinaryFocalLoss,
    DamageClassification,
    best_f1_threshold,
)
from torchgeo_sar_damage.tasks.damage import ECE_BINS, adapted_scores

CITIES = ('nurdagi', 'islahiye', 'adiyaman')  # the conftest's training scene
SPLIT = {
    'train_cities': ['nurdagi'],
    'val_cities': ['islahiye'],
    'test_cities': ['adiyaman'],
}
CONFIGS = Path(__file__).parents[2] / 'experiments' / 'configs'
#: A small model for tests that do not need ResNet-18.
SMALL: dict[str, Any] = {'backbone': 'resnet10t', 'embed_dim': 16}


@pytest.fixture(scope='module')
def scene(training_scene: Path) -> Path:
    """Three towns of 70 buildings at 1 m (the shared training scene)."""
    return training_scene


def make_dm(scene: Path, **kwargs: object) -> SARDamageDataModule:
    args: dict[str, Any] = {
        **SPLIT,
        'size_m': 16.0,
        'batch_size': 16,
        'progress': False,
        'chips_root': scene.parent / 'chips',
    }
    args.update(kwargs)
    return SARDamageDataModule(scene, **args)


def trainer(root: Path, **kwargs: object) -> Trainer:
    args: dict[str, Any] = {
        'accelerator': 'cpu',
        'devices': 1,
        'logger': False,
        'enable_checkpointing': False,
        'enable_progress_bar': False,
        'enable_model_summary': False,
        'default_root_dir': root,
    }
    args.update(kwargs)
    return Trainer(**args)


def test_best_f1_threshold() -> None:
    probs = torch.tensor([0.1, 0.2, 0.35, 0.4, 0.8, 0.9])
    targets = torch.tensor([0, 0, 1, 0, 1, 1])
    assert best_f1_threshold(probs, targets) == pytest.approx(0.35)
    assert best_f1_threshold(probs, torch.zeros(6, dtype=torch.long)) == 0.5
    assert best_f1_threshold(torch.empty(0), torch.empty(0)) == 0.5


def test_focal_loss_weights_positives() -> None:
    logits = torch.zeros(4)
    pos = torch.ones(4)
    neg = torch.zeros(4)
    loss = BinaryFocalLoss(pos_weight=3.0)
    assert float(loss(logits, pos)) == pytest.approx(3 * float(loss(logits, neg)))


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'modalities': ['sar', 'lidar']}, 'unknown modalities'),
        ({'modalities': []}, 'modalities is empty'),
        ({'fusion': 'middle'}, "unknown 'middle'.*early, late, attention"),
        ({'fusion': 'attention', 'modalities': ['sar', 'dsm']}, 'needs modalities'),
        ({'task': 'regression'}, "'binary' or 'multiclass'"),
        ({'loss': 'ce'}, "loss 'ce' does not fit task 'binary'"),
        ({'task': 'multiclass', 'loss': 'bce'}, 'does not fit'),
        ({'pos_weight': -1.0}, 'must be positive'),
        ({'pos_weight': 'balanced'}, "'auto', a number or None"),
        (
            {'calibration_method': 'isotonic'},
            "calibration_method: unknown 'isotonic'.*temperature, bcts, platt",
        ),
    ],
)
def test_bad_configuration(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ArgumentError, match=match):
        DamageClassification(**{**SMALL, **kwargs})


def test_weights_from_a_local_file(tmp_path: Path) -> None:
    first = DamageClassification(modalities=['sar', 'osm'], **SMALL)
    path = tmp_path / 'fusionnet.pt'
    torch.save(first.model.state_dict(), path)
    second = DamageClassification(modalities=['sar', 'osm'], weights=path, **SMALL)
    for a, b in zip(
        first.model.state_dict().values(),
        second.model.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)
    assert 'weights' not in second.hparams


def test_every_modality_and_fusion(scene: Path) -> None:
    dm = make_dm(scene, batch_size=4)
    dm.setup('validate')
    raw = next(iter(dm.val_dataloader()))
    for n in range(1, len(TOWN_MODALITIES) + 1):
        for modalities in itertools.combinations(TOWN_MODALITIES, n):
            dm.modalities = modalities
            batch = dm.normalise(raw)
            for fusion in FUSIONS:
                args = {**SMALL, 'modalities': modalities, 'fusion': fusion}
                if not FUSIONS[fusion].required <= set(modalities):
                    with pytest.raises(ArgumentError, match='needs modalities'):
                        DamageClassification(**args)
                    continue
                model = DamageClassification(**args).eval()
                with torch.no_grad():
                    assert model(batch).shape == (4, 1)
                multi = DamageClassification(**args, task='multiclass').eval()
                with torch.no_grad():
                    assert multi(batch).shape == (4, 4)


def shifted_validation(
    n: int = 4000, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[N, 1]`` of a model trained with a balanced loss, and their labels.

    Labels come from ``sigmoid(z - 2)`` (about one building in five damaged); the
    model's logits are ``1.5 z + 2``: over-confident and shifted up.
    """
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator=generator) * 2
    labels = (torch.rand(n, generator=generator) < torch.sigmoid(z - 2)).long()
    return (1.5 * z + 2)[:, None], labels


def test_default_calibration_is_bcts() -> None:
    model = DamageClassification(**SMALL)
    assert model.hparams['calibration_method'] == 'bcts'
    assert float(model.temperature) == 1.0
    assert float(model.calibration_bias) == 0.0
    assert math.isnan(float(model.validation_prior))


@pytest.mark.parametrize('method', ['bcts', 'platt'])
def test_validation_fits_temperature_and_bias(method: CalibrationMethod) -> None:
    logits, labels = shifted_validation()
    model = DamageClassification(**SMALL, calibration_method=method)
    model.fit_calibration(logits, labels)
    a, b = fit_platt(logits, labels)
    assert float(model.temperature) == pytest.approx(1 / a, rel=1e-6)
    assert float(model.calibration_bias) == pytest.approx(b, rel=1e-6)
    # the affine map back to the true logit z - 2 = logits / 1.5 - 10 / 3
    assert float(model.temperature) == pytest.approx(1.5, rel=0.1)
    assert float(model.calibration_bias) == pytest.approx(-10 / 3, abs=0.3)
    assert float(model.validation_prior) == pytest.approx(
        float(labels.double().mean()), abs=1e-6
    )
    # probabilities() is sigmoid(z / T + b), and calibrated
    probability = model.probabilities(logits)
    expected = torch.sigmoid(
        logits[:, 0] / float(model.temperature) + float(model.calibration_bias)
    )
    torch.testing.assert_close(probability, expected)
    assert expected_calibration_error(probability, labels) < 0.03


def test_temperature_only_keeps_the_bias_at_zero() -> None:
    logits, labels = shifted_validation()
    model = DamageClassification(**SMALL, calibration_method='temperature')
    model.fit_calibration(logits, labels)
    assert float(model.calibration_bias) == 0.0
    assert float(model.temperature) == pytest.approx(
        fit_temperature(logits, labels), rel=1e-6
    )
    torch.testing.assert_close(
        model.probabilities(logits), torch.sigmoid(logits[:, 0] / model.temperature)
    )
    assert float(model.validation_prior) == pytest.approx(
        float(labels.double().mean()), abs=1e-6
    )
    bcts = DamageClassification(**SMALL)
    bcts.fit_calibration(logits, labels)
    # the bias corrects what the temperature alone leaves
    ece_temperature = expected_calibration_error(model.probabilities(logits), labels)
    ece_bcts = expected_calibration_error(bcts.probabilities(logits), labels)
    assert ece_temperature > 0.1
    assert ece_bcts < ece_temperature - 0.08


def test_multiclass_calibration_is_a_temperature() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 4, generator=generator) * 4
    probabilities = (logits / 4).softmax(dim=1)
    labels = torch.multinomial(probabilities, 1, generator=generator)[:, 0]
    model = DamageClassification(**SMALL, task='multiclass')
    model.fit_calibration(logits, labels)
    assert float(model.temperature) == pytest.approx(
        fit_temperature(logits, labels), rel=1e-6
    )
    assert float(model.calibration_bias) == 0.0
    assert math.isnan(float(model.validation_prior))
    torch.testing.assert_close(
        model.probabilities(logits), (logits / model.temperature).softmax(dim=1)
    )


def test_calibrate_is_the_mapping_of_every_probability() -> None:
    model = DamageClassification(**SMALL).eval()
    model.temperature.fill_(2.0)
    model.calibration_bias.fill_(-1.0)
    model.threshold.fill_(0.3)
    logits = torch.tensor([[-2.0], [0.0], [4.0]])
    torch.testing.assert_close(model.calibrate(logits), logits / 2 - 1)
    expected = torch.sigmoid(logits[:, 0] / 2 - 1)
    torch.testing.assert_close(model.probabilities(logits), expected)
    # the metrics' scores are recentred on the threshold of these probabilities
    scores = model._scores(logits)
    assert torch.equal(scores >= 0.5, expected >= 0.3)


def checkpoint_file(model: DamageClassification, path: Path) -> Path:
    """A checkpoint of ``model`` as Lightning writes one (without a Trainer)."""
    checkpoint: dict[str, Any] = {
        'state_dict': model.state_dict(),
        'hyper_parameters': dict(model.hparams),
        'pytorch-lightning_version': lightning.__version__,
    }
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def test_checkpoint_keeps_the_calibration(tmp_path: Path) -> None:
    logits, labels = shifted_validation()
    model = DamageClassification(**SMALL)
    model.fit_calibration(logits, labels)
    bias = float(model.calibration_bias)
    prior = float(model.validation_prior)
    path = checkpoint_file(model, tmp_path / 'model.ckpt')
    raw = torch.load(path, weights_only=True)
    assert raw['calibration_bias'] == bias
    assert raw['validation_prior'] == prior
    assert raw['temperature'] == float(model.temperature)
    assert float(raw['state_dict']['calibration_bias']) == bias
    assert float(raw['state_dict']['validation_prior']) == prior
    loaded = DamageClassification.load_from_checkpoint(path)
    assert float(loaded.calibration_bias) == bias
    assert float(loaded.validation_prior) == prior
    assert loaded.hparams['calibration_method'] == 'bcts'
    torch.testing.assert_close(
        loaded.probabilities(logits), model.probabilities(logits)
    )

    # a checkpoint written before the bias and prior existed (and its method)
    for key in ('calibration_bias', 'validation_prior'):
        del raw[key]
        del raw['state_dict'][key]
    del raw['hyper_parameters']['calibration_method']
    old = tmp_path / 'old.ckpt'
    torch.save(raw, old)
    loaded = DamageClassification.load_from_checkpoint(old)
    assert float(loaded.calibration_bias) == 0.0
    assert math.isnan(float(loaded.validation_prior))
    assert float(loaded.temperature) == float(model.temperature)
    torch.testing.assert_close(
        loaded.probabilities(logits), torch.sigmoid(logits[:, 0] / model.temperature)
    )


class _Losses(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(
        self,
        trainer: Trainer,
        module: LightningModule,
        outputs: STEP_OUTPUT,
        batch: object,
        batch_idx: int,
    ) -> None:
        assert isinstance(outputs, dict)
        self.losses.append(float(outputs['loss']))


def test_overfits_32_samples(scene: Path, tmp_path: Path) -> None:
    seed_everything(0)
    dm = make_dm(
        scene, batch_size=32, augmentation='none', intensity_augmentation=False
    )
    model = DamageClassification(
        modalities=TOWN_MODALITIES, fusion='late', backbone='resnet18', dropout=0.0
    )
    record = _Losses()
    fit = trainer(
        tmp_path,
        max_epochs=40,
        overfit_batches=1,
        limit_val_batches=0,
        callbacks=[record],
    )
    fit.fit(model, dm)
    assert len(record.losses) == 40
    assert record.losses[-1] < 0.2 * record.losses[0]
    assert float(fit.callback_metrics['train_F1Score']) == 1.0


def validation_logits(
    model: DamageClassification, dm: SARDamageDataModule
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of the validation town's labelled buildings.

    Args:
        model: the trained task (put in evaluation mode).
        dm: its data module, set up for fitting.

    Returns:
        ``[N]`` float32 logits and ``[N]`` labels, in validation order.
    """
    return labelled_logits(model, dm, dm.val_dataloader())


def labelled_logits(
    model: DamageClassification,
    dm: SARDamageDataModule,
    loader: Iterable[dict[str, Any]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of the labelled buildings of one dataloader.

    Args:
        model: the trained task (put in evaluation mode).
        dm: its data module, set up.
        loader: one of its dataloaders.

    Returns:
        ``[N]`` float32 logits and ``[N]`` labels, in the loader's order.
    """
    model.eval()
    logits, labels = [], []
    with torch.no_grad():
        for raw in loader:
            batch = dm.normalise(raw)
            keep = batch['label'] >= 0
            logits.append(model(batch)[keep].float().reshape(-1))
            labels.append(batch['label'][keep])
    return torch.cat(logits), torch.cat(labels)


def brute_force_best_f1_threshold(
    probabilities: torch.Tensor, labels: torch.Tensor
) -> float:
    """The smallest probability ``t`` whose rule ``p >= t`` has the best F1.

    Every distinct probability is tried; F1 = 2 TP / (2 TP + FP + FN) is compared as
    an exact fraction, so ties are ties.

    Args:
        probabilities: ``[N]`` probabilities of damage.
        labels: ``[N]`` labels (0 or 1).

    Returns:
        The threshold.
    """
    p = probabilities.double().numpy()
    y = labels.numpy() == 1
    best: tuple[Fraction, float] | None = None
    for t in sorted(set(p.tolist())):
        predicted = p >= t
        tp = int((predicted & y).sum())
        wrong = int((predicted & ~y).sum() + (~predicted & y).sum())
        f1 = Fraction(2 * tp, 2 * tp + wrong) if tp else Fraction(0)
        if best is None or f1 > best[0]:
            best = (f1, t)
    assert best is not None
    assert best[0] > 0
    return best[1]


def test_brute_force_best_f1_threshold() -> None:
    probs = torch.tensor([0.1, 0.2, 0.35, 0.4, 0.8, 0.9])
    targets = torch.tensor([0, 0, 1, 0, 1, 1])
    assert brute_force_best_f1_threshold(probs, targets) == float(probs[2])
    # F1 2/3 at 0.2 (TP 2, FP 2) and at 0.9 (TP 1, FN 1): the smaller one
    probs = torch.tensor([0.2, 0.5, 0.6, 0.9])
    targets = torch.tensor([1, 0, 0, 1])
    assert brute_force_best_f1_threshold(probs, targets) == float(probs[0])


def test_checkpoint_reload_gives_identical_predictions(
    scene: Path, tmp_path: Path
) -> None:
    seed_everything(0)
    dm = make_dm(scene)
    model = DamageClassification(modalities=TOWN_MODALITIES, fusion='late', **SMALL)
    fit = trainer(tmp_path, max_epochs=2)
    fit.fit(model, dm)
    threshold = float(model.threshold)
    # the threshold with the best F1 on the validation town's calibrated
    # probabilities, found here by trying every candidate
    logits, labels = validation_logits(model, dm)
    temperature = float(model.temperature)
    bias = float(model.calibration_bias)
    prior = float(model.validation_prior)
    # fitted on the validation town: temperature and bias together (BCTS)
    assert (temperature, bias) == pytest.approx(
        fit_calibration(logits, labels, 'bcts'), rel=1e-4, abs=1e-4
    )
    assert temperature != 1.0
    assert bias != 0.0
    assert prior == pytest.approx(float(labels.double().mean()))
    probabilities = torch.sigmoid(logits / temperature + bias)
    torch.testing.assert_close(model.probabilities(logits[:, None]), probabilities)
    assert threshold == brute_force_best_f1_threshold(
        model.probabilities(logits[:, None]), labels
    )
    assert threshold != 0.5
    path = tmp_path / 'model.ckpt'
    fit.save_checkpoint(path)
    before = fit.predict(model, dm)

    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint['decision_threshold'] == threshold
    assert float(checkpoint['state_dict']['threshold']) == threshold
    assert checkpoint['temperature'] == temperature
    assert checkpoint['calibration_bias'] == bias
    assert checkpoint['validation_prior'] == prior
    assert checkpoint['SARDamageDataModule']['statistics'] == dm.statistics.to_dict()
    assert float(checkpoint['state_dict']['criterion.pos_weight']) == pytest.approx(
        dm.statistics.class_counts[0] / dm.statistics.class_counts[1]
    )

    loaded = DamageClassification.load_from_checkpoint(path)
    assert float(loaded.threshold) == threshold
    assert float(loaded.temperature) == temperature
    assert float(loaded.calibration_bias) == bias
    assert float(loaded.validation_prior) == prior
    fresh = make_dm(scene)
    after = trainer(tmp_path).predict(loaded, fresh, ckpt_path=path)
    assert fresh.statistics == dm.statistics
    assert before is not None
    assert after is not None
    assert len(before) == len(after)
    for a, b in zip(before, after, strict=True):
        assert isinstance(a, dict)
        assert isinstance(b, dict)
        assert torch.equal(a['building_id'], b['building_id'])
        torch.testing.assert_close(a['probability'], b['probability'])
        assert torch.equal(a['prediction'], b['prediction'])
        assert torch.equal(a['prediction'], (a['probability'] >= threshold).long())

    results = trainer(tmp_path).test(loaded, make_dm(scene), ckpt_path=path)
    assert 'test_adiyaman_F1Score' in results[0]
    assert 'test_AUROC' in results[0]


def test_per_city_test_metrics_and_four_grades(scene: Path, tmp_path: Path) -> None:
    dm = make_dm(
        scene,
        scheme='four',
        train_cities=['nurdagi'],
        val_cities=[],
        test_cities=['islahiye', 'adiyaman'],
    )
    model = DamageClassification(
        modalities=TOWN_MODALITIES, task='multiclass', loss='focal', **SMALL
    )
    fit = trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    fit.fit(model, dm)
    results = {k: v for r in fit.test(model, dm) for k, v in r.items()}
    assert 'test_loss' in results
    for city in ('islahiye', 'adiyaman'):
        for name in ('F1Score', 'Precision', 'Recall', 'AUROC', 'CohenKappa'):
            assert f'test_{city}_{name}' in results
        assert f'test_{city}_loss' in results
    # no calibration or damage-rate adaptation scores for the grades
    assert not [k for k in results if k.endswith('_ece') or 'damaged_share' in k]
    assert not [k for k in results if 'adapted' in k]
    predictions = fit.predict(model, dm)
    assert predictions is not None
    first = predictions[0][0]
    assert isinstance(first, dict)
    assert first['probability'].shape[1] == 4
    torch.testing.assert_close(
        first['probability'].sum(1), torch.ones(len(first['building_id']))
    )


def shifted_town(
    n: int = 4000, source_prior: float = 0.4, damage_rate: float = 0.1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities calibrated for ``source_prior`` in a town of another damage rate.

    A building's score is ``N(1, 1)`` if damaged and ``N(-1, 1)`` if not (log
    likelihood ratio ``2 x``), so ``sigmoid(2 x + logit(source_prior))`` is the
    calibrated probability of a town with damage rate ``source_prior``; the labels
    are drawn at ``damage_rate``.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=generator) < damage_rate).long()
    x = torch.randn(n, generator=generator, dtype=torch.float64) + 2 * labels - 1
    logit_prior = math.log(source_prior / (1 - source_prior))
    return torch.sigmoid(2 * x + logit_prior).float(), labels


def f1_by_hand(predicted: np.ndarray, damaged: np.ndarray) -> float:
    """``2 TP / (2 TP + FP + FN)``, 0 without a true positive."""
    tp = int((predicted & damaged).sum())
    wrong = int((predicted != damaged).sum())
    return 2 * tp / (2 * tp + wrong) if tp else 0.0


def test_adapted_scores_of_a_shifted_town() -> None:
    probabilities, labels = shifted_town()
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # adapts without a warning
        scores = adapted_scores(probabilities, labels, 0.4)
    shift = adapt_to_town(probabilities.double().numpy(), 0.4)
    damaged = labels.numpy() == 1
    assert scores['damaged_share'] == float(damaged.mean())
    assert scores['ece'] == expected_calibration_error(probabilities, labels, ECE_BINS)
    assert scores['prior_adapted'] == 1.0
    assert scores['damaged_share_estimate'] == shift.estimate
    assert scores['damaged_share_estimate'] == pytest.approx(0.1, abs=0.02)
    assert scores['adapted_threshold'] == shift.threshold
    predicted = shift.probabilities >= shift.threshold
    assert scores['adapted_F1Score'] == pytest.approx(f1_by_hand(predicted, damaged))
    assert scores['adapted_ece'] == expected_calibration_error(
        shift.probabilities, labels, ECE_BINS
    )
    # calibrated for a town with four times the damage: over-confident here, until
    # adapted to this town's rate
    assert scores['ece'] > 0.1
    assert scores['adapted_ece'] < 0.03
    assert scores['adapted_F1Score'] > f1_by_hand(probabilities.numpy() >= 0.5, damaged)


def test_adapted_scores_ignore_unlabelled_and_nan() -> None:
    probabilities, labels = shifted_town(n=500)
    scores = adapted_scores(probabilities, labels, 0.4)
    padded = adapted_scores(
        torch.cat([probabilities, torch.tensor([0.9, 0.1, math.nan])]),
        torch.cat([labels, torch.tensor([-1, -1, 1])]),
        0.4,
    )
    assert padded == pytest.approx(scores, rel=1e-12)


def test_adapted_scores_without_a_source_prior() -> None:
    probabilities, labels = shifted_town(n=500)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        scores = adapted_scores(probabilities, labels, math.nan)
    assert scores == {
        'ece': expected_calibration_error(probabilities, labels, ECE_BINS),
        'damaged_share': float((labels == 1).double().mean()),
    }


def test_adapted_scores_fail_safe_on_a_small_town() -> None:
    probabilities, labels = shifted_town(n=20, seed=1)
    with pytest.warns(UserWarning, match='fewer than min_buildings'):
        scores = adapted_scores(probabilities, labels, 0.4)
    assert scores['prior_adapted'] == 0.0
    # the unadapted probabilities, at their own expected-F1 threshold
    assert scores['adapted_ece'] == scores['ece']
    assert scores['damaged_share_estimate'] == pytest.approx(
        float(probabilities.double().mean())
    )
    threshold = expected_f1_threshold(probabilities.double().numpy())
    assert scores['adapted_threshold'] == threshold
    predicted = probabilities.double().numpy() >= threshold
    assert scores['adapted_F1Score'] == pytest.approx(
        f1_by_hand(predicted, labels.numpy() == 1)
    )


@pytest.fixture(scope='module')
def tested_towns(
    scene: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[DamageClassification, SARDamageDataModule, Trainer]:
    """A model trained on half of nurdagi and validated on islahiye.

    Its data module tests two towns: adiyaman and the held-out half of nurdagi.
    """
    seed_everything(0)
    dm = make_dm(scene, holdout=0.5, holdout_block_m=20.0)
    model = DamageClassification(modalities=TOWN_MODALITIES, **SMALL)
    fit = trainer(tmp_path_factory.mktemp('towns'), max_epochs=2)
    fit.fit(model, dm)
    return model, dm, fit


def test_test_metrics_adapted_to_each_town(
    scene: Path, tested_towns: tuple[DamageClassification, SARDamageDataModule, Trainer]
) -> None:
    model, dm, fit = tested_towns
    prior = float(model.validation_prior)
    assert 0 < prior < 1
    assert dm.test_names == ['adiyaman', 'seen_nurdagi']
    results = {k: v for r in fit.test(model, dm, verbose=False) for k, v in r.items()}
    for city, loader in zip(dm.test_names, dm.test_dataloader(), strict=True):
        # the model's calibrated probabilities, predicted again here
        logits, labels = labelled_logits(model, dm, loader)
        probabilities = model.probabilities(logits[:, None])
        shift = adapt_to_town(probabilities.double().numpy(), prior)
        damaged = labels.numpy() == 1
        predicted = shift.probabilities >= shift.threshold

        def logged(name: str, city: str = city) -> float:
            return float(results[f'test_{city}_{name}'])

        assert logged('damaged_share') == pytest.approx(damaged.mean(), rel=1e-6)
        assert logged('prior_adapted') == float(shift.adapted)
        assert logged('damaged_share_estimate') == pytest.approx(shift.estimate)
        assert logged('adapted_threshold') == pytest.approx(shift.threshold)
        assert logged('adapted_F1Score') == pytest.approx(
            f1_by_hand(predicted, damaged), abs=1e-6
        )
        assert logged('adapted_ece') == pytest.approx(
            expected_calibration_error(shift.probabilities, labels, ECE_BINS), abs=1e-6
        )
        assert logged('ece') == pytest.approx(
            expected_calibration_error(probabilities, labels, ECE_BINS), abs=1e-6
        )
        assert f'test_{city}_AUROC' in results
        assert f'test_{city}_adapted_AUROC' not in results
    # this weak one-epoch model may fail safe in every town (EM at the boundary);
    # the adaptation itself is tested on made-up probabilities (adapted_scores)

    # a second test run logs its own town only: the gathered buildings were reset
    again = trainer(Path(fit.default_root_dir)).test(
        model, make_dm(scene), verbose=False
    )
    results = {k: v for r in again for k, v in r.items()}
    assert 'test_adiyaman_adapted_F1Score' in results
    assert not [k for k in results if k.startswith('test_seen_nurdagi_adapted')]


def test_nan_validation_prior_adapts_nothing(
    tested_towns: tuple[DamageClassification, SARDamageDataModule, Trainer],
) -> None:
    model, dm, fit = tested_towns
    prior = model.validation_prior.clone()
    model.validation_prior.fill_(math.nan)  # as in a checkpoint from before 0.3
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            results = {
                k: v for r in fit.test(model, dm, verbose=False) for k, v in r.items()
            }
    finally:
        model.validation_prior.copy_(prior)
    messages = [str(w.message) for w in caught]
    assert len([m for m in messages if 'validation_prior is NaN' in m]) == 1
    assert not [m for m in messages if 'not adapted to the town' in m]
    for city in dm.test_names:
        assert f'test_{city}_F1Score' in results
        assert f'test_{city}_ece' in results
        assert f'test_{city}_damaged_share' in results
    assert not [k for k in results if 'adapted' in k or 'estimate' in k]


def test_task_and_datamodule_must_agree(scene: Path, tmp_path: Path) -> None:
    dm = make_dm(scene, modalities=['sar', 'osm'])
    model = DamageClassification(modalities=['sar'], **SMALL)
    with pytest.raises(ArgumentError, match='modalities'):
        trainer(tmp_path, fast_dev_run=True).fit(model, dm)
    model = DamageClassification(modalities=['sar', 'osm'], task='multiclass', **SMALL)
    with pytest.raises(ArgumentError, match="scheme='four'"):
        trainer(tmp_path, fast_dev_run=True).fit(model, dm)


DDP_SCRIPT = """
import sys
from pathlib import Path

from lightning.pytorch import Callback, Trainer, seed_everything

from torchgeo_sar_damage.datamodules import SARDamageDataModule
from torchgeo_sar_damage.tasks import DamageClassification


class Checksum(Callback):
    def on_fit_end(self, trainer, module):
        total = sum(float(p.detach().double().sum()) for p in module.parameters())
        line = f'{total!r} {float(module.threshold)!r} {trainer.world_size}'
        (Path(sys.argv[2]) / f'rank{trainer.global_rank}.txt').write_text(line)


seed_everything(0)
dm = SARDamageDataModule(
    sys.argv[1], ['nurdagi'], ['islahiye'], ['adiyaman'], modalities=['sar', 'osm'],
    size_m=16, batch_size=8, chips_root=sys.argv[3], progress=False,
)
model = DamageClassification(modalities=['sar', 'osm'], backbone='resnet10t', embed_dim=16)
trainer = Trainer(
    accelerator='cpu', devices=2, strategy='ddp', max_epochs=1, limit_train_batches=3,
    limit_val_batches=2, logger=False, enable_checkpointing=False,
    enable_progress_bar=False, enable_model_summary=False, callbacks=[Checksum()],
    default_root_dir=sys.argv[2],
)
trainer.fit(model, dm)
"""


def test_ddp_processes_train_the_same_model(scene: Path, tmp_path: Path) -> None:
    script = tmp_path / 'ddp_fit.py'
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    env = {**os.environ, 'PYTHONWARNINGS': 'ignore'}
    subprocess.run(
        [
            sys.executable,
            str(script),
            str(scene),
            str(tmp_path),
            str(tmp_path / 'chips'),
        ],
        check=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
        capture_output=True,
    )
    ranks = [(tmp_path / f'rank{r}.txt').read_text().split() for r in (0, 1)]
    assert ranks[0] == ranks[1]
    assert ranks[0][2] == '2'  # world size


def test_cli_fit_smoke(scene: Path, tmp_path: Path) -> None:
    args = [
        'fit',
        '--config',
        str(CONFIGS / 'sar.yaml'),
        '--data.root',
        str(scene),
        '--data.chips_root',
        str(scene.parent / 'chips'),
        '--data.train_cities',
        '[nurdagi]',
        '--data.val_cities',
        '[islahiye]',
        '--data.test_cities',
        '[adiyaman]',
        '--data.size_m',
        '16',
        '--data.num_workers',
        '0',
        '--data.progress',
        'false',
        '--model.backbone',
        'resnet10t',
        # not 'calibration': the data module's SAR calibration has that name, and
        # Lightning refuses one hyper-parameter name with two values
        '--model.calibration_method',
        'platt',
        '--trainer.fast_dev_run',
        'true',
        '--trainer.enable_progress_bar',
        'false',
        '--trainer.default_root_dir',
        str(tmp_path),
    ]
    assert main(args) == 0


def test_cli_bad_city_exits_2(
    scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            'fit',
            '--config',
            str(CONFIGS / 'sar.yaml'),
            '--data.root',
            str(scene),
            '--data.train_cities',
            '[atlantis]',
            '--trainer.default_root_dir',
            str(tmp_path),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert 'unknown cities' in err
    assert 'nurdagi' in err


def test_cli_optical_exits_2(
    scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ['fit', '--config', str(CONFIGS / 'sar.yaml'), '--data.root', str(scene)]
    argv += ['--trainer.default_root_dir', str(tmp_path)]
    # the parser takes it; the towns' data module refuses it, in one line
    assert main([*argv, '--data.modalities', '[sar, optical]']) == 2
    err = capsys.readouterr().err
    assert 'BRIGHT and QuickQuakeBuildings' in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize('name', sorted(p.stem for p in CONFIGS.glob('*.yaml')))
def test_configs_parse(
    name: str, scene: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(['fit', '--config', str(CONFIGS / f'{name}.yaml'), '--print_config'])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert 'DamageClassification' in text or 'modalities' in text


def test_help_lists_lightning_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(['--help'])
    out = capsys.readouterr().out
    for command in ('fit', 'validate', 'test', 'predict'):
        assert command in out
