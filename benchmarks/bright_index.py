# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Benchmark of BRIGHTBuildings: per-building index, cached open, reading vs naive.

A fake BRIGHT in the real layout (``tests/data/bright/data.py``, ``write_fake``:
1024 x 1024 LZW GeoTIFF tiles, about 150 rectangles drawn per tile, 0.3/0.5/1 m pixels,
UTM and EPSG:4326) is written to a temporary folder, then timed:

(a) building the per-building index (first open, labelling every target raster);
(b) opening the dataset again (the cached index);
(c) reading an epoch of samples with ``BRIGHTBuildings`` (windowed reads of the
    three rasters, kept open, resampled to the window), in index order and shuffled,
    and shuffled with one raster kept open (as with far more tiles than
    ``bright.MAX_OPEN / 3``, e.g. the real BRIGHT, where a shuffled sample mostly
    opens its three rasters);
(d) the naive way: per building, read the whole pre-event, post-event and target
    tiles with rasterio, crop the window around the building and resize it to the
    same pixels (on a subset of buildings).

Usage::

    python benchmarks/bright_index.py [--tiles 100] [--buildings 150] [--size 1024]
"""

import argparse
import importlib.util
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import rasterio
import torch
import torch.nn.functional as F

from torchgeo_sar_damage.datasets import BRIGHTBuildings, bright

DATA_PY = Path(__file__).parents[1] / 'tests' / 'data' / 'bright' / 'data.py'


def load_writer() -> ModuleType:
    """The test data script (``write_fake``), loaded by path."""
    spec = importlib.util.spec_from_file_location('bright_data', DATA_PY)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def naive_sample(ds: BRIGHTBuildings, i: int) -> dict[str, torch.Tensor]:
    """Read whole tiles, crop the building's window and resize it."""
    row = ds.index.iloc[i]
    paths = ds.paths[row['tile']]
    half_r = ds.size_m / row['res_y_m'] / 2
    half_c = ds.size_m / row['res_x_m'] / 2
    r0 = math.floor(row['centroid_row'] - half_r)
    c0 = math.floor(row['centroid_col'] - half_c)
    r1 = math.ceil(row['centroid_row'] + half_r)
    c1 = math.ceil(row['centroid_col'] + half_c)
    out = {}
    for key, path in [
        ('sar', paths['post']),
        ('optical', paths['pre']),
        ('footprint', paths['target']),
    ]:
        with rasterio.open(path) as src:
            tile = src.read().astype(np.float32)
        pad = np.full((tile.shape[0], r1 - r0, c1 - c0), np.nan, dtype=np.float32)
        rr = slice(max(r0, 0), min(r1, tile.shape[1]))
        cc = slice(max(c0, 0), min(c1, tile.shape[2]))
        pad[:, rr.start - r0 : rr.stop - r0, cc.start - c0 : cc.stop - c0] = tile[
            :, rr, cc
        ]
        mode = 'nearest' if key == 'footprint' else 'bilinear'
        out[key] = F.interpolate(
            torch.from_numpy(pad)[None], size=(ds.size_px, ds.size_px), mode=mode
        )[0]
    out['sar'] = 20 * torch.log10(out['sar'])
    return out


def timed[T](fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description='BRIGHTBuildings benchmark')
    parser.add_argument('--tiles', type=int, default=100)
    parser.add_argument('--buildings', type=int, default=150, help='drawn per tile')
    parser.add_argument('--size', type=int, default=1024, help='tile side (pixels)')
    parser.add_argument('--naive-samples', type=int, default=200)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix='bench-bright-'))
    try:
        writer = load_writer()
        t_write, _ = timed(
            lambda: writer.write_fake(
                str(work), args.tiles, args.size, args.buildings, args.seed
            )
        )
        t_build, ds = timed(lambda: BRIGHTBuildings(work, progress=False))
        t_open, ds = timed(lambda: BRIGHTBuildings(work, progress=False))
        n = len(ds)
        t_epoch, _ = timed(lambda: [ds[i] for i in range(n)])
        order = np.random.default_rng(args.seed).permutation(n)
        t_shuffled, _ = timed(lambda: [ds[int(i)] for i in order])
        # shuffled over far more tiles than rasters kept open (real BRIGHT: thousands
        # of tiles): every sample opens its three rasters
        bright.MAX_OPEN, kept = 1, bright.MAX_OPEN
        cold = BRIGHTBuildings(work, progress=False)
        t_cold, _ = timed(lambda: [cold[int(i)] for i in order])
        bright.MAX_OPEN = kept
        subset = order[: args.naive_samples]
        t_naive, _ = timed(lambda: [naive_sample(ds, int(i)) for i in subset])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rate = n / t_epoch
    naive_rate = len(subset) / t_naive
    print(
        f'fake BRIGHT: {args.tiles} tiles of {args.size} x {args.size}, {n} buildings '
        f'(written in {t_write:.1f} s); windows {ds.size_px} x {ds.size_px} px '
        f'({ds.size_m:g} m at {ds.pixel_m:g} m); one thread\n'
    )
    print('| step | time (s) | buildings | buildings/s |')
    print('|---|---:|---:|---:|')
    print(f'| (a) build the index | {t_build:.2f} | {n} | {n / t_build:.0f} |')
    print(f'| (b) open again (cache) | {t_open:.3f} | {n} | {n / t_open:.0f} |')
    print(
        f'| (c) epoch, BRIGHTBuildings, in order | {t_epoch:.2f} | {n} | {rate:.0f} |'
    )
    print(
        f'| (c) epoch, BRIGHTBuildings, shuffled | {t_shuffled:.2f} | {n} | '
        f'{n / t_shuffled:.0f} |'
    )
    print(
        f'| (c) epoch, shuffled, one raster kept open | {t_cold:.2f} | {n} | '
        f'{n / t_cold:.0f} |'
    )
    print(
        f'| (d) naive: whole tiles, crop, resize | {t_naive:.2f} | {len(subset)} | '
        f'{naive_rate:.1f} |'
    )
    print(
        f'\nBRIGHTBuildings / naive: {rate / naive_rate:.0f}x in order, '
        f'{n / t_shuffled / naive_rate:.0f}x shuffled, '
        f'{n / t_cold / naive_rate:.0f}x shuffled with one raster kept open'
    )


if __name__ == '__main__':
    main()
