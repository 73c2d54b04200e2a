# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Benchmark of city-scale prediction (``sardamage predict``), raw files to GeoPackage.

Targets (issue 7), on 2 CPU cores: a simulated city of 100,000 buildings at 0.5 m in
at most 2 minutes with peak RSS at most 2 GB; peak RSS at 10k and 100k buildings
within 10 % of each other; end-to-end rate at least half of the model's own forward
rate on in-memory tensors, measured in the same process.

Each size runs in a fresh subprocess (its own peak RSS): it simulates the town (not
timed), writes an untrained checkpoint of the chosen backbone with plausible
statistics (speed does not depend on the weights), times ``predict_buildings`` from
the raw files (SAR GeoTIFF, DSM, OSM GeoPackage, GEM CSVs) to the GeoPackage, then
times the model alone (same batch size, same MC dropout draws) on random tensors of
the same shapes, then reads the first 40 chunks alone (``read_rate``). ``peak_rss_mb``
is the largest total resident memory of the size's process tree (sampled every 50 ms
from /proc, reading workers included), ``main_rss_mb`` the main process's own peak.
The load average is printed beside every timing: the machine is shared.

Usage::

    python benchmarks/predict_city.py [--sizes 10000 100000] [--backbone resnet10t]
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

#: Columns of the summary line.
FIELDS = (
    'buildings',
    'seconds',
    'rate',
    'forward_rate',
    'read_rate',
    'ratio',
    'main_rss_mb',
    'peak_rss_mb',
    'load',
)


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


