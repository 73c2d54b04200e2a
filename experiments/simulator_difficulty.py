# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""How separable is damage in the simulated SAR by one footprint statistic?

On real Capella data a SAR-only ResNet-18 reached F1 0.28 / AUROC 0.77
(QuickQuakeBuildings). If one per-footprint statistic of the simulated backscatter
separated damaged (EMS-98 grade >= 4) from other buildings almost perfectly, the study
on simulated data would be meaningless. This script simulates (or reads) a scene and
reports the AUROC of single statistics computed over each TRUE footprint (the most
favourable case: no OSM offset) and over the footprint buffered by 5 m, plus context
features (storeys, PGA) for comparison.

Usage::

    python experiments/simulator_difficulty.py --scene outputs/demo/scene [--out docs/results/simulator_difficulty.csv]
"""

import argparse
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from torchgeo_sar_damage.datasets.utils import footprint_sigma0_statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--scene', type=Path, required=True, help='folder with scene.json'
    )
    parser.add_argument('--out', type=Path, help='CSV to write')
    args = parser.parse_args()
    manifest = json.loads((args.scene / 'scene.json').read_text())
    rows = []
    for slug, city in manifest['cities'].items():
        folder = args.scene / slug
        truth = gpd.read_file(folder / city['files']['truth'])
        y = truth['grade'].to_numpy() >= 4
        sar = folder / city['files']['sar_geotiff']
        for buffer_m in (0.0, 5.0):
            stats = footprint_sigma0_statistics(sar, truth, buffer_m)
            for col in stats.columns:
                v = stats[col].to_numpy()
                ok = np.isfinite(v)
                auc = roc_auc_score(y[ok], v[ok])
                rows.append(
                    {
                        'city': slug,
                        'feature': f'{col}@{buffer_m:g}m',
                        'auroc': max(auc, 1 - auc),
                    }
                )
        for col in ('storeys', 'pga_g'):
            auc = roc_auc_score(y, truth[col].to_numpy())
            rows.append({'city': slug, 'feature': col, 'auroc': max(auc, 1 - auc)})
    table = pd.DataFrame(rows)
    wide = table.pivot(index='feature', columns='city', values='auroc').round(3)
    print(wide.to_string())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        wide.to_csv(args.out)


if __name__ == '__main__':
    main()
