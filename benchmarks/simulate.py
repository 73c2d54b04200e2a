# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Benchmark of ``sardamage simulate``: time and peak memory of a full scene.

Target (issue 3): 5 towns x 3,000 buildings at 0.5 m in at most 3 minutes on 2 CPU
cores with at most 4 GB peak RSS.

The command line runs in a child process so that its peak resident set size is
measured on its own (start-up and imports included). As the plain alternative, the
benchmark then rewrites the files the simulation produced (rasters through
rasterio/h5py, vectors through pyogrio) from memory: the I/O floor of any simulator
writing the same products. The ratio of the two says how much of the run is
simulation rather than writing.

Usage::

    python benchmarks/simulate.py [--buildings 3000] [--pixel-m 0.5] [--cities SLUG ...]
                                  [--skip-rewrite]

Large towns (``--cities antakya --buildings 100000``: a 465-megapixel SAR grid,
rendered and written in tiles) are best run with ``--skip-rewrite``: the rewrite
comparison holds every product in memory and writes them all a second time.
"""

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import h5py
import rasterio

from torchgeo_sar_damage.simulation.cities import CITIES


def rewrite(src: Path, dst: Path) -> float:
    """Read every product into memory, then time writing it again; return seconds."""
    rasters = []
    tables = []
    h5 = []
    for path in sorted(src.rglob('*')):
        target = dst / path.relative_to(src)
        if path.is_dir():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == '.tif':
            with rasterio.open(path) as f:
                rasters.append((target, f.read(), f.profile))
        elif path.suffix == '.h5':
            with h5py.File(path) as f:
                h5.append((target, f['S01/SBI'][()]))
        elif path.suffix in ('.gpkg', '.json') and path.name != 'scene.json':
            tables.append((target, gpd.read_file(path)))
        else:
            tables.append((target, path.read_bytes()))
    start = time.perf_counter()
    for target, data, profile in rasters:
        with rasterio.open(target, 'w', **profile) as f:
            f.write(data)
    for target, image in h5:
        with h5py.File(target, 'w') as f:
            f.create_dataset('S01/SBI', data=image)
    for target, table in tables:
        if isinstance(table, bytes):
            target.write_bytes(table)
        else:
            table.to_file(target)
    return time.perf_counter() - start


def timed_child(command: list[str]) -> tuple[float, float]:
    """Run a command in a child process; return its wall time (s) and peak RSS (MB).

    ``RUSAGE_CHILDREN`` reports the largest child so far, so the children are run
    from the smallest to the largest expected footprint.
    """
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description='benchmark sardamage simulate')
    parser.add_argument('--buildings', type=int, default=3000)
    parser.add_argument('--pixel-m', type=float, default=0.5)
    parser.add_argument('--cities', nargs='+', default=list(CITIES))
    parser.add_argument(
        '--skip-rewrite',
        action='store_true',
        help='skip the rewrite-only comparison (it holds every product in memory)',
    )
    parser.add_argument(
        '--rewrite', nargs=2, type=Path, metavar=('SRC', 'DST'), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.rewrite:
        print(f'{rewrite(*args.rewrite):.3f}')
        return
    work = Path(tempfile.mkdtemp(prefix='bench-simulate-'))
    try:
        out = work / 'scene'
        sardamage = str(Path(sys.executable).with_name('sardamage'))
        command = [sardamage, 'simulate', '--out', str(out), '--quiet']
        command += ['--cities', *args.cities, '--buildings', str(args.buildings)]
        command += ['--pixel-m', str(args.pixel_m)]
        sim_s, sim_rss = timed_child(command)
        size_mb = sum(p.stat().st_size for p in out.rglob('*') if p.is_file()) / 1e6
        io_s = None if args.skip_rewrite else rewrite(out, work / 'rewrite')
        manifest = json.loads((out / 'scene.json').read_text(encoding='utf-8'))
        result = {
            'towns': len(args.cities),
            'buildings_per_town': args.buildings,
            'pixel_m': args.pixel_m,
            'simulate_s': round(sim_s, 1),
            'peak_rss_mb': round(sim_rss),
            'output_mb': round(size_mb),
            'rewrite_only_s': None if io_s is None else round(io_s, 1),
            'simulate_over_rewrite': None if io_s is None else round(sim_s / io_s, 1),
            'target_s': 180,
            'target_rss_mb': 4096,
            'damage_rate': {k: v['damage_rate'] for k, v in manifest['cities'].items()},
        }
        print(json.dumps(result, indent=2, ensure_ascii=False))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
