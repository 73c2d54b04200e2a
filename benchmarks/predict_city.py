# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Benchmark of city-scale prediction (``sardamage predict``), raw files to GeoPackage.

Targets (issues 7 and 19), on 2 CPU cores: a simulated town of 100,000 buildings at
0.5 m in at most 2 minutes with the default model, peak RSS at most 2 GB at any size
and within 10 % from 10k to 100k buildings; the heaviest model at least twice the
159 buildings/s that the demo's checkpoint gave before issue 19.

**Models.** ``--checkpoint LABEL=PATH`` (repeatable) times real trained checkpoints,
as users run them (``benchmarks/train_checkpoints.py`` writes the demo's model,
``late``, and the same settings with ``early`` and ``attention`` fusion). Without
``--checkpoint`` (or with ``--toy``) an untrained checkpoint of ``--backbone`` with
``--size-m`` windows is written and timed: with a small backbone it is nearly the
model-free reading rate, not any trained model's speed.

**Options.** Each checkpoint runs once per ``--options`` entry, in the same session
and round-robin over ``--repeats`` (the machine is shared: compare ratios within a
run; the first option is the reference of the speed-ups): ``float`` is
``predict``'s default path (float32, channels-last, chunks of 1,024 buildings read
by a background thread while the model predicts 256 at a time, the image encoders
on ONNX Runtime where it is installed); ``torch`` the same with
``--no-onnx`` (PyTorch only, the default before); ``serial`` the default without
the read-ahead thread (``--no-read-ahead``: chunks read in turn with the model);
``chunk256`` the default with chunks of 256 buildings (``--chunk-size 256``, the
model batch: the default before) instead of 1,024; ``int8`` adds ``quantize=True``
(``--quantize``: int8 encoders, not exact); ``workers1`` reads chunks in one
dataloader worker beside the model (``--num-workers 1``); ``int8+workers1`` both. Each option's ``max_dp`` is the
largest difference of ``damage_prob`` from the reference's, over the buildings both
assessed (``status`` must agree).

Each run is a fresh subprocess (its own peak RSS) that times ``predict_buildings``
from the raw files (SAR GeoTIFF, DSM, OSM GeoPackage, GEM CSVs) to the GeoPackage
(int8 calibration included); a second subprocess then times the model alone (4
batches of random tensors of the window's shape, same batch size and MC dropout
draws, quantised as the option says) and the reading alone on 5,120 buildings in
the option's chunks (``read_rate``: the model-free rate); ``ratio`` is end-to-end over model-alone rate.
The town is simulated once per size, in its own process, untimed. ``peak_rss_mb`` is
the largest total resident memory of the prediction's process tree (sampled every
50 ms from /proc, reading workers included: forked workers count shared pages
twice), ``peak_pss_mb`` the largest total proportional memory of the same tree
(``/proc/PID/smaps_rollup``: a shared page split between the processes sharing it,
so a reading worker's copy-on-write pages count once), ``main_rss_mb`` the
prediction process's own peak. The load average is
printed beside every timing.

Usage::

    python benchmarks/predict_city.py [--sizes 10000 100000]
        [--checkpoint late=outputs/benchmarks/checkpoints/late.ckpt ...]
        [--options float int8 workers1] [--repeats 1] [--toy]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: Columns of the summary line.
FIELDS = (
    'model',
    'option',
    'buildings',
    'seconds',
    'rate',
    'forward_rate',
    'read_rate',
    'ratio',
    'speedup',
    'max_dp',
    'main_rss_mb',
    'peak_rss_mb',
    'peak_pss_mb',
    'load',
)

#: What each option passes to ``predict_buildings``.
OPTIONS: dict[str, dict[str, Any]] = {
    'float': {},
    'torch': {'onnx': False},
    'serial': {'read_ahead': False},
    'chunk256': {'chunk_size': 256},
    'int8': {'quantize': True},
    'workers1': {'num_workers': 1},
    'int8+workers1': {'quantize': True, 'num_workers': 1},
}


def _checkpoint(path: Path, backbone: str, size_m: float) -> None:
    import lightning
    import torch

    from torchgeo_sar_damage.batch import TABULAR_FEATURES, Normalisation
    from torchgeo_sar_damage.tasks import DamageClassification

    task = DamageClassification(backbone=backbone, embed_dim=32)
    names = [n for m in ('dsm', 'osm', 'gem') for n in TABULAR_FEATURES[m]]
    stats = Normalisation(
        cities=('benchmark',),
        sar_mean_db=-8.0,
        sar_std_db=5.0,
        dsm_scale_m=5.0,
        tabular_names=tuple(names),
        tabular_mean=tuple(0.0 for _ in names),
        tabular_std=tuple(1.0 for _ in names),
        class_counts=(900, 100),
    )
    torch.save(
        {
            'state_dict': task.state_dict(),
            'hyper_parameters': dict(task.hparams),
            'pytorch-lightning_version': lightning.__version__,
            'SARDamageDataModule': {
                'statistics': stats.to_dict(),
                # the simulated town's 0.5 m products: read at their own spacing
                'sensor': {
                    'pixel_m': 0.5,
                    'window_px': round(size_m / 0.5),
                    'sar_units': 'db',
                    'polarisations': [],
                    'product_types': [],
                },
            },
            'datamodule_hyper_parameters': {'size_m': size_m},
        },
        path,
    )


def _simulate(args: argparse.Namespace) -> None:
    """Simulate the town of one size (its own process: not the prediction's memory)."""
    from torchgeo_sar_damage.simulation.run import simulate

    scene = Path(args.work) / f'scene{args.buildings}'
    if not (scene / 'scene.json').exists():
        simulate(
            scene,
            cities=[args.city],
            n_buildings=args.buildings,
            seed=0,
            pixel_m=0.5,
            progress=False,
        )


def _one(args: argparse.Namespace) -> dict[str, Any]:
    """Run one checkpoint, option and size in this process; return its figures."""

    from torchgeo_sar_damage.predict import predict_buildings

    work = Path(args.work)
    scene = work / f'scene{args.buildings}'
    files = json.loads((scene / 'scene.json').read_text())['cities'][args.city]
    files = files['files']
    town = scene / args.city
    ckpt = Path(args.checkpoint[-1])
    options = OPTIONS[args.option]
    inputs: dict[str, Any] = {
        'dsm': town / files['dsm'],
        'gem': [town / f for f in files['gem']],
        'admin': town / files['admin'],
    }
    if args.part == 'model':
        return _model_alone(args, town, files, inputs)
    start = time.perf_counter()
    summary = predict_buildings(
        [town / files['sar_geotiff']],
        town / files['osm'],
        ckpt,
        Path(args.out),
        **inputs,
        batch_size=args.batch_size,
        overwrite=True,
        progress=False,
        **options,
    )
    seconds = time.perf_counter() - start
    assert summary is not None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        'buildings': summary.buildings,
        'seconds': round(seconds, 1),
        'rate': round(summary.buildings / seconds, 1),
        'main_rss_mb': round(peak, 0),
        'load': round(os.getloadavg()[0], 2),
    }


