# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Train small real checkpoints for the prediction benchmark (``predict_city.py``).

Prediction speed depends on the architecture (fusion, backbone, modalities, window),
not on how well the weights are trained; but the benchmark must time what users
run: a Lightning checkpoint of :class:`DamageClassification` written by a Trainer
fitted with :class:`SARDamageDataModule`, with its calibration, threshold,
normalisation statistics and training-SAR record. This script simulates three small
towns at 0.5 m (one to train on, one to choose the threshold and calibration on, one
the data module holds out),
trains one model per fusion for a few epochs on a few hundred buildings, and saves
each as ``weights_only`` like ``sardamage demo`` does (``model.ckpt``).

Every model has the settings of ``sardamage demo`` (:class:`DemoConfig`: SAR +
OSM + DSM + GEM, its backbone, 32 m windows, batch 32) but for the fusion:
``late`` is the demo's model (three ResNet-18 image encoders), ``early`` stacks the
same modalities into one encoder, ``attention`` (optional) adds footprint-guided
attention to ``late``. It takes a few minutes per model on two cores.

Usage::

    python benchmarks/train_checkpoints.py [--out outputs/benchmarks/checkpoints]
        [--fusions late early] [--buildings 300] [--epochs 2] [--backbone NAME]
"""

import argparse
import time
from pathlib import Path

import lightning

from torchgeo_sar_damage.datamodules import SARDamageDataModule
from torchgeo_sar_damage.demo import DemoConfig
from torchgeo_sar_damage.simulation.run import simulate
from torchgeo_sar_damage.tasks import DamageClassification

#: Towns: to train on, to calibrate and choose the threshold on, and to test on (the
#: data module needs one; this script does not test).
TOWNS = ('kahramanmaras', 'nurdagi', 'islahiye')


def train(
    scene: Path,
    out: Path,
    fusion: str,
    config: DemoConfig,
    epochs: int,
    backbone: str | None = None,
) -> Path:
    """Train one model of the demo's settings with ``fusion``; return its checkpoint.

    ``backbone`` replaces the demo's (the checkpoint is then
    ``<fusion>-<backbone>.ckpt`` instead of ``<fusion>.ckpt``).
    """
    lightning.seed_everything(config.seed, workers=True, verbose=False)
    data = SARDamageDataModule(
        root=str(scene),
        train_cities=[TOWNS[0]],
        val_cities=[TOWNS[1]],
        test_cities=[TOWNS[2]],
        modalities=list(config.modalities),
        size_m=config.size_m,
        batch_size=config.batch_size,
        num_workers=0,
        chips_root=str(out / '.chips'),
        progress=False,
    )
    model = DamageClassification(
        modalities=list(config.modalities),
        fusion=fusion,
        backbone=backbone or config.backbone,
        lr=1e-3,
    )
    trainer = lightning.Trainer(
        max_epochs=epochs,
        accelerator='cpu',
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(out),
    )
    trainer.fit(model, datamodule=data)
    path = out / (f'{fusion}-{backbone}.ckpt' if backbone else f'{fusion}.ckpt')
    trainer.save_checkpoint(path, weights_only=True)  # as sardamage demo writes it
    return path


def main() -> None:
    """Simulate the towns (once) and train one checkpoint per fusion."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', type=Path, default='outputs/benchmarks/checkpoints')
    parser.add_argument('--fusions', nargs='+', default=['late', 'early'])
    parser.add_argument('--buildings', type=int, default=300, help='per town')
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument(
        '--backbone',
        default=None,
        help="timm backbone instead of the demo's (checkpoints <fusion>-<backbone>.ckpt)",
    )
    args = parser.parse_args()
    config = DemoConfig()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    scene = out / 'scene'
    if not (scene / 'scene.json').exists():
        start = time.perf_counter()
        simulate(
            scene,
            cities=TOWNS,
            n_buildings=args.buildings,
            seed=config.seed,
            progress=False,
        )
        print(
            f'simulated {TOWNS} x {args.buildings} buildings in '
            f'{time.perf_counter() - start:.0f} s',
            flush=True,
        )
    for fusion in args.fusions:
        start = time.perf_counter()
        path = train(scene, out, fusion, config, args.epochs, args.backbone)
        backbone = args.backbone or config.backbone
        print(
            f'{fusion} ({backbone}): {"+".join(config.modalities)}, '
            f'{config.size_m:g} m windows, '
            f'{args.epochs} epochs on {TOWNS[0]} in {time.perf_counter() - start:.0f} s'
            f' -> {path}',
            flush=True,
        )


if __name__ == '__main__':
    main()
