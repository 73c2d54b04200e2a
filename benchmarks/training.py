# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Training throughput of FusionNet at 64 x 64 with ResNet-18, with and without augmentation.

Issue 5 asks for training samples/s at 64 x 64 with ResNet-18 (on a GPU when the device
tool lends one). This script times optimiser steps of the full model on synthetic
batches that follow the model-batch contract (``docs/design/batch_contract.md``), for
several modality sets and fusions; the plain alternative in the same run is the same
step without the accelerator-side Kornia augmentation, so the ratio is its overhead.
On CUDA it also times automatic mixed precision (``--amp``), which is what
``--trainer.precision 16-mixed`` does in Lightning.

Issue 16 asks what a bigger pretrained SAR encoder costs: the ``encoders`` section
times a SAR-only ``late`` FusionNet with ResNet-18 (the default), and with the
architectures of ``ResNet50_Weights.SENTINEL1_ALL_MOCO`` and
``ViTSmall16_Weights.SENTINEL1_GRD_MAE`` (their SAR input included; the ViT resizes
each chip to 224 px), built with ``load_weights=False``: random initialisation of the
same architectures, so no weights file is needed and the speed is the same.

Usage::

    python benchmarks/training.py [--device cpu|cuda] [--batch-size 32] [--steps 5] [--amp]
        [--section all|fusions|encoders]
"""

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from torchgeo_sar_damage.models import FusionNet
from torchgeo_sar_damage.transforms import (
    RandomDecibelGain,
    RandomSpeckle,
    SARGeometricAugmentation,
)

CONFIGS = (
    (('sar',), 'late'),
    (('sar', 'osm', 'dsm', 'gem'), 'early'),
    (('sar', 'osm', 'dsm', 'gem'), 'late'),
    (('sar', 'osm', 'dsm', 'gem'), 'attention'),
)
TABULAR = {'osm': 3, 'dsm': 3, 'gem': 25}
#: SAR encoders compared (label, FusionNet arguments): random initialisation.
ENCODERS: tuple[tuple[str, dict[str, Any]], ...] = (
    ('resnet18', {}),
    (
        'resnet50 (ResNet50_Weights.SENTINEL1_ALL_MOCO architecture)',
        {'weights': 'ResNet50_Weights.SENTINEL1_ALL_MOCO', 'load_weights': False},
    ),
    (
        'vit_small_patch16_224 (ViTSmall16_Weights.SENTINEL1_GRD_MAE architecture)',
        {'weights': 'ViTSmall16_Weights.SENTINEL1_GRD_MAE', 'load_weights': False},
    ),
)


def batch(size: int, pixels: int, device: torch.device) -> dict[str, Tensor]:
    """A random model batch of the contract's shapes."""
    target = torch.zeros(size, 1, pixels, pixels, device=device)
    target[..., pixels // 3 : 2 * pixels // 3, pixels // 3 : 2 * pixels // 3] = 1
    return {
        'sar': torch.randn(size, 1, pixels, pixels, device=device),
        'sar_valid': torch.ones(size, 1, pixels, pixels, device=device),
        'footprint': torch.cat([target, torch.zeros_like(target)], dim=1),
        'dsm': torch.randn(size, 1, pixels, pixels, device=device),
        'tabular': torch.randn(size, 31, device=device),
        'label': torch.randint(0, 2, (size,), device=device),
    }


def samples_per_s(
    model: FusionNet,
    data: dict[str, Tensor],
    steps: int,
    amp: bool,
    augment: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
) -> float:
    """Training samples per second of AdamW steps on one batch (first step warms up)."""
    device = data['sar'].device
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for step in range(steps + 1):
        if step == 1:  # the first step warms up
            if device.type == 'cuda':
                torch.cuda.synchronize()
            start = time.perf_counter()
        x = dict(data) if augment is None else augment(dict(data))
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(x)[:, 0]
            loss = loss_fn(logits, x['label'].float())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return steps * data['sar'].shape[0] / (time.perf_counter() - start)


def encoders(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Training samples/s of SAR-only FusionNets with each SAR encoder of ENCODERS."""
    results = []
    for label, kwargs in ENCODERS:
        model = FusionNet(('sar',), 'late', **kwargs)
        model.set_sar_statistics(-8.0, 5.0)  # any statistics: only speed is measured
        model = model.to(device)
        data = batch(args.batch_size, args.pixels, device)
        rate = samples_per_s(model, data, args.steps, args.amp)
        branch = model.fusion.branch('sar')
        results.append(
            {
                'encoder': label,
                'parameters_M': round(
                    sum(p.numel() for p in model.parameters()) / 1e6, 1
                ),
                'encoder_input_px': list(
                    branch.input_size or (args.pixels, args.pixels)
                ),
                'train_samples_per_s': round(rate, 1),
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description='FusionNet training throughput')
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu'
    )
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--pixels', type=int, default=64)
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--amp', action='store_true', help='autocast to float16 (CUDA)')
    parser.add_argument(
        '--section',
        choices=('all', 'fusions', 'encoders'),
        default='all',
        help='fusions x augmentation, SAR encoders, or both',
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    geometric = SARGeometricAugmentation('azimuth').to(device)
    speckle = RandomSpeckle(looks=(1.0, 4.0), p=0.5).to(device)
    gain = RandomDecibelGain(p=0.5).to(device)
    results = []
    for modalities, fusion in CONFIGS if args.section != 'encoders' else ():
        features = sum(TABULAR.get(m, 0) for m in modalities)
        model = FusionNet(modalities, fusion=fusion, tabular_features=features).to(
            device
        )

        def augment(x: dict[str, Tensor]) -> dict[str, Tensor]:
            x['sar'] = gain(speckle(x['sar']))
            out: dict[str, Tensor] = geometric(x)
            return out

        rates = {}
        for augmented in (False, True):
            data = batch(args.batch_size, args.pixels, device)
            data['tabular'] = data['tabular'][:, :features]
            rates[augmented] = samples_per_s(
                model, data, args.steps, args.amp, augment if augmented else None
            )
        results.append(
            {
                'modalities': '+'.join(modalities),
                'fusion': fusion,
                'train_samples_per_s': round(rates[False], 1),
                'train_samples_per_s_with_augmentation': round(rates[True], 1),
                'augmentation_cost': round(rates[False] / rates[True], 2),
            }
        )
    print(
        json.dumps(
            {
                'device': str(device),
                'threads': torch.get_num_threads(),
                'amp': args.amp,
                'batch': args.batch_size,
                'pixels': args.pixels,
                'results': results,
                'encoders': encoders(args, device) if args.section != 'fusions' else [],
            },
            indent=2,
        )
    )


if __name__ == '__main__':
    main()