def _model_alone(
    args: argparse.Namespace, town: Path, files: dict[str, Any], inputs: dict[str, Any]
) -> dict[str, Any]:
    """The model alone on in-memory tensors of the window's shape, reading alone."""
    import torch

    from torchgeo_sar_damage.predict import (
        MC_SAMPLES,
        BuildingChunks,
        CityPredictor,
        load_checkpoint,
    )
    from torchgeo_sar_damage.predict.onnx_runtime import onnxruntime_available
    from torchgeo_sar_damage.predict.quantize import calibration_chunks
    from torchgeo_sar_damage.predict.runner import CHUNK_BATCHES

    # quantised as the option says, on the town's calibration chunks for int8
    checkpoint = load_checkpoint(args.checkpoint[-1])
    chunks = BuildingChunks(
        [town / files['sar_geotiff']],
        town / files['osm'],
        checkpoint.modalities,
        checkpoint.size_m,
        **inputs,
        # the option's chunks (the model alone runs on batch_size windows)
        batch_size=OPTIONS[args.option].get('chunk_size')
        or CHUNK_BATCHES * args.batch_size,
    )
    predictor = CityPredictor(checkpoint, chunks.raw_names, MC_SAMPLES)
    if OPTIONS[args.option].get('quantize'):
        predictor.quantize(
            [chunks[i] for i in calibration_chunks(chunks.first_outside)]
        )
    elif OPTIONS[args.option].get('onnx', True) and onnxruntime_available():
        predictor.use_onnx([chunks[calibration_chunks(chunks.first_outside)[0]]])
    side = round(checkpoint.size_m / 0.5)
    b = args.batch_size
    batch = {
        'image': torch.randn(b, 1, side, side) * 5 - 8,
        'dsm': torch.rand(b, 1, side, side) * 20,
        'footprint': torch.randint(0, 3, (b, 1, side, side), dtype=torch.uint8),
        'tabular': torch.randn(b, len(chunks.raw_names)),
        'building_id': torch.arange(b),
    }
    with torch.inference_mode():
        predictor(batch)  # warm-up
        repeats = 4
        tick = time.perf_counter()
        for _ in range(repeats):
            predictor(batch)
        forward = repeats * b / (time.perf_counter() - tick)
    # reading alone (the first 5,120 buildings after the first chunk, in the main
    # process): the model-free rate
    chunks[0]  # opens the files
    count = max(1, 5120 // len(chunks.chunks[0]))
    tick = time.perf_counter()
    read = sum(
        len(chunks[i]['positions']) for i in range(1, min(len(chunks), count + 1))
    )
    read_rate = read / (time.perf_counter() - tick)
    return {'forward_rate': round(forward, 1), 'read_rate': round(read_rate, 1)}


def _max_difference(reference: Path, other: Path) -> float:
    """Largest ``damage_prob`` difference over buildings both layers assessed."""
    import numpy as np
    import pyogrio

    columns = ['damage_prob', 'status']
    a = pyogrio.read_dataframe(reference, columns=columns, read_geometry=False)
    b = pyogrio.read_dataframe(other, columns=columns, read_geometry=False)
    if not (a['status'].to_numpy() == b['status'].to_numpy()).all():
        return float('nan')  # another set of buildings assessed: not comparable
    ok = (a['status'] == 'ok').to_numpy()
    p, q = a['damage_prob'].to_numpy()[ok], b['damage_prob'].to_numpy()[ok]
    return float(np.abs(p - q).max()) if ok.any() else 0.0


def _tree_memory_mb(pid: int) -> tuple[float, float]:
    """Resident and proportional memory of a process and its descendants (MB).

    RSS counts a page shared by two processes (a forked reading worker and its
    parent) in both; PSS (``/proc/PID/smaps_rollup``) splits it between them, so the
    tree's PSS is the memory it really holds.
    """
    total, pss = 0.0, 0.0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f'/proc/{current}/status').read_text()
            tasks = Path(f'/proc/{current}/task').iterdir()
            for task in tasks:
                children = (task / 'children').read_text().split()
                stack.extend(int(c) for c in children)
        except OSError:  # the process ended meanwhile
            continue
        for line in status.splitlines():
            if line.startswith('VmRSS:'):
                total += int(line.split()[1]) / 1024
        try:
            rollup = Path(f'/proc/{current}/smaps_rollup').read_text()
        except OSError:
            continue
        for line in rollup.splitlines():
            if line.startswith('Pss:'):
                pss += int(line.split()[1]) / 1024
    return total, pss


