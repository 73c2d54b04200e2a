# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Lightning data modules for post-event SAR damage assessment."""

from ..batch import MODALITIES, TOWN_MODALITIES, Normalisation, feature_names
from .benchmark import (
    BENCHMARK_MODALITIES,
    BuildingBenchmarkDataModule,
    collate_benchmark,
)
from .catalogue import Catalogue, TownFiles
from .damage import (
    CityDatasets,
    SARDamageDataModule,
    holdout_blocks,
    leave_one_city_out,
)

__all__ = [
    'BENCHMARK_MODALITIES',
    'MODALITIES',
    'TOWN_MODALITIES',
    'BuildingBenchmarkDataModule',
    'Catalogue',
    'CityDatasets',
    'Normalisation',
    'SARDamageDataModule',
    'TownFiles',
    'collate_benchmark',
    'feature_names',
    'holdout_blocks',
    'leave_one_city_out',
]