def _one(args: argparse.Namespace) -> dict[str, float]:
    """Run one size in this process; return its figures."""
    import torch

    from torchgeo_sar_damage.predict import (
        MC_SAMPLES,
        BuildingChunks,
        CityPredictor,
        load_checkpoint,
        predict_buildings,
    )
    from torchgeo_sar_damage.simulation.run import simulate

    work = Path(args.work)
    scene = work / f'scene{args.buildings}'
    if args.simulate_only:  # its own process: its memory is not the prediction's
        if not (scene / 'scene.json').exists():
            simulate(
                scene,
                cities=[args.city],
                n_buildings=args.buildings,
                seed=0,
                pixel_m=0.5,
                progress=False,
            )
        return {}
    files = json.loads((scene / 'scene.json').read_text())['cities'][args.city]
    files = files['files']
    town = scene / args.city
    ckpt = work / f'{args.backbone}.ckpt'
    _checkpoint(ckpt, args.backbone, args.size_m)
    out = work / f'predictions{args.buildings}.gpkg'
    start = time.perf_counter()
    summary = predict_buildings(
        [town / files['sar_geotiff']],
        town / files['osm'],
        ckpt,
        out,
        dsm=town / files['dsm'],
        gem=[town / f for f in files['gem']],
        admin=town / files['admin'],
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        overwrite=True,
        progress=False,
    )
    seconds = time.perf_counter() - start
    load = os.getloadavg()[0]
    assert summary is not None
    n = summary.buildings
    assessed = summary.counts['ok']

    # the plain alternative: the model alone on in-memory tensors of the same shape
    checkpoint = load_checkpoint(ckpt)
    names = [n for n in checkpoint.statistics.tabular_names]
    predictor = CityPredictor(checkpoint, names, MC_SAMPLES)
    side = round(args.size_m / 0.5)
    b = args.batch_size
    batch = {
        'image': torch.randn(b, 1, side, side) * 5 - 8,
        'dsm': torch.rand(b, 1, side, side) * 20,
        'footprint': torch.randint(0, 3, (b, 1, side, side), dtype=torch.uint8),
        'tabular': torch.randn(b, len(names)),
        'building_id': torch.arange(b),
    }
    with torch.no_grad():
        predictor(batch)  # warm-up
        repeats = max(3, min(20, assessed // b))
        tick = time.perf_counter()
        for _ in range(repeats):
            predictor(batch)
        forward = repeats * b / (time.perf_counter() - tick)
    # reading alone (the first chunks, in the main process): where the time goes
    chunks = BuildingChunks(
        [town / files['sar_geotiff']],
        town / files['osm'],
        checkpoint.modalities,
        args.size_m,
        dsm=town / files['dsm'],
        gem=[town / f for f in files['gem']],
        admin=town / files['admin'],
        batch_size=b,
    )
    chunks[0]  # opens the files
    tick = time.perf_counter()
    read = sum(len(chunks[i]['positions']) for i in range(1, min(len(chunks), 41)))
    read_rate = read / (time.perf_counter() - tick)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rate = n / seconds
    return {
        'buildings': n,
        'seconds': round(seconds, 1),
        'rate': round(rate, 1),
        'forward_rate': round(forward, 1),
        'read_rate': round(read_rate, 1),
        'ratio': round(rate / forward, 2),
        'main_rss_mb': round(peak, 0),
        'load': round(load, 2),
    }


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (MB), from /proc."""
    total = 0.0
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
    return total


def _run_watched(command: list[str], env: dict[str, str]) -> tuple[str, float]:
    """Run a command, sampling the RSS of its process tree every 50 ms.

    Returns:
        Its standard output and the largest total RSS seen (MB): the prediction's
        process plus its reading workers (forked workers count the pages they share
        with it twice, so this is an upper bound).
    """
    with tempfile.TemporaryFile('w+') as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.DEVNULL, text=True, env=env
        )
        peak = 0.0
        while process.poll() is None:
            peak = max(peak, _tree_rss_mb(process.pid))
            time.sleep(0.05)
        if process.returncode:
            raise subprocess.CalledProcessError(process.returncode, command)
        out.seek(0)
        return out.read(), peak


def main() -> None:
    """Run the benchmark and print every figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', nargs='+', type=int, default=[10_000, 100_000])
    parser.add_argument('--city', default='antakya')
    parser.add_argument('--backbone', default='resnet10t')
    parser.add_argument('--size-m', type=float, default=16.0)
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--num-workers', type=int, default=0)
    parser.add_argument('--work', default=None, help='folder (default: temporary)')
    parser.add_argument('--buildings', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--simulate-only', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.buildings is not None:  # the subprocess of one size
        print(json.dumps(_one(args)), flush=True)
        return
    work = Path(args.work or tempfile.mkdtemp(prefix='predict_city_'))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f'cores {os.cpu_count()}, backbone {args.backbone}, window {args.size_m} m at '
        f'0.5 m, batch {args.batch_size}, workers {args.num_workers}, work {work}'
    )
    print('  '.join(FIELDS))
    rows = []
    env = {**os.environ, 'GDAL_CACHEMAX': '64'}
    for n in args.sizes:
        command = [sys.executable, __file__, '--buildings', str(n), '--work', str(work)]
        command += ['--city', args.city, '--backbone', args.backbone]
        command += ['--size-m', str(args.size_m), '--batch-size', str(args.batch_size)]
        command += ['--num-workers', str(args.num_workers)]
        subprocess.run([*command, '--simulate-only'], check=True, capture_output=True)
        stdout, tree_peak = _run_watched(command, env)
        row = json.loads(stdout.strip().splitlines()[-1])
        row['peak_rss_mb'] = round(tree_peak, 0)
        rows.append(row)
        print('  '.join(str(row[f]) for f in FIELDS), flush=True)
    if len(rows) >= 2:
        small, large = rows[0], rows[-1]
        growth = large['peak_rss_mb'] / small['peak_rss_mb'] - 1
        print(
            f'peak RSS {small["buildings"]} -> {large["buildings"]} buildings: '
            f'{100 * growth:+.1f} % (target within 10 %)'
        )
    for row in rows:
        print(
            f'{row["buildings"]} buildings: {row["seconds"]} s (target <= 120 s for '
            f'100k), end-to-end / forward rate {row["ratio"]} (target >= 0.5), '
            f'peak RSS {row["peak_rss_mb"]:.0f} MB (target <= 2048), load {row["load"]}'
        )


if __name__ == '__main__':
    main()
