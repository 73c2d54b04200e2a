# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""The end-to-end demonstration: simulate, train, test on an unseen town, map.

``sardamage demo --out DIR`` simulates four towns, trains the full fusion model
(SAR + OSM footprints + DSM + GEM exposure) on two of them, chooses the decision
threshold on a third and tests on the fourth, which it never saw, then writes:

* ``DIR/model.ckpt``: the trained model for prediction (weights, threshold,
  calibration and normalisation; no optimiser state, so it cannot resume training);
* ``DIR/predictions.gpkg``: the unseen town's OSM footprints with ``damage_prob``,
  ``damage`` (at the threshold) and, where the EMS grading has one, ``label``;
* ``DIR/map.png``: damage probability per footprint over the SAR backdrop, with the
  true damage beside it;
* ``DIR/metrics.json``: the unseen town's F1, AUROC, AP, kappa, precision, recall,
  and its damaged share as ``sardamage predict`` estimates it by default (the mean
  ``damage_prob``, not adapted: ``damaged_share_estimate``, ``expected_damaged``)
  beside the true share of its graded buildings (``damaged_share_true``);
* ``DIR/scene/``: the simulated files.

Everything runs on the CPU by default (a few minutes on two cores).
"""

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import lightning
import numpy as np
import pandas as pd
import torch

from .datamodules import SARDamageDataModule
from .datasets import DamageLabels, OSMBuildings
from .plot import plot_prediction_map
from .predict.output import share_text
from .simulation.run import simulate
from .simulation.writers import write_vector
from .tasks import DamageClassification
from .utils import write_atomic

#: Metrics written to ``metrics.json`` (names as the task logs them).
METRICS = ('F1Score', 'AUROC', 'AveragePrecision', 'CohenKappa', 'Precision', 'Recall')


@dataclass
class DemoConfig:
    """Settings of the demonstration.

    Attributes:
        train_cities: towns the model is trained on.
        val_city: town the decision threshold is chosen on.
        test_city: the unseen town.
        buildings: buildings simulated per town.
        epochs: training epochs.
        size_m: window side in metres.
        batch_size: training batch size.
        fusion: fusion type of the model: early fusion (one encoder over the
            stacked image channels) by default, which the study found as accurate
            on unseen towns as late fusion at a third of its cost
            (``docs/results/study.md``, "Accuracy per cost").
        backbone: timm name of the image encoder: RegNetX-400MF (``regnetx_004``)
            by default, as accurate as ResNet-18 on the study's unseen towns
            (paired over 10 runs, "Other backbones") and several times faster on
            CPU.
        seed: random seed (simulation and training).
        accelerator: Lightning accelerator (``cpu``, ``gpu``, ``auto``).
        modalities: inputs of the model (all four by default).
    """

    train_cities: tuple[str, ...] = ('kahramanmaras', 'islahiye')
    val_city: str = 'nurdagi'
    test_city: str = 'antakya'
    buildings: int = 800
    epochs: int = 6
    size_m: float = 32.0
    batch_size: int = 32
    fusion: str = 'early'
    backbone: str = 'regnetx_004'
    seed: int = 0
    accelerator: str = 'cpu'
    modalities: tuple[str, ...] = ('sar', 'osm', 'dsm', 'gem')


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, flush=True)


def run_demo(
    out: str | os.PathLike[str], config: DemoConfig, quiet: bool = False
) -> dict[str, Any]:
    """Run the demonstration.

    Args:
        out: output folder (created; the demo's own outputs in it are replaced).
        config: settings.
        quiet: no progress output.

    Returns:
        The content of ``metrics.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cities = [*config.train_cities, config.val_city, config.test_city]
    scene = out / 'scene'
    _say(
        f'[1/4] simulating {len(cities)} towns x {config.buildings} buildings into {scene}',
        quiet,
    )
    manifest = simulate(
        scene,
        cities=cities,
        n_buildings=config.buildings,
        seed=config.seed,
        overwrite=True,
        progress=not quiet,
    )
    _say(
        f'[2/4] training the {"+".join(config.modalities)} {config.fusion}-fusion model on '
        f'{", ".join(config.train_cities)} (threshold chosen on {config.val_city})',
        quiet,
    )
    trainer, model, data = _train(out, scene, config, quiet)
    _say(f'[3/4] testing on the unseen town {config.test_city}', quiet)
    metrics = _test(trainer, model, data, config)
    _say(
        '[4/4] predicting every building of the unseen town and drawing the map', quiet
    )
    predictions = _predict(trainer, model, data, scene, manifest, config)
    write_atomic(
        out / 'predictions.gpkg',
        lambda p: write_vector(p, predictions, layer='predictions', driver='GPKG'),
    )
    metrics.update(_town_share(predictions))
    files = manifest['cities'][config.test_city]['files']
    town = scene / config.test_city
    estimate, true = metrics['damaged_share_estimate'], metrics['damaged_share_true']
    share = share_text(math.nan if estimate is None else estimate, None, False)
    if true is not None:
        share += f', true {100 * true:.0f} % of the graded buildings'
    plot_prediction_map(
        town / files['sar_geotiff'],
        predictions,
        gpd.read_file(town / files['truth']),
        out / 'map.png',
        title=f'{manifest["cities"][config.test_city]["name"]} (never seen in training): '
        f'F1 {metrics["f1score"]:.2f}, AUROC {metrics["auroc"]:.2f}\n{share}',
    )
    metrics['buildings_predicted'] = int(predictions['damage_prob'].notna().sum())
    metrics['seconds'] = round(time.perf_counter() - start, 1)
    text = json.dumps(metrics, indent=2) + '\n'
    write_atomic(out / 'metrics.json', lambda p: p.write_text(text, encoding='utf-8'))
    return metrics


def _train(
    out: Path, scene: Path, config: DemoConfig, quiet: bool
) -> tuple[lightning.Trainer, DamageClassification, SARDamageDataModule]:
    """Train the model and write ``out/model.ckpt`` (weights, no optimiser state)."""
    lightning.seed_everything(config.seed, workers=True, verbose=False)
    data = SARDamageDataModule(
        root=str(scene),
        train_cities=list(config.train_cities),
        val_cities=[config.val_city],
        test_cities=[config.test_city],
        modalities=list(config.modalities),
        size_m=config.size_m,
        batch_size=config.batch_size,
        num_workers=0,
        chips_root=str(out / '.chips'),
        progress=not quiet,
    )
    model = DamageClassification(
        modalities=list(config.modalities),
        fusion=config.fusion,
        backbone=config.backbone,
        lr=1e-3,
    )
    trainer = lightning.Trainer(
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=not quiet,
        enable_model_summary=False,
        default_root_dir=str(out),
        deterministic=True,
    )
    trainer.fit(model, datamodule=data)
    # what prediction needs (weights, threshold, temperature, normalisation, the
    # training SAR), not the optimiser's state: a third of the size
    write_atomic(
        out / 'model.ckpt', lambda p: trainer.save_checkpoint(p, weights_only=True)
    )
    return trainer, model, data


def _test(
    trainer: lightning.Trainer,
    model: DamageClassification,
    data: SARDamageDataModule,
    config: DemoConfig,
) -> dict[str, Any]:
    """The unseen town's metrics (the content of ``metrics.json`` so far)."""
    results = trainer.test(model, datamodule=data, verbose=False)[0]
    prefix = f'test_{config.test_city}_'
    return {
        'test_city': config.test_city,
        'train_cities': list(config.train_cities),
        'val_city': config.val_city,
        'modalities': list(config.modalities),
        'fusion': config.fusion,
        'backbone': config.backbone,
        'threshold': round(float(model.threshold), 4),
        **{m.lower(): round(float(results[prefix + m]), 4) for m in METRICS},
    }


def _town_share(predictions: gpd.GeoDataFrame) -> dict[str, Any]:
    """The unseen town's damaged share as prediction reports it, and the true one.

    As ``sardamage predict`` does by default (``--no-adapt-prior``), the estimate is
    the mean ``damage_prob`` of the assessed buildings; the true share is that of the
    graded ones among them.
    """
    assessed = predictions['damage_prob'].notna().to_numpy()
    p = predictions['damage_prob'].to_numpy(dtype=float)[assessed]
    labels = predictions['label'].to_numpy()[assessed]
    graded = labels >= 0
    return {
        'damaged_share_estimate': round(float(p.mean()), 4) if p.size else None,
        'prior_adapted': False,
        'expected_damaged': round(float(p.sum()), 1),
        'damaged_share_true': (
            round(float((labels[graded] == 1).mean()), 4) if graded.any() else None
        ),
    }


def _predict(
    trainer: lightning.Trainer,
    model: DamageClassification,
    data: SARDamageDataModule,
    scene: Path,
    manifest: dict[str, Any],
    config: DemoConfig,
) -> gpd.GeoDataFrame:
    """Every footprint of the unseen town with its probability, decision and label."""
    batches = trainer.predict(model, datamodule=data)
    outputs: list[dict[str, torch.Tensor]] = []
    for item in batches or []:  # one list per dataloader when there are several
        outputs.extend(item if isinstance(item, list) else [item])
    ids = torch.cat([b['building_id'] for b in outputs]).numpy()
    probs = torch.cat([b['probability'] for b in outputs]).numpy()
    files = manifest['cities'][config.test_city]['files']
    town = scene / config.test_city
    footprints = OSMBuildings(paths=town / files['osm']).buildings
    labels = DamageLabels(paths=town / files['labels']).building_labels(footprints)
    table = pd.DataFrame({'building_id': ids, 'damage_prob': probs}).drop_duplicates(
        'building_id'
    )
    predictions = footprints.merge(table, on='building_id', how='left')
    threshold = float(model.threshold)
    predictions['damage'] = (predictions['damage_prob'] >= threshold).astype('Int64')
    predictions.loc[predictions['damage_prob'].isna(), 'damage'] = pd.NA
    predictions['label'] = np.where(labels >= 0, labels, -1)
    return gpd.GeoDataFrame(predictions, geometry='geometry', crs=footprints.crs)