def _run_watched(command: list[str], env: dict[str, str]) -> tuple[str, float, float]:
    """Run a command, sampling the memory of its process tree every 50 ms.

    Returns:
        Its standard output, the largest total RSS seen (MB): the prediction's
        process plus its reading workers (forked workers count the pages they share
        with it twice, so this is an upper bound), and the largest total PSS (shared
        pages split between the processes that share them).
    """
    with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env)
        peak, peak_pss = 0.0, 0.0
        while process.poll() is None:
            rss, pss = _tree_memory_mb(process.pid)
            peak, peak_pss = max(peak, rss), max(peak_pss, pss)
            time.sleep(0.05)
        if process.returncode:
            err.seek(0)
            print(err.read()[-3000:], file=sys.stderr)
            raise subprocess.CalledProcessError(process.returncode, command)
        out.seek(0)
        return out.read(), peak, peak_pss


def _models(args: argparse.Namespace, work: Path) -> dict[str, Path]:
    """Label -> checkpoint: ``--checkpoint`` entries, and the toy model if asked."""
    models: dict[str, Path] = {}
    for entry in args.checkpoint:
        label, sep, path = entry.partition('=')
        if not sep:
            label, path = Path(entry).stem, entry
        models[label] = Path(path)
    if args.toy or not models:
        toy = work / f'toy-{args.backbone}-{args.size_m:g}m.ckpt'
        _checkpoint(toy, args.backbone, args.size_m)
        models[f'untrained {args.backbone} {args.size_m:g} m'] = toy
    return models


