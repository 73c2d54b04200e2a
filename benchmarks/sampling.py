# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Benchmark of per-building sampling: plain TorchGeo composition vs BuildingChips.

Targets (issue 4), on one core: from the second epoch at least 100x plain TorchGeo and
at least 3,000 samples/s; the first epoch, store building included, at least 10x plain
TorchGeo.

Both paths read the same simulated town with the same BuildingSampler queries:

* plain: TorchGeo's own ``RasterDataset`` (SAR GeoTIFF, DSM) and ``VectorDataset``
  (OSM footprints, EMS labels) combined with ``&``; every query re-reads and
  re-projects the vector files and rasterises them (measured on a subset of queries);
* fast: this package's datasets (COSMOSkyMed, DSM, OSMBuildings, GEMExposure,
  DamageLabels) combined with ``&`` and stored by BuildingChips; epoch 1 includes
  building the store, epoch 2 reads it back.

Usage::

    python benchmarks/sampling.py [--buildings 3000] [--city antakya] [--size 32]
"""

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torchgeo.datasets import RasterDataset, VectorDataset

from torchgeo_sar_damage.datasets import (
    DSM,
    BuildingChips,
    COSMOSkyMed,
    DamageLabels,
    GEMExposure,
    OSMBuildings,
)
from torchgeo_sar_damage.samplers import BuildingSampler
from torchgeo_sar_damage.simulation.run import simulate


class PlainSAR(RasterDataset):
    filename_glob = 'CSG_*.tif'


class PlainDSM(RasterDataset):
    filename_glob = 'dsm_*.tif'


def main() -> None:
    parser = argparse.ArgumentParser(description='per-building sampling benchmark')
    parser.add_argument('--buildings', type=int, default=3000)
    parser.add_argument('--city', default='antakya')
    parser.add_argument('--size', type=float, default=32.0, help='window size (m)')
    parser.add_argument('--plain-samples', type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix='bench-sampling-'))
    try:
        manifest = simulate(
            work / 'scene',
            cities=[args.city],
            n_buildings=args.buildings,
            progress=False,
        )
        files = manifest['cities'][args.city]['files']
        folder = work / 'scene' / args.city
        osm_path = folder / files['osm']
        labels_path = folder / files['labels']

        # plain TorchGeo
        plain = (
            PlainSAR(paths=folder)
            & PlainDSM(paths=folder)
            & VectorDataset(paths=osm_path)
            & VectorDataset(paths=labels_path)
        )
        osm = OSMBuildings(paths=osm_path)
        plain_sampler = BuildingSampler(plain, osm, size=args.size)
        queries = list(plain_sampler)[: args.plain_samples]
        start = time.perf_counter()
        for query in queries:
            plain[query]
        plain_rate = len(queries) / (time.perf_counter() - start)

        # this package
        fast = (
            COSMOSkyMed(paths=folder / files['sar_geotiff'], units='db')
            & DSM(paths=folder / files['dsm'])
            & osm
            & GEMExposure(
                paths=[folder / f for f in files['gem']], admin=folder / files['admin']
            )
            & DamageLabels(paths=labels_path)
        )
        sampler = BuildingSampler(fast, osm, size=args.size)
        start = time.perf_counter()
        chips = BuildingChips(fast, sampler, work / 'chips', progress=False)
        for i in range(len(chips)):
            chips[i]
        epoch1 = len(chips) / (time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(len(chips)):
            chips[i]
        epoch2 = len(chips) / (time.perf_counter() - start)
        keys = {k: list(v.shape) for k, v in chips[0].items()}
        result = {
            'city': args.city,
            'buildings': len(chips),
            'window_m': args.size,
            'keys': keys,
            'plain_torchgeo_samples_per_s': round(plain_rate, 1),
            'epoch1_samples_per_s': round(epoch1, 1),
            'epoch2_samples_per_s': round(epoch2, 1),
            'epoch1_over_plain': round(epoch1 / plain_rate, 1),
            'epoch2_over_plain': round(epoch2 / plain_rate, 1),
            'targets': {
                'epoch1_over_plain': 10,
                'epoch2_over_plain': 100,
                'epoch2_samples_per_s': 3000,
            },
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
