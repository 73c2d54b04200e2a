# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""The model alone, as prediction runs it, under inference variants (issue 19).

``predict_city.py`` times what ``sardamage predict`` does end to end; this script
times only :class:`~torchgeo_sar_damage.predict.CityPredictor` (normalisation, the
encoders, the head and its Monte Carlo dropout draws) on real windows of a town,
for candidate speed-ups that are not all options of ``predict``, each against the
reference in the same process, round-robin over ``--repeats`` (the machine is
shared: compare the ratios):

* ``float``: the reference (float32, channels-last, ``torch.inference_mode``,
  ``torch.get_num_threads()`` threads, batches of ``--batch-size``);
* ``int8``: :meth:`CityPredictor.quantize` (``predict --quantize``);
* ``onnx``: :meth:`CityPredictor.use_onnx` (``predict --onnx``, the CPU default
  where ONNX Runtime is installed);
* ``fold_bn``: batch normalisation folded into the convolutions
  (``torch.fx.experimental.optimization.fuse``; float, the same values to rounding);
* ``bf16``: ``torch.autocast('cpu', torch.bfloat16)`` around the model;
* ``compile``: ``torch.compile`` of the fusion (its compile time is printed apart);
* ``threads1``: ``torch.set_num_threads(1)`` for the variant;
* ``batch64``, ``batch128``, ``batch512``: other chunk sizes (the same windows).

Each variant's ``max_dp`` is the largest difference of its damage probability
from the reference's over the timed windows (MC dropout draws seeded alike).

Usage::

    python benchmarks/predict_model.py --checkpoint late=PATH [--checkpoint ...]
        --town outputs/benchmarks/predict_city/scene5000 [--variants float int8 ...]
"""

import argparse
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from torchgeo_sar_damage.predict import (
    MC_SAMPLES,
    BuildingChunks,
    Checkpoint,
    CityPredictor,
    load_checkpoint,
)
from torchgeo_sar_damage.predict.quantize import calibration_chunks

VARIANTS = (
    'float',
    'int8',
    'onnx',
    'fold_bn',
    'bf16',
    'compile',
    'threads1',
    'batch64',
    'batch128',
    'batch512',
)

Predict = Callable[[dict[str, Tensor]], tuple[Tensor, Tensor]]


def _chunks(
    town: Path, city: str, checkpoint: Checkpoint, batch_size: int
) -> BuildingChunks:
    files = json.loads((town / 'scene.json').read_text())['cities'][city]['files']
    folder = town / city
    return BuildingChunks(
        [folder / files['sar_geotiff']],
        folder / files['osm'],
        checkpoint.modalities,
        checkpoint.size_m,
        dsm=folder / files['dsm'],
        gem=[folder / f for f in files['gem']],
        admin=folder / files['admin'],
        batch_size=batch_size,
    )


def _rebatch(batches: list[dict[str, Tensor]], size: int) -> list[dict[str, Tensor]]:
    """The same windows in batches of ``size``."""
    keys = ('image', 'dsm', 'footprint', 'tabular', 'building_id')
    whole = {k: torch.cat([b[k] for b in batches]) for k in keys if k in batches[0]}
    n = len(whole['image'])
    return [{k: v[i : i + size] for k, v in whole.items()} for i in range(0, n, size)]


def _fold_bn(predictor: CityPredictor) -> None:
    from torch.fx.experimental.optimization import fuse

    for branch in predictor.task.model.fusion.encoders.values():
        branch.encoder = fuse(branch.encoder)


def _variant(
    name: str, checkpoint_path: Path, raw_names: list[str], calibration: list[Any]
) -> tuple[Predict, float]:
    """The variant's predict function and its set-up seconds."""
    tick = time.perf_counter()
    predictor = CityPredictor(load_checkpoint(checkpoint_path), raw_names, MC_SAMPLES)
    predictor.eval()
    run: Predict = predictor
    if name == 'int8':
        predictor.quantize(calibration)
    elif name == 'onnx':
        predictor.use_onnx(calibration)
    elif name == 'fold_bn':
        _fold_bn(predictor)
    elif name == 'compile':
        fusion = predictor.task.model.fusion
        predictor.task.model.fusion = torch.compile(fusion)
    elif name == 'bf16':

        def run(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
            with torch.autocast('cpu', dtype=torch.bfloat16):
                return predictor(batch)

    return run, time.perf_counter() - tick


def _time(
    run: Predict, batches: list[dict[str, Tensor]], threads: int
) -> tuple[float, Tensor]:
    """Buildings per second over ``batches`` and the probabilities."""
    default = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            torch.manual_seed(0)
            run(batches[0])  # warm-up (and compilation)
            out = []
            tick = time.perf_counter()
            for i, batch in enumerate(batches):
                torch.manual_seed(i)
                out.append(run(batch)[0].float())
            seconds = time.perf_counter() - tick
    finally:
        torch.set_num_threads(default)
    probability = torch.cat(out)
    return len(probability) / seconds, probability


def main() -> None:
    """Time every variant of every checkpoint; print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', action='append', required=True)
    parser.add_argument('--town', type=Path, required=True, help='a simulated scene')
    parser.add_argument('--city', default='antakya')
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS))
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--chunks', type=int, default=4, help='timed chunks')
    parser.add_argument('--repeats', type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings('ignore')
    print(f'cores {os.cpu_count()}, torch threads {torch.get_num_threads()}')
    print('model  variant  rate  speedup  max_dp  setup_s  load')
    for entry in args.checkpoint:
        label, _, path = entry.rpartition('=')
        checkpoint_path = Path(path)
        checkpoint = load_checkpoint(checkpoint_path)
        chunks = _chunks(args.town, args.city, checkpoint, args.batch_size)
        calibration = [chunks[i] for i in calibration_chunks(chunks.first_outside)]
        # timed windows: chunks from the middle of the town, not the calibration's
        middle = chunks.first_outside // 2 + 1
        raw = [chunks[middle + i] for i in range(args.chunks)]
        batches = [b for b in raw if 'image' in b]
        variants = {}
        for name in args.variants:
            run, setup = _variant(name, checkpoint_path, chunks.raw_names, calibration)
            variants[name] = (run, setup)
        rates: dict[str, list[float]] = {name: [] for name in args.variants}
        probabilities: dict[str, Tensor] = {}
        for _ in range(args.repeats):
            for name, (run, _setup) in variants.items():
                size = int(name[5:]) if name.startswith('batch') else args.batch_size
                rate, p = _time(
                    run,
                    _rebatch(batches, size) if size != args.batch_size else batches,
                    1 if name == 'threads1' else torch.get_num_threads(),
                )
                rates[name].append(rate)
                probabilities[name] = p
        reference = sorted(rates[args.variants[0]])[args.repeats // 2]
        for name in args.variants:
            rate = sorted(rates[name])[args.repeats // 2]
            dp = (probabilities[name] - probabilities[args.variants[0]]).abs().max()
            print(
                f'{label or checkpoint_path.stem}  {name}  {rate:.1f}  '
                f'{rate / reference:.2f}  {float(dp):.1e}  {variants[name][1]:.1f}  '
                f'{os.getloadavg()[0]:.2f}',
                flush=True,
            )


if __name__ == '__main__':
    main()