def _run_size(
    args: argparse.Namespace, work: Path, n: int, models: dict[str, Path]
) -> list[dict[str, Any]]:
    """Every model and option on the town of ``n`` buildings, round-robin."""
    env = {**os.environ, 'GDAL_CACHEMAX': '64'}
    base = [sys.executable, __file__, '--buildings', str(n), '--work', str(work)]
    base += ['--city', args.city, '--batch-size', str(args.batch_size)]
    subprocess.run([*base, '--simulate-only'], check=True, capture_output=True)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for repeat in range(args.repeats):
        for label, ckpt in models.items():
            for option in args.options:
                out = work / f'{n}-{label}-{option}.gpkg'.replace(' ', '_')
                command = [*base, '--checkpoint', str(ckpt), '--option', option]
                watched = _run_watched([*command, '--out', str(out)], env)
                stdout, tree_peak, tree_pss = watched
                row = json.loads(stdout.strip().splitlines()[-1])
                stdout, _, _ = _run_watched([*command, '--part', 'model'], env)
                row.update(json.loads(stdout.strip().splitlines()[-1]))
                row['ratio'] = round(row['rate'] / row['forward_rate'], 2)
                row.update(model=label, option=option, out=str(out))
                row['peak_rss_mb'] = round(tree_peak, 0)
                row['peak_pss_mb'] = round(tree_pss, 0)
                runs.setdefault((label, option), []).append(row)
    rows = []
    for (label, option), repeats in runs.items():
        # the median run by rate (the machine is shared)
        row = sorted(repeats, key=lambda r: float(r['rate']))[len(repeats) // 2]
        row['peak_rss_mb'] = max(float(r['peak_rss_mb']) for r in repeats)
        row['peak_pss_mb'] = max(float(r['peak_pss_mb']) for r in repeats)
        reference = runs.get((label, args.options[0]))
        if reference is not None and option != args.options[0]:
            ref = sorted(reference, key=lambda r: float(r['rate']))[len(reference) // 2]
            row['speedup'] = round(float(row['rate']) / float(ref['rate']), 2)
            row['max_dp'] = (
                f'{_max_difference(Path(str(ref["out"])), Path(str(row["out"]))):.1e}'
            )
        else:
            row['speedup'], row['max_dp'] = 1.0, '0'
        rows.append(row)
        print('  '.join(str(row[f]) for f in FIELDS), flush=True)
    return rows


def main() -> None:
    """Run the benchmark and print every figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', nargs='+', type=int, default=[10_000, 100_000])
    parser.add_argument('--city', default='antakya')
    parser.add_argument(
        '--checkpoint',
        action='append',
        default=[],
        metavar='LABEL=PATH',
        help='a trained checkpoint to time (repeatable)',
    )
    parser.add_argument(
        '--options',
        nargs='+',
        default=['float'],
        choices=list(OPTIONS),
        help='inference options; the first is the reference (default: float)',
    )
    parser.add_argument('--repeats', type=int, default=1)
    parser.add_argument(
        '--toy', action='store_true', help='also time the untrained toy model'
    )
    parser.add_argument('--backbone', default='resnet10t', help='of the toy model')
    parser.add_argument('--size-m', type=float, default=16.0, help='of the toy model')
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--work', default=None, help='folder (default: temporary)')
    parser.add_argument('--buildings', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--option', default='float', help=argparse.SUPPRESS)
    parser.add_argument('--out', help=argparse.SUPPRESS)
    parser.add_argument('--part', default='predict', help=argparse.SUPPRESS)
    parser.add_argument('--simulate-only', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.buildings is not None:  # the subprocess of one run
        if args.simulate_only:
            _simulate(args)
        else:
            print(json.dumps(_one(args)), flush=True)
        return
    work = Path(args.work or tempfile.mkdtemp(prefix='predict_city_'))
    work.mkdir(parents=True, exist_ok=True)
    models = _models(args, work)
    print(
        f'cores {os.cpu_count()}, torch threads {_threads()}, batch {args.batch_size}, '
        f'0.5 m products, options {args.options} x {args.repeats}, work {work}'
    )
    for label, path in models.items():
        print(f'  {label}: {path}')
    print('  '.join(FIELDS))
    rows = [row for n in args.sizes for row in _run_size(args, work, n, models)]
    for label in models:
        for option in args.options:
            mine = [r for r in rows if r['model'] == label and r['option'] == option]
            if len(mine) >= 2:
                small, large = mine[0], mine[-1]
                growth = float(large['peak_rss_mb']) / float(small['peak_rss_mb']) - 1
                print(
                    f'{label}, {option}: peak RSS {small["buildings"]} -> '
                    f'{large["buildings"]} buildings {100 * growth:+.1f} % (target '
                    'within 10 %)'
                )
    for row in rows:
        per_100k = 100_000 / float(row['rate'])
        print(
            f'{row["model"]}, {row["option"]}, {row["buildings"]} buildings: '
            f'{row["rate"]} buildings/s ({per_100k / 60:.1f} min per 100k), x'
            f'{row["speedup"]} of {args.options[0]}, max |dp| {row["max_dp"]}, peak '
            f'RSS {float(row["peak_rss_mb"]):.0f} MB (PSS '
            f'{float(row["peak_pss_mb"]):.0f} MB), load {row["load"]}'
        )


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == '__main__':
    main()
